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
//! the entry was made.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Principal;

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
}

impl Principals {
    /// `ttl` zero: nothing is cached.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::default() }
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
    use crate::platform::tenancy::TenantScope;

    fn principal(user_id: Uuid, token_id: Uuid) -> Principal {
        Principal {
            user_id,
            home_tenant_id: Uuid::nil(),
            tenant: TenantScope::new(Uuid::nil()),
            token_id,
            is_super_admin: false,
            roles: vec!["admin".into()],
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
