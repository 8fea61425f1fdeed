//! The `webhook.deliver` job: one signed HTTP attempt of a delivery, its
//! record, and what follows (success, a retry on the schedule, giving up,
//! or disabling an endpoint that is gone or has failed for too long).
//!
//! The attempt is recorded (`sending`) and committed *before* the request
//! goes out, then completed with its outcome. A worker that dies in between
//! leaves it `sending`; the next run of the job (once the lease runs out)
//! marks it `interrupted` before sending again, so the log shows every
//! request a receiver may have seen.
//!
//! Concurrent deliveries share their database work (group commit, see
//! [`Combiner`]): their rows are read by one query, their attempts written
//! by one `INSERT`, and their outcomes by one transaction. Under load a
//! delivery costs a share of a few round trips and one commit, not seven
//! round trips and two commits of its own; alone, it is written at once.

use crate::platform::tenancy::SystemScope;
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration as StdDuration, Instant},
};

use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use reqwest::{
    StatusCode,
    dns::{Addrs, Name, Resolve, Resolving},
    header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT},
};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, JoinType, QueryFilter,
    QuerySelect, QueryTrait,
    sea_query::{CaseStatement, CommonTableExpression, Expr, WithClause},
};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::{
    ATTEMPT_FAILED, ATTEMPT_INTERRUPTED, ATTEMPT_SENDING, ATTEMPT_SUCCEEDED, DELIVERY_FAILED,
    DELIVERY_PENDING, DELIVERY_SUCCEEDED, signature, ssrf::UrlPolicy,
};
use crate::{
    config::{Config, WebhooksConfig},
    platform::{
        audit,
        combine::Combiner,
        db::one_of,
        events::{self, WEBHOOK_ENDPOINT_DISABLED},
        jobs::{self, JobError, JobHandler},
        state::AppState,
    },
};
use entity::{
    job, webhook_attempt as attempt, webhook_delivery as delivery_row, webhook_endpoint as endpoint,
};

/// Largest part of a receiver's answer that is kept.
const MAX_RESPONSE_BODY: usize = 4096;

/// The HTTP client for deliveries: no redirects (a 3xx could point inside),
/// no proxy from the environment, and a resolver that refuses non-public
/// addresses at connect time, so a DNS answer cannot change after the check.
pub fn client(config: &Config) -> anyhow::Result<reqwest::Client> {
    let policy = config.url_policy().map_err(anyhow::Error::msg)?;
    Ok(reqwest::Client::builder()
        .timeout(StdDuration::from_millis(config.webhooks.timeout_ms))
        .connect_timeout(StdDuration::from_millis(config.webhooks.timeout_ms.min(10_000)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver(policy)))
        .build()?)
}

struct GuardedResolver(UrlPolicy);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = policy.resolve_host(name.as_str(), 0).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// What the deliveries of this instance share: the in-flight slots per
/// endpoint, so one slow receiver cannot occupy every worker, and the
/// writers that combine their reads and writes. Each writer is one queue
/// (one shard): a batch takes whatever arrived while the previous one was
/// being written, so batches grow with the deliveries in flight (spread
/// over shards, they stayed small and throughput fell).
#[derive(Clone)]
pub struct Deliveries(Arc<Shared>);

struct Shared {
    slots: Mutex<HashMap<Uuid, Arc<Semaphore>>>,
    reads: Combiner<Uuid, Result<Option<(delivery_row::Model, endpoint::Model)>, String>>,
    starts: Combiner<attempt::ActiveModel, Result<(), String>>,
    ends: Combiner<Ended, Result<(), String>>,
}

/// The most deliveries one combined read or write takes.
const BATCH: usize = 100;

/// How long a delivery waits for one of its endpoint's slots before it is
/// put back for later: a fast receiver frees one within that, and a slow
/// one holds a waiting worker no longer.
const SLOT_PATIENCE: StdDuration = StdDuration::from_millis(100);

