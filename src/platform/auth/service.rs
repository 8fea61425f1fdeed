//! Registration, login with lockout, and bearer token lifecycle.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    sea_query::{Expr, ExprTrait},
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Claims, Principal, password, token_hash};
use crate::{
    error::{ApiError, ApiResult, Code},
    platform::{
        rbac::ROLES,
        state::AppState,
        tenancy::{SystemScope, TenantScope},
        users::{self, NewUser, TenantView, UserView},
    },
};

use entity::{api_token, user};

/// A freshly issued bearer token: the only time its value is shown.
#[derive(Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "IssuedApiToken")]
pub struct IssuedToken {
    pub id: Uuid,
    /// Send as `Authorization: Bearer <token>`. Shown once; store it safely.
    #[schema(example = "eyJhbGciOiJIUzI1NiJ9...")]
    pub token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    #[schema(example = "ci-pipeline")]
    pub name: String,
    pub expires_at: DateTime<Utc>,
}

/// A token as listed: never its value.
#[derive(Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "ApiToken")]
pub struct TokenView {
    pub id: Uuid,
    pub name: String,
    /// `session` (from login) or `personal`.
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// True for the token that made this request.
    pub current: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Session,
    Personal,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Session => "session",
            TokenKind::Personal => "personal",
        }
    }
}

pub async fn issue_token(
    state: &AppState,
    db: &impl ConnectionTrait,
    user: &user::Model,
    kind: TokenKind,
    name: &str,
    ttl: Duration,
) -> ApiResult<IssuedToken> {
    let id = Uuid::now_v7();
    let now = Utc::now();
    let expires_at = now + ttl;
    let claims = Claims {
        sub: user.id,
        tid: user.tenant_id,
        jti: id,
        iat: now.timestamp(),
        exp: expires_at.timestamp(),
    };
    let token = state.keys.sign(&claims)?;
    api_token::Entity::insert(api_token::ActiveModel {
        id: Set(id),
        tenant_id: Set(user.tenant_id),
        user_id: Set(user.id),
        name: Set(name.to_owned()),
        kind: Set(kind.as_str().to_owned()),
        token_hash: Set(token_hash(&token)),
        expires_at: Set(expires_at),
        revoked_at: Set(None),
        created_at: Set(now),
    })
    .exec_without_returning(db)
    .await?;
    Ok(IssuedToken { id, token, token_type: "Bearer", name: name.to_owned(), expires_at })
}

pub struct Registration {
    pub tenant_name: String,
    pub tenant_slug: String,
    pub name: String,
    pub email: String,
    pub password: String,
}

pub struct Registered {
    pub tenant: TenantView,
    pub user: UserView,
    pub token: IssuedToken,
}

