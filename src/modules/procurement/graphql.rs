//! Procurement over GraphQL: purchase orders with their vendor and lines,
//! each line with its product and the product's stock, all batch-loaded.

use std::{collections::HashMap, sync::Arc};

use async_graphql::{
    ComplexObject, Context, Enum, InputObject, Object, SimpleObject, dataloader::DataLoader,
};
use uuid::Uuid;

use super::{
    Action, LineView, NewLine, ORDER_SORTS, OrderFilter, ProcurementApprove, ProcurementRead,
    ProcurementService, ProcurementWrite, PurchaseOrderView, ReceiptLine, STATES, VENDOR_SORTS, VendorFilter,
    VendorView, check_order, check_receipt,
    routes::{CreateVendor, UpdateVendor},
};
use crate::{
    error::ApiError,
    modules::inventory::{ProductView, graphql::product},
    platform::{
        graphql::{authorized, data, gql, list_request, validated},
        http::{PageMeta, one_of, parse_sort},
        search::{Search, Window},
        tenancy::TenantScope,
    },
};

/// Batches procurement lookups of one request, within its tenant.
pub struct Loader {
    procurement: Arc<dyn ProcurementService>,
    tenant: TenantScope,
}

pub fn loader(procurement: Arc<dyn ProcurementService>, tenant: TenantScope) -> DataLoader<Loader> {
    DataLoader::new(Loader { procurement, tenant }, crate::platform::db::spawn_counted)
}

/// A vendor by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VendorId(pub Uuid);

impl async_graphql::dataloader::Loader<VendorId> for Loader {
    type Value = VendorView;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[VendorId]) -> Result<HashMap<VendorId, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let vendors = self.procurement.vendors_by_ids(self.tenant, ids).await.map_err(Arc::new)?;
        Ok(vendors.into_iter().map(|v| (VendorId(v.id), v)).collect())
    }
}

fn service<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Arc<dyn ProcurementService>> {
    data::<Arc<dyn ProcurementService>>(ctx).map_err(gql)
}

#[ComplexObject]
impl PurchaseOrderView {
    /// Batch-loaded: a page of orders costs one vendor query.
    async fn vendor(&self, ctx: &Context<'_>) -> async_graphql::Result<VendorView> {
        authorized::<ProcurementRead>(ctx).map_err(gql)?;
        let loader = data::<DataLoader<Loader>>(ctx).map_err(gql)?;
        let vendor =
            loader.load_one(VendorId(self.vendor_id)).await.map_err(|e| gql(ApiError::clone_of(&e)))?;
        vendor.ok_or_else(|| gql(ApiError::not_found("vendor")))
    }
}

#[ComplexObject]
impl LineView {
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProductView>> {
        product(ctx, self.product_id).await
    }
}

#[derive(SimpleObject)]
#[graphql(name = "PurchaseOrderPage")]
pub struct OrderPage {
    items: Vec<PurchaseOrderView>,
    page_info: PageMeta,
}

#[derive(SimpleObject)]
#[graphql(name = "VendorPage")]
pub struct VendorPage {
    items: Vec<VendorView>,
    page_info: PageMeta,
}

#[derive(Default)]
pub struct Query;

