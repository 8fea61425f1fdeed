//! The one access path to tenant-owned rows. A query starts from a
//! [`TenantScope`], which adds the tenant filter, so forgetting it is not
//! possible; a row of another tenant is simply not found (404, never 403).

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
