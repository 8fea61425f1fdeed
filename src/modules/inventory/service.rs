//! [`InventoryService`] on sea-orm. Every stock change is a conditional
//! `UPDATE` of the stock level (it only applies when the result keeps
//! `0 <= reserved <= on_hand`) plus a ledger row, in the caller's
//! transaction: concurrent reservations can never take more than is there,
//! on SQLite (one writer) as on PostgreSQL (row locks). Reservations made
//! together (`reserve_many`) change each level once by their sum, all
//! levels in one `UPDATE` written last; when one does not fit, they are
//! decided one by one against their levels, locked.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    EntityTrait, FromQueryResult, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Statement,
    TryInsertResult, sea_query::Expr,
};
use serde_json::json;
use uuid::Uuid;

use super::{
    Cause, EXPIRY_JOB, Hold, InventoryService, LevelFilter, Line, MovementFilter, MovementView, NewProduct,
    ProductChanges, ProductFilter, ProductView, REORDER_SCAN_JOB, Recommendation, ReservationView,
    StockLevelView, WarehouseFilter, WarehouseView,
};
use crate::modules::procurement::Vendors;
use crate::platform::{
    combine::{Combiner, each_alone_on_failure},
    db::{one_of, savepoint, undo},
};
use crate::{
    error::{ApiError, ApiResult, Code, FieldError},
    platform::{
        events,
        http::{ListRequest, Paged, changed_meanwhile, check_version},
        jobs::{self, JobError, JobHandler, NewJob},
        state::AppState,
        tenancy::{SystemScope, TenantScope},
    },
};
use entity::{product, reservation, stock_level, stock_movement, warehouse};

pub const ACTIVE: &str = "active";
pub const COMMITTED: &str = "committed";
pub const RELEASED: &str = "released";
pub const EXPIRED: &str = "expired";

pub struct SeaOrmInventory {
    db: DatabaseConnection,
    /// Procurement's vendors, for a product's preferred vendor.
    vendors: Arc<dyn Vendors>,
    /// Reservations made in transactions of their own, written together
    /// when they arrive together ([`InventoryService::reserve_now`]).
    reservations: Combiner<NewReservation, ApiResult<ReservationView>>,
}

/// The most reservations one combined transaction writes.
const RESERVATION_BATCH: usize = 64;

impl SeaOrmInventory {
    pub fn new(db: DatabaseConnection, vendors: Arc<dyn Vendors>) -> Self {
        Self { db, vendors, reservations: Combiner::new(RESERVATION_BATCH) }
    }

    async fn reserve_in_transaction(
        &self,
        batch: Vec<NewReservation>,
    ) -> ApiResult<Vec<ApiResult<ReservationView>>> {
        let txn = crate::platform::db::begin(&self.db).await?;
        let answers = reserve_many(&txn, batch).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(answers)
    }
}

