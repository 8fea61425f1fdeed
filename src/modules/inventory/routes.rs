//! REST routes of the inventory module: thin, one service call each.

use actix_web::{HttpRequest, HttpResponse, get, patch, post, put, web};
use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::{scope, service_config::ServiceConfig};
use uuid::Uuid;

use super::{
    Cause, InventoryRead, InventoryService, InventoryWrite, LEVEL_SORTS, LevelFilter, Line, MAX_QUANTITY,
    MOVEMENT_KINDS, MOVEMENT_SORTS, MovementFilter, MovementView, NewProduct, PRODUCT_SORTS, ProductChanges,
    ProductFilter, ProductView, Recommendation, ReservationView, Settings, StockLevelView, WAREHOUSE_SORTS,
    WarehouseFilter, WarehouseView, check_quantity,
};
use crate::{
    error::{ApiResult, FieldError, Problem},
    platform::{
        bulk::{BulkRequest, BulkResponse},
        http::{
            ApiJson, Data, Paged, Validate, created, expansions, if_match, ok, ok_with_etag, one_of,
            parse_json, parse_sort, with_etag,
        },
        rbac::{Authorized, BulkWrite},
        search::{Search, Window},
        state::AppState,
        tenancy::TenantScope,
        validate::{self, Checks},
    },
};
use sea_orm::DatabaseConnection;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(
        scope("/products")
            .service(list_products)
            .service(create_product)
            .service(get_product)
            .service(update_product),
    )
    .service(bulk_products)
    .service(scope("/warehouses").service(list_warehouses).service(create_warehouse).service(get_warehouse))
    .service(scope("/stock-levels").service(list_levels).service(set_reorder))
    .service(scope("/inventory").service(recommendations))
    .service(scope("/stock-movements").service(list_movements))
    .service(scope("/stock").service(adjust).service(transfer))
    .service(
        scope("/reservations")
            .service(reserve)
            .service(get_reservation)
            .service(commit_reservation)
            .service(release_reservation),
    );
}

fn cause(user: Uuid, reason: Option<String>, reference: Option<String>) -> Cause {
    Cause { user_id: Some(user), reason, reference }
}

/// Required text: not blank, at most `max` characters, no control characters.
fn check_text(checks: &mut Checks, field: &str, value: &str, max: usize) {
    let blank = if value.trim().is_empty() { Err("must not be blank".to_owned()) } else { Ok(()) };
    checks.check(field, blank.and_then(|()| validate::plain_text(value, max)));
}

#[derive(Deserialize, ToSchema, async_graphql::InputObject)]
#[serde(deny_unknown_fields)]
#[graphql(name = "CreateProductInput")]
pub struct CreateProduct {
    /// Unique in the tenant.
    #[schema(example = "TSHIRT-RED-M", min_length = 1, max_length = 64)]
    sku: String,
    #[schema(example = "T-shirt, red, M", min_length = 1, max_length = 200)]
    name: String,
    #[schema(min_length = 1, max_length = 64)]
    barcode: Option<String>,
    /// Minor units (cents).
    #[schema(example = 1999, minimum = 0)]
    unit_price: i64,
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
    currency: String,
    /// Free-form attributes: an object; numbers within ±9007199254740991.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    attributes: Option<Value>,
    #[serde(default)]
    active: Option<bool>,
}

impl Validate for CreateProduct {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut checks = Checks::default();
        check_text(&mut checks, "sku", &self.sku, 64);
        check_text(&mut checks, "name", &self.name, 200);
        checks.check(
            "unit_price",
            if self.unit_price >= 0 { Ok(()) } else { Err("must not be negative".into()) },
        );
        checks.check("currency", validate::currency(&self.currency));
        if let Some(barcode) = &self.barcode {
            check_text(&mut checks, "barcode", barcode, 64);
        }
        if let Some(attributes) = &self.attributes {
            checks.check("attributes", validate::attributes(attributes));
        }
        checks.finish()
    }
}

