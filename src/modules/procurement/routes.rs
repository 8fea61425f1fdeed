//! REST routes of the procurement module.

use std::collections::{BTreeSet, HashMap};

use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, web};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::{scope, service_config::ServiceConfig};
use uuid::Uuid;

use super::{
    Action, NewLine, ORDER_SORTS, OrderFilter, ProcurementApprove, ProcurementRead, ProcurementService,
    ProcurementWrite, PurchaseOrderView, ReceiptLine, STATES, VENDOR_SORTS, VendorChanges, VendorFilter,
    VendorView,
};
use crate::{
    error::{ApiResult, FieldError, Problem},
    modules::inventory::{InventoryService, ProductView},
    platform::{
        bulk::{BulkRequest, BulkResponse},
        http::{
            ApiJson, Data, Paged, Validate, created, expansions, if_match, no_content, ok_with_etag, one_of,
            parse_json, parse_sort, with_etag,
        },
        rbac::{Authorized, BulkWrite},
        search::{Search, Window},
        state::AppState,
        tenancy::TenantScope,
        validate::{self, Checks},
    },
};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(
        scope("/vendors")
            .service(list_vendors)
            .service(create_vendor)
            .service(get_vendor)
            .service(update_vendor)
            .service(delete_vendor),
    )
    .service(
        scope("/purchase-orders")
            .service(list_purchase_orders)
            .service(create_purchase_order)
            .service(get_purchase_order)
            .service(submit_purchase_order)
            .service(approve_purchase_order)
            .service(cancel_purchase_order)
            .service(close_purchase_order)
            .service(receive_goods),
    )
    .service(bulk_purchase_orders);
}

