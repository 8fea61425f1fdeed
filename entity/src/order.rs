use sea_orm::entity::prelude::*;

/// A sales order: pending -> reserved -> paid -> fulfilled -> completed,
/// or failed (with `failure_reason`) or cancelled on the way.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "orders")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// The id in the shop or channel it came from; unique per tenant when given.
    pub external_order_id: Option<String>,
    /// Where it came from (`web`, `shopify`, `pos`...).
    pub channel: String,
    pub customer_id: Uuid,
    /// The warehouse its stock is reserved in and shipped from.
    pub warehouse_id: Uuid,
    pub currency: String,
    /// Sum of the lines, minor units; computed by the server.
    pub total: i64,
    pub status: String,
    pub failure_reason: Option<String>,
    /// Minor units given back or being given back (refunds requested or
    /// processed); never more than the captured payment.
    pub refunded: i64,
    /// When the shop says the order was placed (imports); `None` when it
    /// was placed here, at `created_at`.
    pub placed_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
