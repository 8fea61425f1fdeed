//! Governance: licenses, feature toggles and monthly API usage.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenants {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Licenses {
    Table,
    TenantId,
    Tier,
    Trial,
    Status,
    StartsAt,
    ExpiresAt,
    MaxUsers,
    ApiCallsPerMonth,
    UserRatePerMinute,
    TenantRatePerMinute,
    KeyId,
    AnnouncedState,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum FeatureToggles {
    Table,
    TenantId,
    Key,
    State,
    EffectiveAt,
    ExpiresAt,
    UpdatedBy,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ApiUsage {
    Table,
    TenantId,
    Period,
    Calls,
    RateLimited,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Licenses::Table)
                    .col(uuid(Licenses::TenantId).primary_key())
                    .col(string(Licenses::Tier))
                    .col(boolean(Licenses::Trial))
                    .col(string(Licenses::Status))
                    .col(timestamp_with_time_zone(Licenses::StartsAt))
                    .col(timestamp_with_time_zone(Licenses::ExpiresAt))
                    .col(big_integer_null(Licenses::MaxUsers))
                    .col(big_integer_null(Licenses::ApiCallsPerMonth))
                    .col(big_integer_null(Licenses::UserRatePerMinute))
                    .col(big_integer_null(Licenses::TenantRatePerMinute))
                    .col(string_null(Licenses::KeyId))
                    .col(string(Licenses::AnnouncedState))
                    .col(timestamp_with_time_zone(Licenses::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_licenses_tenant")
                            .from(Licenses::Table, Licenses::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(FeatureToggles::Table)
                    .col(uuid(FeatureToggles::TenantId))
                    .col(string(FeatureToggles::Key))
                    .col(string(FeatureToggles::State))
                    .col(timestamp_with_time_zone_null(FeatureToggles::EffectiveAt))
                    .col(timestamp_with_time_zone_null(FeatureToggles::ExpiresAt))
                    .col(uuid_null(FeatureToggles::UpdatedBy))
                    .col(timestamp_with_time_zone(FeatureToggles::UpdatedAt))
                    .primary_key(Index::create().col(FeatureToggles::TenantId).col(FeatureToggles::Key))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiUsage::Table)
                    .col(uuid(ApiUsage::TenantId))
                    .col(string(ApiUsage::Period))
                    .col(big_integer(ApiUsage::Calls).default(0))
                    .col(big_integer(ApiUsage::RateLimited).default(0))
                    .col(timestamp_with_time_zone(ApiUsage::UpdatedAt))
                    .primary_key(Index::create().col(ApiUsage::TenantId).col(ApiUsage::Period))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in
            [ApiUsage::Table.into_iden(), FeatureToggles::Table.into_iden(), Licenses::Table.into_iden()]
        {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
