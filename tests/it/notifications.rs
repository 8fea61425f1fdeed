//! Order notifications: the log, email (to an in-process SMTP receiver)
//! and webhook channels written with each order step and sent by jobs,
//! the customers' preferences, retries and resends, and their API.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use nexus::platform::tenancy::SystemScope;
use reqwest::Method;
use sea_orm::{ColumnTrait, QueryFilter};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

use crate::helpers::{Tenant, TestApp, assert_problem, eventually, json};

/// A message the SMTP receiver accepted.
#[derive(Clone, Debug)]
struct Mail {
    from: String,
    to: Vec<String>,
    data: String,
}

impl Mail {
    fn subject(&self) -> &str {
        self.data.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or_default()
    }
}

/// An SMTP server on loopback speaking enough of RFC 5321 for a client
/// to deliver: it keeps every message, or refuses each sender with a 550
/// while `reject` is set.
struct Smtp {
    port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    reject: Arc<AtomicBool>,
}

impl Smtp {
    async fn start() -> Smtp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails: Arc<Mutex<Vec<Mail>>> = Arc::default();
        let reject: Arc<AtomicBool> = Arc::default();
        let (m, r) = (mails.clone(), reject.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, m.clone(), r.clone()));
            }
        });
        Smtp { port, mails, reject }
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

async fn reply(w: &mut tokio::net::tcp::OwnedWriteHalf, text: &str) {
    // A client that hung up is no failure of the receiver.
    let _ = w.write_all(format!("{text}\r\n").as_bytes()).await;
}

async fn session(stream: TcpStream, mails: Arc<Mutex<Vec<Mail>>>, reject: Arc<AtomicBool>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    reply(&mut write, "220 fake.test ESMTP").await;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            reply(&mut write, "250 fake.test").await;
        } else if let Some(sender) = upper.starts_with("MAIL FROM:").then(|| &command[10..]) {
            if reject.load(Ordering::SeqCst) {
                reply(&mut write, "550 5.7.1 relaying denied").await;
            } else {
                from = sender.trim().trim_matches(['<', '>']).to_owned();
                reply(&mut write, "250 2.1.0 OK").await;
            }
        } else if upper.starts_with("RCPT TO:") {
            to.push(command[8..].trim().trim_matches(['<', '>']).to_owned());
            reply(&mut write, "250 2.1.5 OK").await;
        } else if upper == "DATA" {
            reply(&mut write, "354 end with <CRLF>.<CRLF>").await;
            let mut data = String::new();
            loop {
                line.clear();
                if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                if line == ".\r\n" {
                    break;
                }
                data.push_str(&line);
            }
            let mail = Mail { from: std::mem::take(&mut from), to: std::mem::take(&mut to), data };
            mails.lock().unwrap().push(mail);
            reply(&mut write, "250 2.0.0 queued").await;
        } else if upper == "RSET" || upper == "NOOP" {
            reply(&mut write, "250 OK").await;
        } else if upper == "QUIT" {
            reply(&mut write, "221 bye").await;
            return;
        } else {
            reply(&mut write, "502 command not implemented").await;
        }
    }
}

/// An app that mails through `smtp`, trying each notification 3 times.
async fn app_with(smtp: &Smtp) -> TestApp {
    let port = smtp.port;
    TestApp::spawn_adjusted(|f| {
        f.merge(("modules.orders.notifications.smtp.host", "127.0.0.1"))
            .merge(("modules.orders.notifications.smtp.port", port))
            .merge(("modules.orders.notifications.smtp.tls", "none"))
            .merge(("modules.orders.notifications.smtp.from", "Shop <shop@example.com>"))
            .merge(("modules.orders.notifications.max_attempts", 3))
    })
    .await
}

struct Shop {
    warehouse: String,
    customer: String,
}

