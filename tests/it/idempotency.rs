//! `Idempotency-Key` on POST: the first request runs, the same one again
//! replays its response byte for byte, another request with the key is a
//! 422, a request still in flight a 409. Runs on the database store, or on
//! Redis when NEXUS_TEST_REDIS_URL is set.

use nexus::platform::tenancy::SystemScope;
use std::time::Duration;

use nexus::{
    error::Code,
    platform::{
        idempotency::{Begin, Scope, Store, Stored},
        redis::Redis,
    },
};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{PASSWORD, Tenant, TestApp, assert_problem, json, unique};

async fn post_with_key(app: &TestApp, path: &str, token: &str, key: &str, body: &Value) -> Response {
    app.request(Method::POST, path, Some(token))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn webhook() -> Value {
    json!({"url": "https://example.com/h", "event_types": ["*"]})
}

fn new_user(tenant: &Tenant) -> Value {
    let email = format!("{}@{}.example.com", unique("u"), tenant.slug);
    json!({"name": "Grace", "email": email, "password": PASSWORD})
}

async fn total(app: &TestApp, path: &str, token: &str) -> u64 {
    let path = format!("{path}{}include=total", if path.contains('?') { '&' } else { '?' });
    json(app.get(&path, token).await).await["meta"]["total"].as_u64().unwrap()
}

fn header(res: &Response, name: &str) -> Option<String> {
    res.headers().get(name).map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_same_request_again_replays_the_first_response_byte_for_byte() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let key = unique("key");

    let first = post_with_key(&app, "/api/v1/webhooks", &tenant.token, &key, &webhook()).await;
    assert_eq!(first.status(), 201);
    assert_eq!(header(&first, "idempotent-replayed"), None);
    let first_type = header(&first, "content-type");
    let first_id = header(&first, "x-request-id");
    let first_body = first.bytes().await.unwrap();

    for _ in 0..2 {
        let again = post_with_key(&app, "/api/v1/webhooks", &tenant.token, &key, &webhook()).await;
        assert_eq!(again.status(), 201);
        assert_eq!(header(&again, "idempotent-replayed").as_deref(), Some("true"));
        assert_eq!(header(&again, "content-type"), first_type);
        // A new request (its own id), the first one's answer.
        assert_ne!(header(&again, "x-request-id"), first_id);
        assert_eq!(again.bytes().await.unwrap(), first_body);
    }
    assert_eq!(total(&app, "/api/v1/webhooks", &tenant.token).await, 1);

    // Without the header, nothing changes: the request runs.
    let res = app.post("/api/v1/webhooks", &tenant.token, webhook()).await;
    assert_eq!(res.status(), 201);
    assert_eq!(total(&app, "/api/v1/webhooks", &tenant.token).await, 2);
}

#[tokio::test]
async fn another_request_with_a_used_key_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let key = unique("key");
    let res = post_with_key(&app, "/api/v1/webhooks", &tenant.token, &key, &webhook()).await;
    assert_eq!(res.status(), 201);

    let other = json!({"url": "https://example.com/other", "event_types": ["*"]});
    let res = post_with_key(&app, "/api/v1/webhooks", &tenant.token, &key, &other).await;
    assert_problem(res, 422, "idempotency_conflict").await;
    // Same JSON, other bytes.
    let spaced = serde_json::to_string_pretty(&webhook()).unwrap();
    let res = app
        .request(Method::POST, "/api/v1/webhooks", Some(&tenant.token))
        .header("Idempotency-Key", &key)
        .header("content-type", "application/json")
        .body(spaced)
        .send()
        .await
        .unwrap();
    assert_problem(res, 422, "idempotency_conflict").await;
    // Same body, another query string.
    let res = post_with_key(&app, "/api/v1/webhooks?x=1", &tenant.token, &key, &webhook()).await;
    assert_problem(res, 422, "idempotency_conflict").await;
    assert_eq!(total(&app, "/api/v1/webhooks", &tenant.token).await, 1);

    // The first request still replays.
    let res = post_with_key(&app, "/api/v1/webhooks", &tenant.token, &key, &webhook()).await;
    assert_eq!(header(&res, "idempotent-replayed").as_deref(), Some("true"));
}

#[tokio::test]
async fn a_key_is_scoped_to_its_route_its_user_and_its_tenant() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let key = unique("key");

    let res = post_with_key(&app, "/api/v1/webhooks", &tenant.token, &key, &webhook()).await;
    assert_eq!(res.status(), 201);
    // Another route.
    let res = post_with_key(&app, "/api/v1/users", &tenant.token, &key, &new_user(&tenant)).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    assert_eq!(header(&res, "idempotent-replayed"), None);
    // Another user of the same tenant, same route and body.
    let (_, other_admin) = app.user_with_roles(&tenant, &["admin"]).await;
    let res = post_with_key(&app, "/api/v1/webhooks", &other_admin, &key, &webhook()).await;
    assert_eq!(res.status(), 201);
    assert_eq!(header(&res, "idempotent-replayed"), None);
    assert_eq!(total(&app, "/api/v1/webhooks", &tenant.token).await, 2);
    // Another tenant.
    let other = app.register().await;
    let res = post_with_key(&app, "/api/v1/webhooks", &other.token, &key, &webhook()).await;
    assert_eq!(res.status(), 201);
    assert_eq!(header(&res, "idempotent-replayed"), None);
    assert_eq!(total(&app, "/api/v1/webhooks", &other.token).await, 1);
}

