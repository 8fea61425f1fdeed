//! Inventory over HTTP: products, stock, the ledger, and reservations that
//! never oversell under concurrent requests.

use nexus::platform::tenancy::SystemScope;
use std::collections::HashMap;

use reqwest::Method;
use sea_orm::{ColumnTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Tenant, TestApp, assert_problem, eventually, fill_levels, json, unique};

async fn product(app: &TestApp, tenant: &Tenant, sku: &str) -> String {
    let body = json!({"sku": sku, "name": format!("Product {sku}"), "unit_price": 1999, "currency": "EUR"});
    let res = app.post("/api/v1/products", &tenant.token, body).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    json(res).await["data"]["id"].as_str().unwrap().to_owned()
}

async fn warehouse(app: &TestApp, tenant: &Tenant, code: &str) -> String {
    let res = app.post("/api/v1/warehouses", &tenant.token, json!({"code": code, "name": code})).await;
    assert_eq!(res.status(), 201);
    json(res).await["data"]["id"].as_str().unwrap().to_owned()
}

async fn adjust(
    app: &TestApp,
    tenant: &Tenant,
    product: &str,
    warehouse: &str,
    quantity: i64,
) -> reqwest::Response {
    let body =
        json!({"product_id": product, "warehouse_id": warehouse, "quantity": quantity, "reason": "count"});
    app.post("/api/v1/stock/adjustments", &tenant.token, body).await
}

/// Every stock level equals the sum of its movements.
async fn assert_ledger(app: &TestApp, tenant: &Tenant) {
    let levels = SystemScope
        .find::<entity::stock_level::Entity>()
        .filter(entity::stock_level::Column::TenantId.eq(tenant.id))
        .all(&app.state.db)
        .await
        .unwrap();
    let movements = SystemScope
        .find::<entity::stock_movement::Entity>()
        .filter(entity::stock_movement::Column::TenantId.eq(tenant.id))
        .all(&app.state.db)
        .await
        .unwrap();
    let mut sums: HashMap<(Uuid, Uuid), (i64, i64)> = HashMap::new();
    for m in movements {
        let sum = sums.entry((m.product_id, m.warehouse_id)).or_default();
        sum.0 += m.quantity;
        sum.1 += m.reserved_delta;
    }
    for level in levels {
        let sum = sums.get(&(level.product_id, level.warehouse_id)).copied().unwrap_or_default();
        assert_eq!((level.on_hand, level.reserved), sum, "stock level differs from its ledger");
        assert!(level.on_hand >= level.reserved && level.reserved >= 0);
    }
}

async fn level(app: &TestApp, tenant: &Tenant, product: &str, warehouse: &str) -> Value {
    let path = format!("/api/v1/stock-levels?product_id={product}&warehouse_id={warehouse}");
    json(app.get(&path, &tenant.token).await).await["data"][0].clone()
}

#[tokio::test]
async fn products_are_tenant_scoped_versioned_and_validated() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.register().await, app.register().await);
    let id = product(&app, &a, "SKU-1").await;
    let dup = app
        .post(
            "/api/v1/products",
            &a.token,
            json!({"sku": "SKU-1", "name": "x", "unit_price": 1, "currency": "EUR"}),
        )
        .await;
    assert_problem(dup, 409, "conflict").await;
    // The same SKU in another tenant is another product.
    product(&app, &b, "SKU-1").await;
    let bad = json!({"sku": "", "name": "x", "unit_price": -1, "currency": "euro", "attributes": [1]});
    let body =
        assert_problem(app.post("/api/v1/products", &a.token, bad).await, 422, "validation_failed").await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 4);

    let res = app.get(&format!("/api/v1/products/{id}"), &a.token).await;
    assert_eq!(res.headers()["etag"], "\"1\"");
    let patch = |etag: &'static str| {
        app.request(Method::PATCH, &format!("/api/v1/products/{id}"), Some(&a.token))
            .header("if-match", etag)
            .json(&json!({"unit_price": 2499}))
            .send()
    };
    assert_eq!(json(patch("\"1\"").await.unwrap()).await["data"]["unit_price"], 2499);
    assert_problem(patch("\"1\"").await.unwrap(), 412, "precondition_failed").await;
    assert_problem(app.get(&format!("/api/v1/products/{id}"), &b.token).await, 404, "not_found").await;
    let list =
        json(app.get("/api/v1/products?sku=SKU-1&sort=-created_at&include=total", &a.token).await).await;
    assert_eq!(list["meta"]["total"], 1);
    assert_problem(app.get("/api/v1/products?sort=price", &a.token).await, 400, "invalid_query").await;
}

