use std::time::{Duration, Instant};

use crate::helpers::{TestApp, assert_problem, json, test_config};

#[tokio::test]
async fn health_and_ready_answer() {
    let app = TestApp::spawn().await;
    let health = app.client.get(format!("{}/health", app.base)).send().await.unwrap();
    assert_eq!(json(health).await["status"], "ok");
    let ready = app.client.get(format!("{}/ready", app.base)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body = json(ready).await;
    assert_eq!(body["checks"]["database"]["status"], "up");
    if app.config.redis_url().is_some() {
        assert_eq!(body["checks"]["redis"]["status"], "up");
    }
}

/// Redis down: the server still starts and serves, and `/ready` says what
/// is wrong quickly instead of hanging.
#[tokio::test]
async fn ready_names_a_redis_that_is_down_and_answers_fast() {
    let dir = tempfile::tempdir().unwrap();
    let figment = test_config(dir.path()).merge(("redis_url", "redis://127.0.0.1:1"));
    let app = TestApp::spawn_with(figment, dir).await;
    let started = Instant::now();
    let res = app.client.get(format!("{}/ready", app.base)).send().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    let body = assert_problem(res, 503, "service_unavailable").await;
    assert_eq!(body["checks"]["redis"]["status"], "down");
    assert_eq!(body["checks"]["database"]["status"], "up");
    assert!(body["detail"].as_str().unwrap().contains("redis"));
    // Everything that does not need Redis keeps working.
    let tenant = app.register().await;
    assert_eq!(app.get("/api/v1/auth/me", &tenant.token).await.status(), 200);
}
