//! Bulk endpoints (`feature.bulk-operations`): up to 1000 items a request,
//! each created on its own (partial success), with a result per item in
//! the order given. Each item goes through the same service call, checks
//! and events as its single-item endpoint.

use actix_web::{HttpMessage, HttpRequest, HttpResponse, post, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::{
    error::{ApiError, ApiResult, FieldError, Problem},
    modules::{inventory::NewProduct, procurement::NewLine},
    platform::{
        governance::Governed,
        http::{ApiJson, Validate, parse_json},
        rbac::{self, Authorized, BulkWrite, InventoryWrite, ProcurementWrite},
        state::AppState,
    },
};

pub const MAX_ITEMS: usize = 1000;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(bulk_products).service(bulk_purchase_orders);
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// 1 to 1000 items, each shaped like the body of the single-item endpoint.
    #[schema(value_type = Vec<Object>, min_items = 1, max_items = 1000)]
    items: Vec<Value>,
}

impl Validate for BulkRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        if self.items.is_empty() || self.items.len() > MAX_ITEMS {
            Err(vec![FieldError::new("items", format!("must hold 1 to {MAX_ITEMS} items"))])
        } else {
            Ok(())
        }
    }
}

/// The outcome of one item.
#[derive(Serialize, ToSchema)]
pub struct ItemResult {
    /// Position in `items`.
    index: usize,
    /// What the single-item endpoint would have answered.
    #[schema(example = 201)]
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Problem>,
}

#[derive(Serialize, ToSchema)]
pub struct BulkMeta {
    succeeded: usize,
    failed: usize,
}

#[derive(Serialize, ToSchema)]
pub struct BulkResponse {
    data: Vec<ItemResult>,
    meta: BulkMeta,
}

fn respond(results: Vec<ItemResult>) -> HttpResponse {
    let succeeded = results.iter().filter(|r| r.error.is_none()).count();
    let meta = BulkMeta { succeeded, failed: results.len() - succeeded };
    HttpResponse::Ok().json(BulkResponse { data: results, meta })
}

fn outcome(index: usize, result: ApiResult<Value>) -> ItemResult {
    match result {
        Ok(data) => ItemResult { index, status: 201, data: Some(data), error: None },
        Err(err) => {
            ItemResult { index, status: err.code.status().as_u16(), data: None, error: Some(err.problem()) }
        }
    }
}

/// The module key of the items must be on too.
fn require_module(req: &HttpRequest, state: &AppState, key: &str) -> ApiResult<()> {
    match req.extensions().get::<std::rc::Rc<Governed>>() {
        Some(governed) => governed.require(&state.governance, key),
        None => Ok(()),
    }
}

/// Create up to 1000 products; one result per item (partial success).
#[utoipa::path(
    tag = "inventory",
    request_body = BulkRequest,
    responses(
        (status = 200, description = "A result per item, in order", body = BulkResponse),
        (status = 401, body = Problem),
        (status = 403, description = "Not allowed, or feature.bulk-operations / module.inventory off", body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("/bulk/products")]
async fn bulk_products(
    auth: Authorized<BulkWrite>,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: ApiJson<BulkRequest>,
) -> ApiResult<HttpResponse> {
    rbac::check::<InventoryWrite>(&state.rbac, &auth)?;
    require_module(&req, &state, "module.inventory")?;
    let mut results = Vec::with_capacity(body.0.items.len());
    for (index, item) in body.0.items.into_iter().enumerate() {
        let result = async {
            let bytes = serde_json::to_vec(&item).map_err(ApiError::internal)?;
            let new: NewProduct = crate::modules::inventory::routes::parse_product(&bytes)?;
            let view = state.inventory.create_product(auth.tenant, new).await?;
            serde_json::to_value(view).map_err(ApiError::internal)
        }
        .await;
        results.push(outcome(index, result));
    }
    state.wakeup.wake();
    Ok(respond(results))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderItem {
    vendor_id: uuid::Uuid,
    warehouse_id: uuid::Uuid,
    notes: Option<String>,
    lines: Vec<NewLine>,
}

impl Validate for OrderItem {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.lines.is_empty() || self.lines.len() > 500 {
            errors.push(FieldError::new("lines", "must hold 1 to 500 lines"));
        }
        for (i, line) in self.lines.iter().enumerate() {
            if line.quantity <= 0 {
                errors
                    .push(FieldError::new(format!("lines[{i}].quantity"), "must be a positive whole number"));
            }
            if line.unit_cost < 0 {
                errors.push(FieldError::new(format!("lines[{i}].unit_cost"), "must not be negative"));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

/// Create up to 1000 purchase orders (drafts); one result per item.
#[utoipa::path(
    tag = "procurement",
    request_body = BulkRequest,
    responses(
        (status = 200, description = "A result per item, in order", body = BulkResponse),
        (status = 401, body = Problem),
        (status = 403, description = "Not allowed, or feature.bulk-operations / module.procurement off", body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("/bulk/purchase-orders")]
async fn bulk_purchase_orders(
    auth: Authorized<BulkWrite>,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: ApiJson<BulkRequest>,
) -> ApiResult<HttpResponse> {
    rbac::check::<ProcurementWrite>(&state.rbac, &auth)?;
    require_module(&req, &state, "module.procurement")?;
    let mut results = Vec::with_capacity(body.0.items.len());
    for (index, item) in body.0.items.into_iter().enumerate() {
        let result = async {
            let bytes = serde_json::to_vec(&item).map_err(ApiError::internal)?;
            let o: OrderItem = parse_json(&bytes)?;
            let view = state
                .procurement
                .create_order(auth.tenant, auth.user_id, o.vendor_id, o.warehouse_id, o.notes, o.lines)
                .await?;
            serde_json::to_value(view).map_err(ApiError::internal)
        }
        .await;
        results.push(outcome(index, result));
    }
    state.wakeup.wake();
    Ok(respond(results))
}
