use nexus::platform::tenancy::SystemScope;
use reqwest::Method;
use sea_orm::{ConnectionTrait, PaginatorTrait};
use serde_json::json;

use crate::helpers::{PASSWORD, TestApp, assert_problem, json};

#[tokio::test]
async fn mutations_are_recorded_with_secrets_redacted() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let email = format!("audited@{}.example.com", tenant.slug);
    let res = app
        .request(Method::POST, "/api/v1/users", Some(&tenant.token))
        .header("x-request-id", "audit-trace-1")
        .header("user-agent", "nexus-test/1.0")
        .json(&json!({"name": "Audited", "email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // Reads are not recorded.
    app.get("/api/v1/users", &tenant.token).await;

    let logs =
        json(app.get("/api/v1/audit-logs?route=/api/v1/users&include=total", &tenant.token).await).await;
    assert_eq!(logs["meta"]["total"], 1, "{logs}");
    let entry = &logs["data"][0];
    assert_eq!(entry["method"], "POST");
    assert_eq!(entry["status"], 201);
    assert_eq!(entry["request_id"], "audit-trace-1");
    assert_eq!(entry["user_agent"], "nexus-test/1.0");
    assert_eq!(entry["user_id"], tenant.admin_id.to_string());
    assert_eq!(entry["ip"], "127.0.0.1");
    assert_eq!(entry["summary"]["email"], email.as_str());
    assert_eq!(entry["summary"]["password"], "[redacted]");

    // Registration and the failed request below are recorded too; no entry
    // anywhere contains a password or a token.
    app.post("/api/v1/users", &tenant.token, json!({"name": ""})).await;
    let all = app.get("/api/v1/audit-logs?limit=100", &tenant.token).await.text().await.unwrap();
    assert!(!all.contains(PASSWORD));
    assert!(!all.contains(&tenant.token));
    let failed = json(app.get("/api/v1/audit-logs?status=422&include=total", &tenant.token).await).await;
    assert_eq!(failed["meta"]["total"], 1);
    let register =
        json(app.get("/api/v1/audit-logs?route=/api/v1/auth/register&include=total", &tenant.token).await)
            .await;
    assert_eq!(register["meta"]["total"], 1);
}

/// A GraphQL mutation is recorded as its REST request is: one entry per
/// mutation field, with that field's outcome and its arguments (variables
/// substituted, secrets redacted). Queries are not recorded.
#[tokio::test]
async fn graphql_mutations_are_recorded_field_by_field() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let email = format!("gql@{}.example.com", tenant.slug);
    // The tenant's entries, on `route` if it is not empty.
    let audited = |route: &str| {
        let route = if route.is_empty() { String::new() } else { format!("&route={route}") };
        let path = format!("/api/v1/audit-logs?sort=status&include=total{route}");
        let (app, token) = (&app, tenant.token.clone());
        async move { json(app.get(&path, &token).await).await }
    };
    let res = app
        .request(Method::POST, "/graphql", Some(&tenant.token))
        .header("x-request-id", "audit-gql-1")
        .json(&json!({
            "query": "mutation Add($input: CreateUserInput!, $weak: String = \"short\") { \
                added: createUser(input: $input) { id } \
                weak: createUser(input: {name: \"W\", email: \"w@example.com\", password: $weak}) { id } \
                skipped: createUser(input: $input) @skip(if: true) { id } }",
            "variables": {"input": {"name": "Gql", "email": email, "password": PASSWORD}},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = json(res).await;
    assert_eq!(body["errors"][0]["path"], json!(["weak"]), "{body}");
    let before = audited("").await["meta"]["total"].clone();
    let query = json!({"query": "{ me { email } }"});
    assert_eq!(app.send_json(Method::POST, "/graphql", Some(&tenant.token), query).await.status(), 200);
    assert_eq!(audited("").await["meta"]["total"], before, "a query left an entry");

    let logs = audited("Mutation.createUser").await;
    assert_eq!(logs["meta"]["total"], 2, "{logs}");
    let (added, weak) = (&logs["data"][0], &logs["data"][1]);
    assert_eq!(added["status"], 200);
    assert_eq!(weak["status"], 422);
    for entry in [added, weak] {
        assert_eq!(entry["method"], "POST");
        assert_eq!(entry["path"], "/graphql");
        assert_eq!(entry["request_id"], "audit-gql-1");
        assert_eq!(entry["user_id"], tenant.admin_id.to_string());
        assert_eq!(entry["summary"]["input"]["password"], "[redacted]", "{entry}");
    }
    assert_eq!(added["summary"]["input"]["email"], email.as_str());
    assert_eq!(weak["summary"]["input"]["email"], "w@example.com");
    let all = app.get("/api/v1/audit-logs?limit=100", &tenant.token).await.text().await.unwrap();
    assert!(!all.contains(PASSWORD) && !all.contains("short"), "{all}");

    // A document refused before any field ran is recorded with its status.
    let unknown = json!({"query": "mutation { createUser(input: {name: \"X\"}) { id } }"});
    app.send_json(Method::POST, "/graphql", Some(&tenant.token), unknown).await;
    let logs = audited("Mutation.createUser&status=400").await;
    assert_eq!(logs["meta"]["total"], 1, "{logs}");
}

#[tokio::test]
async fn the_audit_log_filters_by_user_and_time_and_stays_in_its_tenant() {
    let app = TestApp::spawn().await;
    let a = app.register().await;
    let b = app.register().await;
    let (_, a_user_token) = app.user_with_roles(&a, &["user"]).await;
    app.post("/api/v1/auth/tokens", &a_user_token, json!({"name": "laptop"})).await;

    let by_admin =
        json(app.get(&format!("/api/v1/audit-logs?include=total&user_id={}", a.admin_id), &a.token).await)
            .await;
    assert!(by_admin["meta"]["total"].as_u64().unwrap() >= 2);
    assert!(by_admin["data"].as_array().unwrap().iter().all(|e| e["user_id"] == a.admin_id.to_string()));

    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let later = json(
        app.get(&format!("/api/v1/audit-logs?include=total&from={}", urlencode(&future)), &a.token).await,
    )
    .await;
    assert_eq!(later["meta"]["total"], 0);
    let earlier =
        json(app.get(&format!("/api/v1/audit-logs?include=total&to={}", urlencode(&future)), &a.token).await)
            .await;
    assert_eq!(earlier["meta"]["total"], by_admin["meta"]["total"].as_u64().unwrap() + 2);

    // B sees only its own registration.
    let b_logs = json(app.get("/api/v1/audit-logs?include=total", &b.token).await).await;
    assert_eq!(b_logs["meta"]["total"], 1);
    assert_problem(app.get("/api/v1/audit-logs?sort=user_agent", &a.token).await, 400, "invalid_query").await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn the_database_refuses_to_change_or_delete_audit_entries() {
    let app = TestApp::spawn().await;
    app.register().await;
    let db = &app.state.db;
    let before = SystemScope.find::<entity::audit_log::Entity>().count(db).await.unwrap();
    assert!(before >= 1);
    let update = db.execute_unprepared("UPDATE audit_logs SET status = 999").await;
    assert!(update.unwrap_err().to_string().contains("append-only"));
    let delete = db.execute_unprepared("DELETE FROM audit_logs").await;
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    assert_eq!(SystemScope.find::<entity::audit_log::Entity>().count(db).await.unwrap(), before);
    let statuses: Vec<i32> = SystemScope
        .find::<entity::audit_log::Entity>()
        .all(db)
        .await
        .unwrap()
        .iter()
        .map(|e| e.status)
        .collect();
    assert!(!statuses.contains(&999));
}
