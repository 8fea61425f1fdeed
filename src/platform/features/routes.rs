//! `/features` for tenant admins; `/admin/features` for super-admins.

use actix_web::{HttpResponse, delete, get, put, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_actix_web::{scope, service_config::ServiceConfig};

use super::{Change, DEPRECATED, DISABLED, ENABLED, Effective, GLOBAL, REMOVED};
use crate::{
    error::{ApiError, ApiResult, Code, FieldError, Problem},
    platform::{
        http::{ApiJson, Data, Validate, ok},
        rbac::{Authorized, FeaturesManage, FeaturesRead, FeaturesWrite},
        state::AppState,
    },
};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(scope("/features").service(list_features).service(set_feature).service(clear_feature))
        .service(scope("/admin/features").service(set_global).service(clear_global));
}

pub async fn effective(state: &AppState, tenant: uuid::Uuid) -> ApiResult<Vec<Effective>> {
    let gov = &state.governance;
    let license = crate::platform::license::find_or_start(&state.db, &gov.tiers, tenant).await?;
    let toggles = super::toggles_of(&state.db, tenant).await?;
    Ok(super::evaluate_all(&gov.catalogue, &gov.tiers, &license.tier, &toggles, tenant, Utc::now()))
}

async fn one(state: &AppState, tenant: uuid::Uuid, key: &str) -> ApiResult<Effective> {
    effective(state, tenant).await?.into_iter().find(|e| e.key == key).ok_or_else(|| unknown(key))
}

fn unknown(key: &str) -> ApiError {
    ApiError::new(Code::NotFound, format!("no feature `{key}`; GET /api/v1/features lists them"))
}

