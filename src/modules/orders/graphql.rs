//! Orders over GraphQL: orders with their lines, payments and history (one
//! query each for a whole page), each order's customer and each line's
//! product batch-loaded.

use std::{collections::HashMap, sync::Arc};

use async_graphql::{ComplexObject, Context, InputObject, Object, SimpleObject, dataloader::DataLoader};
use uuid::Uuid;

use super::{
    CUSTOMER_SORTS, CustomerFilter, CustomerView, ImportTo, ImportView, NewOrder, NewOrderLine, NewRefund,
    Notifications, ORDER_SORTS, OrderFilter, OrderLineView, OrderService, OrderView, OrdersRead,
    OrdersRefund, OrdersWrite, RefundView, STATES,
    callbacks::{CALLBACK_SORTS, CallbackFilter, CallbackView},
    check_order, check_refund,
    kpis::{self, Analytics, CustomerSpend, KpiRebuild, Kpis, ProductSales},
    notify::{self, NOTIFICATION_SORTS, NotificationFilter, NotificationStats, NotificationView},
    routes::CreateCustomer,
};
use crate::{
    error::ApiError,
    modules::inventory::{ProductView, graphql::product},
    platform::{
        graphql::{authorized, data, gql, list_request, validated},
        http::{PageMeta, one_of, parse_sort},
        tenancy::TenantScope,
        validate::{self, Checks},
    },
};

/// Batches order lookups of one request, within its tenant.
pub struct Loader {
    orders: Arc<dyn OrderService>,
    tenant: TenantScope,
}

pub fn loader(orders: Arc<dyn OrderService>, tenant: TenantScope) -> DataLoader<Loader> {
    DataLoader::new(Loader { orders, tenant }, crate::platform::db::spawn_counted)
}

/// A customer by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CustomerId(pub Uuid);

impl async_graphql::dataloader::Loader<CustomerId> for Loader {
    type Value = CustomerView;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[CustomerId]) -> Result<HashMap<CustomerId, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let customers = self.orders.customers_by_ids(self.tenant, ids).await.map_err(Arc::new)?;
        Ok(customers.into_iter().map(|c| (CustomerId(c.id), c)).collect())
    }
}

fn analytics<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Arc<dyn Analytics>> {
    data::<Arc<dyn Analytics>>(ctx).map_err(gql)
}

fn service<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Arc<dyn OrderService>> {
    data::<Arc<dyn OrderService>>(ctx).map_err(gql)
}

#[ComplexObject]
impl OrderView {
    /// Batch-loaded: a page of orders costs one customer query.
    async fn customer(&self, ctx: &Context<'_>) -> async_graphql::Result<CustomerView> {
        authorized::<OrdersRead>(ctx).map_err(gql)?;
        let loader = data::<DataLoader<Loader>>(ctx).map_err(gql)?;
        let customer =
            loader.load_one(CustomerId(self.customer_id)).await.map_err(|e| gql(ApiError::clone_of(&e)))?;
        customer.ok_or_else(|| gql(ApiError::not_found("customer")))
    }

    /// The order's notifications, newest first (as
    /// `GET /api/v1/orders/{id}/notifications`).
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        filter: Option<NotificationFilterInput>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<NotificationPage> {
        notification_page(ctx, filter, Some(self.id), first, after, before).await
    }
}

/// Which notifications a list holds (the REST list's query parameters).
#[derive(InputObject, Default)]
#[graphql(name = "NotificationFilterInput")]
pub struct NotificationFilterInput {
    /// placed, paid, completed, failed, cancelled or refunded.
    #[graphql(name = "type")]
    notification_type: Option<String>,
    /// log, email or webhook.
    channel: Option<String>,
    /// pending, sent, failed or skipped.
    status: Option<String>,
    customer_id: Option<Uuid>,
    created_after: Option<chrono::DateTime<chrono::Utc>>,
    created_before: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(SimpleObject)]
pub struct NotificationPage {
    items: Vec<NotificationView>,
    page_info: PageMeta,
}

