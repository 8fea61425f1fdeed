//! Nexus: a multi-tenant headless ERP API server. This file builds the
//! application from its configuration; nothing else.

pub mod api;
pub mod cli;
pub mod config;
pub mod error;
pub mod modules;
pub mod platform;

use std::{net::TcpListener, sync::Arc};

use actix_web::{App, HttpServer, dev::Server, middleware::from_fn, web};
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    config::Config,
    platform::{
        auth::{TokenKeys, cache::Principals},
        crypto::Cipher,
        db,
        events::{self, Listener},
        features::Catalogue,
        governance::Governance,
        http, idempotency,
        jobs::{Registry, Runner, RunnerHandle, Wakeup},
        license::{self, Tiers},
        module::{Module, Modules, Setup},
        ratelimit::RateLimiter,
        rbac::Rbac,
        redis::Redis,
        state::AppState,
        webhooks::{self, delivery},
    },
};

/// The running server, as `main` and every test start it.
pub struct Application {
    server: Server,
    port: u16,
    state: AppState,
    runner: Option<RunnerHandle>,
}

impl Application {
    /// Connect, migrate, bind, start the job workers (unless
    /// `jobs.run_in_server` is off). With `bind` port 0 the OS picks a port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, Parts::default()).await
    }

    /// [`build`](Self::build) with parts other than the defaults (event
    /// listeners, another ledger, more modules).
    ///
    /// On PostgreSQL the server has two pools. Start-up, the job workers and
    /// the relays run on this (`main`) runtime, each HTTP worker on a runtime
    /// of its own, and a connection's socket is driven by the runtime that
    /// opened it: a query on a connection opened here would wake this
    /// runtime before the HTTP worker waiting for its answer. So the request
    /// path's pool (the modules' services, the handlers) is opened lazily, by
    /// the HTTP workers, and what runs here has a pool of its own
    /// (docs/performance.md). SQLite connections run on threads of their own
    /// whoever opens them: one pool.
    pub async fn build_with(config: Config, parts: Parts) -> anyhow::Result<Self> {
        let background = db::connect(&config).await?;
        db::migrate(&background).await?;
        let requests = match background.get_database_backend() {
            sea_orm::DbBackend::Postgres => db::connect_lazily(&config).await?,
            _ => background.clone(),
        };
        let state = state_on(config, parts, requests).await?;
        let background = AppState { db: background, ..state.clone() };
        let listener = TcpListener::bind(state.config.bind)?;
        let port = listener.local_addr()?.port();
        let server = server(state.clone(), listener)?;
        start_background(&background).await?;
        let runner = background.config.jobs.run_in_server.then(|| Runner::start(background));
        Ok(Self { server, port, state, runner })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until the server is stopped (SIGINT / SIGTERM), then let the
    /// job workers finish or release their runs.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        if let Some(runner) = self.runner {
            runner.stop().await;
        }
        result
    }
}

/// A `nexus worker` process: migrations, the same start-up work, relays and
/// schedules as a server, and the job workers; no HTTP.
pub async fn worker(config: Config) -> anyhow::Result<RunnerHandle> {
    let state = state(config).await?;
    db::migrate(&state.db).await?;
    start_background(&state).await?;
    Ok(Runner::start(state))
}

/// What runs beside the job workers in every process: each module's
/// start-up work (schedules), the Redis relays, usage flushing.
async fn start_background(state: &AppState) -> anyhow::Result<()> {
    state.modules.start(state).await?;
    state.events.start_relay();
    state.governance.start_relay();
    state.governance.usage.start_flushing(state.db.clone(), std::time::Duration::from_secs(5));
    Ok(())
}

/// The code behind every job kind: the platform's and each module's.
fn job_handlers(modules: &Modules) -> Registry {
    let mut registry = Registry::default()
        .with(events::DISPATCH_JOB, events::Dispatch::default())
        .with(events::LISTENER_JOB, events::RunListener)
        .with(webhooks::DELIVER_JOB, delivery::Deliver);
    for (kind, handler) in modules.jobs() {
        registry.insert(kind, handler);
    }
    registry
}

/// What a build may plug in besides the defaults.
#[derive(Default)]
pub struct Parts {
    /// Cross-module reactions to events, beside the modules' own.
    pub listeners: Vec<Arc<dyn Listener>>,
    /// The accounting ledger; the built-in one when `None`.
    pub ledger: Option<Arc<dyn modules::ledger::Ledger>>,
    /// Modules beyond the built-in ones (see `platform::module`).
    pub modules: Vec<Arc<dyn Module>>,
}

