//! Procurement (`module.procurement`): vendors and purchase orders with a
//! state machine. A goods receipt is one transaction that updates the
//! order, books receipt movements through [`InventoryService`] and posts a
//! balanced journal entry through [`Ledger`]: if any step fails, nothing
//! is written.

pub mod graphql;
pub mod routes;

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, Code, FieldError},
    modules::{
        inventory::{Cause, InventoryService, Line},
        ledger::{ACCOUNTS_PAYABLE, INVENTORY, JournalLine, Ledger, NewEntry},
    },
    platform::{
        events::{self, EventType},
        http::{PageRequest, Paged, changed_meanwhile, check_version},
        tenancy::TenantScope,
        validate::{self, Checks},
    },
};
use entity::{purchase_order as po, purchase_order_line as po_line, vendor};

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
            Action::Submit => &events::PURCHASE_ORDER_SUBMITTED,
            Action::Approve => &events::PURCHASE_ORDER_APPROVED,
            Action::Cancel => &events::PURCHASE_ORDER_CANCELLED,
            Action::Close => &events::PURCHASE_ORDER_CLOSED,
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
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLine {
    pub product_id: Uuid,
    #[schema(example = 100, minimum = 1)]
    pub quantity: i64,
    #[schema(example = 450, minimum = 0)]
    pub unit_cost: i64,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptLine {
    /// A line of the order.
    pub line_id: Uuid,
    #[schema(example = 40, minimum = 1)]
    pub quantity: i64,
}

/// Which vendors to list, in which order.
pub struct VendorFilter {
    pub active: Option<bool>,
    /// Column and whether descending.
    pub sort: (vendor::Column, bool),
}

/// Which purchase orders to list, in which order.
pub struct OrderFilter {
    pub status: Option<String>,
    pub vendor_id: Option<Uuid>,
    pub warehouse_id: Option<Uuid>,
    /// Column and whether descending.
    pub sort: (po::Column, bool),
}

impl Default for OrderFilter {
    /// Every order, newest first.
    fn default() -> Self {
        Self { status: None, vendor_id: None, warehouse_id: None, sort: (po::Column::CreatedAt, true) }
    }
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
        if line.quantity <= 0 {
            checks.check(&format!("lines[{i}].quantity"), Err("must be a positive whole number".into()));
        }
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
        if line.quantity <= 0 {
            checks.check(&format!("lines[{i}].quantity"), Err("must be a positive whole number".into()));
        }
    }
    checks.finish()
}

pub struct Procurement {
    db: DatabaseConnection,
    inventory: Arc<dyn InventoryService>,
    ledger: Arc<dyn Ledger>,
}

async fn find_vendor(db: &impl ConnectionTrait, tenant: TenantScope, id: Uuid) -> ApiResult<vendor::Model> {
    tenant.find_by_id::<vendor::Entity>(id).one(db).await?.ok_or_else(|| ApiError::not_found("vendor"))
}

async fn find_order(db: &impl ConnectionTrait, tenant: TenantScope, id: Uuid) -> ApiResult<po::Model> {
    tenant.find_by_id::<po::Entity>(id).one(db).await?.ok_or_else(|| ApiError::not_found("purchase order"))
}

async fn view(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    order: po::Model,
) -> ApiResult<PurchaseOrderView> {
    let mut views = views(db, tenant, vec![order]).await?;
    Ok(views.remove(0))
}

/// Orders with their lines, in one query for the lines of them all.
async fn views(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    orders: Vec<po::Model>,
) -> ApiResult<Vec<PurchaseOrderView>> {
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    let mut lines: HashMap<Uuid, Vec<LineView>> = HashMap::new();
    for l in tenant
        .find::<po_line::Entity>()
        .filter(po_line::Column::PurchaseOrderId.is_in(ids))
        .order_by_asc(po_line::Column::Id)
        .all(db)
        .await?
    {
        lines.entry(l.purchase_order_id).or_default().push(LineView {
            id: l.id,
            product_id: l.product_id,
            quantity: l.quantity,
            unit_cost: l.unit_cost,
            line_total: l.quantity * l.unit_cost,
            received: l.received,
        });
    }
    Ok(orders
        .into_iter()
        .map(|order| PurchaseOrderView {
            lines: lines.remove(&order.id).unwrap_or_default(),
            id: order.id,
            vendor_id: order.vendor_id,
            warehouse_id: order.warehouse_id,
            status: order.status,
            currency: order.currency,
            total: order.total,
            notes: order.notes,
            created_by: order.created_by,
            approved_by: order.approved_by,
            version: order.version,
            created_at: order.created_at,
            updated_at: order.updated_at,
        })
        .collect())
}

