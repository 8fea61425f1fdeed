//! Role-based access control with casbin. The tenant is the casbin domain;
//! the permission matrix lives in `config/rbac_policy.csv`. Role assignments
//! live in our `user_roles` table and are read with the caller's token on
//! every request, so a change applies at once on every instance.

use std::{
    future::{Ready, ready},
    marker::PhantomData,
};

use actix_web::{FromRequest, HttpRequest, dev::Payload};
use casbin::{CoreApi, DefaultModel, Enforcer, StringAdapter};
use uuid::Uuid;

use crate::{
    error::{ApiError, Code},
    platform::{auth::Principal, governance::Governed, module::Grant},
};

pub const MODEL: &str = include_str!("../../config/rbac_model.conf");
pub const POLICY: &str = include_str!("../../config/rbac_policy.csv");

/// The roles every tenant has. The first is given to a tenant's owner.
pub const ROLES: &[&str] = &["admin", "manager", "user", "viewer"];

type Decisions =
    std::collections::HashMap<(&'static str, &'static str), std::collections::HashMap<String, bool>>;

pub struct Rbac {
    enforcer: Enforcer,
    /// Decisions by (role, object, action). Every policy line holds for all
    /// tenants (domain `*`, see [`Rbac::new`]), so a decision does not
    /// depend on the tenant and is computed once per triple: casbin's
    /// matcher (regexes and a script engine) stays off the request path.
    /// Bounded by roles × permissions, since roles come from the policy.
    /// Keyed by permission, then role, so a hit allocates nothing.
    decisions: std::sync::RwLock<Decisions>,
}

/// The whole policy: the platform's matrix and each module's grants, as
/// `(role, object, action)`.
pub fn policy<'a>(grants: impl IntoIterator<Item = &'a Grant>) -> Vec<(String, String, String)> {
    let platform =
        POLICY.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).filter_map(|l| {
            let p: Vec<&str> = l.split(',').map(str::trim).collect();
            (p.len() == 5).then(|| (p[1].to_owned(), p[3].to_owned(), p[4].to_owned()))
        });
    let modules = grants.into_iter().flat_map(|g| {
        g.roles.iter().map(|role| ((*role).to_owned(), g.object.to_owned(), g.action.to_owned()))
    });
    platform.chain(modules).collect()
}

impl Rbac {
    /// The platform's matrix plus the modules' `grants`.
    pub async fn new<'a>(grants: impl IntoIterator<Item = &'a Grant>) -> anyhow::Result<Self> {
        let model = DefaultModel::from_str(MODEL).await?;
        let policy: Vec<String> = policy(grants)
            .into_iter()
            .map(|(role, object, action)| format!("p, {role}, *, {object}, {action}"))
            .collect();
        let enforcer = Enforcer::new(model, StringAdapter::new(policy.join("\n"))).await?;
        Ok(Self { enforcer, decisions: Default::default() })
    }

    /// Whether any of `roles` may perform `action` on `object` in `tenant`.
    pub fn allows(&self, roles: &[String], tenant: Uuid, object: &'static str, action: &'static str) -> bool {
        roles.iter().any(|role| {
            let known = self.decisions.read().ok().and_then(|d| d.get(&(object, action))?.get(role).copied());
            if let Some(allowed) = known {
                return allowed;
            }
            let tenant = tenant.to_string();
            let allowed =
                self.enforcer.enforce((role.as_str(), tenant.as_str(), object, action)).unwrap_or(false);
            if let Ok(mut decisions) = self.decisions.write() {
                decisions.entry((object, action)).or_default().insert(role.clone(), allowed);
            }
            allowed
        })
    }
}

/// A permission a route needs: declared as a type so the handler's
/// signature says what it requires.
pub trait Permission {
    const OBJECT: &'static str;
    const ACTION: &'static str;
    /// The module or feature key that must be on for the tenant (BR-005).
    const FEATURE: Option<&'static str>;
}

macro_rules! permissions {
    ($($name:ident => $object:literal, $action:literal $(, $feature:literal)?;)*) => {
        $(
            #[doc = concat!("`", $object, ":", $action, "`")]
            pub struct $name;
            impl Permission for $name {
                const OBJECT: &'static str = $object;
                const ACTION: &'static str = $action;
                const FEATURE: Option<&'static str> = permissions!(@feature $($feature)?);
            }
        )*
        /// Every permission of the platform, as `(object, action)`.
        pub const PERMISSIONS: &[(&str, &str)] = &[$(($object, $action)),*];
    };
    (@feature $feature:literal) => { Some($feature) };
    (@feature) => { None };
}