/// Create a product.
#[utoipa::path(
    tag = "inventory",
    request_body = CreateProduct,
    responses(
        (status = 201, description = "The product", body = Data<ProductView>),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, description = "SKU taken", body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("")]
async fn create_product(
    auth: Authorized<InventoryWrite>,
    inventory: web::Data<dyn InventoryService>,
    body: ApiJson<CreateProduct>,
) -> ApiResult<HttpResponse> {
    let product = inventory.create_product(auth.tenant, body.0.into()).await?;
    Ok(with_etag(created(&product), product.version))
}

impl From<CreateProduct> for NewProduct {
    fn from(b: CreateProduct) -> Self {
        NewProduct {
            sku: b.sku.trim().to_owned(),
            name: b.name.trim().to_owned(),
            barcode: b.barcode.map(|v| v.trim().to_owned()),
            unit_price: b.unit_price,
            currency: b.currency,
            attributes: b.attributes.unwrap_or_else(|| Value::Object(Default::default())),
            active: b.active.unwrap_or(true),
        }
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
    _write: Authorized<InventoryWrite>,
    state: web::Data<AppState>,
    inventory: web::Data<dyn InventoryService>,
    body: ApiJson<BulkRequest>,
) -> ApiResult<HttpResponse> {
    let (inventory, tenant) = (&inventory, auth.tenant);
    let response = body
        .0
        .each(move |bytes| async move {
            let new: NewProduct = parse_json::<CreateProduct>(&bytes)?.into();
            inventory.create_product(tenant, new).await
        })
        .await;
    state.wakeup.wake();
    Ok(response)
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct ProductQuery {
        /// `sku`, `name`, `created_at`; prefix `-` for descending (default
        /// `-created_at`, newest first).
        #[param(pattern = "^-?(sku|name|created_at)$")]
        sort: Option<String>,
        /// Exact SKU.
        sku: Option<String>,
        /// Text in the SKU or the name (case-insensitive, 1-100 characters).
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
        active: Option<bool>,
    }
}

/// Products, newest first unless sorted otherwise.
#[utoipa::path(
    tag = "inventory",
    params(ProductQuery),
    responses(
        (status = 200, description = "A page of products", body = Paged<ProductView>),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("")]
async fn list_products(
    auth: Authorized<InventoryRead>,
    inventory: web::Data<dyn InventoryService>,
    query: web::Query<ProductQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    let sort = parse_sort(q.sort.as_deref(), &PRODUCT_SORTS)?;
    let filter = ProductFilter {
        sku: q.sku,
        active: q.active,
        q: Search::parse(q.q.as_deref())?,
        created: Window::new("created", q.created_after, q.created_before)?,
        updated: Window::new("updated", q.updated_after, q.updated_before)?,
        sort,
    };
    Ok(HttpResponse::Ok().json(inventory.list_products(auth.tenant, filter, &list).await?))
}

/// One product; its `ETag` is the version to send in `If-Match`.
#[utoipa::path(
    tag = "inventory",
    responses(
        (status = 200, description = "The product", body = Data<ProductView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("/{id}")]
async fn get_product(
    auth: Authorized<InventoryRead>,
    inventory: web::Data<dyn InventoryService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let view = inventory.get_product(auth.tenant, id.into_inner()).await?;
    Ok(ok_with_etag(&view, view.version))
}

#[derive(Deserialize, ToSchema, async_graphql::InputObject)]
#[serde(deny_unknown_fields)]
#[graphql(name = "UpdateProductInput")]
pub struct UpdateProduct {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    #[schema(min_length = 1, max_length = 64)]
    barcode: Option<String>,
    #[schema(minimum = 0)]
    unit_price: Option<i64>,
    #[schema(pattern = "^[A-Z]{3}$")]
    currency: Option<String>,
    /// Replaces the attributes: an object; numbers within ±9007199254740991.
    #[schema(value_type = Option<Object>)]
    attributes: Option<Value>,
    active: Option<bool>,
    /// The vendor reorders go to.
    preferred_vendor_id: Option<Uuid>,
}

impl Validate for UpdateProduct {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut checks = Checks::default();
        if let Some(name) = &self.name {
            check_text(&mut checks, "name", name, 200);
        }
        if let Some(barcode) = &self.barcode {
            check_text(&mut checks, "barcode", barcode, 64);
        }
        if self.unit_price.is_some_and(|p| p < 0) {
            checks.check("unit_price", Err("must not be negative".into()));
        }
        if let Some(currency) = &self.currency {
            checks.check("currency", validate::currency(currency));
        }
        if let Some(attributes) = &self.attributes {
            checks.check("attributes", validate::attributes(attributes));
        }
        checks.finish()
    }
}

/// Change a product; `If-Match` refuses (412) a change made meanwhile.
#[utoipa::path(
    tag = "inventory",
    request_body = UpdateProduct,
    params(("If-Match" = Option<String>, Header, description = "The ETag read before", pattern = r#"^(W/)?"[0-9]+"$"#)),
    responses(
        (status = 200, description = "The product", body = Data<ProductView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 412, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[patch("/{id}")]
async fn update_product(
    auth: Authorized<InventoryWrite>,
    inventory: web::Data<dyn InventoryService>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: ApiJson<UpdateProduct>,
) -> ApiResult<HttpResponse> {
    let view = inventory.update_product(auth.tenant, id.into_inner(), if_match(&req)?, body.0.into()).await?;
    Ok(ok_with_etag(&view, view.version))
}

impl From<UpdateProduct> for ProductChanges {
    fn from(b: UpdateProduct) -> Self {
        ProductChanges {
            name: b.name.map(|v| v.trim().to_owned()),
            barcode: b.barcode.map(|v| v.trim().to_owned()),
            unit_price: b.unit_price,
            currency: b.currency,
            attributes: b.attributes,
            active: b.active,
            preferred_vendor_id: b.preferred_vendor_id,
        }
    }
}

#[derive(Deserialize, ToSchema, async_graphql::InputObject)]
#[serde(deny_unknown_fields)]
#[graphql(name = "CreateWarehouseInput")]
pub struct CreateWarehouse {
    #[schema(example = "MAIN", min_length = 1, max_length = 32)]
    code: String,
    #[schema(example = "Main warehouse", min_length = 1, max_length = 200)]
    name: String,
}

impl Validate for CreateWarehouse {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut checks = Checks::default();
        check_text(&mut checks, "code", &self.code, 32);
        check_text(&mut checks, "name", &self.name, 200);
        checks.finish()
    }
}

/// Create a warehouse (a stock location).
#[utoipa::path(
    tag = "inventory",
    request_body = CreateWarehouse,
    responses(
        (status = 201, description = "The warehouse", body = Data<WarehouseView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("")]
async fn create_warehouse(
    auth: Authorized<InventoryWrite>,
    inventory: web::Data<dyn InventoryService>,
    body: ApiJson<CreateWarehouse>,
) -> ApiResult<HttpResponse> {
    Ok(created(body.0.run(&**inventory, auth.tenant).await?))
}

impl CreateWarehouse {
    pub(super) async fn run(
        self,
        inventory: &dyn InventoryService,
        tenant: TenantScope,
    ) -> ApiResult<WarehouseView> {
        inventory.create_warehouse(tenant, self.code.trim().to_owned(), self.name.trim().to_owned()).await
    }
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct WarehouseQuery {
        /// `code` (the default), `name`, `created_at`; prefix `-` for descending.
        #[param(pattern = "^-?(code|name|created_at)$")]
        sort: Option<String>,
        /// Text in the code or the name (case-insensitive, 1-100 characters).
        #[param(min_length = 1, max_length = 100)]
        q: Option<String>,
        /// Items created at or after this time (RFC 3339).
        created_after: Option<chrono::DateTime<chrono::Utc>>,
        /// Items created before this time (RFC 3339).
        created_before: Option<chrono::DateTime<chrono::Utc>>,
    }
}

/// Warehouses, by code unless sorted otherwise.
#[utoipa::path(
    tag = "inventory",
    params(WarehouseQuery),
    responses(
        (status = 200, description = "A page of warehouses", body = Paged<WarehouseView>),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("")]
async fn list_warehouses(
    auth: Authorized<InventoryRead>,
    inventory: web::Data<dyn InventoryService>,
    query: web::Query<WarehouseQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    let filter = WarehouseFilter {
        q: Search::parse(q.q.as_deref())?,
        created: Window::new("created", q.created_after, q.created_before)?,
        sort: parse_sort(q.sort.as_deref(), &WAREHOUSE_SORTS)?,
    };
    Ok(HttpResponse::Ok().json(inventory.list_warehouses(auth.tenant, filter, &list).await?))
}

/// One warehouse.
#[utoipa::path(
    tag = "inventory",
    params(("id" = Uuid, Path, description = "Warehouse id")),
    responses(
        (status = 200, description = "The warehouse", body = Data<WarehouseView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("/{id}")]
async fn get_warehouse(
    auth: Authorized<InventoryRead>,
    inventory: web::Data<dyn InventoryService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    Ok(ok(inventory.get_warehouse(auth.tenant, id.into_inner()).await?))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    cursor_only struct LevelQuery {
        /// `product_id` (the default), `on_hand`, `reserved`, `updated_at`;
        /// prefix `-` for descending.
        #[param(pattern = "^-?(product_id|on_hand|reserved|updated_at)$")]
        sort: Option<String>,
        product_id: Option<Uuid>,
        warehouse_id: Option<Uuid>,
        /// `product`: include each level's product.
        #[param(pattern = "^product$")]
        expand: Option<String>,
    }
}

/// Stock levels: on hand, reserved, available. A level has no id of its
/// own (it is a product in a warehouse), so this list pages by `cursor`.
#[utoipa::path(
    tag = "inventory",
    params(LevelQuery),
    responses(
        (status = 200, description = "A page of stock levels", body = Paged<StockLevelView>),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("")]
async fn list_levels(
    auth: Authorized<InventoryRead>,
    inventory: web::Data<dyn InventoryService>,
    query: web::Query<LevelQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    let sort = parse_sort(q.sort.as_deref(), &LEVEL_SORTS)?;
    let expanded = expansions(q.expand.as_deref(), &["product"])?;
    let filter = LevelFilter { product_id: q.product_id, warehouse_id: q.warehouse_id, sort };
    let mut page = inventory.stock_levels(auth.tenant, filter, &list).await?;
    if !expanded.is_empty() {
        let ids: std::collections::BTreeSet<Uuid> = page.data.iter().map(|l| l.product_id).collect();
        let products = inventory.products_by_ids(auth.tenant, ids.into_iter().collect()).await?;
        for level in &mut page.data {
            level.product = products.iter().find(|p| p.id == level.product_id).cloned();
        }
    }
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Deserialize, ToSchema, async_graphql::InputObject)]
#[serde(deny_unknown_fields)]
#[graphql(name = "ReorderInput")]
pub struct Reorder {
    /// Recommend a reorder when available stock falls below this (`null` clears it).
    #[schema(example = 10, minimum = 0, maximum = 1_000_000_000)]
    reorder_point: Option<i64>,
    /// How much to reorder; twice the reorder point minus what is available when unset.
    #[schema(example = 40, minimum = 1, maximum = 1_000_000_000)]
    reorder_quantity: Option<i64>,
}

impl Validate for Reorder {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut checks = Checks::default();
        if self.reorder_point.is_some_and(|p| !(0..=MAX_QUANTITY).contains(&p)) {
            checks.check("reorder_point", Err(format!("must be a whole number from 0 to {MAX_QUANTITY}")));
        }
        if let Some(quantity) = self.reorder_quantity {
            checks.check("reorder_quantity", check_quantity(quantity));
        }
        checks.finish()
    }
}

/// Set the reorder point (and quantity) of a product in a warehouse;
/// `stock.low` fires when available stock falls below it.
#[utoipa::path(
    tag = "inventory",
    request_body = Reorder,
    responses(
        (status = 200, description = "The stock level", body = Data<StockLevelView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[put("/{product_id}/{warehouse_id}/reorder")]
async fn set_reorder(
    auth: Authorized<InventoryWrite>,
    inventory: web::Data<dyn InventoryService>,
    path: web::Path<(Uuid, Uuid)>,
    body: ApiJson<Reorder>,
) -> ApiResult<HttpResponse> {
    let (product, warehouse) = path.into_inner();
    Ok(ok(body.0.run(&**inventory, auth.tenant, product, warehouse).await?))
}

impl Reorder {
    pub(super) async fn run(
        self,
        inventory: &dyn InventoryService,
        tenant: TenantScope,
        product: Uuid,
        warehouse: Uuid,
    ) -> ApiResult<StockLevelView> {
        inventory.set_reorder(tenant, product, warehouse, self.reorder_point, self.reorder_quantity).await
    }
}

/// Stock below its reorder point: what to order, how much, from whom.
#[utoipa::path(
    tag = "inventory",
    responses(
        (status = 200, description = "Most urgent first", body = Data<Vec<Recommendation>>),
        (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("/reorder-recommendations")]
async fn recommendations(
    auth: Authorized<InventoryRead>,
    inventory: web::Data<dyn InventoryService>,
) -> ApiResult<HttpResponse> {
    Ok(ok(inventory.reorder_recommendations(auth.tenant).await?))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct MovementQuery {
        /// `-created_at` (the default, newest first) or `created_at`.
        #[param(pattern = "^-?created_at$")]
        sort: Option<String>,
        product_id: Option<Uuid>,
        warehouse_id: Option<Uuid>,
        /// receipt, shipment, adjustment, transfer_out, transfer_in, reservation or release.
        #[param(pattern = "^(receipt|shipment|adjustment|transfer_out|transfer_in|reservation|release)$")]
        kind: Option<String>,
        /// Exact reference, e.g. `purchase_order:<id>` or a reservation's.
        reference: Option<String>,
        /// Items made at or after this time (RFC 3339).
        created_after: Option<chrono::DateTime<chrono::Utc>>,
        /// Items made before this time (RFC 3339).
        created_before: Option<chrono::DateTime<chrono::Utc>>,
    }
}

/// The stock ledger, newest first unless sorted otherwise.
#[utoipa::path(
    tag = "inventory",
    params(MovementQuery),
    responses(
        (status = 200, description = "A page of movements", body = Paged<MovementView>),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("")]
async fn list_movements(
    auth: Authorized<InventoryRead>,
    inventory: web::Data<dyn InventoryService>,
    query: web::Query<MovementQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    let sort = parse_sort(q.sort.as_deref(), &MOVEMENT_SORTS)?;
    one_of("kind", q.kind.as_deref(), &MOVEMENT_KINDS)?;
    let filter = MovementFilter {
        product_id: q.product_id,
        warehouse_id: q.warehouse_id,
        kind: q.kind,
        reference: q.reference,
        created: Window::new("created", q.created_after, q.created_before)?,
        sort,
    };
    Ok(HttpResponse::Ok().json(inventory.movements(auth.tenant, filter, &list).await?))
}

#[derive(Deserialize, ToSchema, async_graphql::InputObject)]
#[serde(deny_unknown_fields)]
#[graphql(name = "AdjustmentInput")]
pub struct Adjustment {
    product_id: Uuid,
    warehouse_id: Uuid,
    /// Added to on-hand stock; negative to remove. Not 0; at most 1,000,000,000 either way.
    #[schema(example = 25, minimum = -1_000_000_000, maximum = 1_000_000_000)]
    quantity: i64,
    #[schema(min_length = 1, max_length = 500, example = "stock count")]
    reason: String,
}

impl Validate for Adjustment {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut checks = Checks::default();
        checks.check("quantity", check_quantity(self.quantity.saturating_abs()));
        check_text(&mut checks, "reason", &self.reason, 500);
        checks.finish()
    }
}

/// Adjust on-hand stock (counts, damage, corrections).
#[utoipa::path(
    tag = "inventory",
    request_body = Adjustment,
    responses(
        (status = 200, description = "The stock level after", body = Data<StockLevelView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "`insufficient_stock`: below zero or below what is reserved", body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("/adjustments")]
async fn adjust(
    auth: Authorized<InventoryWrite>,
    state: web::Data<AppState>,
    inventory: web::Data<dyn InventoryService>,
    body: ApiJson<Adjustment>,
) -> ApiResult<HttpResponse> {
    Ok(ok(body.0.run(&state.db, &**inventory, auth.tenant, auth.user_id).await?))
}

impl Adjustment {
    pub(super) async fn run(
        self,
        db: &DatabaseConnection,
        inventory: &dyn InventoryService,
        tenant: TenantScope,
        user: Uuid,
    ) -> ApiResult<StockLevelView> {
        let line =
            Line { product_id: self.product_id, warehouse_id: self.warehouse_id, quantity: self.quantity };
        let txn = crate::platform::db::begin(db).await?;
        let level = inventory.adjust(&txn, tenant, line, cause(user, Some(self.reason), None)).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(level)
    }
}

#[derive(Deserialize, ToSchema, async_graphql::InputObject)]
#[serde(deny_unknown_fields)]
#[graphql(name = "TransferInput")]
pub struct Transfer {
    product_id: Uuid,
    from_warehouse_id: Uuid,
    /// Another warehouse than `from_warehouse_id`.
    to_warehouse_id: Uuid,
    #[schema(example = 10, minimum = 1, maximum = 1_000_000_000)]
    quantity: i64,
    #[schema(min_length = 1, max_length = 500)]
    reason: Option<String>,
}

impl Validate for Transfer {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut checks = Checks::default();
        checks.check("quantity", check_quantity(self.quantity));
        if let Some(reason) = &self.reason {
            check_text(&mut checks, "reason", reason, 500);
        }
        checks.finish()
    }
}

/// Move stock between warehouses, atomically.
#[utoipa::path(
    tag = "inventory",
    request_body = Transfer,
    responses(
        (status = 204, description = "Moved"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("/transfers")]
async fn transfer(
    auth: Authorized<InventoryWrite>,
    state: web::Data<AppState>,
    inventory: web::Data<dyn InventoryService>,
    body: ApiJson<Transfer>,
) -> ApiResult<HttpResponse> {
    body.0.run(&state.db, &**inventory, auth.tenant, auth.user_id).await?;
    Ok(crate::platform::http::no_content())
}

impl Transfer {
    pub(super) async fn run(
        self,
        db: &DatabaseConnection,
        inventory: &dyn InventoryService,
        tenant: TenantScope,
        user: Uuid,
    ) -> ApiResult<()> {
        let line = Line {
            product_id: self.product_id,
            warehouse_id: self.from_warehouse_id,
            quantity: self.quantity,
        };
        let txn = crate::platform::db::begin(db).await?;
        inventory.transfer(&txn, tenant, line, self.to_warehouse_id, cause(user, self.reason, None)).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(())
    }
}

#[derive(Deserialize, ToSchema, async_graphql::InputObject)]
#[serde(deny_unknown_fields)]
#[graphql(name = "ReserveInput")]
pub struct Reserve {
    /// What the stock is held for, e.g. an order number; reserving again
    /// with the same reference and lines returns the same reservation.
    #[schema(example = "order-1042", min_length = 1, max_length = 128)]
    reference: String,
    #[schema(min_items = 1, max_items = 100)]
    lines: Vec<Line>,
    /// Released by itself after this many seconds unless committed (default 900).
    #[schema(example = 900, minimum = 1, maximum = 604800)]
    expires_in_seconds: Option<u32>,
}

impl Validate for Reserve {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut checks = Checks::default();
        check_text(&mut checks, "reference", &self.reference, 128);
        if self.lines.is_empty() || self.lines.len() > 100 {
            checks.check("lines", Err("must hold 1 to 100 lines".into()));
        }
        for (i, line) in self.lines.iter().enumerate() {
            checks.check(&format!("lines[{i}].quantity"), check_quantity(line.quantity));
        }
        if self.expires_in_seconds.is_some_and(|s| s == 0 || s > 7 * 86_400) {
            checks.check("expires_in_seconds", Err("must be between 1 and 604800".into()));
        }
        checks.finish()
    }
}

/// Reserve stock for a reference: every line or none (409
/// `insufficient_stock` naming the SKU). Never oversells under concurrency.
#[utoipa::path(
    tag = "inventory",
    request_body = Reserve,
    responses(
        (status = 201, description = "The reservation", body = Data<ReservationView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("")]
async fn reserve(
    auth: Authorized<InventoryWrite>,
    inventory: web::Data<dyn InventoryService>,
    settings: web::Data<Settings>,
    body: ApiJson<Reserve>,
) -> ApiResult<HttpResponse> {
    Ok(created(body.0.run(&**inventory, &settings, auth.tenant, auth.user_id).await?))
}

impl Reserve {
    pub(super) async fn run(
        self,
        inventory: &dyn InventoryService,
        settings: &Settings,
        tenant: TenantScope,
        user: Uuid,
    ) -> ApiResult<ReservationView> {
        let ttl = self.expires_in_seconds.unwrap_or(settings.reservation_ttl_seconds);
        let expires_at = Utc::now() + Duration::seconds(i64::from(ttl));
        let why = cause(user, None, None);
        inventory.reserve_now(tenant, self.reference.trim(), self.lines, expires_at, why).await
    }
}

/// A reservation by its reference.
#[utoipa::path(
    tag = "inventory",
    responses(
        (status = 200, description = "The reservation", body = Data<ReservationView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("/{reference}")]
async fn get_reservation(
    auth: Authorized<InventoryRead>,
    inventory: web::Data<dyn InventoryService>,
    reference: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Ok(ok(inventory.reservation(auth.tenant, &reference).await?))
}

/// Ship what the reservation holds (on-hand and reserved stock go down).
#[utoipa::path(
    tag = "inventory",
    responses(
        (status = 200, description = "The reservation, committed", body = Data<ReservationView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Released or expired already", body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("/{reference}/commit")]
async fn commit_reservation(
    auth: Authorized<InventoryWrite>,
    state: web::Data<AppState>,
    inventory: web::Data<dyn InventoryService>,
    reference: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Ok(ok(settle(&state.db, &**inventory, auth.tenant, auth.user_id, &reference, Settle::Commit).await?))
}

/// What ends a reservation.
#[derive(Clone, Copy)]
pub(super) enum Settle {
    Commit,
    Release,
}

/// Commit or release a reservation in a transaction of its own.
pub(super) async fn settle(
    db: &DatabaseConnection,
    inventory: &dyn InventoryService,
    tenant: TenantScope,
    user: Uuid,
    reference: &str,
    how: Settle,
) -> ApiResult<ReservationView> {
    let txn = crate::platform::db::begin(db).await?;
    let why = cause(user, None, None);
    let view = match how {
        Settle::Commit => inventory.commit(&txn, tenant, reference, why).await?,
        Settle::Release => inventory.release(&txn, tenant, reference, why).await?,
    };
    sea_orm::TransactionSession::commit(txn).await?;
    Ok(view)
}

/// Give back what the reservation holds (e.g. an order was cancelled); idempotent.
#[utoipa::path(
    tag = "inventory",
    responses(
        (status = 200, description = "The reservation, released", body = Data<ReservationView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Committed already", body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("/{reference}/release")]
async fn release_reservation(
    auth: Authorized<InventoryWrite>,
    state: web::Data<AppState>,
    inventory: web::Data<dyn InventoryService>,
    reference: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Ok(ok(settle(&state.db, &**inventory, auth.tenant, auth.user_id, &reference, Settle::Release).await?))
}
