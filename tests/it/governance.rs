//! Licenses, feature toggles, rate limits and usage quotas, over HTTP.

use chrono::{Duration, Utc};
use nexus::platform::license::key;
use nexus::platform::tenancy::SystemScope;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, Tenant, TestApp, assert_problem, json, unique};

/// The private half of the development license key (config/default.toml
/// holds the public half; production refuses it).
const DEV_SIGNING_KEY: &str = "oPNF7XY9c6XmzMWnRJrPSPerqnlS3kMt1iNZZ7Aw5Dk=";

async fn put(app: &TestApp, path: &str, token: &str, body: Value) -> reqwest::Response {
    app.send_json(Method::PUT, path, Some(token), body).await
}

/// Set the tenant's license as a super-admin would.
async fn assign(app: &TestApp, root: &str, tenant: &Tenant, body: Value) {
    let res = put(app, &format!("/api/v1/admin/tenants/{}/license", tenant.id), root, body).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

async fn new_user(app: &TestApp, tenant: &Tenant) -> reqwest::Response {
    let email = format!("{}@{}.example.com", unique("u"), tenant.slug);
    app.post("/api/v1/users", &tenant.token, json!({"name": "N", "email": email, "password": PASSWORD})).await
}

#[tokio::test]
async fn a_toggle_switched_off_answers_403_at_once_and_200_when_on_again() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    assert_eq!(app.get("/api/v1/webhooks", &tenant.token).await.status(), 200);

    let res = put(&app, "/api/v1/features/feature.webhooks", &tenant.token, json!({"enabled": false})).await;
    let body = json(res).await;
    assert_eq!(body["data"]["enabled"], false);
    assert_eq!(body["data"]["source"], "tenant");
    let refused =
        assert_problem(app.get("/api/v1/webhooks", &tenant.token).await, 403, "feature_disabled").await;
    assert!(refused["detail"].as_str().unwrap().contains("feature.webhooks"), "{refused}");
    // GraphQL fields of the feature answer the same code.
    let res = app
        .post("/graphql", &tenant.token, json!({"query": "{ webhookEndpoints { pageInfo { total } } }"}))
        .await;
    assert_eq!(json(res).await["errors"][0]["extensions"]["code"], "feature_disabled");

    put(&app, "/api/v1/features/feature.webhooks", &tenant.token, json!({"enabled": true})).await;
    assert_eq!(app.get("/api/v1/webhooks", &tenant.token).await.status(), 200);

    // Every key is listed with why it is on or off.
    let features = json(app.get("/api/v1/features", &tenant.token).await).await;
    let analytics = features["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "feature.advanced-analytics")
        .unwrap();
    assert_eq!((analytics["enabled"].clone(), analytics["source"].clone()), (json!(false), json!("license")));
    // A key beyond the license cannot be switched on; an unknown key is 404.
    let res =
        put(&app, "/api/v1/features/feature.advanced-analytics", &tenant.token, json!({"enabled": true}))
            .await;
    assert_problem(res, 403, "license_limit").await;
    let res = put(&app, "/api/v1/features/feature.nope", &tenant.token, json!({"enabled": true})).await;
    assert_problem(res, 404, "not_found").await;
    // The change was announced.
    app.drained().await;
    assert_eq!(app.events(tenant.id, "feature.toggled").await.len(), 2);
}

#[tokio::test]
async fn graphql_itself_is_a_feature() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    put(&app, "/api/v1/features/feature.graphql", &tenant.token, json!({"enabled": false})).await;
    let res = app.post("/graphql", &tenant.token, json!({"query": "{ me { email } }"})).await;
    assert_problem(res, 403, "feature_disabled").await;
}

