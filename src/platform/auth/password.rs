//! argon2id password hashing, off the async executor, at most one hash per
//! core at a time: a burst of sign-ins queues for a slot (503 with
//! `Retry-After` when none frees up within a few seconds) instead of taking
//! every core and the memory of hundreds of concurrent hashes.

use std::{sync::LazyLock, time::Duration};

use tokio::sync::{Semaphore, SemaphorePermit};

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};

use crate::error::{ApiError, ApiResult, Code};

/// Hashing slots of this process: one per core.
static SLOTS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(cores()));

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// How long a hash waits for a slot before the request is refused.
const WAIT: Duration = Duration::from_secs(5);

async fn slot(wait: Duration) -> ApiResult<SemaphorePermit<'static>> {
    match tokio::time::timeout(wait, SLOTS.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        // A 503: `Retry-After: 1` comes with it.
        _ => Err(ApiError::new(Code::ServiceUnavailable, "too many sign-ins at once; retry shortly")),
    }
}

fn hash_now(password: &[u8]) -> ApiResult<String> {
    Argon2::default()
        .hash_password(password, &SaltString::generate(&mut OsRng))
        .map(|h| h.to_string())
        .map_err(|e| ApiError::internal(anyhow::anyhow!("hashing failed: {e}")))
}

pub async fn hash(password: String) -> ApiResult<String> {
    let _slot = slot(WAIT).await?;
    tokio::task::spawn_blocking(move || hash_now(password.as_bytes())).await.map_err(ApiError::internal)?
}

/// Verify `password` against `stored`. With no stored hash (unknown account)
/// the same work is done and the answer is `false`, so timing does not reveal
/// whether an account exists.
pub async fn verify(password: String, stored: Option<String>) -> ApiResult<bool> {
    verify_within(WAIT, password, stored).await
}

async fn verify_within(wait: Duration, password: String, stored: Option<String>) -> ApiResult<bool> {
    let _slot = slot(wait).await?;
    tokio::task::spawn_blocking(move || {
        let Some(stored) = stored else {
            hash_now(password.as_bytes())?;
            return Ok(false);
        };
        let parsed = PasswordHash::new(&stored)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("stored hash unreadable: {e}")))?;
        Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .map_err(ApiError::internal)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_never_match() {
        let stored = hash("correct horse 9".into()).await.unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify("correct horse 9".into(), Some(stored.clone())).await.unwrap());
        assert!(!verify("wrong horse 9".into(), Some(stored)).await.unwrap());
        assert!(!verify("anything".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn with_every_slot_taken_a_check_is_refused_with_503_not_queued_forever() {
        let held = SLOTS.acquire_many(cores() as u32).await.unwrap();
        let err = verify_within(Duration::from_millis(50), "x".into(), None).await.unwrap_err();
        assert_eq!((err.code, err.retry_after), (Code::ServiceUnavailable, Some(1)));
        drop(held);
        assert!(!verify_within(Duration::from_secs(5), "x".into(), None).await.unwrap());
    }
}
