//! [`ProcurementService`] and [`Vendors`] on sea-orm.

use std::{collections::HashMap, sync::Arc};

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use serde_json::json;
use uuid::Uuid;

use super::{
    APPROVED, Action, DRAFT, LineView, NewLine, OrderFilter, PARTIALLY_RECEIVED, ProcurementService,
    PurchaseOrderView, RECEIVED, ReceiptLine, VendorChanges, VendorFilter, VendorView, Vendors,
};
use crate::{
    error::{ApiError, ApiResult, Code, FieldError},
    modules::{
        inventory::{Cause, InventoryService, Line},
        ledger::{ACCOUNTS_PAYABLE, INVENTORY, JournalLine, Ledger, NewEntry},
    },
    platform::{
        events,
        http::{ListRequest, Paged, changed_meanwhile, check_version},
        tenancy::TenantScope,
    },
};
use entity::{purchase_order as po, purchase_order_line as po_line, vendor};

/// Vendors on sea-orm: what inventory asks of procurement.
pub struct SeaOrmVendors {
    db: DatabaseConnection,
}

impl SeaOrmVendors {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait::async_trait]
impl Vendors for SeaOrmVendors {
    async fn exists(&self, tenant: TenantScope, id: Uuid) -> ApiResult<bool> {
        Ok(tenant.find_by_id::<vendor::Entity>(id).count(&self.db).await? > 0)
    }
}

pub struct SeaOrmProcurement {
    db: DatabaseConnection,
    inventory: Arc<dyn InventoryService>,
    ledger: Arc<dyn Ledger>,
}

async fn find_vendor(db: &impl ConnectionTrait, tenant: TenantScope, id: Uuid) -> ApiResult<vendor::Model> {
    tenant.get::<vendor::Entity>(db, id).await?.ok_or_else(|| ApiError::not_found("vendor"))
}

