//! CORS per tenant (SR-003). A tenant admin lists the browser origins that
//! may call the API for the tenant. A preflight carries no token, so it is
//! answered for an origin that some tenant allows; the actual request then
//! gets `Access-Control-Allow-Origin` only when the caller's own tenant
//! allows the origin (the browser withholds the answer otherwise). An origin
//! nobody allows gets no CORS headers at all.

use crate::platform::tenancy::SystemScope;
use std::rc::Rc;

use actix_web::{
    Error, HttpMessage, HttpResponse,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    get,
    http::{
        Method,
        header::{self, HeaderMap, HeaderName, HeaderValue},
    },
    put, web,
};
use chrono::Utc;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::{scope, service_config::ServiceConfig};
use uuid::Uuid;

use crate::{
    error::{ApiResult, FieldError, Problem},
    platform::{
        auth::Principal,
        governance::Governed,
        http::{ApiJson, Data, Validate, ok},
        rbac::{Authorized, CorsWrite, TenantRead},
        state::AppState,
    },
};
use entity::cors_origin;

const ALLOWED_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
const ALLOWED_HEADERS: &str =
    "authorization, content-type, idempotency-key, if-match, last-event-id, x-request-id, x-tenant-id";
const EXPOSED_HEADERS: &str = "x-request-id, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset, \
                               retry-after, etag, idempotent-replayed, deprecation, sunset, link, x-license-warning, \
                               server-timing";

/// `scheme://host[:port]`, lower-cased, without a path: the form browsers
/// send in `Origin`.
pub fn normalize(origin: &str) -> Result<String, String> {
    let url = url::Url::parse(origin.trim()).map_err(|e| format!("not an origin: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http or https origin such as https://app.example.com".to_owned());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("must be scheme://host[:port] only, without a path".to_owned());
    }
    Ok(url.origin().ascii_serialization())
}

pub async fn origins_of(db: &impl ConnectionTrait, tenant: Uuid) -> Result<Vec<String>, sea_orm::DbErr> {
    let rows = SystemScope
        .find::<cors_origin::Entity>()
        .filter(cors_origin::Column::TenantId.eq(tenant))
        .order_by_asc(cors_origin::Column::Origin)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|r| r.origin).collect())
}

async fn allowed_by_any(db: &impl ConnectionTrait, origin: &str) -> bool {
    SystemScope
        .find::<cors_origin::Entity>()
        .filter(cors_origin::Column::Origin.eq(origin))
        .count(db)
        .await
        .is_ok_and(|n| n > 0)
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn allow(headers: &mut HeaderMap, origin: &str) {
    set(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
}

/// Answers differ by `Origin`: say so to caches, allowed or not.
fn vary(headers: &mut HeaderMap) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

pub async fn middleware<B, F>(
    req: ServiceRequest,
    next: impl FnOnce(ServiceRequest) -> F,
) -> Result<ServiceResponse<BoxBody>, Error>
where
    B: MessageBody + 'static,
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let (Some(origin), Some(state)) = (origin, state) else {
        return next(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut res = HttpResponse::NoContent().finish();
        vary(res.headers_mut());
        if allowed_by_any(&state.db, &origin).await {
            let headers = res.headers_mut();
            allow(headers, &origin);
            set(headers, header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS);
            set(headers, header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS);
            set(headers, header::ACCESS_CONTROL_MAX_AGE, "600");
        }
        return Ok(req.into_response(res));
    }
    let mut res = next(req).await?.map_into_boxed_body();
    vary(res.headers_mut());
    let allowed = {
        let request = res.request();
        let governed = request.extensions().get::<Rc<Governed>>().cloned();
        let principal = request.extensions().get::<Rc<Principal>>().cloned();
        match (governed, principal) {
            (Some(governed), _) => governed.snapshot.cors_origins.contains(&origin),
            // Authenticated but refused before governance ran (401, 403, 429).
            (None, Some(principal)) => {
                origins_of(&state.db, principal.tenant.id()).await.is_ok_and(|o| o.contains(&origin))
            }
            // Not signed in (login, registration): any tenant's origin.
            (None, None) => allowed_by_any(&state.db, &origin).await,
        }
    };
    if allowed {
        let headers = res.headers_mut();
        allow(headers, &origin);
        set(headers, header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED_HEADERS);
    }
    Ok(res)
}

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(scope("/cors-origins").service(get_origins).service(put_origins));
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Origins {
    /// Browser origins allowed to call the API for this tenant: absolute
    /// `scheme://host[:port]`, http or https, no path.
    #[schema(example = json!(["https://app.example.com", "http://localhost:3000"]))]
    pub origins: Vec<String>,
}

impl Validate for Origins {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let errors: Vec<FieldError> = self
            .origins
            .iter()
            .enumerate()
            .filter_map(|(i, o)| normalize(o).err().map(|e| FieldError::new(format!("origins[{i}]"), e)))
            .chain((self.origins.len() > 100).then(|| FieldError::new("origins", "at most 100 origins")))
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

/// The browser origins allowed to call the API for the tenant.
#[utoipa::path(
    tag = "cors",
    responses(
        (status = 200, description = "The allowed origins", body = Data<Origins>),
        (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("")]
async fn get_origins(auth: Authorized<TenantRead>, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    Ok(ok(Origins { origins: origins_of(&state.db, auth.tenant.id()).await? }))
}

/// Replace the tenant's allowed origins; applies from the next request.
#[utoipa::path(
    tag = "cors",
    request_body = Origins,
    responses(
        (status = 200, description = "The allowed origins", body = Data<Origins>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[put("")]
async fn put_origins(
    auth: Authorized<CorsWrite>,
    state: web::Data<AppState>,
    body: ApiJson<Origins>,
) -> ApiResult<HttpResponse> {
    Ok(ok(body.0.save(&state, auth.tenant.id()).await?))
}

impl Origins {
    /// Replace `tenant`'s allowed origins with these (normalized, sorted,
    /// without duplicates). Shared by REST and GraphQL.
    pub async fn save(self, state: &AppState, tenant: Uuid) -> ApiResult<Origins> {
        let mut origins: Vec<String> = self.origins.iter().filter_map(|o| normalize(o).ok()).collect();
        origins.sort();
        origins.dedup();
        let txn = crate::platform::db::begin(&state.db).await?;
        SystemScope
            .delete_many::<cors_origin::Entity>()
            .filter(cors_origin::Column::TenantId.eq(tenant))
            .exec(&txn)
            .await?;
        let now = Utc::now();
        for origin in &origins {
            let row = cors_origin::ActiveModel {
                tenant_id: Set(tenant),
                origin: Set(origin.clone()),
                created_at: Set(now),
            };
            cors_origin::Entity::insert(row).exec_without_returning(&txn).await?;
        }
        sea_orm::TransactionSession::commit(txn).await?;
        state.governance.invalidate(Some(tenant)).await;
        Ok(Origins { origins })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert_eq!(normalize("https://App.Example.com").unwrap(), "https://app.example.com");
        assert_eq!(normalize("http://localhost:3000").unwrap(), "http://localhost:3000");
        assert_eq!(normalize("https://example.com:443").unwrap(), "https://example.com");
        for bad in
            ["*", "example.com", "https://example.com/app", "ftp://example.com", "https://u:p@example.com"]
        {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }
}