pub(crate) fn product_view(m: product::Model) -> ProductView {
    ProductView {
        id: m.id,
        sku: m.sku,
        name: m.name,
        barcode: m.barcode,
        unit_price: m.unit_price,
        currency: m.currency,
        attributes: m.attributes,
        active: m.active,
        preferred_vendor_id: m.preferred_vendor_id,
        version: m.version,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

fn warehouse_view(m: warehouse::Model) -> WarehouseView {
    WarehouseView { id: m.id, code: m.code, name: m.name, active: m.active, created_at: m.created_at }
}

/// A reservation's lines; a row whose lines do not decode is an error,
/// never an empty reservation.
fn reservation_lines(m: &reservation::Model) -> ApiResult<Vec<Line>> {
    serde_json::from_value(m.lines.clone())
        .map_err(|e| ApiError::internal(anyhow::anyhow!("reservation {} has unreadable lines: {e}", m.id)))
}

fn reservation_view(m: reservation::Model) -> ApiResult<ReservationView> {
    Ok(ReservationView {
        id: m.id,
        lines: reservation_lines(&m)?,
        reference: m.reference,
        status: m.status,
        expires_at: m.expires_at,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

async fn find_product(db: &impl ConnectionTrait, tenant: TenantScope, id: Uuid) -> ApiResult<product::Model> {
    tenant.get::<product::Entity>(db, id).await?.ok_or_else(|| ApiError::not_found("product"))
}

async fn find_warehouse(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    id: Uuid,
) -> ApiResult<warehouse::Model> {
    tenant.get::<warehouse::Entity>(db, id).await?.ok_or_else(|| ApiError::not_found("warehouse"))
}

async fn level_view(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    product: &product::Model,
    warehouse_id: Uuid,
) -> ApiResult<StockLevelView> {
    let level = tenant
        .find::<stock_level::Entity>()
        .filter(stock_level::Column::ProductId.eq(product.id))
        .filter(stock_level::Column::WarehouseId.eq(warehouse_id))
        .one(db)
        .await?
        .ok_or_else(|| ApiError::not_found("stock level"))?;
    Ok(stock_view(level, product.sku.clone()))
}

fn stock_view(level: stock_level::Model, sku: String) -> StockLevelView {
    StockLevelView {
        product_id: level.product_id,
        sku,
        warehouse_id: level.warehouse_id,
        on_hand: level.on_hand,
        reserved: level.reserved,
        available: level.on_hand - level.reserved,
        reorder_point: level.reorder_point,
        reorder_quantity: level.reorder_quantity,
        updated_at: level.updated_at,
        product: None,
    }
}

/// Views of `levels`, with their products' SKUs read in one query.
pub(crate) async fn stock_views(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    levels: Vec<stock_level::Model>,
) -> Result<Vec<StockLevelView>, sea_orm::DbErr> {
    let ids: Vec<Uuid> = levels.iter().map(|l| l.product_id).collect();
    let skus: HashMap<Uuid, String> = tenant
        .find::<product::Entity>()
        .filter(product::Column::Id.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.id, p.sku))
        .collect();
    Ok(levels
        .into_iter()
        .map(|l| {
            let sku = skus.get(&l.product_id).cloned().unwrap_or_default();
            stock_view(l, sku)
        })
        .collect())
}

/// One stock change: the level (created at zero when new) and its ledger
/// row; refused with 409 `insufficient_stock` naming the SKU when it would
/// take more than is available.
#[allow(clippy::too_many_arguments)]
async fn apply(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    product: &product::Model,
    warehouse_id: Uuid,
    kind: &str,
    quantity: i64,
    reserved_delta: i64,
    cause: &Cause,
) -> ApiResult<StockLevelView> {
    for (field, delta) in [("quantity", quantity), ("reserved", reserved_delta)] {
        if delta != 0 {
            super::check_quantity(delta.abs())
                .map_err(|message| ApiError::validation(vec![FieldError::new(field, message)]))?;
        }
    }
    let now = Utc::now();
    // The movement first: the level's row lock is then held only from its
    // update to the commit, which is what bounds a hot SKU's throughput. A
    // refused change rolls the movement back with the rest.
    stock_movement::Entity::insert(stock_movement::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant.id()),
        product_id: Set(product.id),
        warehouse_id: Set(warehouse_id),
        kind: Set(kind.to_owned()),
        quantity: Set(quantity),
        reserved_delta: Set(reserved_delta),
        reason: Set(cause.reason.clone()),
        reference: Set(cause.reference.clone()),
        user_id: Set(cause.user_id),
        created_at: Set(now),
    })
    .exec_without_returning(txn)
    .await?;
    let update = level_update(txn, tenant, &[((product.id, warehouse_id), quantity, reserved_delta)], now);
    let mut updated = stock_level::Model::find_by_statement(update.clone()).one(txn).await?;
    if updated.is_none() {
        // No level yet (the first change of this product here), or the
        // change does not fit: create the level if missing and try again.
        stock_level::Entity::insert(stock_level::ActiveModel {
            tenant_id: Set(tenant.id()),
            product_id: Set(product.id),
            warehouse_id: Set(warehouse_id),
            on_hand: Set(0),
            reserved: Set(0),
            reorder_point: Set(None),
            reorder_quantity: Set(None),
            updated_at: Set(now),
        })
        .on_conflict_do_nothing()
        .exec_without_returning(txn)
        .await?;
        updated = stock_level::Model::find_by_statement(update).one(txn).await?;
    }
    let Some(updated) = updated else {
        let level = level_view(txn, tenant, product, warehouse_id).await?;
        if level.on_hand + quantity > super::MAX_LEVEL {
            return Err(ApiError::new(
                Code::StockLimitExceeded,
                format!(
                    "{} would hold more than {} units in the warehouse (it holds {})",
                    product.sku,
                    super::MAX_LEVEL,
                    level.on_hand
                ),
            ));
        }
        return Err(insufficient(&product.sku));
    };
    let level = stock_view(updated, product.sku.clone());
    announce_low(txn, tenant, &level, quantity - reserved_delta).await?;
    Ok(level)
}

/// The levels of `products` in `warehouses`, locked until `txn` ends, in
/// (product, warehouse) order, as every stock change locks them: two
/// changes of the same levels wait for each other instead of deadlocking.
async fn lock_levels(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    products: Vec<Uuid>,
    warehouses: Vec<Uuid>,
) -> ApiResult<HashMap<(Uuid, Uuid), stock_level::Model>> {
    let backend = txn.get_database_backend();
    Ok(tenant
        .find::<stock_level::Entity>()
        .filter(one_of(backend, stock_level::Column::ProductId, products))
        .filter(one_of(backend, stock_level::Column::WarehouseId, warehouses))
        .order_by_asc(stock_level::Column::ProductId)
        .order_by_asc(stock_level::Column::WarehouseId)
        .lock_exclusive()
        .all(txn)
        .await?
        .into_iter()
        .map(|l| ((l.product_id, l.warehouse_id), l))
        .collect())
}

/// A change of one level: its key (product, warehouse), the quantity on
/// hand and the quantity reserved it adds.
type LevelChange = ((Uuid, Uuid), i64, i64);

/// The conditional `UPDATE` of `changes` (each level once), one statement
/// for all, returning the levels changed: a level is left out when its
/// change would break `0 <= reserved <= on_hand <= MAX_LEVEL`.
fn level_update(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    changes: &[LevelChange],
    now: DateTime<Utc>,
) -> Statement {
    let mut values: Vec<sea_orm::Value> = vec![now.into(), tenant.id().into(), super::MAX_LEVEL.into()];
    let mut rows = Vec::with_capacity(changes.len());
    for ((product_id, warehouse_id), quantity, reserved_delta) in changes {
        let n = values.len();
        rows.push(format!("(${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4));
        values.extend([
            (*product_id).into(),
            (*warehouse_id).into(),
            (*quantity).into(),
            (*reserved_delta).into(),
        ]);
    }
    // The VALUES' columns are column1 (product), column2 (warehouse),
    // column3 (on hand) and column4 (reserved) in both databases.
    let sql = format!(
        "UPDATE stock_levels SET on_hand = on_hand + v.column3, reserved = reserved + v.column4, updated_at = $1 \
         FROM (VALUES {}) AS v \
         WHERE tenant_id = $2 AND product_id = v.column1 AND warehouse_id = v.column2 \
         AND reserved + v.column4 >= 0 AND on_hand + v.column3 >= reserved + v.column4 \
         AND on_hand + v.column3 <= $3 \
         RETURNING tenant_id, product_id, warehouse_id, on_hand, reserved, reorder_point, \
         reorder_quantity, updated_at",
        rows.join(", ")
    );
    Statement::from_sql_and_values(txn.get_database_backend(), sql, values)
}

/// Change levels by `changes` (each level once): locked in order, then one
/// `UPDATE` for all, then each level's low-stock announcement. The key of a
/// level that cannot take its change, if any (the caller then undoes or
/// fails the lot).
async fn change_levels(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    changes: &[LevelChange],
    skus: &HashMap<Uuid, String>,
    now: DateTime<Utc>,
) -> ApiResult<Option<(Uuid, Uuid)>> {
    if changes.is_empty() {
        return Ok(None);
    }
    let products: BTreeSet<Uuid> = changes.iter().map(|((product, _), ..)| *product).collect();
    let warehouses: BTreeSet<Uuid> = changes.iter().map(|((_, warehouse), ..)| *warehouse).collect();
    lock_levels(txn, tenant, products.into_iter().collect(), warehouses.into_iter().collect()).await?;
    let updated: HashMap<(Uuid, Uuid), stock_level::Model> =
        stock_level::Model::find_by_statement(level_update(txn, tenant, changes, now))
            .all(txn)
            .await?
            .into_iter()
            .map(|l| ((l.product_id, l.warehouse_id), l))
            .collect();
    if let Some((key, ..)) = changes.iter().find(|(key, ..)| !updated.contains_key(key)) {
        return Ok(Some(*key));
    }
    for (key, quantity, reserved_delta) in changes {
        let sku = skus.get(&key.0).cloned().unwrap_or_default();
        announce_low(txn, tenant, &stock_view(updated[key].clone(), sku), quantity - reserved_delta).await?;
    }
    Ok(None)
}

/// 409 `insufficient_stock` naming the SKU.
fn insufficient(sku: &str) -> ApiError {
    let mut err = ApiError::new(
        Code::InsufficientStock,
        format!("not enough stock of {sku} in the warehouse for this change"),
    );
    err.errors.push(FieldError::new("sku", sku.to_owned()));
    err
}

/// Announce `level` crossing below its reorder point with a change that
/// moved its available stock by `change` (not every change below it).
async fn announce_low(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    level: &StockLevelView,
    change: i64,
) -> ApiResult<()> {
    if let Some(point) = level.reorder_point {
        let before = level.available - change;
        if level.available < point && before >= point {
            let data = json!({"product_id": level.product_id, "sku": level.sku, "warehouse_id": level.warehouse_id,
                "available": level.available, "reorder_point": point});
            events::publish(txn, tenant.id(), &super::STOCK_LOW, data).await?;
        }
    }
    Ok(())
}

/// Lines in the order their levels are locked: by product, then warehouse,
/// whatever order a caller gave, so two reservations of the same levels in
/// opposite orders wait for each other instead of deadlocking.
fn in_lock_order(lines: &[Line]) -> Vec<&Line> {
    let mut ordered: Vec<&Line> = lines.iter().collect();
    ordered.sort_by_key(|l| (l.product_id, l.warehouse_id));
    ordered
}

fn positive(quantity: i64) -> ApiResult<()> {
    super::check_quantity(quantity)
        .map_err(|message| ApiError::validation(vec![FieldError::new("quantity", message)]))
}

/// A reservation to make (see [`reserve_many`]).
#[derive(Clone)]
struct NewReservation {
    tenant: TenantScope,
    reference: String,
    lines: Vec<Line>,
    expires_at: DateTime<Utc>,
    cause: Cause,
}

/// The one answer of a batch of one.
fn only(mut answers: Vec<ApiResult<ReservationView>>) -> ApiResult<ReservationView> {
    answers.pop().unwrap_or_else(|| Err(ApiError::internal(anyhow::anyhow!("a reservation got no answer"))))
}

/// Make `requests` in `txn`, each all or nothing on its own and idempotent
/// per reference, as if one after the other in their order: one answer
/// each, in order. A reference repeated in the batch is taken in a later
/// round, where it finds the first one's reservation. The `Err` is the
/// transaction's (it must roll back), never one reservation's.
async fn reserve_many(
    txn: &DatabaseTransaction,
    requests: Vec<NewReservation>,
) -> ApiResult<Vec<ApiResult<ReservationView>>> {
    let mut answers: Vec<Option<ApiResult<ReservationView>>> =
        std::iter::repeat_with(|| None).take(requests.len()).collect();
    let mut pending: Vec<(usize, NewReservation)> = requests.into_iter().enumerate().collect();
    while !pending.is_empty() {
        let mut seen = HashSet::new();
        let (round, later): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|(_, r)| seen.insert((r.tenant.id(), r.reference.clone())));
        // Tenant by tenant, in one order: with levels locked in one order
        // within each, two batches never lock each other's rows crosswise.
        let mut by_tenant: BTreeMap<Uuid, Vec<(usize, NewReservation)>> = Default::default();
        for (i, r) in round {
            by_tenant.entry(r.tenant.id()).or_default().push((i, r));
        }
        for (tenant, group) in by_tenant {
            reserve_round(txn, TenantScope::new(tenant), group, &mut answers).await?;
        }
        pending = later;
    }
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(ApiError::internal(anyhow::anyhow!("a reservation got no answer")))))
        .collect())
}