#[tokio::test]
async fn adjustments_and_transfers_keep_the_ledger_and_never_go_negative() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let (p, main, shop) = (
        product(&app, &tenant, "P").await,
        warehouse(&app, &tenant, "MAIN").await,
        warehouse(&app, &tenant, "SHOP").await,
    );
    assert_eq!(json(adjust(&app, &tenant, &p, &main, 10).await).await["data"]["on_hand"], 10);
    let refused =
        assert_problem(adjust(&app, &tenant, &p, &main, -11).await, 409, "insufficient_stock").await;
    assert!(refused["detail"].as_str().unwrap().contains('P'));
    let transfer =
        json!({"product_id": p, "from_warehouse_id": main, "to_warehouse_id": shop, "quantity": 4});
    assert_eq!(app.post("/api/v1/stock/transfers", &tenant.token, transfer).await.status(), 204);
    let too_much =
        json!({"product_id": p, "from_warehouse_id": main, "to_warehouse_id": shop, "quantity": 7});
    assert_problem(
        app.post("/api/v1/stock/transfers", &tenant.token, too_much).await,
        409,
        "insufficient_stock",
    )
    .await;
    assert_eq!(level(&app, &tenant, &p, &main).await["on_hand"], 6);
    assert_eq!(level(&app, &tenant, &p, &shop).await["on_hand"], 4);
    let movements =
        json(app.get(&format!("/api/v1/stock-movements?product_id={p}"), &tenant.token).await).await;
    let kinds: Vec<&str> =
        movements["data"].as_array().unwrap().iter().map(|m| m["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["transfer_in", "transfer_out", "adjustment"]);
    assert_ledger(&app, &tenant).await;
}

/// N concurrent reservations against stock K: exactly K succeed.
#[tokio::test]
async fn concurrent_reservations_never_oversell() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let (p, w) = (product(&app, &tenant, "HOT-ITEM").await, warehouse(&app, &tenant, "MAIN").await);
    adjust(&app, &tenant, &p, &w, 7).await;
    let mut requests = Vec::new();
    for n in 0..20 {
        let body = json!({"reference": format!("order-{n}"), "lines": [{"product_id": p, "warehouse_id": w, "quantity": 1}]});
        requests.push(tokio::spawn(
            app.request(Method::POST, "/api/v1/reservations", Some(&tenant.token)).json(&body).send(),
        ));
    }
    let (mut won, mut lost) = (0, 0);
    for request in requests {
        let res = request.await.unwrap().unwrap();
        match res.status().as_u16() {
            201 => won += 1,
            409 => {
                let body = assert_problem(res, 409, "insufficient_stock").await;
                assert!(body["detail"].as_str().unwrap().contains("HOT-ITEM"));
                lost += 1;
            }
            other => panic!("unexpected {other}: {}", res.text().await.unwrap()),
        }
    }
    assert_eq!((won, lost), (7, 13));
    let stock = level(&app, &tenant, &p, &w).await;
    assert_eq!((stock["reserved"].clone(), stock["available"].clone()), (json!(7), json!(0)));
    assert_ledger(&app, &tenant).await;
}

