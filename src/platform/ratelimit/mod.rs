//! Request rate limiting: GCRA (the token bucket without a refill timer) with
//! a burst equal to the per-minute quota, in-process or shared through Redis.
//!
//! Both backends implement the same algorithm with the same parameters, so a
//! quota means the same thing whichever is configured, and the Redis backend
//! can fall back onto the in-process one without changing behaviour (only
//! the scope of the count, per instance instead of shared).

mod memory;
mod redis;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// A limit per minute; `None` per_minute means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    pub per_minute: Option<u32>,
}

/// A token bucket: `per_second` tokens added a second, at most `burst`
/// held. Callers that must not be refused (calls to a sales channel) wait
/// for the next token instead, see [`RateLimiter::take`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bucket {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Bucket {
    /// One token every `1 s / per_second`.
    fn interval(self) -> Duration {
        Duration::from_secs(1) / self.per_second.get()
    }
}

/// The outcome of one check, with what the X-RateLimit-* headers need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The quota per minute (None when unlimited).
    pub limit: Option<u32>,
    /// Requests still allowed right now (0 when refused).
    pub remaining: u32,
    /// Seconds until the bucket is full again (X-RateLimit-Reset), rounded up.
    pub reset_secs: u64,
    /// When refused: seconds until one more request is allowed (Retry-After), rounded up, at least 1.
    pub retry_after_secs: Option<u64>,
}

impl Decision {
    const UNLIMITED: Self =
        Self { allowed: true, limit: None, remaining: u32::MAX, reset_secs: 0, retry_after_secs: None };

    /// A zero quota lets nothing through; the next minute will not either,
    /// so ask the client to come back in a minute rather than hammer.
    const fn nothing_allowed() -> Self {
        Self { allowed: false, limit: Some(0), remaining: 0, reset_secs: 0, retry_after_secs: Some(60) }
    }

    /// A decision under `limit` from the GCRA figures: `reset` is the time
    /// until the theoretical arrival time is back to now, `retry` (refusals
    /// only, with `remaining` 0) the time until one more request conforms.
    fn gcra(limit: NonZeroU32, remaining: u32, reset: Duration, retry: Option<Duration>) -> Self {
        Self {
            allowed: retry.is_none(),
            limit: Some(limit.get()),
            remaining,
            reset_secs: ceil_secs(reset),
            // A Retry-After of 0 would invite an immediate, refused, retry.
            retry_after_secs: retry.map(|r| ceil_secs(r).max(1)),
        }
    }
}

/// Rounds up, so clients never come back a moment too early.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The GCRA emission interval: one request every `60 s / n`.
fn emission_interval(n: NonZeroU32) -> Duration {
    Duration::from_secs(60) / n.get()
}

/// Counts requests per key; clones share the counts.
#[derive(Clone)]
pub struct RateLimiter(Backend);

#[derive(Clone)]
enum Backend {
    Memory(Arc<memory::Memory>),
    Redis(Arc<redis::Shared>),
}

impl RateLimiter {
    /// In-process GCRA (governor): one keyed limiter per distinct quota, since governor cannot vary the quota per key; created lazily and kept in a map.
    pub fn memory() -> Self {
        Self(Backend::Memory(Arc::default()))
    }

    /// Shared across instances: a GCRA Lua script run atomically in one round trip (EVALSHA with fallback to EVAL, e.g. redis::Script), keys `<redis_key_prefix>rl:<limit>:<key>` with an expiry. When Redis errors or times out (`timeout`), the check FAILS OPEN onto an in-process limiter (same quota), logs a warning (rate-limited logging: not once per request — at most once per ~10 s), and `degraded()` returns the reason until a Redis call succeeds again.
    pub fn redis(redis: crate::platform::redis::Redis, timeout: Duration) -> Self {
        Self(Backend::Redis(Arc::new(redis::Shared::new(redis, timeout))))
    }

    /// Count one request against `key` under `quota`. Unlimited quotas are always allowed with limit None, remaining u32::MAX, reset 0.
    pub async fn check(&self, key: &str, quota: Quota) -> Decision {
        self.check_chain(&[(key, quota)]).await[0]
    }