#[Object(name = "ProcurementQuery")]
impl Query {
    /// Purchase orders, newest first (as `GET /api/v1/purchase-orders`).
    #[allow(clippy::too_many_arguments)]
    async fn purchase_orders(
        &self,
        ctx: &Context<'_>,
        status: Option<String>,
        vendor_id: Option<Uuid>,
        created_after: Option<chrono::DateTime<chrono::Utc>>,
        created_before: Option<chrono::DateTime<chrono::Utc>>,
        updated_after: Option<chrono::DateTime<chrono::Utc>>,
        updated_before: Option<chrono::DateTime<chrono::Utc>>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<OrderPage> {
        let (_, principal) = authorized::<ProcurementRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        one_of("status", status.as_deref(), &STATES).map_err(gql)?;
        let sort = parse_sort(None, &ORDER_SORTS).map_err(gql)?;
        let filter = OrderFilter {
            status,
            vendor_id,
            warehouse_id: None,
            created: Window::new("created", created_after, created_before).map_err(gql)?,
            updated: Window::new("updated", updated_after, updated_before).map_err(gql)?,
            sort,
        };
        let paged = service(ctx)?.list_orders(principal.tenant, filter, &list).await.map_err(gql)?;
        Ok(OrderPage { items: paged.data, page_info: paged.meta })
    }

    async fn purchase_order(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<PurchaseOrderView> {
        let (_, principal) = authorized::<ProcurementRead>(ctx).map_err(gql)?;
        service(ctx)?.get_order(principal.tenant, id).await.map_err(gql)
    }

    /// Vendors by name (as `GET /api/v1/vendors`).
    #[allow(clippy::too_many_arguments)]
    async fn vendors(
        &self,
        ctx: &Context<'_>,
        active: Option<bool>,
        q: Option<String>,
        created_after: Option<chrono::DateTime<chrono::Utc>>,
        created_before: Option<chrono::DateTime<chrono::Utc>>,
        updated_after: Option<chrono::DateTime<chrono::Utc>>,
        updated_before: Option<chrono::DateTime<chrono::Utc>>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<VendorPage> {
        let (_, principal) = authorized::<ProcurementRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let sort = parse_sort(None, &VENDOR_SORTS).map_err(gql)?;
        let filter = VendorFilter {
            active,
            q: Search::parse(q.as_deref()).map_err(gql)?,
            created: Window::new("created", created_after, created_before).map_err(gql)?,
            updated: Window::new("updated", updated_after, updated_before).map_err(gql)?,
            sort,
        };
        let paged = service(ctx)?.list_vendors(principal.tenant, filter, &list).await.map_err(gql)?;
        Ok(VendorPage { items: paged.data, page_info: paged.meta })
    }

    /// A vendor (as `GET /api/v1/vendors/{id}`).
    async fn vendor(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<VendorView> {
        let (_, principal) = authorized::<ProcurementRead>(ctx).map_err(gql)?;
        service(ctx)?.get_vendor(principal.tenant, id).await.map_err(gql)
    }
}

#[derive(InputObject)]
#[graphql(name = "PurchaseOrderLineInput")]
pub struct LineInput {
    product_id: Uuid,
    quantity: i64,
    unit_cost: i64,
}

#[derive(InputObject)]
#[graphql(name = "ReceiptLineInput")]
pub struct ReceiptInput {
    line_id: Uuid,
    quantity: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(name = "PurchaseOrderAction")]
pub enum ActionInput {
    Submit,
    Approve,
    Cancel,
    Close,
}

#[derive(Default)]
pub struct Mutation;

#[Object(name = "ProcurementMutation")]
impl Mutation {
    /// Create a vendor (as `POST /api/v1/vendors`).
    async fn create_vendor(
        &self,
        ctx: &Context<'_>,
        input: CreateVendor,
    ) -> async_graphql::Result<VendorView> {
        let (_, principal) = authorized::<ProcurementWrite>(ctx).map_err(gql)?;
        validated(input)?.run(&**service(ctx)?, principal.tenant).await.map_err(gql)
    }

    /// Change a vendor (as `PATCH /api/v1/vendors/{id}`); `ifVersion` works
    /// as `If-Match` does.
    async fn update_vendor(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        input: UpdateVendor,
        if_version: Option<i32>,
    ) -> async_graphql::Result<VendorView> {
        let (_, principal) = authorized::<ProcurementWrite>(ctx).map_err(gql)?;
        let changes = validated(input)?.into();
        service(ctx)?.update_vendor(principal.tenant, id, if_version, changes).await.map_err(gql)
    }

    /// Delete a vendor without purchase orders (as `DELETE /api/v1/vendors/{id}`);
    /// `true` once deleted.
    async fn delete_vendor(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<bool> {
        let (_, principal) = authorized::<ProcurementWrite>(ctx).map_err(gql)?;
        service(ctx)?.delete_vendor(principal.tenant, id).await.map_err(gql)?;
        Ok(true)
    }

    /// Draft a purchase order; the total is computed by the server.
    async fn create_purchase_order(
        &self,
        ctx: &Context<'_>,
        vendor_id: Uuid,
        warehouse_id: Uuid,
        lines: Vec<LineInput>,
        notes: Option<String>,
    ) -> async_graphql::Result<PurchaseOrderView> {
        let (_, principal) = authorized::<ProcurementWrite>(ctx).map_err(gql)?;
        let lines: Vec<NewLine> = lines
            .into_iter()
            .map(|l| NewLine { product_id: l.product_id, quantity: l.quantity, unit_cost: l.unit_cost })
            .collect();
        check_order(notes.as_deref(), &lines).map_err(|errors| gql(ApiError::validation(errors)))?;
        let tenant = principal.tenant;
        service(ctx)?
            .create_order(tenant, principal.user_id, vendor_id, warehouse_id, notes, lines)
            .await
            .map_err(gql)
    }

    /// Move an order through its state machine (approval needs
    /// procurement:approve); `ifVersion` works as `If-Match` does on REST.
    async fn transition_purchase_order(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        action: ActionInput,
        if_version: Option<i32>,
    ) -> async_graphql::Result<PurchaseOrderView> {
        let (_, principal) = match action {
            ActionInput::Approve => authorized::<ProcurementApprove>(ctx),
            _ => authorized::<ProcurementWrite>(ctx),
        }
        .map_err(gql)?;
        let action = match action {
            ActionInput::Submit => Action::Submit,
            ActionInput::Approve => Action::Approve,
            ActionInput::Cancel => Action::Cancel,
            ActionInput::Close => Action::Close,
        };
        service(ctx)?
            .transition(principal.tenant, principal.user_id, id, if_version, action)
            .await
            .map_err(gql)
    }

    /// Receive goods: order, stock and ledger in one transaction.
    async fn receive_goods(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        lines: Vec<ReceiptInput>,
        if_version: Option<i32>,
    ) -> async_graphql::Result<PurchaseOrderView> {
        let (_, principal) = authorized::<ProcurementWrite>(ctx).map_err(gql)?;
        let lines: Vec<ReceiptLine> =
            lines.into_iter().map(|l| ReceiptLine { line_id: l.line_id, quantity: l.quantity }).collect();
        check_receipt(&lines).map_err(|errors| gql(ApiError::validation(errors)))?;
        service(ctx)?.receive(principal.tenant, principal.user_id, id, if_version, lines).await.map_err(gql)
    }
}
