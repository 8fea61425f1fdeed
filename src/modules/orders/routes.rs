//! REST routes of the orders module.

use actix_web::{HttpMessage, HttpRequest, HttpResponse, get, post, put, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::{scope, service_config::ServiceConfig};
use uuid::Uuid;

use super::{
    CUSTOMER_SORTS, CustomerFilter, CustomerView, ImportTo, ImportView, NewCustomer, NewOrder, NewOrderLine,
    NewRefund, Notifications, ORDER_SORTS, OrderFilter, OrderService, OrderView, OrdersRead, OrdersRefund,
    OrdersWrite, RefundView, STATES,
    callbacks::{CALLBACK_SORTS, CallbackFilter, CallbackView},
    check_customer, check_order, check_refund,
    kpis::{self, Analytics, CustomerSpend, KpiRebuild, Kpis, ProductSales},
    notify::{self, NOTIFICATION_SORTS, NotificationFilter, NotificationStats, NotificationView},
};
use crate::{
    error::{ApiError, ApiResult, Code, FieldError, Problem},
    platform::{
        http::{ApiJson, Data, ListRequest, Paged, Validate, created, ok, one_of, parse_sort},
        idempotency,
        rbac::Authorized,
        state::AppState,
        validate,
    },
};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(
        scope("/customers")
            .service(list_customers)
            .service(create_customer)
            .service(get_customer)
            .service(customer_rank)
            .service(get_notification_preferences)
            .service(update_notification_preferences),
    )
    .service(
        scope("/orders")
            .service(list_orders)
            .service(place_order)
            // Before `/orders/{id}`, which would take `imports` for an id.
            .service(order_kpis)
            .service(order_kpis_realtime)
            .service(rebuild_order_kpis)
            .service(top_customers)
            .service(bestsellers)
            .service(upload_order_import)
            .service(list_order_imports)
            .service(get_order_import)
            .service(list_notifications)
            .service(notification_stats)
            .service(recent_notifications)
            .service(get_notification)
            .service(resend_notification)
            .service(receive_stripe_callback)
            .service(list_payment_callbacks)
            .service(get_order)
            .service(cancel_order)
            .service(refund_order)
            .service(list_order_refunds)
            .service(list_order_notifications),
    );
}

#[derive(Deserialize, ToSchema, async_graphql::InputObject)]
#[serde(deny_unknown_fields)]
#[graphql(name = "CreateCustomerInput")]
pub struct CreateCustomer {
    /// The customer's id in the shop or channel they came from; unique.
    #[schema(example = "C-1001", min_length = 1, max_length = 200)]
    external_id: Option<String>,
    #[schema(example = "ada@example.com", max_length = 254)]
    email: String,
    #[schema(example = "Ada Lovelace", min_length = 1, max_length = 200)]
    name: String,
    /// Both on when absent.
    notifications: Option<Notifications>,
}

impl CreateCustomer {
    pub(super) fn into_new(self) -> NewCustomer {
        NewCustomer {
            external_id: self.external_id,
            email: self.email,
            name: self.name.trim().to_owned(),
            notifications: self.notifications.unwrap_or_default(),
        }
    }
}

impl Validate for CreateCustomer {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let new = NewCustomer {
            external_id: self.external_id.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
            notifications: Notifications::default(),
        };
        check_customer(&new)
    }
}