#[tokio::test]
async fn global_values_apply_to_every_tenant_and_removed_answers_410() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.register().await, app.register().await);
    let root = app.super_admin(&a).await;
    let res =
        put(&app, "/api/v1/admin/features/feature.bulk-operations", &root, json!({"state": "enabled"})).await;
    assert_eq!(res.status(), 204);
    let features = json(app.get("/api/v1/features", &b.token).await).await;
    let bulk =
        features["data"].as_array().unwrap().iter().find(|f| f["key"] == "feature.bulk-operations").unwrap();
    assert_eq!((bulk["enabled"].clone(), bulk["source"].clone()), (json!(true), json!("global")));

    let res = put(&app, "/api/v1/admin/features/feature.webhooks", &root, json!({"state": "removed"})).await;
    assert_eq!(res.status(), 204);
    assert_problem(app.get("/api/v1/webhooks", &b.token).await, 410, "gone").await;
    let res = app
        .request(Method::DELETE, "/api/v1/admin/features/feature.webhooks", Some(&root))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(app.get("/api/v1/webhooks", &b.token).await.status(), 200);
    // Tenant admins cannot set global values.
    let res =
        put(&app, "/api/v1/admin/features/feature.webhooks", &a.token, json!({"state": "removed"})).await;
    assert_problem(res, 403, "forbidden").await;
}

/// BR-006 through the API: the dates a super-admin sets move the tenant
/// through grace (reads only) to expired (license endpoints only).
#[tokio::test]
async fn license_expiry_allows_reads_in_grace_then_only_the_license() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let root = app.super_admin(&tenant).await;
    let license = json(app.get("/api/v1/license", &tenant.token).await).await;
    assert_eq!(license["data"]["state"], "trial");
    assert_eq!(license["data"]["tier"], "professional");

    // Paid, 10 days left: expiring soon, with a warning on every response.
    let soon = Utc::now() + Duration::days(10);
    assign(&app, &root, &tenant, json!({"tier": "basic", "expires_at": soon})).await;
    let res = app.get("/api/v1/users", &tenant.token).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["x-license-warning"].to_str().unwrap().contains("expires in"));

    // Expired 3 days ago: grace, reads only.
    assign(&app, &root, &tenant, json!({"expires_at": Utc::now() - Duration::days(3)})).await;
    assert_eq!(app.get("/api/v1/users", &tenant.token).await.status(), 200);
    let before =
        json(app.get("/api/v1/users?include=total", &tenant.token).await).await["meta"]["total"].clone();
    assert_problem(new_user(&app, &tenant).await, 403, "license_read_only").await;
    assert_eq!(
        json(app.get("/api/v1/users?include=total", &tenant.token).await).await["meta"]["total"],
        before
    );
    let license = json(app.get("/api/v1/license", &tenant.token).await).await;
    assert_eq!(license["data"]["state"], "grace");

    // Past the 14 days of grace: nothing but auth and the license.
    assign(&app, &root, &tenant, json!({"expires_at": Utc::now() - Duration::days(15)})).await;
    assert_problem(app.get("/api/v1/users", &tenant.token).await, 403, "license_expired").await;
    assert_eq!(app.get("/api/v1/license", &tenant.token).await.status(), 200);
    assert_eq!(app.get("/api/v1/auth/me", &tenant.token).await.status(), 200);

    // Suspended: reads only; terminated: closed.
    assign(
        &app,
        &root,
        &tenant,
        json!({"status": "suspended", "expires_at": Utc::now() + Duration::days(90)}),
    )
    .await;
    assert_eq!(app.get("/api/v1/users", &tenant.token).await.status(), 200);
    assert_problem(new_user(&app, &tenant).await, 403, "license_suspended").await;
    assign(&app, &root, &tenant, json!({"status": "terminated"})).await;
    assert_problem(app.get("/api/v1/users", &tenant.token).await, 403, "license_terminated").await;
    assign(&app, &root, &tenant, json!({"status": "active"})).await;
    assert_eq!(app.get("/api/v1/users", &tenant.token).await.status(), 200);

    // Only super-admins assign; bad values are refused.
    let res =
        put(&app, &format!("/api/v1/admin/tenants/{}/license", tenant.id), &tenant.token, json!({})).await;
    assert_problem(res, 403, "forbidden").await;
    let res =
        put(&app, &format!("/api/v1/admin/tenants/{}/license", tenant.id), &root, json!({"tier": "gold"}))
            .await;
    assert_problem(res, 422, "validation_failed").await;
}

