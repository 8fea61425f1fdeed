use sea_orm::entity::prelude::*;

/// A refund of (part of) an order's captured payment: `requested` (queued
/// for the gateway), then `processed` or `failed`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "order_refunds")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    /// The captured payment it gives money back from.
    pub payment_id: Uuid,
    /// The client's Idempotency-Key; unique per order.
    pub idempotency_key: String,
    /// Minor units, more than zero.
    pub amount: i64,
    pub currency: String,
    pub reason: String,
    pub status: String,
    /// The gateway's id of the refund, once processed.
    pub gateway_reference: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