/// The order, locked until the transaction ends (`FOR UPDATE` on
/// PostgreSQL; SQLite has a single writer already), so receipts and
/// transitions of one order run one after the other.
async fn lock_order(db: &impl ConnectionTrait, tenant: TenantScope, id: Uuid) -> ApiResult<po::Model> {
    let query = tenant.find_by_id::<po::Entity>(id);
    let query = if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        query.lock_exclusive()
    } else {
        query
    };
    query.one(db).await?.ok_or_else(|| ApiError::not_found("purchase order"))
}

fn illegal(order: &po::Model, what: &str) -> ApiError {
    ApiError::new(Code::Conflict, format!("cannot {what} a purchase order that is {}", order.status))
}

impl Procurement {
    pub fn new(
        db: DatabaseConnection,
        inventory: Arc<dyn InventoryService>,
        ledger: Arc<dyn Ledger>,
    ) -> Self {
        Self { db, inventory, ledger }
    }

    pub async fn create_vendor(
        &self,
        tenant: TenantScope,
        name: String,
        email: Option<String>,
        currency: String,
    ) -> ApiResult<VendorView> {
        let now = Utc::now();
        let model = vendor::Entity::insert(vendor::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.id()),
            name: Set(name),
            email: Set(email),
            currency: Set(currency),
            active: Set(true),
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .exec_with_returning(&self.db)
        .await?;
        Ok(model.into())
    }

    pub async fn list_vendors(
        &self,
        tenant: TenantScope,
        filter: VendorFilter,
        page: PageRequest,
    ) -> ApiResult<Paged<VendorView>> {
        let mut query = tenant.find::<vendor::Entity>();
        if let Some(active) = filter.active {
            query = query.filter(vendor::Column::Active.eq(active));
        }
        Ok(page.fetch(&self.db, query, filter.sort).await?.map(Into::into))
    }

    pub async fn get_vendor(&self, tenant: TenantScope, id: Uuid) -> ApiResult<VendorView> {
        Ok(find_vendor(&self.db, tenant, id).await?.into())
    }

    /// Change a vendor; 412 when `if_match` is not its version.
    pub async fn update_vendor(
        &self,
        tenant: TenantScope,
        id: Uuid,
        if_match: Option<i32>,
        changes: VendorChanges,
    ) -> ApiResult<VendorView> {
        let txn = crate::platform::db::begin(&self.db).await?;
        let current = find_vendor(&txn, tenant, id).await?;
        check_version("vendor", current.version, if_match)?;
        let mut update = tenant
            .update_many::<vendor::Entity>()
            .filter(vendor::Column::Id.eq(id))
            .filter(vendor::Column::Version.eq(current.version))
            .col_expr(vendor::Column::Version, Expr::value(current.version + 1))
            .col_expr(vendor::Column::UpdatedAt, Expr::value(Utc::now()));
        if let Some(name) = changes.name {
            update = update.col_expr(vendor::Column::Name, Expr::value(name));
        }
        if let Some(email) = changes.email {
            update = update.col_expr(vendor::Column::Email, Expr::value(email));
        }
        if let Some(active) = changes.active {
            update = update.col_expr(vendor::Column::Active, Expr::value(active));
        }
        if update.exec(&txn).await?.rows_affected == 0 {
            return Err(changed_meanwhile("vendor"));
        }
        let view = find_vendor(&txn, tenant, id).await?.into();
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(view)
    }

    /// Delete a vendor without purchase orders (409 otherwise).
    pub async fn delete_vendor(&self, tenant: TenantScope, id: Uuid) -> ApiResult<()> {
        let txn = crate::platform::db::begin(&self.db).await?;
        find_vendor(&txn, tenant, id).await?;
        let orders = tenant.find::<po::Entity>().filter(po::Column::VendorId.eq(id)).count(&txn).await?;
        if orders > 0 {
            return Err(ApiError::new(
                Code::Conflict,
                format!("the vendor has {orders} purchase orders; deactivate it"),
            ));
        }
        tenant.delete_many::<vendor::Entity>().filter(vendor::Column::Id.eq(id)).exec(&txn).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(())
    }

