//! Runs over every mapping of a connection, a batch per job (the
//! connection's `push_batch_size`), with progress on the run:
//!
//! - **push**: the ATP of each mapped product is written to the store
//!   (WooCommerce's batch endpoint, one call per product where the channel
//!   has no batch write), whether or not it changed.
//! - **reconcile**: the store's quantity of each mapped product is read
//!   (one product call per remote product) and compared with its ATP; each
//!   difference is stored as drift (`channel_drifts`) and corrected by
//!   writing the ATP.
//!
//! A batch the store keeps failing is counted as `failed` once its job has
//! no attempt left, and the run goes on; refused credentials end the run
//! (`failed`, `channel.sync_failed`) and disconnect the connection; a 429
//! defers the batch as long as the store asked. Reconciles are also
//! scheduled for every connected store, every `reconcile_interval_secs`.

use super::*;
use crate::modules::channels::{DriftView, SyncRunView};
use entity::channel_drift as drift;

pub const SYNC_JOB: &str = "channels.sync";
pub const RECONCILE_SCAN_JOB: &str = "channels.reconcile_scan";

/// Run kinds besides `import`.
pub const PUSH: &str = "push";
pub const RECONCILE: &str = "reconcile";

/// What one batch came to.
#[derive(Default)]
struct Batch {
    failed: i64,
    drifted: i64,
    error: Option<String>,
    drifts: Vec<drift::ActiveModel>,
}

impl SeaOrmChannels {
    /// A `push` or `reconcile` run of a connection, queued.
    pub(super) async fn start_run(
        &self,
        tenant: TenantScope,
        id: Uuid,
        kind: &str,
    ) -> ApiResult<SyncRunView> {
        let txn = crate::platform::db::begin(&self.db).await?;
        let c = find_connection(&txn, tenant, id).await?;
        if c.status == DISCONNECTED {
            let detail = "the connection is disconnected; save working credentials first";
            return Err(ApiError::new(Code::Conflict, detail));
        }
        let total = tenant
            .find::<mapping::Entity>()
            .filter(mapping::Column::ConnectionId.eq(c.id))
            .count(&txn)
            .await?;
        let r = insert_run(&txn, tenant, c.id, kind, i64::try_from(total).unwrap_or(i64::MAX)).await?;
        txn.commit().await?;
        Ok(r.into())
    }

    /// `channels.sync`: one batch of a push or reconcile run.
    pub(super) async fn sync_step(
        &self,
        tenant: TenantScope,
        run_id: Uuid,
        job: &entity::job::Model,
    ) -> Result<(), JobError> {
        let Some((r, c)) = self.open_run(tenant, run_id).await? else { return Ok(()) };
        if c.status == DISCONNECTED {
            let error = c.last_error.as_deref().unwrap_or("the connection is disconnected");
            self.end_run(tenant, &r, error).await?;
            return Ok(());
        }
        let after = r.cursor.as_deref().and_then(|s| Uuid::parse_str(s).ok());
        let mappings = tenant
            .find::<mapping::Entity>()
            .filter(mapping::Column::ConnectionId.eq(c.id))
            .filter(Condition::all().add_option(after.map(|a| mapping::Column::Id.gt(a))))
            .order_by_asc(mapping::Column::Id)
            .limit(self.batch)
            .all(&self.db)
            .await?;
        let outcome = if r.kind == RECONCILE {
            self.reconcile_batch(tenant, &c, &r, &mappings).await
        } else {
            self.push_batch(tenant, &c, &mappings).await.map(|()| Batch::default())
        };
        let batch = match outcome {
            Ok(batch) => batch,
            Err(Stop::Job(err)) => return Err(err),
            Err(Stop::Store(err)) => {
                let refused = matches!(err, DriverError::Unauthorized(_));
                match self.job_error(tenant, &c, job, err).await? {
                    JobError::Fail(error) if refused => {
                        self.end_run(tenant, &r, &error).await?;
                        return Err(JobError::Fail(error));
                    }
                    // No attempt left: the batch failed, the run goes on.
                    JobError::Fail(error) => Batch {
                        failed: i64::try_from(mappings.len()).unwrap_or(i64::MAX),
                        error: Some(error),
                        ..Batch::default()
                    },
                    other => return Err(other),
                }
            }
        };
        self.record_batch(tenant, &c, &r, &mappings, batch).await?;
        Ok(())
    }

