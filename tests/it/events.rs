//! `GET /api/v1/events`: committed events as Server-Sent Events, resumed
//! without gaps from the outbox.

use std::time::Duration;

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, Tenant, TestApp, assert_problem, unique};

/// An open SSE stream, parsed frame by frame.
struct Stream {
    res: Response,
    buffer: String,
}

#[derive(Debug)]
struct Frame {
    id: String,
    event: String,
    data: Value,
}

impl Stream {
    async fn open(app: &TestApp, token: &str, path: &str, last_event_id: Option<&str>) -> Self {
        let mut req = app.request(Method::GET, path, Some(token));
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Self { res, buffer: String::new() }
    }

    /// The next block (frame or comment), within 10 s.
    async fn next_block(&mut self) -> String {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block = self.buffer[..end].to_owned();
                self.buffer.drain(..end + 2);
                return block;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.res.chunk())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event, skipping `retry:` and heartbeat comments.
    async fn next_event(&mut self) -> Frame {
        loop {
            let block = self.next_block().await;
            let field = |name: &str| {
                block.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
            };
            if let (Some(id), Some(event), Some(data)) = (field("id"), field("event"), field("data")) {
                return Frame { id, event, data: serde_json::from_str(&data).unwrap() };
            }
        }
    }
}

async fn add_user(app: &TestApp, tenant: &Tenant) -> String {
    let email = format!("{}@{}.example.com", unique("u"), tenant.slug);
    let res = app
        .post("/api/v1/users", &tenant.token, json!({"name": "N", "email": email, "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), 201);
    email
}

#[tokio::test]
async fn committed_events_stream_live_and_resume_without_gaps() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let other = app.register().await;
    app.drained().await; // the owners' own `user.created` are out of the way
    let mut stream = Stream::open(&app, &tenant.token, "/api/v1/events", None).await;
    let mut others = Stream::open(&app, &other.token, "/api/v1/events", None).await;

    let first = add_user(&app, &tenant).await;
    let theirs = add_user(&app, &other).await; // another tenant's event never shows
    let frame = stream.next_event().await;
    assert_eq!(frame.event, "user.created");
    assert_eq!(frame.data["type"], "user.created");
    assert_eq!(frame.data["tenant_id"], tenant.id.to_string());
    assert_eq!(frame.data["data"]["email"], first);
    // The other tenant's live stream sees its own event and not this one.
    let their_frame = others.next_event().await;
    assert_eq!(their_frame.data["tenant_id"], other.id.to_string());
    assert_eq!(their_frame.data["data"]["email"], theirs);
    drop((stream, others));

    // Events committed while disconnected are replayed on resume, in order,
    // then the stream goes on live.
    let (second, third) = (add_user(&app, &tenant).await, add_user(&app, &tenant).await);
    let mut stream = Stream::open(&app, &tenant.token, "/api/v1/events", Some(&frame.id)).await;
    let replayed = [stream.next_event().await, stream.next_event().await];
    assert_eq!(replayed[0].data["data"]["email"], second);
    assert_eq!(replayed[1].data["data"]["email"], third);
    let fourth = add_user(&app, &tenant).await;
    assert_eq!(stream.next_event().await.data["data"]["email"], fourth);
    drop(stream);

    // `?last_event_id=` resumes as the header does (for EventSource, which
    // cannot set headers on a first connection).
    let path = format!("/api/v1/events?last_event_id={}", replayed[0].id);
    let mut stream = Stream::open(&app, &tenant.token, &path, None).await;
    assert_eq!(stream.next_event().await.data["data"]["email"], third);
    assert_eq!(stream.next_event().await.data["data"]["email"], fourth);
}

#[tokio::test]
async fn streams_filter_by_type_and_send_heartbeats() {
    let app = TestApp::spawn_adjusted(|f| f.merge(("events.sse_heartbeat_ms", 100))).await;
    let tenant = app.register().await;
    let mut stream = Stream::open(&app, &tenant.token, "/api/v1/events?types=user.disabled", None).await;
    assert_eq!(stream.next_block().await, "retry: 3000");
    assert_eq!(stream.next_block().await, ": heartbeat");

    let email = add_user(&app, &tenant).await; // user.created: filtered out
    let users =
        crate::helpers::json(app.get(&format!("/api/v1/users?email={email}"), &tenant.token).await).await;
    let id = users["data"][0]["id"].as_str().unwrap();
    let res = app.post(&format!("/api/v1/users/{id}/disable"), &tenant.token, json!({})).await;
    assert_eq!(res.status(), 200);
    let frame = stream.next_event().await;
    assert_eq!(frame.event, "user.disabled");
    assert_eq!(frame.data["data"]["id"], id);

    let res = app.get("/api/v1/events?types=nope.*", &tenant.token).await;
    assert_problem(res, 400, "invalid_query").await;
    let res = app
        .request(Method::GET, "/api/v1/events", Some(&tenant.token))
        .header("last-event-id", "x")
        .send()
        .await;
    assert_problem(res.unwrap(), 400, "invalid_header").await;
    let (_, viewer) = app.user_with_roles(&tenant, &["viewer"]).await;
    assert_problem(app.get("/api/v1/events", &viewer).await, 403, "forbidden").await;
}

/// With Redis, an event dispatched on one instance reaches streams on
/// every instance (without Redis each process streams its own events).
#[tokio::test]
#[ignore = "needs Redis: set NEXUS_TEST_REDIS_URL and run with --include-ignored (.ci/run does)"]
async fn with_redis_events_reach_streams_on_every_instance() {
    std::env::var("NEXUS_TEST_REDIS_URL").expect("this test needs Redis");
    let first = TestApp::spawn().await;
    // No workers here: every event is dispatched by the first instance.
    let second = first.sibling_adjusted(|f| f.merge(("jobs.run_in_server", false))).await;
    let tenant = first.register().await;
    first.drained().await;
    let mut stream = Stream::open(&second, &tenant.token, "/api/v1/events", None).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the relay subscribes
    let email = add_user(&second, &tenant).await;
    assert_eq!(stream.next_event().await.data["data"]["email"], email);
}

#[tokio::test]
async fn a_stream_ends_when_its_token_is_revoked() {
    let app = TestApp::spawn_adjusted(|f| f.merge(("events.sse_heartbeat_ms", 50))).await;
    let tenant = app.register().await;
    let (_, manager) = app.user_with_roles(&tenant, &["manager"]).await;
    let mut stream = Stream::open(&app, &manager, "/api/v1/events", None).await;
    assert_eq!(stream.next_block().await, "retry: 3000");
    assert_eq!(stream.next_block().await, ": heartbeat");
    let res = app.request(Method::POST, "/api/v1/auth/logout", Some(&manager)).send().await.unwrap();
    assert_eq!(res.status(), 204);
    // The next heartbeat finds the token revoked and closes the stream.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = stream.res.chunk().await.unwrap() {
            assert!(std::str::from_utf8(&chunk).unwrap().starts_with(": heartbeat"));
        }
    })
    .await;
    assert!(end.is_ok(), "the stream stayed open");
}

