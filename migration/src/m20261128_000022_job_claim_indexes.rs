//! The claim of due jobs reads them in its order from an index instead of
//! sorting every ready job of the lane: `ix_jobs_ready` holds the pending
//! jobs by lane, priority (highest first) and time, `ix_jobs_leased` the
//! running ones by when their lease ends. Both are partial, so completed
//! jobs kept for the throughput figures cost them nothing. They replace
//! `ix_jobs_claim`, with which a claim sorted the lane's whole backlog (50 ms
//! at 27,500 ready jobs on PostgreSQL, 0.5 ms with these).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE INDEX ix_jobs_ready ON jobs (lane, priority DESC, run_at) WHERE status = 'pending'",
        )
        .await?;
        db.execute_unprepared(
            "CREATE INDEX ix_jobs_leased ON jobs (lane, locked_until) WHERE status = 'running'",
        )
        .await?;
        manager.drop_index(Index::drop().name("ix_jobs_claim").table(Alias::new("jobs")).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("CREATE INDEX ix_jobs_claim ON jobs (lane, status, run_at)").await?;
        for name in ["ix_jobs_ready", "ix_jobs_leased"] {
            manager.drop_index(Index::drop().name(name).table(Alias::new("jobs")).to_owned()).await?;
        }
        Ok(())
    }
}
