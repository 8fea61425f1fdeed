//! Indexes for the orders' KPIs and leaderboards
//! (`src/modules/orders/kpis.rs`): the completions and failures of a time
//! window, the refunds processed in it, and the completed orders of a
//! tenant per currency and customer.

use sea_orm_migration::prelude::*;

use crate::shared::{Spec, create_indexes};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Name, table and columns of each index.
const INDEXES: &[Spec] = &[
    ("ix_order_transitions_tenant_to_at", "order_transitions", &["tenant_id", "to_status", "at"], false),
    (
        "ix_order_refunds_tenant_status_updated",
        "order_refunds",
        &["tenant_id", "status", "updated_at"],
        false,
    ),
    (
        "ix_orders_tenant_status_currency_customer",
        "orders",
        &["tenant_id", "status", "currency", "customer_id"],
        false,
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create_indexes(manager, INDEXES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, _, _) in INDEXES {
            manager.drop_index(Index::drop().name(*name).table(*table).to_owned()).await?;
        }
        Ok(())
    }
}
