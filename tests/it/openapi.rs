use serde_json::Value;

use crate::helpers::{TestApp, assert_problem};

const PUBLIC: &[&str] = &[
    "/health",
    "/ready",
    "/api/v1/auth/register",
    "/api/v1/auth/login",
    "/api/v1/channel-webhooks/{id}",
    "/api/v1/orders/payments/stripe/callback/{tenant_id}",
];

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
        .expect("openapi/openapi.json is committed");
    assert!(
        committed == nexus::api::openapi_json(&nexus::modules::offline().unwrap()),
        "openapi/openapi.json is out of date: run `cargo run -- openapi` and commit it"
    );
    let app = TestApp::spawn().await;
    let served: Value =
        app.client.get(format!("{}/api/openapi.json", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!(served, serde_json::from_str::<Value>(&committed).unwrap());
}

/// BR-001: every documented operation except the public ones needs a token.
#[tokio::test]
async fn every_non_public_operation_requires_authentication() {
    let app = TestApp::spawn().await;
    let doc = nexus::api::openapi(&nexus::modules::offline().unwrap());
    let mut checked = 0;
    for (method, path, operation) in crate::helpers::operations(&doc) {
        let concrete = path
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{tenant_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{role}", "admin");
        let res = app.request(method.clone(), &concrete, None).send().await.unwrap();
        if PUBLIC.contains(&path.as_str()) {
            assert_ne!(res.status(), 401, "{method} {path} must be public");
            assert!(
                operation.security.is_none(),
                "{method} {path} is public but documents a security scheme"
            );
        } else {
            assert_problem(res, 401, "unauthenticated").await;
            assert!(operation.security.is_some(), "{method} {path} does not document the bearer scheme");
            checked += 1;
        }
    }
    assert!(checked >= 14, "only {checked} protected operations found");
}

#[tokio::test]
async fn swagger_ui_is_served_without_internet() {
    let app = TestApp::spawn().await;
    let res = app.client.get(format!("{}/api/documentation", app.base)).send().await.unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(res.headers().get("location").unwrap(), "/api/documentation/");
    let page = app
        .client
        .get(format!("{}/api/documentation/", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("swagger-ui"));
    for asset in ["swagger-ui-bundle.js", "swagger-ui.css", "swagger-initializer.js"] {
        let res = app.client.get(format!("{}/api/documentation/{asset}", app.base)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{asset}");
    }
    let init = app
        .client
        .get(format!("{}/api/documentation/swagger-initializer.js", app.base))
        .send()
        .await
        .unwrap();
    let init = init.text().await.unwrap();
    assert!(init.contains("/api/openapi.json"));
    // No request beyond this server: no public validator, no external asset.
    assert!(init.contains(r#""validatorUrl": "none""#), "{init}");
    for (name, text) in [("index", &page), ("initializer", &init)] {
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{name} names an external URL: {text}"
        );
    }
}
