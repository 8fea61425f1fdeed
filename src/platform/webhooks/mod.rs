//! Outbound webhooks: tenant endpoints, fan-out of committed events into
//! deliveries, and their management (resend, recover, test). Delivery
//! itself (signing, SSRF guard, retries, attempt log) is in [`delivery`].

pub mod delivery;
pub mod graphql;
pub mod routes;
pub mod signature;
pub mod ssrf;

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    TransactionSession, TransactionTrait,
    sea_query::{Expr, OnConflict},
};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, Code, FieldError},
    platform::{
        events::{self, Envelope},
        http::{ListRequest, Paged, Sort},
        jobs::{self, NewJob},
        state::AppState,
        tenancy::{SystemScope, TenantScope},
        validate::{Checks, plain_text},
    },
};
use entity::{
    event, webhook_attempt as attempt, webhook_delivery as delivery_row, webhook_endpoint as endpoint,
};

pub const DELIVER_JOB: &str = "webhook.deliver";
pub const DELIVERY_PENDING: &str = "pending";
pub const DELIVERY_SUCCEEDED: &str = "succeeded";
pub const DELIVERY_FAILED: &str = "failed";

/// An attempt's state: written before the request goes out (`sending`),
/// completed with its outcome, or found cut off by a dead worker.
pub const ATTEMPT_SENDING: &str = "sending";
pub const ATTEMPT_SUCCEEDED: &str = "succeeded";
pub const ATTEMPT_FAILED: &str = "failed";
pub const ATTEMPT_INTERRUPTED: &str = "interrupted";

/// Whether an endpoint subscribed with `patterns` wants `event_type`:
/// `*` is everything, `order.*` every `order.` event, else exact.
pub fn matches(patterns: &[String], event_type: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => prefix.ends_with('.') && event_type.starts_with(prefix),
        None => p == event_type,
    })
}

/// A subscription pattern must name a known type or a wildcard matching one.
pub fn check_pattern(catalogue: &events::Catalogue, pattern: &str) -> Result<(), String> {
    let known = catalogue.iter().any(|t| matches(&[pattern.to_owned()], t.name));
    if known {
        Ok(())
    } else {
        Err(format!("`{pattern}` matches no event type; see GET /api/v1/webhooks/event-types"))
    }
}

/// Edge checks of an endpoint's fields (those given), REST and GraphQL alike.
pub fn check_endpoint(
    policy: &ssrf::UrlPolicy,
    catalogue: &events::Catalogue,
    url: Option<&str>,
    description: Option<&str>,
    event_types: Option<&[String]>,
    priority: Option<i16>,
) -> Result<(), Vec<FieldError>> {
    let mut checks = Checks::default();
    if let Some(url) = url {
        checks.check("url", policy.check_url(url).map(|_| ()).map_err(|e| e.to_string()));
    }
    if let Some(description) = description {
        checks.check("description", plain_text(description, 500));
    }
    if let Some(types) = event_types {
        if types.is_empty() {
            checks.check("event_types", Err("must name at least one event type (or `*`)".to_owned()));
        }
        for (i, pattern) in types.iter().enumerate() {
            checks.check(&format!("event_types[{i}]"), check_pattern(catalogue, pattern));
        }
    }
    if let Some(priority) = priority {
        let valid = (1..=10).contains(&priority);
        checks.check("priority", if valid { Ok(()) } else { Err("must be between 1 and 10".to_owned()) });
    }
    checks.finish()
}

/// An endpoint's subscriptions; a row whose list does not decode is an
/// error (retried, then a dead job), never an endpoint that wants nothing.
fn patterns(model: &endpoint::Model) -> Result<Vec<String>, sea_orm::DbErr> {
    serde_json::from_value(model.event_types.clone())
        .map_err(|e| sea_orm::DbErr::Json(format!("webhook endpoint {}: event_types: {e}", model.id)))
}

