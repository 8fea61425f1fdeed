//! `/webhooks`: endpoint management, the event catalogue, deliveries and
//! their attempts, resend, recover and test.

use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::{scope, service_config::ServiceConfig};
use uuid::Uuid;

use super::{AttemptView, DeliveryView, EndpointChanges, EndpointView, EndpointWithSecret, NewEndpoint};
use crate::{
    error::{ApiError, ApiResult, Problem},
    platform::{
        http::{ApiJson, Data, Paged, Validate, created, if_match, no_content, ok, ok_with_etag},
        rbac::{Authorized, WebhooksRead, WebhooksWrite},
        state::AppState,
    },
};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(
        scope("/webhooks")
            .service(event_types)
            .service(list_endpoints)
            .service(create_endpoint)
            .service(get_endpoint)
            .service(update_endpoint)
            .service(delete_endpoint)
            .service(rotate_secret)
            .service(list_deliveries)
            .service(list_attempts)
            .service(resend_delivery)
            .service(recover_deliveries)
            .service(send_test),
    );
}

#[derive(Serialize, ToSchema)]
pub struct EventTypeView {
    #[schema(example = "user.created")]
    name: &'static str,
    description: &'static str,
    /// An example of the webhook body for this type.
    example: Value,
}

/// The catalogue of event types, with an example body for each.
#[utoipa::path(
    tag = "webhooks",
    responses(
        (status = 200, description = "Every event type", body = Data<Vec<EventTypeView>>),
        (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("/event-types")]
async fn event_types(auth: Authorized<WebhooksRead>, state: web::Data<AppState>) -> HttpResponse {
    let tenant = auth.tenant.id();
    let types: Vec<EventTypeView> = state
        .event_types
        .iter()
        .map(|t| EventTypeView {
            name: t.name,
            description: t.description,
            example: serde_json::json!({
                "type": t.name, "timestamp": "2026-11-22T09:14:45.123456Z", "tenant_id": tenant, "data": (t.example)()
            }),
        })
        .collect();
    ok(types)
}

/// The shared edge checks, with the deployment's URL policy.
fn check(
    state: &AppState,
    url: Option<&str>,
    description: Option<&str>,
    types: Option<&[String]>,
    priority: Option<i16>,
) -> ApiResult<()> {
    let policy = state.config.url_policy().map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
    super::check_endpoint(&policy, &state.event_types, url, description, types, priority)
        .map_err(ApiError::validation)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// https (http only in development); must not point at a private address.
    #[schema(example = "https://example.com/hooks/nexus")]
    url: String,
    #[serde(default)]
    #[schema(example = "Order sync")]
    description: String,
    /// Exact types, `prefix.*` wildcards, or `*` for everything.
    #[schema(example = json!(["user.*"]), min_items = 1)]
    event_types: Vec<String>,
    /// Default true.
    enabled: Option<bool>,
    /// 1-10 (default 5); 8 and above deliver in the high-priority lane.
    #[schema(minimum = 1, maximum = 10)]
    priority: Option<i16>,
}

impl Validate for CreateEndpoint {}

/// Register an endpoint. The answer holds its signing secret, shown only
/// this once.
#[utoipa::path(
    tag = "webhooks",
    request_body = CreateEndpoint,
    responses(
        (status = 201, description = "The endpoint and its secret", body = Data<EndpointWithSecret>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("")]
async fn create_endpoint(
    auth: Authorized<WebhooksWrite>,
    state: web::Data<AppState>,
    body: ApiJson<CreateEndpoint>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    check(&state, Some(&body.url), Some(&body.description), Some(&body.event_types), body.priority)?;
    let new = NewEndpoint {
        url: body.url,
        description: body.description.trim().to_owned(),
        event_types: body.event_types,
        enabled: body.enabled.unwrap_or(true),
        priority: body.priority.unwrap_or(5),
    };
    Ok(created(super::create(&state, auth.tenant, new).await?))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct EndpointListQuery {
        /// Only enabled (`true`) or disabled (`false`) endpoints.
        enabled: Option<bool>,
    }
}

/// The tenant's endpoints, newest first.
#[utoipa::path(
    tag = "webhooks",
    params(EndpointListQuery),
    responses(
        (status = 200, description = "A page of endpoints", body = Paged<EndpointView>),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("")]
async fn list_endpoints(
    auth: Authorized<WebhooksRead>,
    state: web::Data<AppState>,
    query: web::Query<EndpointListQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    Ok(HttpResponse::Ok().json(super::list(&state.db, auth.tenant, q.enabled, &list).await?))
}

/// One endpoint; its `ETag` is the version to send in `If-Match`.
#[utoipa::path(
    tag = "webhooks",
    responses(
        (status = 200, description = "The endpoint", body = Data<EndpointView>,
         headers(("ETag" = String, description = "The version, quoted"))),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("/{id}")]
async fn get_endpoint(
    auth: Authorized<WebhooksRead>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let view = super::get(&state.db, auth.tenant, id.into_inner()).await?;
    Ok(ok_with_etag(&view, view.version))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    url: Option<String>,
    description: Option<String>,
    #[schema(min_items = 1)]
    event_types: Option<Vec<String>>,
    /// Re-enabling clears `disabled_reason` and the failure streak.
    enabled: Option<bool>,
    #[schema(minimum = 1, maximum = 10)]
    priority: Option<i16>,
}

impl Validate for UpdateEndpoint {}

/// Change an endpoint. Send `If-Match` with its `ETag` to refuse (412) a
/// change made meanwhile by someone else.
#[utoipa::path(
    tag = "webhooks",
    request_body = UpdateEndpoint,
    params(("If-Match" = Option<String>, Header, description = "The ETag read before, e.g. \"3\"", pattern = r#"^(W/)?"[0-9]+"$"#)),
    responses(
        (status = 200, description = "The endpoint", body = Data<EndpointView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 412, description = "The endpoint changed since it was read", body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[patch("/{id}")]
async fn update_endpoint(
    auth: Authorized<WebhooksWrite>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: ApiJson<UpdateEndpoint>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    check(
        &state,
        body.url.as_deref(),
        body.description.as_deref(),
        body.event_types.as_deref(),
        body.priority,
    )?;
    let changes = EndpointChanges {
        url: body.url,
        description: body.description.map(|d| d.trim().to_owned()),
        event_types: body.event_types,
        enabled: body.enabled,
        priority: body.priority,
    };
    let view = super::update(&state.db, auth.tenant, id.into_inner(), if_match(&req)?, changes).await?;
    Ok(ok_with_etag(&view, view.version))
}

/// Delete an endpoint with its delivery history.
#[utoipa::path(
    tag = "webhooks",
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
#[delete("/{id}")]
async fn delete_endpoint(
    auth: Authorized<WebhooksWrite>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    super::delete(&state.db, auth.tenant, id.into_inner()).await?;
    Ok(no_content())
}

/// Replace the signing secret. For `webhooks.rotation_overlap_hours`
/// (default 24) deliveries carry signatures with both the old and the new
/// secret, so the receiver can switch without losing a message.
#[utoipa::path(
    tag = "webhooks",
    responses(
        (status = 200, description = "The endpoint and its new secret", body = Data<EndpointWithSecret>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("/{id}/rotate-secret")]
async fn rotate_secret(
    auth: Authorized<WebhooksWrite>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    Ok(ok(super::rotate_secret(&state, auth.tenant, id.into_inner()).await?))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct DeliveryListQuery {
        /// `pending`, `succeeded` or `failed`.
        #[param(pattern = "^(pending|succeeded|failed)$")]
        status: Option<String>,
    }
}

/// Deliveries to an endpoint, newest first.
#[utoipa::path(
    tag = "webhooks",
    params(DeliveryListQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = Paged<DeliveryView>),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("/{id}/deliveries")]
async fn list_deliveries(
    auth: Authorized<WebhooksRead>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    query: web::Query<DeliveryListQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    Ok(HttpResponse::Ok()
        .json(super::deliveries(&state.db, auth.tenant, id.into_inner(), q.status, &list).await?))
}

/// Every attempt of a delivery: headers sent, status, duration, response.
#[utoipa::path(
    tag = "webhooks",
    responses(
        (status = 200, description = "The attempts, first first", body = Data<Vec<AttemptView>>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("/{id}/deliveries/{delivery_id}/attempts")]
async fn list_attempts(
    auth: Authorized<WebhooksRead>,
    state: web::Data<AppState>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (id, delivery_id) = path.into_inner();
    Ok(ok(super::attempts(&state.db, auth.tenant, id, delivery_id).await?))
}

/// Send a delivery again (a new round with the full retry schedule). A
/// delivery still pending answers 409.
#[utoipa::path(
    tag = "webhooks",
    responses(
        (status = 202, description = "Queued", body = Data<DeliveryView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("/{id}/deliveries/{delivery_id}/resend")]
async fn resend_delivery(
    auth: Authorized<WebhooksWrite>,
    state: web::Data<AppState>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (id, delivery_id) = path.into_inner();
    let view = super::resend(&state, auth.tenant, id, delivery_id).await?;
    Ok(HttpResponse::Accepted().json(Data { data: view }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// Resend the failed deliveries created since this time.
    #[schema(example = "2026-11-21T00:00:00Z")]
    since: DateTime<Utc>,
}

impl Validate for RecoverRequest {}

#[derive(Serialize, ToSchema)]
pub struct Recovered {
    /// How many failed deliveries were queued again.
    #[schema(example = 12)]
    queued: u64,
}

/// Resend every failed delivery of the endpoint since a time, e.g. after
/// the receiver was down.
#[utoipa::path(
    tag = "webhooks",
    request_body = RecoverRequest,
    responses(
        (status = 202, description = "Queued", body = Data<Recovered>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("/{id}/recover")]
async fn recover_deliveries(
    auth: Authorized<WebhooksWrite>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    body: ApiJson<RecoverRequest>,
) -> ApiResult<HttpResponse> {
    let queued = super::recover(&state, auth.tenant, id.into_inner(), body.0.since).await?;
    Ok(HttpResponse::Accepted().json(Data { data: Recovered { queued } }))
}

/// Send a `webhook.test` event to this endpoint now.
#[utoipa::path(
    tag = "webhooks",
    responses(
        (status = 202, description = "Queued; follow it in the deliveries", body = Data<DeliveryView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
#[post("/{id}/test")]
async fn send_test(
    auth: Authorized<WebhooksWrite>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let view = super::send_test(&state, auth.tenant, id.into_inner()).await?;
    Ok(HttpResponse::Accepted().json(Data { data: view }))
}