impl Default for Deliveries {
    fn default() -> Self {
        Self(Arc::new(Shared {
            slots: Mutex::default(),
            reads: Combiner::new(BATCH),
            starts: Combiner::new(BATCH),
            ends: Combiner::new(BATCH),
        }))
    }
}

impl Deliveries {
    async fn slot(&self, endpoint: Uuid, max: usize) -> Option<OwnedSemaphorePermit> {
        let semaphore = self
            .0
            .slots
            .lock()
            .ok()?
            .entry(endpoint)
            .or_insert_with(|| Arc::new(Semaphore::new(max)))
            .clone();
        tokio::time::timeout(SLOT_PATIENCE, semaphore.acquire_owned()).await.ok()?.ok()
    }

    /// The delivery and its endpoint; `None` once either was deleted.
    async fn read(
        &self,
        db: &DatabaseConnection,
        id: Uuid,
    ) -> Result<Option<(delivery_row::Model, endpoint::Model)>, JobError> {
        self.0.reads.run(&(), id, |ids| read_all(db, ids)).await.map_err(JobError::retry)
    }

    /// Write a first attempt, committed.
    async fn start(&self, db: &DatabaseConnection, row: attempt::ActiveModel) -> Result<(), JobError> {
        let write = |rows: Vec<attempt::ActiveModel>| async move {
            let n = rows.len();
            vec![crate::platform::db::insert_all(db, rows).await.map_err(|e| e.to_string()); n]
        };
        self.0.starts.run(&(), row, write).await.map_err(JobError::retry)
    }

    /// Record an attempt's outcome, committed.
    async fn end(&self, db: &DatabaseConnection, ended: Ended) -> Result<(), JobError> {
        let write = |batch: Vec<Ended>| async move {
            let n = batch.len();
            vec![write_ends(db, &batch).await.map_err(|e| e.to_string()); n]
        };
        self.0.ends.run(&(), ended, write).await.map_err(JobError::retry)
    }
}

/// The deliveries of `ids` with their endpoints, in the order of `ids`: one
/// query.
async fn read_all(
    db: &DatabaseConnection,
    ids: Vec<Uuid>,
) -> Vec<Result<Option<(delivery_row::Model, endpoint::Model)>, String>> {
    let backend = db.get_database_backend();
    let to_endpoint = delivery_row::Entity::belongs_to(endpoint::Entity)
        .from(delivery_row::Column::EndpointId)
        .to(endpoint::Column::Id)
        .into();
    let found = SystemScope
        .find::<delivery_row::Entity>()
        .join(JoinType::InnerJoin, to_endpoint)
        .select_also(endpoint::Entity)
        .filter(one_of(backend, delivery_row::Column::Id, ids.clone()))
        .all(db)
        .await;
    match found {
        Ok(rows) => {
            let pairs: HashMap<Uuid, (delivery_row::Model, endpoint::Model)> =
                rows.into_iter().filter_map(|(d, e)| Some((d.id, (d, e?)))).collect();
            ids.iter().map(|id| Ok(pairs.get(id).cloned())).collect()
        }
        Err(err) => vec![Err(err.to_string()); ids.len()],
    }
}

/// An attempt's outcome, to record with others in one transaction.
#[derive(Clone)]
struct Ended {
    attempt_id: Uuid,
    delivery_id: Uuid,
    number: i32,
    succeeded: bool,
    status_code: Option<i32>,
    duration_ms: i32,
    body: Option<String>,
    error: Option<String>,
    delivery_status: &'static str,
    retry_at: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
    /// The run's job, completed with the outcome when it is not retried.
    job: Option<jobs::RunningJob>,
    /// What the outcome says of its endpoint, when that changes it.
    endpoint: Option<(endpoint::Model, Health)>,
}

