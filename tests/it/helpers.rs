use nexus::platform::tenancy::SystemScope;
use std::sync::atomic::{AtomicU32, Ordering};

use nexus::{
    Application,
    config::Config,
    platform::{auth::password, state::AppState, tenancy::TenantScope, users},
};
use reqwest::{Method, RequestBuilder, Response, header::CONTENT_TYPE};
use serde_json::{Value, json};
use uuid::Uuid;

pub const PASSWORD: &str = "correct horse 42";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub config: Config,
    _dir: tempfile::TempDir,
}

pub struct Tenant {
    pub slug: String,
    pub id: Uuid,
    pub admin_id: Uuid,
    pub admin_email: String,
    pub token: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", &Uuid::now_v7().simple().to_string()[20..])
}

/// The configuration a test app runs with: its own database and a random port.
pub fn test_config(dir: &std::path::Path) -> figment::Figment {
    let mut figment = Config::defaults()
        .merge(("bind", "127.0.0.1:0"))
        .merge(("data_dir", dir.display().to_string()))
        .merge(("database.max_connections", 5))
        // Compressed time: workers poll fast, retries come within milliseconds.
        .merge(("jobs.poll_interval_ms", 20))
        .merge(("jobs.retry_base_ms", 10))
        .merge(("webhooks.retry_schedule_ms", vec![20, 40, 60]))
        .merge(("webhooks.timeout_ms", 2000))
        // Test receivers listen on loopback.
        .merge(("webhooks.allow_networks", vec!["127.0.0.0/8"]))
        // Every test signs in from 127.0.0.1, some many times a second.
        .merge(("auth.attempts_per_minute_per_address", 100_000))
        .merge(("auth.attempts_per_minute_per_account", 100_000))
        // Fake stores answer at once: their calls are paced only in the
        // tests of the buckets, and reconciled only when a test asks.
        .merge(("modules.channels.rate_limits", false))
        .merge(("modules.channels.reconcile_interval_secs", 0));
    if let Ok(url) = std::env::var("NEXUS_TEST_DATABASE_URL") {
        let schema = format!("t_{}", Uuid::now_v7().simple());
        figment = figment.merge(("database_url", url)).merge(("database.schema", schema));
    }
    if let Ok(url) = std::env::var("NEXUS_TEST_REDIS_URL") {
        figment = figment.merge(("redis_url", url));
    }
    figment
}

