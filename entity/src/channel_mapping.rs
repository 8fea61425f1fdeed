use sea_orm::entity::prelude::*;

/// A local product linked to a variant of a store: unique per connection
/// on both sides.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "channel_mappings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub connection_id: Uuid,
    pub product_id: Uuid,
    pub remote_product_id: String,
    /// The variant (a WooCommerce simple product is its own variant).
    pub remote_variant_id: String,
    /// What the store counts stock against (Shopify's inventory item).
    pub inventory_item_id: Option<String>,
    pub sku: String,
    /// Stock changes seen for the product; a push clears `dirty` only when
    /// no change came while it ran.
    pub changes: i64,
    /// The store's quantity is to be pushed.
    pub dirty: bool,
    pub last_pushed_quantity: Option<i64>,
    pub last_pushed_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