#[derive(Clone, Copy)]
enum Health {
    /// Answering again (or still, and its last success is to be refreshed).
    Healthy,
    /// Its first failure since it last answered.
    Failing,
    /// Gone (410) or failing for too long.
    Disable(&'static str),
}

/// `CASE WHEN key = k THEN v … END`: a column's value per row, for one
/// `UPDATE` of many rows.
fn per_row<C, V>(key: C, values: impl Iterator<Item = (Uuid, V)>) -> Expr
where
    C: ColumnTrait,
    V: Into<sea_orm::Value>,
{
    values.fold(CaseStatement::new(), |case, (k, v)| case.case(key.eq(k), Expr::val(v))).into()
}

/// Record the outcomes of `batch`, all or none: its endpoints' health, its
/// deliveries, its attempts, and its jobs that are done. On PostgreSQL, a
/// batch that changes no endpoint (most: a healthy endpoint's last success
/// is written once a second) is one statement, `WITH … UPDATE …`, where a
/// transaction would take five round trips.
async fn write_ends(db: &DatabaseConnection, batch: &[Ended]) -> Result<(), sea_orm::DbErr> {
    let backend = db.get_database_backend();
    // One change per endpoint: the latest outcome's, in the endpoints' order.
    let health: BTreeMap<Uuid, (&endpoint::Model, Health, DateTime<Utc>)> = batch
        .iter()
        .filter_map(|e| {
            e.endpoint.as_ref().map(|(endpoint, health)| (endpoint.id, (endpoint, *health, e.at)))
        })
        .collect();
    let by_delivery = |value: fn(&Ended) -> sea_orm::Value| {
        per_row(delivery_row::Column::Id, batch.iter().map(move |e| (e.delivery_id, value(e))))
    };
    let deliveries = SystemScope
        .update_many::<delivery_row::Entity>()
        .filter(one_of(backend, delivery_row::Column::Id, batch.iter().map(|e| e.delivery_id).collect()))
        .col_expr(delivery_row::Column::Attempts, by_delivery(|e| e.number.into()))
        .col_expr(delivery_row::Column::Status, by_delivery(|e| e.delivery_status.into()))
        .col_expr(delivery_row::Column::NextAttemptAt, by_delivery(|e| e.retry_at.into()))
        .col_expr(delivery_row::Column::LastStatusCode, by_delivery(|e| e.status_code.into()))
        .col_expr(delivery_row::Column::SucceededAt, by_delivery(|e| e.succeeded.then_some(e.at).into()))
        .col_expr(delivery_row::Column::UpdatedAt, by_delivery(|e| e.at.into()))
        .into_query();
    let by_attempt = |value: fn(&Ended) -> sea_orm::Value| {
        per_row(attempt::Column::Id, batch.iter().map(move |e| (e.attempt_id, value(e))))
    };
    let attempts = SystemScope
        .update_many::<attempt::Entity>()
        .filter(one_of(backend, attempt::Column::Id, batch.iter().map(|e| e.attempt_id).collect()))
        .col_expr(
            attempt::Column::State,
            by_attempt(|e| (if e.succeeded { ATTEMPT_SUCCEEDED } else { ATTEMPT_FAILED }).into()),
        )
        .col_expr(attempt::Column::StatusCode, by_attempt(|e| e.status_code.into()))
        .col_expr(attempt::Column::DurationMs, by_attempt(|e| e.duration_ms.into()))
        .col_expr(attempt::Column::ResponseBody, by_attempt(|e| e.body.clone().into()))
        .col_expr(attempt::Column::Error, by_attempt(|e| e.error.clone().into()))
        .into_query();
    let done: Vec<jobs::RunningJob> = batch.iter().filter_map(|e| e.job.clone()).collect();
    let mut after = vec![attempts];
    after.extend(jobs::completions(backend, &done));
    if backend == DbBackend::Postgres && health.is_empty() {
        // A data-modifying CTE runs once, read or not. PostgreSQL's executor
        // runs the main statement first and CTEs nobody reads after it, so
        // rows are locked in the order of the transaction below.
        let mut with = WithClause::new();
        for (i, statement) in after.into_iter().enumerate() {
            with.cte(CommonTableExpression::new().query(statement).table_name(format!("w{i}")).to_owned());
        }
        db.execute(&deliveries.with(with)).await?;
        return Ok(());
    }
    let txn = crate::platform::db::begin(db).await?;
    // Rows are locked in the order deleting an endpoint locks them (the
    // endpoint, its deliveries, their attempts), so the two cannot deadlock.
    for (endpoint, health, at) in health.into_values() {
        let update =
            SystemScope.update_many::<endpoint::Entity>().filter(endpoint::Column::Id.eq(endpoint.id));
        match health {
            Health::Healthy => {
                update
                    .col_expr(endpoint::Column::LastSuccessAt, Expr::value(at))
                    .col_expr(endpoint::Column::FailingSince, Expr::value(Option::<DateTime<Utc>>::None))
                    .exec(&txn)
                    .await?;
            }
            Health::Failing => {
                update.col_expr(endpoint::Column::FailingSince, Expr::value(at)).exec(&txn).await?;
            }
            Health::Disable(reason) => disable(&txn, endpoint, reason).await?,
        }
    }
    for statement in std::iter::once(deliveries).chain(after) {
        txn.execute(&statement).await?;
    }
    txn.commit().await
}

/// When to try again after failed attempt number `attempt` of a round
/// (1-based), or `None` when the schedule is exhausted. A receiver's
/// `Retry-After` wins when it asks for longer, up to `max_retry_after_ms`.
pub fn next_attempt(
    config: &WebhooksConfig,
    attempt: i32,
    retry_after: Option<StdDuration>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
    let base = *config.retry_schedule_ms.get(index)? as f64;
    let spread =
        if config.jitter > 0.0 { rand::rng().random_range(-config.jitter..=config.jitter) } else { 0.0 };
    let mut delay = (base * (1.0 + spread)).max(0.0) as u64;
    if let Some(asked) = retry_after {
        let asked = u64::try_from(asked.as_millis()).unwrap_or(u64::MAX).min(config.max_retry_after_ms);
        delay = delay.max(asked);
    }
    Some(now + Duration::milliseconds(i64::try_from(delay).unwrap_or(i64::MAX)))
}

/// `Retry-After` as seconds (the HTTP-date form is rare for webhooks and ignored).
fn retry_after(headers: &HeaderMap) -> Option<StdDuration> {
    headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(StdDuration::from_secs)
}

/// What one attempt produced.
struct Outcome {
    status: Option<StatusCode>,
    body: Option<String>,
    error: Option<String>,
    retry_after: Option<StdDuration>,
}

pub struct Deliver;

#[async_trait::async_trait]
impl JobHandler for Deliver {
    async fn run(&self, state: &AppState, job: &job::Model) -> Result<(), JobError> {
        let id = job
            .payload
            .get("delivery_id")
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok())
            .ok_or_else(|| JobError::Fail("payload has no delivery_id".to_owned()))?;
        let Some((delivery, endpoint)) = state.deliveries.read(&state.db, id).await? else {
            return Ok(()); // the endpoint was deleted with its deliveries
        };
        if delivery.status != DELIVERY_PENDING {
            return Ok(());
        }
        let config = &state.config.webhooks;
        let is_test = delivery.event_type == events::WEBHOOK_TEST.name;
        if !endpoint.enabled && !is_test {
            give_up(state, &delivery, "the endpoint is disabled").await?;
            return Ok(());
        }
        let Some(_slot) = state.deliveries.slot(endpoint.id, config.max_in_flight_per_endpoint).await else {
            return Err(JobError::Defer(Utc::now() + Duration::milliseconds(200)));
        };

