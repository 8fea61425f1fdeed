//! [`OrderService`] on sea-orm, and the steps of the order saga.
//!
//! Every state change is one conditional UPDATE (`... WHERE status =
//! <from>`), so when two workers (or a worker and a cancel) race for one
//! order exactly one of them moves it; the loser sees no row changed and
//! does nothing. The change, its history row, its event and the next
//! step's job commit in one transaction.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    QueryFilter, QueryOrder,
    sea_query::{Expr, ExprTrait},
};
use serde_json::json;
use uuid::Uuid;

use super::{
    CANCELLABLE, CANCELLED, Charge, ChargeOutcome, CustomerFilter, CustomerView, ImportTo, NewCustomer,
    NewOrder, NewRefund, OrderFilter, OrderLineView, OrderService, OrderView, PENDING, PaymentGateway,
    PaymentView, REFUND_SORTS, REFUNDABLE, Refund, RefundOutcome, RefundView, TransitionView,
    notify::{self, Notifiers},
};
use crate::{
    error::{ApiError, ApiResult, Code, FieldError},
    modules::inventory::{Cause, InventoryService, ProductFilter},
    platform::{
        db::insert_all,
        events::{self, EventType},
        http::{ListRequest, Paged, parse_sort},
        jobs::{self, JobError, NewJob},
        tenancy::TenantScope,
    },
};
use entity::{
    customer, order, order_line, order_payment as payment, order_refund as refund,
    order_transition as transition,
};

pub const RESERVE_JOB: &str = "orders.reserve";
pub const PAY_JOB: &str = "orders.pay";
pub const FULFIL_JOB: &str = "orders.fulfil";
pub const COMPLETE_JOB: &str = "orders.complete";
pub const VOID_JOB: &str = "orders.void_payment";
pub const REFUND_JOB: &str = "orders.refund";
pub const IMPORT_JOB: &str = "orders.import";
pub const SWEEP_JOB: &str = "orders.import_sweep";

/// Payment states.
pub const PENDING_PAYMENT: &str = "pending";
pub const CAPTURED: &str = "captured";
pub const DECLINED: &str = "declined";
pub const VOIDING: &str = "voiding";
pub const VOIDED: &str = "voided";

/// Refund states.
pub const REQUESTED: &str = "requested";
pub const PROCESSED: &str = "processed";
pub const REFUND_FAILED: &str = "failed";

pub struct SeaOrmOrders {
    pub(super) db: DatabaseConnection,
    pub(super) inventory: Arc<dyn InventoryService>,
    pub(super) gateway: Arc<dyn PaymentGateway>,
    pub(super) reservation_ttl: Duration,
    import_max_bytes: u64,
    pub(super) notifiers: Arc<Notifiers>,
    pub(super) callbacks: super::callbacks::CallbackSettings,
    pub(super) steps: super::steps::Steps,
}

/// The inventory reservation of an order.
pub fn reference(order_id: Uuid) -> String {
    format!("order:{order_id}")
}

pub(super) fn cause(order_id: Uuid, reason: &str) -> Cause {
    Cause { user_id: None, reason: Some(reason.to_owned()), reference: Some(reference(order_id)) }
}

async fn find_customer(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    id: Uuid,
) -> ApiResult<customer::Model> {
    tenant.get::<customer::Entity>(db, id).await?.ok_or_else(|| ApiError::not_found("customer"))
}

pub(super) async fn find_order(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    id: Uuid,
) -> ApiResult<order::Model> {
    tenant.get::<order::Entity>(db, id).await?.ok_or_else(|| ApiError::not_found("order"))
}

