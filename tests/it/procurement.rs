//! Procurement over HTTP: the purchase order state machine, and goods
//! receipts that book order, stock and ledger together or not at all.

use nexus::platform::tenancy::SystemScope;
use std::sync::Arc;

use nexus::{
    error::{ApiError, ApiResult},
    modules::ledger::{Ledger, NewEntry},
    platform::tenancy::TenantScope,
};
use reqwest::Method;
use sea_orm::{ColumnTrait, QueryFilter};
use serde_json::{Value, json};

use crate::helpers::{Tenant, TestApp, assert_problem, json, test_config};

#[derive(Clone)]
struct Setup {
    vendor: String,
    warehouse: String,
    product: String,
}

async fn setup(app: &TestApp, tenant: &Tenant) -> Setup {
    let post = |path: &'static str, body: Value| app.post(path, &tenant.token, body);
    let vendor =
        json(post("/api/v1/vendors", json!({"name": "Acme Supplies", "currency": "EUR"})).await).await;
    let warehouse = json(post("/api/v1/warehouses", json!({"code": "MAIN", "name": "Main"})).await).await;
    let product = json(
        post("/api/v1/products", json!({"sku": "BOLT", "name": "Bolt", "unit_price": 90, "currency": "EUR"}))
            .await,
    )
    .await;
    let id = |v: &Value| v["data"]["id"].as_str().unwrap().to_owned();
    Setup { vendor: id(&vendor), warehouse: id(&warehouse), product: id(&product) }
}

async fn order(app: &TestApp, tenant: &Tenant, s: &Setup) -> Value {
    let body = json!({"vendor_id": s.vendor, "warehouse_id": s.warehouse,
        "lines": [{"product_id": s.product, "quantity": 100, "unit_cost": 45}]});
    let res = app.post("/api/v1/purchase-orders", &tenant.token, body).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    json(res).await["data"].clone()
}

async fn act(app: &TestApp, token: &str, id: &str, action: &str) -> reqwest::Response {
    app.post(&format!("/api/v1/purchase-orders/{id}/{action}"), token, json!({})).await
}

async fn receive(app: &TestApp, tenant: &Tenant, po: &Value, quantity: i64) -> reqwest::Response {
    let id = po["id"].as_str().unwrap();
    let body = json!({"lines": [{"line_id": po["lines"][0]["id"], "quantity": quantity}]});
    app.post(&format!("/api/v1/purchase-orders/{id}/receipts"), &tenant.token, body).await
}

async fn on_hand(app: &TestApp, tenant: &Tenant, s: &Setup) -> Value {
    let path = format!("/api/v1/stock-levels?product_id={}&warehouse_id={}", s.product, s.warehouse);
    json(app.get(&path, &tenant.token).await).await["data"][0]["on_hand"].clone()
}

