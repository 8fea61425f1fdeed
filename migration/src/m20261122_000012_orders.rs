//! Orders: customers, sales orders with their lines, payments and state
//! history. Each list sort has an index starting with `tenant_id` (see
//! `m20261122_000011_list_indexes`).

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
enum Customers {
    Table,
    Id,
    TenantId,
    ExternalId,
    Email,
    Name,
    NotifyEmail,
    NotifyWebhook,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    Id,
    TenantId,
    ExternalOrderId,
    Channel,
    CustomerId,
    WarehouseId,
    Currency,
    Total,
    Status,
    FailureReason,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum OrderLines {
    Table,
    Id,
    TenantId,
    OrderId,
    Position,
    ProductId,
    Sku,
    Quantity,
    UnitPrice,
    LineTotal,
}

#[derive(DeriveIden)]
enum OrderPayments {
    Table,
    Id,
    TenantId,
    OrderId,
    Gateway,
    GatewayReference,
    IdempotencyKey,
    Amount,
    Currency,
    Status,
    FailureReason,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum OrderTransitions {
    Table,
    Id,
    TenantId,
    OrderId,
    FromStatus,
    ToStatus,
    Reason,
    At,
}

/// Name, table, columns and uniqueness of each index.
const INDEXES: &[Spec] = &[
    ("ux_customers_tenant_external", "customers", &["tenant_id", "external_id"], true),
    ("ix_customers_tenant_created", "customers", &["tenant_id", "created_at", "id"], false),
    ("ix_customers_tenant_email", "customers", &["tenant_id", "email", "id"], false),
    ("ux_orders_tenant_external", "orders", &["tenant_id", "external_order_id"], true),
    ("ix_orders_tenant_created", "orders", &["tenant_id", "created_at", "id"], false),
    ("ix_orders_tenant_total", "orders", &["tenant_id", "total", "id"], false),
    ("ix_orders_tenant_status_created", "orders", &["tenant_id", "status", "created_at", "id"], false),
    ("ix_orders_tenant_customer_created", "orders", &["tenant_id", "customer_id", "created_at", "id"], false),
    ("ix_order_lines_order", "order_lines", &["order_id", "position"], false),
    ("ux_order_payments_tenant_key", "order_payments", &["tenant_id", "idempotency_key"], true),
    ("ix_order_payments_order", "order_payments", &["order_id"], false),
    ("ix_order_transitions_order", "order_transitions", &["order_id", "at"], false),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ForeignKeyAction::{Cascade, Restrict};
        manager
            .create_table(
                Table::create()
                    .table(Customers::Table)
                    .col(pk_uuid(Customers::Id))
                    .col(uuid(Customers::TenantId))
                    .col(string_null(Customers::ExternalId))
                    .col(string(Customers::Email))
                    .col(string(Customers::Name))
                    .col(boolean(Customers::NotifyEmail))
                    .col(boolean(Customers::NotifyWebhook))
                    .col(timestamp_with_time_zone(Customers::CreatedAt))
                    .col(timestamp_with_time_zone(Customers::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_customers_tenant",
                        (Customers::Table, Customers::TenantId),
                        (Tenants::Table, Tenants::Id),
                        Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Orders::Table)
                    .col(pk_uuid(Orders::Id))
                    .col(uuid(Orders::TenantId))
                    .col(string_null(Orders::ExternalOrderId))
                    .col(string(Orders::Channel))
                    .col(uuid(Orders::CustomerId))
                    .col(uuid(Orders::WarehouseId))
                    .col(string(Orders::Currency))
                    .col(big_integer(Orders::Total))
                    .col(string(Orders::Status))
                    .col(text_null(Orders::FailureReason))
                    .col(timestamp_with_time_zone(Orders::CreatedAt))
                    .col(timestamp_with_time_zone(Orders::UpdatedAt))
                    .check(Expr::col(Orders::Total).gte(0))
                    .foreign_key(&mut fk(
                        "fk_orders_tenant",
                        (Orders::Table, Orders::TenantId),
                        (Tenants::Table, Tenants::Id),
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_orders_customer",
                        (Orders::Table, Orders::CustomerId),
                        (Customers::Table, Customers::Id),
                        Restrict,
                    ))
                    .foreign_key(&mut fk(
                        "fk_orders_warehouse",
                        (Orders::Table, Orders::WarehouseId),
                        (Warehouses::Table, Warehouses::Id),
                        Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrderLines::Table)
                    .col(pk_uuid(OrderLines::Id))
                    .col(uuid(OrderLines::TenantId))
                    .col(uuid(OrderLines::OrderId))
                    .col(integer(OrderLines::Position))
                    .col(uuid(OrderLines::ProductId))
                    .col(string(OrderLines::Sku))
                    .col(big_integer(OrderLines::Quantity))
                    .col(big_integer(OrderLines::UnitPrice))
                    .col(big_integer(OrderLines::LineTotal))
                    .check(Expr::col(OrderLines::Quantity).gt(0))
                    .check(Expr::col(OrderLines::UnitPrice).gte(0))
                    .foreign_key(&mut fk(
                        "fk_order_lines_order",
                        (OrderLines::Table, OrderLines::OrderId),
                        (Orders::Table, Orders::Id),
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_order_lines_product",
                        (OrderLines::Table, OrderLines::ProductId),
                        (Products::Table, Products::Id),
                        Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrderPayments::Table)
                    .col(pk_uuid(OrderPayments::Id))
                    .col(uuid(OrderPayments::TenantId))
                    .col(uuid(OrderPayments::OrderId))
                    .col(string(OrderPayments::Gateway))
                    .col(string_null(OrderPayments::GatewayReference))
                    .col(string(OrderPayments::IdempotencyKey))
                    .col(big_integer(OrderPayments::Amount))
                    .col(string(OrderPayments::Currency))
                    .col(string(OrderPayments::Status))
                    .col(text_null(OrderPayments::FailureReason))
                    .col(timestamp_with_time_zone(OrderPayments::CreatedAt))
                    .col(timestamp_with_time_zone(OrderPayments::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_order_payments_order",
                        (OrderPayments::Table, OrderPayments::OrderId),
                        (Orders::Table, Orders::Id),
                        Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrderTransitions::Table)
                    .col(pk_uuid(OrderTransitions::Id))
                    .col(uuid(OrderTransitions::TenantId))
                    .col(uuid(OrderTransitions::OrderId))
                    .col(string_null(OrderTransitions::FromStatus))
                    .col(string(OrderTransitions::ToStatus))
                    .col(text_null(OrderTransitions::Reason))
                    .col(timestamp_with_time_zone(OrderTransitions::At))
                    .foreign_key(&mut fk(
                        "fk_order_transitions_order",
                        (OrderTransitions::Table, OrderTransitions::OrderId),
                        (Orders::Table, Orders::Id),
                        Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        create_indexes(manager, INDEXES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            OrderTransitions::Table.into_iden(),
            OrderPayments::Table.into_iden(),
            OrderLines::Table.into_iden(),
            Orders::Table.into_iden(),
            Customers::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