        // Recorded and committed before the request goes out: if this
        // worker dies mid-request, the log still shows the attempt.
        let signed = sign(state, &endpoint, &delivery)?;
        let (attempt_id, number) = begin_attempt(state, job, &endpoint, &delivery, &signed.headers).await?;
        let started = Instant::now();
        let outcome = send(state, &endpoint, signed).await?;
        let elapsed = started.elapsed();
        let now = Utc::now();
        let succeeded = outcome.status.is_some_and(|s| s.is_success());
        let gone = outcome.status == Some(StatusCode::GONE);
        let retry_at = if succeeded || gone {
            None
        } else {
            next_attempt(config, job.attempts, outcome.retry_after, now)
        };
        let health = if succeeded {
            // Every delivery to an endpoint would otherwise queue on its row:
            // a healthy endpoint's last success is written once a second.
            let recent = endpoint.last_success_at.is_some_and(|at| now - at < Duration::seconds(1));
            (endpoint.failing_since.is_some() || !recent).then_some(Health::Healthy)
        } else if gone {
            Some(Health::Disable("gone"))
        } else if let Some(since) = endpoint.failing_since {
            let limit = Duration::hours(i64::from(config.disable_after_failing_hours));
            (endpoint.enabled && now - since >= limit).then_some(Health::Disable("failing"))
        } else {
            Some(Health::Failing)
        };
        let completes = retry_at.is_none();
        let ended = Ended {
            attempt_id,
            delivery_id: delivery.id,
            number,
            succeeded,
            status_code: outcome.status.map(|s| i32::from(s.as_u16())),
            duration_ms: i32::try_from(elapsed.as_millis()).unwrap_or(i32::MAX),
            body: outcome.body,
            error: outcome.error.clone(),
            delivery_status: match (succeeded, retry_at) {
                (true, _) => DELIVERY_SUCCEEDED,
                (false, Some(_)) => DELIVERY_PENDING,
                (false, None) => DELIVERY_FAILED,
            },
            retry_at,
            at: now,
            job: if completes { jobs::current() } else { None },
            endpoint: health.map(|health| (endpoint, health)),
        };
        state.deliveries.end(&state.db, ended).await?;
        if completes {
            jobs::completed();
        }

