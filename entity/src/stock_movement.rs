use sea_orm::entity::prelude::*;

/// The append-only stock ledger: a stock level always equals the sum of
/// its movements (`on_hand` of `quantity`, `reserved` of `reserved_delta`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stock_movements")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub product_id: Uuid,
    pub warehouse_id: Uuid,
    /// `receipt`, `shipment`, `adjustment`, `transfer_out`, `transfer_in`,
    /// `reservation` or `release`.
    pub kind: String,
    /// Change of `on_hand`.
    pub quantity: i64,
    /// Change of `reserved`.
    pub reserved_delta: i64,
    pub reason: Option<String>,
    /// What caused it: an order, a purchase order, a transfer id ...
    pub reference: Option<String>,
    pub user_id: Option<Uuid>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