#[tokio::test]
async fn the_61st_request_within_a_minute_on_basic_answers_429() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let root = app.super_admin(&tenant).await;
    assign(&app, &root, &tenant, json!({"tier": "basic", "expires_at": Utc::now() + Duration::days(365)}))
        .await;
    let (_, token) = app.user_with_roles(&tenant, &["viewer"]).await;
    // GCRA refills one request a second: count what passes until the first
    // refusal, and allow for the seconds the loop itself took.
    let started = std::time::Instant::now();
    let mut allowed = 0u64;
    let refused = loop {
        let res = app.get("/api/v1/tenant", &token).await;
        if res.status() == 429 {
            break res;
        }
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-ratelimit-limit"], "60");
        if allowed == 0 {
            assert_eq!(res.headers()["x-ratelimit-remaining"], "59");
        }
        assert!(res.headers().contains_key("x-ratelimit-reset"));
        allowed += 1;
        assert!(allowed <= 200, "never refused");
    };
    let slack = started.elapsed().as_secs() + 1;
    assert!((60..=60 + slack).contains(&allowed), "{allowed} passed in {slack} s");
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["x-ratelimit-remaining"], "0");
    assert_problem(refused, 429, "rate_limited").await;
    // Another user of the tenant has their own budget.
    assert_eq!(app.get("/api/v1/tenant", &tenant.token).await.status(), 200);
    // The rejection is counted for the tenant.
    let license = json(app.get("/api/v1/license", &tenant.token).await).await;
    assert_eq!(license["data"]["usage"]["rate_limited"], 1);
}

/// With Redis unreachable the limits fall back to each instance: requests
/// are served, limited and counted, and /ready says what is wrong.
#[tokio::test]
async fn an_unreachable_redis_leaves_the_rate_limiter_failing_open() {
    let app = TestApp::spawn_adjusted(|f| {
        f.merge(("redis_url", "redis://127.0.0.1:1")).merge(("http.redis_timeout_ms", 200))
    })
    .await;
    let tenant = app.register().await;
    let res = app.get("/api/v1/tenant", &tenant.token).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-ratelimit-limit"], "120");
    assert_eq!(res.headers()["x-ratelimit-remaining"], "119");
    let res = app.request(Method::GET, "/ready", None).send().await.unwrap();
    let body = assert_problem(res, 503, "service_unavailable").await;
    assert_eq!(body["checks"]["redis"]["status"], "down");
    assert_eq!(body["checks"]["rate_limiter"]["status"], "degraded", "{body}");
}

/// Two instances on one Redis count one limit.
#[tokio::test]
#[ignore = "needs Redis: set NEXUS_TEST_REDIS_URL and run with --include-ignored (.ci/run does)"]
async fn instances_sharing_redis_share_one_limit() {
    std::env::var("NEXUS_TEST_REDIS_URL").expect("this test needs Redis");
    let first = TestApp::spawn().await;
    let second = first.sibling().await;
    let tenant = first.register().await;
    let root = first.super_admin(&tenant).await;
    assign(&first, &root, &tenant, json!({"tier": "basic", "expires_at": Utc::now() + Duration::days(365)}))
        .await;
    second.state.governance.invalidate(Some(tenant.id)).await;
    let (_, token) = first.user_with_roles(&tenant, &["viewer"]).await;
    // Alternate instances until the first refusal: with one shared budget
    // that is about 60 requests (plus one per second of refill); counted per
    // instance it would be 120.
    let started = std::time::Instant::now();
    let mut allowed = 0u64;
    loop {
        let app = if allowed.is_multiple_of(2) { &first } else { &second };
        let res = app.get("/api/v1/tenant", &token).await;
        if res.status() == 429 {
            break;
        }
        assert_eq!(res.status(), 200);
        allowed += 1;
        assert!(allowed <= 200, "never refused");
    }
    let slack = started.elapsed().as_secs() + 1;
    assert!((60..=60 + slack).contains(&allowed), "{allowed} passed in {slack} s");
}

