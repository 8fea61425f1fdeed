//! Channels against in-process fake stores that speak Shopify's Admin
//! GraphQL, WooCommerce's REST v3 and Amazon's SP-API (with Login with Amazon): connections that never show their
//! credentials, tenant isolation, the catalog import, and stock changes
//! that reach every store as available-to-promise, through compare-and-set
//! conflicts, throttling and refused credentials.

use nexus::{
    modules::channels::fakes::{
        FakeAmazon, FakeEtsy, FakeProduct, FakeShopify, FakeSns, FakeVariant, FakeWooCommerce,
    },
    platform::tenancy::SystemScope,
};
use reqwest::Method;
use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use crate::helpers::{Tenant, TestApp, assert_problem, eventually, json};

fn id(v: &Value) -> String {
    v["data"]["id"].as_str().unwrap().to_owned()
}

async fn warehouse(app: &TestApp, tenant: &Tenant, code: &str) -> String {
    let res = app.post("/api/v1/warehouses", &tenant.token, json!({"code": code, "name": code})).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    id(&json(res).await)
}

/// The id of the tenant's product with `sku` (created by an import).
async fn product_id_of(app: &TestApp, tenant: &Tenant, sku: &str) -> String {
    let found = json(app.get(&format!("/api/v1/products?sku={sku}"), &tenant.token).await).await;
    found["data"][0]["id"].as_str().unwrap().to_owned()
}

async fn product(app: &TestApp, tenant: &Tenant, sku: &str) -> String {
    let body = json!({"sku": sku, "name": sku, "unit_price": 100, "currency": "EUR"});
    let res = app.post("/api/v1/products", &tenant.token, body).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    id(&json(res).await)
}

async fn adjust(app: &TestApp, tenant: &Tenant, product: &str, warehouse: &str, quantity: i64) {
    let body =
        json!({"product_id": product, "warehouse_id": warehouse, "quantity": quantity, "reason": "count"});
    let res = app.post("/api/v1/stock/adjustments", &tenant.token, body).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

fn shopify_body(shop: &FakeShopify, name: &str, warehouse: &str, buffer: i64) -> Value {
    json!({"channel": "shopify", "name": name, "base_url": shop.base_url, "currency": "EUR",
        "credentials": {"access_token": shop.access_token}, "warehouse_id": warehouse,
        "remote_location_id": shop.location_id, "safety_buffer": buffer})
}

fn woo_body(woo: &FakeWooCommerce, name: &str, warehouse: &str, buffer: i64) -> Value {
    json!({"channel": "woocommerce", "name": name, "base_url": woo.base_url, "currency": "EUR",
        "credentials": {"consumer_key": woo.consumer_key, "consumer_secret": woo.consumer_secret},
        "warehouse_id": warehouse, "safety_buffer": buffer})
}

async fn connect(app: &TestApp, tenant: &Tenant, body: Value) -> Value {
    let res = app.post("/api/v1/channel-connections", &tenant.token, body).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    json(res).await["data"].clone()
}

/// Import the store's catalog and wait for the import to end.
async fn import(app: &TestApp, tenant: &Tenant, connection: &str) -> Value {
    let imports = format!("/api/v1/channel-connections/{connection}/imports");
    started_run(app, tenant, &imports, &imports).await
}

/// The run that a `POST` to `start` answers with, read at `{runs}/{id}`
/// once it has ended (read when no job is due, and not faster than the
/// API's rate limit allows); what it set off (events, their listeners) is
/// done by then too.
async fn started_run(app: &TestApp, tenant: &Tenant, start: &str, runs: &str) -> Value {
    let res = app.post(start, &tenant.token, json!({})).await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let run = id(&json(res).await);
    let path = format!("{runs}/{run}");
    for _ in 0..60 {
        app.drained().await;
        let r = json(app.get(&path, &tenant.token).await).await["data"].clone();
        if ["succeeded", "failed"].contains(&r["status"].as_str().unwrap_or_else(|| panic!("{r}"))) {
            app.drained().await;
            return r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("run {run} did not end within 30 s");
}

async fn connection(app: &TestApp, tenant: &Tenant, id: &str) -> Value {
    json(app.get(&format!("/api/v1/channel-connections/{id}"), &tenant.token).await).await["data"].clone()
}

/// The types of the tenant's `channel.*` events, oldest first.
async fn channel_events(app: &TestApp, tenant: &Tenant) -> Vec<(String, Value)> {
    use entity::event::{Column, Entity};
    SystemScope
        .find::<Entity>()
        .filter(Column::TenantId.eq(tenant.id))
        .filter(Column::EventType.starts_with("channel."))
        .order_by_asc(Column::Id)
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event_type, e.data))
        .collect()
}

fn mug(quantity: i64) -> Vec<FakeProduct> {
    vec![FakeProduct::simple("Mug", "MUG-WHITE", "9.50", quantity)]
}

#[tokio::test]
async fn connections_are_kept_without_ever_showing_their_credentials() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let shop = FakeShopify::start(mug(0)).await.unwrap();
    let created = connect(&app, &tenant, shopify_body(&shop, "EU shop", &main, 2)).await;
    assert_eq!(created["status"], "connected");
    assert_eq!(created["credentials"], json!(["access_token"]));
    assert_eq!(created["rate_limit"], json!({"per_second": 2, "burst": 40}));
    assert_eq!(created["safety_buffer"], 2);
    let cid = created["id"].as_str().unwrap().to_owned();

    // Sealed at rest, never in an answer.
    let row = SystemScope
        .find_by_id::<entity::channel_connection::Entity>(cid.parse::<uuid::Uuid>().unwrap())
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert!(row.credentials.starts_with("v1:") && !row.credentials.contains(&shop.access_token));
    let res = app.get(&format!("/api/v1/channel-connections/{cid}"), &tenant.token).await;
    assert_eq!(res.headers()["etag"], "\"1\"");
    let listed =
        app.get("/api/v1/channel-connections?channel=shopify", &tenant.token).await.text().await.unwrap();
    assert!(listed.contains(&cid) && !listed.contains(&shop.access_token), "{listed}");
    assert!(!res.text().await.unwrap().contains(&shop.access_token));

    // Bad input names every field and changes nothing.
    let bad = json!({"channel": "ebay", "name": " ", "base_url": "ftp://shop.example.com", "currency": "eur",
        "credentials": {}, "warehouse_id": main, "safety_buffer": -1});
    let body = assert_problem(
        app.post("/api/v1/channel-connections", &tenant.token, bad).await,
        422,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> =
        body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    for field in ["channel", "name", "base_url", "currency", "safety_buffer"] {
        assert!(fields.contains(&field), "{field} not in {fields:?}");
    }
    let mut bad = shopify_body(&shop, "Other", &main, 0);
    bad["credentials"] = json!({"token": "x"});
    bad["remote_location_id"] = Value::Null;
    bad["base_url"] = json!("http://10.1.2.3/");
    let body = assert_problem(
        app.post("/api/v1/channel-connections", &tenant.token, bad).await,
        422,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> =
        body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(
        fields,
        ["credentials.access_token", "credentials.token", "remote_location_id", "base_url"],
        "{body}"
    );
    let mut bad = shopify_body(&shop, "Other", &main, 0);
    bad["warehouse_id"] = json!(uuid::Uuid::now_v7());
    let body = assert_problem(
        app.post("/api/v1/channel-connections", &tenant.token, bad).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "warehouse_id");
    let taken = app
        .post("/api/v1/channel-connections", &tenant.token, shopify_body(&shop, "EU shop", &main, 0))
        .await;
    assert_problem(taken, 409, "conflict").await;
    let all = json(app.get("/api/v1/channel-connections", &tenant.token).await).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 1);

    // Updates: If-Match, and new credentials put it back to connected.
    let path = format!("/api/v1/channel-connections/{cid}");
    let stale = app
        .request(Method::PATCH, &path, Some(&tenant.token))
        .header("If-Match", "\"7\"")
        .json(&json!({"name": "Renamed"}))
        .send()
        .await
        .unwrap();
    assert_problem(stale, 412, "precondition_failed").await;
    let res = app
        .request(Method::PATCH, &path, Some(&tenant.token))
        .header("If-Match", "\"1\"")
        .json(&json!({"name": "Renamed", "credentials": {"access_token": "shpat_new"}, "webhook_secret": "s3cret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(!text.contains("shpat_new") && !text.contains("s3cret"), "{text}");
    let updated: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(updated["data"]["name"], "Renamed");
    assert_eq!(updated["data"]["version"], 2);
    assert_eq!(updated["data"]["webhook_secret_set"], true);
    let res =
        app.send_json(Method::PATCH, &path, Some(&tenant.token), json!({"credentials": {"nope": "x"}})).await;
    assert_problem(res, 422, "validation_failed").await;

    // GraphQL: the same rules and codes.
    let query = "mutation($input: CreateChannelConnectionInput!) { createChannelConnection(input: $input) { id name credentials status } }";
    let input = json!({"channel": "woocommerce", "name": "Site", "baseUrl": shop.base_url, "currency": "EUR",
        "credentials": [{"name": "consumer_key", "value": "ck_1"}], "warehouseId": main});
    let body = json(
        app.post("/graphql", &tenant.token, json!({"query": query, "variables": {"input": input}})).await,
    )
    .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "validation_failed", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["errors"][0]["field"], "credentials.consumer_secret");
    let mut input = input;
    input["credentials"] =
        json!([{"name": "consumer_key", "value": "ck_1"}, {"name": "consumer_secret", "value": "cs_1"}]);
    let body = json(
        app.post("/graphql", &tenant.token, json!({"query": query, "variables": {"input": input}})).await,
    )
    .await;
    assert_eq!(
        body["data"]["createChannelConnection"]["credentials"],
        json!(["consumer_key", "consumer_secret"]),
        "{body}"
    );
    let listed = "{ channelConnections(channel: \"woocommerce\") { items { name status } } }";
    let body = json(app.post("/graphql", &tenant.token, json!({"query": listed})).await).await;
    assert_eq!(body["data"]["channelConnections"]["items"], json!([{"name": "Site", "status": "connected"}]));

    // Nor in the audit trail of those requests.
    let audited = SystemScope
        .find::<entity::audit_log::Entity>()
        .filter(entity::audit_log::Column::TenantId.eq(tenant.id))
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(audited.iter().any(|a| a.path.starts_with("/api/v1/channel-connections")));
    let trail = format!("{audited:?}");
    for secret in [shop.access_token.as_str(), "shpat_new", "s3cret", "cs_1"] {
        assert!(!trail.contains(secret), "the audit trail holds {secret}");
    }

    let res = app.request(Method::DELETE, &path, Some(&tenant.token)).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_problem(app.get(&path, &tenant.token).await, 404, "not_found").await;
}

#[tokio::test]
async fn another_tenant_sees_nothing_and_cannot_use_foreign_warehouses() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.register().await, app.register().await);
    let main = warehouse(&app, &a, "MAIN").await;
    let shop = FakeShopify::start(mug(0)).await.unwrap();
    let cid =
        connect(&app, &a, shopify_body(&shop, "Shop", &main, 0)).await["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/channel-connections/{cid}");
    assert_problem(app.get(&path, &b.token).await, 404, "not_found").await;
    let res = app.send_json(Method::PATCH, &path, Some(&b.token), json!({"name": "Mine"})).await;
    assert_problem(res, 404, "not_found").await;
    assert_problem(app.post(&format!("{path}/imports"), &b.token, json!({})).await, 404, "not_found").await;
    let list = json(app.get("/api/v1/channel-connections", &b.token).await).await;
    assert_eq!(list["data"], json!([]));
    let res = app.post("/api/v1/channel-connections", &b.token, shopify_body(&shop, "Shop", &main, 0)).await;
    let body = assert_problem(res, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "warehouse_id");
    // A viewer reads, and may not write.
    let (_, viewer) = app.user_with_roles(&a, &["viewer"]).await;
    assert_eq!(app.get(&path, &viewer).await.status(), 200);
    assert_problem(app.post(&format!("{path}/imports"), &viewer, json!({})).await, 403, "forbidden").await;
}

#[tokio::test]
async fn an_import_links_products_by_sku_and_creates_the_missing_ones() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let existing = product(&app, &tenant, "TSHIRT-RED-M").await;
    let shirt = |sku: &str, title: &str| FakeVariant {
        sku: sku.into(),
        title: Some(title.into()),
        price: "24.99".into(),
        quantity: 5,
    };
    let catalog = vec![
        FakeProduct {
            title: "T-shirt".into(),
            variants: vec![
                shirt("TSHIRT-RED-M", "Red / M"),
                shirt("TSHIRT-RED-L", "Red / L"),
                shirt("", "Gift wrap"),
            ],
        },
        FakeProduct::simple("Mug", "MUG-WHITE", "9.50", 3),
    ];
    let shop = FakeShopify::start(catalog).await.unwrap();
    let cid = connect(&app, &tenant, shopify_body(&shop, "Shop", &main, 0)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let run = import(&app, &tenant, &cid).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        (run["listed"].as_i64(), run["linked"].as_i64(), run["created"].as_i64(), run["skipped"].as_i64()),
        (Some(4), Some(1), Some(2), Some(1)),
        "{run}"
    );
    let mappings =
        json(app.get(&format!("/api/v1/channel-mappings?connection_id={cid}"), &tenant.token).await).await;
    let mappings = mappings["data"].as_array().unwrap().clone();
    assert_eq!(mappings.len(), 3);
    let red_m = mappings.iter().find(|m| m["sku"] == "TSHIRT-RED-M").unwrap();
    assert_eq!(red_m["product_id"], existing.as_str());
    assert!(red_m["remote_variant_id"].as_str().unwrap().starts_with("gid://shopify/ProductVariant/"));
    assert!(red_m["inventory_item_id"].as_str().unwrap().starts_with("gid://shopify/InventoryItem/"));
    let created = json(app.get("/api/v1/products?sku=TSHIRT-RED-L", &tenant.token).await).await;
    assert_eq!(created["data"][0]["name"], "T-shirt (Red / L)");
    assert_eq!(created["data"][0]["unit_price"], 2499);
    let events = channel_events(&app, &tenant).await;
    let imported: Vec<&Value> =
        events.iter().filter(|(t, _)| t == "channel.product_imported").map(|(_, d)| d).collect();
    assert_eq!(imported.len(), 3);
    assert!(imported.iter().any(|d| d["sku"] == "TSHIRT-RED-M" && d["created"] == false));
    assert!(events.iter().any(|(t, _)| t == "channel.sync_succeeded"));

    // Again: everything is mapped already, nothing is created twice.
    let again = import(&app, &tenant, &cid).await;
    assert_eq!(
        (again["linked"].as_i64(), again["created"].as_i64(), again["skipped"].as_i64()),
        (Some(0), Some(0), Some(4)),
        "{again}"
    );

    // The store's product as it is now, normalised with its payload.
    let remote = red_m["remote_product_id"].as_str().unwrap();
    let res = app
        .get(&format!("/api/v1/channel-connections/{cid}/remote-product?remote_id={remote}"), &tenant.token)
        .await;
    let body = json(res).await;
    assert_eq!(body["data"]["title"], "T-shirt");
    assert_eq!(body["data"]["variants"].as_array().unwrap().len(), 3);
    assert_eq!(body["data"]["raw"]["variants"]["nodes"][0]["sku"], "TSHIRT-RED-M");
    let res = app
        .get(
            &format!("/api/v1/channel-connections/{cid}/remote-product?remote_id=gid://shopify/Product/1"),
            &tenant.token,
        )
        .await;
    assert_problem(res, 404, "not_found").await;
}

