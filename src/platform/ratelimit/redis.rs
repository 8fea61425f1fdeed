//! The shared backend: the GCRA state of each bucket is one Redis key, read
//! and updated by a Lua script so that concurrent instances never race, in
//! one round trip, with Redis's clock so that instances' clocks do not matter.

use std::num::NonZeroU32;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::memory::Memory;
use super::{Decision, emission_interval};
use crate::platform::redis::Redis;

/// GCRA in integer microseconds (exact in Lua's doubles, unlike nanoseconds
/// since the epoch). KEYS[1] holds the theoretical arrival time (TAT);
/// ARGV[1] is the emission interval T, ARGV[2] the burst n, so a request
/// conforms when now >= TAT + T - n*T, exactly as governor decides.
/// Returns {allowed, remaining, reset µs, retry-after µs}.
const GCRA: &str = r"
local t = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1])) or now, now)
local allow_at = tat + t - burst * t
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
local new_tat = tat + t
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now - allow_at) / t), new_tat - now, 0}
";

/// At most one warning per this long while Redis is failing: a warning per
/// request would flood the logs exactly when the system is under stress.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// While Redis is failing, requests skip it for this long after a failure,
/// so that a hung Redis costs one `timeout` per second rather than per request.
const RETRY_EVERY: Duration = Duration::from_secs(1);

pub(super) struct Shared {
    redis: Redis,
    timeout: Duration,
    /// The script's SHA1 for EVALSHA, learnt from SCRIPT LOAD on first use
    /// (the redis crate's `script` feature, which would hash it here, is off).
    sha: OnceLock<String>,
    /// Where requests are counted while Redis is unusable: failing open keeps
    /// the API up, and limiting per instance is better than not at all.
    fallback: Memory,
    health: Mutex<Health>,
}

#[derive(Default)]
struct Health {
    degraded: Option<String>,
    last_warned: Option<Instant>,
    retry_at: Option<Instant>,
}

impl Shared {
    pub(super) fn new(redis: Redis, timeout: Duration) -> Self {
        Self { redis, timeout, sha: OnceLock::new(), fallback: Memory::default(), health: Mutex::default() }
    }

    pub(super) async fn check(&self, key: &str, limit: NonZeroU32) -> Decision {
        let retry_at = self.health().retry_at;
        if retry_at.is_some_and(|at| Instant::now() < at) {
            return self.fallback.check(key, limit);
        }
        match self.eval(key, limit).await {
            Ok(decision) => {
                self.recovered();
                decision
            }
            Err(reason) => {
                self.failed(reason);
                self.fallback.check(key, limit)
            }
        }
    }

    pub(super) fn degraded(&self) -> Option<String> {
        self.health().degraded.clone()
    }

