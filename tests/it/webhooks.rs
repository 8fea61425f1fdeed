//! Outbound webhooks end to end: committed events reach a real local
//! receiver, signed per Standard Webhooks, retried on the (compressed)
//! schedule, every attempt recorded.

use std::time::Duration;

use nexus::platform::{tenancy::SystemScope, webhooks::signature};
use reqwest::Method;
use serde_json::{Value, json};

use crate::{
    helpers::{PASSWORD, Tenant, TestApp, assert_problem, eventually, json, unique},
    receiver::{Receiver, Reply},
};

/// Register an endpoint; returns (id, secret).
async fn endpoint(app: &TestApp, tenant: &Tenant, url: &str, types: Value) -> (String, String) {
    let res = app.post("/api/v1/webhooks", &tenant.token, json!({"url": url, "event_types": types})).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let body = json(res).await;
    (body["data"]["id"].as_str().unwrap().to_owned(), body["data"]["secret"].as_str().unwrap().to_owned())
}

async fn create_user(app: &TestApp, tenant: &Tenant) -> Value {
    let email = format!("{}@{}.example.com", unique("u"), tenant.slug);
    let res = app
        .post("/api/v1/users", &tenant.token, json!({"name": "Grace", "email": email, "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 201);
    json(res).await["data"].clone()
}

/// The endpoint's deliveries once `check` holds for the first one.
async fn deliveries_when(app: &TestApp, tenant: &Tenant, id: &str, status: &str) -> Vec<Value> {
    eventually(10, || async {
        let body = json(app.get(&format!("/api/v1/webhooks/{id}/deliveries"), &tenant.token).await).await;
        let items = body["data"].as_array().unwrap().clone();
        (!items.is_empty() && items.iter().all(|d| d["status"] == status)).then_some(items)
    })
    .await
}

#[tokio::test]
async fn a_committed_event_arrives_signed_per_standard_webhooks() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[]).await;
    let tenant = app.register().await;
    let (id, secret) = endpoint(&app, &tenant, &receiver.url, json!(["user.*"])).await;
    assert!(secret.starts_with("whsec_"));

    let user = create_user(&app, &tenant).await;
    let got = receiver.wait_for(1).await;
    let hit = &got[0];
    let (msg_id, timestamp) = (hit.header("webhook-id"), hit.header("webhook-timestamp"));
    let timestamp: i64 = timestamp.parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(signature::verify(
        &secret,
        msg_id,
        timestamp,
        &hit.body,
        hit.header("webhook-signature"),
        now,
        300
    ));
    assert!(!signature::verify(&secret, msg_id, timestamp, b"{}", hit.header("webhook-signature"), now, 300));
    assert_eq!(hit.header("content-type"), "application/json");
    let body = hit.json();
    assert_eq!(body["type"], "user.created");
    assert_eq!(body["tenant_id"], tenant.id.to_string());
    assert_eq!(body["data"]["id"], user["id"]);
    assert_eq!(body["data"]["email"], user["email"]);
    assert!(body["data"].get("password").is_none() && body["data"].get("password_hash").is_none());

    let deliveries = deliveries_when(&app, &tenant, &id, "succeeded").await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["event_id"], msg_id);
    assert_eq!(deliveries[0]["attempts"], 1);
    let delivery = deliveries[0]["id"].as_str().unwrap();
    let attempts =
        json(app.get(&format!("/api/v1/webhooks/{id}/deliveries/{delivery}/attempts"), &tenant.token).await)
            .await;
    let attempt = &attempts["data"][0];
    assert_eq!(attempt["state"], "succeeded");
    assert_eq!(attempt["status_code"], 200);
    assert_eq!(attempt["response_body"], "ok");
    assert_eq!(attempt["request_headers"]["webhook-id"], msg_id);
    assert_eq!(attempt["request_headers"]["webhook-signature"], hit.header("webhook-signature"));
}

