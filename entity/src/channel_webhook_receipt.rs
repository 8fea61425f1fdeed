use sea_orm::entity::prelude::*;

/// One webhook a store sent to a connection, verified or not, and what
/// came of it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "channel_webhook_receipts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub connection_id: Uuid,
    /// The store's topic (`inventory_levels/update`, `product.updated`).
    pub topic: Option<String>,
    /// The store's id of the event (`X-Shopify-Webhook-Id`, `X-WC-Webhook-Delivery-ID`,
    /// Etsy's `webhook-id`, SNS's `MessageId`).
    pub event_id: Option<String>,
    /// The event id of a verified receipt, unique per connection: a second
    /// delivery of it is a replay.
    pub dedupe_key: Option<String>,
    pub verified: bool,
    /// `applied`, `unchanged`, `unmapped`, `ignored`, `rejected`, `confirmed`, `forged` or `replayed`.
    pub outcome: String,
    pub detail: Option<String>,
    pub duration_ms: i64,
    pub received_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
