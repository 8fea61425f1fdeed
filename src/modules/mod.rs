//! Business modules. Each is a folder: routes (REST), a service trait with
//! its sea-orm implementation, and its types; other modules see only the
//! trait.

pub mod bulk;
pub mod inventory;
pub mod ledger;
pub mod procurement;