/// Orders with their lines, payments and history: one query each for all.
async fn views(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    orders: Vec<order::Model>,
) -> ApiResult<Vec<OrderView>> {
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    let mut lines: HashMap<Uuid, Vec<OrderLineView>> = HashMap::new();
    for l in tenant
        .find::<order_line::Entity>()
        .filter(order_line::Column::OrderId.is_in(ids.clone()))
        .order_by_asc(order_line::Column::Position)
        .all(db)
        .await?
    {
        lines.entry(l.order_id).or_default().push(OrderLineView {
            id: l.id,
            product_id: l.product_id,
            sku: l.sku,
            quantity: l.quantity,
            unit_price: l.unit_price,
            line_total: l.line_total,
        });
    }
    let mut payments: HashMap<Uuid, Vec<PaymentView>> = HashMap::new();
    for p in tenant
        .find::<payment::Entity>()
        .filter(payment::Column::OrderId.is_in(ids.clone()))
        .order_by_asc(payment::Column::Id)
        .all(db)
        .await?
    {
        payments.entry(p.order_id).or_default().push(PaymentView {
            id: p.id,
            gateway: p.gateway,
            gateway_reference: p.gateway_reference,
            amount: p.amount,
            currency: p.currency,
            status: p.status,
            failure_reason: p.failure_reason,
            created_at: p.created_at,
            updated_at: p.updated_at,
        });
    }
    let mut refunds: HashMap<Uuid, Vec<RefundView>> = HashMap::new();
    for r in tenant
        .find::<refund::Entity>()
        .filter(refund::Column::OrderId.is_in(ids.clone()))
        .order_by_asc(refund::Column::CreatedAt)
        .order_by_asc(refund::Column::Id)
        .all(db)
        .await?
    {
        refunds.entry(r.order_id).or_default().push(r.into());
    }
    let mut history: HashMap<Uuid, Vec<TransitionView>> = HashMap::new();
    for t in tenant
        .find::<transition::Entity>()
        .filter(transition::Column::OrderId.is_in(ids))
        .order_by_asc(transition::Column::At)
        .order_by_asc(transition::Column::Id)
        .all(db)
        .await?
    {
        history.entry(t.order_id).or_default().push(TransitionView {
            from: t.from_status,
            to: t.to_status,
            at: t.at,
            reason: t.reason,
        });
    }
    Ok(orders
        .into_iter()
        .map(|o| OrderView {
            lines: lines.remove(&o.id).unwrap_or_default(),
            payments: payments.remove(&o.id).unwrap_or_default(),
            refunds: refunds.remove(&o.id).unwrap_or_default(),
            history: history.remove(&o.id).unwrap_or_default(),
            id: o.id,
            external_order_id: o.external_order_id,
            channel: o.channel,
            customer_id: o.customer_id,
            warehouse_id: o.warehouse_id,
            currency: o.currency,
            total: o.total,
            status: o.status,
            failure_reason: o.failure_reason,
            refunded: o.refunded,
            placed_at: o.placed_at,
            created_at: o.created_at,
            updated_at: o.updated_at,
        })
        .collect())
}

async fn view(db: &impl ConnectionTrait, tenant: TenantScope, order: order::Model) -> ApiResult<OrderView> {
    let mut views = views(db, tenant, vec![order]).await?;
    Ok(views.remove(0))
}

/// A row of an order's history: its move from `from` (none when it was
/// placed) to `to`.
pub(super) fn history(
    tenant: TenantScope,
    order_id: Uuid,
    from: Option<&str>,
    to: &str,
    reason: Option<&str>,
    at: DateTime<Utc>,
) -> transition::ActiveModel {
    transition::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant.id()),
        order_id: Set(order_id),
        from_status: Set(from.map(str::to_owned)),
        to_status: Set(to.to_owned()),
        reason: Set(reason.map(str::to_owned)),
        at: Set(at),
    }
}

/// The data of an order's event, as it is now `status` (for `reason`).
pub(super) fn order_data(order: &order::Model, status: &str, reason: Option<&str>) -> serde_json::Value {
    let mut data = json!({"id": order.id, "external_order_id": order.external_order_id,
        "customer_id": order.customer_id, "status": status, "total": order.total, "currency": order.currency});
    if let Some(reason) = reason {
        data["reason"] = json!(reason);
    }
    data
}

/// Move `order` from `from` to `to` if it still is `from`, with its
/// history row and event; `false` (nothing written) when it moved on.
pub(super) async fn transition(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    order: &order::Model,
    from: &str,
    to: &str,
    reason: Option<&str>,
    event: &EventType,
) -> ApiResult<bool> {
    let mut update = tenant
        .update_many::<order::Entity>()
        .filter(order::Column::Id.eq(order.id))
        .filter(order::Column::Status.eq(from))
        .col_expr(order::Column::Status, Expr::value(to))
        .col_expr(order::Column::UpdatedAt, Expr::value(Utc::now()));
    if let Some(reason) = reason {
        update = update.col_expr(order::Column::FailureReason, Expr::value(reason));
    }
    if update.exec(txn).await?.rows_affected == 0 {
        return Ok(false);
    }
    let row = history(tenant, order.id, Some(from), to, reason, Utc::now());
    transition::Entity::insert(row).exec_without_returning(txn).await?;
    events::publish(txn, tenant.id(), event, order_data(order, to, reason)).await?;
    Ok(true)
}

/// An order ready to be written: checked, its lines' products resolved
/// (id and SKU, in line order) and its totals computed.
#[derive(Clone)]
pub(super) struct Priced {
    pub new: NewOrder,
    products: Vec<(Uuid, String)>,
    line_totals: Vec<i64>,
    total: i64,
}

impl Priced {
    /// Price `new`; a total beyond the 64-bit range is refused, naming the line.
    pub fn new(new: NewOrder, products: Vec<(Uuid, String)>) -> ApiResult<Self> {
        let mut line_totals = Vec::with_capacity(new.lines.len());
        let mut total: i64 = 0;
        for (i, line) in new.lines.iter().enumerate() {
            let line_total = line.quantity.checked_mul(line.unit_price);
            total = line_total.and_then(|t| total.checked_add(t)).ok_or_else(|| {
                ApiError::validation(vec![FieldError::new(format!("lines[{i}]"), "the amount is too large")])
            })?;
            line_totals.push(line_total.unwrap_or_default());
        }
        Ok(Self { new, products, line_totals, total })
    }
}