#[tokio::test]
async fn an_order_is_approved_received_in_parts_and_closed() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = setup(&app, &tenant).await;
    let po = order(&app, &tenant, &s).await;
    let id = po["id"].as_str().unwrap();
    assert_eq!((po["status"].clone(), po["total"].clone()), (json!("draft"), json!(4500)));

    // Goods cannot be received before approval; approval needs a manager.
    assert_problem(receive(&app, &tenant, &po, 1).await, 409, "conflict").await;
    assert_eq!(json(act(&app, &tenant.token, id, "submit").await).await["data"]["status"], "submitted");
    let (_, user) = app.user_with_roles(&tenant, &["user"]).await;
    assert_problem(act(&app, &user, id, "approve").await, 403, "forbidden").await;
    let (manager_id, manager) = app.user_with_roles(&tenant, &["manager"]).await;
    let approved = json(act(&app, &manager, id, "approve").await).await;
    assert_eq!(approved["data"]["approved_by"], manager_id.to_string());
    let refused = assert_problem(act(&app, &manager, id, "approve").await, 409, "conflict").await;
    assert!(refused["detail"].as_str().unwrap().contains("approved"), "names the current state");

    let partial = json(receive(&app, &tenant, &po, 40).await).await;
    assert_eq!(partial["data"]["status"], "partially_received");
    assert_eq!(partial["data"]["lines"][0]["received"], 40);
    assert_eq!(on_hand(&app, &tenant, &s).await, 40);
    let over = assert_problem(receive(&app, &tenant, &po, 61).await, 422, "validation_failed").await;
    assert!(over["errors"][0]["message"].as_str().unwrap().contains("only 60 left"));
    assert_eq!(json(receive(&app, &tenant, &po, 60).await).await["data"]["status"], "received");
    assert_eq!(on_hand(&app, &tenant, &s).await, 100);

    // One balanced entry per receipt: debit inventory, credit payables.
    let ledger =
        json(app.get(&format!("/api/v1/ledger/entries?reference=purchase_order:{id}"), &tenant.token).await)
            .await;
    let entries = ledger["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let values: Vec<i64> = entries.iter().map(|e| e["lines"][0]["debit"].as_i64().unwrap()).collect();
    assert_eq!(values, [60 * 45, 40 * 45]);
    let path = format!("/api/v1/ledger/entries?reference=purchase_order:{id}&sort=created_at");
    let oldest_first = json(app.get(&path, &tenant.token).await).await;
    assert_eq!(oldest_first["data"][0]["lines"][0]["debit"], 40 * 45);
    for entry in entries {
        assert_eq!(entry["lines"][0]["account"], "inventory");
        assert_eq!(entry["lines"][1]["account"], "accounts_payable");
        assert_eq!(entry["lines"][0]["debit"], entry["lines"][1]["credit"]);
    }
    assert_eq!(json(act(&app, &tenant.token, id, "close").await).await["data"]["status"], "closed");
    assert_problem(act(&app, &tenant.token, id, "cancel").await, 409, "conflict").await;

    // The vendor now has an order: it stays.
    let res = app
        .request(Method::DELETE, &format!("/api/v1/vendors/{}", s.vendor), Some(&tenant.token))
        .send()
        .await
        .unwrap();
    assert_problem(res, 409, "conflict").await;
    // Another tenant sees none of it.
    let other = app.register().await;
    assert_problem(app.get(&format!("/api/v1/purchase-orders/{id}"), &other.token).await, 404, "not_found")
        .await;
}

/// A ledger that always fails, as an unreachable accounting system would.
struct BrokenLedger;

#[async_trait::async_trait]
impl Ledger for BrokenLedger {
    async fn post(
        &self,
        _: &sea_orm::DatabaseTransaction,
        _: TenantScope,
        _: NewEntry,
    ) -> ApiResult<uuid::Uuid> {
        Err(ApiError::internal(anyhow::anyhow!("the ledger is down")))
    }

    async fn entries(
        &self,
        _: TenantScope,
        _: Option<String>,
        _: nexus::platform::http::Sort<entity::journal_entry::Column>,
        _: &nexus::platform::http::ListRequest,
    ) -> ApiResult<nexus::platform::http::Paged<nexus::modules::ledger::EntryView>> {
        Err(ApiError::internal(anyhow::anyhow!("the ledger is down")))
    }
}

#[tokio::test]
async fn a_failing_ledger_leaves_order_and_stock_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let parts = nexus::Parts { ledger: Some(Arc::new(BrokenLedger)), ..Default::default() };
    let app = TestApp::spawn_with_parts(test_config(dir.path()), dir, parts).await;
    let tenant = app.register().await;
    let s = setup(&app, &tenant).await;
    let po = order(&app, &tenant, &s).await;
    let id = po["id"].as_str().unwrap();
    act(&app, &tenant.token, id, "submit").await;
    act(&app, &tenant.token, id, "approve").await;
    assert_problem(receive(&app, &tenant, &po, 40).await, 500, "internal_error").await;
    let after = json(app.get(&format!("/api/v1/purchase-orders/{id}"), &tenant.token).await).await;
    assert_eq!(after["data"]["status"], "approved");
    assert_eq!(after["data"]["lines"][0]["received"], 0);
    assert_eq!(on_hand(&app, &tenant, &s).await, Value::Null, "no stock level was even created");
    let movements = json(
        app.get(&format!("/api/v1/stock-movements?include=total&product_id={}", s.product), &tenant.token)
            .await,
    )
    .await;
    assert_eq!(movements["meta"]["total"], 0);
}

#[tokio::test]
async fn orders_are_validated_and_the_module_is_gated() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = setup(&app, &tenant).await;
    let bad = json!({"vendor_id": s.vendor, "warehouse_id": s.warehouse,
        "lines": [{"product_id": s.product, "quantity": 0, "unit_cost": -1}]});
    let body = assert_problem(
        app.post("/api/v1/purchase-orders", &tenant.token, bad).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 2);
    let unknown = json!({"vendor_id": uuid::Uuid::now_v7(), "warehouse_id": s.warehouse,
        "lines": [{"product_id": s.product, "quantity": 1, "unit_cost": 1}]});
    assert_problem(app.post("/api/v1/purchase-orders", &tenant.token, unknown).await, 404, "not_found").await;
    app.send_json(
        Method::PUT,
        "/api/v1/features/module.procurement",
        Some(&tenant.token),
        json!({"enabled": false}),
    )
    .await;
    assert_problem(app.get("/api/v1/purchase-orders", &tenant.token).await, 403, "feature_disabled").await;
}

