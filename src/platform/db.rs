//! Database connection: SQLite (embedded default) or PostgreSQL, chosen by
//! URL; short timeouts so an outage answers 503 fast instead of queueing.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

use crate::config::Config;

/// Connect, creating what is missing: the data directory and SQLite file,
/// or the PostgreSQL schema (the server, the worker, `migrate`).
pub async fn connect(config: &Config) -> anyhow::Result<DatabaseConnection> {
    connect_with(config, Open::Create).await
}

/// Connect to a database that must exist already (the operators' commands
/// that read or fix data): nothing is created, and a missing SQLite file is
/// an error naming it instead of a new, empty database.
pub async fn connect_existing(config: &Config) -> anyhow::Result<DatabaseConnection> {
    connect_with(config, Open::Existing).await
}

/// A pool that opens no connection until one is asked for: each is opened
/// by the task that first needs it, on that task's runtime. The server's
/// request path uses one (see `Application::build_with`); the database must
/// exist already.
pub async fn connect_lazily(config: &Config) -> anyhow::Result<DatabaseConnection> {
    connect_with(config, Open::Lazily).await
}

#[derive(Clone, Copy, PartialEq)]
enum Open {
    Create,
    Existing,
    Lazily,
}

/// A pooled connection idle this long is pinged before it is handed out
/// (one round trip), and replaced if the ping fails: it may have been
/// closed meanwhile by the server, a proxy or a firewall. One in steady use
/// is not: a ping per checkout was one of the two round trips a request
/// that reads one row waited for (docs/performance.md). A connection that
/// died while in use fails its query with `database_unavailable` and is
/// dropped when it goes back to the pool (sqlx pings it then, off the
/// request's path).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

async fn connect_with(config: &Config, open: Open) -> anyhow::Result<DatabaseConnection> {
    let create = open == Open::Create;
    let url = config.database_url();
    let is_sqlite = url.starts_with("sqlite:");
    if is_sqlite && create {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| anyhow::anyhow!("cannot create data_dir {}: {e}", config.data_dir.display()))?;
    }
    if is_sqlite && open == Open::Existing {
        use std::str::FromStr;
        let file = sea_orm::sqlx::sqlite::SqliteConnectOptions::from_str(&url)?.get_filename().to_owned();
        anyhow::ensure!(
            file.exists(),
            "no database at {}: run `nexus migrate` to create one, or point NEXUS_DATA_DIR or \
             NEXUS_DATABASE_URL at the deployment's database",
            file.display()
        );
    }
    let mut options = ConnectOptions::new(url.clone());
    options
        .max_connections(config.database.max_connections)
        .acquire_timeout(Duration::from_millis(config.database.acquire_timeout_ms))
        .connect_timeout(Duration::from_millis(config.database.connect_timeout_ms))
        .connect_lazy(open == Open::Lazily)
        .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
        .sqlx_logging(false);
    if is_sqlite {
        // WAL lets readers proceed beside the single writer; a writer waits
        // for the lock instead of failing with SQLITE_BUSY.
        options.map_sqlx_sqlite_opts(move |opts| {
            opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
                .create_if_missing(create)
        });
    }
    let schema = config.database.schema.clone();
    if !schema.is_empty() && !is_sqlite {
        options.set_schema_search_path(schema.clone());
    }
    let mut db = Database::connect(options).await.map_err(|err| {
        // Said once, in words: sea-orm's message repeats the driver's, and
        // PostgreSQL's carries the line of its own source it failed at.
        let message = match &err {
            sea_orm::DbErr::Conn(inner) => inner.to_string(),
            other => other.to_string(),
        };
        let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
        anyhow::anyhow!("cannot connect to the database ({}): {message}", redacted(&url))
    })?;
    db.set_metric_callback(|info| {
        // Outside a request (jobs, start-up) there is nothing to count into.
        let _ = QUERIES.try_with(|stats| stats.record(info.elapsed));
    });
    if create && !schema.is_empty() && db.get_database_backend() == DbBackend::Postgres {
        let quoted = schema.replace('"', "\"\"");
        db.execute_unprepared(&format!("CREATE SCHEMA IF NOT EXISTS \"{quoted}\"")).await?;
    }
    Ok(db)
}

