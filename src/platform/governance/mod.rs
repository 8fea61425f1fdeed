//! The governance step of the request path, after authentication: rate
//! limits by license tier (BR-007), the license state (BR-006), the monthly
//! API call quota, and the tenant's feature toggles for the permission
//! extractor to check (BR-005). A tenant's license and toggles are cached
//! per instance for a few seconds and dropped at once on every instance
//! when they change (through Redis pub/sub when configured).

pub mod usage;

use std::{
    collections::HashMap,
    num::NonZeroU32,
    rc::Rc,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{
    Error, HttpMessage,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER},
    web,
};
use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, Code},
    platform::{
        auth::Principal,
        features::{self, Catalogue, Effective},
        flight::Flights,
        http::is_mutating,
        license::{self, Access, Tiers},
        ratelimit::{Decision, Quota, RateLimiter},
        redis::Redis,
        state::AppState,
    },
};
use entity::{feature_toggle, license as license_row};

/// The pub/sub channel, after the `redis_key_prefix`.
const CHANNEL: &str = "governance";
/// A safety net: cached governance is re-read after this even without an
/// invalidation (e.g. while Redis is down).
const TTL: Duration = Duration::from_secs(10);

/// What governs a tenant right now.
#[derive(Debug)]
pub struct Snapshot {
    pub license: license_row::Model,
    pub toggles: Vec<feature_toggle::Model>,
    /// API calls this month, as stored when the snapshot was read.
    pub calls_this_month: u64,
    /// Browser origins the tenant allows (CORS).
    pub cors_origins: Vec<String>,
}

/// Governance of one request, for the extractors downstream.
#[derive(Clone)]
pub struct Governed {
    pub tenant_id: Uuid,
    pub snapshot: Arc<Snapshot>,
    pub now: DateTime<Utc>,
}

impl Governed {
    /// The governance the middleware put on `req`. Fails closed: a route
    /// that needs a governed check where the middleware did not run is a
    /// server error, never an open door.
    pub fn of(req: &actix_web::HttpRequest) -> ApiResult<Rc<Governed>> {
        req.extensions().get::<Rc<Governed>>().cloned().ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("governance did not run before {}", req.path()))
        })
    }

    pub fn feature(&self, gov: &Governance, key: &str) -> Option<Effective> {
        let def = gov.catalogue.get(key)?;
        Some(features::evaluate(
            key,
            def,
            &gov.tiers,
            &self.snapshot.license.tier,
            self.toggle(features::GLOBAL, key),
            self.toggle(self.tenant_id, key),
            self.now,
        ))
    }

    fn toggle(&self, tenant: Uuid, key: &str) -> Option<&feature_toggle::Model> {
        self.snapshot.toggles.iter().find(|t| t.tenant_id == tenant && t.key == key)
    }

    /// What the license state lets the tenant do now.
    pub fn access(&self, gov: &Governance) -> Access {
        license::access(license::state(&self.snapshot.license, &gov.tiers.lifecycle, self.now))
    }

    /// `Ok` when `key` is on; 403 `feature_disabled` (or 410 when removed)
    /// naming the key and the reason otherwise.
    pub fn require(&self, gov: &Governance, key: &str) -> ApiResult<()> {
        let Some(def) = gov.catalogue.get(key) else {
            return Err(ApiError::new(Code::FeatureDisabled, format!("{key} is not part of this build")));
        };
        let tier = &self.snapshot.license.tier;
        let (global, own) = (self.toggle(features::GLOBAL, key), self.toggle(self.tenant_id, key));
        let decided = features::decide(def, &gov.tiers, tier, global, own, self.now);
        match decided.state(def) {
            features::REMOVED => Err(ApiError::new(Code::Gone, decided.reason(key, def, tier))),
            state if !features::is_on(state) => {
                let reason = decided.reason(key, def, tier);
                Err(ApiError::new(Code::FeatureDisabled, format!("{key} is disabled: {reason}")))
            }
            _ => Ok(()),
        }
    }
}