#[tokio::test]
async fn a_purchase_order_is_created_approved_and_received_over_graphql() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = setup(&app, &tenant).await;
    let gql = |query: String| app.post("/graphql", &tenant.token, json!({ "query": query }));
    let created = json(
        gql(format!(
            r#"mutation {{ createPurchaseOrder(vendorId: "{}", warehouseId: "{}", lines: [{{productId: "{}", quantity: 10, unitCost: 45}}]) {{ id total status lines {{ id }} }} }}"#,
            s.vendor, s.warehouse, s.product
        ))
        .await,
    )
    .await;
    let order = &created["data"]["createPurchaseOrder"];
    assert_eq!((order["total"].clone(), order["status"].clone()), (json!(450), json!("draft")), "{created}");
    let id = order["id"].as_str().unwrap();
    for action in ["SUBMIT", "APPROVE"] {
        let body = json(
            gql(format!(
                r#"mutation {{ transitionPurchaseOrder(id: "{id}", action: {action}) {{ status }} }}"#
            ))
            .await,
        )
        .await;
        assert!(body.get("errors").is_none(), "{body}");
    }
    let line = order["lines"][0]["id"].as_str().unwrap();
    let body = json(gql(format!(r#"mutation {{ receiveGoods(id: "{id}", lines: [{{lineId: "{line}", quantity: 10}}]) {{ status }} }}"#)).await).await;
    assert_eq!(body["data"]["receiveGoods"]["status"], "received", "{body}");

    // The nested shape of the issue, resolved with batched loads.
    let query = format!(
        r#"{{ purchaseOrder(id: "{id}") {{ vendor {{ name }} lines {{ quantity product {{ sku stockLevels {{ onHand available }} }} }} }} }}"#
    );
    let body = json(gql(query).await).await;
    let po = &body["data"]["purchaseOrder"];
    assert_eq!(po["vendor"]["name"], "Acme Supplies", "{body}");
    assert_eq!(po["lines"][0]["product"]["sku"], "BOLT");
    assert_eq!(po["lines"][0]["product"]["stockLevels"][0]["onHand"], 10);
    let body = json(
        gql("{ products { items { sku stockLevels { onHand } } pageInfo { total } } }".to_owned()).await,
    )
    .await;
    assert_eq!(body["data"]["products"]["pageInfo"]["total"], 1, "{body}");
    // A bad quantity is refused with the REST code.
    let body = json(gql(format!(r#"mutation {{ receiveGoods(id: "{id}", lines: [{{lineId: "{line}", quantity: 0}}]) {{ status }} }}"#)).await).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "validation_failed");
}

#[tokio::test]
async fn bulk_purchase_orders_answer_per_item() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = setup(&app, &tenant).await;
    app.send_json(
        Method::PUT,
        "/api/v1/features/feature.bulk-operations",
        Some(&tenant.token),
        json!({"enabled": true}),
    )
    .await;
    let good = json!({"vendor_id": s.vendor, "warehouse_id": s.warehouse,
        "lines": [{"product_id": s.product, "quantity": 5, "unit_cost": 10}]});
    let unknown_vendor = json!({"vendor_id": uuid::Uuid::now_v7(), "warehouse_id": s.warehouse,
        "lines": [{"product_id": s.product, "quantity": 5, "unit_cost": 10}]});
    let body = json(
        app.post("/api/v1/bulk/purchase-orders", &tenant.token, json!({"items": [good, unknown_vendor]}))
            .await,
    )
    .await;
    assert_eq!(body["data"][0]["status"], 201, "{body}");
    assert_eq!(body["data"][0]["data"]["total"], 50);
    assert_eq!(body["data"][1]["status"], 404);
    assert_eq!(
        json(app.get("/api/v1/purchase-orders?include=total", &tenant.token).await).await["meta"]["total"],
        1
    );
}

fn names(list: &Value) -> Vec<&str> {
    list["data"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn vendors_are_versioned_sorted_and_filtered() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    for name in ["Beta", "Alpha"] {
        let res = app.post("/api/v1/vendors", &tenant.token, json!({"name": name, "currency": "EUR"})).await;
        assert_eq!((res.status().as_u16(), res.headers()["etag"].to_str().unwrap()), (201, "\"1\""));
    }
    let (app, token) = (&app, &tenant.token);
    let list = |query: &str| {
        let path = format!("/api/v1/vendors{query}");
        async move { app.get(&path, token).await }
    };
    assert_eq!(names(&json(list("").await).await), ["Alpha", "Beta"]);
    assert_eq!(names(&json(list("?sort=-name").await).await), ["Beta", "Alpha"]);
    assert_eq!(names(&json(list("?sort=created_at").await).await), ["Beta", "Alpha"]);
    let bad = assert_problem(list("?sort=email").await, 400, "invalid_query").await;
    assert_eq!(bad["errors"][0]["field"], "sort");

    let alpha = json(list("?sort=name").await).await["data"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/vendors/{alpha}");
    let patch = |if_match: &'static str, body: Value| {
        app.request(Method::PATCH, &path, Some(&tenant.token)).header("if-match", if_match).json(&body).send()
    };
    let res = patch("\"1\"", json!({"active": false})).await.unwrap();
    assert_eq!(res.headers()["etag"], "\"2\"");
    assert_eq!(json(res).await["data"]["active"], false);
    // A change based on the old version is refused and changes nothing.
    let stale = patch("\"1\"", json!({"name": "Alphabet"})).await.unwrap();
    assert_problem(stale, 412, "precondition_failed").await;
    assert_problem(patch("yesterday", json!({"name": "Alphabet"})).await.unwrap(), 400, "invalid_header")
        .await;
    let current = app.get(&path, &tenant.token).await;
    assert_eq!(current.headers()["etag"], "\"2\"");
    assert_eq!(json(current).await["data"]["name"], "Alpha");
    assert_eq!(names(&json(list("?active=false").await).await), ["Alpha"]);
    assert_eq!(names(&json(list("?active=true").await).await), ["Beta"]);
}

#[tokio::test]
async fn orders_are_sorted_filtered_and_change_only_at_the_version_read() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = setup(&app, &tenant).await;
    let small = order(&app, &tenant, &s).await;
    let body = json!({"vendor_id": s.vendor, "warehouse_id": s.warehouse,
        "lines": [{"product_id": s.product, "quantity": 1, "unit_cost": 45}]});
    let tiny = json(app.post("/api/v1/purchase-orders", &tenant.token, body).await).await["data"].clone();
    let totals = |list: Value| -> Vec<i64> {
        list["data"].as_array().unwrap().iter().map(|o| o["total"].as_i64().unwrap()).collect()
    };
    let (app, token) = (&app, &tenant.token);
    let list = |query: &str| {
        let path = format!("/api/v1/purchase-orders{query}");
        async move { app.get(&path, token).await }
    };
    assert_eq!(totals(json(list("").await).await), [45, 4500], "newest first");
    assert_eq!(totals(json(list("?sort=total").await).await), [45, 4500]);
    assert_eq!(totals(json(list("?sort=-total").await).await), [4500, 45]);
    assert_eq!(totals(json(list(&format!("?warehouse_id={}", s.warehouse)).await).await).len(), 2);
    assert_eq!(totals(json(list(&format!("?warehouse_id={}", s.vendor)).await).await).len(), 0);
    let bad = assert_problem(list("?status=shipped").await, 400, "invalid_query").await;
    assert!(bad["errors"][0]["message"].as_str().unwrap().contains("partially_received"));
    assert_problem(list("?sort=vendor").await, 400, "invalid_query").await;

    // Submitting an order read at another version is refused; the order stays a draft.
    let id = small["id"].as_str().unwrap();
    let submit = |if_match: &'static str| {
        app.request(Method::POST, &format!("/api/v1/purchase-orders/{id}/submit"), Some(&tenant.token))
            .header("if-match", if_match)
            .json(&json!({}))
            .send()
    };
    assert_problem(submit("\"7\"").await.unwrap(), 412, "precondition_failed").await;
    let read = app.get(&format!("/api/v1/purchase-orders/{id}"), &tenant.token).await;
    assert_eq!(read.headers()["etag"], "\"1\"");
    assert_eq!(json(read).await["data"]["status"], "draft");
    let submitted = submit("\"1\"").await.unwrap();
    assert_eq!(submitted.headers()["etag"], "\"2\"");
    assert_eq!(totals(json(list("?status=submitted").await).await), [4500]);
    assert_eq!(totals(json(list("?status=draft").await).await), [tiny["total"].as_i64().unwrap()]);
}

#[tokio::test]
async fn a_short_delivered_order_is_closed_short() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = setup(&app, &tenant).await;
    let po = order(&app, &tenant, &s).await;
    let id = po["id"].as_str().unwrap();
    assert_problem(act(&app, &tenant.token, id, "close").await, 409, "conflict").await;
    for action in ["submit", "approve"] {
        assert_eq!(act(&app, &tenant.token, id, action).await.status(), 200);
    }
    assert_eq!(json(receive(&app, &tenant, &po, 40).await).await["data"]["status"], "partially_received");
    // The vendor will not deliver the rest: the order ends short.
    assert_eq!(json(act(&app, &tenant.token, id, "close").await).await["data"]["status"], "closed");
    assert_problem(receive(&app, &tenant, &po, 1).await, 409, "conflict").await;
    assert_eq!(on_hand(&app, &tenant, &s).await, 40);
    let closed =
        app.events(tenant.id, "purchase_order.closed").await.pop().expect("a purchase_order.closed event");
    assert_eq!(closed.data, json!({"id": id, "status": "closed", "total": 4500, "short": true}));
}

/// The `n` in `Server-Timing: db;dur=...;desc="n queries"`.
fn queries(res: &reqwest::Response) -> u64 {
    let timing = res.headers()["server-timing"].to_str().unwrap();
    let desc = timing.split("desc=\"").nth(1).unwrap();
    desc.split(' ').next().unwrap().parse().unwrap()
}

/// A page of orders costs the same queries whatever its length: vendors,
/// lines, products and stock levels are each loaded once per page.
#[tokio::test]
async fn listing_orders_costs_the_same_queries_for_one_order_or_many() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = setup(&app, &tenant).await;
    order(&app, &tenant, &s).await;
    let query =
        "{ purchaseOrders { items { vendor { name } lines { product { sku stockLevels { onHand } } } } } }";
    let cost = || async {
        let graphql = app.post("/graphql", &tenant.token, json!({ "query": query })).await;
        let rest = app.get("/api/v1/purchase-orders", &tenant.token).await;
        let cost = (queries(&graphql), queries(&rest));
        let body = json(graphql).await;
        assert!(body.get("errors").is_none(), "{body}");
        (cost, body["data"]["purchaseOrders"]["items"].as_array().unwrap().len())
    };
    cost().await; // settles the per-instance caches
    let (one, n) = cost().await;
    assert_eq!(n, 1);
    for i in 0..5 {
        let post = |path: &'static str, body: Value| app.post(path, &tenant.token, body);
        let id = |v: Value| v["data"]["id"].as_str().unwrap().to_owned();
        let vendor = json(post("/api/v1/vendors", json!({"name": format!("V{i}"), "currency": "EUR"})).await);
        let product = json(
            post(
                "/api/v1/products",
                json!({"sku": format!("P{i}"), "name": "Nut", "unit_price": 9, "currency": "EUR"}),
            )
            .await,
        );
        let other = Setup { vendor: id(vendor.await), product: id(product.await), ..s.clone() };
        order(&app, &tenant, &other).await;
    }
    let (six, n) = cost().await;
    assert_eq!(n, 6);
    assert!(one.0 > 0 && one.1 > 0, "queries are counted");
    assert_eq!(one, six, "(GraphQL, REST) queries for one order and for six");
}

/// A goods receipt onto a level at its bound is refused whole: order,
/// stock and ledger unchanged.
#[tokio::test]
async fn a_receipt_onto_a_full_level_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = setup(&app, &tenant).await;
    let po = order(&app, &tenant, &s).await;
    let id = po["id"].as_str().unwrap();
    for action in ["submit", "approve"] {
        assert_eq!(act(&app, &tenant.token, id, action).await.status(), 200);
    }
    assert_eq!(receive(&app, &tenant, &po, 10).await.status(), 200);
    let full = 1_000_000_000_000_000_i64;
    crate::helpers::fill_levels(&app, &tenant, None).await;
    assert_problem(receive(&app, &tenant, &po, 10).await, 422, "stock_limit_exceeded").await;
    assert_eq!(on_hand(&app, &tenant, &s).await, full);
    let order = json(app.get(&format!("/api/v1/purchase-orders/{id}"), &tenant.token).await).await;
    assert_eq!(order["data"]["lines"][0]["received"], 10, "{order}");
    let entries = json(app.get("/api/v1/ledger/entries", &tenant.token).await).await;
    assert_eq!(entries["data"].as_array().unwrap().len(), 1, "only the first receipt was booked");
}

