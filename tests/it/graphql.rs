use serde_json::{Value, json};

use crate::helpers::{TestApp, json};

async fn query(app: &TestApp, token: Option<&str>, query: &str) -> Value {
    let res = app.send_json(reqwest::Method::POST, "/graphql", token, json!({ "query": query })).await;
    assert_eq!(res.status(), 200);
    json(res).await
}

#[tokio::test]
async fn me_tenant_and_users_resolve_in_the_callers_tenant() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    app.user_with_roles(&tenant, &["viewer"]).await;
    let other = app.register().await;
    let body = query(
        &app,
        Some(&tenant.token),
        "{ me { email roles } tenant { slug } users(first: 10) { items { email roles } pageInfo { total hasMore nextCursor } } }",
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["me"]["email"], tenant.admin_email.as_str());
    assert_eq!(body["data"]["me"]["roles"], json!(["admin"]));
    assert_eq!(body["data"]["tenant"]["slug"], tenant.slug.as_str());
    assert_eq!(body["data"]["users"]["pageInfo"], json!({"total": 2, "hasMore": false, "nextCursor": null}));
    let text = body.to_string();
    assert!(!text.contains(&other.admin_email));
}

#[tokio::test]
async fn errors_carry_the_rest_codes() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let (_, viewer) = app.user_with_roles(&tenant, &["viewer"]).await;

    let body = query(&app, None, "{ me { email } }").await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "unauthenticated");
    let body = query(&app, Some("not-a-token"), "{ me { email } }").await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "unauthenticated");

    let body = query(&app, Some(&viewer), "{ tenant { slug } users { items { email } } }").await;
    assert_eq!(body["data"]["tenant"]["slug"], tenant.slug.as_str());
    assert_eq!(body["errors"][0]["extensions"]["code"], "forbidden");
    assert_eq!(body["errors"][0]["extensions"]["status"], 403);
    assert_eq!(body["errors"][0]["path"], json!(["users"]));

    let body = query(&app, Some(&tenant.token), "{ users(first: 1000) { items { email } } }").await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "invalid_query");
}

/// The introspection query GraphiQL (graphql-js 16) sends when the
/// playground opens; it must pass the depth and complexity limits.
const GRAPHIQL_INTROSPECTION: &str = "query IntrospectionQuery { __schema { queryType { name } \
    mutationType { name } subscriptionType { name } types { ...FullType } directives { name description \
    locations args { ...InputValue } } } } \
    fragment FullType on __Type { kind name description fields(includeDeprecated: true) { name description \
    args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason } inputFields { ...InputValue } \
    interfaces { ...TypeRef } enumValues(includeDeprecated: true) { name description isDeprecated \
    deprecationReason } possibleTypes { ...TypeRef } } \
    fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue } \
    fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { \
    kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name \
    } } } } } } } } } }";

#[tokio::test]
async fn introspection_works_without_a_token_and_deep_queries_are_refused() {
    let app = TestApp::spawn().await;
    let body = query(&app, None, GRAPHIQL_INTROSPECTION).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query");
    let deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { \
                ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } } } } } } } }";
    let body = query(&app, None, deep).await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("nested too deep"), "{body}");
}

#[tokio::test]
async fn overly_complex_queries_are_refused_before_running() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let fields: String = (0..600).map(|i| format!("a{i}: me {{ email }} ")).collect();
    let body = query(&app, Some(&tenant.token), &format!("{{ {fields} }}")).await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("too complex"), "{body}");
    assert!(body["data"].is_null());
}

