//! PostgreSQL going away under a running server: requests fail fast with
//! 503 `database_unavailable` (reads and writes alike, never a 30 s pool
//! wait, never a 500), `/ready` names the database, and service comes back
//! by itself. The database is reached through a TCP proxy the test cuts.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::{net::TcpListener, sync::watch};

use crate::helpers::{TestApp, assert_problem, eventually, test_config};

/// Forwards connections to `target` while up; when cut, drops every live
/// connection and refuses new ones.
struct Proxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, watch) = watch::channel(true);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { continue };
                if !*watch.borrow() {
                    continue; // dropped: refused
                }
                let (target, mut down) = (target.clone(), watch.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { addr, up }
    }

    fn cut(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set NEXUS_TEST_DATABASE_URL and run with --include-ignored (.ci/run does)"]
async fn a_lost_database_answers_503_fast_and_service_comes_back_by_itself() {
    let url = std::env::var("NEXUS_TEST_DATABASE_URL").expect("NEXUS_TEST_DATABASE_URL");
    let parsed = url::Url::parse(&url).unwrap();
    let target = format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap_or(5432));
    let proxy = Arc::new(Proxy::start(target).await);
    let mut through = parsed.clone();
    through.set_port(Some(proxy.addr.port())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let figment = test_config(dir.path()).merge(("database_url", through.to_string()));
    let app = TestApp::spawn_with(figment, dir).await;
    let tenant = app.register().await;
    let product = |sku: &str| json!({"sku": sku, "name": "Bolt", "unit_price": 90, "currency": "EUR"});
    assert_eq!(app.post("/api/v1/products", &tenant.token, product("A")).await.status(), 201);

    proxy.cut();
    for attempt in 0..3 {
        let started = Instant::now();
        let read = app.get("/api/v1/products", &tenant.token).await;
        let took = started.elapsed();
        assert_problem(read, 503, "database_unavailable").await;
        assert!(took < Duration::from_secs(3), "a read took {took:?}");
        let started = Instant::now();
        let write = app.post("/api/v1/products", &tenant.token, product(&format!("B{attempt}"))).await;
        let took = started.elapsed();
        let retry = write.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(retry.as_deref(), Some("1"));
        assert_problem(write, 503, "database_unavailable").await;
        assert!(took < Duration::from_secs(3), "a write took {took:?}");
    }
    let ready = app.client.get(format!("{}/ready", app.base)).send().await.unwrap();
    let body = assert_problem(ready, 503, "service_unavailable").await;
    assert_eq!(body["checks"]["database"]["status"], "down", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("database"), "{body}");

    proxy.restore();
    eventually(10, || async {
        let res = app.post("/api/v1/products", &tenant.token, product("C")).await;
        (res.status() == 201).then_some(())
    })
    .await;
    let list = crate::helpers::json(app.get("/api/v1/products", &tenant.token).await).await;
    let skus: Vec<&str> =
        list["data"].as_array().unwrap().iter().map(|p| p["sku"].as_str().unwrap()).collect();
    assert!(
        skus.contains(&"A") && skus.contains(&"C") && !skus.iter().any(|s| s.starts_with('B')),
        "{skus:?}"
    );
}