#[derive(Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "WebhookEndpoint", complex)]
pub struct EndpointView {
    pub id: Uuid,
    #[schema(example = "https://example.com/hooks/nexus")]
    pub url: String,
    #[schema(example = "Order sync")]
    pub description: String,
    #[schema(example = json!(["user.*"]))]
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// 1-10; 8 and above deliver in the high-priority lane.
    #[schema(example = 5)]
    pub priority: i16,
    /// Why Nexus disabled the endpoint: `gone` (it answered 410) or `failing`.
    pub disabled_reason: Option<String>,
    /// When the current run of failures began.
    pub failing_since: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// Optimistic-concurrency version: send it back in `If-Match`.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<endpoint::Model> for EndpointView {
    type Error = sea_orm::DbErr;

    fn try_from(m: endpoint::Model) -> Result<Self, Self::Error> {
        Ok(Self {
            event_types: patterns(&m)?,
            id: m.id,
            url: m.url,
            description: m.description,
            enabled: m.enabled,
            priority: m.priority,
            disabled_reason: m.disabled_reason,
            failing_since: m.failing_since,
            last_success_at: m.last_success_at,
            version: m.version,
            created_at: m.created_at,
            updated_at: m.updated_at,
        })
    }
}

/// An endpoint with its signing secret: shown once, at creation or rotation.
#[derive(Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "WebhookEndpointWithSecret")]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// `whsec_...`: verify signatures with it. Not shown again.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

/// A validated new endpoint.
pub struct NewEndpoint {
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub priority: i16,
}

/// Validated changes; `None` keeps the current value.
#[derive(Default)]
pub struct EndpointChanges {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub priority: Option<i16>,
}

