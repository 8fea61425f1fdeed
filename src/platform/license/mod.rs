//! Licenses (FR-L2-002, BR-006): each tenant holds one license of a tier
//! defined in `config/licenses.toml`. Its dates drive its state; the state
//! decides what the tenant may do. The request path evaluates the state on
//! every request, so a scheduler that runs late never grants access; the
//! scheduler only announces transitions as events.

pub mod key;
pub mod routes;

use crate::platform::tenancy::SystemScope;
use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, Code},
    platform::events::{self, EventType},
};
use entity::license;

pub const TIERS_TOML: &str = include_str!("../../../config/licenses.toml");

/// The limits of one tier; `None` is unlimited.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub name: String,
    /// Higher tiers include what lower ones allow.
    pub rank: u8,
    pub max_users: Option<u64>,
    pub api_calls_per_month: Option<u64>,
    pub storage_mb: Option<u64>,
    pub user_rate_per_minute: Option<u32>,
    pub tenant_rate_per_minute: Option<u32>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trial {
    pub tier: String,
    pub days: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    pub expiring_soon_days: u32,
    pub grace_days: u32,
}

/// `config/licenses.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tiers {
    pub trial: Trial,
    pub lifecycle: Lifecycle,
    pub tiers: BTreeMap<String, Tier>,
}

impl Tiers {
    /// The embedded definitions, checked: the trial tier must exist.
    pub fn load() -> anyhow::Result<Self> {
        let tiers: Tiers = toml_parse(TIERS_TOML)?;
        anyhow::ensure!(
            tiers.tiers.contains_key(&tiers.trial.tier),
            "config/licenses.toml: trial tier `{}` is not defined",
            tiers.trial.tier
        );
        Ok(tiers)
    }

    pub fn get(&self, tier: &str) -> Option<&Tier> {
        self.tiers.get(tier)
    }

    pub fn rank(&self, tier: &str) -> u8 {
        self.get(tier).map_or(0, |t| t.rank)
    }
}

fn toml_parse<T: serde::de::DeserializeOwned>(text: &str) -> anyhow::Result<T> {
    use figment::providers::{Format, Toml};
    Ok(figment::Figment::from(Toml::string(text)).extract()?)
}

/// Where a license is in its life, from its status and dates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, async_graphql::Enum)]
#[serde(rename_all = "snake_case")]
#[graphql(name = "LicenseState")]
pub enum State {
    Trial,
    Active,
    /// Under `expiring_soon_days` left: responses carry `X-License-Warning`.
    ExpiringSoon,
    /// Expired, within the grace period: reads only (`license_read_only`).
    Grace,
    /// Past the grace period: only authentication and license endpoints.
    Expired,
    /// Read-only until reinstated (`license_suspended`).
    Suspended,
    /// Closed: only authentication and license endpoints.
    Terminated,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Trial => "trial",
            State::Active => "active",
            State::ExpiringSoon => "expiring_soon",
            State::Grace => "grace",
            State::Expired => "expired",
            State::Suspended => "suspended",
            State::Terminated => "terminated",
        }
    }
}

/// What a license state lets a tenant do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Full,
    /// Reads only; writes answer this code.
    ReadOnly(Code),
    /// Nothing but authentication and license endpoints; the rest answers this code.
    Closed(Code),
}

/// The administrative status set by a super-admin (the dates do the rest).
pub const ACTIVE: &str = "active";
pub const SUSPENDED: &str = "suspended";
pub const TERMINATED: &str = "terminated";

/// The state of `license` at `now`: the clock is a parameter, so the rules
/// are tested without waiting.
pub fn state(license: &license::Model, lifecycle: &Lifecycle, now: DateTime<Utc>) -> State {
    match license.status.as_str() {
        TERMINATED => return State::Terminated,
        SUSPENDED => return State::Suspended,
        _ => {}
    }
    let expires = license.expires_at;
    if now >= expires + Duration::days(i64::from(lifecycle.grace_days)) {
        State::Expired
    } else if now >= expires {
        State::Grace
    } else if license.trial {
        // A trial is shorter than the warning period: it stays a trial.
        State::Trial
    } else if now >= expires - Duration::days(i64::from(lifecycle.expiring_soon_days)) {
        State::ExpiringSoon
    } else {
        State::Active
    }
}

