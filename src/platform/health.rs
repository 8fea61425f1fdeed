//! Liveness and readiness.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::{
    error::{Code, PROBLEM_JSON, Problem, problem},
    platform::{db, state::AppState},
};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(health).service(ready);
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(tag = "health", responses((status = 200, body = Health)))]
#[get("/health")]
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub struct Check {
    #[schema(example = "up")]
    status: &'static str,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Checks {
    database: Check,
    /// Absent when no Redis is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<Check>,
    /// Present while the shared (Redis) rate limiter cannot be used: limits
    /// are then counted per instance (it fails open).
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limiter: Option<Check>,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    status: &'static str,
    checks: Checks,
}

fn check(result: Result<(), String>) -> Check {
    match result {
        Ok(()) => Check { status: "up", error: None },
        Err(error) => Check { status: "down", error: Some(error) },
    }
}

/// Readiness: the database (and Redis, when configured) answer. When one is
/// down: 503 problem+json (`service_unavailable`) whose `checks` member and
/// `detail` name it.
#[utoipa::path(
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "A dependency is down: a problem document with `checks`", body = Problem),
    )
)]
#[get("/ready")]
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let database = check(db::ping(&state.db).await);
    let redis = match &state.redis {
        Some(redis) => Some(check(redis.ping().await)),
        None => None,
    };
    let mut down = Vec::new();
    if database.error.is_some() {
        down.push("database");
    }
    if redis.as_ref().is_some_and(|r| r.error.is_some()) {
        down.push("redis");
    }
    let rate_limiter =
        state.governance.limiter.degraded().map(|why| Check { status: "degraded", error: Some(why) });
    let checks = Checks { database, redis, rate_limiter };
    if down.is_empty() {
        return HttpResponse::Ok().json(Readiness { status: "ready", checks });
    }
    let detail = format!("unavailable: {}", down.join(", "));
    let mut body =
        serde_json::to_value(problem(Code::ServiceUnavailable, detail, Vec::new())).unwrap_or_default();
    body["checks"] = serde_json::to_value(checks).unwrap_or_default();
    HttpResponse::ServiceUnavailable().content_type(PROBLEM_JSON).body(body.to_string())
}