async fn notification_page(
    ctx: &Context<'_>,
    filter: Option<NotificationFilterInput>,
    order_id: Option<Uuid>,
    first: Option<i64>,
    after: Option<String>,
    before: Option<String>,
) -> async_graphql::Result<NotificationPage> {
    let (_, principal) = authorized::<OrdersRead>(ctx).map_err(gql)?;
    let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
    let f = filter.unwrap_or_default();
    let filter = NotificationFilter {
        notification_type: f.notification_type,
        channel: f.channel,
        status: f.status,
        customer_id: f.customer_id,
        order_id,
        created_after: f.created_after,
        created_before: f.created_before,
        sort: parse_sort(None, &NOTIFICATION_SORTS).map_err(gql)?,
    };
    notify::check_filter(&filter).map_err(gql)?;
    let paged = service(ctx)?.list_notifications(principal.tenant, filter, &list).await.map_err(gql)?;
    Ok(NotificationPage { items: paged.data, page_info: paged.meta })
}

#[ComplexObject]
impl OrderLineView {
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProductView>> {
        product(ctx, self.product_id).await
    }
}

#[derive(SimpleObject)]
pub struct OrderPage {
    items: Vec<OrderView>,
    page_info: PageMeta,
}

#[derive(SimpleObject)]
pub struct OrderImportPage {
    items: Vec<ImportView>,
    page_info: PageMeta,
}

#[derive(SimpleObject)]
pub struct OrderGatewayCallbackPage {
    items: Vec<CallbackView>,
    page_info: PageMeta,
}

#[derive(SimpleObject)]
pub struct CustomerPage {
    items: Vec<CustomerView>,
    page_info: PageMeta,
}

#[derive(Default)]
pub struct Query;