#[tokio::test]
async fn a_woocommerce_import_reads_every_page() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let catalog: Vec<FakeProduct> = (0..60)
        .map(|i| FakeProduct::simple(&format!("Item {i}"), &format!("ITEM-{i:03}"), "1.00", i))
        .collect();
    let woo = FakeWooCommerce::start(catalog).await.unwrap();
    let cid =
        connect(&app, &tenant, woo_body(&woo, "Site", &main, 0)).await["id"].as_str().unwrap().to_owned();
    let run = import(&app, &tenant, &cid).await;
    assert_eq!(
        (run["status"].as_str(), run["pages"].as_i64(), run["created"].as_i64()),
        (Some("succeeded"), Some(2), Some(60)),
        "{run}"
    );
}

#[tokio::test]
async fn a_woocommerce_variable_product_is_read_pushed_and_booked_by_variation() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let shirt = |size: &str, quantity| FakeVariant {
        sku: format!("TSHIRT-RED-{size}"),
        title: Some(format!("Red / {size}")),
        price: "24.99".into(),
        quantity,
    };
    let woo = FakeWooCommerce::start(vec![
        FakeProduct { title: "T-shirt".into(), variants: vec![shirt("S", 5), shirt("M", 8), shirt("L", 3)] },
        FakeProduct::simple("Mug", "MUG-WHITE", "9.50", 20),
    ])
    .await
    .unwrap();
    let mut body = woo_body(&woo, "Site", &main, 0);
    body["webhook_secret"] = json!("wc_secret");
    let w = connect(&app, &tenant, body).await["id"].as_str().unwrap().to_owned();

    // The variable product's variations are its variants.
    let run = import(&app, &tenant, &w).await;
    assert_eq!((run["status"].as_str(), run["created"].as_i64()), (Some("succeeded"), Some(4)), "{run}");
    let (variation, parent) = woo.ids("TSHIRT-RED-M").unwrap();
    assert_ne!(variation, parent);
    let mappings =
        json(app.get(&format!("/api/v1/channel-mappings?connection_id={w}"), &tenant.token).await).await;
    let red_m =
        mappings["data"].as_array().unwrap().iter().find(|m| m["sku"] == "TSHIRT-RED-M").unwrap().clone();
    assert_eq!(
        (red_m["remote_product_id"].as_str(), red_m["remote_variant_id"].as_str()),
        (Some(parent.to_string().as_str()), Some(variation.to_string().as_str())),
        "{red_m}"
    );
    let created = json(app.get("/api/v1/products?sku=TSHIRT-RED-M", &tenant.token).await).await;
    assert_eq!(created["data"][0]["name"], "T-shirt (Red / M)");
    let shirt_id = created["data"][0]["id"].as_str().unwrap().to_owned();

    // A stock change is written through the product's variations/batch.
    app.drained().await;
    let batches = woo.batches();
    adjust(&app, &tenant, &shirt_id, &main, 10).await;
    eventually(10, || async { (woo.quantity("TSHIRT-RED-M") == Some(10)).then_some(()) }).await;
    assert!(woo.batches() > batches);
    assert_eq!(woo.quantity("TSHIRT-RED-S"), Some(5), "the other variations are left alone");

    // Three sold on the store: the variation's webhook books them.
    app.drained().await;
    let mut payload = woo.payload("TSHIRT-RED-M").unwrap();
    assert_eq!(payload["type"], "variation");
    payload["stock_quantity"] = json!(7);
    let payload = payload.to_string();
    let headers = vec![
        ("X-WC-Webhook-Topic", "product.updated".to_owned()),
        ("X-WC-Webhook-Delivery-ID", "d-variation".to_owned()),
        ("X-WC-Webhook-Signature", sign("wc_secret", payload.as_bytes())),
    ];
    let res = deliver(&app, &w, headers, payload).await.unwrap();
    assert_eq!(json(res).await["data"]["outcome"], "applied");
    assert_eq!(on_hand(&app, &tenant, &shirt_id, &main).await, 7);
}

#[tokio::test]
async fn a_stock_change_reaches_every_store_as_available_to_promise() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let other = warehouse(&app, &tenant, "OTHER").await;
    let shop = FakeShopify::start(mug(50)).await.unwrap();
    let woo = FakeWooCommerce::start(mug(50)).await.unwrap();
    let s = connect(&app, &tenant, shopify_body(&shop, "Shop", &main, 2)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let w = connect(&app, &tenant, woo_body(&woo, "Site", &main, 0)).await["id"].as_str().unwrap().to_owned();
    import(&app, &tenant, &s).await;
    import(&app, &tenant, &w).await;
    let mug_id = product_id_of(&app, &tenant, "MUG-WHITE").await;

    // A burst of changes while WooCommerce makes the first push wait a
    // second: each store ends at on hand - reserved - buffer, and the burst
    // reaches WooCommerce as one batch.
    woo.throttle_next(1);
    for quantity in [10, 5, -3] {
        adjust(&app, &tenant, &mug_id, &main, quantity).await;
    }
    let reserve = json!({"reference": "order-1", "lines": [{"product_id": mug_id, "warehouse_id": main, "quantity": 4}]});
    assert_eq!(app.post("/api/v1/reservations", &tenant.token, reserve).await.status(), 201);
    eventually(10, || async {
        (shop.quantity("MUG-WHITE") == Some(6) && woo.quantity("MUG-WHITE") == Some(8)).then_some(())
    })
    .await;
    app.drained().await;
    assert_eq!(woo.batches(), 1, "the burst was coalesced into one push");

    // Stock elsewhere changes nothing here; ATP never goes below 0.
    adjust(&app, &tenant, &mug_id, &other, 100).await;
    app.drained().await;
    assert_eq!(shop.quantity("MUG-WHITE"), Some(6));
    let res = app
        .send_json(
            Method::PATCH,
            &format!("/api/v1/channel-connections/{s}"),
            Some(&tenant.token),
            json!({"safety_buffer": 50}),
        )
        .await;
    assert_eq!(res.status(), 200);
    eventually(10, || async { (shop.quantity("MUG-WHITE") == Some(0)).then_some(()) }).await;

    // On demand, and the mapping says what landed.
    let path = format!("/api/v1/channel-connections/{w}/products/{mug_id}/push");
    let res = app.post(&path, &tenant.token, json!({})).await;
    assert_eq!(res.status(), 202);
    app.drained().await;
    let mapping =
        json(app.get(&format!("/api/v1/channel-mappings?connection_id={w}"), &tenant.token).await).await;
    assert_eq!(mapping["data"][0]["last_pushed_quantity"], 8);
    assert_eq!(mapping["data"][0]["push_pending"], false);
    let unmapped = format!("/api/v1/channel-connections/{w}/products/{}/push", uuid::Uuid::now_v7());
    assert_problem(app.post(&unmapped, &tenant.token, json!({})).await, 404, "not_found").await;

    // A tenant with no store connected: its stock events queue no run of
    // the channels' listener, where this tenant's did.
    let unconnected = app.register().await;
    let (store, cup) =
        (warehouse(&app, &unconnected, "MAIN").await, product(&app, &unconnected, "CUP").await);
    adjust(&app, &unconnected, &cup, &store, 5).await;
    app.drained().await;
    let db = &app.state.db;
    let listener_runs = |tenant_id: uuid::Uuid| async move {
        use sea_orm::{ColumnTrait, PaginatorTrait, QueryFilter};
        nexus::platform::tenancy::SystemScope
            .find::<entity::job::Entity>()
            .filter(entity::job::Column::Kind.eq("event.listener"))
            .filter(entity::job::Column::TenantId.eq(tenant_id))
            .count(db)
            .await
            .unwrap()
    };
    assert!(listener_runs(tenant.id).await >= 5);
    assert_eq!(listener_runs(unconnected.id).await, 0);
}