    async fn eval(&self, key: &str, limit: NonZeroU32) -> Result<Decision, String> {
        let reply = match tokio::time::timeout(self.timeout, self.invoke(key, limit)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(err)) => return Err(err.to_string()),
            Err(_) => return Err(format!("no answer within {} ms", self.timeout.as_millis())),
        };
        let [allowed, remaining, reset_us, retry_us]: [i64; 4] =
            Vec::try_into(reply).map_err(|reply| format!("unexpected script reply {reply:?}"))?;
        let micros = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
        let retry = (allowed == 0).then(|| micros(retry_us));
        Ok(Decision::gcra(limit, u32::try_from(remaining).unwrap_or(0), micros(reset_us), retry))
    }

    /// Runs the script in one round trip: EVALSHA once the SHA is known,
    /// EVAL (which caches the script again) if Redis lost it in a restart.
    async fn invoke(&self, key: &str, limit: NonZeroU32) -> ::redis::RedisResult<Vec<i64>> {
        let interval_us = u64::try_from(emission_interval(limit).as_micros()).unwrap_or(u64::MAX).max(1);
        let key = self.redis.key(&format!("rl:{limit}:{key}"));
        let eval = |command: &str, script: &str| {
            let mut cmd = ::redis::cmd(command);
            cmd.arg(script).arg(1).arg(&key).arg(interval_us).arg(limit.get());
            cmd
        };
        let mut conn = self.redis.conn();
        match self.sha.get() {
            Some(sha) => match eval("EVALSHA", sha).query_async(&mut conn).await {
                Err(err) if err.code() == Some("NOSCRIPT") => eval("EVAL", GCRA).query_async(&mut conn).await,
                reply => reply,
            },
            None => {
                let (sha, reply): (String, Vec<i64>) = ::redis::pipe()
                    .cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(GCRA)
                    .add_command(eval("EVAL", GCRA))
                    .query_async(&mut conn)
                    .await?;
                // A concurrent first call may have set it: same script, same SHA.
                let _ = self.sha.set(sha);
                Ok(reply)
            }
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failed(&self, reason: String) {
        let now = Instant::now();
        let mut health = self.health();
        health.retry_at = Some(now + RETRY_EVERY);
        if health.last_warned.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
            health.last_warned = Some(now);
            tracing::warn!(error = %reason, "rate limiting: Redis unusable, counting per instance");
        }
        health.degraded = Some(format!("Redis unusable, counting per instance: {reason}"));
    }

    fn recovered(&self) {
        let mut health = self.health();
        if health.degraded.is_some() {
            tracing::info!("rate limiting: Redis usable again, counting across instances");
        }
        *health = Health::default();
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Backend, Quota, RateLimiter};
    use super::*;

    const SIXTY: Quota = Quota { per_minute: Some(60) };
    const TIMEOUT: Duration = Duration::from_millis(500);

    /// The test Redis (these tests are ignored unless asked for).
    fn test_redis() -> Redis {
        let url = std::env::var("NEXUS_TEST_REDIS_URL").expect("this test needs Redis: NEXUS_TEST_REDIS_URL");
        Redis::new(&url, TIMEOUT).unwrap()
    }

    fn unique_key() -> String {
        format!("test:{}", uuid::Uuid::now_v7())
    }

    /// A limiter whose Redis refuses connections, as when it is down.
    fn down() -> RateLimiter {
        RateLimiter::redis(Redis::new("redis://127.0.0.1:1", TIMEOUT).unwrap(), TIMEOUT)
    }

    #[tokio::test]
    async fn check_is_send() {
        fn send<T: Send>(_: T) {}
        send(down().check("k", SIXTY));
    }

    #[tokio::test]
    #[ignore = "needs Redis: set NEXUS_TEST_REDIS_URL and run with --include-ignored (.ci/run does)"]
    async fn instances_share_one_limit() {
        let redis = test_redis();
        let (a, b) = (RateLimiter::redis(redis.clone(), TIMEOUT), RateLimiter::redis(redis, TIMEOUT));
        let key = unique_key();
        for i in 0..30 {
            let (da, db) = (a.check(&key, SIXTY).await, b.check(&key, SIXTY).await);
            assert!(da.allowed && db.allowed, "pair {i} refused");
            assert_eq!((da.limit, da.remaining, da.reset_secs), (Some(60), 59 - 2 * i, 2 * i as u64 + 1));
            assert_eq!(db.remaining, 58 - 2 * i);
        }
        for limiter in [&a, &b] {
            let d = limiter.check(&key, SIXTY).await;
            assert!(!d.allowed);
            assert_eq!((d.remaining, d.retry_after_secs, d.reset_secs), (0, Some(1), 60));
            assert_eq!(limiter.degraded(), None);
        }
        // Another quota on the same key is another bucket.
        assert!(a.check(&key, Quota { per_minute: Some(61) }).await.allowed);
    }

    #[tokio::test]
    #[ignore = "needs Redis: set NEXUS_TEST_REDIS_URL and run with --include-ignored (.ci/run does)"]
    async fn key_expires_when_bucket_is_full() {
        let redis = test_redis();
        let limiter = RateLimiter::redis(redis.clone(), TIMEOUT);
        let key = unique_key();
        limiter.check(&key, SIXTY).await;
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(redis.key(&format!("rl:60:{key}")))
            .query_async(&mut redis.conn())
            .await
            .unwrap();
        assert!((1..=1000).contains(&ttl), "ttl {ttl}");
    }

    #[tokio::test]
    #[ignore = "needs Redis: set NEXUS_TEST_REDIS_URL and run with --include-ignored (.ci/run does)"]
    async fn evals_when_redis_lost_the_script() {
        let redis = test_redis();
        let shared = Shared::new(redis, TIMEOUT);
        shared.sha.set("0".repeat(40)).unwrap();
        let key = unique_key();
        assert_eq!(shared.eval(&key, NonZeroU32::MIN).await.unwrap().remaining, 0);
        assert!(!shared.eval(&key, NonZeroU32::MIN).await.unwrap().allowed);
    }

    #[tokio::test]
    async fn fails_open_onto_memory() {
        let down = down();
        let key = unique_key();
        for i in 0..60 {
            assert!(down.check(&key, SIXTY).await.allowed, "request {i} refused");
        }
        let refused = down.check(&key, SIXTY).await;
        assert_eq!((refused.allowed, refused.remaining, refused.retry_after_secs), (false, 0, Some(1)));
        let reason = down.degraded().unwrap();
        assert!(reason.starts_with("Redis unusable"), "{reason}");
    }

    #[tokio::test]
    #[ignore = "needs Redis: set NEXUS_TEST_REDIS_URL and run with --include-ignored (.ci/run does)"]
    async fn recovers_on_first_success() {
        let redis = test_redis();
        let limiter = RateLimiter::redis(redis, TIMEOUT);
        let Backend::Redis(shared) = &limiter.0 else { unreachable!() };
        shared.failed("test".into());
        assert!(limiter.degraded().is_some());
        // Still within the retry delay: counted in memory, still degraded.
        assert!(limiter.check(&unique_key(), SIXTY).await.allowed);
        assert!(limiter.degraded().is_some());
        shared.health().retry_at = None;
        assert!(limiter.check(&unique_key(), SIXTY).await.allowed);
        assert_eq!(limiter.degraded(), None);
    }
}