        match retry_at {
            Some(at) => Err(JobError::Retry {
                error: outcome.error.unwrap_or_else(|| "the receiver did not answer with a 2xx".to_owned()),
                at: Some(at),
            }),
            None => Ok(()),
        }
    }
}

/// A delivery signed for one attempt: the body and the headers to send.
struct Signed {
    body: Vec<u8>,
    msg_id: String,
    timestamp: i64,
    signature: String,
    /// The same headers, as the attempt log shows them.
    headers: Value,
}

/// Sign the delivery for this attempt (each attempt is signed afresh).
fn sign(
    state: &AppState,
    endpoint: &endpoint::Model,
    delivery: &delivery_row::Model,
) -> Result<Signed, JobError> {
    let body = serde_json::to_vec(&delivery.payload).map_err(|e| JobError::Fail(e.to_string()))?;
    let now = Utc::now();
    let mut secrets =
        vec![state.cipher.decrypt(&endpoint.secret).map_err(|e| JobError::Fail(e.to_string()))?];
    if let (Some(previous), Some(until)) = (&endpoint.previous_secret, endpoint.previous_secret_expires_at)
        && until > now
    {
        secrets.push(state.cipher.decrypt(previous).map_err(|e| JobError::Fail(e.to_string()))?);
    }
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let msg_id = delivery.event_id.to_string();
    let timestamp = now.timestamp();
    let signature = signature::signature_header(&secrets, &msg_id, timestamp, &body)
        .map_err(|e| JobError::Fail(e.to_string()))?;
    let headers = json!({
        "content-type": "application/json",
        "user-agent": USER_AGENT_VALUE,
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp.to_string(),
        "webhook-signature": signature,
    });
    Ok(Signed { body, msg_id, timestamp, signature, headers })
}

/// What the log says of an attempt whose worker stopped before its outcome
/// was recorded.
const INTERRUPTED: &str =
    "the worker stopped before the outcome was recorded: the receiver may have received this request";