pub fn access(state: State) -> Access {
    match state {
        State::Trial | State::Active | State::ExpiringSoon => Access::Full,
        State::Grace => Access::ReadOnly(Code::LicenseReadOnly),
        State::Suspended => Access::ReadOnly(Code::LicenseSuspended),
        State::Expired => Access::Closed(Code::LicenseExpired),
        State::Terminated => Access::Closed(Code::LicenseTerminated),
    }
}

/// The limits in force: the tier's, with the license's overrides.
#[derive(Clone, Debug, Serialize, ToSchema, PartialEq, Eq, async_graphql::SimpleObject)]
#[graphql(name = "LicenseLimits")]
pub struct Limits {
    pub max_users: Option<u64>,
    pub api_calls_per_month: Option<u64>,
    pub storage_mb: Option<u64>,
    pub user_rate_per_minute: Option<u32>,
    pub tenant_rate_per_minute: Option<u32>,
}

pub fn limits(license: &license::Model, tiers: &Tiers) -> Limits {
    let tier = tiers.get(&license.tier);
    let pick = |own: Option<i64>, tier: Option<u64>| own.map(|v| u64::try_from(v).unwrap_or(0)).or(tier);
    Limits {
        max_users: pick(license.max_users, tier.and_then(|t| t.max_users)),
        api_calls_per_month: pick(license.api_calls_per_month, tier.and_then(|t| t.api_calls_per_month)),
        storage_mb: tier.and_then(|t| t.storage_mb),
        user_rate_per_minute: license
            .user_rate_per_minute
            .map(|v| u32::try_from(v).unwrap_or(0))
            .or(tier.and_then(|t| t.user_rate_per_minute)),
        tenant_rate_per_minute: license
            .tenant_rate_per_minute
            .map(|v| u32::try_from(v).unwrap_or(0))
            .or(tier.and_then(|t| t.tenant_rate_per_minute)),
    }
}

/// The trial every new tenant starts with.
pub async fn start_trial(
    db: &impl ConnectionTrait,
    tiers: &Tiers,
    tenant_id: Uuid,
) -> ApiResult<license::Model> {
    let now = Utc::now();
    let model = license::ActiveModel {
        tenant_id: Set(tenant_id),
        tier: Set(tiers.trial.tier.clone()),
        trial: Set(true),
        status: Set(ACTIVE.to_owned()),
        starts_at: Set(now),
        expires_at: Set(now + Duration::days(i64::from(tiers.trial.days))),
        max_users: Set(None),
        api_calls_per_month: Set(None),
        user_rate_per_minute: Set(None),
        tenant_rate_per_minute: Set(None),
        key_id: Set(None),
        announced_state: Set(State::Trial.as_str().to_owned()),
        updated_at: Set(now),
    };
    Ok(license::Entity::insert(model).exec_with_returning(db).await?)
}

/// The tenant's license; a tenant created before licenses existed gets its
/// trial now.
pub async fn find_or_start(
    db: &impl ConnectionTrait,
    tiers: &Tiers,
    tenant_id: Uuid,
) -> ApiResult<license::Model> {
    match SystemScope.get::<license::Entity>(db, tenant_id).await? {
        Some(license) => Ok(license),
        None => start_trial(db, tiers, tenant_id).await,
    }
}

