//! Orders over HTTP and GraphQL: the reserve → pay → fulfil saga run by the
//! job workers, its compensations, and the stock it leaves behind.

use nexus::platform::tenancy::SystemScope;

use reqwest::Method;
use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
use serde_json::{Value, json};

use crate::helpers::{Tenant, TestApp, assert_problem, eventually, json};

struct Shop {
    warehouse: String,
    product: String,
    customer: String,
}

/// A warehouse, a product `sku` with `stock` units in it, and a customer.
async fn shop(app: &TestApp, tenant: &Tenant, sku: &str, stock: i64) -> Shop {
    let id = |v: Value| v["data"]["id"].as_str().unwrap().to_owned();
    let warehouse = id(json(
        app.post("/api/v1/warehouses", &tenant.token, json!({"code": "MAIN", "name": "Main"})).await,
    )
    .await);
    let product = id(json(
        app.post(
            "/api/v1/products",
            &tenant.token,
            json!({"sku": sku, "name": "T-shirt", "unit_price": 2499, "currency": "EUR"}),
        )
        .await,
    )
    .await);
    if stock > 0 {
        let body =
            json!({"product_id": product, "warehouse_id": warehouse, "quantity": stock, "reason": "count"});
        assert_eq!(app.post("/api/v1/stock/adjustments", &tenant.token, body).await.status(), 200);
    }
    let res = app
        .post(
            "/api/v1/customers",
            &tenant.token,
            json!({"email": "ada@example.com", "name": "Ada Lovelace", "external_id": "C-1"}),
        )
        .await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    Shop { warehouse, product, customer: id(json(res).await) }
}

fn order_body(s: &Shop, sku: &str, quantity: i64) -> Value {
    json!({"customer_id": s.customer, "warehouse_id": s.warehouse, "currency": "EUR", "channel": "web",
        "lines": [{"sku": sku, "quantity": quantity, "unit_price": 2499}]})
}

async fn place(app: &TestApp, token: &str, body: Value) -> Value {
    let res = app.post("/api/v1/orders", token, body).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    json(res).await["data"].clone()
}

async fn get_order(app: &TestApp, tenant: &Tenant, id: &str) -> Value {
    json(app.get(&format!("/api/v1/orders/{id}"), &tenant.token).await).await["data"].clone()
}

/// The order once it reached `status` (at most 10 s).
async fn reaches(app: &TestApp, tenant: &Tenant, id: &str, status: &str) -> Value {
    eventually(10, || async {
        let order = get_order(app, tenant, id).await;
        (order["status"] == status).then_some(order)
    })
    .await
}

async fn level(app: &TestApp, tenant: &Tenant, s: &Shop) -> (i64, i64) {
    let path = format!("/api/v1/stock-levels?product_id={}&warehouse_id={}", s.product, s.warehouse);
    let body = json(app.get(&path, &tenant.token).await).await;
    let field = |name: &str| body["data"][0][name].as_i64().unwrap_or_else(|| panic!("no {name} in {body}"));
    (field("on_hand"), field("reserved"))
}

/// The types of the events of `tenant`, oldest first, among `order.*`
/// but `order.notification`.
async fn order_events(app: &TestApp, tenant: &Tenant) -> Vec<String> {
    use entity::event::{Column, Entity};
    SystemScope
        .find::<Entity>()
        .filter(Column::TenantId.eq(tenant.id))
        .filter(Column::EventType.starts_with("order."))
        // The customer's notifications (tests/it/notifications.rs) are not steps.
        .filter(Column::EventType.ne("order.notification"))
        .order_by_asc(Column::Id)
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

fn statuses(order: &Value) -> Vec<String> {
    order["history"].as_array().unwrap().iter().map(|t| t["to"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn an_order_goes_through_the_saga_to_completed() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "TSHIRT-RED-M", 10).await;
    let mut body = order_body(&s, "TSHIRT-RED-M", 2);
    body["external_order_id"] = json!("1042");
    body["lines"]
        .as_array_mut()
        .unwrap()
        .push(json!({"product_id": s.product, "quantity": 1, "unit_price": 100}));
    let placed = place(&app, &tenant.token, body.clone()).await;
    assert_eq!(placed["status"], "pending");
    assert_eq!(placed["total"], 2 * 2499 + 100);
    assert_eq!(placed["lines"][0]["sku"], "TSHIRT-RED-M");
    assert_eq!(placed["lines"][1]["product_id"], s.product.as_str());
    assert_eq!(placed["lines"][0]["line_total"], 4998);
    let id = placed["id"].as_str().unwrap();

    let done = reaches(&app, &tenant, id, "completed").await;
    assert_eq!(statuses(&done), ["pending", "reserved", "paid", "fulfilled", "completed"]);
    assert_eq!(done["history"][1]["from"], "pending");
    assert_eq!(done["payments"][0]["status"], "captured");
    assert_eq!(done["payments"][0]["amount"], 2 * 2499 + 100);
    assert!(done["payments"][0]["gateway_reference"].as_str().unwrap().starts_with("sim_"));
    assert_eq!(done["failure_reason"], Value::Null);
    // Three units shipped: gone from on hand, nothing left reserved.
    assert_eq!(level(&app, &tenant, &s).await, (7, 0));
    app.drained().await;
    assert_eq!(
        order_events(&app, &tenant).await,
        ["order.created", "order.reserved", "order.paid", "order.fulfilled", "order.completed"]
    );
    let reservation = json(app.get(&format!("/api/v1/reservations/order:{id}"), &tenant.token).await).await;
    assert_eq!(reservation["data"]["status"], "committed");

    // The external id is the tenant's: taken here, free elsewhere.
    assert_problem(app.post("/api/v1/orders", &tenant.token, body).await, 409, "conflict").await;

    // Lists: filters and sorts.
    let list = json(app.get("/api/v1/orders?external_order_id=1042", &tenant.token).await).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["lines"].as_array().unwrap().len(), 2);
    let list = json(app.get("/api/v1/orders?status=pending", &tenant.token).await).await;
    assert_eq!(list["data"], json!([]));
    let path = format!("/api/v1/orders?customer_id={}&sort=-total&include=total", s.customer);
    assert_eq!(json(app.get(&path, &tenant.token).await).await["meta"]["total"], 1);
    let later = (chrono::Utc::now() + chrono::Duration::minutes(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let list = json(app.get(&format!("/api/v1/orders?created_after={later}"), &tenant.token).await).await;
    assert_eq!(list["data"], json!([]));
    let list = json(app.get(&format!("/api/v1/orders?created_before={later}"), &tenant.token).await).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_problem(app.get("/api/v1/orders?status=lost", &tenant.token).await, 400, "invalid_query").await;
    assert_problem(app.get("/api/v1/orders?sort=sku", &tenant.token).await, 400, "invalid_query").await;

    // Cancelling a completed order is refused, naming its state.
    let res = app.post(&format!("/api/v1/orders/{id}/cancel"), &tenant.token, json!({})).await;
    let refused = assert_problem(res, 409, "conflict").await;
    assert!(refused["detail"].as_str().unwrap().contains("completed"));
}

#[tokio::test]
async fn insufficient_stock_fails_the_order_naming_the_sku_and_leaves_stock_unchanged() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "MUG", 2).await;
    let placed = place(&app, &tenant.token, order_body(&s, "MUG", 3)).await;
    let failed = reaches(&app, &tenant, placed["id"].as_str().unwrap(), "failed").await;
    assert!(failed["failure_reason"].as_str().unwrap().contains("MUG"), "{failed}");
    assert_eq!(statuses(&failed), ["pending", "failed"]);
    assert_eq!(failed["payments"], json!([]));
    assert_eq!(level(&app, &tenant, &s).await, (2, 0));
    app.drained().await;
    assert_eq!(order_events(&app, &tenant).await, ["order.created", "order.failed"]);
}

#[tokio::test]
async fn a_declined_payment_releases_the_reservation() {
    let app = TestApp::spawn_adjusted(|f| f.merge(("modules.orders.simulated.success_rate", 0.0))).await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "LAMP", 5).await;
    let placed = place(&app, &tenant.token, order_body(&s, "LAMP", 2)).await;
    let failed = reaches(&app, &tenant, placed["id"].as_str().unwrap(), "failed").await;
    assert!(failed["failure_reason"].as_str().unwrap().starts_with("payment declined"), "{failed}");
    assert_eq!(statuses(&failed), ["pending", "reserved", "failed"]);
    assert_eq!(failed["payments"][0]["status"], "declined");
    assert_eq!(level(&app, &tenant, &s).await, (5, 0));
    let id = placed["id"].as_str().unwrap();
    let reservation = json(app.get(&format!("/api/v1/reservations/order:{id}"), &tenant.token).await).await;
    assert_eq!(reservation["data"]["status"], "released");
    app.drained().await;
    assert_eq!(order_events(&app, &tenant).await, ["order.created", "order.reserved", "order.failed"]);
}

#[tokio::test]
async fn cancel_compensates_the_steps_done() {
    // A slow gateway holds the saga at `reserved` long enough to cancel.
    let app = TestApp::spawn_adjusted(|f| f.merge(("modules.orders.simulated.delay_ms", 1500))).await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "DESK", 4).await;
    let placed = place(&app, &tenant.token, order_body(&s, "DESK", 3)).await;
    let id = placed["id"].as_str().unwrap();
    reaches(&app, &tenant, id, "reserved").await;
    assert_eq!(level(&app, &tenant, &s).await, (4, 3));

    let res = app
        .post(&format!("/api/v1/orders/{id}/cancel"), &tenant.token, json!({"reason": "changed mind"}))
        .await;
    assert_eq!(res.status(), 200);
    let cancelled = json(res).await["data"].clone();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["failure_reason"], "changed mind");
    assert_eq!(level(&app, &tenant, &s).await, (4, 0));
    // The charge that lands afterwards is given back.
    let voided = eventually(10, || async {
        let order = get_order(&app, &tenant, id).await;
        (order["payments"][0]["status"] == "voided").then_some(order)
    })
    .await;
    assert_eq!(voided["status"], "cancelled");
    assert_eq!(statuses(&voided), ["pending", "reserved", "cancelled"]);
    assert_eq!(level(&app, &tenant, &s).await, (4, 0));
    let res = app.post(&format!("/api/v1/orders/{id}/cancel"), &tenant.token, json!({})).await;
    assert_problem(res, 409, "conflict").await;
    app.drained().await;
    assert_eq!(order_events(&app, &tenant).await, ["order.created", "order.reserved", "order.cancelled"]);
}

/// A retried `POST /api/v1/orders` with the same Idempotency-Key replays
/// the first answer: one order, one saga, stock taken once.
#[tokio::test]
async fn a_retried_post_with_its_idempotency_key_places_one_order() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "KEY", 5).await;
    let send = || {
        app.request(Method::POST, "/api/v1/orders", Some(&tenant.token))
            .header("Idempotency-Key", "order-1042")
            .json(&order_body(&s, "KEY", 2))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);
    let first = json(first).await;
    let again = send().await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(json(again).await["data"]["id"], first["data"]["id"]);
    reaches(&app, &tenant, first["data"]["id"].as_str().unwrap(), "completed").await;
    let list = json(app.get("/api/v1/orders?include=total", &tenant.token).await).await;
    assert_eq!(list["meta"]["total"], 1);
    assert_eq!(level(&app, &tenant, &s).await, (3, 0));
}

#[tokio::test]
async fn running_a_step_again_changes_nothing() {
    use nexus::platform::jobs::{NewJob, enqueue};
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "BOWL", 5).await;
    let placed = place(&app, &tenant.token, order_body(&s, "BOWL", 2)).await;
    let id = placed["id"].as_str().unwrap();
    let done = reaches(&app, &tenant, id, "completed").await;
    app.drained().await;
    let events = order_events(&app, &tenant).await;
    // Every step again, as a retry or a second worker would run it.
    for kind in ["orders.reserve", "orders.pay", "orders.fulfil", "orders.complete"] {
        let job = NewJob::new(kind, json!({"order_id": id})).tenant(tenant.id);
        enqueue(&app.state.db, job).await.unwrap();
    }
    app.state.wakeup.wake();
    app.drained().await;
    let again = get_order(&app, &tenant, id).await;
    assert_eq!(again["history"], done["history"]);
    assert_eq!(again["payments"], done["payments"]);
    assert_eq!(order_events(&app, &tenant).await, events);
    assert_eq!(level(&app, &tenant, &s).await, (3, 0));
    let dead = SystemScope
        .find::<entity::job::Entity>()
        .filter(entity::job::Column::TenantId.eq(tenant.id))
        .filter(entity::job::Column::Status.eq("dead"))
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(dead.is_empty(), "{dead:?}");
}

#[tokio::test]
async fn a_reservation_that_expired_before_shipping_fails_the_order_and_voids_the_payment() {
    // The stock is held for 1 s; the payment takes 1.5 s.
    let app = TestApp::spawn_adjusted(|f| {
        f.merge(("modules.orders.reservation_ttl_seconds", 1))
            .merge(("modules.orders.simulated.delay_ms", 1500))
    })
    .await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "VASE", 3).await;
    let placed = place(&app, &tenant.token, order_body(&s, "VASE", 1)).await;
    let id = placed["id"].as_str().unwrap();
    let failed = reaches(&app, &tenant, id, "failed").await;
    assert!(failed["failure_reason"].as_str().unwrap().starts_with("could not ship"), "{failed}");
    assert_eq!(statuses(&failed), ["pending", "reserved", "paid", "failed"]);
    let voided = eventually(10, || async {
        let order = get_order(&app, &tenant, id).await;
        (order["payments"][0]["status"] == "voided").then_some(order)
    })
    .await;
    assert_eq!(voided["payments"].as_array().unwrap().len(), 1);
    assert_eq!(level(&app, &tenant, &s).await, (3, 0));
}

/// A worker that sent a charge and died before it recorded the answer
/// leaves a `pending` payment; once the order has ended, the pay step asks
/// the gateway again (the same key: the same charge) and gives the money back.
#[tokio::test]
async fn an_unanswered_charge_of_an_ended_order_is_settled_and_voided() {
    use nexus::platform::jobs::{NewJob, enqueue};
    use sea_orm::{ActiveValue::Set, EntityTrait};
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "RUG", 1).await;
    let placed = place(&app, &tenant.token, order_body(&s, "RUG", 2)).await;
    let id = placed["id"].as_str().unwrap();
    reaches(&app, &tenant, id, "failed").await;
    let order_id: uuid::Uuid = id.parse().unwrap();
    let now = chrono::Utc::now();
    entity::order_payment::Entity::insert(entity::order_payment::ActiveModel {
        id: Set(uuid::Uuid::now_v7()),
        tenant_id: Set(tenant.id),
        order_id: Set(order_id),
        gateway: Set("simulated".into()),
        gateway_reference: Set(None),
        idempotency_key: Set(format!("order:{id}:charge")),
        amount: Set(4998),
        currency: Set("EUR".into()),
        status: Set("pending".into()),
        failure_reason: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_without_returning(&app.state.db)
    .await
    .unwrap();
    enqueue(&app.state.db, NewJob::new("orders.pay", json!({"order_id": id})).tenant(tenant.id))
        .await
        .unwrap();
    app.state.wakeup.wake();
    let settled = eventually(10, || async {
        let order = get_order(&app, &tenant, id).await;
        (order["payments"][0]["status"] == "voided").then_some(order)
    })
    .await;
    assert!(settled["payments"][0]["gateway_reference"].as_str().unwrap().starts_with("sim_"));
    assert_eq!(settled["status"], "failed");
    assert_eq!(statuses(&settled), ["pending", "failed"]);
}

#[tokio::test]
async fn concurrent_orders_on_one_hot_sku_never_oversell() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "HOT", 10).await;
    // A second instance over the same database: two sets of workers race
    // for the saga's jobs.
    let _second = app.sibling().await;
    let mut placing = Vec::new();
    for _ in 0..20 {
        let (app, token, body) = (&app, tenant.token.clone(), order_body(&s, "HOT", 1));
        placing.push(async move { place(app, &token, body).await["id"].as_str().unwrap().to_owned() });
    }
    let ids = futures_util::future::join_all(placing).await;
    let mut outcomes = Vec::new();
    for id in &ids {
        let status = eventually(20, || async {
            let order = get_order(&app, &tenant, id).await;
            let status = order["status"].as_str().unwrap().to_owned();
            ["completed", "failed"].contains(&status.as_str()).then_some(status)
        })
        .await;
        outcomes.push(status);
    }
    let completed = outcomes.iter().filter(|s| *s == "completed").count();
    assert_eq!((completed, outcomes.len() - completed), (10, 10), "{outcomes:?}");
    assert_eq!(level(&app, &tenant, &s).await, (0, 0));
}

