//! `GET /events`: the tenant's events as Server-Sent Events, resumable
//! with `Last-Event-ID` from the outbox.

use std::{collections::HashSet, time::Duration};

use actix_web::{HttpRequest, HttpResponse, get, http::header, web};
use sea_orm::{ColumnTrait, DatabaseConnection, QueryFilter, QueryOrder, QuerySelect};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::stream::LiveEvent;
use crate::{
    error::{ApiError, ApiResult, Code, FieldError, Problem},
    platform::{
        rbac::{Authorized, EventsRead},
        state::AppState,
        tenancy::{SystemScope, TenantScope},
        webhooks,
    },
};
use entity::event;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(stream_events);
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// Comma-separated event types or wildcards (`user.*`); all when absent.
    types: Option<String>,
    /// Resume after this event id (for clients that cannot send the
    /// `Last-Event-ID` header); the header wins when both are sent.
    last_event_id: Option<Uuid>,
}

/// The id to resume after: `Last-Event-ID`, else `?last_event_id=`.
fn resume_after(req: &HttpRequest, query: Option<Uuid>) -> ApiResult<Option<Uuid>> {
    match req.headers().get("last-event-id") {
        None => Ok(query),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| Uuid::parse_str(v.trim()).ok())
            .map(Some)
            .ok_or_else(|| ApiError::new(Code::InvalidHeader, "Last-Event-ID must be the id of an event")),
    }
}

fn patterns(catalogue: &crate::platform::events::Catalogue, types: Option<&str>) -> ApiResult<Vec<String>> {
    let mut patterns: Vec<String> =
        types.unwrap_or("*").split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
    if patterns.is_empty() {
        patterns.push("*".to_owned()); // `?types=` means all
    }
    let bad: Vec<FieldError> = patterns
        .iter()
        .filter_map(|p| {
            webhooks::check_pattern(catalogue, p).err().map(|message| FieldError::new("types", message))
        })
        .collect();
    if bad.is_empty() {
        Ok(patterns)
    } else {
        let mut err = ApiError::new(Code::InvalidQuery, "unknown event types");
        err.errors = bad;
        Err(err)
    }
}

/// One SSE frame; the data is the same envelope a webhook receives.
fn frame(event: &LiveEvent) -> web::Bytes {
    let envelope = serde_json::json!({
        "type": event.event_type, "timestamp": event.occurred_at, "tenant_id": event.tenant_id, "data": event.data,
    });
    web::Bytes::from(format!("id: {}\nevent: {}\ndata: {envelope}\n\n", event.id, event.event_type))
}

/// Committed events of `tenant` after `after`, oldest first.
async fn since(
    db: &DatabaseConnection,
    tenant: Uuid,
    after: Uuid,
    limit: u64,
) -> Result<Vec<LiveEvent>, sea_orm::DbErr> {
    let rows = TenantScope::new(tenant)
        .find::<event::Entity>()
        .filter(event::Column::Id.gt(after))
        .order_by_asc(event::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    Ok(rows.iter().map(LiveEvent::from).collect())
}

/// Whether the stream's token is still live and its user enabled.
async fn still_valid(db: &DatabaseConnection, token_id: Uuid, user_id: Uuid) -> Result<bool, sea_orm::DbErr> {
    let now = chrono::Utc::now();
    let token = SystemScope.find_by_id::<entity::api_token::Entity>(token_id).one(db).await?;
    let user = SystemScope.find_by_id::<entity::user::Entity>(user_id).one(db).await?;
    Ok(token.is_some_and(|t| t.revoked_at.is_none() && t.expires_at > now)
        && user.is_some_and(|u| u.disabled_at.is_none()))
}

enum Next {
    Beat,
    Live(Result<std::sync::Arc<LiveEvent>, RecvError>),
}

/// Stream the tenant's events as `text/event-stream`.
///
/// Each event is `id: <event id>`, `event: <type>`, `data: <JSON envelope>`.
/// A comment line (`: heartbeat`) keeps the connection open every
/// `events.sse_heartbeat_ms` (15 s). On reconnect, send `Last-Event-ID` (browsers'
/// `EventSource` does) and the events committed since are replayed from the
/// outbox first (at most `events.sse_backlog_limit`), then live ones follow.
#[utoipa::path(
    tag = "events",
    params(StreamQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "An endless `text/event-stream`", content_type = "text/event-stream", body = String),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("/events")]
async fn stream_events(
    auth: Authorized<EventsRead>,
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<StreamQuery>,
) -> ApiResult<HttpResponse> {
    let query = query.into_inner();
    let patterns = patterns(&state.event_types, query.types.as_deref())?;
    let after = resume_after(&req, query.last_event_id)?;
    let tenant = auth.tenant.id();
    let config = &state.config.events;
    let (limit, beat) = (config.sse_backlog_limit, Duration::from_millis(config.sse_heartbeat_ms));
    // Subscribe before reading the backlog, so nothing falls in between;
    // a stream that lags before sending anything catches up from here.
    let mut live = state.events.subscribe();
    let opened = Uuid::now_v7();
    let (token_id, user_id) = (auth.token_id, auth.user_id);
    let backlog = match after {
        Some(after) => since(&state.db, tenant, after, limit).await?,
        None => Vec::new(),
    };
    let db = state.db.clone();
    let wants = move |e: &LiveEvent| e.tenant_id == tenant && webhooks::matches(&patterns, &e.event_type);

    let body = async_stream::stream! {
        yield Ok::<_, actix_web::Error>(web::Bytes::from_static(b"retry: 3000\n\n"));
        let mut seen: HashSet<Uuid> = HashSet::new();
        let mut last = after.or(Some(opened));
        for event in backlog {
            seen.insert(event.id);
            last = Some(event.id);
            if wants(&event) {
                yield Ok(frame(&event));
            }
        }
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
        loop {
            let next = tokio::select! {
                _ = heartbeat.tick() => Next::Beat,
                received = live.recv() => Next::Live(received),
            };
            match next {
                Next::Beat => {
                    // The token may have been revoked or the user disabled
                    // since the stream opened: end it then.
                    if !matches!(still_valid(&db, token_id, user_id).await, Ok(true)) {
                        break;
                    }
                    yield Ok(web::Bytes::from_static(b": heartbeat\n\n"));
                }
                Next::Live(Ok(event)) => {
                    if !seen.contains(&event.id) && wants(&event) {
                        last = Some(event.id);
                        yield Ok(frame(&event));
                    }
                }
                Next::Live(Err(RecvError::Lagged(_))) => {
                    // Too slow for the live feed: catch up from the outbox.
                    let Some(after) = last else { continue };
                    let Ok(missed) = since(&db, tenant, after, limit).await else { continue };
                    for event in missed {
                        seen.insert(event.id);
                        last = Some(event.id);
                        if wants(&event) {
                            yield Ok(frame(&event));
                        }
                    }
                }
                Next::Live(Err(RecvError::Closed)) => break,
            }
        }
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}
