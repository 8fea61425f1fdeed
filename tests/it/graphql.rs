use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, json};

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
    assert!(
        page.contains("subscriptionUrl") && page.contains("/graphql/ws"),
        "the playground runs subscriptions"
    );
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

/// Runs a document with variables; the body (200, errors or not).
async fn run(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let body = json!({ "query": query, "variables": variables });
    let res = app.send_json(reqwest::Method::POST, "/graphql", Some(token), body).await;
    assert_eq!(res.status(), 200);
    json(res).await
}

/// `data` of a document that must succeed.
async fn data(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let body = run(app, token, query, variables).await;
    assert!(body.get("errors").is_none(), "{query}: {body}");
    body["data"].clone()
}

/// The inventory and procurement flows over GraphQL alone: warehouses,
/// products, stock adjusted, transferred, reserved, committed and
/// released; a vendor, a purchase order submitted, approved and received,
/// and its journal entry. Every step answers what REST answers.
#[tokio::test]
async fn the_inventory_and_procurement_flows_run_over_graphql_alone() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let t = tenant.token.as_str();
    let warehouse = "mutation($input: CreateWarehouseInput!) { createWarehouse(input: $input) { id code } }";
    let main = data(&app, t, warehouse, json!({"input": {"code": "MAIN", "name": "Main"}})).await;
    let main = main["createWarehouse"]["id"].as_str().unwrap().to_owned();
    let back = data(&app, t, warehouse, json!({"input": {"code": "BACK", "name": "Back"}})).await;
    let back = back["createWarehouse"]["id"].as_str().unwrap().to_owned();
    let found = data(
        &app,
        t,
        "query($id: UUID!) { warehouse(id: $id) { code } warehouses { items { code } } }",
        json!({"id": main}),
    )
    .await;
    assert_eq!(found["warehouse"]["code"], "MAIN");
    assert_eq!(found["warehouses"]["items"], json!([{"code": "BACK"}, {"code": "MAIN"}]));

    let create = "mutation($input: CreateProductInput!) { createProduct(input: $input) { id version } }";
    let input = json!({"sku": "TSHIRT", "name": "T-shirt", "unitPrice": 1999, "currency": "EUR"});
    let product = data(&app, t, create, json!({"input": input})).await["createProduct"].clone();
    let id = product["id"].as_str().unwrap().to_owned();
    let taken = run(&app, t, create, json!({"input": input})).await;
    assert_eq!(taken["errors"][0]["extensions"]["code"], "conflict", "{taken}");
    let update = "mutation($id: UUID!, $v: Int) { updateProduct(id: $id, input: {name: \"T-shirt, red\"}, ifVersion: $v) { name version } }";
    let updated = data(&app, t, update, json!({"id": id, "v": 1})).await;
    assert_eq!(updated["updateProduct"], json!({"name": "T-shirt, red", "version": 2}));
    let stale = run(&app, t, update, json!({"id": id, "v": 1})).await;
    assert_eq!(stale["errors"][0]["extensions"]["code"], "precondition_failed", "{stale}");

    let adjust = "mutation($input: AdjustmentInput!) { adjustStock(input: $input) { onHand available } }";
    let level = data(
        &app,
        t,
        adjust,
        json!({"input": {"productId": id, "warehouseId": main, "quantity": 10, "reason": "count"}}),
    )
    .await;
    assert_eq!(level["adjustStock"], json!({"onHand": 10, "available": 10}));
    let invalid = run(
        &app,
        t,
        adjust,
        json!({"input": {"productId": id, "warehouseId": main, "quantity": 0, "reason": " "}}),
    )
    .await;
    assert_eq!(invalid["errors"][0]["extensions"]["code"], "validation_failed", "{invalid}");
    let fields: Vec<&str> = invalid["errors"][0]["extensions"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["quantity", "reason"]);
    let short = run(
        &app,
        t,
        adjust,
        json!({"input": {"productId": id, "warehouseId": main, "quantity": -11, "reason": "loss"}}),
    )
    .await;
    assert_eq!(short["errors"][0]["extensions"]["code"], "insufficient_stock", "{short}");

    let transfer = "mutation($input: TransferInput!) { transferStock(input: $input) }";
    let moved = data(
        &app,
        t,
        transfer,
        json!({"input": {"productId": id, "fromWarehouseId": main, "toWarehouseId": back, "quantity": 3}}),
    )
    .await;
    assert_eq!(moved["transferStock"], true);
    let reserve = "mutation($input: ReserveInput!) { reserveStock(input: $input) { reference status lines { quantity } } }";
    for reference in ["r1", "r2"] {
        let lines = json!([{"productId": id, "warehouseId": main, "quantity": 2}]);
        let held = data(&app, t, reserve, json!({"input": {"reference": reference, "lines": lines}})).await;
        assert_eq!(held["reserveStock"]["status"], "active");
    }
    let settled = data(&app, t, "mutation { commitReservation(reference: \"r1\") { status } releaseReservation(reference: \"r2\") { status } }", json!({})).await;
    assert_eq!(
        settled,
        json!({"commitReservation": {"status": "committed"}, "releaseReservation": {"status": "released"}})
    );
    let again = run(&app, t, "mutation { commitReservation(reference: \"r2\") { status } }", json!({})).await;
    assert_eq!(again["errors"][0]["extensions"]["code"], "conflict", "{again}");

    let vendor = data(
        &app,
        t,
        "mutation { createVendor(input: {name: \"Acme\", currency: \"EUR\"}) { id version } }",
        json!({}),
    )
    .await;
    let vendor = vendor["createVendor"]["id"].as_str().unwrap().to_owned();
    let po = data(
        &app,
        t,
        "mutation($v: UUID!, $w: UUID!, $p: UUID!) { createPurchaseOrder(vendorId: $v, warehouseId: $w, lines: [{productId: $p, quantity: 5, unitCost: 700}]) { id total lines { id } } }",
        json!({"v": vendor, "w": main, "p": id}),
    )
    .await["createPurchaseOrder"]
        .clone();
    assert_eq!(po["total"], 3500);
    let po_id = po["id"].as_str().unwrap();
    for action in ["SUBMIT", "APPROVE"] {
        let query = format!(
            "mutation($id: UUID!) {{ transitionPurchaseOrder(id: $id, action: {action}) {{ status }} }}"
        );
        data(&app, t, &query, json!({"id": po_id})).await;
    }
    let line = po["lines"][0]["id"].as_str().unwrap();
    let received = data(&app, t, "mutation($id: UUID!, $l: UUID!) { receiveGoods(id: $id, lines: [{lineId: $l, quantity: 5}]) { status } }", json!({"id": po_id, "l": line})).await;
    assert_eq!(received["receiveGoods"]["status"], "received");

    let after = data(
        &app,
        t,
        "query($p: UUID!, $w: UUID!) { stockLevels(productId: $p, warehouseId: $w) { items { onHand reserved } } \
         stockMovements(productId: $p, first: 50) { items { kind quantity } } \
         ledgerEntries { items { reference lines { account debit credit } } } }",
        json!({"p": id, "w": main}),
    )
    .await;
    // 10 counted, 3 moved out, 2 shipped through r1, 5 received.
    assert_eq!(after["stockLevels"]["items"], json!([{"onHand": 10, "reserved": 0}]));
    let mut kinds: Vec<&str> = after["stockMovements"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "adjustment",
            "receipt",
            "release",
            "reservation",
            "reservation",
            "shipment",
            "transfer_in",
            "transfer_out"
        ]
    );
    assert_eq!(after["ledgerEntries"]["items"][0]["reference"], format!("purchase_order:{po_id}"));

    let (_, viewer) = app.user_with_roles(&tenant, &["viewer"]).await;
    let refused = run(
        &app,
        &viewer,
        "mutation { createVendor(input: {name: \"X\", currency: \"EUR\"}) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "forbidden", "{refused}");
    let other = app.register().await;
    let hidden =
        run(&app, &other.token, "query($id: UUID!) { product(id: $id) { id } }", json!({"id": id})).await;
    assert_eq!(hidden["errors"][0]["extensions"]["code"], "not_found", "{hidden}");
}

