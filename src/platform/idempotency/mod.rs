//! `Idempotency-Key` on POST (API conventions): the first request with a
//! key runs and its response is kept for 24 h; the same key with the same
//! request replays that response byte for byte (`Idempotent-Replayed: true`)
//! without running the handler again; the same key with another request is
//! a 422 `idempotency_conflict`; a key whose first request is still running
//! is a 409 `conflict`.
//!
//! Keys are scoped to tenant, user and route template, and live in the
//! database or, when configured, in Redis, so they hold across instances
//! and restarts. A claim is a lease (60 s): a request that crashed does not
//! hold its key for ever. A 5xx (or 429) answer is not kept: the key is
//! released so the client can retry.

mod database;
mod redis_store;

use std::{sync::Arc, time::Duration};

use actix_web::{
    Error, HttpMessage, HttpResponse,
    body::{BoxBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::{
        Method, StatusCode,
        header::{self, HeaderMap, HeaderName, HeaderValue},
    },
    web,
};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use sea_orm::DatabaseConnection;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, Code},
    platform::{crypto::Cipher, http::Actor, redis::Redis, state::AppState},
};

pub const HEADER: &str = "idempotency-key";
/// Added to a replayed response.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
pub const MAX_KEY_LEN: usize = 255;
/// [`parse_key`]'s rule as the OpenAPI document states it.
pub const KEY_PATTERN: &str = "^[\\x21-\\x7E]{1,255}$";
/// How long a request holds its key before another may take it over.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// How long a completed response is replayed.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Bound of every Redis call unless [`Store::with_timeout`] says otherwise
/// (the default of `http.redis_timeout_ms`).
const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// Headers kept with a response and replayed with it.
const KEPT_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];
/// Attempts to claim a key that vanishes (released, expired) between the
/// failed claim and the read.
const CLAIM_ATTEMPTS: usize = 3;

/// Where keys live: the database (default) or Redis when configured, so a
/// key holds across instances and restarts.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    lease: Duration,
    retention: Duration,
    /// Seals stored bodies (they may hold secrets shown once, such as a
    /// webhook's signing secret).
    cipher: Option<Arc<Cipher>>,
}

#[derive(Clone)]
enum Backend {
    Database(DatabaseConnection),
    Redis(redis_store::RedisStore),
}

/// What a key is scoped to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    /// The route template (`req.match_pattern()`), or the path when no
    /// route matched.
    pub route: String,
    pub key: String,
}

/// A kept response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub status: u16,
    /// Content-type, location and etag, as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The outcome of [`Store::begin`].
#[derive(Debug)]
pub enum Begin {
    /// The key is this request's: run it, then [`Store::complete`] or
    /// [`Store::release`].
    Claimed(Claim),
    /// The same request completed before: answer this.
    Replay(Stored),
    /// The key was used for another request.
    Mismatch,
    /// The first request with this key is still running.
    InFlight,
}

/// A request's hold on its key.
#[derive(Debug)]
pub struct Claim {
    scope: Scope,
    token: Token,
}

#[derive(Debug)]
enum Token {
    /// The row's `claim_id`.
    Database(Uuid),
    /// The Redis key and the exact value this request set there.
    Redis { key: String, marker: String },
}

/// A stored response as the backends keep it (the body possibly sealed).
struct Record {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    sealed: bool,
}

impl Store {
    pub fn database(db: DatabaseConnection) -> Self {
        Self::with_backend(Backend::Database(db))
    }

    pub fn redis(redis: Redis) -> Self {
        Self::with_backend(Backend::Redis(redis_store::RedisStore::new(redis, DEFAULT_REDIS_TIMEOUT)))
    }

    fn with_backend(backend: Backend) -> Self {
        Self { backend, lease: DEFAULT_LEASE, retention: DEFAULT_RETENTION, cipher: None }
    }