async fn find(db: &impl ConnectionTrait, tenant: TenantScope, id: Uuid) -> ApiResult<endpoint::Model> {
    tenant.get::<endpoint::Entity>(db, id).await?.ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

pub async fn create(
    state: &AppState,
    tenant: TenantScope,
    new: NewEndpoint,
) -> ApiResult<EndpointWithSecret> {
    let secret = signature::generate_secret();
    let now = Utc::now();
    let model = endpoint::Entity::insert(endpoint::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant.id()),
        url: Set(new.url),
        description: Set(new.description),
        event_types: Set(json!(new.event_types)),
        enabled: Set(new.enabled),
        priority: Set(new.priority),
        secret: Set(state.cipher.encrypt(&secret)),
        previous_secret: Set(None),
        previous_secret_expires_at: Set(None),
        disabled_reason: Set(None),
        failing_since: Set(None),
        last_success_at: Set(None),
        version: Set(1),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_with_returning(&state.db)
    .await?;
    Ok(EndpointWithSecret { endpoint: model.try_into()?, secret })
}

pub async fn list(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    enabled: Option<bool>,
    list: &ListRequest,
) -> ApiResult<Paged<EndpointView>> {
    let condition = Condition::all().add_option(enabled.map(|e| endpoint::Column::Enabled.eq(e)));
    let newest = Sort { field: "created_at", column: endpoint::Column::CreatedAt, desc: true };
    let Paged { data, meta } = list.fetch(db, tenant.find::<endpoint::Entity>(), condition, newest).await?;
    Ok(Paged { data: data.into_iter().map(TryInto::try_into).collect::<Result<_, _>>()?, meta })
}

pub async fn get(db: &impl ConnectionTrait, tenant: TenantScope, id: Uuid) -> ApiResult<EndpointView> {
    Ok(find(db, tenant, id).await?.try_into()?)
}

/// Apply `changes` if the endpoint is still at `if_match` (when given).
/// Re-enabling clears the failure state.
pub async fn update(
    db: &impl TransactionTrait,
    tenant: TenantScope,
    id: Uuid,
    if_match: Option<i32>,
    changes: EndpointChanges,
) -> ApiResult<EndpointView> {
    let txn = crate::platform::db::begin(db).await?;
    let current = find(&txn, tenant, id).await?;
    crate::platform::http::check_version("endpoint", current.version, if_match)?;
    let mut update = tenant
        .update_many::<endpoint::Entity>()
        .filter(endpoint::Column::Id.eq(id))
        .filter(endpoint::Column::Version.eq(current.version))
        .col_expr(endpoint::Column::Version, Expr::value(current.version + 1))
        .col_expr(endpoint::Column::UpdatedAt, Expr::value(Utc::now()));
    if let Some(url) = changes.url {
        update = update.col_expr(endpoint::Column::Url, Expr::value(url));
    }
    if let Some(description) = changes.description {
        update = update.col_expr(endpoint::Column::Description, Expr::value(description));
    }
    if let Some(types) = changes.event_types {
        update = update.col_expr(endpoint::Column::EventTypes, Expr::value(json!(types)));
    }
    if let Some(priority) = changes.priority {
        update = update.col_expr(endpoint::Column::Priority, Expr::value(priority));
    }
    if let Some(enabled) = changes.enabled {
        update = update.col_expr(endpoint::Column::Enabled, Expr::value(enabled));
        if enabled {
            update = update
                .col_expr(endpoint::Column::DisabledReason, Expr::value(Option::<String>::None))
                .col_expr(endpoint::Column::FailingSince, Expr::value(Option::<DateTime<Utc>>::None));
        }
    }
    if update.exec(&txn).await?.rows_affected == 0 {
        return Err(crate::platform::http::changed_meanwhile("endpoint"));
    }
    let view = find(&txn, tenant, id).await?.try_into()?;
    txn.commit().await?;
    Ok(view)
}

pub async fn delete(db: &impl ConnectionTrait, tenant: TenantScope, id: Uuid) -> ApiResult<()> {
    let res = tenant.delete_many::<endpoint::Entity>().filter(endpoint::Column::Id.eq(id)).exec(db).await?;
    if res.rows_affected == 0 {
        return Err(ApiError::not_found("webhook endpoint"));
    }
    Ok(())
}

/// A new secret; the previous one keeps signing (a second signature) for
/// `webhooks.rotation_overlap_hours`, so receivers can switch without loss.
pub async fn rotate_secret(state: &AppState, tenant: TenantScope, id: Uuid) -> ApiResult<EndpointWithSecret> {
    let txn = crate::platform::db::begin(&state.db).await?;
    let current = find(&txn, tenant, id).await?;
    let secret = signature::generate_secret();
    let now = Utc::now();
    let overlap = Duration::hours(i64::from(state.config.webhooks.rotation_overlap_hours));
    let rotated = tenant
        .update_many::<endpoint::Entity>()
        .filter(endpoint::Column::Id.eq(id))
        .filter(endpoint::Column::Version.eq(current.version))
        .col_expr(endpoint::Column::Secret, Expr::value(state.cipher.encrypt(&secret)))
        .col_expr(endpoint::Column::PreviousSecret, Expr::value(current.secret))
        .col_expr(endpoint::Column::PreviousSecretExpiresAt, Expr::value(now + overlap))
        .col_expr(endpoint::Column::Version, Expr::value(current.version + 1))
        .col_expr(endpoint::Column::UpdatedAt, Expr::value(now))
        .exec(&txn)
        .await?;
    if rotated.rows_affected == 0 {
        return Err(ApiError::new(Code::Conflict, "the endpoint changed meanwhile; rotate again"));
    }
    let endpoint = find(&txn, tenant, id).await?.try_into()?;
    txn.commit().await?;
    Ok(EndpointWithSecret { endpoint, secret })
}

/// Create a delivery of each of `events` for every enabled endpoint of
/// its tenant that wants it and existed when it occurred, each with its
/// delivery job: a read of the tenants' endpoints, and when there are any,
/// one multi-row `INSERT` each for deliveries and jobs. Idempotent per event
/// and endpoint (a unique index; a delivery made already is skipped, with
/// its job), so a re-run of a dispatch sends nothing twice.
pub async fn fan_out(db: &impl ConnectionTrait, events: &[event::Model]) -> Result<usize, sea_orm::DbErr> {
    use crate::platform::db::{INSERT_BATCH, one_of};
    let backend = db.get_database_backend();
    let tenants: std::collections::BTreeSet<Uuid> = events.iter().map(|e| e.tenant_id).collect();
    let endpoints = SystemScope
        .find::<endpoint::Entity>()
        .filter(one_of(backend, endpoint::Column::TenantId, tenants.into_iter().collect()))
        .filter(endpoint::Column::Enabled.eq(true))
        .all(db)
        .await?;
    if endpoints.is_empty() {
        return Ok(0);
    }
    let subscribed =
        endpoints.iter().map(|e| Ok((e, patterns(e)?))).collect::<Result<Vec<_>, sea_orm::DbErr>>()?;
    let mut rows = Vec::new();
    // Each new delivery's job, queued once its row is in.
    let mut job_of = std::collections::HashMap::new();
    for event in events {
        let wanted = subscribed.iter().filter(|(endpoint, patterns)| {
            endpoint.tenant_id == event.tenant_id
                && endpoint.created_at <= event.occurred_at
                && matches(patterns, &event.event_type)
        });
        let mut payload = None;
        for (endpoint, _) in wanted {
            let payload = payload
                .get_or_insert_with(|| serde_json::to_value(Envelope::from(event)).unwrap_or_default());
            let row = delivery(endpoint, event.id, &event.event_type, payload.clone());
            job_of.insert(row.id, delivery_job(row.id, row.tenant_id, endpoint.priority));
            rows.push(delivery_row::ActiveModel::from(row));
        }
    }
    let mut jobs = Vec::new();
    while !rows.is_empty() {
        let rest = rows.split_off(rows.len().min(INSERT_BATCH));
        let mut insert = delivery_row::Entity::insert_many(std::mem::replace(&mut rows, rest))
            .on_conflict(
                OnConflict::columns([delivery_row::Column::EventId, delivery_row::Column::EndpointId])
                    .do_nothing()
                    .to_owned(),
            )
            .into_query();
        insert.returning_col(delivery_row::Column::Id);
        for inserted in db.query_all(&insert).await? {
            let id: Uuid = inserted.try_get("", "id")?;
            jobs.extend(job_of.remove(&id));
        }
    }
    let created = jobs.len();
    jobs::enqueue_many(db, jobs).await?;
    Ok(created)
}

/// A new delivery of an event to `endpoint`, not yet attempted.
fn delivery(
    endpoint: &endpoint::Model,
    event_id: Uuid,
    event_type: &str,
    payload: Value,
) -> delivery_row::Model {
    let now = Utc::now();
    delivery_row::Model {
        id: Uuid::now_v7(),
        tenant_id: endpoint.tenant_id,
        endpoint_id: endpoint.id,
        event_id,
        event_type: event_type.to_owned(),
        payload,
        status: DELIVERY_PENDING.to_owned(),
        attempts: 0,
        next_attempt_at: Some(now),
        last_status_code: None,
        created_at: now,
        updated_at: now,
        succeeded_at: None,
    }
}

/// Insert one delivery and the job that performs it.
async fn queue(
    db: &impl ConnectionTrait,
    endpoint: &endpoint::Model,
    event_id: Uuid,
    event_type: &str,
    payload: Value,
) -> Result<delivery_row::Model, sea_orm::DbErr> {
    let row = delivery(endpoint, event_id, event_type, payload);
    delivery_row::Entity::insert(delivery_row::ActiveModel::from(row.clone()))
        .exec_without_returning(db)
        .await?;
    jobs::enqueue(db, delivery_job(row.id, row.tenant_id, endpoint.priority)).await?;
    Ok(row)
}

/// The job of one delivery round: one attempt plus the scheduled retries.
fn delivery_job(delivery_id: Uuid, tenant_id: Uuid, priority: i16) -> NewJob {
    NewJob::new(DELIVER_JOB, json!({ "delivery_id": delivery_id }))
        .tenant(tenant_id)
        .priority(priority)
        // The delivery decides its own retries; this only bounds crashes.
        .max_attempts(i32::MAX)
}

#[derive(Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "WebhookDelivery", complex)]
pub struct DeliveryView {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    /// The `webhook-id` header: receivers de-duplicate on it.
    pub event_id: Uuid,
    #[schema(example = "user.created")]
    pub event_type: String,
    /// The exact body sent.
    pub payload: Value,
    /// `pending` (being delivered or waiting for a retry), `succeeded`, `failed`.
    #[schema(example = "succeeded")]
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub succeeded_at: Option<DateTime<Utc>>,
}

impl From<delivery_row::Model> for DeliveryView {
    fn from(m: delivery_row::Model) -> Self {
        Self {
            id: m.id,
            endpoint_id: m.endpoint_id,
            event_id: m.event_id,
            event_type: m.event_type,
            payload: m.payload,
            next_attempt_at: m.next_attempt_at.filter(|_| m.status == DELIVERY_PENDING),
            status: m.status,
            attempts: m.attempts,
            last_status_code: m.last_status_code,
            created_at: m.created_at,
            succeeded_at: m.succeeded_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "WebhookAttempt")]
pub struct AttemptView {
    pub id: Uuid,
    #[schema(example = 1)]
    pub attempt: i32,
    /// `sending`: recorded before the request went out, no outcome yet;
    /// `succeeded` (a 2xx); `failed`; `interrupted`: the worker stopped
    /// before recording the outcome, so the receiver may or may not have got
    /// the request (the delivery is sent again, with the same `webhook-id`).
    #[schema(example = "succeeded")]
    pub state: String,
    pub url: String,
    /// The headers sent, signatures included.
    pub request_headers: Value,
    /// None when no response arrived (timeout, connection refused, address
    /// refused) or the attempt has no outcome (`sending`, `interrupted`).
    #[schema(example = 200)]
    pub status_code: Option<i32>,
    /// None while `sending` and when `interrupted`.
    #[schema(example = 42)]
    pub duration_ms: Option<i32>,
    /// The first 4 KiB of the response body.
    pub response_body: Option<String>,
    pub error: Option<String>,
    /// When the request went out.
    pub created_at: DateTime<Utc>,
}

impl From<attempt::Model> for AttemptView {
    fn from(m: attempt::Model) -> Self {
        Self {
            id: m.id,
            attempt: m.attempt,
            duration_ms: [ATTEMPT_SUCCEEDED, ATTEMPT_FAILED]
                .contains(&m.state.as_str())
                .then_some(m.duration_ms),
            state: m.state,
            url: m.url,
            request_headers: m.request_headers,
            status_code: m.status_code,
            response_body: m.response_body,
            error: m.error,
            created_at: m.created_at,
        }
    }
}

pub async fn deliveries(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    endpoint_id: Uuid,
    status: Option<String>,
    list: &ListRequest,
) -> ApiResult<Paged<DeliveryView>> {
    let statuses = [DELIVERY_PENDING, DELIVERY_SUCCEEDED, DELIVERY_FAILED];
    crate::platform::http::one_of("status", status.as_deref(), &statuses)?;
    find(db, tenant, endpoint_id).await?;
    let condition = Condition::all()
        .add(delivery_row::Column::EndpointId.eq(endpoint_id))
        .add_option(status.map(|status| delivery_row::Column::Status.eq(status)));
    let newest = Sort { field: "created_at", column: delivery_row::Column::CreatedAt, desc: true };
    let scope = tenant.find::<delivery_row::Entity>();
    Ok(list.fetch(db, scope, condition, newest).await?.map(Into::into))
}

async fn find_delivery(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    endpoint_id: Uuid,
    id: Uuid,
) -> ApiResult<delivery_row::Model> {
    tenant
        .find_by_id::<delivery_row::Entity>(id)
        .filter(delivery_row::Column::EndpointId.eq(endpoint_id))
        .one(db)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))
}

