//! Fake Shopify, WooCommerce, Amazon and Etsy stores on 127.0.0.1, to try the channels
//! module without store accounts: `cargo run --example fake-stores`, then
//! connect them as docs/channels.md shows (the server must allow loopback:
//! `NEXUS_WEBHOOKS__ALLOW_NETWORKS='["127.0.0.0/8"]'`).
//!
//! Settings from the environment (bench/channels.sh uses them):
//! - `FAKE_CATALOG=N`: N simple products `ITEM-00000`... (quantity 7 each)
//!   instead of the T-shirt and the mug.
//! - `FAKE_LIMITS`: `demo` (the default: each store refuses bursts over a
//!   few requests a second), `channel` (each store's leaky bucket is Nexus's
//!   default `rate_limit` of its channel, Shopify's cost budget its standard
//!   plan) or `off` (nothing refused, Shopify's budget unbounded).
//! - `FAKE_STATS_PORT=P`: serve `GET /stores` (every store's base URL and
//!   credentials, as JSON) and `GET /stats?sku=` (per store: requests,
//!   requests refused as throttled, and each write `[sku, quantity, unix_ms]`,
//!   of one SKU when given) on 127.0.0.1:P.

use actix_web::{App, HttpResponse, HttpServer, web};
use nexus::modules::channels::fakes::{
    FakeAmazon, FakeEtsy, FakeProduct, FakeShopify, FakeVariant, FakeWooCommerce,
};
use serde_json::json;

fn catalog(size: Option<usize>) -> Vec<FakeProduct> {
    if let Some(size) = size {
        return (0..size)
            .map(|i| FakeProduct::simple(&format!("Item {i}"), &format!("ITEM-{i:05}"), "4.20", 7))
            .collect();
    }
    let shirt = |size: &str, quantity| FakeVariant {
        sku: format!("TSHIRT-RED-{size}"),
        title: Some(format!("Red / {size}")),
        price: "24.99".to_owned(),
        quantity,
    };
    vec![
        FakeProduct {
            title: "T-shirt".to_owned(),
            variants: vec![shirt("S", 5), shirt("M", 8), shirt("L", 3)],
        },
        FakeProduct::simple("Mug", "MUG-WHITE", "9.50", 20),
    ]
}

#[derive(Clone)]
struct Stores {
    shopify: FakeShopify,
    woo: FakeWooCommerce,
    amazon: FakeAmazon,
    etsy: FakeEtsy,
}

#[derive(serde::Deserialize)]
struct StatsQuery {
    sku: Option<String>,
}

async fn stores(s: web::Data<Stores>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "shopify": {"base_url": s.shopify.base_url, "access_token": s.shopify.access_token,
            "remote_location_id": s.shopify.location_id},
        "woocommerce": {"base_url": s.woo.base_url, "consumer_key": s.woo.consumer_key,
            "consumer_secret": s.woo.consumer_secret},
        "amazon": {"base_url": s.amazon.base_url, "token_url": s.amazon.token_url,
            "client_id": s.amazon.client_id, "client_secret": s.amazon.client_secret,
            "refresh_token": s.amazon.refresh_token, "seller_id": s.amazon.seller_id,
            "marketplace_id": s.amazon.marketplace_id},
        "etsy": {"base_url": s.etsy.base_url, "api_key": s.etsy.api_key,
            "refresh_token": s.etsy.refresh_token, "shop_id": s.etsy.shop_id},
    }))
}

async fn stats(s: web::Data<Stores>, query: web::Query<StatsQuery>) -> HttpResponse {
    let sku = query.sku.as_deref();
    HttpResponse::Ok().json(json!({
        "shopify": s.shopify.stats(sku),
        "woocommerce": s.woo.stats(sku),
        "amazon": s.amazon.stats(sku),
        "etsy": s.etsy.stats(sku),
    }))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let size = std::env::var("FAKE_CATALOG").ok().and_then(|n| n.parse().ok());
    let shopify = FakeShopify::start(catalog(size)).await?;
    let woo = FakeWooCommerce::start(catalog(size)).await?;
    let amazon = FakeAmazon::start(catalog(size)).await?;
    let etsy = FakeEtsy::start(catalog(size)).await?;
    match std::env::var("FAKE_LIMITS").as_deref() {
        // As Nexus's default buckets: 2/40, 25/100, 1/10, 10/50.
        Ok("channel") => {
            shopify.limit_bucket(2, 40);
            woo.limit_bucket(25, 100);
            amazon.limit_bucket(1, 10);
            etsy.limit_bucket(10, 50);
        }
        Ok("off") => shopify.cost_budget(1e12, 1e12),
        // Like real stores, they refuse bursts (Shopify with THROTTLED,
        // WooCommerce, Amazon and Etsy with 429 and Retry-After).
        _ => {
            shopify.limit_per_second(Some(20));
            woo.limit_per_second(Some(25));
            amazon.limit_per_second(Some(5));
            etsy.limit_per_second(Some(10));
        }
    }
    println!("Fake Shopify");
    println!("  base_url            {}", shopify.base_url);
    println!("  access_token        {}", shopify.access_token);
    println!("  remote_location_id  {}", shopify.location_id);
    println!("Fake WooCommerce");
    println!("  base_url            {}", woo.base_url);
    println!("  consumer_key        {}", woo.consumer_key);
    println!("  consumer_secret     {}", woo.consumer_secret);
    println!("Fake Amazon (run Nexus with NEXUS_MODULES__CHANNELS__AMAZON__TOKEN_URL={})", amazon.token_url);
    println!("  base_url            {}", amazon.base_url);
    println!("  client_id           {}", amazon.client_id);
    println!("  client_secret       {}", amazon.client_secret);
    println!("  refresh_token       {}", amazon.refresh_token);
    println!("  seller_id           {}", amazon.seller_id);
    println!("  marketplace_id      {}", amazon.marketplace_id);
    println!("Fake Etsy");
    println!("  base_url            {}", etsy.base_url);
    println!("  api_key             {}", etsy.api_key);
    println!("  refresh_token       {}", etsy.refresh_token);
    println!("  shop_id             {}", etsy.shop_id);
    if let Some(port) = std::env::var("FAKE_STATS_PORT").ok().and_then(|p| p.parse::<u16>().ok()) {
        let data = web::Data::new(Stores { shopify, woo, amazon, etsy });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/stores", web::get().to(stores))
                .route("/stats", web::get().to(stats))
        })
        .workers(1)
        .bind(("127.0.0.1", port))?
        .run();
        tokio::spawn(server);
        println!("Stores and stats on http://127.0.0.1:{port}/stores and /stats");
    }
    println!("Ctrl-C stops them.");
    tokio::signal::ctrl_c().await
}
