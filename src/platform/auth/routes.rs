//! `/auth`: register, login, logout, the caller, and personal API tokens.

use actix_web::{HttpRequest, HttpResponse, delete, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::{scope, service_config::ServiceConfig};
use uuid::Uuid;

use super::{
    Principal,
    service::{self, IssuedToken, Login, Registration, TokenView},
    throttle,
};
use crate::{
    error::{ApiResult, FieldError, Problem},
    platform::{
        http::{Actor, ApiJson, Data, Validate, created, no_content, ok, record_actor},
        state::AppState,
        users::{self, TenantView, UserView},
        validate::{self, Checks},
    },
};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(
        scope("/auth")
            .service(register)
            .service(login)
            .service(logout)
            .service(me)
            .service(list_tokens)
            .service(create_token)
            .service(revoke_token),
    );
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(min_length = 1, max_length = 200, example = "Acme Trading")]
    tenant_name: String,
    /// URL-safe tenant handle used to log in; derived from the name if absent.
    #[schema(example = "acme")]
    tenant_slug: Option<String>,
    #[schema(min_length = 1, max_length = 200, example = "Ada Lovelace")]
    name: String,
    #[schema(example = "ada@example.com")]
    email: String,
    /// At least 12 characters, mixing letters with digits or symbols.
    #[schema(example = "correct horse 42", min_length = 12, max_length = 128)]
    password: String,
}

impl RegisterRequest {
    fn slug(&self) -> String {
        self.tenant_slug.clone().unwrap_or_else(|| validate::slugify(&self.tenant_name))
    }
}

impl Validate for RegisterRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        Checks::default()
            .check("tenant_name", validate::name(&self.tenant_name))
            .check("tenant_slug", validate::slug(&self.slug()))
            .check("name", validate::name(&self.name))
            .check("email", validate::email(&self.email))
            .check("password", validate::password(&self.password))
            .finish()
    }
}

#[derive(Serialize, ToSchema)]
pub struct RegisterResponse {
    tenant: TenantView,
    user: UserView,
    token: IssuedToken,
}

/// Create a tenant and its owner (role `admin`); returns a session token.
#[utoipa::path(
    tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Tenant, owner and a token", body = Data<RegisterResponse>),
        (status = 409, description = "Tenant slug taken", body = Problem),
        (status = 422, description = "Invalid fields", body = Problem),
        (status = 429, description = "Too many attempts from this address (see Retry-After)", body = Problem),
        (status = 503, description = "Too many sign-ins at once; retry after Retry-After", body = Problem),
    )
)]
#[post("/register")]
async fn register(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: ApiJson<RegisterRequest>,
) -> ApiResult<HttpResponse> {
    throttle::attempt(&state, &req, None).await?;
    let body = body.0;
    let input = Registration {
        tenant_slug: body.slug(),
        tenant_name: body.tenant_name,
        name: body.name,
        email: body.email,
        password: body.password,
    };
    let done = service::register(&state, input).await?;
    record_actor(&req, Actor { tenant_id: done.tenant.id, user_id: done.user.id });
    Ok(created(RegisterResponse { tenant: done.tenant, user: done.user, token: done.token }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Tenant slug (or id).
    #[schema(example = "acme")]
    tenant: String,
    #[schema(example = "ada@example.com")]
    email: String,
    #[schema(example = "correct horse 42")]
    password: String,
    /// Names the session in the token list, e.g. the device.
    #[schema(min_length = 1, max_length = 200, example = "laptop")]
    device_name: Option<String>,
}

impl Validate for LoginRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut checks = Checks::default();
        if let Some(device) = &self.device_name {
            checks.check("device_name", validate::name(device));
        }
        checks.finish()
    }
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    #[serde(flatten)]
    token: IssuedToken,
    user: UserView,
}

