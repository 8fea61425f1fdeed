use sea_orm::entity::prelude::*;

/// A run over a connection: a catalog `import` page by page, a full
/// `push` of every mapped product or a `reconcile` of the store's
/// quantities, in batches: `pending`, `running`, `succeeded` or `failed`,
/// with its progress.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "channel_sync_runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub connection_id: Uuid,
    /// `import`, `push` or `reconcile`.
    pub kind: String,
    pub status: String,
    /// The store's cursor of the next page (an import), or the last mapping
    /// done (push, reconcile); `None` before the first.
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
    /// Push and reconcile: mappings to go through, gone through, and those
    /// of them the store refused or could not say.
    pub total: i64,
    pub done: i64,
    pub failed: i64,
    /// Reconcile: mappings whose store quantity was not their ATP.
    pub drifted: i64,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