    /// Bound every Redis call by `timeout` (pass `config.redis_timeout()`);
    /// no effect on the database store, bounded by its pool.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        if let Backend::Redis(redis) = &mut self.backend {
            redis.timeout = timeout;
        }
        self
    }

    /// Seal stored response bodies with `cipher` (recommended: a replayed
    /// creation may carry a secret shown once).
    pub fn with_cipher(mut self, cipher: Arc<Cipher>) -> Self {
        self.cipher = Some(cipher);
        self
    }

    /// How long a running request holds its key (default 60 s).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a completed response is replayed (default 24 h).
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Claim `scope` for a request with `fingerprint`, or say why not. The
    /// race between simultaneous first requests is settled by the store (a
    /// unique index, or Redis `SET NX`).
    pub async fn begin(&self, scope: &Scope, fingerprint: &str) -> ApiResult<Begin> {
        let found = match &self.backend {
            Backend::Database(db) => database::begin(db, scope, fingerprint, self.lease).await?,
            Backend::Redis(redis) => redis.begin(scope, fingerprint, self.lease).await?,
        };
        Ok(match found {
            Found::Claimed(token) => Begin::Claimed(Claim { scope: scope.clone(), token }),
            Found::Completed { fingerprint: theirs, .. } | Found::InProgress { fingerprint: theirs }
                if theirs != fingerprint =>
            {
                Begin::Mismatch
            }
            Found::InProgress { .. } => Begin::InFlight,
            Found::Completed { record, .. } => Begin::Replay(self.open(record)?),
        })
    }

    /// Keep the response of a claimed request. `false` when the claim had
    /// lapsed and another request holds the key now (nothing is written).
    pub async fn complete(&self, claim: &Claim, stored: &Stored) -> ApiResult<bool> {
        let record = self.seal(stored);
        match (&self.backend, &claim.token) {
            (Backend::Database(db), Token::Database(id)) => {
                database::complete(db, &claim.scope, *id, &record, self.retention).await
            }
            (Backend::Redis(redis), Token::Redis { key, marker }) => {
                redis.complete(key, marker, &record, self.retention).await
            }
            _ => Err(ApiError::internal(anyhow::anyhow!("an idempotency claim of another store"))),
        }
    }

    /// Free a claimed key (its request failed), unless it changed hands.
    pub async fn release(&self, claim: &Claim) -> ApiResult<()> {
        match (&self.backend, &claim.token) {
            (Backend::Database(db), Token::Database(id)) => database::release(db, &claim.scope, *id).await,
            (Backend::Redis(redis), Token::Redis { key, marker }) => redis.release(key, marker).await,
            _ => Err(ApiError::internal(anyhow::anyhow!("an idempotency claim of another store"))),
        }
    }

    /// Delete expired keys (the database store; a no-op for Redis, which
    /// expires them itself).
    pub async fn prune(&self) -> Result<u64, String> {
        match &self.backend {
            Backend::Database(db) => database::prune(db).await.map_err(|err| err.to_string()),
            Backend::Redis(_) => Ok(0),
        }
    }

    fn seal(&self, stored: &Stored) -> Record {
        let (body, sealed) = match &self.cipher {
            Some(cipher) => (cipher.encrypt(&BASE64.encode(&stored.body)).into_bytes(), true),
            None => (stored.body.clone(), false),
        };
        Record { status: stored.status, headers: stored.headers.clone(), body, sealed }
    }

    fn open(&self, record: Record) -> ApiResult<Stored> {
        let body = if record.sealed {
            let cipher = self.cipher.as_ref().ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!("a sealed idempotent response, and no key to open it"))
            })?;
            let sealed = String::from_utf8(record.body).map_err(ApiError::internal)?;
            let encoded = cipher.decrypt(&sealed).map_err(ApiError::internal)?;
            BASE64.decode(encoded).map_err(ApiError::internal)?
        } else {
            record.body
        };
        Ok(Stored { status: record.status, headers: record.headers, body })
    }
}

/// What a backend found for a key.
enum Found {
    Claimed(Token),
    InProgress { fingerprint: String },
    Completed { fingerprint: String, record: Record },
}