/// Orders waiting together go through each step together (a transaction
/// a batch), each still decided on its own: 30 orders of one unit wait for
/// the workers with stock for 20 and a gateway that declines about half
/// the payments. Each ends completed, failed for want of stock or failed
/// declined, with its whole history and one job a step; never more are
/// completed than there was stock, which they ship, the rest given back.
#[tokio::test]
async fn orders_waiting_together_go_through_each_step_together_each_decided_on_its_own() {
    use sea_orm::PaginatorTrait;
    let app = TestApp::spawn_adjusted(|f| f.merge(("jobs.run_in_server", false))).await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "BATCHED", 20).await;
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(
            place(&app, &tenant.token, order_body(&s, "BATCHED", 1)).await["id"].as_str().unwrap().to_owned(),
        );
    }
    // The workers of a second instance find all 30 due at once.
    let workers = app.sibling_adjusted(|f| f.merge(("modules.orders.simulated.success_rate", 0.5))).await;
    let (mut completed, mut declined, mut out_of_stock) = (0, 0, 0);
    for id in &ids {
        let order = eventually(20, || async {
            let order = get_order(&app, &tenant, id).await;
            ["completed", "failed"].contains(&order["status"].as_str().unwrap()).then_some(order)
        })
        .await;
        let reason = order["failure_reason"].as_str().unwrap_or_default();
        if order["status"] == "completed" {
            completed += 1;
            assert_eq!(statuses(&order), ["pending", "reserved", "paid", "fulfilled", "completed"]);
            assert_eq!(order["payments"][0]["status"], "captured", "{order}");
        } else if reason.starts_with("payment declined") {
            declined += 1;
            assert_eq!(statuses(&order), ["pending", "reserved", "failed"]);
            assert_eq!(order["payments"][0]["status"], "declined", "{order}");
        } else {
            out_of_stock += 1;
            assert_eq!(statuses(&order), ["pending", "failed"]);
            assert!(reason.contains("BATCHED"), "{order}");
            assert_eq!(order["payments"], json!([]), "{order}");
        }
    }
    // Stock given back by a declined order may go to one not yet reserved.
    assert!(completed > 0 && declined > 0 && completed <= 20, "{completed} {declined} {out_of_stock}");
    assert_eq!(level(&app, &tenant, &s).await, (20 - completed, 0));
    workers.drained().await;
    let jobs_of = |kind: &'static str| {
        SystemScope
            .find::<entity::job::Entity>()
            .filter(entity::job::Column::TenantId.eq(tenant.id))
            .filter(entity::job::Column::Kind.eq(kind))
    };
    let paid = completed + declined;
    for (kind, count) in [
        ("orders.reserve", 30),
        ("orders.pay", paid),
        ("orders.fulfil", completed),
        ("orders.complete", completed),
    ] {
        let jobs = jobs_of(kind).all(&app.state.db).await.unwrap();
        assert_eq!(jobs.len() as i64, count, "{kind}");
        assert!(jobs.iter().all(|j| j.status == "completed" && j.attempts == 1), "{kind}: {jobs:?}");
    }
    // Written together: the `order.reserved` events came in fewer lots than
    // orders (a lot's events share their time).
    let reserved = nexus::platform::tenancy::TenantScope::new(tenant.id)
        .find::<entity::event::Entity>()
        .filter(entity::event::Column::EventType.eq("order.reserved"))
        .all(&app.state.db)
        .await
        .unwrap();
    let lots: std::collections::HashSet<_> = reserved.iter().map(|e| e.occurred_at).collect();
    assert_eq!(reserved.len() as i64, paid);
    assert!(lots.len() < reserved.len(), "each reservation was written on its own");
    // Their notifications too: one job sends those of every order of a lot
    // (two an order: log and webhook, email being off).
    let notify = jobs_of("orders.notify").all(&app.state.db).await.unwrap();
    let largest = notify.iter().filter_map(|j| j.payload["notification_ids"].as_array().map(Vec::len)).max();
    assert!(largest > Some(2), "each order's notifications had a job of their own: {largest:?}");
    let voids = jobs_of("orders.void_payment").count(&app.state.db).await.unwrap();
    assert_eq!(voids, 0, "no payment was taken to be voided");
}

#[tokio::test]
async fn another_tenants_orders_and_customers_are_not_found() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "SOCK", 1).await;
    let placed = place(&app, &tenant.token, order_body(&s, "SOCK", 1)).await;
    let id = placed["id"].as_str().unwrap();
    let other = app.register().await;
    assert_problem(app.get(&format!("/api/v1/orders/{id}"), &other.token).await, 404, "not_found").await;
    let res = app.post(&format!("/api/v1/orders/{id}/cancel"), &other.token, json!({})).await;
    assert_problem(res, 404, "not_found").await;
    let path = format!("/api/v1/customers/{}", s.customer);
    assert_problem(app.get(&path, &other.token).await, 404, "not_found").await;
    assert_eq!(json(app.get("/api/v1/orders", &other.token).await).await["data"], json!([]));
    // Nor may another tenant order with this tenant's customer or products.
    let other_shop = shop(&app, &other, "SOCK", 1).await;
    let mut body = order_body(&other_shop, "SOCK", 1);
    body["customer_id"] = json!(s.customer);
    let refused =
        assert_problem(app.post("/api/v1/orders", &other.token, body).await, 422, "validation_failed").await;
    assert_eq!(refused["errors"][0]["field"], "customer_id");
    let mut body = order_body(&other_shop, "SOCK", 1);
    body["lines"] = json!([{"product_id": s.product, "quantity": 1, "unit_price": 1}]);
    let refused =
        assert_problem(app.post("/api/v1/orders", &other.token, body).await, 422, "validation_failed").await;
    assert_eq!(refused["errors"][0]["field"], "lines[0].product_id");
}

#[tokio::test]
async fn invalid_orders_and_customers_name_their_fields_and_change_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "PEN", 5).await;
    let body = json!({"customer_id": s.customer, "warehouse_id": s.warehouse, "currency": "euro",
        "lines": [{"sku": "PEN", "quantity": 0, "unit_price": -1}, {"quantity": 1, "unit_price": 1}]});
    let refused =
        assert_problem(app.post("/api/v1/orders", &tenant.token, body).await, 422, "validation_failed").await;
    let fields: Vec<&str> =
        refused["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    for field in ["currency", "lines[0].quantity", "lines[0].unit_price", "lines[1]"] {
        assert!(fields.contains(&field), "{field} not in {fields:?}");
    }
    // An unknown SKU names its line.
    let mut body = order_body(&s, "PEN", 1);
    body["lines"].as_array_mut().unwrap().push(json!({"sku": "NOPE", "quantity": 1, "unit_price": 1}));
    let refused =
        assert_problem(app.post("/api/v1/orders", &tenant.token, body).await, 422, "validation_failed").await;
    assert_eq!(refused["errors"][0]["field"], "lines[1].sku");
    // A total beyond i64 is refused, not wrapped.
    let mut body = order_body(&s, "PEN", 1_000_000_000);
    body["lines"][0]["unit_price"] = json!(i64::MAX / 2);
    let refused =
        assert_problem(app.post("/api/v1/orders", &tenant.token, body).await, 422, "validation_failed").await;
    assert_eq!(refused["errors"][0]["field"], "lines[0]");
    let mut body = order_body(&s, "PEN", 1);
    body["warehouse_id"] = json!(uuid::Uuid::now_v7());
    let refused =
        assert_problem(app.post("/api/v1/orders", &tenant.token, body).await, 422, "validation_failed").await;
    assert_eq!(refused["errors"][0]["field"], "warehouse_id");
    assert_eq!(json(app.get("/api/v1/orders", &tenant.token).await).await["data"], json!([]));

    let body = json!({"email": "not-an-email", "name": " "});
    let refused =
        assert_problem(app.post("/api/v1/customers", &tenant.token, body).await, 422, "validation_failed")
            .await;
    let fields: Vec<&str> =
        refused["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["email", "name"]);
    let body = json!({"email": "b@example.com", "name": "B", "external_id": "C-1"});
    assert_problem(app.post("/api/v1/customers", &tenant.token, body).await, 409, "conflict").await;
    let body = json!({"email": "b@example.com", "name": "B", "notifications": {"email": false}});
    let created = json(app.post("/api/v1/customers", &tenant.token, body).await).await;
    assert_eq!(created["data"]["notifications"], json!({"email": false, "webhook": true}));
    let list = json(app.get("/api/v1/customers?email=b@example.com", &tenant.token).await).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["name"], "B");
}

#[tokio::test]
async fn a_viewer_reads_orders_but_cannot_place_or_cancel_them() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "CUP", 3).await;
    let (_, viewer) = app.user_with_roles(&tenant, &["viewer"]).await;
    let refused =
        assert_problem(app.post("/api/v1/orders", &viewer, order_body(&s, "CUP", 1)).await, 403, "forbidden")
            .await;
    assert!(refused["detail"].as_str().unwrap().contains("orders:write"));
    let (_, user) = app.user_with_roles(&tenant, &["user"]).await;
    let placed = place(&app, &user, order_body(&s, "CUP", 1)).await;
    let id = placed["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/api/v1/orders/{id}"), &viewer).await.status(), 200);
    let res = app.post(&format!("/api/v1/orders/{id}/cancel"), &viewer, json!({})).await;
    assert_problem(res, 403, "forbidden").await;
    // The module's key switches every route off.
    let res = app
        .request(Method::PUT, "/api/v1/features/module.orders", Some(&tenant.token))
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    assert_problem(app.get("/api/v1/orders", &tenant.token).await, 403, "feature_disabled").await;
}

async fn graphql(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let res = app.post("/graphql", token, json!({"query": query, "variables": variables})).await;
    assert_eq!(res.status(), 200);
    json(res).await
}

#[tokio::test]
async fn graphql_places_lists_and_cancels_orders() {
    let app = TestApp::spawn_adjusted(|f| f.merge(("modules.orders.simulated.delay_ms", 1500))).await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "BOOK", 5).await;
    let place = "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { id status total lines { sku quantity } } }";
    let input = json!({"customerId": s.customer, "warehouseId": s.warehouse, "currency": "EUR",
        "lines": [{"sku": "BOOK", "quantity": 2, "unitPrice": 1000}]});
    let body = graphql(&app, &tenant.token, place, json!({"input": input})).await;
    assert!(body.get("errors").is_none(), "{body}");
    let order = &body["data"]["placeOrder"];
    assert_eq!((order["status"].clone(), order["total"].clone()), (json!("pending"), json!(2000)));
    let id = order["id"].as_str().unwrap().to_owned();

    // The same errors as REST, in extensions.code.
    let mut bad = input.clone();
    bad["lines"][0]["quantity"] = json!(0);
    let body = graphql(&app, &tenant.token, place, json!({"input": bad})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "validation_failed", "{body}");
    let (_, viewer) = app.user_with_roles(&tenant, &["viewer"]).await;
    let body = graphql(&app, &viewer, place, json!({"input": input})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "forbidden", "{body}");

    reaches(&app, &tenant, &id, "reserved").await;
    let list = "{ orders(first: 10) { items { id status customer { email } lines { sku product { sku } } history { to } } pageInfo { hasMore total } } customers { items { email notifications { email webhook } } } }";
    let body = graphql(&app, &viewer, list, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
    let items = &body["data"]["orders"]["items"];
    assert_eq!(items[0]["customer"]["email"], "ada@example.com");
    assert_eq!(items[0]["lines"][0]["product"]["sku"], "BOOK");
    assert_eq!(body["data"]["orders"]["pageInfo"], json!({"hasMore": false, "total": 1}));
    assert_eq!(
        body["data"]["customers"]["items"][0]["notifications"],
        json!({"email": true, "webhook": true})
    );

    let cancel =
        "mutation($id: UUID!) { cancelOrder(id: $id, reason: \"duplicate\") { status failureReason } }";
    let body = graphql(&app, &tenant.token, cancel, json!({"id": id})).await;
    assert_eq!(
        body["data"]["cancelOrder"],
        json!({"status": "cancelled", "failureReason": "duplicate"}),
        "{body}"
    );
    let body = graphql(&app, &tenant.token, cancel, json!({"id": id})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "conflict", "{body}");
    let one = "query($id: UUID!) { order(id: $id) { status history { from to reason } } }";
    let body = graphql(&app, &tenant.token, one, json!({"id": id})).await;
    assert_eq!(
        body["data"]["order"]["history"][2],
        json!({"from": "reserved", "to": "cancelled", "reason": "duplicate"})
    );
    let other = app.register().await;
    let body = graphql(&app, &other.token, one, json!({"id": id})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "not_found", "{body}");
}

/// POST a refund of `amount` with Idempotency-Key `key`.
async fn refund(app: &TestApp, token: &str, id: &str, key: &str, amount: i64) -> reqwest::Response {
    app.request(Method::POST, &format!("/api/v1/orders/{id}/refunds"), Some(token))
        .header("Idempotency-Key", key)
        .json(&json!({"amount": amount, "reason": "damaged in transit"}))
        .send()
        .await
        .unwrap()
}

/// The refund `refund_id` of an order once it left `requested`.
async fn refund_settles(app: &TestApp, tenant: &Tenant, id: &str, refund_id: &str) -> Value {
    eventually(10, || async {
        let order = get_order(app, tenant, id).await;
        let found = order["refunds"].as_array().unwrap().iter().find(|r| r["id"] == refund_id).cloned();
        found.filter(|r| r["status"] != "requested")
    })
    .await
}

