//! REST routes of the procurement module.

use actix_web::{HttpResponse, delete, get, patch, post, web};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::{Action, NewLine, PurchaseOrderView, ReceiptLine, VendorView};
use crate::{
    error::{ApiResult, FieldError, Problem},
    platform::{
        http::{ApiJson, Data, PageRequest, Paged, Validate, created, no_content, ok},
        rbac::{Authorized, ProcurementApprove, ProcurementRead, ProcurementWrite},
        state::AppState,
        validate::{self, Checks},
    },
};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(list_vendors)
        .service(create_vendor)
        .service(get_vendor)
        .service(update_vendor)
        .service(delete_vendor)
        .service(list_orders)
        .service(create_order)
        .service(get_order)
        .service(submit_order)
        .service(approve_order)
        .service(cancel_order)
        .service(close_order)
        .service(receive_goods);
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVendor {
    #[schema(example = "Acme Supplies")]
    name: String,
    email: Option<String>,
    #[schema(example = "EUR")]
    currency: String,
}

impl Validate for CreateVendor {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut checks = Checks::default();
        checks
            .check("name", validate::name(&self.name))
            .check("currency", validate::currency(&self.currency));
        if let Some(email) = &self.email {
            checks.check("email", validate::email(email));
        }
        checks.finish()
    }
}

