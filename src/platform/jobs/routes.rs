//! `/admin/jobs`: queue health, dead jobs and their replay, for operators
//! (super-admins: the queue is shared by every tenant).

use crate::platform::tenancy::SystemScope;
use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, Condition};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::{scope, service_config::ServiceConfig};
use uuid::Uuid;

use super::LaneStats;
use crate::{
    error::{ApiError, ApiResult, Problem},
    platform::{
        http::{ApiJson, Data, ListRequest, Paged, Sort, Validate, ok, one_of},
        rbac::{Authorized, JobsManage},
        state::AppState,
    },
};
use entity::job::{Column, Entity, Model};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(
        scope("/admin/jobs").service(job_stats).service(list_jobs).service(replay_one).service(replay_many),
    );
}

/// Depth per lane, age of the oldest ready job, throughput and failures.
#[utoipa::path(
    tag = "jobs",
    responses(
        (status = 200, description = "One entry per lane: high, default, low", body = Data<Vec<LaneStats>>),
        (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("/stats")]
async fn job_stats(_auth: Authorized<JobsManage>, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    Ok(ok(super::stats(&state.db).await?))
}

#[derive(Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "Job")]
pub struct JobView {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    #[schema(example = "webhook.deliver")]
    pub kind: String,
    pub payload: serde_json::Value,
    #[schema(example = 5)]
    pub priority: i16,
    #[schema(example = "default")]
    pub lane: String,
    /// `pending`, `running`, `completed` or `dead`.
    #[schema(example = "dead")]
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<Model> for JobView {
    fn from(m: Model) -> Self {
        Self {
            id: m.id,
            tenant_id: m.tenant_id,
            kind: m.kind,
            payload: m.payload,
            priority: m.priority,
            lane: m.lane,
            status: m.status,
            attempts: m.attempts,
            max_attempts: m.max_attempts,
            run_at: m.run_at,
            last_error: m.last_error,
            created_at: m.created_at,
            finished_at: m.finished_at,
        }
    }
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct JobListQuery {
        /// `pending`, `running`, `completed` or `dead` (default `dead`).
        #[param(pattern = "^(pending|running|completed|dead)$")]
        status: Option<String>,
        /// Job kind, e.g. `webhook.deliver`.
        kind: Option<String>,
    }
}

/// Jobs by status (dead ones by default), newest first.
#[utoipa::path(
    tag = "jobs",
    params(JobListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = Paged<JobView>),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("")]
async fn list_jobs(
    _auth: Authorized<JobsManage>,
    state: web::Data<AppState>,
    query: web::Query<JobListQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    Ok(HttpResponse::Ok().json(jobs(&state, q.status, q.kind, &list).await?))
}

/// A page of jobs with `status` (dead ones by default) and optionally of
/// `kind`, newest first. Shared by REST and GraphQL.
pub async fn jobs(
    state: &AppState,
    status: Option<String>,
    kind: Option<String>,
    list: &ListRequest,
) -> ApiResult<Paged<JobView>> {
    let status = status.unwrap_or_else(|| super::DEAD.to_owned());
    one_of("status", Some(&status), &[super::PENDING, super::RUNNING, super::COMPLETED, super::DEAD])?;
    let condition =
        Condition::all().add(Column::Status.eq(status)).add_option(kind.map(|kind| Column::Kind.eq(kind)));
    let newest = Sort { field: "created_at", column: Column::CreatedAt, desc: true };
    let jobs = list.fetch(&state.db, SystemScope.find::<Entity>(), condition, newest).await?;
    Ok(jobs.map(JobView::from))
}

#[derive(Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "ReplayedJobs")]
pub struct Replayed {
    /// Dead jobs queued again with fresh attempts.
    #[schema(example = 1)]
    replayed: u64,
}

/// Queue one dead job again with fresh attempts.
#[utoipa::path(
    tag = "jobs",
    responses(
        (status = 200, description = "Queued again", body = Data<Replayed>),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, description = "No dead job with this id", body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("/{id}/replay")]
async fn replay_one(
    _auth: Authorized<JobsManage>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    Ok(ok(replay_dead(&state, id.into_inner()).await?))
}

/// Queue the dead job `id` again; `not_found` unless it is dead. Shared by
/// REST and GraphQL.
pub async fn replay_dead(state: &AppState, id: Uuid) -> ApiResult<Replayed> {
    let replayed = super::replay(&state.db, Some(id), None).await?;
    if replayed == 0 {
        return Err(ApiError::not_found("dead job"));
    }
    state.wakeup.wake();
    Ok(Replayed { replayed })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Only dead jobs of this kind; all dead jobs when absent.
    #[schema(example = "webhook.deliver")]
    pub kind: Option<String>,
}

impl Validate for ReplayRequest {}

/// Queue every dead job (optionally of one kind) again.
#[utoipa::path(
    tag = "jobs",
    request_body = ReplayRequest,
    responses(
        (status = 200, description = "How many were queued again", body = Data<Replayed>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("/replay")]
async fn replay_many(
    _auth: Authorized<JobsManage>,
    state: web::Data<AppState>,
    body: ApiJson<ReplayRequest>,
) -> ApiResult<HttpResponse> {
    Ok(ok(body.0.run(&state).await?))
}

impl ReplayRequest {
    /// Queue every dead job (of `kind`, when given) again. Shared by REST
    /// and GraphQL.
    pub async fn run(self, state: &AppState) -> ApiResult<Replayed> {
        let replayed = super::replay(&state.db, None, self.kind.as_deref()).await?;
        state.wakeup.wake();
        Ok(Replayed { replayed })
    }
}
