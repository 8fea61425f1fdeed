use sea_orm::entity::prelude::*;

/// A durable background job. Claimed with a lease that its worker renews;
/// an expired lease makes it claimable again.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    /// Handler name, e.g. `webhook.deliver`.
    pub kind: String,
    pub payload: Json,
    /// 1 (lowest) to 10 (highest).
    pub priority: i16,
    /// `high` (8-10), `default` (3-7) or `low` (1-2).
    pub lane: String,
    /// `pending`, `running`, `completed` or `dead`.
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTimeUtc,
    pub locked_by: Option<String>,
    pub locked_until: Option<DateTimeUtc>,
    pub last_error: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
