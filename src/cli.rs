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
    /// Serve the API (the default).
    Serve,
    /// Apply, roll back or list schema migrations.
    Migrate {
        #[arg(value_enum, default_value = "up")]
        action: MigrateAction,
        /// For `down`: how many migrations to roll back.
        #[arg(long, default_value_t = 1)]
        steps: u32,
    },
    /// Write the OpenAPI document.
    Openapi {
        #[arg(long, default_value = "openapi/openapi.json")]
        output: PathBuf,
        /// Fail if the file differs instead of writing it.
        #[arg(long)]
        check: bool,
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
    Up,
    Down,
    Status,
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant.
    Create {
        #[arg(long)]
        name: String,
        /// Defaults to a slug derived from the name.
        #[arg(long)]
        slug: Option<String>,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user in a tenant.
    Create {
        /// Tenant slug.
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
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
        Command::Migrate { action, steps } => migrate(config, action, steps).await,
        Command::Openapi { output, check } => openapi(&output, check),
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

async fn migrate(config: Config, action: MigrateAction, steps: u32) -> anyhow::Result<()> {
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
        MigrateAction::Status => {
            for migration in Migrator::get_migration_with_status(&db).await? {
                println!("{:?}\t{}", migration.status(), migration.name());
            }
        }
    }
    Ok(())
}

fn openapi(output: &PathBuf, check: bool) -> anyhow::Result<()> {
    let json = api::openapi_json();
    if check {
        let current = std::fs::read_to_string(output).unwrap_or_default();
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
