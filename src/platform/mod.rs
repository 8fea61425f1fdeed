//! Cross-cutting concerns, one folder or file each, registered once.

pub mod audit;
pub mod auth;
pub mod db;
pub mod health;
pub mod http;
pub mod rbac;
pub mod redis;
pub mod state;
pub mod tenancy;
pub mod users;
pub mod validate;
