//! Per-tenant CORS origins.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum CorsOrigins {
    Table,
    TenantId,
    Origin,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CorsOrigins::Table)
                    .col(uuid(CorsOrigins::TenantId))
                    .col(string(CorsOrigins::Origin))
                    .col(timestamp_with_time_zone(CorsOrigins::CreatedAt))
                    .primary_key(Index::create().col(CorsOrigins::TenantId).col(CorsOrigins::Origin))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_cors_origins_tenant")
                            .from(CorsOrigins::Table, CorsOrigins::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Preflights look an origin up across tenants.
        manager
            .create_index(
                Index::create()
                    .name("ix_cors_origins_origin")
                    .table(CorsOrigins::Table)
                    .col(CorsOrigins::Origin)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(CorsOrigins::Table).to_owned()).await
    }
}
