//! The transactional outbox (`events`), durable jobs (`jobs`) and outbound
//! webhooks (`webhook_endpoints`, `webhook_deliveries`, `webhook_attempts`).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    TenantId,
    Type,
    Data,
    OccurredAt,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    TenantId,
    Kind,
    Payload,
    Priority,
    Lane,
    Status,
    Attempts,
    MaxAttempts,
    RunAt,
    LockedBy,
    LockedUntil,
    LastError,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    Id,
    TenantId,
    Url,
    Description,
    EventTypes,
    Enabled,
    Priority,
    Secret,
    PreviousSecret,
    PreviousSecretExpiresAt,
    DisabledReason,
    FailingSince,
    LastSuccessAt,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    TenantId,
    EndpointId,
    EventId,
    EventType,
    Payload,
    Status,
    Attempts,
    NextAttemptAt,
    LastStatusCode,
    CreatedAt,
    UpdatedAt,
    SucceededAt,
}

#[derive(DeriveIden)]
enum WebhookAttempts {
    Table,
    Id,
    TenantId,
    DeliveryId,
    EndpointId,
    Attempt,
    Url,
    RequestHeaders,
    StatusCode,
    DurationMs,
    ResponseBody,
    Error,
    CreatedAt,
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

async fn index(
    manager: &SchemaManager<'_>,
    name: &str,
    table: impl IntoIden,
    cols: Vec<DynIden>,
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.name(name).table(table);
    for col in cols {
        index.col(col);
    }
    manager.create_index(index.to_owned()).await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .col(pk_uuid(Events::Id))
                    .col(uuid(Events::TenantId))
                    .col(string(Events::Type))
                    .col(json(Events::Data))
                    .col(timestamp_with_time_zone(Events::OccurredAt))
                    .foreign_key(&mut fk(
                        "fk_events_tenant",
                        (Events::Table, Events::TenantId),
                        (Tenants::Table, Tenants::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ix_events_tenant_id",
            Events::Table,
            vec![Events::TenantId.into_iden(), Events::Id.into_iden()],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .col(pk_uuid(Jobs::Id))
                    .col(uuid_null(Jobs::TenantId))
                    .col(string(Jobs::Kind))
                    .col(json(Jobs::Payload))
                    .col(small_integer(Jobs::Priority))
                    .col(string(Jobs::Lane))
                    .col(string(Jobs::Status))
                    .col(integer(Jobs::Attempts).default(0))
                    .col(integer(Jobs::MaxAttempts))
                    .col(timestamp_with_time_zone(Jobs::RunAt))
                    .col(string_null(Jobs::LockedBy))
                    .col(timestamp_with_time_zone_null(Jobs::LockedUntil))
                    .col(text_null(Jobs::LastError))
                    .col(timestamp_with_time_zone(Jobs::CreatedAt))
                    .col(timestamp_with_time_zone(Jobs::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Jobs::FinishedAt))
                    .check(Expr::col(Jobs::Priority).between(1, 10))
                    .check(Expr::col(Jobs::Attempts).gte(0))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ix_jobs_claim",
            Jobs::Table,
            vec![Jobs::Lane.into_iden(), Jobs::Status.into_iden(), Jobs::RunAt.into_iden()],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(WebhookEndpoints::Table)
                    .col(pk_uuid(WebhookEndpoints::Id))
                    .col(uuid(WebhookEndpoints::TenantId))
                    .col(string(WebhookEndpoints::Url))
                    .col(string(WebhookEndpoints::Description))
                    .col(json(WebhookEndpoints::EventTypes))
                    .col(boolean(WebhookEndpoints::Enabled))
                    .col(small_integer(WebhookEndpoints::Priority))
                    .col(text(WebhookEndpoints::Secret))
                    .col(text_null(WebhookEndpoints::PreviousSecret))
                    .col(timestamp_with_time_zone_null(WebhookEndpoints::PreviousSecretExpiresAt))
                    .col(string_null(WebhookEndpoints::DisabledReason))
                    .col(timestamp_with_time_zone_null(WebhookEndpoints::FailingSince))
                    .col(timestamp_with_time_zone_null(WebhookEndpoints::LastSuccessAt))
                    .col(integer(WebhookEndpoints::Version))
                    .col(timestamp_with_time_zone(WebhookEndpoints::CreatedAt))
                    .col(timestamp_with_time_zone(WebhookEndpoints::UpdatedAt))
                    .check(Expr::col(WebhookEndpoints::Priority).between(1, 10))
                    .foreign_key(&mut fk(
                        "fk_webhook_endpoints_tenant",
                        (WebhookEndpoints::Table, WebhookEndpoints::TenantId),
                        (Tenants::Table, Tenants::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ix_webhook_endpoints_tenant",
            WebhookEndpoints::Table,
            vec![WebhookEndpoints::TenantId.into_iden()],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    .col(pk_uuid(WebhookDeliveries::Id))
                    .col(uuid(WebhookDeliveries::TenantId))
                    .col(uuid(WebhookDeliveries::EndpointId))
                    .col(uuid(WebhookDeliveries::EventId))
                    .col(string(WebhookDeliveries::EventType))
                    .col(json(WebhookDeliveries::Payload))
                    .col(string(WebhookDeliveries::Status))
                    .col(integer(WebhookDeliveries::Attempts).default(0))
                    .col(timestamp_with_time_zone_null(WebhookDeliveries::NextAttemptAt))
                    .col(integer_null(WebhookDeliveries::LastStatusCode))
                    .col(timestamp_with_time_zone(WebhookDeliveries::CreatedAt))
                    .col(timestamp_with_time_zone(WebhookDeliveries::UpdatedAt))
                    .col(timestamp_with_time_zone_null(WebhookDeliveries::SucceededAt))
                    .foreign_key(&mut fk(
                        "fk_webhook_deliveries_endpoint",
                        (WebhookDeliveries::Table, WebhookDeliveries::EndpointId),
                        (WebhookEndpoints::Table, WebhookEndpoints::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        // One delivery of an event per endpoint, however often fan-out runs.
        manager
            .create_index(
                Index::create()
                    .name("ux_webhook_deliveries_event_endpoint")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::EventId)
                    .col(WebhookDeliveries::EndpointId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ix_webhook_deliveries_endpoint",
            WebhookDeliveries::Table,
            vec![WebhookDeliveries::EndpointId.into_iden(), WebhookDeliveries::CreatedAt.into_iden()],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(WebhookAttempts::Table)
                    .col(pk_uuid(WebhookAttempts::Id))
                    .col(uuid(WebhookAttempts::TenantId))
                    .col(uuid(WebhookAttempts::DeliveryId))
                    .col(uuid(WebhookAttempts::EndpointId))
                    .col(integer(WebhookAttempts::Attempt))
                    .col(string(WebhookAttempts::Url))
                    .col(json(WebhookAttempts::RequestHeaders))
                    .col(integer_null(WebhookAttempts::StatusCode))
                    .col(integer(WebhookAttempts::DurationMs))
                    .col(text_null(WebhookAttempts::ResponseBody))
                    .col(text_null(WebhookAttempts::Error))
                    .col(timestamp_with_time_zone(WebhookAttempts::CreatedAt))
                    .foreign_key(&mut fk(
                        "fk_webhook_attempts_delivery",
                        (WebhookAttempts::Table, WebhookAttempts::DeliveryId),
                        (WebhookDeliveries::Table, WebhookDeliveries::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "ix_webhook_attempts_delivery",
            WebhookAttempts::Table,
            vec![WebhookAttempts::DeliveryId.into_iden(), WebhookAttempts::Attempt.into_iden()],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookAttempts::Table.into_iden(),
            WebhookDeliveries::Table.into_iden(),
            WebhookEndpoints::Table.into_iden(),
            Jobs::Table.into_iden(),
            Events::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
