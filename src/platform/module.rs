//! The module contract. A business module (inventory, procurement, orders,
//! channels...) is one folder under `src/modules/` with one type that
//! implements [`Module`]: it says what it adds to the platform (its feature
//! key, REST routes, OpenAPI tag, permissions, event types, jobs, event
//! listeners, start-up work, config section) and the platform assembles
//! the list. Nothing in `platform/` names a module.
//!
//! A module's services are built once, by `src/modules/mod.rs`, and handed
//! to the modules that use them as trait objects, so a missing binding is a
//! compile error. Handlers reach their own module's service through the
//! app data the module registers with its routes (`web::Data<dyn Service>`)
//! and, over GraphQL, through the request data it adds in
//! [`Module::graphql_data`].

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use serde::de::DeserializeOwned;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::{
    config::Config,
    platform::{
        events::{EventType, Listener},
        features::Definition,
        jobs::JobHandler,
        state::AppState,
        tenancy::TenantScope,
    },
};

/// A module's feature key and its catalogue entry.
pub struct Feature {
    /// `module.<name>`: the key tenants toggle and permissions name.
    pub key: &'static str,
    pub description: &'static str,
    /// On for a tenant that never toggled it (when the license allows).
    pub default: bool,
    /// The lowest license tier that may use it.
    pub tier: &'static str,
}

impl Feature {
    pub fn definition(&self) -> Definition {
        Definition {
            description: self.description.to_owned(),
            default: self.default,
            tier: self.tier.to_owned(),
        }
    }
}

/// A permission and the default roles that hold it, as a line of the
/// casbin policy (`p, <role>, *, <object>, <action>`).
pub struct Grant {
    pub object: &'static str,
    pub action: &'static str,
    pub roles: &'static [&'static str],
}

/// What one business module adds to the platform. Every method but
/// [`name`](Module::name) has a default, so a module says only what it has.
#[async_trait::async_trait]
pub trait Module: Send + Sync + 'static {
    /// Its name, e.g. `inventory`: its config section is `[modules.<name>]`.
    fn name(&self) -> &'static str;

    /// The feature key that switches it on and off, with its catalogue
    /// entry; `None` for a module gated by another's key.
    fn feature(&self) -> Option<Feature> {
        None
    }

    /// OpenAPI tags, `(name, description)`, its operations use.
    fn tags(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// REST routes under `/api/v1`, with the app data their handlers
    /// extract (its service as `web::Data<dyn Service>`).
    fn routes(&self, _cfg: &mut ServiceConfig) {}

    /// What its GraphQL resolvers find in the context of one request: its
    /// service and, for a caller in `tenant`, its batch loaders.
    fn graphql_data(&self, _data: &mut async_graphql::Data, _tenant: Option<TenantScope>) {}

    /// Permissions its routes and resolvers require, with their default roles.
    fn grants(&self) -> &'static [Grant] {
        &[]
    }

    /// Event types it emits.
    fn event_types(&self) -> &'static [&'static EventType] {
        &[]
    }

    /// Job kinds it runs, with their handlers.
    fn jobs(&self) -> Vec<(&'static str, Arc<dyn JobHandler>)> {
        Vec::new()
    }

    /// Its reactions to events (its own or other modules').
    fn listeners(&self) -> Vec<Arc<dyn Listener>> {
        Vec::new()
    }

    /// Start-up work of every `serve` and `worker` process (e.g. queueing
    /// a schedule's next run), after migrations.
    async fn start(&self, _state: &AppState) -> anyhow::Result<()> {
        Ok(())
    }
}

/// What a module's constructor gets from the platform.
pub struct Setup<'a> {
    pub db: DatabaseConnection,
    pub config: &'a Config,
    /// The Redis connection when `redis_url` is set (lazy: Redis may be down).
    pub redis: Option<crate::platform::redis::Redis>,
    /// The deployment's rate limiter (shared through Redis when configured),
    /// for modules that pace their own calls out (channels' token buckets).
    pub limiter: crate::platform::ratelimit::RateLimiter,
}

impl Setup<'_> {
    /// The module's `[modules.<name>]` section (its defaults when absent).
    pub fn config<T: DeserializeOwned + Default>(&self, name: &str) -> anyhow::Result<T> {
        self.config.module(name)
    }
}

/// The modules of this build, in registration order.
#[derive(Clone, Default)]
pub struct Modules(Arc<Vec<Arc<dyn Module>>>);

impl Modules {
    pub fn new(modules: Vec<Arc<dyn Module>>) -> anyhow::Result<Self> {
        let mut names = std::collections::HashSet::new();
        for module in &modules {
            anyhow::ensure!(names.insert(module.name()), "module `{}` is registered twice", module.name());
            if let Some(feature) = module.feature() {
                anyhow::ensure!(
                    feature.key.starts_with("module."),
                    "module `{}`: its feature key `{}` must start with `module.`",
                    module.name(),
                    feature.key
                );
            }
        }
        Ok(Self(Arc::new(modules)))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Module>> {
        self.0.iter()
    }

    /// Every module's REST routes.
    pub fn routes(&self, cfg: &mut ServiceConfig) {
        for module in self.iter() {
            module.routes(cfg);
        }
    }

    /// Every module's GraphQL request data.
    pub fn graphql_data(&self, data: &mut async_graphql::Data, tenant: Option<TenantScope>) {
        for module in self.iter() {
            module.graphql_data(data, tenant);
        }
    }

    pub fn features(&self) -> impl Iterator<Item = Feature> + '_ {
        self.iter().filter_map(|m| m.feature())
    }

    pub fn grants(&self) -> impl Iterator<Item = &'static Grant> + '_ {
        self.iter().flat_map(|m| m.grants().iter())
    }

    pub fn event_types(&self) -> impl Iterator<Item = &'static EventType> + '_ {
        self.iter().flat_map(|m| m.event_types().iter().copied())
    }

    pub fn tags(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.iter().flat_map(|m| m.tags().iter().copied())
    }

    pub fn jobs(&self) -> impl Iterator<Item = (&'static str, Arc<dyn JobHandler>)> + '_ {
        self.iter().flat_map(|m| m.jobs())
    }

    pub fn listeners(&self) -> impl Iterator<Item = Arc<dyn Listener>> + '_ {
        self.iter().flat_map(|m| m.listeners())
    }

    /// Every module's start-up work.
    pub async fn start(&self, state: &AppState) -> anyhow::Result<()> {
        for module in self.iter() {
            module
                .start(state)
                .await
                .map_err(|e| e.context(format!("starting module `{}`", module.name())))?;
        }
        Ok(())
    }
}
