use sea_orm::entity::prelude::*;

/// Append-only record of a mutating request. Nothing updates or deletes it;
/// the database rejects UPDATE and DELETE with a trigger.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_logs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// None for requests that never reached a tenant (e.g. a failed login).
    pub tenant_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub method: String,
    /// Route template, e.g. `/api/v1/users/{id}`.
    pub route: String,
    pub path: String,
    pub status: i32,
    pub request_id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Request body with passwords, tokens and secrets redacted.
    pub summary: Option<Json>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