/// Users, roles, the audit log and feature toggles over GraphQL, with the
/// REST rules: a scheduled toggle keeps its dates, a cleared one follows
/// the default again, and switching `feature.graphql` off over GraphQL
/// leaves REST to switch it back on.
#[tokio::test]
async fn users_roles_audit_and_toggles_run_over_graphql() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let t = tenant.token.as_str();
    let created = data(
        &app,
        t,
        "mutation { createUser(input: {name: \"Grace\", email: \"grace@example.com\", password: \"a long passphrase 42\"}) { id roles } }",
        json!({}),
    )
    .await;
    let user = created["createUser"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["createUser"]["roles"], json!(["user"]));
    let weak = run(
        &app,
        t,
        "mutation { createUser(input: {name: \"G\", email: \"g@example.com\", password: \"short\"}) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(weak["errors"][0]["extensions"]["code"], "validation_failed", "{weak}");
    let changed = data(
        &app,
        t,
        "mutation($id: UUID!) { assignRole(id: $id, role: \"manager\") { roles } removeRole(id: $id, role: \"user\") { roles } disableUser(id: $id) { disabled } }",
        json!({"id": user}),
    )
    .await;
    assert_eq!(changed["removeRole"]["roles"], json!(["manager"]));
    assert_eq!(changed["disableUser"]["disabled"], true);
    let login = app.login(&tenant.slug, "grace@example.com", "a long passphrase 42").await;
    assert_eq!(login.status(), 401, "a disabled user cannot sign in");
    let enabled =
        data(&app, t, "mutation($id: UUID!) { enableUser(id: $id) { disabled } }", json!({"id": user})).await;
    assert_eq!(enabled["enableUser"]["disabled"], false);
    let fetched = data(&app, t, "query($id: UUID!) { user(id: $id) { email } }", json!({"id": user})).await;
    assert_eq!(fetched["user"]["email"], "grace@example.com");
    let trail =
        data(&app, t, "{ auditLogs(status: 201) { items { method route status } } }", json!({})).await;
    assert!(trail["auditLogs"]["items"].as_array().unwrap().iter().all(|e| e["status"] == 201), "{trail}");

    let scheduled = data(
        &app,
        t,
        "mutation { setFeature(key: \"module.procurement\", enabled: false, effectiveAt: \"2099-01-01T00:00:00Z\", expiresAt: \"2099-02-01T00:00:00Z\") { key enabled } }",
        json!({}),
    )
    .await;
    assert_eq!(scheduled["setFeature"]["enabled"], true, "not yet in effect: {scheduled}");
    let backwards = run(
        &app,
        t,
        "mutation { setFeature(key: \"module.procurement\", enabled: false, effectiveAt: \"2099-02-01T00:00:00Z\", expiresAt: \"2099-01-01T00:00:00Z\") { key } }",
        json!({}),
    )
    .await;
    assert_eq!(backwards["errors"][0]["extensions"]["code"], "validation_failed", "{backwards}");
    let cleared =
        data(&app, t, "mutation { clearFeature(key: \"module.procurement\") { enabled source } }", json!({}))
            .await;
    assert_eq!(cleared["clearFeature"]["source"], "default", "{cleared}");

    data(&app, t, "mutation { setFeature(key: \"feature.graphql\", enabled: false) { enabled } }", json!({}))
        .await;
    let res =
        app.send_json(reqwest::Method::POST, "/graphql", Some(t), json!({"query": "{ me { email } }"})).await;
    assert_eq!(res.status(), 403);
    let res = app
        .send_json(
            reqwest::Method::PUT,
            "/api/v1/features/feature.graphql",
            Some(t),
            json!({"enabled": true}),
        )
        .await;
    assert_eq!(res.status(), 200);
    data(&app, t, "{ me { email } }", json!({})).await;
}

