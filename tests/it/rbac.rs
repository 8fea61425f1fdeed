use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, assert_problem, json};

/// The matrix of docs/rbac.md, checked over HTTP for every default role.
#[tokio::test]
async fn every_role_gets_exactly_its_permissions() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let (target, _) = app.user_with_roles(&tenant, &["viewer"]).await;

    // (role, GET /tenant, GET /users, POST /users, PUT role, GET /audit-logs,
    //  GET /webhooks, POST /webhooks, GET /admin/jobs/stats)
    let matrix = [
        ("admin", [200, 200, 201, 200, 200, 200, 201, 403]),
        ("manager", [200, 200, 403, 403, 403, 200, 403, 403]),
        ("user", [200, 403, 403, 403, 403, 403, 403, 403]),
        ("viewer", [200, 403, 403, 403, 403, 403, 403, 403]),
    ];
    for (role, expected) in matrix {
        let (_, token) = app.user_with_roles(&tenant, &[role]).await;
        let email = format!("made-by-{role}@{}.example.com", tenant.slug);
        let got = [
            app.get("/api/v1/tenant", &token).await.status().as_u16(),
            app.get("/api/v1/users", &token).await.status().as_u16(),
            app.post(
                "/api/v1/users",
                &token,
                json!({"name": "N", "email": email, "password": crate::helpers::PASSWORD}),
            )
            .await
            .status()
            .as_u16(),
            app.request(Method::PUT, &format!("/api/v1/users/{target}/roles/user"), Some(&token))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
            app.get("/api/v1/audit-logs", &token).await.status().as_u16(),
            app.get("/api/v1/webhooks", &token).await.status().as_u16(),
            app.post(
                "/api/v1/webhooks",
                &token,
                json!({"url": "https://example.com/h", "event_types": ["*"]}),
            )
            .await
            .status()
            .as_u16(),
            app.get("/api/v1/admin/jobs/stats", &token).await.status().as_u16(),
        ];
        assert_eq!(got, expected, "role {role}");
    }
}

#[tokio::test]
async fn a_forbidden_answer_names_the_missing_permission() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let (_, token) = app.user_with_roles(&tenant, &["viewer"]).await;
    let body = assert_problem(app.get("/api/v1/users", &token).await, 403, "forbidden").await;
    assert!(body["detail"].as_str().unwrap().contains("users:read"), "{body}");
}

#[tokio::test]
async fn roles_are_assigned_and_removed_and_apply_at_once() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let (id, token) = app.user_with_roles(&tenant, &["viewer"]).await;
    assert_eq!(app.get("/api/v1/users", &token).await.status(), 403);

    let path = format!("/api/v1/users/{id}/roles/manager");
    let res = app.request(Method::PUT, &path, Some(&tenant.token)).send().await.unwrap();
    assert_eq!(json(res).await["data"]["roles"], json!(["manager", "viewer"]));
    // Idempotent.
    let res = app.request(Method::PUT, &path, Some(&tenant.token)).send().await.unwrap();
    assert_eq!(json(res).await["data"]["roles"], json!(["manager", "viewer"]));
    // The same token now has the new permission: no re-login.
    assert_eq!(app.get("/api/v1/users", &token).await.status(), 200);

    let res = app.request(Method::DELETE, &path, Some(&tenant.token)).send().await.unwrap();
    assert_eq!(json(res).await["data"]["roles"], json!(["viewer"]));
    assert_eq!(app.get("/api/v1/users", &token).await.status(), 403);
    // Idempotent too.
    let res = app.request(Method::DELETE, &path, Some(&tenant.token)).send().await.unwrap();
    assert_eq!(json(res).await["data"]["roles"], json!(["viewer"]));
    // One event per change: none for a role already held or not held.
    assert_eq!(app.events(tenant.id, "user.role_assigned").await.len(), 1);
    assert_eq!(app.events(tenant.id, "user.role_removed").await.len(), 1);

    let res = app
        .request(Method::PUT, &format!("/api/v1/users/{id}/roles/emperor"), Some(&tenant.token))
        .send()
        .await
        .unwrap();
    assert_problem(res, 404, "not_found").await;
}

