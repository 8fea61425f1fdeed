//! The in-process backend: governor's keyed GCRA limiters.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;

use super::{Bucket, Decision, emission_interval};

type Keyed =
    governor::RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// How many checks between sweeps of the keys whose buckets are full again:
/// without sweeping, every key ever seen (a client IP, a token) would stay
/// in memory for the life of the process.
const SWEEP_EVERY: u64 = 4096;

/// One keyed limiter per quota: governor fixes the quota per limiter, and
/// tenants or routes with different quotas must not share a bucket.
#[derive(Default)]
pub(super) struct Memory {
    limiters: RwLock<HashMap<NonZeroU32, Arc<Keyed>>>,
    /// The token buckets, one keyed limiter per rate and burst.
    buckets: RwLock<HashMap<Bucket, Arc<Keyed>>>,
    checks: AtomicU64,
}

impl Memory {
    /// Each check in order, `weight` requests each, up to and including
    /// the first refusal.
    pub(super) fn check_chain(&self, checks: &[(&str, NonZeroU32)], weight: NonZeroU32) -> Vec<Decision> {
        let mut out = Vec::with_capacity(checks.len());
        for (key, limit) in checks {
            let decision = self.check(key, *limit, weight);
            out.push(decision);
            if !decision.allowed {
                break;
            }
        }
        out
    }

    fn check(&self, key: &str, limit: NonZeroU32, weight: NonZeroU32) -> Decision {
        let limiter = self.limiter(limit);
        let decision = match limiter.check_key_n(&key.to_owned(), weight) {
            // More than the whole bucket: never, so come back in a minute.
            Err(_) => Decision::gcra(
                limit,
                0,
                emission_interval(limit) * limit.get(),
                Some(std::time::Duration::from_secs(60)),
            ),
            Ok(Ok(state)) => {
                // governor exposes the remaining burst, not the theoretical
                // arrival time, so the reset is derived from it: exact after
                // an immediate burst, otherwise at most one interval late.
                let remaining = state.remaining_burst_capacity();
                let used = limit.get().saturating_sub(remaining);
                Decision::gcra(limit, remaining, emission_interval(limit) * used, None)
            }
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                // The arrival time is `wait` plus the tolerance, (n - 1) intervals.
                let reset = wait + emission_interval(limit) * (limit.get() - 1);
                Decision::gcra(limit, 0, reset, Some(wait))
            }
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        decision
    }

    /// One token of `key`'s bucket, or the time until the next.
    pub(super) fn take(&self, key: &str, bucket: Bucket) -> Result<(), std::time::Duration> {
        let limiter = {
            let found = self.buckets.read().unwrap_or_else(PoisonError::into_inner).get(&bucket).cloned();
            found.unwrap_or_else(|| {
                let mut buckets = self.buckets.write().unwrap_or_else(PoisonError::into_inner);
                Arc::clone(buckets.entry(bucket).or_insert_with(|| {
                    let quota = governor::Quota::with_period(bucket.interval())
                        .unwrap_or_else(|| governor::Quota::per_second(bucket.per_second))
                        .allow_burst(bucket.burst);
                    Arc::new(governor::RateLimiter::keyed(quota).with_middleware())
                }))
            })
        };
        let taken = limiter.check_key(&key.to_owned()).map(|_| ());
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        taken.map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }

    fn limiter(&self, limit: NonZeroU32) -> Arc<Keyed> {
        if let Some(limiter) = self.limiters.read().unwrap_or_else(PoisonError::into_inner).get(&limit) {
            return Arc::clone(limiter);
        }
        let mut limiters = self.limiters.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(limiters.entry(limit).or_insert_with(|| {
            let quota = governor::Quota::per_minute(limit);
            Arc::new(governor::RateLimiter::keyed(quota).with_middleware())
        }))
    }

    /// Forgets the keys whose buckets are full, which is the same as never seen.
    fn sweep(&self) {
        let mut limiters: Vec<_> =
            self.limiters.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        limiters.extend(self.buckets.read().unwrap_or_else(PoisonError::into_inner).values().cloned());
        for limiter in limiters {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_forgets_full_buckets_only() {
        let memory = Memory::default();
        let (one, many) = (NonZeroU32::MIN, NonZeroU32::new(1_000_000).unwrap());
        assert!(memory.check("busy", one, one).allowed);
        // 1M/min refills in 60 µs: this bucket is full again by the sweep.
        assert!(memory.check("idle", many, one).allowed);
        std::thread::sleep(std::time::Duration::from_millis(5));
        memory.sweep();
        assert_eq!(memory.limiter(one).len(), 1);
        assert_eq!(memory.limiter(many).len(), 0);
        assert!(!memory.check("busy", one, one).allowed);
    }
}
