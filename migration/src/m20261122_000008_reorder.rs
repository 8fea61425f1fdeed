//! Reorder settings: how much to reorder per stock level, and a product's
//! preferred vendor.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum StockLevels {
    Table,
    ReorderQuantity,
}

#[derive(DeriveIden)]
enum Products {
    Table,
    PreferredVendorId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(StockLevels::Table)
                    .add_column(big_integer_null(StockLevels::ReorderQuantity))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Products::Table)
                    .add_column(uuid_null(Products::PreferredVendorId))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(Products::Table).drop_column(Products::PreferredVendorId).to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter().table(StockLevels::Table).drop_column(StockLevels::ReorderQuantity).to_owned(),
            )
            .await
    }
}
