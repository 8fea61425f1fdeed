use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem, json};

#[tokio::test]
async fn another_tenants_resources_answer_404_exactly_like_missing_ones() {
    let app = TestApp::spawn().await;
    let a = app.register().await;
    let b = app.register().await;
    let (b_user, _) = app.user_with_roles(&b, &["user"]).await;

    let foreign =
        assert_problem(app.get(&format!("/api/v1/users/{b_user}"), &a.token).await, 404, "not_found").await;
    let missing = assert_problem(
        app.get(&format!("/api/v1/users/{}", Uuid::now_v7()), &a.token).await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(foreign["detail"], missing["detail"]);

    for (method, path) in [
        (Method::PUT, format!("/api/v1/users/{b_user}/roles/admin")),
        (Method::DELETE, format!("/api/v1/users/{b_user}/roles/user")),
        (Method::POST, format!("/api/v1/users/{b_user}/disable")),
    ] {
        let res = app.request(method, &path, Some(&a.token)).send().await.unwrap();
        assert_problem(res, 404, "not_found").await;
    }
    // B's user is untouched.
    let seen_by_b = json(app.get(&format!("/api/v1/users/{b_user}"), &b.token).await).await;
    assert_eq!(seen_by_b["data"]["roles"], json!(["user"]));
    assert_eq!(seen_by_b["data"]["disabled"], false);

    // Lists only ever show the caller's tenant.
    let list = json(app.get("/api/v1/users?include=total", &a.token).await).await;
    assert_eq!(list["meta"]["total"], 1);
    assert!(list["data"].as_array().unwrap().iter().all(|u| u["tenant_id"] == a.id.to_string()));
}

#[tokio::test]
async fn a_token_of_tenant_b_cannot_revoke_tokens_of_tenant_a() {
    let app = TestApp::spawn().await;
    let a = app.register().await;
    let b = app.register().await;
    let list = json(app.get("/api/v1/auth/tokens", &a.token).await).await;
    let a_token_id = list["data"][0]["id"].as_str().unwrap().to_owned();
    let res = app
        .request(Method::DELETE, &format!("/api/v1/auth/tokens/{a_token_id}"), Some(&b.token))
        .send()
        .await
        .unwrap();
    assert_problem(res, 404, "not_found").await;
    assert_eq!(app.get("/api/v1/auth/me", &a.token).await.status(), 200);
}

#[tokio::test]
async fn only_a_super_admin_may_switch_tenant() {
    let app = TestApp::spawn().await;
    let a = app.register().await;
    let b = app.register().await;

    // An ordinary admin sending X-Tenant-ID is forbidden, even for its own tenant.
    for target in [b.id, a.id] {
        let res = app
            .request(Method::GET, "/api/v1/users", Some(&a.token))
            .header("x-tenant-id", target.to_string())
            .send()
            .await
            .unwrap();
        assert_problem(res, 403, "forbidden").await;
    }

    let root = app.super_admin(&a).await;
    let res = app
        .request(Method::GET, "/api/v1/tenant", Some(&root))
        .header("x-tenant-id", b.id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(json(res).await["data"]["slug"], b.slug.as_str());
    let res = app
        .request(Method::GET, "/api/v1/users", Some(&root))
        .header("x-tenant-id", b.id.to_string())
        .send()
        .await
        .unwrap();
    let users = json(res).await;
    assert_eq!(users["data"][0]["id"], b.admin_id.to_string());
    // Without the header the super-admin is in its home tenant.
    assert_eq!(json(app.get("/api/v1/tenant", &root).await).await["data"]["slug"], a.slug.as_str());

    let unknown = app
        .request(Method::GET, "/api/v1/tenant", Some(&root))
        .header("x-tenant-id", Uuid::now_v7().to_string())
        .send()
        .await
        .unwrap();
    assert_problem(unknown, 404, "not_found").await;
    let malformed = app
        .request(Method::GET, "/api/v1/tenant", Some(&root))
        .header("x-tenant-id", "acme")
        .send()
        .await
        .unwrap();
    assert_problem(malformed, 400, "invalid_header").await;
}

#[tokio::test]
async fn the_tenant_comes_from_the_token_never_from_the_body() {
    let app = TestApp::spawn().await;
    let a = app.register().await;
    let b = app.register().await;
    let res = app
        .post(
            "/api/v1/users",
            &a.token,
            json!({"name": "Sneaky", "email": "sneaky@example.com", "password": crate::helpers::PASSWORD, "tenant_id": b.id}),
        )
        .await;
    let body = assert_problem(res, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "tenant_id");
    assert!(body["errors"][0]["message"].as_str().unwrap().starts_with("is not a known field"));
    assert_eq!(json(app.get("/api/v1/users?include=total", &b.token).await).await["meta"]["total"], 1);
}