tokio::task_local! {
    static QUERIES: Arc<QueryStats>;
}

/// The queries one request ran: how many and how long they took, for its
/// `Server-Timing` header and its log line.
#[derive(Debug, Default)]
pub struct QueryStats {
    count: AtomicU64,
    micros: AtomicU64,
}

impl QueryStats {
    fn record(&self, elapsed: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.micros.fetch_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn elapsed(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }
}

/// Run `fut`, counting the queries it makes into `stats`.
pub async fn counted<F: Future>(stats: Arc<QueryStats>, fut: F) -> F::Output {
    QUERIES.scope(stats, fut).await
}

/// `tokio::spawn` that keeps counting the spawning task's queries and the
/// lanes of the jobs it queues (the GraphQL data loaders and the import's
/// writers run in tasks of their own).
pub fn spawn_counted<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let fut = crate::platform::jobs::tracked(fut);
    match QUERIES.try_with(Arc::clone) {
        Ok(stats) => tokio::spawn(QUERIES.scope(stats, fut)),
        Err(_) => tokio::spawn(fut),
    }
}

/// Begin a transaction that will write. On SQLite it takes the write lock
/// at once (`BEGIN IMMEDIATE`): a transaction that reads first and writes
/// later would otherwise fail with "database is locked" when another writer
/// committed in between, instead of waiting its turn. Elsewhere it is a
/// plain `BEGIN`.
#[allow(clippy::disallowed_methods)]
pub async fn begin<C: TransactionTrait>(db: &C) -> Result<C::Transaction, DbErr> {
    let options = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    };
    db.begin_with_options(options).await
}

/// Mark a point in `txn` that [`undo`] takes it back to, keeping what came
/// before: for work tried first the way that is fastest when it succeeds,
/// and done again another way when it does not. Kept, it costs no other
/// statement (it ends with the transaction).
pub async fn savepoint(txn: &DatabaseTransaction, name: &str) -> Result<(), DbErr> {
    txn.execute_unprepared(&format!("SAVEPOINT {name}")).await.map(drop)
}

/// Undo what `txn` did since its [`savepoint`] `name`.
pub async fn undo(txn: &DatabaseTransaction, name: &str) -> Result<(), DbErr> {
    txn.execute_unprepared(&format!("ROLLBACK TO SAVEPOINT {name}")).await.map(drop)
}

/// `text` as PostgreSQL can store it. Its `text` and `jsonb` refuse NUL (a
/// statement binding one fails), so text from outside that is kept, such as
/// a receiver's answer or a store's error, has each NUL replaced by U+FFFD.
pub fn storable(text: String) -> String {
    if text.contains('\0') { text.replace('\0', "\u{FFFD}") } else { text }
}

/// [`storable`] for every string of a JSON document from outside, keys
/// included: what a payment gateway answered, say, before its fields are
/// read and kept.
pub fn storable_json(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(text) => Value::String(storable(text)),
        Value::Array(items) => Value::Array(items.into_iter().map(storable_json).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(key, value)| (storable(key), storable_json(value))).collect())
        }
        other => other,
    }
}

/// Rows per multi-row `INSERT`: well within SQLite's and PostgreSQL's
/// limits on bound parameters for any of our tables.
pub const INSERT_BATCH: usize = 500;

