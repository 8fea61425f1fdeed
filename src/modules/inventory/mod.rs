//! Inventory (`module.inventory`): products, warehouses, stock levels, the
//! stock movement ledger, adjustments, transfers and reservations that
//! never oversell. Other modules reach inventory only through
//! [`InventoryService`]; its write methods take the caller's transaction,
//! so a purchase order receipt and its stock movements commit together.

pub mod graphql;
pub mod routes;
pub mod service;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use std::sync::Arc;

use actix_web::web;
use serde_json::json;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::{
    error::ApiResult,
    modules::procurement::Vendors,
    platform::{
        events::event_types,
        http::{ListRequest, Paged, Sort, Sorts},
        jobs::JobHandler,
        module::{Feature, Grant, Module, Setup},
        rbac::grants,
        search::{Search, Window},
        state::AppState,
        tenancy::TenantScope,
    },
};

/// The most one change may move: every quantity in a request is at most this.
pub const MAX_QUANTITY: i64 = 1_000_000_000;
/// The most one stock level may hold (on hand or reserved). With
/// [`MAX_QUANTITY`] per change, no sum can overflow.
pub const MAX_LEVEL: i64 = 1_000_000_000_000_000;

/// A quantity of one change: 1 to [`MAX_QUANTITY`].
pub fn check_quantity(quantity: i64) -> Result<(), String> {
    if (1..=MAX_QUANTITY).contains(&quantity) {
        Ok(())
    } else {
        Err(format!("must be a whole number from 1 to {MAX_QUANTITY}"))
    }
}

pub const EXPIRY_JOB: &str = "inventory.reservation_expiry";
pub const REORDER_SCAN_JOB: &str = "inventory.reorder_scan";

grants! {
    InventoryRead => "inventory", "read", "module.inventory", ["admin", "manager", "user", "viewer"];
    InventoryWrite => "inventory", "write", "module.inventory", ["admin", "manager"];
}

event_types! {
    EVENTS;
    PRODUCT_CREATED => "product.created", 5, "A product was added to the catalogue.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "sku": "TSHIRT-RED-M", "name": "T-shirt, red, M"});
    PRODUCT_UPDATED => "product.updated", 5, "A product changed.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "sku": "TSHIRT-RED-M", "version": 2});
    WAREHOUSE_CREATED => "warehouse.created", 5, "A warehouse was added.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a13", "code": "MAIN", "name": "Main warehouse"});
    STOCK_ADJUSTED => "stock.adjusted", 5, "On-hand stock was adjusted (count, damage, correction).",
        json!({"product_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "sku": "TSHIRT-RED-M", "warehouse_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "quantity": -2, "on_hand": 48, "reason": "damaged"});
    STOCK_LOW => "stock.low", 7, "Available stock fell below the reorder point.",
        json!({"product_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "sku": "TSHIRT-RED-M", "warehouse_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "available": 4, "reorder_point": 5});
    STOCK_RESERVED => "stock.reserved", 6, "Stock was reserved for a reference (all lines).",
        json!({"reference": "order-1042", "lines": [{"product_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "warehouse_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "quantity": 2}]});
    STOCK_RELEASED => "stock.released", 6, "A reservation was released or expired: its stock is available again.",
        json!({"reference": "order-1042", "lines": [], "outcome": "released"});
    STOCK_SHIPPED => "stock.shipped", 6, "A reservation was committed: its stock left the warehouse.",
        json!({"reference": "order-1042", "lines": [], "outcome": "committed"});
    STOCK_TRANSFERRED => "stock.transferred", 5, "Stock moved between warehouses.",
        json!({"product_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "sku": "TSHIRT-RED-M", "from_warehouse_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "to_warehouse_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a13", "quantity": 10});
    INVENTORY_REORDER_RECOMMENDED => "inventory.reorder_recommended", 4, "The weekly scan found stock below its reorder points.",
        json!({"recommendations": [{"product_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "sku": "TSHIRT-RED-M", "warehouse_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "available": 3, "reorder_point": 10, "suggested_quantity": 17, "preferred_vendor_id": null}]});
}

/// `[modules.inventory]`.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// A reservation made without `expires_in_seconds` is released after this.
    pub reservation_ttl_seconds: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self { reservation_ttl_seconds: 900 }
    }
}

/// The inventory module: its service and how it plugs in.
pub struct Inventory {
    service: Arc<service::SeaOrmInventory>,
    settings: Settings,
}

impl Inventory {
    pub fn new(setup: &Setup, vendors: Arc<dyn Vendors>) -> anyhow::Result<Self> {
        let settings: Settings = setup.config("inventory")?;
        anyhow::ensure!(
            (1..=7 * 86_400).contains(&settings.reservation_ttl_seconds),
            "`modules.inventory.reservation_ttl_seconds`: must be between 1 and 604800"
        );
        Ok(Self { service: Arc::new(service::SeaOrmInventory::new(setup.db.clone(), vendors)), settings })
    }

