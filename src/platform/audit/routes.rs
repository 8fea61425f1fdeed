//! `GET /audit-logs`: the tenant's audit trail, for admins. Read-only by
//! design: there is no route that changes an entry.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, Condition, DatabaseConnection};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::{scope, service_config::ServiceConfig};
use uuid::Uuid;

use crate::{
    error::{ApiResult, Problem},
    platform::{
        http::{ListRequest, Paged, Sorts, parse_sort},
        rbac::{AuditRead, Authorized},
        state::AppState,
        tenancy::TenantScope,
    },
};

use entity::audit_log::{Column, Entity, Model};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(scope("/audit-logs").service(list_audit_logs));
}

#[derive(Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "AuditLogEntry")]
pub struct AuditLogView {
    pub id: Uuid,
    pub user_id: Option<Uuid>,
    #[schema(example = "POST")]
    pub method: String,
    /// The route template of a REST request; for a GraphQL mutation, the
    /// field it ran (`Mutation.disableUser`), one entry per field.
    #[schema(example = "/api/v1/users/{id}/disable")]
    pub route: String,
    pub path: String,
    #[schema(example = 200)]
    pub status: i32,
    pub request_id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The request body with secrets redacted.
    pub summary: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

impl From<Model> for AuditLogView {
    fn from(m: Model) -> Self {
        Self {
            id: m.id,
            user_id: m.user_id,
            method: m.method,
            route: m.route,
            path: m.path,
            status: m.status,
            request_id: m.request_id,
            ip: m.ip,
            user_agent: m.user_agent,
            summary: m.summary,
            created_at: m.created_at,
        }
    }
}

/// The audit trail: newest first unless sorted otherwise.
const AUDIT_SORTS: Sorts<Column> = Sorts {
    fields: &[("created_at", Column::CreatedAt), ("status", Column::Status)],
    default: "-created_at",
};

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct AuditQuery {
        /// `created_at` or `status`; prefix `-` for descending (default `-created_at`).
        #[param(pattern = "^-?(created_at|status)$")]
        sort: Option<String>,
        user_id: Option<Uuid>,
        /// Route template, e.g. `/api/v1/users`, or a GraphQL mutation field,
        /// e.g. `Mutation.createUser`.
        route: Option<String>,
        status: Option<i32>,
        /// Entries at or after this time (RFC 3339).
        from: Option<DateTime<Utc>>,
        /// Entries before this time (RFC 3339).
        to: Option<DateTime<Utc>>,
    }
}

/// The tenant's audit trail, newest first.
#[utoipa::path(
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, body = Paged<AuditLogView>),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("")]
async fn list_audit_logs(
    auth: Authorized<AuditRead>,
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    let filter = AuditFilter {
        sort: q.sort,
        user_id: q.user_id,
        route: q.route,
        status: q.status,
        from: q.from,
        to: q.to,
    };
    Ok(HttpResponse::Ok().json(list_entries(&state.db, auth.tenant, filter, &list).await?))
}

/// What to list of the trail; `sort` as the REST query has it.
#[derive(Default)]
pub struct AuditFilter {
    pub sort: Option<String>,
    pub user_id: Option<Uuid>,
    pub route: Option<String>,
    pub status: Option<i32>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// A page of the tenant's trail. Shared by REST and GraphQL.
pub async fn list_entries(
    db: &DatabaseConnection,
    tenant: TenantScope,
    f: AuditFilter,
    list: &ListRequest,
) -> ApiResult<Paged<AuditLogView>> {
    let sort = parse_sort(f.sort.as_deref(), &AUDIT_SORTS)?;
    let condition = Condition::all()
        .add_option(f.user_id.map(|user_id| Column::UserId.eq(user_id)))
        .add_option(f.route.map(|route| Column::Route.eq(route)))
        .add_option(f.status.map(|status| Column::Status.eq(status)))
        .add_option(f.from.map(|from| Column::CreatedAt.gte(from)))
        .add_option(f.to.map(|to| Column::CreatedAt.lt(to)));
    let entries = list.fetch(db, tenant.find::<Entity>(), condition, sort).await?;
    Ok(entries.map(AuditLogView::from))
}
