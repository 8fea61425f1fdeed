use sea_orm::entity::prelude::*;

/// A mapped product whose store quantity was not its available-to-promise
/// when a reconcile run read it, and whether the run corrected it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "channel_drifts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub run_id: Uuid,
    pub connection_id: Uuid,
    pub product_id: Uuid,
    pub sku: String,
    /// What the store said; `None` when it did not say (no such variant).
    pub remote: Option<i64>,
    /// The ATP the store should show.
    pub expected: i64,
    /// The ATP was pushed to the store.
    pub corrected: bool,
    /// Why it was not corrected.
    pub detail: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
