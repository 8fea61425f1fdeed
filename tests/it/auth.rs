use nexus::platform::tenancy::SystemScope;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, assert_problem, json, unique};

#[tokio::test]
async fn register_creates_a_tenant_whose_owner_is_admin() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let me = json(app.get("/api/v1/auth/me", &tenant.token).await).await;
    assert_eq!(me["data"]["user"]["email"], tenant.admin_email.as_str());
    assert_eq!(me["data"]["roles"], json!(["admin"]));
    assert_eq!(me["data"]["tenant"]["slug"], tenant.slug.as_str());

    // The slug is unique: a second registration with it is a conflict.
    let res = app
        .send_json(
            Method::POST,
            "/api/v1/auth/register",
            None,
            json!({"tenant_name": "Copy", "tenant_slug": tenant.slug, "name": "X", "email": "x@example.com", "password": PASSWORD}),
        )
        .await;
    assert_problem(res, 409, "conflict").await;
}

#[tokio::test]
async fn register_validates_every_field_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let slug = unique("bad");
    let res = app
        .send_json(
            Method::POST,
            "/api/v1/auth/register",
            None,
            json!({"tenant_name": " ", "tenant_slug": slug, "name": "", "email": "not-an-email", "password": "short"}),
        )
        .await;
    let body = assert_problem(res, 422, "validation_failed").await;
    let fields: Vec<&str> =
        body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["tenant_name", "name", "email", "password"]);
    let login = app.login(&slug, "not-an-email", "short").await;
    assert_problem(login, 401, "invalid_credentials").await;
}

#[tokio::test]
async fn login_returns_a_working_token_and_wrong_passwords_do_not() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let res = app.login(&tenant.slug, &tenant.admin_email.to_uppercase(), PASSWORD).await;
    assert_eq!(res.status(), 200);
    let body = json(res).await;
    assert_eq!(body["data"]["token_type"], "Bearer");
    let token = body["data"]["token"].as_str().unwrap();
    assert_eq!(app.get("/api/v1/auth/me", token).await.status(), 200);

    let wrong = app.login(&tenant.slug, &tenant.admin_email, "wrong password 1").await;
    assert_problem(wrong, 401, "invalid_credentials").await;
}

#[tokio::test]
async fn five_failures_lock_the_account_without_revealing_it() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let unknown = app.login(&tenant.slug, "nobody@example.com", PASSWORD).await;
    let unknown_detail = assert_problem(unknown, 401, "invalid_credentials").await["detail"].clone();

    for _ in 0..5 {
        let res = app.login(&tenant.slug, &tenant.admin_email, "wrong password 1").await;
        assert_problem(res, 401, "invalid_credentials").await;
    }
    // Locked: even the right password is refused, with the very same answer
    // an unknown email gets.
    let locked = app.login(&tenant.slug, &tenant.admin_email, PASSWORD).await;
    let body = assert_problem(locked, 401, "invalid_credentials").await;
    assert_eq!(body["detail"], unknown_detail);

    let user = users_row(&app, tenant.admin_id).await;
    assert!(user.locked_until.is_some_and(|t| t > chrono::Utc::now() + chrono::Duration::minutes(14)));
    assert_eq!(user.failed_login_attempts, 0, "the count restarts once locked");
    // Tokens issued before the lock keep working: the lock is about logins.
    assert_eq!(app.get("/api/v1/auth/me", &tenant.token).await.status(), 200);
}