/// PostgreSQL's text refuses NUL: a receiver answering one must not stop the
/// outcome (its own, and those written with it) from being recorded.
#[tokio::test]
async fn an_answer_with_a_nul_is_recorded_once_with_the_nul_replaced() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[Reply::Body(200, "ok\0")]).await;
    let tenant = app.register().await;
    let (id, _) = endpoint(&app, &tenant, &receiver.url, json!(["user.*"])).await;
    create_user(&app, &tenant).await;

    let deliveries = deliveries_when(&app, &tenant, &id, "succeeded").await;
    assert_eq!(deliveries[0]["attempts"], 1);
    let delivery = deliveries[0]["id"].as_str().unwrap();
    let attempts =
        json(app.get(&format!("/api/v1/webhooks/{id}/deliveries/{delivery}/attempts"), &tenant.token).await)
            .await;
    assert_eq!(attempts["data"][0]["response_body"], "ok\u{FFFD}");
    assert_eq!(receiver.received().len(), 1, "sent again");
}

#[tokio::test]
async fn failures_are_retried_on_the_schedule_and_every_attempt_is_logged() {
    let app = TestApp::spawn_adjusted(|f| f.merge(("webhooks.timeout_ms", 300))).await;
    // 500, a timeout, a 503 asking for a 1 s pause, then success.
    let receiver = Receiver::start(&[
        Reply::Status(500),
        Reply::Slow(Duration::from_millis(900)),
        Reply::RetryAfter(503, 1),
    ])
    .await;
    let tenant = app.register().await;
    let (id, _) = endpoint(&app, &tenant, &receiver.url, json!(["*"])).await;
    create_user(&app, &tenant).await;

    let deliveries = deliveries_when(&app, &tenant, &id, "succeeded").await;
    assert_eq!(deliveries[0]["attempts"], 4);
    let delivery = deliveries[0]["id"].as_str().unwrap();
    let attempts =
        json(app.get(&format!("/api/v1/webhooks/{id}/deliveries/{delivery}/attempts"), &tenant.token).await)
            .await["data"]
            .as_array()
            .unwrap()
            .clone();
    let codes: Vec<Value> = attempts.iter().map(|a| a["status_code"].clone()).collect();
    assert_eq!(codes, vec![json!(500), Value::Null, json!(503), json!(200)]);
    let states: Vec<Value> = attempts.iter().map(|a| a["state"].clone()).collect();
    assert_eq!(states, vec![json!("failed"), json!("failed"), json!("failed"), json!("succeeded")]);
    assert!(attempts[1]["error"].as_str().unwrap().contains("timed out"), "{}", attempts[1]);
    // The receiver asked for 1 s after the third attempt; the schedule alone says 60 ms.
    let third = chrono::DateTime::parse_from_rfc3339(attempts[2]["created_at"].as_str().unwrap()).unwrap();
    let fourth = chrono::DateTime::parse_from_rfc3339(attempts[3]["created_at"].as_str().unwrap()).unwrap();
    assert!((fourth - third).num_milliseconds() >= 900, "Retry-After was not honoured");
    // Every attempt carried the same message id and body.
    let got = receiver.received();
    assert_eq!(got.len(), 4);
    assert!(
        got.iter().all(|r| r.header("webhook-id") == got[0].header("webhook-id") && r.body == got[0].body)
    );
}

#[tokio::test]
async fn an_unreachable_receiver_exhausts_the_schedule_and_the_delivery_can_be_resent() {
    let app = TestApp::spawn().await;
    // A port nothing listens on: connections are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/hook", closed.local_addr().unwrap().port());
    drop(closed);
    let tenant = app.register().await;
    let (id, _) = endpoint(&app, &tenant, &url, json!(["user.created"])).await;
    create_user(&app, &tenant).await;

    let deliveries = deliveries_when(&app, &tenant, &id, "failed").await;
    // One try and the three retries of the test schedule.
    assert_eq!(deliveries[0]["attempts"], 4);
    let delivery = deliveries[0]["id"].as_str().unwrap().to_owned();
    let attempts =
        json(app.get(&format!("/api/v1/webhooks/{id}/deliveries/{delivery}/attempts"), &tenant.token).await)
            .await;
    assert!(
        attempts["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status_code"].is_null() && a["error"].is_string())
    );

    // The receiver comes back at the same URL; resend delivers it.
    let receiver = Receiver::start(&[]).await;
    let (new_url, _) = (receiver.url.clone(), ());
    let res = app
        .send_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            Some(&tenant.token),
            json!({"url": new_url}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .post(&format!("/api/v1/webhooks/{id}/deliveries/{delivery}/resend"), &tenant.token, json!({}))
        .await;
    assert_eq!(res.status(), 202);
    receiver.wait_for(1).await;
    let deliveries = deliveries_when(&app, &tenant, &id, "succeeded").await;
    assert_eq!(deliveries[0]["attempts"], 5);
}

