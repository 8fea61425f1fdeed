//! The saga's steps, written together. Each step of each order is still
//! its own durable job, run by a worker; what the workers running the same
//! step at the same time write goes in one transaction
//! ([`Combiner`]): the orders locked by one query, moved by one `UPDATE`,
//! their history, events, notifications and next steps a multi-row
//! `INSERT` each, their stock held or shipped together, their jobs marked
//! done (and their next steps leased to their workers) in that same
//! transaction. Alone, an order is written at once, as before.
//!
//! Each order is decided on its own: a reservation that does not fit, a
//! declined payment or a shipment that cannot go fails only its order (the
//! compensation is written in the same transaction). Should the
//! transaction fail as a whole, each order of the batch is written alone,
//! so an error is only its own order's.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, sea_query::Expr,
};
use uuid::Uuid;

use super::{
    COMPLETED, ChargeOutcome, FAILED, FULFILLED, PAID, PENDING, RESERVED, notify,
    service::{
        COMPLETE_JOB, FULFIL_JOB, PAY_JOB, SeaOrmOrders, cause, find_order, history, order_data, reference,
        step, void_captured,
    },
};
use crate::{
    error::{ApiError, ApiResult, Code},
    modules::inventory::{Hold, Line},
    platform::{
        combine::{Combiner, each_alone_on_failure},
        db::{begin, insert_all, one_of, savepoint, undo},
        events::{self, EventType},
        jobs::{self, JobError, RunningJob},
        tenancy::TenantScope,
    },
};
use entity::{job, order, order_line, order_payment as payment};

/// The most orders one transaction of a step takes.
const STEP_BATCH: usize = 64;

#[derive(Clone, Copy, Debug)]
pub(super) enum Step {
    Reserve,
    Pay,
    Fulfil,
    Complete,
}

/// One step of one order, to be written with others.
#[derive(Clone)]
pub(super) struct StepRun {
    tenant: TenantScope,
    order_id: Uuid,
    /// The job running it (none when called outside a job run).
    job: Option<RunningJob>,
    /// `pay`: the gateway's answer.
    charged: Option<ChargeOutcome>,
}

/// A step written: its job was completed in the step's transaction, and
/// here is the job leased to its worker to run next, if any.
type Answer = Result<Option<job::Model>, JobError>;

/// What a step decided for one order.
enum Plan {
    /// The order moved on: queue its next step.
    Next(&'static str),
    /// Its saga ended here, or it was no longer at this step: its job is done.
    Done,
    /// Try again later; nothing of it was written.
    Retry(ApiError),
}

/// The combiners of the four steps (one each, so each batch is one step),
/// and of the `pending` payments written before the charges.
pub(super) struct Steps {
    steps: [Combiner<StepRun, Answer>; 4],
    payments: Combiner<payment::ActiveModel, ApiResult<()>>,
}

impl Default for Steps {
    fn default() -> Self {
        Self {
            steps: std::array::from_fn(|_| Combiner::new(STEP_BATCH)),
            payments: Combiner::new(STEP_BATCH),
        }
    }
}

/// The orders of `ids` that are `status`, locked until `txn` ends (on
/// SQLite, `begin` already holds the write lock).
async fn lock(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    ids: Vec<Uuid>,
    status: &str,
) -> ApiResult<Vec<order::Model>> {
    Ok(tenant
        .find::<order::Entity>()
        .filter(one_of(txn.get_database_backend(), order::Column::Id, ids))
        .filter(order::Column::Status.eq(status))
        .order_by_asc(order::Column::Id)
        .lock_exclusive()
        .all(txn)
        .await?)
}

/// Move `orders`, locked and `from`, to `to`: one `UPDATE`, their history
/// rows and their events.
async fn advance(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    orders: &[order::Model],
    from: &str,
    to: &str,
    event: &EventType,
) -> ApiResult<()> {
    if orders.is_empty() {
        return Ok(());
    }
    let now = Utc::now();
    let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
    tenant
        .update_many::<order::Entity>()
        .filter(one_of(txn.get_database_backend(), order::Column::Id, ids))
        .col_expr(order::Column::Status, Expr::value(to))
        .col_expr(order::Column::UpdatedAt, Expr::value(now))
        .exec(txn)
        .await?;
    insert_all(txn, orders.iter().map(|o| history(tenant, o.id, Some(from), to, None, now)).collect())
        .await?;
    let data = orders.iter().map(|o| order_data(o, to, None)).collect();
    events::publish_many(txn, tenant.id(), event, data).await?;
    Ok(())
}

impl SeaOrmOrders {
    /// The first step: hold the stock of every line, all or nothing. Not
    /// enough stock fails the order, naming the SKU.
    pub async fn reserve(&self, tenant: TenantScope, order_id: Uuid) -> Result<(), JobError> {
        self.run_step(Step::Reserve, tenant, order_id, None).await
    }

