//! CORS per tenant: preflights for origins some tenant allows, and the
//! allow header only where the caller's own tenant allows the origin.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, assert_problem, json};

const APP: &str = "https://app.example.com";

#[tokio::test]
async fn only_the_tenants_own_origins_get_cors_headers() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.register().await, app.register().await);
    let origins = json!({"origins": ["https://App.Example.com", "http://localhost:3000"]});
    let res = app.send_json(Method::PUT, "/api/v1/cors-origins", Some(&a.token), origins).await;
    assert_eq!(json(res).await["data"]["origins"], json!(["http://localhost:3000", APP]));

    let preflight = |origin: &'static str| {
        app.request(Method::OPTIONS, "/api/v1/users", None)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let res = preflight(APP).await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()["access-control-allow-origin"], APP);
    assert!(res.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert!(res.headers()["access-control-allow-headers"].to_str().unwrap().contains("authorization"));
    assert_eq!(res.headers()["access-control-max-age"], "600");
    let res = preflight("https://evil.example").await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    assert_eq!(res.headers()["vary"], "Origin");

    let call = |token: String, origin: &'static str| {
        app.request(Method::GET, "/api/v1/users", Some(&token)).header("origin", origin).send()
    };
    let res = call(a.token.clone(), APP).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["access-control-allow-origin"], APP);
    assert!(
        res.headers()["access-control-expose-headers"].to_str().unwrap().contains("x-ratelimit-remaining")
    );
    assert!(
        call(a.token.clone(), "https://evil.example")
            .await
            .unwrap()
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // Registering from an allowed origin works before any tenant exists for the caller.
    let res = app
        .request(Method::POST, "/api/v1/auth/register", None)
        .header("origin", APP)
        .json(&json!({"tenant_name": "From Browser", "name": "B", "email": "b@browser.example.com", "password": crate::helpers::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["access-control-allow-origin"], APP);
    // Tenant B never allowed this origin.
    let res = call(b.token.clone(), APP).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("access-control-allow-origin").is_none());

    // Origins are validated; viewers cannot change them.
    let bad = json!({"origins": ["https://app.example.com/path", "*"]});
    let res = app.send_json(Method::PUT, "/api/v1/cors-origins", Some(&a.token), bad).await;
    let body = assert_problem(res, 422, "validation_failed").await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 2);
    let (_, viewer) = app.user_with_roles(&a, &["viewer"]).await;
    let res = app.send_json(Method::PUT, "/api/v1/cors-origins", Some(&viewer), json!({"origins": []})).await;
    assert_problem(res, 403, "forbidden").await;
    assert_eq!(
        json(app.get("/api/v1/cors-origins", &viewer).await).await["data"]["origins"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