#[tokio::test]
async fn the_last_admin_keeps_the_role() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let path = format!("/api/v1/users/{}/roles/admin", tenant.admin_id);
    let res = app.request(Method::DELETE, &path, Some(&tenant.token)).send().await.unwrap();
    assert_problem(res, 409, "conflict").await;

    let (second, _) = app.user_with_roles(&tenant, &["admin"]).await;
    let res = app.request(Method::DELETE, &path, Some(&tenant.token)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .request(Method::DELETE, &format!("/api/v1/users/{second}/roles/admin"), Some(&tenant.token))
        .send()
        .await
        .unwrap();
    // The first admin is no longer admin, so the request is forbidden.
    assert_problem(res, 403, "forbidden").await;
}

/// Read-then-write transactions under concurrency wait for the write lock
/// (SQLite) instead of failing: every request succeeds.
#[tokio::test]
async fn concurrent_role_changes_all_succeed() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let mut users = Vec::new();
    for _ in 0..8 {
        users.push(app.user_with_roles(&tenant, &["viewer"]).await.0);
    }
    let mut requests = Vec::new();
    for round in 0..4 {
        for id in &users {
            let method = if round % 2 == 0 { Method::PUT } else { Method::DELETE };
            let req = app.request(method, &format!("/api/v1/users/{id}/roles/manager"), Some(&tenant.token));
            requests.push(tokio::spawn(req.send()));
        }
    }
    for request in requests {
        let res = request.await.unwrap().unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }
}

/// Every documented route, for every default role, answers what the policy
/// says. A viewer's 403 names the permission a route needs; every role
/// lacking it in the policy (platform matrix and module grants) must get
/// the same 403, every role holding it must not. A route the viewer passes
/// needs no permission beyond the viewer's, which every role holds.
#[tokio::test]
async fn every_route_answers_every_role_as_the_policy_says() {
    use std::collections::HashSet;
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let modules = nexus::modules::offline().unwrap();
    let policy: HashSet<(String, String, String)> =
        nexus::platform::rbac::policy(modules.grants()).into_iter().collect();
    // Unlimited, so the rate limit does not answer for the policy.
    let root = app.super_admin(&tenant).await;
    let enterprise =
        json!({"tier": "enterprise", "expires_at": chrono::Utc::now() + chrono::Duration::days(365)});
    let path = format!("/api/v1/admin/tenants/{}/license", tenant.id);
    assert_eq!(app.send_json(Method::PUT, &path, Some(&root), enterprise).await.status(), 200);
    let mut tokens = Vec::new();
    for role in nexus::platform::rbac::ROLES {
        tokens.push((*role, app.user_with_roles(&tenant, &[role]).await.1));
    }
    let doc = nexus::api::openapi(&modules);
    let mut routes = 0;
    let mut refusals = 0;
    for (method, path, _) in crate::helpers::operations(&doc) {
        // The caller's own session and token routes need no permission and
        // would end the session under test; the event stream would stay
        // open (events:read is covered above).
        if !path.starts_with("/api/v1/") || path.starts_with("/api/v1/auth/") || path == "/api/v1/events" {
            continue;
        }
        let concrete = path
            .split('/')
            .map(|s| if s.starts_with('{') { uuid::Uuid::now_v7().to_string() } else { s.to_owned() })
            .collect::<Vec<_>>()
            .join("/");
        let send = |token: &str| app.request(method.clone(), &concrete, Some(token)).json(&json!({})).send();
        let needed = |res: &serde_json::Value| -> Option<(String, String)> {
            let detail = res["detail"].as_str()?;
            let (object, action) =
                detail.strip_prefix("this action needs the permission ")?.split_once(':')?;
            Some((object.to_owned(), action.to_owned()))
        };
        let viewer = json(send(&tokens[3].1).await.unwrap()).await;
        let permission = (viewer["code"] == "forbidden").then(|| needed(&viewer)).flatten();
        for (role, token) in &tokens {
            let res = send(token).await.unwrap();
            let status = res.status().as_u16();
            let body: serde_json::Value = res.json().await.unwrap_or_default();
            let refused = status == 403 && body["code"] == "forbidden";
            match &permission {
                Some((object, action)) => {
                    let granted = policy.contains(&((*role).to_owned(), object.clone(), action.clone()));
                    assert_eq!(
                        !refused, granted,
                        "{role} {method} {path} ({object}:{action}): {status} {body}"
                    );
                    if refused {
                        assert_eq!(needed(&body), permission, "{role} {method} {path}");
                        refusals += 1;
                    }
                }
                None => {
                    assert!(!refused, "{role} {method} {path}: refused though the viewer was not: {body}")
                }
            }
        }
        routes += 1;
    }
    assert!(routes >= 60 && refusals >= 100, "only {routes} routes and {refusals} refusals checked");
}
