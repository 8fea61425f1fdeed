//! Procurement: vendors, purchase orders and their lines, and the built-in
//! ledger's journal entries.

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
}

#[derive(DeriveIden)]
enum Warehouses {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Vendors {
    Table,
    Id,
    TenantId,
    Name,
    Email,
    Currency,
    Active,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PurchaseOrders {
    Table,
    Id,
    TenantId,
    VendorId,
    WarehouseId,
    Status,
    Currency,
    Total,
    Notes,
    CreatedBy,
    ApprovedBy,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PurchaseOrderLines {
    Table,
    Id,
    TenantId,
    PurchaseOrderId,
    ProductId,
    Quantity,
    UnitCost,
    Received,
}

#[derive(DeriveIden)]
enum JournalEntries {
    Table,
    Id,
    TenantId,
    Reference,
    Memo,
    Currency,
    Lines,
    CreatedAt,
}

fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
    action: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create().name(name).from(from.0, from.1).to(to.0, to.1).on_delete(action).to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ForeignKeyAction::{Cascade, Restrict};
        manager
            .create_table(
                Table::create()
                    .table(Vendors::Table)
                    .col(pk_uuid(Vendors::Id))
                    .col(uuid(Vendors::TenantId))
                    .col(string(Vendors::Name))
                    .col(string_null(Vendors::Email))
                    .col(string(Vendors::Currency))
                    .col(boolean(Vendors::Active))
                    .col(timestamp_with_time_zone(Vendors::CreatedAt))
                    .col(timestamp_with_time_zone(Vendors::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_vendors_tenant",
                        (Vendors::Table, Vendors::TenantId),
                        (Tenants::Table, Tenants::Id),
                        Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PurchaseOrders::Table)
                    .col(pk_uuid(PurchaseOrders::Id))
                    .col(uuid(PurchaseOrders::TenantId))
                    .col(uuid(PurchaseOrders::VendorId))
                    .col(uuid(PurchaseOrders::WarehouseId))
                    .col(string(PurchaseOrders::Status))
                    .col(string(PurchaseOrders::Currency))
                    .col(big_integer(PurchaseOrders::Total))
                    .col(text_null(PurchaseOrders::Notes))
                    .col(uuid_null(PurchaseOrders::CreatedBy))
                    .col(uuid_null(PurchaseOrders::ApprovedBy))
                    .col(integer(PurchaseOrders::Version))
                    .col(timestamp_with_time_zone(PurchaseOrders::CreatedAt))
                    .col(timestamp_with_time_zone(PurchaseOrders::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_pos_tenant",
                        (PurchaseOrders::Table, PurchaseOrders::TenantId),
                        (Tenants::Table, Tenants::Id),
                        Cascade,
                    ))
                    // A vendor with orders cannot be deleted (409).
                    .foreign_key(&mut fk(
                        "fk_pos_vendor",
                        (PurchaseOrders::Table, PurchaseOrders::VendorId),
                        (Vendors::Table, Vendors::Id),
                        Restrict,
                    ))
                    .foreign_key(&mut fk(
                        "fk_pos_warehouse",
                        (PurchaseOrders::Table, PurchaseOrders::WarehouseId),
                        (Warehouses::Table, Warehouses::Id),
                        Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_pos_tenant_created")
                    .table(PurchaseOrders::Table)
                    .col(PurchaseOrders::TenantId)
                    .col(PurchaseOrders::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(PurchaseOrderLines::Table)
                    .col(pk_uuid(PurchaseOrderLines::Id))
                    .col(uuid(PurchaseOrderLines::TenantId))
                    .col(uuid(PurchaseOrderLines::PurchaseOrderId))
                    .col(uuid(PurchaseOrderLines::ProductId))
                    .col(big_integer(PurchaseOrderLines::Quantity))
                    .col(big_integer(PurchaseOrderLines::UnitCost))
                    .col(big_integer(PurchaseOrderLines::Received).default(0))
                    .check(Expr::col(PurchaseOrderLines::Quantity).gt(0))
                    .check(Expr::col(PurchaseOrderLines::UnitCost).gte(0))
                    .check(Expr::col(PurchaseOrderLines::Received).gte(0))
                    .check(
                        Expr::col(PurchaseOrderLines::Received).lte(Expr::col(PurchaseOrderLines::Quantity)),
                    )
                    .foreign_key(&mut fk(
                        "fk_po_lines_po",
                        (PurchaseOrderLines::Table, PurchaseOrderLines::PurchaseOrderId),
                        (PurchaseOrders::Table, PurchaseOrders::Id),
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_po_lines_product",
                        (PurchaseOrderLines::Table, PurchaseOrderLines::ProductId),
                        (Products::Table, Products::Id),
                        Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_po_lines_po")
                    .table(PurchaseOrderLines::Table)
                    .col(PurchaseOrderLines::PurchaseOrderId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(JournalEntries::Table)
                    .col(pk_uuid(JournalEntries::Id))
                    .col(uuid(JournalEntries::TenantId))
                    .col(string(JournalEntries::Reference))
                    .col(string(JournalEntries::Memo))
                    .col(string(JournalEntries::Currency))
                    .col(json(JournalEntries::Lines))
                    .col(timestamp_with_time_zone(JournalEntries::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_journal_tenant",
                        (JournalEntries::Table, JournalEntries::TenantId),
                        (Tenants::Table, Tenants::Id),
                        Cascade,
                    ))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            JournalEntries::Table.into_iden(),
            PurchaseOrderLines::Table.into_iden(),
            PurchaseOrders::Table.into_iden(),
            Vendors::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
