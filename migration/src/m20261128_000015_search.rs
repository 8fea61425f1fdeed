//! `q` and the `updated_*` windows of the lists (`src/platform/search.rs`).
//! On PostgreSQL, `q` (`lower(column) LIKE '%text%'`) is answered from a
//! trigram GIN index that starts with `tenant_id` (extensions `pg_trgm` and
//! `btree_gin`, both trusted: a database owner may create them). SQLite
//! scans the tenant's rows, which its size allows.

use sea_orm_migration::{
    prelude::*,
    sea_orm::{DatabaseBackend, Statement},
};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Name, table and searched columns of each trigram index.
const SEARCHES: &[(&str, &str, &[&str])] = &[
    ("ix_products_search", "products", &["sku", "name"]),
    ("ix_warehouses_search", "warehouses", &["code", "name"]),
    ("ix_vendors_search", "vendors", &["name", "email"]),
];

/// The `updated_*` windows of lists that do not sort by it already.
const UPDATED: &[(&str, &str)] =
    &[("ix_products_tenant_updated", "products"), ("ix_vendors_tenant_updated", "vendors")];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table) in UPDATED {
            let index = Index::create()
                .name(*name)
                .table(*table)
                .col("tenant_id")
                .col("updated_at")
                .col("id")
                .to_owned();
            manager.create_index(index).await?;
        }
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            let db = manager.get_connection();
            // Deployments (and test runs) migrating several schemas of one
            // database at once would race to create the extensions: the
            // migration's transaction holds this lock until it commits.
            db.execute_unprepared("SELECT pg_advisory_xact_lock(7400215)").await?;
            db.execute_unprepared("CREATE EXTENSION IF NOT EXISTS pg_trgm").await?;
            db.execute_unprepared("CREATE EXTENSION IF NOT EXISTS btree_gin").await?;
            // The operator class lives where the extension was installed,
            // which need not be on this schema's search path.
            let sql = "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
                       WHERE e.extname = 'pg_trgm'";
            let row = db.query_one_raw(Statement::from_string(DatabaseBackend::Postgres, sql)).await?;
            let schema: String =
                row.ok_or_else(|| DbErr::Custom("pg_trgm is not installed".into()))?.try_get_by_index(0)?;
            let schema = schema.replace('"', "\"\"");
            for (name, table, columns) in SEARCHES {
                let trigrams: Vec<String> =
                    columns.iter().map(|c| format!("lower({c}) \"{schema}\".gin_trgm_ops")).collect();
                let sql =
                    format!("CREATE INDEX {name} ON {table} USING gin (tenant_id, {})", trigrams.join(", "));
                db.execute_unprepared(&sql).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            for (name, table, _) in SEARCHES {
                manager.drop_index(Index::drop().name(*name).table(*table).to_owned()).await?;
            }
        }
        for (name, table) in UPDATED {
            manager.drop_index(Index::drop().name(*name).table(*table).to_owned()).await?;
        }
        Ok(())
    }
}
