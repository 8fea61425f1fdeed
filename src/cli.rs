//! The `nexus` command line. `nexus` alone means `nexus serve`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use migration::{Migrator, MigratorTrait};
use tracing_subscriber::{EnvFilter, fmt};

use crate::{
    Application, api,
    config::{Config, Environment},
    platform::{
        auth::password,
        db,
        rbac::ROLES,
        tenancy::TenantScope,
        users::{self, NewUser},
        validate,
    },
};

#[derive(Parser)]
#[command(name = "nexus", version, about = "Nexus: multi-tenant headless ERP API server")]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default); runs job workers too unless
    /// `jobs.run_in_server` is off.
    Serve,
    /// Run background job workers only (webhook deliveries, event
    /// listeners), beside any number of servers and other workers.
    Worker,
    /// Inspect the job queue and replay dead jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Inspect webhook endpoints and deliveries, and replay failed ones.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// Licenses: show, apply a signed key offline; vendors: keygen, sign.
    License {
        #[command(subcommand)]
        command: LicenseCommand,
    },
    /// Apply, roll back or list schema migrations.
    Migrate {
        /// `up` applies pending migrations, `down` rolls back, `status` lists
        /// them (and changes nothing).
        #[arg(value_enum, default_value = "up")]
        action: MigrateAction,
        /// For `down`: how many migrations to roll back.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// Write the OpenAPI document.
    Openapi {
        /// Where the document is written (or, with --check, read).
        #[arg(long, default_value = "openapi/openapi.json")]
        output: PathBuf,
        /// Fail if the file differs instead of writing it.
        #[arg(long)]
        check: bool,
    },
    /// Sales channel stores: their status, a full push.
    Channels {
        #[command(subcommand)]
        command: ChannelsCommand,
    },
    /// Sales orders: import a CSV file, refund one.
    Orders {
        #[command(subcommand)]
        command: OrdersCommand,
    },
    /// Operate on tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Operate on users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum MigrateAction {
    /// Apply every pending migration (creates the SQLite file if needed).
    Up,
    /// Roll back the last --steps migrations (development resets only).
    Down,
    /// List the migrations, applied or pending.
    Status,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant.
    Create {
        /// The tenant's display name.
        #[arg(long)]
        name: String,
        /// Defaults to a slug derived from the name.
        #[arg(long)]
        slug: Option<String>,
    },
}