    /// The second step: charge the total. The payment row is written
    /// first (`pending`), so that a charge sent by a run that stopped
    /// before it recorded the answer is found and settled later. A declined
    /// payment fails the order (releasing its stock); a charge that lands
    /// after the order ended is voided.
    pub async fn pay(&self, tenant: TenantScope, order_id: Uuid) -> Result<(), JobError> {
        let order = find_order(&self.db, tenant, order_id).await?;
        if order.status != RESERVED {
            if [super::CANCELLED, FAILED].contains(&order.status.as_str()) {
                self.settle_unanswered(tenant, &order).await?;
            }
            return Ok(());
        }
        self.open_payment(tenant, &order).await?;
        let outcome = self.charge(&order).await?;
        self.run_step(Step::Pay, tenant, order_id, Some(outcome)).await
    }

    /// The third step: ship the reserved stock. A reservation that is gone
    /// (expired) fails the order and voids the payment.
    pub async fn fulfil(&self, tenant: TenantScope, order_id: Uuid) -> Result<(), JobError> {
        self.run_step(Step::Fulfil, tenant, order_id, None).await
    }

    /// The last step: the order is done.
    pub async fn complete(&self, tenant: TenantScope, order_id: Uuid) -> Result<(), JobError> {
        self.run_step(Step::Complete, tenant, order_id, None).await
    }

    async fn run_step(
        &self,
        step: Step,
        tenant: TenantScope,
        order_id: Uuid,
        charged: Option<ChargeOutcome>,
    ) -> Result<(), JobError> {
        let run = StepRun { tenant, order_id, job: jobs::current(), charged };
        let combiner = &self.steps.steps[step as usize];
        let write = |batch| {
            let written = |batch| self.steps_in_transaction(step, batch);
            each_alone_on_failure(batch, written, |err| Err(err.into()))
        };
        match combiner.run(&tenant.id(), run, write).await? {
            Some(next) => jobs::adopt_next(next),
            None => jobs::completed(),
        }
        Ok(())
    }

    async fn steps_in_transaction(&self, step: Step, batch: Vec<StepRun>) -> ApiResult<Vec<Answer>> {
        let txn = begin(&self.db).await?;
        let mut by_tenant: BTreeMap<Uuid, Vec<&StepRun>> = BTreeMap::new();
        for run in &batch {
            by_tenant.entry(run.tenant.id()).or_default().push(run);
        }
        let mut decided = HashMap::new();
        for (tenant, runs) in by_tenant {
            let tenant = TenantScope::new(tenant);
            let ids: Vec<Uuid> = runs.iter().map(|r| r.order_id).collect();
            decided.extend(match step {
                Step::Reserve => self.reserve_all(&txn, tenant, ids).await?,
                Step::Pay => {
                    let charged = runs.iter().filter_map(|r| Some((r.order_id, r.charged.clone()?)));
                    self.pay_all(&txn, tenant, charged.collect()).await?
                }
                Step::Fulfil => self.fulfil_all(&txn, tenant, ids).await?,
                Step::Complete => self.complete_all(&txn, tenant, ids).await?,
            });
        }
        // An order no longer at this step (or twice in the batch) is done.
        let plans: Vec<Plan> =
            batch.iter().map(|run| decided.remove(&run.order_id).unwrap_or(Plan::Done)).collect();
        let (mut leased, mut queued, mut done) = (Vec::new(), Vec::new(), Vec::new());
        for (run, plan) in batch.iter().zip(&plans) {
            match (plan, &run.job) {
                (Plan::Next(kind), Some(job)) => leased.push((job.clone(), step_job(run, kind))),
                (Plan::Next(kind), None) => queued.push(step_job(run, kind)),
                (Plan::Done, Some(job)) => done.push(job.clone()),
                _ => {}
            }
        }
        jobs::complete_all(&txn, &done).await?;
        jobs::enqueue_many(&txn, queued).await?;
        let mut leased = jobs::enqueue_next_all(&txn, leased).await?.into_iter();
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(plans
            .into_iter()
            .zip(batch)
            .map(|(plan, run)| match plan {
                Plan::Next(_) if run.job.is_some() => Ok(leased.next()),
                Plan::Retry(err) => Err(err.into()),
                _ => Ok(None),
            })
            .collect())
    }

