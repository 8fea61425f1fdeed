//! Role-based access control with casbin. The tenant is the casbin domain;
//! the permission matrix lives in `config/rbac_policy.csv`. Role assignments
//! live in our `user_roles` table and are read with the caller's token on
//! every request, so a change applies at once on every instance.

use std::{
    future::{Ready, ready},
    marker::PhantomData,
    rc::Rc,
};

use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload};
use casbin::{CoreApi, DefaultModel, Enforcer, StringAdapter};

use crate::{
    error::{ApiError, Code},
    platform::{auth::Principal, governance::Governed},
};

pub const MODEL: &str = include_str!("../../config/rbac_model.conf");
pub const POLICY: &str = include_str!("../../config/rbac_policy.csv");

/// The roles every tenant has. The first is given to a tenant's owner.
pub const ROLES: &[&str] = &["admin", "manager", "user", "viewer"];

pub struct Rbac {
    enforcer: Enforcer,
}

impl Rbac {
    pub async fn new() -> anyhow::Result<Self> {
        let model = DefaultModel::from_str(MODEL).await?;
        let policy: String = POLICY
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let enforcer = Enforcer::new(model, StringAdapter::new(policy)).await?;
        Ok(Self { enforcer })
    }

    /// Whether any of `roles` may perform `action` on `object` in `tenant`.
    pub fn allows(&self, roles: &[String], tenant: &str, object: &str, action: &str) -> bool {
        roles
            .iter()
            .any(|role| self.enforcer.enforce((role.as_str(), tenant, object, action)).unwrap_or(false))
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
        /// Every permission a route can require, as `(object, action)`.
        pub const PERMISSIONS: &[(&str, &str)] = &[$(($object, $action)),*];
    };
    (@feature $feature:literal) => { Some($feature) };
    (@feature) => { None };
}

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
    InventoryRead => "inventory", "read", "module.inventory";
    InventoryWrite => "inventory", "write", "module.inventory";
    ProcurementRead => "procurement", "read", "module.procurement";
    ProcurementWrite => "procurement", "write", "module.procurement";
    ProcurementApprove => "procurement", "approve", "module.procurement";
    LedgerRead => "ledger", "read", "module.procurement";
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
            if let (Some(key), Some(governed)) = (P::FEATURE, req.extensions().get::<Rc<Governed>>()) {
                governed.require(&state.governance, key)?;
            }
            Ok(Self { principal, _permission: PhantomData })
        }))
    }
}

/// The permission check shared by REST extractors and GraphQL resolvers.
pub fn check<P: Permission>(rbac: &Rbac, principal: &Principal) -> Result<(), ApiError> {
    let tenant = principal.tenant.id().to_string();
    if principal.is_super_admin || rbac.allows(&principal.roles, &tenant, P::OBJECT, P::ACTION) {
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
        let rbac = Rbac::new().await.unwrap();
        let admin = vec!["admin".to_owned()];
        let viewer = vec!["viewer".to_owned()];
        assert!(rbac.allows(&admin, "t1", "users", "write"));
        assert!(!rbac.allows(&viewer, "t1", "users", "write"));
        assert!(rbac.allows(&viewer, "t1", "tenant", "read"));
        assert!(!rbac.allows(&[], "t1", "tenant", "read"));
        assert!(!rbac.allows(&["ghost".to_owned()], "t1", "tenant", "read"));
    }

    /// docs/rbac.md shows the matrix; it must say what the policy says.
    #[test]
    fn the_documented_matrix_is_the_policy() {
        let doc = include_str!("../../docs/rbac.md");
        let mut rows = 0;
        for line in doc.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (object, action) = cells[1].trim_matches('`').split_once(':').unwrap();
            for (role, cell) in ROLES.iter().zip(&cells[2..6]) {
                let granted = POLICY.lines().any(|l| {
                    let p: Vec<&str> = l.split(',').map(str::trim).collect();
                    p.len() == 5 && p[1] == *role && p[3] == object && p[4] == action
                });
                assert_eq!(granted, *cell == "✓", "docs/rbac.md: {role} {object}:{action}");
            }
            rows += 1;
        }
        assert_eq!(rows, PERMISSIONS.len(), "docs/rbac.md lists every permission");
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
