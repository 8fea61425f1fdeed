//! Resolved principals, kept per instance for `auth.principal_cache_ms`
//! (1 s), so a client's steady stream of requests costs no database round
//! trip to authenticate. Revocation, logout, a disable or a role change is
//! seen at once on the instance that made it (it forgets the entries
//! concerned) and within that bound on every other instance and after
//! changes made by the command line: an entry is never used once older.
//!
//! Entries are keyed by the SHA-256 of the bearer token itself, so a hit
//! needs neither the token's signature checked again nor its id decoded:
//! the same bytes were verified, found in `api_tokens` and unrevoked when
//! the entry was made. When an entry ages out, the requests that miss it at
//! the same moment wait for one of them to resolve it again
//! ([`crate::platform::flight`]).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Principal;
use crate::{error::ApiResult, platform::flight::Flights};

/// Entries beyond which stale ones are swept on insert (and all dropped if
/// none is stale): memory stays bounded whatever the number of tokens.
const MAX_ENTRIES: usize = 50_000;

/// A token (the SHA-256 of its bytes) as seen from one acting tenant
/// (`X-Tenant-ID`, when sent).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Key {
    pub token_digest: [u8; 32],
    pub acting: Option<Uuid>,
}

struct Entry {
    at: Instant,
    expires_at: DateTime<Utc>,
    principal: Principal,
}

pub struct Principals {
    ttl: Duration,
    entries: Mutex<HashMap<Key, Entry>>,
    resolving: Flights<Key>,
}

impl Principals {
    /// `ttl` zero: nothing is cached.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::default(), resolving: Flights::default() }
    }

    /// The principal of `key`: cached, or else resolved by `resolve` (its
    /// token's expiry and the principal) and cached. Concurrent misses of
    /// one key resolve it once; should that fail, the next resolves it.
    pub async fn get_or_resolve<F>(
        &self,
        key: Key,
        now: DateTime<Utc>,
        resolve: impl FnOnce() -> F,
    ) -> ApiResult<Principal>
    where
        F: Future<Output = ApiResult<(DateTime<Utc>, Principal)>>,
    {
        if self.ttl.is_zero() {
            return resolve().await.map(|(_, principal)| principal);
        }
        let read = || async {
            let (expires_at, principal) = resolve().await?;
            self.put(key, expires_at, principal.clone());
            Ok(principal)
        };
        self.resolving.get_or_read(&key, || self.get(&key, now), read).await
    }

    /// The principal of `key`, if resolved less than `ttl` ago and the token
    /// has not expired since.
    pub fn get(&self, key: &Key, now: DateTime<Utc>) -> Option<Principal> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(key)?;
        (entry.at.elapsed() < self.ttl && entry.expires_at > now).then(|| entry.principal.clone())
    }

    pub fn put(&self, key: Key, expires_at: DateTime<Utc>, principal: Principal) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| e.at.elapsed() < self.ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, Entry { at: Instant::now(), expires_at, principal });
    }

    /// After a token was revoked here.
    pub fn forget_token(&self, token_id: Uuid) {
        self.forget(|_, principal| principal.token_id == token_id);
    }

    /// After a user was disabled or their roles changed here.
    pub fn forget_user(&self, user_id: Uuid) {
        self.forget(|_, principal| principal.user_id == user_id);
    }

    fn forget(&self, gone: impl Fn(&Key, &Principal) -> bool) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|key, e| !gone(key, &e.principal));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{error::ApiError, platform::tenancy::TenantScope};

    fn principal(user_id: Uuid, token_id: Uuid) -> Principal {
        Principal {
            user_id,
            home_tenant_id: Uuid::nil(),
            tenant: TenantScope::new(Uuid::nil()),
            token_id,
            is_super_admin: false,
            roles: ["admin".to_owned()].into(),
        }
    }

    #[test]
    fn hits_only_the_same_fresh_unexpired_token_until_forgotten() {
        let cache = Principals::new(Duration::from_secs(60));
        let (now, user, token) = (Utc::now(), Uuid::now_v7(), Uuid::now_v7());
        let key = Key { token_digest: [1; 32], acting: None };
        cache.put(key, now + chrono::Duration::minutes(1), principal(user, token));
        assert_eq!(cache.get(&key, now).map(|p| p.user_id), Some(user));
        assert!(cache.get(&Key { token_digest: [2; 32], ..key }, now).is_none(), "another token");
        assert!(cache.get(&Key { acting: Some(Uuid::nil()), ..key }, now).is_none());
        assert!(cache.get(&key, now + chrono::Duration::minutes(2)).is_none(), "expired since");
        cache.forget_user(Uuid::now_v7());
        assert!(cache.get(&key, now).is_some(), "another user's change");
        cache.forget_user(user);
        assert!(cache.get(&key, now).is_none());
        cache.put(key, now + chrono::Duration::minutes(1), principal(user, token));
        cache.forget_token(Uuid::now_v7());
        assert!(cache.get(&key, now).is_some(), "another token revoked");
        cache.forget_token(token);
        assert!(cache.get(&key, now).is_none());
    }

    /// Ten concurrent misses of one key with `ttl`; the first resolution
    /// fails when `fail_first`. Returns how many got a principal and how
    /// many resolutions ran.
    async fn ten_misses(ttl: Duration, fail_first: bool) -> (usize, usize) {
        use std::sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        };
        let cache = Arc::new(Principals::new(ttl));
        let resolved = Arc::new(AtomicUsize::new(0));
        let key = Key { token_digest: [1; 32], acting: None };
        let later = Utc::now() + chrono::Duration::minutes(1);
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (cache, resolved) = (cache.clone(), resolved.clone());
                tokio::spawn(async move {
                    let resolve = || async {
                        let n = resolved.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        match n {
                            0 if fail_first => Err(ApiError::database_unavailable(anyhow::anyhow!("down"))),
                            _ => Ok((later, principal(Uuid::nil(), Uuid::nil()))),
                        }
                    };
                    cache.get_or_resolve(key, Utc::now(), resolve).await.is_ok()
                })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            ok += usize::from(task.await.unwrap());
        }
        (ok, resolved.load(Ordering::SeqCst))
    }

    /// Concurrent misses of a token resolve it once; a failed resolution is
    /// not shared, the next caller resolves again; with a zero `ttl` every
    /// caller resolves, side by side.
    #[tokio::test]
    async fn concurrent_misses_resolve_once() {
        assert_eq!(ten_misses(Duration::from_secs(60), false).await, (10, 1));
        assert_eq!(ten_misses(Duration::from_secs(60), true).await, (9, 2), "the failure, then one");
        let started = std::time::Instant::now();
        assert_eq!(ten_misses(Duration::ZERO, false).await, (10, 10));
        // Ten 100 ms resolutions: about 100 ms side by side, 1 s one after the other.
        assert!(started.elapsed() < Duration::from_millis(600), "not one after the other");
    }

    #[test]
    fn entries_age_out_and_a_zero_ttl_caches_nothing() {
        let key = Key { token_digest: [1; 32], acting: None };
        let later = Utc::now() + chrono::Duration::minutes(1);
        let short = Principals::new(Duration::from_millis(20));
        short.put(key, later, principal(Uuid::nil(), Uuid::nil()));
        assert!(short.get(&key, Utc::now()).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(short.get(&key, Utc::now()).is_none());
        let off = Principals::new(Duration::ZERO);
        off.put(key, later, principal(Uuid::nil(), Uuid::nil()));
        assert!(off.get(&key, Utc::now()).is_none());
    }
}