    /// Reserve: the orders still `pending` hold their lines' stock, decided
    /// one by one against levels locked once for all of them.
    async fn reserve_all(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        ids: Vec<Uuid>,
    ) -> ApiResult<HashMap<Uuid, Plan>> {
        let orders = lock(txn, tenant, ids, PENDING).await?;
        let mut lines: HashMap<Uuid, Vec<Line>> = HashMap::new();
        let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
        let rows = tenant
            .find::<order_line::Entity>()
            .filter(one_of(txn.get_database_backend(), order_line::Column::OrderId, ids))
            .order_by_asc(order_line::Column::Position)
            .all(txn)
            .await?;
        let warehouses: HashMap<Uuid, Uuid> = orders.iter().map(|o| (o.id, o.warehouse_id)).collect();
        for l in rows {
            let warehouse_id = warehouses[&l.order_id];
            lines.entry(l.order_id).or_default().push(Line {
                product_id: l.product_id,
                warehouse_id,
                quantity: l.quantity,
            });
        }
        let expires_at = Utc::now() + self.reservation_ttl;
        let holds: Vec<Hold> = orders
            .iter()
            .map(|o| Hold {
                reference: reference(o.id),
                lines: lines.remove(&o.id).unwrap_or_default(),
                expires_at,
                cause: cause(o.id, "order"),
            })
            .collect();
        // Most often every order gets its stock: the orders' writes go
        // first and the stock last, its hot levels locked from their update
        // to the commit only. Should one not, that is undone and each order
        // is decided on its own.
        savepoint(txn, "reserve_orders").await?;
        advance(txn, tenant, &orders, PENDING, RESERVED, &super::ORDER_RESERVED).await?;
        let held = self.inventory.reserve(txn, tenant, holds.clone()).await?;
        if held.iter().all(Result::is_ok) {
            return Ok(orders.iter().map(|o| (o.id, Plan::Next(PAY_JOB))).collect());
        }
        undo(txn, "reserve_orders").await?;
        let held = self.inventory.reserve(txn, tenant, holds).await?;
        let mut plans = HashMap::new();
        let mut reserved = Vec::with_capacity(orders.len());
        for (order, held) in orders.into_iter().zip(held) {
            let plan = match held {
                Ok(_) => {
                    reserved.push(order.clone());
                    Plan::Next(PAY_JOB)
                }
                Err(err) if super::service::final_stock_error(&err) => {
                    self.compensate(txn, tenant, &order, PENDING, FAILED, &err.detail, &super::ORDER_FAILED)
                        .await?;
                    Plan::Done
                }
                Err(err) => Plan::Retry(err),
            };
            plans.insert(order.id, plan);
        }
        advance(txn, tenant, &reserved, PENDING, RESERVED, &super::ORDER_RESERVED).await?;
        Ok(plans)
    }

    /// Pay: record each gateway answer once; the approved orders still
    /// `reserved` are paid, the declined ones fail (compensated), and money
    /// captured for an order that ended meanwhile goes back.
    async fn pay_all(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        charged: Vec<(Uuid, ChargeOutcome)>,
    ) -> ApiResult<HashMap<Uuid, Plan>> {
        for (order_id, outcome) in &charged {
            super::service::record_outcome(txn, tenant, *order_id, outcome).await?;
        }
        let ids = charged.iter().map(|(id, _)| *id).collect();
        let mut orders: HashMap<Uuid, order::Model> =
            lock(txn, tenant, ids, RESERVED).await?.into_iter().map(|o| (o.id, o)).collect();
        let mut plans = HashMap::new();
        let mut paid = Vec::new();
        for (order_id, outcome) in charged {
            let plan = match (orders.remove(&order_id), outcome) {
                (Some(order), ChargeOutcome::Approved { .. }) => {
                    paid.push(order);
                    Plan::Next(FULFIL_JOB)
                }
                (Some(order), ChargeOutcome::Declined { reason, .. }) => {
                    let reason = format!("payment declined: {reason}");
                    self.compensate(txn, tenant, &order, RESERVED, FAILED, &reason, &super::ORDER_FAILED)
                        .await?;
                    Plan::Done
                }
                (None, ChargeOutcome::Approved { .. }) => {
                    // Cancelled (or failed) while the gateway answered:
                    // the money goes back.
                    let current = find_order(txn, tenant, order_id).await?;
                    if [super::CANCELLED, FAILED].contains(&current.status.as_str()) {
                        void_captured(txn, tenant, order_id).await?;
                    }
                    Plan::Done
                }
                (None, ChargeOutcome::Declined { .. }) => Plan::Done,
            };
            plans.insert(order_id, plan);
        }
        advance(txn, tenant, &paid, RESERVED, PAID, &super::ORDER_PAID).await?;
        notify::queue_many(txn, tenant, &self.notifiers, &paid, notify::PAID, None).await?;
        Ok(plans)
    }