#[Object(name = "OrdersQuery")]
impl Query {
    /// Orders, newest first (as `GET /api/v1/orders`).
    #[allow(clippy::too_many_arguments)]
    async fn orders(
        &self,
        ctx: &Context<'_>,
        status: Option<String>,
        customer_id: Option<Uuid>,
        external_order_id: Option<String>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<OrderPage> {
        let (_, principal) = authorized::<OrdersRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        one_of("status", status.as_deref(), &STATES).map_err(gql)?;
        let sort = parse_sort(None, &ORDER_SORTS).map_err(gql)?;
        let filter = OrderFilter {
            status,
            customer_id,
            external_order_id,
            created_after: None,
            created_before: None,
            sort,
        };
        let paged = service(ctx)?.list_orders(principal.tenant, filter, &list).await.map_err(gql)?;
        Ok(OrderPage { items: paged.data, page_info: paged.meta })
    }

    async fn order(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<OrderView> {
        let (_, principal) = authorized::<OrdersRead>(ctx).map_err(gql)?;
        service(ctx)?.get_order(principal.tenant, id).await.map_err(gql)
    }

    /// The KPIs of each UTC day from `from` to `to`, `YYYY-MM-DD`, both
    /// included (as `GET /api/v1/orders/kpis`).
    async fn order_kpis(
        &self,
        ctx: &Context<'_>,
        from: String,
        to: String,
    ) -> async_graphql::Result<Vec<Kpis>> {
        let (_, principal) = authorized::<OrdersRead>(ctx).map_err(gql)?;
        let from = kpis::parse_date("from", &from).map_err(gql)?;
        let to = kpis::parse_date("to", &to).map_err(gql)?;
        kpis::check_range(from, to).map_err(gql)?;
        analytics(ctx)?.daily_kpis(principal.tenant, from, to).await.map_err(gql)
    }

    /// The KPIs of the last `minutes` minutes (as
    /// `GET /api/v1/orders/kpis/realtime`).
    async fn order_kpis_realtime(&self, ctx: &Context<'_>, minutes: i64) -> async_graphql::Result<Kpis> {
        let (_, principal) = authorized::<OrdersRead>(ctx).map_err(gql)?;
        kpis::check_minutes(minutes).map_err(gql)?;
        let to = chrono::Utc::now();
        analytics(ctx)?.kpis(principal.tenant, to - chrono::Duration::minutes(minutes), to).await.map_err(gql)
    }

    /// The customers with the largest spend in `currency` (as
    /// `GET /api/v1/orders/leaderboards/customers`).
    async fn top_customers(
        &self,
        ctx: &Context<'_>,
        currency: String,
        limit: Option<i64>,
    ) -> async_graphql::Result<Vec<CustomerSpend>> {
        let (_, principal) = authorized::<OrdersRead>(ctx).map_err(gql)?;
        kpis::check_currency(&currency).map_err(gql)?;
        let limit = kpis::check_limit(limit).map_err(gql)?;
        analytics(ctx)?.top_customers(principal.tenant, &currency, limit).await.map_err(gql)
    }

    /// A customer's place on the spend leaderboard of `currency` (as
    /// `GET /api/v1/customers/{id}/rank`).
    async fn customer_rank(
        &self,
        ctx: &Context<'_>,
        customer_id: Uuid,
        currency: String,
    ) -> async_graphql::Result<CustomerSpend> {
        let (_, principal) = authorized::<OrdersRead>(ctx).map_err(gql)?;
        kpis::check_currency(&currency).map_err(gql)?;
        analytics(ctx)?.customer_rank(principal.tenant, customer_id, &currency).await.map_err(gql)
    }

    /// The products sold most (as `GET /api/v1/orders/leaderboards/products`).
    async fn bestsellers(
        &self,
        ctx: &Context<'_>,
        limit: Option<i64>,
    ) -> async_graphql::Result<Vec<ProductSales>> {
        let (_, principal) = authorized::<OrdersRead>(ctx).map_err(gql)?;
        let limit = kpis::check_limit(limit).map_err(gql)?;
        analytics(ctx)?.bestsellers(principal.tenant, limit).await.map_err(gql)
    }

    /// A CSV import of orders (as `GET /api/v1/orders/imports/{id}`).
    async fn order_import(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<ImportView> {
        let (_, principal) = authorized::<OrdersRead>(ctx).map_err(gql)?;
        service(ctx)?.get_import(principal.tenant, id).await.map_err(gql)
    }

    /// CSV imports of orders, newest first (as `GET /api/v1/orders/imports`).
    async fn order_imports(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<OrderImportPage> {
        let (_, principal) = authorized::<OrdersRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let paged = service(ctx)?.list_imports(principal.tenant, &list).await.map_err(gql)?;
        Ok(OrderImportPage { items: paged.data, page_info: paged.meta })
    }

    /// The payment gateway's callbacks, newest first, verified or not (as
    /// `GET /api/v1/orders/payments/callbacks`).
    async fn order_gateway_callbacks(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
        outcome: Option<String>,
    ) -> async_graphql::Result<OrderGatewayCallbackPage> {
        let (_, principal) = authorized::<OrdersRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let filter = CallbackFilter { outcome, sort: parse_sort(None, &CALLBACK_SORTS).map_err(gql)? };
        let paged = service(ctx)?.list_callbacks(principal.tenant, filter, &list).await.map_err(gql)?;
        Ok(OrderGatewayCallbackPage { items: paged.data, page_info: paged.meta })
    }

    /// Customers, newest first (as `GET /api/v1/customers`).
    async fn customers(
        &self,
        ctx: &Context<'_>,
        email: Option<String>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<CustomerPage> {
        let (_, principal) = authorized::<OrdersRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let sort = parse_sort(None, &CUSTOMER_SORTS).map_err(gql)?;
        let filter = CustomerFilter { email, sort };
        let paged = service(ctx)?.list_customers(principal.tenant, filter, &list).await.map_err(gql)?;
        Ok(CustomerPage { items: paged.data, page_info: paged.meta })
    }

    /// Order notifications, newest first (as `GET /api/v1/orders/notifications`).
    async fn order_notifications(
        &self,
        ctx: &Context<'_>,
        filter: Option<NotificationFilterInput>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<NotificationPage> {
        notification_page(ctx, filter, None, first, after, before).await
    }

    /// One order notification (as `GET /api/v1/orders/notifications/{id}`).
    async fn order_notification(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<NotificationView> {
        let (_, principal) = authorized::<OrdersRead>(ctx).map_err(gql)?;
        service(ctx)?.get_notification(principal.tenant, id).await.map_err(gql)
    }

    /// Notification counts per state, channel and type (as
    /// `GET /api/v1/orders/notifications/stats`).
    async fn notification_stats(
        &self,
        ctx: &Context<'_>,
        created_after: Option<chrono::DateTime<chrono::Utc>>,
        created_before: Option<chrono::DateTime<chrono::Utc>>,
    ) -> async_graphql::Result<NotificationStats> {
        let (_, principal) = authorized::<OrdersRead>(ctx).map_err(gql)?;
        notify::check_window(created_after, created_before).map_err(gql)?;
        service(ctx)?.notification_stats(principal.tenant, created_after, created_before).await.map_err(gql)
    }

    /// The newest order notifications (as `GET /api/v1/orders/notifications/recent`).
    async fn recent_notifications(
        &self,
        ctx: &Context<'_>,
        limit: Option<i64>,
    ) -> async_graphql::Result<Vec<NotificationView>> {
        let (_, principal) = authorized::<OrdersRead>(ctx).map_err(gql)?;
        let limit = notify::check_recent(limit).map_err(gql)?;
        service(ctx)?.recent_notifications(principal.tenant, limit).await.map_err(gql)
    }

    /// A customer (as `GET /api/v1/customers/{id}`).
    async fn customer(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<CustomerView> {
        let (_, principal) = authorized::<OrdersRead>(ctx).map_err(gql)?;
        service(ctx)?.get_customer(principal.tenant, id).await.map_err(gql)
    }
}

#[derive(InputObject)]
#[graphql(name = "OrderLineInput")]
pub struct LineInput {
    product_id: Option<Uuid>,
    sku: Option<String>,
    quantity: i64,
    unit_price: i64,
}

#[derive(InputObject)]
#[graphql(name = "PlaceOrderInput")]
pub struct PlaceOrderInput {
    external_order_id: Option<String>,
    /// `api` when absent.
    channel: Option<String>,
    customer_id: Uuid,
    warehouse_id: Uuid,
    currency: String,
    lines: Vec<LineInput>,
}

#[derive(Default)]
pub struct Mutation;

#[Object(name = "OrdersMutation")]
impl Mutation {
    /// Create a customer (as `POST /api/v1/customers`); `conflict` when
    /// `externalId` is taken.
    async fn create_customer(
        &self,
        ctx: &Context<'_>,
        input: CreateCustomer,
    ) -> async_graphql::Result<CustomerView> {
        let (_, principal) = authorized::<OrdersWrite>(ctx).map_err(gql)?;
        let new = validated(input)?.into_new();
        service(ctx)?.create_customer(principal.tenant, new).await.map_err(gql)
    }

    /// Send a failed order notification again (as
    /// `POST /api/v1/orders/notifications/{id}/resend`);
    /// `notification_not_failed` otherwise.
    async fn resend_notification(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<NotificationView> {
        let (state, principal) = authorized::<OrdersWrite>(ctx).map_err(gql)?;
        let notification = service(ctx)?.resend_notification(principal.tenant, id).await.map_err(gql)?;
        state.wakeup.wake();
        Ok(notification)
    }

    /// Set the channels a customer is notified on (as
    /// `PUT /api/v1/customers/{id}/notification-preferences`).
    async fn update_notification_preferences(
        &self,
        ctx: &Context<'_>,
        customer_id: Uuid,
        preferences: Notifications,
    ) -> async_graphql::Result<CustomerView> {
        let (_, principal) = authorized::<OrdersWrite>(ctx).map_err(gql)?;
        service(ctx)?
            .set_notification_preferences(principal.tenant, customer_id, preferences)
            .await
            .map_err(gql)
    }

    /// Place an order (as `POST /api/v1/orders`); its saga runs in the background.
    async fn place_order(
        &self,
        ctx: &Context<'_>,
        input: PlaceOrderInput,
    ) -> async_graphql::Result<OrderView> {
        let (state, principal) = authorized::<OrdersWrite>(ctx).map_err(gql)?;
        let new = NewOrder {
            external_order_id: input.external_order_id,
            placed_at: None,
            channel: input.channel.unwrap_or_else(|| "api".to_owned()),
            customer_id: input.customer_id,
            warehouse_id: input.warehouse_id,
            currency: input.currency,
            lines: input
                .lines
                .into_iter()
                .map(|l| NewOrderLine {
                    product_id: l.product_id,
                    sku: l.sku,
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                })
                .collect(),
        };
        check_order(&new).map_err(|errors| gql(ApiError::validation(errors)))?;
        let order = service(ctx)?.place_order(principal.tenant, new).await.map_err(gql)?;
        state.wakeup.wake();
        Ok(order)
    }

    /// Build the KPIs kept in Redis again from the tables (as
    /// `POST /api/v1/orders/kpis/rebuild`).
    async fn rebuild_order_kpis(&self, ctx: &Context<'_>) -> async_graphql::Result<KpiRebuild> {
        let (_, principal) = authorized::<OrdersWrite>(ctx).map_err(gql)?;
        analytics(ctx)?.rebuild(principal.tenant).await.map_err(gql)
    }

    /// Cancel an order that has not shipped; its steps are compensated.
    async fn cancel_order(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        reason: Option<String>,
    ) -> async_graphql::Result<OrderView> {
        let (state, principal) = authorized::<OrdersWrite>(ctx).map_err(gql)?;
        if let Some(reason) = &reason {
            Checks::default()
                .check("reason", validate::plain_text(reason, 500))
                .finish()
                .map_err(|errors| gql(ApiError::validation(errors)))?;
        }
        let order = service(ctx)?.cancel_order(principal.tenant, id, reason).await.map_err(gql)?;
        state.wakeup.wake();
        Ok(order)
    }

    /// Refund part or all of a paid order (as `POST /api/v1/orders/{id}/refunds`):
    /// the same `idempotencyKey` gives the first refund back, never a second.
    async fn refund_order(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        amount: i64,
        reason: String,
        idempotency_key: String,
    ) -> async_graphql::Result<RefundView> {
        let (state, principal) = authorized::<OrdersRefund>(ctx).map_err(gql)?;
        let new = NewRefund { amount, reason: reason.trim().to_owned(), idempotency_key };
        check_refund(&new).map_err(|errors| gql(ApiError::validation(errors)))?;
        let (refund, _) = service(ctx)?.refund_order(principal.tenant, id, new).await.map_err(gql)?;
        state.wakeup.wake();
        Ok(refund)
    }

    /// Import orders from CSV text (as `POST /api/v1/orders/imports`, for
    /// files that fit a GraphQL request; larger ones go by REST, streamed):
    /// the import is queued and runs in the background.
    async fn import_orders(
        &self,
        ctx: &Context<'_>,
        warehouse_id: Uuid,
        csv: String,
        #[graphql(default = "import.csv")] filename: String,
        #[graphql(
            default = false,
            desc = "Tell each imported order's customer it was placed (as `send_receipts` of the REST upload)."
        )]
        send_receipts: bool,
    ) -> async_graphql::Result<ImportView> {
        let (state, principal) = authorized::<OrdersWrite>(ctx).map_err(gql)?;
        Checks::default()
            .check("filename", validate::plain_text(&filename, 200))
            .finish()
            .map_err(|errors| gql(ApiError::validation(errors)))?;
        let body = futures_util::stream::once(async move { Ok(actix_web::web::Bytes::from(csv)) });
        let import = service(ctx)?
            .upload_import(
                principal.tenant,
                ImportTo { warehouse_id, send_receipts },
                filename,
                Box::pin(body),
            )
            .await
            .map_err(gql)?;
        state.wakeup.wake();
        Ok(import)
    }
}