    /// What other modules are given.
    pub fn service(&self) -> Arc<dyn InventoryService> {
        self.service.clone()
    }
}

#[async_trait::async_trait]
impl Module for Inventory {
    fn name(&self) -> &'static str {
        "inventory"
    }

    fn feature(&self) -> Option<Feature> {
        Some(Feature {
            key: "module.inventory",
            description: "Products, warehouses, stock levels, movements and reservations",
            default: true,
            tier: "basic",
        })
    }

    fn tags(&self) -> &'static [(&'static str, &'static str)] {
        &[("inventory", "Products, warehouses, stock, movements, reservations (module.inventory)")]
    }

    fn routes(&self, cfg: &mut ServiceConfig) {
        cfg.app_data(web::Data::from(self.service()));
        cfg.app_data(web::Data::new(self.settings.clone()));
        routes::routes(cfg);
    }

    fn graphql_data(&self, data: &mut async_graphql::Data, tenant: Option<TenantScope>) {
        data.insert(self.service());
        data.insert(self.settings.clone());
        if let Some(tenant) = tenant {
            data.insert(graphql::loader(self.service(), tenant));
        }
    }

    fn grants(&self) -> &'static [Grant] {
        GRANTS
    }

    fn event_types(&self) -> &'static [&'static crate::platform::events::EventType] {
        EVENTS
    }

    fn jobs(&self) -> Vec<(&'static str, Arc<dyn JobHandler>)> {
        vec![
            (EXPIRY_JOB, Arc::new(service::ExpireReservation(self.service.clone()))),
            (REORDER_SCAN_JOB, Arc::new(service::ReorderScan)),
        ]
    }

    /// Queue the next weekly reorder scan (once, whoever asks).
    async fn start(&self, state: &AppState) -> anyhow::Result<()> {
        service::schedule_reorder_scan(&state.db, chrono::Utc::now()).await?;
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "Product", complex)]
pub struct ProductView {
    pub id: Uuid,
    #[schema(example = "TSHIRT-RED-M")]
    pub sku: String,
    #[schema(example = "T-shirt, red, M")]
    pub name: String,
    pub barcode: Option<String>,
    /// Minor units (cents) of `currency`.
    #[schema(example = 1999)]
    pub unit_price: i64,
    #[schema(example = "EUR")]
    pub currency: String,
    pub attributes: Value,
    pub active: bool,
    /// Reorders of this product go to this vendor.
    pub preferred_vendor_id: Option<Uuid>,
    /// Send it back in `If-Match` to update.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A validated new product.
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    pub barcode: Option<String>,
    pub unit_price: i64,
    pub currency: String,
    pub attributes: Value,
    pub active: bool,
}

/// Validated changes; `None` keeps the value.
#[derive(Default)]
pub struct ProductChanges {
    pub name: Option<String>,
    pub barcode: Option<String>,
    pub unit_price: Option<i64>,
    pub currency: Option<String>,
    pub attributes: Option<Value>,
    pub active: Option<bool>,
    pub preferred_vendor_id: Option<Uuid>,
}

/// Products: newest first unless sorted otherwise.
pub const PRODUCT_SORTS: Sorts<entity::product::Column> = Sorts {
    fields: &[
        ("sku", entity::product::Column::Sku),
        ("name", entity::product::Column::Name),
        ("created_at", entity::product::Column::CreatedAt),
    ],
    default: "-created_at",
};

/// Warehouses: by code unless sorted otherwise, since a tenant has a few,
/// picked by their code.
pub const WAREHOUSE_SORTS: Sorts<entity::warehouse::Column> = Sorts {
    fields: &[
        ("code", entity::warehouse::Column::Code),
        ("name", entity::warehouse::Column::Name),
        ("created_at", entity::warehouse::Column::CreatedAt),
    ],
    default: "code",
};

/// Stock levels: by product unless sorted otherwise, which puts a product's
/// warehouses side by side (a level has no creation time to sort by).
pub const LEVEL_SORTS: Sorts<entity::stock_level::Column> = Sorts {
    fields: &[
        ("product_id", entity::stock_level::Column::ProductId),
        ("on_hand", entity::stock_level::Column::OnHand),
        ("reserved", entity::stock_level::Column::Reserved),
        ("updated_at", entity::stock_level::Column::UpdatedAt),
    ],
    default: "product_id",
};