pub struct Governance {
    pub tiers: Tiers,
    pub catalogue: Catalogue,
    pub limiter: RateLimiter,
    pub usage: usage::Usage,
    pub license_key: VerifyingKey,
    redis: Option<Redis>,
    cache: Mutex<HashMap<Uuid, (Instant, Arc<Snapshot>)>>,
    /// Concurrent misses of a tenant's snapshot read it once.
    reading: Flights<Uuid>,
}

impl Governance {
    pub fn new(
        tiers: Tiers,
        catalogue: Catalogue,
        limiter: RateLimiter,
        license_key: VerifyingKey,
        redis: Option<Redis>,
    ) -> Self {
        Self {
            tiers,
            catalogue,
            limiter,
            usage: usage::Usage::default(),
            license_key,
            redis,
            cache: Mutex::default(),
            reading: Flights::default(),
        }
    }

    pub async fn snapshot(
        &self,
        db: &sea_orm::DatabaseConnection,
        tenant_id: Uuid,
    ) -> ApiResult<Arc<Snapshot>> {
        let cached = || {
            self.cache
                .lock()
                .ok()
                .and_then(|c| c.get(&tenant_id).cloned())
                .filter(|(at, _)| at.elapsed() < TTL)
                .map(|(_, snapshot)| snapshot)
        };
        let read = || async {
            let snapshot = Arc::new(Snapshot {
                license: license::find_or_start(db, &self.tiers, tenant_id).await?,
                toggles: features::toggles_of(db, tenant_id).await?,
                calls_this_month: usage::calls_this_month(db, tenant_id).await?,
                cors_origins: crate::platform::cors::origins_of(db, tenant_id).await?,
            });
            if let Ok(mut cache) = self.cache.lock() {
                cache.insert(tenant_id, (Instant::now(), snapshot.clone()));
            }
            Ok(snapshot)
        };
        self.reading.get_or_read(&tenant_id, cached, read).await
    }

    /// Drop cached governance of one tenant (`None`: of all), here and, with
    /// Redis, on every instance.
    pub async fn invalidate(&self, tenant_id: Option<Uuid>) {
        self.forget(tenant_id);
        if let Some(redis) = &self.redis {
            let message = tenant_id.map_or_else(|| "*".to_owned(), |t| t.to_string());
            if let Err(err) = redis.publish(CHANNEL, message).await {
                tracing::warn!(error = %err, "could not announce a governance change; other instances see it within 10 s");
            }
        }
    }

    fn forget(&self, tenant_id: Option<Uuid>) {
        if let Ok(mut cache) = self.cache.lock() {
            match tenant_id {
                Some(tenant) => {
                    cache.remove(&tenant);
                }
                None => cache.clear(),
            }
        }
    }

    /// With Redis: drop cached governance when another instance says so.
    pub fn start_relay(self: &Arc<Self>) {
        let Some(redis) = &self.redis else { return };
        let this = Arc::downgrade(self);
        redis.relay(CHANNEL, move |payload| match this.upgrade() {
            Some(gov) => {
                gov.forget(Uuid::parse_str(&payload).ok());
                true
            }
            None => false,
        });
    }
}

/// Paths a closed license still answers: logging in and out, and the
/// license itself (to see and fix it); operators' endpoints too.
fn always_open(path: &str) -> bool {
    ["/api/v1/auth/", "/api/v1/license", "/api/v1/admin/"].iter().any(|p| path.starts_with(p))
}

fn header(name: &'static str) -> HeaderName {
    HeaderName::from_static(name)
}

fn rate_headers(headers: &mut HeaderMap, decision: &Decision) {
    let Some(limit) = decision.limit else { return };
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(header(name), v);
        }
    };
    put("x-ratelimit-limit", limit.to_string());
    put("x-ratelimit-remaining", decision.remaining.to_string());
    put("x-ratelimit-reset", decision.reset_secs.to_string());
    if let Some(retry) = decision.retry_after_secs {
        put(RETRY_AFTER.as_str(), retry.to_string());
    }
}

