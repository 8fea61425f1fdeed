use sea_orm::entity::prelude::*;

/// A message to an order's customer about the order, on one channel
/// (`log`, `email`, `webhook`): `pending` until its job delivers it
/// (`sent`), gives up (`failed`, with `last_error`), or it is not to be
/// sent at all (`skipped`: the customer said no, or the channel is off).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "order_notifications")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    /// What happened: `placed`, `paid`, `completed`, `failed`,
    /// `cancelled` or `refunded`.
    pub notification_type: String,
    pub channel: String,
    /// The email address (log, email) or the event type (webhook).
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