#[tokio::test]
async fn a_410_disables_the_endpoint_with_an_event_and_an_audit_entry() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[Reply::Status(410)]).await;
    let tenant = app.register().await;
    let (id, _) = endpoint(&app, &tenant, &receiver.url, json!(["user.*"])).await;
    create_user(&app, &tenant).await;
    deliveries_when(&app, &tenant, &id, "failed").await;
    assert_eq!(receiver.received().len(), 1, "a gone endpoint is not retried");
    let endpoint = json(app.get(&format!("/api/v1/webhooks/{id}"), &tenant.token).await).await;
    assert_eq!(endpoint["data"]["enabled"], false);
    assert_eq!(endpoint["data"]["disabled_reason"], "gone");
    let audit =
        json(app.get("/api/v1/audit-logs?route=webhook.endpoint_disabled", &tenant.token).await).await;
    assert_eq!(audit["data"][0]["method"], "SYSTEM", "{audit}");
    assert_eq!(audit["data"][0]["summary"]["endpoint_id"], id);

    // Further events are not delivered to it; re-enabling resumes delivery.
    create_user(&app, &tenant).await;
    app.drained().await;
    let res = app
        .send_json(
            Method::PATCH,
            &format!("/api/v1/webhooks/{id}"),
            Some(&tenant.token),
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(json(res).await["data"]["disabled_reason"], Value::Null);
    create_user(&app, &tenant).await;
    receiver.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn an_endpoint_failing_for_too_long_is_disabled() {
    // Zero hours: the first failure after the streak began disables it.
    let app = TestApp::spawn_adjusted(|f| f.merge(("webhooks.disable_after_failing_hours", 0))).await;
    let receiver = Receiver::start(&[Reply::Status(500), Reply::Status(500), Reply::Status(500)]).await;
    let tenant = app.register().await;
    let (id, _) = endpoint(&app, &tenant, &receiver.url, json!(["user.*"])).await;
    create_user(&app, &tenant).await;
    let endpoint = eventually(10, || async {
        let body = json(app.get(&format!("/api/v1/webhooks/{id}"), &tenant.token).await).await;
        (body["data"]["enabled"] == false).then_some(body)
    })
    .await;
    assert_eq!(endpoint["data"]["disabled_reason"], "failing");
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_old_one() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[]).await;
    let tenant = app.register().await;
    let (id, old) = endpoint(&app, &tenant, &receiver.url, json!(["*"])).await;
    let res = app.post(&format!("/api/v1/webhooks/{id}/rotate-secret"), &tenant.token, json!({})).await;
    assert_eq!(res.status(), 200);
    let new = json(res).await["data"]["secret"].as_str().unwrap().to_owned();
    assert_ne!(old, new);
    let res = app.post(&format!("/api/v1/webhooks/{id}/test"), &tenant.token, json!({})).await;
    assert_eq!(res.status(), 202);
    let hit = &receiver.wait_for(1).await[0];
    assert_eq!(hit.json()["type"], "webhook.test");
    let header = hit.header("webhook-signature");
    assert_eq!(header.split(' ').count(), 2, "{header}");
    let ts: i64 = hit.header("webhook-timestamp").parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    for secret in [&old, &new] {
        assert!(signature::verify(secret, hit.header("webhook-id"), ts, &hit.body, header, now, 300));
    }

    // At rest both secrets are ciphertext, never the `whsec_` value.
    use sea_orm::{ColumnTrait, QueryFilter, sea_query::Expr};
    let endpoint_id = uuid::Uuid::parse_str(&id).unwrap();
    let row = SystemScope
        .find_by_id::<entity::webhook_endpoint::Entity>(endpoint_id)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let stored = [row.secret.clone(), row.previous_secret.clone().unwrap()];
    for (value, plain) in stored.iter().zip([&new, &old]) {
        assert!(
            !value.contains("whsec_") && !value.contains(&plain["whsec_".len()..]),
            "stored in clear: {value}"
        );
    }

    // Once the overlap is over, the old secret signs no more.
    SystemScope
        .update_many::<entity::webhook_endpoint::Entity>()
        .filter(entity::webhook_endpoint::Column::Id.eq(endpoint_id))
        .col_expr(
            entity::webhook_endpoint::Column::PreviousSecretExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
        )
        .exec(&app.state.db)
        .await
        .unwrap();
    let res = app.post(&format!("/api/v1/webhooks/{id}/test"), &tenant.token, json!({})).await;
    assert_eq!(res.status(), 202);
    let hit = &receiver.wait_for(2).await[1];
    let header = hit.header("webhook-signature");
    assert_eq!(header.split(' ').count(), 1, "{header}");
    let ts: i64 = hit.header("webhook-timestamp").parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(signature::verify(&new, hit.header("webhook-id"), ts, &hit.body, header, now, 300));
    assert!(!signature::verify(&old, hit.header("webhook-id"), ts, &hit.body, header, now, 300));
}

