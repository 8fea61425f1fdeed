//! The channel driver contract. A channel (Shopify, WooCommerce, Amazon,
//! Etsy; later eBay...) is one implementation of [`ChannelDriver`] and
//! one line in [`drivers`]: it speaks the store's real API over HTTP
//! against the connection's base URL, and hands back one normalised
//! product shape with the store's own payload kept beside it.

use std::{collections::BTreeMap, collections::HashMap, num::NonZeroU32, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use reqwest::{Response, StatusCode, header::RETRY_AFTER};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::Settings;
use crate::platform::ratelimit::{Bucket, RateLimiter};

/// A store as a driver reaches it: the connection's base URL, its
/// credentials (opened), for channels that have one its location, and the
/// token bucket of its credential.
pub struct Store<'a> {
    pub base_url: &'a str,
    pub credentials: &'a BTreeMap<String, String>,
    pub location_id: Option<&'a str>,
    pub pace: &'a Pace,
}

/// The token bucket of one credential: every call to the store takes a
/// token first, waiting for the next one when the bucket is empty (never
/// failing), so no instance calls faster than the channel allows. With
/// Redis configured, every instance takes from the same bucket.
#[derive(Clone)]
pub struct Pace {
    limiter: Option<RateLimiter>,
    key: String,
    bucket: Option<Bucket>,
}

impl Pace {
    /// The bucket of `credentials` on `channel` at `base_url`: its key is a
    /// hash of the three (never the credentials themselves).
    pub fn new(
        limiter: Option<RateLimiter>,
        channel: &str,
        base_url: &str,
        credentials: &BTreeMap<String, String>,
        policy: RatePolicy,
    ) -> Self {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for part in [channel, base_url] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        for (name, value) in credentials {
            hash.update(name.as_bytes());
            hash.update([0]);
            hash.update(value.as_bytes());
            hash.update([0]);
        }
        let digest = hash.finalize();
        let key = format!("channel:{channel}:{}", hex::encode(&digest[..16]));
        let bucket = NonZeroU32::new(policy.per_second)
            .zip(NonZeroU32::new(policy.burst))
            .map(|(per_second, burst)| Bucket { per_second, burst });
        Self { limiter, key, bucket }
    }

    /// No bucket: calls go out as fast as they come (tests of other things).
    pub fn unlimited() -> Self {
        Self { limiter: None, key: String::new(), bucket: None }
    }

    /// Wait for a token of the bucket.
    pub async fn turn(&self) {
        let (Some(limiter), Some(bucket)) = (&self.limiter, self.bucket) else { return };
        while let Err(wait) = limiter.take(&self.key, bucket).await {
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

impl Store<'_> {
    /// A credential the driver declared in [`ChannelDriver::credential_fields`]
    /// (checked when the connection was saved).
    pub fn credential(&self, name: &str) -> &str {
        self.credentials.get(name).map_or("", String::as_str)
    }

    /// `path` under the base URL, with one slash between them.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url.trim_end_matches('/'), path.trim_start_matches('/'))
    }
}

/// One product of a store, the same shape whatever the channel.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "ChannelRemoteProduct")]
pub struct RemoteProduct {
    /// The store's id (`gid://shopify/Product/1`, `42`).
    #[schema(example = "gid://shopify/Product/1001")]
    pub id: String,
    #[schema(example = "T-shirt")]
    pub title: String,
    pub updated_at: Option<DateTime<Utc>>,
    /// At least one: a product without variants is its own variant.
    pub variants: Vec<RemoteVariant>,
    /// The store's payload, as it sent it.
    #[graphql(skip)]
    pub raw: Value,
}

#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "ChannelRemoteVariant")]
pub struct RemoteVariant {
    #[schema(example = "gid://shopify/ProductVariant/2001")]
    pub id: String,
    #[schema(example = "TSHIRT-RED-M")]
    pub sku: Option<String>,
    /// The variant's own name (`Red / M`), when it has one.
    pub title: Option<String>,
    /// What the store counts stock against (Shopify's inventory item).
    pub inventory_item_id: Option<String>,
    /// The store's quantity, when it tracks one.
    pub quantity: Option<i64>,
    /// Minor units.
    #[schema(example = 2499)]
    pub price: Option<i64>,
}

/// A page of products and the cursor of the next one.
pub struct ProductPage {
    pub products: Vec<RemoteProduct>,
    pub next: Option<String>,
}

/// An absolute quantity for one variant of a store.
#[derive(Clone, Debug)]
pub struct Push {
    pub remote_product_id: String,
    pub remote_variant_id: String,
    pub inventory_item_id: Option<String>,
    pub quantity: i64,
}

/// How fast a channel lets one credential call it: a token bucket
/// (`per_second` or `burst` 0: no bucket, calls are not paced).
#[derive(Clone, Copy, Debug, Serialize, ToSchema, async_graphql::SimpleObject, serde::Deserialize)]
#[graphql(name = "ChannelRatePolicy")]
#[serde(deny_unknown_fields)]
pub struct RatePolicy {
    /// Tokens added per second.
    pub per_second: u32,
    /// The bucket's size: calls allowed at once after a quiet period.
    pub burst: u32,
}

/// Why a call to a store failed, as the sync engine acts on it.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The store asked to slow down (429, or Shopify's query cost).
    #[error("throttled: {message}")]
    Throttled { retry_after: Duration, message: String },
    /// The credentials no longer work (401, 403): the store's own message.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    /// A compare-and-set lost to concurrent changes on every attempt.
    #[error("{0}")]
    Stale(String),
    /// The store is down, timed out or answered garbage: worth retrying.
    #[error("{0}")]
    Failed(String),
}