/// A module's permissions: a type per permission (for `Authorized<P>` and
/// GraphQL's `authorized::<P>`), gated by the module's feature key, and the
/// module's `GRANTS` (the default roles that hold each).
macro_rules! grants {
    ($($name:ident => $object:literal, $action:literal, $feature:literal, [$($role:literal),*];)*) => {
        $(
            #[doc = concat!("`", $object, ":", $action, "`")]
            pub struct $name;
            impl $crate::platform::rbac::Permission for $name {
                const OBJECT: &'static str = $object;
                const ACTION: &'static str = $action;
                const FEATURE: Option<&'static str> = Some($feature);
            }
        )*
        /// The module's permissions and the default roles that hold them.
        pub const GRANTS: &[$crate::platform::module::Grant] = &[$(
            $crate::platform::module::Grant { object: $object, action: $action, roles: &[$($role),*] }
        ),*];
    };
}
pub(crate) use grants;

permissions! {
    TenantRead => "tenant", "read";
    UsersRead => "users", "read";
    UsersWrite => "users", "write";
    RolesWrite => "roles", "write";
    AuditRead => "audit", "read";
    WebhooksRead => "webhooks", "read", "feature.webhooks";
    WebhooksWrite => "webhooks", "write", "feature.webhooks";
    JobsManage => "jobs", "manage";
    EventsRead => "events", "read", "feature.webhooks";
    LicenseRead => "license", "read";
    LicenseWrite => "license", "write";
    LicensesManage => "licenses", "manage";
    FeaturesRead => "features", "read";
    FeaturesWrite => "features", "write";
    FeaturesManage => "features", "manage";
    CorsWrite => "cors", "write";
    BulkWrite => "bulk", "write", "feature.bulk-operations";
}

/// An authenticated caller holding permission `P` in the acting tenant,
/// whose tenant has `P`'s module or feature on. Super-admins hold every
/// permission in every tenant (but a feature that is off is off for them
/// too).
pub struct Authorized<P> {
    pub principal: Principal,
    _permission: PhantomData<P>,
}

impl<P> std::ops::Deref for Authorized<P> {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.principal
    }
}

impl<P: Permission + 'static> FromRequest for Authorized<P> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let principal = Principal::from_request(req, payload).into_inner();
        let state = req.app_data::<actix_web::web::Data<crate::platform::state::AppState>>();
        ready(principal.and_then(|principal| {
            let state = state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("AppState missing")))?;
            check::<P>(&state.rbac, &principal)?;
            if let Some(key) = P::FEATURE {
                Governed::of(req)?.require(&state.governance, key)?;
            }
            Ok(Self { principal, _permission: PhantomData })
        }))
    }
}

/// The permission check shared by REST extractors and GraphQL resolvers.
pub fn check<P: Permission>(rbac: &Rbac, principal: &Principal) -> Result<(), ApiError> {
    if principal.is_super_admin || rbac.allows(&principal.roles, principal.tenant.id(), P::OBJECT, P::ACTION)
    {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::Forbidden,
            format!("this action needs the permission {}:{}", P::OBJECT, P::ACTION),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_matrix_loads_and_denies_by_default() {
        let rbac = Rbac::new([]).await.unwrap();
        let admin = vec!["admin".to_owned()];
        let viewer = vec!["viewer".to_owned()];
        assert!(rbac.allows(&admin, Uuid::nil(), "users", "write"));
        assert!(!rbac.allows(&viewer, Uuid::nil(), "users", "write"));
        assert!(rbac.allows(&viewer, Uuid::nil(), "tenant", "read"));
        assert!(!rbac.allows(&[], Uuid::nil(), "tenant", "read"));
        assert!(!rbac.allows(&["ghost".to_owned()], Uuid::nil(), "tenant", "read"));
    }

    #[tokio::test]
    async fn a_module_grant_gives_its_roles_the_permission_and_no_one_else() {
        let grant = Grant { object: "things", action: "write", roles: &["manager"] };
        let rbac = Rbac::new([&grant]).await.unwrap();
        assert!(rbac.allows(&["manager".to_owned()], Uuid::nil(), "things", "write"));
        assert!(!rbac.allows(&["admin".to_owned()], Uuid::nil(), "things", "write"));
        assert!(!rbac.allows(&["manager".to_owned()], Uuid::nil(), "things", "read"));
    }

    #[test]
    fn every_policy_line_names_a_known_role_and_permission() {
        for line in POLICY.lines().filter(|l| l.starts_with("p,")) {
            let parts: Vec<&str> = line.split(',').map(str::trim).collect();
            assert!(ROLES.contains(&parts[1]), "unknown role in {line}");
            assert!(PERMISSIONS.contains(&(parts[3], parts[4])), "unknown permission in {line}");
        }
    }
}