/// What a super-admin (or a signed key) sets on a license.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema, async_graphql::InputObject)]
#[serde(deny_unknown_fields)]
#[graphql(name = "LicenseAssignmentInput")]
pub struct Assignment {
    /// `basic`, `professional` or `enterprise`.
    #[schema(example = "professional")]
    pub tier: Option<String>,
    /// `active`, `suspended` or `terminated`.
    #[schema(example = "active")]
    pub status: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Overrides of the tier's limits; `0` refuses everything. Omit to keep.
    pub max_users: Option<u64>,
    pub api_calls_per_month: Option<u64>,
    pub user_rate_per_minute: Option<u32>,
    pub tenant_rate_per_minute: Option<u32>,
}

impl Assignment {
    pub fn check(&self, tiers: &Tiers) -> Result<(), Vec<crate::error::FieldError>> {
        let mut checks = crate::platform::validate::Checks::default();
        if let Some(tier) = &self.tier {
            let known = tiers.get(tier).is_some();
            let names: Vec<&str> = tiers.tiers.keys().map(String::as_str).collect();
            checks.check(
                "tier",
                if known { Ok(()) } else { Err(format!("must be one of {}", names.join(", "))) },
            );
        }
        if let Some(status) = &self.status {
            let known = [ACTIVE, SUSPENDED, TERMINATED].contains(&status.as_str());
            checks.check(
                "status",
                if known { Ok(()) } else { Err("must be active, suspended or terminated".into()) },
            );
        }
        if let (Some(starts), Some(expires)) = (self.starts_at, self.expires_at) {
            checks.check(
                "expires_at",
                if expires > starts { Ok(()) } else { Err("must be after starts_at".into()) },
            );
        }
        checks.finish()
    }
}

/// Apply an assignment (a paid tier ends the trial) and announce the change.
pub async fn assign(
    db: &impl ConnectionTrait,
    tiers: &Tiers,
    tenant_id: Uuid,
    assignment: Assignment,
    key_id: Option<String>,
) -> ApiResult<license::Model> {
    let current = find_or_start(db, tiers, tenant_id).await?;
    let now = Utc::now();
    let to_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut update = SystemScope
        .update_many::<license::Entity>()
        .filter(license::Column::TenantId.eq(tenant_id))
        .col_expr(license::Column::UpdatedAt, Expr::value(now));
    if let Some(tier) = &assignment.tier {
        update = update
            .col_expr(license::Column::Tier, Expr::value(tier.clone()))
            .col_expr(license::Column::Trial, Expr::value(false));
    }
    if let Some(status) = &assignment.status {
        update = update.col_expr(license::Column::Status, Expr::value(status.clone()));
    }
    if let Some(starts) = assignment.starts_at {
        update = update.col_expr(license::Column::StartsAt, Expr::value(starts));
    }
    if let Some(expires) = assignment.expires_at {
        update = update.col_expr(license::Column::ExpiresAt, Expr::value(expires));
    }
    if let Some(v) = assignment.max_users {
        update = update.col_expr(license::Column::MaxUsers, Expr::value(to_i64(v)));
    }
    if let Some(v) = assignment.api_calls_per_month {
        update = update.col_expr(license::Column::ApiCallsPerMonth, Expr::value(to_i64(v)));
    }
    if let Some(v) = assignment.user_rate_per_minute {
        update = update.col_expr(license::Column::UserRatePerMinute, Expr::value(i64::from(v)));
    }
    if let Some(v) = assignment.tenant_rate_per_minute {
        update = update.col_expr(license::Column::TenantRatePerMinute, Expr::value(i64::from(v)));
    }
    if let Some(key_id) = key_id {
        update = update.col_expr(license::Column::KeyId, Expr::value(key_id));
    }
    update.exec(db).await?;
    let updated = find_or_start(db, tiers, tenant_id).await?;
    let data = json!({
        "tier": updated.tier, "status": updated.status, "expires_at": updated.expires_at,
        "previous_tier": current.tier,
    });
    events::publish(db, tenant_id, &events::LICENSE_UPDATED, data).await?;
    Ok(updated)
}

