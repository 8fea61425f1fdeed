use sea_orm::entity::prelude::*;

/// A purchase order: draft -> submitted -> approved -> partially_received
/// -> received -> closed, or cancelled from draft, submitted or approved.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "purchase_orders")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub vendor_id: Uuid,
    /// Where the goods are received.
    pub warehouse_id: Uuid,
    pub status: String,
    pub currency: String,
    /// Sum of the lines, minor units; computed by the server.
    pub total: i64,
    pub notes: Option<String>,
    pub created_by: Option<Uuid>,
    pub approved_by: Option<Uuid>,
    pub version: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
