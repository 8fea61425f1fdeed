//! Business modules: the one place that lists them and wires their
//! services to each other. Each module is a folder: a service trait with
//! its sea-orm implementation, routes (REST), graphql, and one type that
//! implements `platform::module::Module` (see docs/architecture.md).
//!
//! Adding a module is its folder plus its lines here: `pub mod`, its
//! GraphQL `Query` / `Mutation` in the two merged objects below (GraphQL
//! types are static), and one line in [`build`] that constructs it with the
//! services it uses. Those services are trait objects built above it, so a
//! missing binding does not compile.

pub mod channels;
pub mod inventory;
pub mod ledger;
pub mod orders;
pub mod procurement;

use std::sync::Arc;

use async_graphql::MergedObject;

use crate::platform::module::{Module, Modules, Setup};

/// Every module's GraphQL queries.
#[derive(MergedObject, Default)]
#[graphql(name = "ModulesQuery")]
pub struct Query(
    inventory::graphql::Query,
    procurement::graphql::Query,
    orders::graphql::Query,
    ledger::Query,
    channels::graphql::Query,
);

/// Every module's GraphQL mutations.
#[derive(MergedObject, Default)]
#[graphql(name = "ModulesMutation")]
pub struct Mutation(
    inventory::graphql::Mutation,
    procurement::graphql::Mutation,
    orders::graphql::Mutation,
    channels::graphql::Mutation,
);

/// Every module of this build, in dependency order: each is given the
/// services of those built before it. `ledger` replaces the built-in one.
pub fn build(setup: &Setup, ledger: Option<Arc<dyn ledger::Ledger>>) -> anyhow::Result<Vec<Arc<dyn Module>>> {
    let ledger = ledger::LedgerModule::new(setup, ledger);
    let vendors = procurement::vendors(setup);
    let inventory = inventory::Inventory::new(setup, vendors)?;
    let procurement = procurement::Procurement::new(setup, inventory.service(), ledger.service());
    let orders = orders::Orders::new(setup, inventory.service())?;
    let channels = channels::Channels::new(setup, inventory.service())?;
    Ok(vec![
        Arc::new(inventory),
        Arc::new(procurement),
        Arc::new(orders),
        Arc::new(channels),
        Arc::new(ledger),
    ])
}

/// The orders service and the inventory service it uses, wired as
/// [`build`] wires them: for the command line (`nexus orders ...`).
pub fn order_services(
    setup: &Setup,
) -> anyhow::Result<(Arc<dyn orders::OrderService>, Arc<dyn inventory::InventoryService>)> {
    let vendors = procurement::vendors(setup);
    let inventory = inventory::Inventory::new(setup, vendors)?;
    Ok((orders::Orders::new(setup, inventory.service())?.service(), inventory.service()))
}

/// The channels service as [`build`] wires it: for the command line
/// (`nexus channels ...`).
pub fn channel_service(setup: &Setup) -> anyhow::Result<Arc<dyn channels::ChannelService>> {
    let vendors = procurement::vendors(setup);
    let inventory = inventory::Inventory::new(setup, vendors)?;
    Ok(channels::Channels::new(setup, inventory.service())?.service())
}

/// The modules built on no database: for the OpenAPI document, which needs
/// their routes but never calls them.
pub fn offline() -> anyhow::Result<Modules> {
    let config = crate::config::Config::from_figment(crate::config::Config::defaults())?;
    let setup = Setup {
        db: sea_orm::DatabaseConnection::default(),
        config: &config,
        redis: None,
        limiter: crate::platform::ratelimit::RateLimiter::memory(),
    };
    Modules::new(build(&setup, None)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{events, features::Catalogue, license::Tiers, rbac};

    /// docs/rbac.md shows the matrix; it must say what the policy (the
    /// platform's and every module's grants) says.
    #[test]
    fn the_documented_matrix_is_the_policy() {
        let modules = offline().unwrap();
        let policy = rbac::policy(modules.grants());
        let doc = include_str!("../../docs/rbac.md");
        let mut documented = std::collections::HashSet::new();
        for line in doc.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (object, action) = cells[1].trim_matches('`').split_once(':').unwrap();
            for (role, cell) in rbac::ROLES.iter().zip(&cells[2..6]) {
                let granted = policy.iter().any(|(r, o, a)| r == role && o == object && a == action);
                assert_eq!(granted, *cell == "✓", "docs/rbac.md: {role} {object}:{action}");
            }
            documented.insert((object.to_owned(), action.to_owned()));
        }
        let permissions = rbac::PERMISSIONS
            .iter()
            .map(|(o, a)| (o.to_string(), a.to_string()))
            .chain(modules.grants().map(|g| (g.object.to_owned(), g.action.to_owned())));
        for permission in permissions {
            assert!(documented.contains(&permission), "docs/rbac.md lacks {permission:?}");
        }
        for (role, _, _) in &policy {
            assert!(rbac::ROLES.contains(&role.as_str()), "unknown role {role}");
        }
    }

    /// The guides that list the event catalogue.
    const GUIDES: [(&str, &str); 2] = [
        ("events.md", include_str!("../../docs/events.md")),
        ("webhooks.md", include_str!("../../docs/webhooks.md")),
    ];

    #[test]
    fn the_guides_list_every_event_type() {
        let catalogue = events::Catalogue::new(&offline().unwrap()).unwrap();
        for (guide, text) in GUIDES {
            for t in catalogue.iter() {
                assert!((t.example)().is_object(), "{} has no example", t.name);
                assert!(text.contains(&format!("| `{}` |", t.name)), "docs/{guide} lacks {}", t.name);
            }
        }
    }

    /// And no guide names an event type that does not exist (rows naming
    /// settings, `webhooks.*` and `events.*`, are not event types).
    #[test]
    fn the_guides_name_no_event_type_that_does_not_exist() {
        let catalogue = events::Catalogue::new(&offline().unwrap()).unwrap();
        for (guide, text) in GUIDES {
            for line in text.lines() {
                let Some(name) = line.strip_prefix("| `").and_then(|l| l.split('`').next()) else { continue };
                let setting = name.starts_with("webhooks.") || name.starts_with("events.");
                if name.contains('.') && !setting {
                    assert!(
                        catalogue.find(name).is_some(),
                        "docs/{guide} names `{name}`, which is no event type"
                    );
                }
            }
        }
    }

    /// The feature catalogue holds exactly the keys of the registered modules.
    #[test]
    fn every_module_key_is_in_the_catalogue_and_no_other() {
        let modules = offline().unwrap();
        let catalogue = Catalogue::load(&Tiers::load().unwrap(), &modules).unwrap();
        let keys: Vec<&String> = catalogue.features.keys().filter(|k| k.starts_with("module.")).collect();
        assert_eq!(keys, ["module.channels", "module.inventory", "module.orders", "module.procurement"]);
    }
}