/// Every module and feature key with its effective state for the tenant,
/// and why (default, global, tenant toggle, or the license).
#[utoipa::path(
    tag = "features",
    responses(
        (status = 200, description = "Every key", body = Data<Vec<Effective>>),
        (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("")]
async fn list_features(
    auth: Authorized<FeaturesRead>,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    Ok(ok(effective(&state, auth.tenant.id()).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantToggle {
    enabled: bool,
    /// From when the toggle applies (default: now).
    effective_at: Option<DateTime<Utc>>,
    /// Until when it applies (default: until changed).
    expires_at: Option<DateTime<Utc>>,
}

fn check_dates(effective_at: Option<DateTime<Utc>>, expires_at: Option<DateTime<Utc>>) -> ApiResult<()> {
    match (effective_at, expires_at) {
        (Some(from), Some(until)) if until <= from => {
            Err(ApiError::validation(vec![FieldError::new("expires_at", "must be after effective_at")]))
        }
        _ => Ok(()),
    }
}

impl Validate for TenantToggle {}

/// Switch a key on or off for the tenant, within what its license allows.
/// Takes effect from the next request, on every instance.
#[utoipa::path(
    tag = "features",
    request_body = TenantToggle,
    responses(
        (status = 200, description = "The key's effective state", body = Data<Effective>),
        (status = 401, body = Problem),
        (status = 403, description = "Not allowed, or beyond the license (`license_limit`)", body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[put("/{key}")]
async fn set_feature(
    auth: Authorized<FeaturesWrite>,
    state: web::Data<AppState>,
    key: web::Path<String>,
    body: ApiJson<TenantToggle>,
) -> ApiResult<HttpResponse> {
    let (key, body) = (key.into_inner(), body.0);
    let toggle =
        Toggle { enabled: body.enabled, effective_at: body.effective_at, expires_at: body.expires_at };
    Ok(ok(set_for_tenant(&state, auth.tenant.id(), auth.user_id, &key, toggle).await?))
}

/// A tenant admin's toggle of `key`.
pub struct Toggle {
    pub enabled: bool,
    pub effective_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Switch `key` for `tenant` within what its license allows (REST and
/// GraphQL); the key's new effective state.
pub async fn set_for_tenant(
    state: &AppState,
    tenant: uuid::Uuid,
    actor: uuid::Uuid,
    key: &str,
    toggle: Toggle,
) -> ApiResult<Effective> {
    let current = one(state, tenant, key).await?;
    check_dates(toggle.effective_at, toggle.expires_at)?;
    if toggle.enabled && current.source == "license" {
        return Err(ApiError::new(Code::LicenseLimit, current.reason));
    }
    if current.state == REMOVED {
        return Err(ApiError::new(Code::Gone, current.reason));
    }
    let state_name = if toggle.enabled { ENABLED } else { DISABLED }.to_owned();
    let change =
        Change { state: state_name, effective_at: toggle.effective_at, expires_at: toggle.expires_at };
    let txn = crate::platform::db::begin(&state.db).await?;
    super::set(&txn, tenant, key, change, actor).await?;
    sea_orm::TransactionSession::commit(txn).await?;
    state.governance.invalidate(Some(tenant)).await;
    one(state, tenant, key).await
}

/// Remove the tenant's own toggle: the key follows the global value or its default again.
#[utoipa::path(
    tag = "features",
    responses(
        (status = 200, description = "The key's effective state", body = Data<Effective>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
#[delete("/{key}")]
async fn clear_feature(
    auth: Authorized<FeaturesWrite>,
    state: web::Data<AppState>,
    key: web::Path<String>,
) -> ApiResult<HttpResponse> {
    Ok(ok(clear_for_tenant(&state, auth.tenant.id(), &key).await?))
}

/// Remove `tenant`'s own toggle of `key` (REST and GraphQL); the key's new
/// effective state.
pub async fn clear_for_tenant(state: &AppState, tenant: uuid::Uuid, key: &str) -> ApiResult<Effective> {
    one(state, tenant, key).await?;
    let txn = crate::platform::db::begin(&state.db).await?;
    super::clear(&txn, tenant, key).await?;
    sea_orm::TransactionSession::commit(txn).await?;
    state.governance.invalidate(Some(tenant)).await;
    one(state, tenant, key).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobalToggle {
    /// `enabled`, `disabled`, `deprecated` (on, with a warning) or `removed` (410).
    #[schema(example = "deprecated")]
    pub state: String,
    pub effective_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Validate for GlobalToggle {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        if [ENABLED, DISABLED, DEPRECATED, REMOVED].contains(&self.state.as_str()) {
            Ok(())
        } else {
            Err(vec![FieldError::new("state", "must be enabled, disabled, deprecated or removed")])
        }
    }
}

/// Set a key's global value for every tenant (super-admins). Tenants' own
/// toggles still win, except over `removed`.
#[utoipa::path(
    tag = "features",
    request_body = GlobalToggle,
    responses(
        (status = 204, description = "Set"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[put("/{key}")]
async fn set_global(
    auth: Authorized<FeaturesManage>,
    state: web::Data<AppState>,
    key: web::Path<String>,
    body: ApiJson<GlobalToggle>,
) -> ApiResult<HttpResponse> {
    body.0.run(&state, &key, auth.user_id).await?;
    Ok(crate::platform::http::no_content())
}

impl GlobalToggle {
    /// Set `key`'s global value, for every tenant. Shared by REST and GraphQL.
    pub async fn run(self, state: &AppState, key: &str, actor: uuid::Uuid) -> ApiResult<()> {
        if state.governance.catalogue.get(key).is_none() {
            return Err(unknown(key));
        }
        check_dates(self.effective_at, self.expires_at)?;
        let change =
            Change { state: self.state, effective_at: self.effective_at, expires_at: self.expires_at };
        let txn = crate::platform::db::begin(&state.db).await?;
        super::set(&txn, GLOBAL, key, change, actor).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        state.governance.invalidate(None).await;
        Ok(())
    }
}

/// Remove a key's global value: tenants follow the default again.
#[utoipa::path(
    tag = "features",
    responses(
        (status = 204, description = "Removed"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
#[delete("/{key}")]
async fn clear_global(
    _auth: Authorized<FeaturesManage>,
    state: web::Data<AppState>,
    key: web::Path<String>,
) -> ApiResult<HttpResponse> {
    clear_for_all(&state, &key).await?;
    Ok(crate::platform::http::no_content())
}

/// Remove `key`'s global value (`not_found` when it has none). Shared by
/// REST and GraphQL.
pub async fn clear_for_all(state: &AppState, key: &str) -> ApiResult<()> {
    let txn = crate::platform::db::begin(&state.db).await?;
    super::clear(&txn, GLOBAL, key).await?;
    sea_orm::TransactionSession::commit(txn).await?;
    state.governance.invalidate(None).await;
    Ok(())
}