/// Mark the attempts of a delivery still `sending` as `interrupted`: the
/// worker that wrote them died (the job ran again only after its lease).
async fn interrupt_stale(db: &impl sea_orm::ConnectionTrait, delivery_id: Uuid) -> Result<(), JobError> {
    SystemScope
        .update_many::<attempt::Entity>()
        .filter(attempt::Column::DeliveryId.eq(delivery_id))
        .filter(attempt::Column::State.eq(ATTEMPT_SENDING))
        .col_expr(attempt::Column::State, Expr::value(ATTEMPT_INTERRUPTED))
        .col_expr(attempt::Column::Error, Expr::value(INTERRUPTED))
        .exec(db)
        .await?;
    Ok(())
}

/// Record the attempt as `sending`, committed before the request goes out;
/// returns its id and number. The first attempt of a delivery that no run
/// has tried yet is one `INSERT`: nothing before it can have been cut off.
/// Otherwise an attempt a dead worker left `sending` is marked
/// `interrupted` first, in the same transaction, and the new one numbered
/// after it. The delivery counts the attempt when its outcome is recorded.
async fn begin_attempt(
    state: &AppState,
    job: &job::Model,
    endpoint: &endpoint::Model,
    delivery: &delivery_row::Model,
    headers: &Value,
) -> Result<(Uuid, i32), JobError> {
    let id = Uuid::now_v7();
    let row = |number: i32| attempt::ActiveModel {
        id: Set(id),
        tenant_id: Set(delivery.tenant_id),
        delivery_id: Set(delivery.id),
        endpoint_id: Set(endpoint.id),
        attempt: Set(number),
        url: Set(endpoint.url.clone()),
        request_headers: Set(headers.clone()),
        status_code: Set(None),
        duration_ms: Set(0),
        response_body: Set(None),
        error: Set(None),
        state: Set(ATTEMPT_SENDING.to_owned()),
        created_at: Set(Utc::now()),
    };
    if delivery.attempts == 0 && job.attempts <= 1 {
        state.deliveries.start(&state.db, row(1)).await?;
        return Ok((id, 1));
    }
    let txn = crate::platform::db::begin(&state.db).await?;
    interrupt_stale(&txn, delivery.id).await?;
    let last: Option<Option<i32>> = SystemScope
        .find::<attempt::Entity>()
        .select_only()
        .column_as(attempt::Column::Attempt.max(), "last")
        .filter(attempt::Column::DeliveryId.eq(delivery.id))
        .into_tuple()
        .one(&txn)
        .await?;
    let number = last.flatten().unwrap_or(0).max(delivery.attempts) + 1;
    attempt::Entity::insert(row(number)).exec_without_returning(&txn).await?;
    txn.commit().await?;
    Ok((id, number))
}

/// Send the signed delivery once.
async fn send(state: &AppState, endpoint: &endpoint::Model, signed: Signed) -> Result<Outcome, JobError> {
    let Signed { body, msg_id, timestamp, signature, .. } = signed;
    Ok(match state.config.url_policy().map_err(JobError::Fail)?.check_url(&endpoint.url) {
        Err(err) => Outcome { status: None, body: None, error: Some(err.to_string()), retry_after: None },
        Ok(url) => {
            let request = state
                .webhook_client
                .post(url)
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
                .header("webhook-id", msg_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body);
            match request.send().await {
                Ok(res) => {
                    let status = res.status();
                    let retry_after = retry_after(res.headers());
                    let body = read_prefix(res, MAX_RESPONSE_BODY).await;
                    let error = (!status.is_success()).then(|| format!("the receiver answered {status}"));
                    Outcome { status: Some(status), body: Some(body), error, retry_after }
                }
                Err(err) => {
                    Outcome { status: None, body: None, error: Some(describe(&err)), retry_after: None }
                }
            }
        }
    })
}

/// The first `max` bytes of a response body (as text that can be stored);
/// the rest is never read, so a huge answer costs nothing.
async fn read_prefix(mut res: reqwest::Response, max: usize) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < max {
        match res.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    bytes.truncate(max);
    crate::platform::db::storable(String::from_utf8_lossy(&bytes).into_owned())
}

const USER_AGENT_VALUE: &str = concat!("Nexus-Webhooks/", env!("CARGO_PKG_VERSION"));