#[tokio::test]
async fn private_and_metadata_addresses_are_refused() {
    // No allowlist: the SSRF guard is fully on.
    let app = TestApp::spawn_adjusted(|f| f.merge(("webhooks.allow_networks", Vec::<String>::new()))).await;
    let tenant = app.register().await;
    for url in
        ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest", "http://[::1]/x", "http://10.1.2.3/"]
    {
        let res =
            app.post("/api/v1/webhooks", &tenant.token, json!({"url": url, "event_types": ["*"]})).await;
        let body = assert_problem(res, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "url", "{url}");
    }
    let res = app
        .post("/api/v1/webhooks", &tenant.token, json!({"url": "ftp://x.example/", "event_types": ["*"]}))
        .await;
    assert_problem(res, 422, "validation_failed").await;

    // `localhost` is loopback at registration, as it is at delivery.
    let receiver = Receiver::start(&[]).await;
    let url = receiver.url.replace("127.0.0.1", "localhost");
    let res = app.post("/api/v1/webhooks", &tenant.token, json!({"url": url, "event_types": ["*"]})).await;
    let body = assert_problem(res, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "url");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("non-public address (127.0.0.1)"));

    // Delivery judges the address again, at connect time: an endpoint
    // accepted by an instance that allows loopback is refused by one that
    // does not (this one delivers; the other has no workers).
    let lenient = app
        .sibling_adjusted(|f| {
            f.merge(("webhooks.allow_networks", vec!["127.0.0.1"])).merge(("jobs.run_in_server", false))
        })
        .await;
    let (id, _) = endpoint(&lenient, &tenant, &url, json!(["*"])).await;
    lenient.post(&format!("/api/v1/webhooks/{id}/test"), &tenant.token, json!({})).await;
    let deliveries = deliveries_when(&app, &tenant, &id, "failed").await;
    let delivery = deliveries[0]["id"].as_str().unwrap();
    let attempts =
        json(app.get(&format!("/api/v1/webhooks/{id}/deliveries/{delivery}/attempts"), &tenant.token).await)
            .await;
    let error = attempts["data"][0]["error"].as_str().unwrap();
    assert!(error.contains("non-public address"), "{error}");
    assert!(receiver.received().is_empty());
}

/// The developer-machine recipe of docs/webhooks.md: with
/// `webhooks.allow_networks = ["127.0.0.1"]`, `http://localhost:<port>` is
/// accepted at registration and delivered to.
#[tokio::test]
async fn localhost_receivers_work_when_loopback_is_allowed() {
    let app = TestApp::spawn_adjusted(|f| f.merge(("webhooks.allow_networks", vec!["127.0.0.1"]))).await;
    let receiver = Receiver::start(&[]).await;
    let tenant = app.register().await;
    let url = receiver.url.replace("127.0.0.1", "localhost");
    let (id, _) = endpoint(&app, &tenant, &url, json!(["*"])).await;
    app.post(&format!("/api/v1/webhooks/{id}/test"), &tenant.token, json!({})).await;
    deliveries_when(&app, &tenant, &id, "succeeded").await;
    assert_eq!(receiver.received()[0].json()["type"], "webhook.test");
}