/// A warehouse with 100 units of `SKU-1`, and a customer with `preferences`.
async fn shop(app: &TestApp, tenant: &Tenant, preferences: Value) -> Shop {
    let id = |v: Value| v["data"]["id"].as_str().unwrap().to_owned();
    let warehouse =
        id(json(app.post("/api/v1/warehouses", &tenant.token, json!({"code": "W", "name": "W"})).await)
            .await);
    let product = id(json(
        app.post(
            "/api/v1/products",
            &tenant.token,
            json!({"sku": "SKU-1", "name": "Mug", "unit_price": 2499, "currency": "EUR"}),
        )
        .await,
    )
    .await);
    let body = json!({"product_id": product, "warehouse_id": warehouse, "quantity": 100, "reason": "count"});
    assert_eq!(app.post("/api/v1/stock/adjustments", &tenant.token, body).await.status(), 200);
    let res = app
        .post(
            "/api/v1/customers",
            &tenant.token,
            json!({"email": "ada@example.com", "name": "Ada Lovelace", "notifications": preferences}),
        )
        .await;
    assert_eq!(res.status(), 201);
    Shop { warehouse, customer: id(json(res).await) }
}

async fn place(app: &TestApp, tenant: &Tenant, s: &Shop, external: &str) -> String {
    let body = json!({"customer_id": s.customer, "warehouse_id": s.warehouse, "currency": "EUR",
        "external_order_id": external, "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": 2499}]});
    let res = app.post("/api/v1/orders", &tenant.token, body).await;
    assert_eq!(res.status(), 201);
    json(res).await["data"]["id"].as_str().unwrap().to_owned()
}

/// The notifications of an order once none is pending, oldest first.
async fn settled(app: &TestApp, tenant: &Tenant, order: &str, count: usize) -> Vec<Value> {
    eventually(15, || async {
        let path = format!("/api/v1/orders/{order}/notifications?limit=100&sort=created_at");
        let body = json(app.get(&path, &tenant.token).await).await;
        let items = body["data"].as_array().unwrap().clone();
        (items.len() == count && items.iter().all(|n| n["status"] != "pending")).then_some(items)
    })
    .await
}

fn pick<'a>(items: &'a [Value], kind: &str, channel: &str) -> &'a Value {
    items.iter().find(|n| n["type"] == kind && n["channel"] == channel).unwrap()
}

/// The `data` of the `order.notification` events of `tenant`.
async fn notification_events(app: &TestApp, tenant: &Tenant) -> Vec<Value> {
    use entity::event::{Column, Entity};
    let rows = SystemScope
        .find::<Entity>()
        .filter(Column::TenantId.eq(tenant.id))
        .filter(Column::EventType.eq("order.notification"))
        .all(&app.state.db)
        .await
        .unwrap();
    rows.into_iter().map(|e| e.data).collect()
}

async fn graphql(app: &TestApp, token: &str, query: &str, variables: Value) -> Value {
    let res = app.post("/graphql", token, json!({"query": query, "variables": variables})).await;
    assert_eq!(res.status(), 200);
    json(res).await
}