/// A GraphQL subscription over a WebSocket (graphql-transport-ws): the
/// token travels in `connection_init`, `types` filters, the tenant's own
/// events only, and a product created over REST arrives within a second.
#[tokio::test]
async fn a_subscription_receives_the_tenants_events_as_they_commit() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let other = app.register().await;
    let url = format!("{}/graphql/ws", app.base.replace("http", "ws"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let send = |v: Value| Message::Text(v.to_string().into());
    let init =
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {}", tenant.token)}});
    ws.send(send(init)).await.unwrap();
    assert_eq!(next_message(&mut ws).await["type"], "connection_ack");
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { events(types: [\"product.*\"]) { type tenantId data } }"}});
    ws.send(send(subscribe)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let product = json!({"sku": "LIVE-1", "name": "Live", "unit_price": 100, "currency": "EUR"});
    assert_eq!(app.post("/api/v1/products", &other.token, product.clone()).await.status(), 201);
    app.post("/api/v1/warehouses", &tenant.token, json!({"code": "W", "name": "W"})).await;
    let started = std::time::Instant::now();
    assert_eq!(app.post("/api/v1/products", &tenant.token, product).await.status(), 201);
    let message = next_message(&mut ws).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(message["type"], "next", "{message}");
    let event = &message["payload"]["data"]["events"];
    assert_eq!(event["type"], "product.created");
    assert_eq!(event["tenantId"], tenant.id.to_string());
    assert_eq!(event["data"]["sku"], "LIVE-1");
}

/// The next text message of a WebSocket, as JSON (within 5 s).
async fn next_message<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<
            Item = Result<tokio_tungstenite::tungstenite::Message, tokio_tungstenite::tungstenite::Error>,
        > + Unpin,
{
    use futures_util::StreamExt;
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Without a good token in `connection_init`, the connection is refused.
#[tokio::test]
async fn a_subscription_without_a_valid_token_is_refused() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

    let app = TestApp::spawn().await;
    let url = format!("{}/graphql/ws", app.base.replace("http", "ws"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let init = json!({"type": "connection_init", "payload": {"Authorization": "Bearer not-a-token"}});
    ws.send(Message::Text(init.to_string().into())).await.unwrap();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Close(frame) => return frame.map(|f| f.reason.to_string()),
                Message::Text(text) => assert!(!text.contains("connection_ack"), "{text}"),
                _ => {}
            }
        }
        None
    })
    .await
    .unwrap();
    assert!(closed.is_some_and(|reason| reason.contains("invalid")), "closed without the reason");
}