/// Create a tenant and its owner, who becomes its `admin` (BR-001).
pub async fn register(state: &AppState, input: Registration) -> ApiResult<Registered> {
    let new = NewUser {
        name: input.name,
        email: input.email,
        password_hash: password::hash(input.password).await?,
        roles: vec![ROLES[0].to_owned()],
        is_super_admin: false,
        max_users: None,
    };
    let txn = crate::platform::db::begin(&state.db).await?;
    let tenant = users::create_tenant(&txn, &input.tenant_name, &input.tenant_slug).await?;
    let user = users::create_user(&txn, TenantScope::new(tenant.id), new).await?;
    crate::platform::license::start_trial(&txn, &state.governance.tiers, tenant.id).await?;
    let model =
        SystemScope.get::<user::Entity>(&txn, user.id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    let token =
        issue_token(state, &txn, &model, TokenKind::Session, "registration", state.config.token_ttl())
            .await?;
    txn.commit().await?;
    Ok(Registered { tenant: tenant.into(), user, token })
}

fn invalid_credentials() -> ApiError {
    ApiError::new(
        Code::InvalidCredentials,
        "the tenant, email or password is wrong, or the account is temporarily locked",
    )
}

pub struct Login {
    pub tenant: String,
    pub email: String,
    pub password: String,
    pub device_name: Option<String>,
}

/// Check the password and issue a session token. Every failure answers the
/// same, so the response never tells whether an account exists or is locked.
pub async fn login(state: &AppState, input: Login) -> ApiResult<(UserView, IssuedToken)> {
    let now = Utc::now();
    let tenant = users::find_tenant(&state.db, &input.tenant).await?;
    let user = match &tenant {
        Some(t) => {
            TenantScope::new(t.id)
                .find::<user::Entity>()
                .filter(user::Column::Email.eq(input.email.trim().to_lowercase()))
                .one(&state.db)
                .await?
        }
        None => None,
    };
    let verified = password::verify(input.password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    let Some(user) = user else { return Err(invalid_credentials()) };
    let locked = user.locked_until.is_some_and(|until| until > now);
    if locked || user.disabled_at.is_some() {
        return Err(invalid_credentials());
    }
    if !verified {
        record_failure(state, &user, now).await?;
        return Err(invalid_credentials());
    }
    let scope = TenantScope::new(user.tenant_id);
    if user.failed_login_attempts != 0 || user.locked_until.is_some() {
        scope
            .update_many::<user::Entity>()
            .filter(user::Column::Id.eq(user.id))
            .col_expr(user::Column::FailedLoginAttempts, Expr::value(0))
            .col_expr(user::Column::LockedUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .exec(&state.db)
            .await?;
    }
    let device = input.device_name.unwrap_or_else(|| "login".to_owned());
    let token =
        issue_token(state, &state.db, &user, TokenKind::Session, &device, state.config.token_ttl()).await?;
    let view = users::get(&state.db, scope, user.id).await?;
    Ok((view, token))
}

/// Count a failed login atomically; the `max_failed_logins`-th failure locks
/// the account for `lockout_minutes` and starts the count again.
async fn record_failure(state: &AppState, user: &user::Model, now: DateTime<Utc>) -> ApiResult<()> {
    let scope = TenantScope::new(user.tenant_id);
    let max = i32::try_from(state.config.auth.max_failed_logins).unwrap_or(i32::MAX);
    scope
        .update_many::<user::Entity>()
        .filter(user::Column::Id.eq(user.id))
        .col_expr(user::Column::FailedLoginAttempts, Expr::col(user::Column::FailedLoginAttempts).add(1))
        .exec(&state.db)
        .await?;
    let until = now + Duration::minutes(i64::from(state.config.auth.lockout_minutes));
    let locked = scope
        .update_many::<user::Entity>()
        .filter(user::Column::Id.eq(user.id))
        .filter(user::Column::FailedLoginAttempts.gte(max))
        .col_expr(user::Column::FailedLoginAttempts, Expr::value(0))
        .col_expr(user::Column::LockedUntil, Expr::value(Some(until)))
        .exec(&state.db)
        .await?;
    if locked.rows_affected > 0 {
        tracing::warn!(user_id = %user.id, %until, "account locked after repeated failed logins");
    }
    Ok(())
}

fn own_tokens(principal: &Principal) -> sea_orm::Select<api_token::Entity> {
    TenantScope::new(principal.home_tenant_id)
        .find::<api_token::Entity>()
        .filter(api_token::Column::UserId.eq(principal.user_id))
}

pub async fn list_tokens(state: &AppState, principal: &Principal) -> ApiResult<Vec<TokenView>> {
    let rows = own_tokens(principal)
        .filter(api_token::Column::RevokedAt.is_null())
        .filter(api_token::Column::ExpiresAt.gt(Utc::now()))
        .order_by_desc(api_token::Column::CreatedAt)
        .all(&state.db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|t| TokenView {
            current: t.id == principal.token_id,
            id: t.id,
            name: t.name,
            kind: t.kind,
            created_at: t.created_at,
            expires_at: t.expires_at,
        })
        .collect())
}

pub async fn create_personal_token(
    state: &AppState,
    principal: &Principal,
    name: &str,
    expires_in_days: Option<u32>,
) -> ApiResult<IssuedToken> {
    let user = SystemScope
        .get::<user::Entity>(&state.db, principal.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let ttl = expires_in_days.map_or_else(|| state.config.token_ttl(), |d| Duration::days(i64::from(d)));
    issue_token(state, &state.db, &user, TokenKind::Personal, name, ttl).await
}

/// Revoke one of the caller's own tokens; any other id is not found.
pub async fn revoke_token(state: &AppState, principal: &Principal, id: Uuid) -> ApiResult<()> {
    let result = TenantScope::new(principal.home_tenant_id)
        .update_many::<api_token::Entity>()
        .filter(api_token::Column::Id.eq(id))
        .filter(api_token::Column::UserId.eq(principal.user_id))
        .filter(api_token::Column::RevokedAt.is_null())
        .col_expr(api_token::Column::RevokedAt, Expr::value(Some(Utc::now())))
        .exec(&state.db)
        .await?;
    if result.rows_affected == 0 {
        return Err(ApiError::not_found("token"));
    }
    state.principals.forget_token(id);
    Ok(())
}