/// Create a customer; 409 when `external_id` is taken.
#[utoipa::path(tag = "orders", request_body = CreateCustomer,
    responses((status = 201, body = Data<CustomerView>), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
#[post("")]
async fn create_customer(
    auth: Authorized<OrdersWrite>,
    orders: web::Data<dyn OrderService>,
    body: ApiJson<CreateCustomer>,
) -> ApiResult<HttpResponse> {
    Ok(created(orders.create_customer(auth.tenant, body.0.into_new()).await?))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct CustomerQuery {
        /// `created_at`, `email`; prefix `-` for descending (default `-created_at`).
        #[param(pattern = "^-?(created_at|email)$")]
        sort: Option<String>,
        /// Customers with exactly this email.
        email: Option<String>,
    }
}

/// Customers, newest first unless sorted otherwise.
#[utoipa::path(tag = "orders", params(CustomerQuery),
    responses((status = 200, body = Paged<CustomerView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("")]
async fn list_customers(
    auth: Authorized<OrdersRead>,
    orders: web::Data<dyn OrderService>,
    query: web::Query<CustomerQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    let sort = parse_sort(q.sort.as_deref(), &CUSTOMER_SORTS)?;
    let filter = CustomerFilter { email: q.email, sort };
    Ok(HttpResponse::Ok().json(orders.list_customers(auth.tenant, filter, &list).await?))
}

/// One customer.
#[utoipa::path(tag = "orders",
    responses((status = 200, body = Data<CustomerView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/{id}")]
async fn get_customer(
    auth: Authorized<OrdersRead>,
    orders: web::Data<dyn OrderService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    Ok(ok(orders.get_customer(auth.tenant, id.into_inner()).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// The order's id in the shop or channel; unique (409 when taken).
    #[schema(example = "1042", min_length = 1, max_length = 200)]
    external_order_id: Option<String>,
    /// Where the order came from; `api` when absent.
    #[schema(example = "web", min_length = 1, max_length = 50)]
    channel: Option<String>,
    customer_id: Uuid,
    /// Where its stock is reserved and shipped from.
    warehouse_id: Uuid,
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
    currency: String,
    /// Each with `product_id` or `sku`.
    #[schema(min_items = 1, max_items = 500)]
    lines: Vec<NewOrderLine>,
}

impl PlaceOrder {
    fn into_new(self) -> NewOrder {
        NewOrder {
            external_order_id: self.external_order_id,
            placed_at: None,
            channel: self.channel.unwrap_or_else(|| "api".to_owned()),
            customer_id: self.customer_id,
            warehouse_id: self.warehouse_id,
            currency: self.currency,
            lines: self.lines,
        }
    }
}

impl Validate for PlaceOrder {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let new = NewOrder {
            external_order_id: self.external_order_id.clone(),
            placed_at: None,
            channel: self.channel.clone().unwrap_or_else(|| "api".to_owned()),
            customer_id: self.customer_id,
            warehouse_id: self.warehouse_id,
            currency: self.currency.clone(),
            lines: self.lines.clone(),
        };
        check_order(&new)
    }
}

/// Place an order: it is `pending` and its saga (reserve, pay, fulfil)
/// runs in the background; follow it with `GET /api/v1/orders/{id}` or
/// the `order.*` events. The total is computed by the server.
#[utoipa::path(tag = "orders", request_body = PlaceOrder,
    responses((status = 201, body = Data<OrderView>), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, description = "`external_order_id` is taken", body = Problem),
        (status = 422, description = "Invalid fields, or an unknown customer, warehouse or product (the field names the line)", body = Problem)),
    security(("bearer" = [])))]
#[post("")]
async fn place_order(
    auth: Authorized<OrdersWrite>,
    state: web::Data<AppState>,
    orders: web::Data<dyn OrderService>,
    body: ApiJson<PlaceOrder>,
) -> ApiResult<HttpResponse> {
    let order = orders.place_order(auth.tenant, body.0.into_new()).await?;
    state.wakeup.wake();
    Ok(created(order))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct OrderQuery {
        /// `created_at`, `total`; prefix `-` for descending (default `-created_at`).
        #[param(pattern = "^-?(created_at|total)$")]
        sort: Option<String>,
        /// pending, reserved, paid, fulfilled, completed, failed or cancelled.
        #[param(pattern = "^(pending|reserved|paid|fulfilled|completed|failed|cancelled)$")]
        status: Option<String>,
        customer_id: Option<Uuid>,
        /// The order with exactly this external id.
        external_order_id: Option<String>,
        /// Orders created at or after this time (RFC 3339).
        created_after: Option<DateTime<Utc>>,
        /// Orders created before this time (RFC 3339).
        created_before: Option<DateTime<Utc>>,
    }
}

/// Orders with their lines, payments and history, newest first unless
/// sorted otherwise.
#[utoipa::path(tag = "orders", params(OrderQuery),
    responses((status = 200, body = Paged<OrderView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("")]
async fn list_orders(
    auth: Authorized<OrdersRead>,
    orders: web::Data<dyn OrderService>,
    query: web::Query<OrderQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    let sort = parse_sort(q.sort.as_deref(), &ORDER_SORTS)?;
    one_of("status", q.status.as_deref(), &STATES)?;
    let filter = OrderFilter {
        status: q.status,
        customer_id: q.customer_id,
        external_order_id: q.external_order_id,
        created_after: q.created_after,
        created_before: q.created_before,
        sort,
    };
    Ok(HttpResponse::Ok().json(orders.list_orders(auth.tenant, filter, &list).await?))
}

/// One order with its lines, payments and state history.
#[utoipa::path(tag = "orders",
    responses((status = 200, body = Data<OrderView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/{id}")]
async fn get_order(
    auth: Authorized<OrdersRead>,
    orders: web::Data<dyn OrderService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    Ok(ok(orders.get_order(auth.tenant, id.into_inner()).await?))
}

/// Where Stripe sends its events about the tenant's payments: give this
/// URL to Stripe as a webhook endpoint (its signing secret goes into
/// `modules.orders.stripe.webhook_secret`). No token: the `Stripe-Signature`
/// header is the authentication, checked before anything else. A forged or
/// stale callback (outside `webhook_tolerance_seconds`), or a second
/// delivery of an event id already received, is refused and logged and
/// changes nothing. `payment_intent.succeeded` and
/// `payment_intent.payment_failed` settle an unanswered payment (the order
/// goes on to `paid`, or fails with its stock released); `refund.updated`
/// and `charge.refunded` settle refunds and voids. An event applied before
/// changes nothing (`unchanged`); other event types are `ignored`.
#[utoipa::path(tag = "orders",
    request_body(content = Object, description = "Stripe's event, as it sends it", content_type = "application/json"),
    params(
        ("tenant_id" = Uuid, Path, description = "The tenant whose payments the events are about"),
        ("Stripe-Signature" = Option<String>, Header, description = "`t=<unix time>,v1=<hex HMAC-SHA256 of \"t.body\">`"),
    ),
    responses((status = 200, description = "Verified and handled; `outcome` says how", body = Data<CallbackView>),
        (status = 401, description = "Forged, stale, or a replay of a received event (logged either way)", body = Problem),
        (status = 404, description = "No such tenant", body = Problem),
        (status = 415, description = "Not application/json", body = Problem)))]
#[post("/payments/stripe/callback/{tenant_id}")]
async fn receive_stripe_callback(
    req: HttpRequest,
    state: web::Data<AppState>,
    orders: web::Data<dyn OrderService>,
    tenant_id: web::Path<Uuid>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    let is_json = req.mime_type().ok().flatten().is_some_and(|m| m.subtype() == "json");
    if !is_json {
        return Err(ApiError::new(Code::UnsupportedMediaType, "a Stripe callback must be application/json"));
    }
    let signature = req.headers().get("stripe-signature").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let received = orders.receive_stripe_callback(tenant_id.into_inner(), signature, body).await?;
    // The saga's next step may have been queued.
    state.wakeup.wake();
    Ok(ok(received))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct CallbackQuery {
        /// `received_at`; prefix `-` for descending (default `-received_at`).
        #[param(pattern = "^-?received_at$")]
        sort: Option<String>,
        /// Only callbacks that came to this.
        #[param(pattern = "^(applied|unchanged|ignored|rejected|forged|stale|replayed)$")]
        outcome: Option<String>,
    }
}

/// The payment gateway's callbacks received for the tenant, newest first:
/// verified or not, with what came of each (`outcome`, `detail`).
#[utoipa::path(tag = "orders", params(CallbackQuery),
    responses((status = 200, body = Paged<CallbackView>),
        (status = 400, description = "An unknown outcome or sort (the field is named)", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("/payments/callbacks")]
async fn list_payment_callbacks(
    auth: Authorized<OrdersRead>,
    orders: web::Data<dyn OrderService>,
    query: web::Query<CallbackQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    let filter = CallbackFilter { outcome: q.outcome, sort: parse_sort(q.sort.as_deref(), &CALLBACK_SORTS)? };
    Ok(HttpResponse::Ok().json(orders.list_callbacks(auth.tenant, filter, &list).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOrder {
    /// Recorded as the order's `failure_reason` and in its history.
    #[schema(example = "the customer changed their mind", max_length = 500)]
    reason: Option<String>,
}

impl Validate for CancelOrder {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        match &self.reason {
            Some(reason) => {
                validate::Checks::default().check("reason", validate::plain_text(reason, 500)).finish()
            }
            None => Ok(()),
        }
    }
}

/// Cancel an order that has not shipped (pending, reserved or paid): its
/// reservation is released and its payment voided.
#[utoipa::path(tag = "orders", request_body = CancelOrder,
    responses((status = 200, body = Data<OrderView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "The order is fulfilled, completed, failed or cancelled (named in the detail)", body = Problem),
        (status = 422, body = Problem)),
    security(("bearer" = [])))]
#[post("/{id}/cancel")]
async fn cancel_order(
    auth: Authorized<OrdersWrite>,
    state: web::Data<AppState>,
    orders: web::Data<dyn OrderService>,
    id: web::Path<Uuid>,
    body: ApiJson<CancelOrder>,
) -> ApiResult<HttpResponse> {
    let order = orders.cancel_order(auth.tenant, id.into_inner(), body.0.reason).await?;
    state.wakeup.wake();
    Ok(ok(order))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundOrder {
    /// Minor units, at most what was captured minus earlier refunds.
    #[schema(example = 1000, minimum = 1)]
    amount: i64,
    /// Why the money goes back; recorded with the refund and its events.
    #[schema(example = "damaged in transit", min_length = 1, max_length = 500)]
    reason: String,
}

impl Validate for RefundOrder {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        // The key is checked apart, from its header.
        let new = NewRefund { amount: self.amount, reason: self.reason.clone(), idempotency_key: "k".into() };
        check_refund(&new)
    }
}

/// Refund part or all of a paid (fulfilled, completed) order. The refund
/// is `requested`, and the gateway is asked in the background: follow it in
/// the order's `refunds` or the `order.refunded` / `order.refund_failed`
/// events. `Idempotency-Key` is required: the same key gives the same
/// refund back (200), never a second one.
#[utoipa::path(tag = "orders", request_body = RefundOrder,
    params(("Idempotency-Key" = String, Header, description = "Required: names this refund. The same key gives the first refund back (200) instead of refunding twice; the key with another amount or reason is a 422 `idempotency_conflict`.")),
    responses((status = 201, description = "The refund, `requested`", body = Data<RefundView>),
        (status = 200, description = "The refund made earlier with this Idempotency-Key", body = Data<RefundView>),
        (status = 400, description = "No Idempotency-Key header, or a malformed body", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "`refund_amount_exceeded`: more than captured minus earlier refunds; `conflict`: the order is not paid", body = Problem),
        (status = 422, body = Problem)),
    security(("bearer" = [])))]
#[post("/{id}/refunds")]
async fn refund_order(
    auth: Authorized<OrdersRefund>,
    req: HttpRequest,
    state: web::Data<AppState>,
    orders: web::Data<dyn OrderService>,
    id: web::Path<Uuid>,
    body: ApiJson<RefundOrder>,
) -> ApiResult<HttpResponse> {
    let key = idempotency::parse_key(req.headers())?;
    let body = body.0;
    let new = NewRefund { amount: body.amount, reason: body.reason.trim().to_owned(), idempotency_key: key };
    let (refund, created_now) = orders.refund_order(auth.tenant, id.into_inner(), new).await?;
    if !created_now {
        return Ok(ok(refund));
    }
    state.wakeup.wake();
    Ok(created(refund))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct RefundQuery {}
}

/// An order's refunds, oldest first.
#[utoipa::path(tag = "orders", params(RefundQuery),
    responses((status = 200, body = Paged<RefundView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/{id}/refunds")]
async fn list_order_refunds(
    auth: Authorized<OrdersRead>,
    orders: web::Data<dyn OrderService>,
    id: web::Path<Uuid>,
    query: web::Query<RefundQuery>,
) -> ApiResult<HttpResponse> {
    let list = query.list()?;
    Ok(HttpResponse::Ok().json(orders.list_refunds(auth.tenant, id.into_inner(), &list).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UploadQuery {
    /// Where the imported orders' stock is reserved and shipped from.
    warehouse_id: Uuid,
    /// Tell each imported order's customer it was placed (its `placed`
    /// notifications, as `POST /api/v1/orders` writes them). Default
    /// `false`: a shop export's orders were announced where they were placed.
    #[serde(default)]
    send_receipts: bool,
}

/// The upload: `file`, the CSV file, and no other part (so the document
/// says `additionalProperties: false`, from `deny_unknown_fields`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documents the multipart body; read by multer
pub struct ImportUpload {
    /// The CSV file: the header `external_order_id,order_placed_at,currency,customer_id,customer_email,customer_name,product_sku,product_name,unit_price_cents,qty`, then several rows per order.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// Import orders from a CSV file (`multipart/form-data`, field `file`),
/// at most `modules.orders.import_max_bytes`. A wrong header is refused at
/// once (422, nothing stored); otherwise the file is stored and imported
/// in the background: 202 with the import, to follow with
/// `GET /api/v1/orders/imports/{id}`.
#[utoipa::path(tag = "orders", params(UploadQuery),
    request_body(content = ImportUpload, content_type = "multipart/form-data"),
    responses((status = 202, description = "The import, `queued`", body = Data<ImportView>),
        (status = 400, description = "A malformed multipart body", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 413, description = "The file is larger than `modules.orders.import_max_bytes`", body = Problem),
        (status = 415, description = "The body is not `multipart/form-data`", body = Problem),
        (status = 422, description = "No `file` field, a wrong header (`errors` names `file`) or an unknown `warehouse_id`", body = Problem)),
    security(("bearer" = [])))]
#[post("/imports")]
async fn upload_order_import(
    auth: Authorized<OrdersWrite>,
    req: HttpRequest,
    state: web::Data<AppState>,
    orders: web::Data<dyn OrderService>,
    query: web::Query<UploadQuery>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    use futures_util::{StreamExt, TryStreamExt};
    let content_type = req.headers().get(actix_web::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let boundary = content_type.and_then(|ct| multer::parse_boundary(ct).ok()).ok_or_else(|| {
        ApiError::new(Code::UnsupportedMediaType, "send the file as multipart/form-data, in the field `file`")
    })?;
    // The request body is read on this thread; multer wants a stream it
    // may move, so the body comes over a small channel.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<web::Bytes, std::io::Error>>(4);
    actix_web::rt::spawn(async move {
        let mut payload = payload;
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()));
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut multipart = multer::Multipart::new(body, boundary);
    let malformed =
        |e: multer::Error| ApiError::new(Code::BadRequest, format!("the multipart body is malformed: {e}"));
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        if field.name() != Some("file") {
            continue;
        }
        let filename = field.file_name().unwrap_or("upload.csv").chars().take(200).collect();
        let stream = field.map_err(malformed).boxed();
        let to = ImportTo { warehouse_id: query.warehouse_id, send_receipts: query.send_receipts };
        let import = orders.upload_import(auth.tenant, to, filename, stream).await?;
        state.wakeup.wake();
        return Ok(HttpResponse::Accepted().json(Data { data: import }));
    }
    Err(ApiError::validation(vec![FieldError::new("file", "the form has no field `file`")]))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct ImportQuery {}
}

/// Imports, newest first.
#[utoipa::path(tag = "orders", params(ImportQuery),
    responses((status = 200, body = Paged<ImportView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("/imports")]
async fn list_order_imports(
    auth: Authorized<OrdersRead>,
    orders: web::Data<dyn OrderService>,
    query: web::Query<ImportQuery>,
) -> ApiResult<HttpResponse> {
    let list = query.list()?;
    Ok(HttpResponse::Ok().json(orders.list_imports(auth.tenant, &list).await?))
}

/// One import: its state, rows read, orders created and skipped, and its
/// bad rows (the first 100, each with line, column and message).
#[utoipa::path(tag = "orders",
    responses((status = 200, body = Data<ImportView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/imports/{id}")]
async fn get_order_import(
    auth: Authorized<OrdersRead>,
    orders: web::Data<dyn OrderService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    Ok(ok(orders.get_import(auth.tenant, id.into_inner()).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct KpiQuery {
    /// The first day (UTC), `YYYY-MM-DD`.
    #[param(format = Date, example = "2026-11-01")]
    from: String,
    /// The last day (UTC), included; at most 366 days in all.
    #[param(format = Date, example = "2026-11-30")]
    to: String,
}

/// The orders' KPIs of each UTC day from `from` to `to` (both included, at
/// most 366 days): orders completed and failed, unique customers, refunds
/// processed, and per currency gross, refunded, revenue and average order
/// value. What counts when: docs/orders.md.
#[utoipa::path(tag = "orders", params(KpiQuery),
    responses((status = 200, body = Data<Vec<Kpis>>), (status = 400, description = "A date is invalid, `to` is before `from` or the range is too long (the field is named)", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("/kpis")]
async fn order_kpis(
    auth: Authorized<OrdersRead>,
    analytics: web::Data<dyn Analytics>,
    query: web::Query<KpiQuery>,
) -> ApiResult<HttpResponse> {
    let from = kpis::parse_date("from", &query.from)?;
    let to = kpis::parse_date("to", &query.to)?;
    kpis::check_range(from, to)?;
    Ok(ok(analytics.daily_kpis(auth.tenant, from, to).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RealtimeQuery {
    /// The window: the last `minutes` minutes up to now (1 to 1440).
    #[param(minimum = 1, maximum = 1440, example = 60)]
    minutes: i64,
}

/// The orders' KPIs of the last `minutes` minutes, as one period.
#[utoipa::path(tag = "orders", params(RealtimeQuery),
    responses((status = 200, body = Data<Kpis>), (status = 400, description = "`minutes` is out of range", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("/kpis/realtime")]
async fn order_kpis_realtime(
    auth: Authorized<OrdersRead>,
    analytics: web::Data<dyn Analytics>,
    query: web::Query<RealtimeQuery>,
) -> ApiResult<HttpResponse> {
    kpis::check_minutes(query.minutes)?;
    let to = Utc::now();
    let from = to - chrono::Duration::minutes(query.minutes);
    Ok(ok(analytics.kpis(auth.tenant, from, to).await?))
}

/// Build the KPIs and leaderboards kept in Redis again from the tables
/// (after a Redis outage or a wiped Redis): every order that completed or
/// failed and every refund processed is counted again. Without Redis the
/// database aggregates are exact and nothing is rebuilt (`backend:
/// database`).
#[utoipa::path(tag = "orders",
    responses((status = 200, body = Data<KpiRebuild>), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, description = "Another rebuild of the tenant's KPIs is under way", body = Problem),
        (status = 503, description = "Redis is unavailable", body = Problem)),
    security(("bearer" = [])))]
#[post("/kpis/rebuild")]
async fn rebuild_order_kpis(
    auth: Authorized<OrdersWrite>,
    analytics: web::Data<dyn Analytics>,
) -> ApiResult<HttpResponse> {
    Ok(ok(analytics.rebuild(auth.tenant).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct SpendQuery {
    /// The currency spent (ISO 4217); spends in different currencies are
    /// ranked apart.
    #[param(pattern = "^[A-Z]{3}$", example = "EUR")]
    currency: String,
    /// How many entries (1 to 100, default 10).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// The customers with the largest spend in a currency: the sum of `total -
/// refunded` of their completed orders, best first.
#[utoipa::path(tag = "orders", params(SpendQuery),
    responses((status = 200, body = Data<Vec<CustomerSpend>>), (status = 400, description = "`currency` or `limit` is invalid", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("/leaderboards/customers")]
async fn top_customers(
    auth: Authorized<OrdersRead>,
    analytics: web::Data<dyn Analytics>,
    query: web::Query<SpendQuery>,
) -> ApiResult<HttpResponse> {
    kpis::check_currency(&query.currency)?;
    let limit = kpis::check_limit(query.limit)?;
    Ok(ok(analytics.top_customers(auth.tenant, &query.currency, limit).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RankQuery {
    /// The currency of the leaderboard (ISO 4217).
    #[param(pattern = "^[A-Z]{3}$", example = "EUR")]
    currency: String,
}

/// A customer's place on the spend leaderboard of a currency; `rank` is
/// `null` without a completed order in it.
#[utoipa::path(tag = "orders", params(RankQuery),
    responses((status = 200, body = Data<CustomerSpend>), (status = 400, description = "`currency` is invalid", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/{id}/rank")]
async fn customer_rank(
    auth: Authorized<OrdersRead>,
    analytics: web::Data<dyn Analytics>,
    id: web::Path<Uuid>,
    query: web::Query<RankQuery>,
) -> ApiResult<HttpResponse> {
    kpis::check_currency(&query.currency)?;
    Ok(ok(analytics.customer_rank(auth.tenant, id.into_inner(), &query.currency).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LimitQuery {
    /// How many entries (1 to 100, default 10).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// The products sold most: units on the lines of completed orders.
#[utoipa::path(tag = "orders", params(LimitQuery),
    responses((status = 200, body = Data<Vec<ProductSales>>), (status = 400, description = "`limit` is out of range", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("/leaderboards/products")]
async fn bestsellers(
    auth: Authorized<OrdersRead>,
    analytics: web::Data<dyn Analytics>,
    query: web::Query<LimitQuery>,
) -> ApiResult<HttpResponse> {
    let limit = kpis::check_limit(query.limit)?;
    Ok(ok(analytics.bestsellers(auth.tenant, limit).await?))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct NotificationQuery {
        /// `created_at`; prefix `-` for descending (default `-created_at`).
        #[param(pattern = "^-?created_at$")]
        sort: Option<String>,
        /// placed, paid, completed, failed, cancelled or refunded.
        #[serde(rename = "type")]
        #[param(rename = "type", pattern = "^(placed|paid|completed|failed|cancelled|refunded)$")]
        notification_type: Option<String>,
        /// log, email or webhook.
        #[param(pattern = "^(log|email|webhook)$")]
        channel: Option<String>,
        /// pending, sent, failed or skipped.
        #[param(pattern = "^(pending|sent|failed|skipped)$")]
        status: Option<String>,
        customer_id: Option<Uuid>,
        /// Notifications created at or after this time (RFC 3339).
        created_after: Option<DateTime<Utc>>,
        /// Notifications created before this time (RFC 3339).
        created_before: Option<DateTime<Utc>>,
    }
}

impl NotificationQuery {
    fn filter(self, order_id: Option<Uuid>) -> ApiResult<(ListRequest, NotificationFilter)> {
        let list = self.list()?;
        let filter = NotificationFilter {
            notification_type: self.notification_type,
            channel: self.channel,
            status: self.status,
            customer_id: self.customer_id,
            order_id,
            created_after: self.created_after,
            created_before: self.created_before,
            sort: parse_sort(self.sort.as_deref(), &NOTIFICATION_SORTS)?,
        };
        notify::check_filter(&filter)?;
        Ok((list, filter))
    }
}

/// The notifications sent (or to send, failed, skipped) to the customers
/// about their orders, newest first: one per channel and order event.
#[utoipa::path(tag = "orders", params(NotificationQuery),
    responses((status = 200, body = Paged<NotificationView>),
        (status = 400, description = "An unknown filter value, a bad time or window (the field is named)", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("/notifications")]
async fn list_notifications(
    auth: Authorized<OrdersRead>,
    orders: web::Data<dyn OrderService>,
    query: web::Query<NotificationQuery>,
) -> ApiResult<HttpResponse> {
    let (list, filter) = query.into_inner().filter(None)?;
    Ok(HttpResponse::Ok().json(orders.list_notifications(auth.tenant, filter, &list).await?))
}

/// The notifications of one order, newest first, with the same filters.
#[utoipa::path(tag = "orders", params(NotificationQuery),
    responses((status = 200, body = Paged<NotificationView>),
        (status = 400, description = "An unknown filter value, a bad time or window (the field is named)", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/{id}/notifications")]
async fn list_order_notifications(
    auth: Authorized<OrdersRead>,
    orders: web::Data<dyn OrderService>,
    id: web::Path<Uuid>,
    query: web::Query<NotificationQuery>,
) -> ApiResult<HttpResponse> {
    let (list, filter) = query.into_inner().filter(Some(id.into_inner()))?;
    Ok(HttpResponse::Ok().json(orders.list_notifications(auth.tenant, filter, &list).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct WindowQuery {
    /// Notifications created at or after this time (RFC 3339); all when absent.
    created_after: Option<DateTime<Utc>>,
    /// Notifications created before this time (RFC 3339).
    created_before: Option<DateTime<Utc>>,
}

/// Counts of notifications per state, overall, per channel (with whether
/// the channel is on) and per type, over an optional creation window.
#[utoipa::path(tag = "orders", params(WindowQuery),
    responses((status = 200, body = Data<NotificationStats>),
        (status = 400, description = "A bad time, or `created_before` before `created_after`", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("/notifications/stats")]
async fn notification_stats(
    auth: Authorized<OrdersRead>,
    orders: web::Data<dyn OrderService>,
    query: web::Query<WindowQuery>,
) -> ApiResult<HttpResponse> {
    notify::check_window(query.created_after, query.created_before)?;
    Ok(ok(orders.notification_stats(auth.tenant, query.created_after, query.created_before).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RecentQuery {
    /// How many (1 to 100, default 10).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// The newest notifications.
#[utoipa::path(tag = "orders", params(RecentQuery),
    responses((status = 200, body = Data<Vec<NotificationView>>), (status = 400, description = "`limit` is out of range", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("/notifications/recent")]
async fn recent_notifications(
    auth: Authorized<OrdersRead>,
    orders: web::Data<dyn OrderService>,
    query: web::Query<RecentQuery>,
) -> ApiResult<HttpResponse> {
    let limit = notify::check_recent(query.limit)?;
    Ok(ok(orders.recent_notifications(auth.tenant, limit).await?))
}

/// One notification.
#[utoipa::path(tag = "orders",
    responses((status = 200, body = Data<NotificationView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/notifications/{id}")]
async fn get_notification(
    auth: Authorized<OrdersRead>,
    orders: web::Data<dyn OrderService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    Ok(ok(orders.get_notification(auth.tenant, id.into_inner()).await?))
}

/// Send a `failed` notification again: it is `pending` and its job tries
/// it anew (with the same retries).
#[utoipa::path(tag = "orders",
    responses((status = 200, description = "The notification, `pending`", body = Data<NotificationView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "`notification_not_failed`: it is pending, sent or skipped", body = Problem)),
    security(("bearer" = [])))]
#[post("/notifications/{id}/resend")]
async fn resend_notification(
    auth: Authorized<OrdersWrite>,
    state: web::Data<AppState>,
    orders: web::Data<dyn OrderService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let notification = orders.resend_notification(auth.tenant, id.into_inner()).await?;
    state.wakeup.wake();
    Ok(ok(notification))
}

/// The channels a customer is notified on about their orders.
#[utoipa::path(tag = "orders",
    responses((status = 200, body = Data<Notifications>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/{id}/notification-preferences")]
async fn get_notification_preferences(
    auth: Authorized<OrdersRead>,
    orders: web::Data<dyn OrderService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    Ok(ok(orders.get_customer(auth.tenant, id.into_inner()).await?.notifications))
}

impl Validate for Notifications {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        Ok(())
    }
}

/// Set the channels a customer is notified on (an absent one is on). The
/// next notifications follow them; those written already stay as they are.
#[utoipa::path(tag = "orders", request_body = Notifications,
    responses((status = 200, body = Data<Notifications>),
        (status = 400, description = "A malformed body or an unknown field", body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem)),
    security(("bearer" = [])))]
#[put("/{id}/notification-preferences")]
async fn update_notification_preferences(
    auth: Authorized<OrdersWrite>,
    orders: web::Data<dyn OrderService>,
    id: web::Path<Uuid>,
    body: ApiJson<Notifications>,
) -> ApiResult<HttpResponse> {
    let customer = orders.set_notification_preferences(auth.tenant, id.into_inner(), body.0).await?;
    Ok(ok(customer.notifications))
}
