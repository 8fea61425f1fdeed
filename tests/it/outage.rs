//! PostgreSQL going away under a running server: requests fail fast with
//! 503 `database_unavailable` (reads and writes alike, never a 30 s pool
//! wait, never a 500), `/ready` names the database, and service comes back
//! by itself. The database is reached through a TCP proxy the test cuts;
//! what a proxy cannot show is shown against a fake PostgreSQL that stops
//! answering ([`silent_postgres`]), and, for packets that are dropped, in a
//! network namespace of the test's own.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::watch,
};

use crate::helpers::{TestApp, assert_problem, eventually, test_config};

/// Forwards connections to `target` while up; when cut, drops every live
/// connection and refuses new ones. `close_live` drops the live ones only,
/// as a database restarting between two requests does.
struct Proxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    generation: watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, watch) = watch::channel(true);
        let (generation, generations) = watch::channel(0);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { continue };
                if !*watch.borrow() {
                    continue; // dropped: refused
                }
                let (target, mut down, mut later) = (target.clone(), watch.clone(), generations.clone());
                let born = *later.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                        _ = later.wait_for(|g| *g != born) => {}
                    }
                });
            }
        });
        Self { addr, up, generation }
    }

    fn close_live(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    fn cut(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
}

/// A server on the test's PostgreSQL reached through a [`Proxy`].
async fn behind_proxy() -> (TestApp, Proxy) {
    let url = std::env::var("NEXUS_TEST_DATABASE_URL").expect("NEXUS_TEST_DATABASE_URL");
    let parsed = url::Url::parse(&url).unwrap();
    let target = format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap_or(5432));
    let proxy = Proxy::start(target).await;
    let mut through = parsed.clone();
    through.set_port(Some(proxy.addr.port())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let figment = test_config(dir.path()).merge(("database_url", through.to_string()));
    (TestApp::spawn_with(figment, dir).await, proxy)
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set NEXUS_TEST_DATABASE_URL and run with --include-ignored (.ci/run does)"]
async fn a_lost_database_answers_503_fast_and_service_comes_back_by_itself() {
    let (app, proxy) = behind_proxy().await;
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

/// Connections in steady use are not pinged before each query (a round trip
/// a request), but one idle for a second is: a connection the database
/// closed while it sat in the pool is replaced before a request gets it.
#[tokio::test]
#[ignore = "needs PostgreSQL: set NEXUS_TEST_DATABASE_URL and run with --include-ignored (.ci/run does)"]
async fn a_connection_closed_while_idle_is_replaced_before_a_request_uses_it() {
    let (app, proxy) = behind_proxy().await;
    let tenant = app.register().await;
    let product = json!({"sku": "A", "name": "Bolt", "unit_price": 90, "currency": "EUR"});
    assert_eq!(app.post("/api/v1/products", &tenant.token, product).await.status(), 201);
    // Several pooled connections at once, all then closed by the other end.
    let reads = (0..4).map(|_| app.get("/api/v1/products", &tenant.token));
    assert!(futures_util::future::join_all(reads).await.iter().all(|r| r.status() == 200));
    proxy.close_live();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..6 {
        let read = app.get("/api/v1/products", &tenant.token).await;
        assert_eq!(read.status(), 200, "{}", read.text().await.unwrap());
    }
}

/// A fake PostgreSQL that completes each connection's start-up, then reads
/// whatever it is sent and never answers: a server that vanished without a
/// FIN or RST (a failover, a NAT mapping dropped), as the client sees it.
/// Returns its address and how many connections it has accepted.
async fn silent_postgres() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // The start-up message: its length (itself included), then the rest.
                let length = socket.read_u32().await.unwrap() as usize;
                let mut rest = vec![0; length - 4];
                socket.read_exact(&mut rest).await.unwrap();
                // AuthenticationOk, BackendKeyData, ReadyForQuery (idle).
                let mut hello = vec![b'R', 0, 0, 0, 8, 0, 0, 0, 0];
                hello.extend([b'K', 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 2]);
                hello.extend([b'Z', 0, 0, 0, 5, b'I']);
                socket.write_all(&hello).await.unwrap();
                let mut sink = vec![0; 1024];
                while socket.read(&mut sink).await.is_ok_and(|n| n > 0) {}
            });
        }
    });
    (addr, accepted)
}

