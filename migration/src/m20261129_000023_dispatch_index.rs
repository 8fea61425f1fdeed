//! The dispatch of events takes the due `event.dispatch` jobs a hundred at
//! a time (`jobs::take_due`): `ix_jobs_dispatch_ready` holds just those,
//! pending, in the order they are taken, so the read does not pass over
//! the other kinds of the backlog.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX ix_jobs_dispatch_ready ON jobs (priority DESC, run_at) \
                 WHERE status = 'pending' AND kind = 'event.dispatch'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name("ix_jobs_dispatch_ready").table(Alias::new("jobs")).to_owned())
            .await
    }
}