impl TestApp {
    pub async fn spawn() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::spawn_with(test_config(dir.path()), dir).await
    }

    /// An app with test settings changed by `adjust`.
    pub async fn spawn_adjusted(adjust: impl FnOnce(figment::Figment) -> figment::Figment) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::spawn_with(adjust(test_config(dir.path())), dir).await
    }

    /// A second instance over the same database as `self`.
    pub async fn sibling(&self) -> Self {
        self.sibling_adjusted(|f| f).await
    }

    /// A second instance over the same database, with settings changed by `adjust`.
    pub async fn sibling_adjusted(&self, adjust: impl FnOnce(figment::Figment) -> figment::Figment) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let c = &self.config;
        let figment = test_config(dir.path())
            .merge(("database_url", c.database_url()))
            .merge(("database.schema", c.database.schema.clone()))
            .merge(("redis_url", c.redis_url().unwrap_or_default()));
        Self::spawn_with(adjust(figment), dir).await
    }

    pub async fn spawn_with(figment: figment::Figment, dir: tempfile::TempDir) -> Self {
        Self::spawn_with_listeners(figment, dir, Vec::new()).await
    }

    pub async fn spawn_with_listeners(
        figment: figment::Figment,
        dir: tempfile::TempDir,
        listeners: Vec<std::sync::Arc<dyn nexus::platform::events::Listener>>,
    ) -> Self {
        Self::spawn_with_parts(figment, dir, nexus::Parts { listeners, ..Default::default() }).await
    }

    /// An app with parts of its own (listeners, a ledger).
    pub async fn spawn_with_parts(
        figment: figment::Figment,
        dir: tempfile::TempDir,
        parts: nexus::Parts,
    ) -> Self {
        let config = Config::from_figment(figment).unwrap();
        let app = Application::build_with(config.clone(), parts).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let state = app.state().clone();
        tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { base, client, state, config, _dir: dir }
    }

    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token)).send().await.unwrap()
    }

    pub async fn send_json(&self, method: Method, path: &str, token: Option<&str>, body: Value) -> Response {
        self.request(method, path, token).json(&body).send().await.unwrap()
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.send_json(Method::POST, path, Some(token), body).await
    }

    pub async fn register(&self) -> Tenant {
        let slug = unique("t");
        let email = format!("owner@{slug}.example.com");
        let res = self
            .send_json(
                Method::POST,
                "/api/v1/auth/register",
                None,
                json!({"tenant_name": format!("Tenant {slug}"), "tenant_slug": slug, "name": "Owner", "email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        Tenant {
            id: body["data"]["tenant"]["id"].as_str().unwrap().parse().unwrap(),
            admin_id: body["data"]["user"]["id"].as_str().unwrap().parse().unwrap(),
            admin_email: email,
            token: body["data"]["token"]["token"].as_str().unwrap().to_owned(),
            slug,
        }
    }

    pub async fn login(&self, tenant: &str, email: &str, password: &str) -> Response {
        self.send_json(
            Method::POST,
            "/api/v1/auth/login",
            None,
            json!({"tenant": tenant, "email": email, "password": password}),
        )
        .await
    }

    /// Create a user with `roles` through the API and log them in.
    pub async fn user_with_roles(&self, tenant: &Tenant, roles: &[&str]) -> (Uuid, String) {
        let email = format!("{}@{}.example.com", unique("u"), tenant.slug);
        let res = self
            .post(
                "/api/v1/users",
                &tenant.token,
                json!({"name": "Someone", "email": email, "password": PASSWORD, "roles": roles}),
            )
            .await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        let body: Value = res.json().await.unwrap();
        let id = body["data"]["id"].as_str().unwrap().parse().unwrap();
        (id, self.token_for(&tenant.slug, &email).await)
    }

    pub async fn token_for(&self, tenant: &str, email: &str) -> String {
        let res = self.login(tenant, email, PASSWORD).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        body["data"]["token"].as_str().unwrap().to_owned()
    }

    /// The events of `event_type` in the tenant's outbox, oldest first.
    pub async fn events(&self, tenant_id: Uuid, event_type: &str) -> Vec<entity::event::Model> {
        use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
        SystemScope
            .find::<entity::event::Entity>()
            .filter(entity::event::Column::TenantId.eq(tenant_id))
            .filter(entity::event::Column::EventType.eq(event_type))
            .order_by_asc(entity::event::Column::Id)
            .all(&self.state.db)
            .await
            .unwrap()
    }

    /// The jobs of `kind` queued for the tenant, oldest first.
    pub async fn jobs(&self, tenant_id: Uuid, kind: &str) -> Vec<entity::job::Model> {
        use sea_orm::{ColumnTrait, QueryFilter, QueryOrder};
        SystemScope
            .find::<entity::job::Entity>()
            .filter(entity::job::Column::TenantId.eq(tenant_id))
            .filter(entity::job::Column::Kind.eq(kind))
            .order_by_asc(entity::job::Column::Id)
            .all(&self.state.db)
            .await
            .unwrap()
    }

    /// Wait until no job is due or running (at most 10 s).
    pub async fn drained(&self) {
        use sea_orm::{ColumnTrait, PaginatorTrait, QueryFilter};
        eventually(10, || async {
            // Due now: scheduled jobs (a weekly scan) do not count.
            let busy = SystemScope
                .find::<entity::job::Entity>()
                .filter(entity::job::Column::Status.is_in(["pending", "running"]))
                .filter(entity::job::Column::RunAt.lte(chrono::Utc::now()))
                .count(&self.state.db)
                .await
                .unwrap();
            (busy == 0).then_some(())
        })
        .await;
    }

    /// A super-admin, as an operator creates one with `nexus user create --super-admin`.
    pub async fn super_admin(&self, tenant: &Tenant) -> String {
        let email = format!("{}@ops.example.com", unique("root"));
        let new = users::NewUser {
            name: "Operator".into(),
            email: email.clone(),
            password_hash: password::hash(PASSWORD.into()).await.unwrap(),
            roles: vec![],
            is_super_admin: true,
            max_users: None,
        };
        users::create_user(&self.state.db, TenantScope::new(tenant.id), new).await.unwrap();
        self.token_for(&tenant.slug, &email).await
    }
}

/// Assert a problem+json answer with `status` and `code`, and return it.
pub async fn assert_problem(res: Response, status: u16, code: &str) -> Value {
    if res.status() != status {
        panic!("expected {status} {code}, got {}: {}", res.status(), res.text().await.unwrap());
    }
    let content_type = res.headers().get(CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let header_id = res.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_owned()).unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["request_id"], header_id.as_str());
    assert_eq!(body["type"], format!("urn:nexus:problem:{code}"));
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

pub async fn json(res: Response) -> Value {
    res.json().await.unwrap()
}

/// Poll `check` until it returns `Some`, for at most `secs` seconds: after
/// 20 ms, then twice as long each time up to every 200 ms, so that a long
/// wait through the API spends few of the user's 120 requests a minute (the
/// trial tier's limit; a test that polled every 20 ms for 3 s was refused).
pub async fn eventually<T, F, Fut>(secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut pause = std::time::Duration::from_millis(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "condition not met within {secs} s");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(200));
    }
}