pub async fn attempts(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    endpoint_id: Uuid,
    delivery_id: Uuid,
) -> ApiResult<Vec<AttemptView>> {
    find_delivery(db, tenant, endpoint_id, delivery_id).await?;
    let rows = tenant
        .find::<attempt::Entity>()
        .filter(attempt::Column::DeliveryId.eq(delivery_id))
        .order_by_asc(attempt::Column::Attempt)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Start a new delivery round for a delivery that has ended (succeeded or
/// failed); one still being retried answers 409.
pub async fn resend(
    state: &AppState,
    tenant: TenantScope,
    endpoint_id: Uuid,
    id: Uuid,
) -> ApiResult<DeliveryView> {
    let txn = crate::platform::db::begin(&state.db).await?;
    let endpoint = find(&txn, tenant, endpoint_id).await?;
    let row = find_delivery(&txn, tenant, endpoint_id, id).await?;
    if row.status == DELIVERY_PENDING {
        return Err(ApiError::new(
            Code::Conflict,
            "the delivery is still pending; it is retried on its schedule",
        ));
    }
    restart(&txn, &endpoint, &[row.id]).await?;
    let view = find_delivery(&txn, tenant, endpoint_id, id).await?.into();
    txn.commit().await?;
    state.wakeup.wake();
    Ok(view)
}

/// Resend every failed delivery of an endpoint created since `since`.
pub async fn recover(
    state: &AppState,
    tenant: TenantScope,
    endpoint_id: Uuid,
    since: DateTime<Utc>,
) -> ApiResult<u64> {
    let txn = crate::platform::db::begin(&state.db).await?;
    let endpoint = find(&txn, tenant, endpoint_id).await?;
    let ids: Vec<Uuid> = tenant
        .find::<delivery_row::Entity>()
        .filter(delivery_row::Column::EndpointId.eq(endpoint_id))
        .filter(delivery_row::Column::Status.eq(DELIVERY_FAILED))
        .filter(delivery_row::Column::CreatedAt.gte(since))
        .select_only()
        .column(delivery_row::Column::Id)
        .into_tuple()
        .all(&txn)
        .await?;
    restart(&txn, &endpoint, &ids).await?;
    txn.commit().await?;
    state.wakeup.wake();
    Ok(ids.len() as u64)
}

async fn restart(db: &impl ConnectionTrait, endpoint: &endpoint::Model, ids: &[Uuid]) -> ApiResult<()> {
    let now = Utc::now();
    TenantScope::new(endpoint.tenant_id)
        .update_many::<delivery_row::Entity>()
        .filter(delivery_row::Column::Id.is_in(ids.iter().copied()))
        .col_expr(delivery_row::Column::Status, Expr::value(DELIVERY_PENDING))
        .col_expr(delivery_row::Column::NextAttemptAt, Expr::value(now))
        .col_expr(delivery_row::Column::UpdatedAt, Expr::value(now))
        .exec(db)
        .await?;
    let jobs = ids.iter().map(|id| delivery_job(*id, endpoint.tenant_id, endpoint.priority));
    jobs::enqueue_many(db, jobs.collect()).await?;
    Ok(())
}

/// Send a `webhook.test` event to this endpoint only (enabled or not).
pub async fn send_test(state: &AppState, tenant: TenantScope, endpoint_id: Uuid) -> ApiResult<DeliveryView> {
    let txn = crate::platform::db::begin(&state.db).await?;
    let endpoint = find(&txn, tenant, endpoint_id).await?;
    let envelope = Envelope {
        event_type: events::WEBHOOK_TEST.name.to_owned(),
        timestamp: Utc::now(),
        tenant_id: tenant.id(),
        data: json!({ "endpoint_id": endpoint.id, "message": "This is a test event from Nexus." }),
    };
    let payload = serde_json::to_value(envelope).map_err(ApiError::internal)?;
    let row = queue(&txn, &endpoint, Uuid::now_v7(), events::WEBHOOK_TEST.name, payload).await?;
    txn.commit().await?;
    state.wakeup.wake();
    Ok(row.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exactly_by_prefix_or_all() {
        let p = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(matches(&p(&["*"]), "user.created"));
        assert!(matches(&p(&["user.*"]), "user.created"));
        assert!(!matches(&p(&["user.*"]), "users.created"));
        assert!(matches(&p(&["user.created"]), "user.created"));
        assert!(!matches(&p(&["user.created"]), "user.disabled"));
        assert!(!matches(&p(&["use*"]), "user.created"));
        assert!(!matches(&[], "user.created"));
    }

    #[test]
    fn patterns_must_match_the_catalogue() {
        let catalogue = events::Catalogue::new(&crate::platform::module::Modules::default()).unwrap();
        assert!(check_pattern(&catalogue, "user.*").is_ok());
        assert!(check_pattern(&catalogue, "*").is_ok());
        assert!(check_pattern(&catalogue, "user.created").is_ok());
        assert!(check_pattern(&catalogue, "usr.created").is_err());
        assert!(check_pattern(&catalogue, "nothing.*").is_err());
    }
}