/// Write orders as placed (`pending`), each with its lines, its history
/// row, `order.created`, its `placed` notifications (with `receipts`) and
/// its saga's first step: one multi-row `INSERT` per table for all of them,
/// in the caller's transaction. A taken `external_order_id` is a `Conflict`.
pub(super) async fn insert_orders(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    receipts: Option<&Notifiers>,
    priced: Vec<Priced>,
) -> ApiResult<Vec<order::Model>> {
    let now = Utc::now();
    let mut orders = Vec::with_capacity(priced.len());
    let mut lines = Vec::new();
    for p in priced {
        let order = order::Model {
            id: Uuid::now_v7(),
            tenant_id: tenant.id(),
            external_order_id: p.new.external_order_id,
            channel: p.new.channel,
            customer_id: p.new.customer_id,
            warehouse_id: p.new.warehouse_id,
            currency: p.new.currency,
            total: p.total,
            status: PENDING.to_owned(),
            failure_reason: None,
            refunded: 0,
            placed_at: p.new.placed_at,
            created_at: now,
            updated_at: now,
        };
        for (position, ((line, (product_id, sku)), line_total)) in
            p.new.lines.iter().zip(p.products).zip(p.line_totals).enumerate()
        {
            lines.push(order_line::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant_id: Set(tenant.id()),
                order_id: Set(order.id),
                position: Set(i32::try_from(position).unwrap_or(i32::MAX)),
                product_id: Set(product_id),
                sku: Set(sku),
                quantity: Set(line.quantity),
                unit_price: Set(line.unit_price),
                line_total: Set(line_total),
            });
        }
        orders.push(order);
    }
    insert_all(txn, orders.iter().cloned().map(order::ActiveModel::from).collect()).await?;
    insert_all(txn, lines).await?;
    insert_all(txn, orders.iter().map(|o| history(tenant, o.id, None, PENDING, None, now)).collect()).await?;
    let created = orders.iter().map(|o| order_data(o, PENDING, None));
    events::publish_many(txn, tenant.id(), &super::ORDER_CREATED, created.collect()).await?;
    if let Some(notifiers) = receipts {
        notify::queue_many(txn, tenant, notifiers, &orders, notify::PLACED, None).await?;
    }
    let steps = orders.iter().map(|o| step(tenant, RESERVE_JOB, o.id));
    jobs::enqueue_many(txn, steps.collect()).await?;
    Ok(orders)
}

/// A saga step runs at priority 7, ahead of the dispatch of the order's
/// events (6, `order.paid` 7) and its notifications (4) in the default
/// lane: under load those wait, the orders do not.
pub(super) fn step(tenant: TenantScope, kind: &'static str, order_id: Uuid) -> NewJob {
    NewJob::new(kind, json!({"order_id": order_id})).tenant(tenant.id()).priority(7)
}

/// Queue the void of every captured payment of an order (compensation).
pub(super) async fn void_captured(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    order_id: Uuid,
) -> ApiResult<()> {
    let captured = tenant
        .find::<payment::Entity>()
        .filter(payment::Column::OrderId.eq(order_id))
        .filter(payment::Column::Status.eq(CAPTURED))
        .all(txn)
        .await?;
    for p in captured {
        let claimed = tenant
            .update_many::<payment::Entity>()
            .filter(payment::Column::Id.eq(p.id))
            .filter(payment::Column::Status.eq(CAPTURED))
            .col_expr(payment::Column::Status, Expr::value(VOIDING))
            .col_expr(payment::Column::UpdatedAt, Expr::value(Utc::now()))
            .exec(txn)
            .await?;
        if claimed.rows_affected > 0 {
            let job = NewJob::new(VOID_JOB, json!({"payment_id": p.id})).tenant(tenant.id()).priority(7);
            jobs::enqueue(txn, job).await?;
        }
    }
    Ok(())
}

/// The idempotency key of an order's charge.
pub(super) fn charge_key(order_id: Uuid) -> String {
    format!("order:{order_id}:charge")
}

/// The gateway's answer on the order's `pending` payment (once: a payment
/// answered already stays as it is).
pub(super) async fn record_outcome(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    order_id: Uuid,
    outcome: &ChargeOutcome,
) -> ApiResult<()> {
    let (reference, status, reason) = match outcome {
        ChargeOutcome::Approved { reference } => (reference, CAPTURED, None),
        ChargeOutcome::Declined { reference, reason } => (reference, DECLINED, Some(reason.clone())),
    };
    tenant
        .update_many::<payment::Entity>()
        .filter(payment::Column::IdempotencyKey.eq(charge_key(order_id)))
        .filter(payment::Column::Status.eq(PENDING_PAYMENT))
        .col_expr(payment::Column::Status, Expr::value(status))
        .col_expr(payment::Column::GatewayReference, Expr::value(reference.clone()))
        .col_expr(payment::Column::FailureReason, Expr::value(reason))
        .col_expr(payment::Column::UpdatedAt, Expr::value(Utc::now()))
        .exec(txn)
        .await?;
    Ok(())
}