    pub async fn create_order(
        &self,
        tenant: TenantScope,
        actor: Uuid,
        vendor_id: Uuid,
        warehouse_id: Uuid,
        notes: Option<String>,
        lines: Vec<NewLine>,
    ) -> ApiResult<PurchaseOrderView> {
        let txn = crate::platform::db::begin(&self.db).await?;
        let vendor = find_vendor(&txn, tenant, vendor_id).await?;
        if !vendor.active {
            return Err(ApiError::validation(vec![FieldError::new("vendor_id", "the vendor is inactive")]));
        }
        tenant.find_by_id::<entity::warehouse::Entity>(warehouse_id).one(&txn).await?.ok_or_else(|| {
            ApiError::validation(vec![FieldError::new("warehouse_id", "no such warehouse")])
        })?;
        let mut total: i64 = 0;
        for (i, line) in lines.iter().enumerate() {
            tenant.find_by_id::<entity::product::Entity>(line.product_id).one(&txn).await?.ok_or_else(
                || {
                    ApiError::validation(vec![FieldError::new(
                        format!("lines[{i}].product_id"),
                        "no such product",
                    )])
                },
            )?;
            let line_total = line.quantity.checked_mul(line.unit_cost);
            total = line_total.and_then(|t| total.checked_add(t)).ok_or_else(|| {
                ApiError::validation(vec![FieldError::new(format!("lines[{i}]"), "the amount is too large")])
            })?;
        }
        let now = Utc::now();
        let order = po::Entity::insert(po::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.id()),
            vendor_id: Set(vendor_id),
            warehouse_id: Set(warehouse_id),
            status: Set(DRAFT.to_owned()),
            currency: Set(vendor.currency.clone()),
            total: Set(total),
            notes: Set(notes),
            created_by: Set(Some(actor)),
            approved_by: Set(None),
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .exec_with_returning(&txn)
        .await?;
        for line in &lines {
            po_line::Entity::insert(po_line::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant_id: Set(tenant.id()),
                purchase_order_id: Set(order.id),
                product_id: Set(line.product_id),
                quantity: Set(line.quantity),
                unit_cost: Set(line.unit_cost),
                received: Set(0),
            })
            .exec_without_returning(&txn)
            .await?;
        }
        let data =
            json!({"id": order.id, "vendor_id": vendor_id, "total": total, "currency": order.currency});
        events::publish(&txn, tenant.id(), &events::PURCHASE_ORDER_CREATED, data).await?;
        let view = view(&txn, tenant, order).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(view)
    }

    pub async fn list_orders(
        &self,
        tenant: TenantScope,
        filter: OrderFilter,
        page: PageRequest,
    ) -> ApiResult<Paged<PurchaseOrderView>> {
        let mut query = tenant.find::<po::Entity>();
        if let Some(status) = filter.status {
            query = query.filter(po::Column::Status.eq(status));
        }
        if let Some(vendor) = filter.vendor_id {
            query = query.filter(po::Column::VendorId.eq(vendor));
        }
        if let Some(warehouse) = filter.warehouse_id {
            query = query.filter(po::Column::WarehouseId.eq(warehouse));
        }
        let Paged { data, meta } = page.fetch(&self.db, query, filter.sort).await?;
        Ok(Paged { data: views(&self.db, tenant, data).await?, meta })
    }

    pub async fn get_order(&self, tenant: TenantScope, id: Uuid) -> ApiResult<PurchaseOrderView> {
        view(&self.db, tenant, find_order(&self.db, tenant, id).await?).await
    }

    /// Move the order through its state machine; 409 naming the current
    /// state when the action is not allowed from it.
    pub async fn transition(
        &self,
        tenant: TenantScope,
        actor: Uuid,
        id: Uuid,
        if_match: Option<i32>,
        action: Action,
    ) -> ApiResult<PurchaseOrderView> {
        let txn = crate::platform::db::begin(&self.db).await?;
        let order = lock_order(&txn, tenant, id).await?;
        check_version("purchase order", order.version, if_match)?;
        let verb = format!("{action:?}").to_lowercase();
        let next = action.next(&order.status).ok_or_else(|| illegal(&order, &verb))?;
        let mut update = tenant
            .update_many::<po::Entity>()
            .filter(po::Column::Id.eq(id))
            .filter(po::Column::Status.eq(order.status.clone()))
            .col_expr(po::Column::Status, Expr::value(next))
            .col_expr(po::Column::Version, Expr::value(order.version + 1))
            .col_expr(po::Column::UpdatedAt, Expr::value(Utc::now()));
        if action == Action::Approve {
            update = update.col_expr(po::Column::ApprovedBy, Expr::value(actor));
        }
        if update.exec(&txn).await?.rows_affected == 0 {
            return Err(illegal(&order, &verb));
        }
        let mut data = json!({"id": id, "status": next, "total": order.total});
        if action == Action::Close {
            data["short"] = json!(order.status == PARTIALLY_RECEIVED);
        }
        events::publish(&txn, tenant.id(), action.event(), data).await?;
        let updated = find_order(&txn, tenant, id).await?;
        let view = view(&txn, tenant, updated).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(view)
    }

    /// Receive goods against an approved order: partial receipts allowed,
    /// over-receipt refused; order, stock and ledger in one transaction.
    pub async fn receive(
        &self,
        tenant: TenantScope,
        actor: Uuid,
        id: Uuid,
        if_match: Option<i32>,
        receipt: Vec<ReceiptLine>,
    ) -> ApiResult<PurchaseOrderView> {
        let txn = crate::platform::db::begin(&self.db).await?;
        let order = lock_order(&txn, tenant, id).await?;
        check_version("purchase order", order.version, if_match)?;
        if ![APPROVED, PARTIALLY_RECEIVED].contains(&order.status.as_str()) {
            return Err(illegal(&order, "receive goods for"));
        }
        let lines = tenant
            .find::<po_line::Entity>()
            .filter(po_line::Column::PurchaseOrderId.eq(id))
            .all(&txn)
            .await?;
        let mut value: i64 = 0;
        let reference = format!("purchase_order:{id}");
        for (i, item) in receipt.iter().enumerate() {
            let field = |name: &str| format!("lines[{i}].{name}");
            let line = lines.iter().find(|l| l.id == item.line_id).ok_or_else(|| {
                ApiError::validation(vec![FieldError::new(field("line_id"), "not a line of this order")])
            })?;
            // Conditional: never more than ordered, even under concurrency.
            let booked = tenant
                .update_many::<po_line::Entity>()
                .filter(po_line::Column::Id.eq(line.id))
                .filter(po_line::Column::Received.lte(line.quantity - item.quantity))
                .col_expr(po_line::Column::Received, Expr::cust(format!("received + {}", item.quantity)))
                .exec(&txn)
                .await?;
            if booked.rows_affected == 0 {
                let left = line.quantity - line.received;
                return Err(ApiError::validation(vec![FieldError::new(
                    field("quantity"),
                    format!("only {left} left to receive on this line"),
                )]));
            }
            let stock = Line {
                product_id: line.product_id,
                warehouse_id: order.warehouse_id,
                quantity: item.quantity,
            };
            let cause = Cause {
                user_id: Some(actor),
                reason: Some("goods receipt".into()),
                reference: Some(reference.clone()),
            };
            self.inventory.receive(&txn, tenant, stock, cause).await?;
            value += item.quantity * line.unit_cost;
        }
        let entry = NewEntry {
            reference: reference.clone(),
            memo: format!("goods received on purchase order {id}"),
            currency: order.currency.clone(),
            lines: vec![
                JournalLine { account: INVENTORY.into(), debit: value, credit: 0 },
                JournalLine { account: ACCOUNTS_PAYABLE.into(), debit: 0, credit: value },
            ],
        };
        self.ledger.post(&txn, tenant, entry).await?;
        let lines = tenant
            .find::<po_line::Entity>()
            .filter(po_line::Column::PurchaseOrderId.eq(id))
            .all(&txn)
            .await?;
        let complete = lines.iter().all(|l| l.received == l.quantity);
        let status = if complete { RECEIVED } else { PARTIALLY_RECEIVED };
        tenant
            .update_many::<po::Entity>()
            .filter(po::Column::Id.eq(id))
            .col_expr(po::Column::Status, Expr::value(status))
            .col_expr(po::Column::Version, Expr::value(order.version + 1))
            .col_expr(po::Column::UpdatedAt, Expr::value(Utc::now()))
            .exec(&txn)
            .await?;
        let items: Vec<_> =
            receipt.iter().map(|r| json!({"line_id": r.line_id, "quantity": r.quantity})).collect();
        let data =
            json!({"purchase_order_id": id, "lines": items, "value": value, "currency": order.currency});
        events::publish(&txn, tenant.id(), &events::GOODS_RECEIVED, data).await?;
        if complete {
            let data = json!({"id": id, "status": status, "total": order.total});
            events::publish(&txn, tenant.id(), &events::PURCHASE_ORDER_RECEIVED, data).await?;
        }
        let updated = find_order(&txn, tenant, id).await?;
        let view = view(&txn, tenant, updated).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(view)
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
