//! The one access path to rows. A query on a tenant-owned table starts
//! from a [`TenantScope`], which adds the tenant filter, so forgetting it is
//! not possible; a row of another tenant is simply not found (404, never
//! 403). Code that acts for no tenant (jobs, the CLI, the platform's own
//! tables) says so with [`SystemScope`]. Clippy (`clippy.toml`) refuses the
//! raw `find` / `find_by_id` / `update_many` / `delete_many` anywhere else.
#![allow(clippy::disallowed_methods)] // the one place they are allowed

use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, DeleteMany, EntityTrait, FromQueryResult, PrimaryKeyTrait,
    QueryFilter, QuerySelect, QueryTrait, Select, Statement, UpdateMany, Value, Values,
    sea_query::{FromValueTuple, IntoValueTuple},
};
use std::{
    any::TypeId,
    collections::HashMap,
    sync::{LazyLock, RwLock},
};
use uuid::Uuid;

/// A primary key value of `E`.
type Id<E> = <<E as EntityTrait>::PrimaryKey as PrimaryKeyTrait>::ValueType;

/// An entity whose rows belong to one tenant.
pub trait TenantOwned: EntityTrait {
    fn tenant_column() -> Self::Column;
}

macro_rules! tenant_owned {
    ($($module:ident),*) => {$(
        impl TenantOwned for entity::$module::Entity {
            fn tenant_column() -> Self::Column {
                entity::$module::Column::TenantId
            }
        }
    )*};
}

tenant_owned!(
    user,
    user_role,
    api_token,
    audit_log,
    event,
    webhook_endpoint,
    webhook_delivery,
    webhook_attempt,
    product,
    warehouse,
    stock_level,
    stock_movement,
    reservation,
    vendor,
    purchase_order,
    purchase_order_line,
    journal_entry
);

/// Tenant-owned rows the application may change. The audit log is
/// deliberately not one: there is no code path that updates or deletes it.
pub trait TenantMutable: TenantOwned {}

impl TenantMutable for entity::user::Entity {}
impl TenantMutable for entity::user_role::Entity {}
impl TenantMutable for entity::api_token::Entity {}
impl TenantMutable for entity::webhook_endpoint::Entity {}
impl TenantMutable for entity::webhook_delivery::Entity {}
impl TenantMutable for entity::vendor::Entity {}
impl TenantMutable for entity::product::Entity {}
impl TenantMutable for entity::reservation::Entity {}
impl TenantMutable for entity::purchase_order::Entity {}
impl TenantMutable for entity::purchase_order_line::Entity {}

/// The tenant a request acts in: taken from the token (or, for a
/// super-admin, from `X-Tenant-ID`), never from the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantScope(Uuid);

impl TenantScope {
    pub fn new(tenant_id: Uuid) -> Self {
        Self(tenant_id)
    }

    pub fn id(&self) -> Uuid {
        self.0
    }

    pub fn find<E: TenantOwned>(&self) -> Select<E> {
        E::find().filter(E::tenant_column().eq(self.0))
    }

    pub fn find_by_id<E: TenantOwned>(
        &self,
        id: impl Into<<E::PrimaryKey as PrimaryKeyTrait>::ValueType>,
    ) -> Select<E> {
        E::find_by_id(id).filter(E::tenant_column().eq(self.0))
    }

    /// The tenant's row `id`: what `find_by_id(id).one(db)` returns, by a
    /// statement rendered once (see [`by_id`]).
    pub async fn get<E: TenantOwned>(
        &self,
        db: &impl ConnectionTrait,
        id: impl Into<Id<E>>,
    ) -> Result<Option<E::Model>, DbErr> {
        by_id::<E>(db, id.into(), Some(self.0), |id| self.find_by_id::<E>(id)).await
    }

    pub fn update_many<E: TenantMutable>(&self) -> UpdateMany<E> {
        E::update_many().filter(E::tenant_column().eq(self.0))
    }

    pub fn delete_many<E: TenantMutable>(&self) -> DeleteMany<E> {
        E::delete_many().filter(E::tenant_column().eq(self.0))
    }
}

/// Queries outside any tenant: the platform's own tables (tenants, jobs,
/// licenses, toggles...) and, for jobs and the CLI, rows of any tenant
/// (each job then acts in the row's tenant through a [`TenantScope`]).
#[derive(Clone, Copy, Debug)]
pub struct SystemScope;

impl SystemScope {
    pub fn find<E: EntityTrait>(self) -> Select<E> {
        E::find()
    }

    pub fn find_by_id<E: EntityTrait>(
        self,
        id: impl Into<<E::PrimaryKey as PrimaryKeyTrait>::ValueType>,
    ) -> Select<E> {
        E::find_by_id(id)
    }

    /// The row `id`: what `find_by_id(id).one(db)` returns, by a statement
    /// rendered once (see [`by_id`]).
    pub async fn get<E: EntityTrait>(
        self,
        db: &impl ConnectionTrait,
        id: impl Into<Id<E>>,
    ) -> Result<Option<E::Model>, DbErr> {
        by_id::<E>(db, id.into(), None, |id| self.find_by_id::<E>(id)).await
    }

    pub fn update_many<E: EntityTrait>(self) -> UpdateMany<E> {
        E::update_many()
    }

    pub fn delete_many<E: EntityTrait>(self) -> DeleteMany<E> {
        E::delete_many()
    }
}

/// A lookup by primary key (within `tenant` when there is one), its SQL
/// rendered once per entity, scope and backend and then only bound to the
/// values: building and rendering the same `SELECT` (a column list of
/// reference-counted names, then the text) on every lookup cost about a
/// tenth of the CPU of `GET /products/{id}` (docs/performance.md).
async fn by_id<E: EntityTrait>(
    db: &impl ConnectionTrait,
    id: Id<E>,
    tenant: Option<Uuid>,
    select: impl FnOnce(Id<E>) -> Select<E>,
) -> Result<Option<E::Model>, DbErr> {
    type Key = (TypeId, bool, u8);
    static RENDERED: LazyLock<RwLock<HashMap<Key, &'static str>>> = LazyLock::new(Default::default);
    let backend = db.get_database_backend();
    let key: Key = (TypeId::of::<E>(), tenant.is_some(), backend as u8);
    let id = id.into_value_tuple();
    let limit = Value::from(1u64);
    let values: Vec<Value> = id.clone().into_iter().chain(tenant.map(Value::from)).chain([limit]).collect();
    let cached = RENDERED.read().unwrap_or_else(|e| e.into_inner()).get(&key).copied();
    let sql = match cached {
        Some(sql) => sql,
        None => {
            let stmt = select(Id::<E>::from_value_tuple(id)).limit(1).build(backend);
            // The values bind in the order they are listed above; a change
            // in how sea-orm orders its filters must not bind them wrongly.
            assert_eq!(
                stmt.values,
                Some(Values(values.clone())),
                "{} binds its values in another order",
                stmt.sql
            );
            let sql: &'static str = Box::leak(stmt.sql.into_boxed_str());
            *RENDERED.write().unwrap_or_else(|e| e.into_inner()).entry(key).or_insert(sql)
        }
    };
    // Boxed: sea-orm's future is kilobytes, and each caller up to the
    // handler would copy it into its own when it starts.
    Box::pin(E::Model::find_by_statement(Statement::from_sql_and_values(backend, sql, values)).one(db)).await
}
