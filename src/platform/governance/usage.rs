//! Monthly API usage per tenant: calls and rate-limit rejections, counted
//! in memory on the request path and added to `api_usage` every few
//! seconds, so counting costs no database write per request.

use crate::platform::tenancy::SystemScope;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use uuid::Uuid;

#[derive(Clone, Copy, Default)]
struct Counts {
    calls: u64,
    rate_limited: u64,
}

/// Counts not yet written, by tenant.
#[derive(Clone, Default)]
pub struct Usage(Arc<Mutex<HashMap<Uuid, Counts>>>);

pub fn period() -> String {
    Utc::now().format("%Y-%m").to_string()
}

impl Usage {
    pub fn call(&self, tenant: Uuid) {
        if let Ok(mut map) = self.0.lock() {
            map.entry(tenant).or_default().calls += 1;
        }
    }

    pub fn rate_limited(&self, tenant: Uuid) {
        if let Ok(mut map) = self.0.lock() {
            map.entry(tenant).or_default().rate_limited += 1;
        }
    }

    /// Calls counted here and not yet written.
    pub fn pending_calls(&self, tenant: Uuid) -> u64 {
        self.pending(tenant).0
    }

    /// (calls, rate-limited requests) counted here and not yet written.
    pub fn pending(&self, tenant: Uuid) -> (u64, u64) {
        self.0
            .lock()
            .ok()
            .and_then(|map| map.get(&tenant).map(|c| (c.calls, c.rate_limited)))
            .unwrap_or((0, 0))
    }

    /// Add the pending counts to this month's rows. Counts that cannot be
    /// written are kept for the next flush.
    pub async fn flush(&self, db: &DatabaseConnection) -> Result<(), sea_orm::DbErr> {
        let pending: Vec<(Uuid, Counts)> = match self.0.lock() {
            Ok(mut map) => map.drain().collect(),
            Err(_) => return Ok(()),
        };
        let period = period();
        let sql = "INSERT INTO api_usage (tenant_id, period, calls, rate_limited, updated_at) VALUES ($1, $2, $3, $4, $5) \
                   ON CONFLICT (tenant_id, period) DO UPDATE SET calls = api_usage.calls + excluded.calls, \
                   rate_limited = api_usage.rate_limited + excluded.rate_limited, updated_at = excluded.updated_at";
        for (index, (tenant, counts)) in pending.iter().enumerate() {
            let values = vec![
                (*tenant).into(),
                period.clone().into(),
                i64::try_from(counts.calls).unwrap_or(i64::MAX).into(),
                i64::try_from(counts.rate_limited).unwrap_or(i64::MAX).into(),
                Utc::now().into(),
            ];
            let statement = Statement::from_sql_and_values(db.get_database_backend(), sql, values);
            if let Err(err) = db.execute_raw(statement).await {
                // Keep what was not written.
                if let Ok(mut map) = self.0.lock() {
                    for (tenant, counts) in &pending[index..] {
                        let entry = map.entry(*tenant).or_default();
                        entry.calls += counts.calls;
                        entry.rate_limited += counts.rate_limited;
                    }
                }
                return Err(err);
            }
        }
        Ok(())
    }

    /// Write the counts every `every` for as long as the process runs.
    pub fn start_flushing(&self, db: DatabaseConnection, every: std::time::Duration) {
        let usage = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(err) = usage.flush(&db).await {
                    tracing::warn!(error = %err, "could not record API usage; retrying");
                }
            }
        });
    }
}

/// API calls of `tenant` recorded this month.
pub async fn calls_this_month(db: &impl ConnectionTrait, tenant: Uuid) -> Result<u64, sea_orm::DbErr> {
    Ok(this_month(db, tenant).await?.0)
}

/// (calls, rate-limited requests) of `tenant` recorded this month.
pub async fn this_month(db: &impl ConnectionTrait, tenant: Uuid) -> Result<(u64, u64), sea_orm::DbErr> {
    let row = SystemScope.get::<entity::api_usage::Entity>(db, (tenant, period())).await?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(row.map_or((0, 0), |r| (count(r.calls), count(r.rate_limited))))
}
