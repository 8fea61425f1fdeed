//! Layered configuration: embedded defaults < `config/default.toml` <
//! `config/$NEXUS_ENV.toml` < `NEXUS_*` environment variables, validated once
//! at start. A bad value stops the server with a message naming the key.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::Deserialize;

/// The commented defaults, embedded so the binary runs with no file at all.
pub const DEFAULTS: &str = include_str!("../config/default.toml");
const DEFAULT_JWT_SECRET: &str = "nexus-development-secret-change-me-0123456789";
const DEFAULT_ENCRYPTION_KEY: &str = "bmV4dXMtZGV2ZWxvcG1lbnQta2V5LWNoYW5nZS1tZSE=";
/// The public half of the development license-signing key, whose private
/// half is published in the tests: never valid in production.
const DEV_LICENSE_PUBLIC_KEY: &str = "oykv08fy/q+kIGyqS327Grcazzcl0CVrQD0cD1IY4W0=";

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Production,
}

/// A value that must never reach a log line.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Config {
    pub env: Environment,
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    database_url: String,
    redis_url: String,
    /// Starts every Redis key and pub/sub channel of this deployment, so
    /// that deployments sharing one Redis stay apart.
    pub redis_key_prefix: String,
    pub jwt_secret: Secret,
    pub encryption_key: Secret,
    /// Verifies signed license keys (Ed25519, base64 of 32 bytes).
    pub license_public_key: String,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub graphql: GraphqlConfig,
    pub jobs: JobsConfig,
    pub webhooks: WebhooksConfig,
    pub events: EventsConfig,
    /// Route deprecations (`config/api.toml`).
    pub api: crate::platform::versioning::ApiConfig,
    /// Each module's own section, `[modules.<name>]`, read by the module.
    #[serde(default)]
    modules: std::collections::BTreeMap<String, figment::value::Value>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct DatabaseConfig {
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub schema: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct AuthConfig {
    pub token_ttl_days: u32,
    pub max_failed_logins: u32,
    pub lockout_minutes: u32,
    /// Sign-in and registration attempts per minute from one client address.
    pub attempts_per_minute_per_address: u32,
    /// Sign-in attempts per minute against one account.
    pub attempts_per_minute_per_account: u32,
    /// How long an instance reuses a resolved principal: the bound on how
    /// late another instance sees a revocation. 0: never reused.
    pub principal_cache_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct HttpConfig {
    pub max_body_bytes: usize,
    pub redis_timeout_ms: u64,
    /// Reverse proxies whose `X-Forwarded-For` is believed (networks or addresses).
    pub trusted_proxies: Vec<String>,
    /// On shutdown, how long requests in flight (and event streams) may go on.
    pub shutdown_timeout_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct GraphqlConfig {
    pub max_depth: usize,
    pub max_complexity: usize,
    /// Complexity points a GraphQL operation may have per request it counts
    /// as against the rate limits (see `api::cost`).
    pub points_per_request: usize,
}

#[derive(Clone, Debug, Deserialize)]
pub struct JobsConfig {
    /// Run the workers inside `nexus serve` (besides any `nexus worker`).
    pub run_in_server: bool,
    pub high_workers: usize,
    pub default_workers: usize,
    pub low_workers: usize,
    pub poll_interval_ms: u64,
    pub lease_ms: u64,
    pub shutdown_grace_ms: u64,
    /// First retry delay of a failed job; doubles each attempt (max 1 h).
    pub retry_base_ms: u64,
    /// How long completed jobs are kept (dead ones are kept until replayed).
    pub retention_hours: u32,
}

impl JobsConfig {
    pub fn workers(&self, lane: crate::platform::jobs::Lane) -> usize {
        use crate::platform::jobs::Lane;
        match lane {
            Lane::High => self.high_workers,
            Lane::Default => self.default_workers,
            Lane::Low => self.low_workers,
        }
    }

    pub fn lease(&self) -> chrono::Duration {
        chrono::Duration::milliseconds(i64::try_from(self.lease_ms).unwrap_or(i64::MAX))
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct WebhooksConfig {
    /// A receiver must answer within this.
    pub timeout_ms: u64,
    /// Delay before each retry (BR-009: five retries); +- `jitter`.
    pub retry_schedule_ms: Vec<u64>,
    /// Fraction of random spread on each delay, 0 to 1.
    pub jitter: f64,
    /// Longest `Retry-After` honoured; longer ones are cut to this.
    pub max_retry_after_ms: u64,
    /// An endpoint without a success for this long is disabled.
    pub disable_after_failing_hours: u32,
    /// Deliveries in flight at once to one endpoint, per instance.
    pub max_in_flight_per_endpoint: usize,
    /// How long the previous secret keeps signing after a rotation.
    pub rotation_overlap_hours: u32,
    /// Networks delivery may reach even though private or loopback (SSRF).
    pub allow_networks: Vec<String>,
    /// Allow `http://` URLs (always allowed in development).
    pub allow_http: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct EventsConfig {
    /// A comment line is sent on idle SSE streams this often.
    pub sse_heartbeat_ms: u64,
    /// Most events replayed to a stream resuming with `Last-Event-ID`.
    pub sse_backlog_limit: u64,
    /// Live events a stream may fall behind before it catches up from the
    /// outbox instead.
    pub sse_buffer: usize,
}

/// Why the configuration was refused; always names the key. Every problem
/// found is reported at once, one per line, so one run shows them all.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn new(problems: &[String]) -> Self {
        match problems {
            [one] => Self(one.clone()),
            many => Self(format!("{} problems:\n  {}", many.len(), many.join("\n  "))),
        }
    }

    fn of(problems: Vec<String>) -> Result<(), Self> {
        if problems.is_empty() { Ok(()) } else { Err(Self::new(&problems)) }
    }
}

impl Config {
    /// The embedded defaults only: what tests start from.
    pub fn defaults() -> Figment {
        Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(crate::platform::versioning::API_TOML))
    }

    /// Every layer, as the server reads them at start.
    pub fn layered() -> Figment {
        let env = std::env::var("NEXUS_ENV").unwrap_or_else(|_| "development".to_owned());
        Self::defaults()
            .merge(Toml::file("config/default.toml"))
            .merge(Toml::file("config/api.toml"))
            .merge(Toml::file(format!("config/{env}.toml")))
            .merge(Env::prefixed("NEXUS_").split("__"))
    }

    /// A module's `[modules.<name>]` section, its defaults when absent. A
    /// bad value names the key, as every other setting does.
    pub fn module<T: serde::de::DeserializeOwned + Default>(&self, name: &str) -> anyhow::Result<T> {
        match self.modules.get(name) {
            None => Ok(T::default()),
            Some(value) => value.deserialize().map_err(|e| {
                let key =
                    std::iter::once(format!("modules.{name}")).chain(e.path.clone()).collect::<Vec<_>>();
                ConfigError(format!("`{}`: {}", key.join("."), e.kind)).into()
            }),
        }
    }

    pub fn load() -> Result<Self, ConfigError> {
        Self::from_figment(Self::layered())
    }

    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = match figment.extract() {
            Ok(config) => config,
            Err(errors) => {
                let problems: Vec<String> = errors
                    .into_iter()
                    .map(|e| {
                        let key = e.path.join(".");
                        if key.is_empty() { e.to_string() } else { format!("`{key}`: {}", e.kind) }
                    })
                    .collect();
                return Err(ConfigError::new(&problems));
            }
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut fail = |key: &str, why: &str| problems.push(format!("`{key}`: {why}"));
        if self.jwt_secret.expose().len() < 32 {
            fail("jwt_secret", "must be at least 32 bytes");
        }
        if self.env == Environment::Production && self.jwt_secret.expose() == DEFAULT_JWT_SECRET {
            fail("jwt_secret", "the development default cannot be used in production; set NEXUS_JWT_SECRET");
        }
        if self.env == Environment::Production && self.encryption_key.expose() == DEFAULT_ENCRYPTION_KEY {
            fail(
                "encryption_key",
                "the development default cannot be used in production; set NEXUS_ENCRYPTION_KEY",
            );
        }
        if let Err(err) = crate::platform::crypto::Cipher::from_base64_key(self.encryption_key.expose()) {
            fail("encryption_key", &err.to_string());
        }
        if self.env == Environment::Production && self.license_public_key == DEV_LICENSE_PUBLIC_KEY {
            fail(
                "license_public_key",
                "the development key cannot be used in production; set NEXUS_LICENSE_PUBLIC_KEY",
            );
        }
        if let Err(err) = crate::platform::license::key::public_key(&self.license_public_key) {
            fail("license_public_key", &err.to_string());
        }
        if self.graphql.points_per_request == 0 {
            fail("graphql.points_per_request", "must be 1 or more");
        }
        let db = self.database_url();
        if !(db.starts_with("sqlite:") || db.starts_with("postgres://") || db.starts_with("postgresql://")) {
            fail("database_url", "must start with sqlite:, postgres:// or postgresql://");
        }
        if let Some(redis) = self.redis_url()
            && !(redis.starts_with("redis://") || redis.starts_with("rediss://"))
        {
            fail("redis_url", "must start with redis:// or rediss://");
        }
        let prefix = &self.redis_key_prefix;
        if prefix.is_empty() || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
            fail("redis_key_prefix", "must be 1 to 64 visible ASCII characters (no spaces)");
        }
        if self.database.max_connections == 0 {
            fail("database.max_connections", "must be at least 1");
        }
        if self.auth.token_ttl_days == 0 {
            fail("auth.token_ttl_days", "must be at least 1");
        }
        if self.auth.max_failed_logins == 0 {
            fail("auth.max_failed_logins", "must be at least 1");
        }
        let jobs = &self.jobs;
        if jobs.high_workers + jobs.default_workers + jobs.low_workers == 0 {
            fail("jobs", "at least one lane needs a worker");
        }
        if jobs.poll_interval_ms == 0 {
            fail("jobs.poll_interval_ms", "must be positive");
        }
        if jobs.lease_ms < 1000 {
            fail("jobs.lease_ms", "must be at least 1000");
        }
        let hooks = &self.webhooks;
        if hooks.timeout_ms == 0 {
            fail("webhooks.timeout_ms", "must be positive");
        }
        if !(0.0..=1.0).contains(&hooks.jitter) {
            fail("webhooks.jitter", "must be between 0 and 1");
        }
        if hooks.max_in_flight_per_endpoint == 0 {
            fail("webhooks.max_in_flight_per_endpoint", "must be at least 1");
        }
        if let Err(err) = self.url_policy() {
            fail("webhooks.allow_networks", &err);
        }
        if self.events.sse_heartbeat_ms == 0
            || self.events.sse_backlog_limit == 0
            || self.events.sse_buffer == 0
        {
            fail("events", "sse_heartbeat_ms, sse_backlog_limit and sse_buffer must be positive");
        }
        if let Err(err) = self.trusted_proxies() {
            fail("http.trusted_proxies", &err);
        }
        if self.auth.attempts_per_minute_per_address == 0 || self.auth.attempts_per_minute_per_account == 0 {
            fail("auth", "attempts_per_minute_per_address and _per_account must be at least 1");
        }
        if self.http.max_body_bytes < 1024 {
            fail("http.max_body_bytes", "must be at least 1024");
        }
        ConfigError::of(problems)
    }

    /// The database to use: `database_url`, or the SQLite file under `data_dir`.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}?mode=rwc", self.data_dir.join("nexus.db").display())
        } else {
            self.database_url.clone()
        }
    }

    pub fn redis_url(&self) -> Option<&str> {
        Some(self.redis_url.as_str()).filter(|u| !u.is_empty())
    }

    pub fn token_ttl(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.auth.token_ttl_days))
    }

    /// Which webhook URLs may be called (SSRF guard).
    pub fn url_policy(&self) -> Result<crate::platform::webhooks::ssrf::UrlPolicy, String> {
        let allow_http = self.webhooks.allow_http || self.env == Environment::Development;
        crate::platform::webhooks::ssrf::UrlPolicy::new(allow_http, &self.webhooks.allow_networks)
    }

    /// `http.trusted_proxies`, parsed: `10.0.0.0/8` or a single address.
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.http
            .trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("`{p}` is neither an address nor a network"))
            })
            .collect()
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.http.redis_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(key: &str, value: &str) -> Result<Config, ConfigError> {
        Config::from_figment(Config::defaults().merge((key, value)))
    }

    #[test]
    fn defaults_are_valid_and_use_sqlite_under_data_dir() {
        let config = Config::from_figment(Config::defaults()).unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(config.database_url(), "sqlite://./data/nexus.db?mode=rwc");
        assert!(config.redis_url().is_none());
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = with("bind", "not-an-address").unwrap_err().to_string();
        assert!(err.contains("`bind`"), "{err}");
        let err = with("database_url", "mysql://x").unwrap_err().to_string();
        assert!(err.contains("`database_url`"), "{err}");
        let err = Config::from_figment(Config::defaults().merge(("auth.token_ttl_days", -1)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`auth.token_ttl_days`"), "{err}");
    }

    #[test]
    fn a_module_section_is_read_by_its_module_and_a_bad_value_names_its_key() {
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct Section {
            limit: u32,
        }
        let config = Config::from_figment(Config::defaults().merge(("modules.demo.limit", 7))).unwrap();
        assert_eq!(config.module::<Section>("demo").unwrap().limit, 7);
        assert_eq!(config.module::<Section>("absent").unwrap().limit, 0, "defaults when absent");
        let config = Config::from_figment(Config::defaults().merge(("modules.demo.limit", "many"))).unwrap();
        let err = config.module::<Section>("demo").unwrap_err().to_string();
        assert!(err.contains("`modules.demo"), "{err}");
        let config = Config::from_figment(Config::defaults().merge(("modules.demo.limt", 1))).unwrap();
        let err = config.module::<Section>("demo").unwrap_err().to_string();
        assert!(err.contains("limt"), "{err}");
    }

    #[test]
    fn production_refuses_the_default_secrets() {
        let err = with("env", "production").unwrap_err().to_string();
        assert!(err.contains("`jwt_secret`"), "{err}");
        let production = Config::defaults()
            .merge(("env", "production"))
            .merge(("jwt_secret", "a-real-secret-of-at-least-32-bytes!!"));
        let err = Config::from_figment(production.clone()).unwrap_err().to_string();
        assert!(err.contains("`encryption_key`"), "{err}");
        let production = production.merge(("encryption_key", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="));
        let err = Config::from_figment(production.clone()).unwrap_err().to_string();
        assert!(err.contains("`license_public_key`"), "{err}");
        let (_, public) = crate::platform::license::key::generate();
        assert!(Config::from_figment(production.merge(("license_public_key", public))).is_ok());
        let err = with("encryption_key", "c2hvcnQ=").unwrap_err().to_string();
        assert!(err.contains("`encryption_key`"), "{err}");
    }

    /// Production with nothing set: every missing setting in one run, not
    /// one per run.
    #[test]
    fn every_problem_is_reported_at_once() {
        let err = with("env", "production").unwrap_err().to_string();
        for key in ["`jwt_secret`", "`encryption_key`", "`license_public_key`"] {
            assert!(err.contains(key), "{key} missing from: {err}");
        }
        assert!(err.contains("3 problems"), "{err}");
        let figment = Config::defaults().merge(("auth.token_ttl_days", 0)).merge(("webhooks.jitter", 2.0));
        let err = Config::from_figment(figment).unwrap_err().to_string();
        assert!(err.contains("`auth.token_ttl_days`") && err.contains("`webhooks.jitter`"), "{err}");
    }

    #[test]
    fn webhook_and_job_settings_are_checked() {
        let err = with("webhooks.allow_networks", "[\"not-a-net\"]").unwrap_err().to_string();
        assert!(err.contains("`webhooks.allow_networks`"), "{err}");
        let err =
            Config::from_figment(Config::defaults().merge(("webhooks.jitter", 2.0))).unwrap_err().to_string();
        assert!(err.contains("`webhooks.jitter`"), "{err}");
        let production = Config::from_figment(Config::defaults()).unwrap();
        assert!(production.url_policy().unwrap().allow_http, "development allows http");
    }

    #[test]
    fn secrets_do_not_print() {
        let config = Config::from_figment(Config::defaults()).unwrap();
        assert!(!format!("{config:?}").contains(DEFAULT_JWT_SECRET));
    }
}
