//! Append-only audit log of every mutating request (FR-L1-007, SR-007).
//! The middleware records who did what with a redacted copy of the body;
//! nothing in the application updates or deletes an entry.

pub mod graphql;
pub mod routes;

use actix_web::{
    Error, HttpMessage, HttpRequest,
    body::{BoxBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::{StatusCode, header},
    web,
};
use chrono::Utc;
use std::sync::Arc;

use sea_orm::{ActiveValue::Set, ConnectionTrait, DatabaseConnection, EntityTrait};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::{
    error::REQUEST_ID,
    platform::{
        combine::Combiner,
        http::{Actor, is_mutating},
        jobs,
        state::AppState,
    },
};

/// Keys whose values never reach the log, matched case-insensitively as
/// substrings (`password`, `new_password`, `client_secret`, `api_key` ...).
const REDACTED_KEYS: &[&str] = &["password", "token", "secret", "authorization", "key", "credential"];
/// Largest summary kept; a bigger body is summarised by its top-level keys.
const MAX_SUMMARY_BYTES: usize = 4096;

pub async fn middleware<B, F>(
    mut req: ServiceRequest,
    next: impl FnOnce(ServiceRequest) -> F,
) -> Result<ServiceResponse<BoxBody>, Error>
where
    B: MessageBody + 'static,
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    if !is_mutating(req.method()) {
        return next(req).await.map(ServiceResponse::map_into_boxed_body);
    }
    // Boxed, as the reads that pass above are most requests: inline, this
    // path's futures would make theirs larger, and moving it cost a copy.
    Box::pin(async move {
        // Buffer the body (within the payload limit) so it can be summarised,
        // then hand it on untouched.
        let body = match req.extract::<web::Bytes>().await {
            Ok(body) => body,
            Err(err) => return Ok(req.error_response(err)),
        };
        let summary = summarize(req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()), &body);
        req.set_payload(Payload::from(body));
        let state = req.app_data::<web::Data<AppState>>().cloned();
        jobs::tracking_queued(async move {
            let res = next(req).await?.map_into_boxed_body();
            if let Some(state) = state {
                // A 503 changed nothing, and its backend is down: writing the entry
                // would only wait for the same backend again.
                if res.status() != StatusCode::SERVICE_UNAVAILABLE {
                    let req = res.request();
                    let route = req.match_pattern().unwrap_or_else(|| "(unmatched)".to_owned());
                    record(&state, req, route, res.status(), summary).await;
                }
                // The change may have queued jobs (events, deliveries): wake the
                // lanes they are in instead of leaving them to the next poll.
                state.wakeup.wake();
            }
            Ok(res)
        })
        .await
    })
    .await
}

/// Entries of requests that end together are written together: one
/// multi-row `INSERT` (group commit, see [`Combiner`]) instead of a
/// statement and a commit per request.
#[derive(Clone)]
pub struct Journal(Arc<Combiner<entity::audit_log::ActiveModel, ()>>);

/// The most entries one `INSERT` of the journal writes.
const JOURNAL_BATCH: usize = 128;

impl Default for Journal {
    fn default() -> Self {
        Self(Arc::new(Combiner::new(JOURNAL_BATCH)))
    }
}

impl Journal {
    async fn write(
        &self,
        db: &DatabaseConnection,
        tenant_id: Option<Uuid>,
        entry: entity::audit_log::ActiveModel,
    ) {
        self.0
            .run(&tenant_id, entry, |batch| async move {
                let entries = batch.len();
                if let Err(err) = crate::platform::db::insert_all(db, batch).await {
                    tracing::error!(error = %err, entries, "could not write audit log entries");
                }
                vec![(); entries]
            })
            .await;
    }
}

/// Writes who did `route` on `req`, with what outcome.
async fn record(
    state: &AppState,
    req: &HttpRequest,
    route: String,
    status: StatusCode,
    summary: Option<Value>,
) {
    let actor = req.extensions().get::<Actor>().copied();
    let entry = entity::audit_log::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(actor.map(|a| a.tenant_id)),
        user_id: Set(actor.map(|a| a.user_id)),
        method: Set(req.method().to_string()),
        route: Set(route),
        path: Set(req.path().to_owned()),
        status: Set(i32::from(status.as_u16())),
        request_id: Set(REQUEST_ID.try_with(Clone::clone).unwrap_or_default()),
        ip: Set(req.peer_addr().map(|a| a.ip().to_string())),
        user_agent: Set(req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(512).collect())),
        summary: Set(summary),
        created_at: Set(Utc::now()),
    };
    state.audit.write(&state.db, actor.map(|a| a.tenant_id), entry).await;
}

