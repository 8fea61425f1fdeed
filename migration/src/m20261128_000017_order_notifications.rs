//! Order notifications (`src/modules/orders/notify.rs`): one row per
//! channel (log, email, webhook) for each order event a customer is told
//! about, with its delivery state. The history list sorts by `created_at`,
//! alone or within an order, a customer or a status.

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
}

#[derive(DeriveIden)]
enum Customers {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum OrderNotifications {
    Table,
    Id,
    TenantId,
    OrderId,
    CustomerId,
    NotificationType,
    Channel,
    Recipient,
    Subject,
    Body,
    Status,
    Attempts,
    LastError,
    SentAt,
    CreatedAt,
    UpdatedAt,
}

/// Name, table, columns and uniqueness of each index.
const INDEXES: &[Spec] = &[
    (
        "ix_order_notifications_tenant_created",
        "order_notifications",
        &["tenant_id", "created_at", "id"],
        false,
    ),
    (
        "ix_order_notifications_tenant_order_created",
        "order_notifications",
        &["tenant_id", "order_id", "created_at", "id"],
        false,
    ),
    (
        "ix_order_notifications_tenant_customer_created",
        "order_notifications",
        &["tenant_id", "customer_id", "created_at", "id"],
        false,
    ),
    (
        "ix_order_notifications_tenant_status_created",
        "order_notifications",
        &["tenant_id", "status", "created_at", "id"],
        false,
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ForeignKeyAction::Cascade;
        manager
            .create_table(
                Table::create()
                    .table(OrderNotifications::Table)
                    .col(pk_uuid(OrderNotifications::Id))
                    .col(uuid(OrderNotifications::TenantId))
                    .col(uuid(OrderNotifications::OrderId))
                    .col(uuid(OrderNotifications::CustomerId))
                    .col(string(OrderNotifications::NotificationType))
                    .col(string(OrderNotifications::Channel))
                    .col(string(OrderNotifications::Recipient))
                    .col(text(OrderNotifications::Subject))
                    .col(text(OrderNotifications::Body))
                    .col(string(OrderNotifications::Status))
                    .col(integer(OrderNotifications::Attempts).default(0))
                    .col(text_null(OrderNotifications::LastError))
                    .col(timestamp_with_time_zone_null(OrderNotifications::SentAt))
                    .col(timestamp_with_time_zone(OrderNotifications::CreatedAt))
                    .col(timestamp_with_time_zone(OrderNotifications::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_order_notifications_tenant",
                        (OrderNotifications::Table, OrderNotifications::TenantId),
                        (Tenants::Table, Tenants::Id),
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_order_notifications_order",
                        (OrderNotifications::Table, OrderNotifications::OrderId),
                        (Orders::Table, Orders::Id),
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_order_notifications_customer",
                        (OrderNotifications::Table, OrderNotifications::CustomerId),
                        (Customers::Table, Customers::Id),
                        Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        create_indexes(manager, INDEXES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(OrderNotifications::Table).to_owned()).await
    }
}