async fn find_order(db: &impl ConnectionTrait, tenant: TenantScope, id: Uuid) -> ApiResult<po::Model> {
    tenant.get::<po::Entity>(db, id).await?.ok_or_else(|| ApiError::not_found("purchase order"))
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
            product: None,
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
            vendor: None,
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

impl SeaOrmProcurement {
    pub fn new(
        db: DatabaseConnection,
        inventory: Arc<dyn InventoryService>,
        ledger: Arc<dyn Ledger>,
    ) -> Self {
        Self { db, inventory, ledger }
    }
}

#[async_trait::async_trait]
impl ProcurementService for SeaOrmProcurement {
    async fn create_vendor(
        &self,
        tenant: TenantScope,
        name: String,
        email: Option<String>,
        currency: String,
    ) -> ApiResult<VendorView> {
        let now = Utc::now();
        let txn = crate::platform::db::begin(&self.db).await?;
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
        .exec_with_returning(&txn)
        .await?;
        let data = json!({"id": model.id, "name": model.name, "currency": model.currency});
        events::publish(&txn, tenant.id(), &super::VENDOR_CREATED, data).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(model.into())
    }

    async fn list_vendors(
        &self,
        tenant: TenantScope,
        filter: VendorFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<VendorView>> {
        let condition = Condition::all()
            .add_option(filter.active.map(|a| vendor::Column::Active.eq(a)))
            .add_option(filter.q.map(|q| q.on(&[vendor::Column::Name, vendor::Column::Email])))
            .add(filter.created.on(vendor::Column::CreatedAt))
            .add(filter.updated.on(vendor::Column::UpdatedAt));
        let scope = tenant.find::<vendor::Entity>();
        Ok(list.fetch(&self.db, scope, condition, filter.sort).await?.map(Into::into))
    }

    async fn get_vendor(&self, tenant: TenantScope, id: Uuid) -> ApiResult<VendorView> {
        Ok(find_vendor(&self.db, tenant, id).await?.into())
    }

    async fn vendors_by_ids(&self, tenant: TenantScope, ids: Vec<Uuid>) -> ApiResult<Vec<VendorView>> {
        let rows =
            tenant.find::<vendor::Entity>().filter(vendor::Column::Id.is_in(ids)).all(&self.db).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Change a vendor; 412 when `if_match` is not its version.
    async fn update_vendor(
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
        let view: VendorView = find_vendor(&txn, tenant, id).await?.into();
        let data = json!({"id": view.id, "name": view.name, "active": view.active, "version": view.version});
        events::publish(&txn, tenant.id(), &super::VENDOR_UPDATED, data).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(view)
    }

    /// Delete a vendor without purchase orders (409 otherwise).
    async fn delete_vendor(&self, tenant: TenantScope, id: Uuid) -> ApiResult<()> {
        let txn = crate::platform::db::begin(&self.db).await?;
        let vendor = find_vendor(&txn, tenant, id).await?;
        let orders = tenant.find::<po::Entity>().filter(po::Column::VendorId.eq(id)).count(&txn).await?;
        if orders > 0 {
            return Err(ApiError::new(
                Code::Conflict,
                format!("the vendor has {orders} purchase orders; deactivate it"),
            ));
        }
        tenant.delete_many::<vendor::Entity>().filter(vendor::Column::Id.eq(id)).exec(&txn).await?;
        let data = json!({"id": vendor.id, "name": vendor.name});
        events::publish(&txn, tenant.id(), &super::VENDOR_DELETED, data).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(())
    }

    async fn create_order(
        &self,
        tenant: TenantScope,
        actor: Uuid,
        vendor_id: Uuid,
        warehouse_id: Uuid,
        notes: Option<String>,
        lines: Vec<NewLine>,
    ) -> ApiResult<PurchaseOrderView> {
        let unknown = |field: String, what: &str| ApiError::validation(vec![FieldError::new(field, what)]);
        match self.inventory.get_warehouse(tenant, warehouse_id).await {
            Err(err) if err.code == Code::NotFound => {
                return Err(unknown("warehouse_id".into(), "no such warehouse"));
            }
            other => other?,
        };
        let ids: Vec<Uuid> = lines.iter().map(|l| l.product_id).collect();
        let known: std::collections::HashSet<Uuid> =
            self.inventory.products_by_ids(tenant, ids).await?.into_iter().map(|p| p.id).collect();
        let txn = crate::platform::db::begin(&self.db).await?;
        let vendor = find_vendor(&txn, tenant, vendor_id).await?;
        if !vendor.active {
            return Err(ApiError::validation(vec![FieldError::new("vendor_id", "the vendor is inactive")]));
        }
        let mut total: i64 = 0;
        for (i, line) in lines.iter().enumerate() {
            if !known.contains(&line.product_id) {
                return Err(unknown(format!("lines[{i}].product_id"), "no such product"));
            }
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
        events::publish(&txn, tenant.id(), &super::PURCHASE_ORDER_CREATED, data).await?;
        let view = view(&txn, tenant, order).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(view)
    }

    async fn list_orders(
        &self,
        tenant: TenantScope,
        filter: OrderFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<PurchaseOrderView>> {
        let condition = Condition::all()
            .add_option(filter.status.map(|status| po::Column::Status.eq(status)))
            .add_option(filter.vendor_id.map(|vendor| po::Column::VendorId.eq(vendor)))
            .add_option(filter.warehouse_id.map(|warehouse| po::Column::WarehouseId.eq(warehouse)))
            .add(filter.created.on(po::Column::CreatedAt))
            .add(filter.updated.on(po::Column::UpdatedAt));
        let scope = tenant.find::<po::Entity>();
        let Paged { data, meta } = list.fetch(&self.db, scope, condition, filter.sort).await?;
        Ok(Paged { data: views(&self.db, tenant, data).await?, meta })
    }

    async fn get_order(&self, tenant: TenantScope, id: Uuid) -> ApiResult<PurchaseOrderView> {
        view(&self.db, tenant, find_order(&self.db, tenant, id).await?).await
    }

    /// Move the order through its state machine; 409 naming the current
    /// state when the action is not allowed from it.
    async fn transition(
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
    async fn receive(
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
        // Which product came into which warehouse: what stock listeners
        // (channels' pushes) need.
        let items: Vec<_> = receipt
            .iter()
            .map(|r| {
                let product_id = lines.iter().find(|l| l.id == r.line_id).map(|l| l.product_id);
                json!({"line_id": r.line_id, "product_id": product_id, "warehouse_id": order.warehouse_id,
                    "quantity": r.quantity})
            })
            .collect();
        let data =
            json!({"purchase_order_id": id, "lines": items, "value": value, "currency": order.currency});
        events::publish(&txn, tenant.id(), &super::GOODS_RECEIVED, data).await?;
        if complete {
            let data = json!({"id": id, "status": status, "total": order.total});
            events::publish(&txn, tenant.id(), &super::PURCHASE_ORDER_RECEIVED, data).await?;
        }
        let updated = find_order(&txn, tenant, id).await?;
        let view = view(&txn, tenant, updated).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(view)
    }
}