/// Reservations that arrive together are written together (one
/// transaction per batch), each still decided on its own: as if made one
/// after the other, whatever else shares its batch. A mix of winners,
/// reservations short of stock (all or nothing across two lines), unknown
/// and other tenants' products, an unknown warehouse, one reference sent
/// five times, and another tenant's reservations, all at once.
#[tokio::test]
async fn reservations_sent_together_are_written_together_each_decided_on_its_own() {
    let app = TestApp::spawn().await;
    let (tenant, other) = (app.register().await, app.register().await);
    let (hot, plenty, w) = (
        product(&app, &tenant, "HOT").await,
        product(&app, &tenant, "PLENTY").await,
        warehouse(&app, &tenant, "MAIN").await,
    );
    let (theirs, their_w) = (product(&app, &other, "THEIRS").await, warehouse(&app, &other, "MAIN").await);
    adjust(&app, &tenant, &hot, &w, 30).await;
    adjust(&app, &tenant, &plenty, &w, 1000).await;
    adjust(&app, &other, &theirs, &their_w, 10).await;
    let line = |p: &str, w: &str| json!({"product_id": p, "warehouse_id": w, "quantity": 1});
    let unknown = Uuid::now_v7().to_string();
    // (who, body, what it should get)
    let mut sent: Vec<(&Tenant, Value, &str)> = Vec::new();
    for i in 0..80 {
        let lines = if i < 20 { json!([line(&plenty, &w), line(&hot, &w)]) } else { json!([line(&hot, &w)]) };
        sent.push((&tenant, json!({"reference": format!("hot-{i}"), "lines": lines}), "hot"));
    }
    for i in 0..10 {
        let bad = [line(&unknown, &w), line(&theirs, &w), line(&plenty, &unknown)][i % 3].clone();
        let expected = if i % 3 == 2 { "no warehouse" } else { "no product" };
        sent.push((
            &tenant,
            json!({"reference": format!("bad-{i}"), "lines": [line(&plenty, &w), bad]}),
            expected,
        ));
    }
    for _ in 0..5 {
        sent.push((&tenant, json!({"reference": "same", "lines": [line(&plenty, &w)]}), "same"));
    }
    for i in 0..10 {
        sent.push((
            &other,
            json!({"reference": format!("hot-{i}"), "lines": [line(&theirs, &their_w)]}),
            "theirs",
        ));
    }
    let answers = futures_util::future::join_all(
        sent.iter().map(|(who, body, _)| app.post("/api/v1/reservations", &who.token, body.clone())),
    )
    .await;
    let (mut hot_won, mut hot_lost, mut plenty_won, mut same_ids) =
        (0, 0, 0, std::collections::HashSet::new());
    for ((_, body, expected), res) in sent.iter().zip(answers) {
        let status = res.status().as_u16();
        let answer = json(res).await;
        match (*expected, status) {
            ("hot", 201) => {
                hot_won += 1;
                plenty_won += body["lines"].as_array().unwrap().len() - 1;
                assert_eq!(answer["data"]["reference"], body["reference"]);
                assert_eq!(answer["data"]["lines"], body["lines"]);
            }
            ("hot", 409) => {
                assert_eq!(answer["code"], "insufficient_stock", "{answer}");
                assert!(answer["detail"].as_str().unwrap().contains("HOT"), "{answer}");
                hot_lost += 1;
            }
            ("no product" | "no warehouse", 404) => {
                assert_eq!(answer["detail"], format!("{} not found", &expected[3..]), "{answer}");
            }
            ("same", 201) => {
                same_ids.insert(answer["data"]["id"].as_str().unwrap().to_owned());
            }
            ("theirs", 201) => assert_eq!(answer["data"]["reference"], body["reference"]),
            (expected, status) => panic!("{body} ({expected}): {status} {answer}"),
        }
    }
    assert_eq!((hot_won, hot_lost), (30, 50), "the 30 units of HOT went to exactly 30 reservations");
    assert_eq!(same_ids.len(), 1, "one reference sent five times is one reservation");
    assert_eq!(level(&app, &tenant, &hot, &w).await["reserved"], 30);
    assert_eq!(level(&app, &tenant, &plenty, &w).await["reserved"], plenty_won + 1, "all or nothing");
    assert_eq!(level(&app, &other, &theirs, &their_w).await["reserved"], 10);
    assert_ledger(&app, &tenant).await;
    assert_ledger(&app, &other).await;
    // One event and one expiry job for each reservation held, none for the others.
    assert_eq!(app.events(tenant.id, "stock.reserved").await.len(), 31);
    assert_eq!(app.events(other.id, "stock.reserved").await.len(), 10);
    let expiries = app.jobs(tenant.id, "inventory.reservation_expiry").await;
    assert_eq!(expiries.len(), 31);
    let held: std::collections::HashSet<Uuid> = SystemScope
        .find::<entity::reservation::Entity>()
        .filter(entity::reservation::Column::TenantId.eq(tenant.id))
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(held.len(), 31, "no row is left of a reservation refused");
    for job in expiries {
        assert!(held.contains(&Uuid::parse_str(job.payload["reservation_id"].as_str().unwrap()).unwrap()));
    }
    // Written together: the reservations' movements share fewer commit
    // times than there are reservations.
    let movements = SystemScope
        .find::<entity::stock_movement::Entity>()
        .filter(entity::stock_movement::Column::TenantId.eq(tenant.id))
        .filter(entity::stock_movement::Column::Kind.eq("reservation"))
        .all(&app.state.db)
        .await
        .unwrap();
    let times: std::collections::HashSet<_> = movements.iter().map(|m| m.created_at).collect();
    assert!(times.len() < 31, "31 reservations were written in {} transactions: none together", times.len());
}

