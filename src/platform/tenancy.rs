//! The one access path to rows. A query on a tenant-owned table starts
//! from a [`TenantScope`], which adds the tenant filter, so forgetting it is
//! not possible; a row of another tenant is simply not found (404, never
//! 403). Code that acts for no tenant (jobs, the CLI, the platform's own
//! tables) says so with [`SystemScope`]. Clippy (`clippy.toml`) refuses the
//! raw `find` / `find_by_id` / `update_many` / `delete_many` anywhere else.
#![allow(clippy::disallowed_methods)] // the one place they are allowed

use sea_orm::{ColumnTrait, DeleteMany, EntityTrait, PrimaryKeyTrait, QueryFilter, Select, UpdateMany};
use uuid::Uuid;

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

    pub fn update_many<E: EntityTrait>(self) -> UpdateMany<E> {
        E::update_many()
    }

    pub fn delete_many<E: EntityTrait>(self) -> DeleteMany<E> {
        E::delete_many()
    }
}
