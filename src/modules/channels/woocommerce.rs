//! WooCommerce through its REST API v3: the consumer key and secret as
//! basic authentication, `/wp-json/wc/v3/products` page by page (the
//! store says how many in `X-WP-TotalPages`), a variable product's
//! variations from `products/{id}/variations`, and quantities written with
//! `products/batch` (simple products) and `products/{id}/variations/batch`
//! (one product's variations), many per call.

use std::{collections::BTreeMap, time::Duration};

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
/// The most variations read in one call (WooCommerce's maximum).
const VARIATIONS_PAGE: u32 = 100;
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

/// A numeric id of the store's, as it goes into a path.
fn numeric(id: &str) -> Option<&str> {
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

fn id_of(p: &Value) -> Result<i64, DriverError> {
    p["id"].as_i64().ok_or_else(|| DriverError::Failed("a product without id".to_owned()))
}

/// A simple product, or a variation, as the one variant it is: a
/// variation's title is its attributes' values (`Red / M`).
fn variant(p: &Value) -> Result<RemoteVariant, DriverError> {
    let options: Vec<&str> =
        p["attributes"].as_array().into_iter().flatten().filter_map(|a| a["option"].as_str()).collect();
    Ok(RemoteVariant {
        id: id_of(p)?.to_string(),
        sku: p["sku"].as_str().filter(|s| !s.is_empty()).map(str::to_owned),
        title: (!options.is_empty()).then(|| options.join(" / ")),
        inventory_item_id: None,
        quantity: p["stock_quantity"].as_i64(),
        price: p["price"].as_str().and_then(minor_units),
    })
}

impl WooCommerce {
    /// One page of a list and how many pages there are (`X-WP-TotalPages`).
    async fn page(
        &self,
        store: &Store<'_>,
        path: &str,
        mut query: Vec<(&str, String)>,
        page: u32,
    ) -> Result<(Vec<Value>, u32), DriverError> {
        query.push(("page", page.to_string()));
        let url = url::Url::parse_with_params(&store.url(&format!("wp-json/wc/v3/{path}")), &query)
            .map_err(|e| DriverError::Failed(format!("the base URL does not make a product URL: {e}")))?;
        let res = self.send(store, self.request_to(store, reqwest::Method::GET, url)).await?;
        let pages: u32 = res
            .headers()
            .get("x-wp-totalpages")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| DriverError::Failed("the answer has no X-WP-TotalPages".to_owned()))?;
        match body(res).await? {
            Value::Array(items) => Ok((items, pages)),
            _ => Err(DriverError::Failed("the list is not an array".to_owned())),
        }
    }

    /// A product of the store as one normalised product: a variable
    /// product's variants are its variations, read page by page.
    async fn product(&self, store: &Store<'_>, p: &Value) -> Result<RemoteProduct, DriverError> {
        let id = id_of(p)?;
        let variants = if p["type"] == "variable" {
            let mut variants = Vec::new();
            let (mut page, mut pages) = (1, 1);
            while page <= pages {
                let path = format!("products/{id}/variations");
                let (items, total) =
                    self.page(store, &path, vec![("per_page", VARIATIONS_PAGE.to_string())], page).await?;
                variants.extend(items.iter().map(variant).collect::<Result<Vec<_>, _>>()?);
                (page, pages) = (page + 1, total);
            }
            variants
        } else {
            vec![variant(p)?]
        };
        let updated_at = p["date_modified_gmt"]
            .as_str()
            .and_then(|t| NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S").ok())
            .map(|t| t.and_utc());
        Ok(RemoteProduct {
            id: id.to_string(),
            title: p["name"].as_str().unwrap_or_default().to_owned(),
            updated_at,
            variants,
            raw: p.clone(),
        })
    }
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
        let Some(id) = numeric(remote_id) else {
            return Err(DriverError::NotFound(format!("the store has no product {remote_id}")));
        };
        let res =
            self.send(store, self.request(store, reqwest::Method::GET, &format!("products/{id}"))).await?;
        self.product(store, &body(res).await?).await
    }

    async fn list_products(
        &self,
        store: &Store<'_>,
        since: Option<DateTime<Utc>>,
        cursor: Option<&str>,
    ) -> Result<ProductPage, DriverError> {
        let page: u32 = cursor.and_then(|c| c.parse().ok()).unwrap_or(1);
        let mut query = vec![("per_page", PAGE_SIZE.to_string())];
        if let Some(since) = since {
            query.push(("modified_after", since.to_rfc3339_opts(SecondsFormat::Secs, true)));
            query.push(("dates_are_gmt", "true".to_owned()));
        }
        let (items, pages) = self.page(store, "products", query, page).await?;
        let mut products = Vec::with_capacity(items.len());
        for item in &items {
            products.push(self.product(store, item).await?);
        }
        Ok(ProductPage { products, next: (page < pages).then(|| (page + 1).to_string()) })
    }

    /// Simple products through `products/batch`; variations through their
    /// product's `variations/batch`, one product at a time.
    async fn push_quantities(&self, store: &Store<'_>, pushes: &[Push]) -> Result<(), DriverError> {
        let mut by_path: BTreeMap<String, Vec<&Push>> = BTreeMap::new();
        for push in pushes {
            let path = if push.remote_variant_id == push.remote_product_id {
                "products/batch".to_owned()
            } else {
                let product = numeric(&push.remote_product_id).ok_or_else(|| {
                    DriverError::Failed(format!("{} is no WooCommerce product id", push.remote_product_id))
                })?;
                format!("products/{product}/variations/batch")
            };
            by_path.entry(path).or_default().push(push);
        }
        for (path, pushes) in by_path {
            for chunk in pushes.chunks(BATCH) {
                let update: Vec<Value> = chunk
                    .iter()
                    .map(|p| json!({"id": p.remote_variant_id.parse::<i64>().unwrap_or_default(), "manage_stock": true, "stock_quantity": p.quantity}))
                    .collect();
                let request =
                    self.request(store, reqwest::Method::POST, &path).json(&json!({"update": update}));
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

    /// `product.created` / `product.updated` carry the product (or the
    /// variation, whose `id` is the variant's), with its `stock_quantity`
    /// when the store manages its stock.
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
