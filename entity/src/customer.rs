use sea_orm::entity::prelude::*;

/// Someone who places orders; `external_id` (the id in the shop or
/// channel the customer came from) is unique per tenant when given.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "customers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub external_id: Option<String>,
    pub email: String,
    pub name: String,
    /// Whether the customer wants order notifications by email.
    pub notify_email: bool,
    /// Whether the tenant's webhooks may notify about this customer's orders.
    pub notify_webhook: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
