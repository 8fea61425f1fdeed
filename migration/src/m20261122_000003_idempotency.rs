//! `idempotency_keys`: the responses of POST requests sent with an
//! `Idempotency-Key`, replayed for 24 h (see `src/platform/idempotency`).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Id,
    TenantId,
    UserId,
    Route,
    Key,
    Fingerprint,
    Status,
    ClaimId,
    ResponseStatus,
    ResponseHeaders,
    ResponseBody,
    ResponseSealed,
    CreatedAt,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .col(pk_uuid(IdempotencyKeys::Id))
                    .col(uuid(IdempotencyKeys::TenantId))
                    .col(uuid(IdempotencyKeys::UserId))
                    .col(string(IdempotencyKeys::Route))
                    .col(string_len(IdempotencyKeys::Key, 255))
                    .col(string_len(IdempotencyKeys::Fingerprint, 64))
                    .col(string_len(IdempotencyKeys::Status, 16))
                    .col(uuid(IdempotencyKeys::ClaimId))
                    .col(integer_null(IdempotencyKeys::ResponseStatus))
                    .col(json_null(IdempotencyKeys::ResponseHeaders))
                    .col(blob_null(IdempotencyKeys::ResponseBody))
                    .col(boolean(IdempotencyKeys::ResponseSealed).default(false))
                    .col(timestamp_with_time_zone(IdempotencyKeys::CreatedAt))
                    .col(timestamp_with_time_zone(IdempotencyKeys::ExpiresAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_idempotency_keys_tenant")
                            .from(IdempotencyKeys::Table, IdempotencyKeys::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // One key per tenant, user and route: two simultaneous first requests
        // are told apart by this index, not by a read before the write.
        manager
            .create_index(
                Index::create()
                    .name("ux_idempotency_keys_scope")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::TenantId)
                    .col(IdempotencyKeys::UserId)
                    .col(IdempotencyKeys::Route)
                    .col(IdempotencyKeys::Key)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Pruning deletes by expiry.
        manager
            .create_index(
                Index::create()
                    .name("ix_idempotency_keys_expires_at")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(IdempotencyKeys::Table).to_owned()).await
    }
}
