//! Inventory: products, warehouses, stock levels (never negative, enforced
//! by CHECK constraints too), the stock movement ledger and reservations.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Products {
    Table,
    Id,
    TenantId,
    Sku,
    Name,
    Barcode,
    UnitPrice,
    Currency,
    Attributes,
    Active,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Warehouses {
    Table,
    Id,
    TenantId,
    Code,
    Name,
    Active,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum StockLevels {
    Table,
    TenantId,
    ProductId,
    WarehouseId,
    OnHand,
    Reserved,
    ReorderPoint,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum StockMovements {
    Table,
    Id,
    TenantId,
    ProductId,
    WarehouseId,
    Kind,
    Quantity,
    ReservedDelta,
    Reason,
    Reference,
    UserId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Reservations {
    Table,
    Id,
    TenantId,
    Reference,
    Status,
    Lines,
    ExpiresAt,
    CreatedAt,
    UpdatedAt,
}

fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

async fn unique(
    manager: &SchemaManager<'_>,
    name: &str,
    table: impl IntoIden,
    a: impl IntoIden,
    b: impl IntoIden,
) -> Result<(), DbErr> {
    manager.create_index(Index::create().name(name).table(table).col(a).col(b).unique().to_owned()).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Products::Table)
                    .col(pk_uuid(Products::Id))
                    .col(uuid(Products::TenantId))
                    .col(string(Products::Sku))
                    .col(string(Products::Name))
                    .col(string_null(Products::Barcode))
                    .col(big_integer(Products::UnitPrice))
                    .col(string(Products::Currency))
                    .col(json(Products::Attributes))
                    .col(boolean(Products::Active))
                    .col(integer(Products::Version))
                    .col(timestamp_with_time_zone(Products::CreatedAt))
                    .col(timestamp_with_time_zone(Products::UpdatedAt))
                    .check(Expr::col(Products::UnitPrice).gte(0))
                    .foreign_key(&mut fk(
                        "fk_products_tenant",
                        (Products::Table, Products::TenantId),
                        (Tenants::Table, Tenants::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        unique(manager, "ux_products_tenant_sku", Products::Table, Products::TenantId, Products::Sku).await?;

        manager
            .create_table(
                Table::create()
                    .table(Warehouses::Table)
                    .col(pk_uuid(Warehouses::Id))
                    .col(uuid(Warehouses::TenantId))
                    .col(string(Warehouses::Code))
                    .col(string(Warehouses::Name))
                    .col(boolean(Warehouses::Active))
                    .col(timestamp_with_time_zone(Warehouses::CreatedAt))
                    .col(timestamp_with_time_zone(Warehouses::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_warehouses_tenant",
                        (Warehouses::Table, Warehouses::TenantId),
                        (Tenants::Table, Tenants::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        unique(
            manager,
            "ux_warehouses_tenant_code",
            Warehouses::Table,
            Warehouses::TenantId,
            Warehouses::Code,
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(StockLevels::Table)
                    .col(uuid(StockLevels::TenantId))
                    .col(uuid(StockLevels::ProductId))
                    .col(uuid(StockLevels::WarehouseId))
                    .col(big_integer(StockLevels::OnHand).default(0))
                    .col(big_integer(StockLevels::Reserved).default(0))
                    .col(big_integer_null(StockLevels::ReorderPoint))
                    .col(timestamp_with_time_zone(StockLevels::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(StockLevels::TenantId)
                            .col(StockLevels::ProductId)
                            .col(StockLevels::WarehouseId),
                    )
                    // No negative stock, no reservation beyond what is on hand.
                    .check(Expr::col(StockLevels::OnHand).gte(0))
                    .check(Expr::col(StockLevels::Reserved).gte(0))
                    .check(Expr::col(StockLevels::Reserved).lte(Expr::col(StockLevels::OnHand)))
                    .foreign_key(&mut fk(
                        "fk_stock_levels_product",
                        (StockLevels::Table, StockLevels::ProductId),
                        (Products::Table, Products::Id),
                    ))
                    .foreign_key(&mut fk(
                        "fk_stock_levels_warehouse",
                        (StockLevels::Table, StockLevels::WarehouseId),
                        (Warehouses::Table, Warehouses::Id),
                    ))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(StockMovements::Table)
                    .col(pk_uuid(StockMovements::Id))
                    .col(uuid(StockMovements::TenantId))
                    .col(uuid(StockMovements::ProductId))
                    .col(uuid(StockMovements::WarehouseId))
                    .col(string(StockMovements::Kind))
                    .col(big_integer(StockMovements::Quantity))
                    .col(big_integer(StockMovements::ReservedDelta))
                    .col(string_null(StockMovements::Reason))
                    .col(string_null(StockMovements::Reference))
                    .col(uuid_null(StockMovements::UserId))
                    .col(timestamp_with_time_zone(StockMovements::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_stock_movements_product",
                        (StockMovements::Table, StockMovements::ProductId),
                        (Products::Table, Products::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_stock_movements_level")
                    .table(StockMovements::Table)
                    .col(StockMovements::TenantId)
                    .col(StockMovements::ProductId)
                    .col(StockMovements::WarehouseId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Reservations::Table)
                    .col(pk_uuid(Reservations::Id))
                    .col(uuid(Reservations::TenantId))
                    .col(string(Reservations::Reference))
                    .col(string(Reservations::Status))
                    .col(json(Reservations::Lines))
                    .col(timestamp_with_time_zone(Reservations::ExpiresAt))
                    .col(timestamp_with_time_zone(Reservations::CreatedAt))
                    .col(timestamp_with_time_zone(Reservations::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_reservations_tenant",
                        (Reservations::Table, Reservations::TenantId),
                        (Tenants::Table, Tenants::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        unique(
            manager,
            "ux_reservations_tenant_reference",
            Reservations::Table,
            Reservations::TenantId,
            Reservations::Reference,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Reservations::Table.into_iden(),
            StockMovements::Table.into_iden(),
            StockLevels::Table.into_iden(),
            Warehouses::Table.into_iden(),
            Products::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
