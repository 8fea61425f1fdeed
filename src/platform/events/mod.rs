//! Domain events through a transactional outbox. [`publish`] writes the
//! event and a dispatch job in the caller's transaction, so an event exists
//! exactly when its change was committed. The dispatch job then, in one
//! transaction, fans the event out to the tenant's webhook endpoints and
//! enqueues one job per interested internal listener, so a listener that
//! fails is retried on its own without repeating the others.

pub mod routes;
pub mod stream;

use crate::platform::tenancy::SystemScope;
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use chrono::Utc;
use sea_orm::{
    ActiveValue::Set,
    ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter, QueryOrder, QueryTrait,
    sea_query::{CommonTableExpression, WithClause},
};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::ApiResult,
    platform::{
        combine::{Combiner, each_alone_on_failure},
        jobs::{self, JobError, JobHandler, NewJob},
        module::Modules,
        state::AppState,
        webhooks,
    },
};
use entity::{event, job};

/// A kind of event: its name, what it means, an example of its `data`.
pub struct EventType {
    pub name: &'static str,
    pub description: &'static str,
    /// 1-10: the lane its dispatch job runs in (deliveries run at their
    /// endpoint's priority).
    pub priority: i16,
    pub example: fn() -> Value,
}

/// Event types as constants, and their list `$list` (a module's `EVENTS`).
macro_rules! event_types {
    ($list:ident; $($ident:ident => $name:literal, $priority:literal, $description:literal, $example:expr;)*) => {
        $(pub const $ident: $crate::platform::events::EventType = $crate::platform::events::EventType {
            name: $name,
            description: $description,
            priority: $priority,
            example: || $example,
        };)*
        pub const $list: &[&$crate::platform::events::EventType] = &[$(&$ident),*];
    };
}
pub(crate) use event_types;