/// Concurrent first reservations of one reference hold the stock once and
/// all answer with that one reservation.
#[tokio::test]
async fn concurrent_reservations_of_one_reference_hold_it_once() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let (p, w) = (product(&app, &tenant, "SAME").await, warehouse(&app, &tenant, "MAIN").await);
    adjust(&app, &tenant, &p, &w, 7).await;
    let body =
        json!({"reference": "order-1", "lines": [{"product_id": p, "warehouse_id": w, "quantity": 2}]});
    let requests: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(
                app.request(Method::POST, "/api/v1/reservations", Some(&tenant.token)).json(&body).send(),
            )
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for request in requests {
        let res = request.await.unwrap().unwrap();
        assert_eq!(res.status(), 201);
        ids.insert(json(res).await["data"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "one reservation: {ids:?}");
    assert_eq!(level(&app, &tenant, &p, &w).await["reserved"], 2);
    assert_ledger(&app, &tenant).await;
}

#[tokio::test]
async fn reservations_are_all_or_nothing_idempotent_and_end_once() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let (a, b, w) = (
        product(&app, &tenant, "A").await,
        product(&app, &tenant, "B").await,
        warehouse(&app, &tenant, "MAIN").await,
    );
    adjust(&app, &tenant, &a, &w, 5).await;
    adjust(&app, &tenant, &b, &w, 1).await;
    let lines = |qb: i64| json!([{"product_id": a, "warehouse_id": w, "quantity": 2}, {"product_id": b, "warehouse_id": w, "quantity": qb}]);
    // The second line cannot be served: nothing is held.
    let res =
        app.post("/api/v1/reservations", &tenant.token, json!({"reference": "o-1", "lines": lines(2)})).await;
    let body = assert_problem(res, 409, "insufficient_stock").await;
    assert!(body["detail"].as_str().unwrap().contains(" B "), "{body}");
    assert_eq!(level(&app, &tenant, &a, &w).await["reserved"], 0);

    let first = json(
        app.post("/api/v1/reservations", &tenant.token, json!({"reference": "o-1", "lines": lines(1)})).await,
    )
    .await;
    let again = json(
        app.post("/api/v1/reservations", &tenant.token, json!({"reference": "o-1", "lines": lines(1)})).await,
    )
    .await;
    assert_eq!(first["data"]["id"], again["data"]["id"], "reserving again is idempotent");
    assert_eq!(level(&app, &tenant, &a, &w).await["reserved"], 2);
    let other =
        app.post("/api/v1/reservations", &tenant.token, json!({"reference": "o-1", "lines": lines(0)})).await;
    assert_problem(other, 422, "validation_failed").await;

    let res = app.post("/api/v1/reservations/o-1/commit", &tenant.token, json!({})).await;
    assert_eq!(json(res).await["data"]["status"], "committed");
    let stock = level(&app, &tenant, &a, &w).await;
    assert_eq!((stock["on_hand"].clone(), stock["reserved"].clone()), (json!(3), json!(0)));
    assert_problem(
        app.post("/api/v1/reservations/o-1/release", &tenant.token, json!({})).await,
        409,
        "conflict",
    )
    .await;

    adjust(&app, &tenant, &b, &w, 1).await;
    let res =
        app.post("/api/v1/reservations", &tenant.token, json!({"reference": "o-2", "lines": lines(1)})).await;
    assert_eq!(res.status(), 201);
    for _ in 0..2 {
        let res = app.post("/api/v1/reservations/o-2/release", &tenant.token, json!({})).await;
        assert_eq!(json(res).await["data"]["status"], "released");
    }
    assert_eq!(level(&app, &tenant, &b, &w).await["available"], 1);
    assert_eq!(level(&app, &tenant, &a, &w).await["available"], 3);
    assert_ledger(&app, &tenant).await;
}