/// Whether an inventory error ends the order rather than being retried.
pub(super) fn final_stock_error(err: &ApiError) -> bool {
    matches!(
        err.code,
        Code::InsufficientStock | Code::StockLimitExceeded | Code::NotFound | Code::ValidationFailed
    )
}

/// The gateway idempotency key of a refund: fixed by the refund's id, so
/// a retried call is the same refund.
fn refund_key(refund_id: Uuid) -> String {
    format!("refund:{refund_id}")
}

/// The event of a refund; `refunded` is its order's refunded amount after it.
pub(super) async fn publish_refund(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    r: &refund::Model,
    event: &EventType,
) -> ApiResult<()> {
    let order = find_order(txn, tenant, r.order_id).await?;
    let mut data = json!({"id": r.id, "order_id": r.order_id, "amount": r.amount, "currency": r.currency,
        "status": r.status, "reason": r.reason, "refunded": order.refunded});
    if let Some(reason) = &r.failure_reason {
        data["failure_reason"] = json!(reason);
    }
    events::publish(txn, tenant.id(), event, data).await?;
    Ok(())
}

/// A refund asked for again with its idempotency key: the same refund, or
/// 422 when the key was used for another one.
fn replayed(found: refund::Model, new: &NewRefund) -> ApiResult<(RefundView, bool)> {
    if found.amount == new.amount && found.reason == new.reason {
        Ok((found.into(), false))
    } else {
        Err(ApiError::new(
            Code::IdempotencyConflict,
            "this idempotency key was used for another refund of this order; use a new key",
        ))
    }
}

impl SeaOrmOrders {
    pub fn new(
        db: DatabaseConnection,
        inventory: Arc<dyn InventoryService>,
        gateway: Arc<dyn PaymentGateway>,
        reservation_ttl: Duration,
    ) -> Self {
        Self {
            db,
            inventory,
            gateway,
            reservation_ttl,
            import_max_bytes: 100 * 1024 * 1024,
            notifiers: Arc::default(),
            callbacks: Default::default(),
            steps: Default::default(),
        }
    }

    /// How Stripe's callbacks are verified.
    pub fn with_callbacks(mut self, callbacks: super::callbacks::CallbackSettings) -> Self {
        self.callbacks = callbacks;
        self
    }

    /// The channels order notifications go out on.
    pub fn with_notifiers(mut self, notifiers: Notifiers) -> Self {
        self.notifiers = Arc::new(notifiers);
        self
    }

    /// Queue the notifications of `kind` about `order` in `txn`.
    async fn notify(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        order: &order::Model,
        kind: &str,
        detail: Option<&str>,
    ) -> ApiResult<()> {
        notify::queue(txn, tenant, &self.notifiers, order, kind, detail).await
    }

    /// The largest upload [`OrderService::upload_import`] stores.
    pub fn with_import_max_bytes(mut self, max: u64) -> Self {
        self.import_max_bytes = max;
        self
    }

    /// The product of each line, by id or by SKU; 422 naming the first
    /// line whose product is unknown or inactive.
    async fn resolve(&self, tenant: TenantScope, new: &NewOrder) -> ApiResult<Vec<(Uuid, String)>> {
        let ids: Vec<Uuid> = new.lines.iter().filter_map(|l| l.product_id).collect();
        let by_id: HashMap<Uuid, (Uuid, String, bool)> = self
            .inventory
            .products_by_ids(tenant, ids)
            .await?
            .into_iter()
            .map(|p| (p.id, (p.id, p.sku, p.active)))
            .collect();
        let mut by_sku: HashMap<String, (Uuid, String, bool)> = HashMap::new();
        let skus: HashSet<&String> = new.lines.iter().filter_map(|l| l.sku.as_ref()).collect();
        for sku in skus {
            let filter = ProductFilter::by_sku(sku)?;
            let list = ListRequest::new(Some(1), &[], None, None)?;
            if let Some(p) = self.inventory.list_products(tenant, filter, &list).await?.data.pop() {
                by_sku.insert(sku.clone(), (p.id, p.sku, p.active));
            }
        }
        let mut resolved = Vec::with_capacity(new.lines.len());
        for (i, line) in new.lines.iter().enumerate() {
            let (field, found) = match (&line.product_id, &line.sku) {
                (Some(id), _) => ("product_id", by_id.get(id).cloned()),
                (None, Some(sku)) => ("sku", by_sku.get(sku).cloned()),
                (None, None) => ("product_id", None),
            };
            let invalid = |message: &str| {
                ApiError::validation(vec![FieldError::new(format!("lines[{i}].{field}"), message)])
            };
            match found {
                None => return Err(invalid("no such product")),
                Some((_, _, false)) => return Err(invalid("the product is inactive")),
                Some((id, sku, true)) => resolved.push((id, sku)),
            }
        }
        Ok(resolved)
    }

