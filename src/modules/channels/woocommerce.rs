//! WooCommerce through its REST API v3: the consumer key and secret as
//! basic authentication, `/wp-json/wc/v3/products` page by page (the
//! store says how many in `X-WP-TotalPages`), and quantities written with
//! `products/batch`, many products per call.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{
    Settings,
    driver::{
        ChannelDriver, DriverError, Headers, Inbound, ProductPage, Push, RatePolicy, RemoteProduct,
        RemoteStock, RemoteVariant, Store, hmac_base64_matches, minor_units, needs_secret,
    },
};

const PAGE_SIZE: u32 = 50;
/// The most products WooCommerce updates in one batch.
const BATCH: usize = 100;

pub struct WooCommerce {
    http: reqwest::Client,
    policy: RatePolicy,
    timeout: Duration,
}

impl WooCommerce {
    pub fn new(http: reqwest::Client, settings: &Settings) -> Self {
        Self { http, policy: settings.woocommerce.rate_limit, timeout: settings.timeout() }
    }

    fn request(&self, store: &Store<'_>, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request_to(store, method, store.url(&format!("wp-json/wc/v3/{path}")))
    }

    fn request_to(
        &self,
        store: &Store<'_>,
        method: reqwest::Method,
        url: impl reqwest::IntoUrl,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .timeout(self.timeout)
            .basic_auth(store.credential("consumer_key"), Some(store.credential("consumer_secret")))
    }

    async fn send(
        &self,
        store: &Store<'_>,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, DriverError> {
        store.pace.turn().await;
        let res = request.send().await.map_err(DriverError::transport)?;
        if res.status().is_success() {
            Ok(res)
        } else {
            Err(DriverError::from_status(res, |body| body["message"].as_str().map(str::to_owned)).await)
        }
    }
}

async fn body(res: reqwest::Response) -> Result<Value, DriverError> {
    res.json().await.map_err(|e| DriverError::Failed(format!("not WooCommerce JSON: {e}")))
}

fn product(p: &Value) -> Result<RemoteProduct, DriverError> {
    let id = p["id"].as_i64().ok_or_else(|| DriverError::Failed("a product without id".to_owned()))?;
    let updated_at = p["date_modified_gmt"]
        .as_str()
        .and_then(|t| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S").ok())
        .map(|t| t.and_utc());
    let variant = RemoteVariant {
        id: id.to_string(),
        sku: p["sku"].as_str().filter(|s| !s.is_empty()).map(str::to_owned),
        title: None,
        inventory_item_id: None,
        quantity: p["stock_quantity"].as_i64(),
        price: p["price"].as_str().and_then(minor_units),
    };
    Ok(RemoteProduct {
        id: id.to_string(),
        title: p["name"].as_str().unwrap_or_default().to_owned(),
        updated_at,
        variants: vec![variant],
        raw: p.clone(),
    })
}

#[async_trait::async_trait]
impl ChannelDriver for WooCommerce {
    fn channel(&self) -> &'static str {
        "woocommerce"
    }

    fn credential_fields(&self) -> &'static [&'static str] {
        &["consumer_key", "consumer_secret"]
    }

    fn policy(&self) -> RatePolicy {
        self.policy
    }

    async fn fetch_product(&self, store: &Store<'_>, remote_id: &str) -> Result<RemoteProduct, DriverError> {
        if remote_id.is_empty() || !remote_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DriverError::NotFound(format!("the store has no product {remote_id}")));
        }
        let res = self
            .send(store, self.request(store, reqwest::Method::GET, &format!("products/{remote_id}")))
            .await?;
        product(&body(res).await?)
    }

    async fn list_products(
        &self,
        store: &Store<'_>,
        since: Option<DateTime<Utc>>,
        cursor: Option<&str>,
    ) -> Result<ProductPage, DriverError> {
        let page: u32 = cursor.and_then(|c| c.parse().ok()).unwrap_or(1);
        let mut query = vec![("per_page", PAGE_SIZE.to_string()), ("page", page.to_string())];
        if let Some(since) = since {
            query.push(("modified_after", since.to_rfc3339_opts(SecondsFormat::Secs, true)));
            query.push(("dates_are_gmt", "true".to_owned()));
        }
        let url = url::Url::parse_with_params(&store.url("wp-json/wc/v3/products"), &query)
            .map_err(|e| DriverError::Failed(format!("the base URL does not make a product URL: {e}")))?;
        let res = self.send(store, self.request_to(store, reqwest::Method::GET, url)).await?;
        let pages: u32 = res
            .headers()
            .get("x-wp-totalpages")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| DriverError::Failed("the answer has no X-WP-TotalPages".to_owned()))?;
        let list = body(res).await?;
        let products = list
            .as_array()
            .ok_or_else(|| DriverError::Failed("the product list is not an array".to_owned()))?
            .iter()
            .map(product)
            .collect::<Result<_, _>>()?;
        Ok(ProductPage { products, next: (page < pages).then(|| (page + 1).to_string()) })
    }

    async fn push_quantities(&self, store: &Store<'_>, pushes: &[Push]) -> Result<(), DriverError> {
        for chunk in pushes.chunks(BATCH) {
            let update: Vec<Value> = chunk
                .iter()
                .map(|p| json!({"id": p.remote_product_id.parse::<i64>().unwrap_or_default(), "manage_stock": true, "stock_quantity": p.quantity}))
                .collect();
            let request =
                self.request(store, reqwest::Method::POST, "products/batch").json(&json!({"update": update}));
            let answer = body(self.send(store, request).await?).await?;
            let failed: Vec<String> = answer["update"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|item| {
                    item["error"]["message"].as_str().map(|m| format!("product {}: {m}", item["id"]))
                })
                .collect();
            if !failed.is_empty() {
                return Err(DriverError::Failed(failed.join("; ")));
            }
        }
        Ok(())
    }

    /// `X-WC-Webhook-Signature`: the base64 HMAC-SHA256 of the raw body.
    async fn verify_webhook(
        &self,
        secret: Option<&str>,
        headers: &Headers,
        body: &[u8],
    ) -> Result<(), String> {
        if hmac_base64_matches(needs_secret(secret)?, headers.get("x-wc-webhook-signature"), body) {
            Ok(())
        } else {
            Err("the signature does not match the body".to_owned())
        }
    }

    /// `product.created` / `product.updated` carry the product, with its
    /// `stock_quantity` when the store manages its stock.
    fn parse_webhook(&self, headers: &Headers, body: &[u8]) -> Result<Inbound, String> {
        let topic = headers.get("x-wc-webhook-topic").cloned();
        let event_id = headers.get("x-wc-webhook-delivery-id").cloned();
        let stock = match topic.as_deref() {
            Some("product.created" | "product.updated") => {
                let product: Value =
                    serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
                let id = product["id"].as_i64().ok_or("`id` is missing")?;
                let managed = product["manage_stock"].as_bool() == Some(true);
                product["stock_quantity"].as_i64().filter(|_| managed).map(|quantity| RemoteStock {
                    variant_id: Some(id.to_string()),
                    inventory_item_id: None,
                    location_id: None,
                    quantity,
                })
            }
            _ => None,
        };
        Ok(Inbound { event_id, topic, stock, ..Inbound::default() })
    }
}