/// Two deployments on one Redis with different `redis_key_prefix`es share
/// nothing there: not a rate limit, not an Idempotency-Key, not a channel.
#[tokio::test]
#[ignore = "needs Redis: set NEXUS_TEST_REDIS_URL and run with --include-ignored (.ci/run does)"]
async fn deployments_with_their_own_redis_key_prefix_share_nothing_in_redis() {
    use futures_util::StreamExt;
    let url = std::env::var("NEXUS_TEST_REDIS_URL").expect("this test needs Redis");
    let (a, b) = (format!("{}:", unique("a")), format!("{}:", unique("b")));
    let first = TestApp::spawn_adjusted(|f| f.merge(("redis_key_prefix", a.clone()))).await;
    let second = first.sibling_adjusted(|f| f.merge(("redis_key_prefix", b.clone()))).await;
    let client = redis::Client::open(url).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    // The two deployments' channels only: other tests publish on Redis too.
    pubsub.psubscribe(format!("{a}*")).await.unwrap();
    pubsub.psubscribe(format!("{b}*")).await.unwrap();
    let mut messages = pubsub.into_on_message();

    let tenant = first.register().await;
    // An Idempotency-Key answered by one deployment is unknown to the other.
    let email = format!("{}@{}.example.com", unique("u"), tenant.slug);
    let body = json!({"name": "N", "email": email, "password": PASSWORD});
    let post = |app: &TestApp| {
        app.request(Method::POST, "/api/v1/users", Some(&tenant.token))
            .header("Idempotency-Key", "one-key")
            .json(&body)
            .send()
    };
    assert_eq!(post(&first).await.unwrap().status(), 201);
    let again = post(&second).await.unwrap();
    assert!(again.headers().get("idempotent-replayed").is_none(), "replayed across deployments");
    assert_eq!(again.status(), 409, "ran again: the email is taken");
    // Channels carry the prefix: a governance change is announced on `<a>governance`.
    put(&first, "/api/v1/features/feature.webhooks", &tenant.token, json!({"enabled": false})).await;
    let channel = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let channel = messages.next().await.unwrap().get_channel_name().to_owned();
            if channel.ends_with("governance") {
                return channel;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(channel, format!("{a}governance"));

    // The first deployment's limit used up leaves the second's whole.
    let root = first.super_admin(&tenant).await;
    assign(&first, &root, &tenant, json!({"tier": "basic", "expires_at": Utc::now() + Duration::days(365)}))
        .await;
    second.state.governance.invalidate(Some(tenant.id)).await;
    let (_, token) = first.user_with_roles(&tenant, &["viewer"]).await;
    let mut allowed = 0;
    while first.get("/api/v1/tenant", &token).await.status() == 200 {
        allowed += 1;
        assert!(allowed <= 200, "never refused");
    }
    assert_eq!(second.get("/api/v1/tenant", &token).await.status(), 200, "the limit was shared");

    // Every key either deployment wrote is under its own prefix.
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for prefix in [&a, &b] {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut conn).await.unwrap();
        assert!(keys.iter().any(|k| k.starts_with(&format!("{prefix}rl:"))), "{prefix}: {keys:?}");
    }
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{a}*")).query_async(&mut conn).await.unwrap();
    assert!(keys.iter().any(|k| k.starts_with(&format!("{a}idempotency:"))), "{keys:?}");
}

