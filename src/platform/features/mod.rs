//! Feature toggles (FR-L2-001, BR-004, BR-005): module and feature keys
//! from `config/features.toml`, switched globally by super-admins and per
//! tenant by tenant admins, always within what the license allows. A key is
//! on when the license's tier reaches the key's tier, and the tenant's
//! toggle (or else the global one, or else the default) says so within its
//! dates. A change applies from the next request on every instance.

pub mod routes;

use crate::platform::tenancy::SystemScope;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, sea_query::OnConflict,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, Code},
    platform::{events, license::Tiers, module::Modules},
};
use entity::feature_toggle as toggle;

pub const FEATURES_TOML: &str = include_str!("../../../config/features.toml");

/// The tenant id of global toggles.
pub const GLOBAL: Uuid = Uuid::nil();

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub description: String,
    /// On for a tenant that never toggled it (when the license allows).
    pub default: bool,
    /// The lowest tier that may use it.
    pub tier: String,
}

/// `config/features.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    pub features: BTreeMap<String, Definition>,
}

impl Catalogue {
    /// The platform's features (`config/features.toml`) and the keys of
    /// this build's modules, checked against the tiers.
    pub fn load(tiers: &Tiers, modules: &Modules) -> anyhow::Result<Self> {
        use figment::providers::{Format, Toml};
        let mut catalogue: Catalogue = figment::Figment::from(Toml::string(FEATURES_TOML)).extract()?;
        for key in catalogue.features.keys() {
            anyhow::ensure!(
                key.starts_with("feature."),
                "config/features.toml: `{key}` must start with feature."
            );
        }
        for feature in modules.features() {
            let previous = catalogue.features.insert(feature.key.to_owned(), feature.definition());
            anyhow::ensure!(previous.is_none(), "feature key `{}` is declared twice", feature.key);
        }
        for (key, def) in &catalogue.features {
            anyhow::ensure!(
                tiers.get(&def.tier).is_some(),
                "feature `{key}` needs unknown tier `{}`",
                def.tier
            );
        }
        Ok(catalogue)
    }

    pub fn get(&self, key: &str) -> Option<&Definition> {
        self.features.get(key)
    }
}

/// A toggle's state.
pub const ENABLED: &str = "enabled";
pub const DISABLED: &str = "disabled";
/// On, and listed as deprecated by `GET /api/v1/features` (global only).
pub const DEPRECATED: &str = "deprecated";
/// Gone: 410 (global only).
pub const REMOVED: &str = "removed";

/// A key's effective state for one tenant, and why.
#[derive(Clone, Debug, Serialize, ToSchema, PartialEq, Eq, async_graphql::SimpleObject)]
#[graphql(name = "Feature")]
pub struct Effective {
    #[schema(example = "feature.webhooks")]
    pub key: String,
    pub description: String,
    pub enabled: bool,
    /// `enabled`, `disabled`, `deprecated` or `removed`.
    #[schema(example = "enabled")]
    pub state: String,
    /// Where the state comes from: `default`, `global`, `tenant` or `license`.
    #[schema(example = "default")]
    pub source: String,
    #[schema(example = "on by default")]
    pub reason: String,
    /// The lowest tier that may use the key.
    #[schema(example = "basic")]
    pub tier: String,
    /// The tenant's own toggle, if it has one.
    pub tenant_state: Option<String>,
    pub effective_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

fn in_force(row: &toggle::Model, now: DateTime<Utc>) -> bool {
    row.effective_at.is_none_or(|t| t <= now) && row.expires_at.is_none_or(|t| now < t)
}

/// Whether a key in `state` is on.
pub fn is_on(state: &str) -> bool {
    state == ENABLED || state == DEPRECATED
}

/// What decides a key's state for a tenant, by the rule: removed globally
/// wins; then the license; then the tenant's toggle, the global toggle, the
/// default (toggles only within their dates).
#[derive(Clone, Copy)]
pub enum Decided<'a> {
    Removed(&'a toggle::Model),
    License,
    Tenant(&'a toggle::Model),
    Global(&'a toggle::Model),
    Default,
}

pub fn decide<'a>(
    def: &Definition,
    tiers: &Tiers,
    license_tier: &str,
    global: Option<&'a toggle::Model>,
    own: Option<&'a toggle::Model>,
    now: DateTime<Utc>,
) -> Decided<'a> {
    let global = global.filter(|g| in_force(g, now));
    if let Some(g) = global.filter(|g| g.state == REMOVED) {
        return Decided::Removed(g);
    }
    if tiers.rank(license_tier) < tiers.rank(&def.tier) {
        return Decided::License;
    }
    if let Some(t) = own.filter(|t| in_force(t, now)) {
        return Decided::Tenant(t);
    }
    global.map_or(Decided::Default, Decided::Global)
}

impl<'a> Decided<'a> {
    /// `enabled`, `disabled`, `deprecated` or `removed`.
    pub fn state<'s>(&self, def: &'s Definition) -> &'s str
    where
        'a: 's,
    {
        match self {
            Self::Removed(t) | Self::Tenant(t) | Self::Global(t) => &t.state,
            Self::License => DISABLED,
            Self::Default if def.default => ENABLED,
            Self::Default => DISABLED,
        }
    }

