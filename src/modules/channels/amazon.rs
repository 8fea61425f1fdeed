//! Amazon through the Selling Partner API. Login with Amazon (LWA) trades
//! the connection's refresh token for an access token (`POST
//! /auth/o2/token`, kept until shortly before it expires and fetched again
//! once when the API says it expired), sent as `x-amz-access-token`; SP-API
//! needs no AWS signature. Listings come from the Listings Items API:
//! `searchListingsItems` page by page (`pageToken`), `getListingsItem` for
//! one SKU, and `patchListingsItem` replacing
//! `/attributes/fulfillment_availability` to set a quantity. A listing is
//! its own product and variant, both named by its SKU. A 429 waits as long
//! as `Retry-After` says, or one call's worth of `x-amzn-RateLimit-Limit`.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{
    Settings,
    driver::{
        ChannelDriver, DriverError, Headers, Inbound, ProductPage, Push, RatePolicy, RemoteProduct,
        RemoteStock, RemoteVariant, Store, minor_units,
    },
};

const API_VERSION: &str = "2021-08-01";
/// The most listings `searchListingsItems` answers per page.
const PAGE_SIZE: u32 = 20;
const INCLUDED: &str = "summaries,offers,fulfillmentAvailability";
/// A token is fetched again this long before LWA said it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// An access token and when it stops being used.
#[derive(Clone)]
struct Token {
    value: String,
    until: Instant,
}

pub struct Amazon {
    http: reqwest::Client,
    token_url: String,
    policy: RatePolicy,
    timeout: Duration,
    /// By client id and refresh token: one per credential.
    tokens: Mutex<HashMap<(String, String), Token>>,
    /// Checks the SNS messages notifications arrive in.
    sns: super::sns::Verifier,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `message`s of SP-API's `errors`, joined.
fn messages(body: &Value) -> Option<String> {
    let list: Vec<String> = body["errors"]
        .as_array()?
        .iter()
        .filter_map(|e| {
            let message = e["message"].as_str()?;
            Some(match e["details"].as_str().filter(|d| !d.is_empty()) {
                Some(details) => format!("{message} {details}"),
                None => message.to_owned(),
            })
        })
        .collect();
    (!list.is_empty()).then(|| list.join("; "))
}

impl Amazon {
    pub fn new(http: reqwest::Client, settings: &Settings) -> Self {
        Self {
            http: http.clone(),
            token_url: settings.amazon.token_url.clone(),
            policy: settings.amazon.rate_limit,
            timeout: settings.timeout(),
            tokens: Mutex::new(HashMap::new()),
            sns: super::sns::Verifier::new(
                http,
                settings.timeout(),
                settings.amazon.sns_cert_host_pattern(),
                settings.amazon.sns_allow_http,
            ),
        }
    }

    fn key(store: &Store<'_>) -> (String, String) {
        (store.credential("client_id").to_owned(), store.credential("refresh_token").to_owned())
    }

    /// The cached access token, or a new one from LWA; `true` when new.
    async fn token(&self, store: &Store<'_>) -> Result<(String, bool), DriverError> {
        if let Some(token) = lock(&self.tokens).get(&Self::key(store)).filter(|t| t.until > Instant::now()) {
            return Ok((token.value.clone(), false));
        }
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("refresh_token", store.credential("refresh_token"))
            .append_pair("client_id", store.credential("client_id"))
            .append_pair("client_secret", store.credential("client_secret"))
            .finish();
        let res = self
            .http
            .post(&self.token_url)
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded;charset=UTF-8")
            .body(form)
            .send()
            .await
            .map_err(DriverError::transport)?;
        let status = res.status();
        if !status.is_success() {
            let error = DriverError::from_status(res, |body| {
                body["error_description"].as_str().or(body["error"].as_str()).map(str::to_owned)
            })
            .await;
            // LWA answers 400 `invalid_grant` for a refresh token it no longer honours.
            return Err(match error {
                DriverError::Failed(message) if status == reqwest::StatusCode::BAD_REQUEST => {
                    DriverError::Unauthorized(format!("Login with Amazon: {message}"))
                }
                DriverError::Unauthorized(message) => {
                    DriverError::Unauthorized(format!("Login with Amazon: {message}"))
                }
                other => other,
            });
        }
        let body: Value =
            res.json().await.map_err(|e| DriverError::Failed(format!("not an LWA token answer: {e}")))?;
        let (Some(value), Some(expires_in)) = (body["access_token"].as_str(), body["expires_in"].as_u64())
        else {
            return Err(DriverError::Failed("the LWA answer has no access_token and expires_in".to_owned()));
        };
        let until = Instant::now() + Duration::from_secs(expires_in).saturating_sub(EXPIRY_MARGIN);
        lock(&self.tokens).insert(Self::key(store), Token { value: value.to_owned(), until });
        Ok((value.to_owned(), true))
    }

