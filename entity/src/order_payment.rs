use sea_orm::entity::prelude::*;

/// A payment of a sales order through a payment gateway: `pending` (sent,
/// not answered yet), `captured`, `declined`, `voiding` (compensation
/// queued) or `voided`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "order_payments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    /// The gateway's name (`simulated`).
    pub gateway: String,
    /// The gateway's id of the charge, once it answered.
    pub gateway_reference: Option<String>,
    /// Sent with every call about this payment; unique per tenant.
    pub idempotency_key: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub failure_reason: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