#[derive(Subcommand)]
enum ChannelsCommand {
    /// Every store connection: status, last error, last push or reconcile.
    Status {
        /// Only this tenant's (slug or id).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Push the available-to-promise quantity of every mapped product of a
    /// connection, following the run to its end (the batches are carried
    /// out by `nexus serve` or `nexus worker`).
    Sync {
        /// The connection's id (in whichever tenant holds it).
        connection: uuid::Uuid,
        /// How often progress is read, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        every_ms: u64,
    },
    /// The pushes to a connection's store whose retries ran out; with
    /// `--replay`, push them all again (the quantity of now), with
    /// `--dismiss`, drop them all.
    DeadLetters {
        /// The connection's id (in whichever tenant holds it).
        connection: uuid::Uuid,
        /// Push every letter of the connection again, with the quantity of now.
        #[arg(long, conflicts_with = "dismiss")]
        replay: bool,
        /// Drop every letter of the connection without pushing.
        #[arg(long)]
        dismiss: bool,
    },
}

#[derive(Subcommand)]
enum OrdersCommand {
    /// Import orders from a CSV file (the seed's columns, several rows per
    /// order); orders whose external id exists are skipped.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Tenant slug or id.
        #[arg(long)]
        tenant: String,
        /// The warehouse (code or id) the orders' stock is reserved in.
        #[arg(long)]
        warehouse: String,
        /// Tell each order's customer it was placed (its `placed`
        /// notifications); off by default, as the orders of a shop export
        /// were announced where they were placed.
        #[arg(long)]
        send_receipts: bool,
    },
    /// Refund part or all of a paid order through its payment gateway.
    Refund {
        /// The order's id (in whichever tenant holds it).
        order: uuid::Uuid,
        /// Minor units (cents), at most what was captured minus earlier refunds.
        amount: i64,
        /// Why the money goes back.
        #[arg(long)]
        reason: String,
        /// Names this refund: running the command again with the same key
        /// refunds nothing more.
        #[arg(long)]
        key: String,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Depth per lane, oldest ready job, throughput and failures.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List dead jobs (newest first).
    Dead {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Queue dead jobs again: one by id, or all (optionally of one kind).
    Replay {
        /// The dead job to queue again (from `jobs dead`).
        #[arg(long, conflicts_with_all = ["all", "kind"])]
        id: Option<uuid::Uuid>,
        /// Every dead job.
        #[arg(long)]
        all: bool,
        /// Every dead job of this kind, e.g. `webhook.deliver`.
        #[arg(long)]
        kind: Option<String>,
    },
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// Every endpoint with its delivery counts.
    Status {
        /// Only this tenant (slug or id).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Recent deliveries of an endpoint, newest first.
    Deliveries {
        /// The endpoint's id (from `webhooks status`).
        #[arg(long)]
        endpoint: uuid::Uuid,
        /// Only deliveries in this state.
        #[arg(long, value_parser = ["pending", "succeeded", "failed"])]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Resend the failed deliveries of an endpoint created since a time.
    Replay {
        /// The endpoint's id (from `webhooks status`).
        #[arg(long)]
        endpoint: uuid::Uuid,
        /// Failed deliveries created at or after this time (RFC 3339, e.g.
        /// 2026-11-21T00:00:00Z); default: the last 24 hours.
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
    },
}

#[derive(Subcommand)]
enum LicenseCommand {
    /// A tenant's license: tier, state, dates, limits.
    Show {
        /// Tenant slug or id.
        #[arg(long)]
        tenant: String,
    },
    /// Apply a signed license key to a tenant (offline: no network needed).
    Apply {
        /// Tenant slug or id.
        #[arg(long)]
        tenant: String,
        /// The key, `nexus1.<payload>.<signature>`.
        key: String,
    },
    /// Vendors: a new Ed25519 key pair. The public key goes into the
    /// deployment's `license_public_key`; keep the private key to yourself.
    Keygen,
    /// Vendors: sign a license key for a tenant, with the private key from
    /// NEXUS_LICENSE_SIGNING_KEY.
    Sign {
        /// The tenant's id (as in GET /api/v1/license).
        #[arg(long)]
        tenant: uuid::Uuid,
        /// A tier of config/licenses.toml, e.g. `professional`.
        #[arg(long)]
        tier: String,
        /// Valid for this many days from now.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Most active users; default: the tier's limit.
        #[arg(long)]
        max_users: Option<u64>,
        /// Most API calls per calendar month; default: the tier's limit.
        #[arg(long)]
        api_calls_per_month: Option<u64>,
        /// The vendor's Ed25519 private key (base64), from `license keygen`.
        /// Read from NEXUS_LICENSE_SIGNING_KEY when not given, to keep it
        /// out of shell history.
        #[arg(long, env = "NEXUS_LICENSE_SIGNING_KEY", hide_env_values = true)]
        signing_key: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user in a tenant.
    Create {
        /// Tenant slug or id.
        #[arg(long)]
        tenant: String,
        /// The user's email, their login name.
        #[arg(long)]
        email: String,
        /// The user's display name.
        #[arg(long)]
        name: String,
        /// Read from NEXUS_USER_PASSWORD when not given, to keep it out of shell history.
        #[arg(long, env = "NEXUS_USER_PASSWORD", hide_env_values = true)]
        password: String,
        /// Roles in the tenant (repeatable).
        #[arg(long = "role", default_value = "admin")]
        roles: Vec<String>,
        /// May act in any tenant with X-Tenant-ID and holds every permission.
        #[arg(long)]
        super_admin: bool,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load()?;
    init_tracing(config.env);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config).await,
        Command::Worker => worker(config).await,
        Command::Jobs { command } => ops::jobs(config, command).await,
        Command::Webhooks { command } => ops::webhooks(config, command).await,
        Command::License { command } => ops::license(config, command).await,
        Command::Migrate { action, steps } => migrate(config, action, steps).await,
        Command::Openapi { output, check } => openapi(&output, check),
        Command::Channels { command } => channels(config, command).await,
        Command::Orders { command } => orders(config, command).await,
        Command::Tenant { command: TenantCommand::Create { name, slug } } => {
            let slug = slug.unwrap_or_else(|| validate::slugify(&name));
            validate::name(&name).map_err(|e| anyhow::anyhow!("--name {e}"))?;
            validate::slug(&slug).map_err(|e| anyhow::anyhow!("--slug {e}"))?;
            let db = connect(config).await?;
            let tenant = users::create_tenant(&db, &name, &slug).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("created tenant {} ({})", tenant.slug, tenant.id);
            Ok(())
        }
        Command::User {
            command: UserCommand::Create { tenant, email, name, password: pw, roles, super_admin },
        } => {
            validate::name(&name).map_err(|e| anyhow::anyhow!("--name {e}"))?;
            validate::email(&email).map_err(|e| anyhow::anyhow!("--email {e}"))?;
            validate::password(&pw).map_err(|e| anyhow::anyhow!("--password {e}"))?;
            if let Some(bad) = roles.iter().find(|r| !ROLES.contains(&r.as_str())) {
                anyhow::bail!("--role {bad}: roles are {}", ROLES.join(", "));
            }
            let db = connect(config).await?;
            let tenant = users::find_tenant(&db, &tenant)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .ok_or_else(|| anyhow::anyhow!("no tenant `{tenant}`"))?;
            let new = NewUser {
                name,
                email,
                password_hash: password::hash(pw).await.map_err(|e| anyhow::anyhow!("{e}"))?,
                roles,
                is_super_admin: super_admin,
                max_users: None,
            };
            let user = users::create_user(&db, TenantScope::new(tenant.id), new)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let kind = if user.is_super_admin { "super-admin" } else { "user" };
            println!("created {kind} {} ({}) in tenant {}", user.email, user.id, tenant.slug);
            Ok(())
        }
    }
}

/// What the commands build a module from: the database, Redis when it is
/// configured, and an in-process limiter (the commands call no store
/// themselves; the workers that do share the deployment's limiter).
fn module_setup<'a>(
    db: &sea_orm::DatabaseConnection,
    config: &'a Config,
) -> anyhow::Result<crate::platform::module::Setup<'a>> {
    Ok(crate::platform::module::Setup {
        db: db.clone(),
        config,
        redis: crate::platform::redis::Redis::from_config(config)?,
        limiter: crate::platform::ratelimit::RateLimiter::memory(),
    })
}

async fn orders(config: Config, command: OrdersCommand) -> anyhow::Result<()> {
    use crate::modules::{order_services, orders::cli};
    let db = existing(&config).await?;
    let setup = module_setup(&db, &config)?;
    let (service, inventory) = order_services(&setup)?;
    match command {
        OrdersCommand::Refund { order, amount, reason, key } => {
            cli::refund(&db, service, order, amount, reason, key).await
        }
        OrdersCommand::Import { file, tenant, warehouse, send_receipts } => {
            let tenant = users::find_tenant(&db, &tenant)
                .await
                .map_err(cli::describe)?
                .ok_or_else(|| anyhow::anyhow!("no tenant `{tenant}`"))?;
            cli::import(service, inventory, TenantScope::new(tenant.id), &file, &warehouse, send_receipts)
                .await
        }
    }
}

async fn channels(config: Config, command: ChannelsCommand) -> anyhow::Result<()> {
    use crate::modules::{channel_service, channels::cli, orders::cli::describe};
    let db = existing(&config).await?;
    let setup = module_setup(&db, &config)?;
    let service = channel_service(&setup)?;
    match command {
        ChannelsCommand::Status { tenant } => {
            let tenant = match tenant {
                Some(handle) => Some(
                    users::find_tenant(&db, &handle)
                        .await
                        .map_err(describe)?
                        .ok_or_else(|| anyhow::anyhow!("no tenant `{handle}`"))?,
                ),
                None => None,
            };
            println!("{}", cli::status(&db, service, tenant).await?);
            Ok(())
        }
        ChannelsCommand::Sync { connection, every_ms } => {
            cli::sync(&db, service, connection, std::time::Duration::from_millis(every_ms.max(10))).await
        }
        ChannelsCommand::DeadLetters { connection, replay, dismiss } => {
            let action = match (replay, dismiss) {
                (true, _) => cli::LetterAction::Replay,
                (_, true) => cli::LetterAction::Dismiss,
                _ => cli::LetterAction::List,
            };
            println!("{}", cli::dead_letters(&db, service, connection, action).await?);
            Ok(())
        }
    }
}

fn init_tracing(env: Environment) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn"));
    let builder = fmt().with_env_filter(filter).with_target(false);
    let _ = match env {
        Environment::Production => builder.json().try_init(),
        Environment::Development => builder.compact().try_init(),
    };
}

async fn connect(config: Config) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let db = db::connect(&config).await?;
    db::migrate(&db).await?;
    Ok(db)
}