impl DriverError {
    /// The errors of an answer that is not a success, by status; `message`
    /// reads the store's own explanation from the body.
    pub async fn from_status(res: Response, message: impl Fn(&Value) -> Option<String>) -> DriverError {
        let status = res.status();
        let retry_after = res
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(Duration::from_secs(1), |s| Duration::from_secs_f64(s.clamp(0.0, 3600.0)));
        let body = res.text().await.unwrap_or_default();
        let text = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| message(&v))
            .unwrap_or_else(|| body.chars().take(200).collect());
        let text = format!("{} {}: {text}", status.as_u16(), status.canonical_reason().unwrap_or(""));
        let text = crate::platform::db::storable(text);
        match status {
            StatusCode::TOO_MANY_REQUESTS => DriverError::Throttled { retry_after, message: text },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => DriverError::Unauthorized(text),
            StatusCode::NOT_FOUND => DriverError::NotFound(text),
            _ => DriverError::Failed(text),
        }
    }

    /// A request that got no answer (refused, timed out) or an unreadable one.
    pub fn transport(err: reqwest::Error) -> DriverError {
        DriverError::Failed(format!("the store could not be reached: {err}"))
    }
}

/// A webhook's headers, names in lower case.
pub type Headers = HashMap<String, String>;

/// What a verified webhook says.
#[derive(Debug, Default)]
pub struct Inbound {
    /// The store's id of the event: a second delivery of it is a replay.
    pub event_id: Option<String>,
    pub topic: Option<String>,
    /// A new quantity of one variant, when the topic carries one.
    pub stock: Option<RemoteStock>,
    /// A subscription the channel asks to confirm by a GET of this URL
    /// (Amazon SNS's `SubscribeURL`), once the message verified.
    pub subscribe_url: Option<String>,
    /// Why a verified message changes nothing, when it carries no stock.
    pub note: Option<String>,
    /// What the event points at, to be read before it can be booked
    /// ([`ChannelDriver::resolve_webhook`]; Etsy: the receipt's path).
    pub resource: Option<String>,
    /// Units sold on the store, once the resource was read: a delta each,
    /// not a level.
    pub sold: Vec<RemoteSale>,
    /// What a sale is booked against (`receipt:9001`), instead of the event id.
    pub reference: Option<String>,
}

/// Units of one variant sold on the store.
#[derive(Debug)]
pub struct RemoteSale {
    pub variant_id: String,
    pub quantity: i64,
}

/// The store's quantity of one variant, named by its id or its inventory item.
#[derive(Debug)]
pub struct RemoteStock {
    pub variant_id: Option<String>,
    pub inventory_item_id: Option<String>,
    /// The store's location, for channels that have them.
    pub location_id: Option<String>,
    pub quantity: i64,
}