/// Create a vendor.
#[utoipa::path(tag = "procurement", request_body = CreateVendor,
    responses((status = 201, body = Data<VendorView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
#[post("/vendors")]
async fn create_vendor(
    auth: Authorized<ProcurementWrite>,
    state: web::Data<AppState>,
    body: ApiJson<CreateVendor>,
) -> ApiResult<HttpResponse> {
    let b = body.0;
    Ok(created(
        state.procurement.create_vendor(auth.tenant, b.name.trim().to_owned(), b.email, b.currency).await?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    page: Option<u64>,
    per_page: Option<u64>,
}

/// Vendors by name.
#[utoipa::path(tag = "procurement", params(PageQuery),
    responses((status = 200, body = Paged<VendorView>), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("/vendors")]
async fn list_vendors(
    auth: Authorized<ProcurementRead>,
    state: web::Data<AppState>,
    query: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let page = PageRequest::new(query.page, query.per_page)?;
    Ok(HttpResponse::Ok().json(state.procurement.list_vendors(auth.tenant, page).await?))
}

/// One vendor.
#[utoipa::path(tag = "procurement",
    responses((status = 200, body = Data<VendorView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/vendors/{id}")]
async fn get_vendor(
    auth: Authorized<ProcurementRead>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    Ok(ok(state.procurement.get_vendor(auth.tenant, id.into_inner()).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVendor {
    name: Option<String>,
    email: Option<String>,
    active: Option<bool>,
}

impl Validate for UpdateVendor {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut checks = Checks::default();
        if let Some(name) = &self.name {
            checks.check("name", validate::name(name));
        }
        if let Some(email) = &self.email {
            checks.check("email", validate::email(email));
        }
        checks.finish()
    }
}

/// Change a vendor.
#[utoipa::path(tag = "procurement", request_body = UpdateVendor,
    responses((status = 200, body = Data<VendorView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
#[patch("/vendors/{id}")]
async fn update_vendor(
    auth: Authorized<ProcurementWrite>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    body: ApiJson<UpdateVendor>,
) -> ApiResult<HttpResponse> {
    let b = body.0;
    let name = b.name.map(|n| n.trim().to_owned());
    Ok(ok(state.procurement.update_vendor(auth.tenant, id.into_inner(), name, b.email, b.active).await?))
}

/// Delete a vendor that has no purchase orders.
#[utoipa::path(tag = "procurement",
    responses((status = 204, description = "Deleted"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
#[delete("/vendors/{id}")]
async fn delete_vendor(
    auth: Authorized<ProcurementWrite>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    state.procurement.delete_vendor(auth.tenant, id.into_inner()).await?;
    Ok(no_content())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    vendor_id: Uuid,
    /// Where the goods will be received.
    warehouse_id: Uuid,
    notes: Option<String>,
    lines: Vec<NewLine>,
}

impl Validate for CreateOrder {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut checks = Checks::default();
        if self.lines.is_empty() || self.lines.len() > 500 {
            checks.check("lines", Err("must hold 1 to 500 lines".into()));
        }
        for (i, line) in self.lines.iter().enumerate() {
            if line.quantity <= 0 {
                checks.check(&format!("lines[{i}].quantity"), Err("must be a positive whole number".into()));
            }
            if line.unit_cost < 0 {
                checks.check(&format!("lines[{i}].unit_cost"), Err("must not be negative".into()));
            }
        }
        if let Some(notes) = &self.notes {
            checks.check("notes", validate::plain_text(notes, 2000));
        }
        checks.finish()
    }
}

/// Create a purchase order (draft); the total is computed by the server.
#[utoipa::path(tag = "procurement", request_body = CreateOrder,
    responses((status = 201, body = Data<PurchaseOrderView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
#[post("/purchase-orders")]
async fn create_order(
    auth: Authorized<ProcurementWrite>,
    state: web::Data<AppState>,
    body: ApiJson<CreateOrder>,
) -> ApiResult<HttpResponse> {
    let b = body.0;
    let order = state
        .procurement
        .create_order(auth.tenant, auth.user_id, b.vendor_id, b.warehouse_id, b.notes, b.lines)
        .await?;
    Ok(created(order))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct OrderQuery {
    page: Option<u64>,
    per_page: Option<u64>,
    status: Option<String>,
    vendor_id: Option<Uuid>,
}

/// Purchase orders, newest first.
#[utoipa::path(tag = "procurement", params(OrderQuery),
    responses((status = 200, body = Paged<PurchaseOrderView>), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("/purchase-orders")]
async fn list_orders(
    auth: Authorized<ProcurementRead>,
    state: web::Data<AppState>,
    query: web::Query<OrderQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let page = PageRequest::new(q.page, q.per_page)?;
    Ok(HttpResponse::Ok()
        .json(state.procurement.list_orders(auth.tenant, q.status, q.vendor_id, page).await?))
}

/// One purchase order with its lines.
#[utoipa::path(tag = "procurement",
    responses((status = 200, body = Data<PurchaseOrderView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/purchase-orders/{id}")]
async fn get_order(
    auth: Authorized<ProcurementRead>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    Ok(ok(state.procurement.get_order(auth.tenant, id.into_inner()).await?))
}

macro_rules! transition {
    ($name:ident, $path:literal, $permission:ty, $action:expr, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(tag = "procurement",
            responses((status = 200, body = Data<PurchaseOrderView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
                (status = 409, description = "Not allowed from the current state (named in the detail)", body = Problem)),
            security(("bearer" = [])))]
        #[post($path)]
        async fn $name(
            auth: Authorized<$permission>,
            state: web::Data<AppState>,
            id: web::Path<Uuid>,
        ) -> ApiResult<HttpResponse> {
            Ok(ok(state.procurement.transition(auth.tenant, auth.user_id, id.into_inner(), $action).await?))
        }
    };
}

transition!(
    submit_order,
    "/purchase-orders/{id}/submit",
    ProcurementWrite,
    Action::Submit,
    "Submit a draft for approval."
);
transition!(
    approve_order,
    "/purchase-orders/{id}/approve",
    ProcurementApprove,
    Action::Approve,
    "Approve a submitted order (managers and admins)."
);
transition!(
    cancel_order,
    "/purchase-orders/{id}/cancel",
    ProcurementWrite,
    Action::Cancel,
    "Cancel an order that is draft, submitted or approved."
);
transition!(
    close_order,
    "/purchase-orders/{id}/close",
    ProcurementWrite,
    Action::Close,
    "Close a fully received order."
);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    lines: Vec<ReceiptLine>,
}

impl Validate for Receipt {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut checks = Checks::default();
        if self.lines.is_empty() {
            checks.check("lines", Err("must hold at least one line".into()));
        }
        for (i, line) in self.lines.iter().enumerate() {
            if line.quantity <= 0 {
                checks.check(&format!("lines[{i}].quantity"), Err("must be a positive whole number".into()));
            }
        }
        checks.finish()
    }
}

/// Receive goods (partial receipts allowed, over-receipt refused): the
/// order, stock movements and a journal entry commit together.
#[utoipa::path(tag = "procurement", request_body = Receipt,
    responses((status = 200, body = Data<PurchaseOrderView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
#[post("/purchase-orders/{id}/receipts")]
async fn receive_goods(
    auth: Authorized<ProcurementWrite>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    body: ApiJson<Receipt>,
) -> ApiResult<HttpResponse> {
    Ok(ok(state.procurement.receive(auth.tenant, auth.user_id, id.into_inner(), body.0.lines).await?))
}
