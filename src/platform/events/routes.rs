//! `GET /events`: the tenant's events as Server-Sent Events, resumable
//! with `Last-Event-ID` from the outbox.

use std::{collections::HashSet, time::Duration};

use actix_web::{HttpRequest, HttpResponse, get, http::header, web};
use sea_orm::{ColumnTrait, DatabaseConnection, QueryFilter, QueryOrder, QuerySelect};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;
use utoipa_actix_web::{scope, service_config::ServiceConfig};
use uuid::Uuid;

use futures_util::StreamExt;

use super::stream::LiveEvent;
use crate::{
    error::{ApiError, ApiResult, Code, FieldError, Problem},
    platform::{
        auth::Principal,
        rbac::{Authorized, EventsRead},
        state::AppState,
        tenancy::{SystemScope, TenantScope},
        webhooks,
    },
};
use entity::event;

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(scope("/events").service(stream_events));
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

pub fn patterns(
    catalogue: &crate::platform::events::Catalogue,
    types: Option<&str>,
) -> ApiResult<Vec<String>> {
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
    let token = SystemScope.get::<entity::api_token::Entity>(db, token_id).await?;
    let user = SystemScope.get::<entity::user::Entity>(db, user_id).await?;
    Ok(token.is_some_and(|t| t.revoked_at.is_none() && t.expires_at > now)
        && user.is_some_and(|u| u.disabled_at.is_none()))
}

/// What a stream has sent, so that catching up after a lag neither skips
/// nor repeats an event. Live events arrive in the order their dispatch jobs
/// finish, not in id order, so a catch-up reads from a while before the
/// newest event sent and skips the ones already sent.
struct Sent {
    /// The stream's starting point: the id it resumed from, or when it opened.
    start: Uuid,
    newest: Uuid,
    ids: HashSet<Uuid>,
}

/// How far before the newest event sent a catch-up reads: an event lost in a
/// lag whose dispatch came later than this after its commit is not replayed.
const REORDER_WINDOW_MS: u64 = 60_000;
/// Sent ids kept beyond this many are dropped once outside the window.
const SENT_IDS: usize = 10_000;

impl Sent {
    fn new(start: Uuid) -> Self {
        Self { start, newest: start, ids: HashSet::new() }
    }

    /// Record `id` as sent; false when it was already.
    fn first_time(&mut self, id: Uuid) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.newest = self.newest.max(id);
        if self.ids.len() > SENT_IDS {
            let from = self.catch_up_from();
            self.ids.retain(|id| *id > from);
        }
        true
    }

    /// The id a catch-up reads after: the reorder window before the newest
    /// event sent, never before the start (ids are UUIDv7: time first).
    fn catch_up_from(&self) -> Uuid {
        let Some((secs, nanos)) = self.newest.get_timestamp().map(|t| t.to_unix()) else {
            return self.start;
        };
        let millis = (secs * 1000 + u64::from(nanos) / 1_000_000).saturating_sub(REORDER_WINDOW_MS);
        let window = uuid::Builder::from_unix_timestamp_millis(millis, &[0; 10]).into_uuid();
        window.max(self.start)
    }
}

enum Next {
    Beat,
    Live(Result<std::sync::Arc<LiveEvent>, RecvError>),
}

/// What a live stream of events yields.
pub enum Item {
    Event(std::sync::Arc<LiveEvent>),
    /// Nothing happened for `events.sse_heartbeat_ms`, and the caller's
    /// token is still good.
    Beat,
}