#[tokio::test]
async fn a_partial_then_a_full_refund_and_never_more_than_was_captured() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "COAT", 5).await;
    let placed = place(&app, &tenant.token, order_body(&s, "COAT", 2)).await;
    let id = placed["id"].as_str().unwrap();
    reaches(&app, &tenant, id, "completed").await;

    let res = refund(&app, &tenant.token, id, "refund-1", 1000).await;
    assert_eq!(res.status(), 201);
    let first = json(res).await["data"].clone();
    assert_eq!((first["status"].clone(), first["amount"].clone()), (json!("requested"), json!(1000)));
    let first_id = first["id"].as_str().unwrap();
    let processed = refund_settles(&app, &tenant, id, first_id).await;
    assert_eq!(processed["status"], "processed");
    assert!(processed["gateway_reference"].as_str().unwrap().starts_with("sim_re_"), "{processed}");

    // The rest of it; then nothing more.
    let res = refund(&app, &tenant.token, id, "refund-2", 4998 - 1000).await;
    assert_eq!(res.status(), 201);
    let second = json(res).await["data"]["id"].as_str().unwrap().to_owned();
    refund_settles(&app, &tenant, id, &second).await;
    let before = get_order(&app, &tenant, id).await;
    assert_eq!(before["refunded"], 4998);
    let refused =
        assert_problem(refund(&app, &tenant.token, id, "refund-3", 1).await, 409, "refund_amount_exceeded")
            .await;
    assert!(refused["detail"].as_str().unwrap().contains("at most 0 EUR"), "{refused}");
    app.drained().await;
    let after = get_order(&app, &tenant, id).await;
    assert_eq!(after["refunds"], before["refunds"]);
    assert_eq!(after["refunded"], 4998);
    assert_eq!(after["status"], "completed");

    // The list, oldest first; the events through the outbox.
    let list = json(app.get(&format!("/api/v1/orders/{id}/refunds"), &tenant.token).await).await;
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [first_id, second.as_str()]);
    let refund_events: Vec<String> =
        order_events(&app, &tenant).await.into_iter().filter(|e| e.contains("refund")).collect();
    assert_eq!(
        refund_events,
        ["order.refund_requested", "order.refunded", "order.refund_requested", "order.refunded"]
    );
    // A refunded order is not cancelled.
    let res = app.post(&format!("/api/v1/orders/{id}/cancel"), &tenant.token, json!({})).await;
    assert_problem(res, 409, "conflict").await;
}

#[tokio::test]
async fn the_same_idempotency_key_gives_the_same_refund_back() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "SCARF", 5).await;
    let placed = place(&app, &tenant.token, order_body(&s, "SCARF", 1)).await;
    let id = placed["id"].as_str().unwrap();
    reaches(&app, &tenant, id, "completed").await;
    let first = json(refund(&app, &tenant.token, id, "r-1", 500).await).await;
    // The platform's replay: the first answer byte for byte.
    let again = refund(&app, &tenant.token, id, "r-1", 500).await;
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(json(again).await, first);
    // Another caller (a manager) with the key: the refund itself is keyed, so
    // the same refund, answered 200, nothing new.
    let (_, manager) = app.user_with_roles(&tenant, &["manager"]).await;
    let res = refund(&app, &manager, id, "r-1", 500).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["data"]["id"], first["data"]["id"]);
    // The key with another amount is refused.
    assert_problem(refund(&app, &manager, id, "r-1", 499).await, 422, "idempotency_conflict").await;
    // The key is required.
    let res = app
        .post(&format!("/api/v1/orders/{id}/refunds"), &tenant.token, json!({"amount": 1, "reason": "x"}))
        .await;
    assert_problem(res, 400, "invalid_header").await;
    let res = refund(&app, &tenant.token, id, "r-2", 0).await;
    let invalid = assert_problem(res, 422, "validation_failed").await;
    assert_eq!(invalid["errors"][0]["field"], "amount");
    app.drained().await;
    let order = get_order(&app, &tenant, id).await;
    assert_eq!(order["refunds"].as_array().unwrap().len(), 1);
    assert_eq!(order["refunded"], 500);

    // A retried job (a lost answer) changes nothing: the same refund, once.
    use nexus::platform::jobs::{NewJob, enqueue};
    let events = order_events(&app, &tenant).await;
    let job = NewJob::new("orders.refund", json!({"refund_id": first["data"]["id"]})).tenant(tenant.id);
    enqueue(&app.state.db, job).await.unwrap();
    app.state.wakeup.wake();
    app.drained().await;
    assert_eq!(get_order(&app, &tenant, id).await["refunds"], order["refunds"]);
    assert_eq!(order_events(&app, &tenant).await, events);
}

#[tokio::test]
async fn refunds_need_a_paid_order_of_the_tenant_and_the_permission() {
    // A slow gateway holds the order at `reserved`: not paid yet.
    let app = TestApp::spawn_adjusted(|f| f.merge(("modules.orders.simulated.delay_ms", 1500))).await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "HAT", 5).await;
    let placed = place(&app, &tenant.token, order_body(&s, "HAT", 1)).await;
    let id = placed["id"].as_str().unwrap();
    reaches(&app, &tenant, id, "reserved").await;
    let refused = assert_problem(refund(&app, &tenant.token, id, "early", 100).await, 409, "conflict").await;
    assert!(refused["detail"].as_str().unwrap().contains("reserved"), "{refused}");
    reaches(&app, &tenant, id, "completed").await;
    // Another tenant: not found; a user (no orders:refund): forbidden.
    let other = app.register().await;
    assert_problem(refund(&app, &other.token, id, "theirs", 100).await, 404, "not_found").await;
    let path = format!("/api/v1/orders/{id}/refunds");
    assert_problem(app.get(&path, &other.token).await, 404, "not_found").await;
    let (_, user) = app.user_with_roles(&tenant, &["user"]).await;
    let refused = assert_problem(refund(&app, &user, id, "mine", 100).await, 403, "forbidden").await;
    assert!(refused["detail"].as_str().unwrap().contains("orders:refund"));
    app.drained().await;
    let order = get_order(&app, &tenant, id).await;
    assert_eq!((order["refunds"].clone(), order["refunded"].clone()), (json!([]), json!(0)));
}

#[tokio::test]
async fn a_refund_the_gateway_refuses_ends_failed_and_may_be_asked_again() {
    let app =
        TestApp::spawn_adjusted(|f| f.merge(("modules.orders.simulated.refund_success_rate", 0.0))).await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "GLOVE", 5).await;
    let placed = place(&app, &tenant.token, order_body(&s, "GLOVE", 1)).await;
    let id = placed["id"].as_str().unwrap();
    reaches(&app, &tenant, id, "completed").await;
    let res = refund(&app, &tenant.token, id, "refused", 2499).await;
    let refund_id = json(res).await["data"]["id"].as_str().unwrap().to_owned();
    let failed = refund_settles(&app, &tenant, id, &refund_id).await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["failure_reason"].as_str().unwrap().contains("refused"), "{failed}");
    assert_eq!(failed["gateway_reference"], Value::Null);
    // Its amount may be refunded again.
    let order = get_order(&app, &tenant, id).await;
    assert_eq!(order["refunded"], 0);
    assert_eq!(refund(&app, &tenant.token, id, "again", 2499).await.status(), 201);
    app.drained().await;
    let refund_events: Vec<String> =
        order_events(&app, &tenant).await.into_iter().filter(|e| e.contains("refund")).collect();
    assert_eq!(
        refund_events,
        ["order.refund_requested", "order.refund_failed", "order.refund_requested", "order.refund_failed"]
    );
}

#[tokio::test]
async fn graphql_refunds_an_order_with_the_same_errors() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "BELT", 5).await;
    let placed = place(&app, &tenant.token, order_body(&s, "BELT", 1)).await;
    let id = placed["id"].as_str().unwrap();
    reaches(&app, &tenant, id, "completed").await;
    let mutation = "mutation($id: UUID!, $amount: Int!, $key: String!) { refundOrder(id: $id, amount: $amount, reason: \"late\", idempotencyKey: $key) { id amount status reason } }";
    let vars = |amount: i64, key: &str| json!({"id": id, "amount": amount, "key": key});
    let body = graphql(&app, &tenant.token, mutation, vars(499, "g-1")).await;
    assert!(body.get("errors").is_none(), "{body}");
    let made = &body["data"]["refundOrder"];
    assert_eq!((made["amount"].clone(), made["reason"].clone()), (json!(499), json!("late")));
    let again = graphql(&app, &tenant.token, mutation, vars(499, "g-1")).await;
    assert_eq!(again["data"]["refundOrder"]["id"], made["id"]);
    let body = graphql(&app, &tenant.token, mutation, vars(2001, "g-2")).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "refund_amount_exceeded", "{body}");
    let body = graphql(&app, &tenant.token, mutation, vars(1, "g-1")).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "idempotency_conflict", "{body}");
    let body = graphql(&app, &tenant.token, mutation, vars(0, "g-3")).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "validation_failed", "{body}");
    let (_, user) = app.user_with_roles(&tenant, &["user"]).await;
    let body = graphql(&app, &user, mutation, vars(1, "g-4")).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "forbidden", "{body}");
    let other = app.register().await;
    let body = graphql(&app, &other.token, mutation, vars(1, "g-5")).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "not_found", "{body}");
    app.drained().await;
    let one = "query($id: UUID!) { order(id: $id) { refunded refunds { amount status } } }";
    let body = graphql(&app, &tenant.token, one, json!({"id": id})).await;
    assert_eq!(
        body["data"]["order"],
        json!({"refunded": 499, "refunds": [{"amount": 499, "status": "processed"}]}),
        "{body}"
    );
}

/// `nexus` run on the app's database, as an operator runs it.
/// Run the command on the app's database, off the test's runtime: the app's
/// server and workers run on it and must go on (a worker holding SQLite's
/// write lock while the runtime is blocked would lock the command out).
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
async fn the_command_line_refunds_an_order_once_per_key() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "SHOE", 5).await;
    let placed = place(&app, &tenant.token, order_body(&s, "SHOE", 1)).await;
    let id = placed["id"].as_str().unwrap();
    reaches(&app, &tenant, id, "completed").await;
    let args = ["orders", "refund", id, "700", "--reason", "scuffed", "--key", "cli-1"];
    let out = nexus_cli(&app, &args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("of 700 EUR processed"), "{stdout}");
    // Again with the key: nothing more.
    let out = nexus_cli(&app, &args).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("this key was used before"));
    let out = nexus_cli(&app, &["orders", "refund", id, "5000", "--reason", "all", "--key", "cli-2"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refund_amount_exceeded"));
    let order = get_order(&app, &tenant, id).await;
    assert_eq!(order["refunded"], 700);
    assert_eq!(order["refunds"].as_array().unwrap().len(), 1);
    assert_eq!(order["refunds"][0]["status"], "processed");
}

const CSV_HEADER: &str = "external_order_id,order_placed_at,currency,customer_id,customer_email,customer_name,product_sku,product_name,unit_price_cents,qty";

/// Upload `csv` to `POST /api/v1/orders/imports` as multipart/form-data.
async fn upload(app: &TestApp, token: &str, warehouse: &str, csv: &str) -> reqwest::Response {
    upload_with(app, token, &format!("warehouse_id={warehouse}"), csv).await
}

/// [`upload`] with the query string `query`.
async fn upload_with(app: &TestApp, token: &str, query: &str, csv: &str) -> reqwest::Response {
    let boundary = "nexus-test-boundary-7d3f";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"orders.csv\"\r\nContent-Type: text/csv\r\n\r\n{csv}\r\n--{boundary}--\r\n"
    );
    app.request(Method::POST, &format!("/api/v1/orders/imports?{query}"), Some(token))
        .header("content-type", format!("multipart/form-data; boundary={boundary}"))
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Upload and wait for the import to end.
async fn imported(app: &TestApp, tenant: &Tenant, warehouse: &str, csv: &str) -> Value {
    let res = upload(app, &tenant.token, warehouse, csv).await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    let queued = json(res).await["data"].clone();
    assert_eq!(queued["status"], "queued");
    let id = queued["id"].as_str().unwrap().to_owned();
    eventually(20, || async {
        let import = json(app.get(&format!("/api/v1/orders/imports/{id}"), &tenant.token).await).await;
        let import = import["data"].clone();
        ["completed", "failed"].contains(&import["status"].as_str().unwrap()).then_some(import)
    })
    .await
}

async fn order_by_external(app: &TestApp, tenant: &Tenant, external: &str) -> Value {
    let list =
        json(app.get(&format!("/api/v1/orders?external_order_id={external}"), &tenant.token).await).await;
    list["data"][0].clone()
}

#[tokio::test]
async fn a_csv_file_imports_its_orders_and_importing_it_again_creates_nothing() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "TEE", 10).await;
    let csv = format!(
        "{CSV_HEADER}\n\
         5001,2026-11-20T09:30:00Z,EUR,C-1,ada@example.com,Ada Lovelace,TEE,,2499,2\n\
         5001,2026-11-20T09:30:00Z,EUR,C-1,ada@example.com,Ada Lovelace,CAP-BLUE,\"Cap, blue\",1500,1\n\
         5002,2026-11-21 10:00:00,EUR,C-77,grace@example.com,Grace Hopper,TEE,,2000,1\n\
         5003,2026-11-22,EUR,,ada@example.com,,TEE,,2499,3\n"
    );
    let done = imported(&app, &tenant, &s.warehouse, &csv).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        (
            done["rows_done"].clone(),
            done["created"].clone(),
            done["skipped"].clone(),
            done["error_count"].clone()
        ),
        (json!(4), json!(3), json!(0), json!(0)),
        "{done}"
    );
    assert!(done["finished_at"].is_string());
    let first = order_by_external(&app, &tenant, "5001").await;
    assert_eq!(first["total"], 2 * 2499 + 1500);
    assert_eq!(first["channel"], "import");
    assert_eq!(first["placed_at"], "2026-11-20T09:30:00Z");
    assert_eq!(first["customer_id"], s.customer.as_str(), "the customer C-1 was found, not created");
    let skus: Vec<&str> =
        first["lines"].as_array().unwrap().iter().map(|l| l["sku"].as_str().unwrap()).collect();
    assert_eq!(skus, ["TEE", "CAP-BLUE"]);
    // The product CAP-BLUE was created by the import.
    let cap = json(app.get("/api/v1/products?sku=CAP-BLUE", &tenant.token).await).await;
    assert_eq!(cap["data"][0]["name"], "Cap, blue");
    // Each order entered the saga: CAP-BLUE has no stock, the others complete.
    reaches(&app, &tenant, first["id"].as_str().unwrap(), "failed").await;
    let second = order_by_external(&app, &tenant, "5002").await;
    assert_eq!(second["placed_at"], "2026-11-21T10:00:00Z");
    reaches(&app, &tenant, second["id"].as_str().unwrap(), "completed").await;
    let third = order_by_external(&app, &tenant, "5003").await;
    assert_eq!(third["customer_id"], s.customer.as_str(), "found by email");
    reaches(&app, &tenant, third["id"].as_str().unwrap(), "completed").await;
    let customers = json(app.get("/api/v1/customers?include=total", &tenant.token).await).await;
    assert_eq!(customers["meta"]["total"], 2);

    // Again: nothing new.
    let again = imported(&app, &tenant, &s.warehouse, &csv).await;
    assert_eq!((again["created"].clone(), again["skipped"].clone()), (json!(0), json!(3)), "{again}");
    let orders = json(app.get("/api/v1/orders?include=total", &tenant.token).await).await;
    assert_eq!(orders["meta"]["total"], 3);
    let list = json(app.get("/api/v1/orders/imports", &tenant.token).await).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert_eq!(list["data"][0]["id"], again["id"], "newest first");

    // The chunks of both uploads are gone.
    let left = SystemScope
        .find::<entity::order_import_chunk::Entity>()
        .filter(entity::order_import_chunk::Column::TenantId.eq(tenant.id))
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(left.is_empty());
}