/// Exchange email and password for a bearer token. Five failures in a row
/// lock the account for 15 minutes; every failure answers the same 401.
#[utoipa::path(
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A session token", body = Data<LoginResponse>),
        (status = 401, description = "Wrong credentials or locked account", body = Problem),
        (status = 429, description = "Too many attempts from this address or for this account (see Retry-After)", body = Problem),
        (status = 503, description = "Too many sign-ins at once; retry after Retry-After", body = Problem),
    )
)]
#[post("/login")]
async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: ApiJson<LoginRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    let account = format!("{}/{}", body.tenant.trim().to_lowercase(), body.email.trim().to_lowercase());
    throttle::attempt(&state, &req, Some(&account)).await?;
    let input = Login {
        tenant: body.tenant,
        email: body.email,
        password: body.password,
        device_name: body.device_name,
    };
    let (user, token) = service::login(&state, input).await?;
    record_actor(&req, Actor { tenant_id: user.tenant_id, user_id: user.id });
    Ok(ok(LoginResponse { token, user }))
}

/// Revoke the token that made this request.
#[utoipa::path(
    tag = "auth",
    responses((status = 204, description = "Revoked"), (status = 401, body = Problem)),
    security(("bearer" = []))
)]
#[post("/logout")]
async fn logout(principal: Principal, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    service::revoke_token(&state, &principal, principal.token_id).await?;
    Ok(no_content())
}

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    user: UserView,
    /// The tenant this request acts in.
    tenant: TenantView,
    /// Roles in the acting tenant.
    roles: Vec<String>,
}

/// The caller, the tenant it acts in, and its roles there.
#[utoipa::path(
    tag = "auth",
    responses((status = 200, body = Data<MeResponse>), (status = 401, body = Problem)),
    security(("bearer" = []))
)]
#[get("/me")]
async fn me(principal: Principal, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let home = crate::platform::tenancy::TenantScope::new(principal.home_tenant_id);
    let user = users::get(&state.db, home, principal.user_id).await?;
    let tenant = users::tenant(&state.db, principal.tenant).await?;
    Ok(ok(MeResponse { user, tenant, roles: principal.roles.to_vec() }))
}

/// The caller's active tokens (values are never shown again).
#[utoipa::path(
    tag = "auth",
    responses((status = 200, body = Data<Vec<TokenView>>), (status = 401, body = Problem)),
    security(("bearer" = []))
)]
#[get("/tokens")]
async fn list_tokens(principal: Principal, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    Ok(ok(service::list_tokens(&state, &principal).await?))
}

#[derive(Deserialize, ToSchema, async_graphql::InputObject)]
#[serde(deny_unknown_fields)]
#[graphql(name = "CreateApiTokenInput")]
pub struct CreateTokenRequest {
    /// Device or purpose.
    #[schema(min_length = 1, max_length = 200, example = "ci-pipeline")]
    name: String,
    /// Lifetime in days, 1-3650; default from `auth.token_ttl_days` (30).
    #[schema(example = 90, minimum = 1, maximum = 3650)]
    expires_in_days: Option<u32>,
}

impl Validate for CreateTokenRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let days = match self.expires_in_days {
            Some(d) if !(1..=3650).contains(&d) => Err("must be between 1 and 3650".to_owned()),
            _ => Ok(()),
        };
        Checks::default().check("name", validate::name(&self.name)).check("expires_in_days", days).finish()
    }
}

/// Create a personal API token. Its value is in this response only.
#[utoipa::path(
    tag = "auth",
    request_body = CreateTokenRequest,
    responses(
        (status = 201, body = Data<IssuedToken>),
        (status = 401, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("/tokens")]
async fn create_token(
    principal: Principal,
    state: web::Data<AppState>,
    body: ApiJson<CreateTokenRequest>,
) -> ApiResult<HttpResponse> {
    Ok(created(body.0.run(&state, &principal).await?))
}

impl CreateTokenRequest {
    /// A personal token of the caller's. Shared by REST and GraphQL.
    pub async fn run(self, state: &AppState, principal: &Principal) -> ApiResult<IssuedToken> {
        service::create_personal_token(state, principal, self.name.trim(), self.expires_in_days).await
    }
}

/// Revoke one of the caller's tokens; refused at once on every instance.
#[utoipa::path(
    tag = "auth",
    params(("id" = Uuid, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), (status = 401, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []))
)]
#[delete("/tokens/{id}")]
async fn revoke_token(
    principal: Principal,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    service::revoke_token(&state, &principal, *id).await?;
    Ok(no_content())
}
