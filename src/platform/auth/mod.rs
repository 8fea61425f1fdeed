//! Authentication: bearer tokens (JWT, HS256) backed by a row in
//! `api_tokens`, so a token can be revoked. The [`Principal`] extractor
//! resolves the caller, its roles and the tenant it acts in; resolved
//! principals are cached briefly ([`cache`]), so revocation takes effect at
//! once on the instance that made it and within a second on every other.

pub mod cache;
pub mod password;
pub mod routes;
pub mod service;
pub mod throttle;

use std::{
    future::{Ready, ready},
    rc::Rc,
};

use actix_web::{
    FromRequest, HttpMessage, HttpRequest,
    body::MessageBody,
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::header,
    web,
};
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sea_orm::{ColumnTrait, QueryFilter, QuerySelect};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, Code},
    platform::{
        http::{Actor, record_actor},
        state::AppState,
        tenancy::{SystemScope, TenantScope},
    },
};

pub const TENANT_HEADER: &str = "x-tenant-id";

/// Signing keys for bearer tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: Uuid,
    /// Home tenant id.
    pub tid: Uuid,
    /// Token id: the `api_tokens` row.
    pub jti: Uuid,
    pub iat: i64,
    pub exp: i64,
}

impl TokenKeys {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "jti"]);
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    pub fn sign(&self, claims: &Claims) -> ApiResult<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(ApiError::internal)
    }

    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok().map(|data| data.claims)
    }
}

/// The SHA-256 of a bearer token: the key of its cached principal.
fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Tokens are stored only as their SHA-256, in hex.
pub fn token_hash(token: &str) -> String {
    hex::encode(token_digest(token))
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: Uuid,
    pub home_tenant_id: Uuid,
    /// The tenant this request acts in (the home tenant unless a
    /// super-admin switched with `X-Tenant-ID`).
    pub tenant: TenantScope,
    pub token_id: Uuid,
    pub is_super_admin: bool,
    /// Roles held in the acting tenant; shared, so that handing the
    /// principal to a request (from the cache, to the extractor) copies no
    /// string.
    pub roles: std::sync::Arc<[String]>,
}

fn unauthenticated(detail: &str) -> ApiError {
    ApiError::new(Code::Unauthenticated, detail)
}

fn bearer(req: &HttpRequest) -> ApiResult<Option<&str>> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| unauthenticated("the Authorization header is not valid ASCII"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(unauthenticated("the Authorization header must be `Bearer <token>`")),
    }
}

/// Resolve the caller of `req`, or `None` when no token was sent.
pub async fn authenticate_optional(state: &AppState, req: &HttpRequest) -> ApiResult<Option<Principal>> {
    let Some(token) = bearer(req)? else { return Ok(None) };
    authenticate(state, token, req.headers().get(TENANT_HEADER)).await.map(Some)
}

/// The caller of a bearer `token` value (`Authorization: Bearer <token>`)
/// as one that may be sent outside a header (a GraphQL subscription's
/// `connection_init`); `acting` is the `X-Tenant-ID` sent with it.
pub async fn authenticate_value(state: &AppState, value: &str, acting: Option<&str>) -> ApiResult<Principal> {
    let token = match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            token.trim()
        }
        _ => return Err(unauthenticated("the Authorization value must be `Bearer <token>`")),
    };
    let acting = acting
        .map(header::HeaderValue::from_str)
        .transpose()
        .map_err(|_| ApiError::new(Code::InvalidHeader, "X-Tenant-ID must be a tenant UUID"))?;
    authenticate(state, token, acting.as_ref()).await
}

async fn authenticate(
    state: &AppState,
    token: &str,
    acting: Option<&header::HeaderValue>,
) -> ApiResult<Principal> {
    let now = Utc::now();
    let digest = token_digest(token);
    // Cached per acting tenant; a malformed X-Tenant-ID takes the full path
    // (`resolve`), which reports it.
    let key = match acting.map(|v| v.to_str().ok().map(Uuid::parse_str)) {
        None => Some(cache::Key { token_digest: digest, acting: None }),
        Some(Some(Ok(id))) => Some(cache::Key { token_digest: digest, acting: Some(id) }),
        Some(_) => None,
    };
    // Boxed: its queries' futures are large, and only a miss runs them.
    let resolve = || Box::pin(resolve(state, token, digest, acting, now));
    match key {
        Some(key) => state.principals.get_or_resolve(key, now, resolve).await,
        None => resolve().await.map(|(_, principal)| principal),
    }
}