#[tokio::test]
async fn bad_rows_are_reported_by_line_and_column_and_the_good_orders_imported() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "TEE", 10).await;
    let csv = format!(
        "{CSV_HEADER}\n\
         6001,2026-11-20T09:30:00Z,EUR,C-1,ada@example.com,Ada,TEE,,2499,1\n\
         6002,yesterday,EUR,C-1,ada@example.com,Ada,TEE,,2499,1\n\
         6003,2026-11-20T09:30:00Z,EUR,C-1,ada@example.com,Ada,TEE,,2499,0\n\
         6003,2026-11-20T09:30:00Z,EUR,C-1,ada@example.com,Ada,TEE,,2499,-4\n\
         6004,2026-11-20T09:30:00Z,EUX,C-1,ada@example.com,Ada,TEE,,2499,1\n\
         6005,2026-11-20T09:30:00Z,EUR,C-1,ada@example.com,Ada,T\0E,,2499,1\n\
         6006,2026-11-20T09:30:00Z,EUR,C-1,ada@example.com,Ada,GHOST,,100,1\n\
         6007,2026-11-20T09:30:00Z,EUR,C-1,ada@example.com,Ada,TEE,,2499\n\
         6008,2026-11-20T09:30:00Z,EUR,C-1,ada@example.com,Ada,TEE,,2499,2\n"
    );
    let done = imported(&app, &tenant, &s.warehouse, &csv).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!((done["created"].clone(), done["rows_done"].clone()), (json!(2), json!(9)), "{done}");
    let errors: Vec<(u64, Option<String>)> = done["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["column"].as_str().map(str::to_owned)))
        .collect();
    let col = |c: &str| Some(c.to_owned());
    assert_eq!(
        errors,
        [
            (3, col("order_placed_at")),
            (4, col("qty")),
            (5, col("qty")),
            (6, col("currency")),
            (7, col("product_sku")),
            (8, col("product_sku")),
            (9, None),
        ],
        "{done}"
    );
    assert_eq!(done["error_count"], 7);
    assert!(done["errors"][5]["message"].as_str().unwrap().contains("no product_name"), "{done}");
    assert!(done["errors"][4]["message"].as_str().unwrap().contains("NUL"), "{done}");
    for external in ["6001", "6008"] {
        assert!(order_by_external(&app, &tenant, external).await.is_object(), "{external}");
    }
    for external in ["6002", "6003", "6004", "6005", "6006", "6007"] {
        assert!(order_by_external(&app, &tenant, external).await.is_null(), "{external}");
    }
}

#[tokio::test]
async fn a_wrong_header_or_upload_is_refused_and_changes_nothing() {
    let app = TestApp::spawn_adjusted(|f| f.merge(("modules.orders.import_max_bytes", 2048))).await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "TEE", 10).await;
    let wrong = "external_order_id,currency,qty\n1,EUR,1\n";
    let refused =
        assert_problem(upload(&app, &tenant.token, &s.warehouse, wrong).await, 422, "validation_failed")
            .await;
    assert_eq!(refused["errors"][0]["field"], "file");
    assert!(refused["errors"][0]["message"].as_str().unwrap().contains("the header must be"), "{refused}");
    let refused =
        assert_problem(upload(&app, &tenant.token, &s.warehouse, "").await, 422, "validation_failed").await;
    assert_eq!(refused["errors"][0]["field"], "file");
    // Too large.
    let row = "7001,2026-11-20T09:30:00Z,EUR,C-1,ada@example.com,Ada,TEE,,2499,1\n";
    let big = format!("{CSV_HEADER}\n{}", row.repeat(40));
    assert_problem(upload(&app, &tenant.token, &s.warehouse, &big).await, 413, "payload_too_large").await;
    // Not multipart; another tenant's warehouse.
    let res = app
        .post(&format!("/api/v1/orders/imports?warehouse_id={}", s.warehouse), &tenant.token, json!({}))
        .await;
    assert_problem(res, 415, "unsupported_media_type").await;
    let other = app.register().await;
    let good = format!("{CSV_HEADER}\n{row}");
    let refused =
        assert_problem(upload(&app, &other.token, &s.warehouse, &good).await, 422, "validation_failed").await;
    assert_eq!(refused["errors"][0]["field"], "warehouse_id");
    // Nothing was stored, nothing imported.
    assert_eq!(json(app.get("/api/v1/orders/imports", &tenant.token).await).await["data"], json!([]));
    assert_eq!(json(app.get("/api/v1/orders", &tenant.token).await).await["data"], json!([]));
    let chunks = SystemScope.find::<entity::order_import_chunk::Entity>().all(&app.state.db).await.unwrap();
    assert!(chunks.iter().all(|c| c.tenant_id != tenant.id && c.tenant_id != other.id));

    // Another tenant sees nothing of this tenant's imports.
    let done = imported(&app, &tenant, &s.warehouse, &good).await;
    let id = done["id"].as_str().unwrap();
    assert_problem(app.get(&format!("/api/v1/orders/imports/{id}"), &other.token).await, 404, "not_found")
        .await;
    assert_eq!(json(app.get("/api/v1/orders/imports", &other.token).await).await["data"], json!([]));
    let (_, viewer) = app.user_with_roles(&tenant, &["viewer"]).await;
    assert_problem(upload(&app, &viewer, &s.warehouse, &good).await, 403, "forbidden").await;
    // GraphQL reads the same.
    let query = "query($id: UUID!) { orderImport(id: $id) { status created errors { line } } orderImports { items { id } } }";
    let body = graphql(&app, &viewer, query, json!({"id": id})).await;
    assert_eq!(
        body["data"]["orderImport"],
        json!({"status": "completed", "created": 1, "errors": []}),
        "{body}"
    );
    assert_eq!(body["data"]["orderImports"]["items"][0]["id"], id);
    let body = graphql(&app, &other.token, query, json!({"id": id})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "not_found", "{body}");

    // An import by GraphQL, with the same errors.
    let mutation =
        "mutation($w: UUID!, $csv: String!) { importOrders(warehouseId: $w, csv: $csv) { id status } }";
    let body = graphql(&app, &tenant.token, mutation, json!({"w": s.warehouse, "csv": wrong})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "validation_failed", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["errors"][0]["field"], "file", "{body}");
    let body = graphql(&app, &tenant.token, mutation, json!({"w": s.warehouse, "csv": big})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "payload_too_large", "{body}");
    let body = graphql(&app, &viewer, mutation, json!({"w": s.warehouse, "csv": good})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "forbidden", "{body}");
    let more = format!("{CSV_HEADER}\n7002,2026-11-20T09:30:00Z,EUR,C-1,ada@example.com,Ada,TEE,,2499,1\n");
    let body = graphql(&app, &tenant.token, mutation, json!({"w": s.warehouse, "csv": more})).await;
    assert_eq!(body["data"]["importOrders"]["status"], "queued", "{body}");
    let gql_id = body["data"]["importOrders"]["id"].as_str().unwrap().to_owned();
    let done = eventually(20, || async {
        let import = json(app.get(&format!("/api/v1/orders/imports/{gql_id}"), &tenant.token).await).await;
        (import["data"]["status"] == "completed").then_some(import["data"].clone())
    })
    .await;
    assert_eq!(done["created"], 1, "{done}");
}

