//! Channels: progress of push and reconcile runs (`total`, `done`,
//! `failed`, `drifted` on the sync runs) and the drift a reconcile run
//! found, per SKU. Each list sort has an index starting with `tenant_id`.

use sea_orm_migration::{prelude::*, schema::*};

use crate::shared::{Spec, create_indexes, fk};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Products {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ChannelConnections {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum ChannelSyncRuns {
    Table,
    Id,
    Total,
    Done,
    Failed,
    Drifted,
}

#[derive(DeriveIden)]
enum ChannelDrifts {
    Table,
    Id,
    TenantId,
    RunId,
    ConnectionId,
    ProductId,
    Sku,
    Remote,
    Expected,
    Corrected,
    Detail,
    CreatedAt,
}

const INDEXES: &[Spec] =
    &[("ix_channel_drifts_tenant_run_sku", "channel_drifts", &["tenant_id", "run_id", "sku", "id"], false)];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds no more at once.
        for column in
            [ChannelSyncRuns::Total, ChannelSyncRuns::Done, ChannelSyncRuns::Failed, ChannelSyncRuns::Drifted]
        {
            manager
                .alter_table(
                    Table::alter()
                        .table(ChannelSyncRuns::Table)
                        .add_column(big_integer(column).default(0))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(ChannelDrifts::Table)
                    .col(pk_uuid(ChannelDrifts::Id))
                    .col(uuid(ChannelDrifts::TenantId))
                    .col(uuid(ChannelDrifts::RunId))
                    .col(uuid(ChannelDrifts::ConnectionId))
                    .col(uuid(ChannelDrifts::ProductId))
                    .col(string(ChannelDrifts::Sku))
                    .col(big_integer_null(ChannelDrifts::Remote))
                    .col(big_integer(ChannelDrifts::Expected))
                    .col(boolean(ChannelDrifts::Corrected))
                    .col(text_null(ChannelDrifts::Detail))
                    .col(timestamp_with_time_zone(ChannelDrifts::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_channel_drifts_run",
                        (ChannelDrifts::Table, ChannelDrifts::RunId),
                        (ChannelSyncRuns::Table, ChannelSyncRuns::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_channel_drifts_connection",
                        (ChannelDrifts::Table, ChannelDrifts::ConnectionId),
                        (ChannelConnections::Table, ChannelConnections::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_channel_drifts_product",
                        (ChannelDrifts::Table, ChannelDrifts::ProductId),
                        (Products::Table, Products::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        create_indexes(manager, INDEXES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ChannelDrifts::Table).to_owned()).await?;
        for column in
            [ChannelSyncRuns::Drifted, ChannelSyncRuns::Failed, ChannelSyncRuns::Done, ChannelSyncRuns::Total]
        {
            manager
                .alter_table(Table::alter().table(ChannelSyncRuns::Table).drop_column(column).to_owned())
                .await?;
        }
        Ok(())
    }
}
