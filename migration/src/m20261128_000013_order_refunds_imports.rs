//! Orders, second part: refunds of an order's payment, and CSV imports of
//! orders with their uploaded file kept in chunks (so any worker of any
//! instance can read it). Orders gain the amount refunded (requested or
//! processed, the bound of the next refund) and the time the shop says the
//! order was placed.

use sea_orm_migration::{prelude::*, schema::*};

use crate::shared::{Spec, create_indexes, fk};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    Id,
    Refunded,
    PlacedAt,
}

#[derive(DeriveIden)]
enum OrderPayments {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Warehouses {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum OrderRefunds {
    Table,
    Id,
    TenantId,
    OrderId,
    PaymentId,
    IdempotencyKey,
    Amount,
    Currency,
    Reason,
    Status,
    GatewayReference,
    FailureReason,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum OrderImports {
    Table,
    Id,
    TenantId,
    WarehouseId,
    Filename,
    SizeBytes,
    Status,
    RowsDone,
    Created,
    Skipped,
    ErrorCount,
    Errors,
    FailureReason,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum OrderImportChunks {
    Table,
    Id,
    TenantId,
    ImportId,
    Seq,
    Data,
}

/// Name, table, columns and uniqueness of each index.
const INDEXES: &[Spec] = &[
    ("ux_order_refunds_order_key", "order_refunds", &["tenant_id", "order_id", "idempotency_key"], true),
    ("ix_order_refunds_order_created", "order_refunds", &["order_id", "created_at", "id"], false),
    ("ix_order_imports_tenant_created", "order_imports", &["tenant_id", "created_at", "id"], false),
    ("ux_order_import_chunks_seq", "order_import_chunks", &["import_id", "seq"], true),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ForeignKeyAction::{Cascade, Restrict};
        // One column per statement: SQLite alters one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Orders::Table)
                    .add_column(big_integer(Orders::Refunded).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Orders::Table)
                    .add_column(timestamp_with_time_zone_null(Orders::PlacedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrderRefunds::Table)
                    .col(pk_uuid(OrderRefunds::Id))
                    .col(uuid(OrderRefunds::TenantId))
                    .col(uuid(OrderRefunds::OrderId))
                    .col(uuid(OrderRefunds::PaymentId))
                    .col(string(OrderRefunds::IdempotencyKey))
                    .col(big_integer(OrderRefunds::Amount))
                    .col(string(OrderRefunds::Currency))
                    .col(text(OrderRefunds::Reason))
                    .col(string(OrderRefunds::Status))
                    .col(string_null(OrderRefunds::GatewayReference))
                    .col(text_null(OrderRefunds::FailureReason))
                    .col(timestamp_with_time_zone(OrderRefunds::CreatedAt))
                    .col(timestamp_with_time_zone(OrderRefunds::UpdatedAt))
                    .check(Expr::col(OrderRefunds::Amount).gt(0))
                    .foreign_key(&mut fk(
                        "fk_order_refunds_tenant",
                        (OrderRefunds::Table, OrderRefunds::TenantId),
                        (Tenants::Table, Tenants::Id),
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_order_refunds_order",
                        (OrderRefunds::Table, OrderRefunds::OrderId),
                        (Orders::Table, Orders::Id),
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_order_refunds_payment",
                        (OrderRefunds::Table, OrderRefunds::PaymentId),
                        (OrderPayments::Table, OrderPayments::Id),
                        Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrderImports::Table)
                    .col(pk_uuid(OrderImports::Id))
                    .col(uuid(OrderImports::TenantId))
                    .col(uuid(OrderImports::WarehouseId))
                    .col(string(OrderImports::Filename))
                    .col(big_integer(OrderImports::SizeBytes))
                    .col(string(OrderImports::Status))
                    .col(big_integer(OrderImports::RowsDone))
                    .col(big_integer(OrderImports::Created))
                    .col(big_integer(OrderImports::Skipped))
                    .col(big_integer(OrderImports::ErrorCount))
                    .col(json(OrderImports::Errors))
                    .col(text_null(OrderImports::FailureReason))
                    .col(timestamp_with_time_zone(OrderImports::CreatedAt))
                    .col(timestamp_with_time_zone(OrderImports::UpdatedAt))
                    .col(timestamp_with_time_zone_null(OrderImports::FinishedAt))
                    .foreign_key(&mut fk(
                        "fk_order_imports_tenant",
                        (OrderImports::Table, OrderImports::TenantId),
                        (Tenants::Table, Tenants::Id),
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_order_imports_warehouse",
                        (OrderImports::Table, OrderImports::WarehouseId),
                        (Warehouses::Table, Warehouses::Id),
                        Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrderImportChunks::Table)
                    .col(pk_uuid(OrderImportChunks::Id))
                    .col(uuid(OrderImportChunks::TenantId))
                    .col(uuid(OrderImportChunks::ImportId))
                    .col(integer(OrderImportChunks::Seq))
                    .col(blob(OrderImportChunks::Data))
                    .foreign_key(&mut fk(
                        "fk_order_import_chunks_import",
                        (OrderImportChunks::Table, OrderImportChunks::ImportId),
                        (OrderImports::Table, OrderImports::Id),
                        Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        create_indexes(manager, INDEXES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            OrderImportChunks::Table.into_iden(),
            OrderImports::Table.into_iden(),
            OrderRefunds::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        for column in [Orders::PlacedAt.into_iden(), Orders::Refunded.into_iden()] {
            manager.alter_table(Table::alter().table(Orders::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