#[tokio::test]
async fn endpoints_are_validated_versioned_and_tenant_scoped() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.register().await, app.register().await);
    let res = app
        .post(
            "/api/v1/webhooks",
            &a.token,
            json!({"url": "https://example.com/h", "event_types": ["nope.*"]}),
        )
        .await;
    let body = assert_problem(res, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "event_types[0]");
    let res = app
        .post(
            "/api/v1/webhooks",
            &a.token,
            json!({"url": "https://example.com/h", "event_types": ["*"], "priority": 11}),
        )
        .await;
    assert_problem(res, 422, "validation_failed").await;

    let (id, _) = endpoint(&app, &a, "https://example.com/h", json!(["user.created"])).await;
    let res = app.get(&format!("/api/v1/webhooks/{id}"), &a.token).await;
    assert_eq!(res.headers()["etag"], "\"1\"");
    let body = json(res).await;
    assert!(body["data"].get("secret").is_none(), "the secret is shown only once");

    let patch = |etag: &'static str| {
        app.request(Method::PATCH, &format!("/api/v1/webhooks/{id}"), Some(&a.token))
            .header("if-match", etag)
            .json(&json!({"description": "orders"}))
            .send()
    };
    assert_eq!(patch("\"1\"").await.unwrap().status(), 200);
    assert_problem(patch("\"1\"").await.unwrap(), 412, "precondition_failed").await;

    // Tenant B sees nothing of A's endpoint.
    assert_problem(app.get(&format!("/api/v1/webhooks/{id}"), &b.token).await, 404, "not_found").await;
    let res = app.post(&format!("/api/v1/webhooks/{id}/test"), &b.token, json!({})).await;
    assert_problem(res, 404, "not_found").await;
    assert_eq!(json(app.get("/api/v1/webhooks?include=total", &b.token).await).await["meta"]["total"], 0);

    // Managers read, users do not.
    let (_, manager) = app.user_with_roles(&a, &["manager"]).await;
    assert_eq!(app.get("/api/v1/webhooks", &manager).await.status(), 200);
    let res = app
        .post("/api/v1/webhooks", &manager, json!({"url": "https://example.com/h", "event_types": ["*"]}))
        .await;
    assert_problem(res, 403, "forbidden").await;

    let types = json(app.get("/api/v1/webhooks/event-types", &a.token).await).await;
    let names: Vec<&str> =
        types["data"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"user.created") && names.contains(&"webhook.endpoint_disabled"));
    assert_eq!(types["data"][0]["example"]["type"], types["data"][0]["name"]);

    let res =
        app.request(Method::DELETE, &format!("/api/v1/webhooks/{id}"), Some(&a.token)).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_problem(app.get(&format!("/api/v1/webhooks/{id}"), &a.token).await, 404, "not_found").await;
}

/// A dispatch run again (a lease that ran out mid-run) makes no second
/// delivery of an event to an endpoint, nor a second job.
#[tokio::test]
async fn fanning_out_an_event_again_adds_nothing() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start(&[]).await;
    let tenant = app.register().await;
    let (id, _) = endpoint(&app, &tenant, &receiver.url, json!(["user.created"])).await;
    create_user(&app, &tenant).await;
    deliveries_when(&app, &tenant, &id, "succeeded").await;
    let events = app.events(tenant.id, "user.created").await;
    // The owner was created before the endpoint: only the new user's event is delivered.
    assert_eq!(nexus::platform::webhooks::fan_out(&app.state.db, &events).await.unwrap(), 0);
    assert_eq!(deliveries_when(&app, &tenant, &id, "succeeded").await.len(), 1);
    assert_eq!(app.jobs(tenant.id, "webhook.deliver").await.len(), 1);
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn events_committed_while_no_worker_runs_are_delivered_once_after_restart() {
    // The first instance commits but never delivers (as if killed right
    // after the commit); a second instance with workers picks the jobs up.
    let writer = TestApp::spawn_adjusted(|f| f.merge(("jobs.run_in_server", false))).await;
    let receiver = Receiver::start(&[]).await;
    let tenant = writer.register().await;
    endpoint(&writer, &tenant, &receiver.url, json!(["user.created"])).await;
    for _ in 0..3 {
        create_user(&writer, &tenant).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.received().is_empty());

    let _worker = writer.sibling().await;
    let got = receiver.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 3);
    let mut ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3);
}