/// The stock ledger: newest first unless sorted otherwise.
pub const MOVEMENT_SORTS: Sorts<entity::stock_movement::Column> =
    Sorts { fields: &[("created_at", entity::stock_movement::Column::CreatedAt)], default: "-created_at" };

pub struct ProductFilter {
    pub sku: Option<String>,
    pub active: Option<bool>,
    /// In the SKU or the name.
    pub q: Option<Search>,
    pub created: Window,
    pub updated: Window,
    pub sort: Sort<entity::product::Column>,
}

impl ProductFilter {
    /// The product with this SKU, if any (a SKU is unique in its tenant).
    pub fn by_sku(sku: &str) -> ApiResult<Self> {
        Ok(Self {
            sku: Some(sku.to_owned()),
            active: None,
            q: None,
            created: Window::default(),
            updated: Window::default(),
            sort: crate::platform::http::parse_sort(None, &PRODUCT_SORTS)?,
        })
    }
}

pub struct WarehouseFilter {
    /// In the code or the name.
    pub q: Option<Search>,
    pub created: Window,
    pub sort: Sort<entity::warehouse::Column>,
}

pub struct LevelFilter {
    pub product_id: Option<Uuid>,
    pub warehouse_id: Option<Uuid>,
    pub sort: Sort<entity::stock_level::Column>,
}

/// The kinds of stock movement.
pub const MOVEMENT_KINDS: [&str; 7] =
    ["receipt", "shipment", "adjustment", "transfer_out", "transfer_in", "reservation", "release"];

pub struct MovementFilter {
    pub product_id: Option<Uuid>,
    pub warehouse_id: Option<Uuid>,
    /// One of [`MOVEMENT_KINDS`].
    pub kind: Option<String>,
    pub reference: Option<String>,
    pub created: Window,
    pub sort: Sort<entity::stock_movement::Column>,
}

#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "Warehouse")]
pub struct WarehouseView {
    pub id: Uuid,
    #[schema(example = "MAIN")]
    pub code: String,
    #[schema(example = "Main warehouse")]
    pub name: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "StockLevel", complex)]
pub struct StockLevelView {
    pub product_id: Uuid,
    pub sku: String,
    pub warehouse_id: Uuid,
    #[schema(example = 120)]
    pub on_hand: i64,
    #[schema(example = 20)]
    pub reserved: i64,
    /// `on_hand - reserved`.
    #[schema(example = 100)]
    pub available: i64,
    pub reorder_point: Option<i64>,
    pub reorder_quantity: Option<i64>,
    pub updated_at: DateTime<Utc>,
    /// The product, with `expand=product` (GraphQL: `product`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[graphql(skip)]
    #[schema(nullable = false)]
    pub product: Option<ProductView>,
}

/// A level below its reorder point, with what to order and from whom.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "ReorderRecommendation")]
pub struct Recommendation {
    pub product_id: Uuid,
    pub sku: String,
    pub warehouse_id: Uuid,
    pub available: i64,
    pub reorder_point: i64,
    /// The level's reorder quantity, or enough to reach twice the reorder point.
    #[schema(example = 40)]
    pub suggested_quantity: i64,
    pub preferred_vendor_id: Option<Uuid>,
}

#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "StockMovement")]
pub struct MovementView {
    pub id: Uuid,
    pub product_id: Uuid,
    pub warehouse_id: Uuid,
    /// `receipt`, `shipment`, `adjustment`, `transfer_out`, `transfer_in`, `reservation`, `release`.
    #[schema(example = "adjustment")]
    pub kind: String,
    /// Change of on-hand stock.
    pub quantity: i64,
    /// Change of reserved stock.
    pub reserved_delta: i64,
    pub reason: Option<String>,
    pub reference: Option<String>,
    pub user_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

#[derive(
    Clone,
    Debug,
    Serialize,
    Deserialize,
    ToSchema,
    PartialEq,
    Eq,
    async_graphql::SimpleObject,
    async_graphql::InputObject,
)]
#[serde(deny_unknown_fields)]
#[graphql(name = "StockLine", input_name = "StockLineInput")]
pub struct Line {
    pub product_id: Uuid,
    pub warehouse_id: Uuid,
    #[schema(example = 2, minimum = 1, maximum = 1_000_000_000)]
    pub quantity: i64,
}