#[tokio::test]
async fn imported_orders_tell_their_customers_they_were_placed_only_when_asked() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "TEE", 10).await;
    let row = |id: u32| {
        format!("{CSV_HEADER}\n{id},2026-11-20T09:30:00Z,EUR,C-1,ada@example.com,Ada,TEE,,2499,1\n")
    };
    // The types of an order's notifications, once it is imported and its saga done.
    let types = |external: &'static str| {
        let (app, tenant) = (&app, &tenant);
        async move {
            let order = eventually(20, || async {
                let order = order_by_external(app, tenant, external).await;
                order["id"].as_str().map(str::to_owned)
            });
            let id = order.await;
            reaches(app, tenant, &id, "completed").await;
            let list =
                json(app.get(&format!("/api/v1/orders/{id}/notifications?limit=100"), &tenant.token).await);
            let list = list.await["data"].as_array().unwrap().clone();
            let mut types: Vec<String> =
                list.iter().map(|n| n["type"].as_str().unwrap().to_owned()).collect();
            types.sort();
            types.dedup();
            types
        }
    };

    // By default, no `placed` notification; the saga's own are written.
    let done = imported(&app, &tenant, &s.warehouse, &row(8001)).await;
    assert_eq!((done["created"].clone(), done["send_receipts"].clone()), (json!(1), json!(false)), "{done}");
    assert_eq!(types("8001").await, ["completed", "paid"]);

    // Asked for, over REST, GraphQL and the command line: one per channel.
    let query = format!("warehouse_id={}&send_receipts=true", s.warehouse);
    let res = upload_with(&app, &tenant.token, &query, &row(8002)).await;
    let id = json(res).await["data"]["id"].as_str().unwrap().to_owned();
    let done = eventually(20, || async {
        let import = json(app.get(&format!("/api/v1/orders/imports/{id}"), &tenant.token).await).await;
        (import["data"]["status"] == "completed").then_some(import["data"].clone())
    })
    .await;
    assert_eq!((done["created"].clone(), done["send_receipts"].clone()), (json!(1), json!(true)), "{done}");
    assert_eq!(types("8002").await, ["completed", "paid", "placed"]);
    let mutation = "mutation($w: UUID!, $csv: String!) { importOrders(warehouseId: $w, csv: $csv, sendReceipts: true) { sendReceipts } }";
    let body = graphql(&app, &tenant.token, mutation, json!({"w": s.warehouse, "csv": row(8003)})).await;
    assert_eq!(body["data"]["importOrders"]["sendReceipts"], true, "{body}");
    assert_eq!(types("8003").await, ["completed", "paid", "placed"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    std::fs::write(&file, row(8004)).unwrap();
    let path = file.to_str().unwrap();
    let args = ["orders", "import", path, "--tenant", &tenant.slug, "--warehouse", "MAIN", "--send-receipts"];
    let out = nexus_cli(&app, &args).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    app.state.wakeup.wake();
    assert_eq!(types("8004").await, ["completed", "paid", "placed"]);
    let placed =
        json(app.get("/api/v1/orders/notifications?type=placed&include=total", &tenant.token).await).await;
    assert_eq!(placed["meta"]["total"], 9, "three orders, three channels each: {placed}");
}

#[tokio::test]
async fn a_file_of_many_batches_counts_every_order_once() {
    // No workers: this is about what the import writes, not the sagas.
    let app = TestApp::spawn_adjusted(|f| f.merge(("jobs.run_in_server", false))).await;
    let tenant = app.register().await;
    shop(&app, &tenant, "TEE", 0).await;
    let old = json!({"sku": "OLD", "name": "Old", "unit_price": 100, "currency": "EUR", "active": false});
    assert_eq!(app.post("/api/v1/products", &tenant.token, old).await.status(), 201);
    // 1,100 orders (three batches of writes), customers by id or by email,
    // each of them in several batches; then an order of the first batch
    // again (not next to its rows) and an inactive product.
    let mut csv = String::from(CSV_HEADER);
    for i in 0..1100 {
        let customer = match i % 3 {
            0 => format!("K-{},k{}@example.com", i / 3 % 300, i / 3 % 300),
            _ => format!(",e{}@example.com", i % 200),
        };
        csv.push_str(&format!("\nB-{i},2026-11-20T09:30:00Z,EUR,{customer},Name,TEE,,{},2", 100 + i));
        if i % 2 == 0 {
            csv.push_str(&format!(
                "\nB-{i},2026-11-20T09:30:00Z,EUR,{customer},Name,SKU-{},Product,50,1",
                i % 7
            ));
        }
    }
    csv.push_str("\nB-3,2026-11-20T09:30:00Z,EUR,,e3@example.com,Name,TEE,,1,1");
    csv.push_str("\nB-OLD,2026-11-20T09:30:00Z,EUR,,e3@example.com,Name,OLD,,1,1\n");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    std::fs::write(&file, csv).unwrap();
    let path = file.to_str().unwrap();
    let args = ["orders", "import", path, "--tenant", &tenant.slug, "--warehouse", "MAIN"];
    let out = nexus_cli(&app, &args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1652 rows, 1100 orders created, 1 skipped (they exist), 1 errors"), "{stdout}");
    assert!(stdout.contains("line 1653, column product_sku: the product is inactive"), "{stdout}");

    let orders = json(app.get("/api/v1/orders?include=total&limit=1", &tenant.token).await).await;
    assert_eq!(orders["meta"]["total"], 1100);
    // 300 customers by id and 200 by email (C-1 of the shop is not in the file).
    let customers = json(app.get("/api/v1/customers?include=total&limit=1", &tenant.token).await).await;
    assert_eq!(customers["meta"]["total"], 501);
    for i in [0, 499, 500, 1099] {
        let order = order_by_external(&app, &tenant, &format!("B-{i}")).await;
        let expected = 2 * (100 + i) + if i % 2 == 0 { 50 } else { 0 };
        assert_eq!(order["total"], expected, "{order}");
        assert_eq!(order["lines"].as_array().unwrap().len(), 1 + usize::from(i % 2 == 0));
        let customer = json(
            app.get(&format!("/api/v1/customers/{}", order["customer_id"].as_str().unwrap()), &tenant.token)
                .await,
        )
        .await;
        let email = match i % 3 {
            0 => format!("k{}@example.com", i / 3 % 300),
            _ => format!("e{}@example.com", i % 200),
        };
        assert_eq!(customer["data"]["email"], email.as_str(), "{customer}");
    }
    let created = order_events(&app, &tenant).await.into_iter().filter(|e| e == "order.created").count();
    assert_eq!(created, 1100, "one order.created per order");

    // Again: every order is skipped, nothing is created.
    let out = nexus_cli(&app, &args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("0 orders created, 1101 skipped"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let customers = json(app.get("/api/v1/customers?include=total&limit=1", &tenant.token).await).await;
    assert_eq!(customers["meta"]["total"], 501);
}

#[tokio::test]
async fn the_command_line_imports_a_file_and_skips_it_the_second_time() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    shop(&app, &tenant, "TEE", 10).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    let csv = format!(
        "{CSV_HEADER}\n\
         8001,2026-11-20T09:30:00Z,EUR,C-1,ada@example.com,Ada,TEE,,2499,1\n\
         8001,2026-11-20T09:30:00Z,EUR,C-1,ada@example.com,Ada,TEE,,100,1\n\
         8002,2026-11-20T09:30:00Z,EUR,C-1,ada@example.com,Ada,TEE,,2499,0\n"
    );
    std::fs::write(&file, csv).unwrap();
    let path = file.to_str().unwrap();
    let args = ["orders", "import", path, "--tenant", &tenant.slug, "--warehouse", "MAIN"];
    let out = nexus_cli(&app, &args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("3 rows, 1 orders created, 0 skipped (they exist), 1 errors"), "{stdout}");
    assert!(stdout.contains("line 4, column qty: "), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 rows:"), "progress on stderr");
    assert_eq!(order_by_external(&app, &tenant, "8001").await["total"], 2599);
    let out = nexus_cli(&app, &args).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 orders created, 1 skipped"));
    // A wrong header changes nothing and fails.
    std::fs::write(&file, "a,b,c\n1,2,3\n").unwrap();
    let out = nexus_cli(&app, &args).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the header must be"));
}

#[tokio::test]
async fn a_file_of_several_batches_creates_each_customer_once_however_its_writes_overlap() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    shop(&app, &tenant, "TEE", 10).await;
    // 60 orders of 100 lines: three batches of 20 orders (2,000 lines), each
    // naming the same 20 new customers. On PostgreSQL two batches are written
    // at once, so both try to create them: one must find the other's.
    let mut csv = format!("{CSV_HEADER}\n");
    for order in 0..60 {
        for line in 0..100 {
            let customer = order % 20;
            csv.push_str(&format!(
                "B-{order},2026-11-20T09:30:00Z,EUR,K-{customer},k{customer}@example.com,K {customer},P-{line},Part {line},100,1\n"
            ));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    std::fs::write(&file, csv).unwrap();
    let args = ["orders", "import", file.to_str().unwrap(), "--tenant", &tenant.slug, "--warehouse", "MAIN"];
    let out = nexus_cli(&app, &args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("6000 rows, 60 orders created, 0 skipped (they exist), 0 errors"), "{stdout}");
    let customers = json(app.get("/api/v1/customers?include=total", &tenant.token).await).await;
    assert_eq!(customers["meta"]["total"], 21, "20 imported, each once, and the shop's own");
    let orders = json(app.get("/api/v1/orders?include=total", &tenant.token).await).await;
    assert_eq!(orders["meta"]["total"], 60);
    for external in ["B-0", "B-29", "B-59"] {
        let order = order_by_external(&app, &tenant, external).await;
        assert_eq!(order["total"], 100 * 100, "{order}");
        assert_eq!(order["lines"].as_array().unwrap().len(), 100);
    }
    let out = nexus_cli(&app, &args).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 orders created, 60 skipped"));
}

/// An app whose payments go to `stripe`.
async fn with_stripe(stripe: &crate::fake_stripe::FakeStripe, payment_method: &str) -> TestApp {
    let (url, method) = (stripe.url.clone(), payment_method.to_owned());
    TestApp::spawn_adjusted(move |f| {
        f.merge(("modules.orders.gateway", "stripe"))
            .merge(("modules.orders.stripe.api_base", url))
            .merge(("modules.orders.stripe.secret_key", crate::fake_stripe::SECRET))
            .merge(("modules.orders.stripe.payment_method", method))
    })
    .await
}

#[tokio::test]
async fn the_stripe_gateway_charges_once_through_a_lost_answer_and_refunds() {
    // The first answer is lost: the intent is created, the worker sees a 500.
    let stripe = crate::fake_stripe::FakeStripe::start(1).await;
    let app = with_stripe(&stripe, "pm_card_visa").await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "SOFA", 3).await;
    let placed = place(&app, &tenant.token, order_body(&s, "SOFA", 2)).await;
    let id = placed["id"].as_str().unwrap();
    let done = reaches(&app, &tenant, id, "completed").await;
    assert_eq!(done["payments"][0]["gateway"], "stripe");
    assert_eq!(done["payments"][0]["gateway_reference"], "pi_1");
    assert_eq!(stripe.intents(), 1, "charged once");
    let charges: Vec<_> = stripe.calls().into_iter().filter(|c| c.path == "/v1/payment_intents").collect();
    assert_eq!(charges.len(), 2, "asked again after the lost answer");
    for c in &charges {
        assert_eq!(c.key.as_deref(), Some(format!("order:{id}:charge").as_str()));
        assert_eq!(c.content_type, "application/x-www-form-urlencoded");
        assert_eq!(c.form["amount"], "4998");
        assert_eq!(c.form["currency"], "eur");
        assert_eq!(c.form["confirm"], "true");
        assert_eq!(c.form["payment_method"], "pm_card_visa");
    }

    let res = refund(&app, &tenant.token, id, "stripe-1", 1000).await;
    let refund_id = json(res).await["data"]["id"].as_str().unwrap().to_owned();
    let processed = refund_settles(&app, &tenant, id, &refund_id).await;
    assert_eq!(
        (processed["status"].clone(), processed["gateway_reference"].clone()),
        (json!("processed"), json!("re_1"))
    );
    let call = stripe.calls().into_iter().find(|c| c.path == "/v1/refunds").unwrap();
    assert_eq!(call.key.as_deref(), Some(format!("refund:{refund_id}").as_str()));
    assert_eq!((call.form["payment_intent"].as_str(), call.form["amount"].as_str()), ("pi_1", "1000"));
    assert_eq!(call.form["metadata[reason]"], "damaged in transit");
    assert!(
        stripe.calls().iter().all(|c| c.authorization == format!("Bearer {}", crate::fake_stripe::SECRET))
    );
    assert_eq!(stripe.refunds(), 1);
}

/// A decline fails the order and releases its stock. A NUL in what Stripe
/// says (the second card's message), which PostgreSQL's text and jsonb
/// refuse, is kept as U+FFFD.
#[tokio::test]
async fn a_card_stripe_declines_fails_the_order_and_releases_its_stock() {
    for (card, message) in [
        ("pm_card_chargeDeclined", "Your card was declined."),
        ("pm_card_chargeDeclinedNul", "Your card was\u{FFFD} declined."),
    ] {
        let stripe = crate::fake_stripe::FakeStripe::start(0).await;
        let app = with_stripe(&stripe, card).await;
        let tenant = app.register().await;
        let s = shop(&app, &tenant, "BED", 3).await;
        let placed = place(&app, &tenant.token, order_body(&s, "BED", 1)).await;
        let failed = reaches(&app, &tenant, placed["id"].as_str().unwrap(), "failed").await;
        assert_eq!(failed["failure_reason"], format!("payment declined: {message} (card_declined)"));
        assert_eq!(failed["payments"][0]["failure_reason"], format!("{message} (card_declined)"));
        assert_eq!(failed["payments"][0]["status"], "declined");
        assert_eq!(failed["payments"][0]["gateway_reference"], "pi_1");
        assert_eq!(level(&app, &tenant, &s).await, (3, 0));
        assert_eq!(stripe.intents(), 0);
    }
}

/// Stripe cancels only uncaptured intents: voiding a captured charge (the
/// saga's compensation) refunds what is left of it.
#[tokio::test]
async fn a_stripe_void_refunds_the_rest_of_the_charge() {
    use nexus::platform::jobs::{NewJob, enqueue};
    use sea_orm::sea_query::Expr;
    let stripe = crate::fake_stripe::FakeStripe::start(0).await;
    let app = with_stripe(&stripe, "pm_card_visa").await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "LAMP", 3).await;
    let placed = place(&app, &tenant.token, order_body(&s, "LAMP", 1)).await;
    let id = placed["id"].as_str().unwrap();
    let done = reaches(&app, &tenant, id, "completed").await;
    let res = refund(&app, &tenant.token, id, "part", 499).await;
    let refund_id = json(res).await["data"]["id"].as_str().unwrap().to_owned();
    refund_settles(&app, &tenant, id, &refund_id).await;
    // The payment queued for voiding, as a compensation queues it.
    let payment_id: uuid::Uuid = done["payments"][0]["id"].as_str().unwrap().parse().unwrap();
    nexus::platform::tenancy::TenantScope::new(tenant.id)
        .update_many::<entity::order_payment::Entity>()
        .col_expr(entity::order_payment::Column::Status, Expr::value("voiding"))
        .filter(entity::order_payment::Column::Id.eq(payment_id))
        .exec(&app.state.db)
        .await
        .unwrap();
    let job = NewJob::new("orders.void_payment", json!({"payment_id": payment_id})).tenant(tenant.id);
    enqueue(&app.state.db, job).await.unwrap();
    app.state.wakeup.wake();
    eventually(10, || async {
        let order = get_order(&app, &tenant, id).await;
        (order["payments"][0]["status"] == "voided").then_some(())
    })
    .await;
    let void = stripe.calls().into_iter().rfind(|c| c.path == "/v1/refunds").unwrap();
    assert_eq!(void.key.as_deref(), Some(format!("order:{id}:charge:void").as_str()));
    assert_eq!(void.form["payment_intent"], "pi_1");
    assert!(!void.form.contains_key("amount"), "the rest of it: {void:?}");
    assert_eq!(stripe.refunds(), 2);
}

/// An upload cut off before it was complete stays `uploading`; the sweep
/// queued with it drops it (and its chunks), and leaves finished imports be.
#[tokio::test]
async fn an_upload_cut_off_is_swept_and_a_finished_import_is_not() {
    use nexus::platform::jobs::{NewJob, enqueue};
    use sea_orm::{ActiveValue::Set, EntityTrait};
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "TEE", 10).await;
    let good = format!("{CSV_HEADER}\n9001,2026-11-20T09:30:00Z,EUR,C-1,ada@example.com,Ada,TEE,,2499,1\n");
    let done = imported(&app, &tenant, &s.warehouse, &good).await;
    // Each upload queued its sweep for an hour later.
    let sweeps = app.jobs(tenant.id, "orders.import_sweep").await;
    assert_eq!(sweeps.len(), 1);
    assert!(sweeps[0].run_at > chrono::Utc::now() + chrono::Duration::minutes(59));
    let cut = uuid::Uuid::now_v7();
    let now = chrono::Utc::now();
    entity::order_import::Entity::insert(entity::order_import::ActiveModel {
        id: Set(cut),
        tenant_id: Set(tenant.id),
        warehouse_id: Set(s.warehouse.parse().unwrap()),
        send_receipts: Set(false),
        filename: Set("cut.csv".into()),
        size_bytes: Set(0),
        status: Set("uploading".into()),
        rows_done: Set(0),
        created: Set(0),
        skipped: Set(0),
        error_count: Set(0),
        errors: Set(json!([])),
        failure_reason: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        finished_at: Set(None),
    })
    .exec_without_returning(&app.state.db)
    .await
    .unwrap();
    for id in [json!(cut), done["id"].clone()] {
        let job = NewJob::new("orders.import_sweep", json!({"import_id": id})).tenant(tenant.id);
        enqueue(&app.state.db, job).await.unwrap();
    }
    app.state.wakeup.wake();
    app.drained().await;
    let list = json(app.get("/api/v1/orders/imports", &tenant.token).await).await;
    let ids: Vec<&Value> = list["data"].as_array().unwrap().iter().map(|i| &i["id"]).collect();
    assert_eq!(ids, [&done["id"]]);
}

/// A tiny seeded generator (xorshift), so the workload is the same each run.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A seeded workload on a fresh tenant: products with little stock (so
/// some orders fail), four customers, orders in EUR and USD, and refunds,
/// partial and full, of some completed orders; run to completion.
async fn workload(app: &TestApp, tenant: &Tenant, seed: u64) {
    let id = |v: Value| v["data"]["id"].as_str().unwrap().to_owned();
    let s = shop(app, tenant, "P-0", 6).await;
    let mut products = vec!["P-0".to_owned()];
    for p in 1..3 {
        let sku = format!("P-{p}");
        let product = id(json(
            app.post(
                "/api/v1/products",
                &tenant.token,
                json!({"sku": sku, "name": "Thing", "unit_price": 100, "currency": "EUR"}),
            )
            .await,
        )
        .await);
        let body =
            json!({"product_id": product, "warehouse_id": s.warehouse, "quantity": 6, "reason": "count"});
        assert_eq!(app.post("/api/v1/stock/adjustments", &tenant.token, body).await.status(), 200);
        products.push(sku);
    }
    let mut customers = vec![s.customer.clone()];
    for c in 1..4 {
        let body = json!({"email": format!("c{c}@example.com"), "name": format!("Customer {c}")});
        customers.push(id(json(app.post("/api/v1/customers", &tenant.token, body).await).await));
    }
    let mut rng = Seeded(seed);
    for _ in 0..24 {
        let lines: Vec<Value> = (0..1 + rng.below(2))
            .map(|i| {
                json!({"sku": products[((rng.below(3) + i) % 3) as usize], "quantity": 1 + rng.below(3),
                    "unit_price": 100 * (1 + rng.below(20))})
            })
            .collect();
        let mut lines = lines;
        lines.dedup_by(|a, b| a["sku"] == b["sku"]);
        let currency = if rng.below(3) == 0 { "USD" } else { "EUR" };
        let body = json!({"customer_id": customers[rng.below(4) as usize], "warehouse_id": s.warehouse,
            "currency": currency, "lines": lines});
        place(app, &tenant.token, body).await;
    }
    app.drained().await;
    let done = json(app.get("/api/v1/orders?status=completed&limit=100", &tenant.token).await).await;
    for (n, order) in done["data"].as_array().unwrap().iter().enumerate() {
        let total = order["total"].as_i64().unwrap();
        let amount = match rng.below(3) {
            0 => continue,
            1 => total / 3 + 1,
            _ => total,
        };
        let res =
            refund(app, &tenant.token, order["id"].as_str().unwrap(), &format!("kpi-{n}"), amount).await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    app.drained().await;
}

/// What the KPIs and leaderboards must say, recomputed from the orders,
/// lines and refunds tables: (orders, failed, unique customers, refunds,
/// per currency (orders, gross, refunds, refunded)), the spends per
/// currency and customer (spend, orders) and the quantities per product.
#[allow(clippy::type_complexity)]
async fn recomputed(
    app: &TestApp,
    tenant: &Tenant,
) -> (
    Value,
    std::collections::BTreeMap<(String, String), (i64, i64)>,
    std::collections::BTreeMap<String, (i64, i64)>,
) {
    use std::collections::{BTreeMap, BTreeSet};
    let orders = SystemScope
        .find::<entity::order::Entity>()
        .filter(entity::order::Column::TenantId.eq(tenant.id))
        .all(&app.state.db)
        .await
        .unwrap();
    let refunds = SystemScope
        .find::<entity::order_refund::Entity>()
        .filter(entity::order_refund::Column::TenantId.eq(tenant.id))
        .filter(entity::order_refund::Column::Status.eq("processed"))
        .all(&app.state.db)
        .await
        .unwrap();
    let lines = SystemScope
        .find::<entity::order_line::Entity>()
        .filter(entity::order_line::Column::TenantId.eq(tenant.id))
        .all(&app.state.db)
        .await
        .unwrap();
    let completed: Vec<_> = orders.iter().filter(|o| o.status == "completed").collect();
    let mut currencies: BTreeMap<String, [i64; 4]> = BTreeMap::new();
    let mut spends = BTreeMap::new();
    for o in &completed {
        let c = currencies.entry(o.currency.clone()).or_default();
        c[0] += 1;
        c[1] += o.total;
        let s = spends.entry((o.currency.clone(), o.customer_id.to_string())).or_insert((0, 0));
        s.0 += o.total - o.refunded;
        s.1 += 1;
    }
    for r in &refunds {
        let c = currencies.entry(r.currency.clone()).or_default();
        c[2] += 1;
        c[3] += r.amount;
    }
    let mut sold = BTreeMap::new();
    for l in &lines {
        if completed.iter().any(|o| o.id == l.order_id) {
            let s = sold.entry(l.product_id.to_string()).or_insert((0, 0));
            s.0 += l.quantity;
            s.1 += 1;
        }
    }
    let currencies: Vec<Value> = currencies
        .into_iter()
        .map(|(currency, [orders, gross, refunds, refunded])| {
            json!({"currency": currency, "orders": orders, "gross": gross, "refunds": refunds,
                "refunded": refunded, "revenue": gross - refunded,
                "average_order_value": if orders > 0 { gross / orders } else { 0 }})
        })
        .collect();
    let customers: BTreeSet<_> = completed.iter().map(|o| o.customer_id).collect();
    let kpis = json!({"orders": completed.len(), "failed": orders.iter().filter(|o| o.status == "failed").count(),
        "unique_customers": customers.len(), "refunds": refunds.len(), "currencies": currencies});
    (kpis, spends, sold)
}

/// The KPIs (realtime and by day) and the leaderboards agree with the
/// recomputation from the tables after a seeded workload.
async fn agrees_with_the_tables(app: &TestApp, tenant: &Tenant) {
    let (expected, spends, sold) = recomputed(app, tenant).await;
    assert!(expected["failed"].as_i64().unwrap() > 0, "the workload has failures: {expected}");
    assert!(expected["refunds"].as_i64().unwrap() > 0, "the workload has refunds: {expected}");
    let mut realtime =
        json(app.get("/api/v1/orders/kpis/realtime?minutes=60", &tenant.token).await).await["data"].clone();
    realtime.as_object_mut().unwrap().retain(|k, _| k != "from" && k != "to");
    assert_eq!(realtime, expected);

    // By day: yesterday to tomorrow (the run may cross midnight), summed.
    let today = chrono::Utc::now().date_naive();
    let (from, to) = (today.pred_opt().unwrap(), today.succ_opt().unwrap());
    let days = json(app.get(&format!("/api/v1/orders/kpis?from={from}&to={to}"), &tenant.token).await).await;
    let days = days["data"].as_array().unwrap();
    assert_eq!(days.len(), 3);
    assert_eq!(days[0]["from"], json!(format!("{from}T00:00:00Z")));
    for field in ["orders", "failed", "refunds"] {
        let sum: i64 = days.iter().map(|d| d[field].as_i64().unwrap()).sum();
        assert_eq!(json!(sum), expected[field], "{field}");
    }

    for currency in ["EUR", "USD"] {
        let path = format!("/api/v1/orders/leaderboards/customers?currency={currency}&limit=100");
        let top = json(app.get(&path, &tenant.token).await).await["data"].clone();
        let top = top.as_array().unwrap();
        let want: Vec<_> = spends.iter().filter(|((c, _), _)| c == currency).collect();
        assert_eq!(top.len(), want.len());
        for entry in top {
            let customer = entry["customer_id"].as_str().unwrap();
            let (spend, orders) = spends[&(currency.to_owned(), customer.to_owned())];
            assert_eq!(
                (entry["spend"].as_i64().unwrap(), entry["orders"].as_i64().unwrap()),
                (spend, orders)
            );
            let rank = 1 + want.iter().filter(|(_, s)| s.0 > spend).count() as i64;
            assert_eq!(entry["rank"], rank);
            let path = format!("/api/v1/customers/{customer}/rank?currency={currency}");
            let one = json(app.get(&path, &tenant.token).await).await["data"].clone();
            assert_eq!(one, *entry);
        }
        let spends: Vec<i64> = top.iter().map(|e| e["spend"].as_i64().unwrap()).collect();
        assert!(spends.windows(2).all(|w| w[0] >= w[1]), "best first: {spends:?}");
    }
    let best = json(app.get("/api/v1/orders/leaderboards/products?limit=100", &tenant.token).await).await;
    let best = best["data"].as_array().unwrap();
    assert_eq!(best.len(), sold.len());
    for entry in best {
        let (quantity, orders) = sold[entry["product_id"].as_str().unwrap()];
        assert_eq!(
            (entry["quantity"].as_i64().unwrap(), entry["orders"].as_i64().unwrap()),
            (quantity, orders)
        );
    }
    let top = json(app.get("/api/v1/orders/leaderboards/products?limit=1", &tenant.token).await).await;
    assert_eq!(top["data"].as_array().unwrap().len(), 1);
    assert_eq!(top["data"][0]["rank"], 1);
}

#[tokio::test]
async fn kpis_and_leaderboards_agree_with_the_orders_table_after_a_seeded_workload() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    workload(&app, &tenant, 0x5eed_0001).await;
    agrees_with_the_tables(&app, &tenant).await;

    // Another tenant sees none of it, and not the first one's customers.
    let other = app.register().await;
    let kpis = json(app.get("/api/v1/orders/kpis/realtime?minutes=60", &other.token).await).await;
    assert_eq!((kpis["data"]["orders"].clone(), kpis["data"]["currencies"].clone()), (json!(0), json!([])));
    let top = json(app.get("/api/v1/orders/leaderboards/customers?currency=EUR", &other.token).await).await;
    assert_eq!(top["data"], json!([]));
    let best = json(app.get("/api/v1/orders/leaderboards/products", &other.token).await).await;
    assert_eq!(best["data"], json!([]));
    let first = &top_customer(&app, &tenant).await;
    let res = app.get(&format!("/api/v1/customers/{first}/rank?currency=EUR"), &other.token).await;
    assert_problem(res, 404, "not_found").await;
}

async fn top_customer(app: &TestApp, tenant: &Tenant) -> String {
    let top =
        json(app.get("/api/v1/orders/leaderboards/customers?currency=EUR&limit=1", &tenant.token).await)
            .await;
    top["data"][0]["customer_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn kpi_and_leaderboard_queries_name_the_bad_field_over_rest_and_graphql() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    for (query, field) in [
        ("kpis?from=2026-13-01&to=2026-12-01", "from"),
        ("kpis?from=2026-01-01&to=yesterday", "to"),
        ("kpis?from=2026-02-01&to=2026-01-31", "to"),
        ("kpis?from=2025-01-01&to=2026-01-02", "to"),
        ("kpis/realtime?minutes=0", "minutes"),
        ("kpis/realtime?minutes=1441", "minutes"),
        ("leaderboards/customers?currency=eur", "currency"),
        ("leaderboards/customers?currency=EUR&limit=0", "limit"),
        ("leaderboards/products?limit=101", "limit"),
    ] {
        let res = app.get(&format!("/api/v1/orders/{query}"), &tenant.token).await;
        let body = assert_problem(res, 400, "invalid_query").await;
        assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
    }
    let full_year = app.get("/api/v1/orders/kpis?from=2024-01-01&to=2024-12-31", &tenant.token).await;
    assert_eq!(json(full_year).await["data"].as_array().unwrap().len(), 366);

    for (query, field) in [
        (r#"{ orderKpis(from: "2026-02-01", to: "2026-01-31") { orders } }"#, "to"),
        ("{ orderKpisRealtime(minutes: 0) { orders } }", "minutes"),
        (r#"{ topCustomers(currency: "EUR", limit: 0) { rank } }"#, "limit"),
        ("{ bestsellers(limit: 101) { rank } }", "limit"),
    ] {
        let body = graphql(&app, &tenant.token, query, json!({})).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "invalid_query", "{query}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["errors"][0]["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn kpis_and_leaderboards_need_orders_read() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "MUG", 5).await;
    let id = place(&app, &tenant.token, order_body(&s, "MUG", 2)).await["id"].as_str().unwrap().to_owned();
    reaches(&app, &tenant, &id, "completed").await;

    let (_, viewer) = app.user_with_roles(&tenant, &["viewer"]).await;
    let rank =
        json(app.get(&format!("/api/v1/customers/{}/rank?currency=EUR", s.customer), &viewer).await).await;
    assert_eq!(rank["data"], json!({"customer_id": s.customer, "rank": 1, "spend": 4998, "orders": 1}));
    let query = format!(
        r#"{{ customerRank(customerId: "{}", currency: "EUR") {{ rank spend }} bestsellers {{ quantity }} orderKpisRealtime(minutes: 5) {{ orders uniqueCustomers currencies {{ gross averageOrderValue }} }} }}"#,
        s.customer
    );
    let body = graphql(&app, &viewer, &query, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["customerRank"], json!({"rank": 1, "spend": 4998}));
    assert_eq!(body["data"]["bestsellers"], json!([{"quantity": 2}]));
    assert_eq!(
        body["data"]["orderKpisRealtime"],
        json!({"orders": 1, "uniqueCustomers": 1, "currencies": [{"gross": 4998, "averageOrderValue": 4998}]})
    );

    let (_, nobody) = app.user_with_roles(&tenant, &[]).await;
    for path in [
        "/api/v1/orders/kpis?from=2026-01-01&to=2026-01-02".to_owned(),
        "/api/v1/orders/kpis/realtime?minutes=5".to_owned(),
        "/api/v1/orders/leaderboards/customers?currency=EUR".to_owned(),
        "/api/v1/orders/leaderboards/products".to_owned(),
        format!("/api/v1/customers/{}/rank?currency=EUR", s.customer),
    ] {
        assert_problem(app.get(&path, &nobody).await, 403, "forbidden").await;
    }
    let body = graphql(&app, &nobody, "{ bestsellers { rank } }", json!({})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "forbidden", "{body}");
}

/// Every key the Redis KPI store keeps for `tenant`, with its content
/// (hashes and sets sorted), but the rebuild lock.
async fn redis_kpis(app: &TestApp, tenant: &Tenant) -> std::collections::BTreeMap<String, Value> {
    let redis = app.state.redis.as_ref().expect("the app runs with Redis");
    let mut conn = redis.conn();
    let prefix = redis.key(&format!("kpi:{{{}}}:", tenant.id));
    let pattern = format!("{}*", prefix.replace('*', "\\*").replace('?', "\\?").replace('[', "\\["));
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.extend(found);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut out = std::collections::BTreeMap::new();
    for key in keys {
        let name = key[prefix.len()..].to_owned();
        if name == "lock" {
            continue;
        }
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut conn).await.unwrap();
        let value = match kind.as_str() {
            "hash" => {
                let h: std::collections::BTreeMap<String, i64> =
                    redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await.unwrap();
                json!(h)
            }
            "set" => {
                let s: std::collections::BTreeSet<String> =
                    redis::cmd("SMEMBERS").arg(&key).query_async(&mut conn).await.unwrap();
                json!(s)
            }
            "zset" => {
                let z: Vec<(String, i64)> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                json!(z.into_iter().collect::<std::collections::BTreeMap<_, _>>())
            }
            _ => {
                let s: String = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
                json!(s)
            }
        };
        out.insert(name, value);
    }
    out
}

/// The Redis state itself (not what a read falling back to the database
/// would say) agrees with the recomputation from the tables.
async fn redis_agrees_with_the_tables(app: &TestApp, tenant: &Tenant) {
    use std::collections::{BTreeMap, BTreeSet};
    let (expected, spends, sold) = recomputed(app, tenant).await;
    let state = redis_kpis(app, tenant).await;
    assert_eq!(state.get("built"), Some(&json!("1")), "{state:?}");
    let days: Vec<&Value> = state.iter().filter(|(k, _)| k.starts_with("d:")).map(|(_, v)| v).collect();
    let sum = |field: &str| days.iter().map(|d| d[field].as_i64().unwrap_or(0)).sum::<i64>();
    for field in ["orders", "failed", "refunds"] {
        assert_eq!(json!(sum(field)), expected[field], "{field}");
    }
    for c in expected["currencies"].as_array().unwrap() {
        let cur = c["currency"].as_str().unwrap();
        let got = [
            sum(&format!("o:{cur}")),
            sum(&format!("g:{cur}")),
            sum(&format!("n:{cur}")),
            sum(&format!("r:{cur}")),
        ];
        assert_eq!(json!(got), json!([c["orders"], c["gross"], c["refunds"], c["refunded"]]), "{cur}");
    }
    let customers: BTreeSet<&str> = state
        .iter()
        .filter(|(k, _)| k.starts_with("c:"))
        .flat_map(|(_, v)| v.as_array().unwrap().iter().map(|c| c.as_str().unwrap()))
        .collect();
    assert_eq!(json!(customers.len()), expected["unique_customers"]);
    for currency in ["EUR", "USD"] {
        let want: BTreeMap<&str, (i64, i64)> = spends
            .iter()
            .filter(|((c, _), _)| c == currency)
            .map(|((_, customer), s)| (customer.as_str(), *s))
            .collect();
        let board = state.get(&format!("spend:{currency}")).cloned().unwrap_or(json!({}));
        let counts = state.get(&format!("spend_orders:{currency}")).cloned().unwrap_or(json!({}));
        let got: BTreeMap<&str, (i64, i64)> = board
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), (v.as_i64().unwrap(), counts[k].as_i64().unwrap())))
            .collect();
        assert_eq!(got, want, "{currency}");
    }
    let got: BTreeMap<String, (i64, i64)> = state["sold"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), (v.as_i64().unwrap(), state["sold_orders"][k].as_i64().unwrap())))
        .collect();
    assert_eq!(got, sold);
}