#[tokio::test]
async fn an_orders_lifecycle_mails_logs_and_emits_each_step_to_its_customer() {
    let smtp = Smtp::start().await;
    let app = app_with(&smtp).await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, json!({"email": true, "webhook": true})).await;
    let order = place(&app, &tenant, &s, "1042").await;

    // placed, paid, completed: each on log, email and webhook.
    let items = settled(&app, &tenant, &order, 9).await;
    assert!(items.iter().all(|n| n["status"] == "sent" && n["attempts"] == 1), "{items:#?}");
    let email = pick(&items, "completed", "email");
    assert_eq!(email["recipient"], "ada@example.com");
    assert_eq!(email["subject"], "Your order 1042 is complete");
    assert_eq!(email["customer_id"], s.customer.as_str());
    assert!(email["sent_at"].is_string() && email["last_error"].is_null());
    assert!(email["body"].as_str().unwrap().contains("49.98 EUR"));
    assert_eq!(pick(&items, "placed", "webhook")["recipient"], "order.notification");

    let mails = smtp.mails();
    let mut subjects: Vec<&str> = mails.iter().map(Mail::subject).collect();
    subjects.sort();
    assert_eq!(
        subjects,
        ["Payment received for order 1042", "We received your order 1042", "Your order 1042 is complete"]
    );
    assert!(mails.iter().all(|m| m.to == ["ada@example.com"] && m.from == "shop@example.com"));
    assert!(mails[0].data.contains("Hello Ada Lovelace"));

    // The webhook channel is an event for the tenant's webhooks.
    let events = notification_events(&app, &tenant).await;
    let mut types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    types.sort();
    assert_eq!(types, ["completed", "paid", "placed"]);
    let completed = events.iter().find(|e| e["type"] == "completed").unwrap();
    assert_eq!(completed["order_id"], order.as_str());
    assert_eq!(completed["notification_id"], pick(&items, "completed", "webhook")["id"]);
    assert_eq!(completed["subject"], "Your order 1042 is complete");

    // A refund is told too, with its amount.
    let res = app
        .request(Method::POST, &format!("/api/v1/orders/{order}/refunds"), Some(&tenant.token))
        .header("Idempotency-Key", "r-1")
        .json(&json!({"amount": 1000, "reason": "chipped"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let items = settled(&app, &tenant, &order, 12).await;
    let refunded = pick(&items, "refunded", "email");
    assert_eq!(refunded["status"], "sent");
    assert!(refunded["body"].as_str().unwrap().contains("10.00 EUR"), "{refunded}");
    assert!(smtp.mails().iter().any(|m| m.subject() == "Refund for order 1042"));

    // Filters, one, recent and stats.
    let list =
        json(app.get("/api/v1/orders/notifications?channel=email&include=total", &tenant.token).await).await;
    assert_eq!(list["meta"]["total"], 4);
    assert!(list["data"].as_array().unwrap().iter().all(|n| n["channel"] == "email"));
    let list = json(app.get("/api/v1/orders/notifications?type=paid&status=sent", &tenant.token).await).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    let path = format!("/api/v1/orders/notifications?customer_id={}&limit=5", s.customer);
    let page = json(app.get(&path, &tenant.token).await).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 5);
    assert_eq!(page["meta"]["has_more"], true);
    let cursor = page["meta"]["next_cursor"].as_str().unwrap();
    let next = json(app.get(&format!("{path}&cursor={cursor}"), &tenant.token).await).await;
    assert_eq!(next["data"].as_array().unwrap().len(), 5);
    let future = "/api/v1/orders/notifications?created_after=2999-01-01T00:00:00Z";
    assert_eq!(json(app.get(future, &tenant.token).await).await["data"], json!([]));
    let one = json(
        app.get(&format!("/api/v1/orders/notifications/{}", email["id"].as_str().unwrap()), &tenant.token)
            .await,
    )
    .await;
    assert_eq!(one["data"]["subject"], "Your order 1042 is complete");
    let recent = json(app.get("/api/v1/orders/notifications/recent?limit=3", &tenant.token).await).await;
    let recent = recent["data"].as_array().unwrap();
    assert_eq!(recent.len(), 3);
    assert!(recent.iter().all(|n| n["type"] == "refunded"));
    let stats =
        json(app.get("/api/v1/orders/notifications/stats", &tenant.token).await).await["data"].clone();
    assert_eq!(stats["all"], json!({"total": 12, "pending": 0, "sent": 12, "failed": 0, "skipped": 0}));
    let email_stats = stats["channels"].as_array().unwrap().iter().find(|c| c["channel"] == "email").unwrap();
    assert_eq!(email_stats["enabled"], true);
    assert_eq!(email_stats["counts"]["sent"], 4);
    assert_eq!(stats["types"][0]["type"], "placed");
    assert_eq!(stats["types"][0]["counts"]["total"], 3);
    let empty = json(
        app.get("/api/v1/orders/notifications/stats?created_after=2999-01-01T00:00:00Z", &tenant.token).await,
    )
    .await;
    assert_eq!(empty["data"]["all"]["total"], 0);

    // GraphQL gives the same.
    let query = r#"query($id: UUID!) {
        orderNotifications(filter: {channel: "email"}) { items { type subject status } }
        order(id: $id) { notifications(filter: {type: "completed"}) { items { channel status } } }
        notificationStats { all { total sent } channels { channel enabled } }
        recentNotifications(limit: 2) { type }
    }"#;
    let body = graphql(&app, &tenant.token, query, json!({"id": order})).await;
    assert_eq!(body["errors"], Value::Null, "{body}");
    assert_eq!(body["data"]["orderNotifications"]["items"].as_array().unwrap().len(), 4);
    assert_eq!(body["data"]["order"]["notifications"]["items"].as_array().unwrap().len(), 3);
    assert_eq!(body["data"]["notificationStats"]["all"], json!({"total": 12, "sent": 12}));
    assert_eq!(body["data"]["recentNotifications"], json!([{"type": "refunded"}, {"type": "refunded"}]));
}