#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "Reservation")]
pub struct ReservationView {
    pub id: Uuid,
    #[schema(example = "order-1042")]
    pub reference: String,
    /// `active`, `committed`, `released` or `expired`.
    #[schema(example = "active")]
    pub status: String,
    pub lines: Vec<Line>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Who did it and why, for the ledger.
#[derive(Clone, Debug, Default)]
pub struct Cause {
    pub user_id: Option<Uuid>,
    pub reason: Option<String>,
    pub reference: Option<String>,
}

/// Stock to hold for a reference, until `expires_at` ([`InventoryService::reserve`]).
#[derive(Clone, Debug)]
pub struct Hold {
    pub reference: String,
    pub lines: Vec<Line>,
    pub expires_at: DateTime<Utc>,
    pub cause: Cause,
}

/// Everything other modules (and the routes) may do with stock.
#[async_trait::async_trait]
pub trait InventoryService: Send + Sync {
    async fn create_product(&self, tenant: TenantScope, new: NewProduct) -> ApiResult<ProductView>;
    async fn list_products(
        &self,
        tenant: TenantScope,
        filter: ProductFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<ProductView>>;
    async fn get_product(&self, tenant: TenantScope, id: Uuid) -> ApiResult<ProductView>;
    async fn update_product(
        &self,
        tenant: TenantScope,
        id: Uuid,
        if_match: Option<i32>,
        changes: ProductChanges,
    ) -> ApiResult<ProductView>;
    async fn create_warehouse(
        &self,
        tenant: TenantScope,
        code: String,
        name: String,
    ) -> ApiResult<WarehouseView>;
    async fn list_warehouses(
        &self,
        tenant: TenantScope,
        filter: WarehouseFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<WarehouseView>>;
    async fn stock_levels(
        &self,
        tenant: TenantScope,
        filter: LevelFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<StockLevelView>>;
    async fn movements(
        &self,
        tenant: TenantScope,
        filter: MovementFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<MovementView>>;
    /// Change on-hand stock by `quantity` (negative to remove); refuses to go
    /// below zero or below what is reserved.
    async fn adjust(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        line: Line,
        cause: Cause,
    ) -> ApiResult<StockLevelView>;
    /// Goods received (procurement): a `receipt` movement.
    async fn receive(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        line: Line,
        cause: Cause,
    ) -> ApiResult<()>;
    /// Move stock between warehouses, atomically.
    async fn transfer(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        line: Line,
        to_warehouse: Uuid,
        cause: Cause,
    ) -> ApiResult<()>;
    /// Hold stock for each of `holds` in `txn`: each all lines or none,
    /// idempotent per reference, decided in their order; one answer each.
    /// The `Err` is the transaction's (it must roll back), never one hold's.
    async fn reserve(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        holds: Vec<Hold>,
    ) -> ApiResult<Vec<ApiResult<ReservationView>>>;
    /// [`reserve`](Self::reserve) in a transaction of its own, for a caller
    /// with nothing else to write. Reservations that arrive together are
    /// written together (one transaction, one lock of each level, each
    /// reservation still all or nothing): what makes a hot SKU fast.
    async fn reserve_now(
        &self,
        tenant: TenantScope,
        reference: &str,
        lines: Vec<Line>,
        expires_at: DateTime<Utc>,
        cause: Cause,
    ) -> ApiResult<ReservationView>;
    /// Ship what `reference` holds: reserved and on-hand stock go down.
    async fn commit(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        reference: &str,
        cause: Cause,
    ) -> ApiResult<ReservationView>;
    /// [`commit`](Self::commit) each of `commits` (a reference and its
    /// cause) in `txn`, each decided on its own (one that cannot be
    /// committed changes nothing), written together: one answer each, in
    /// order. The `Err` is the transaction's.
    async fn commit_all(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        commits: Vec<(String, Cause)>,
    ) -> ApiResult<Vec<ApiResult<ReservationView>>>;
    /// Give back what `reference` holds; idempotent.
    async fn release(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        reference: &str,
        cause: Cause,
    ) -> ApiResult<ReservationView>;
    async fn reservation(&self, tenant: TenantScope, reference: &str) -> ApiResult<ReservationView>;
    async fn get_warehouse(&self, tenant: TenantScope, id: Uuid) -> ApiResult<WarehouseView>;
    /// The products among `ids` (others are simply absent): for batch loads.
    async fn products_by_ids(&self, tenant: TenantScope, ids: Vec<Uuid>) -> ApiResult<Vec<ProductView>>;
    /// Every stock level of the products among `product_ids`.
    async fn levels_of_products(
        &self,
        tenant: TenantScope,
        product_ids: Vec<Uuid>,
    ) -> ApiResult<Vec<StockLevelView>>;
    /// Set (or clear, with `None`) the reorder point and quantity of a level.
    async fn set_reorder(
        &self,
        tenant: TenantScope,
        product_id: Uuid,
        warehouse_id: Uuid,
        point: Option<i64>,
        quantity: Option<i64>,
    ) -> ApiResult<StockLevelView>;
    /// Levels below their reorder point, most urgent first.
    async fn reorder_recommendations(&self, tenant: TenantScope) -> ApiResult<Vec<Recommendation>>;
}
