use sea_orm::entity::prelude::*;

/// A balanced journal entry of the built-in ledger: its lines' debits equal
/// their credits.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "journal_entries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// What it records, e.g. a goods receipt of a purchase order.
    pub reference: String,
    pub memo: String,
    pub currency: String,
    /// `[{"account", "debit", "credit"}]`, minor units.
    pub lines: Json,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