#[tokio::test]
async fn a_customers_preferences_are_honoured_and_skipped_rows_say_why() {
    let smtp = Smtp::start().await;
    let app = app_with(&smtp).await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, json!({"email": false})).await;
    let prefs = format!("/api/v1/customers/{}/notification-preferences", s.customer);
    assert_eq!(
        json(app.get(&prefs, &tenant.token).await).await["data"],
        json!({"email": false, "webhook": true})
    );

    let order = place(&app, &tenant, &s, "A-1").await;
    let items = settled(&app, &tenant, &order, 9).await;
    let email = pick(&items, "placed", "email");
    assert_eq!(email["status"], "skipped");
    assert_eq!(email["attempts"], 0);
    assert_eq!(email["last_error"], "the customer turned email notifications off");
    assert_eq!(pick(&items, "placed", "webhook")["status"], "sent");
    assert!(smtp.mails().is_empty());

    // Turned off the webhooks too, turned email back on: the next order follows.
    let res = app
        .send_json(Method::PUT, &prefs, Some(&tenant.token), json!({"email": true, "webhook": false}))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(json(res).await["data"], json!({"email": true, "webhook": false}));
    let events_before = notification_events(&app, &tenant).await.len();
    let second = place(&app, &tenant, &s, "A-2").await;
    let items = settled(&app, &tenant, &second, 9).await;
    assert!(items.iter().filter(|n| n["channel"] == "webhook").all(|n| n["status"] == "skipped"));
    assert!(items.iter().filter(|n| n["channel"] != "webhook").all(|n| n["status"] == "sent"));
    assert_eq!(notification_events(&app, &tenant).await.len(), events_before);
    assert_eq!(smtp.mails().len(), 3);

    // Over GraphQL.
    let mutation = r#"mutation($id: UUID!) {
        updateNotificationPreferences(customerId: $id, preferences: {email: false, webhook: true}) { notifications { email webhook } }
    }"#;
    let body = graphql(&app, &tenant.token, mutation, json!({"id": s.customer})).await;
    let expected = json!({"email": false, "webhook": true});
    assert_eq!(body["data"]["updateNotificationPreferences"]["notifications"], expected, "{body}");
    assert_eq!(json(app.get(&prefs, &tenant.token).await).await["data"], expected);
}

