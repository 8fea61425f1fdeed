use sea_orm::entity::prelude::*;

/// A catalog import of a connection, page by page: `pending`, `running`,
/// `succeeded` or `failed`, with its progress.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "channel_sync_runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub connection_id: Uuid,
    /// `import`.
    pub kind: String,
    pub status: String,
    /// The store's cursor of the next page; `None` before the first.
    pub cursor: Option<String>,
    pub pages: i64,
    /// Variants the store listed.
    pub listed: i64,
    /// Mapped to a local product that had the SKU.
    pub linked: i64,
    /// Mapped to a local product the import created.
    pub created: i64,
    /// Not mapped (no SKU, or mapped already), see `error` for the last.
    pub skipped: i64,
    pub error: Option<String>,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
