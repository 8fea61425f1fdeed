use sea_orm::entity::prelude::*;

/// A stock push to a store whose retries ran out: what was meant to be
/// written, and why it failed. Replayed (pushing the ATP of then) or
/// dismissed.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "channel_dead_letters")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub connection_id: Uuid,
    pub mapping_id: Uuid,
    pub product_id: Uuid,
    pub sku: String,
    pub remote_variant_id: String,
    /// The quantity the last attempt meant to write.
    pub quantity: i64,
    pub last_error: String,
    pub attempts: i32,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