    /// Fulfil: ship what each order still `paid` holds (each on its own:
    /// one that cannot ship changes nothing of the others); a reservation
    /// that is gone fails its order.
    async fn fulfil_all(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        ids: Vec<Uuid>,
    ) -> ApiResult<HashMap<Uuid, Plan>> {
        let orders = lock(txn, tenant, ids, PAID).await?;
        let commits: Vec<_> =
            orders.iter().map(|o| (reference(o.id), cause(o.id, "order shipped"))).collect();
        // As in `reserve_all`: the orders' writes first, the stock last.
        savepoint(txn, "fulfil_orders").await?;
        advance(txn, tenant, &orders, PAID, FULFILLED, &super::ORDER_FULFILLED).await?;
        let shipped = self.inventory.commit_all(txn, tenant, commits.clone()).await;
        if shipped.as_ref().is_ok_and(|shipped| shipped.iter().all(Result::is_ok)) {
            return Ok(orders.iter().map(|o| (o.id, Plan::Next(COMPLETE_JOB))).collect());
        }
        undo(txn, "fulfil_orders").await?;
        let shipped = self.inventory.commit_all(txn, tenant, commits).await?;
        let mut plans = HashMap::new();
        let mut fulfilled = Vec::new();
        for (order, shipped) in orders.into_iter().zip(shipped) {
            let plan = match shipped {
                Ok(_) => {
                    fulfilled.push(order.clone());
                    Plan::Next(COMPLETE_JOB)
                }
                Err(err) => {
                    let held = self.inventory.reservation(tenant, &reference(order.id)).await;
                    let gone = match &held {
                        Ok(r) => r.status != "active",
                        Err(e) => e.code == Code::NotFound,
                    };
                    if gone || super::service::final_stock_error(&err) {
                        let reason = format!("could not ship: {}", err.detail);
                        self.compensate(txn, tenant, &order, PAID, FAILED, &reason, &super::ORDER_FAILED)
                            .await?;
                        Plan::Done
                    } else {
                        Plan::Retry(err)
                    }
                }
            };
            plans.insert(order.id, plan);
        }
        advance(txn, tenant, &fulfilled, PAID, FULFILLED, &super::ORDER_FULFILLED).await?;
        Ok(plans)
    }

    /// Complete: the orders still `fulfilled` are done.
    async fn complete_all(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        ids: Vec<Uuid>,
    ) -> ApiResult<HashMap<Uuid, Plan>> {
        let orders = lock(txn, tenant, ids, FULFILLED).await?;
        advance(txn, tenant, &orders, FULFILLED, COMPLETED, &super::ORDER_COMPLETED).await?;
        notify::queue_many(txn, tenant, &self.notifiers, &orders, notify::COMPLETED, None).await?;
        Ok(orders.iter().map(|o| (o.id, Plan::Done)).collect())
    }

    /// The order's `pending` payment, written before the gateway is asked
    /// (once: a retried step finds it), with those of the orders being
    /// charged at the same time (one `INSERT`, one commit).
    async fn open_payment(&self, tenant: TenantScope, order: &order::Model) -> ApiResult<()> {
        let now = Utc::now();
        let row = payment::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.id()),
            order_id: Set(order.id),
            gateway: Set(self.gateway.name().to_owned()),
            gateway_reference: Set(None),
            idempotency_key: Set(super::service::charge_key(order.id)),
            amount: Set(order.total),
            currency: Set(order.currency.clone()),
            status: Set(super::service::PENDING_PAYMENT.to_owned()),
            failure_reason: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let write = |rows: Vec<payment::ActiveModel>| async move {
            let n = rows.len();
            payment::Entity::insert_many(rows)
                .on_conflict_do_nothing_on([payment::Column::TenantId, payment::Column::IdempotencyKey])
                .exec_without_returning(&self.db)
                .await?;
            Ok((0..n).map(|_| Ok(())).collect())
        };
        self.steps.payments.run(&tenant.id(), row, |batch| each_alone_on_failure(batch, write, Err)).await
    }
}

fn step_job(run: &StepRun, kind: &'static str) -> jobs::NewJob {
    step(run.tenant, kind, run.order_id)
}
