//! Durable background jobs. A job is a row in `jobs`, enqueued in the same
//! transaction as the change that needs it, so a crash after commit loses
//! nothing. Workers claim jobs with a lease they keep renewing (a crashed
//! worker's jobs become claimable when the lease runs out); on PostgreSQL
//! the claim uses `FOR UPDATE SKIP LOCKED`, so N workers never run one job
//! twice. Jobs run in three priority lanes with their own worker slots, so
//! a flood of low-priority work cannot delay urgent work. After its last
//! attempt a job is dead: kept with its payload and error, replayable.

pub mod routes;
mod runner;

use crate::platform::tenancy::SystemScope;
use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, IntoActiveModel, QueryFilter,
    QueryTrait, Statement,
    sea_query::{Expr, UpdateStatement},
};
use serde::Serialize;
use tokio::sync::Notify;
use utoipa::ToSchema;
use uuid::Uuid;

pub use runner::{Runner, RunnerHandle};

use crate::platform::{db::storable, state::AppState};
use entity::job;

pub const PENDING: &str = "pending";
pub const RUNNING: &str = "running";
pub const COMPLETED: &str = "completed";
pub const DEAD: &str = "dead";

/// The three lanes, highest first.
pub const LANES: [Lane; 3] = [Lane::High, Lane::Default, Lane::Low];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    High,
    Default,
    Low,
}

impl Lane {
    /// Priority 8-10 is high, 3-7 default, 1-2 low.
    pub fn of(priority: i16) -> Lane {
        match priority {
            8.. => Lane::High,
            3..=7 => Lane::Default,
            _ => Lane::Low,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::High => "high",
            Lane::Default => "default",
            Lane::Low => "low",
        }
    }

    fn index(self) -> usize {
        match self {
            Lane::High => 0,
            Lane::Default => 1,
            Lane::Low => 2,
        }
    }
}

/// A job to enqueue.
pub struct NewJob {
    pub kind: &'static str,
    pub payload: serde_json::Value,
    pub tenant_id: Option<Uuid>,
    /// 1 (lowest) to 10 (highest); clamped.
    pub priority: i16,
    pub run_at: DateTime<Utc>,
    pub max_attempts: i32,
}

impl NewJob {
    pub fn new(kind: &'static str, payload: serde_json::Value) -> Self {
        Self { kind, payload, tenant_id: None, priority: 5, run_at: Utc::now(), max_attempts: 10 }
    }

    pub fn tenant(mut self, tenant_id: Uuid) -> Self {
        self.tenant_id = Some(tenant_id);
        self
    }

    pub fn priority(mut self, priority: i16) -> Self {
        self.priority = priority.clamp(1, 10);
        self
    }

    pub fn max_attempts(mut self, max_attempts: i32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }
}

fn model(id: Uuid, new: NewJob) -> job::Model {
    let now = Utc::now();
    job::Model {
        id,
        tenant_id: new.tenant_id,
        kind: new.kind.to_owned(),
        payload: new.payload,
        priority: new.priority,
        lane: Lane::of(new.priority).as_str().to_owned(),
        status: PENDING.to_owned(),
        attempts: 0,
        max_attempts: new.max_attempts,
        run_at: new.run_at,
        locked_by: None,
        locked_until: None,
        last_error: None,
        created_at: now,
        updated_at: now,
        finished_at: None,
    }
}

fn row(id: Uuid, new: NewJob) -> job::ActiveModel {
    queued(Lane::of(new.priority), new.run_at);
    model(id, new).into_active_model()
}

/// Write a job; call it with the transaction of the change that needs it.
pub async fn enqueue(db: &impl ConnectionTrait, new: NewJob) -> Result<Uuid, sea_orm::DbErr> {
    let id = Uuid::now_v7();
    job::Entity::insert(row(id, new)).exec_without_returning(db).await?;
    Ok(id)
}

/// The job a worker is running, for [`complete`] and [`enqueue_next`] to
/// act on from inside its handler.
struct Current {
    id: Uuid,
    worker: String,
    lease: Duration,
    completed: std::cell::Cell<bool>,
    next: std::cell::RefCell<Option<job::Model>>,
}

tokio::task_local! {
    static CURRENT: Current;
}

/// How a run left its job, besides its result.
#[derive(Default)]
pub(crate) struct Ran {
    /// The handler completed the job in its own transaction ([`complete`]).
    pub completed: bool,
    /// The job it queued to follow (already leased to this worker).
    pub next: Option<job::Model>,
}

