use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::{
    config::Config,
    platform::{
        auth::{TokenKeys, cache::Principals},
        crypto::Cipher,
        events::{self, Listeners, stream::EventBus},
        governance::Governance,
        jobs::{Registry, Wakeup},
        module::Modules,
        rbac::Rbac,
        redis::Redis,
        webhooks::delivery::Deliveries,
    },
};

/// Everything a request or a job may need, built once by the app
/// constructor and shared by every worker.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: DatabaseConnection,
    pub redis: Option<Redis>,
    pub rbac: Arc<Rbac>,
    pub keys: Arc<TokenKeys>,
    /// Principals resolved in the last `auth.principal_cache_ms`.
    pub principals: Arc<Principals>,
    /// Encrypts tenant secrets at rest.
    pub cipher: Arc<Cipher>,
    /// Job handlers by kind.
    pub jobs: Arc<Registry>,
    /// Cross-module reactions to events.
    pub listeners: Listeners,
    /// Committed events for SSE streams (through Redis when configured).
    pub events: EventBus,
    /// The audit log's writer (entries of concurrent requests together).
    pub audit: crate::platform::audit::Journal,
    /// Wakes this process's idle workers after work was committed.
    pub wakeup: Wakeup,
    /// The client for webhook deliveries (SSRF-guarded).
    pub webhook_client: reqwest::Client,
    /// Per-endpoint slots and the combined writes of deliveries.
    pub deliveries: Deliveries,
    /// Licenses, feature toggles, rate limits and usage.
    pub governance: Arc<Governance>,
    /// Idempotency-Key responses: the database, or Redis when configured.
    pub idempotency: crate::platform::idempotency::Store,
    /// The business modules of this build, as the platform sees them.
    pub modules: Modules,
    /// Every event type: the platform's and the modules'.
    pub event_types: events::Catalogue,
}