/// Insert `rows` of one entity, a multi-row `INSERT` per [`INSERT_BATCH`].
pub async fn insert_all<A>(db: &impl ConnectionTrait, mut rows: Vec<A>) -> Result<(), sea_orm::DbErr>
where
    A: sea_orm::ActiveModelTrait + Send,
{
    while !rows.is_empty() {
        let rest = rows.split_off(rows.len().min(INSERT_BATCH));
        <A::Entity as sea_orm::EntityTrait>::insert_many(std::mem::replace(&mut rows, rest))
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// `column IN (values)` for a list of any length. On PostgreSQL it is
/// `column = ANY($1)`: one array parameter, so the statement is the same
/// whatever the count and its plan is the column's index. A long `IN` list
/// is a statement per count, and once PostgreSQL caches a generic plan for
/// one (a batch size that repeats) it may scan the tenant's rows and test
/// each against every value: 0.9 s for 500 external ids among 67,000
/// orders, against 1 ms with the array.
pub fn one_of<C, V>(backend: DbBackend, column: C, values: Vec<V>) -> sea_orm::sea_query::SimpleExpr
where
    C: sea_orm::ColumnTrait,
    V: Into<sea_orm::Value>
        + sea_orm::sea_query::ValueType
        + sea_orm::sea_query::value::postgres_array::NotU8,
{
    use sea_orm::sea_query::{Expr, ExprTrait, extension::postgres::PgFunc};
    match backend {
        DbBackend::Postgres => Expr::col(column.as_column_ref()).eq(PgFunc::any(Expr::val(values))),
        _ => column.is_in(values),
    }
}

pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// Refuse a database that is not fully migrated, without changing it (not
/// even the migrations table): the operators' commands read tables that
/// must be there.
pub async fn ensure_migrated(db: &DatabaseConnection) -> anyhow::Result<()> {
    let pending = Migrator::get_pending_migrations_read_only(db).await?;
    if pending.len() == Migrator::migrations().len() {
        anyhow::bail!("the database has no Nexus tables: run `nexus migrate` first");
    }
    anyhow::ensure!(
        pending.is_empty(),
        "the database has {} pending migration(s): run `nexus migrate` first",
        pending.len()
    );
    Ok(())
}

/// One round trip, bounded by the pool's acquire timeout.
pub async fn ping(db: &DatabaseConnection) -> Result<(), String> {
    let check = db.ping();
    match tokio::time::timeout(Duration::from_secs(3), check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("no answer within 3 s".to_owned()),
    }
}

/// A database URL without its password, for messages.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{QueryFilter, QueryTrait};

    use super::*;
    use crate::platform::tenancy::SystemScope;
    use entity::order::{Column, Entity};

    #[test]
    fn storable_text_has_no_nul() {
        assert_eq!(storable("ok\0\0ok".to_owned()), "ok\u{FFFD}\u{FFFD}ok");
        assert_eq!(storable("plain".to_owned()), "plain");
        let answer = serde_json::json!({"a\0": ["b\0", {"c": "d\0"}], "n": 1});
        assert_eq!(
            storable_json(answer),
            serde_json::json!({"a\u{FFFD}": ["b\u{FFFD}", {"c": "d\u{FFFD}"}], "n": 1})
        );
    }

    #[test]
    fn one_of_is_one_array_parameter_on_postgresql_and_a_list_on_sqlite() {
        let ids = || vec!["A-1".to_owned(), "A-2".to_owned(), "A-3".to_owned()];
        let query = |backend| {
            SystemScope
                .find::<Entity>()
                .filter(one_of(backend, Column::ExternalOrderId, ids()))
                .build(backend)
        };
        let pg = query(DbBackend::Postgres);
        assert!(pg.sql.ends_with(r#"WHERE "orders"."external_order_id" = ANY($1)"#), "{}", pg.sql);
        let values = pg.values.expect("bound values").0;
        assert_eq!(values, vec![sea_orm::Value::from(ids())], "the list is one array value");
        let sqlite = query(DbBackend::Sqlite);
        assert!(sqlite.sql.ends_with(r#"WHERE "orders"."external_order_id" IN (?, ?, ?)"#), "{}", sqlite.sql);
        assert_eq!(sqlite.values.expect("bound values").0.len(), 3);
    }
}