/// The acting tenant's events whose type matches `patterns`: those
/// committed after `after` first (replayed from the outbox, at most
/// `events.sse_backlog_limit`), then live ones, never one twice or out of
/// reach after a lag; a heartbeat every `events.sse_heartbeat_ms`; ended
/// when the caller's token is revoked or their account disabled. Server-Sent
/// Events and GraphQL subscriptions are both this stream.
pub async fn tenant_events(
    state: &AppState,
    caller: &Principal,
    patterns: Vec<String>,
    after: Option<Uuid>,
) -> ApiResult<impl futures_util::Stream<Item = Item> + use<>> {
    let tenant = caller.tenant.id();
    let config = &state.config.events;
    let (limit, beat) = (config.sse_backlog_limit, Duration::from_millis(config.sse_heartbeat_ms));
    // Subscribe before reading the backlog, so nothing falls in between;
    // a stream that lags before sending anything catches up from here.
    let mut live = state.events.subscribe();
    let opened = Uuid::now_v7();
    let (token_id, user_id) = (caller.token_id, caller.user_id);
    let backlog = match after {
        Some(after) => since(&state.db, tenant, after, limit).await?,
        None => Vec::new(),
    };
    let db = state.db.clone();
    let wants = move |e: &LiveEvent| e.tenant_id == tenant && webhooks::matches(&patterns, &e.event_type);

    Ok(async_stream::stream! {
        let mut sent = Sent::new(after.unwrap_or(opened));
        for event in backlog {
            if wants(&event) && sent.first_time(event.id) {
                yield Item::Event(std::sync::Arc::new(event));
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
                    yield Item::Beat;
                }
                Next::Live(Ok(event)) => {
                    if wants(&event) && sent.first_time(event.id) {
                        yield Item::Event(event);
                    }
                }
                Next::Live(Err(RecvError::Lagged(_))) => {
                    // Too slow for the live feed: catch up from the outbox,
                    // page by page, skipping what was sent already.
                    let mut from = sent.catch_up_from();
                    while let Ok(missed) = since(&db, tenant, from, limit).await {
                        let full = missed.len() as u64 == limit;
                        for event in missed {
                            from = event.id;
                            if wants(&event) && sent.first_time(event.id) {
                                yield Item::Event(std::sync::Arc::new(event));
                            }
                        }
                        if !full {
                            break;
                        }
                    }
                }
                Next::Live(Err(RecvError::Closed)) => break,
            }
        }
    })
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
#[get("")]
async fn stream_events(
    auth: Authorized<EventsRead>,
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<StreamQuery>,
) -> ApiResult<HttpResponse> {
    let query = query.into_inner();
    let patterns = patterns(&state.event_types, query.types.as_deref())?;
    let after = resume_after(&req, query.last_event_id)?;
    let events = tenant_events(&state, &auth, patterns, after).await?;
    let body = futures_util::stream::once(async { web::Bytes::from_static(b"retry: 3000\n\n") })
        .chain(events.map(|item| match item {
            Item::Event(event) => frame(&event),
            Item::Beat => web::Bytes::from_static(b": heartbeat\n\n"),
        }))
        .map(Ok::<_, actix_web::Error>);
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: u64) -> Uuid {
        uuid::Builder::from_unix_timestamp_millis(millis, &[7; 10]).into_uuid()
    }

    #[test]
    fn a_catch_up_covers_events_dispatched_out_of_order_and_skips_those_sent() {
        let now = 1_800_000_000_000;
        let (a, b, c, d) = (at(now), at(now + 1), at(now + 2), at(now + 3));
        let mut sent = Sent::new(at(now - 10));
        // Opened, nothing sent yet: a catch-up starts where the stream did.
        assert_eq!(sent.catch_up_from(), at(now - 10));
        // `b` was committed before `c` but its dispatch finished later.
        assert!(sent.first_time(a) && sent.first_time(c));
        assert!(!sent.first_time(c), "sent once");
        let from = sent.catch_up_from();
        assert!(from < b, "the catch-up reads `b`, lost in the lag");
        let replayed: Vec<Uuid> =
            [a, b, c, d].into_iter().filter(|id| *id > from && sent.first_time(*id)).collect();
        assert_eq!(replayed, [b, d]);
    }

    #[test]
    fn a_catch_up_reads_a_window_before_the_newest_never_before_the_start() {
        let now = 1_800_000_000_000;
        let mut sent = Sent::new(at(now - 5 * REORDER_WINDOW_MS));
        assert!(sent.first_time(at(now)));
        let from = sent.catch_up_from();
        assert!(from < at(now - REORDER_WINDOW_MS) && from > at(now - REORDER_WINDOW_MS - 1));
        let resumed = Sent::new(at(now));
        assert_eq!(resumed.catch_up_from(), at(now), "no earlier than the resume point");
    }
}