/// Vendor and warehouse changes are events, committed with the change: a
/// webhook or the live stream sees them; a refused change announces nothing.
#[tokio::test]
async fn vendor_and_warehouse_changes_are_events() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let t = tenant.token.as_str();
    let warehouse =
        json(app.post("/api/v1/warehouses", t, json!({"code": "MAIN", "name": "Main"})).await).await;
    let res = app.post("/api/v1/warehouses", t, json!({"code": "MAIN", "name": "Again"})).await;
    assert_problem(res, 409, "conflict").await;
    let vendor = json(app.post("/api/v1/vendors", t, json!({"name": "Acme", "currency": "EUR"})).await).await;
    let id = vendor["data"]["id"].as_str().unwrap();
    let path = format!("/api/v1/vendors/{id}");
    let res = app.send_json(Method::PATCH, &path, Some(t), json!({"active": false})).await;
    assert_eq!(res.status(), 200);
    let res = app.client.delete(format!("{}{path}", app.base)).bearer_auth(t).send().await.unwrap();
    assert_eq!(res.status(), 204);

    let events = SystemScope
        .find::<entity::event::Entity>()
        .filter(entity::event::Column::TenantId.eq(tenant.id))
        .all(&app.state.db)
        .await
        .unwrap();
    let of = |kind: &str| {
        events.iter().filter(|e| e.event_type == kind).map(|e| e.data.clone()).collect::<Vec<Value>>()
    };
    assert_eq!(
        of("warehouse.created"),
        [json!({"id": warehouse["data"]["id"], "code": "MAIN", "name": "Main"})]
    );
    assert_eq!(of("vendor.created"), [json!({"id": id, "name": "Acme", "currency": "EUR"})]);
    assert_eq!(of("vendor.updated"), [json!({"id": id, "name": "Acme", "active": false, "version": 2})]);
    assert_eq!(of("vendor.deleted"), [json!({"id": id, "name": "Acme"})]);
}

