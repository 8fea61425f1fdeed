//! Every kind of bad input gets problem+json with a stable code and changes
//! nothing.

use reqwest::{Method, header::CONTENT_TYPE};
use serde_json::json;

use crate::helpers::{Tenant, TestApp, assert_problem, json};

async fn user_count(app: &TestApp, tenant: &Tenant) -> u64 {
    json(app.get("/api/v1/users?include=total", &tenant.token).await).await["meta"]["total"].as_u64().unwrap()
}

async fn post_raw(
    app: &TestApp,
    tenant: &Tenant,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.request(Method::POST, "/api/v1/users", Some(&tenant.token))
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn bad_bodies_are_refused_with_their_own_codes_and_change_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let before = user_count(&app, &tenant).await;
    let json_type = "application/json";

    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (json_type, br#"{"name": "#.to_vec(), 400, "malformed_json"),
        (json_type, b"".to_vec(), 400, "malformed_json"),
        ("text/plain", br#"{"name":"a"}"#.to_vec(), 415, "unsupported_media_type"),
        (
            json_type,
            br#"{"name":"a\u0000b","email":"a@b.co","password":"correct horse 42"}"#.to_vec(),
            400,
            "invalid_string",
        ),
        (
            json_type,
            br#"{"name":"\ud800","email":"a@b.co","password":"correct horse 42"}"#.to_vec(),
            400,
            "invalid_string",
        ),
        (
            json_type,
            br#"{"name":"\udc00x","email":"a@b.co","password":"correct horse 42"}"#.to_vec(),
            400,
            "invalid_string",
        ),
        (json_type, br#"{"name":"A","email":"a@b.co"}"#.to_vec(), 422, "validation_failed"),
        (
            json_type,
            br#"{"name":7,"email":"a@b.co","password":"correct horse 42"}"#.to_vec(),
            422,
            "validation_failed",
        ),
        (json_type, br#"[1,2]"#.to_vec(), 422, "validation_failed"),
        (json_type, vec![b'{'; 2 * 1024 * 1024], 413, "payload_too_large"),
    ];
    for (content_type, body, status, code) in cases {
        let res = post_raw(&app, &tenant, content_type, body).await;
        assert_problem(res, status, code).await;
    }
    // Raw bytes that are not UTF-8 at all.
    let res = post_raw(&app, &tenant, json_type, vec![b'{', b'"', 0xff, 0xfe, b'"', b'}']).await;
    assert_problem(res, 400, "invalid_string").await;
    assert_eq!(user_count(&app, &tenant).await, before);
}

#[tokio::test]
async fn validation_errors_name_each_field() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let res = app
        .post(
            "/api/v1/users",
            &tenant.token,
            json!({"name": "", "email": "x", "password": "aaaaaaaaaaaaaaaa", "roles": ["admin", "pope"]}),
        )
        .await;
    let body = assert_problem(res, 422, "validation_failed").await;
    let errors = body["errors"].as_array().unwrap();
    let fields: Vec<&str> = errors.iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["name", "email", "password", "roles[1]"]);
    let path =
        json!({"name": "Ok", "email": "a@b.co", "password": "correct horse 42", "roles": ["admin", 3]});
    let res = app.post("/api/v1/users", &tenant.token, path).await;
    let body = assert_problem(res, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "roles[1]");
}

#[tokio::test]
async fn routing_errors_are_problems_too() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    assert_problem(app.get("/api/v1/nothing-here", &tenant.token).await, 404, "not_found").await;
    assert_problem(app.get("/nothing", &tenant.token).await, 404, "not_found").await;
    let res = app.request(Method::DELETE, "/api/v1/auth/me", Some(&tenant.token)).send().await.unwrap();
    assert_eq!(res.headers()["allow"], "GET", "a 405 names the methods the path has");
    assert_problem(res, 405, "method_not_allowed").await;
    // A static path that a `{id}` route of another method also matches.
    let res = app
        .request(Method::PATCH, "/api/v1/webhooks/event-types", Some(&tenant.token))
        .json(&serde_json::json!({"description": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["allow"], "GET");
    assert_problem(res, 405, "method_not_allowed").await;
    // Query counts go to authenticated callers only.
    assert!(app.get("/api/v1/auth/me", &tenant.token).await.headers().contains_key("server-timing"));
    let anonymous = app.request(Method::GET, "/api/v1/auth/me", None).send().await.unwrap();
    assert!(!anonymous.headers().contains_key("server-timing"));
    let path = format!("/api/v1/products/{}", uuid::Uuid::now_v7());
    let res = app.request(Method::PUT, &path, Some(&tenant.token)).send().await.unwrap();
    assert_eq!(res.headers()["allow"], "GET, PATCH");
    assert_problem(app.get("/api/v1/users/not-a-uuid", &tenant.token).await, 400, "invalid_path").await;
    for query in [
        "limit=500",
        "limit=0",
        "limit=-1",
        "limit=abc",
        "limit=9223372036854775808",
        "cursor=garbage",
        "starting_after=not-a-uuid",
        "ending_before=0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11",
        "include=everything",
        "page=2",
        "per_page=10",
        "sort=password_hash",
        "colour=blue",
        "disabled=maybe",
    ] {
        let res = app.get(&format!("/api/v1/users?{query}"), &tenant.token).await;
        assert_problem(res, 400, "invalid_query").await;
    }
    let res = app.get("/api/v1/users?email=a%00b", &tenant.token).await;
    assert_problem(res, 400, "invalid_string").await;
    // A lone surrogate (CESU-8) and other non-UTF-8 escapes in the URL.
    for query in ["email=%ED%A0%80", "email=%FF"] {
        let res = app.get(&format!("/api/v1/users?{query}"), &tenant.token).await;
        assert_problem(res, 400, "invalid_string").await;
    }
}

#[tokio::test]
async fn unauthenticated_requests_get_401_with_a_bearer_challenge() {
    let app = TestApp::spawn().await;
    let res = app.request(Method::GET, "/api/v1/users", None).send().await.unwrap();
    assert_eq!(res.headers().get("www-authenticate").unwrap(), "Bearer");
    assert_problem(res, 401, "unauthenticated").await;
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = TestApp::spawn().await;
    let res = app
        .request(Method::GET, "/health", None)
        .header("x-request-id", "my-trace-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers().get("x-request-id").unwrap(), "my-trace-123");
    let res = app
        .request(Method::GET, "/api/v1/users", None)
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let generated = res.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok());
    let body = assert_problem(res, 401, "unauthenticated").await;
    assert_eq!(body["request_id"], generated.as_str());
}

/// BR-010: a deprecated route is configuration: headers before its sunset,
/// 410 after.
#[tokio::test]
async fn deprecated_routes_warn_then_answer_410() {
    let today = chrono::Utc::now().date_naive();
    let day = |offset: i64| (today + chrono::Duration::days(offset)).to_string();
    let deprecations = json!([
        {"route": "/api/v1/users", "method": "GET", "sunset": day(30), "deprecated_at": day(-1), "successor": "/api/v2/users"},
        {"route": "/api/v1/audit-logs", "sunset": day(0)},
        {"route": "/api/v1/tenant", "sunset": day(200)},
    ]);
    let app = TestApp::spawn_adjusted(|f| f.merge(("api.deprecations", deprecations))).await;
    let tenant = app.register().await;
    let res = app.get("/api/v1/users", &tenant.token).await;
    assert_eq!(res.status(), 200);
    let deprecation = res.headers()["deprecation"].to_str().unwrap();
    assert!(deprecation.starts_with('@') && deprecation[1..].parse::<i64>().is_ok(), "{deprecation}");
    assert!(res.headers()["sunset"].to_str().unwrap().ends_with("GMT"));
    assert_eq!(res.headers()["link"], "</api/v2/users>; rel=\"successor-version\"");
    // Another method of the same route is not deprecated.
    let res = app.post("/api/v1/users", &tenant.token, json!({})).await;
    assert!(res.headers().get("deprecation").is_none());
    // Past its sunset: gone.
    let body = assert_problem(app.get("/api/v1/audit-logs", &tenant.token).await, 410, "gone").await;
    assert!(body["detail"].as_str().unwrap().contains("removed"));
    // Sunset far away: no warning yet (90 days before by default).
    assert!(app.get("/api/v1/tenant", &tenant.token).await.headers().get("deprecation").is_none());
}

/// Every 4xx names the field and says what is expected in an integrator's
/// words, never serde's.
#[tokio::test]
async fn error_messages_name_the_field_in_plain_words() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let fields = |body: &serde_json::Value| -> Vec<(String, String)> {
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["field"].as_str().unwrap().to_owned(), e["message"].as_str().unwrap().to_owned()))
            .collect()
    };
    let product = |body: serde_json::Value| app.post("/api/v1/products", &tenant.token, body);

    let body = assert_problem(
        product(json!({"name": "Bolt", "unit_price": 90, "currency": "EUR"})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(fields(&body), [("sku".to_owned(), "is required".to_owned())]);
    let res = product(json!({"sku": "B", "name": "Bolt", "unit_price": 19.99, "currency": "EUR"})).await;
    let body = assert_problem(res, 422, "validation_failed").await;
    assert_eq!(fields(&body), [("unit_price".to_owned(), "must be a whole number".to_owned())]);
    let res =
        product(json!({"sku": "B", "name": "Bolt", "unit_price": 1, "currency": "EUR", "colour": "red"}))
            .await;
    let body = assert_problem(res, 422, "validation_failed").await;
    assert_eq!(fields(&body)[0].0, "colour");
    assert!(fields(&body)[0].1.starts_with("is not a known field; expected one of sku, name"), "{body}");

    let body =
        assert_problem(app.get("/api/v1/products?search=bolt", &tenant.token).await, 400, "invalid_query")
            .await;
    assert_eq!(fields(&body)[0].0, "search");
    assert!(fields(&body)[0].1.starts_with("is not a known field"), "{body}");
    let body =
        assert_problem(app.get("/api/v1/products?limit=two", &tenant.token).await, 400, "invalid_query")
            .await;
    assert_eq!(fields(&body)[0].1, "must be a whole number");

    let body =
        assert_problem(app.get("/api/v1/products/abc", &tenant.token).await, 400, "invalid_path").await;
    assert_eq!(
        fields(&body),
        [("path".to_owned(), "must be a UUID such as 0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11".to_owned())]
    );
    let text = body.to_string();
    assert!(!text.contains("UUID parsing") && !text.contains("deserialize"), "{text}");
}
