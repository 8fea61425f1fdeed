use std::sync::Arc;

use sea_orm::DatabaseConnection;

use crate::{
    config::Config,
    platform::{auth::TokenKeys, rbac::Rbac, redis::Redis},
};

/// Everything a request may need, built once by the app constructor and
/// shared by every worker.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: DatabaseConnection,
    pub redis: Option<Redis>,
    pub rbac: Arc<Rbac>,
    pub keys: Arc<TokenKeys>,
}