    /// Write the ATP of every mapping given; the mappings record it.
    async fn push_batch(
        &self,
        tenant: TenantScope,
        c: &connection::Model,
        mappings: &[mapping::Model],
    ) -> Result<(), Stop> {
        if mappings.is_empty() {
            return Ok(());
        }
        let driver = self.driver(&c.channel)?.clone();
        let credentials = self.credentials(c)?;
        let pace = self.pace(c, &credentials)?;
        let store = store_of(c, &credentials, &pace);
        let atp = self.atp(tenant, c, mappings.iter().map(|m| m.product_id).collect()).await?;
        let pushes = pushes_of(mappings, &atp);
        driver.push_quantities(&store, &pushes).await.map_err(Stop::Store)?;
        self.recovered(tenant, c).await?;
        let txn = crate::platform::db::begin(&self.db).await?;
        record_pushed(&txn, tenant, mappings.iter().zip(&pushes)).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Read the store's quantity of every mapping given, keep what differs
    /// from the ATP as drift and write the ATP where it differs.
    async fn reconcile_batch(
        &self,
        tenant: TenantScope,
        c: &connection::Model,
        r: &run::Model,
        mappings: &[mapping::Model],
    ) -> Result<Batch, Stop> {
        let mut batch = Batch::default();
        if mappings.is_empty() {
            return Ok(batch);
        }
        let driver = self.driver(&c.channel)?.clone();
        let credentials = self.credentials(c)?;
        let pace = self.pace(c, &credentials)?;
        let store = store_of(c, &credentials, &pace);
        // The store's quantity by variant, one read per remote product.
        let mut remote: HashMap<String, Option<i64>> = HashMap::new();
        let mut read: HashSet<&str> = HashSet::new();
        for m in mappings {
            if !read.insert(m.remote_product_id.as_str()) {
                continue;
            }
            match driver.fetch_product(&store, &m.remote_product_id).await {
                Ok(product) => {
                    for v in product.variants {
                        remote.insert(v.id, v.quantity);
                    }
                }
                Err(DriverError::NotFound(_)) => {}
                Err(err) => return Err(Stop::Store(err)),
            }
        }
        let atp = self.atp(tenant, c, mappings.iter().map(|m| m.product_id).collect()).await?;
        let mut corrections = Vec::new();
        let now = Utc::now();
        for m in mappings {
            let expected = atp.get(&m.product_id).copied().unwrap_or(0);
            let (remote, detail) = match remote.get(&m.remote_variant_id) {
                Some(Some(q)) if *q == expected => continue,
                Some(Some(q)) => (Some(*q), None),
                Some(None) => (None, Some("the store does not track the variant's quantity".to_owned())),
                None => (None, Some("the store has no such variant any more".to_owned())),
            };
            batch.drifted += 1;
            if let Some(why) = &detail {
                batch.failed += 1;
                batch.error = Some(format!("{}: {why}", m.sku));
            } else {
                corrections.push(m.clone());
            }
            batch.drifts.push(drift::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant_id: Set(tenant.id()),
                run_id: Set(r.id),
                connection_id: Set(c.id),
                product_id: Set(m.product_id),
                sku: Set(m.sku.clone()),
                remote: Set(remote),
                expected: Set(expected),
                corrected: Set(detail.is_none()),
                detail: Set(detail),
                created_at: Set(now),
            });
        }
        if !corrections.is_empty() {
            let pushes = pushes_of(&corrections, &atp);
            driver.push_quantities(&store, &pushes).await.map_err(Stop::Store)?;
            let txn = crate::platform::db::begin(&self.db).await?;
            record_pushed(&txn, tenant, corrections.iter().zip(&pushes)).await?;
            txn.commit().await?;
        }
        self.recovered(tenant, c).await?;
        Ok(batch)
    }