/// Whether `signature` is the base64 HMAC-SHA256 of `body` keyed with
/// `secret` (compared in constant time).
pub fn hmac_base64_matches(secret: &str, signature: Option<&String>, body: &[u8]) -> bool {
    use base64::{Engine, engine::general_purpose::STANDARD};
    use hmac::{Hmac, Mac};
    let Some(signature) = signature.and_then(|s| STANDARD.decode(s.trim()).ok()) else { return false };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else { return false };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

/// The secret a webhook is verified with, or why there is none.
pub fn needs_secret(secret: Option<&str>) -> Result<&str, String> {
    secret.ok_or_else(|| "the connection has no webhook secret to verify with".to_owned())
}

/// How far a Standard Webhooks `webhook-timestamp` may be from now.
pub const STANDARD_WEBHOOK_TOLERANCE: i64 = 300;

/// A [Standard Webhooks](https://www.standardwebhooks.com/) signature:
/// `webhook-signature` holds space-separated `v1,<base64>` entries, one of
/// which must be the HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`
/// keyed with the secret (`whsec_` + base64 of the key bytes), and
/// `webhook-timestamp` (Unix seconds) must be within
/// [`STANDARD_WEBHOOK_TOLERANCE`] of `now`.
pub fn standard_webhook_verify(secret: &str, headers: &Headers, body: &[u8], now: i64) -> Result<(), String> {
    use base64::{Engine, engine::general_purpose::STANDARD};
    use hmac::{Hmac, Mac};
    let key = STANDARD
        .decode(secret.trim().trim_start_matches("whsec_"))
        .map_err(|_| "the webhook secret is not a whsec_ base64 key".to_owned())?;
    let (Some(id), Some(timestamp), Some(signatures)) =
        (headers.get("webhook-id"), headers.get("webhook-timestamp"), headers.get("webhook-signature"))
    else {
        return Err("webhook-id, webhook-timestamp and webhook-signature are required".to_owned());
    };
    let at: i64 = timestamp.trim().parse().map_err(|_| "webhook-timestamp is not Unix seconds".to_owned())?;
    if (now - at).abs() > STANDARD_WEBHOOK_TOLERANCE {
        return Err(format!("webhook-timestamp is more than {STANDARD_WEBHOOK_TOLERANCE} s away from now"));
    }
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(&key) else {
        return Err("the webhook secret is empty".to_owned());
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let matches = signatures
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|sig| STANDARD.decode(sig).ok())
        .any(|sig| mac.clone().verify_slice(&sig).is_ok());
    if matches { Ok(()) } else { Err("the signature does not match the body".to_owned()) }
}

/// What every channel does, the same way.
#[async_trait::async_trait]
pub trait ChannelDriver: Send + Sync {
    /// Its name: `shopify`. A connection's `channel`.
    fn channel(&self) -> &'static str;
    /// The credentials a connection must give, by name.
    fn credential_fields(&self) -> &'static [&'static str];
    /// Whether a connection must name the store's location.
    fn needs_location(&self) -> bool {
        false
    }
    /// How fast one credential may call the store.
    fn policy(&self) -> RatePolicy;
    /// One product by the store's id.
    async fn fetch_product(&self, store: &Store<'_>, remote_id: &str) -> Result<RemoteProduct, DriverError>;
    /// Products changed since `since` (all when `None`), a page at a time
    /// from `cursor` (the first page when `None`).
    async fn list_products(
        &self,
        store: &Store<'_>,
        since: Option<DateTime<Utc>>,
        cursor: Option<&str>,
    ) -> Result<ProductPage, DriverError>;
    /// Set the store's quantity of each variant to the absolute value given.
    async fn push_quantities(&self, store: &Store<'_>, pushes: &[Push]) -> Result<(), DriverError>;
    /// Whether a webhook is authentic (`secret`: the connection's webhook
    /// secret, when it has one); `Err` says why not. Checked before
    /// anything else is read.
    async fn verify_webhook(
        &self,
        secret: Option<&str>,
        headers: &Headers,
        body: &[u8],
    ) -> Result<(), String>;
    /// What a verified webhook says; `Err` says why it cannot be read.
    fn parse_webhook(&self, headers: &Headers, body: &[u8]) -> Result<Inbound, String>;
    /// Read what a verified event points at ([`Inbound::resource`]) and
    /// fill in what it changed ([`Inbound::sold`]); called only when the
    /// driver's [`ChannelDriver::parse_webhook`] named a resource.
    async fn resolve_webhook(&self, _store: &Store<'_>, _inbound: &mut Inbound) -> Result<(), DriverError> {
        Ok(())
    }
    /// Confirm a subscription a verified message asked for
    /// ([`Inbound::subscribe_url`]); `Err` says why it was not.
    async fn confirm_subscription(&self, _url: &str) -> Result<(), String> {
        Err(format!("{} has no subscriptions to confirm", self.channel()))
    }
}

/// The channels of this build, by name.
#[derive(Clone, Default)]
pub struct Drivers(HashMap<&'static str, Arc<dyn ChannelDriver>>);

impl Drivers {
    fn with(mut self, driver: impl ChannelDriver + 'static) -> Self {
        self.0.insert(driver.channel(), Arc::new(driver));
        self
    }

    pub fn get(&self, channel: &str) -> Option<&Arc<dyn ChannelDriver>> {
        self.0.get(channel)
    }

    /// Every channel's name, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.0.keys().copied().collect();
        names.sort_unstable();
        names
    }
}

/// One line per channel.
pub fn drivers(http: &reqwest::Client, settings: &Settings) -> Drivers {
    Drivers::default()
        .with(super::shopify::Shopify::new(http.clone(), settings))
        .with(super::woocommerce::WooCommerce::new(http.clone(), settings))
        .with(super::amazon::Amazon::new(http.clone(), settings))
        .with(super::etsy::Etsy::new(http.clone(), settings))
}

/// `"19.99"` as minor units (1999); `None` when it is no such amount.
pub fn minor_units(amount: &str) -> Option<i64> {
    let (whole, fraction) = amount.trim().split_once('.').unwrap_or((amount.trim(), ""));
    if whole.is_empty()
        || fraction.len() > 2
        || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let cents = format!("{fraction:0<2}").parse::<i64>().ok()?;
    whole.parse::<i64>().ok()?.checked_mul(100)?.checked_add(cents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_store_error_is_text_that_can_be_stored() {
        let answer = |body: &'static str| {
            Response::from(http::Response::builder().status(500).body(body).expect("a response"))
        };
        let message = |v: &Value| v["message"].as_str().map(str::to_owned);
        let raw = DriverError::from_status(answer("down\0"), message).await;
        assert!(
            matches!(&raw, DriverError::Failed(t) if t == "500 Internal Server Error: down\u{FFFD}"),
            "{raw:?}"
        );
        let json = DriverError::from_status(answer(r#"{"message":"bad\u0000id"}"#), message).await;
        assert!(matches!(&json, DriverError::Failed(t) if t.ends_with("bad\u{FFFD}id")), "{json:?}");
    }

    #[test]
    fn a_webhook_signature_is_the_base64_hmac_of_the_body() {
        // Computed with `printf '{"a":1}' | openssl dgst -sha256 -hmac secret -binary | base64`.
        let signature = "qp4uNXX11wmLbKzNeQiIw21f22M0KnO62i1qUXR6hJQ=".to_owned();
        assert!(hmac_base64_matches("secret", Some(&signature), br#"{"a":1}"#));
        assert!(!hmac_base64_matches("secret", Some(&signature), br#"{"a":2}"#));
        assert!(!hmac_base64_matches("other", Some(&signature), br#"{"a":1}"#));
        assert!(!hmac_base64_matches("secret", Some(&"not base64!".to_owned()), br#"{"a":1}"#));
        assert!(!hmac_base64_matches("secret", None, br#"{"a":1}"#));
    }

    #[test]
    fn a_standard_webhook_signature_is_checked_with_its_timestamp() {
        // The Standard Webhooks reference example.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let headers = |signature: &str| -> Headers {
            [
                ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
                ("webhook-timestamp", "1614265330"),
                ("webhook-signature", signature),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
        };
        let good = headers("v1,bm90IGl0 v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(standard_webhook_verify(secret, &good, body, 1_614_265_330), Ok(()));
        assert_eq!(standard_webhook_verify(secret, &good, body, 1_614_265_330 + 299), Ok(()));
        assert!(standard_webhook_verify(secret, &good, body, 1_614_265_330 + 301).is_err(), "too late");
        assert!(standard_webhook_verify(secret, &good, body, 1_614_265_330 - 301).is_err(), "too early");
        assert!(standard_webhook_verify(secret, &good, br#"{"test": 1}"#, 1_614_265_330).is_err());
        let other_scheme = headers("v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(standard_webhook_verify(secret, &other_scheme, body, 1_614_265_330).is_err());
        assert!(standard_webhook_verify(secret, &Headers::new(), body, 1_614_265_330).is_err());
        assert!(standard_webhook_verify("whsec_!!", &good, body, 1_614_265_330).is_err());
    }

    #[test]
    fn amounts_become_minor_units() {
        assert_eq!(minor_units("19.99"), Some(1999));
        assert_eq!(minor_units("5"), Some(500));
        assert_eq!(minor_units("5.5"), Some(550));
        assert_eq!(minor_units("0.05"), Some(5));
        for bad in ["", "1.234", "-1", "abc", ".5", "1.x"] {
            assert_eq!(minor_units(bad), None, "{bad}");
        }
    }
}
