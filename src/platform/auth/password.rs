//! argon2id password hashing, off the async executor, at most one hash per
//! core at a time: a burst of sign-ins queues for a slot (503 with
//! `Retry-After` when none frees up within a few seconds) instead of taking
//! every core and the memory of hundreds of concurrent hashes.

use std::{
    sync::{LazyLock, Mutex, PoisonError},
    time::Duration,
};

use tokio::sync::{Semaphore, SemaphorePermit};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{self, Output, ParamsString, Salt, SaltString, rand_core::OsRng},
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

/// argon2's work areas (19 MiB each with the default parameters), kept for
/// the life of the process and reused: at most one per hashing slot is in
/// use. Allocated anew for every hash, each was kept by the allocator, and
/// every user created left 19 MiB more resident (docs/performance.md).
static AREAS: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// The hash of `password` with `salt` by `argon2` (whose parameters are
/// `params`), `len` bytes long, computed in one of [`AREAS`].
fn compute(
    argon2: &Argon2,
    params: &Params,
    password: &[u8],
    salt: Salt<'_>,
    len: usize,
) -> password_hash::Result<Output> {
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes)?;
    let mut area = AREAS.lock().unwrap_or_else(PoisonError::into_inner).pop().unwrap_or_default();
    area.resize(params.block_count(), Block::default());
    let output = Output::init_with(len, |out| {
        Ok(argon2.hash_password_into_with_memory(password, salt, out, &mut area)?)
    });
    AREAS.lock().unwrap_or_else(PoisonError::into_inner).push(area);
    output
}

fn hash_now(password: &[u8]) -> ApiResult<String> {
    let params = Params::default();
    let salt = SaltString::generate(&mut OsRng);
    let hashed = || -> password_hash::Result<String> {
        let output =
            compute(&Argon2::default(), &params, password, salt.as_salt(), Params::DEFAULT_OUTPUT_LEN)?;
        let hash = PasswordHash {
            algorithm: Algorithm::default().ident(),
            version: Some(Version::default().into()),
            params: ParamsString::try_from(&params)?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        };
        Ok(hash.to_string())
    };
    hashed().map_err(|e| ApiError::internal(anyhow::anyhow!("hashing failed: {e}")))
}

/// Whether `password` is the one `stored` was made from, with the
/// parameters `stored` names.
fn matches(password: &[u8], stored: &str) -> password_hash::Result<bool> {
    let parsed = PasswordHash::new(stored)?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(password_hash::Error::PhcStringField);
    };
    let version = parsed.version.map(Version::try_from).transpose()?.unwrap_or_default();
    let params = Params::try_from(&parsed)?;
    let argon2 = Argon2::new(Algorithm::try_from(parsed.algorithm)?, version, params.clone());
    // `Output`'s equality is constant-time.
    Ok(compute(&argon2, &params, password, salt, expected.len())? == expected)
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
        matches(password.as_bytes(), &stored)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("stored hash unreadable: {e}")))
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

    /// The hashes stored before the work areas were kept (argon2's own
    /// hasher, any parameters) verify, and ours verify with argon2's own
    /// verifier: the stored format is the same PHC string.
    #[tokio::test]
    async fn hashes_made_by_argon2_itself_verify_and_ours_verify_with_it() {
        use argon2::{PasswordHasher, PasswordVerifier};
        let salt = SaltString::generate(&mut OsRng);
        let small = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(64, 1, 1, None).unwrap());
        for argon2 in [Argon2::default(), small] {
            let stored = argon2.hash_password(b"correct horse 9", &salt).unwrap().to_string();
            assert!(verify("correct horse 9".into(), Some(stored.clone())).await.unwrap(), "{stored}");
            assert!(!verify("correct horse 8".into(), Some(stored)).await.unwrap());
        }
        let ours = hash("correct horse 9".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse 9", &parsed).is_ok(), "{ours}");
        assert!(Argon2::default().verify_password(b"correct horse 8", &parsed).is_err());
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
