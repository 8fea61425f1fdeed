//! Cross-cutting concerns, one folder or file each, registered once.

pub mod audit;
pub mod auth;
pub mod bulk;
pub mod cors;
pub mod crypto;
pub mod db;
pub mod events;
pub mod features;
pub mod governance;
pub mod graphql;
pub mod health;
pub mod http;
pub mod idempotency;
pub mod jobs;
pub mod license;
pub mod module;
pub mod ratelimit;
pub mod rbac;
pub mod redis;
pub mod search;
pub mod state;
pub mod tenancy;
pub mod users;
pub mod validate;
pub mod versioning;
pub mod webhooks;