/// A transport error with its cause chain (timeout, refused, DNS guard).
fn describe(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() { "timed out".to_owned() } else { err.to_string() };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// End a delivery without sending it.
async fn give_up(state: &AppState, delivery: &delivery_row::Model, why: &str) -> Result<(), JobError> {
    interrupt_stale(&state.db, delivery.id).await?;
    SystemScope
        .update_many::<delivery_row::Entity>()
        .filter(delivery_row::Column::Id.eq(delivery.id))
        .col_expr(delivery_row::Column::Status, Expr::value(DELIVERY_FAILED))
        .col_expr(delivery_row::Column::UpdatedAt, Expr::value(Utc::now()))
        .exec(&state.db)
        .await?;
    tracing::info!(delivery = %delivery.id, why, "delivery not sent");
    Ok(())
}

/// Disable an endpoint, with its event and an audit entry, in `txn`.
async fn disable(
    txn: &impl sea_orm::ConnectionTrait,
    endpoint: &endpoint::Model,
    reason: &str,
) -> Result<(), sea_orm::DbErr> {
    use sea_orm::sea_query::ExprTrait;
    let now = Utc::now();
    let changed = SystemScope
        .update_many::<endpoint::Entity>()
        .filter(endpoint::Column::Id.eq(endpoint.id))
        .filter(endpoint::Column::Enabled.eq(true))
        .col_expr(endpoint::Column::Enabled, Expr::value(false))
        .col_expr(endpoint::Column::DisabledReason, Expr::value(reason))
        .col_expr(endpoint::Column::Version, Expr::col(endpoint::Column::Version).add(1))
        .col_expr(endpoint::Column::UpdatedAt, Expr::value(now))
        .exec(txn)
        .await?;
    if changed.rows_affected == 0 {
        return Ok(()); // already disabled
    }
    let data = json!({ "endpoint_id": endpoint.id, "url": endpoint.url, "reason": reason });
    events::publish(txn, endpoint.tenant_id, &WEBHOOK_ENDPOINT_DISABLED, data.clone()).await?;
    audit::record_system(
        txn,
        endpoint.tenant_id,
        "webhook.endpoint_disabled",
        &format!("/api/v1/webhooks/{}", endpoint.id),
        data,
    )
    .await?;
    tracing::warn!(endpoint = %endpoint.id, reason, "webhook endpoint disabled");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(schedule: &[u64], jitter: f64) -> WebhooksConfig {
        WebhooksConfig {
            timeout_ms: 1000,
            retry_schedule_ms: schedule.to_vec(),
            jitter,
            max_retry_after_ms: 60_000,
            disable_after_failing_hours: 1,
            max_in_flight_per_endpoint: 1,
            rotation_overlap_hours: 24,
            allow_networks: vec![],
            allow_http: false,
        }
    }

    #[test]
    fn the_schedule_is_followed_with_bounded_jitter_then_ends() {
        let now = Utc::now();
        let c = config(&[5_000, 300_000], 0.2);
        for _ in 0..100 {
            let first = (next_attempt(&c, 1, None, now).unwrap() - now).num_milliseconds();
            assert!((4_000..=6_000).contains(&first), "{first}");
            let second = (next_attempt(&c, 2, None, now).unwrap() - now).num_milliseconds();
            assert!((240_000..=360_000).contains(&second), "{second}");
        }
        assert!(next_attempt(&c, 3, None, now).is_none());
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let now = Utc::now();
        let c = config(&[1_000], 0.0);
        let later = next_attempt(&c, 1, Some(StdDuration::from_secs(30)), now).unwrap();
        assert_eq!((later - now).num_milliseconds(), 30_000);
        let capped = next_attempt(&c, 1, Some(StdDuration::from_secs(86_400)), now).unwrap();
        assert_eq!((capped - now).num_milliseconds(), 60_000);
        let shorter = next_attempt(&c, 1, Some(StdDuration::from_secs(0)), now).unwrap();
        assert_eq!((shorter - now).num_milliseconds(), 1_000);
    }
}