    async fn refund_by_key(
        &self,
        tenant: TenantScope,
        order_id: Uuid,
        key: &str,
    ) -> ApiResult<Option<refund::Model>> {
        Ok(tenant
            .find::<refund::Entity>()
            .filter(refund::Column::OrderId.eq(order_id))
            .filter(refund::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await?)
    }

    /// A refund's job: ask the gateway (with the refund's fixed key) and
    /// record its answer once. A failed refund gives its amount back to
    /// what may be refunded.
    pub async fn process_refund(&self, tenant: TenantScope, refund_id: Uuid) -> ApiResult<refund::Model> {
        let find = |db: DatabaseConnection| async move {
            tenant.get::<refund::Entity>(&db, refund_id).await?.ok_or_else(|| ApiError::not_found("refund"))
        };
        let r = find(self.db.clone()).await?;
        if r.status != REQUESTED {
            return Ok(r);
        }
        let p = tenant
            .get::<payment::Entity>(&self.db, r.payment_id)
            .await?
            .ok_or_else(|| ApiError::not_found("payment"))?;
        let outcome = match (&p.status[..], &p.gateway_reference) {
            (CAPTURED, Some(reference)) => {
                let call = Refund {
                    idempotency_key: refund_key(r.id),
                    charge_reference: reference.clone(),
                    amount: r.amount,
                    currency: r.currency.clone(),
                    reason: r.reason.clone(),
                };
                self.gateway.refund(&call).await.map_err(|e| ApiError::unavailable(anyhow::anyhow!("{e}")))?
            }
            (status, _) => RefundOutcome::Failed { reason: format!("the payment is {status}, not captured") },
        };
        let (status, reference, failure) = match outcome {
            RefundOutcome::Succeeded { reference } => (PROCESSED, Some(reference), None),
            RefundOutcome::Failed { reason } => (REFUND_FAILED, None, Some(reason)),
        };
        let txn = crate::platform::db::begin(&self.db).await?;
        let moved = tenant
            .update_many::<refund::Entity>()
            .filter(refund::Column::Id.eq(r.id))
            .filter(refund::Column::Status.eq(REQUESTED))
            .col_expr(refund::Column::Status, Expr::value(status))
            .col_expr(refund::Column::GatewayReference, Expr::value(reference))
            .col_expr(refund::Column::FailureReason, Expr::value(failure))
            .col_expr(refund::Column::UpdatedAt, Expr::value(Utc::now()))
            .exec(&txn)
            .await?;
        if moved.rows_affected > 0 {
            if status == REFUND_FAILED {
                tenant
                    .update_many::<order::Entity>()
                    .filter(order::Column::Id.eq(r.order_id))
                    .col_expr(order::Column::Refunded, Expr::col(order::Column::Refunded).sub(r.amount))
                    .col_expr(order::Column::UpdatedAt, Expr::value(Utc::now()))
                    .exec(&txn)
                    .await?;
            }
            let updated = tenant
                .get::<refund::Entity>(&txn, r.id)
                .await?
                .ok_or_else(|| ApiError::not_found("refund"))?;
            let event =
                if status == PROCESSED { &super::ORDER_REFUNDED } else { &super::ORDER_REFUND_FAILED };
            publish_refund(&txn, tenant, &updated, event).await?;
            if status == PROCESSED {
                let order = find_order(&txn, tenant, r.order_id).await?;
                let amount = notify::money(r.amount, &r.currency);
                self.notify(&txn, tenant, &order, notify::REFUNDED, Some(&amount)).await?;
            }
        }
        sea_orm::TransactionSession::commit(txn).await?;
        find(self.db.clone()).await
    }

    /// Charge the order's total, with its fixed idempotency key: a second
    /// call is the same charge, answered the same.
    pub(super) async fn charge(&self, order: &order::Model) -> Result<ChargeOutcome, JobError> {
        let name = order.external_order_id.clone().unwrap_or_else(|| order.id.to_string());
        let charge = Charge {
            idempotency_key: charge_key(order.id),
            amount: order.total,
            currency: order.currency.clone(),
            description: format!("order {name}"),
        };
        self.gateway.charge(&charge).await.map_err(JobError::retry)
    }

    /// An order that ended while its payment was still unanswered: ask the
    /// gateway again (the same key, so nothing is charged twice), record
    /// the answer and give captured money back.
    pub(super) async fn settle_unanswered(
        &self,
        tenant: TenantScope,
        order: &order::Model,
    ) -> Result<(), JobError> {
        let unanswered = tenant
            .find::<payment::Entity>()
            .filter(payment::Column::OrderId.eq(order.id))
            .filter(payment::Column::Status.eq(PENDING_PAYMENT))
            .one(&self.db)
            .await?;
        if unanswered.is_none() {
            return Ok(());
        }
        let outcome = self.charge(order).await?;
        let txn = crate::platform::db::begin(&self.db).await?;
        record_outcome(&txn, tenant, order.id, &outcome).await?;
        void_captured(&txn, tenant, order.id).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(())
    }

    /// Give a payment queued for voiding back through the gateway.
    pub async fn void_payment(&self, tenant: TenantScope, payment_id: Uuid) -> Result<(), JobError> {
        let Some(p) = tenant.get::<payment::Entity>(&self.db, payment_id).await? else {
            return Ok(());
        };
        if p.status != VOIDING {
            return Ok(());
        }
        let Some(reference) = &p.gateway_reference else {
            return Err(JobError::Fail("a payment without a gateway reference cannot be voided".to_owned()));
        };
        let key = format!("{}:void", p.idempotency_key);
        self.gateway.void(reference, &key).await.map_err(JobError::retry)?;
        tenant
            .update_many::<payment::Entity>()
            .filter(payment::Column::Id.eq(payment_id))
            .filter(payment::Column::Status.eq(VOIDING))
            .col_expr(payment::Column::Status, Expr::value(VOIDED))
            .col_expr(payment::Column::UpdatedAt, Expr::value(Utc::now()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Move the order from `from` to `to` (failed or cancelled) and undo
    /// what its saga did: release its reservation, queue the void of its
    /// payments. `false`, nothing written, when it was no longer `from`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn compensate(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        order: &order::Model,
        from: &str,
        to: &str,
        reason: &str,
        event: &EventType,
    ) -> ApiResult<bool> {
        if !transition(txn, tenant, order, from, to, Some(reason), event).await? {
            return Ok(false);
        }
        let kind = if to == CANCELLED { notify::CANCELLED } else { notify::FAILED_ORDER };
        self.notify(txn, tenant, order, kind, Some(reason)).await?;
        match self.inventory.release(txn, tenant, &reference(order.id), cause(order.id, reason)).await {
            Ok(_) => {}
            Err(err) if err.code == Code::NotFound => {} // nothing was reserved
            Err(err) => return Err(err),
        }
        void_captured(txn, tenant, order.id).await?;
        Ok(true)
    }
}

#[async_trait::async_trait]
impl OrderService for SeaOrmOrders {
    async fn create_customer(&self, tenant: TenantScope, new: NewCustomer) -> ApiResult<CustomerView> {
        let now = Utc::now();
        let external = new.external_id.clone();
        let model = customer::Entity::insert(customer::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.id()),
            external_id: Set(new.external_id),
            email: Set(new.email),
            name: Set(new.name),
            notify_email: Set(new.notifications.email),
            notify_webhook: Set(new.notifications.webhook),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .exec_with_returning(&self.db)
        .await
        .map_err(|e| match ApiError::from(e) {
            err if err.code == Code::Conflict => ApiError::new(
                Code::Conflict,
                format!("a customer with external_id `{}` exists already", external.unwrap_or_default()),
            ),
            err => err,
        })?;
        Ok(model.into())
    }

    async fn list_customers(
        &self,
        tenant: TenantScope,
        filter: CustomerFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<CustomerView>> {
        let condition = Condition::all().add_option(filter.email.map(|e| customer::Column::Email.eq(e)));
        let scope = tenant.find::<customer::Entity>();
        Ok(list.fetch(&self.db, scope, condition, filter.sort).await?.map(Into::into))
    }

    async fn get_customer(&self, tenant: TenantScope, id: Uuid) -> ApiResult<CustomerView> {
        Ok(find_customer(&self.db, tenant, id).await?.into())
    }

    async fn customers_by_ids(&self, tenant: TenantScope, ids: Vec<Uuid>) -> ApiResult<Vec<CustomerView>> {
        let rows =
            tenant.find::<customer::Entity>().filter(customer::Column::Id.is_in(ids)).all(&self.db).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn place_order(&self, tenant: TenantScope, new: NewOrder) -> ApiResult<OrderView> {
        let invalid =
            |field: &str, message: &str| ApiError::validation(vec![FieldError::new(field, message)]);
        match self.inventory.get_warehouse(tenant, new.warehouse_id).await {
            Err(err) if err.code == Code::NotFound => {
                return Err(invalid("warehouse_id", "no such warehouse"));
            }
            other => other?,
        };
        let products = self.resolve(tenant, &new).await?;
        let priced = Priced::new(new, products)?;
        let txn = crate::platform::db::begin(&self.db).await?;
        match find_customer(&txn, tenant, priced.new.customer_id).await {
            Err(err) if err.code == Code::NotFound => return Err(invalid("customer_id", "no such customer")),
            other => other?,
        };
        let external = priced.new.external_order_id.clone();
        let order = insert_orders(&txn, tenant, Some(&self.notifiers), vec![priced]).await.map_err(
            |err| match err {
                err if err.code == Code::Conflict => ApiError::new(
                    Code::Conflict,
                    format!(
                        "an order with external_order_id `{}` exists already",
                        external.unwrap_or_default()
                    ),
                ),
                err => err,
            },
        )?;
        let order = order
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("no order written")))?;
        let view = view(&txn, tenant, order).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(view)
    }

    async fn list_orders(
        &self,
        tenant: TenantScope,
        filter: OrderFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<OrderView>> {
        let condition = Condition::all()
            .add_option(filter.status.map(|s| order::Column::Status.eq(s)))
            .add_option(filter.customer_id.map(|c| order::Column::CustomerId.eq(c)))
            .add_option(filter.external_order_id.map(|e| order::Column::ExternalOrderId.eq(e)))
            .add_option(filter.created_after.map(|t| order::Column::CreatedAt.gte(t)))
            .add_option(filter.created_before.map(|t| order::Column::CreatedAt.lt(t)));
        let scope = tenant.find::<order::Entity>();
        let Paged { data, meta } = list.fetch(&self.db, scope, condition, filter.sort).await?;
        Ok(Paged { data: views(&self.db, tenant, data).await?, meta })
    }

    async fn get_order(&self, tenant: TenantScope, id: Uuid) -> ApiResult<OrderView> {
        view(&self.db, tenant, find_order(&self.db, tenant, id).await?).await
    }

    async fn cancel_order(
        &self,
        tenant: TenantScope,
        id: Uuid,
        reason: Option<String>,
    ) -> ApiResult<OrderView> {
        let reason = reason.unwrap_or_else(|| "cancelled".to_owned());
        // A saga step may move the order between the read and the
        // conditional update: read again, a few times.
        for _ in 0..5 {
            let txn = crate::platform::db::begin(&self.db).await?;
            let order = find_order(&txn, tenant, id).await?;
            if !CANCELLABLE.contains(&order.status.as_str()) {
                return Err(ApiError::new(
                    Code::Conflict,
                    format!("cannot cancel an order that is {}", order.status),
                ));
            }
            if order.refunded > 0 {
                return Err(ApiError::new(
                    Code::Conflict,
                    "cannot cancel an order with refunds; refund the rest of it instead",
                ));
            }
            let from = order.status.clone();
            if self
                .compensate(&txn, tenant, &order, &from, CANCELLED, &reason, &super::ORDER_CANCELLED)
                .await?
            {
                let updated = find_order(&txn, tenant, id).await?;
                let view = view(&txn, tenant, updated).await?;
                sea_orm::TransactionSession::commit(txn).await?;
                return Ok(view);
            }
        }
        Err(ApiError::new(Code::Conflict, "the order changed meanwhile; retry"))
    }

    async fn refund_order(
        &self,
        tenant: TenantScope,
        order_id: Uuid,
        new: NewRefund,
    ) -> ApiResult<(RefundView, bool)> {
        if let Some(found) = self.refund_by_key(tenant, order_id, &new.idempotency_key).await? {
            return replayed(found, &new);
        }
        let txn = crate::platform::db::begin(&self.db).await?;
        let order = find_order(&txn, tenant, order_id).await?;
        if !REFUNDABLE.contains(&order.status.as_str()) {
            return Err(ApiError::new(
                Code::Conflict,
                format!("cannot refund an order that is {}: it has no captured payment", order.status),
            ));
        }
        let captured = tenant
            .find::<payment::Entity>()
            .filter(payment::Column::OrderId.eq(order_id))
            .filter(payment::Column::Status.eq(CAPTURED))
            .one(&txn)
            .await?
            .ok_or_else(|| ApiError::new(Code::Conflict, "the order has no captured payment to refund"))?;
        let exceeded = |refunded: i64| {
            ApiError::new(
                Code::RefundAmountExceeded,
                format!(
                    "at most {} {} may still be refunded",
                    std::cmp::max(captured.amount - refunded, 0),
                    order.currency
                ),
            )
        };
        if new.amount > captured.amount - order.refunded {
            return Err(exceeded(order.refunded));
        }
        // One conditional update: refunds racing for one order never give
        // back more than was captured.
        let claimed = tenant
            .update_many::<order::Entity>()
            .filter(order::Column::Id.eq(order_id))
            .filter(Expr::col(order::Column::Refunded).add(new.amount).lte(captured.amount))
            .col_expr(order::Column::Refunded, Expr::col(order::Column::Refunded).add(new.amount))
            .col_expr(order::Column::UpdatedAt, Expr::value(Utc::now()))
            .exec(&txn)
            .await?;
        if claimed.rows_affected == 0 {
            let current = find_order(&txn, tenant, order_id).await?;
            return Err(exceeded(current.refunded));
        }
        let now = Utc::now();
        let inserted = refund::Entity::insert(refund::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.id()),
            order_id: Set(order_id),
            payment_id: Set(captured.id),
            idempotency_key: Set(new.idempotency_key.clone()),
            amount: Set(new.amount),
            currency: Set(order.currency.clone()),
            reason: Set(new.reason.clone()),
            status: Set(REQUESTED.to_owned()),
            gateway_reference: Set(None),
            failure_reason: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .exec_with_returning(&txn)
        .await;
        let created = match inserted {
            Ok(created) => created,
            Err(err) => {
                sea_orm::TransactionSession::rollback(txn).await?;
                // The same key, a moment earlier: that refund.
                return match self.refund_by_key(tenant, order_id, &new.idempotency_key).await? {
                    Some(found) => replayed(found, &new),
                    None => Err(err.into()),
                };
            }
        };
        publish_refund(&txn, tenant, &created, &super::ORDER_REFUND_REQUESTED).await?;
        let job = NewJob::new(REFUND_JOB, json!({"refund_id": created.id})).tenant(tenant.id()).priority(6);
        jobs::enqueue(&txn, job).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok((created.into(), true))
    }

    async fn list_refunds(
        &self,
        tenant: TenantScope,
        order_id: Uuid,
        list: &ListRequest,
    ) -> ApiResult<Paged<RefundView>> {
        find_order(&self.db, tenant, order_id).await?;
        let condition = Condition::all().add(refund::Column::OrderId.eq(order_id));
        let sort = parse_sort(None, &REFUND_SORTS)?;
        Ok(list.fetch(&self.db, tenant.find::<refund::Entity>(), condition, sort).await?.map(Into::into))
    }

    async fn settle_refund(&self, tenant: TenantScope, refund_id: Uuid) -> ApiResult<RefundView> {
        Ok(self.process_refund(tenant, refund_id).await?.into())
    }

    async fn upload_import(
        &self,
        tenant: TenantScope,
        to: ImportTo,
        filename: String,
        body: futures_util::stream::BoxStream<'static, ApiResult<actix_web::web::Bytes>>,
    ) -> ApiResult<super::ImportView> {
        let max = self.import_max_bytes;
        self.store_upload(tenant, to, filename, max, body).await?.try_into()
    }

    async fn import_file(
        &self,
        tenant: TenantScope,
        to: ImportTo,
        source: Box<dyn std::io::Read + Send>,
        progress: &mut dyn super::import::Progress,
    ) -> ApiResult<super::import::Tally> {
        match self.inventory.get_warehouse(tenant, to.warehouse_id).await {
            Err(err) if err.code == Code::NotFound => {
                return Err(ApiError::validation(vec![FieldError::new("warehouse_id", "no such warehouse")]));
            }
            other => other?,
        };
        self.import_csv(tenant, to, source, progress).await
    }

    async fn receive_stripe_callback(
        &self,
        tenant_id: Uuid,
        signature: Option<String>,
        body: actix_web::web::Bytes,
    ) -> ApiResult<super::callbacks::CallbackView> {
        self.handle_stripe_callback(tenant_id, signature.as_deref(), &body).await
    }

    async fn list_callbacks(
        &self,
        tenant: TenantScope,
        filter: super::callbacks::CallbackFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<super::callbacks::CallbackView>> {
        super::callbacks::list(&self.db, tenant, filter, list).await
    }

    async fn get_import(&self, tenant: TenantScope, id: Uuid) -> ApiResult<super::ImportView> {
        tenant
            .get::<entity::order_import::Entity>(&self.db, id)
            .await?
            .ok_or_else(|| ApiError::not_found("import"))?
            .try_into()
    }

    async fn list_imports(
        &self,
        tenant: TenantScope,
        list: &ListRequest,
    ) -> ApiResult<Paged<super::ImportView>> {
        let sort = parse_sort(None, &super::import::IMPORT_SORTS)?;
        let scope = tenant.find::<entity::order_import::Entity>();
        let Paged { data, meta } = list.fetch(&self.db, scope, Condition::all(), sort).await?;
        let data = data.into_iter().map(TryInto::try_into).collect::<ApiResult<Vec<_>>>()?;
        Ok(Paged { data, meta })
    }

    async fn list_notifications(
        &self,
        tenant: TenantScope,
        filter: notify::NotificationFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<notify::NotificationView>> {
        notify::list(&self.db, tenant, filter, list).await
    }

    async fn get_notification(&self, tenant: TenantScope, id: Uuid) -> ApiResult<notify::NotificationView> {
        notify::get(&self.db, tenant, id).await
    }

    async fn recent_notifications(
        &self,
        tenant: TenantScope,
        limit: u64,
    ) -> ApiResult<Vec<notify::NotificationView>> {
        notify::recent(&self.db, tenant, limit).await
    }

    async fn notification_stats(
        &self,
        tenant: TenantScope,
        created_after: Option<chrono::DateTime<Utc>>,
        created_before: Option<chrono::DateTime<Utc>>,
    ) -> ApiResult<notify::NotificationStats> {
        notify::stats(&self.db, &self.notifiers, tenant, created_after, created_before).await
    }

    async fn resend_notification(
        &self,
        tenant: TenantScope,
        id: Uuid,
    ) -> ApiResult<notify::NotificationView> {
        notify::resend(&self.db, &self.notifiers, tenant, id).await
    }

    async fn set_notification_preferences(
        &self,
        tenant: TenantScope,
        customer_id: Uuid,
        preferences: super::Notifications,
    ) -> ApiResult<CustomerView> {
        Ok(notify::set_preferences(&self.db, tenant, customer_id, &preferences).await?.into())
    }
}