#[tokio::test]
async fn user_and_api_call_limits_are_enforced() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let root = app.super_admin(&tenant).await;
    // The owner and the super-admin are two active users.
    assign(&app, &root, &tenant, json!({"max_users": 3})).await;
    assert_eq!(new_user(&app, &tenant).await.status(), 201);
    let refused = assert_problem(new_user(&app, &tenant).await, 403, "license_limit").await;
    assert!(refused["detail"].as_str().unwrap().contains("3 active users"), "{refused}");

    assign(&app, &root, &tenant, json!({"api_calls_per_month": 0})).await;
    let refused = assert_problem(app.get("/api/v1/users", &tenant.token).await, 403, "license_limit").await;
    assert!(refused["detail"].as_str().unwrap().contains("API calls"));
    let license = json(app.get("/api/v1/license", &tenant.token).await).await;
    assert_eq!(license["data"]["limits"]["api_calls_per_month"], 0);
    assert!(license["data"]["usage"]["calls"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_signed_key_upgrades_the_license_and_a_forged_one_is_refused() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let signer = key::signing_key(DEV_SIGNING_KEY).unwrap();
    let grant = |tenant_id, tier: &str| key::Grant {
        key_id: unique("lk"),
        tenant_id,
        tier: tier.to_owned(),
        starts_at: Utc::now(),
        expires_at: Utc::now() + Duration::days(365),
        max_users: Some(500),
        api_calls_per_month: None,
        issued_at: Utc::now(),
    };
    let good = key::sign(&signer, &grant(tenant.id, "enterprise")).unwrap();
    let res = app.post("/api/v1/license/key", &tenant.token, json!({"key": good})).await;
    let body = json(res).await;
    assert_eq!(body["data"]["tier"], "enterprise", "{body}");
    assert_eq!(body["data"]["state"], "active");
    assert_eq!(body["data"]["limits"]["max_users"], 500);
    let features = json(app.get("/api/v1/features", &tenant.token).await).await;
    assert!(
        features["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["key"] == "feature.advanced-analytics" && f["source"] != "license")
    );

    // Another tenant's key, a key from another vendor key, a tampered key.
    let other = key::sign(&signer, &grant(uuid::Uuid::now_v7(), "enterprise")).unwrap();
    let res = app.post("/api/v1/license/key", &tenant.token, json!({"key": other})).await;
    assert_problem(res, 422, "validation_failed").await;
    let (foreign_private, _) = key::generate();
    let foreign =
        key::sign(&key::signing_key(&foreign_private).unwrap(), &grant(tenant.id, "enterprise")).unwrap();
    let res = app.post("/api/v1/license/key", &tenant.token, json!({"key": foreign})).await;
    assert_problem(res, 422, "validation_failed").await;
    let res = app.post("/api/v1/license/key", &tenant.token, json!({"key": format!("{good}x")})).await;
    assert_problem(res, 422, "validation_failed").await;
}

#[tokio::test]
async fn license_and_features_over_graphql() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let query = |q: &str| app.post("/graphql", &tenant.token, json!({ "query": q }));
    let body = json(query("{ license { tier state limits { maxUsers userRatePerMinute } } features { key enabled source } }").await).await;
    assert_eq!(body["data"]["license"]["state"], "TRIAL", "{body}");
    assert_eq!(body["data"]["license"]["limits"]["userRatePerMinute"], 120);
    // The platform's four features and the four modules of this build.
    assert_eq!(body["data"]["features"].as_array().unwrap().len(), 8);
    let body = json(
        query(r#"mutation { setFeature(key: "feature.webhooks", enabled: false) { enabled source } }"#).await,
    )
    .await;
    assert_eq!(body["data"]["setFeature"], json!({"enabled": false, "source": "tenant"}), "{body}");
    let body = json(query("{ webhookEndpoints { pageInfo { total } } }").await).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "feature_disabled");
    let body = json(
        query(r#"mutation { setFeature(key: "feature.advanced-analytics", enabled: true) { enabled } }"#)
            .await,
    )
    .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "license_limit");
}

/// With Redis, a toggle changed on one instance applies on the next request
/// to another instance, whose cache had the old value.
#[tokio::test]
#[ignore = "needs Redis: set NEXUS_TEST_REDIS_URL and run with --include-ignored (.ci/run does)"]
async fn a_toggle_reaches_every_instance_at_once() {
    std::env::var("NEXUS_TEST_REDIS_URL").expect("this test needs Redis");
    let first = TestApp::spawn().await;
    let second = first.sibling().await;
    let tenant = first.register().await;
    assert_eq!(second.get("/api/v1/webhooks", &tenant.token).await.status(), 200); // cached on the second
    put(&first, "/api/v1/features/feature.webhooks", &tenant.token, json!({"enabled": false})).await;
    let refused = crate::helpers::eventually(2, || async {
        let res = second.get("/api/v1/webhooks", &tenant.token).await;
        (res.status() == 403).then_some(())
    });
    refused.await;
}

/// The scheduler announces a transition once, however often it runs.
#[tokio::test]
async fn license_transitions_are_announced_once() {
    use sea_orm::{ColumnTrait, PaginatorTrait, QueryFilter};
    let app = TestApp::spawn_adjusted(|f| f.merge(("jobs.run_in_server", false))).await;
    let tenant = app.register().await;
    let root = app.super_admin(&tenant).await;
    assign(&app, &root, &tenant, json!({"tier": "basic", "expires_at": Utc::now() + Duration::days(10)}))
        .await;
    let tiers = &app.state.governance.tiers;
    for _ in 0..2 {
        nexus::platform::license::announce_transitions(&app.state.db, tiers, Utc::now()).await.unwrap();
    }
    let count = |event_type: &'static str| {
        SystemScope
            .find::<entity::event::Entity>()
            .filter(entity::event::Column::TenantId.eq(tenant.id))
            .filter(entity::event::Column::EventType.eq(event_type))
            .count(&app.state.db)
    };
    assert_eq!(count("license.expiring_soon").await.unwrap(), 1);
    // Twenty days later, with the clock passed in: grace has started.
    nexus::platform::license::announce_transitions(&app.state.db, tiers, Utc::now() + Duration::days(20))
        .await
        .unwrap();
    assert_eq!(count("license.grace_started").await.unwrap(), 1);
}