/// Run `run`, the handler of the claimed `job`, as `worker`: what it does
/// through [`complete`] and [`enqueue_next`] is returned beside its output.
pub(crate) async fn running<T>(
    job: &job::Model,
    worker: &str,
    lease: Duration,
    run: impl std::future::Future<Output = T>,
) -> (T, Ran) {
    let current = Current {
        id: job.id,
        worker: worker.to_owned(),
        lease,
        completed: std::cell::Cell::new(false),
        next: std::cell::RefCell::new(None),
    };
    CURRENT
        .scope(current, async {
            let out = run.await;
            let ran = CURRENT.with(|c| Ran { completed: c.completed.get(), next: c.next.take() });
            (out, ran)
        })
        .await
}

/// Mark the running job completed in the handler's transaction `db`, so
/// its success commits with its work: one transaction fewer than the
/// worker recording it afterwards, and never the work without the mark.
/// The worker then records nothing when the handler returns `Ok` (should
/// the transaction roll back instead, the job keeps its lease and runs
/// again once it expires). Outside a job run it does nothing.
pub async fn complete(db: &impl ConnectionTrait) -> Result<(), sea_orm::DbErr> {
    let Some(job) = current() else { return Ok(()) };
    complete_all(db, &[job]).await?;
    completed();
    Ok(())
}

/// The job this task is running, for a transaction another task writes on
/// its behalf (group commit): that transaction marks it with
/// [`complete_all`], and this task calls [`completed`] once it committed.
#[derive(Clone, Debug)]
pub struct RunningJob {
    id: Uuid,
    worker: String,
    lease: Duration,
}

/// The job this task is running; `None` outside a job run.
pub fn current() -> Option<RunningJob> {
    CURRENT.try_with(|c| RunningJob { id: c.id, worker: c.worker.clone(), lease: c.lease }).ok()
}

/// [`complete`] for jobs run by other tasks, in one statement per worker.
pub async fn complete_all(db: &impl ConnectionTrait, jobs: &[RunningJob]) -> Result<(), sea_orm::DbErr> {
    for statement in completions(db.get_database_backend(), jobs) {
        db.execute(&statement).await?;
    }
    Ok(())
}

/// The statements of [`complete_all`], for a caller that runs them as part
/// of its own.
pub fn completions(backend: DbBackend, jobs: &[RunningJob]) -> Vec<UpdateStatement> {
    let mut by_worker: HashMap<&str, Vec<Uuid>> = HashMap::new();
    for job in jobs {
        by_worker.entry(job.worker.as_str()).or_default().push(job.id);
    }
    let now = Utc::now();
    by_worker
        .into_iter()
        .map(|(worker, ids)| {
            SystemScope
                .update_many::<job::Entity>()
                .col_expr(job::Column::Status, Expr::value(COMPLETED))
                .col_expr(job::Column::FinishedAt, Expr::value(now))
                .col_expr(job::Column::UpdatedAt, Expr::value(now))
                .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
                .col_expr(job::Column::LockedUntil, Expr::value(Option::<DateTime<Utc>>::None))
                .filter(crate::platform::db::one_of(backend, job::Column::Id, ids))
                .filter(job::Column::LockedBy.eq(worker))
                .into_query()
        })
        .collect()
}

/// Tell the worker that this task's job was marked completed in a
/// committed transaction ([`complete_all`]): it records nothing more.
pub fn completed() {
    let _ = CURRENT.try_with(|c| c.completed.set(true));
}

/// Write the jobs that continue running ones (the next step of a saga), in
/// the transaction `db` of their work, which may be written by another
/// task (group commit): each running job is [`complete_all`]d there, and
/// its follow-up written already leased to its worker (one multi-row
/// `INSERT`), which runs it as soon as its handler returns `Ok`, without a
/// claim, once its task handed it to [`adopt_next`] after the commit. A
/// follow-up is as durable as any other job: should the worker die first,
/// its lease runs out and any worker claims it.
pub async fn enqueue_next_all(
    db: &impl ConnectionTrait,
    next: Vec<(RunningJob, NewJob)>,
) -> Result<Vec<job::Model>, sea_orm::DbErr> {
    let running: Vec<RunningJob> = next.iter().map(|(job, _)| job.clone()).collect();
    complete_all(db, &running).await?;
    let models: Vec<job::Model> = next
        .into_iter()
        .map(|(job, new)| {
            let mut next = model(Uuid::now_v7(), new);
            next.status = RUNNING.to_owned();
            next.attempts = 1;
            next.locked_until = Some(next.created_at + job.lease);
            next.locked_by = Some(job.worker);
            next
        })
        .collect();
    crate::platform::db::insert_all(
        db,
        models.iter().cloned().map(IntoActiveModel::into_active_model).collect(),
    )
    .await?;
    Ok(models)
}

