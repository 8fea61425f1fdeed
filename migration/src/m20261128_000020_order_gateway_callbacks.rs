//! The log of signed callbacks a payment gateway (Stripe) sent about a
//! tenant's payments and refunds: every one received, verified or not, and
//! what came of it. A verified event's id is unique per tenant, so a
//! second delivery of it is a replay.

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
enum OrderGatewayCallbacks {
    Table,
    Id,
    TenantId,
    Gateway,
    EventId,
    EventType,
    DedupeKey,
    Verified,
    Outcome,
    Detail,
    ReceivedAt,
}

const INDEXES: &[Spec] = &[
    // NULL keys (refused callbacks) never collide.
    ("ux_order_gateway_callbacks_dedupe", "order_gateway_callbacks", &["tenant_id", "dedupe_key"], true),
    (
        "ix_order_gateway_callbacks_tenant_received",
        "order_gateway_callbacks",
        &["tenant_id", "received_at", "id"],
        false,
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OrderGatewayCallbacks::Table)
                    .col(pk_uuid(OrderGatewayCallbacks::Id))
                    .col(uuid(OrderGatewayCallbacks::TenantId))
                    .col(string(OrderGatewayCallbacks::Gateway))
                    .col(string_null(OrderGatewayCallbacks::EventId))
                    .col(string_null(OrderGatewayCallbacks::EventType))
                    .col(string_null(OrderGatewayCallbacks::DedupeKey))
                    .col(boolean(OrderGatewayCallbacks::Verified))
                    .col(string(OrderGatewayCallbacks::Outcome))
                    .col(text_null(OrderGatewayCallbacks::Detail))
                    .col(timestamp_with_time_zone(OrderGatewayCallbacks::ReceivedAt))
                    .foreign_key(&mut fk(
                        "fk_order_gateway_callbacks_tenant",
                        (OrderGatewayCallbacks::Table, OrderGatewayCallbacks::TenantId),
                        (Tenants::Table, Tenants::Id),
                        ForeignKeyAction::Cascade,
                    ))
                    .to_owned(),
            )
            .await?;
        create_indexes(manager, INDEXES).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(OrderGatewayCallbacks::Table).to_owned()).await
    }
}
