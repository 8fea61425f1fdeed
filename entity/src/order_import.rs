use sea_orm::entity::prelude::*;

/// A CSV import of orders: `uploading`, `queued`, `running`, then
/// `completed` (with its counts and errors) or `failed`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "order_imports")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Where the imported orders' stock is reserved and shipped from.
    pub warehouse_id: Uuid,
    /// Whether each imported order's customer is told it was placed.
    pub send_receipts: bool,
    pub filename: String,
    pub size_bytes: i64,
    pub status: String,
    /// Data rows read so far.
    pub rows_done: i64,
    /// Orders created, and skipped (their external id exists already).
    pub created: i64,
    pub skipped: i64,
    /// Every bad row counted; `errors` keeps the first ones.
    pub error_count: i64,
    /// `[{"line", "column", "message"}]`, bounded.
    pub errors: Json,
    /// Why the whole import failed (a bad header).
    pub failure_reason: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
