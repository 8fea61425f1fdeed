//! The optional Redis connection. Lazy and self-healing: the server starts
//! while Redis is down, every command fails fast within the configured
//! timeout, and the connection comes back by itself.
//!
//! Every key and pub/sub channel Nexus uses starts with the deployment's
//! `redis_key_prefix` (default `nexus:`): callers name keys with
//! [`Redis::key`], and `publish`, `subscribe` and `relay` prefix channel
//! names themselves, so deployments with different prefixes can share one
//! Redis without seeing each other's limits, keys or messages.

use std::{sync::Arc, time::Duration};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    conn: ConnectionManager,
    timeout: Duration,
    prefix: Arc<str>,
}

/// The prefix when none is configured (the `redis_key_prefix` default).
pub const DEFAULT_PREFIX: &str = "nexus:";

impl Redis {
    pub fn new(url: &str, timeout: Duration) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self { client, conn, timeout, prefix: DEFAULT_PREFIX.into() })
    }

    /// The connection `config` asks for (`redis_url`, `redis_timeout_ms`,
    /// `redis_key_prefix`); `None` without `redis_url`.
    pub fn from_config(config: &crate::config::Config) -> redis::RedisResult<Option<Self>> {
        config
            .redis_url()
            .map(|url| {
                Self::new(url, config.redis_timeout()).map(|r| r.with_prefix(&config.redis_key_prefix))
            })
            .transpose()
    }

    /// How long a command may take before it counts as failed.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The same connection with another key prefix (`redis_key_prefix`).
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The Redis key (or channel) for `name`: the prefix, then `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A connection handle; cheap to clone, multiplexed.
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// PUBLISH on the prefixed `channel`, bounded by the timeout.
    pub async fn publish(&self, channel: &str, message: String) -> Result<(), String> {
        let mut conn = self.conn();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(self.key(channel)).arg(message);
        match tokio::time::timeout(self.timeout, cmd.query_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    /// A dedicated subscription connection on the prefixed `channel`.
    pub async fn subscribe(&self, channel: &str) -> Result<redis::aio::PubSub, String> {
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(self.key(channel)).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }

    /// Hand every message of the prefixed `channel` to `on_message` for as long as it
    /// returns `true`, re-subscribing after an outage (backing off up to 5 s).
    pub fn relay(&self, channel: &'static str, mut on_message: impl FnMut(String) -> bool + Send + 'static) {
        use futures_util::StreamExt;
        let redis = self.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(250);
            loop {
                match redis.subscribe(channel).await {
                    Ok(pubsub) => {
                        pause = Duration::from_millis(250);
                        let mut messages = pubsub.into_on_message();
                        while let Some(msg) = messages.next().await {
                            if !on_message(msg.get_payload().unwrap_or_default()) {
                                return;
                            }
                        }
                        tracing::warn!(channel, "lost the Redis subscription; re-subscribing");
                    }
                    Err(err) => {
                        tracing::warn!(channel, error = %err, "cannot subscribe to Redis; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(self.timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        }
    }
}
