//! Shopify through its Admin GraphQL API: `X-Shopify-Access-Token`,
//! products and variants by cursor, and `inventorySetQuantities` with
//! `compareQuantity`, so a quantity changed on the store between our read
//! and our write is noticed (the store refuses the write), read again and
//! written again rather than overwritten blindly. Every answer says what
//! is left of the store's query cost budget
//! (`extensions.cost.throttleStatus`: `currentlyAvailable`, `restoreRate`):
//! before the next query, the driver waits until the budget holds what that
//! operation cost last time, so it does not meet `THROTTLED`; when it does
//! anyway (another app spends the same budget), it waits as long as the
//! budget takes to refill.

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
        RemoteStock, RemoteVariant, Store, hmac_base64_matches, minor_units, needs_secret,
    },
};

/// How often a write that lost to a concurrent change is tried again.
const COMPARE_ATTEMPTS: usize = 3;
const PAGE_SIZE: i64 = 50;

/// A product with each variant's `available` quantity at the connection's
/// location (`$location`): not `inventoryQuantity`, which sums every
/// location of the shop.
const PRODUCT_FIELDS: &str = "id title updatedAt variants(first: 100) { nodes { id title sku price \
     inventoryItem { id inventoryLevel(locationId: $location) { quantities(names: [\"available\"]) { name quantity } } } } }";

pub struct Shopify {
    http: reqwest::Client,
    api_version: String,
    policy: RatePolicy,
    timeout: Duration,
    /// The cost budget of each store and token, as its last answer told.
    budgets: Mutex<HashMap<(String, String), Budget>>,
}

/// What a store's cost budget held when, how fast it refills, and what
/// each operation cost last time.
#[derive(Default)]
struct Budget {
    available: f64,
    restore_rate: f64,
    maximum: f64,
    at: Option<Instant>,
    costs: HashMap<String, f64>,
}

impl Budget {
    /// How long to wait before spending `operation`'s cost, or `None`
    /// after taking it from the budget (`None` too when nothing is known,
    /// or when no wait would do: the store is left to say so).
    fn take(&mut self, operation: &str, now: Instant) -> Option<Duration> {
        let (Some(at), Some(cost)) = (self.at, self.costs.get(operation).copied()) else { return None };
        let available =
            (self.available + now.duration_since(at).as_secs_f64() * self.restore_rate).min(self.maximum);
        if available >= cost || cost > self.maximum || self.restore_rate <= 0.0 {
            self.available = available - cost;
            self.at = Some(now);
            return None;
        }
        Some(Duration::from_secs_f64(((cost - available) / self.restore_rate).min(60.0)))
    }