/// The deployment's database as it is, for the operators' commands on
/// existing data: never created, never migrated. A missing or unmigrated
/// database is refused with what to do, not reported as an empty system.
async fn existing(config: &Config) -> anyhow::Result<sea_orm::DatabaseConnection> {
    let db = db::connect_existing(config).await?;
    db::ensure_migrated(&db).await?;
    Ok(db)
}

/// Rows under a header, columns padded to their widest cell; `empty` is
/// printed instead when there are no rows.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    if rows.is_empty() {
        return empty.to_owned();
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| if i == last { (*c).to_owned() } else { format!("{c:<width$}", width = widths[i]) })
            .collect();
        padded.join("  ")
    };
    std::iter::once(line(header.to_vec()))
        .chain(rows.iter().map(|r| line(r.iter().map(String::as_str).collect())))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    let state = app.state();
    let base = format!("http://{}:{}", state.config.bind.ip(), app.port());
    let backend = if state.config.database_url().starts_with("sqlite:") { "SQLite" } else { "PostgreSQL" };
    let cache = if state.redis.is_some() { "Redis" } else { "in-process" };
    tracing::info!(database = backend, cache, "Nexus is listening on {base}");
    println!("Nexus is running on {base} ({backend}, {cache} cache)");
    println!("  Swagger UI:         {base}/api/documentation/");
    println!("  OpenAPI document:   {base}/api/openapi.json");
    println!("  GraphQL playground: {base}/graphql");
    app.run_until_stopped().await?;
    Ok(())
}