/// Record an action Nexus took by itself (no request, no user), such as
/// disabling a failing webhook endpoint. `action` goes where a request's
/// method and route would be.
pub async fn record_system(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    action: &str,
    path: &str,
    summary: Value,
) -> Result<(), sea_orm::DbErr> {
    entity::audit_log::Entity::insert(entity::audit_log::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(Some(tenant_id)),
        user_id: Set(None),
        method: Set("SYSTEM".to_owned()),
        route: Set(action.to_owned()),
        path: Set(path.to_owned()),
        status: Set(200),
        request_id: Set(String::new()),
        ip: Set(None),
        user_agent: Set(None),
        summary: Set(Some(summary)),
        created_at: Set(Utc::now()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// A redacted, bounded summary of a request body.
pub fn summarize(content_type: Option<&str>, body: &[u8]) -> Option<Value> {
    if body.is_empty() {
        return None;
    }
    let is_json = content_type.is_some_and(|ct| ct.contains("json"));
    let parsed = is_json.then(|| serde_json::from_slice::<Value>(body).ok()).flatten();
    // What is kept of a body that is not JSON, or has a NUL in a key.
    let shape = || json!({ "content_type": content_type, "bytes": body.len() });
    Some(parsed.and_then(|value| bounded(value, body.len())).unwrap_or_else(shape))
}

/// `value` with secrets redacted, reduced to its top-level keys when larger
/// than [`MAX_SUMMARY_BYTES`] (`bytes` is the size it came in); `None` when a
/// key holds a NUL, which the database would refuse.
fn bounded(mut value: Value, bytes: usize) -> Option<Value> {
    redact(&mut value);
    let text = serde_json::to_string(&value).unwrap_or_default();
    if text.contains("\\u0000") {
        return None;
    }
    if text.len() <= MAX_SUMMARY_BYTES {
        return Some(value);
    }
    let keys: Vec<Value> = match &value {
        Value::Object(map) => map.keys().take(50).map(|k| Value::String(k.clone())).collect(),
        _ => Vec::new(),
    };
    Some(json!({ "truncated": true, "bytes": bytes, "keys": keys }))
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => redact_map(map),
        Value::Array(items) => items.iter_mut().for_each(redact),
        // PostgreSQL's jsonb refuses NUL; the request was refused for it anyway.
        Value::String(s) => *s = crate::platform::db::storable(std::mem::take(s)),
        _ => {}
    }
}

fn redact_map(map: &mut Map<String, Value>) {
    for (key, value) in map.iter_mut() {
        let lower = key.to_lowercase();
        if REDACTED_KEYS.iter().any(|k| lower.contains(k)) {
            *value = Value::String("[redacted]".to_owned());
        } else {
            redact(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_reach_the_summary() {
        let body = br#"{"email":"a@b.co","password":"hunter2hunter2","nested":[{"api_key":"k"}],"Client_Secret":"s"}"#;
        let summary = summarize(Some("application/json"), body).unwrap();
        let text = summary.to_string();
        assert!(text.contains("a@b.co"));
        for secret in ["hunter2hunter2", "\"k\"", "\"s\""] {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
    }

    #[test]
    fn nul_characters_never_reach_the_database() {
        let summary = summarize(Some("application/json"), br#"{"name":"a\u0000b"}"#).unwrap();
        assert_eq!(summary["name"], "a\u{FFFD}b");
        let summary = summarize(Some("application/json"), br#"{"k\u0000":1}"#).unwrap();
        assert!(summary.get("bytes").is_some() && !summary.to_string().contains("\\u0000"));
    }

    #[test]
    fn large_and_non_json_bodies_are_summarised_by_shape() {
        let big = serde_json::to_vec(&json!({ "blob": "x".repeat(10_000) })).unwrap();
        let summary = summarize(Some("application/json"), &big).unwrap();
        assert_eq!(summary["truncated"], true);
        assert_eq!(summary["keys"], json!(["blob"]));
        let csv = summarize(Some("text/csv"), b"a,b\n1,2").unwrap();
        assert_eq!(csv["bytes"], 7);
        assert!(summarize(None, b"").is_none());
    }
}