#[tokio::test]
async fn an_unused_reservation_expires_and_gives_its_stock_back() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let (p, w) = (product(&app, &tenant, "P").await, warehouse(&app, &tenant, "MAIN").await);
    adjust(&app, &tenant, &p, &w, 3).await;
    let body = json!({"reference": "cart-9", "lines": [{"product_id": p, "warehouse_id": w, "quantity": 3}], "expires_in_seconds": 1});
    assert_eq!(app.post("/api/v1/reservations", &tenant.token, body).await.status(), 201);
    assert_eq!(level(&app, &tenant, &p, &w).await["available"], 0);
    eventually(10, || async {
        let res = json(app.get("/api/v1/reservations/cart-9", &tenant.token).await).await;
        (res["data"]["status"] == "expired").then_some(())
    })
    .await;
    assert_eq!(level(&app, &tenant, &p, &w).await["available"], 3);
    assert_ledger(&app, &tenant).await;
}

#[tokio::test]
async fn the_module_key_gates_inventory() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let res = app
        .send_json(
            Method::PUT,
            "/api/v1/features/module.inventory",
            Some(&tenant.token),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let refused =
        assert_problem(app.get("/api/v1/products", &tenant.token).await, 403, "feature_disabled").await;
    assert!(refused["detail"].as_str().unwrap().contains("module.inventory"));
    let (_, viewer) = app.user_with_roles(&tenant, &["viewer"]).await;
    let sku = unique("S");
    let body = json!({"sku": sku, "name": "x", "unit_price": 1, "currency": "EUR"});
    assert_problem(app.post("/api/v1/products", &viewer, body).await, 403, "forbidden").await;
}

#[tokio::test]
async fn reorder_points_drive_recommendations_and_stock_low() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let (p, w) = (product(&app, &tenant, "LOW").await, warehouse(&app, &tenant, "MAIN").await);
    let vendor =
        json(app.post("/api/v1/vendors", &tenant.token, json!({"name": "V", "currency": "EUR"})).await).await;
    let vendor_id = vendor["data"]["id"].as_str().unwrap();
    let res = app
        .send_json(
            Method::PATCH,
            &format!("/api/v1/products/{p}"),
            Some(&tenant.token),
            json!({"preferred_vendor_id": vendor_id}),
        )
        .await;
    assert_eq!(res.status(), 200);
    adjust(&app, &tenant, &p, &w, 12).await;
    let path = format!("/api/v1/stock-levels/{p}/{w}/reorder");
    let res = app.send_json(Method::PUT, &path, Some(&tenant.token), json!({"reorder_point": 10})).await;
    assert_eq!(json(res).await["data"]["reorder_point"], 10);
    let empty = json(app.get("/api/v1/inventory/reorder-recommendations", &tenant.token).await).await;
    assert_eq!(empty["data"], json!([]));
    // Falling below the point: one stock.low, and a recommendation.
    adjust(&app, &tenant, &p, &w, -5).await;
    adjust(&app, &tenant, &p, &w, -1).await;
    let found = json(app.get("/api/v1/inventory/reorder-recommendations", &tenant.token).await).await;
    let rec = &found["data"][0];
    assert_eq!((rec["available"].clone(), rec["suggested_quantity"].clone()), (json!(6), json!(14)));
    assert_eq!(rec["preferred_vendor_id"], vendor_id);
    assert_eq!(
        app.events(tenant.id, "stock.low").await.len(),
        1,
        "announced when crossing, not on every change below"
    );
    // The weekly scan is queued once, whoever asks.
    let scans = || {
        SystemScope
            .find::<entity::job::Entity>()
            .filter(entity::job::Column::Kind.eq("inventory.reorder_scan"))
            .all(&app.state.db)
    };
    assert_eq!(scans().await.unwrap().len(), 1);
    nexus::modules::inventory::service::schedule_reorder_scan(&app.state.db, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(scans().await.unwrap().len(), 1);
}