/// A worker killed while its request is with the receiver: once the lease
/// runs out the message is sent again (at-least-once), and the attempt log
/// shows both requests the receiver got, the first as `interrupted`.
#[tokio::test]
async fn an_attempt_cut_off_by_a_dead_worker_stays_in_the_log() {
    use nexus::platform::jobs::JobHandler;
    use sea_orm::{ColumnTrait, QueryFilter};
    // No workers here: the "worker" is the handler run by hand, then killed.
    let app = TestApp::spawn_adjusted(|f| f.merge(("jobs.run_in_server", false))).await;
    let receiver = Receiver::start(&[Reply::Slow(Duration::from_secs(30))]).await;
    let tenant = app.register().await;
    let (id, _) = endpoint(&app, &tenant, &receiver.url, json!(["*"])).await;
    let res = app.post(&format!("/api/v1/webhooks/{id}/test"), &tenant.token, json!({})).await;
    let delivery = json(res).await["data"]["id"].as_str().unwrap().to_owned();
    let job = nexus::platform::tenancy::SystemScope
        .find::<entity::job::Entity>()
        .filter(entity::job::Column::Kind.eq("webhook.deliver"))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let (state, claimed) = (app.state.clone(), job.clone());
    let worker =
        tokio::spawn(async move { nexus::platform::webhooks::delivery::Deliver.run(&state, &claimed).await });
    receiver.wait_for(1).await;
    worker.abort(); // killed while the receiver holds the request
    let _ = worker.await;
    crate::helpers::held_by_a_dead_worker(&app, job).await;

    let _worker = app.sibling().await;
    deliveries_when(&app, &tenant, &id, "succeeded").await;
    let got = receiver.received();
    assert_eq!(got.len(), 2, "the message is sent again");
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    let path = format!("/api/v1/webhooks/{id}/deliveries/{delivery}/attempts");
    let attempts = json(app.get(&path, &tenant.token).await).await["data"].as_array().unwrap().clone();
    assert_eq!(attempts.len(), 2, "one attempt per request the receiver got: {attempts:?}");
    let first = &attempts[0];
    assert_eq!((first["attempt"].clone(), first["state"].clone()), (json!(1), json!("interrupted")));
    assert!(first["status_code"].is_null() && first["duration_ms"].is_null(), "{first}");
    assert!(first["error"].as_str().unwrap().contains("may have received"), "{first}");
    assert_eq!(first["request_headers"]["webhook-signature"], got[0].header("webhook-signature"));
    let second = &attempts[1];
    assert_eq!((second["attempt"].clone(), second["state"].clone()), (json!(2), json!("succeeded")));
    assert_eq!(second["status_code"], 200);
    let view = json(app.get(&format!("/api/v1/webhooks/{id}/deliveries"), &tenant.token).await).await;
    assert_eq!(view["data"][0]["attempts"], 2);
}

#[tokio::test]
async fn two_instances_deliver_each_message_exactly_once() {
    let first = TestApp::spawn().await;
    let second = first.sibling().await;
    let receiver = Receiver::start(&[]).await;
    let tenant = first.register().await;
    endpoint(&first, &tenant, &receiver.url, json!(["user.created"])).await;
    let n = 20;
    for i in 0..n {
        let app = if i % 2 == 0 { &first } else { &second };
        create_user(app, &tenant).await;
    }
    receiver.wait_for(n).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.received();
    let mut ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!((got.len(), ids.len()), (n, n), "a message was delivered twice");
}