    /// One SP-API call with the access token; a cached token the API
    /// refuses is dropped and the call made once more with a new one.
    async fn call(
        &self,
        store: &Store<'_>,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, DriverError> {
        let url = url::Url::parse_with_params(&store.url(path), query)
            .map_err(|e| DriverError::Failed(format!("the base URL does not make an SP-API URL: {e}")))?;
        loop {
            let (token, fresh) = self.token(store).await?;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .timeout(self.timeout)
                .header("x-amz-access-token", token);
            if let Some(body) = body {
                request = request.json(body);
            }
            store.pace.turn().await;
            let res = request.send().await.map_err(DriverError::transport)?;
            if res.status().is_success() {
                return res.json().await.map_err(|e| DriverError::Failed(format!("not SP-API JSON: {e}")));
            }
            let limit = res
                .headers()
                .get("x-amzn-ratelimit-limit")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|l| *l > 0.0);
            let has_retry_after = res.headers().contains_key(reqwest::header::RETRY_AFTER);
            match DriverError::from_status(res, messages).await {
                DriverError::Unauthorized(_) if !fresh => {
                    lock(&self.tokens).remove(&Self::key(store));
                }
                DriverError::Throttled { retry_after, message } => {
                    let retry_after = match limit {
                        // One call's worth of the operation's current rate.
                        Some(limit) if !has_retry_after => {
                            Duration::from_secs_f64((1.0 / limit).clamp(1.0, 3600.0))
                        }
                        _ => retry_after,
                    };
                    return Err(DriverError::Throttled { retry_after, message });
                }
                other => return Err(other),
            }
        }
    }

    fn items_path(store: &Store<'_>) -> String {
        format!("listings/{API_VERSION}/items/{}", store.credential("seller_id"))
    }

    fn item_path(store: &Store<'_>, sku: &str) -> String {
        let sku: String = url::form_urlencoded::byte_serialize(sku.as_bytes()).collect();
        format!("{}/{}", Self::items_path(store), sku.replace('+', "%20"))
    }

    fn marketplace(store: &Store<'_>) -> (&'static str, String) {
        ("marketplaceIds", store.credential("marketplace_id").to_owned())
    }
}

/// A listing of the connection's marketplace as a product with one variant.
fn product(item: &Value, marketplace: &str) -> Result<RemoteProduct, DriverError> {
    let sku = item["sku"].as_str().ok_or_else(|| DriverError::Failed("a listing without sku".to_owned()))?;
    let in_marketplace = |field: &str| {
        item[field].as_array().and_then(|all| all.iter().find(|s| s["marketplaceId"] == marketplace)).cloned()
    };
    let summary = in_marketplace("summaries").unwrap_or(Value::Null);
    let price =
        in_marketplace("offers").and_then(|offer| offer["price"]["amount"].as_str().and_then(minor_units));
    let quantity = item["fulfillmentAvailability"]
        .as_array()
        .and_then(|all| all.iter().find(|f| f["fulfillmentChannelCode"] == "DEFAULT"))
        .and_then(|f| f["quantity"].as_i64());
    Ok(RemoteProduct {
        id: sku.to_owned(),
        title: summary["itemName"].as_str().unwrap_or(sku).to_owned(),
        updated_at: summary["lastUpdatedDate"].as_str().and_then(|t| t.parse().ok()),
        variants: vec![RemoteVariant {
            id: sku.to_owned(),
            sku: Some(sku.to_owned()),
            title: None,
            inventory_item_id: None,
            quantity,
            price,
        }],
        raw: item.clone(),
    })
}