/// The shared state with the default parts.
pub async fn state(config: Config) -> anyhow::Result<AppState> {
    state_with(config, Parts::default()).await
}

/// The shared state: database pool, optional Redis, the modules, RBAC,
/// token keys, job handlers and event listeners.
pub async fn state_with(config: Config, parts: Parts) -> anyhow::Result<AppState> {
    let db = db::connect(&config).await?;
    state_on(config, parts, db).await
}

async fn state_on(config: Config, parts: Parts, db: sea_orm::DatabaseConnection) -> anyhow::Result<AppState> {
    let Parts { listeners, ledger, modules: extra } = parts;
    let redis = Redis::from_config(&config)?;
    let limiter = match &redis {
        Some(redis) => RateLimiter::redis(redis.clone(), config.redis_timeout()),
        None => RateLimiter::memory(),
    };
    let setup = Setup { db: db.clone(), config: &config, redis: redis.clone(), limiter: limiter.clone() };
    let mut built = modules::build(&setup, ledger)?;
    built.extend(extra);
    let modules = Modules::new(built)?;
    let tiers = Tiers::load()?;
    let catalogue = Catalogue::load(&tiers, &modules)?;
    let license_key = license::key::public_key(&config.license_public_key)?;
    let governance = Governance::new(tiers, catalogue, limiter, license_key, redis.clone());
    let cipher = Arc::new(Cipher::from_base64_key(config.encryption_key.expose())?);
    let idempotency = match &redis {
        Some(redis) => idempotency::Store::redis(redis.clone()).with_timeout(config.redis_timeout()),
        None => idempotency::Store::database(db.clone()),
    }
    .with_cipher(cipher.clone());
    let listeners: Vec<Arc<dyn Listener>> = modules.listeners().chain(listeners).collect();
    Ok(AppState {
        governance: Arc::new(governance),
        keys: Arc::new(TokenKeys::new(config.jwt_secret.expose())),
        principals: Arc::new(Principals::new(std::time::Duration::from_millis(
            config.auth.principal_cache_ms,
        ))),
        rbac: Arc::new(Rbac::new(modules.grants()).await?),
        cipher,
        idempotency,
        jobs: Arc::new(job_handlers(&modules)),
        listeners: Arc::new(listeners),
        wakeup: Wakeup::default(),
        audit: Default::default(),
        events: events::stream::EventBus::new(redis.clone(), config.events.sse_buffer),
        event_types: events::Catalogue::new(&modules)?,
        webhook_client: delivery::client(&config)?,
        deliveries: delivery::Deliveries::default(),
        modules,
        config: Arc::new(config),
        db,
        redis,
    })
}

fn server(state: AppState, listener: TcpListener) -> std::io::Result<Server> {
    let shutdown_timeout = state.config.http.shutdown_timeout_secs;
    let openapi = api::openapi(&state.modules);
    let allowed = web::Data::new(http::AllowedMethods::of(&openapi));
    // Serialized once and shared by every worker: the document itself is
    // tens of MiB of maps, and a copy per worker is most of an idle
    // server's memory (docs/performance.md).
    let openapi_json = web::Bytes::from(serde_json::to_vec(&openapi).map_err(std::io::Error::other)?);
    let schema = web::Data::new(api::graphql::schema(&state));
    let state = web::Data::new(state);
    let server = HttpServer::new(move || {
        let max_body = state.config.http.max_body_bytes;
        let modules = state.modules.clone();
        App::new()
            .into_utoipa_app()
            .app_data(state.clone())
            .app_data(schema.clone())
            .app_data(allowed.clone())
            .map(|app| app.configure(|cfg| http::extractor_config(cfg, max_body)))
            .configure(|cfg| api::routes(cfg, &modules))
            .into_app()
            .configure(api::graphql::routes)
            .route("/api/documentation", web::get().to(http::swagger_redirect))
            .route("/api/openapi.json", {
                let body = openapi_json.clone();
                web::get().to(move || {
                    let body = body.clone();
                    async move { actix_web::HttpResponse::Ok().content_type("application/json").body(body) }
                })
            })
            .service(
                SwaggerUi::new("/api/documentation/{_:.*}")
                    // Swagger UI would send the document's URL to a public
                    // validator: it makes no request beyond this server.
                    .config(utoipa_swagger_ui::Config::new(["/api/openapi.json"]).validator_url("none")),
            )
            .default_service(web::to(http::no_route))
            .wrap(from_fn(http::edge))
    })
    // On SIGTERM, requests in flight get this long; open event streams are
    // then closed (clients resume with Last-Event-ID).
    .shutdown_timeout(shutdown_timeout)
    .listen(listener)?
    .run();
    Ok(server)
}
