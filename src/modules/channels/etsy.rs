//! Etsy through its Open API v3: every call carries the app's `x-api-key`
//! and an OAuth2 bearer token, obtained from the connection's refresh token
//! (`POST /v3/public/oauth/token`, kept until shortly before it expires and
//! fetched again once when the API refuses it). A shop's listings are read
//! by offset with their inventory (`includes=Inventory`); a listing is a
//! product, each of its inventory products a variant (named by its SKU). A quantity is
//! written by reading the listing's inventory and putting it back whole
//! with the new quantity (`PUT /v3/application/listings/{id}/inventory`).
//! A paid order's webhook is booked from the receipt it points at
//! (`GET /v3/application/shops/{shop_id}/receipts/{receipt_id}`).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{
    Settings,
    driver::{
        ChannelDriver, DriverError, Headers, Inbound, ProductPage, Push, RatePolicy, RemoteProduct,
        RemoteSale, RemoteVariant, Store, needs_secret, standard_webhook_verify,
    },
};

const PAGE_SIZE: u64 = 100;
/// A token is fetched again this long before Etsy said it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

pub struct Etsy {
    http: reqwest::Client,
    policy: RatePolicy,
    timeout: Duration,
    /// By API key and refresh token: one per credential.
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Etsy's `error` (and OAuth's `error_description`).
fn message(body: &Value) -> Option<String> {
    body["error_description"].as_str().or(body["error"].as_str()).map(str::to_owned)
}

/// `{amount, divisor}` as minor units of its currency (two decimals).
fn minor(price: &Value) -> Option<i64> {
    let (amount, divisor) = (price["amount"].as_i64()?, price["divisor"].as_i64().filter(|d| *d > 0)?);
    amount.checked_mul(100).map(|a| a / divisor)
}

