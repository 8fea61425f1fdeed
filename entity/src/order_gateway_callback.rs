use sea_orm::entity::prelude::*;

/// One signed callback a payment gateway sent about a tenant's payments,
/// verified or not, and what came of it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "order_gateway_callbacks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The gateway's name (`stripe`).
    pub gateway: String,
    /// The gateway's id of the event (`evt_...`), once verified.
    pub event_id: Option<String>,
    /// `payment_intent.succeeded`, `refund.updated`, ...
    pub event_type: Option<String>,
    /// The event id of a verified callback, unique per tenant: a second
    /// delivery of it is a replay.
    pub dedupe_key: Option<String>,
    pub verified: bool,
    /// `applied`, `unchanged`, `ignored`, `rejected`, `forged`, `stale` or `replayed`.
    pub outcome: String,
    pub detail: Option<String>,
    pub received_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
