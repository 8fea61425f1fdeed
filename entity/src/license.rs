use sea_orm::entity::prelude::*;

/// A tenant's license: its tier, administrative status and dates. The
/// lifecycle state (trial, expiring soon, grace, expired ...) is computed
/// from these at each request, never stored as the truth.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "licenses")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    /// A tier of `config/licenses.toml`.
    pub tier: String,
    pub trial: bool,
    /// `active`, `suspended` or `terminated`.
    pub status: String,
    pub starts_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    /// Overrides of the tier's limits; None keeps the tier's.
    pub max_users: Option<i64>,
    pub api_calls_per_month: Option<i64>,
    pub user_rate_per_minute: Option<i64>,
    pub tenant_rate_per_minute: Option<i64>,
    /// The signed key last applied.
    pub key_id: Option<String>,
    /// The lifecycle state last announced as an event.
    pub announced_state: String,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
