use sea_orm::entity::prelude::*;

/// Stock held for a reference (e.g. an order) across one or more lines,
/// all or nothing.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "reservations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Unique per tenant: reserving again with it is idempotent.
    pub reference: String,
    /// `active`, `committed`, `released` or `expired`.
    pub status: String,
    /// Lines as `[{"product_id", "warehouse_id", "quantity"}]`.
    pub lines: Json,
    pub expires_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