event_types! {
    PLATFORM_EVENTS;
    USER_CREATED => "user.created", 5, "A user was added to the tenant.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "email": "grace@example.com", "name": "Grace Hopper", "roles": ["manager"]});
    USER_DISABLED => "user.disabled", 7, "A user was disabled; their tokens stop working.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "email": "grace@example.com"});
    USER_ENABLED => "user.enabled", 5, "A disabled user was enabled again.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "email": "grace@example.com"});
    USER_ROLE_ASSIGNED => "user.role_assigned", 5, "A role was given to a user.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "role": "manager"});
    USER_ROLE_REMOVED => "user.role_removed", 5, "A role was taken from a user.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "role": "manager"});
    WEBHOOK_ENDPOINT_DISABLED => "webhook.endpoint_disabled", 8,
        "Nexus disabled a webhook endpoint: it answered 410 Gone, or failed without a success for too long.",
        json!({"endpoint_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "url": "https://example.com/hooks", "reason": "failing"});
    LICENSE_UPDATED => "license.updated", 7, "A super-admin or a signed key changed the tenant's license.",
        json!({"tier": "enterprise", "status": "active", "expires_at": "2027-11-22T00:00:00Z", "previous_tier": "professional"});
    LICENSE_EXPIRING => "license.expiring_soon", 7, "The license expires within the warning period (30 days).",
        json!({"tier": "professional", "state": "expiring_soon", "expires_at": "2026-12-22T00:00:00Z"});
    LICENSE_GRACE_STARTED => "license.grace_started", 8, "The license expired: the tenant is read-only for the grace period.",
        json!({"tier": "professional", "state": "grace", "expires_at": "2026-11-22T00:00:00Z"});
    LICENSE_EXPIRED => "license.expired", 8, "The grace period ended: only authentication and license endpoints answer.",
        json!({"tier": "professional", "state": "expired", "expires_at": "2026-11-08T00:00:00Z"});
    FEATURE_TOGGLED => "feature.toggled", 6, "A module or feature was switched for the tenant (or globally).",
        json!({"key": "feature.webhooks", "state": "disabled", "scope": "tenant"});
    WEBHOOK_TEST => "webhook.test", 9, "Sent by `POST /api/v1/webhooks/{id}/test`, to that endpoint only.",
        json!({"endpoint_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "message": "This is a test event from Nexus."});
}

/// Every event type of this build: the platform's and each module's.
#[derive(Clone)]
pub struct Catalogue(Arc<Vec<&'static EventType>>);

impl Catalogue {
    pub fn new(modules: &Modules) -> anyhow::Result<Self> {
        let types: Vec<&'static EventType> =
            PLATFORM_EVENTS.iter().copied().chain(modules.event_types()).collect();
        let mut seen = std::collections::HashSet::new();
        for t in &types {
            anyhow::ensure!(seen.insert(t.name), "event type `{}` is declared twice", t.name);
            anyhow::ensure!(
                t.name.split('.').count() == 2,
                "event type `{}` is not `resource.action`",
                t.name
            );
            anyhow::ensure!((1..=10).contains(&t.priority), "event type `{}`: priority is 1 to 10", t.name);
        }
        Ok(Self(Arc::new(types)))
    }

    pub fn iter(&self) -> impl Iterator<Item = &'static EventType> + '_ {
        self.0.iter().copied()
    }

    pub fn find(&self, name: &str) -> Option<&'static EventType> {
        self.iter().find(|t| t.name == name)
    }
}

pub const DISPATCH_JOB: &str = "event.dispatch";
pub const LISTENER_JOB: &str = "event.listener";

/// Record `event` for `tenant_id` in the caller's transaction, with the job
/// that will fan it out once committed.
pub async fn publish(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    event_type: &EventType,
    data: Value,
) -> Result<Uuid, sea_orm::DbErr> {
    let ids = publish_many(db, tenant_id, event_type, vec![data]).await?;
    Ok(ids[0])
}

/// [`publish`] for many events of one type: a multi-row `INSERT` for the
/// events and one dispatch job for up to a hundred of them.
pub async fn publish_many(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    event_type: &EventType,
    data: Vec<Value>,
) -> Result<Vec<Uuid>, sea_orm::DbErr> {
    if data.is_empty() {
        return Ok(Vec::new()); // an `INSERT` of no rows is not SQL
    }
    let now = Utc::now();
    let ids: Vec<Uuid> = data.iter().map(|_| Uuid::now_v7()).collect();
    let events = ids.iter().zip(data).map(|(id, data)| event::ActiveModel {
        id: Set(*id),
        tenant_id: Set(tenant_id),
        event_type: Set(event_type.name.to_owned()),
        data: Set(data),
        occurred_at: Set(now),
    });
    // One dispatch job for the lot (up to a batch): they are committed
    // together, so they can be fanned out together.
    let dispatches: Vec<NewJob> = ids
        .chunks(DISPATCH_BATCH)
        .map(|chunk| {
            let payload = match chunk {
                [id] => json!({ "event_id": id }),
                ids => json!({ "event_ids": ids }),
            };
            NewJob::new(DISPATCH_JOB, payload).tenant(tenant_id).priority(event_type.priority)
        })
        .collect();
    let backend = db.get_database_backend();
    if backend == DbBackend::Postgres && ids.len() <= crate::platform::db::INSERT_BATCH {
        // One round trip for both (every write that publishes makes it):
        // `WITH published AS (INSERT INTO events …) INSERT INTO jobs …`.
        // PostgreSQL runs a data-modifying CTE once, referenced or not.
        let events = event::Entity::insert_many(events).into_query();
        let cte = CommonTableExpression::new().query(events).table_name("published").to_owned();
        let both = jobs::enqueue_statement(dispatches).with(WithClause::new().cte(cte).to_owned());
        db.execute(&both).await?;
    } else {
        crate::platform::db::insert_all(db, events.collect()).await?;
        jobs::enqueue_many(db, dispatches).await?;
    }
    Ok(ids)
}

/// An event as integrators see it: the webhook body and the SSE `data`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope {
    #[serde(rename = "type")]
    #[schema(example = "user.created")]
    pub event_type: String,
    pub timestamp: chrono::DateTime<Utc>,
    pub tenant_id: Uuid,
    pub data: Value,
}

impl From<&event::Model> for Envelope {
    fn from(e: &event::Model) -> Self {
        Self {
            event_type: e.event_type.clone(),
            timestamp: e.occurred_at,
            tenant_id: e.tenant_id,
            data: e.data.clone(),
        }
    }
}

/// A cross-module reaction to events, run as its own durable job per event.
#[async_trait::async_trait]
pub trait Listener: Send + Sync {
    /// Unique and stable: it names the listener's jobs.
    fn name(&self) -> &'static str;
    fn wants(&self, event_type: &str) -> bool;
    /// Of `events` (each of a type it [`wants`](Listener::wants)), the ids
    /// of those it has work for. Asked once per dispatch batch, in its
    /// transaction, so that an event the listener would ignore (its tenant
    /// has nothing the listener serves) costs no job. By default, all.
    async fn relevant(
        &self,
        _db: &DatabaseTransaction,
        events: &[&event::Model],
    ) -> Result<Vec<Uuid>, sea_orm::DbErr> {
        Ok(events.iter().map(|e| e.id).collect())
    }
    async fn handle(&self, state: &AppState, event: &event::Model) -> Result<(), JobError>;
}

/// The listeners of this build, assembled by the app constructor.
pub type Listeners = Arc<Vec<Arc<dyn Listener>>>;

fn event_id(job: &job::Model) -> Result<Uuid, JobError> {
    job.payload
        .get("event_id")
        .and_then(Value::as_str)
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| JobError::Fail("payload has no event_id".to_owned()))
}

/// The events of a dispatch job: `event_id`, or `event_ids` for the
/// events of one [`publish_many`].
fn event_ids(job: &job::Model) -> Result<Vec<Uuid>, JobError> {
    let Some(ids) = job.payload.get("event_ids") else { return Ok(vec![event_id(job)?]) };
    serde_json::from_value::<Vec<Uuid>>(ids.clone())
        .ok()
        .filter(|ids| !ids.is_empty())
        .ok_or_else(|| JobError::Fail("payload has unreadable event_ids".to_owned()))
}

async fn load(state: &AppState, job: &job::Model) -> Result<event::Model, JobError> {
    let id = event_id(job)?;
    SystemScope
        .get::<event::Entity>(&state.db, id)
        .await?
        .ok_or_else(|| JobError::Fail(format!("event {id} is gone")))
}

/// Most events one dispatch job holds, and most dispatch jobs one
/// transaction takes (its runs' own and the due ones it takes with them).
const DISPATCH_BATCH: usize = 100;

/// `event.dispatch`: fan out its events (one, or those of one
/// [`publish_many`]) to webhooks and listeners, atomically.
///
/// The first runs of an instance are written together ([`Combiner`]): one
/// transaction takes every first run waiting and, up to a hundred in all,
/// the due dispatch jobs no worker holds yet ([`jobs::take_due`]), so a
/// burst of events costs a few statements a hundred jobs instead of a job
/// run each. One such transaction at a time per instance: side by side (a
/// backlog claimed by 64 workers at once), each took its due jobs stepping
/// over the rows the others held locked (`SKIP LOCKED`), 15 ms a take
/// instead of 2. A run whose events are gone fails alone; a retried run
/// goes alone, so an event that cannot be dispatched holds back no other.
pub struct Dispatch {
    firsts: Combiner<First, Result<Vec<event::Model>, JobError>>,
}

impl Default for Dispatch {
    fn default() -> Self {
        Self { firsts: Combiner::new(DISPATCH_BATCH) }
    }
}

/// A dispatch run's events and priority, and its job ([`jobs::current`]),
/// completed in the transaction that dispatches it.
#[derive(Clone)]
struct First {
    ids: Vec<Uuid>,
    priority: i16,
    job: Option<jobs::RunningJob>,
}

#[async_trait::async_trait]
impl JobHandler for Dispatch {
    async fn run(&self, state: &AppState, job: &job::Model) -> Result<(), JobError> {
        let first = First { ids: event_ids(job)?, priority: job.priority, job: jobs::current() };
        let events = if job.attempts > 1 {
            // Alone, and taking no due job with it.
            dispatch_runs(state, vec![first], false).await?.remove(0)?
        } else {
            let write = |batch| {
                let written = |batch| dispatch_runs(state, batch, true);
                each_alone_on_failure(batch, written, |err| Err(err.into()))
            };
            self.firsts.run(&(), first, write).await?
        };
        jobs::completed();
        // Outside the batch's turn: a stream's publish is a round trip.
        publish_live(state, &events).await;
        Ok(())
    }
}

/// Dispatch `batch` of runs, and with `with_due` the due jobs it takes
/// with it, in one transaction; each run's answer: the first run
/// dispatched gets the events to hand to the live streams, the others none.
async fn dispatch_runs(
    state: &AppState,
    batch: Vec<First>,
    with_due: bool,
) -> ApiResult<Vec<Result<Vec<event::Model>, JobError>>> {
    let txn = crate::platform::db::begin(&state.db).await?;
    let take = if with_due { DISPATCH_BATCH.saturating_sub(batch.len()) } else { 0 };
    let (gone, events) = dispatch(state, &txn, &batch, take).await?;
    let done: Vec<jobs::RunningJob> = batch
        .iter()
        .zip(&gone)
        .filter(|(_, gone)| gone.is_none())
        .filter_map(|(f, _)| f.job.clone())
        .collect();
    jobs::complete_all(&txn, &done).await?;
    txn.commit().await?;
    let mut events = Some(events);
    let answer = |gone: Option<Uuid>| match gone {
        Some(id) => Err(gone_error(id)),
        None => Ok(events.take().unwrap_or_default()),
    };
    Ok(gone.into_iter().map(answer).collect())
}

fn gone_error(id: Uuid) -> JobError {
    JobError::Fail(format!("event {id} is gone"))
}

/// Fan out the events of `runs` and of up to `take` due dispatch jobs, in `txn`: their webhook deliveries and
/// listener runs. Returns, per run, an event of it that is gone (the run is
/// then left out), and the events dispatched.
async fn dispatch(
    state: &AppState,
    txn: &DatabaseTransaction,
    runs: &[First],
    take: usize,
) -> Result<(Vec<Option<Uuid>>, Vec<event::Model>), sea_orm::DbErr> {
    // Each event's priority, for its listeners' runs.
    let mut priorities: HashMap<Uuid, i16> =
        runs.iter().flat_map(|run| run.ids.iter().map(|id| (*id, run.priority))).collect();
    if take > 0 {
        for other in jobs::take_due(txn, DISPATCH_JOB, take).await? {
            match event_ids(&other) {
                Ok(ids) => priorities.extend(ids.into_iter().map(|id| (id, other.priority))),
                Err(_) => tracing::error!(job = %other.id, "a dispatch job without event ids"),
            }
        }
    }
    let ids = priorities.keys().copied().collect();
    let mut events = SystemScope
        .find::<event::Entity>()
        .filter(crate::platform::db::one_of(txn.get_database_backend(), event::Column::Id, ids))
        .order_by_asc(event::Column::Id)
        .all(txn)
        .await?;
    let found: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    let gone: Vec<Option<Uuid>> =
        runs.iter().map(|run| run.ids.iter().find(|id| !found.contains(id)).copied()).collect();
    let left_out: HashSet<Uuid> = runs
        .iter()
        .zip(&gone)
        .filter(|(_, gone)| gone.is_some())
        .flat_map(|(run, _)| run.ids.iter().copied())
        .collect();
    events.retain(|e| !left_out.contains(&e.id));
    webhooks::fan_out(txn, &events).await?;
    let mut listened = Vec::new();
    for listener in state.listeners.iter() {
        let wanted: Vec<&event::Model> = events.iter().filter(|e| listener.wants(&e.event_type)).collect();
        if wanted.is_empty() {
            continue;
        }
        for id in listener.relevant(txn, &wanted).await? {
            let Some(event) = wanted.iter().find(|e| e.id == id) else { continue };
            let payload = json!({ "event_id": event.id, "listener": listener.name() });
            let mut run = NewJob::new(LISTENER_JOB, payload).tenant(event.tenant_id);
            if let Some(priority) = priorities.get(&event.id) {
                run = run.priority(*priority);
            }
            listened.push(run);
        }
    }
    jobs::enqueue_many(txn, listened).await?;
    Ok((gone, events))
}

/// Hand committed events to this instance's live streams (SSE, GraphQL
/// subscriptions).
async fn publish_live(state: &AppState, events: &[event::Model]) {
    for event in events {
        state.events.publish(event).await;
    }
}

/// `event.listener`: run one listener on one event.
pub struct RunListener;

#[async_trait::async_trait]
impl JobHandler for RunListener {
    async fn run(&self, state: &AppState, job: &job::Model) -> Result<(), JobError> {
        let name = job.payload.get("listener").and_then(Value::as_str).unwrap_or_default();
        let listener = state
            .listeners
            .iter()
            .find(|l| l.name() == name)
            .ok_or_else(|| JobError::Fail(format!("no listener `{name}` in this build")))?;
        let event = load(state, job).await?;
        listener.handle(state, &event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_catalogue_is_well_formed() {
        let catalogue = Catalogue::new(&Modules::default()).unwrap();
        assert!(catalogue.iter().all(|t| (t.example)().is_object()));
        assert!(catalogue.find("user.created").is_some());
    }
}
