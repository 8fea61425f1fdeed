use sea_orm::entity::prelude::*;

/// A product of the tenant's catalogue.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "products")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Unique per tenant.
    pub sku: String,
    pub name: String,
    pub barcode: Option<String>,
    /// Integer minor units (cents) of `currency`.
    pub unit_price: i64,
    /// ISO 4217, upper case.
    pub currency: String,
    pub attributes: Json,
    pub active: bool,
    /// The vendor reorders of this product go to.
    pub preferred_vendor_id: Option<Uuid>,
    pub version: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
