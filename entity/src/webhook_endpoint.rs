use sea_orm::entity::prelude::*;

/// A tenant's webhook receiver.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_endpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub url: String,
    pub description: String,
    /// Event type patterns: exact (`user.created`), `prefix.*`, or `*`.
    pub event_types: Json,
    pub enabled: bool,
    /// 1-10: the job lane its deliveries run in.
    pub priority: i16,
    /// The signing secret (`whsec_...`), encrypted at rest.
    pub secret: String,
    /// The secret before the last rotation, still signed with until it expires.
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTimeUtc>,
    /// Why the endpoint was disabled automatically (`gone`, `failing`).
    pub disabled_reason: Option<String>,
    /// Start of the current run of failures; cleared by a success.
    pub failing_since: Option<DateTimeUtc>,
    pub last_success_at: Option<DateTimeUtc>,
    pub version: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