async fn worker(config: Config) -> anyhow::Result<()> {
    let runner = crate::worker(config).await?;
    println!("Nexus worker running; Ctrl-C or SIGTERM stops it gracefully");
    shutdown_signal().await;
    println!("stopping: finishing the jobs in flight");
    runner.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn migrate(config: Config, action: MigrateAction, steps: u32) -> anyhow::Result<()> {
    if let MigrateAction::Status = action {
        // Reading: neither the database nor the migrations table is created.
        let db = db::connect_existing(&config).await?;
        let rows: Vec<Vec<String>> = Migrator::get_migration_with_status_read_only(&db)
            .await?
            .iter()
            .map(|m| vec![format!("{:?}", m.status()), m.name().to_owned()])
            .collect();
        println!("{}", table(&["status", "migration"], &rows, "no migrations"));
        return Ok(());
    }
    let db = db::connect(&config).await?;
    match action {
        MigrateAction::Up => {
            Migrator::up(&db, None).await?;
            println!("database is up to date");
        }
        MigrateAction::Down => {
            Migrator::down(&db, Some(steps)).await?;
            println!("rolled back {steps} migration(s)");
        }
        MigrateAction::Status => {}
    }
    Ok(())
}

fn openapi(output: &PathBuf, check: bool) -> anyhow::Result<()> {
    let json = api::openapi_json(&crate::modules::offline()?);
    if check {
        let current = match std::fs::read_to_string(output) {
            Ok(current) => current,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                anyhow::bail!("{} is missing: run `nexus openapi` to write it", output.display())
            }
            Err(err) => anyhow::bail!("cannot read {}: {err}", output.display()),
        };
        anyhow::ensure!(current == json, "{} is out of date: run `nexus openapi`", output.display());
        println!("{} is up to date", output.display());
    } else {
        if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(output, json)?;
        println!("wrote {}", output.display());
    }
    Ok(())
}

/// The operators' commands on jobs and webhooks.
mod ops {
    use chrono::{Duration, Utc};
    use sea_orm::{ColumnTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};

    use super::{JobsCommand, LicenseCommand, WebhooksCommand, existing, table};
    use crate::{
        config::Config,
        error::ApiError,
        platform::{
            jobs,
            tenancy::{SystemScope, TenantScope},
            users, webhooks,
        },
    };
    use entity::{job, webhook_delivery as delivery, webhook_endpoint as endpoint};