#[tokio::test]
async fn a_concurrent_change_on_shopify_is_read_again_not_overwritten_blindly() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let shop = FakeShopify::start(mug(50)).await.unwrap();
    let s = connect(&app, &tenant, shopify_body(&shop, "Shop", &main, 0)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    import(&app, &tenant, &s).await;
    let mug_id = product_id_of(&app, &tenant, "MUG-WHITE").await;
    // A sale on the store between our read and our write.
    shop.interfere_before_next_write("MUG-WHITE", 49);
    adjust(&app, &tenant, &mug_id, &main, 7).await;
    eventually(10, || async { (shop.quantity("MUG-WHITE") == Some(7)).then_some(()) }).await;
    assert_eq!(shop.writes(), (2, 1), "the stale write was refused, read again and written again");
}

#[tokio::test]
async fn a_throttled_store_marks_the_connection_and_the_push_lands_later() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let shop = FakeShopify::start(mug(50)).await.unwrap();
    let woo = FakeWooCommerce::start(mug(50)).await.unwrap();
    let s = connect(&app, &tenant, shopify_body(&shop, "Shop", &main, 0)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let w = connect(&app, &tenant, woo_body(&woo, "Site", &main, 0)).await["id"].as_str().unwrap().to_owned();
    import(&app, &tenant, &s).await;
    import(&app, &tenant, &w).await;
    let mug_id = product_id_of(&app, &tenant, "MUG-WHITE").await;
    woo.throttle_next(1); // 429 with Retry-After: 1
    shop.throttle_next(1); // Shopify's THROTTLED: the cost budget refills in 1 s
    adjust(&app, &tenant, &mug_id, &main, 9).await;
    // Each store throttled the push at least once (Shopify may answer
    // THROTTLED again while its drained cost budget refills).
    eventually(10, || async {
        let events = channel_events(&app, &tenant).await;
        let throttled =
            |channel: &str| events.iter().any(|(t, d)| t == "channel.throttled" && d["channel"] == channel);
        (throttled("shopify") && throttled("woocommerce")).then_some(())
    })
    .await;
    eventually(10, || async {
        (shop.quantity("MUG-WHITE") == Some(9) && woo.quantity("MUG-WHITE") == Some(9)).then_some(())
    })
    .await;
    let events = channel_events(&app, &tenant).await;
    let woo_throttle =
        events.iter().find(|(t, d)| t == "channel.throttled" && d["channel"] == "woocommerce").unwrap();
    assert!(woo_throttle.1["error"].as_str().unwrap().starts_with("429"), "{:?}", woo_throttle.1);
    eventually(10, || async {
        let (a, b) = (connection(&app, &tenant, &s).await, connection(&app, &tenant, &w).await);
        (a["status"] == "connected" && b["status"] == "connected").then_some(())
    })
    .await;
}

#[tokio::test]
async fn shopify_queries_wait_for_the_cost_budget_instead_of_meeting_throttled() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let shop = FakeShopify::start(items(12, 9)).await.unwrap();
    let s = connect(&app, &tenant, shopify_body(&shop, "Shop", &main, 0)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    import(&app, &tenant, &s).await;
    // A small budget: a push of one product costs 13 (read 3, write 10),
    // the 12 products 156, the budget holds 40 and gets 30 back a second.
    shop.cost_budget(40.0, 30.0);
    let run = run_to_end(&app, &tenant, &s, "sync").await;
    assert_eq!((run["status"].as_str(), run["done"].as_i64()), (Some("succeeded"), Some(12)), "{run}");
    for i in 0..12 {
        assert_eq!(shop.quantity(&format!("ITEM-{i:03}")), Some(0), "ITEM-{i:03}");
    }
    assert_eq!(shop.throttled(), 0, "no query went over the budget");
    let events = channel_events(&app, &tenant).await;
    assert!(!events.iter().any(|(t, _)| t == "channel.throttled"), "{events:?}");
}

#[tokio::test]
async fn refused_credentials_disconnect_until_new_ones_are_saved() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let woo = FakeWooCommerce::start(mug(50)).await.unwrap();
    let mut body = woo_body(&woo, "Site", &main, 0);
    body["credentials"]["consumer_secret"] = json!("cs_wrong");
    let w = connect(&app, &tenant, body).await["id"].as_str().unwrap().to_owned();
    let run = import(&app, &tenant, &w).await;
    assert_eq!(run["status"], "failed");
    assert!(run["error"].as_str().unwrap().contains("Consumer key is invalid."), "{run}");
    let c = connection(&app, &tenant, &w).await;
    assert_eq!(c["status"], "disconnected");
    assert_eq!(c["last_error"], "401 Unauthorized: Consumer key is invalid.");
    let events = channel_events(&app, &tenant).await;
    assert!(events.iter().any(|(t, d)| t == "channel.disconnected" && d["connection_id"] == w.as_str()));
    assert!(events.iter().any(|(t, _)| t == "channel.sync_failed"));
    let mug_id = product(&app, &tenant, "MUG-WHITE").await;
    let path = format!("/api/v1/channel-connections/{w}/products/{mug_id}/push");
    assert_problem(app.post(&path, &tenant.token, json!({})).await, 409, "conflict").await;

    // The right secret: connected again, and the import goes through.
    let fixed =
        json!({"credentials": {"consumer_key": woo.consumer_key, "consumer_secret": woo.consumer_secret}});
    let res = app
        .send_json(Method::PATCH, &format!("/api/v1/channel-connections/{w}"), Some(&tenant.token), fixed)
        .await;
    assert_eq!(json(res).await["data"]["status"], "connected");
    assert_eq!(import(&app, &tenant, &w).await["linked"], 1);
    adjust(&app, &tenant, &mug_id, &main, 3).await;
    eventually(10, || async { (woo.quantity("MUG-WHITE") == Some(3)).then_some(()) }).await;
}