/// The event announcing that a license entered `state`, if it is one.
fn transition_event(state: State) -> Option<&'static EventType> {
    match state {
        State::ExpiringSoon => Some(&events::LICENSE_EXPIRING),
        State::Grace => Some(&events::LICENSE_GRACE_STARTED),
        State::Expired => Some(&events::LICENSE_EXPIRED),
        _ => None,
    }
}

/// The scheduler's pass: announce every license whose state changed since
/// it was last announced. The conditional update makes one instance the
/// announcer when several run it at once.
pub async fn announce_transitions(
    db: &sea_orm::DatabaseConnection,
    tiers: &Tiers,
    now: DateTime<Utc>,
) -> ApiResult<u64> {
    let licenses = SystemScope.find::<license::Entity>().all(db).await?;
    let mut announced = 0;
    for license in licenses {
        let state = state(&license, &tiers.lifecycle, now);
        if state.as_str() == license.announced_state {
            continue;
        }
        let txn = crate::platform::db::begin(db).await?;
        let claimed = SystemScope
            .update_many::<license::Entity>()
            .filter(license::Column::TenantId.eq(license.tenant_id))
            .filter(license::Column::AnnouncedState.eq(license.announced_state.clone()))
            .col_expr(license::Column::AnnouncedState, Expr::value(state.as_str()))
            .exec(&txn)
            .await?;
        if claimed.rows_affected == 1
            && let Some(event) = transition_event(state)
        {
            let data = json!({ "tier": license.tier, "state": state, "expires_at": license.expires_at });
            events::publish(&txn, license.tenant_id, event, data).await?;
            announced += 1;
        }
        sea_orm::TransactionSession::commit(txn).await?;
    }
    Ok(announced)
}

/// A license as its tenant sees it.
#[derive(Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "License")]
pub struct LicenseView {
    pub tenant_id: Uuid,
    #[schema(example = "professional")]
    pub tier: String,
    pub trial: bool,
    pub state: State,
    /// `active`, `suspended` or `terminated`.
    pub status: String,
    pub starts_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// End of the read-only grace period after expiry.
    pub grace_ends_at: DateTime<Utc>,
    #[schema(example = 12)]
    pub days_left: i64,
    pub limits: Limits,
    /// The signed key last applied, if any.
    pub key_id: Option<String>,
}

pub fn view(license: &license::Model, tiers: &Tiers, now: DateTime<Utc>) -> LicenseView {
    LicenseView {
        tenant_id: license.tenant_id,
        tier: license.tier.clone(),
        trial: license.trial,
        state: state(license, &tiers.lifecycle, now),
        status: license.status.clone(),
        starts_at: license.starts_at,
        expires_at: license.expires_at,
        grace_ends_at: license.expires_at + Duration::days(i64::from(tiers.lifecycle.grace_days)),
        days_left: (license.expires_at - now).num_days().max(0),
        limits: limits(license, tiers),
        key_id: license.key_id.clone(),
    }
}

/// Verify a signed key for `tenant` and apply it (API and CLI).
pub async fn apply(
    state: &crate::platform::state::AppState,
    tenant: Uuid,
    text: &str,
) -> ApiResult<license::Model> {
    let grant = routes::verify_for(state, tenant, text)?;
    let txn = crate::platform::db::begin(&state.db).await?;
    let current = find_or_start(&txn, &state.governance.tiers, tenant).await?;
    if current.status != ACTIVE {
        // A key renews or upgrades; it does not lift the vendor's suspension.
        let code =
            if current.status == TERMINATED { Code::LicenseTerminated } else { Code::LicenseSuspended };
        return Err(ApiError::new(
            code,
            format!("the license is {}; only the vendor can reinstate it", current.status),
        ));
    }
    if current.key_id.as_deref() == Some(grant.key_id.as_str()) {
        return Err(ApiError::new(Code::Conflict, "this key is already applied"));
    }
    let license =
        assign(&txn, &state.governance.tiers, tenant, grant.assignment(), Some(grant.key_id)).await?;
    sea_orm::TransactionSession::commit(txn).await?;
    state.governance.invalidate(Some(tenant)).await;
    Ok(license)
}