#[tokio::test]
async fn a_malformed_key_is_a_bad_request() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let long = "k".repeat(256);
    let bad: [&[u8]; 4] = [b"", long.as_bytes(), b"with space", "cl\u{e9}".as_bytes()];
    for key in bad {
        let res = app
            .request(Method::POST, "/api/v1/webhooks", Some(&tenant.token))
            .header("Idempotency-Key", reqwest::header::HeaderValue::from_bytes(key).unwrap())
            .json(&webhook())
            .send()
            .await
            .unwrap();
        assert_problem(res, 400, "invalid_header").await;
    }
    let res = app
        .request(Method::POST, "/api/v1/webhooks", Some(&tenant.token))
        .header("Idempotency-Key", "a")
        .header("Idempotency-Key", "b")
        .json(&webhook())
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "invalid_header").await;
    assert_eq!(total(&app, "/api/v1/webhooks", &tenant.token).await, 0);
    // 255 visible ASCII characters are a key.
    let res = post_with_key(&app, "/api/v1/webhooks", &tenant.token, &"k".repeat(255), &webhook()).await;
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn only_authenticated_posts_are_concerned() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    // Login has no caller yet: the header is ignored, even a malformed one.
    for _ in 0..2 {
        let res = app
            .request(Method::POST, "/api/v1/auth/login", None)
            .header("Idempotency-Key", "with space")
            .json(&json!({"tenant": tenant.slug, "email": tenant.admin_email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(header(&res, "idempotent-replayed"), None);
    }
    // Reads are not concerned either.
    let res = app
        .request(Method::GET, "/api/v1/webhooks", Some(&tenant.token))
        .header("Idempotency-Key", "with space")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_client_error_is_kept_and_replayed_too() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let key = unique("key");
    let bad = json!({"url": "not a url", "event_types": ["*"]});
    let first = post_with_key(&app, "/api/v1/webhooks", &tenant.token, &key, &bad).await;
    assert_eq!(first.status(), 422);
    let first_body: Value = first.json().await.unwrap();
    let again = post_with_key(&app, "/api/v1/webhooks", &tenant.token, &key, &bad).await;
    assert_eq!(header(&again, "idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(header(&again, "content-type").as_deref(), Some("application/problem+json"));
    assert_eq!(again.status(), 422);
    // Byte for byte: even the first request's id in the problem.
    assert_eq!(again.json::<Value>().await.unwrap(), first_body);
}

/// Two identical requests with one key at once create one thing. A vendor
/// has no unique field, so only the key can keep the second from creating
/// another: the test tells the in-flight guard from a unique constraint.
async fn simultaneous_identical_requests_create_one_thing(app: TestApp) {
    let tenant = app.register().await;
    let before = total(&app, "/api/v1/vendors", &tenant.token).await;
    let key = unique("key");
    let body = json!({"name": "Acme Supplies", "currency": "EUR"});

    let answers = futures_util::future::join_all(
        (0..4).map(|_| post_with_key(&app, "/api/v1/vendors", &tenant.token, &key, &body)),
    )
    .await;
    let mut created = Vec::new();
    for res in answers {
        let replayed = header(&res, "idempotent-replayed").is_some();
        match (res.status().as_u16(), replayed) {
            (201, _) => created.push(res.bytes().await.unwrap()),
            (409, false) => {
                let problem: Value = res.json().await.unwrap();
                assert!(problem["detail"].as_str().unwrap().contains("Idempotency-Key"), "{problem}");
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(created.windows(2).all(|w| w[0] == w[1]), "replays differ");
    assert_eq!(total(&app, "/api/v1/vendors", &tenant.token).await, before + 1);
    // Once done, the request replays.
    let res = post_with_key(&app, "/api/v1/vendors", &tenant.token, &key, &body).await;
    assert_eq!(res.status(), 201);
    assert_eq!(header(&res, "idempotent-replayed").as_deref(), Some("true"));
}

#[tokio::test]
async fn two_simultaneous_identical_requests_create_one_thing() {
    simultaneous_identical_requests_create_one_thing(TestApp::spawn().await).await;
}

/// The same with the database store, whatever the run configures (with
/// PostgreSQL, its in-flight claim on PostgreSQL).
#[tokio::test]
async fn the_database_store_holds_a_key_in_flight_too() {
    let app = TestApp::spawn_adjusted(|f| f.merge(("redis_url", ""))).await;
    simultaneous_identical_requests_create_one_thing(app).await;
}

fn scope(tenant: &Tenant) -> Scope {
    Scope {
        tenant_id: tenant.id,
        user_id: Uuid::now_v7(),
        route: "/api/v1/things".into(),
        key: unique("key"),
    }
}

fn stored(body: &str) -> Stored {
    Stored {
        status: 201,
        headers: vec![("content-type".into(), "application/json".into()), ("location".into(), "/x/1".into())],
        body: body.as_bytes().to_vec(),
    }
}

/// The app's own store (database, or Redis when configured).
fn store(app: &TestApp) -> Store {
    app.state.idempotency.clone()
}

#[tokio::test]
async fn a_lapsed_claim_or_an_expired_response_frees_the_key() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let lease = Duration::from_millis(800);
    let store = store(&app).with_lease(lease).with_retention(lease);
    let scope = scope(&tenant);

    let Begin::Claimed(crashed) = store.begin(&scope, "fp").await.unwrap() else { panic!("not claimed") };
    assert!(matches!(store.begin(&scope, "fp").await.unwrap(), Begin::InFlight));
    assert!(matches!(store.begin(&scope, "other").await.unwrap(), Begin::Mismatch));

    // The first holder died: once its lease is over, the key is new again.
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    let Begin::Claimed(claim) = store.begin(&scope, "fp2").await.unwrap() else { panic!("not reclaimed") };
    // The late finisher cannot overwrite its successor.
    assert!(!store.complete(&crashed, &stored("late")).await.unwrap());
    store.release(&crashed).await.unwrap();
    assert!(matches!(store.begin(&scope, "fp2").await.unwrap(), Begin::InFlight));
    assert!(store.complete(&claim, &stored("{\"ok\":true}")).await.unwrap());
    match store.begin(&scope, "fp2").await.unwrap() {
        Begin::Replay(replayed) => assert_eq!(replayed, stored("{\"ok\":true}")),
        other => panic!("expected a replay, got {other:?}"),
    }
    assert!(matches!(store.begin(&scope, "fp").await.unwrap(), Begin::Mismatch));

    // Past its retention the response is gone and the key free.
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    assert!(store.prune().await.is_ok());
    let Begin::Claimed(claim) = store.begin(&scope, "fp3").await.unwrap() else { panic!("not free") };
    // A released key is free at once.
    store.release(&claim).await.unwrap();
    assert!(matches!(store.begin(&scope, "fp4").await.unwrap(), Begin::Claimed(_)));
}

#[tokio::test]
async fn the_database_store_prunes_expired_keys_and_seals_bodies() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    // Long enough that the replay below comes within it on a loaded
    // machine (200 ms was not, once), short enough to wait out.
    let short = Duration::from_secs(2);
    let store =
        Store::database(app.state.db.clone()).with_retention(short).with_cipher(app.state.cipher.clone());
    let scope = scope(&tenant);
    let secret = "whsec_do-not-keep-in-clear";

    let Begin::Claimed(claim) = store.begin(&scope, "fp").await.unwrap() else { panic!("not claimed") };
    assert!(store.complete(&claim, &stored(secret)).await.unwrap());
    use sea_orm::{ColumnTrait, QueryFilter};
    let row = SystemScope
        .find::<entity::idempotency_key::Entity>()
        .filter(entity::idempotency_key::Column::Key.eq(scope.key.as_str()))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let kept = row.response_body.unwrap();
    assert!(row.response_sealed && !String::from_utf8_lossy(&kept).contains("whsec_"));
    match store.begin(&scope, "fp").await.unwrap() {
        Begin::Replay(replayed) => assert_eq!(replayed, stored(secret)),
        other => panic!("expected a replay, got {other:?}"),
    }

    tokio::time::sleep(short + Duration::from_millis(200)).await;
    assert!(store.prune().await.unwrap() >= 1);
    let left = SystemScope
        .find::<entity::idempotency_key::Entity>()
        .filter(entity::idempotency_key::Column::Key.eq(scope.key.as_str()))
        .one(&app.state.db)
        .await
        .unwrap();
    assert!(left.is_none());
}

#[tokio::test]
async fn an_unreachable_redis_is_a_503_not_a_skipped_key() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let timeout = Duration::from_millis(300);
    let redis = Redis::new("redis://127.0.0.1:1", timeout).unwrap();
    let store = Store::redis(redis).with_timeout(timeout);
    let started = std::time::Instant::now();
    let err = store.begin(&scope(&tenant), "fp").await.unwrap_err();
    assert_eq!(err.code, Code::ServiceUnavailable);
    assert!(started.elapsed() < Duration::from_secs(3));
}
