use sea_orm::entity::prelude::*;

/// One HTTP attempt of a delivery, successful or not. Written before the
/// request goes out (`sending`) and completed with its outcome.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_attempts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub delivery_id: Uuid,
    pub endpoint_id: Uuid,
    /// 1 for the first try.
    pub attempt: i32,
    pub url: String,
    /// The headers sent (signatures included: they are not secrets).
    pub request_headers: Json,
    /// None when no response arrived (timeout, refused, SSRF guard).
    pub status_code: Option<i32>,
    pub duration_ms: i32,
    /// First 4 KiB of the response body.
    pub response_body: Option<String>,
    pub error: Option<String>,
    /// `sending`, `succeeded`, `failed` or `interrupted` (the worker stopped
    /// before the outcome was recorded).
    pub state: String,
    /// When the request went out.
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
