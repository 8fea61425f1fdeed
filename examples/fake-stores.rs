//! Fake Shopify, WooCommerce, Amazon and Etsy stores on 127.0.0.1, to try the channels
//! module without store accounts: `cargo run --example fake-stores`, then
//! connect them as docs/channels.md shows (the server must allow loopback:
//! `NEXUS_WEBHOOKS__ALLOW_NETWORKS='["127.0.0.0/8"]'`).

use nexus::modules::channels::fakes::{
    FakeAmazon, FakeEtsy, FakeProduct, FakeShopify, FakeVariant, FakeWooCommerce,
};

fn catalog() -> Vec<FakeProduct> {
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

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let shopify = FakeShopify::start(catalog()).await?;
    let woo = FakeWooCommerce::start(catalog()).await?;
    let amazon = FakeAmazon::start(catalog()).await?;
    let etsy = FakeEtsy::start(catalog()).await?;
    // Like real stores, they refuse bursts (Shopify with THROTTLED,
    // WooCommerce, Amazon and Etsy with 429 and Retry-After).
    shopify.limit_per_second(Some(20));
    woo.limit_per_second(Some(25));
    amazon.limit_per_second(Some(5));
    etsy.limit_per_second(Some(10));
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
    println!("Ctrl-C stops them.");
    tokio::signal::ctrl_c().await
}