    /// Count one request against each `(key, quota)` in order, stopping at
    /// the first refusal: a refused request spends nothing of the buckets
    /// after it (a user over their own limit does not spend the tenant's).
    /// One decision per check; those after a refusal repeat it. With Redis,
    /// the whole chain is one round trip; unlimited quotas cost none.
    pub async fn check_chain(&self, checks: &[(&str, Quota)]) -> Vec<Decision> {
        self.spend_chain(checks, NonZeroU32::MIN).await
    }

    /// [`check_chain`](Self::check_chain), counting this one as `weight`
    /// requests (a costly GraphQL query); a weight above a bucket's whole
    /// quota is refused by it.
    pub async fn spend_chain(&self, checks: &[(&str, Quota)], weight: NonZeroU32) -> Vec<Decision> {
        // The buckets to count: the limited ones before any zero quota.
        let mut counted = Vec::new();
        for (key, quota) in checks {
            match quota.per_minute.map(NonZeroU32::new) {
                None => {}
                Some(None) => break,
                Some(Some(limit)) => counted.push((*key, limit)),
            }
        }
        let mut decisions = match &self.0 {
            _ if counted.is_empty() => Vec::new(),
            Backend::Memory(memory) => memory.check_chain(&counted, weight),
            // Boxed: inline, the Redis call's future would make every
            // request's future as large, and moving that costs a copy.
            Backend::Redis(shared) => Box::pin(shared.check_chain(&counted, weight)).await,
        }
        .into_iter();
        let mut out = Vec::with_capacity(checks.len());
        for (_, quota) in checks {
            let decision = match (out.last(), quota.per_minute) {
                (Some(Decision { allowed: false, .. }), _) => out[out.len() - 1],
                (_, None) => Decision::UNLIMITED,
                (_, Some(0)) => Decision::nothing_allowed(),
                (_, Some(_)) => decisions.next().unwrap_or(Decision::UNLIMITED),
            };
            out.push(decision);
        }
        out
    }

    /// Take one token from `key`'s `bucket`: `Ok` when taken, otherwise
    /// how long until the next one is there (nothing is taken then).
    /// Buckets are GCRA like quotas, keyed apart from them.
    pub async fn take(&self, key: &str, bucket: Bucket) -> Result<(), Duration> {
        match &self.0 {
            Backend::Memory(memory) => memory.take(key, bucket),
            Backend::Redis(shared) => shared.take(key, bucket).await,
        }
    }

    /// Why the shared limiter is not in use right now (None when fine or in-process by design).
    pub fn degraded(&self) -> Option<String> {
        match &self.0 {
            Backend::Memory(_) => None,
            Backend::Redis(shared) => shared.degraded(),
        }
    }
}