/// The seeded workload on PostgreSQL + Redis: the Redis state, the answers
/// of the app using it, and those of an instance without Redis (exact
/// database aggregates) all agree with the tables. Applying every fact
/// again, twice and concurrently, changes nothing; a wiped Redis is
/// answered from the database and restored exactly by a rebuild.
#[tokio::test]
#[ignore = "needs Redis: set NEXUS_TEST_REDIS_URL and run with --include-ignored (.ci/run does)"]
async fn the_redis_kpis_agree_with_the_tables_count_each_fact_once_and_rebuild_after_a_wipe() {
    use nexus::modules::orders::kpis_redis::{Fact, RedisAnalytics};
    use nexus::platform::tenancy::TenantScope;
    std::env::var("NEXUS_TEST_REDIS_URL").expect("this test needs Redis");
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    workload(&app, &tenant, 0x5eed_0002).await;
    redis_agrees_with_the_tables(&app, &tenant).await;
    agrees_with_the_tables(&app, &tenant).await;
    let exact = app.sibling_adjusted(|f| f.merge(("redis_url", ""))).await;
    assert!(exact.state.redis.is_none());
    agrees_with_the_tables(&exact, &tenant).await;

    // Every completion, failure and refund applied again, twice at once.
    let before = redis_kpis(&app, &tenant).await;
    let store = RedisAnalytics::new(app.state.redis.clone().unwrap(), app.state.db.clone());
    let scope = TenantScope::new(tenant.id);
    let orders = SystemScope
        .find::<entity::order::Entity>()
        .filter(entity::order::Column::TenantId.eq(tenant.id))
        .all(&app.state.db)
        .await
        .unwrap();
    let refunds = SystemScope
        .find::<entity::order_refund::Entity>()
        .filter(entity::order_refund::Column::TenantId.eq(tenant.id))
        .all(&app.state.db)
        .await
        .unwrap();
    let facts: Vec<Fact> =
        orders.iter().map(|o| Fact::Order(o.id)).chain(refunds.iter().map(|r| Fact::Refund(r.id))).collect();
    assert!(facts.len() > 20);
    for fact in facts {
        let (a, b) = tokio::join!(store.apply(scope, fact), store.apply(scope, fact));
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    }
    assert_eq!(redis_kpis(&app, &tenant).await, before);

    // The reads come from Redis: what is changed there shows.
    let redis = app.state.redis.as_ref().unwrap();
    let mut conn = redis.conn();
    let key = |name: &str| redis.key(&format!("kpi:{{{}}}:{name}", tenant.id));
    let day = before.keys().find(|k| k.starts_with("d:")).unwrap()[2..].to_owned();
    let path = format!("/api/v1/orders/kpis?from={day}&to={day}");
    let orders_of_day =
        json(app.get(&path, &tenant.token).await).await["data"][0]["orders"].as_i64().unwrap();
    let customer = top_customer(&app, &tenant).await;
    let rank_path = format!("/api/v1/customers/{customer}/rank?currency=EUR");
    let spend = json(app.get(&rank_path, &tenant.token).await).await["data"]["spend"].as_i64().unwrap();
    let best = json(app.get("/api/v1/orders/leaderboards/products?limit=1", &tenant.token).await).await;
    let product = best["data"][0]["product_id"].as_str().unwrap().to_owned();
    let sold = best["data"][0]["quantity"].as_i64().unwrap();
    let mut pipe = redis::pipe();
    pipe.cmd("HINCRBY").arg(key(&format!("d:{day}"))).arg("orders").arg(1000).ignore();
    pipe.cmd("ZINCRBY").arg(key("spend:EUR")).arg(1000).arg(&customer).ignore();
    pipe.cmd("ZINCRBY").arg(key("sold")).arg(1000).arg(&product).ignore();
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    let days = json(app.get(&path, &tenant.token).await).await;
    assert_eq!(days["data"][0]["orders"].as_i64().unwrap(), orders_of_day + 1000);
    let rank = json(app.get(&rank_path, &tenant.token).await).await;
    assert_eq!(
        (rank["data"]["rank"].clone(), rank["data"]["spend"].as_i64().unwrap()),
        (json!(1), spend + 1000)
    );
    assert_eq!(top_customer(&app, &tenant).await, customer);
    let best = json(app.get("/api/v1/orders/leaderboards/products?limit=1", &tenant.token).await).await;
    assert_eq!(best["data"][0]["quantity"].as_i64().unwrap(), sold + 1000);

    // Wiped: the reads are answered from the database, exactly; a rebuild
    // restores every key as it was.
    let keys: Vec<String> = before.keys().map(|k| key(k)).collect();
    let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap();
    assert!(redis_kpis(&app, &tenant).await.is_empty());
    agrees_with_the_tables(&app, &tenant).await;
    let res = app.post("/api/v1/orders/kpis/rebuild", &tenant.token, json!({})).await;
    assert_eq!(res.status(), 200);
    let body = json(res).await;
    let settled = orders.iter().filter(|o| o.status == "completed" || o.status == "failed").count();
    let processed = refunds.iter().filter(|r| r.status == "processed").count();
    assert_eq!(body["data"], json!({"backend": "redis", "orders": settled, "refunds": processed}));
    assert_eq!(redis_kpis(&app, &tenant).await, before);

    // GraphQL rebuilds the same way; a viewer may not.
    let body =
        graphql(&app, &tenant.token, "mutation { rebuildOrderKpis { backend orders refunds } }", json!({}))
            .await;
    assert_eq!(
        body["data"]["rebuildOrderKpis"],
        json!({"backend": "redis", "orders": settled, "refunds": processed})
    );
    assert_eq!(redis_kpis(&app, &tenant).await, before);
    let (_, viewer) = app.user_with_roles(&tenant, &["viewer"]).await;
    assert_problem(app.post("/api/v1/orders/kpis/rebuild", &viewer, json!({})).await, 403, "forbidden").await;
}