/// Tell the worker that its job was completed in a committed transaction
/// and that `next`, written there by [`enqueue_next_all`], is its to run.
pub fn adopt_next(next: job::Model) {
    let _ = CURRENT.try_with(|c| {
        c.completed.set(true);
        c.next.replace(Some(next));
    });
}

/// Write many jobs, a multi-row `INSERT` per [`INSERT_BATCH`](crate::platform::db::INSERT_BATCH).
pub async fn enqueue_many(db: &impl ConnectionTrait, jobs: Vec<NewJob>) -> Result<(), sea_orm::DbErr> {
    crate::platform::db::insert_all(db, jobs.into_iter().map(|new| row(Uuid::now_v7(), new)).collect()).await
}

/// The one `INSERT` of up to [`INSERT_BATCH`](crate::platform::db::INSERT_BATCH)
/// jobs, for a caller that sends it together with another statement; the
/// jobs count as queued by this task, as with [`enqueue_many`].
pub(crate) fn enqueue_statement(jobs: Vec<NewJob>) -> sea_orm::sea_query::InsertStatement {
    job::Entity::insert_many(jobs.into_iter().map(|new| row(Uuid::now_v7(), new))).into_query()
}

/// Enqueue a job under a fixed id, once: a second call with the same id
/// (from any instance) does nothing. For schedules: derive the id from the
/// job kind and its slot, see [`slot_id`].
pub async fn enqueue_once(db: &impl ConnectionTrait, id: Uuid, new: NewJob) -> Result<(), sea_orm::DbErr> {
    job::Entity::insert(row(id, new)).on_conflict_do_nothing().exec_without_returning(db).await?;
    Ok(())
}

