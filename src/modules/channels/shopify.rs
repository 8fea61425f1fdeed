//! Shopify through its Admin GraphQL API: `X-Shopify-Access-Token`,
//! products and variants by cursor, and `inventorySetQuantities` with
//! `compareQuantity`, so a quantity changed on the store between our read
//! and our write is noticed (the store refuses the write), read again and
//! written again rather than overwritten blindly. A query over the
//! store's cost budget (`extensions.cost.throttleStatus`) waits as long as
//! the budget takes to refill.

use std::time::Duration;

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

const PRODUCT_FIELDS: &str = "id title updatedAt variants(first: 100) { nodes { id title sku price inventoryQuantity inventoryItem { id } } }";

pub struct Shopify {
    http: reqwest::Client,
    api_version: String,
    policy: RatePolicy,
    timeout: Duration,
}

impl Shopify {
    pub fn new(http: reqwest::Client, settings: &Settings) -> Self {
        Self {
            http,
            api_version: settings.shopify.api_version.clone(),
            policy: settings.shopify.rate_limit,
            timeout: settings.timeout(),
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
        level["quantities"]
            .as_array()
            .and_then(|q| q.iter().find(|q| q["name"] == "available"))
            .and_then(|q| q["quantity"].as_i64())
            .ok_or_else(|| DriverError::Failed("the level has no available quantity".to_owned()))
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
                quantity: v["inventoryQuantity"].as_i64(),
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
        let query = format!("query Product($id: ID!) {{ product(id: $id) {{ {PRODUCT_FIELDS} }} }}");
        let data = self.call(store, "Product", &query, json!({"id": remote_id})).await?;
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
            "query Products($first: Int!, $after: String, $query: String) {{ products(first: $first, after: $after, query: $query) \
             {{ pageInfo {{ hasNextPage endCursor }} nodes {{ {PRODUCT_FIELDS} }} }} }}"
        );
        let filter = since.map(|t| format!("updated_at:>'{}'", t.to_rfc3339_opts(SecondsFormat::Secs, true)));
        let variables = json!({"first": PAGE_SIZE, "after": cursor, "query": filter});
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
        let Some(location) = store.location_id else {
            return Err(DriverError::Failed("the connection names no Shopify location".to_owned()));
        };
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