/// With Redis configured but down, orders still complete, the KPIs are
/// answered from the database at once, and a rebuild answers 503.
#[tokio::test]
async fn with_redis_down_orders_complete_and_the_kpis_come_from_the_database() {
    // Nothing listens on port 1: every Redis call fails at once.
    let app = TestApp::spawn_adjusted(|f| f.merge(("redis_url", "redis://127.0.0.1:1"))).await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "MUG", 5).await;
    let id = place(&app, &tenant.token, order_body(&s, "MUG", 2)).await["id"].as_str().unwrap().to_owned();
    reaches(&app, &tenant, &id, "completed").await;

    let started = std::time::Instant::now();
    let today = chrono::Utc::now().date_naive();
    let days =
        json(app.get(&format!("/api/v1/orders/kpis?from={today}&to={today}"), &tenant.token).await).await;
    assert_eq!(days["data"][0]["orders"], 1, "{days}");
    let rank =
        json(app.get(&format!("/api/v1/customers/{}/rank?currency=EUR", s.customer), &tenant.token).await)
            .await;
    assert_eq!(rank["data"], json!({"customer_id": s.customer, "rank": 1, "spend": 4998, "orders": 1}));
    let best = json(app.get("/api/v1/orders/leaderboards/products", &tenant.token).await).await;
    assert_eq!(best["data"][0]["quantity"], 2);
    let top = json(app.get("/api/v1/orders/leaderboards/customers?currency=EUR", &tenant.token).await).await;
    assert_eq!(top["data"][0]["spend"], 4998);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    let res = app.post("/api/v1/orders/kpis/rebuild", &tenant.token, json!({})).await;
    assert_problem(res, 503, "service_unavailable").await;
}

/// Without Redis there is nothing to rebuild: the aggregates are exact.
#[tokio::test]
async fn without_redis_a_rebuild_has_nothing_to_do() {
    let app = TestApp::spawn_adjusted(|f| f.merge(("redis_url", ""))).await;
    let tenant = app.register().await;
    let res = app.post("/api/v1/orders/kpis/rebuild", &tenant.token, json!({})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["data"], json!({"backend": "database", "orders": 0, "refunds": 0}));
}

/// The endpoint secret the Stripe callbacks of these tests are signed with.
const WHSEC: &str = "whsec_nexus_test";

/// An app whose payments go to `stripe` and whose Stripe callbacks verify
/// with [`WHSEC`] (signatures at most `tolerance` seconds old).
async fn with_stripe_callbacks(stripe: &crate::fake_stripe::FakeStripe, tolerance: u32) -> TestApp {
    let url = stripe.url.clone();
    TestApp::spawn_adjusted(move |f| {
        f.merge(("modules.orders.gateway", "stripe"))
            .merge(("modules.orders.stripe.api_base", url))
            .merge(("modules.orders.stripe.secret_key", crate::fake_stripe::SECRET))
            .merge(("modules.orders.stripe.webhook_secret", WHSEC))
            .merge(("modules.orders.stripe.webhook_tolerance_seconds", tolerance))
    })
    .await
}

/// `Stripe-Signature` for `body` at unix time `t`, as Stripe computes it.
fn stripe_signature(secret: &str, t: i64, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A Stripe event of `kind` about `object`.
fn stripe_event(id: &str, kind: &str, object: Value) -> String {
    json!({"id": id, "object": "event", "type": kind, "api_version": "2024-06-20", "livemode": false,
        "created": chrono::Utc::now().timestamp(), "data": {"object": object}})
    .to_string()
}

/// POST `body` to the tenant's Stripe callback URL with `signature`.
async fn callback(
    app: &TestApp,
    tenant: uuid::Uuid,
    signature: Option<String>,
    body: &str,
) -> reqwest::Response {
    let mut req = app
        .request(Method::POST, &format!("/api/v1/orders/payments/stripe/callback/{tenant}"), None)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(body.to_owned());
    if let Some(signature) = signature {
        req = req.header("Stripe-Signature", signature);
    }
    req.send().await.unwrap()
}

/// POST `body` signed now with [`WHSEC`].
async fn signed_callback(app: &TestApp, tenant: uuid::Uuid, body: &str) -> reqwest::Response {
    let signature = stripe_signature(WHSEC, chrono::Utc::now().timestamp(), body);
    callback(app, tenant, Some(signature), body).await
}

/// An order whose charge went to a Stripe that is down: `reserved`, its
/// payment `pending` (sent, unanswered).
async fn unanswered(app: &TestApp, tenant: &Tenant, s: &Shop, sku: &str) -> String {
    let placed = place(app, &tenant.token, order_body(s, sku, 1)).await;
    let id = placed["id"].as_str().unwrap().to_owned();
    eventually(10, || async {
        let order = get_order(app, tenant, &id).await;
        (order["status"] == "reserved" && order["payments"][0]["status"] == "pending").then_some(())
    })
    .await;
    id
}

/// The outcomes of the tenant's logged Stripe callbacks, oldest first, as
/// `GET /api/v1/orders/payments/callbacks` lists them (checked against
/// the GraphQL field and the database).
async fn callback_log(app: &TestApp, tenant: &Tenant) -> Vec<String> {
    use entity::order_gateway_callback::{Column, Entity};
    let listed =
        json(app.get("/api/v1/orders/payments/callbacks?sort=received_at&limit=100", &tenant.token).await)
            .await;
    let outcomes: Vec<String> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"].as_str().unwrap().to_owned())
        .collect();
    let stored: Vec<String> = SystemScope
        .find::<Entity>()
        .filter(Column::TenantId.eq(tenant.id))
        .order_by_asc(Column::Id)
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.outcome)
        .collect();
    assert_eq!(outcomes, stored, "the list is the tenant's log, in order");
    let query = json!({"query": "{ orderGatewayCallbacks(first: 100) { items { outcome gateway } } }"});
    let graphql = json(app.post("/graphql", &tenant.token, query).await).await;
    let mut newest_first: Vec<String> = graphql["data"]["orderGatewayCallbacks"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|c| assert_eq!(c["gateway"], "stripe"))
        .map(|c| c["outcome"].as_str().unwrap().to_owned())
        .collect();
    newest_first.reverse();
    assert_eq!(newest_first, outcomes, "GraphQL lists the same callbacks");
    outcomes
}

#[tokio::test]
async fn a_signed_stripe_callback_settles_an_unanswered_payment_once() {
    let stripe = crate::fake_stripe::FakeStripe::start(0).await;
    stripe.set_down(true);
    let app = with_stripe_callbacks(&stripe, 300).await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "DESK", 2).await;
    let id = unanswered(&app, &tenant, &s, "DESK").await;
    let intent = json!({"id": "pi_cb_1", "object": "payment_intent", "amount": 2499, "currency": "eur",
        "status": "succeeded", "metadata": {"nexus_key": format!("order:{id}:charge")}});
    let event = stripe_event("evt_1", "payment_intent.succeeded", intent.clone());
    let res = signed_callback(&app, tenant.id, &event).await;
    assert_eq!(res.status(), 200);
    let received = json(res).await["data"].clone();
    assert_eq!(
        (received["event_id"].as_str(), received["event_type"].as_str(), received["outcome"].as_str()),
        (Some("evt_1"), Some("payment_intent.succeeded"), Some("applied"))
    );
    let done = reaches(&app, &tenant, &id, "completed").await;
    assert_eq!(done["payments"].as_array().unwrap().len(), 1);
    assert_eq!(done["payments"][0]["status"], "captured");
    assert_eq!(done["payments"][0]["gateway_reference"], "pi_cb_1");
    assert_eq!(statuses(&done), ["pending", "reserved", "paid", "fulfilled", "completed"]);
    assert_eq!(level(&app, &tenant, &s).await, (1, 0));

    // The same event again: a replay, refused; nothing changes.
    let res = signed_callback(&app, tenant.id, &event).await;
    assert_problem(res, 401, "unauthenticated").await;
    // Another event about the same intent: applied already, unchanged.
    let again = stripe_event("evt_2", "payment_intent.succeeded", intent);
    let res = signed_callback(&app, tenant.id, &again).await;
    assert_eq!(json(res).await["data"]["outcome"], "unchanged");
    // Nor does a late failure of it undo the capture.
    let late = json!({"id": "pi_cb_1", "object": "payment_intent", "status": "requires_payment_method",
        "metadata": {"nexus_key": format!("order:{id}:charge")}});
    let res =
        signed_callback(&app, tenant.id, &stripe_event("evt_3", "payment_intent.payment_failed", late)).await;
    assert_eq!(json(res).await["data"]["outcome"], "unchanged");
    // An event Nexus does not act on, and one about nothing of this tenant.
    let other = stripe_event("evt_4", "customer.created", json!({"id": "cus_1", "object": "customer"}));
    assert_eq!(json(signed_callback(&app, tenant.id, &other).await).await["data"]["outcome"], "ignored");
    let stranger = stripe_event(
        "evt_5",
        "payment_intent.succeeded",
        json!({"id": "pi_elsewhere", "object": "payment_intent", "status": "succeeded"}),
    );
    assert_eq!(json(signed_callback(&app, tenant.id, &stranger).await).await["data"]["outcome"], "ignored");
    let after = get_order(&app, &tenant, &id).await;
    assert_eq!(
        (after["history"].clone(), after["payments"].clone()),
        (done["history"].clone(), done["payments"].clone())
    );
    assert_eq!(
        callback_log(&app, &tenant).await,
        ["applied", "replayed", "unchanged", "unchanged", "ignored", "ignored"]
    );
    assert_eq!(stripe.intents(), 0, "Stripe was down: the callback settled it");
}