#[tokio::test]
async fn bulk_products_answer_per_item_and_need_their_feature() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let items = json!({"items": [
        {"sku": "B-1", "name": "One", "unit_price": 100, "currency": "EUR"},
        {"sku": "B-1", "name": "Duplicate", "unit_price": 100, "currency": "EUR"},
        {"sku": "B-3", "name": "Bad price", "unit_price": -1, "currency": "EUR"},
        {"sku": "B-4", "name": "Four", "unit_price": 400, "currency": "EUR"}
    ]});
    // feature.bulk-operations is off by default.
    let res = app.post("/api/v1/bulk/products", &tenant.token, items.clone()).await;
    assert_problem(res, 403, "feature_disabled").await;
    let on = json!({"enabled": true});
    app.send_json(Method::PUT, "/api/v1/features/feature.bulk-operations", Some(&tenant.token), on).await;

    let body = json(app.post("/api/v1/bulk/products", &tenant.token, items).await).await;
    let statuses: Vec<i64> =
        body["data"].as_array().unwrap().iter().map(|r| r["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [201, 409, 422, 201], "{body}");
    assert_eq!(body["data"][2]["error"]["errors"][0]["field"], "unit_price");
    assert_eq!(body["meta"], json!({"succeeded": 2, "failed": 2}));
    assert_eq!(
        json(app.get("/api/v1/products?include=total", &tenant.token).await).await["meta"]["total"],
        2
    );

    let too_many = json!({"items": vec![json!({}); 1001]});
    assert_problem(
        app.post("/api/v1/bulk/products", &tenant.token, too_many).await,
        422,
        "validation_failed",
    )
    .await;
    let (_, user) = app.user_with_roles(&tenant, &["user"]).await;
    let one = json!({"items": [{"sku": "U", "name": "U", "unit_price": 1, "currency": "EUR"}]});
    assert_problem(app.post("/api/v1/bulk/products", &user, one).await, 403, "forbidden").await;
}

#[tokio::test]
async fn stock_lists_sort_and_filter_by_their_fields() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let (a, b) = (product(&app, &tenant, "A").await, product(&app, &tenant, "B").await);
    let (main, spare) = (warehouse(&app, &tenant, "MAIN").await, warehouse(&app, &tenant, "SPARE").await);
    adjust(&app, &tenant, &a, &main, 5).await;
    adjust(&app, &tenant, &b, &main, 9).await;
    adjust(&app, &tenant, &a, &spare, 1).await;
    let body =
        json!({"reference": "order-9", "lines": [{"product_id": b, "warehouse_id": main, "quantity": 2}]});
    assert_eq!(app.post("/api/v1/reservations", &tenant.token, body).await.status(), 201);
    let (app, token) = (&app, &tenant.token);
    let list = |path: String| async move { json(app.get(&path, token).await).await };
    let field = |list: &Value, name: &str| -> Vec<Value> {
        list["data"].as_array().unwrap().iter().map(|v| v[name].clone()).collect()
    };

    let codes = list("/api/v1/warehouses?sort=-code".into()).await;
    assert_eq!(field(&codes, "code"), [json!("SPARE"), json!("MAIN")]);
    let levels = list("/api/v1/stock-levels?sort=-on_hand".into()).await;
    assert_eq!(field(&levels, "on_hand"), [json!(9), json!(5), json!(1)]);
    let levels = list(format!("/api/v1/stock-levels?sort=reserved&warehouse_id={main}")).await;
    assert_eq!(field(&levels, "reserved"), [json!(0), json!(2)]);

    let oldest = list("/api/v1/stock-movements?sort=created_at".into()).await;
    assert_eq!(field(&oldest, "quantity")[..3], [json!(5), json!(9), json!(1)]);
    let held = list("/api/v1/stock-movements?kind=reservation".into()).await;
    assert_eq!(field(&held, "reference"), [json!("order-9")]);
    let by_reference = list("/api/v1/stock-movements?reference=order-9".into()).await;
    assert_eq!(field(&by_reference, "kind"), [json!("reservation")]);
    for bad in
        ["/api/v1/stock-movements?kind=theft", "/api/v1/stock-levels?sort=sku", "/api/v1/warehouses?sort=-id"]
    {
        let res = app.get(bad, token).await;
        assert_problem(res, 400, "invalid_query").await;
    }
}

