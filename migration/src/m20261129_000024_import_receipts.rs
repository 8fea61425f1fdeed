//! An import remembers whether its orders' customers are told they were
//! placed (`send_receipts`, off unless asked for): the import runs later,
//! as a job.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum OrderImports {
    Table,
    SendReceipts,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(OrderImports::Table)
                    .add_column(
                        ColumnDef::new(OrderImports::SendReceipts).boolean().not_null().default(false),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(OrderImports::Table).drop_column(OrderImports::SendReceipts).to_owned(),
            )
            .await
    }
}