#[tokio::test]
async fn forged_stale_and_misdirected_stripe_callbacks_are_refused_and_change_nothing() {
    let stripe = crate::fake_stripe::FakeStripe::start(0).await;
    stripe.set_down(true);
    let app = with_stripe_callbacks(&stripe, 60).await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "CHAIR", 2).await;
    let id = unanswered(&app, &tenant, &s, "CHAIR").await;
    let before = get_order(&app, &tenant, &id).await;
    let intent = json!({"id": "pi_cb_2", "object": "payment_intent", "status": "succeeded",
        "metadata": {"nexus_key": format!("order:{id}:charge")}});
    let event = stripe_event("evt_forged", "payment_intent.succeeded", intent);
    let now = chrono::Utc::now().timestamp();
    let good = stripe_signature(WHSEC, now, &event);
    let refusals = [
        // No signature, another secret, a tampered body, a garbled header.
        (None, event.clone()),
        (Some(stripe_signature("whsec_attacker", now, &event)), event.clone()),
        (Some(good.clone()), event.replace("pi_cb_2", "pi_cb_3")),
        (Some(format!("t={now},v1=not-hex")), event.clone()),
        (Some(good.replace("v1=", "v0=")), event.clone()),
        // Signed, but older or newer than the 60 s tolerance.
        (Some(stripe_signature(WHSEC, now - 100, &event)), event.clone()),
        (Some(stripe_signature(WHSEC, now + 100, &event)), event.clone()),
    ];
    for (signature, body) in refusals {
        let problem =
            assert_problem(callback(&app, tenant.id, signature, &body).await, 401, "unauthenticated").await;
        assert!(problem["detail"].as_str().unwrap().starts_with("the callback does not verify"), "{problem}");
    }
    assert_eq!(
        callback_log(&app, &tenant).await,
        ["forged", "forged", "forged", "forged", "forged", "stale", "stale"]
    );
    let stale = json(app.get("/api/v1/orders/payments/callbacks?outcome=stale", &tenant.token).await).await;
    assert_eq!(stale["data"].as_array().unwrap().len(), 2, "{stale}");
    assert_eq!(stale["data"][0]["verified"], false);
    let res = app.get("/api/v1/orders/payments/callbacks?outcome=lost", &tenant.token).await;
    let problem = assert_problem(res, 400, "invalid_query").await;
    assert_eq!(problem["errors"][0]["field"], "outcome", "{problem}");
    // Signed for this tenant, sent to another's URL: not verified there
    // either way, and it finds nothing of the other tenant.
    let other = app.register().await;
    let res = signed_callback(&app, other.id, &event).await;
    assert_eq!(json(res).await["data"]["outcome"], "ignored");
    assert_eq!(callback_log(&app, &other).await, ["ignored"], "each tenant lists its own callbacks");
    // An unknown tenant, and a body that is not JSON.
    assert_problem(signed_callback(&app, uuid::Uuid::now_v7(), &event).await, 404, "not_found").await;
    let res = app
        .request(Method::POST, &format!("/api/v1/orders/payments/stripe/callback/{}", tenant.id), None)
        .header("Content-Type", "text/plain")
        .header("Stripe-Signature", good.clone())
        .body(event.clone())
        .send()
        .await
        .unwrap();
    assert_problem(res, 415, "unsupported_media_type").await;
    let after = get_order(&app, &tenant, &id).await;
    assert_eq!(after["status"], "reserved");
    assert_eq!(
        (after["payments"].clone(), after["history"].clone()),
        (before["payments"].clone(), before["history"].clone())
    );
    assert_eq!(level(&app, &tenant, &s).await, (2, 1));

    // A signature within the tolerance, for a failed payment: the order
    // fails and its stock is released. The NUL in its message (PostgreSQL
    // refuses it) is kept as U+FFFD.
    let failed = json!({"id": "pi_cb_2", "object": "payment_intent", "status": "requires_payment_method",
        "last_payment_error": {"message": "Your card has\u{0} insufficient funds."},
        "metadata": {"nexus_key": format!("order:{id}:charge")}});
    let event = stripe_event("evt_failed", "payment_intent.payment_failed", failed);
    let res = callback(&app, tenant.id, Some(stripe_signature(WHSEC, now - 30, &event)), &event).await;
    assert_eq!(json(res).await["data"]["outcome"], "applied");
    let order = reaches(&app, &tenant, &id, "failed").await;
    assert_eq!(order["failure_reason"], "payment declined: Your card has\u{FFFD} insufficient funds.");
    assert_eq!(order["payments"][0]["status"], "declined");
    assert_eq!(order["payments"][0]["gateway_reference"], "pi_cb_2");
    assert_eq!(level(&app, &tenant, &s).await, (2, 0));
}

#[tokio::test]
async fn stripe_refund_callbacks_settle_refunds_and_a_failed_refund_may_be_asked_again() {
    let stripe = crate::fake_stripe::FakeStripe::start(0).await;
    let app = with_stripe_callbacks(&stripe, 300).await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "RUG", 2).await;
    let placed = place(&app, &tenant.token, order_body(&s, "RUG", 2)).await;
    let id = placed["id"].as_str().unwrap();
    reaches(&app, &tenant, id, "completed").await;
    stripe.set_down(true);
    let res = refund(&app, &tenant.token, id, "r-1", 1000).await;
    let refund_id = json(res).await["data"]["id"].as_str().unwrap().to_owned();
    let object = |status: &str| {
        json!({"id": "re_cb_1", "object": "refund", "amount": 1000, "payment_intent": "pi_1",
            "status": status, "metadata": {"nexus_key": format!("refund:{refund_id}")}})
    };
    let res =
        signed_callback(&app, tenant.id, &stripe_event("evt_r1", "refund.updated", object("succeeded")))
            .await;
    assert_eq!(json(res).await["data"]["outcome"], "applied");
    let order = get_order(&app, &tenant, id).await;
    assert_eq!(order["refunds"][0]["status"], "processed");
    assert_eq!(order["refunds"][0]["gateway_reference"], "re_cb_1");
    assert_eq!(order["refunded"], 1000);
    // The charge's view of the same refund: applied already.
    let charge = json!({"id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount_refunded": 1000,
        "refunds": {"object": "list", "data": [object("succeeded")]}});
    let res = signed_callback(&app, tenant.id, &stripe_event("evt_r2", "charge.refunded", charge)).await;
    assert_eq!(json(res).await["data"]["outcome"], "unchanged");
    // The bank sends it back: the refund fails and its amount is free again.
    let failed = json!({"id": "re_cb_1", "object": "refund", "status": "failed", "failure_reason": "expired_or_canceled_card"});
    let res = signed_callback(&app, tenant.id, &stripe_event("evt_r3", "refund.updated", failed)).await;
    assert_eq!(json(res).await["data"]["outcome"], "applied");
    let order = get_order(&app, &tenant, id).await;
    assert_eq!(order["refunds"][0]["status"], "failed");
    assert_eq!(order["refunds"][0]["failure_reason"], "expired_or_canceled_card");
    assert_eq!(order["refunded"], 0);
    let events = order_events(&app, &tenant).await;
    assert_eq!(
        events.iter().filter(|e| e.starts_with("order.refund")).collect::<Vec<_>>(),
        ["order.refund_requested", "order.refunded", "order.refund_failed"]
    );
    // Stripe back up: the refund job, still retrying, finds it answered
    // and asks Stripe nothing; a new refund of the whole amount goes through.
    stripe.set_down(false);
    let res = refund(&app, &tenant.token, id, "r-2", 4998).await;
    assert_eq!(res.status(), 201);
    let second = json(res).await["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(refund_settles(&app, &tenant, id, &second).await["status"], "processed");
    assert_eq!(stripe.refunds(), 1, "only the second refund reached Stripe");
}

/// Stripe takes longer than the gateway's timeout to answer the charge
/// but has made it: the saga asks again with the same idempotency key and
/// gets the same PaymentIntent back; the customer is charged once.
#[tokio::test]
async fn a_charge_that_times_out_is_asked_again_with_the_same_key_and_charged_once() {
    let stripe = crate::fake_stripe::FakeStripe::start_slow(std::time::Duration::from_millis(1500)).await;
    let url = stripe.url.clone();
    let app = TestApp::spawn_adjusted(move |f| {
        f.merge(("modules.orders.gateway", "stripe"))
            .merge(("modules.orders.stripe.api_base", url))
            .merge(("modules.orders.stripe.secret_key", crate::fake_stripe::SECRET))
            .merge(("modules.orders.stripe.timeout_ms", 300))
    })
    .await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "OVEN", 1).await;
    let placed = place(&app, &tenant.token, order_body(&s, "OVEN", 1)).await;
    let id = placed["id"].as_str().unwrap();
    let done = reaches(&app, &tenant, id, "completed").await;
    let charges: Vec<_> = stripe.calls().into_iter().filter(|c| c.path == "/v1/payment_intents").collect();
    assert!(charges.len() >= 2, "asked again after the timeout: {charges:?}");
    let key = format!("order:{id}:charge");
    assert!(charges.iter().all(|c| c.key.as_deref() == Some(key.as_str())), "{charges:?}");
    assert_eq!(stripe.intents(), 1, "one PaymentIntent: charged once");
    assert_eq!(done["payments"].as_array().unwrap().len(), 1);
    assert_eq!(done["payments"][0]["status"], "captured");
    assert_eq!(done["payments"][0]["gateway_reference"], "pi_1");
    assert!(statuses(&done).contains(&"paid".to_owned()));
    assert_eq!(level(&app, &tenant, &s).await, (0, 0));
}

/// `nexus serve` as an operator runs it, over the database of `app`, with
/// a simulated gateway that takes `delay_ms` per call; returned once it
/// listens.
fn serve(app: &TestApp, dir: &std::path::Path, delay_ms: u64) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nexus"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("NEXUS_")) {
        cmd.env_remove(key);
    }
    let c = &app.config;
    cmd.arg("serve")
        .current_dir(dir)
        .env("RUST_LOG", "error")
        .env("NEXUS_BIND", format!("127.0.0.1:{port}"))
        .env("NEXUS_DATA_DIR", dir.display().to_string())
        .env("NEXUS_DATABASE_URL", c.database_url())
        .env("NEXUS_DATABASE__SCHEMA", &c.database.schema)
        .env("NEXUS_REDIS_URL", c.redis_url().unwrap_or_default())
        .env("NEXUS_JOBS__POLL_INTERVAL_MS", "20")
        .env("NEXUS_JOBS__RETRY_BASE_MS", "10")
        // A dead server's claimed jobs are taken over after this.
        .env("NEXUS_JOBS__LEASE_MS", "1500")
        .env("NEXUS_MODULES__ORDERS__SIMULATED__DELAY_MS", delay_ms.to_string())
        .env("NEXUS_MODULES__ORDERS__SIMULATED__SUCCESS_RATE", "0.8")
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("Nexus is running"), "{line}");
    // Keep reading: a closed pipe would fail the server's next line.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    child
}

/// The tenant's orders, by id, as the database holds them.
async fn stored_orders(
    app: &TestApp,
    tenant: &Tenant,
) -> std::collections::HashMap<uuid::Uuid, entity::order::Model> {
    use entity::order::{Column, Entity};
    let rows =
        SystemScope.find::<Entity>().filter(Column::TenantId.eq(tenant.id)).all(&app.state.db).await.unwrap();
    rows.into_iter().map(|o| (o.id, o)).collect()
}

/// The real server is killed (SIGKILL) while many sagas on contended SKUs
/// wait for a slow gateway; a new server on the same database carries
/// every order to a final state: none lost, no reservation left held, every
/// stock level the sum of its movements, nothing sold twice.
#[tokio::test]
async fn killing_the_server_mid_saga_loses_no_order_and_no_stock() {
    use entity::{order_line, order_payment, reservation, stock_level, stock_movement};
    // This process only places orders and looks: its workers are off.
    let app = TestApp::spawn_adjusted(|f| f.merge(("jobs.run_in_server", false))).await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, "HOT-A", 12).await;
    let mut products = std::collections::HashMap::from([("HOT-A".to_owned(), (s.product.clone(), 12))]);
    for (sku, stock) in [("HOT-B", 6), ("COLD", 500)] {
        let body = json!({"sku": sku, "name": sku, "unit_price": 1000, "currency": "EUR"});
        let product = json(app.post("/api/v1/products", &tenant.token, body).await).await["data"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let body =
            json!({"product_id": product, "warehouse_id": s.warehouse, "quantity": stock, "reason": "count"});
        assert_eq!(app.post("/api/v1/stock/adjustments", &tenant.token, body).await.status(), 200);
        products.insert(sku.to_owned(), (product, stock));
    }
    let dir = tempfile::tempdir().unwrap();
    // Payments slow enough that the 40 sagas take seconds, so the kill lands
    // among them even when this test's polls are late on a loaded machine.
    let mut first = serve(&app, dir.path(), 600);
    let mut placing = Vec::new();
    for i in 0..40i64 {
        let lines: Vec<Value> = [("HOT-A", 1 + i % 2), ("HOT-B", 1), ("COLD", 1 + i % 3)]
            .into_iter()
            .enumerate()
            .filter(|(n, _)| (i + *n as i64) % 3 != 0)
            .map(|(_, (sku, quantity))| json!({"sku": sku, "quantity": quantity, "unit_price": 1000}))
            .collect();
        let body = json!({"customer_id": s.customer, "warehouse_id": s.warehouse, "currency": "EUR",
            "channel": "web", "external_order_id": format!("K-{i}"), "lines": lines});
        let (app, token) = (&app, tenant.token.clone());
        placing.push(async move {
            place(app, &token, body).await["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap()
        });
    }
    let mut placed = futures_util::future::join_all(placing).await;
    placed.sort();
    // Kill it with sagas in flight: some orders on, none anywhere near all.
    let in_flight = eventually(30, || async {
        let orders = stored_orders(&app, &tenant).await;
        let moved = orders.values().filter(|o| o.status != "pending").count();
        let done = orders
            .values()
            .filter(|o| ["completed", "failed", "cancelled"].contains(&o.status.as_str()))
            .count();
        (moved >= 5).then_some(orders.len() - done)
    })
    .await;
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert!(in_flight > 0, "every saga ended before the kill");

    let mut second = serve(&app, dir.path(), 150);
    let orders = eventually(60, || async {
        let orders = stored_orders(&app, &tenant).await;
        orders
            .values()
            .all(|o| ["completed", "failed", "cancelled"].contains(&o.status.as_str()))
            .then_some(orders)
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();

    let mut ids: Vec<uuid::Uuid> = orders.keys().copied().collect();
    ids.sort();
    assert_eq!(ids, placed, "no order lost, none added");
    let db = &app.state.db;
    let reservations = SystemScope
        .find::<reservation::Entity>()
        .filter(reservation::Column::TenantId.eq(tenant.id))
        .all(db)
        .await
        .unwrap();
    for r in &reservations {
        let id: uuid::Uuid = r.reference.trim_start_matches("order:").parse().unwrap();
        let expected = if orders[&id].status == "completed" { "committed" } else { "released" };
        assert_eq!(r.status, expected, "the reservation of a {} order", orders[&id].status);
    }
    let completed: Vec<uuid::Uuid> =
        orders.values().filter(|o| o.status == "completed").map(|o| o.id).collect();
    assert!(
        !completed.is_empty() && completed.len() < orders.len(),
        "contention failed some orders, not all"
    );
    for id in &completed {
        assert!(reservations.iter().any(|r| r.reference == format!("order:{id}")), "{id} shipped unreserved");
        let captured = SystemScope
            .find::<order_payment::Entity>()
            .filter(order_payment::Column::OrderId.eq(*id))
            .filter(order_payment::Column::Status.eq("captured"))
            .all(db)
            .await
            .unwrap();
        assert_eq!(captured.len(), 1, "a completed order is paid once");
    }
    let shipped_lines = SystemScope
        .find::<order_line::Entity>()
        .filter(order_line::Column::OrderId.is_in(completed.clone()))
        .all(db)
        .await
        .unwrap();
    for (sku, (product, initial)) in &products {
        let product: uuid::Uuid = product.parse().unwrap();
        let level = SystemScope
            .find::<stock_level::Entity>()
            .filter(stock_level::Column::TenantId.eq(tenant.id))
            .filter(stock_level::Column::ProductId.eq(product))
            .one(db)
            .await
            .unwrap()
            .unwrap();
        let movements = SystemScope
            .find::<stock_movement::Entity>()
            .filter(stock_movement::Column::TenantId.eq(tenant.id))
            .filter(stock_movement::Column::ProductId.eq(product))
            .all(db)
            .await
            .unwrap();
        let on_hand: i64 = movements.iter().map(|m| m.quantity).sum();
        let reserved: i64 = movements.iter().map(|m| m.reserved_delta).sum();
        assert_eq!((level.on_hand, level.reserved), (on_hand, reserved), "{sku}: the level is its movements");
        assert_eq!(level.reserved, 0, "{sku}: nothing left held");
        let sold: i64 = shipped_lines.iter().filter(|l| l.product_id == product).map(|l| l.quantity).sum();
        assert_eq!(level.on_hand, initial - sold, "{sku}: shipped exactly what completed orders hold");
        assert!(level.on_hand >= 0, "{sku}: oversold");
    }
}