/// One round of [`reserve_many`]: one tenant, each reference once. The
/// reservations are inserted first (a concurrent first reservation of the
/// same reference waits on the unique index until the other transaction
/// ends, then finds its row); then the levels are locked, in order, and
/// the reservations decided one by one against them; the losers' rows go,
/// and the winners' jobs, events, movements and level updates are written
/// a statement each for the whole round.
async fn reserve_round(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    group: Vec<(usize, NewReservation)>,
    answers: &mut [Option<ApiResult<ReservationView>>],
) -> ApiResult<()> {
    let backend = txn.get_database_backend();
    let now = Utc::now();
    let mut fresh = Vec::with_capacity(group.len());
    for (i, r) in group {
        match r.lines.iter().try_for_each(|l| positive(l.quantity)) {
            Err(err) => answers[i] = Some(Err(err)),
            Ok(()) => {
                let model = reservation::Model {
                    id: Uuid::now_v7(),
                    tenant_id: tenant.id(),
                    reference: r.reference.clone(),
                    status: ACTIVE.to_owned(),
                    lines: json!(r.lines),
                    expires_at: r.expires_at,
                    created_at: now,
                    updated_at: now,
                };
                fresh.push((i, r, model));
            }
        }
    }
    if fresh.is_empty() {
        return Ok(());
    }
    let inserted =
        reservation::Entity::insert_many(fresh.iter().map(|(_, _, m)| m.clone().into_active_model()))
            .on_conflict_do_nothing_on([reservation::Column::TenantId, reservation::Column::Reference])
            .exec_without_returning(txn)
            .await?;
    if !matches!(inserted, TryInsertResult::Inserted(n) if n as usize == fresh.len()) {
        // Some references are taken: answer those from what holds them.
        let references = fresh.iter().map(|(_, r, _)| r.reference.clone()).collect();
        let existing: HashMap<String, reservation::Model> = tenant
            .find::<reservation::Entity>()
            .filter(one_of(backend, reservation::Column::Reference, references))
            .all(txn)
            .await?
            .into_iter()
            .map(|m| (m.reference.clone(), m))
            .collect();
        fresh.retain(|(i, r, model)| match existing.get(&r.reference) {
            Some(found) if found.id == model.id => true,
            found => {
                answers[*i] = Some(again(&r.reference, &r.lines, found.cloned()));
                false
            }
        });
    }
    let mut product_ids: Vec<Uuid> =
        fresh.iter().flat_map(|(_, r, _)| r.lines.iter().map(|l| l.product_id)).collect();
    product_ids.sort_unstable();
    product_ids.dedup();
    let mut warehouse_ids: Vec<Uuid> =
        fresh.iter().flat_map(|(_, r, _)| r.lines.iter().map(|l| l.warehouse_id)).collect();
    warehouse_ids.sort_unstable();
    warehouse_ids.dedup();
    let skus: HashMap<Uuid, String> = tenant
        .find::<product::Entity>()
        .select_only()
        .columns([product::Column::Id, product::Column::Sku])
        .filter(one_of(backend, product::Column::Id, product_ids.clone()))
        .into_tuple::<(Uuid, String)>()
        .all(txn)
        .await?
        .into_iter()
        .collect();
    let warehouses: HashSet<Uuid> = tenant
        .find::<warehouse::Entity>()
        .select_only()
        .column(warehouse::Column::Id)
        .filter(one_of(backend, warehouse::Column::Id, warehouse_ids.clone()))
        .into_tuple::<Uuid>()
        .all(txn)
        .await?
        .into_iter()
        .collect();
    // Most often every reservation fits: what they write goes first and
    // their levels last, locked from their update to the commit only (how
    // long a hot SKU's level stays locked bounds its throughput). Should
    // one not fit, that is undone and each is decided against the locked
    // levels, one by one (so too at once when a product or warehouse is
    // unknown: its movement could not be written).
    let known = fresh
        .iter()
        .flat_map(|(_, r, _)| &r.lines)
        .all(|l| skus.contains_key(&l.product_id) && warehouses.contains(&l.warehouse_id));
    if known {
        savepoint(txn, "reserve").await?;
        if hold(txn, tenant, &fresh, &skus, now).await?.is_none() {
            for (i, _, model) in fresh {
                answers[i] = Some(reservation_view(model));
            }
            return Ok(());
        }
        undo(txn, "reserve").await?;
    }
    let levels = lock_levels(txn, tenant, product_ids, warehouse_ids).await?;
    let mut taken: BTreeMap<(Uuid, Uuid), i64> = Default::default();
    let mut winners = Vec::with_capacity(fresh.len());
    let mut losers = Vec::new();
    for (i, r, model) in fresh {
        match fits(&r.lines, &skus, &warehouses, &levels, &taken) {
            Ok(()) => {
                for line in &r.lines {
                    *taken.entry((line.product_id, line.warehouse_id)).or_default() += line.quantity;
                }
                winners.push((i, r, model));
            }
            Err(err) => {
                answers[i] = Some(Err(err));
                losers.push(model.id);
            }
        }
    }
    if !losers.is_empty() {
        tenant
            .delete_many::<reservation::Entity>()
            .filter(one_of(backend, reservation::Column::Id, losers))
            .exec(txn)
            .await?;
    }
    if let Some(key) = hold(txn, tenant, &winners, &skus, now).await? {
        return Err(ApiError::internal(anyhow::anyhow!("stock level {key:?} changed under its lock")));
    }
    for (i, _, model) in winners {
        answers[i] = Some(reservation_view(model));
    }
    Ok(())
}