/// `webhooks.max_in_flight_per_endpoint` caps the deliveries one endpoint
/// receives at once, though more workers are free.
#[tokio::test]
async fn deliveries_to_one_endpoint_are_capped_in_flight() {
    let app = TestApp::spawn_adjusted(|f| f.merge(("webhooks.max_in_flight_per_endpoint", 2))).await;
    let receiver = Receiver::start(&[Reply::Slow(Duration::from_millis(300)); 8]).await;
    let tenant = app.register().await;
    let (id, _) = endpoint(&app, &tenant, &receiver.url, json!(["*"])).await;
    for _ in 0..8 {
        let res = app.post(&format!("/api/v1/webhooks/{id}/test"), &tenant.token, json!({})).await;
        assert_eq!(res.status(), 202);
    }
    receiver.wait_for(8).await;
    // Four high-lane workers could have sent four at once; the cap holds
    // two (on a loaded machine the workers may not even reach two).
    let most = receiver.most_in_flight();
    assert!((1..=2).contains(&most), "{most} deliveries at once to one endpoint");
}

/// Deliveries that end together are recorded together (one transaction
/// for their outcomes): each attempt and delivery still gets its own
/// answer, and each job is completed, whatever the others got.
#[tokio::test]
async fn outcomes_recorded_together_each_land_on_their_own_delivery() {
    use sea_orm::{ColumnTrait, QueryFilter};
    let app = TestApp::spawn().await;
    // More answers than requests (24 + a retry per 500): each is scripted.
    let script: Vec<Reply> =
        (0..40).map(|i| Reply::Status(if i < 20 { [200, 500, 204, 202, 201][i % 5] } else { 200 })).collect();
    let receiver = Receiver::start(&script).await;
    let tenant = app.register().await;
    let (id, _) = endpoint(&app, &tenant, &receiver.url, json!(["*"])).await;
    let n = 24;
    for _ in 0..n {
        let res = app.post(&format!("/api/v1/webhooks/{id}/test"), &tenant.token, json!({})).await;
        assert_eq!(res.status(), 202);
    }
    let deliveries = eventually(10, || async {
        let body =
            json(app.get(&format!("/api/v1/webhooks/{id}/deliveries?limit=100"), &tenant.token).await).await;
        let items = body["data"].as_array().unwrap().clone();
        (items.len() == n && items.iter().all(|d| d["status"] == "succeeded")).then_some(items)
    })
    .await;
    let got = receiver.received();
    assert!(got.iter().any(|r| r.status >= 500), "no delivery was retried");
    for delivery in &deliveries {
        let answers: Vec<u16> = got
            .iter()
            .filter(|r| r.header("webhook-id") == delivery["event_id"].as_str().unwrap())
            .map(|r| r.status)
            .collect();
        let path = format!("/api/v1/webhooks/{id}/deliveries/{}/attempts", delivery["id"].as_str().unwrap());
        let attempts = json(app.get(&path, &tenant.token).await).await["data"].as_array().unwrap().clone();
        let recorded: Vec<(u16, String, String)> = attempts
            .iter()
            .map(|a| {
                let status = a["status_code"].as_u64().unwrap() as u16;
                (
                    status,
                    a["state"].as_str().unwrap().to_owned(),
                    a["response_body"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let expected: Vec<(u16, String, String)> = answers
            .iter()
            .map(|&s| {
                let state = if s < 300 { "succeeded" } else { "failed" };
                // A 204 carries no body.
                let body = if s == 204 { String::new() } else { format!("status {s}") };
                (s, state.to_owned(), body)
            })
            .collect();
        assert_eq!(recorded, expected, "{delivery}");
        assert_eq!(delivery["attempts"], answers.len(), "{delivery}");
        assert_eq!(delivery["last_status_code"], *answers.last().unwrap(), "{delivery}");
    }
    let unfinished = SystemScope
        .find::<entity::job::Entity>()
        .filter(entity::job::Column::Kind.eq("webhook.deliver"))
        .filter(entity::job::Column::Status.ne("completed"))
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(unfinished.is_empty(), "jobs of delivered messages not completed: {unfinished:?}");
}