    fn source(&self) -> &'static str {
        match self {
            Self::Removed(_) | Self::Global(_) => "global",
            Self::License => "license",
            Self::Tenant(_) => "tenant",
            Self::Default => "default",
        }
    }

    /// Why, in words (built only when asked: a request that passes the
    /// check never needs it).
    pub fn reason(&self, key: &str, def: &Definition, license_tier: &str) -> String {
        match self {
            Self::Removed(_) => format!("`{key}` has been removed"),
            Self::License => format!("`{key}` needs the {} tier; the license is {license_tier}", def.tier),
            Self::Tenant(t) => format!("the tenant set `{key}` {}", t.state),
            Self::Global(g) => format!("`{key}` is {} for every tenant", g.state),
            Self::Default if def.default => "on by default".to_owned(),
            Self::Default => "off by default".to_owned(),
        }
    }
}

/// A key's effective state for a tenant, and why ([`decide`]).
pub fn evaluate(
    key: &str,
    def: &Definition,
    tiers: &Tiers,
    license_tier: &str,
    global: Option<&toggle::Model>,
    own: Option<&toggle::Model>,
    now: DateTime<Utc>,
) -> Effective {
    let decided = decide(def, tiers, license_tier, global, own, now);
    let state = decided.state(def);
    Effective {
        key: key.to_owned(),
        description: def.description.clone(),
        enabled: is_on(state),
        state: state.to_owned(),
        source: decided.source().to_owned(),
        reason: decided.reason(key, def, license_tier),
        tier: def.tier.clone(),
        tenant_state: own.map(|t| t.state.clone()),
        effective_at: own.and_then(|t| t.effective_at),
        expires_at: own.and_then(|t| t.expires_at),
    }
}

/// Every key's effective state for a tenant, from its toggles.
pub fn evaluate_all(
    catalogue: &Catalogue,
    tiers: &Tiers,
    license_tier: &str,
    toggles: &[toggle::Model],
    tenant_id: Uuid,
    now: DateTime<Utc>,
) -> Vec<Effective> {
    catalogue
        .features
        .iter()
        .map(|(key, def)| {
            let find = |tenant: Uuid| toggles.iter().find(|t| t.tenant_id == tenant && &t.key == key);
            evaluate(key, def, tiers, license_tier, find(GLOBAL), find(tenant_id), now)
        })
        .collect()
}

/// The toggles that matter to a tenant: its own and the global ones.
pub async fn toggles_of(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
) -> Result<Vec<toggle::Model>, sea_orm::DbErr> {
    SystemScope
        .find::<toggle::Entity>()
        .filter(toggle::Column::TenantId.is_in([tenant_id, GLOBAL]))
        .all(db)
        .await
}