/// Write what `held` reservations hold: their expiry jobs, `stock.reserved`
/// events and movements, then their levels, locked and updated last. The
/// key of a level that cannot take its part, if any (the writes are then
/// to be undone).
async fn hold(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    held: &[(usize, NewReservation, reservation::Model)],
    skus: &HashMap<Uuid, String>,
    now: DateTime<Utc>,
) -> ApiResult<Option<(Uuid, Uuid)>> {
    if held.is_empty() {
        return Ok(None);
    }
    let expiries = held.iter().map(|(_, r, model)| {
        let mut expiry = NewJob::new(EXPIRY_JOB, json!({"reservation_id": model.id})).tenant(tenant.id());
        expiry.run_at = r.expires_at;
        expiry
    });
    jobs::enqueue_many(txn, expiries.collect()).await?;
    let reserved = held.iter().map(|(_, r, _)| json!({"reference": r.reference, "lines": r.lines}));
    events::publish_many(txn, tenant.id(), &super::STOCK_RESERVED, reserved.collect()).await?;
    let movements = held.iter().flat_map(|(_, r, _)| {
        in_lock_order(&r.lines).into_iter().map(|line| stock_movement::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.id()),
            product_id: Set(line.product_id),
            warehouse_id: Set(line.warehouse_id),
            kind: Set("reservation".to_owned()),
            quantity: Set(0),
            reserved_delta: Set(line.quantity),
            reason: Set(r.cause.reason.clone()),
            reference: Set(Some(r.reference.clone())),
            user_id: Set(r.cause.user_id),
            created_at: Set(now),
        })
    });
    crate::platform::db::insert_all(txn, movements.collect()).await?;
    let mut taken: BTreeMap<(Uuid, Uuid), i64> = Default::default();
    for (_, r, _) in held {
        for line in &r.lines {
            *taken.entry((line.product_id, line.warehouse_id)).or_default() += line.quantity;
        }
    }
    let changes: Vec<LevelChange> = taken.into_iter().map(|(key, quantity)| (key, 0, quantity)).collect();
    change_levels(txn, tenant, &changes, skus, now).await
}

/// The answer to reserving `reference` again, held by `found`: the same
/// reservation when it is active with the same lines, else a conflict.
fn again(reference: &str, lines: &[Line], found: Option<reservation::Model>) -> ApiResult<ReservationView> {
    let found =
        found.ok_or_else(|| ApiError::new(Code::Conflict, format!("reservation `{reference}` is in use")))?;
    let view = reservation_view(found)?;
    if view.status == ACTIVE && view.lines == lines {
        Ok(view) // the same reservation again: nothing more is held
    } else {
        Err(ApiError::new(
            Code::Conflict,
            format!("reservation `{reference}` exists ({}) with other lines or state", view.status),
        ))
    }
}