/// Of the user's and the tenant's decisions, the one a client must heed:
/// a refusal, else the one with fewer requests left.
fn binding(user: Decision, tenant: Decision) -> Decision {
    match (user.allowed, tenant.allowed) {
        (false, _) => user,
        (_, false) => tenant,
        _ if tenant.limit.is_some() && (user.limit.is_none() || tenant.remaining < user.remaining) => tenant,
        _ => user,
    }
}

pub async fn middleware<B, F>(
    req: ServiceRequest,
    next: impl FnOnce(ServiceRequest) -> F,
) -> Result<ServiceResponse<BoxBody>, Error>
where
    B: MessageBody + 'static,
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    let principal = req.extensions().get::<Rc<Principal>>().cloned();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let (Some(principal), Some(state)) = (principal, state) else {
        return next(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    match govern(&state, &req, &principal).await {
        Err((err, decision)) => {
            let mut res = req.error_response(err);
            if let Some(decision) = decision {
                rate_headers(res.headers_mut(), &decision);
            }
            Ok(res.map_into_boxed_body())
        }
        Ok((governed, decision, warning)) => {
            req.extensions_mut().insert(Rc::new(governed));
            let mut res = next(req).await?.map_into_boxed_body();
            rate_headers(res.headers_mut(), &decision);
            if let Some(warning) = warning.and_then(|w| HeaderValue::from_str(&w).ok()) {
                res.headers_mut().insert(header("x-license-warning"), warning);
            }
            Ok(res)
        }
    }
}

/// Governance for a caller outside an HTTP request's middleware (a GraphQL
/// subscription opened over a WebSocket): the tenant's toggles and license
/// as of now. A closed license refuses it; opening it counts as one call.
pub async fn for_stream(state: &AppState, principal: &Principal) -> ApiResult<Governed> {
    for_tenant(state, principal.tenant.id()).await
}

/// Governance of a tenant for a caller that is no principal of it (a
/// store's webhook to one of its channel connections), decided as for
/// [`for_stream`]; check features with [`Governed::require`].
pub async fn for_tenant(state: &AppState, tenant_id: Uuid) -> ApiResult<Governed> {
    let gov = &state.governance;
    let snapshot = gov.snapshot(&state.db, tenant_id).await?;
    let now = Utc::now();
    let license_state = license::state(&snapshot.license, &gov.tiers.lifecycle, now);
    if let Access::Closed(code) = license::access(license_state) {
        let detail = format!("the license is {}; renew it to continue", license_state.as_str());
        return Err(ApiError::new(code, detail));
    }
    gov.usage.call(tenant_id);
    Ok(Governed { tenant_id, snapshot, now })
}

type Refusal = (ApiError, Option<Decision>);

/// The caller's two buckets (their own, their tenant's) under `limits`.
fn buckets(principal: &Principal, limits: &license::Limits) -> [(String, Quota); 2] {
    [
        (format!("u:{}", principal.user_id), Quota { per_minute: limits.user_rate_per_minute }),
        (format!("t:{}", principal.tenant.id()), Quota { per_minute: limits.tenant_rate_per_minute }),
    ]
}

/// Count `weight` more requests against the caller's limits (a GraphQL
/// query that costs more than one request); the binding decision. Neither
/// bucket is spent when one refuses.
pub async fn spend(state: &AppState, principal: &Principal, weight: NonZeroU32) -> ApiResult<Decision> {
    let gov = &state.governance;
    let snapshot = gov.snapshot(&state.db, principal.tenant.id()).await?;
    let buckets = buckets(principal, &license::limits(&snapshot.license, &gov.tiers));
    let chain: Vec<(&str, Quota)> = buckets.iter().map(|(key, quota)| (key.as_str(), *quota)).collect();
    let decisions = gov.limiter.spend_chain(&chain, weight).await;
    let decision = binding(decisions[0], decisions[1]);
    if !decision.allowed {
        gov.usage.rate_limited(principal.tenant.id());
    }
    Ok(decision)
}

/// Rate limits, license state and quota for one request.
async fn govern(
    state: &AppState,
    req: &ServiceRequest,
    principal: &Principal,
) -> Result<(Governed, Decision, Option<String>), Refusal> {
    let gov = &state.governance;
    let tenant_id = principal.tenant.id();
    let snapshot = gov.snapshot(&state.db, tenant_id).await.map_err(|e| (e, None))?;
    let now = Utc::now();
    let limits = license::limits(&snapshot.license, &gov.tiers);

    // One round trip for both; a user over their own limit does not also
    // spend the tenant's budget.
    let buckets = buckets(principal, &limits);
    let chain = [(buckets[0].0.as_str(), buckets[0].1), (buckets[1].0.as_str(), buckets[1].1)];
    let decisions = gov.limiter.check_chain(&chain).await;
    let (user, tenant) = (decisions[0], decisions[1]);
    let decision = binding(user, tenant);
    if !decision.allowed {
        gov.usage.rate_limited(tenant_id);
        let whose = if user.allowed { "the tenant's" } else { "your" };
        let limit = decision.limit.unwrap_or_default();
        let err = ApiError::new(
            Code::RateLimited,
            format!("{whose} limit of {limit} requests per minute is reached"),
        );
        return Err((err, Some(decision)));
    }

    let path = req.path();
    let license_state = license::state(&snapshot.license, &gov.tiers.lifecycle, now);
    if !always_open(path) {
        let refuse = |code: Code, detail: String| Err((ApiError::new(code, detail), Some(decision)));
        match license::access(license_state) {
            Access::Closed(code) => {
                return refuse(
                    code,
                    format!("the license is {}; renew it to continue", license_state.as_str()),
                );
            }
            // GraphQL answers reads over POST: its mutations are refused in
            // the GraphQL handler instead.
            Access::ReadOnly(code) if is_mutating(req.method()) && path != "/graphql" => {
                return refuse(code, format!("the license is {}: reads only", license_state.as_str()));
            }
            _ => {}
        }
        if let Some(quota) = limits.api_calls_per_month {
            let used = snapshot.calls_this_month + gov.usage.pending_calls(tenant_id);
            if used >= quota {
                return refuse(
                    Code::LicenseLimit,
                    format!("the monthly quota of {quota} API calls is used up"),
                );
            }
        }
    }
    gov.usage.call(tenant_id);
    let warning = (license_state == license::State::ExpiringSoon).then(|| {
        let days = (snapshot.license.expires_at - now).num_days().max(0);
        format!("the license expires in {days} days, on {}", snapshot.license.expires_at.format("%Y-%m-%d"))
    });
    Ok((Governed { tenant_id, snapshot, now }, decision, warning))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(allowed: bool, limit: Option<u32>, remaining: u32) -> Decision {
        Decision { allowed, limit, remaining, reset_secs: 1, retry_after_secs: (!allowed).then_some(1) }
    }

    #[test]
    fn the_binding_decision_is_the_refusal_or_the_scarcer() {
        assert!(!binding(d(false, Some(60), 0), d(true, Some(1000), 900)).allowed);
        assert_eq!(binding(d(true, Some(60), 10), d(false, Some(1000), 0)).limit, Some(1000));
        assert_eq!(binding(d(true, Some(60), 10), d(true, Some(1000), 5)).remaining, 5);
        assert_eq!(binding(d(true, None, u32::MAX), d(true, Some(1000), 5)).limit, Some(1000));
        assert_eq!(binding(d(true, Some(60), 10), d(true, None, u32::MAX)).limit, Some(60));
    }

    #[test]
    fn only_auth_license_and_operator_paths_stay_open() {
        assert!(always_open("/api/v1/auth/login"));
        assert!(always_open("/api/v1/license"));
        assert!(always_open("/api/v1/admin/tenants/x/license"));
        assert!(!always_open("/api/v1/users"));
        assert!(!always_open("/api/v1/webhooks"));
    }
}
