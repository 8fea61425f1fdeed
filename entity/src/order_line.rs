use sea_orm::entity::prelude::*;

/// A line of a sales order, with the SKU as it was when ordered.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "order_lines")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    /// Its place in the order, from 0.
    pub position: i32,
    pub product_id: Uuid,
    pub sku: String,
    pub quantity: i64,
    /// Minor units per unit.
    pub unit_price: i64,
    /// `quantity * unit_price`.
    pub line_total: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
