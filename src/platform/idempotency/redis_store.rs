//! Keys in Redis: a claim is `SET NX PX <lease>` of an in-progress marker;
//! completing swaps the marker for the response (`PX <retention>`) only if
//! the marker is still this request's. Redis expires both by itself. Every
//! call is bounded by the timeout; a Redis failure is a 503, never a
//! request run without its key.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Found, Record, Scope, Token};
use crate::{
    error::{ApiError, ApiResult, Code},
    platform::redis::Redis,
};

/// Set the response if the marker is still ours.
const COMPLETE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                        redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end return 0";
/// Delete the key if the marker is still ours.
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

#[derive(Clone)]
pub(super) struct RedisStore {
    redis: Redis,
    pub(super) timeout: Duration,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum State {
    InProgress,
    Completed,
}

/// The value under a key.
#[derive(Serialize, Deserialize)]
struct Entry {
    state: State,
    claim: Uuid,
    fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    headers: Vec<(String, String)>,
    /// Base64 of the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(default)]
    sealed: bool,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    pub(super) fn new(redis: Redis, timeout: Duration) -> Self {
        Self { redis, timeout }
    }

    /// `<prefix>idempotency:<tenant>:<user>:<sha256 of route and key>`.
    fn key(&self, scope: &Scope) -> String {
        let mut hash = Sha256::new();
        hash.update((scope.route.len() as u64).to_be_bytes());
        hash.update(scope.route.as_bytes());
        hash.update(scope.key.as_bytes());
        self.redis.key(&format!(
            "idempotency:{}:{}:{}",
            scope.tenant_id,
            scope.user_id,
            hex::encode(hash.finalize())
        ))
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> ApiResult<T> {
        let mut conn = self.redis.conn();
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(ApiError::unavailable(err)),
            Err(_) => Err(ApiError::unavailable(anyhow::anyhow!(
                "Redis gave no answer within {} ms",
                self.timeout.as_millis()
            ))),
        }
    }

    pub(super) async fn begin(&self, scope: &Scope, fingerprint: &str, lease: Duration) -> ApiResult<Found> {
        let key = self.key(scope);
        for _ in 0..super::CLAIM_ATTEMPTS {
            let entry = Entry {
                state: State::InProgress,
                claim: Uuid::now_v7(),
                fingerprint: fingerprint.to_owned(),
                status: None,
                headers: Vec::new(),
                body: None,
                sealed: false,
            };
            let marker = serde_json::to_string(&entry).map_err(ApiError::internal)?;
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(&marker).arg("NX").arg("PX").arg(millis(lease));
            if self.query::<Option<String>>(&set).await?.is_some() {
                return Ok(Found::Claimed(Token::Redis { key, marker }));
            }
            let mut get = redis::cmd("GET");
            get.arg(&key);
            let Some(value) = self.query::<Option<String>>(&get).await? else {
                continue; // released or expired in between: claim again
            };
            let entry: Entry = serde_json::from_str(&value).map_err(ApiError::internal)?;
            return Ok(match entry.state {
                State::InProgress => Found::InProgress { fingerprint: entry.fingerprint },
                State::Completed => {
                    let status = entry.status.ok_or_else(|| {
                        ApiError::internal(anyhow::anyhow!("a completed idempotency key without a status"))
                    })?;
                    let body = BASE64.decode(entry.body.unwrap_or_default()).map_err(ApiError::internal)?;
                    let record = Record { status, headers: entry.headers, body, sealed: entry.sealed };
                    Found::Completed { fingerprint: entry.fingerprint, record }
                }
            });
        }
        Err(ApiError::new(Code::Conflict, "this Idempotency-Key is changing hands; retry shortly"))
    }

    pub(super) async fn complete(
        &self,
        key: &str,
        marker: &str,
        record: &Record,
        retention: Duration,
    ) -> ApiResult<bool> {
        let claimed: Entry = serde_json::from_str(marker).map_err(ApiError::internal)?;
        let entry = Entry {
            state: State::Completed,
            claim: claimed.claim,
            fingerprint: claimed.fingerprint,
            status: Some(record.status),
            headers: record.headers.clone(),
            body: Some(BASE64.encode(&record.body)),
            sealed: record.sealed,
        };
        let value = serde_json::to_string(&entry).map_err(ApiError::internal)?;
        let mut eval = redis::cmd("EVAL");
        eval.arg(COMPLETE).arg(1).arg(key).arg(marker).arg(value).arg(millis(retention));
        Ok(self.query::<i64>(&eval).await? == 1)
    }

    pub(super) async fn release(&self, key: &str, marker: &str) -> ApiResult<()> {
        let mut eval = redis::cmd("EVAL");
        eval.arg(RELEASE).arg(1).arg(key).arg(marker);
        self.query::<i64>(&eval).await?;
        Ok(())
    }
}