#[async_trait::async_trait]
impl ChannelDriver for Amazon {
    fn channel(&self) -> &'static str {
        "amazon"
    }

    fn credential_fields(&self) -> &'static [&'static str] {
        &["client_id", "client_secret", "refresh_token", "seller_id", "marketplace_id"]
    }

    fn policy(&self) -> RatePolicy {
        self.policy
    }

    async fn fetch_product(&self, store: &Store<'_>, remote_id: &str) -> Result<RemoteProduct, DriverError> {
        let query = [Self::marketplace(store), ("includedData", INCLUDED.to_owned())];
        let item =
            self.call(store, reqwest::Method::GET, &Self::item_path(store, remote_id), &query, None).await?;
        product(&item, store.credential("marketplace_id"))
    }

    async fn list_products(
        &self,
        store: &Store<'_>,
        since: Option<DateTime<Utc>>,
        cursor: Option<&str>,
    ) -> Result<ProductPage, DriverError> {
        let mut query = vec![
            Self::marketplace(store),
            ("includedData", INCLUDED.to_owned()),
            ("pageSize", PAGE_SIZE.to_string()),
        ];
        if let Some(since) = since {
            query.push(("lastUpdatedAfter", since.to_rfc3339_opts(SecondsFormat::Secs, true)));
        }
        if let Some(cursor) = cursor {
            query.push(("pageToken", cursor.to_owned()));
        }
        let page = self.call(store, reqwest::Method::GET, &Self::items_path(store), &query, None).await?;
        let products = page["items"]
            .as_array()
            .ok_or_else(|| DriverError::Failed("the answer has no items".to_owned()))?
            .iter()
            .map(|item| product(item, store.credential("marketplace_id")))
            .collect::<Result<_, _>>()?;
        let next = page["pagination"]["nextToken"].as_str().filter(|t| !t.is_empty()).map(str::to_owned);
        Ok(ProductPage { products, next })
    }

    /// Per SKU: read the listing (its product type, which the patch must
    /// name, and its quantity: an equal one is left alone), then patch.
    async fn push_quantities(&self, store: &Store<'_>, pushes: &[Push]) -> Result<(), DriverError> {
        for push in pushes {
            let sku = &push.remote_variant_id;
            let current = self.fetch_product(store, sku).await?;
            if current.variants[0].quantity == Some(push.quantity) {
                continue;
            }
            let marketplace = store.credential("marketplace_id");
            let product_type = current.raw["summaries"]
                .as_array()
                .and_then(|all| all.iter().find(|s| s["marketplaceId"] == marketplace))
                .and_then(|s| s["productType"].as_str())
                .ok_or_else(|| DriverError::Failed(format!("listing {sku} names no product type")))?
                .to_owned();
            let patch = json!({"productType": product_type, "patches": [{
                "op": "replace", "path": "/attributes/fulfillment_availability",
                "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": push.quantity}]}]});
            let query = [Self::marketplace(store)];
            let answer = self
                .call(store, reqwest::Method::PATCH, &Self::item_path(store, sku), &query, Some(&patch))
                .await?;
            if answer["status"] != "ACCEPTED" {
                let issues: Vec<&str> = answer["issues"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["message"].as_str())
                    .collect();
                return Err(DriverError::Failed(format!(
                    "listing {sku}: {} {}",
                    answer["status"].as_str().unwrap_or("no status"),
                    issues.join("; ")
                )));
            }
        }
        Ok(())
    }

    /// An SNS message, verified against SNS's signing certificate; the
    /// connection's webhook secret is not used.
    async fn verify_webhook(
        &self,
        _secret: Option<&str>,
        _headers: &Headers,
        body: &[u8],
    ) -> Result<(), String> {
        self.sns.verify(body).await.map(|_| ())
    }

    /// A `SubscriptionConfirmation` asks to be confirmed; a `Notification`
    /// carries an SP-API notification in `Message`, of which
    /// `LISTINGS_ITEM_MFN_QUANTITY_CHANGE` (the seller-fulfilled quantity of
    /// a SKU) is a stock change. The SNS `MessageId` is the event id.
    fn parse_webhook(&self, _headers: &Headers, body: &[u8]) -> Result<Inbound, String> {
        let message: Value = serde_json::from_slice(body).map_err(|e| format!("not an SNS message: {e}"))?;
        let event_id = message["MessageId"].as_str().map(str::to_owned);
        match message["Type"].as_str() {
            Some("SubscriptionConfirmation") => Ok(Inbound {
                event_id,
                topic: Some("SubscriptionConfirmation".to_owned()),
                subscribe_url: message["SubscribeURL"].as_str().map(str::to_owned),
                ..Inbound::default()
            }),
            Some("Notification") => {
                let text = message["Message"].as_str().unwrap_or_default();
                let notification: Value = serde_json::from_str(text)
                    .map_err(|e| format!("the SNS Message is not an SP-API notification: {e}"))?;
                let kind = notification["NotificationType"].as_str().map(str::to_owned);
                let payload = &notification["Payload"];
                let stock = if kind.as_deref() == Some("LISTINGS_ITEM_MFN_QUANTITY_CHANGE") {
                    let (Some(sku), Some(quantity)) = (payload["Sku"].as_str(), payload["Quantity"].as_i64())
                    else {
                        return Err("LISTINGS_ITEM_MFN_QUANTITY_CHANGE without Sku and Quantity".to_owned());
                    };
                    if payload["FulfillmentChannelCode"].as_str().is_some_and(|c| c != "DEFAULT") {
                        None
                    } else {
                        Some(RemoteStock {
                            variant_id: Some(sku.to_owned()),
                            inventory_item_id: None,
                            location_id: None,
                            quantity,
                        })
                    }
                } else {
                    None
                };
                let note = stock.is_none().then(|| match kind.as_deref() {
                    Some("LISTINGS_ITEM_MFN_QUANTITY_CHANGE") => {
                        "a quantity fulfilled by Amazon, not from the connection's warehouse".to_owned()
                    }
                    Some(other) => format!("{other} carries no seller-fulfilled quantity"),
                    None => "the notification has no NotificationType".to_owned(),
                });
                Ok(Inbound { event_id, topic: kind, stock, note, ..Inbound::default() })
            }
            Some(other) => Ok(Inbound {
                event_id,
                topic: Some(other.to_owned()),
                note: Some(format!("an SNS {other} changes no stock")),
                ..Inbound::default()
            }),
            None => Err("not an SNS message: no Type".to_owned()),
        }
    }

    async fn confirm_subscription(&self, url: &str) -> Result<(), String> {
        self.sns.confirm(url).await
    }
}