/// A connection that goes back to the pool is tested first (sqlx sends a
/// `Sync` and waits for the answer). When the server has gone silent, that
/// wait must not keep the connection's place in the pool for good: then
/// every place would be lost, one by one, and no request would ever get a
/// connection again, even once the database is back (transact-rs/sqlx#4349).
/// With one place in the pool, the next checkout gets a new connection.
#[tokio::test]
async fn a_connection_whose_server_went_silent_gives_its_place_in_the_pool_back() {
    let (addr, accepted) = silent_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let config = nexus::config::Config::from_figment(
        test_config(dir.path())
            .merge(("database_url", format!("postgres://nexus@{addr}/nexus?sslmode=disable")))
            .merge(("database.schema", ""))
            .merge(("database.max_connections", 1))
            .merge(("database.acquire_timeout_ms", 15_000)),
    )
    .unwrap();
    let db = nexus::platform::db::connect_lazily(&config).await.unwrap();
    let pool = db.get_postgres_connection_pool();

    drop(pool.acquire().await.unwrap()); // its test on return is never answered
    let started = Instant::now();
    let next = pool.acquire().await;
    let took = started.elapsed();
    assert!(next.is_ok(), "no connection after {took:?}: {:?}", next.err());
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "the second checkout did not open a new connection");
    assert!(took < Duration::from_secs(10), "the place came back after {took:?}");
}

/// A query waiting for its answer when its server vanishes (no FIN, no RST:
/// a failover, a dropped route) fails within seconds with a 503, instead of
/// waiting for TCP to give up (about 15 minutes). Only a network that drops
/// packets shows it: a fake server that stops answering still has its kernel
/// acknowledge what it is sent. So the test runs itself again in a network
/// namespace of its own (`unshare`) and takes that namespace's loopback
/// down under the waiting query.
#[test]
#[ignore = "needs user and network namespaces (`unshare`) and `ip`: run with --include-ignored (.ci/run does)"]
fn a_query_whose_server_vanished_fails_within_seconds() {
    const INSIDE: &str = "NEXUS_TEST_IN_NETWORK_NAMESPACE";
    if std::env::var_os(INSIDE).is_none() {
        let test = "outage::a_query_whose_server_vanished_fails_within_seconds";
        let run = std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--net", "--"])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", test, "--include-ignored", "--nocapture"])
            .env(INSIDE, "1")
            .output()
            .expect("unshare runs");
        let (out, err) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
        assert!(run.status.success() && out.contains("1 passed"), "{out}\n{err}");
        return;
    }
    let ip = |args: &[&str]| {
        let status = std::process::Command::new("ip").args(args).status().unwrap();
        assert!(status.success(), "ip {args:?}");
    };
    ip(&["link", "set", "lo", "up"]);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (addr, _) = silent_postgres().await;
        let dir = tempfile::tempdir().unwrap();
        let config = nexus::config::Config::from_figment(
            test_config(dir.path())
                .merge(("database_url", format!("postgres://nexus@{addr}/nexus?sslmode=disable")))
                .merge(("database.schema", "")),
        )
        .unwrap();
        let db = nexus::platform::db::connect_lazily(&config).await.unwrap();
        let started = Instant::now();
        let query = tokio::time::timeout(
            Duration::from_secs(30),
            sea_orm::ConnectionTrait::execute_unprepared(&db, "SELECT 1"),
        );
        let vanish = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            ip(&["link", "set", "lo", "down"]);
        };
        let (answer, ()) = tokio::join!(query, vanish);
        let took = started.elapsed();
        let err = answer.expect("still waiting after 30 s").expect_err("the fake server answers nothing");
        assert_eq!(nexus::error::ApiError::from(err).code, nexus::error::Code::DatabaseUnavailable);
        assert!(took < Duration::from_secs(4), "the query failed after {took:?}");
    });
}
