//! Indexes for the orders' KPIs and leaderboards
//! (`src/modules/orders/kpis.rs`): the completions and failures of a time
//! window, the refunds processed in it, and the completed orders of a
//! tenant per currency and customer.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Name, table and columns of each index.
const INDEXES: &[(&str, &str, &[&str])] = &[
    ("ix_order_transitions_tenant_to_at", "order_transitions", &["tenant_id", "to_status", "at"]),
    ("ix_order_refunds_tenant_status_updated", "order_refunds", &["tenant_id", "status", "updated_at"]),
    (
        "ix_orders_tenant_status_currency_customer",
        "orders",
        &["tenant_id", "status", "currency", "customer_id"],
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, columns) in INDEXES {
            let mut index = Index::create();
            index.name(*name).table(*table);
            for column in *columns {
                index.col(*column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, _) in INDEXES {
            manager.drop_index(Index::drop().name(*name).table(*table).to_owned()).await?;
        }
        Ok(())
    }
}