/// What both backends must do with a weighted request, on a fresh `key`.
#[cfg(test)]
async fn assert_weighted(limiter: &RateLimiter, key: &str) {
    let sixty = Quota { per_minute: Some(60) };
    let weight = |n| NonZeroU32::new(n).unwrap();
    let spent = limiter.spend_chain(&[(key, sixty)], weight(10)).await;
    assert_eq!((spent[0].allowed, spent[0].remaining), (true, 50));
    // More than is left: refused, spending nothing.
    assert!(!limiter.spend_chain(&[(key, sixty)], weight(51)).await[0].allowed);
    assert_eq!(limiter.check(key, sixty).await.remaining, 49);
    // More than the whole quota never fits.
    let whole = limiter.spend_chain(&[(&format!("{key}:whole"), sixty)], weight(61)).await;
    assert!(!whole[0].allowed && whole[0].retry_after_secs.is_some_and(|s| s >= 1));
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIXTY: Quota = Quota { per_minute: Some(60) };

    #[tokio::test]
    async fn burst_of_sixty_then_one_per_second() {
        let limiter = RateLimiter::memory();
        for i in 0..60 {
            let d = limiter.check("k", SIXTY).await;
            assert!(d.allowed, "request {i} refused");
            assert_eq!(d.limit, Some(60));
            assert_eq!(d.remaining, 59 - i);
            assert_eq!(d.retry_after_secs, None);
            assert!((1..=60).contains(&d.reset_secs), "reset {}", d.reset_secs);
        }
        let refused = limiter.check("k", SIXTY).await;
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after_secs, Some(1));
        assert_eq!(refused.reset_secs, 60);
        assert_eq!(limiter.degraded(), None);
    }

    #[tokio::test]
    async fn headers_count_down() {
        let limiter = RateLimiter::memory();
        let first = limiter.check("k", SIXTY).await;
        assert_eq!(
            first,
            Decision { allowed: true, limit: Some(60), remaining: 59, reset_secs: 1, retry_after_secs: None }
        );
        let second = limiter.check("k", SIXTY).await;
        assert_eq!((second.remaining, second.reset_secs), (58, 2));
    }

    #[tokio::test]
    async fn keys_are_independent() {
        let limiter = RateLimiter::memory();
        let one = Quota { per_minute: Some(1) };
        assert!(limiter.check("a", one).await.allowed);
        assert!(!limiter.check("a", one).await.allowed);
        assert!(limiter.check("b", one).await.allowed);
    }

    #[tokio::test]
    async fn quotas_are_independent_for_one_key() {
        let limiter = RateLimiter::memory();
        let one = Quota { per_minute: Some(1) };
        let two = Quota { per_minute: Some(2) };
        assert!(limiter.check("k", one).await.allowed);
        assert!(!limiter.check("k", one).await.allowed);
        let d = limiter.check("k", two).await;
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining), (Some(2), 1));
        // A refusal under a 1/min quota waits the whole minute.
        assert_eq!(limiter.check("k", one).await.retry_after_secs, Some(60));
    }

    #[tokio::test]
    async fn a_chain_stops_at_the_first_refusal() {
        let limiter = RateLimiter::memory();
        let one = Quota { per_minute: Some(1) };
        let unlimited = Quota { per_minute: None };
        let chain = [("user", one), ("open", unlimited), ("tenant", Quota { per_minute: Some(2) })];
        let first = limiter.check_chain(&chain).await;
        assert!(first.iter().all(|d| d.allowed));
        assert_eq!((first[1], first[2].remaining), (Decision::UNLIMITED, 1));
        // The user is refused: the refusal stands for the rest, and the
        // tenant's bucket is not spent.
        let second = limiter.check_chain(&chain).await;
        assert!(second.iter().all(|d| !d.allowed && d.limit == Some(1)));
        assert_eq!(limiter.check("tenant", Quota { per_minute: Some(2) }).await.remaining, 0);
        // A zero quota refuses, and spends nothing after it.
        let zero =
            limiter.check_chain(&[("a", SIXTY), ("b", Quota { per_minute: Some(0) }), ("c", SIXTY)]).await;
        assert_eq!((zero[0].allowed, zero[1].allowed, zero[2].retry_after_secs), (true, false, Some(60)));
        assert_eq!(limiter.check("c", SIXTY).await.remaining, 59);
    }

    #[tokio::test]
    async fn a_weighted_request_spends_its_weight() {
        super::assert_weighted(&RateLimiter::memory(), "weighted").await;
    }

    #[tokio::test]
    async fn a_bucket_gives_its_burst_then_says_how_long_to_wait() {
        let limiter = RateLimiter::memory();
        let bucket = Bucket { per_second: NonZeroU32::new(2).unwrap(), burst: NonZeroU32::new(3).unwrap() };
        for i in 0..3 {
            assert_eq!(limiter.take("b", bucket).await, Ok(()), "token {i}");
        }
        let wait = limiter.take("b", bucket).await.unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
        // Another key, and a quota on the same key, are other buckets.
        assert_eq!(limiter.take("c", bucket).await, Ok(()));
        assert!(limiter.check("b", SIXTY).await.allowed);
    }

    #[tokio::test]
    async fn unlimited_and_zero() {
        let limiter = RateLimiter::memory();
        for _ in 0..1000 {
            assert_eq!(limiter.check("k", Quota { per_minute: None }).await, Decision::UNLIMITED);
        }
        let zero = limiter.check("k", Quota { per_minute: Some(0) }).await;
        assert!(!zero.allowed);
        assert_eq!(zero.retry_after_secs, Some(60));
    }
}
