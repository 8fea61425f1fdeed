use sea_orm::entity::prelude::*;

/// Stock of one product in one warehouse. `available = on_hand - reserved`;
/// none can go negative (checked in code and by the database).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stock_levels")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub product_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub warehouse_id: Uuid,
    pub on_hand: i64,
    pub reserved: i64,
    /// Below this, `stock.low` is announced and a reorder is recommended.
    pub reorder_point: Option<i64>,
    /// How much a reorder should bring; twice the reorder point when unset.
    pub reorder_quantity: Option<i64>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
