use sea_orm::entity::prelude::*;

/// A toggle of a module or feature key: global (tenant_id is the nil UUID,
/// set by super-admins) or a tenant's own override.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "feature_toggles")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// `enabled`, `disabled`, `deprecated` or `removed` (the last two global only).
    pub state: String,
    /// The toggle applies from this time (None: at once) ...
    pub effective_at: Option<DateTimeUtc>,
    /// ... until this time (None: until changed).
    pub expires_at: Option<DateTimeUtc>,
    pub updated_by: Option<Uuid>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