    /// A batch's progress, drift and the next batch's job (or the end of
    /// the run), in one transaction.
    async fn record_batch(
        &self,
        tenant: TenantScope,
        c: &connection::Model,
        r: &run::Model,
        mappings: &[mapping::Model],
        batch: Batch,
    ) -> ApiResult<()> {
        use sea_orm::sea_query::ExprTrait;
        let now = Utc::now();
        let last = u64::try_from(mappings.len()).unwrap_or(u64::MAX) < self.batch;
        let txn = crate::platform::db::begin(&self.db).await?;
        let add = |column: run::Column, n: i64| Expr::col(column).add(n);
        let mut update = tenant
            .update_many::<run::Entity>()
            .filter(run::Column::Id.eq(r.id))
            .filter(run::Column::Status.is_in([PENDING, RUNNING]))
            .col_expr(run::Column::Done, add(run::Column::Done, i64::try_from(mappings.len()).unwrap_or(0)))
            .col_expr(run::Column::Failed, add(run::Column::Failed, batch.failed))
            .col_expr(run::Column::Drifted, add(run::Column::Drifted, batch.drifted))
            .col_expr(run::Column::Cursor, Expr::value(mappings.last().map(|m| m.id.to_string())))
            .col_expr(run::Column::StartedAt, Expr::value(r.started_at.unwrap_or(now)))
            .col_expr(run::Column::UpdatedAt, Expr::value(now));
        if let Some(error) = &batch.error {
            update = update.col_expr(run::Column::Error, Expr::value(error.clone()));
        }
        update = if last {
            update
                .col_expr(run::Column::Status, Expr::value(SUCCEEDED))
                .col_expr(run::Column::FinishedAt, Expr::value(now))
        } else {
            update.col_expr(run::Column::Status, Expr::value(RUNNING))
        };
        if update.exec(&txn).await?.rows_affected == 0 {
            return Ok(()); // ended meanwhile
        }
        if !batch.drifts.is_empty() {
            drift::Entity::insert_many(batch.drifts).exec_without_returning(&txn).await?;
        }
        if last {
            let done = tenant
                .get::<run::Entity>(&txn, r.id)
                .await?
                .ok_or_else(|| ApiError::not_found("channel sync run"))?;
            let data = json!({"run_id": r.id, "connection_id": c.id, "kind": r.kind, "total": done.total,
                "done": done.done, "failed": done.failed, "drifted": done.drifted});
            events::publish(&txn, tenant.id(), &CHANNEL_SYNC_SUCCEEDED, data).await?;
        } else {
            let job = NewJob::new(SYNC_JOB, json!({"run_id": r.id})).tenant(tenant.id()).priority(4);
            jobs::enqueue(&txn, job).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Queue the next scheduled reconcile of every store (once, whoever
    /// asks), unless `reconcile_interval_secs` is 0.
    pub async fn schedule_reconcile(
        &self,
        db: &impl ConnectionTrait,
        now: chrono::DateTime<Utc>,
    ) -> Result<(), sea_orm::DbErr> {
        let Some(every) = i64::try_from(self.reconcile_every).ok().filter(|s| *s > 0) else { return Ok(()) };
        let slot = now.timestamp() / every + 1;
        let mut job = NewJob::new(RECONCILE_SCAN_JOB, json!({"slot": slot})).priority(2);
        job.run_at = chrono::DateTime::from_timestamp(slot * every, 0).unwrap_or(now);
        jobs::enqueue_once(db, jobs::slot_id(RECONCILE_SCAN_JOB, &slot.to_string()), job).await
    }

    /// `channels.reconcile_scan`: a reconcile run for every store that is
    /// not disconnected and has none pending or running; then the next scan.
    async fn reconcile_scan(&self) -> ApiResult<()> {
        let connections = SystemScope
            .find::<connection::Entity>()
            .filter(connection::Column::Status.ne(DISCONNECTED))
            .all(&self.db)
            .await?;
        for c in connections {
            let tenant = TenantScope::new(c.tenant_id);
            let txn = crate::platform::db::begin(&self.db).await?;
            let open = tenant
                .find::<run::Entity>()
                .filter(run::Column::ConnectionId.eq(c.id))
                .filter(run::Column::Kind.eq(RECONCILE))
                .filter(run::Column::Status.is_in([PENDING, RUNNING]))
                .count(&txn)
                .await?;
            let mapped = tenant
                .find::<mapping::Entity>()
                .filter(mapping::Column::ConnectionId.eq(c.id))
                .count(&txn)
                .await?;
            if open == 0 && mapped > 0 {
                insert_run(&txn, tenant, c.id, RECONCILE, i64::try_from(mapped).unwrap_or(i64::MAX)).await?;
            }
            txn.commit().await?;
        }
        self.schedule_reconcile(&self.db, Utc::now()).await?;
        Ok(())
    }

    pub(super) async fn find_sync_run(
        &self,
        tenant: TenantScope,
        id: Uuid,
        run_id: Uuid,
    ) -> ApiResult<run::Model> {
        tenant
            .find_by_id::<run::Entity>(run_id)
            .filter(run::Column::ConnectionId.eq(id))
            .filter(run::Column::Kind.is_in([PUSH, RECONCILE]))
            .one(&self.db)
            .await?
            .ok_or_else(|| ApiError::not_found("channel sync run"))
    }

    pub(super) async fn sync_runs(
        &self,
        tenant: TenantScope,
        id: Uuid,
        list: &ListRequest,
    ) -> ApiResult<Paged<SyncRunView>> {
        find_connection(&self.db, tenant, id).await?;
        let sort = crate::platform::http::parse_sort(None, &crate::modules::channels::SYNC_RUN_SORTS)?;
        let condition = Condition::all()
            .add(run::Column::ConnectionId.eq(id))
            .add(run::Column::Kind.is_in([PUSH, RECONCILE]));
        Ok(list.fetch(&self.db, tenant.find::<run::Entity>(), condition, sort).await?.map(Into::into))
    }

    pub(super) async fn drifts(
        &self,
        tenant: TenantScope,
        id: Uuid,
        run_id: Uuid,
        list: &ListRequest,
    ) -> ApiResult<Paged<DriftView>> {
        self.find_sync_run(tenant, id, run_id).await?;
        let sort = crate::platform::http::parse_sort(None, &crate::modules::channels::DRIFT_SORTS)?;
        let condition = Condition::all().add(drift::Column::RunId.eq(run_id));
        Ok(list.fetch(&self.db, tenant.find::<drift::Entity>(), condition, sort).await?.map(Into::into))
    }
}

/// A run row, `channel.sync_started` and its first batch's job.
async fn insert_run(
    txn: &impl ConnectionTrait,
    tenant: TenantScope,
    connection_id: Uuid,
    kind: &str,
    total: i64,
) -> ApiResult<run::Model> {
    let now = Utc::now();
    let r = run::Entity::insert(run::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant.id()),
        connection_id: Set(connection_id),
        kind: Set(kind.to_owned()),
        status: Set(PENDING.to_owned()),
        cursor: Set(None),
        pages: Set(0),
        listed: Set(0),
        linked: Set(0),
        created: Set(0),
        skipped: Set(0),
        error: Set(None),
        total: Set(total),
        done: Set(0),
        failed: Set(0),
        drifted: Set(0),
        started_at: Set(None),
        finished_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_with_returning(txn)
    .await?;
    let data = json!({"run_id": r.id, "connection_id": connection_id, "kind": kind});
    events::publish(txn, tenant.id(), &CHANNEL_SYNC_STARTED, data).await?;
    jobs::enqueue(txn, NewJob::new(SYNC_JOB, json!({"run_id": r.id})).tenant(tenant.id()).priority(4))
        .await?;
    Ok(r)
}

/// The absolute quantity to write for each mapping.
pub(super) fn pushes_of(mappings: &[mapping::Model], atp: &HashMap<Uuid, i64>) -> Vec<Push> {
    mappings
        .iter()
        .map(|m| Push {
            remote_product_id: m.remote_product_id.clone(),
            remote_variant_id: m.remote_variant_id.clone(),
            inventory_item_id: m.inventory_item_id.clone(),
            quantity: atp.get(&m.product_id).copied().unwrap_or(0),
        })
        .collect()
}

/// What landed on the store: each mapping's last pushed quantity, and
/// clean again unless a change came while the push was on its way.
pub(super) async fn record_pushed<'a>(
    txn: &impl ConnectionTrait,
    tenant: TenantScope,
    pushed: impl Iterator<Item = (&'a mapping::Model, &'a Push)>,
) -> ApiResult<()> {
    let now = Utc::now();
    for (m, push) in pushed {
        tenant
            .update_many::<mapping::Entity>()
            .filter(mapping::Column::Id.eq(m.id))
            .col_expr(mapping::Column::LastPushedQuantity, Expr::value(push.quantity))
            .col_expr(mapping::Column::LastPushedAt, Expr::value(now))
            .col_expr(mapping::Column::UpdatedAt, Expr::value(now))
            .exec(txn)
            .await?;
        tenant
            .update_many::<mapping::Entity>()
            .filter(mapping::Column::Id.eq(m.id))
            .filter(mapping::Column::Changes.eq(m.changes))
            .col_expr(mapping::Column::Dirty, Expr::value(false))
            .exec(txn)
            .await?;
    }
    Ok(())
}

/// `channels.sync` and `channels.reconcile_scan`.
pub(super) struct SyncJob(pub Arc<SeaOrmChannels>);
pub(super) struct ReconcileScan(pub Arc<SeaOrmChannels>);

#[async_trait::async_trait]
impl JobHandler for SyncJob {
    async fn run(&self, _: &AppState, job: &entity::job::Model) -> Result<(), JobError> {
        let tenant =
            TenantScope::new(job.tenant_id.ok_or_else(|| JobError::Fail("job has no tenant".into()))?);
        self.0.sync_step(tenant, id_in(job, "run_id")?, job).await
    }
}

#[async_trait::async_trait]
impl JobHandler for ReconcileScan {
    async fn run(&self, _: &AppState, _job: &entity::job::Model) -> Result<(), JobError> {
        self.0.reconcile_scan().await?;
        Ok(())
    }
}