/// `expand` puts related objects in place, as Stripe's `expand[]` does: a
/// purchase order's vendor and its lines' products, a stock level's
/// product; left out, they are absent; an unknown name is a 400.
#[tokio::test]
async fn expand_puts_the_vendor_and_the_products_in_place() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = setup(&app, &tenant).await;
    let po = order(&app, &tenant, &s).await;
    let id = po["id"].as_str().unwrap();
    let plain = json(app.get(&format!("/api/v1/purchase-orders/{id}"), &tenant.token).await).await;
    assert!(plain["data"].get("vendor").is_none() && plain["data"]["lines"][0].get("product").is_none());
    let path = format!("/api/v1/purchase-orders/{id}?expand=vendor,lines.product");
    let full = json(app.get(&path, &tenant.token).await).await;
    assert_eq!(full["data"]["vendor"]["name"], "Acme Supplies", "{full}");
    assert_eq!(full["data"]["lines"][0]["product"]["sku"], "BOLT", "{full}");
    let list = json(app.get("/api/v1/purchase-orders?expand=vendor", &tenant.token).await).await;
    assert_eq!(list["data"][0]["vendor"]["id"], s.vendor.as_str(), "{list}");
    assert!(list["data"][0]["lines"][0].get("product").is_none());
    for bad in ["warehouse", "", "vendor,"] {
        let res = app.get(&format!("/api/v1/purchase-orders?expand={bad}"), &tenant.token).await;
        let body = assert_problem(res, 400, "invalid_query").await;
        assert_eq!(body["errors"][0]["field"], "expand", "{bad:?}");
    }

    let body =
        json!({"product_id": s.product, "warehouse_id": s.warehouse, "quantity": 5, "reason": "count"});
    assert_eq!(app.post("/api/v1/stock/adjustments", &tenant.token, body).await.status(), 200);
    let levels = json(app.get("/api/v1/stock-levels?expand=product", &tenant.token).await).await;
    assert_eq!(levels["data"][0]["product"]["name"], "Bolt", "{levels}");
    let levels = json(app.get("/api/v1/stock-levels", &tenant.token).await).await;
    assert!(levels["data"][0].get("product").is_none());
}