/// The `code` and the REST field names of a GraphQL error.
fn error_of(body: &Value) -> (String, Vec<String>) {
    let error = &body["errors"][0]["extensions"];
    let fields = error["errors"].as_array().into_iter().flatten();
    let fields = fields.map(|e| e["field"].as_str().unwrap().to_owned()).collect();
    (error["code"].as_str().unwrap_or_default().to_owned(), fields)
}

/// Personal API tokens over GraphQL, as over `/api/v1/auth/tokens`: the
/// value shown once and working, listed without it, checked as REST
/// checks the body, and a revoked one refused on its next request.
#[tokio::test]
async fn api_tokens_are_created_listed_and_revoked_over_graphql() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let t = tenant.token.as_str();
    let create = "mutation($input: CreateApiTokenInput!) { createApiToken(input: $input) { id token tokenType name expiresAt } }";
    let issued = data(&app, t, create, json!({"input": {"name": " ci-pipeline ", "expiresInDays": 2}})).await;
    let issued = &issued["createApiToken"];
    assert_eq!(
        (issued["name"].clone(), issued["tokenType"].clone()),
        (json!("ci-pipeline"), json!("Bearer"))
    );
    let expires: chrono::DateTime<chrono::Utc> = issued["expiresAt"].as_str().unwrap().parse().unwrap();
    let in_two_days = chrono::Utc::now() + chrono::Duration::days(2);
    assert!((in_two_days - expires).num_seconds().abs() < 60, "{expires}");
    let (id, token) = (issued["id"].as_str().unwrap(), issued["token"].as_str().unwrap());

    // The new token works, and the list marks it as the one asking.
    let listed = data(&app, token, "{ me { email } apiTokens { id name kind current } }", json!({})).await;
    assert_eq!(listed["me"]["email"], tenant.admin_email.as_str());
    let tokens = listed["apiTokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "the registration session and the new token: {listed}");
    assert_eq!(tokens[0], json!({"id": id, "name": "ci-pipeline", "kind": "personal", "current": true}));
    assert_eq!((tokens[1]["kind"].clone(), tokens[1]["current"].clone()), (json!("session"), json!(false)));
    assert!(!listed.to_string().contains(token), "a listed token never shows its value");

    let invalid = run(&app, t, create, json!({"input": {"name": " ", "expiresInDays": 0}})).await;
    assert_eq!(
        error_of(&invalid),
        ("validation_failed".into(), vec!["name".into(), "expires_in_days".into()])
    );

    // Another user cannot revoke it; its owner can, once.
    let (_, other) = app.user_with_roles(&tenant, &["admin"]).await;
    let revoke = "mutation($id: UUID!) { revokeApiToken(id: $id) }";
    let foreign = run(&app, &other, revoke, json!({"id": id})).await;
    assert_eq!(error_of(&foreign).0, "not_found", "{foreign}");
    data(&app, token, "{ me { email } }", json!({})).await;
    assert_eq!(data(&app, t, revoke, json!({"id": id})).await["revokeApiToken"], true);
    let refused = run(&app, token, "{ me { email } }", json!({})).await;
    assert_eq!(error_of(&refused).0, "unauthenticated", "{refused}");
    let rest = app.get("/api/v1/auth/me", token).await;
    assert_eq!(rest.status(), 401);
    let again = run(&app, t, revoke, json!({"id": id})).await;
    assert_eq!(error_of(&again).0, "not_found", "{again}");
    let remaining = data(&app, t, "{ apiTokens { kind } }", json!({})).await;
    assert_eq!(remaining["apiTokens"], json!([{"kind": "session"}]));
}

