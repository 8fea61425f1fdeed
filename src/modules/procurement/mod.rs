//! Procurement (`module.procurement`): vendors and purchase orders with a
//! state machine. A goods receipt is one transaction that updates the
//! order, books receipt movements through [`InventoryService`] and posts a
//! balanced journal entry through [`Ledger`]: if any step fails, nothing
//! is written.

pub mod graphql;
pub mod routes;
pub mod service;

use std::sync::Arc;

use actix_web::web;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use crate::{
    error::{ApiResult, FieldError},
    modules::{
        inventory::{InventoryService, ProductView, check_quantity},
        ledger::Ledger,
    },
    platform::{
        events::{EventType, event_types},
        http::{ListRequest, Paged, Sort, Sorts},
        module::{Feature, Grant, Module, Setup},
        rbac::grants,
        search::{Search, Window},
        tenancy::TenantScope,
        validate::{self, Checks},
    },
};
use entity::{purchase_order as po, vendor};

grants! {
    ProcurementRead => "procurement", "read", "module.procurement", ["admin", "manager", "user", "viewer"];
    ProcurementWrite => "procurement", "write", "module.procurement", ["admin", "manager", "user"];
    ProcurementApprove => "procurement", "approve", "module.procurement", ["admin", "manager"];
}

event_types! {
    EVENTS;
    VENDOR_CREATED => "vendor.created", 5, "A vendor was added.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "name": "Acme Supplies", "currency": "EUR"});
    VENDOR_UPDATED => "vendor.updated", 5, "A vendor changed (name, email, or activated / deactivated).",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "name": "Acme Supplies", "active": false, "version": 2});
    VENDOR_DELETED => "vendor.deleted", 5, "A vendor without purchase orders was deleted.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "name": "Acme Supplies"});
    PURCHASE_ORDER_CREATED => "purchase_order.created", 5, "A purchase order was drafted.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "vendor_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "total": 45000, "currency": "EUR"});
    PURCHASE_ORDER_SUBMITTED => "purchase_order.submitted", 5, "A purchase order was submitted for approval.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "status": "submitted", "total": 45000});
    PURCHASE_ORDER_APPROVED => "purchase_order.approved", 6, "A purchase order was approved.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "status": "approved", "total": 45000});
    PURCHASE_ORDER_RECEIVED => "purchase_order.received", 6, "Every line of a purchase order was received.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "status": "received", "total": 45000});
    PURCHASE_ORDER_CANCELLED => "purchase_order.cancelled", 6, "A purchase order was cancelled.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "status": "cancelled", "total": 45000});
    PURCHASE_ORDER_CLOSED => "purchase_order.closed", 5, "A purchase order was closed; `short` when lines were never fully received.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "status": "closed", "total": 45000, "short": false});
    GOODS_RECEIVED => "goods.received", 6, "Goods were received against a purchase order (stock and ledger booked); each line names its product and warehouse.",
        json!({"purchase_order_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "lines": [{"line_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a13", "product_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a14", "warehouse_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "quantity": 40}], "value": 18000, "currency": "EUR"});
}

pub const DRAFT: &str = "draft";
pub const SUBMITTED: &str = "submitted";
pub const APPROVED: &str = "approved";
pub const PARTIALLY_RECEIVED: &str = "partially_received";
pub const RECEIVED: &str = "received";
pub const CLOSED: &str = "closed";
pub const CANCELLED: &str = "cancelled";
/// Every state, in the order an order goes through them.
pub const STATES: [&str; 7] = [DRAFT, SUBMITTED, APPROVED, PARTIALLY_RECEIVED, RECEIVED, CLOSED, CANCELLED];

/// A transition of the purchase order state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Submit,
    Approve,
    Cancel,
    Close,
}

impl Action {
    /// The state `action` leads to from `from`, or `None` when illegal.
    pub fn next(self, from: &str) -> Option<&'static str> {
        match (self, from) {
            (Action::Submit, DRAFT) => Some(SUBMITTED),
            (Action::Approve, SUBMITTED) => Some(APPROVED),
            (Action::Cancel, DRAFT | SUBMITTED | APPROVED) => Some(CANCELLED),
            // Closing a partially received order ends it short: nothing
            // more is expected from the vendor.
            (Action::Close, PARTIALLY_RECEIVED | RECEIVED) => Some(CLOSED),
            _ => None,
        }
    }

    fn event(self) -> &'static EventType {
        match self {
            Action::Submit => &PURCHASE_ORDER_SUBMITTED,
            Action::Approve => &PURCHASE_ORDER_APPROVED,
            Action::Cancel => &PURCHASE_ORDER_CANCELLED,
            Action::Close => &PURCHASE_ORDER_CLOSED,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "Vendor")]
pub struct VendorView {
    pub id: Uuid,
    #[schema(example = "Acme Supplies")]
    pub name: String,
    pub email: Option<String>,
    #[schema(example = "EUR")]
    pub currency: String,
    pub active: bool,
    /// Bumped by every change; sent as the `ETag`.
    pub version: i32,
    pub created_at: DateTime<Utc>,
}