#[tokio::test]
async fn without_an_smtp_host_email_is_off_and_reported_so() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, json!({})).await;
    let order = place(&app, &tenant, &s, "B-1").await;
    let items = settled(&app, &tenant, &order, 9).await;
    let email = pick(&items, "completed", "email");
    assert_eq!(email["status"], "skipped");
    assert_eq!(email["last_error"], "the email channel is off: no SMTP host is configured");
    assert_eq!(pick(&items, "completed", "log")["status"], "sent");
    let stats =
        json(app.get("/api/v1/orders/notifications/stats", &tenant.token).await).await["data"].clone();
    let channel = |name: &str| {
        stats["channels"].as_array().unwrap().iter().find(|c| c["channel"] == name).unwrap().clone()
    };
    assert_eq!(channel("email")["enabled"], false);
    assert_eq!(channel("email")["counts"]["skipped"], 3);
    assert_eq!(channel("log")["enabled"], true);
}

#[tokio::test]
async fn a_refusing_smtp_server_leaves_email_failed_after_its_retries_and_a_resend_delivers_it() {
    let smtp = Smtp::start().await;
    smtp.reject.store(true, Ordering::SeqCst);
    let app = app_with(&smtp).await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, json!({})).await;
    let order = place(&app, &tenant, &s, "C-1").await;
    let items = settled(&app, &tenant, &order, 9).await;
    let failed = pick(&items, "placed", "email").clone();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["attempts"], 3);
    assert!(failed["last_error"].as_str().unwrap().contains("relaying denied"), "{failed}");
    assert!(failed["sent_at"].is_null());
    // The other channels and the order itself went on; sent by the job
    // that retried the email, once.
    assert_eq!(pick(&items, "placed", "log")["status"], "sent");
    assert_eq!(pick(&items, "placed", "log")["attempts"], 1);
    let got = json(app.get(&format!("/api/v1/orders/{order}"), &tenant.token).await).await;
    assert_eq!(got["data"]["status"], "completed");
    let list = json(app.get("/api/v1/orders/notifications?status=failed", &tenant.token).await).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    assert!(smtp.mails().is_empty());

    // Only a failed one may be sent again.
    let sent = pick(&items, "placed", "log")["id"].as_str().unwrap().to_owned();
    let res =
        app.post(&format!("/api/v1/orders/notifications/{sent}/resend"), &tenant.token, json!({})).await;
    assert_problem(res, 409, "notification_not_failed").await;

    smtp.reject.store(false, Ordering::SeqCst);
    let id = failed["id"].as_str().unwrap();
    let res = app.post(&format!("/api/v1/orders/notifications/{id}/resend"), &tenant.token, json!({})).await;
    assert_eq!(res.status(), 200);
    let body = json(res).await;
    assert!(["pending", "sent"].contains(&body["data"]["status"].as_str().unwrap()), "{body}");
    let done = eventually(10, || async {
        let n = json(app.get(&format!("/api/v1/orders/notifications/{id}"), &tenant.token).await).await;
        (n["data"]["status"] == "sent").then_some(n["data"].clone())
    })
    .await;
    assert_eq!(done["attempts"], 4);
    assert!(done["last_error"].is_null());
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].subject(), "We received your order C-1");

    // And over GraphQL.
    let again = pick(&items, "paid", "email")["id"].as_str().unwrap().to_owned();
    let mutation = "mutation($id: UUID!) { resendNotification(id: $id) { id channel } }";
    let body = graphql(&app, &tenant.token, mutation, json!({"id": again})).await;
    assert_eq!(body["data"]["resendNotification"]["channel"], "email", "{body}");
    let body = graphql(&app, &tenant.token, mutation, json!({"id": sent})).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "notification_not_failed", "{body}");
    eventually(10, || async { (smtp.mails().len() == 2).then_some(()) }).await;
}