/// CORS origins over GraphQL: stored normalized, read back over GraphQL
/// and REST, applied to the next request, refused with the REST field
/// errors when invalid, and only by holders of `cors:write`.
#[tokio::test]
async fn cors_origins_are_set_and_read_over_graphql() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let t = tenant.token.as_str();
    let set = "mutation($origins: [String!]!) { setCorsOrigins(origins: $origins) }";
    let origins = json!(["https://App.Example.com", "http://localhost:3000", "https://app.example.com:443"]);
    let saved = data(&app, t, set, json!({"origins": origins})).await;
    let expected = json!(["http://localhost:3000", "https://app.example.com"]);
    assert_eq!(saved["setCorsOrigins"], expected);
    assert_eq!(data(&app, t, "{ corsOrigins }", json!({})).await["corsOrigins"], expected);
    let rest = json(app.get("/api/v1/cors-origins", t).await).await;
    assert_eq!(rest["data"]["origins"], expected);
    let res = app
        .request(reqwest::Method::POST, "/graphql", Some(t))
        .header("origin", "https://app.example.com")
        .json(&json!({"query": "{ me { email } }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example.com");

    let bad = run(
        &app,
        t,
        set,
        json!({"origins": ["https://app.example.com/path", "*", "https://ok.example.com"]}),
    )
    .await;
    assert_eq!(error_of(&bad), ("validation_failed".into(), vec!["origins[0]".into(), "origins[1]".into()]));
    let (_, viewer) = app.user_with_roles(&tenant, &["viewer"]).await;
    let refused = run(&app, &viewer, set, json!({"origins": []})).await;
    assert_eq!(error_of(&refused).0, "forbidden", "{refused}");
    // Neither changed anything; a viewer may read them.
    assert_eq!(data(&app, &viewer, "{ corsOrigins }", json!({})).await["corsOrigins"], expected);
    let cleared = data(&app, t, set, json!({"origins": []})).await;
    assert_eq!(cleared["setCorsOrigins"], json!([]));
}

/// A super-admin's operator queries over GraphQL, as under
/// `/api/v1/admin`: dead jobs listed and replayed, queue health, another
/// tenant's license read and assigned, global toggles set and cleared;
/// a tenant admin is refused every one of them.
#[tokio::test]
async fn a_super_admin_operates_over_graphql_and_a_tenant_admin_is_refused() {
    use nexus::platform::jobs::{self, NewJob};
    let app = TestApp::spawn().await;
    let (tenant, other) = (app.register().await, app.register().await);
    let root = app.super_admin(&tenant).await;
    let r = root.as_str();

    let id = jobs::enqueue(&app.state.db, NewJob::new("test.unknown", json!({"n": 1})).max_attempts(3))
        .await
        .unwrap();
    let list = "query($status: String) { jobs(status: $status, kind: \"test.unknown\") { items { id payload attempts lastError } pageInfo { total } } jobStats { lane dead } }";
    // The list and the stats are resolved side by side: wait until both
    // have seen the job die.
    let dead = eventually(10, || async {
        let body = data(&app, r, list, json!({})).await;
        let counted =
            body["jobStats"].as_array().is_some_and(|l| l.iter().any(|l| l["dead"].as_u64() >= Some(1)));
        (body["jobs"]["pageInfo"]["total"] == 1 && body["jobs"]["items"][0]["id"].is_string() && counted)
            .then_some(body)
    })
    .await;
    let job = &dead["jobs"]["items"][0];
    assert_eq!((job["id"].clone(), job["payload"].clone()), (json!(id.to_string()), json!({"n": 1})));
    assert!(job["lastError"].as_str().unwrap().contains("no handler"), "{dead}");
    let lane = dead["jobStats"].as_array().unwrap().iter().find(|l| l["lane"] == "default").unwrap();
    assert!(lane["dead"].as_u64().unwrap() >= 1, "{dead}");
    let lost = run(&app, r, list, json!({"status": "lost"})).await;
    assert_eq!(error_of(&lost), ("invalid_query".into(), vec!["status".into()]));

    let replayed =
        data(&app, r, "mutation($id: UUID!) { replayJob(id: $id) { replayed } }", json!({"id": id})).await;
    assert_eq!(replayed["replayJob"]["replayed"], 1);
    // Replayed, it fails again and is dead again, with fresh attempts (a
    // claimed job counts its attempt before it runs: wait for it dead).
    eventually(10, || async {
        let body = data(&app, r, list, json!({"status": "dead"})).await;
        (body["jobs"]["pageInfo"]["total"] == 1 && body["jobs"]["items"][0]["attempts"] == 1).then_some(())
    })
    .await;
    let many = data(&app, r, "mutation { replayJobs(kind: \"test.unknown\") { replayed } }", json!({})).await;
    assert_eq!(many["replayJobs"]["replayed"], 1);
    let missing = run(
        &app,
        r,
        "mutation($id: UUID!) { replayJob(id: $id) { replayed } }",
        json!({"id": uuid::Uuid::now_v7()}),
    )
    .await;
    assert_eq!(error_of(&missing).0, "not_found", "{missing}");

    let license = "query($t: UUID!) { tenantLicense(tenantId: $t) { tenantId tier trial usage { period } } }";
    let read = data(&app, r, license, json!({"t": other.id})).await["tenantLicense"].clone();
    assert_eq!((read["tenantId"].clone(), read["trial"].clone()), (json!(other.id.to_string()), json!(true)));
    assert_eq!(read["usage"]["period"], chrono::Utc::now().format("%Y-%m").to_string());
    let assign = "mutation($t: UUID!, $input: LicenseAssignmentInput!) { assignTenantLicense(tenantId: $t, input: $input) { tier trial limits { maxUsers } } }";
    let assigned =
        data(&app, r, assign, json!({"t": other.id, "input": {"tier": "enterprise", "maxUsers": 7}})).await;
    assert_eq!(
        assigned["assignTenantLicense"],
        json!({"tier": "enterprise", "trial": false, "limits": {"maxUsers": 7}})
    );
    let rest = json(app.get(&format!("/api/v1/admin/tenants/{}/license", other.id), r).await).await;
    assert_eq!(
        (rest["data"]["tier"].clone(), rest["data"]["limits"]["max_users"].clone()),
        (json!("enterprise"), json!(7))
    );
    let gold =
        run(&app, r, assign, json!({"t": other.id, "input": {"tier": "gold", "status": "asleep"}})).await;
    assert_eq!(error_of(&gold), ("validation_failed".into(), vec!["tier".into(), "status".into()]));
    let nobody = run(&app, r, license, json!({"t": uuid::Uuid::now_v7()})).await;
    assert_eq!(error_of(&nobody).0, "not_found", "{nobody}");

    let set = "mutation($key: String!, $state: String!) { setGlobalFeature(key: $key, state: $state) }";
    let removed = data(&app, r, set, json!({"key": "feature.webhooks", "state": "removed"})).await;
    assert_eq!(removed["setGlobalFeature"], true);
    crate::helpers::assert_problem(app.get("/api/v1/webhooks", &other.token).await, 410, "gone").await;
    let clear = "mutation { clearGlobalFeature(key: \"feature.webhooks\") }";
    assert_eq!(data(&app, r, clear, json!({})).await["clearGlobalFeature"], true);
    assert_eq!(app.get("/api/v1/webhooks", &other.token).await.status(), 200);
    let again = run(&app, r, clear, json!({})).await;
    assert_eq!(error_of(&again).0, "not_found", "{again}");
    let bogus = run(&app, r, set, json!({"key": "feature.webhooks", "state": "asleep"})).await;
    assert_eq!(error_of(&bogus), ("validation_failed".into(), vec!["state".into()]));
    let unknown = run(&app, r, set, json!({"key": "feature.nothing", "state": "enabled"})).await;
    assert_eq!(error_of(&unknown).0, "not_found", "{unknown}");

    // A tenant admin holds none of the operator permissions.
    let t = tenant.token.as_str();
    let refused = [
        "query { jobs { pageInfo { hasMore } } }",
        "query { jobStats { lane } }",
        "query($t: UUID!) { tenantLicense(tenantId: $t) { tier } }",
        "mutation($id: UUID!) { replayJob(id: $id) { replayed } }",
        "mutation { replayJobs { replayed } }",
        "mutation($t: UUID!) { assignTenantLicense(tenantId: $t, input: {tier: \"enterprise\"}) { tier } }",
        "mutation { setGlobalFeature(key: \"feature.webhooks\", state: \"removed\") }",
        "mutation { clearGlobalFeature(key: \"feature.webhooks\") }",
    ];
    for document in refused {
        let body = run(&app, t, document, json!({"t": tenant.id, "id": id})).await;
        assert_eq!(error_of(&body).0, "forbidden", "{document}: {body}");
    }
    let license = json(app.get("/api/v1/license", t).await).await;
    assert_ne!(license["data"]["tier"], "enterprise", "the refused assignment changed nothing");
    assert_eq!(app.get("/api/v1/webhooks", &other.token).await.status(), 200);
}

/// A subscription opened over graphql-transport-ws for `token`, subscribed
/// to `query` under id "1", its `connection_ack` read.
async fn subscribed(
    app: &TestApp,
    token: &str,
    query: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
    let mut request = format!("{}/graphql/ws", app.base.replace("http", "ws")).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
    ws.send(Message::Text(init.to_string().into())).await.unwrap();
    assert_eq!(next_message(&mut ws).await["type"], "connection_ack");
    let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": query}});
    ws.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    ws
}

/// `after` resumes a subscription: what was committed since that event is
/// replayed first. Revoking the token ends the subscription at the next
/// heartbeat (`complete`), as it ends an SSE stream.
#[tokio::test]
async fn a_subscription_resumes_after_an_event_and_ends_when_its_token_is_revoked() {
    let app = TestApp::spawn_adjusted(|f| f.merge(("events.sse_heartbeat_ms", 50))).await;
    let tenant = app.register().await;
    let (_, manager) = app.user_with_roles(&tenant, &["admin"]).await;
    let query = "subscription { events(types: [\"product.*\"]) { id type data } }";
    let mut live = subscribed(&app, &manager, query).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let product = |sku: &str| json!({"sku": sku, "name": sku, "unit_price": 1, "currency": "EUR"});
    assert_eq!(app.post("/api/v1/products", &manager, product("FIRST")).await.status(), 201);
    let first = next_message(&mut live).await;
    assert_eq!(first["payload"]["data"]["events"]["data"]["sku"], "FIRST", "{first}");
    let after = first["payload"]["data"]["events"]["id"].as_str().unwrap().to_owned();
    assert_eq!(app.post("/api/v1/products", &manager, product("SECOND")).await.status(), 201);

    let resume =
        format!("subscription {{ events(types: [\"product.*\"], after: \"{after}\") {{ id type data }} }}");
    let mut resumed = subscribed(&app, &manager, &resume).await;
    let replayed = next_message(&mut resumed).await;
    assert_eq!(replayed["payload"]["data"]["events"]["data"]["sku"], "SECOND", "{replayed}");

    let res = app.send_json(reqwest::Method::POST, "/api/v1/auth/logout", Some(&manager), json!({})).await;
    assert_eq!(res.status(), 204);
    let ended = next_message(&mut resumed).await;
    assert_eq!((ended["type"].as_str(), ended["id"].as_str()), (Some("complete"), Some("1")), "{ended}");
}