    fn api(err: ApiError) -> anyhow::Error {
        let fields: Vec<String> = err.errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
        if fields.is_empty() {
            anyhow::anyhow!("{err}")
        } else {
            anyhow::anyhow!("{err} ({})", fields.join("; "))
        }
    }

    pub async fn jobs(config: Config, command: JobsCommand) -> anyhow::Result<()> {
        let db = existing(&config).await?;
        match command {
            JobsCommand::Status { json } => {
                let stats = jobs::stats(&db).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&stats)?);
                } else {
                    println!("lane     ready  scheduled  running  retrying  dead  done/1h  oldest ready");
                    for l in stats {
                        let oldest = l.oldest_ready_age_seconds.map_or("-".to_owned(), |s| format!("{s} s"));
                        println!(
                            "{:<8} {:>5}  {:>9}  {:>7}  {:>8}  {:>4}  {:>7}  {oldest}",
                            l.lane,
                            l.ready,
                            l.scheduled,
                            l.running,
                            l.retrying,
                            l.dead,
                            l.completed_last_hour
                        );
                    }
                }
            }
            JobsCommand::Dead { limit } => {
                let rows = SystemScope
                    .find::<job::Entity>()
                    .filter(job::Column::Status.eq(jobs::DEAD))
                    .order_by_desc(job::Column::CreatedAt)
                    .limit(limit)
                    .all(&db)
                    .await?;
                let rows: Vec<Vec<String>> = rows
                    .into_iter()
                    .map(|j| {
                        let error = j.last_error.unwrap_or_else(|| "-".to_owned()).replace('\n', " ");
                        vec![
                            j.id.to_string(),
                            j.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                            j.kind,
                            j.attempts.to_string(),
                            error,
                            j.payload.to_string(),
                        ]
                    })
                    .collect();
                let header = ["id", "created", "kind", "attempts", "last error", "payload"];
                println!("{}", table(&header, &rows, "no dead jobs"));
            }
            JobsCommand::Replay { id, all, kind } => {
                anyhow::ensure!(id.is_some() || all || kind.is_some(), "say --id ID, --all or --kind KIND");
                let n = jobs::replay(&db, id, kind.as_deref()).await?;
                println!("queued {n} dead job(s) again");
            }
        }
        Ok(())
    }

    pub async fn license(config: Config, command: LicenseCommand) -> anyhow::Result<()> {
        use crate::platform::license::{self, key};
        let tenant_of = |db: sea_orm::DatabaseConnection, handle: String| async move {
            users::find_tenant(&db, &handle)
                .await
                .map_err(api)?
                .ok_or_else(|| anyhow::anyhow!("no tenant `{handle}`"))
        };
        match command {
            LicenseCommand::Keygen => {
                let (private, public) = key::generate();
                println!(
                    "license_public_key = \"{public}\"   # the deployment's config (NEXUS_LICENSE_PUBLIC_KEY)"
                );
                println!(
                    "NEXUS_LICENSE_SIGNING_KEY={private}   # the vendor's secret: never on a deployment"
                );
            }
            LicenseCommand::Sign { tenant, tier, days, max_users, api_calls_per_month, signing_key } => {
                let tiers = license::Tiers::load()?;
                anyhow::ensure!(
                    tiers.get(&tier).is_some(),
                    "--tier {tier}: not a tier of config/licenses.toml"
                );
                let now = Utc::now();
                let grant = key::Grant {
                    key_id: format!("lk_{}", uuid::Uuid::now_v7().simple()),
                    tenant_id: tenant,
                    tier,
                    starts_at: now,
                    expires_at: now + Duration::days(i64::from(days)),
                    max_users,
                    api_calls_per_month,
                    issued_at: now,
                };
                println!("{}", key::sign(&key::signing_key(&signing_key)?, &grant)?);
            }
            LicenseCommand::Show { tenant } => {
                existing(&config).await?;
                let state = crate::state(config).await?;
                let tenant = tenant_of(state.db.clone(), tenant).await?;
                let gov = &state.governance;
                let row = license::find_or_start(&state.db, &gov.tiers, tenant.id).await.map_err(api)?;
                println!("{}", serde_json::to_string_pretty(&license::view(&row, &gov.tiers, Utc::now()))?);
            }
            LicenseCommand::Apply { tenant, key } => {
                existing(&config).await?;
                let state = crate::state(config).await?;
                let tenant = tenant_of(state.db.clone(), tenant).await?;
                let row = license::apply(&state, tenant.id, &key).await.map_err(api)?;
                println!(
                    "applied: {} is on {} until {}",
                    tenant.slug,
                    row.tier,
                    row.expires_at.format("%Y-%m-%d")
                );
            }
        }
        Ok(())
    }

    pub async fn webhooks(config: Config, command: WebhooksCommand) -> anyhow::Result<()> {
        let db = existing(&config).await?;
        match command {
            WebhooksCommand::Status { tenant } => {
                let mut query =
                    SystemScope.find::<endpoint::Entity>().order_by_asc(endpoint::Column::CreatedAt);
                if let Some(handle) = tenant {
                    let tenant = users::find_tenant(&db, &handle)
                        .await
                        .map_err(api)?
                        .ok_or_else(|| anyhow::anyhow!("no tenant `{handle}`"))?;
                    query = query.filter(endpoint::Column::TenantId.eq(tenant.id));
                }
                let mut rows = Vec::new();
                for e in query.all(&db).await? {
                    let count = |status: &'static str| {
                        SystemScope
                            .find::<delivery::Entity>()
                            .filter(delivery::Column::EndpointId.eq(e.id))
                            .filter(delivery::Column::Status.eq(status))
                            .count(&db)
                    };
                    let (pending, failed, ok) = (
                        count(webhooks::DELIVERY_PENDING).await?,
                        count(webhooks::DELIVERY_FAILED).await?,
                        count(webhooks::DELIVERY_SUCCEEDED).await?,
                    );
                    let enabled =
                        if e.enabled { "yes".to_owned() } else { e.disabled_reason.unwrap_or("no".into()) };
                    rows.push(vec![
                        e.id.to_string(),
                        enabled,
                        pending.to_string(),
                        failed.to_string(),
                        ok.to_string(),
                        e.url,
                    ]);
                }
                let header = ["endpoint", "enabled", "pending", "failed", "succeeded", "url"];
                println!("{}", table(&header, &rows, "no webhook endpoints"));
            }
            WebhooksCommand::Deliveries { endpoint: id, status, limit } => {
                SystemScope
                    .get::<endpoint::Entity>(&db, id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no endpoint {id}"))?;
                let mut query =
                    SystemScope.find::<delivery::Entity>().filter(delivery::Column::EndpointId.eq(id));
                if let Some(status) = &status {
                    query = query.filter(delivery::Column::Status.eq(status));
                }
                let rows: Vec<Vec<String>> = query
                    .order_by_desc(delivery::Column::CreatedAt)
                    .limit(limit)
                    .all(&db)
                    .await?
                    .into_iter()
                    .map(|d| {
                        vec![
                            d.id.to_string(),
                            d.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                            d.event_type,
                            d.status,
                            d.attempts.to_string(),
                            d.last_status_code.map_or("-".to_owned(), |c| c.to_string()),
                        ]
                    })
                    .collect();
                let empty = match status {
                    Some(status) => format!("no {status} deliveries"),
                    None => "no deliveries".to_owned(),
                };
                let header = ["delivery", "created", "event", "status", "attempts", "last status code"];
                println!("{}", table(&header, &rows, &empty));
            }
            WebhooksCommand::Replay { endpoint: id, since } => {
                let e = SystemScope
                    .get::<endpoint::Entity>(&db, id)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no endpoint {id}"))?;
                let state = crate::state(config).await?;
                let since = since.unwrap_or_else(|| Utc::now() - Duration::hours(24));
                let n =
                    webhooks::recover(&state, TenantScope::new(e.tenant_id), id, since).await.map_err(api)?;
                println!("queued {n} failed deliveries again; a running server or worker sends them");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// `--help` explains every flag and argument of every command.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "nexus", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
        Cli::command().debug_assert();
    }

    #[test]
    fn tables_have_a_header_and_aligned_columns_and_say_when_empty() {
        let rows = vec![vec!["a".to_owned(), "long value".to_owned(), "x".to_owned()]];
        let text = table(&["first", "second", "last"], &rows, "nothing");
        assert_eq!(text, "first  second      last\na      long value  x");
        assert_eq!(table(&["first"], &[], "no rows"), "no rows");
    }
}