#[tokio::test]
async fn the_playground_is_served_with_its_assets() {
    let app = TestApp::spawn().await;
    let page = app.client.get(format!("{}/graphql", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("GraphiQL"));
    assert!(!page.contains("https://"), "the playground must not load anything from the internet");
    for asset in
        ["graphiql.min.js", "graphiql.min.css", "react.production.min.js", "react-dom.production.min.js"]
    {
        assert!(page.contains(&format!("/graphql/assets/{asset}")));
        let res = app.client.get(format!("{}/graphql/assets/{asset}", app.base)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{asset}");
        assert!(res.bytes().await.unwrap().len() > 1000);
    }
    let missing = app.client.get(format!("{}/graphql/assets/evil.js", app.base)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn webhook_endpoints_are_managed_over_graphql() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let receiver = crate::receiver::Receiver::start(&[]).await;
    let create = format!(
        r#"mutation {{ createWebhookEndpoint(input: {{ url: "{}", eventTypes: ["user.*"], priority: 8 }})
           {{ secret endpoint {{ id version priority eventTypes }} }} }}"#,
        receiver.url
    );
    let body = query(&app, Some(&tenant.token), &create).await;
    assert!(body.get("errors").is_none(), "{body}");
    let created = &body["data"]["createWebhookEndpoint"];
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(created["endpoint"]["eventTypes"], json!(["user.*"]));
    let id = created["endpoint"]["id"].as_str().unwrap().to_owned();

    let body = query(
        &app,
        Some(&tenant.token),
        &format!(r#"mutation {{ sendWebhookTest(id: "{id}") {{ status }} }}"#),
    )
    .await;
    assert_eq!(body["data"]["sendWebhookTest"]["status"], "pending", "{body}");
    receiver.wait_for(1).await;
    app.drained().await;
    let nested = format!(
        r#"{{ webhookEndpoint(id: "{id}") {{ url deliveries {{ items {{ eventType status attemptLog {{ statusCode }} }} }} }} }}"#
    );
    let body = query(&app, Some(&tenant.token), &nested).await;
    let delivery = &body["data"]["webhookEndpoint"]["deliveries"]["items"][0];
    assert_eq!(delivery["eventType"], "webhook.test", "{body}");
    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(delivery["attemptLog"][0]["statusCode"], 200);
    // The status filter is checked as in REST (docs/graphql.md).
    let unknown =
        format!(r#"{{ webhookEndpoint(id: "{id}") {{ deliveries(status: "lost") {{ items {{ id }} }} }} }}"#);
    let body = query(&app, Some(&tenant.token), &unknown).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "invalid_query", "{body}");

    // Stale version: the REST code, 412.
    let stale = format!(
        r#"mutation {{ updateWebhookEndpoint(id: "{id}", version: 7, changes: {{ enabled: false }}) {{ id }} }}"#
    );
    let body = query(&app, Some(&tenant.token), &stale).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "precondition_failed");
    // Field errors come along in the extensions.
    let bad = r#"mutation { createWebhookEndpoint(input: { url: "http://10.0.0.1/", eventTypes: ["nope"] }) { secret } }"#;
    let body = query(&app, Some(&tenant.token), bad).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "validation_failed", "{body}");
    let fields: Vec<&str> = body["errors"][0]["extensions"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["url", "event_types[0]"]);
    let body =
        query(&app, Some(&tenant.token), &format!(r#"mutation {{ deleteWebhookEndpoint(id: "{id}") }}"#))
            .await;
    assert_eq!(body["data"]["deleteWebhookEndpoint"], true);
    let body = query(
        &app,
        Some(&tenant.token),
        "{ webhookEndpoints { pageInfo { total } } webhookEventTypes { name } }",
    )
    .await;
    assert_eq!(body["data"]["webhookEndpoints"]["pageInfo"]["total"], 0);
    assert!(
        body["data"]["webhookEventTypes"].as_array().unwrap().iter().any(|t| t["name"] == "user.created")
    );
}

/// `/graphql` takes the REST body rules: a size limit (far smaller before
/// the caller is known), JSON only, no NUL in any string.
#[tokio::test]
async fn graphql_bodies_are_bounded_json_without_nul() {
    use crate::helpers::assert_problem;
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let post = |token: Option<&str>, body: Vec<u8>, content_type: &str| {
        let req = app.request(reqwest::Method::POST, "/graphql", token);
        req.header("content-type", content_type).body(body).send()
    };
    let padded = |bytes: usize| {
        serde_json::to_vec(&json!({"query": format!("{{ me {{ email }} }}{}", " ".repeat(bytes))})).unwrap()
    };
    // Anonymous: 20 KiB is refused unread; an introspection-sized body is fine.
    assert_problem(
        post(None, padded(20 * 1024), "application/json").await.unwrap(),
        413,
        "payload_too_large",
    )
    .await;
    let res = post(None, padded(1024), "application/json").await.unwrap();
    assert_eq!(res.status(), 200);
    // Authenticated: up to http.max_body_bytes (1 MiB), not beyond.
    let token = Some(tenant.token.as_str());
    assert_eq!(post(token, padded(512 * 1024), "application/json").await.unwrap().status(), 200);
    assert_problem(post(token, padded(2 << 20), "application/json").await.unwrap(), 413, "payload_too_large")
        .await;
    // Multipart (file uploads) and other types are refused.
    let multipart =
        b"--x\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{}\r\n--x--\r\n".to_vec();
    let res = post(token, multipart, "multipart/form-data; boundary=x").await.unwrap();
    assert_problem(res, 415, "unsupported_media_type").await;
    assert_problem(post(token, padded(10), "text/plain").await.unwrap(), 415, "unsupported_media_type").await;
    // NUL in an argument of the document, in a variable, in the body: 400, as REST answers.
    let body =
        serde_json::to_vec(&json!({"query": r#"{ products(sku: "a\u0000b") { items { id } } }"#})).unwrap();
    let res = post(token, body, "application/json").await.unwrap();
    let problem = assert_problem(res, 400, "invalid_string").await;
    assert_eq!(problem["errors"][0]["field"], "query", "{problem}");
    let body = serde_json::to_vec(&json!({
        "query": "query($sku: String) { products(sku: $sku) { items { id } } }",
        "variables": {"sku": "a\u{0}b"}
    }))
    .unwrap();
    let problem =
        assert_problem(post(token, body, "application/json").await.unwrap(), 400, "invalid_string").await;
    assert_eq!(problem["errors"][0]["field"], "variables.sku", "{problem}");
}

/// `/graphql` honours Idempotency-Key like a REST `POST`: a retried
/// mutation with the same key is replayed, not run again (docs/governance.md).
#[tokio::test]
async fn a_retried_mutation_with_the_same_idempotency_key_is_replayed() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let create = json!({"query": r#"mutation { createWebhookEndpoint(input: { url: "https://example.com/h", eventTypes: ["*"] }) { endpoint { id } } }"#});
    let send = || {
        app.request(reqwest::Method::POST, "/graphql", Some(&tenant.token))
            .header("Idempotency-Key", "graphql-retry-1")
            .json(&create)
            .send()
    };
    let first = send().await.unwrap();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = json(first).await;
    let again = send().await.unwrap();
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(json(again).await, first);
    let list = json(app.get("/api/v1/webhooks", &tenant.token).await).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "the mutation ran twice");
}

/// Sibling fields resolve concurrently; the answer still lists them in the
/// order they were selected, aliases and fragments included (the GraphQL
/// specification, section 7.1.2). Before the fix, `{ me tenant products }`
/// came back in the order the resolvers finished.
#[tokio::test]
async fn fields_come_back_in_selection_order() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let query = "query A { features { enabled key } x: tenant { slug } ...F me { email } } \
                 fragment F on Query { products(first: 1) { pageInfo { hasMore } items { id } } me { id } }";
    for _ in 0..10 {
        let res = app
            .send_json(reqwest::Method::POST, "/graphql", Some(&tenant.token), json!({ "query": query }))
            .await;
        let text = res.text().await.unwrap();
        let at = |key: &str| {
            text.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} missing in {text}"))
        };
        let keys =
            ["features", "enabled", "key", "x", "slug", "products", "pageInfo", "items", "me", "id", "email"];
        let positions: Vec<usize> = keys.iter().map(|k| at(k)).collect();
        assert!(positions.is_sorted(), "{text}");
    }
}
