//! Channels: store connections, product mappings, sync runs and the log
//! of inbound webhooks. Each list
//! sort has an index starting with `tenant_id`.

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
enum ChannelConnections {
    Table,
    Id,
    TenantId,
    Channel,
    Name,
    BaseUrl,
    Credentials,
    WebhookSecret,
    WarehouseId,
    RemoteLocationId,
    Currency,
    SafetyBuffer,
    Status,
    LastError,
    StatusChangedAt,
    PushQueued,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ChannelMappings {
    Table,
    Id,
    TenantId,
    ConnectionId,
    ProductId,
    RemoteProductId,
    RemoteVariantId,
    InventoryItemId,
    Sku,
    Changes,
    Dirty,
    LastPushedQuantity,
    LastPushedAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ChannelSyncRuns {
    Table,
    Id,
    TenantId,
    ConnectionId,
    Kind,
    Status,
    Cursor,
    Pages,
    Listed,
    Linked,
    Created,
    Skipped,
    Error,
    StartedAt,
    FinishedAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ChannelWebhookReceipts {
    Table,
    Id,
    TenantId,
    ConnectionId,
    Topic,
    EventId,
    DedupeKey,
    Verified,
    Outcome,
    Detail,
    DurationMs,
    ReceivedAt,
}

/// Name, table, columns and uniqueness of each index.
const INDEXES: &[Spec] = &[
    ("ux_channel_connections_tenant_name", "channel_connections", &["tenant_id", "name"], true),
    (
        "ix_channel_connections_tenant_created",
        "channel_connections",
        &["tenant_id", "created_at", "id"],
        false,
    ),
    ("ix_channel_connections_tenant_warehouse", "channel_connections", &["tenant_id", "warehouse_id"], false),
    ("ux_channel_mappings_variant", "channel_mappings", &["connection_id", "remote_variant_id"], true),
    ("ux_channel_mappings_product", "channel_mappings", &["connection_id", "product_id"], true),
    ("ix_channel_mappings_tenant_created", "channel_mappings", &["tenant_id", "created_at", "id"], false),
    ("ix_channel_mappings_tenant_product", "channel_mappings", &["tenant_id", "product_id"], false),
    ("ix_channel_mappings_dirty", "channel_mappings", &["connection_id", "dirty", "id"], false),
    (
        "ix_channel_sync_runs_tenant_connection_created",
        "channel_sync_runs",
        &["tenant_id", "connection_id", "created_at", "id"],
        false,
    ),
    // NULL keys (unverified receipts) never collide.
    (
        "ux_channel_webhook_receipts_dedupe",
        "channel_webhook_receipts",
        &["connection_id", "dedupe_key"],
        true,
    ),
    (
        "ix_channel_webhook_receipts_tenant_connection_received",
        "channel_webhook_receipts",
        &["tenant_id", "connection_id", "received_at", "id"],
        false,
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ForeignKeyAction::{Cascade, Restrict};
        manager
            .create_table(
                Table::create()
                    .table(ChannelConnections::Table)
                    .col(pk_uuid(ChannelConnections::Id))
                    .col(uuid(ChannelConnections::TenantId))
                    .col(string(ChannelConnections::Channel))
                    .col(string(ChannelConnections::Name))
                    .col(text(ChannelConnections::BaseUrl))
                    .col(text(ChannelConnections::Credentials))
                    .col(text_null(ChannelConnections::WebhookSecret))
                    .col(uuid(ChannelConnections::WarehouseId))
                    .col(string_null(ChannelConnections::RemoteLocationId))
                    .col(string(ChannelConnections::Currency))
                    .col(big_integer(ChannelConnections::SafetyBuffer))
                    .col(string(ChannelConnections::Status))
                    .col(text_null(ChannelConnections::LastError))
                    .col(timestamp_with_time_zone(ChannelConnections::StatusChangedAt))
                    .col(boolean(ChannelConnections::PushQueued))
                    .col(integer(ChannelConnections::Version))
                    .col(timestamp_with_time_zone(ChannelConnections::CreatedAt))
                    .col(timestamp_with_time_zone(ChannelConnections::UpdatedAt))
                    .check(Expr::col(ChannelConnections::SafetyBuffer).gte(0))
                    .foreign_key(&mut fk(
                        "fk_channel_connections_tenant",
                        (ChannelConnections::Table, ChannelConnections::TenantId),
                        (Tenants::Table, Tenants::Id),
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_channel_connections_warehouse",
                        (ChannelConnections::Table, ChannelConnections::WarehouseId),
                        (Warehouses::Table, Warehouses::Id),
                        Restrict,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ChannelMappings::Table)
                    .col(pk_uuid(ChannelMappings::Id))
                    .col(uuid(ChannelMappings::TenantId))
                    .col(uuid(ChannelMappings::ConnectionId))
                    .col(uuid(ChannelMappings::ProductId))
                    .col(string(ChannelMappings::RemoteProductId))
                    .col(string(ChannelMappings::RemoteVariantId))
                    .col(string_null(ChannelMappings::InventoryItemId))
                    .col(string(ChannelMappings::Sku))
                    .col(big_integer(ChannelMappings::Changes))
                    .col(boolean(ChannelMappings::Dirty))
                    .col(big_integer_null(ChannelMappings::LastPushedQuantity))
                    .col(timestamp_with_time_zone_null(ChannelMappings::LastPushedAt))
                    .col(timestamp_with_time_zone(ChannelMappings::CreatedAt))
                    .col(timestamp_with_time_zone(ChannelMappings::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_channel_mappings_connection",
                        (ChannelMappings::Table, ChannelMappings::ConnectionId),
                        (ChannelConnections::Table, ChannelConnections::Id),
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_channel_mappings_product",
                        (ChannelMappings::Table, ChannelMappings::ProductId),
                        (Products::Table, Products::Id),
                        Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ChannelSyncRuns::Table)
                    .col(pk_uuid(ChannelSyncRuns::Id))
                    .col(uuid(ChannelSyncRuns::TenantId))
                    .col(uuid(ChannelSyncRuns::ConnectionId))
                    .col(string(ChannelSyncRuns::Kind))
                    .col(string(ChannelSyncRuns::Status))
                    .col(text_null(ChannelSyncRuns::Cursor))
                    .col(big_integer(ChannelSyncRuns::Pages))
                    .col(big_integer(ChannelSyncRuns::Listed))
                    .col(big_integer(ChannelSyncRuns::Linked))
                    .col(big_integer(ChannelSyncRuns::Created))
                    .col(big_integer(ChannelSyncRuns::Skipped))
                    .col(text_null(ChannelSyncRuns::Error))
                    .col(timestamp_with_time_zone_null(ChannelSyncRuns::StartedAt))
                    .col(timestamp_with_time_zone_null(ChannelSyncRuns::FinishedAt))
                    .col(timestamp_with_time_zone(ChannelSyncRuns::CreatedAt))
                    .col(timestamp_with_time_zone(ChannelSyncRuns::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_channel_sync_runs_connection",
                        (ChannelSyncRuns::Table, ChannelSyncRuns::ConnectionId),
                        (ChannelConnections::Table, ChannelConnections::Id),
                        Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ChannelWebhookReceipts::Table)
                    .col(pk_uuid(ChannelWebhookReceipts::Id))
                    .col(uuid(ChannelWebhookReceipts::TenantId))
                    .col(uuid(ChannelWebhookReceipts::ConnectionId))
                    .col(string_null(ChannelWebhookReceipts::Topic))
                    .col(string_null(ChannelWebhookReceipts::EventId))
                    .col(string_null(ChannelWebhookReceipts::DedupeKey))
                    .col(boolean(ChannelWebhookReceipts::Verified))
                    .col(string(ChannelWebhookReceipts::Outcome))
                    .col(text_null(ChannelWebhookReceipts::Detail))
                    .col(big_integer(ChannelWebhookReceipts::DurationMs))
                    .col(timestamp_with_time_zone(ChannelWebhookReceipts::ReceivedAt))
                    .foreign_key(&mut fk(
                        "fk_channel_webhook_receipts_connection",
                        (ChannelWebhookReceipts::Table, ChannelWebhookReceipts::ConnectionId),
                        (ChannelConnections::Table, ChannelConnections::Id),
                        Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        create_indexes(manager, INDEXES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ChannelWebhookReceipts::Table.into_iden(),
            ChannelSyncRuns::Table.into_iden(),
            ChannelMappings::Table.into_iden(),
            ChannelConnections::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