pub fn unknown_tenant() -> ApiError {
    ApiError::not_found("tenant")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn license(status: &str, trial: bool, expires_at: DateTime<Utc>) -> license::Model {
        license::Model {
            tenant_id: Uuid::nil(),
            tier: "basic".into(),
            trial,
            status: status.into(),
            starts_at: expires_at - Duration::days(365),
            expires_at,
            max_users: None,
            api_calls_per_month: None,
            user_rate_per_minute: None,
            tenant_rate_per_minute: None,
            key_id: None,
            announced_state: "active".into(),
            updated_at: expires_at,
        }
    }

    /// BR-006 along a timeline, with the clock as a parameter.
    #[test]
    fn dates_drive_the_state_and_the_state_drives_access() {
        let tiers = Tiers::load().unwrap();
        let expires = Utc::now();
        let l = license(ACTIVE, false, expires);
        let at =
            |days: i64| state(&l, &tiers.lifecycle, expires + Duration::days(days) - Duration::seconds(1));
        assert_eq!(at(-40), State::Active);
        assert_eq!(at(-29), State::ExpiringSoon);
        assert_eq!(at(0), State::ExpiringSoon); // one second before expiry
        assert_eq!(at(1), State::Grace);
        assert_eq!(at(14), State::Grace); // the last second of grace
        assert_eq!(at(15), State::Expired);
        assert_eq!(access(State::ExpiringSoon), Access::Full);
        assert_eq!(access(State::Grace), Access::ReadOnly(Code::LicenseReadOnly));
        assert_eq!(access(State::Expired), Access::Closed(Code::LicenseExpired));
        let trial = license(ACTIVE, true, expires + Duration::days(10));
        assert_eq!(state(&trial, &tiers.lifecycle, expires), State::Trial);
        assert_eq!(state(&trial, &tiers.lifecycle, expires + Duration::days(11)), State::Grace);
        let suspended = license(SUSPENDED, false, expires + Duration::days(60));
        assert_eq!(
            access(state(&suspended, &tiers.lifecycle, expires)),
            Access::ReadOnly(Code::LicenseSuspended)
        );
        let terminated = license(TERMINATED, false, expires + Duration::days(60));
        assert_eq!(
            access(state(&terminated, &tiers.lifecycle, expires)),
            Access::Closed(Code::LicenseTerminated)
        );
    }

    #[test]
    fn the_tiers_match_the_rate_limits_of_the_contract() {
        let tiers = Tiers::load().unwrap();
        let basic = tiers.get("basic").unwrap();
        assert_eq!((basic.user_rate_per_minute, basic.tenant_rate_per_minute), (Some(60), Some(1000)));
        let pro = tiers.get("professional").unwrap();
        assert_eq!((pro.user_rate_per_minute, pro.tenant_rate_per_minute), (Some(120), Some(5000)));
        let enterprise = tiers.get("enterprise").unwrap();
        assert_eq!((enterprise.user_rate_per_minute, enterprise.max_users), (None, None));
        assert!(
            tiers.rank("enterprise") > tiers.rank("professional")
                && tiers.rank("professional") > tiers.rank("basic")
        );
        assert_eq!(tiers.trial.tier, "professional");
    }

    #[test]
    fn overrides_win_over_the_tier() {
        let tiers = Tiers::load().unwrap();
        let mut l = license(ACTIVE, false, Utc::now());
        assert_eq!(limits(&l, &tiers).max_users, Some(10));
        l.max_users = Some(3);
        l.user_rate_per_minute = Some(5);
        let limits = limits(&l, &tiers);
        assert_eq!((limits.max_users, limits.user_rate_per_minute), (Some(3), Some(5)));
    }
}