/// A step of the API's middleware chain, after authentication
/// (it needs the [`Actor`]); `next` is the rest of the chain. Only a POST that carries the
/// header from an authenticated caller is concerned; everything else
/// passes through untouched.
pub async fn middleware<B, F>(
    mut req: ServiceRequest,
    next: impl FnOnce(ServiceRequest) -> F,
) -> Result<ServiceResponse<BoxBody>, Error>
where
    B: MessageBody + 'static,
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    let applies = req.method() == Method::POST && req.headers().contains_key(HEADER);
    let actor = if applies { req.extensions().get::<Actor>().copied() } else { None };
    let store = actor.and(req.app_data::<web::Data<AppState>>()).map(|state| state.idempotency.clone());
    let (Some(actor), Some(store)) = (actor, store) else {
        return next(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    // Boxed, as the requests that pass above are most requests: inline, this
    // path's futures would make theirs larger, and moving it cost a copy.
    Box::pin(async move {
        let key = match parse_key(req.headers()) {
            Ok(key) => key,
            Err(err) => return Ok(req.error_response(err)),
        };
        // Buffer the body (within the payload limit) to fingerprint it, then
        // hand it on untouched.
        let body = match req.extract::<web::Bytes>().await {
            Ok(body) => body,
            Err(err) => return Ok(req.error_response(err)),
        };
        let fingerprint = fingerprint(req.method(), req.path(), req.query_string(), &body);
        let scope = Scope {
            tenant_id: actor.tenant_id,
            user_id: actor.user_id,
            route: req.match_pattern().unwrap_or_else(|| req.path().to_owned()),
            key,
        };
        let claim = match store.begin(&scope, &fingerprint).await {
            Ok(Begin::Claimed(claim)) => claim,
            Ok(Begin::Replay(stored)) => return Ok(replay(req, stored)),
            Ok(Begin::Mismatch) => {
                let err = ApiError::new(
                    Code::IdempotencyConflict,
                    "this Idempotency-Key was already used with another request; use a new key",
                );
                return Ok(req.error_response(err));
            }
            Ok(Begin::InFlight) => {
                let err = ApiError::new(
                    Code::Conflict,
                    "a request with this Idempotency-Key is still in progress; retry shortly",
                );
                return Ok(req.error_response(err));
            }
            Err(err) => return Ok(req.error_response(err)),
        };
        req.set_payload(Payload::from(body));
        // Released if the request is dropped half-way (client gone).
        let held = Held { store, claim: Some(claim) };

        let res = match next(req).await {
            Ok(res) => res,
            Err(err) => {
                held.release().await;
                return Err(err);
            }
        };
        let status = res.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            // Not an answer to keep: let the client retry with the same key.
            held.release().await;
            return Ok(res.map_into_boxed_body());
        }
        let (request, response) = res.into_parts();
        let (head, body) = response.into_parts();
        let bytes = match actix_web::body::to_bytes(body).await {
            Ok(bytes) => bytes,
            Err(err) => {
                held.release().await;
                let err: Box<dyn std::error::Error> = err.into();
                let err = ApiError::internal(anyhow::anyhow!("could not read the response body: {err}"));
                return Ok(ServiceResponse::from_err(err, request));
            }
        };
        let headers = KEPT_HEADERS
            .iter()
            .flat_map(|name| {
                let values = head.headers().get_all(name);
                values.filter_map(move |v| Some((name.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            })
            .collect();
        let stored = Stored { status: status.as_u16(), headers, body: bytes.to_vec() };
        held.complete(&stored).await;
        Ok(ServiceResponse::new(request, head.set_body(bytes).map_into_boxed_body()))
    })
    .await
}

/// The response kept for a request, sent again.
fn replay(req: ServiceRequest, stored: Stored) -> ServiceResponse<BoxBody> {
    let Ok(status) = StatusCode::from_u16(stored.status) else {
        let err = ApiError::internal(anyhow::anyhow!("a stored response with status {}", stored.status));
        return req.error_response(err);
    };
    let mut res = HttpResponse::build(status);
    for (name, value) in &stored.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value))
        {
            res.append_header((name, value));
        }
    }
    res.insert_header((HeaderName::from_static(REPLAYED_HEADER), HeaderValue::from_static("true")));
    req.into_response(res.body(stored.body))
}

