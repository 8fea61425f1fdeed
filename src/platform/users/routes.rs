//! Tenant and user administration endpoints.

use actix_web::{HttpResponse, delete, get, post, put, web};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::{scope, service_config::ServiceConfig};
use uuid::Uuid;

use super::{NewUser, TenantView, USER_SORTS, UserFilter, UserView};
use crate::{
    error::{ApiResult, FieldError, Problem},
    platform::{
        auth::{Principal, password},
        http::{ApiJson, Data, Paged, Validate, created, ok, parse_sort},
        rbac::{Authorized, RolesWrite, TenantRead, UsersRead, UsersWrite},
        state::AppState,
        tenancy::TenantScope,
        validate::{self, Checks},
    },
};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(scope("/tenant").service(current_tenant)).service(
        scope("/users")
            .service(list_users)
            .service(create_user)
            .service(get_user)
            .service(disable_user)
            .service(enable_user)
            .service(assign_role)
            .service(remove_role),
    );
}

/// The tenant the caller acts in.
#[utoipa::path(
    tag = "users",
    responses(
        (status = 200, description = "The current tenant", body = Data<TenantView>),
        (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("")]
async fn current_tenant(auth: Authorized<TenantRead>, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    Ok(ok(super::tenant(&state.db, auth.tenant).await?))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct UserListQuery {
        /// `name`, `email` or `created_at`; prefix `-` for descending (default
        /// `-created_at`, newest first).
        #[param(pattern = "^-?(name|email|created_at)$")]
        sort: Option<String>,
        /// Exact email (case-insensitive).
        email: Option<String>,
        /// Only disabled (`true`) or only active (`false`) users.
        disabled: Option<bool>,
    }
}

/// Users of the tenant, newest first unless sorted otherwise.
#[utoipa::path(
    tag = "users",
    params(UserListQuery),
    responses(
        (status = 200, description = "A page of users", body = Paged<UserView>),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("")]
async fn list_users(
    auth: Authorized<UsersRead>,
    state: web::Data<AppState>,
    query: web::Query<UserListQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    let sort = parse_sort(q.sort.as_deref(), &USER_SORTS)?;
    let filter = UserFilter { email: q.email, disabled: q.disabled, sort };
    Ok(HttpResponse::Ok().json(super::list(&state.db, auth.tenant, filter, &list).await?))
}

#[derive(Deserialize, ToSchema, async_graphql::InputObject)]
#[serde(deny_unknown_fields)]
#[graphql(name = "CreateUserInput")]
pub struct CreateUser {
    #[schema(min_length = 1, max_length = 200, example = "Grace Hopper")]
    name: String,
    #[schema(example = "grace@example.com")]
    email: String,
    /// At least 12 characters, mixing letters with digits or symbols.
    #[schema(example = "a long passphrase 42", min_length = 12, max_length = 128)]
    password: String,
    /// Roles in this tenant; default `["user"]`.
    #[serde(default)]
    #[schema(example = json!(["manager"]))]
    roles: Option<Vec<String>>,
}

impl Validate for CreateUser {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut checks = Checks::default();
        checks
            .check("name", validate::name(&self.name))
            .check("email", validate::email(&self.email))
            .check("password", validate::password(&self.password));
        for (i, role) in self.roles.iter().flatten().enumerate() {
            checks.check(&format!("roles[{i}]"), super::check_role(role).map_err(|e| e.detail));
        }
        checks.finish()
    }
}

/// Create a user in the tenant.
#[utoipa::path(
    tag = "users",
    request_body = CreateUser,
    responses(
        (status = 201, description = "The new user", body = Data<UserView>),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, description = "Email taken in this tenant", body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("")]
async fn create_user(
    auth: Authorized<UsersWrite>,
    state: web::Data<AppState>,
    body: ApiJson<CreateUser>,
) -> ApiResult<HttpResponse> {
    Ok(created(body.0.run(&state, auth.tenant).await?))
}

