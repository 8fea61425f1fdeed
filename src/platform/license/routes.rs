//! `/license` for tenant admins; `/admin/tenants/{id}/license` for
//! super-admins.

use crate::platform::tenancy::SystemScope;
use actix_web::{HttpResponse, get, post, put, web};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::{scope, service_config::ServiceConfig};
use uuid::Uuid;

use super::{Assignment, LicenseView, key};
use crate::{
    error::{ApiError, ApiResult, Code, FieldError, Problem},
    platform::{
        governance::usage,
        http::{ApiJson, Data, Validate, ok},
        rbac::{Authorized, LicenseRead, LicenseWrite, LicensesManage},
        state::AppState,
    },
};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(scope("/license").service(get_license).service(apply_key))
        .service(scope("/admin/tenants").service(admin_get_license).service(admin_assign_license));
}

#[derive(Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "LicenseUsage")]
pub struct Usage {
    #[schema(example = "2026-11")]
    period: String,
    /// API calls recorded this month (recorded every few seconds).
    calls: u64,
    /// Requests refused by the rate limits this month.
    rate_limited: u64,
}

#[derive(Serialize, ToSchema, async_graphql::SimpleObject)]
pub struct LicenseWithUsage {
    #[serde(flatten)]
    #[graphql(flatten)]
    license: LicenseView,
    usage: Usage,
}

async fn answer(state: &AppState, tenant_id: Uuid) -> ApiResult<LicenseWithUsage> {
    let gov = &state.governance;
    let license = super::find_or_start(&state.db, &gov.tiers, tenant_id).await?;
    let (stored, pending) = (usage::this_month(&state.db, tenant_id).await?, gov.usage.pending(tenant_id));
    let view = super::view(&license, &gov.tiers, Utc::now());
    let usage =
        Usage { period: usage::period(), calls: stored.0 + pending.0, rate_limited: stored.1 + pending.1 };
    Ok(LicenseWithUsage { license: view, usage })
}

/// The tenant's license: tier, state, dates, limits and this month's usage.
/// Answers in every license state, so an expired tenant can see why.
#[utoipa::path(
    tag = "license",
    responses(
        (status = 200, description = "The license", body = Data<LicenseWithUsage>),
        (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("")]
async fn get_license(auth: Authorized<LicenseRead>, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    Ok(ok(answer(&state, auth.tenant.id()).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyKey {
    /// A signed key from the vendor: `nexus1.<payload>.<signature>`.
    key: String,
}

impl Validate for ApplyKey {}

/// Apply a signed license key (issued offline by the vendor for this tenant).
#[utoipa::path(
    tag = "license",
    request_body = ApplyKey,
    responses(
        (status = 200, description = "The license after the key", body = Data<LicenseWithUsage>),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, description = "Not a valid key for this deployment and tenant", body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("/key")]
async fn apply_key(
    auth: Authorized<LicenseWrite>,
    state: web::Data<AppState>,
    body: ApiJson<ApplyKey>,
) -> ApiResult<HttpResponse> {
    let tenant = auth.tenant.id();
    super::apply(&state, tenant, &body.0.key).await?;
    Ok(ok(answer(&state, tenant).await?))
}

/// A tenant's license (super-admins).
#[utoipa::path(
    tag = "license",
    responses(
        (status = 200, description = "The license", body = Data<LicenseWithUsage>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("/{tenant_id}/license")]
async fn admin_get_license(
    _auth: Authorized<LicensesManage>,
    state: web::Data<AppState>,
    tenant_id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    Ok(ok(of_tenant(&state, tenant_id.into_inner()).await?))
}

/// Any tenant's license and usage, `not_found` for an unknown tenant.
/// Shared by REST and GraphQL.
pub async fn of_tenant(state: &AppState, tenant_id: Uuid) -> ApiResult<LicenseWithUsage> {
    let tenant_id = existing_tenant(state, tenant_id).await?;
    answer(state, tenant_id).await
}

impl Validate for Assignment {}

/// Set a tenant's tier, status, dates or limit overrides (super-admins).
#[utoipa::path(
    tag = "license",
    request_body = Assignment,
    responses(
        (status = 200, description = "The license", body = Data<LicenseWithUsage>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[put("/{tenant_id}/license")]
async fn admin_assign_license(
    _auth: Authorized<LicensesManage>,
    state: web::Data<AppState>,
    tenant_id: web::Path<Uuid>,
    body: ApiJson<Assignment>,
) -> ApiResult<HttpResponse> {
    Ok(ok(assign_to(&state, tenant_id.into_inner(), body.0).await?))
}

/// Apply `assignment` to any tenant's license; `not_found` for an unknown
/// tenant, `validation_failed` for an unknown tier or status or backwards
/// dates. Shared by REST and GraphQL.
pub async fn assign_to(
    state: &AppState,
    tenant_id: Uuid,
    assignment: Assignment,
) -> ApiResult<LicenseWithUsage> {
    let tenant_id = existing_tenant(state, tenant_id).await?;
    assignment.check(&state.governance.tiers).map_err(ApiError::validation)?;
    let txn = crate::platform::db::begin(&state.db).await?;
    super::assign(&txn, &state.governance.tiers, tenant_id, assignment, None).await?;
    sea_orm::TransactionSession::commit(txn).await?;
    state.governance.invalidate(Some(tenant_id)).await;
    answer(state, tenant_id).await
}

async fn existing_tenant(state: &AppState, id: Uuid) -> ApiResult<Uuid> {
    SystemScope
        .get::<entity::tenant::Entity>(&state.db, id)
        .await?
        .map(|t| t.id)
        .ok_or_else(super::unknown_tenant)
}

/// Verify `text` and apply it to `tenant`.
pub(super) fn verify_for(state: &AppState, tenant: Uuid, text: &str) -> ApiResult<key::Grant> {
    let invalid = |message: String| ApiError::validation(vec![FieldError::new("key", message)]);
    let grant = key::verify(&state.governance.license_key, text).map_err(|e| invalid(e.to_string()))?;
    if grant.tenant_id != tenant {
        return Err(invalid("the key was issued for another tenant".to_owned()));
    }
    if state.governance.tiers.get(&grant.tier).is_none() {
        return Err(ApiError::new(
            Code::ValidationFailed,
            format!("the key names an unknown tier `{}`", grant.tier),
        ));
    }
    Ok(grant)
}