/// A validated toggle change.
pub struct Change {
    pub state: String,
    pub effective_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Set a toggle (a tenant's, or the global one with [`GLOBAL`]) and
/// announce it, in the caller's transaction.
pub async fn set(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    key: &str,
    change: Change,
    actor: Uuid,
) -> ApiResult<()> {
    let now = Utc::now();
    let row = toggle::ActiveModel {
        tenant_id: Set(tenant_id),
        key: Set(key.to_owned()),
        state: Set(change.state.clone()),
        effective_at: Set(change.effective_at),
        expires_at: Set(change.expires_at),
        updated_by: Set(Some(actor)),
        updated_at: Set(now),
    };
    toggle::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([toggle::Column::TenantId, toggle::Column::Key])
                .update_columns([
                    toggle::Column::State,
                    toggle::Column::EffectiveAt,
                    toggle::Column::ExpiresAt,
                    toggle::Column::UpdatedBy,
                    toggle::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    announce(db, tenant_id, key, &change.state).await
}

/// Remove a tenant's own toggle: the key falls back to global / default.
pub async fn clear(db: &impl ConnectionTrait, tenant_id: Uuid, key: &str) -> ApiResult<()> {
    let res = SystemScope
        .delete_many::<toggle::Entity>()
        .filter(toggle::Column::TenantId.eq(tenant_id))
        .filter(toggle::Column::Key.eq(key))
        .exec(db)
        .await?;
    if res.rows_affected == 0 {
        return Err(ApiError::new(Code::NotFound, format!("no toggle of `{key}` to remove")));
    }
    announce(db, tenant_id, key, "cleared").await
}

/// `feature.toggled` for the tenant, or for every tenant when global.
async fn announce(db: &impl ConnectionTrait, tenant_id: Uuid, key: &str, state: &str) -> ApiResult<()> {
    if tenant_id == GLOBAL {
        let tenants: Vec<Uuid> =
            SystemScope.find::<entity::tenant::Entity>().all(db).await?.into_iter().map(|t| t.id).collect();
        for tenant in tenants {
            let data = json!({ "key": key, "state": state, "scope": "global" });
            events::publish(db, tenant, &events::FEATURE_TOGGLED, data).await?;
        }
    } else {
        let data = json!({ "key": key, "state": state, "scope": "tenant" });
        events::publish(db, tenant_id, &events::FEATURE_TOGGLED, data).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tenant: Uuid, state: &str) -> toggle::Model {
        toggle::Model {
            tenant_id: tenant,
            key: "feature.webhooks".into(),
            state: state.into(),
            effective_at: None,
            expires_at: None,
            updated_by: None,
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn the_catalogue_names_every_platform_feature() {
        let tiers = Tiers::load().unwrap();
        let catalogue = Catalogue::load(&tiers, &Modules::default()).unwrap();
        for key in
            ["feature.webhooks", "feature.bulk-operations", "feature.graphql", "feature.advanced-analytics"]
        {
            assert!(catalogue.get(key).is_some(), "{key}");
        }
        assert!(catalogue.features.keys().all(|k| !k.starts_with("module.")), "modules bring their own keys");
    }

    #[test]
    fn license_then_tenant_then_global_then_default() {
        let tiers = Tiers::load().unwrap();
        let catalogue = Catalogue::load(&tiers, &Modules::default()).unwrap();
        let def = catalogue.get("feature.webhooks").unwrap();
        let now = Utc::now();
        let tenant = Uuid::now_v7();
        let eval = |tier: &str, global: Option<&toggle::Model>, own: Option<&toggle::Model>| {
            evaluate("feature.webhooks", def, &tiers, tier, global, own, now)
        };
        assert!(eval("basic", None, None).enabled);
        let off = row(GLOBAL, DISABLED);
        assert_eq!(eval("basic", Some(&off), None).source, "global");
        let on = row(tenant, ENABLED);
        assert!(eval("basic", Some(&off), Some(&on)).enabled, "the tenant's toggle wins");
        let removed = row(GLOBAL, REMOVED);
        assert_eq!(eval("basic", Some(&removed), Some(&on)).state, REMOVED);
        let deprecated = row(GLOBAL, DEPRECATED);
        assert!(eval("basic", Some(&deprecated), None).enabled);

        // The license caps everything: advanced analytics needs enterprise.
        let analytics = catalogue.get("feature.advanced-analytics").unwrap();
        let mut own = row(tenant, ENABLED);
        own.key = "feature.advanced-analytics".into();
        let e =
            evaluate("feature.advanced-analytics", analytics, &tiers, "professional", None, Some(&own), now);
        assert!(!e.enabled);
        assert_eq!(e.source, "license");
        assert!(e.reason.contains("enterprise"), "{}", e.reason);
    }

    #[test]
    fn toggles_apply_only_within_their_dates() {
        let tiers = Tiers::load().unwrap();
        let catalogue = Catalogue::load(&tiers, &Modules::default()).unwrap();
        let def = catalogue.get("feature.webhooks").unwrap();
        let now = Utc::now();
        let mut later = row(Uuid::now_v7(), DISABLED);
        later.effective_at = Some(now + chrono::Duration::hours(1));
        assert!(evaluate("feature.webhooks", def, &tiers, "basic", None, Some(&later), now).enabled);
        let mut lapsed = row(Uuid::now_v7(), DISABLED);
        lapsed.expires_at = Some(now - chrono::Duration::hours(1));
        assert!(evaluate("feature.webhooks", def, &tiers, "basic", None, Some(&lapsed), now).enabled);
        let mut current = row(Uuid::now_v7(), DISABLED);
        current.effective_at = Some(now - chrono::Duration::hours(1));
        current.expires_at = Some(now + chrono::Duration::hours(1));
        assert!(!evaluate("feature.webhooks", def, &tiers, "basic", None, Some(&current), now).enabled);
    }
}