/// A client that stops reading while a burst is published: the server can
/// only write what the socket buffers hold, its stream falls further behind
/// the live feed than `events.sse_buffer` allows, and it catches up from the
/// outbox. Read afterwards, the stream has every event exactly once.
#[tokio::test]
async fn a_slow_reader_catches_up_without_gaps_or_repeats() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const BURST: usize = 1000;
    let app = TestApp::spawn_adjusted(|f| f.merge(("events.sse_buffer", 2))).await;
    let tenant = app.register().await;
    let on = json!({"enabled": true});
    app.send_json(Method::PUT, "/api/v1/features/feature.bulk-operations", Some(&tenant.token), on).await;
    app.drained().await;

    // A raw HTTP/1.1 client with the smallest receive buffer the kernel
    // allows, so a few frames fill the path from server to client.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut conn = socket.connect(app.base.trim_start_matches("http://").parse().unwrap()).await.unwrap();
    let request = format!(
        "GET /api/v1/events?types=product.created HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
        tenant.token
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&received).contains("retry: 3000") {
        let n = conn.read(&mut buf).await.unwrap();
        received.extend_from_slice(&buf[..n]);
    }

    // The burst, with names long enough that the buffers hold few frames.
    let items: Vec<Value> = (0..BURST)
        .map(|i| {
            let name = format!("{i:04} {}", "n".repeat(190));
            json!({"sku": format!("SLOW-{i:04}"), "name": name, "unit_price": 100, "currency": "EUR"})
        })
        .collect();
    let res = app.post("/api/v1/bulk/products", &tenant.token, json!({"items": items})).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["meta"]["succeeded"], BURST, "{body}");
    app.drained().await;

    // Now read until every event has arrived, then a little longer for any repeat.
    let count = |bytes: &[u8]| String::from_utf8_lossy(bytes).matches("event: product.created").count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while count(&received) < BURST && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await {
            received.extend_from_slice(&buf[..n]);
        }
    }
    while let Ok(Ok(n @ 1..)) = tokio::time::timeout(Duration::from_millis(300), conn.read(&mut buf)).await {
        received.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&received);
    let mut skus: Vec<&str> =
        text.match_indices("\"sku\":\"SLOW-").map(|(at, _)| &text[at + 7..at + 16]).collect();
    assert_eq!(skus.len(), BURST, "every event once");
    skus.sort_unstable();
    skus.dedup();
    assert_eq!(skus.len(), BURST, "no event twice");
}

/// Events published together are written with their one dispatch job (on
/// PostgreSQL by one statement); publishing none writes nothing.
#[tokio::test]
async fn events_published_together_share_one_dispatch_job() {
    use nexus::platform::events::{USER_ENABLED, publish_many};
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let none = publish_many(&app.state.db, tenant.id, &USER_ENABLED, vec![]).await.unwrap();
    assert!(none.is_empty());
    assert!(app.events(tenant.id, "user.enabled").await.is_empty());

    let data = vec![json!({"n": 1}), json!({"n": 2}), json!({"n": 3})];
    let ids = publish_many(&app.state.db, tenant.id, &USER_ENABLED, data).await.unwrap();
    let stored = app.events(tenant.id, "user.enabled").await;
    assert_eq!(stored.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(stored.iter().map(|e| e.data["n"].clone()).collect::<Vec<_>>(), [1, 2, 3]);
    app.drained().await;
    let dispatched: Vec<Value> = app
        .jobs(tenant.id, "event.dispatch")
        .await
        .into_iter()
        .map(|job| job.payload)
        .filter(|payload| payload.get("event_ids").is_some())
        .collect();
    assert_eq!(dispatched, [json!({ "event_ids": ids })]);
}
