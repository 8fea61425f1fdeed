use sea_orm::entity::prelude::*;

/// One event (message) owed to one endpoint, across all its attempts.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub endpoint_id: Uuid,
    /// The event delivered; also the `webhook-id` header (`msg_<id>`).
    pub event_id: Uuid,
    pub event_type: String,
    /// The exact JSON body sent on every attempt.
    pub payload: Json,
    /// `pending`, `succeeded` or `failed` (retries exhausted or endpoint gone).
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTimeUtc>,
    pub last_status_code: Option<i32>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub succeeded_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
