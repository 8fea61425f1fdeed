//! Tenants and their users: creation (also used by registration and the
//! CLI), the admin endpoints, and role assignment.

pub mod routes;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionSession, TransactionTrait, TryInsertResult, sea_query::Expr,
};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, Code},
    platform::{
        events,
        http::{ListRequest, Paged, Sort, Sorts},
        rbac::ROLES,
        tenancy::{SystemScope, TenantScope},
    },
};

use entity::{tenant, user, user_role};

#[derive(Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "Tenant")]
pub struct TenantView {
    pub id: Uuid,
    #[schema(example = "Acme Trading")]
    pub name: String,
    #[schema(example = "acme")]
    pub slug: String,
    pub created_at: DateTime<Utc>,
}

impl From<tenant::Model> for TenantView {
    fn from(t: tenant::Model) -> Self {
        Self { id: t.id, name: t.name, slug: t.slug, created_at: t.created_at }
    }
}

#[derive(Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "User")]
pub struct UserView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    #[schema(example = "Ada Lovelace")]
    pub name: String,
    #[schema(example = "ada@example.com")]
    pub email: String,
    /// Roles held in the user's tenant.
    #[schema(example = json!(["admin"]))]
    pub roles: Vec<String>,
    pub is_super_admin: bool,
    pub disabled: bool,
    /// Set while the account is locked after repeated failed logins.
    pub locked_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl UserView {
    pub fn new(u: user::Model, roles: Vec<String>) -> Self {
        let locked_until = u.locked_until.filter(|t| *t > Utc::now());
        Self {
            id: u.id,
            tenant_id: u.tenant_id,
            name: u.name,
            email: u.email,
            roles,
            is_super_admin: u.is_super_admin,
            disabled: u.disabled_at.is_some(),
            locked_until,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// A user about to be created; the fields are already validated and the
/// password hashed (so no transaction is ever held across hashing).
pub struct NewUser {
    pub name: String,
    pub email: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub is_super_admin: bool,
    /// The license's user limit, checked in the creating transaction
    /// (None: no check, for operators and registration).
    pub max_users: Option<u64>,
}

pub async fn create_tenant(db: &impl ConnectionTrait, name: &str, slug: &str) -> ApiResult<tenant::Model> {
    let now = Utc::now();
    let model = tenant::ActiveModel {
        id: Set(Uuid::now_v7()),
        name: Set(name.trim().to_owned()),
        slug: Set(slug.to_owned()),
        created_at: Set(now),
        updated_at: Set(now),
    };
    tenant::Entity::insert(model).exec_with_returning(db).await.map_err(|e| match ApiError::from(e) {
        err if err.code == Code::Conflict => {
            ApiError::new(Code::Conflict, format!("the tenant slug `{slug}` is taken"))
        }
        err => err,
    })
}

/// A tenant by slug or id.
pub async fn find_tenant(db: &impl ConnectionTrait, handle: &str) -> ApiResult<Option<tenant::Model>> {
    let condition = match Uuid::parse_str(handle) {
        Ok(id) => tenant::Column::Id.eq(id),
        Err(_) => tenant::Column::Slug.eq(handle.trim().to_lowercase()),
    };
    Ok(SystemScope.find::<tenant::Entity>().filter(condition).one(db).await?)
}

/// Create a user in `tenant` with its roles, atomically.
pub async fn create_user(
    db: &impl TransactionTrait,
    tenant: TenantScope,
    new: NewUser,
) -> ApiResult<UserView> {
    let email = new.email.trim().to_lowercase();
    let now = Utc::now();
    let txn = crate::platform::db::begin(db).await?;
    if let Some(max) = new.max_users {
        let active =
            tenant.find::<user::Entity>().filter(user::Column::DisabledAt.is_null()).count(&txn).await?;
        if active >= max {
            return Err(ApiError::new(
                Code::LicenseLimit,
                format!("the license allows {max} active users; disable one or upgrade the license"),
            ));
        }
    }
    let model = user::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant.id()),
        name: Set(new.name.trim().to_owned()),
        email: Set(email.clone()),
        password_hash: Set(new.password_hash),
        is_super_admin: Set(new.is_super_admin),
        disabled_at: Set(None),
        email_verified_at: Set(None),
        failed_login_attempts: Set(0),
        locked_until: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    };
    let user =
        user::Entity::insert(model).exec_with_returning(&txn).await.map_err(|e| match ApiError::from(e) {
            err if err.code == Code::Conflict => ApiError::new(
                Code::Conflict,
                format!("a user with email `{email}` already exists in this tenant"),
            ),
            err => err,
        })?;
    let mut roles = new.roles;
    roles.sort();
    roles.dedup();
    for role in &roles {
        insert_role(&txn, tenant, user.id, role).await?;
    }
    let data = json!({ "id": user.id, "email": user.email, "name": user.name, "roles": roles });
    events::publish(&txn, tenant.id(), &events::USER_CREATED, data).await?;
    txn.commit().await?;
    Ok(UserView::new(user, roles))
}

/// Give `user_id` the role; whether it was given now (not held already).
async fn insert_role(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    user_id: Uuid,
    role: &str,
) -> ApiResult<bool> {
    let inserted = user_role::Entity::insert(user_role::ActiveModel {
        tenant_id: Set(tenant.id()),
        user_id: Set(user_id),
        role: Set(role.to_owned()),
        created_at: Set(Utc::now()),
    })
    .on_conflict_do_nothing()
    .exec_without_returning(db)
    .await?;
    Ok(matches!(inserted, TryInsertResult::Inserted(n) if n > 0))
}

pub fn check_role(role: &str) -> ApiResult<()> {
    if ROLES.contains(&role) {
        Ok(())
    } else {
        Err(ApiError::new(Code::NotFound, format!("no role `{role}`; roles are {}", ROLES.join(", "))))
    }
}

async fn roles_of(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    user_ids: &[Uuid],
) -> ApiResult<HashMap<Uuid, Vec<String>>> {
    let rows: Vec<(Uuid, String)> = tenant
        .find::<user_role::Entity>()
        .filter(user_role::Column::UserId.is_in(user_ids.iter().copied()))
        .select_only()
        .column(user_role::Column::UserId)
        .column(user_role::Column::Role)
        .order_by_asc(user_role::Column::Role)
        .into_tuple()
        .all(db)
        .await?;
    let mut map: HashMap<Uuid, Vec<String>> = HashMap::new();
    for (user_id, role) in rows {
        map.entry(user_id).or_default().push(role);
    }
    Ok(map)
}

async fn find(db: &impl ConnectionTrait, tenant: TenantScope, id: Uuid) -> ApiResult<user::Model> {
    tenant.get::<user::Entity>(db, id).await?.ok_or_else(|| ApiError::not_found("user"))
}

pub async fn get(db: &impl ConnectionTrait, tenant: TenantScope, id: Uuid) -> ApiResult<UserView> {
    let user = find(db, tenant, id).await?;
    let roles = roles_of(db, tenant, &[id]).await?.remove(&id).unwrap_or_default();
    Ok(UserView::new(user, roles))
}

/// Users: newest first unless sorted otherwise.
pub const USER_SORTS: Sorts<user::Column> = Sorts {
    fields: &[
        ("name", user::Column::Name),
        ("email", user::Column::Email),
        ("created_at", user::Column::CreatedAt),
    ],
    default: "-created_at",
};

/// Filters and sort of the user list.
pub struct UserFilter {
    pub email: Option<String>,
    pub disabled: Option<bool>,
    pub sort: Sort<user::Column>,
}

pub async fn list(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    filter: UserFilter,
    list: &ListRequest,
) -> ApiResult<Paged<UserView>> {
    let condition = Condition::all()
        .add_option(filter.email.map(|email| user::Column::Email.eq(email.trim().to_lowercase())))
        .add_option(filter.disabled.map(|disabled| match disabled {
            true => user::Column::DisabledAt.is_not_null(),
            false => user::Column::DisabledAt.is_null(),
        }));
    let users = list.fetch(db, tenant.find::<user::Entity>(), condition, filter.sort).await?;
    let ids: Vec<Uuid> = users.data.iter().map(|u| u.id).collect();
    let mut roles = roles_of(db, tenant, &ids).await?;
    Ok(users.map(|u| {
        let r = roles.remove(&u.id).unwrap_or_default();
        UserView::new(u, r)
    }))
}

/// Disable or re-enable an account. Disabling refuses every token of the
/// user from the next request on.
pub async fn set_disabled(
    db: &impl TransactionTrait,
    tenant: TenantScope,
    actor: Uuid,
    id: Uuid,
    disabled: bool,
) -> ApiResult<UserView> {
    if disabled && actor == id {
        return Err(ApiError::new(Code::Conflict, "you cannot disable your own account"));
    }
    let txn = crate::platform::db::begin(db).await?;
    let user = find(&txn, tenant, id).await?;
    let now = Utc::now();
    tenant
        .update_many::<user::Entity>()
        .filter(user::Column::Id.eq(id))
        .col_expr(user::Column::DisabledAt, Expr::value(disabled.then_some(now)))
        .col_expr(user::Column::UpdatedAt, Expr::value(now))
        .exec(&txn)
        .await?;
    if disabled {
        // Every token issued so far dies with the disable and stays dead
        // when the user is enabled again: they sign in anew.
        tenant
            .update_many::<entity::api_token::Entity>()
            .filter(entity::api_token::Column::UserId.eq(id))
            .filter(entity::api_token::Column::RevokedAt.is_null())
            .col_expr(entity::api_token::Column::RevokedAt, Expr::value(now))
            .exec(&txn)
            .await?;
    }
    if disabled != user.disabled_at.is_some() {
        let event = if disabled { &events::USER_DISABLED } else { &events::USER_ENABLED };
        events::publish(&txn, tenant.id(), event, json!({ "id": id, "email": user.email })).await?;
    }
    let view = get(&txn, tenant, id).await?;
    txn.commit().await?;
    Ok(view)
}

pub async fn assign_role(
    db: &impl TransactionTrait,
    tenant: TenantScope,
    id: Uuid,
    role: &str,
) -> ApiResult<UserView> {
    check_role(role)?;
    let txn = crate::platform::db::begin(db).await?;
    let mut view = get(&txn, tenant, id).await?;
    let held = view.roles.iter().any(|r| r == role);
    if !held && insert_role(&txn, tenant, id, role).await? {
        events::publish(&txn, tenant.id(), &events::USER_ROLE_ASSIGNED, json!({ "id": id, "role": role }))
            .await?;
        view.roles.push(role.to_owned());
        view.roles.sort_unstable();
    }
    txn.commit().await?;
    Ok(view)
}

/// Remove a role; the last admin of a tenant keeps theirs, so a tenant can
/// never lock itself out.
pub async fn remove_role(
    db: &impl TransactionTrait,
    tenant: TenantScope,
    id: Uuid,
    role: &str,
) -> ApiResult<UserView> {
    check_role(role)?;
    let txn = crate::platform::db::begin(db).await?;
    let mut view = get(&txn, tenant, id).await?;
    if role == ROLES[0] && view.roles.iter().any(|r| r == role) {
        let admins =
            tenant.find::<user_role::Entity>().filter(user_role::Column::Role.eq(role)).count(&txn).await?;
        if admins <= 1 {
            return Err(ApiError::new(Code::Conflict, "a tenant must keep at least one admin"));
        }
    }
    let removed = tenant
        .delete_many::<user_role::Entity>()
        .filter(user_role::Column::UserId.eq(id))
        .filter(user_role::Column::Role.eq(role))
        .exec(&txn)
        .await?;
    if removed.rows_affected > 0 {
        events::publish(&txn, tenant.id(), &events::USER_ROLE_REMOVED, json!({ "id": id, "role": role }))
            .await?;
        view.roles.retain(|r| r != role);
    }
    txn.commit().await?;
    Ok(view)
}

pub async fn tenant(db: &impl ConnectionTrait, tenant: TenantScope) -> ApiResult<TenantView> {
    SystemScope
        .get::<tenant::Entity>(db, tenant.id())
        .await?
        .map(TenantView::from)
        .ok_or_else(|| ApiError::not_found("tenant"))
}
