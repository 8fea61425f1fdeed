//! Channel dead letters: stock pushes to a store whose retries ran out,
//! kept until they are replayed or dismissed. The list sorts by
//! `created_at` within a tenant (and a connection).

use sea_orm_migration::{prelude::*, schema::*};

use crate::shared::{Spec, create_indexes, fk};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ChannelConnections {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ChannelMappings {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ChannelDeadLetters {
    Table,
    Id,
    TenantId,
    ConnectionId,
    MappingId,
    ProductId,
    Sku,
    RemoteVariantId,
    Quantity,
    LastError,
    Attempts,
    CreatedAt,
}

const INDEXES: &[Spec] = &[
    (
        "ix_channel_dead_letters_tenant_created",
        "channel_dead_letters",
        &["tenant_id", "created_at", "id"],
        false,
    ),
    (
        "ix_channel_dead_letters_tenant_connection_created",
        "channel_dead_letters",
        &["tenant_id", "connection_id", "created_at", "id"],
        false,
    ),
    ("ix_channel_dead_letters_mapping", "channel_dead_letters", &["mapping_id"], false),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ForeignKeyAction::Cascade;
        manager
            .create_table(
                Table::create()
                    .table(ChannelDeadLetters::Table)
                    .col(pk_uuid(ChannelDeadLetters::Id))
                    .col(uuid(ChannelDeadLetters::TenantId))
                    .col(uuid(ChannelDeadLetters::ConnectionId))
                    .col(uuid(ChannelDeadLetters::MappingId))
                    .col(uuid(ChannelDeadLetters::ProductId))
                    .col(string(ChannelDeadLetters::Sku))
                    .col(string(ChannelDeadLetters::RemoteVariantId))
                    .col(big_integer(ChannelDeadLetters::Quantity))
                    .col(text(ChannelDeadLetters::LastError))
                    .col(integer(ChannelDeadLetters::Attempts))
                    .col(timestamp_with_time_zone(ChannelDeadLetters::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_channel_dead_letters_connection",
                        (ChannelDeadLetters::Table, ChannelDeadLetters::ConnectionId),
                        (ChannelConnections::Table, ChannelConnections::Id),
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_channel_dead_letters_mapping",
                        (ChannelDeadLetters::Table, ChannelDeadLetters::MappingId),
                        (ChannelMappings::Table, ChannelMappings::Id),
                        Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        create_indexes(manager, INDEXES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ChannelDeadLetters::Table).to_owned()).await
    }
}
