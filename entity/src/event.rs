use sea_orm::entity::prelude::*;

/// The transactional outbox: a domain event, written in the same
/// transaction as the change that caused it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    /// UUID v7: sorts by time; also the Standard Webhooks `webhook-id`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// e.g. `user.created`.
    #[sea_orm(column_name = "type")]
    pub event_type: String,
    pub data: Json,
    pub occurred_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
