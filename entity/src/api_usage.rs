use sea_orm::entity::prelude::*;

/// API calls and rate-limit rejections of a tenant in one month.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_usage")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    /// `YYYY-MM` (UTC).
    #[sea_orm(primary_key, auto_increment = false)]
    pub period: String,
    pub calls: i64,
    pub rate_limited: i64,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