impl Etsy {
    pub fn new(http: reqwest::Client, settings: &Settings) -> Self {
        Self {
            http,
            policy: settings.etsy.rate_limit,
            timeout: settings.timeout(),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn key(store: &Store<'_>) -> (String, String) {
        (store.credential("api_key").to_owned(), store.credential("refresh_token").to_owned())
    }

    /// The kept bearer token, or a new one; `true` when new.
    async fn token(&self, store: &Store<'_>) -> Result<(String, bool), DriverError> {
        if let Some((token, _)) = lock(&self.tokens).get(&Self::key(store)).filter(|t| t.1 > Instant::now()) {
            return Ok((token.clone(), false));
        }
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("client_id", store.credential("api_key"))
            .append_pair("refresh_token", store.credential("refresh_token"))
            .finish();
        let res = self
            .http
            .post(store.url("v3/public/oauth/token"))
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(DriverError::transport)?;
        let status = res.status();
        if !status.is_success() {
            // OAuth answers 400 `invalid_grant` for a refresh token it no longer honours.
            return Err(match DriverError::from_status(res, message).await {
                DriverError::Failed(m) if status == reqwest::StatusCode::BAD_REQUEST => {
                    DriverError::Unauthorized(format!("Etsy OAuth: {m}"))
                }
                DriverError::Unauthorized(m) => DriverError::Unauthorized(format!("Etsy OAuth: {m}")),
                other => other,
            });
        }
        let body: Value =
            res.json().await.map_err(|e| DriverError::Failed(format!("not an OAuth token answer: {e}")))?;
        let (Some(token), Some(expires_in)) = (body["access_token"].as_str(), body["expires_in"].as_u64())
        else {
            return Err(DriverError::Failed(
                "the token answer has no access_token and expires_in".to_owned(),
            ));
        };
        let until = Instant::now() + Duration::from_secs(expires_in).saturating_sub(EXPIRY_MARGIN);
        lock(&self.tokens).insert(Self::key(store), (token.to_owned(), until));
        Ok((token.to_owned(), true))
    }

    /// One API call; a kept token Etsy refuses is dropped and the call
    /// made once more with a new one.
    async fn call(
        &self,
        store: &Store<'_>,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, DriverError> {
        loop {
            let (token, fresh) = self.token(store).await?;
            let mut request = self
                .http
                .request(method.clone(), store.url(path))
                .timeout(self.timeout)
                .header("x-api-key", store.credential("api_key"))
                .bearer_auth(token);
            if let Some(body) = body {
                request = request.json(body);
            }
            store.pace.turn().await;
            let res = request.send().await.map_err(DriverError::transport)?;
            if res.status().is_success() {
                return res.json().await.map_err(|e| DriverError::Failed(format!("not Etsy JSON: {e}")));
            }
            match DriverError::from_status(res, message).await {
                DriverError::Unauthorized(_) if !fresh => {
                    lock(&self.tokens).remove(&Self::key(store));
                }
                other => return Err(other),
            }
        }
    }

    async fn inventory(&self, store: &Store<'_>, listing: &str) -> Result<Value, DriverError> {
        self.call(store, reqwest::Method::GET, &format!("v3/application/listings/{listing}/inventory"), None)
            .await
    }
}

/// A variant's id: its SKU (Etsy gives an inventory's products new ids
/// whenever the inventory is written), or its product id when it has none.
fn variant_id(p: &Value) -> Option<String> {
    match p["sku"].as_str().filter(|s| !s.is_empty()) {
        Some(sku) => Some(sku.to_owned()),
        None => p["product_id"].as_i64().map(|i| i.to_string()),
    }
}

/// The variants of a listing's inventory.
fn variants(inventory: &Value) -> Vec<RemoteVariant> {
    inventory["products"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["is_deleted"] != true)
        .filter_map(|p| {
            let offering = p["offerings"].as_array()?.iter().find(|o| o["is_deleted"] != true)?;
            Some(RemoteVariant {
                id: variant_id(p)?,
                sku: p["sku"].as_str().filter(|s| !s.is_empty()).map(str::to_owned),
                title: None,
                inventory_item_id: None,
                quantity: offering["quantity"].as_i64(),
                price: minor(&offering["price"]),
            })
        })
        .collect()
}

fn product(listing: &Value) -> Result<RemoteProduct, DriverError> {
    let id = listing["listing_id"]
        .as_i64()
        .ok_or_else(|| DriverError::Failed("a listing without listing_id".to_owned()))?;
    Ok(RemoteProduct {
        id: id.to_string(),
        title: listing["title"].as_str().unwrap_or_default().to_owned(),
        updated_at: listing["last_modified_timestamp"].as_i64().and_then(|t| DateTime::from_timestamp(t, 0)),
        variants: variants(&listing["inventory"]),
        raw: listing.clone(),
    })
}

/// The inventory as `PUT` takes it back: prices as decimals, only the
/// fields it accepts, each offering's quantity from `quantities` (by
/// variant id) when given.
fn writable(inventory: &Value, quantities: &HashMap<String, i64>) -> Value {
    let products: Vec<Value> = inventory["products"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["is_deleted"] != true)
        .map(|p| {
            let id = variant_id(p).unwrap_or_default();
            let offerings: Vec<Value> = p["offerings"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| o["is_deleted"] != true)
                .map(|o| {
                    let price = &o["price"];
                    let decimal = price["amount"].as_f64().unwrap_or(0.0)
                        / price["divisor"].as_f64().filter(|d| *d > 0.0).unwrap_or(100.0);
                    let quantity = quantities.get(&id).copied().or(o["quantity"].as_i64()).unwrap_or(0);
                    json!({"price": decimal, "quantity": quantity, "is_enabled": o["is_enabled"]})
                })
                .collect();
            json!({"sku": p["sku"], "property_values": p["property_values"], "offerings": offerings})
        })
        .collect();
    json!({"products": products, "price_on_property": inventory["price_on_property"],
        "quantity_on_property": inventory["quantity_on_property"], "sku_on_property": inventory["sku_on_property"]})
}

#[async_trait::async_trait]
impl ChannelDriver for Etsy {
    fn channel(&self) -> &'static str {
        "etsy"
    }

    fn credential_fields(&self) -> &'static [&'static str] {
        &["api_key", "refresh_token", "shop_id"]
    }

    fn policy(&self) -> RatePolicy {
        self.policy
    }