async fn users_row(app: &TestApp, id: uuid::Uuid) -> entity::user::Model {
    SystemScope.find_by_id::<entity::user::Entity>(id).one(&app.state.db).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_success_resets_the_failure_count() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    for _ in 0..4 {
        app.login(&tenant.slug, &tenant.admin_email, "wrong password 1").await;
    }
    assert_eq!(users_row(&app, tenant.admin_id).await.failed_login_attempts, 4);
    assert_eq!(app.login(&tenant.slug, &tenant.admin_email, PASSWORD).await.status(), 200);
    assert_eq!(users_row(&app, tenant.admin_id).await.failed_login_attempts, 0);
    let res = app.login(&tenant.slug, &tenant.admin_email, "wrong password 1").await;
    assert_problem(res, 401, "invalid_credentials").await;
    assert_eq!(app.login(&tenant.slug, &tenant.admin_email, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn personal_tokens_are_shown_once_listed_and_revoked_everywhere() {
    let app = TestApp::spawn().await;
    let other_instance = app.sibling().await;
    let tenant = app.register().await;

    let res = app
        .post("/api/v1/auth/tokens", &tenant.token, json!({"name": "ci-pipeline", "expires_in_days": 7}))
        .await;
    assert_eq!(res.status(), 201);
    let created = json(res).await;
    let token = created["data"]["token"].as_str().unwrap().to_owned();
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(other_instance.get("/api/v1/auth/me", &token).await.status(), 200);

    let list = json(app.get("/api/v1/auth/tokens", &token).await).await;
    let listed = list["data"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "the registration session and the new token");
    let entry = listed.iter().find(|t| t["id"] == id.as_str()).unwrap();
    assert_eq!(entry["kind"], "personal");
    assert_eq!(entry["current"], true);
    assert!(entry.get("token").is_none(), "a token's value is never shown again");

    let res = app
        .request(Method::DELETE, &format!("/api/v1/auth/tokens/{id}"), Some(&tenant.token))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    // Refused at once on this instance; the other one had the caller cached
    // and refuses within `auth.principal_cache_ms` (1 s).
    let revoked = std::time::Instant::now();
    assert_problem(app.get("/api/v1/auth/me", &token).await, 401, "unauthenticated").await;
    while other_instance.get("/api/v1/auth/me", &token).await.status() == 200 {
        assert!(revoked.elapsed() < std::time::Duration::from_millis(1500), "still accepted after 1.5 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_problem(other_instance.get("/api/v1/auth/me", &token).await, 401, "unauthenticated").await;
    // Revoking again, or a token that is not yours, is not found.
    let again = app
        .request(Method::DELETE, &format!("/api/v1/auth/tokens/{id}"), Some(&tenant.token))
        .send()
        .await
        .unwrap();
    assert_problem(again, 404, "not_found").await;
}

#[tokio::test]
async fn logout_revokes_the_current_token_only() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let second = app.token_for(&tenant.slug, &tenant.admin_email).await;
    let res = app.request(Method::POST, "/api/v1/auth/logout", Some(&second)).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_problem(app.get("/api/v1/auth/me", &second).await, 401, "unauthenticated").await;
    assert_eq!(app.get("/api/v1/auth/me", &tenant.token).await.status(), 200);
}

#[tokio::test]
async fn forged_expired_and_malformed_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    // Signed with another secret.
    let keys = nexus::platform::auth::TokenKeys::new("another-secret-that-is-long-enough-000");
    let claims = nexus::platform::auth::Claims {
        sub: tenant.admin_id,
        tid: tenant.id,
        jti: uuid::Uuid::now_v7(),
        iat: 0,
        exp: chrono::Utc::now().timestamp() + 3600,
    };
    let forged = keys.sign(&claims).unwrap();
    assert_problem(app.get("/api/v1/auth/me", &forged).await, 401, "unauthenticated").await;
    // Properly signed but expired.
    let expired = app.state.keys.sign(&nexus::platform::auth::Claims { exp: 1, ..claims }).unwrap();
    assert_problem(app.get("/api/v1/auth/me", &expired).await, 401, "unauthenticated").await;
    // Not a bearer header at all.
    let res = app
        .request(Method::GET, "/api/v1/auth/me", None)
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    let body = assert_problem(res, 401, "unauthenticated").await;
    assert!(body["detail"].as_str().unwrap().contains("Bearer"));
}

#[tokio::test]
async fn a_disabled_user_is_refused_at_once() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let (id, token) = app.user_with_roles(&tenant, &["user"]).await;
    assert_eq!(app.get("/api/v1/auth/me", &token).await.status(), 200);
    let res = app.post(&format!("/api/v1/users/{id}/disable"), &tenant.token, json!({})).await;
    assert_eq!(json(res).await["data"]["disabled"], true);
    assert_problem(app.get("/api/v1/auth/me", &token).await, 401, "unauthenticated").await;
    let res = app.post(&format!("/api/v1/users/{id}/enable"), &tenant.token, json!({})).await;
    let user = json(res).await;
    assert_eq!(user["data"]["disabled"], false);
    // Enabled again, the tokens issued before the disable stay dead; a new sign-in works.
    assert_problem(app.get("/api/v1/auth/me", &token).await, 401, "unauthenticated").await;
    let fresh = app.token_for(&tenant.slug, user["data"]["email"].as_str().unwrap()).await;
    assert_eq!(app.get("/api/v1/auth/me", &fresh).await.status(), 200);
    // Nobody disables themselves.
    let res = app.post(&format!("/api/v1/users/{}/disable", tenant.admin_id), &tenant.token, json!({})).await;
    assert_problem(res, 409, "conflict").await;
}

/// Sign-ins are throttled per client address and per account, with the
/// client taken from `X-Forwarded-For` behind a trusted proxy.
#[tokio::test]
async fn sign_in_attempts_are_throttled_per_address_and_per_account() {
    let app = TestApp::spawn_adjusted(|f| {
        f.merge(("http.trusted_proxies", vec!["127.0.0.1"]))
            .merge(("auth.attempts_per_minute_per_address", 3))
            .merge(("auth.attempts_per_minute_per_account", 2))
    })
    .await;
    // Addresses of this run only, so a shared Redis limiter starts afresh.
    let run = uuid::Uuid::now_v7().as_bytes()[10..16].to_vec();
    let address = |n: u8| format!("10.{}.{}.{n}", run[0], run[1]);
    let login = |from: String, tenant: String, email: String| {
        let body = json!({"tenant": tenant, "email": email, "password": "wrong password 1"});
        app.request(Method::POST, "/api/v1/auth/login", None)
            .header("x-forwarded-for", from)
            .json(&body)
            .send()
    };
    let slug = unique("t");

    // One account, from three addresses: the third attempt is one too many.
    for n in 1..=2 {
        let res = login(address(n), slug.clone(), "ada@example.com".into()).await.unwrap();
        assert_eq!(res.status(), 401);
    }
    let res = login(address(3), slug.clone(), "ada@example.com".into()).await.unwrap();
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body = assert_problem(res, 429, "rate_limited").await;
    assert!(body["detail"].as_str().unwrap().contains("account"), "{body}");

    // One address, three accounts: the fourth attempt is one too many, and
    // registration from that address is refused too.
    for n in 1..=3 {
        let res = login(address(9), slug.clone(), format!("user{n}@example.com")).await.unwrap();
        assert_eq!(res.status(), 401);
    }
    let res = login(address(9), slug.clone(), "user4@example.com".into()).await.unwrap();
    let body = assert_problem(res, 429, "rate_limited").await;
    assert!(body["detail"].as_str().unwrap().contains("address"), "{body}");
    let res = app
        .request(Method::POST, "/api/v1/auth/register", None)
        .header("x-forwarded-for", address(9))
        .json(&json!({"tenant_name": "T", "tenant_slug": slug, "name": "N", "email": "n@example.com",
                      "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 429, "rate_limited").await;
    // Another address is not affected.
    let res = login(address(10), slug, "user5@example.com".into()).await.unwrap();
    assert_eq!(res.status(), 401);
}

/// Requests that miss the cached caller and the tenant's governance at the
/// same moment read them once between them: the first reads, the others
/// wait for it (`platform::flight`). Counted from `Server-Timing`.
#[tokio::test]
async fn requests_missing_the_cached_caller_together_resolve_it_once() {
    // Long enough that no entry ages out during the test.
    let app = TestApp::spawn_adjusted(|f| f.merge(("auth.principal_cache_ms", 60_000))).await;
    let tenant = app.register().await;
    let queries = |res: &reqwest::Response| -> u64 {
        let timing = res.headers()["server-timing"].to_str().unwrap().to_owned();
        timing.split('"').nth(1).unwrap().split(' ').next().unwrap().parse().unwrap()
    };
    // A new token (not cached yet) and the tenant's governance forgotten.
    let cold = || async {
        app.state.governance.invalidate(Some(tenant.id)).await;
        let res = app.login(&tenant.slug, &tenant.admin_email, PASSWORD).await;
        json(res).await["data"]["token"].as_str().unwrap().to_owned()
    };
    let path = "/api/v1/products?limit=1";
    let token = cold().await;
    let first = queries(&app.get(path, &token).await);
    let warm = queries(&app.get(path, &token).await);
    assert!(first > warm, "{first} {warm}");

    let token = cold().await;
    let together = futures_util::future::join_all((0..10).map(|_| app.get(path, &token))).await;
    assert!(together.iter().all(|res| res.status() == 200));
    assert_eq!(together.iter().map(queries).sum::<u64>(), first + 9 * warm);
}
