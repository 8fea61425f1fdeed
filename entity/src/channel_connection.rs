use sea_orm::entity::prelude::*;

/// A tenant's store on a sales channel (a Shopify shop, a WooCommerce
/// site): where it is, how to sign in (sealed), which warehouse's stock it
/// sells and how it is doing.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "channel_connections")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The driver: `shopify`, `woocommerce`.
    pub channel: String,
    /// Unique per tenant.
    pub name: String,
    pub base_url: String,
    /// The driver's credentials as a JSON object, encrypted at rest.
    pub credentials: String,
    /// The secret inbound webhooks are signed with, encrypted at rest.
    pub webhook_secret: Option<String>,
    /// The local warehouse whose stock the store sells.
    pub warehouse_id: Uuid,
    /// The store's own location id (Shopify), when the channel has one.
    pub remote_location_id: Option<String>,
    /// The store's currency: products created by an import carry it.
    pub currency: String,
    /// Units held back from the store: ATP = on hand - reserved - buffer.
    pub safety_buffer: i64,
    /// `connected`, `throttled` or `disconnected`.
    pub status: String,
    pub last_error: Option<String>,
    pub status_changed_at: DateTimeUtc,
    /// A `channels.push` job is queued for the connection.
    pub push_queued: bool,
    pub version: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