    /// What an answer's `extensions.cost` says.
    fn learn(&mut self, operation: &str, cost: &Value, now: Instant) {
        let status = &cost["throttleStatus"];
        if let (Some(available), Some(rate), Some(maximum)) = (
            status["currentlyAvailable"].as_f64(),
            status["restoreRate"].as_f64(),
            status["maximumAvailable"].as_f64(),
        ) {
            (self.available, self.restore_rate, self.maximum, self.at) =
                (available, rate, maximum, Some(now));
        }
        if let Some(requested) = cost["requestedQueryCost"].as_f64() {
            self.costs.insert(operation.to_owned(), requested);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shopify {
    pub fn new(http: reqwest::Client, settings: &Settings) -> Self {
        Self {
            http,
            api_version: settings.shopify.api_version.clone(),
            policy: settings.shopify.rate_limit,
            timeout: settings.timeout(),
            budgets: Mutex::new(HashMap::new()),
        }
    }

    fn key(store: &Store<'_>) -> (String, String) {
        (store.base_url.to_owned(), store.credential("access_token").to_owned())
    }

    /// Wait until the store's budget holds what `operation` costs.
    async fn budget(&self, store: &Store<'_>, operation: &str) {
        loop {
            let wait =
                lock(&self.budgets).entry(Self::key(store)).or_default().take(operation, Instant::now());
            match wait {
                Some(wait) => tokio::time::sleep(wait.max(Duration::from_millis(1))).await,
                None => return,
            }
        }
    }

    /// One GraphQL operation; its `data`, or why there is none.
    async fn call(
        &self,
        store: &Store<'_>,
        operation: &str,
        query: &str,
        variables: Value,
    ) -> Result<Value, DriverError> {
        let url = store.url(&format!("admin/api/{}/graphql.json", self.api_version));
        self.budget(store, operation).await;
        store.pace.turn().await;
        let res = self
            .http
            .post(url)
            .timeout(self.timeout)
            .header("X-Shopify-Access-Token", store.credential("access_token"))
            .json(&json!({"query": query, "variables": variables, "operationName": operation}))
            .send()
            .await
            .map_err(DriverError::transport)?;
        if !res.status().is_success() {
            return Err(DriverError::from_status(res, |body| match &body["errors"] {
                Value::String(s) => Some(s.clone()),
                other => messages(other),
            })
            .await);
        }
        let body: Value =
            res.json().await.map_err(|e| DriverError::Failed(format!("not GraphQL JSON: {e}")))?;
        if body["extensions"]["cost"].is_object() {
            lock(&self.budgets).entry(Self::key(store)).or_default().learn(
                operation,
                &body["extensions"]["cost"],
                Instant::now(),
            );
        }
        if let Some(errors) = body["errors"].as_array().filter(|e| !e.is_empty()) {
            let message = messages(&body["errors"]).unwrap_or_default();
            if errors.iter().any(|e| e["extensions"]["code"] == "THROTTLED") {
                return Err(DriverError::Throttled {
                    retry_after: refill(&body["extensions"]["cost"]),
                    message,
                });
            }
            // A token without the scopes the call needs.
            if errors.iter().any(|e| e["extensions"]["code"] == "ACCESS_DENIED") {
                return Err(DriverError::Unauthorized(message));
            }
            return Err(DriverError::Failed(message));
        }
        match body.get("data") {
            Some(data) if data.is_object() => Ok(data.clone()),
            _ => Err(DriverError::Failed("the answer has no data".to_owned())),
        }
    }

    /// The `available` quantity of an inventory item at the store's location.
    async fn available(&self, store: &Store<'_>, item: &str, location: &str) -> Result<i64, DriverError> {
        let query = "query Level($item: ID!, $location: ID!) { inventoryItem(id: $item) { \
                     inventoryLevel(locationId: $location) { quantities(names: [\"available\"]) { name quantity } } } }";
        let data = self.call(store, "Level", query, json!({"item": item, "location": location})).await?;
        let level = &data["inventoryItem"]["inventoryLevel"];
        if level.is_null() {
            return Err(DriverError::NotFound(format!(
                "inventory item {item} is not stocked at location {location}"
            )));
        }
        available(level).ok_or_else(|| DriverError::Failed("the level has no available quantity".to_owned()))
    }

    /// Set one item to `quantity` if it still holds what was read; read
    /// again and retry when it changed meanwhile.
    async fn set(
        &self,
        store: &Store<'_>,
        item: &str,
        location: &str,
        quantity: i64,
    ) -> Result<(), DriverError> {
        let mutation = "mutation Set($input: InventorySetQuantitiesInput!) { inventorySetQuantities(input: $input) { \
                        inventoryAdjustmentGroup { reason } userErrors { code field message } } }";
        for _ in 0..COMPARE_ATTEMPTS {
            let current = self.available(store, item, location).await?;
            if current == quantity {
                return Ok(());
            }
            let input = json!({"name": "available", "reason": "correction", "quantities": [
                {"inventoryItemId": item, "locationId": location, "quantity": quantity, "compareQuantity": current}]});
            let data = self.call(store, "Set", mutation, json!({"input": input})).await?;
            let errors = data["inventorySetQuantities"]["userErrors"].as_array().cloned().unwrap_or_default();
            if errors.is_empty() {
                return Ok(());
            }
            if !errors.iter().all(|e| e["code"] == "COMPARE_QUANTITY_STALE") {
                return Err(DriverError::Failed(messages(&Value::Array(errors)).unwrap_or_default()));
            }
        }
        Err(DriverError::Stale(format!(
            "the quantity of {item} kept changing on the store ({COMPARE_ATTEMPTS} attempts)"
        )))
    }
}

/// The `message` of each error, joined.
fn messages(errors: &Value) -> Option<String> {
    let list: Vec<&str> = errors.as_array()?.iter().filter_map(|e| e["message"].as_str()).collect();
    (!list.is_empty()).then(|| list.join("; "))
}

/// How long the cost budget takes to hold the refused query again.
fn refill(cost: &Value) -> Duration {
    let requested = cost["requestedQueryCost"].as_f64().unwrap_or(0.0);
    let status = &cost["throttleStatus"];
    let available = status["currentlyAvailable"].as_f64().unwrap_or(0.0);
    let rate = status["restoreRate"].as_f64().filter(|r| *r > 0.0).unwrap_or(50.0);
    Duration::from_secs_f64(((requested - available) / rate).clamp(1.0, 60.0))
}

/// The `available` quantity of an inventory level.
fn available(level: &Value) -> Option<i64> {
    level["quantities"].as_array()?.iter().find(|q| q["name"] == "available")?["quantity"].as_i64()
}

/// The location the connection pushes to and reads from.
fn location<'a>(store: &Store<'a>) -> Result<&'a str, DriverError> {
    store
        .location_id
        .ok_or_else(|| DriverError::Failed("the connection names no Shopify location".to_owned()))
}

fn product(node: &Value) -> Result<RemoteProduct, DriverError> {
    let id = node["id"].as_str().ok_or_else(|| DriverError::Failed("a product without id".to_owned()))?;
    let variants = node["variants"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some(RemoteVariant {
                id: v["id"].as_str()?.to_owned(),
                sku: v["sku"].as_str().filter(|s| !s.is_empty()).map(str::to_owned),
                title: v["title"].as_str().filter(|t| *t != "Default Title").map(str::to_owned),
                inventory_item_id: v["inventoryItem"]["id"].as_str().map(str::to_owned),
                // None when the item is not stocked at the location.
                quantity: available(&v["inventoryItem"]["inventoryLevel"]),
                price: v["price"].as_str().and_then(minor_units),
            })
        })
        .collect();
    Ok(RemoteProduct {
        id: id.to_owned(),
        title: node["title"].as_str().unwrap_or_default().to_owned(),
        updated_at: node["updatedAt"].as_str().and_then(|t| t.parse().ok()),
        variants,
        raw: node.clone(),
    })
}