/// The base64 HMAC-SHA256 of `body` with `secret`, as the stores sign.
fn sign(secret: &str, body: &[u8]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// POST a store's webhook (JSON `body`, `headers`) to a connection's receiver.
fn deliver(
    app: &TestApp,
    connection: &str,
    headers: Vec<(&'static str, String)>,
    body: String,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + use<> {
    let mut request = app
        .client
        .post(format!("{}/api/v1/channel-webhooks/{connection}", app.base))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.send()
}

async fn on_hand(app: &TestApp, tenant: &Tenant, product: &str, warehouse: &str) -> i64 {
    let path = format!("/api/v1/stock-levels?product_id={product}&warehouse_id={warehouse}");
    json(app.get(&path, &tenant.token).await).await["data"][0]["on_hand"].as_i64().unwrap()
}

#[tokio::test]
async fn store_webhooks_are_verified_deduplicated_logged_and_booked() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let shop = FakeShopify::start(mug(50)).await.unwrap();
    let woo = FakeWooCommerce::start(mug(50)).await.unwrap();
    let mut body = shopify_body(&shop, "Shop", &main, 0);
    body["webhook_secret"] = json!("shpss_secret");
    let s = connect(&app, &tenant, body).await["id"].as_str().unwrap().to_owned();
    let mut body = woo_body(&woo, "Site", &main, 0);
    body["webhook_secret"] = json!("wc_secret");
    let w = connect(&app, &tenant, body).await["id"].as_str().unwrap().to_owned();
    import(&app, &tenant, &s).await;
    import(&app, &tenant, &w).await;
    let mug_id = product_id_of(&app, &tenant, "MUG-WHITE").await;
    adjust(&app, &tenant, &mug_id, &main, 10).await;
    eventually(10, || async {
        (shop.quantity("MUG-WHITE") == Some(10) && woo.quantity("MUG-WHITE") == Some(10)).then_some(())
    })
    .await;
    app.drained().await;
    let mapping =
        json(app.get(&format!("/api/v1/channel-mappings?connection_id={s}"), &tenant.token).await).await;
    let item =
        mapping["data"][0]["inventory_item_id"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();

    // Three units sold on Shopify.
    let level = json!({"inventory_item_id": item.parse::<u64>().unwrap(), "location_id": 1, "available": 7,
        "updated_at": "2026-11-28T10:00:00Z"})
    .to_string();
    let send = |connection: &str, headers, body| deliver(&app, connection, headers, body);
    let shopify_headers = |signature: String| {
        vec![
            ("X-Shopify-Topic", "inventory_levels/update".to_owned()),
            ("X-Shopify-Webhook-Id", "evt-1".to_owned()),
            ("X-Shopify-Hmac-Sha256", signature),
        ]
    };
    let forged = send(&s, shopify_headers(sign("guessed", level.as_bytes())), level.clone()).await.unwrap();
    assert_problem(forged, 401, "unauthenticated").await;
    let unsigned = send(&s, vec![("X-Shopify-Topic", "inventory_levels/update".to_owned())], level.clone())
        .await
        .unwrap();
    assert_problem(unsigned, 401, "unauthenticated").await;
    assert_eq!(on_hand(&app, &tenant, &mug_id, &main).await, 10, "a forged webhook changes nothing");

    let good =
        send(&s, shopify_headers(sign("shpss_secret", level.as_bytes())), level.clone()).await.unwrap();
    assert_eq!(good.status(), 200);
    let receipt = json(good).await["data"].clone();
    assert_eq!(
        (receipt["outcome"].as_str(), receipt["verified"].as_bool()),
        (Some("applied"), Some(true)),
        "{receipt}"
    );
    assert_eq!(on_hand(&app, &tenant, &mug_id, &main).await, 7);
    // It propagates to the other store.
    eventually(10, || async { (woo.quantity("MUG-WHITE") == Some(7)).then_some(()) }).await;

    let replay =
        send(&s, shopify_headers(sign("shpss_secret", level.as_bytes())), level.clone()).await.unwrap();
    assert_problem(replay, 401, "unauthenticated").await;
    assert_eq!(on_hand(&app, &tenant, &mug_id, &main).await, 7, "a replay changes nothing");

    let log =
        json(app.get(&format!("/api/v1/channel-connections/{s}/webhook-receipts"), &tenant.token).await)
            .await;
    let outcomes: Vec<(&str, bool)> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["outcome"].as_str().unwrap(), r["verified"].as_bool().unwrap()))
        .collect();
    assert_eq!(outcomes, [("replayed", true), ("applied", true), ("forged", false), ("forged", false)]);

    // WooCommerce: the product now holds 5 there (two more sold).
    app.drained().await;
    let product =
        json!({"id": 100, "name": "Mug", "sku": "MUG-WHITE", "manage_stock": true, "stock_quantity": 5})
            .to_string();
    let woo_headers = vec![
        ("X-WC-Webhook-Topic", "product.updated".to_owned()),
        ("X-WC-Webhook-Delivery-ID", "d-1".to_owned()),
        ("X-WC-Webhook-Signature", sign("wc_secret", product.as_bytes())),
    ];
    let res = send(&w, woo_headers, product).await.unwrap();
    assert_eq!(json(res).await["data"]["outcome"], "applied");
    assert_eq!(on_hand(&app, &tenant, &mug_id, &main).await, 5);
    eventually(10, || async { (shop.quantity("MUG-WHITE") == Some(5)).then_some(()) }).await;
    let events = channel_events(&app, &tenant).await;
    let updates: Vec<&Value> =
        events.iter().filter(|(t, _)| t == "channel.inventory_updated").map(|(_, d)| d).collect();
    assert_eq!(updates.len(), 2);
    assert_eq!((updates[0]["quantity"].as_i64(), updates[1]["quantity"].as_i64()), (Some(-3), Some(-2)));
    assert_eq!(events.iter().filter(|(t, _)| t == "channel.webhook_received").count(), 2);

    let unknown = send(&uuid::Uuid::now_v7().to_string(), vec![], "{}".to_owned()).await.unwrap();
    assert_problem(unknown, 404, "not_found").await;
    // Another tenant reads no receipts of this one.
    let other = app.register().await;
    let path = format!("/api/v1/channel-connections/{s}/webhook-receipts");
    assert_problem(app.get(&path, &other.token).await, 404, "not_found").await;
}

// ----------------------------------------------------------------- Amazon

fn amazon_body(amazon: &FakeAmazon, name: &str, warehouse: &str, buffer: i64) -> Value {
    json!({"channel": "amazon", "name": name, "base_url": amazon.base_url, "currency": "EUR",
        "credentials": {"client_id": amazon.client_id, "client_secret": amazon.client_secret,
            "refresh_token": amazon.refresh_token, "seller_id": amazon.seller_id,
            "marketplace_id": amazon.marketplace_id},
        "warehouse_id": warehouse, "safety_buffer": buffer})
}

/// An app whose Login with Amazon is the fake's.
async fn amazon_app(amazon: &FakeAmazon) -> TestApp {
    let token_url = amazon.token_url.clone();
    TestApp::spawn_adjusted(|f| f.merge(("modules.channels.amazon.token_url", token_url))).await
}

#[tokio::test]
async fn an_amazon_store_is_imported_and_kept_at_available_to_promise_with_one_token() {
    let catalog: Vec<FakeProduct> = (0..25)
        .map(|i| FakeProduct::simple(&format!("Item {i}"), &format!("ITEM-{i:03}"), "4.20", i))
        .chain(mug(50))
        .collect();
    let amazon = FakeAmazon::start(catalog).await.unwrap();
    let app = amazon_app(&amazon).await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let existing = product(&app, &tenant, "MUG-WHITE").await;
    let created = connect(&app, &tenant, amazon_body(&amazon, "Amazon DE", &main, 1)).await;
    assert_eq!(created["rate_limit"], json!({"per_second": 1, "burst": 10}));
    assert_eq!(
        created["credentials"],
        json!(["client_id", "client_secret", "marketplace_id", "refresh_token", "seller_id"])
    );
    let a = created["id"].as_str().unwrap().to_owned();

    // 26 listings: two pages of searchListingsItems.
    let run = import(&app, &tenant, &a).await;
    assert_eq!(
        (run["status"].as_str(), run["pages"].as_i64(), run["linked"].as_i64(), run["created"].as_i64()),
        (Some("succeeded"), Some(2), Some(1), Some(25)),
        "{run}"
    );
    let item = json(app.get("/api/v1/products?sku=ITEM-007", &tenant.token).await).await;
    assert_eq!(item["data"][0]["unit_price"], 420, "{item}");
    let mappings =
        json(app.get(&format!("/api/v1/channel-mappings?connection_id={a}&limit=100"), &tenant.token).await)
            .await;
    let mug_mapping =
        mappings["data"].as_array().unwrap().iter().find(|m| m["product_id"] == existing.as_str()).unwrap();
    assert_eq!(mug_mapping["remote_product_id"], "MUG-WHITE");

    // Stock changes reach the listing's fulfillment availability, with the
    // token LWA gave for the import.
    adjust(&app, &tenant, &existing, &main, 12).await;
    eventually(10, || async { (amazon.quantity("MUG-WHITE") == Some(11)).then_some(()) }).await;
    adjust(&app, &tenant, &existing, &main, 5).await;
    eventually(10, || async { (amazon.quantity("MUG-WHITE") == Some(16)).then_some(()) }).await;
    assert_eq!(amazon.token_grants(), 1, "the access token is cached");
    assert_eq!(amazon.patches(), 2);

    // The token expires on Amazon's side: fetched again once, the push lands.
    amazon.expire_tokens();
    adjust(&app, &tenant, &existing, &main, -6).await;
    eventually(10, || async { (amazon.quantity("MUG-WHITE") == Some(10)).then_some(()) }).await;
    assert_eq!(amazon.token_grants(), 2);
    assert_eq!(connection(&app, &tenant, &a).await["status"], "connected");

    // A token LWA says is about to expire is not kept.
    amazon.token_lifetime(30);
    amazon.expire_tokens();
    adjust(&app, &tenant, &existing, &main, 1).await;
    eventually(10, || async { (amazon.quantity("MUG-WHITE") == Some(11)).then_some(()) }).await;
    let grants = amazon.token_grants();
    adjust(&app, &tenant, &existing, &main, 1).await;
    eventually(10, || async { (amazon.quantity("MUG-WHITE") == Some(12)).then_some(()) }).await;
    assert!(amazon.token_grants() > grants, "a token about to expire is fetched again");
}

#[tokio::test]
async fn refused_amazon_credentials_disconnect_with_login_with_amazons_message() {
    let amazon = FakeAmazon::start(mug(50)).await.unwrap();
    let app = amazon_app(&amazon).await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let mut body = amazon_body(&amazon, "Amazon DE", &main, 0);
    body["credentials"]["client_secret"] = json!("amzn1.oa2-cs.v1.wrong");
    let a = connect(&app, &tenant, body).await["id"].as_str().unwrap().to_owned();
    let run = import(&app, &tenant, &a).await;
    assert_eq!(run["status"], "failed");
    let c = connection(&app, &tenant, &a).await;
    assert_eq!(c["status"], "disconnected");
    assert_eq!(c["last_error"], "Login with Amazon: 401 Unauthorized: Client authentication failed");
    assert_eq!(amazon.token_grants(), 0);

    // A refresh token LWA no longer honours (400 invalid_grant) as well.
    let mut body = amazon_body(&amazon, "Amazon FR", &main, 0);
    body["credentials"]["refresh_token"] = json!("Atzr|revoked");
    let b = connect(&app, &tenant, body).await["id"].as_str().unwrap().to_owned();
    import(&app, &tenant, &b).await;
    let c = connection(&app, &tenant, &b).await;
    assert_eq!(c["status"], "disconnected");
    assert_eq!(
        c["last_error"],
        "Login with Amazon: 400 Bad Request: The request has an invalid grant parameter : refresh_token"
    );

    // A seller the token does not belong to: SP-API's own 403.
    let mut body = amazon_body(&amazon, "Amazon IT", &main, 0);
    body["credentials"]["seller_id"] = json!("A2OTHERSELLER");
    let d = connect(&app, &tenant, body).await["id"].as_str().unwrap().to_owned();
    import(&app, &tenant, &d).await;
    let c = connection(&app, &tenant, &d).await;
    assert_eq!(c["status"], "disconnected");
    assert_eq!(
        c["last_error"],
        "403 Forbidden: Access to requested resource is denied. The access token you provided is revoked, malformed or invalid."
    );
    let events = channel_events(&app, &tenant).await;
    assert_eq!(events.iter().filter(|(t, _)| t == "channel.disconnected").count(), 3);
}

#[tokio::test]
async fn a_throttled_amazon_store_marks_the_connection_and_the_push_lands_later() {
    let amazon = FakeAmazon::start(mug(50)).await.unwrap();
    let app = amazon_app(&amazon).await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let a = connect(&app, &tenant, amazon_body(&amazon, "Amazon DE", &main, 0)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    import(&app, &tenant, &a).await;
    let mug_id = product_id_of(&app, &tenant, "MUG-WHITE").await;
    amazon.throttle_next(1); // 429 QuotaExceeded with Retry-After: 1
    adjust(&app, &tenant, &mug_id, &main, 9).await;
    let throttle = eventually(10, || async {
        channel_events(&app, &tenant).await.into_iter().find(|(t, _)| t == "channel.throttled")
    })
    .await;
    assert_eq!(throttle.1["channel"], "amazon");
    assert_eq!(
        throttle.1["error"],
        "429 Too Many Requests: You exceeded your quota for the requested resource."
    );
    eventually(10, || async { (amazon.quantity("MUG-WHITE") == Some(9)).then_some(()) }).await;
    eventually(10, || async { (connection(&app, &tenant, &a).await["status"] == "connected").then_some(()) })
        .await;
}

/// A self-signed certificate (PEM) for SNS's signing key, made now.
fn sns_signer() -> (String, rsa::RsaPrivateKey) {
    use rsa::pkcs8::DecodePrivateKey;
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    let params = rcgen::CertificateParams::new(vec!["sns.eu-west-1.amazonaws.com".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), rsa::RsaPrivateKey::from_pkcs8_pem(&key.serialize_pem()).unwrap())
}

/// An SNS message signed as SNS signs: SHA1withRSA (version 1) or
/// SHA256withRSA (2) over `Name\nvalue\n` of its fields in SNS's order.
fn sns_signed(key: &rsa::RsaPrivateKey, cert_url: &str, version: &str, fields: &[(&str, String)]) -> Value {
    use base64::Engine;
    use sha2::Digest;
    let mut canonical = String::new();
    let mut message = json!({"SignatureVersion": version, "SigningCertURL": cert_url});
    for (name, value) in fields {
        canonical.push_str(&format!("{name}\n{value}\n"));
        message[*name] = json!(value);
    }
    let signature = match version {
        "1" => key.sign(rsa::Pkcs1v15Sign::new::<sha1::Sha1>(), &sha1::Sha1::digest(canonical.as_bytes())),
        _ => key.sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &sha2::Sha256::digest(canonical.as_bytes())),
    }
    .unwrap();
    message["Signature"] = json!(base64::engine::general_purpose::STANDARD.encode(signature));
    message
}

fn mfn_notification(message_id: &str, sku: &str, quantity: i64) -> Vec<(&'static str, String)> {
    let notification = json!({"NotificationVersion": "1.0", "NotificationType": "LISTINGS_ITEM_MFN_QUANTITY_CHANGE",
        "PayloadVersion": "1.0", "EventTime": "2026-11-28T10:00:00.000Z",
        "Payload": {"SellerId": "A3SELLER", "FulfillmentChannelCode": "DEFAULT", "Sku": sku, "Quantity": quantity},
        "NotificationMetadata": {"ApplicationId": "amzn1.sellerapps.app.nexus", "SubscriptionId": "sub-1",
            "PublishTime": "2026-11-28T10:00:00.000Z", "NotificationId": format!("n-{message_id}")}});
    vec![
        ("Message", notification.to_string()),
        ("MessageId", message_id.to_owned()),
        ("Timestamp", "2026-11-28T10:00:00.000Z".to_owned()),
        ("TopicArn", "arn:aws:sns:eu-west-1:123456789012:nexus".to_owned()),
        ("Type", "Notification".to_owned()),
    ]
}

#[tokio::test]
async fn amazon_sns_notifications_are_verified_against_the_certificate_and_booked() {
    let (pem, key) = sns_signer();
    let sns = FakeSns::start(pem).await.unwrap();
    let amazon = FakeAmazon::start(mug(50)).await.unwrap();
    let token_url = amazon.token_url.clone();
    let app = TestApp::spawn_adjusted(|f| {
        f.merge(("modules.channels.amazon.token_url", token_url))
            .merge(("modules.channels.amazon.sns_cert_host", r"^127\.0\.0\.1$"))
    })
    .await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let a = connect(&app, &tenant, amazon_body(&amazon, "Amazon DE", &main, 0)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    import(&app, &tenant, &a).await;
    let mug_id = product_id_of(&app, &tenant, "MUG-WHITE").await;
    adjust(&app, &tenant, &mug_id, &main, 10).await;
    eventually(10, || async { (amazon.quantity("MUG-WHITE") == Some(10)).then_some(()) }).await;
    app.drained().await;
    // SNS posts its JSON as text/plain.
    let send = |message: &Value| {
        app.client
            .post(format!("{}/api/v1/channel-webhooks/{a}", app.base))
            .header("content-type", "text/plain; charset=UTF-8")
            .header("x-amz-sns-message-type", message["Type"].as_str().unwrap_or("Notification").to_owned())
            .body(message.to_string())
            .send()
    };

    // The subscription is confirmed by a GET of its SubscribeURL.
    let confirmation = sns_signed(
        &key,
        &sns.cert_url,
        "2",
        &[
            ("Message", "You have chosen to subscribe to the topic.".to_owned()),
            ("MessageId", "c-1".to_owned()),
            ("SubscribeURL", sns.subscribe_url("tok-1")),
            ("Timestamp", "2026-11-28T09:59:00.000Z".to_owned()),
            ("Token", "tok-1".to_owned()),
            ("TopicArn", "arn:aws:sns:eu-west-1:123456789012:nexus".to_owned()),
            ("Type", "SubscriptionConfirmation".to_owned()),
        ],
    );
    let res = send(&confirmation).await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    assert_eq!(sns.confirmed(), ["tok-1"]);
    // A SubscribeURL on a host not allowed is not followed.
    let elsewhere = sns_signed(
        &key,
        &sns.cert_url,
        "2",
        &[
            ("Message", "subscribe".to_owned()),
            ("MessageId", "c-2".to_owned()),
            ("SubscribeURL", "http://localhost:1/confirm?Token=tok-2".to_owned()),
            ("Timestamp", "2026-11-28T09:59:00.000Z".to_owned()),
            ("Token", "tok-2".to_owned()),
            ("TopicArn", "arn:aws:sns:eu-west-1:123456789012:nexus".to_owned()),
            ("Type", "SubscriptionConfirmation".to_owned()),
        ],
    );
    let receipt = json(send(&elsewhere).await.unwrap()).await["data"].clone();
    assert_eq!(receipt["outcome"], "rejected", "{receipt}");
    assert_eq!(sns.confirmed(), ["tok-1"]);

    // Three units sold on Amazon (SHA1withRSA), then one more (SHA256withRSA).
    let sold = sns_signed(&key, &sns.cert_url, "1", &mfn_notification("m-1", "MUG-WHITE", 7));
    let receipt = json(send(&sold).await.unwrap()).await["data"].clone();
    assert_eq!(
        (receipt["outcome"].as_str(), receipt["verified"].as_bool()),
        (Some("applied"), Some(true)),
        "{receipt}"
    );
    assert_eq!(on_hand(&app, &tenant, &mug_id, &main).await, 7);
    let sold = sns_signed(&key, &sns.cert_url, "2", &mfn_notification("m-2", "MUG-WHITE", 6));
    assert_eq!(json(send(&sold).await.unwrap()).await["data"]["outcome"], "applied");
    assert_eq!(on_hand(&app, &tenant, &mug_id, &main).await, 6);
    assert_eq!(sns.certificate_fetches(), 1, "the certificate is kept by URL");

    // A replay, a changed message, a certificate on a host not allowed: refused, nothing booked.
    assert_problem(send(&sold).await.unwrap(), 401, "unauthenticated").await;
    let mut forged = sns_signed(&key, &sns.cert_url, "2", &mfn_notification("m-3", "MUG-WHITE", 1));
    forged["Message"] =
        json!(forged["Message"].as_str().unwrap().replace("\"Quantity\":1", "\"Quantity\":0"));
    assert_problem(send(&forged).await.unwrap(), 401, "unauthenticated").await;
    let foreign_cert = sns.cert_url.replace("127.0.0.1", "localhost");
    let elsewhere = sns_signed(&key, &foreign_cert, "2", &mfn_notification("m-4", "MUG-WHITE", 1));
    let problem = assert_problem(send(&elsewhere).await.unwrap(), 401, "unauthenticated").await;
    assert!(problem["detail"].as_str().unwrap().contains("not an allowed SNS host"), "{problem}");
    let (_, other_key) = sns_signer();
    let wrong_key = sns_signed(&other_key, &sns.cert_url, "2", &mfn_notification("m-5", "MUG-WHITE", 1));
    assert_problem(send(&wrong_key).await.unwrap(), 401, "unauthenticated").await;
    assert_eq!(on_hand(&app, &tenant, &mug_id, &main).await, 6, "refused messages change nothing");

    let receipts =
        json(app.get(&format!("/api/v1/channel-connections/{a}/webhook-receipts"), &tenant.token).await)
            .await;
    let outcomes: Vec<(&str, bool)> = receipts["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["outcome"].as_str().unwrap(), r["verified"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("forged", false),
            ("forged", false),
            ("forged", false),
            ("replayed", true),
            ("applied", true),
            ("applied", true),
            ("rejected", true),
            ("confirmed", true)
        ]
    );
}

#[tokio::test]
async fn webhooks_are_refused_while_the_tenants_channels_module_is_off() {
    let woo = FakeWooCommerce::start(mug(5)).await.unwrap();
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let mut body = woo_body(&woo, "Site", &main, 0);
    body["webhook_secret"] = json!("wc_secret");
    let w = connect(&app, &tenant, body).await["id"].as_str().unwrap().to_owned();
    let product =
        json!({"id": 100, "sku": "MUG-WHITE", "manage_stock": true, "stock_quantity": 5}).to_string();
    let send = |delivery: &str| {
        app.client
            .post(format!("{}/api/v1/channel-webhooks/{w}", app.base))
            .header("content-type", "application/json")
            .header("X-WC-Webhook-Topic", "product.updated")
            .header("X-WC-Webhook-Delivery-ID", delivery.to_owned())
            .header("X-WC-Webhook-Signature", sign("wc_secret", product.as_bytes()))
            .body(product.clone())
            .send()
    };
    let off = json!({"enabled": false});
    let res = app.send_json(Method::PUT, "/api/v1/features/module.channels", Some(&tenant.token), off).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    assert_problem(send("d-1").await.unwrap(), 403, "feature_disabled").await;
    let on = json!({"enabled": true});
    app.send_json(Method::PUT, "/api/v1/features/module.channels", Some(&tenant.token), on).await;
    let res = send("d-2").await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let receipts =
        json(app.get(&format!("/api/v1/channel-connections/{w}/webhook-receipts"), &tenant.token).await)
            .await;
    let events: Vec<&str> =
        receipts["data"].as_array().unwrap().iter().map(|r| r["event_id"].as_str().unwrap()).collect();
    assert_eq!(events, ["d-2"], "a refused webhook reaches nothing of the module");
}

// ------------------------------------------------------------------- Etsy

fn etsy_body(etsy: &FakeEtsy, name: &str, warehouse: &str, buffer: i64) -> Value {
    json!({"channel": "etsy", "name": name, "base_url": etsy.base_url, "currency": "EUR",
        "credentials": {"api_key": etsy.api_key, "refresh_token": etsy.refresh_token, "shop_id": etsy.shop_id},
        "warehouse_id": warehouse, "safety_buffer": buffer})
}

#[tokio::test]
async fn an_etsy_shop_is_imported_and_its_inventory_kept_at_available_to_promise() {
    let shirt = |size: &str, quantity| FakeVariant {
        sku: format!("TSHIRT-RED-{size}"),
        title: Some(format!("Red / {size}")),
        price: "24.99".to_owned(),
        quantity,
    };
    let mut catalog: Vec<FakeProduct> = (0..120)
        .map(|i| FakeProduct::simple(&format!("Item {i}"), &format!("ITEM-{i:03}"), "4.20", i))
        .collect();
    catalog.push(FakeProduct { title: "T-shirt".to_owned(), variants: vec![shirt("S", 5), shirt("M", 8)] });
    let etsy = FakeEtsy::start(catalog).await.unwrap();
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let created = connect(&app, &tenant, etsy_body(&etsy, "Etsy", &main, 0)).await;
    assert_eq!(created["rate_limit"], json!({"per_second": 10, "burst": 50}));
    let e = created["id"].as_str().unwrap().to_owned();
    let run = import(&app, &tenant, &e).await;
    assert_eq!(
        (run["status"].as_str(), run["pages"].as_i64(), run["created"].as_i64()),
        (Some("succeeded"), Some(2), Some(122)),
        "{run}"
    );
    let m = json(app.get("/api/v1/products?sku=TSHIRT-RED-M", &tenant.token).await).await["data"][0].clone();
    assert_eq!(m["unit_price"], 2499, "price from amount / divisor");
    let m = m["id"].as_str().unwrap().to_owned();

    // One variant's quantity changes; its sibling and its price stay.
    adjust(&app, &tenant, &m, &main, 3).await;
    eventually(10, || async { (etsy.quantity("TSHIRT-RED-M") == Some(3)).then_some(()) }).await;
    assert_eq!(etsy.quantity("TSHIRT-RED-S"), Some(5));
    adjust(&app, &tenant, &m, &main, 4).await;
    eventually(10, || async { (etsy.quantity("TSHIRT-RED-M") == Some(7)).then_some(()) }).await;
    assert_eq!(etsy.token_grants(), 1, "the bearer token is kept");
    assert_eq!(etsy.puts(), 2);
    let mapping =
        json(app.get(&format!("/api/v1/channel-mappings?product_id={m}"), &tenant.token).await).await;
    let listing = mapping["data"][0]["remote_product_id"].as_str().unwrap().to_owned();
    assert_eq!(mapping["data"][0]["remote_variant_id"], "TSHIRT-RED-M");
    let path = format!("/api/v1/channel-connections/{e}/remote-product?remote_id={listing}");
    let fetched = json(app.get(&path, &tenant.token).await).await;
    assert_eq!(fetched["data"]["variants"][1]["quantity"], 7, "{fetched}");

    // An expired token is replaced once; a 429 waits and the push lands.
    etsy.expire_tokens();
    etsy.throttle_next(1);
    adjust(&app, &tenant, &m, &main, 1).await;
    eventually(10, || async { (etsy.quantity("TSHIRT-RED-M") == Some(8)).then_some(()) }).await;
    assert_eq!(etsy.token_grants(), 2);
    let events = channel_events(&app, &tenant).await;
    assert!(events.iter().any(|(t, d)| t == "channel.throttled" && d["channel"] == "etsy"), "{events:?}");
    eventually(10, || async { (connection(&app, &tenant, &e).await["status"] == "connected").then_some(()) })
        .await;
}

#[tokio::test]
async fn refused_etsy_credentials_disconnect_with_etsys_message() {
    let etsy = FakeEtsy::start(mug(5)).await.unwrap();
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let mut body = etsy_body(&etsy, "Etsy", &main, 0);
    body["credentials"]["refresh_token"] = json!("12345678.revoked");
    let e = connect(&app, &tenant, body).await["id"].as_str().unwrap().to_owned();
    assert_eq!(import(&app, &tenant, &e).await["status"], "failed");
    let c = connection(&app, &tenant, &e).await;
    assert_eq!(c["status"], "disconnected");
    assert_eq!(c["last_error"], "Etsy OAuth: 400 Bad Request: Invalid refresh token");
}

// ------------------------------------------------ buckets, runs, drift

/// A run started with `action` (`sync`, `reconcile`), once it has ended.
async fn run_to_end(app: &TestApp, tenant: &Tenant, connection: &str, action: &str) -> Value {
    let base = format!("/api/v1/channel-connections/{connection}");
    started_run(app, tenant, &format!("{base}/{action}"), &format!("{base}/sync-runs")).await
}

fn items(n: usize, quantity: i64) -> Vec<FakeProduct> {
    (0..n)
        .map(|i| FakeProduct::simple(&format!("Item {i}"), &format!("ITEM-{i:03}"), "4.20", quantity))
        .collect()
}

/// An Amazon app whose calls are paced at `per_second`, `burst`.
async fn paced_amazon_app(amazon: &FakeAmazon, per_second: u32, burst: u32) -> TestApp {
    let token_url = amazon.token_url.clone();
    TestApp::spawn_adjusted(|f| {
        f.merge(("modules.channels.amazon.token_url", token_url))
            .merge(("modules.channels.rate_limits", true))
            .merge(("modules.channels.amazon.rate_limit", json!({"per_second": per_second, "burst": burst})))
    })
    .await
}

#[tokio::test]
async fn a_burst_of_pushes_waits_for_the_credentials_tokens_and_never_meets_a_429() {
    // Amazon writes one listing per call: 30 products, 30 calls.
    let amazon = FakeAmazon::start(items(30, 9)).await.unwrap();
    amazon.limit_bucket(20, 5);
    let app = paced_amazon_app(&amazon, 20, 5).await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let a = connect(&app, &tenant, amazon_body(&amazon, "Amazon DE", &main, 0)).await;
    assert_eq!(a["rate_limit"], json!({"per_second": 20, "burst": 5}));
    let a = a["id"].as_str().unwrap().to_owned();
    assert_eq!(import(&app, &tenant, &a).await["created"], 30);

    let started = std::time::Instant::now();
    let run = run_to_end(&app, &tenant, &a, "sync").await;
    let took = started.elapsed();
    assert_eq!(
        (
            run["kind"].as_str(),
            run["status"].as_str(),
            run["total"].as_i64(),
            run["done"].as_i64(),
            run["failed"].as_i64()
        ),
        (Some("push"), Some("succeeded"), Some(30), Some(30), Some(0)),
        "{run}"
    );
    // No stock here: every listing is at ATP 0 now.
    assert!((0..30).all(|i| amazon.quantity(&format!("ITEM-{i:03}")) == Some(0)));
    assert_eq!(amazon.throttled(), 0, "the bucket kept the calls within the store's limit");
    // At most 5 at once, then 20 a second: 25 calls wait at least 1.25 s.
    assert!(took >= std::time::Duration::from_millis(1200), "took {took:?}");
    assert_eq!(connection(&app, &tenant, &a).await["status"], "connected");

    // The same burst without the bucket overflows the store's: 429s.
    let unpaced = amazon_app(&amazon).await;
    let tenant = unpaced.register().await;
    let main = warehouse(&unpaced, &tenant, "MAIN").await;
    let b = connect(&unpaced, &tenant, amazon_body(&amazon, "Amazon DE", &main, 0)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    import(&unpaced, &tenant, &b).await;
    let res = unpaced.post(&format!("/api/v1/channel-connections/{b}/sync"), &tenant.token, json!({})).await;
    assert_eq!(res.status(), 202);
    eventually(10, || async { (amazon.throttled() > 0).then_some(()) }).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Redis: two instances over one database and one Redis (NEXUS_TEST_DATABASE_URL, NEXUS_TEST_REDIS_URL, --include-ignored)"]
async fn two_instances_take_from_one_bucket_per_credential_through_redis() {
    use nexus::modules::channels::{RatePolicy, driver::Pace};
    let amazon = FakeAmazon::start(items(10, 9)).await.unwrap();
    let app = paced_amazon_app(&amazon, 10, 10).await;
    // The second instance runs no jobs: every push is the first one's.
    let other = app.sibling_adjusted(|f| f.merge(("jobs.run_in_server", false))).await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let body = amazon_body(&amazon, "Amazon DE", &main, 0);
    let a = connect(&app, &tenant, body.clone()).await["id"].as_str().unwrap().to_owned();
    import(&app, &tenant, &a).await;
    // The bucket fills up again (10 a second, 10 at most).
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;

    // The other instance spends the credential's whole bucket...
    let credentials: std::collections::BTreeMap<String, String> =
        serde_json::from_value(body["credentials"].clone()).unwrap();
    let policy = RatePolicy { per_second: 10, burst: 10 };
    let pace = Pace::new(
        Some(other.state.governance.limiter.clone()),
        "amazon",
        &amazon.base_url,
        &credentials,
        policy,
    );
    let spent = std::time::Instant::now();
    for _ in 0..10 {
        pace.turn().await;
    }
    assert!(spent.elapsed() < std::time::Duration::from_millis(500), "the bucket was full");

    // ...so the first instance's 10 pushes wait for 10 new tokens.
    let started = std::time::Instant::now();
    let run = run_to_end(&app, &tenant, &a, "sync").await;
    assert_eq!((run["done"].as_i64(), run["failed"].as_i64()), (Some(10), Some(0)), "{run}");
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(900), "the instances share one bucket: took {took:?}");
}

#[tokio::test]
async fn a_full_push_writes_every_mapped_product_in_batches_with_progress() {
    let woo = FakeWooCommerce::start(items(12, 3)).await.unwrap();
    let app = TestApp::spawn_adjusted(|f| f.merge(("modules.channels.push_batch_size", 5))).await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let w = connect(&app, &tenant, woo_body(&woo, "Site", &main, 1)).await["id"].as_str().unwrap().to_owned();
    import(&app, &tenant, &w).await;
    let item = product_id_of(&app, &tenant, "ITEM-004").await;
    adjust(&app, &tenant, &item, &main, 20).await;
    // The stock change's own push lands first (on hand 20 - buffer 1).
    eventually(10, || async { (woo.quantity("ITEM-004") == Some(19)).then_some(()) }).await;
    app.drained().await;
    let batches = woo.batches();

    let run = run_to_end(&app, &tenant, &w, "sync").await;
    assert_eq!(
        (run["status"].as_str(), run["total"].as_i64(), run["done"].as_i64(), run["failed"].as_i64()),
        (Some("succeeded"), Some(12), Some(12), Some(0)),
        "{run}"
    );
    assert_eq!(woo.batches() - batches, 3, "12 products in batches of 5: 3 batch calls");
    assert_eq!(woo.quantity("ITEM-004"), Some(19), "on hand 20 - buffer 1");
    assert_eq!(woo.quantity("ITEM-000"), Some(0));
    let events = channel_events(&app, &tenant).await;
    let of_run: Vec<&str> =
        events.iter().filter(|(_, d)| d["run_id"] == run["id"]).map(|(t, _)| t.as_str()).collect();
    assert_eq!(of_run, ["channel.sync_started", "channel.sync_succeeded"]);
    let succeeded =
        &events.iter().find(|(t, d)| t == "channel.sync_succeeded" && d["run_id"] == run["id"]).unwrap().1;
    assert_eq!((succeeded["kind"].as_str(), succeeded["done"].as_i64()), (Some("push"), Some(12)));

    // Listed with the connection's runs; another tenant sees none of it.
    let runs =
        json(app.get(&format!("/api/v1/channel-connections/{w}/sync-runs"), &tenant.token).await).await;
    assert_eq!(runs["data"][0]["id"], run["id"]);
    let stranger = app.register().await;
    let path = format!("/api/v1/channel-connections/{w}/sync-runs/{}", run["id"].as_str().unwrap());
    assert_problem(app.get(&path, &stranger.token).await, 404, "not_found").await;
    assert_problem(
        app.post(&format!("/api/v1/channel-connections/{w}/sync"), &stranger.token, json!({})).await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn a_reconcile_reports_drift_per_sku_and_corrects_the_store() {
    let shop = FakeShopify::start(vec![
        FakeProduct::simple("Mug", "MUG-WHITE", "9.50", 50),
        FakeProduct::simple("Cup", "CUP-BLUE", "4.50", 50),
    ])
    .await
    .unwrap();
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let s = connect(&app, &tenant, shopify_body(&shop, "Shop", &main, 2)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    import(&app, &tenant, &s).await;
    let mug = product_id_of(&app, &tenant, "MUG-WHITE").await;
    let cup = product_id_of(&app, &tenant, "CUP-BLUE").await;
    adjust(&app, &tenant, &mug, &main, 12).await;
    adjust(&app, &tenant, &cup, &main, 7).await;
    eventually(10, || async {
        (shop.quantity("MUG-WHITE") == Some(10) && shop.quantity("CUP-BLUE") == Some(5)).then_some(())
    })
    .await;
    app.drained().await;

    // Someone edits the mug on the store, behind Nexus's back; the shop
    // also holds cups at a location the connection does not serve, which
    // are no drift of it.
    shop.set_quantity("MUG-WHITE", 31);
    shop.stock_elsewhere("CUP-BLUE", 40);
    let run = run_to_end(&app, &tenant, &s, "reconcile").await;
    assert_eq!(
        (
            run["kind"].as_str(),
            run["status"].as_str(),
            run["total"].as_i64(),
            run["done"].as_i64(),
            run["drifted"].as_i64()
        ),
        (Some("reconcile"), Some("succeeded"), Some(2), Some(2), Some(1)),
        "{run}"
    );
    let drifts = json(
        app.get(
            &format!("/api/v1/channel-connections/{s}/sync-runs/{}/drifts", run["id"].as_str().unwrap()),
            &tenant.token,
        )
        .await,
    )
    .await;
    let drifts = drifts["data"].as_array().unwrap();
    assert_eq!(drifts.len(), 1, "{drifts:?}");
    assert_eq!(
        (
            drifts[0]["sku"].as_str(),
            drifts[0]["remote"].as_i64(),
            drifts[0]["expected"].as_i64(),
            drifts[0]["corrected"].as_bool()
        ),
        (Some("MUG-WHITE"), Some(31), Some(10), Some(true))
    );
    assert_eq!(drifts[0]["product_id"], mug.as_str());
    assert_eq!(shop.quantity("MUG-WHITE"), Some(10), "the store is corrected");
    assert_eq!(shop.quantity("CUP-BLUE"), Some(5));

    // Nothing off: a clean run.
    let again = run_to_end(&app, &tenant, &s, "reconcile").await;
    assert_eq!(again["drifted"], 0, "{again}");
}

#[tokio::test]
async fn scheduled_reconciles_correct_drift_unasked() {
    let woo = FakeWooCommerce::start(mug(50)).await.unwrap();
    let app = TestApp::spawn_adjusted(|f| f.merge(("modules.channels.reconcile_interval_secs", 1))).await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let w = connect(&app, &tenant, woo_body(&woo, "Site", &main, 0)).await["id"].as_str().unwrap().to_owned();
    import(&app, &tenant, &w).await;
    let mug_id = product_id_of(&app, &tenant, "MUG-WHITE").await;
    adjust(&app, &tenant, &mug_id, &main, 4).await;
    eventually(10, || async { (woo.quantity("MUG-WHITE") == Some(4)).then_some(()) }).await;
    app.drained().await;
    woo.set_quantity("MUG-WHITE", 40);
    let path = format!("/api/v1/channel-connections/{w}/sync-runs");
    let mut found = false;
    for _ in 0..30 {
        let runs = json(app.get(&path, &tenant.token).await).await;
        if runs["data"].as_array().unwrap().iter().any(|r| r["kind"] == "reconcile" && r["drifted"] == 1) {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(found, "a scheduled reconcile found the drift");
    // ...and corrected it (the run may record the drift before its push lands).
    eventually(10, || async { (woo.quantity("MUG-WHITE") == Some(4)).then_some(()) }).await;
}

#[tokio::test]
async fn a_goods_receipt_pushes_the_new_available_to_promise() {
    let shop = FakeShopify::start(mug(50)).await.unwrap();
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let s = connect(&app, &tenant, shopify_body(&shop, "Shop", &main, 0)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    import(&app, &tenant, &s).await;
    let mug_id = product_id_of(&app, &tenant, "MUG-WHITE").await;
    let vendor =
        json(app.post("/api/v1/vendors", &tenant.token, json!({"name": "Acme", "currency": "EUR"})).await)
            .await;
    let body = json!({"vendor_id": vendor["data"]["id"], "warehouse_id": main,
        "lines": [{"product_id": mug_id, "quantity": 30, "unit_cost": 45}]});
    let po = json(app.post("/api/v1/purchase-orders", &tenant.token, body).await).await["data"].clone();
    let po_id = po["id"].as_str().unwrap();
    let act = |token: String, action: &'static str| {
        let path = format!("/api/v1/purchase-orders/{po_id}/{action}");
        let app = &app;
        async move { app.post(&path, &token, json!({})).await }
    };
    assert_eq!(act(tenant.token.clone(), "submit").await.status(), 200);
    let (_, manager) = app.user_with_roles(&tenant, &["manager"]).await;
    assert_eq!(act(manager, "approve").await.status(), 200);
    let receipt = json!({"lines": [{"line_id": po["lines"][0]["id"], "quantity": 30}]});
    let res = app.post(&format!("/api/v1/purchase-orders/{po_id}/receipts"), &tenant.token, receipt).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    eventually(10, || async { (shop.quantity("MUG-WHITE") == Some(30)).then_some(()) }).await;
    let received = app.events(tenant.id, "goods.received").await.remove(0);
    assert_eq!(received.data["lines"][0]["product_id"], mug_id.as_str());
    assert_eq!(received.data["lines"][0]["warehouse_id"], main.as_str());
}

async fn graphql(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let res = app.post("/graphql", token, json!({"query": query, "variables": variables})).await;
    assert_eq!(res.status(), 200);
    json(res).await
}

#[tokio::test]
async fn graphql_starts_and_reads_sync_and_reconcile_runs_with_the_same_errors() {
    let woo = FakeWooCommerce::start(mug(50)).await.unwrap();
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let w = connect(&app, &tenant, woo_body(&woo, "Site", &main, 0)).await["id"].as_str().unwrap().to_owned();
    import(&app, &tenant, &w).await;
    let start = "mutation($c: UUID!) { startChannelSync(connectionId: $c) { id kind status total } }";
    let body = graphql(&app, &tenant.token, start, json!({"c": w})).await;
    let run = &body["data"]["startChannelSync"];
    assert_eq!((run["kind"].as_str(), run["total"].as_i64()), (Some("push"), Some(1)), "{body}");
    app.drained().await;
    assert_eq!(woo.quantity("MUG-WHITE"), Some(0));

    woo.set_quantity("MUG-WHITE", 3);
    let reconcile = "mutation($c: UUID!) { startChannelReconcile(connectionId: $c) { id kind } }";
    let body = graphql(&app, &tenant.token, reconcile, json!({"c": w})).await;
    let run_id = body["data"]["startChannelReconcile"]["id"].as_str().unwrap().to_owned();
    app.drained().await;
    let read = "query($c: UUID!, $r: UUID!) { channelSyncRun(connectionId: $c, id: $r) { status drifted }
        channelDrifts(connectionId: $c, runId: $r) { items { sku remote expected corrected } }
        channelSyncRuns(connectionId: $c) { items { kind } } }";
    let body = graphql(&app, &tenant.token, read, json!({"c": w, "r": run_id})).await;
    assert_eq!(body["data"]["channelSyncRun"], json!({"status": "succeeded", "drifted": 1}), "{body}");
    assert_eq!(
        body["data"]["channelDrifts"]["items"],
        json!([{"sku": "MUG-WHITE", "remote": 3, "expected": 0, "corrected": true}])
    );
    assert_eq!(body["data"]["channelSyncRuns"]["items"], json!([{"kind": "reconcile"}, {"kind": "push"}]));
    assert_eq!(woo.quantity("MUG-WHITE"), Some(0));

    // Viewers read but do not start; another tenant finds nothing.
    let (_, viewer) = app.user_with_roles(&tenant, &["viewer"]).await;
    let body = graphql(&app, &viewer, start, json!({"c": w})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "forbidden", "{body}");
    let res = app.post(&format!("/api/v1/channel-connections/{w}/reconcile"), &viewer, json!({})).await;
    assert_problem(res, 403, "forbidden").await;
    let other = app.register().await;
    let body = graphql(&app, &other.token, reconcile, json!({"c": w})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "not_found", "{body}");
}

/// `nexus` run on the app's database, as an operator runs it, off the
/// test's thread (the app's workers carry the runs out meanwhile).
async fn nexus_cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nexus"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("NEXUS_")) {
        cmd.env_remove(key);
    }
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env("NEXUS_DATABASE_URL", app.config.database_url())
        .env("NEXUS_DATABASE__SCHEMA", &app.config.database.schema);
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

#[tokio::test]
async fn the_command_line_shows_connections_and_follows_a_push_to_its_end() {
    let shop = FakeShopify::start(mug(50)).await.unwrap();
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let s = connect(&app, &tenant, shopify_body(&shop, "EU shop", &main, 0)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    import(&app, &tenant, &s).await;

    let out = nexus_cli(&app, &["channels", "sync", &s, "--every-ms", "50"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("succeeded: 1/1 pushed, 0 failed"), "{stdout}");
    assert_eq!(shop.quantity("MUG-WHITE"), Some(0));

    let out = nexus_cli(&app, &["channels", "status"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut lines = stdout.lines();
    assert!(lines.next().unwrap().starts_with("tenant"), "{stdout}");
    let row = stdout.lines().find(|l| l.contains(&s)).unwrap_or_else(|| panic!("{stdout}"));
    assert!(row.contains("EU shop") && row.contains("shopify") && row.contains("connected"), "{row}");
    assert!(row.contains("push succeeded") && row.contains("(1/1, 0 failed)"), "{row}");

    let missing = uuid::Uuid::now_v7().to_string();
    let out = nexus_cli(&app, &["channels", "sync", &missing]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no channel connection"), "{out:?}");
}

/// Standard Webhooks headers for `body`, signed with the `whsec_` secret at `at`.
fn etsy_headers(secret: &str, id: &str, at: i64, body: &str) -> Vec<(&'static str, String)> {
    use base64::Engine;
    use hmac::Mac;
    let engine = base64::engine::general_purpose::STANDARD;
    let key = engine.decode(secret.trim_start_matches("whsec_")).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{at}.{body}").as_bytes());
    let signature = engine.encode(mac.finalize().into_bytes());
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", at.to_string()),
        ("webhook-signature", format!("v1,bm90IHRoaXMgb25l v1,{signature}")),
    ]
}

#[tokio::test]
async fn etsy_webhooks_are_verified_the_standard_webhooks_way() {
    use base64::Engine;
    let etsy = FakeEtsy::start(mug(5)).await.unwrap();
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let secret =
        format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(b"etsy-endpoint-signing-key"));
    let mut body = etsy_body(&etsy, "Etsy", &main, 0);
    body["webhook_secret"] = json!(secret);
    let e = connect(&app, &tenant, body).await["id"].as_str().unwrap().to_owned();
    // A paid order of a variant no local product is mapped to (no import).
    let sold = etsy.sell("MUG-WHITE", 1).unwrap();
    let event = etsy.order_paid(sold);
    let send = |headers| deliver(&app, &e, headers, event.clone());
    let now = chrono::Utc::now().timestamp();
    let res = send(etsy_headers(&secret, "msg_1", now, &event)).await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let receipt = json(res).await["data"].clone();
    assert_eq!(
        (receipt["topic"].as_str(), receipt["event_id"].as_str(), receipt["outcome"].as_str()),
        (Some("order.paid"), Some("msg_1"), Some("unmapped")),
        "{receipt}"
    );
    // A replay; a stale timestamp; another key; a changed body; no signature.
    assert_problem(send(etsy_headers(&secret, "msg_1", now, &event)).await.unwrap(), 401, "unauthenticated")
        .await;
    let stale = send(etsy_headers(&secret, "msg_2", now - 600, &event)).await.unwrap();
    let problem = assert_problem(stale, 401, "unauthenticated").await;
    assert!(problem["detail"].as_str().unwrap().contains("webhook-timestamp"), "{problem}");
    let other = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(b"another-key"));
    assert_problem(send(etsy_headers(&other, "msg_3", now, &event)).await.unwrap(), 401, "unauthenticated")
        .await;
    let changed = etsy_headers(&secret, "msg_4", now, &event.replace(&sold.to_string(), "9002"));
    assert_problem(send(changed).await.unwrap(), 401, "unauthenticated").await;
    assert_problem(send(vec![]).await.unwrap(), 401, "unauthenticated").await;
    let log =
        json(app.get(&format!("/api/v1/channel-connections/{e}/webhook-receipts"), &tenant.token).await)
            .await;
    let outcomes: Vec<&str> =
        log["data"].as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["forged", "forged", "forged", "forged", "replayed", "unmapped"]);
}

#[tokio::test]
async fn an_etsy_sale_is_booked_from_its_receipt_and_reaches_the_other_stores() {
    use base64::Engine;
    let etsy = FakeEtsy::start(mug(50)).await.unwrap();
    let woo = FakeWooCommerce::start(mug(50)).await.unwrap();
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(b"etsy-signing-key"));
    let mut body = etsy_body(&etsy, "Etsy", &main, 0);
    body["webhook_secret"] = json!(secret);
    let e = connect(&app, &tenant, body).await["id"].as_str().unwrap().to_owned();
    let w = connect(&app, &tenant, woo_body(&woo, "Site", &main, 0)).await["id"].as_str().unwrap().to_owned();
    import(&app, &tenant, &e).await;
    import(&app, &tenant, &w).await;
    let mug_id = product_id_of(&app, &tenant, "MUG-WHITE").await;
    adjust(&app, &tenant, &mug_id, &main, 10).await;
    eventually(10, || async {
        (etsy.quantity("MUG-WHITE") == Some(10) && woo.quantity("MUG-WHITE") == Some(10)).then_some(())
    })
    .await;
    app.drained().await;

    // Three mugs sold on Etsy: its webhook names the receipt, not a quantity.
    let sold = etsy.sell("MUG-WHITE", 3).unwrap();
    assert_eq!(etsy.quantity("MUG-WHITE"), Some(7));
    let event = etsy.order_paid(sold);
    let send = |id: &str, event: &str| {
        let headers = etsy_headers(&secret, id, chrono::Utc::now().timestamp(), event);
        deliver(&app, &e, headers, event.to_owned())
    };
    let res = send("msg_paid", &event).await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let receipt = json(res).await["data"].clone();
    assert_eq!(
        (receipt["outcome"].as_str(), receipt["detail"].as_str()),
        (Some("applied"), Some("on hand MUG-WHITE -3")),
        "{receipt}"
    );
    assert_eq!(on_hand(&app, &tenant, &mug_id, &main).await, 7);
    let movements =
        json(app.get(&format!("/api/v1/stock-movements?product_id={mug_id}"), &tenant.token).await).await;
    let reference = format!("channel:{e}:receipt:{sold}");
    let booked: Vec<&Value> = movements["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["reference"] == reference.as_str())
        .collect();
    assert_eq!(booked.len(), 1, "{movements}");
    assert_eq!(booked[0]["quantity"], -3, "{movements}");
    // It reaches WooCommerce; Etsy keeps what it holds.
    eventually(10, || async { (woo.quantity("MUG-WHITE") == Some(7)).then_some(()) }).await;
    app.drained().await;
    assert_eq!(etsy.quantity("MUG-WHITE"), Some(7));
    let events = channel_events(&app, &tenant).await;
    let updates: Vec<&Value> =
        events.iter().filter(|(t, _)| t == "channel.inventory_updated").map(|(_, d)| d).collect();
    assert_eq!(updates.len(), 1, "{events:?}");
    assert_eq!(
        (
            updates[0]["quantity"].as_i64(),
            updates[0]["remote_quantity"].as_i64(),
            updates[0]["on_hand"].as_i64()
        ),
        (Some(-3), Some(7), Some(7))
    );

    // Etsy delivers it again: nothing more is booked.
    assert_problem(send("msg_paid", &event).await.unwrap(), 401, "unauthenticated").await;
    assert_eq!(on_hand(&app, &tenant, &mug_id, &main).await, 7);

    // A receipt Etsy cannot show: nothing is booked, the event can come again.
    let missing = event.replace(&format!("/receipts/{sold}"), "/receipts/1");
    let res = send("msg_missing", &missing).await.unwrap();
    assert_problem(res, 404, "not_found").await;
    assert_eq!(on_hand(&app, &tenant, &mug_id, &main).await, 7);
    let log =
        json(app.get(&format!("/api/v1/channel-connections/{e}/webhook-receipts"), &tenant.token).await)
            .await;
    let outcomes: Vec<&str> =
        log["data"].as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["rejected", "replayed", "applied"]);
}

// ------------------------------------------------------------ Dead letters

#[tokio::test]
async fn pushes_that_exhaust_their_retries_become_dead_letters_to_replay_or_dismiss() {
    let app = TestApp::spawn_adjusted(|f| f.merge(("modules.channels.push_attempts", 2))).await;
    let tenant = app.register().await;
    let main = warehouse(&app, &tenant, "MAIN").await;
    let woo = FakeWooCommerce::start(vec![
        FakeProduct::simple("Mug", "MUG-WHITE", "9.50", 0),
        FakeProduct::simple("Cup", "CUP-BLUE", "4.50", 0),
    ])
    .await
    .unwrap();
    let w = connect(&app, &tenant, woo_body(&woo, "Site", &main, 0)).await["id"].as_str().unwrap().to_owned();
    import(&app, &tenant, &w).await;
    let (mug_id, cup_id) =
        (product_id_of(&app, &tenant, "MUG-WHITE").await, product_id_of(&app, &tenant, "CUP-BLUE").await);

    // The site is down: both pushes fail twice and land in the dead letters.
    woo.set_down(true);
    adjust(&app, &tenant, &mug_id, &main, 5).await;
    adjust(&app, &tenant, &cup_id, &main, 3).await;
    let letters = eventually(10, || async {
        let list = json(app.get("/api/v1/channel-dead-letters", &tenant.token).await).await;
        (list["data"].as_array().unwrap().len() == 2).then_some(list)
    })
    .await;
    let mug_letter =
        letters["data"].as_array().unwrap().iter().find(|l| l["sku"] == "MUG-WHITE").unwrap().clone();
    assert_eq!(
        (mug_letter["quantity"].as_i64(), mug_letter["attempts"].as_i64()),
        (Some(5), Some(2)),
        "{mug_letter}"
    );
    assert!(mug_letter["last_error"].as_str().unwrap().starts_with("503"), "{mug_letter}");
    assert_eq!(mug_letter["connection_id"], w.as_str());
    let events = channel_events(&app, &tenant).await;
    assert_eq!(events.iter().filter(|(t, _)| t == "channel.dead_lettered").count(), 2);
    let filtered = json(
        app.get(&format!("/api/v1/channel-dead-letters?connection_id={w}&limit=1"), &tenant.token).await,
    )
    .await;
    assert_eq!(filtered["data"].as_array().unwrap().len(), 1, "{filtered}");
    let out = nexus_cli(&app, &["channels", "dead-letters", &w]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("MUG-WHITE") && stdout.contains("CUP-BLUE") && stdout.contains("503"),
        "{stdout}"
    );

    // Another tenant sees none of them and cannot touch them.
    let other = app.register().await;
    let theirs = json(app.get("/api/v1/channel-dead-letters", &other.token).await).await;
    assert_eq!(theirs["data"], json!([]));
    let letter_id = mug_letter["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/channel-dead-letters/{letter_id}/replay");
    assert_problem(app.post(&path, &other.token, json!({})).await, 404, "not_found").await;
    let res = app
        .send_json(
            Method::DELETE,
            &format!("/api/v1/channel-dead-letters/{letter_id}"),
            Some(&other.token),
            json!({}),
        )
        .await;
    assert_problem(res, 404, "not_found").await;

    // The site is back and more mugs came in: the replay pushes the ATP of now.
    woo.set_down(false);
    adjust(&app, &tenant, &mug_id, &main, 4).await;
    app.drained().await;
    let res = app.post(&path, &tenant.token, json!({})).await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    eventually(10, || async { (woo.quantity("MUG-WHITE") == Some(9)).then_some(()) }).await;

    // The cup's letter is dismissed: nothing is pushed, the list is empty.
    let cup_letter =
        letters["data"].as_array().unwrap().iter().find(|l| l["sku"] == "CUP-BLUE").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let res = app
        .send_json(
            Method::DELETE,
            &format!("/api/v1/channel-dead-letters/{cup_letter}"),
            Some(&tenant.token),
            json!({}),
        )
        .await;
    assert_eq!(res.status(), 204);
    app.drained().await;
    assert_eq!(woo.quantity("CUP-BLUE"), Some(0), "a dismissed letter pushes nothing");
    assert_eq!(json(app.get("/api/v1/channel-dead-letters", &tenant.token).await).await["data"], json!([]));

    // Down again: both fail; replay all of the connection once it is back; dismiss all empties.
    woo.set_down(true);
    adjust(&app, &tenant, &mug_id, &main, 1).await;
    adjust(&app, &tenant, &cup_id, &main, 1).await;
    eventually(10, || async {
        let list = json(app.get("/api/v1/channel-dead-letters", &tenant.token).await).await;
        (list["data"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;
    woo.set_down(false);
    let res =
        app.post("/api/v1/channel-dead-letters/replay", &tenant.token, json!({"connection_id": w})).await;
    assert_eq!(res.status(), 202);
    assert_eq!(json(res).await["data"], json!({"count": 2, "skipped": 0}));
    eventually(10, || async {
        (woo.quantity("MUG-WHITE") == Some(10) && woo.quantity("CUP-BLUE") == Some(4)).then_some(())
    })
    .await;
    let res = app.post("/api/v1/channel-dead-letters/dismiss", &tenant.token, json!({})).await;
    assert_eq!(json(res).await["data"], json!({"count": 0, "skipped": 0}));

    // From the command line: down once more, then dismiss all of the connection.
    woo.set_down(true);
    adjust(&app, &tenant, &mug_id, &main, 1).await;
    eventually(10, || async {
        let list = json(app.get("/api/v1/channel-dead-letters", &tenant.token).await).await;
        (list["data"].as_array().unwrap().len() == 1).then_some(())
    })
    .await;
    let out = nexus_cli(&app, &["channels", "dead-letters", &w, "--dismiss"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 dismissed"), "{out:?}");
    let out = nexus_cli(&app, &["channels", "dead-letters", &w]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("no dead letters"), "{out:?}");
}