#[tokio::test]
async fn another_tenant_sees_none_of_them_and_bad_input_is_refused() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let s = shop(&app, &tenant, json!({})).await;
    let order = place(&app, &tenant, &s, "D-1").await;
    let items = settled(&app, &tenant, &order, 9).await;
    let id = items[0]["id"].as_str().unwrap();

    let other = app.register().await;
    let list = json(app.get("/api/v1/orders/notifications", &other.token).await).await;
    assert_eq!(list["data"], json!([]));
    assert_eq!(
        json(app.get("/api/v1/orders/notifications/recent", &other.token).await).await["data"],
        json!([])
    );
    let stats = json(app.get("/api/v1/orders/notifications/stats", &other.token).await).await;
    assert_eq!(stats["data"]["all"]["total"], 0);
    for path in [
        format!("/api/v1/orders/notifications/{id}"),
        format!("/api/v1/orders/{order}/notifications"),
        format!("/api/v1/customers/{}/notification-preferences", s.customer),
    ] {
        assert_problem(app.get(&path, &other.token).await, 404, "not_found").await;
    }
    let resend = format!("/api/v1/orders/notifications/{id}/resend");
    assert_problem(app.post(&resend, &other.token, json!({})).await, 404, "not_found").await;
    let prefs = format!("/api/v1/customers/{}/notification-preferences", s.customer);
    let res = app.send_json(Method::PUT, &prefs, Some(&other.token), json!({"email": false})).await;
    assert_problem(res, 404, "not_found").await;
    let body = graphql(
        &app,
        &other.token,
        "query($id: UUID!) { orderNotification(id: $id) { id } }",
        json!({"id": id}),
    )
    .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "not_found", "{body}");

    // Bad filters and bodies: 400, nothing changed.
    for query in [
        "status=bogus",
        "channel=sms",
        "type=shipped",
        "sort=subject",
        "created_after=yesterday",
        "created_after=2026-11-02T00:00:00Z&created_before=2026-11-01T00:00:00Z",
        "colour=red",
        "limit=0",
    ] {
        let res = app.get(&format!("/api/v1/orders/notifications?{query}"), &tenant.token).await;
        assert_eq!(res.status(), 400, "{query}");
        assert_eq!(res.headers()["content-type"], "application/problem+json", "{query}");
    }
    let res = app.get("/api/v1/orders/notifications?status=bogus", &tenant.token).await;
    let problem = assert_problem(res, 400, "invalid_query").await;
    assert_eq!(problem["errors"][0]["field"], "status");
    for path in [
        "/api/v1/orders/notifications/recent?limit=101",
        "/api/v1/orders/notifications/stats?created_before=x",
    ] {
        assert_problem(app.get(path, &tenant.token).await, 400, "invalid_query").await;
    }
    assert_problem(
        app.get("/api/v1/orders/notifications/not-a-uuid", &tenant.token).await,
        400,
        "invalid_path",
    )
    .await;
    // A body of the wrong shape names its field (422, as everywhere); one
    // that is no JSON is a 400.
    for (body, field) in [(json!({"email": "yes"}), "email"), (json!({"email": true, "sms": true}), "sms")] {
        let res = app.send_json(Method::PUT, &prefs, Some(&tenant.token), body).await;
        assert_eq!(assert_problem(res, 422, "validation_failed").await["errors"][0]["field"], field);
    }
    let res = app
        .request(Method::PUT, &prefs, Some(&tenant.token))
        .header("content-type", "application/json")
        .body("{\"email\": fals")
        .send()
        .await
        .unwrap();
    assert_problem(res, 400, "malformed_json").await;
    assert_eq!(
        json(app.get(&prefs, &tenant.token).await).await["data"],
        json!({"email": true, "webhook": true})
    );
    let body = graphql(
        &app,
        &tenant.token,
        r#"{ orderNotifications(filter: {status: "bogus"}) { items { id } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "invalid_query", "{body}");

    // A viewer reads, and may not resend or change preferences.
    let (_, viewer) = app.user_with_roles(&tenant, &["viewer"]).await;
    assert_eq!(app.get("/api/v1/orders/notifications", &viewer).await.status(), 200);
    assert_problem(app.post(&resend.clone(), &viewer, json!({})).await, 403, "forbidden").await;
    let res = app.send_json(Method::PUT, &prefs, Some(&viewer), json!({"email": false})).await;
    assert_problem(res, 403, "forbidden").await;
}