#[async_trait::async_trait]
impl ChannelDriver for Shopify {
    fn channel(&self) -> &'static str {
        "shopify"
    }

    fn credential_fields(&self) -> &'static [&'static str] {
        &["access_token"]
    }

    fn needs_location(&self) -> bool {
        true
    }

    fn policy(&self) -> RatePolicy {
        self.policy
    }

    async fn fetch_product(&self, store: &Store<'_>, remote_id: &str) -> Result<RemoteProduct, DriverError> {
        let query =
            format!("query Product($id: ID!, $location: ID!) {{ product(id: $id) {{ {PRODUCT_FIELDS} }} }}");
        let variables = json!({"id": remote_id, "location": location(store)?});
        let data = self.call(store, "Product", &query, variables).await?;
        if data["product"].is_null() {
            return Err(DriverError::NotFound(format!("the store has no product {remote_id}")));
        }
        product(&data["product"])
    }

    async fn list_products(
        &self,
        store: &Store<'_>,
        since: Option<DateTime<Utc>>,
        cursor: Option<&str>,
    ) -> Result<ProductPage, DriverError> {
        let query = format!(
            "query Products($first: Int!, $after: String, $query: String, $location: ID!) {{ products(first: $first, after: $after, query: $query) \
             {{ pageInfo {{ hasNextPage endCursor }} nodes {{ {PRODUCT_FIELDS} }} }} }}"
        );
        let filter = since.map(|t| format!("updated_at:>'{}'", t.to_rfc3339_opts(SecondsFormat::Secs, true)));
        let variables =
            json!({"first": PAGE_SIZE, "after": cursor, "query": filter, "location": location(store)?});
        let data = self.call(store, "Products", &query, variables).await?;
        let page = &data["products"];
        let products =
            page["nodes"].as_array().into_iter().flatten().map(product).collect::<Result<_, _>>()?;
        let next = match page["pageInfo"]["hasNextPage"].as_bool() {
            Some(true) => page["pageInfo"]["endCursor"].as_str().map(str::to_owned),
            _ => None,
        };
        Ok(ProductPage { products, next })
    }

    async fn push_quantities(&self, store: &Store<'_>, pushes: &[Push]) -> Result<(), DriverError> {
        let location = location(store)?;
        for push in pushes {
            let Some(item) = &push.inventory_item_id else {
                return Err(DriverError::Failed(format!(
                    "variant {} has no inventory item",
                    push.remote_variant_id
                )));
            };
            self.set(store, item, location, push.quantity).await?;
        }
        Ok(())
    }

    /// `X-Shopify-Hmac-Sha256`: the base64 HMAC-SHA256 of the raw body.
    async fn verify_webhook(
        &self,
        secret: Option<&str>,
        headers: &Headers,
        body: &[u8],
    ) -> Result<(), String> {
        if hmac_base64_matches(needs_secret(secret)?, headers.get("x-shopify-hmac-sha256"), body) {
            Ok(())
        } else {
            Err("the signature does not match the body".to_owned())
        }
    }

    /// `inventory_levels/update` carries the new `available` quantity of an
    /// inventory item at a location; other topics carry no stock change.
    fn parse_webhook(&self, headers: &Headers, body: &[u8]) -> Result<Inbound, String> {
        let topic = headers.get("x-shopify-topic").cloned();
        let event_id = headers.get("x-shopify-webhook-id").cloned();
        let stock = if topic.as_deref() == Some("inventory_levels/update") {
            let level: Value =
                serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
            let number = |field: &str| level[field].as_i64().ok_or_else(|| format!("`{field}` is missing"));
            Some(RemoteStock {
                variant_id: None,
                inventory_item_id: Some(format!(
                    "gid://shopify/InventoryItem/{}",
                    number("inventory_item_id")?
                )),
                location_id: Some(format!("gid://shopify/Location/{}", number("location_id")?)),
                quantity: number("available")?,
            })
        } else {
            None
        };
        Ok(Inbound { event_id, topic, stock, ..Inbound::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_budget_is_waited_for_before_a_query_it_cannot_hold() {
        let start = Instant::now();
        let mut budget = Budget::default();
        assert_eq!(budget.take("Set", start), None, "nothing known yet");
        let cost = json!({"requestedQueryCost": 10, "actualQueryCost": 10,
            "throttleStatus": {"maximumAvailable": 100.0, "currentlyAvailable": 15.0, "restoreRate": 20.0}});
        budget.learn("Set", &cost, start);
        assert_eq!(budget.take("Set", start), None, "15 hold 10");
        // 5 left: 5 more come back in a quarter of a second.
        assert_eq!(budget.take("Set", start), Some(Duration::from_millis(250)));
        assert_eq!(budget.take("Set", start + Duration::from_millis(250)), None);
        assert_eq!(budget.take("Set", start + Duration::from_millis(250)), Some(Duration::from_millis(500)));
        // Refilled, never above the maximum.
        budget.take("Set", start + Duration::from_secs(60));
        assert_eq!(budget.available, 90.0);
        assert_eq!(budget.take("Products", start), None, "an operation not seen yet is not held back");
    }
}