impl CreateUser {
    /// Within the license's user limit. Shared by REST and GraphQL.
    pub async fn run(self, state: &AppState, tenant: TenantScope) -> ApiResult<UserView> {
        let gov = &state.governance;
        let license = crate::platform::license::find_or_start(&state.db, &gov.tiers, tenant.id()).await?;
        let new = NewUser {
            name: self.name,
            email: self.email,
            password_hash: password::hash(self.password).await?,
            roles: self.roles.unwrap_or_else(|| vec!["user".to_owned()]),
            is_super_admin: false,
            max_users: crate::platform::license::limits(&license, &gov.tiers).max_users,
        };
        super::create_user(&state.db, tenant, new).await
    }
}

/// One user of the tenant.
#[utoipa::path(
    tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 200, body = Data<UserView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("/{id}")]
async fn get_user(
    auth: Authorized<UsersRead>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    Ok(ok(super::get(&state.db, auth.tenant, *id).await?))
}

/// Disable a user: every token of theirs is refused from the next request.
#[utoipa::path(
    tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 200, body = Data<UserView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Cannot disable yourself", body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("/{id}/disable")]
async fn disable_user(
    auth: Authorized<UsersWrite>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    Ok(ok(set_disabled(&auth, &state, *id, true).await?))
}

/// Re-enable a disabled user.
#[utoipa::path(
    tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 200, body = Data<UserView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("/{id}/enable")]
async fn enable_user(
    auth: Authorized<UsersWrite>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    Ok(ok(set_disabled(&auth, &state, *id, false).await?))
}

/// Disable or enable a user, seen by this instance at once (and by the
/// others within `auth.principal_cache_ms`). Shared by REST and GraphQL.
pub async fn set_disabled(
    auth: &Principal,
    state: &AppState,
    id: Uuid,
    disabled: bool,
) -> ApiResult<UserView> {
    let view = super::set_disabled(&state.db, auth.tenant, auth.user_id, id, disabled).await?;
    state.principals.forget_user(id);
    Ok(view)
}

/// Give or take a role, seen as [`set_disabled`] is. Shared by REST and GraphQL.
pub async fn set_role(
    state: &AppState,
    tenant: TenantScope,
    id: Uuid,
    role: &str,
    held: bool,
) -> ApiResult<UserView> {
    let view = if held {
        super::assign_role(&state.db, tenant, id, role).await?
    } else {
        super::remove_role(&state.db, tenant, id, role).await?
    };
    state.principals.forget_user(id);
    Ok(view)
}

/// Give a user a role (`admin`, `manager`, `user`, `viewer`). Idempotent.
#[utoipa::path(
    tag = "users",
    params(("id" = Uuid, Path, description = "User id"), ("role" = String, Path, description = "Role name")),
    responses(
        (status = 200, body = Data<UserView>),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, description = "No such user or role", body = Problem),
    ),
    security(("bearer" = []))
)]
#[put("/{id}/roles/{role}")]
async fn assign_role(
    auth: Authorized<RolesWrite>,
    state: web::Data<AppState>,
    path: web::Path<(Uuid, String)>,
) -> ApiResult<HttpResponse> {
    let (id, role) = path.into_inner();
    Ok(ok(set_role(&state, auth.tenant, id, &role, true).await?))
}

/// Take a role from a user. The last admin of a tenant keeps theirs (409).
#[utoipa::path(
    tag = "users",
    params(("id" = Uuid, Path, description = "User id"), ("role" = String, Path, description = "Role name")),
    responses(
        (status = 200, body = Data<UserView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Last admin", body = Problem),
    ),
    security(("bearer" = []))
)]
#[delete("/{id}/roles/{role}")]
async fn remove_role(
    auth: Authorized<RolesWrite>,
    state: web::Data<AppState>,
    path: web::Path<(Uuid, String)>,
) -> ApiResult<HttpResponse> {
    let (id, role) = path.into_inner();
    Ok(ok(set_role(&state, auth.tenant, id, &role, false).await?))
}
