//! The baseline of `bench/compare.sh`: what the same reads cost with nothing
//! around them. actix-web and sqlx, one pool, no middleware, no
//! authentication, no count: the tenant comes from the environment.
//!
//! Env: `DATABASE_URL` (PostgreSQL), `TENANT_ID`, `BIND` (default
//! 127.0.0.1:18400), `MAX_CONNECTIONS` (default 16, as Nexus).

use actix_web::{App, HttpResponse, HttpServer, get, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgPool, Row, postgres::PgPoolOptions, postgres::PgRow};
use uuid::Uuid;

struct State {
    pool: PgPool,
    tenant: Uuid,
}

/// The fields of Nexus's product view, in its order.
#[derive(Serialize)]
struct Product {
    id: Uuid,
    sku: String,
    name: String,
    barcode: Option<String>,
    unit_price: i64,
    currency: String,
    attributes: Value,
    active: bool,
    preferred_vendor_id: Option<Uuid>,
    version: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The columns read, as a literal: sqlx 0.9 takes only `&'static str` SQL.
macro_rules! columns {
    () => {
        "id, sku, name, barcode, unit_price, currency, attributes, active, \
         preferred_vendor_id, version, created_at, updated_at"
    };
}

const LIST: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM products WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT 25"
);
const ONE: &str = concat!("SELECT ", columns!(), " FROM products WHERE tenant_id = $1 AND id = $2");

fn product(row: &PgRow) -> Result<Product, sqlx::Error> {
    Ok(Product {
        id: row.try_get("id")?,
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        barcode: row.try_get("barcode")?,
        unit_price: row.try_get("unit_price")?,
        currency: row.try_get("currency")?,
        attributes: row.try_get("attributes")?,
        active: row.try_get("active")?,
        preferred_vendor_id: row.try_get("preferred_vendor_id")?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn failed(e: sqlx::Error) -> HttpResponse {
    eprintln!("query failed: {e}");
    HttpResponse::InternalServerError().json(json!({ "error": "database" }))
}

/// The tenant's 25 newest products (ties by id, as Nexus orders them).
#[get("/products")]
async fn list(state: web::Data<State>) -> HttpResponse {
    let rows = match sqlx::query(LIST).bind(state.tenant).fetch_all(&state.pool).await {
        Ok(rows) => rows,
        Err(e) => return failed(e),
    };
    match rows.iter().map(product).collect::<Result<Vec<_>, _>>() {
        Ok(data) => HttpResponse::Ok().json(json!({ "data": data })),
        Err(e) => failed(e),
    }
}

/// One of the tenant's products.
#[get("/products/{id}")]
async fn one(state: web::Data<State>, id: web::Path<Uuid>) -> HttpResponse {
    let query = sqlx::query(ONE).bind(state.tenant).bind(id.into_inner());
    match query.fetch_optional(&state.pool).await {
        Ok(Some(row)) => match product(&row) {
            Ok(p) => HttpResponse::Ok().json(json!({ "data": p })),
            Err(e) => failed(e),
        },
        Ok(None) => HttpResponse::NotFound().json(json!({ "error": "not found" })),
        Err(e) => failed(e),
    }
}

/// A constant body: the bare counterpart of Nexus's `/health`.
#[get("/json")]
async fn constant() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

fn env(name: &str) -> std::io::Result<String> {
    std::env::var(name).map_err(|_| std::io::Error::other(format!("{name} is not set")))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let url = env("DATABASE_URL")?;
    let tenant = Uuid::parse_str(&env("TENANT_ID")?).map_err(std::io::Error::other)?;
    let bind = env("BIND").unwrap_or_else(|_| "127.0.0.1:18400".into());
    let max = env("MAX_CONNECTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let pool =
        PgPoolOptions::new().max_connections(max).connect(&url).await.map_err(std::io::Error::other)?;
    let state = web::Data::new(State { pool, tenant });
    HttpServer::new(move || App::new().app_data(state.clone()).service(list).service(one).service(constant))
        .bind(bind)?
        .run()
        .await
}
