//! The shared backend: the GCRA state of each bucket is one Redis key, read
//! and updated by a Lua script so that concurrent instances never race, in
//! one round trip, with Redis's clock so that instances' clocks do not matter.

use std::num::NonZeroU32;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::memory::Memory;
use super::{Bucket, Decision, emission_interval};
use crate::platform::redis::Redis;

/// GCRA in integer microseconds (exact in Lua's doubles, unlike nanoseconds
/// since the epoch), for a chain of buckets in one round trip. KEYS[i] holds
/// bucket i's theoretical arrival time (TAT); ARGV[2i-1] is its emission
/// interval T, ARGV[2i] its burst n, and the last ARGV the weight w (how many
/// requests this one counts as), so it conforms when
/// now >= TAT + w*T - n*T, exactly as governor decides. The chain stops at
/// the first refusal, spending nothing after it. Returns, per bucket checked,
/// {allowed, remaining, reset µs, retry-after µs}, flattened.
const GCRA: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local w = tonumber(ARGV[2 * #KEYS + 1])
local out = {}
for i, key in ipairs(KEYS) do
  local t = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = math.max(tonumber(redis.call('GET', key)) or now, now)
  local allow_at = tat + w * t - burst * t
  if now < allow_at then
    for _, v in ipairs({0, 0, tat - now, allow_at - now}) do out[#out + 1] = v end
    return out
  end
  local new_tat = tat + w * t
  redis.call('SET', key, new_tat, 'PX', math.ceil((new_tat - now) / 1000))
  for _, v in ipairs({1, math.floor((now - allow_at) / t), new_tat - now, 0}) do out[#out + 1] = v end
end
return out
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

    pub(super) async fn check_chain(
        &self,
        checks: &[(&str, NonZeroU32)],
        weight: NonZeroU32,
    ) -> Vec<Decision> {
        if checks.is_empty() {
            return Vec::new();
        }
        let retry_at = self.health().retry_at;
        if retry_at.is_some_and(|at| Instant::now() < at) {
            return self.fallback.check_chain(checks, weight);
        }
        match self.eval(checks, weight).await {
            Ok(decisions) => {
                self.recovered();
                decisions
            }
            Err(reason) => {
                self.failed(reason);
                self.fallback.check_chain(checks, weight)
            }
        }
    }

    /// One token of `key`'s bucket (key `rl:b<per_second>/<burst>:<key>`),
    /// or the time until the next; in memory while Redis is unusable.
    pub(super) async fn take(&self, key: &str, bucket: Bucket) -> Result<(), Duration> {
        let retry_at = self.health().retry_at;
        if retry_at.is_some_and(|at| Instant::now() < at) {
            return self.fallback.take(key, bucket);
        }
        let interval_us = u64::try_from(bucket.interval().as_micros()).unwrap_or(u64::MAX).max(1);
        let args =
            [(format!("b{}/{}:{key}", bucket.per_second, bucket.burst), interval_us, bucket.burst.get())];
        let reply = match tokio::time::timeout(self.timeout, self.invoke(&args, NonZeroU32::MIN)).await {
            Ok(Ok(reply)) if reply.len() == 4 => reply,
            Ok(Ok(reply)) => {
                return self.take_in_memory(key, bucket, format!("unexpected script reply {reply:?}"));
            }
            Ok(Err(err)) => return self.take_in_memory(key, bucket, err.to_string()),
            Err(_) => {
                let why = format!("no answer within {} ms", self.timeout.as_millis());
                return self.take_in_memory(key, bucket, why);
            }
        };
        self.recovered();
        if reply[0] == 1 { Ok(()) } else { Err(Duration::from_micros(u64::try_from(reply[3]).unwrap_or(0))) }
    }

    fn take_in_memory(&self, key: &str, bucket: Bucket, reason: String) -> Result<(), Duration> {
        self.failed(reason);
        self.fallback.take(key, bucket)
    }

    pub(super) fn degraded(&self) -> Option<String> {
        self.health().degraded.clone()
    }

    async fn eval(&self, checks: &[(&str, NonZeroU32)], weight: NonZeroU32) -> Result<Vec<Decision>, String> {
        let args: Vec<(String, u64, u32)> = checks
            .iter()
            .map(|(key, limit)| {
                let interval_us =
                    u64::try_from(emission_interval(*limit).as_micros()).unwrap_or(u64::MAX).max(1);
                (format!("{limit}:{key}"), interval_us, limit.get())
            })
            .collect();
        let reply = match tokio::time::timeout(self.timeout, self.invoke(&args, weight)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(err)) => return Err(err.to_string()),
            Err(_) => return Err(format!("no answer within {} ms", self.timeout.as_millis())),
        };
        let unexpected = || format!("unexpected script reply {reply:?}");
        if reply.is_empty() || reply.len() % 4 != 0 || reply.len() / 4 > checks.len() {
            return Err(unexpected());
        }
        let micros = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
        Ok(reply
            .chunks_exact(4)
            .zip(checks)
            .map(|(r, (_, limit))| {
                let retry = (r[0] == 0).then(|| micros(r[3]));
                Decision::gcra(*limit, u32::try_from(r[1]).unwrap_or(0), micros(r[2]), retry)
            })
            .collect())
    }

    /// Runs the script in one round trip: EVALSHA once the SHA is known,
    /// EVAL (which caches the script again) if Redis lost it in a restart.
    /// Each bucket is `(key under rl:, emission interval in µs, burst)`.
    async fn invoke(
        &self,
        buckets: &[(String, u64, u32)],
        weight: NonZeroU32,
    ) -> ::redis::RedisResult<Vec<i64>> {
        let eval = |command: &str, script: &str| {
            let mut cmd = ::redis::cmd(command);
            cmd.arg(script).arg(buckets.len());
            for (key, _, _) in buckets {
                cmd.arg(self.redis.key(&format!("rl:{key}")));
            }
            for (_, interval_us, burst) in buckets {
                cmd.arg(*interval_us).arg(*burst);
            }
            cmd.arg(weight.get());
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
    async fn a_chain_is_one_script_call_that_stops_at_the_first_refusal() {
        let limiter = RateLimiter::redis(test_redis(), TIMEOUT);
        let (user, tenant) = (unique_key(), unique_key());
        let one = Quota { per_minute: Some(1) };
        let chain = [(user.as_str(), one), (tenant.as_str(), SIXTY)];
        let first = limiter.check_chain(&chain).await;
        assert_eq!((first[0].allowed, first[1].allowed, first[1].remaining), (true, true, 59));
        let second = limiter.check_chain(&chain).await;
        assert!(second.iter().all(|d| !d.allowed && d.limit == Some(1)), "{second:?}");
        // The tenant's bucket was not spent by the refused request.
        assert_eq!(limiter.check(&tenant, SIXTY).await.remaining, 58);
        assert_eq!(limiter.degraded(), None);
    }

    #[tokio::test]
    #[ignore = "needs Redis: set NEXUS_TEST_REDIS_URL and run with --include-ignored (.ci/run does)"]
    async fn instances_share_one_bucket() {
        let redis = test_redis();
        let (a, b) = (RateLimiter::redis(redis.clone(), TIMEOUT), RateLimiter::redis(redis, TIMEOUT));
        let bucket = super::super::Bucket { per_second: NonZeroU32::MIN, burst: NonZeroU32::new(4).unwrap() };
        let key = unique_key();
        for _ in 0..2 {
            assert_eq!(a.take(&key, bucket).await, Ok(()));
            assert_eq!(b.take(&key, bucket).await, Ok(()));
        }
        for limiter in [&a, &b] {
            let wait = limiter.take(&key, bucket).await.unwrap_err();
            assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
            assert_eq!(limiter.degraded(), None);
        }
    }

    #[tokio::test]
    #[ignore = "needs Redis: set NEXUS_TEST_REDIS_URL and run with --include-ignored (.ci/run does)"]
    async fn a_weighted_request_spends_its_weight() {
        let limiter = RateLimiter::redis(test_redis(), TIMEOUT);
        super::super::assert_weighted(&limiter, &unique_key()).await;
        assert_eq!(limiter.degraded(), None);
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
        let one = [(key.as_str(), NonZeroU32::MIN)];
        assert_eq!(shared.eval(&one, NonZeroU32::MIN).await.unwrap()[0].remaining, 0);
        assert!(!shared.eval(&one, NonZeroU32::MIN).await.unwrap()[0].allowed);
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