/// A claim the request still holds; a request dropped before it finished
/// (the client went away) frees its key in the background.
struct Held {
    store: Store,
    claim: Option<Claim>,
}

impl Held {
    async fn release(mut self) {
        if let Some(claim) = self.claim.take()
            && let Err(err) = self.store.release(&claim).await
        {
            log(&err, "could not release an idempotency key");
        }
    }

    async fn complete(mut self, stored: &Stored) {
        let Some(claim) = self.claim.take() else { return };
        match self.store.complete(&claim, stored).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                route = %claim.scope.route,
                "the request outlived its idempotency lease; its response was not kept"
            ),
            // The answer stands (the work is done); the key frees itself
            // when its lease ends.
            Err(err) => log(&err, "could not keep an idempotent response"),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let store = self.store.clone();
            runtime.spawn(async move {
                if let Err(err) = store.release(&claim).await {
                    log(&err, "could not release an idempotency key");
                }
            });
        }
    }
}

fn log(err: &ApiError, message: &str) {
    tracing::error!(error = %err, "{message}");
    err.log_source();
}

/// The key of `Idempotency-Key`: one header of 1 to 255 visible ASCII
/// characters.
pub fn parse_key(headers: &HeaderMap) -> ApiResult<String> {
    let mut values = headers.get_all(HEADER);
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::new(Code::InvalidHeader, "send exactly one Idempotency-Key header"));
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(ApiError::new(
            Code::InvalidHeader,
            format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
        ));
    }
    Ok(bytes.iter().map(|&b| char::from(b)).collect())
}

/// Hex SHA-256 of the method, path, query string and exact body bytes
/// (each length-prefixed, so no two requests share an encoding).
pub fn fingerprint(method: &Method, path: &str, query: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    for part in [method.as_str().as_bytes(), path.as_bytes(), query.as_bytes(), body] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hex::encode(hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented pattern accepts exactly the keys the server does.
    #[test]
    fn the_key_pattern_is_the_servers_rule() {
        let pattern = regex::Regex::new(KEY_PATTERN).unwrap();
        let long = "k".repeat(MAX_KEY_LEN + 1);
        for key in ["order-1042", "a", "~!{}", "with space", "tab\t", "é", "", &long, &long[1..]] {
            let server =
                HeaderValue::from_str(key).is_ok_and(|v| parse_key(&headers(&[v.as_bytes()])).is_ok());
            assert_eq!(pattern.is_match(key), server, "{key:?}");
        }
    }

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(HeaderName::from_static(HEADER), HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert_eq!(parse_key(&headers(&[b"order-42_a.b~c"])).unwrap(), "order-42_a.b~c");
        assert!(parse_key(&headers(&["k".repeat(255).as_bytes()])).is_ok());
        for bad in [&b""[..], "k".repeat(256).as_bytes(), b"with space", b"tab\there", b"caf\xc3\xa9"] {
            let err = parse_key(&headers(&[bad])).unwrap_err();
            assert_eq!(err.code, Code::InvalidHeader, "{bad:?}");
        }
        assert_eq!(parse_key(&headers(&[b"a", b"b"])).unwrap_err().code, Code::InvalidHeader);
    }

    #[test]
    fn the_fingerprint_covers_method_path_query_and_body() {
        let base = fingerprint(&Method::POST, "/api/v1/users", "", b"{}");
        assert_eq!(base.len(), 64);
        assert_eq!(base, fingerprint(&Method::POST, "/api/v1/users", "", b"{}"));
        assert_ne!(base, fingerprint(&Method::PUT, "/api/v1/users", "", b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, "/api/v1/user", "", b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, "/api/v1/users", "a=1", b"{}"));
        assert_ne!(base, fingerprint(&Method::POST, "/api/v1/users", "", b"{ }"));
        // Boundaries are part of it.
        assert_ne!(fingerprint(&Method::POST, "/a", "b", b""), fingerprint(&Method::POST, "/a", "", b"b"));
    }
}
