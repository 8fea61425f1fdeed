//! Every schema change, forward-only in production; `down` exists for
//! development resets (`nexus migrate down`).

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_platform;
mod m20261122_000002_events_jobs_webhooks;
mod m20261122_000003_idempotency;
mod m20261122_000004_governance;
mod m20261122_000005_cors;
mod m20261122_000006_inventory;
mod m20261122_000007_procurement;
mod m20261122_000008_reorder;
mod m20261122_000009_vendor_version;
mod m20261122_000010_attempt_state;
mod m20261122_000011_list_indexes;
mod m20261122_000012_orders;
mod m20261128_000013_order_refunds_imports;
mod m20261128_000014_channels;
mod m20261128_000015_search;
mod m20261128_000016_order_kpis;
mod m20261128_000017_order_notifications;
mod m20261128_000019_channel_dead_letters;
mod m20261128_000020_order_gateway_callbacks;
mod m20261128_000021_channel_sync;
mod m20261128_000022_job_claim_indexes;
mod m20261129_000023_dispatch_index;
mod m20261129_000024_import_receipts;
mod shared;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_platform::Migration),
            Box::new(m20261122_000002_events_jobs_webhooks::Migration),
            Box::new(m20261122_000003_idempotency::Migration),
            Box::new(m20261122_000004_governance::Migration),
            Box::new(m20261122_000005_cors::Migration),
            Box::new(m20261122_000006_inventory::Migration),
            Box::new(m20261122_000007_procurement::Migration),
            Box::new(m20261122_000008_reorder::Migration),
            Box::new(m20261122_000009_vendor_version::Migration),
            Box::new(m20261122_000010_attempt_state::Migration),
            Box::new(m20261122_000011_list_indexes::Migration),
            Box::new(m20261122_000012_orders::Migration),
            Box::new(m20261128_000013_order_refunds_imports::Migration),
            Box::new(m20261128_000014_channels::Migration),
            Box::new(m20261128_000015_search::Migration),
            Box::new(m20261128_000016_order_kpis::Migration),
            Box::new(m20261128_000017_order_notifications::Migration),
            Box::new(m20261128_000019_channel_dead_letters::Migration),
            Box::new(m20261128_000020_order_gateway_callbacks::Migration),
            Box::new(m20261128_000021_channel_sync::Migration),
            Box::new(m20261128_000022_job_claim_indexes::Migration),
            Box::new(m20261129_000023_dispatch_index::Migration),
            Box::new(m20261129_000024_import_receipts::Migration),
        ]
    }
}