/// Whether `lines` fit in the locked `levels`, less what is `taken` by the
/// reservations decided before them: 404 for an unknown product or
/// warehouse, 409 `insufficient_stock` naming the SKU.
fn fits(
    lines: &[Line],
    skus: &HashMap<Uuid, String>,
    warehouses: &HashSet<Uuid>,
    levels: &HashMap<(Uuid, Uuid), stock_level::Model>,
    taken: &BTreeMap<(Uuid, Uuid), i64>,
) -> ApiResult<()> {
    let mut mine: HashMap<(Uuid, Uuid), i64> = HashMap::new();
    for line in in_lock_order(lines) {
        let sku = skus.get(&line.product_id).ok_or_else(|| ApiError::not_found("product"))?;
        if !warehouses.contains(&line.warehouse_id) {
            return Err(ApiError::not_found("warehouse"));
        }
        let key = (line.product_id, line.warehouse_id);
        let wanted = mine.entry(key).or_default();
        *wanted += line.quantity;
        let available =
            levels.get(&key).map_or(0, |l| l.on_hand - l.reserved) - taken.get(&key).copied().unwrap_or(0);
        if *wanted > available {
            return Err(insufficient(sku));
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl InventoryService for SeaOrmInventory {
    async fn create_product(&self, tenant: TenantScope, new: NewProduct) -> ApiResult<ProductView> {
        let txn = crate::platform::db::begin(&self.db).await?;
        let now = Utc::now();
        let sku = new.sku.clone();
        let model = product::Entity::insert(product::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.id()),
            sku: Set(new.sku),
            name: Set(new.name),
            barcode: Set(new.barcode),
            unit_price: Set(new.unit_price),
            currency: Set(new.currency),
            attributes: Set(new.attributes),
            active: Set(new.active),
            preferred_vendor_id: Set(None),
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .exec_with_returning(&txn)
        .await
        .map_err(|e| match ApiError::from(e) {
            err if err.code == Code::Conflict => {
                ApiError::new(Code::Conflict, format!("SKU `{sku}` exists already"))
            }
            err => err,
        })?;
        let data = json!({"id": model.id, "sku": model.sku, "name": model.name});
        events::publish(&txn, tenant.id(), &super::PRODUCT_CREATED, data).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(product_view(model))
    }

    async fn list_products(
        &self,
        tenant: TenantScope,
        filter: ProductFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<ProductView>> {
        let condition = Condition::all()
            .add_option(filter.sku.map(|sku| product::Column::Sku.eq(sku)))
            .add_option(filter.active.map(|active| product::Column::Active.eq(active)))
            .add_option(filter.q.map(|q| q.on(&[product::Column::Sku, product::Column::Name])))
            .add(filter.created.on(product::Column::CreatedAt))
            .add(filter.updated.on(product::Column::UpdatedAt));
        let rows = list.fetch(&self.db, tenant.find::<product::Entity>(), condition, filter.sort).await?;
        Ok(rows.map(product_view))
    }

    async fn get_product(&self, tenant: TenantScope, id: Uuid) -> ApiResult<ProductView> {
        Ok(product_view(find_product(&self.db, tenant, id).await?))
    }

    async fn update_product(
        &self,
        tenant: TenantScope,
        id: Uuid,
        if_match: Option<i32>,
        changes: ProductChanges,
    ) -> ApiResult<ProductView> {
        let txn = crate::platform::db::begin(&self.db).await?;
        let current = find_product(&txn, tenant, id).await?;
        check_version("product", current.version, if_match)?;
        let mut update = tenant
            .update_many::<product::Entity>()
            .filter(product::Column::Id.eq(id))
            .filter(product::Column::Version.eq(current.version))
            .col_expr(product::Column::Version, Expr::value(current.version + 1))
            .col_expr(product::Column::UpdatedAt, Expr::value(Utc::now()));
        if let Some(v) = changes.name {
            update = update.col_expr(product::Column::Name, Expr::value(v));
        }
        if let Some(v) = changes.barcode {
            update = update.col_expr(product::Column::Barcode, Expr::value(v));
        }
        if let Some(v) = changes.unit_price {
            update = update.col_expr(product::Column::UnitPrice, Expr::value(v));
        }
        if let Some(v) = changes.currency {
            update = update.col_expr(product::Column::Currency, Expr::value(v));
        }
        if let Some(v) = changes.attributes {
            update = update.col_expr(product::Column::Attributes, Expr::value(v));
        }
        if let Some(v) = changes.active {
            update = update.col_expr(product::Column::Active, Expr::value(v));
        }
        if let Some(v) = changes.preferred_vendor_id {
            if !self.vendors.exists(tenant, v).await? {
                return Err(ApiError::validation(vec![FieldError::new(
                    "preferred_vendor_id",
                    "no such vendor",
                )]));
            }
            update = update.col_expr(product::Column::PreferredVendorId, Expr::value(v));
        }
        if update.exec(&txn).await?.rows_affected == 0 {
            return Err(changed_meanwhile("product"));
        }
        let updated = find_product(&txn, tenant, id).await?;
        let data = json!({"id": updated.id, "sku": updated.sku, "version": updated.version});
        events::publish(&txn, tenant.id(), &super::PRODUCT_UPDATED, data).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(product_view(updated))
    }

    async fn create_warehouse(
        &self,
        tenant: TenantScope,
        code: String,
        name: String,
    ) -> ApiResult<WarehouseView> {
        let now = Utc::now();
        let txn = crate::platform::db::begin(&self.db).await?;
        let model = warehouse::Entity::insert(warehouse::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.id()),
            code: Set(code.clone()),
            name: Set(name),
            active: Set(true),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .exec_with_returning(&txn)
        .await
        .map_err(|e| match ApiError::from(e) {
            err if err.code == Code::Conflict => {
                ApiError::new(Code::Conflict, format!("warehouse `{code}` exists already"))
            }
            err => err,
        })?;
        let data = json!({"id": model.id, "code": model.code, "name": model.name});
        events::publish(&txn, tenant.id(), &super::WAREHOUSE_CREATED, data).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(warehouse_view(model))
    }

    async fn list_warehouses(
        &self,
        tenant: TenantScope,
        filter: WarehouseFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<WarehouseView>> {
        let condition = Condition::all()
            .add_option(filter.q.map(|q| q.on(&[warehouse::Column::Code, warehouse::Column::Name])))
            .add(filter.created.on(warehouse::Column::CreatedAt));
        let rows = list.fetch(&self.db, tenant.find::<warehouse::Entity>(), condition, filter.sort).await?;
        Ok(rows.map(warehouse_view))
    }

    async fn stock_levels(
        &self,
        tenant: TenantScope,
        filter: LevelFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<StockLevelView>> {
        let condition = Condition::all()
            .add_option(filter.product_id.map(|id| stock_level::Column::ProductId.eq(id)))
            .add_option(filter.warehouse_id.map(|id| stock_level::Column::WarehouseId.eq(id)));
        let scope = tenant.find::<stock_level::Entity>();
        let Paged { data, meta } = list.fetch(&self.db, scope, condition, filter.sort).await?;
        Ok(Paged { data: stock_views(&self.db, tenant, data).await?, meta })
    }

    async fn movements(
        &self,
        tenant: TenantScope,
        filter: MovementFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<MovementView>> {
        use stock_movement::Column;
        let condition = Condition::all()
            .add_option(filter.product_id.map(|id| Column::ProductId.eq(id)))
            .add_option(filter.warehouse_id.map(|id| Column::WarehouseId.eq(id)))
            .add_option(filter.kind.map(|kind| Column::Kind.eq(kind)))
            .add_option(filter.reference.map(|reference| Column::Reference.eq(reference)))
            .add(filter.created.on(Column::CreatedAt));
        let scope = tenant.find::<stock_movement::Entity>();
        let rows = list.fetch(&self.db, scope, condition, filter.sort).await?;
        Ok(rows.map(|m| MovementView {
            id: m.id,
            product_id: m.product_id,
            warehouse_id: m.warehouse_id,
            kind: m.kind,
            quantity: m.quantity,
            reserved_delta: m.reserved_delta,
            reason: m.reason,
            reference: m.reference,
            user_id: m.user_id,
            created_at: m.created_at,
        }))
    }

    async fn adjust(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        line: Line,
        cause: Cause,
    ) -> ApiResult<StockLevelView> {
        if line.quantity == 0 {
            return Err(ApiError::validation(vec![FieldError::new("quantity", "must not be zero")]));
        }
        let product = find_product(txn, tenant, line.product_id).await?;
        find_warehouse(txn, tenant, line.warehouse_id).await?;
        let level =
            apply(txn, tenant, &product, line.warehouse_id, "adjustment", line.quantity, 0, &cause).await?;
        let data = json!({"product_id": product.id, "sku": product.sku, "warehouse_id": line.warehouse_id,
            "quantity": line.quantity, "on_hand": level.on_hand, "reason": cause.reason});
        events::publish(txn, tenant.id(), &super::STOCK_ADJUSTED, data).await?;
        Ok(level)
    }

    async fn receive(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        line: Line,
        cause: Cause,
    ) -> ApiResult<()> {
        positive(line.quantity)?;
        let product = find_product(txn, tenant, line.product_id).await?;
        find_warehouse(txn, tenant, line.warehouse_id).await?;
        apply(txn, tenant, &product, line.warehouse_id, "receipt", line.quantity, 0, &cause).await.map(|_| ())
    }

    async fn transfer(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        line: Line,
        to_warehouse: Uuid,
        cause: Cause,
    ) -> ApiResult<()> {
        positive(line.quantity)?;
        if to_warehouse == line.warehouse_id {
            let message = "must differ from the source warehouse";
            return Err(ApiError::validation(vec![FieldError::new("to_warehouse_id", message)]));
        }
        let product = find_product(txn, tenant, line.product_id).await?;
        find_warehouse(txn, tenant, line.warehouse_id).await?;
        find_warehouse(txn, tenant, to_warehouse).await?;
        // Levels are locked in one order (by warehouse) whatever the
        // direction, so two opposite transfers cannot deadlock.
        let mut steps = [
            (line.warehouse_id, "transfer_out", -line.quantity),
            (to_warehouse, "transfer_in", line.quantity),
        ];
        steps.sort_by_key(|(warehouse, _, _)| *warehouse);
        for (warehouse, kind, quantity) in steps {
            apply(txn, tenant, &product, warehouse, kind, quantity, 0, &cause).await?;
        }
        let data = json!({"product_id": product.id, "sku": product.sku, "from_warehouse_id": line.warehouse_id,
            "to_warehouse_id": to_warehouse, "quantity": line.quantity});
        events::publish(txn, tenant.id(), &super::STOCK_TRANSFERRED, data).await?;
        Ok(())
    }

    async fn reserve(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        holds: Vec<Hold>,
    ) -> ApiResult<Vec<ApiResult<ReservationView>>> {
        let requests = holds
            .into_iter()
            .map(|h| NewReservation {
                tenant,
                reference: h.reference,
                lines: h.lines,
                expires_at: h.expires_at,
                cause: h.cause,
            })
            .collect();
        reserve_many(txn, requests).await
    }

    async fn reserve_now(
        &self,
        tenant: TenantScope,
        reference: &str,
        lines: Vec<Line>,
        expires_at: DateTime<Utc>,
        cause: Cause,
    ) -> ApiResult<ReservationView> {
        let new = NewReservation { tenant, reference: reference.to_owned(), lines, expires_at, cause };
        self.reservations
            .run(&tenant.id(), new, |batch| {
                each_alone_on_failure(batch, |batch| self.reserve_in_transaction(batch), Err)
            })
            .await
    }

    async fn commit(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        reference: &str,
        cause: Cause,
    ) -> ApiResult<ReservationView> {
        end(txn, tenant, reference, COMMITTED, cause).await
    }

    async fn commit_all(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        commits: Vec<(String, Cause)>,
    ) -> ApiResult<Vec<ApiResult<ReservationView>>> {
        end_all(txn, tenant, commits, COMMITTED).await
    }

    async fn release(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        reference: &str,
        cause: Cause,
    ) -> ApiResult<ReservationView> {
        end(txn, tenant, reference, RELEASED, cause).await
    }

    async fn set_reorder(
        &self,
        tenant: TenantScope,
        product_id: Uuid,
        warehouse_id: Uuid,
        point: Option<i64>,
        quantity: Option<i64>,
    ) -> ApiResult<StockLevelView> {
        let txn = crate::platform::db::begin(&self.db).await?;
        let product = find_product(&txn, tenant, product_id).await?;
        find_warehouse(&txn, tenant, warehouse_id).await?;
        let now = Utc::now();
        stock_level::Entity::insert(stock_level::ActiveModel {
            tenant_id: Set(tenant.id()),
            product_id: Set(product_id),
            warehouse_id: Set(warehouse_id),
            on_hand: Set(0),
            reserved: Set(0),
            reorder_point: Set(point),
            reorder_quantity: Set(quantity),
            updated_at: Set(now),
        })
        .on_conflict(
            sea_orm::sea_query::OnConflict::columns([
                stock_level::Column::TenantId,
                stock_level::Column::ProductId,
                stock_level::Column::WarehouseId,
            ])
            .update_columns([stock_level::Column::ReorderPoint, stock_level::Column::ReorderQuantity])
            .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        let view = level_view(&txn, tenant, &product, warehouse_id).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(view)
    }

    async fn reorder_recommendations(&self, tenant: TenantScope) -> ApiResult<Vec<Recommendation>> {
        recommendations(&self.db, tenant).await
    }

    async fn get_warehouse(&self, tenant: TenantScope, id: Uuid) -> ApiResult<WarehouseView> {
        Ok(warehouse_view(find_warehouse(&self.db, tenant, id).await?))
    }

    async fn products_by_ids(&self, tenant: TenantScope, ids: Vec<Uuid>) -> ApiResult<Vec<ProductView>> {
        let rows =
            tenant.find::<product::Entity>().filter(product::Column::Id.is_in(ids)).all(&self.db).await?;
        Ok(rows.into_iter().map(product_view).collect())
    }

    async fn levels_of_products(
        &self,
        tenant: TenantScope,
        product_ids: Vec<Uuid>,
    ) -> ApiResult<Vec<StockLevelView>> {
        let levels = tenant
            .find::<stock_level::Entity>()
            .filter(stock_level::Column::ProductId.is_in(product_ids))
            .all(&self.db)
            .await?;
        Ok(stock_views(&self.db, tenant, levels).await?)
    }

    async fn reservation(&self, tenant: TenantScope, reference: &str) -> ApiResult<ReservationView> {
        tenant
            .find::<reservation::Entity>()
            .filter(reservation::Column::Reference.eq(reference))
            .one(&self.db)
            .await?
            .map(reservation_view)
            .ok_or_else(|| ApiError::not_found("reservation"))?
    }
}

/// End an active reservation: `committed` ships the stock, `released` and
/// `expired` give it back. Ending it again the same way is a no-op.
async fn end(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    reference: &str,
    outcome: &str,
    cause: Cause,
) -> ApiResult<ReservationView> {
    only(end_all(txn, tenant, vec![(reference.to_owned(), cause)], outcome).await?)
}

/// [`end`] many reservations (a reference and its cause each) the same way
/// in `txn`, each decided on its own: one answer each, in order. They are
/// read and locked by one query, claimed by one `UPDATE`; their movements
/// are one multi-row `INSERT`, each level touched one conditional `UPDATE`
/// (in lock order) and their events one lot. The `Err` is the transaction's.
async fn end_all(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    ends: Vec<(String, Cause)>,
    outcome: &str,
) -> ApiResult<Vec<ApiResult<ReservationView>>> {
    let backend = txn.get_database_backend();
    let references = ends.iter().map(|(reference, _)| reference.clone()).collect();
    let mut found: HashMap<String, reservation::Model> = tenant
        .find::<reservation::Entity>()
        .filter(one_of(backend, reservation::Column::Reference, references))
        .order_by_asc(reservation::Column::Id)
        .lock_exclusive()
        .all(txn)
        .await?
        .into_iter()
        .map(|m| (m.reference.clone(), m))
        .collect();
    let now = Utc::now();
    let mut answers = Vec::with_capacity(ends.len());
    let mut ending = Vec::new();
    for (reference, cause) in ends {
        let Some(model) = found.get_mut(&reference) else {
            answers.push(Err(ApiError::not_found("reservation")));
            continue;
        };
        let same = model.status == outcome || (outcome == RELEASED && model.status == EXPIRED);
        // Decoded before anything changes: unreadable lines fail the call.
        let answer = match reservation_lines(model) {
            _ if same => reservation_view(model.clone()),
            Err(err) => Err(err),
            Ok(_) if model.status != ACTIVE => {
                Err(ApiError::new(Code::Conflict, format!("reservation `{reference}` is {}", model.status)))
            }
            Ok(lines) => {
                // Ended here: a second request for it in the batch finds it so.
                model.status = outcome.to_owned();
                model.updated_at = now;
                ending.push((model.id, lines, Cause { reference: Some(reference), ..cause }));
                reservation_view(model.clone())
            }
        };
        answers.push(answer);
    }
    if ending.is_empty() {
        return Ok(answers);
    }
    tenant
        .update_many::<reservation::Entity>()
        .filter(one_of(backend, reservation::Column::Id, ending.iter().map(|(id, _, _)| *id).collect()))
        .col_expr(reservation::Column::Status, Expr::value(outcome))
        .col_expr(reservation::Column::UpdatedAt, Expr::value(now))
        .exec(txn)
        .await?;
    let (kind, shipped) = if outcome == COMMITTED { ("shipment", 1) } else { ("release", 0) };
    let mut levels: BTreeMap<(Uuid, Uuid), i64> = BTreeMap::new();
    let mut movements = Vec::new();
    for (_, lines, cause) in &ending {
        for line in in_lock_order(lines) {
            *levels.entry((line.product_id, line.warehouse_id)).or_default() += line.quantity;
            movements.push(stock_movement::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant_id: Set(tenant.id()),
                product_id: Set(line.product_id),
                warehouse_id: Set(line.warehouse_id),
                kind: Set(kind.to_owned()),
                quantity: Set(-line.quantity * shipped),
                reserved_delta: Set(-line.quantity),
                reason: Set(cause.reason.clone()),
                reference: Set(cause.reference.clone()),
                user_id: Set(cause.user_id),
                created_at: Set(now),
            });
        }
    }
    crate::platform::db::insert_all(txn, movements).await?;
    let event = if outcome == COMMITTED { &super::STOCK_SHIPPED } else { &super::STOCK_RELEASED };
    let data = ending
        .iter()
        .map(|(_, lines, cause)| json!({"reference": cause.reference, "lines": lines, "outcome": outcome}));
    events::publish_many(txn, tenant.id(), event, data.collect()).await?;
    let skus: HashMap<Uuid, String> = tenant
        .find::<product::Entity>()
        .select_only()
        .columns([product::Column::Id, product::Column::Sku])
        .filter(one_of(backend, product::Column::Id, levels.keys().map(|(product, _)| *product).collect()))
        .into_tuple::<(Uuid, String)>()
        .all(txn)
        .await?
        .into_iter()
        .collect();
    // The levels last: locked from their update to the commit only.
    let changes: Vec<LevelChange> =
        levels.into_iter().map(|(key, quantity)| (key, -quantity * shipped, -quantity)).collect();
    if let Some((product, _)) = change_levels(txn, tenant, &changes, &skus, now).await? {
        return Err(insufficient(skus.get(&product).map_or("", String::as_str)));
    }
    Ok(answers)
}

/// `inventory.reservation_expiry`: give back what an unused reservation holds.
pub struct ExpireReservation(pub Arc<SeaOrmInventory>);

#[async_trait::async_trait]
impl JobHandler for ExpireReservation {
    async fn run(&self, _: &AppState, job: &entity::job::Model) -> Result<(), JobError> {
        let db = &self.0.db;
        let id = job
            .payload
            .get("reservation_id")
            .and_then(|v| v.as_str())
            .and_then(|v| Uuid::parse_str(v).ok())
            .ok_or_else(|| JobError::Fail("payload has no reservation_id".to_owned()))?;
        let Some(model) = SystemScope.get::<reservation::Entity>(db, id).await? else {
            return Ok(());
        };
        if model.status != ACTIVE {
            return Ok(());
        }
        let txn = crate::platform::db::begin(db).await?;
        let cause = Cause { reason: Some("reservation expired".to_owned()), ..Cause::default() };
        match end(&txn, TenantScope::new(model.tenant_id), &model.reference, EXPIRED, cause).await {
            Ok(_) => sea_orm::TransactionSession::commit(txn).await?,
            // Committed or released meanwhile: nothing left to expire.
            Err(err) if err.code == Code::Conflict => return Ok(()),
            Err(err) => return Err(err.into()),
        }
        Ok(())
    }
}

async fn recommendations(db: &impl ConnectionTrait, tenant: TenantScope) -> ApiResult<Vec<Recommendation>> {
    let levels = tenant
        .find::<stock_level::Entity>()
        .filter(stock_level::Column::ReorderPoint.is_not_null())
        .all(db)
        .await?;
    let low: Vec<stock_level::Model> =
        levels.into_iter().filter(|l| l.reorder_point.is_some_and(|p| l.on_hand - l.reserved < p)).collect();
    let ids: Vec<Uuid> = low.iter().map(|l| l.product_id).collect();
    let products: HashMap<Uuid, product::Model> = tenant
        .find::<product::Entity>()
        .filter(product::Column::Id.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    let mut out: Vec<Recommendation> = low
        .into_iter()
        .filter_map(|l| {
            let point = l.reorder_point?;
            let product = products.get(&l.product_id)?;
            let available = l.on_hand - l.reserved;
            Some(Recommendation {
                product_id: l.product_id,
                sku: product.sku.clone(),
                warehouse_id: l.warehouse_id,
                available,
                reorder_point: point,
                suggested_quantity: l
                    .reorder_quantity
                    .unwrap_or(2 * point - available)
                    .max(point - available),
                preferred_vendor_id: product.preferred_vendor_id,
            })
        })
        .collect();
    out.sort_by_key(|r| r.available - r.reorder_point);
    Ok(out)
}

/// The next weekly slot: Monday 06:00 UTC after `now`, and its name.
pub fn next_week_slot(now: DateTime<Utc>) -> (DateTime<Utc>, String) {
    use chrono::{Datelike, Duration, NaiveTime};
    let days = (7 - i64::from(now.weekday().num_days_from_monday())) % 7;
    let mut at =
        (now.date_naive() + Duration::days(days)).and_time(NaiveTime::MIN).and_utc() + Duration::hours(6);
    if at <= now {
        at += Duration::days(7);
    }
    let week = at.iso_week();
    (at, format!("{}-W{:02}", week.year(), week.week()))
}

/// Make sure the next weekly reorder scan is queued (once, whoever asks).
pub async fn schedule_reorder_scan(
    db: &impl ConnectionTrait,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    let (at, slot) = next_week_slot(now);
    let mut job = NewJob::new(REORDER_SCAN_JOB, json!({"slot": slot})).priority(2);
    job.run_at = at;
    jobs::enqueue_once(db, jobs::slot_id(REORDER_SCAN_JOB, &slot), job).await
}

/// `inventory.reorder_scan`, weekly: `inventory.reorder_recommended` for
/// every tenant with levels below their reorder point; then queue next week.
pub struct ReorderScan;

#[async_trait::async_trait]
impl JobHandler for ReorderScan {
    async fn run(&self, state: &AppState, _job: &entity::job::Model) -> Result<(), JobError> {
        let tenants = SystemScope.find::<entity::tenant::Entity>().all(&state.db).await?;
        for tenant in tenants {
            let scope = TenantScope::new(tenant.id);
            let found = recommendations(&state.db, scope).await?;
            if found.is_empty() {
                continue;
            }
            let data = json!({"recommendations": found});
            events::publish(&state.db, tenant.id, &super::INVENTORY_REORDER_RECOMMENDED, data).await?;
        }
        schedule_reorder_scan(&state.db, Utc::now()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weekly_slot_is_the_next_monday_morning() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        // Sunday 22 November 2026 -> Monday 23rd, 06:00.
        let (next, slot) = next_week_slot(at("2026-11-22T16:00:00Z"));
        assert_eq!(next, at("2026-11-23T06:00:00Z"));
        assert_eq!(slot, "2026-W48");
        // Monday after 06:00 -> the Monday after.
        assert_eq!(next_week_slot(at("2026-11-23T07:00:00Z")).0, at("2026-11-30T06:00:00Z"));
        assert_eq!(next_week_slot(at("2026-11-23T05:00:00Z")).0, at("2026-11-23T06:00:00Z"));
        assert_eq!(jobs::slot_id("k", "2026-W48"), jobs::slot_id("k", "2026-W48"));
        assert_ne!(jobs::slot_id("k", "2026-W48"), jobs::slot_id("k", "2026-W49"));
    }
}