/// The caller of `token` (its SHA-256 `digest`), with its token's expiry:
/// the token verified, then its row, user, tenant and roles read.
async fn resolve(
    state: &AppState,
    token: &str,
    digest: [u8; 32],
    acting: Option<&header::HeaderValue>,
    now: chrono::DateTime<Utc>,
) -> ApiResult<(chrono::DateTime<Utc>, Principal)> {
    let claims =
        state.keys.verify(token).ok_or_else(|| unauthenticated("the token is invalid or has expired"))?;
    let hash = hex::encode(digest);
    let row = SystemScope.get::<entity::api_token::Entity>(&state.db, claims.jti).await?;
    let token_row = row
        .filter(|t| t.user_id == claims.sub && t.revoked_at.is_none() && t.expires_at > now)
        .filter(|t| t.token_hash == hash)
        .ok_or_else(|| unauthenticated("the token has been revoked or has expired"))?;
    let user = SystemScope
        .get::<entity::user::Entity>(&state.db, token_row.user_id)
        .await?
        .filter(|u| u.disabled_at.is_none())
        .ok_or_else(|| unauthenticated("the account is disabled"))?;

    let tenant_id = match acting {
        None => user.tenant_id,
        Some(_) if !user.is_super_admin => {
            return Err(ApiError::new(
                Code::Forbidden,
                "only a super-admin may act in another tenant with X-Tenant-ID",
            ));
        }
        Some(value) => {
            let id = value
                .to_str()
                .ok()
                .and_then(|v| Uuid::parse_str(v).ok())
                .ok_or_else(|| ApiError::new(Code::InvalidHeader, "X-Tenant-ID must be a tenant UUID"))?;
            SystemScope
                .get::<entity::tenant::Entity>(&state.db, id)
                .await?
                .ok_or_else(|| ApiError::not_found("tenant"))?
                .id
        }
    };
    let tenant = TenantScope::new(tenant_id);
    let roles: Vec<String> = tenant
        .find::<entity::user_role::Entity>()
        .filter(entity::user_role::Column::UserId.eq(user.id))
        .select_only()
        .column(entity::user_role::Column::Role)
        .into_tuple()
        .all(&state.db)
        .await?;
    let principal = Principal {
        user_id: user.id,
        home_tenant_id: user.tenant_id,
        tenant,
        token_id: token_row.id,
        is_super_admin: user.is_super_admin,
        roles: roles.into(),
    };
    Ok((token_row.expires_at, principal))
}

/// Why authentication failed, kept for the extractor to report: a public
/// route never looks at it.
#[derive(Clone)]
struct AuthFailure(Code, String);

/// Authenticate every request of the API scope once, before any extractor
/// runs, so the caller is known even when the body turns out to be invalid
/// (the audit log needs it). A bad token is only an error where a route
/// needs a [`Principal`].
pub async fn middleware<B, F>(
    req: ServiceRequest,
    next: impl FnOnce(ServiceRequest) -> F,
) -> Result<ServiceResponse<B>, actix_web::Error>
where
    B: MessageBody + 'static,
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        match authenticate_optional(state, req.request()).await {
            Ok(Some(principal)) => {
                record_actor(
                    req.request(),
                    Actor { tenant_id: principal.tenant.id(), user_id: principal.user_id },
                );
                req.extensions_mut().insert(Rc::new(principal));
            }
            Ok(None) => {}
            Err(err) => {
                req.extensions_mut().insert(AuthFailure(err.code, err.detail));
            }
        }
    }
    next(req).await
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let extensions = req.extensions();
        ready(if let Some(principal) = extensions.get::<Rc<Principal>>() {
            Ok(Principal::clone(principal))
        } else if let Some(AuthFailure(code, detail)) = extensions.get::<AuthFailure>() {
            Err(ApiError::new(*code, detail.clone()))
        } else {
            Err(unauthenticated("this endpoint needs `Authorization: Bearer <token>`"))
        })
    }
}