impl From<vendor::Model> for VendorView {
    fn from(m: vendor::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            email: m.email,
            currency: m.currency,
            active: m.active,
            version: m.version,
            created_at: m.created_at,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "PurchaseOrderLine", complex)]
pub struct LineView {
    pub id: Uuid,
    pub product_id: Uuid,
    pub quantity: i64,
    /// Minor units per unit.
    pub unit_cost: i64,
    pub line_total: i64,
    pub received: i64,
    /// The product, with `expand=lines.product` (GraphQL: `product`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[graphql(skip)]
    #[schema(nullable = false)]
    pub product: Option<ProductView>,
}

#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "PurchaseOrder", complex)]
pub struct PurchaseOrderView {
    pub id: Uuid,
    pub vendor_id: Uuid,
    pub warehouse_id: Uuid,
    /// draft, submitted, approved, partially_received, received, closed, cancelled.
    #[schema(example = "approved")]
    pub status: String,
    pub currency: String,
    /// Sum of the line totals, minor units (computed by the server).
    pub total: i64,
    pub notes: Option<String>,
    pub lines: Vec<LineView>,
    pub created_by: Option<Uuid>,
    pub approved_by: Option<Uuid>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The vendor, with `expand=vendor` (GraphQL: `vendor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[graphql(skip)]
    #[schema(nullable = false)]
    pub vendor: Option<VendorView>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLine {
    pub product_id: Uuid,
    #[schema(example = 100, minimum = 1, maximum = 1_000_000_000)]
    pub quantity: i64,
    #[schema(example = 450, minimum = 0)]
    pub unit_cost: i64,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptLine {
    /// A line of the order.
    pub line_id: Uuid,
    #[schema(example = 40, minimum = 1, maximum = 1_000_000_000)]
    pub quantity: i64,
}

/// Vendors: by name unless sorted otherwise, since the list is the
/// directory a buyer looks a vendor up in.
pub const VENDOR_SORTS: Sorts<vendor::Column> = Sorts {
    fields: &[("name", vendor::Column::Name), ("created_at", vendor::Column::CreatedAt)],
    default: "name",
};

/// Purchase orders: newest first unless sorted otherwise.
pub const ORDER_SORTS: Sorts<po::Column> = Sorts {
    fields: &[
        ("created_at", po::Column::CreatedAt),
        ("updated_at", po::Column::UpdatedAt),
        ("total", po::Column::Total),
    ],
    default: "-created_at",
};

/// Which vendors to list, in which order.
pub struct VendorFilter {
    pub active: Option<bool>,
    /// In the name or the email.
    pub q: Option<Search>,
    pub created: Window,
    pub updated: Window,
    pub sort: Sort<vendor::Column>,
}

/// Which purchase orders to list, in which order.
pub struct OrderFilter {
    pub status: Option<String>,
    pub vendor_id: Option<Uuid>,
    pub warehouse_id: Option<Uuid>,
    pub created: Window,
    pub updated: Window,
    pub sort: Sort<po::Column>,
}

/// The fields of a vendor to change; `None` leaves one as it is.
#[derive(Default)]
pub struct VendorChanges {
    pub name: Option<String>,
    pub email: Option<String>,
    pub active: Option<bool>,
}

/// What a new order's input must satisfy, over REST, bulk and GraphQL alike.
pub fn check_order(notes: Option<&str>, lines: &[NewLine]) -> Result<(), Vec<FieldError>> {
    let mut checks = Checks::default();
    if lines.is_empty() || lines.len() > 500 {
        checks.check("lines", Err("must hold 1 to 500 lines".into()));
    }
    for (i, line) in lines.iter().enumerate() {
        checks.check(&format!("lines[{i}].quantity"), check_quantity(line.quantity));
        if line.unit_cost < 0 {
            checks.check(&format!("lines[{i}].unit_cost"), Err("must not be negative".into()));
        }
    }
    if let Some(notes) = notes {
        checks.check("notes", validate::plain_text(notes, 2000));
    }
    checks.finish()
}

/// What a goods receipt's input must satisfy, over REST and GraphQL alike.
pub fn check_receipt(lines: &[ReceiptLine]) -> Result<(), Vec<FieldError>> {
    let mut checks = Checks::default();
    if lines.is_empty() {
        checks.check("lines", Err("must hold at least one line".into()));
    }
    for (i, line) in lines.iter().enumerate() {
        checks.check(&format!("lines[{i}].quantity"), check_quantity(line.quantity));
    }
    checks.finish()
}

/// Everything the routes, GraphQL and other modules may do with vendors
/// and purchase orders.
#[async_trait::async_trait]
pub trait ProcurementService: Send + Sync {
    async fn create_vendor(
        &self,
        tenant: TenantScope,
        name: String,
        email: Option<String>,
        currency: String,
    ) -> ApiResult<VendorView>;
    async fn list_vendors(
        &self,
        tenant: TenantScope,
        filter: VendorFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<VendorView>>;
    async fn get_vendor(&self, tenant: TenantScope, id: Uuid) -> ApiResult<VendorView>;
    /// The vendors among `ids` (others are simply absent): for batch loads.
    async fn vendors_by_ids(&self, tenant: TenantScope, ids: Vec<Uuid>) -> ApiResult<Vec<VendorView>>;
    /// Change a vendor; 412 when `if_match` is not its version.
    async fn update_vendor(
        &self,
        tenant: TenantScope,
        id: Uuid,
        if_match: Option<i32>,
        changes: VendorChanges,
    ) -> ApiResult<VendorView>;
    /// Delete a vendor without purchase orders (409 otherwise).
    async fn delete_vendor(&self, tenant: TenantScope, id: Uuid) -> ApiResult<()>;
    async fn create_order(
        &self,
        tenant: TenantScope,
        actor: Uuid,
        vendor_id: Uuid,
        warehouse_id: Uuid,
        notes: Option<String>,
        lines: Vec<NewLine>,
    ) -> ApiResult<PurchaseOrderView>;
    async fn list_orders(
        &self,
        tenant: TenantScope,
        filter: OrderFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<PurchaseOrderView>>;
    async fn get_order(&self, tenant: TenantScope, id: Uuid) -> ApiResult<PurchaseOrderView>;
    /// Move the order through its state machine; 409 naming the current
    /// state when the action is not allowed from it.
    async fn transition(
        &self,
        tenant: TenantScope,
        actor: Uuid,
        id: Uuid,
        if_match: Option<i32>,
        action: Action,
    ) -> ApiResult<PurchaseOrderView>;
    /// Receive goods against an approved order: partial receipts allowed,
    /// over-receipt refused; order, stock and ledger in one transaction.
    async fn receive(
        &self,
        tenant: TenantScope,
        actor: Uuid,
        id: Uuid,
        if_match: Option<i32>,
        receipt: Vec<ReceiptLine>,
    ) -> ApiResult<PurchaseOrderView>;
}

/// What inventory asks of procurement: whether a vendor exists (a
/// product's preferred vendor). Built before inventory, which procurement
/// itself needs.
#[async_trait::async_trait]
pub trait Vendors: Send + Sync {
    async fn exists(&self, tenant: TenantScope, id: Uuid) -> ApiResult<bool>;
}

/// Vendors for inventory, built before either module.
pub fn vendors(setup: &Setup) -> Arc<dyn Vendors> {
    Arc::new(service::SeaOrmVendors::new(setup.db.clone()))
}

/// The procurement module: its service and how it plugs in.
pub struct Procurement {
    service: Arc<dyn ProcurementService>,
}

impl Procurement {
    pub fn new(setup: &Setup, inventory: Arc<dyn InventoryService>, ledger: Arc<dyn Ledger>) -> Self {
        Self { service: Arc::new(service::SeaOrmProcurement::new(setup.db.clone(), inventory, ledger)) }
    }
}

#[async_trait::async_trait]
impl Module for Procurement {
    fn name(&self) -> &'static str {
        "procurement"
    }

    fn feature(&self) -> Option<Feature> {
        Some(Feature {
            key: "module.procurement",
            description: "Vendors, purchase orders and goods receipts",
            default: true,
            tier: "basic",
        })
    }

    fn tags(&self) -> &'static [(&'static str, &'static str)] {
        &[("procurement", "Vendors and purchase orders (module.procurement)")]
    }

    fn routes(&self, cfg: &mut ServiceConfig) {
        cfg.app_data(web::Data::from(self.service.clone()));
        routes::routes(cfg);
    }

    fn graphql_data(&self, data: &mut async_graphql::Data, tenant: Option<TenantScope>) {
        data.insert(self.service.clone());
        if let Some(tenant) = tenant {
            data.insert(graphql::loader(self.service.clone(), tenant));
        }
    }

    fn grants(&self) -> &'static [Grant] {
        GRANTS
    }

    fn event_types(&self) -> &'static [&'static EventType] {
        EVENTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_machine_allows_only_its_transitions() {
        assert_eq!(Action::Submit.next(DRAFT), Some(SUBMITTED));
        assert_eq!(Action::Approve.next(SUBMITTED), Some(APPROVED));
        assert_eq!(Action::Approve.next(DRAFT), None);
        for from in [DRAFT, SUBMITTED, APPROVED] {
            assert_eq!(Action::Cancel.next(from), Some(CANCELLED));
        }
        for from in [PARTIALLY_RECEIVED, RECEIVED, CLOSED, CANCELLED] {
            assert_eq!(Action::Cancel.next(from), None, "{from}");
        }
        assert_eq!(Action::Close.next(RECEIVED), Some(CLOSED));
        assert_eq!(Action::Close.next(PARTIALLY_RECEIVED), Some(CLOSED));
        for from in [DRAFT, SUBMITTED, APPROVED, CLOSED, CANCELLED] {
            assert_eq!(Action::Close.next(from), None, "{from}");
        }
    }
}
