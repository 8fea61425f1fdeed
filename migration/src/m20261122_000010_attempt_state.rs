//! A state on webhook attempts: an attempt is written (`sending`) before its
//! request goes out and completed with its outcome afterwards, so an attempt
//! cut off by a dead worker stays in the log (`interrupted`).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum WebhookAttempts {
    Table,
    State,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookAttempts::Table)
                    .add_column(string(WebhookAttempts::State).default("failed"))
                    .to_owned(),
            )
            .await?;
        // Attempts recorded so far all have their outcome.
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE webhook_attempts SET state = 'succeeded' WHERE status_code BETWEEN 200 AND 299",
            )
            .await
            .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(WebhookAttempts::Table).drop_column(WebhookAttempts::State).to_owned(),
            )
            .await
    }
}