#[derive(Deserialize, ToSchema, async_graphql::InputObject)]
#[serde(deny_unknown_fields)]
#[graphql(name = "CreateVendorInput")]
pub struct CreateVendor {
    #[schema(example = "Acme Supplies", min_length = 1, max_length = 200)]
    name: String,
    #[schema(example = "orders@acme.example", max_length = 254)]
    email: Option<String>,
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
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
#[post("")]
async fn create_vendor(
    auth: Authorized<ProcurementWrite>,
    procurement: web::Data<dyn ProcurementService>,
    body: ApiJson<CreateVendor>,
) -> ApiResult<HttpResponse> {
    let vendor = body.0.run(&**procurement, auth.tenant).await?;
    Ok(with_etag(created(&vendor), vendor.version))
}

impl CreateVendor {
    pub(super) async fn run(
        self,
        procurement: &dyn ProcurementService,
        tenant: TenantScope,
    ) -> ApiResult<VendorView> {
        procurement.create_vendor(tenant, self.name.trim().to_owned(), self.email, self.currency).await
    }
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct VendorQuery {
        /// `name` (the default), `created_at`; prefix `-` for descending.
        #[param(pattern = "^-?(name|created_at)$")]
        sort: Option<String>,
        active: Option<bool>,
        /// Text in the name or the email (case-insensitive, 1-100 characters).
        #[param(min_length = 1, max_length = 100)]
        q: Option<String>,
        /// Items created at or after this time (RFC 3339).
        created_after: Option<chrono::DateTime<chrono::Utc>>,
        /// Items created before this time (RFC 3339).
        created_before: Option<chrono::DateTime<chrono::Utc>>,
        /// Items updated at or after this time (RFC 3339).
        updated_after: Option<chrono::DateTime<chrono::Utc>>,
        /// Items updated before this time (RFC 3339).
        updated_before: Option<chrono::DateTime<chrono::Utc>>,
    }
}

/// Vendors, by name unless sorted otherwise.
#[utoipa::path(tag = "procurement", params(VendorQuery),
    responses((status = 200, body = Paged<VendorView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("")]
async fn list_vendors(
    auth: Authorized<ProcurementRead>,
    procurement: web::Data<dyn ProcurementService>,
    query: web::Query<VendorQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    let sort = parse_sort(q.sort.as_deref(), &VENDOR_SORTS)?;
    let filter = VendorFilter {
        active: q.active,
        q: Search::parse(q.q.as_deref())?,
        created: Window::new("created", q.created_after, q.created_before)?,
        updated: Window::new("updated", q.updated_after, q.updated_before)?,
        sort,
    };
    Ok(HttpResponse::Ok().json(procurement.list_vendors(auth.tenant, filter, &list).await?))
}

/// One vendor; its `ETag` is the version to send in `If-Match`.
#[utoipa::path(tag = "procurement",
    responses((status = 200, body = Data<VendorView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/{id}")]
async fn get_vendor(
    auth: Authorized<ProcurementRead>,
    procurement: web::Data<dyn ProcurementService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let vendor = procurement.get_vendor(auth.tenant, id.into_inner()).await?;
    Ok(ok_with_etag(&vendor, vendor.version))
}

#[derive(Deserialize, ToSchema, async_graphql::InputObject)]
#[serde(deny_unknown_fields)]
#[graphql(name = "UpdateVendorInput")]
pub struct UpdateVendor {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    #[schema(max_length = 254)]
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

/// Change a vendor; `If-Match` refuses (412) a change made meanwhile.
#[utoipa::path(tag = "procurement", request_body = UpdateVendor,
    params(("If-Match" = Option<String>, Header, description = "The ETag read before", pattern = r#"^(W/)?"[0-9]+"$"#)),
    responses((status = 200, body = Data<VendorView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
#[patch("/{id}")]
async fn update_vendor(
    auth: Authorized<ProcurementWrite>,
    procurement: web::Data<dyn ProcurementService>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: ApiJson<UpdateVendor>,
) -> ApiResult<HttpResponse> {
    let vendor =
        procurement.update_vendor(auth.tenant, id.into_inner(), if_match(&req)?, body.0.into()).await?;
    Ok(ok_with_etag(&vendor, vendor.version))
}

impl From<UpdateVendor> for VendorChanges {
    fn from(b: UpdateVendor) -> Self {
        VendorChanges { name: b.name.map(|n| n.trim().to_owned()), email: b.email, active: b.active }
    }
}

/// Delete a vendor that has no purchase orders.
#[utoipa::path(tag = "procurement",
    responses((status = 204, description = "Deleted"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)),
    security(("bearer" = [])))]
#[delete("/{id}")]
async fn delete_vendor(
    auth: Authorized<ProcurementWrite>,
    procurement: web::Data<dyn ProcurementService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    procurement.delete_vendor(auth.tenant, id.into_inner()).await?;
    Ok(no_content())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    vendor_id: Uuid,
    /// Where the goods will be received.
    warehouse_id: Uuid,
    #[schema(max_length = 2000)]
    notes: Option<String>,
    #[schema(min_items = 1, max_items = 500)]
    lines: Vec<NewLine>,
}

impl Validate for CreateOrder {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        super::check_order(self.notes.as_deref(), &self.lines)
    }
}

/// Create a purchase order (draft); the total is computed by the server.
#[utoipa::path(tag = "procurement", request_body = CreateOrder,
    responses((status = 201, body = Data<PurchaseOrderView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
#[post("")]
async fn create_purchase_order(
    auth: Authorized<ProcurementWrite>,
    procurement: web::Data<dyn ProcurementService>,
    body: ApiJson<CreateOrder>,
) -> ApiResult<HttpResponse> {
    let b = body.0;
    let order = procurement
        .create_order(auth.tenant, auth.user_id, b.vendor_id, b.warehouse_id, b.notes, b.lines)
        .await?;
    Ok(with_etag(created(&order), order.version))
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
    _write: Authorized<ProcurementWrite>,
    state: web::Data<AppState>,
    procurement: web::Data<dyn ProcurementService>,
    body: ApiJson<BulkRequest>,
) -> ApiResult<HttpResponse> {
    let (procurement, tenant, actor) = (&procurement, auth.tenant, auth.user_id);
    let response = body
        .0
        .each(move |bytes| async move {
            let o: CreateOrder = parse_json(&bytes)?;
            procurement.create_order(tenant, actor, o.vendor_id, o.warehouse_id, o.notes, o.lines).await
        })
        .await;
    state.wakeup.wake();
    Ok(response)
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct OrderQuery {
        /// `created_at`, `updated_at`, `total`; prefix `-` for descending
        /// (default `-created_at`, newest first).
        #[param(pattern = "^-?(created_at|updated_at|total)$")]
        sort: Option<String>,
        /// draft, submitted, approved, partially_received, received, closed or cancelled.
        #[param(pattern = "^(draft|submitted|approved|partially_received|received|closed|cancelled)$")]
        status: Option<String>,
        vendor_id: Option<Uuid>,
        warehouse_id: Option<Uuid>,
        /// Items created at or after this time (RFC 3339).
        created_after: Option<chrono::DateTime<chrono::Utc>>,
        /// Items created before this time (RFC 3339).
        created_before: Option<chrono::DateTime<chrono::Utc>>,
        /// Items updated at or after this time (RFC 3339).
        updated_after: Option<chrono::DateTime<chrono::Utc>>,
        /// Items updated before this time (RFC 3339).
        updated_before: Option<chrono::DateTime<chrono::Utc>>,
        /// Related objects to include, comma-separated: `vendor`, `lines.product`.
        #[param(pattern = "^(vendor|lines\\.product)(,(vendor|lines\\.product))*$")]
        expand: Option<String>,
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ExpandQuery {
    /// Related objects to include, comma-separated: `vendor`, `lines.product`.
    #[param(pattern = "^(vendor|lines\\.product)(,(vendor|lines\\.product))*$")]
    expand: Option<String>,
}

/// What `expand` may name on a purchase order.
const EXPANDABLE: [&str; 2] = ["vendor", "lines.product"];

/// Put the objects `expand` names into `orders`: one query per kind,
/// whatever the number of orders.
async fn expand(
    orders: &mut [PurchaseOrderView],
    expand: &[&str],
    tenant: TenantScope,
    procurement: &dyn ProcurementService,
    inventory: &dyn InventoryService,
) -> ApiResult<()> {
    if expand.contains(&"vendor") {
        let ids: BTreeSet<Uuid> = orders.iter().map(|o| o.vendor_id).collect();
        let vendors = procurement.vendors_by_ids(tenant, ids.into_iter().collect()).await?;
        let vendors: HashMap<Uuid, VendorView> = vendors.into_iter().map(|v| (v.id, v)).collect();
        for order in orders.iter_mut() {
            order.vendor = vendors.get(&order.vendor_id).cloned();
        }
    }
    if expand.contains(&"lines.product") {
        let ids: BTreeSet<Uuid> = orders.iter().flat_map(|o| o.lines.iter().map(|l| l.product_id)).collect();
        let products = inventory.products_by_ids(tenant, ids.into_iter().collect()).await?;
        let products: HashMap<Uuid, ProductView> = products.into_iter().map(|p| (p.id, p)).collect();
        for line in orders.iter_mut().flat_map(|o| o.lines.iter_mut()) {
            line.product = products.get(&line.product_id).cloned();
        }
    }
    Ok(())
}

/// Purchase orders, newest first unless sorted otherwise.
#[utoipa::path(tag = "procurement", params(OrderQuery),
    responses((status = 200, body = Paged<PurchaseOrderView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("")]
async fn list_purchase_orders(
    auth: Authorized<ProcurementRead>,
    procurement: web::Data<dyn ProcurementService>,
    inventory: web::Data<dyn InventoryService>,
    query: web::Query<OrderQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    let expanded = expansions(q.expand.as_deref(), &EXPANDABLE)?;
    let sort = parse_sort(q.sort.as_deref(), &ORDER_SORTS)?;
    one_of("status", q.status.as_deref(), &STATES)?;
    let filter = OrderFilter {
        status: q.status,
        vendor_id: q.vendor_id,
        warehouse_id: q.warehouse_id,
        created: Window::new("created", q.created_after, q.created_before)?,
        updated: Window::new("updated", q.updated_after, q.updated_before)?,
        sort,
    };
    let mut page = procurement.list_orders(auth.tenant, filter, &list).await?;
    expand(&mut page.data, &expanded, auth.tenant, &**procurement, &**inventory).await?;
    Ok(HttpResponse::Ok().json(page))
}

/// One purchase order with its lines; its `ETag` is the version to send
/// in `If-Match` on a transition or receipt.
#[utoipa::path(tag = "procurement", params(ExpandQuery),
    responses((status = 200, body = Data<PurchaseOrderView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/{id}")]
async fn get_purchase_order(
    auth: Authorized<ProcurementRead>,
    procurement: web::Data<dyn ProcurementService>,
    inventory: web::Data<dyn InventoryService>,
    id: web::Path<Uuid>,
    query: web::Query<ExpandQuery>,
) -> ApiResult<HttpResponse> {
    let expanded = expansions(query.expand.as_deref(), &EXPANDABLE)?;
    let mut order = procurement.get_order(auth.tenant, id.into_inner()).await?;
    expand(std::slice::from_mut(&mut order), &expanded, auth.tenant, &**procurement, &**inventory).await?;
    Ok(ok_with_etag(&order, order.version))
}

macro_rules! transition {
    ($name:ident, $path:literal, $permission:ty, $action:expr, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(tag = "procurement",
            params(("If-Match" = Option<String>, Header, description = "The ETag read before")),
            responses((status = 200, body = Data<PurchaseOrderView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
                (status = 409, description = "Not allowed from the current state (named in the detail)", body = Problem),
                (status = 412, body = Problem)),
            security(("bearer" = [])))]
        #[post($path)]
        async fn $name(
            auth: Authorized<$permission>,
            procurement: web::Data<dyn ProcurementService>,
            req: HttpRequest,
            id: web::Path<Uuid>,
        ) -> ApiResult<HttpResponse> {
            let order = procurement
                .transition(auth.tenant, auth.user_id, id.into_inner(), if_match(&req)?, $action)
                .await?;
            Ok(ok_with_etag(&order, order.version))
        }
    };
}

transition!(
    submit_purchase_order,
    "/{id}/submit",
    ProcurementWrite,
    Action::Submit,
    "Submit a draft for approval."
);
transition!(
    approve_purchase_order,
    "/{id}/approve",
    ProcurementApprove,
    Action::Approve,
    "Approve a submitted order (managers and admins)."
);
transition!(
    cancel_purchase_order,
    "/{id}/cancel",
    ProcurementWrite,
    Action::Cancel,
    "Cancel an order that is draft, submitted or approved."
);
transition!(
    close_purchase_order,
    "/{id}/close",
    ProcurementWrite,
    Action::Close,
    "Close a received order, or a partially received one to end it short."
);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    #[schema(min_items = 1)]
    lines: Vec<ReceiptLine>,
}

impl Validate for Receipt {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        super::check_receipt(&self.lines)
    }
}

/// Receive goods (partial receipts allowed, over-receipt refused): the
/// order, stock movements and a journal entry commit together.
#[utoipa::path(tag = "procurement", request_body = Receipt,
    params(("If-Match" = Option<String>, Header, description = "The ETag read before", pattern = r#"^(W/)?"[0-9]+"$"#)),
    responses((status = 200, body = Data<PurchaseOrderView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
#[post("/{id}/receipts")]
async fn receive_goods(
    auth: Authorized<ProcurementWrite>,
    procurement: web::Data<dyn ProcurementService>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: ApiJson<Receipt>,
) -> ApiResult<HttpResponse> {
    let lines = body.0.lines;
    let order =
        procurement.receive(auth.tenant, auth.user_id, id.into_inner(), if_match(&req)?, lines).await?;
    Ok(ok_with_etag(&order, order.version))
}