/// Quantities are bounded: a request moves at most 1,000,000,000 units and a
/// level holds at most 10^15, so no sum overflows into a 500.
#[tokio::test]
async fn quantities_beyond_their_bounds_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let p = product(&app, &tenant, &unique("SKU")).await;
    let (a, b) = (warehouse(&app, &tenant, "A").await, warehouse(&app, &tenant, "B").await);
    assert_eq!(adjust(&app, &tenant, &p, &a, 5).await.status(), 200);
    for quantity in [i64::MAX, i64::MIN, 1_000_000_001, 0] {
        let body =
            assert_problem(adjust(&app, &tenant, &p, &a, quantity).await, 422, "validation_failed").await;
        assert_eq!(body["errors"][0]["field"], "quantity", "{body}");
    }
    let res = app
        .post(
            "/api/v1/reservations",
            &tenant.token,
            json!({"reference": "r", "lines": [{"product_id": p, "warehouse_id": a, "quantity": i64::MAX}]}),
        )
        .await;
    assert_problem(res, 422, "validation_failed").await;

    // A level at its bound takes nothing more: adjustment, transfer in, receipt.
    let full = 1_000_000_000_000_000_i64;
    fill_levels(&app, &tenant, None).await;
    let body = assert_problem(adjust(&app, &tenant, &p, &a, 1).await, 422, "stock_limit_exceeded").await;
    assert!(body["detail"].as_str().unwrap().contains("1000000000000000"), "{body}");
    assert_eq!(adjust(&app, &tenant, &p, &b, 10).await.status(), 200);
    fill_levels(&app, &tenant, Some(Uuid::parse_str(&a).unwrap())).await;
    let transfer = json!({"product_id": p, "from_warehouse_id": b, "to_warehouse_id": a, "quantity": 5});
    assert_problem(
        app.post("/api/v1/stock/transfers", &tenant.token, transfer).await,
        422,
        "stock_limit_exceeded",
    )
    .await;
    assert_eq!(level(&app, &tenant, &p, &b).await["on_hand"], 10, "the transfer changed nothing");
    assert_eq!(level(&app, &tenant, &p, &a).await["on_hand"], full);
}

/// Reservations of the same levels in opposite line orders, and transfers
/// in opposite directions, run concurrently: levels are locked in one order,
/// so none deadlocks (which PostgreSQL would abort as a 500).
#[tokio::test]
async fn opposite_orders_and_directions_never_deadlock() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let (p1, p2) = (product(&app, &tenant, &unique("P")).await, product(&app, &tenant, &unique("P")).await);
    let (a, b) = (warehouse(&app, &tenant, "A").await, warehouse(&app, &tenant, "B").await);
    for (p, w) in [(&p1, &a), (&p2, &a), (&p1, &b), (&p2, &b)] {
        assert_eq!(adjust(&app, &tenant, p, w, 1000).await.status(), 200);
    }
    let line = |p: &str, w: &str| json!({"product_id": p, "warehouse_id": w, "quantity": 1});
    let mut requests = Vec::new();
    for i in 0..12 {
        let lines = if i % 2 == 0 {
            json!([line(&p1, &a), line(&p2, &a)])
        } else {
            json!([line(&p2, &a), line(&p1, &a)])
        };
        requests.push(("/api/v1/reservations", json!({"reference": format!("r{i}"), "lines": lines})));
        let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let transfer =
            json!({"product_id": p1, "from_warehouse_id": from, "to_warehouse_id": to, "quantity": 1});
        requests.push(("/api/v1/stock/transfers", transfer));
    }
    let answers = futures_util::future::join_all(
        requests.iter().map(|(path, body)| app.post(path, &tenant.token, body.clone())),
    )
    .await;
    for res in answers {
        assert!(res.status().is_success(), "{}: {}", res.status(), res.text().await.unwrap());
    }
    assert_eq!(level(&app, &tenant, &p1, &a).await["reserved"], 12);
    assert_ledger(&app, &tenant).await;
}

#[tokio::test]
async fn a_warehouse_is_read_by_id_in_its_tenant_only() {
    let app = TestApp::spawn().await;
    let (tenant, other) = (app.register().await, app.register().await);
    let id = warehouse(&app, &tenant, "MAIN").await;
    let (_, viewer) = app.user_with_roles(&tenant, &["viewer"]).await;
    let body = json(app.get(&format!("/api/v1/warehouses/{id}"), &viewer).await).await;
    assert_eq!(
        (body["data"]["id"].as_str(), body["data"]["code"].as_str()),
        (Some(id.as_str()), Some("MAIN"))
    );
    // Another tenant's warehouse answers exactly as a missing one.
    let theirs = app.get(&format!("/api/v1/warehouses/{id}"), &other.token).await;
    assert_problem(theirs, 404, "not_found").await;
    let missing = app.get(&format!("/api/v1/warehouses/{}", Uuid::now_v7()), &tenant.token).await;
    assert_problem(missing, 404, "not_found").await;
}