/// Every documented operation: its method, path and description.
pub fn operations(
    doc: &utoipa::openapi::OpenApi,
) -> Vec<(Method, &String, &utoipa::openapi::path::Operation)> {
    doc.paths
        .paths
        .iter()
        .flat_map(|(path, item)| {
            [
                (Method::GET, item.get.as_ref()),
                (Method::POST, item.post.as_ref()),
                (Method::PUT, item.put.as_ref()),
                (Method::DELETE, item.delete.as_ref()),
                (Method::PATCH, item.patch.as_ref()),
            ]
            .into_iter()
            .filter_map(move |(method, operation)| Some((method, path, operation?)))
        })
        .collect()
}

/// Put every stock level of `tenant` (in `warehouse` only, if given) at
/// the most a level may hold.
pub async fn fill_levels(app: &TestApp, tenant: &Tenant, warehouse: Option<Uuid>) {
    use entity::stock_level::{Column, Entity};
    use sea_orm::{ColumnTrait, QueryFilter, sea_query::Expr};
    let mut update = SystemScope.update_many::<Entity>().filter(Column::TenantId.eq(tenant.id));
    if let Some(warehouse) = warehouse {
        update = update.filter(Column::WarehouseId.eq(warehouse));
    }
    let full = nexus::modules::inventory::MAX_LEVEL;
    update.col_expr(Column::OnHand, Expr::value(full)).exec(&app.state.db).await.unwrap();
}

/// Leave `job` as a worker that died while running it would: running,
/// attempted once, its lease already over.
pub async fn held_by_a_dead_worker(app: &TestApp, job: entity::job::Model) {
    use sea_orm::{ActiveModelTrait, ActiveValue::Set, IntoActiveModel};
    let mut held = job.into_active_model();
    held.status = Set("running".to_owned());
    held.attempts = Set(1);
    held.locked_by = Set(Some("dead-worker".to_owned()));
    held.locked_until = Set(Some(chrono::Utc::now() - chrono::Duration::seconds(1)));
    held.update(&app.state.db).await.unwrap();
}