#[tokio::test]
async fn a_key_cannot_lift_a_suspension_nor_be_applied_twice() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let root = app.super_admin(&tenant).await;
    let signer = key::signing_key(DEV_SIGNING_KEY).unwrap();
    let grant = key::Grant {
        key_id: unique("lk"),
        tenant_id: tenant.id,
        tier: "enterprise".into(),
        starts_at: Utc::now(),
        expires_at: Utc::now() + Duration::days(365),
        max_users: None,
        api_calls_per_month: None,
        issued_at: Utc::now(),
    };
    let text = key::sign(&signer, &grant).unwrap();
    assert_eq!(app.post("/api/v1/license/key", &tenant.token, json!({"key": text})).await.status(), 200);
    assert_problem(
        app.post("/api/v1/license/key", &tenant.token, json!({"key": text})).await,
        409,
        "conflict",
    )
    .await;
    assign(&app, &root, &tenant, json!({"status": "suspended"})).await;
    let mut renewal = grant.clone();
    renewal.key_id = unique("lk");
    let text = key::sign(&signer, &renewal).unwrap();
    let res = app.post("/api/v1/license/key", &tenant.token, json!({"key": text})).await;
    assert_problem(res, 403, "license_suspended").await;
}

/// In grace (read-only), GraphQL answers queries and refuses any document
/// holding a mutation, as REST refuses writes; expired, it answers nothing.
#[tokio::test]
async fn graphql_under_a_read_only_license_reads_and_refuses_mutations() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let root = app.super_admin(&tenant).await;
    let graphql = |query: &str| app.post("/graphql", &tenant.token, json!({ "query": query }));
    let expired =
        |days: i64| json!({"tier": "professional", "expires_at": Utc::now() - Duration::days(days)});
    assign(&app, &root, &tenant, expired(3)).await;

    let res = graphql("{ me { email } license { state } }").await;
    assert_eq!(res.status(), 200);
    let body = json(res).await;
    assert_eq!(body["data"]["license"]["state"], "GRACE", "{body}");
    let mutation = r#"mutation { setFeature(key: "feature.webhooks", enabled: false) { enabled } }"#;
    assert_problem(graphql(mutation).await, 403, "license_read_only").await;
    // Nothing was switched.
    let features = json(graphql("{ features { key enabled } }").await).await;
    let webhooks =
        features["data"]["features"].as_array().unwrap().iter().find(|f| f["key"] == "feature.webhooks");
    assert_eq!(webhooks.unwrap()["enabled"], true);
    // The refusal is in the audit log, as a refused REST write is.
    let refused = app.get("/api/v1/audit-logs?route=Mutation.setFeature&include=total", &tenant.token).await;
    let refused = json(refused).await;
    assert_eq!(refused["meta"]["total"], 1, "{refused}");
    assert_eq!(refused["data"][0]["status"], 403);
    assert_eq!(refused["data"][0]["summary"]["enabled"], false);

    assign(&app, &root, &tenant, expired(15)).await;
    assert_problem(graphql("{ me { email } }").await, 403, "license_expired").await;
}