/// A stable job id for `kind` at `slot` (e.g. a week), the same on every
/// instance.
pub fn slot_id(kind: &str, slot: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{kind}:{slot}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// How a run ended, when it did not succeed.
#[derive(Debug)]
pub enum JobError {
    /// Try again at `at` (or after the exponential backoff), unless this
    /// was the last attempt.
    Retry { error: String, at: Option<DateTime<Utc>> },
    /// Not worth retrying: the job goes dead at once.
    Fail(String),
    /// Not run now (e.g. a concurrency cap was reached): run again at `at`
    /// without counting an attempt.
    Defer(DateTime<Utc>),
}

impl JobError {
    pub fn retry(error: impl std::fmt::Display) -> Self {
        JobError::Retry { error: error.to_string(), at: None }
    }
}

impl From<sea_orm::DbErr> for JobError {
    fn from(err: sea_orm::DbErr) -> Self {
        JobError::retry(err)
    }
}

impl From<crate::error::ApiError> for JobError {
    fn from(err: crate::error::ApiError) -> Self {
        JobError::retry(err)
    }
}

/// The code that runs one kind of job.
#[async_trait::async_trait]
pub trait JobHandler: Send + Sync {
    async fn run(&self, state: &AppState, job: &job::Model) -> Result<(), JobError>;
}

/// Handlers by job kind, assembled once by the app constructor.
#[derive(Clone, Default)]
pub struct Registry(HashMap<&'static str, Arc<dyn JobHandler>>);

impl Registry {
    pub fn with(mut self, kind: &'static str, handler: impl JobHandler + 'static) -> Self {
        self.0.insert(kind, Arc::new(handler));
        self
    }

    pub fn insert(&mut self, kind: &'static str, handler: Arc<dyn JobHandler>) {
        self.0.insert(kind, handler);
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn JobHandler>> {
        self.0.get(kind)
    }
}

tokio::task_local! {
    /// The lanes (a bit each) of the due jobs this task (and the tasks it
    /// spawned with [`tracked`]) queued since it last woke the workers:
    /// within [`tracking_queued`].
    static QUEUED: Arc<std::sync::atomic::AtomicU8>;
}

/// Note a job queued for `lane`, due at `run_at`, for the next
/// [`Wakeup::wake`] of this task.
fn queued(lane: Lane, run_at: DateTime<Utc>) {
    if run_at <= Utc::now() {
        let _ = QUEUED.try_with(|q| q.fetch_or(1 << lane.index(), std::sync::atomic::Ordering::Relaxed));
    }
}

/// Run `work` (a request, a job run) keeping track of the lanes its jobs
/// were queued in, so that its [`Wakeup::wake`] wakes only those.
pub async fn tracking_queued<F: std::future::Future>(work: F) -> F::Output {
    QUEUED.scope(Arc::default(), work).await
}

/// `work`, for a task spawned by the current one: the jobs it queues count
/// as the current task's (see [`crate::platform::db::spawn_counted`]).
pub fn tracked<F: std::future::Future>(work: F) -> impl std::future::Future<Output = F::Output> {
    let queued = QUEUED.try_with(Arc::clone).ok();
    async move {
        match queued {
            Some(queued) => QUEUED.scope(queued, work).await,
            None => work.await,
        }
    }
}

/// Wakes this process's idle workers when work was committed, so they need
/// not wait for the next poll.
#[derive(Clone, Default)]
pub struct Wakeup(Arc<[Notify; 3]>);

impl Wakeup {
    /// Within [`tracking_queued`], wake the lanes of the due jobs this task
    /// queued since its last wake (none: no claim is made for nothing);
    /// elsewhere, every lane. Call it after the commit.
    pub fn wake(&self) {
        let lanes = QUEUED.try_with(|q| q.swap(0, std::sync::atomic::Ordering::Relaxed)).unwrap_or(u8::MAX);
        for lane in LANES {
            if lanes & 1 << lane.index() != 0 {
                // Kept until the lane's worker next waits, should it be
                // claiming right now: a wake-up is never lost.
                self.0[lane.index()].notify_one();
            }
        }
    }

    pub async fn wait(&self, lane: Lane) {
        self.0[lane.index()].notified().await;
    }
}

/// Claim up to `limit` runnable jobs of `lane` for `worker`: pending ones
/// whose time has come, and running ones whose lease expired, highest
/// priority first. Each kind is read in its order from its own partial
/// index (`ix_jobs_ready`, `ix_jobs_leased`), so a claim costs the same
/// with a backlog of millions as with an empty queue.
pub async fn claim(
    db: &impl ConnectionTrait,
    lane: Lane,
    limit: usize,
    worker: &str,
    lease: Duration,
) -> Result<Vec<job::Model>, sea_orm::DbErr> {
    let now = Utc::now();
    let backend = db.get_database_backend();
    // SQLite serialises writers, so the plain subquery is already exclusive.
    let lock = if backend == DbBackend::Postgres { "FOR UPDATE SKIP LOCKED" } else { "" };
    let sql = format!(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_by = $1, locked_until = $2, \
         updated_at = $3 WHERE id IN (SELECT id FROM (\
         SELECT id, priority, run_at FROM (SELECT id, priority, run_at FROM jobs \
         WHERE lane = $4 AND status = 'pending' AND run_at <= $3 ORDER BY priority DESC, run_at LIMIT $5 {lock}) AS ready \
         UNION ALL SELECT id, priority, run_at FROM (SELECT id, priority, run_at FROM jobs \
         WHERE lane = $4 AND status = 'running' AND locked_until < $3 ORDER BY locked_until LIMIT $5 {lock}) AS expired\
         ) AS due ORDER BY priority DESC, run_at LIMIT $5) RETURNING *"
    );
    let values = vec![
        worker.into(),
        (now + lease).into(),
        now.into(),
        lane.as_str().into(),
        i64::try_from(limit).unwrap_or(i64::MAX).into(),
    ];
    job::Model::find_by_statement(Statement::from_sql_and_values(backend, sql, values)).all(db).await
}

/// Take up to `limit` due jobs of `kind` that have not run yet, marked
/// completed in the caller's transaction `db`: for a handler that does
/// their work with its own, in that transaction (the dispatch of events,
/// a hundred at a time). Should the transaction roll back, they are
/// pending again. `kind` is written into the statement, so that a partial
/// index on it (`ix_jobs_dispatch_ready`) serves the read.
pub async fn take_due(
    db: &impl ConnectionTrait,
    kind: &'static str,
    limit: usize,
) -> Result<Vec<job::Model>, sea_orm::DbErr> {
    if !kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_') {
        return Err(sea_orm::DbErr::Custom(format!("job kind `{kind}` is not a plain name")));
    }
    let now = Utc::now();
    let backend = db.get_database_backend();
    let lock = if backend == DbBackend::Postgres { "FOR UPDATE SKIP LOCKED" } else { "" };
    let sql = format!(
        "UPDATE jobs SET status = 'completed', attempts = attempts + 1, finished_at = $1, updated_at = $1 \
         WHERE id IN (SELECT id FROM jobs WHERE kind = '{kind}' AND status = 'pending' AND attempts = 0 \
         AND run_at <= $1 ORDER BY priority DESC, run_at LIMIT $2 {lock}) RETURNING *"
    );
    let values = vec![now.into(), i64::try_from(limit).unwrap_or(i64::MAX).into()];
    job::Model::find_by_statement(Statement::from_sql_and_values(backend, sql, values)).all(db).await
}

/// Renew the lease of a job this worker holds.
pub async fn heartbeat(
    db: &impl ConnectionTrait,
    id: Uuid,
    worker: &str,
    lease: Duration,
) -> Result<(), sea_orm::DbErr> {
    SystemScope
        .update_many::<job::Entity>()
        .col_expr(job::Column::LockedUntil, Expr::value(Utc::now() + lease))
        .filter(job::Column::Id.eq(id))
        .filter(job::Column::LockedBy.eq(worker))
        .filter(job::Column::Status.eq(RUNNING))
        .exec(db)
        .await?;
    Ok(())
}

/// Record how a run ended. Only the worker holding the lease may.
pub async fn finish(
    db: &impl ConnectionTrait,
    job: &job::Model,
    worker: &str,
    result: Result<(), JobError>,
    backoff_base: Duration,
) -> Result<(), sea_orm::DbErr> {
    let now = Utc::now();
    let mut update = SystemScope
        .update_many::<job::Entity>()
        .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
        .col_expr(job::Column::LockedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .filter(job::Column::Id.eq(job.id))
        .filter(job::Column::LockedBy.eq(worker));
    let retry_at =
        |at: Option<DateTime<Utc>>| at.unwrap_or_else(|| now + backoff(backoff_base, job.attempts));
    update = match result {
        Ok(()) => update
            .col_expr(job::Column::Status, Expr::value(COMPLETED))
            .col_expr(job::Column::FinishedAt, Expr::value(now)),
        Err(JobError::Retry { error, at }) if job.attempts < job.max_attempts => update
            .col_expr(job::Column::Status, Expr::value(PENDING))
            .col_expr(job::Column::RunAt, Expr::value(retry_at(at)))
            .col_expr(job::Column::LastError, Expr::value(storable(error))),
        Err(JobError::Retry { error, .. } | JobError::Fail(error)) => update
            .col_expr(job::Column::Status, Expr::value(DEAD))
            .col_expr(job::Column::FinishedAt, Expr::value(now))
            .col_expr(job::Column::LastError, Expr::value(storable(error))),
        Err(JobError::Defer(at)) => update
            .col_expr(job::Column::Status, Expr::value(PENDING))
            .col_expr(job::Column::RunAt, Expr::value(at))
            .col_expr(job::Column::Attempts, attempts_minus_one()),
    };
    update.exec(db).await?;
    Ok(())
}

/// `attempts - 1`: a run that does not count.
fn attempts_minus_one() -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::ExprTrait;
    Expr::col(job::Column::Attempts).sub(1)
}

/// Give jobs this worker still holds back to the queue, uncounted (used at
/// shutdown for runs that did not finish within the grace period).
pub async fn release(db: &impl ConnectionTrait, ids: &[Uuid], worker: &str) -> Result<u64, sea_orm::DbErr> {
    let res = SystemScope
        .update_many::<job::Entity>()
        .col_expr(job::Column::Status, Expr::value(PENDING))
        .col_expr(job::Column::LockedBy, Expr::value(Option::<String>::None))
        .col_expr(job::Column::LockedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(job::Column::Attempts, attempts_minus_one())
        .filter(job::Column::Id.is_in(ids.iter().copied()))
        .filter(job::Column::LockedBy.eq(worker))
        .filter(job::Column::Status.eq(RUNNING))
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}

/// `base * 2^(attempt-1)`, capped at one hour.
pub fn backoff(base: Duration, attempt: i32) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(20);
    (base * 2_i32.pow(exp)).min(Duration::hours(1))
}

/// Put dead jobs back in the queue with fresh attempts: one (`id`), or all
/// of them (optionally of one kind). Returns how many.
pub async fn replay(
    db: &impl ConnectionTrait,
    id: Option<Uuid>,
    kind: Option<&str>,
) -> Result<u64, sea_orm::DbErr> {
    let now = Utc::now();
    let mut update = SystemScope
        .update_many::<job::Entity>()
        .col_expr(job::Column::Status, Expr::value(PENDING))
        .col_expr(job::Column::Attempts, Expr::value(0))
        .col_expr(job::Column::RunAt, Expr::value(now))
        .col_expr(job::Column::FinishedAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(job::Column::UpdatedAt, Expr::value(now))
        .filter(job::Column::Status.eq(DEAD));
    if let Some(id) = id {
        update = update.filter(job::Column::Id.eq(id));
    }
    if let Some(kind) = kind {
        update = update.filter(job::Column::Kind.eq(kind));
    }
    Ok(update.exec(db).await?.rows_affected)
}

/// Delete completed jobs that finished before `before` (dead ones stay).
pub async fn prune(db: &impl ConnectionTrait, before: DateTime<Utc>) -> Result<u64, sea_orm::DbErr> {
    let res = SystemScope
        .delete_many::<job::Entity>()
        .filter(job::Column::Status.eq(COMPLETED))
        .filter(job::Column::FinishedAt.lt(before))
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}

/// Queue health of one lane.
#[derive(Debug, Default, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "JobLaneStats")]
pub struct LaneStats {
    #[schema(example = "default")]
    pub lane: String,
    /// Pending and due now.
    pub ready: u64,
    /// Pending, due later (retries and scheduled jobs).
    pub scheduled: u64,
    pub running: u64,
    pub dead: u64,
    /// Seconds the oldest ready job has waited past its time.
    pub oldest_ready_age_seconds: Option<i64>,
    /// Completed in the last hour (completed jobs are kept for
    /// `jobs.retention_hours`).
    pub completed_last_hour: u64,
    /// Runs that failed and will be retried, in the queue now.
    pub retrying: u64,
}

#[derive(FromQueryResult)]
struct StatRow {
    lane: String,
    status: String,
    due: bool,
    retrying: bool,
    recent: bool,
    n: i64,
    oldest: Option<DateTime<Utc>>,
}

/// Depth per lane, age of the oldest ready job, throughput and failures.
pub async fn stats(db: &impl ConnectionTrait) -> Result<Vec<LaneStats>, sea_orm::DbErr> {
    let now = Utc::now();
    let sql = "SELECT lane, status, run_at <= $1 AS due, last_error IS NOT NULL AS retrying, \
               (finished_at IS NOT NULL AND finished_at >= $2) AS recent, COUNT(*) AS n, MIN(run_at) AS oldest \
               FROM jobs GROUP BY lane, status, run_at <= $1, last_error IS NOT NULL, \
               (finished_at IS NOT NULL AND finished_at >= $2)";
    let backend = db.get_database_backend();
    let rows = StatRow::find_by_statement(Statement::from_sql_and_values(
        backend,
        sql,
        vec![now.into(), (now - Duration::hours(1)).into()],
    ))
    .all(db)
    .await?;
    let mut by_lane: HashMap<String, LaneStats> = HashMap::new();
    for row in rows {
        let stats = by_lane.entry(row.lane.clone()).or_default();
        let n = u64::try_from(row.n).unwrap_or(0);
        match row.status.as_str() {
            PENDING if row.due => {
                stats.ready += n;
                let age = row.oldest.map(|t| (now - t).num_seconds().max(0));
                stats.oldest_ready_age_seconds = stats.oldest_ready_age_seconds.max(age);
            }
            PENDING => stats.scheduled += n,
            RUNNING => stats.running += n,
            DEAD => stats.dead += n,
            COMPLETED if row.recent => stats.completed_last_hour += n,
            _ => {}
        }
        if row.status == PENDING && row.retrying {
            stats.retrying += n;
        }
    }
    Ok(LANES
        .iter()
        .map(|lane| {
            let mut stats = by_lane.remove(lane.as_str()).unwrap_or_default();
            stats.lane = lane.as_str().to_owned();
            stats
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_map_to_lanes() {
        assert_eq!(Lane::of(10), Lane::High);
        assert_eq!(Lane::of(8), Lane::High);
        assert_eq!(Lane::of(7), Lane::Default);
        assert_eq!(Lane::of(3), Lane::Default);
        assert_eq!(Lane::of(2), Lane::Low);
        assert_eq!(Lane::of(1), Lane::Low);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::seconds(2);
        assert_eq!(backoff(base, 1), Duration::seconds(2));
        assert_eq!(backoff(base, 3), Duration::seconds(8));
        assert_eq!(backoff(base, 40), Duration::hours(1));
    }
}