    async fn fetch_product(&self, store: &Store<'_>, remote_id: &str) -> Result<RemoteProduct, DriverError> {
        if remote_id.is_empty() || !remote_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DriverError::NotFound(format!("the shop has no listing {remote_id}")));
        }
        let mut listing = self
            .call(store, reqwest::Method::GET, &format!("v3/application/listings/{remote_id}"), None)
            .await?;
        listing["inventory"] = self.inventory(store, remote_id).await?;
        product(&listing)
    }

    /// By offset; Etsy's list has no "changed since" filter, so `since`
    /// keeps the listings modified after it from each page.
    async fn list_products(
        &self,
        store: &Store<'_>,
        since: Option<DateTime<Utc>>,
        cursor: Option<&str>,
    ) -> Result<ProductPage, DriverError> {
        let offset: u64 = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
        let path = format!(
            "v3/application/shops/{}/listings?limit={PAGE_SIZE}&offset={offset}&includes=Inventory",
            url::form_urlencoded::byte_serialize(store.credential("shop_id").as_bytes()).collect::<String>()
        );
        let page = self.call(store, reqwest::Method::GET, &path, None).await?;
        let results = page["results"]
            .as_array()
            .ok_or_else(|| DriverError::Failed("the answer has no results".to_owned()))?;
        let count = page["count"].as_u64().unwrap_or(0);
        let products = results
            .iter()
            .map(product)
            .filter(
                |p| !matches!((since, p), (Some(since), Ok(p)) if p.updated_at.is_some_and(|t| t <= since)),
            )
            .collect::<Result<_, _>>()?;
        let next = offset + results.len() as u64;
        Ok(ProductPage { products, next: (!results.is_empty() && next < count).then(|| next.to_string()) })
    }

    /// Per listing: read its inventory, put it back with the new quantities.
    async fn push_quantities(&self, store: &Store<'_>, pushes: &[Push]) -> Result<(), DriverError> {
        let mut by_listing: Vec<(&str, HashMap<String, i64>)> = Vec::new();
        for push in pushes {
            match by_listing.iter_mut().find(|(l, _)| *l == push.remote_product_id) {
                Some((_, q)) => {
                    q.insert(push.remote_variant_id.clone(), push.quantity);
                }
                None => by_listing.push((
                    &push.remote_product_id,
                    HashMap::from([(push.remote_variant_id.clone(), push.quantity)]),
                )),
            }
        }
        for (listing, quantities) in by_listing {
            let inventory = self.inventory(store, listing).await?;
            let body = writable(&inventory, &quantities);
            let path = format!("v3/application/listings/{listing}/inventory");
            self.call(store, reqwest::Method::PUT, &path, Some(&body)).await?;
        }
        Ok(())
    }

    /// Etsy signs its webhooks the Standard Webhooks way: `webhook-id`,
    /// `webhook-timestamp` (within 5 minutes of now) and
    /// `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
    /// keyed with the endpoint's signing secret (`whsec_...`).
    async fn verify_webhook(
        &self,
        secret: Option<&str>,
        headers: &Headers,
        body: &[u8],
    ) -> Result<(), String> {
        standard_webhook_verify(needs_secret(secret)?, headers, body, Utc::now().timestamp())
    }

    /// Etsy's events carry `event_type`, the shop and a `resource_url` to
    /// read, never a quantity. A paid order (`ORDER_PAID`, sent as
    /// `order.paid`) names its receipt, which [`Self::resolve_webhook`]
    /// reads; other events are logged. The `webhook-id` is the event id.
    fn parse_webhook(&self, headers: &Headers, body: &[u8]) -> Result<Inbound, String> {
        let event: Value = serde_json::from_slice(body).map_err(|e| format!("not an Etsy event: {e}"))?;
        let topic = event["event_type"]
            .as_str()
            .ok_or_else(|| "not an Etsy event: no event_type".to_owned())?
            .to_owned();
        let mut inbound = Inbound {
            event_id: headers.get("webhook-id").cloned(),
            topic: Some(topic),
            ..Inbound::default()
        };
        if !matches!(inbound.topic.as_deref(), Some("ORDER_PAID" | "order.paid")) {
            inbound.note = Some("Etsy's event carries no stock change".to_owned());
            return Ok(inbound);
        }
        // Only the path is kept: it is read at the connection's base URL,
        // never at a host the body names.
        let path = event["resource_url"]
            .as_str()
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.path().trim_start_matches('/').to_owned())
            .filter(|p| receipt_of(p).is_some())
            .ok_or_else(|| "a paid order whose resource_url is no shop receipt".to_owned())?;
        inbound.resource = Some(path);
        Ok(inbound)
    }

    /// A paid order: its receipt (`getShopReceipt`), whose transactions
    /// each sold `quantity` units of a listing's product (named as the
    /// import names variants: by SKU, else by product id).
    async fn resolve_webhook(&self, store: &Store<'_>, inbound: &mut Inbound) -> Result<(), DriverError> {
        let Some((shop, receipt)) = inbound.resource.as_deref().and_then(receipt_of) else { return Ok(()) };
        if shop != store.credential("shop_id") {
            inbound.note = Some(format!("a receipt of shop {shop}, not the connection's"));
            return Ok(());
        }
        let path = format!("v3/application/shops/{shop}/receipts/{receipt}");
        let body = self.call(store, reqwest::Method::GET, &path, None).await?;
        inbound.reference = Some(format!("receipt:{receipt}"));
        inbound.sold = body["transactions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let quantity = t["quantity"].as_i64().filter(|q| *q > 0)?;
                Some(RemoteSale { variant_id: variant_id(t)?, quantity })
            })
            .collect();
        if inbound.sold.is_empty() {
            inbound.note = Some(format!("receipt {receipt} sells no units"));
        }
        Ok(())
    }
}

/// `v3/application/shops/{shop_id}/receipts/{receipt_id}`: the two ids.
fn receipt_of(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("v3/application/shops/")?;
    let (shop, receipt) = rest.split_once("/receipts/")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(shop) && digits(receipt)).then_some((shop, receipt))
}