/// The tenant-wide limit binds across users: each under their own limit,
/// together they reach the tenant's, and every user of it is refused.
#[tokio::test]
async fn the_tenant_wide_limit_binds_across_its_users() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let (_, other) = app.user_with_roles(&tenant, &["viewer"]).await;
    let root = app.super_admin(&tenant).await;
    let limits = json!({"tier": "basic", "expires_at": Utc::now() + Duration::days(365),
                        "user_rate_per_minute": 8, "tenant_rate_per_minute": 10});
    assign(&app, &root, &tenant, limits).await;
    for _ in 0..6 {
        assert_eq!(app.get("/api/v1/tenant", &tenant.token).await.status(), 200);
    }
    for _ in 0..4 {
        assert_eq!(app.get("/api/v1/tenant", &other).await.status(), 200);
    }
    for token in [&other, &tenant.token] {
        let res = app.get("/api/v1/tenant", token).await;
        assert!(res.headers().contains_key("retry-after"));
        let body = assert_problem(res, 429, "rate_limited").await;
        assert!(body["detail"].as_str().unwrap().contains("the tenant's limit of 10"), "{body}");
    }
}

/// A GraphQL operation reports its cost and counts against the rate limit
/// as one request per `graphql.points_per_request` (25) points: a cheap one
/// as one, a costly one as several, and one the limit cannot cover is
/// refused with `rate_limited` before anything runs.
#[tokio::test]
async fn a_costly_graphql_query_weighs_more_against_the_rate_limit() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let root = app.super_admin(&tenant).await;
    let limits = json!({"tier": "professional", "expires_at": Utc::now() + Duration::days(365),
                        "user_rate_per_minute": 30, "tenant_rate_per_minute": 1000});
    assign(&app, &root, &tenant, limits).await;
    let run = |query: String| {
        let app = &app;
        let token = tenant.token.clone();
        async move {
            let res = app
                .send_json(reqwest::Method::POST, "/graphql", Some(&token), json!({ "query": query }))
                .await;
            assert_eq!(res.status(), 200);
            json(res).await
        }
    };
    let cheap = run("{ me { email } }".to_owned()).await;
    assert_eq!(cheap["extensions"]["cost"], json!({"complexity": 2, "requests": 1}), "{cheap}");
    // 20 aliases of `me { email id }`: 60 points, three requests.
    let costly: String = (0..20).map(|i| format!("m{i}: me {{ email id }} ")).collect();
    let costly = format!("{{ {costly} }}");
    let body = run(costly.clone()).await;
    assert!(body.get("errors").is_none(), "{body}");
    let cost = &body["extensions"]["cost"];
    assert_eq!((cost["complexity"].as_u64(), cost["requests"].as_u64()), (Some(60), Some(3)), "{body}");
    // 30 per minute: 1 + 3 spent, so at most 26 left (the bucket refills
    // one a second while the test runs).
    let remaining = cost["remaining"].as_u64().unwrap();
    assert!((24..=26).contains(&remaining), "{body}");
    // Spend the rest with costly queries until one is refused before it runs.
    let mut refused = None;
    for _ in 0..20 {
        let body = run(costly.clone()).await;
        if let Some(errors) = body.get("errors") {
            refused = Some((errors.clone(), body["data"].clone()));
            break;
        }
    }
    let (errors, data) = refused.expect("the limit refused a costly query");
    assert_eq!(errors[0]["extensions"]["code"], "rate_limited", "{errors}");
    assert!(errors[0]["message"].as_str().unwrap().contains("counts as 3 requests"), "{errors}");
    assert_eq!(data, Value::Null, "nothing ran");
}
