//! In-process fake stores that speak the channels' real wire formats:
//! Shopify's Admin GraphQL (`X-Shopify-Access-Token`, cursor pages,
//! `inventorySetQuantities` with `compareQuantity`, a query cost budget
//! reported in `extensions.cost` and its `THROTTLED` answer), WooCommerce's
//! REST v3 (basic authentication, `X-WP-TotalPages`, variable products and
//! their variations, `products/batch` and `variations/batch`, 429 with
//! `Retry-After`) and
//! Amazon's Login with Amazon token endpoint with the SP-API Listings Items
//! (`x-amz-access-token`, expiring tokens, `pageToken`, `patchListingsItem`,
//! 429 with `Retry-After` and `x-amzn-RateLimit-Limit`), and Etsy's Open
//! API v3 (`x-api-key` and OAuth bearer, offset pages, listing inventory
//! read and put, shop receipts of paid orders, 429 with `Retry-After`). Each listens on
//! 127.0.0.1 with a random port. The tests drive the sync engine against
//! them, and `cargo run --example fake-stores` starts them all so the whole flow can be tried without store accounts.

use std::{
    net::TcpListener,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Value, json};

/// A product to put in a fake store.
#[derive(Clone, Debug)]
pub struct FakeProduct {
    pub title: String,
    pub variants: Vec<FakeVariant>,
}

#[derive(Clone, Debug)]
pub struct FakeVariant {
    pub sku: String,
    /// The variant's name (`Red / M`): Shopify's variant title, a
    /// WooCommerce variation's attribute.
    pub title: Option<String>,
    /// `"19.99"`.
    pub price: String,
    pub quantity: i64,
}

impl FakeProduct {
    /// A product with one variant.
    pub fn simple(title: &str, sku: &str, price: &str, quantity: i64) -> Self {
        Self {
            title: title.to_owned(),
            variants: vec![FakeVariant {
                sku: sku.to_owned(),
                title: None,
                price: price.to_owned(),
                quantity,
            }],
        }
    }
}

/// How the fakes misbehave on request.
#[derive(Default)]
struct Controls {
    /// Answer this many next requests as throttled.
    throttle_next: usize,
    /// Most requests per second before answering throttled.
    per_second: Option<u32>,
    window: Option<(Instant, u32)>,
    /// A leaky bucket instead: (per second, burst), and its level when.
    bucket: Option<(f64, f64)>,
    level: Option<(Instant, f64)>,
    /// Requests refused as throttled so far.
    refused: usize,
    /// Requests that reached the gate so far, refused or not.
    requests: usize,
    /// Every quantity a write set: SKU, quantity, Unix milliseconds.
    landed: Vec<(String, i64, u64)>,
}

impl Controls {
    /// `true` when this request is to be refused as throttled.
    fn throttled(&mut self) -> bool {
        self.requests += 1;
        let refused = self.refuses();
        self.refused += usize::from(refused);
        refused
    }

    fn refuses(&mut self) -> bool {
        if self.throttle_next > 0 {
            self.throttle_next -= 1;
            return true;
        }
        if let Some((per_second, burst)) = self.bucket {
            // Leaks `per_second` a second; a request over `burst` is
            // refused. Half a request of slack: requests paced exactly at
            // the rate arrive with a little network jitter.
            let now = Instant::now();
            let level = self.level.map_or(0.0, |(at, level)| {
                (level - now.duration_since(at).as_secs_f64() * per_second).max(0.0)
            });
            if level + 1.0 > burst + 0.5 {
                self.level = Some((now, level));
                return true;
            }
            self.level = Some((now, level + 1.0));
            return false;
        }
        let Some(limit) = self.per_second else { return false };
        let now = Instant::now();
        let (start, count) = match self.window {
            Some((start, count)) if now.duration_since(start) < Duration::from_secs(1) => (start, count + 1),
            _ => (now, 1),
        };
        self.window = Some((start, count));
        count > limit
    }
}

impl Controls {
    /// A write set `sku` to `quantity` now.
    fn land(&mut self, sku: &str, quantity: i64) {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.landed.push((sku.to_owned(), quantity, ms));
    }

    /// Requests, refusals and the writes (of `sku`, or all) so far.
    fn stats(&self, sku: Option<&str>) -> Value {
        let writes: Vec<Value> = self
            .landed
            .iter()
            .filter(|(s, _, _)| sku.is_none_or(|sku| s == sku))
            .map(|(sku, quantity, at)| json!([sku, quantity, at]))
            .collect();
        json!({"requests": self.requests, "throttled": self.refused, "writes": writes})
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn listen(factory: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    let server =
        HttpServer::new(move || App::new().configure(factory.clone())).workers(1).listen(listener)?.run();
    tokio::spawn(server);
    Ok(base)
}

// ---------------------------------------------------------------- Shopify

struct ShopifyVariant {
    id: u64,
    item: u64,
    sku: String,
    title: Option<String>,
    price: String,
    /// Available at the shop's one location Nexus is connected to.
    quantity: i64,
    /// Available at the shop's other locations.
    elsewhere: i64,
}

struct ShopifyProduct {
    id: u64,
    title: String,
    updated_at: String,
    variants: Vec<ShopifyVariant>,
}

/// Shopify's query cost budget: (maximum, restored per second) and what
/// it held when.
struct CostBudget {
    maximum: f64,
    restore_rate: f64,
    level: (Instant, f64),
}

impl Default for CostBudget {
    /// Shopify's standard plan: 1000 points, 50 a second.
    fn default() -> Self {
        Self { maximum: 1000.0, restore_rate: 50.0, level: (Instant::now(), 1000.0) }
    }
}

impl CostBudget {
    /// Spend `cost` when the budget holds it (`true`), and the
    /// `extensions.cost` of the answer.
    fn spend(&mut self, cost: f64) -> (bool, Value) {
        let now = Instant::now();
        let (at, level) = self.level;
        let available = (level + now.duration_since(at).as_secs_f64() * self.restore_rate).min(self.maximum);
        let spent = available >= cost;
        let left = if spent { available - cost } else { available };
        self.level = (now, left);
        let status = json!({"maximumAvailable": self.maximum, "currentlyAvailable": left.floor(),
            "restoreRate": self.restore_rate});
        (
            spent,
            json!({"requestedQueryCost": cost, "actualQueryCost": spent.then_some(cost), "throttleStatus": status}),
        )
    }
}

/// What each operation of the fake costs, as Shopify counts a query's
/// fields and connections.
fn shopify_cost(operation: &str) -> f64 {
    match operation {
        "Products" => 52.0,
        "Product" => 4.0,
        "Level" => 3.0,
        _ => 10.0,
    }
}

#[derive(Default)]
struct ShopifyState {
    products: Vec<ShopifyProduct>,
    controls: Controls,
    budget: CostBudget,
    /// Set an item's quantity just before the next write lands, as a sale
    /// on the store between our read and our write would.
    interfere: Option<(u64, i64)>,
    writes: usize,
    stale_writes: usize,
}

/// A fake Shopify shop.
#[derive(Clone)]
pub struct FakeShopify {
    pub base_url: String,
    pub access_token: String,
    /// Its one location: `gid://shopify/Location/1`.
    pub location_id: String,
    state: Arc<Mutex<ShopifyState>>,
}

const SHOPIFY_LOCATION: &str = "gid://shopify/Location/1";

impl FakeShopify {
    pub async fn start(products: Vec<FakeProduct>) -> std::io::Result<Self> {
        let mut state = ShopifyState::default();
        let mut next = 1000;
        let mut id = || {
            next += 1;
            next
        };
        for p in products {
            let variants = p
                .variants
                .into_iter()
                .map(|v| ShopifyVariant {
                    id: id(),
                    item: id(),
                    sku: v.sku,
                    title: v.title,
                    price: v.price,
                    quantity: v.quantity,
                    elsewhere: 0,
                })
                .collect();
            let updated_at = "2026-11-20T10:00:00Z".to_owned();
            state.products.push(ShopifyProduct { id: id(), title: p.title, updated_at, variants });
        }
        let token = format!("shpat_{}", uuid::Uuid::now_v7().simple());
        let state = Arc::new(Mutex::new(state));
        let data = web::Data::from(state.clone());
        let expected = web::Data::new(token.clone());
        let base_url = listen(move |cfg| {
            cfg.app_data(data.clone())
                .app_data(expected.clone())
                .route("/admin/api/{version}/graphql.json", web::post().to(shopify_graphql));
        })?;
        Ok(Self { base_url, access_token: token, location_id: SHOPIFY_LOCATION.to_owned(), state })
    }

    /// The quantity of the variant with `sku`.
    pub fn quantity(&self, sku: &str) -> Option<i64> {
        let state = lock(&self.state);
        state.products.iter().flat_map(|p| &p.variants).find(|v| v.sku == sku).map(|v| v.quantity)
    }

    /// Set the quantity of `sku` on the store, behind Nexus's back.
    pub fn set_quantity(&self, sku: &str, quantity: i64) {
        let mut state = lock(&self.state);
        for v in state.products.iter_mut().flat_map(|p| &mut p.variants).filter(|v| v.sku == sku) {
            v.quantity = quantity;
        }
    }

    /// Put `quantity` of `sku` at the shop's other locations (counted in
    /// its `inventoryQuantity`, not at the location Nexus is connected to).
    pub fn stock_elsewhere(&self, sku: &str, quantity: i64) {
        let mut state = lock(&self.state);
        for v in state.products.iter_mut().flat_map(|p| &mut p.variants).filter(|v| v.sku == sku) {
            v.elsewhere = quantity;
        }
    }

    /// Before the next write lands, set `sku` to `quantity` (a concurrent sale).
    pub fn interfere_before_next_write(&self, sku: &str, quantity: i64) {
        let mut state = lock(&self.state);
        let item = state.products.iter().flat_map(|p| &p.variants).find(|v| v.sku == sku).map(|v| v.item);
        state.interfere = item.map(|item| (item, quantity));
    }

    /// Answer the next `n` requests with Shopify's `THROTTLED` error.
    pub fn throttle_next(&self, n: usize) {
        lock(&self.state).controls.throttle_next = n;
    }

    /// `(writes, writes refused as stale)` so far.
    pub fn writes(&self) -> (usize, usize) {
        let state = lock(&self.state);
        (state.writes, state.stale_writes)
    }

    /// Answer `THROTTLED` beyond `n` requests a second (`None`: no limit).
    pub fn limit_per_second(&self, n: Option<u32>) {
        lock(&self.state).controls.per_second = n;
    }

    /// The query cost budget: `maximum` points, `restore_rate` a second
    /// (full now). By default Shopify's standard plan, 1000 and 50.
    pub fn cost_budget(&self, maximum: f64, restore_rate: f64) {
        lock(&self.state).budget = CostBudget { maximum, restore_rate, level: (Instant::now(), maximum) };
    }

    /// Answer throttled when a leaky bucket of `burst` requests, leaking
    /// `per_second`, would overflow.
    pub fn limit_bucket(&self, per_second: u32, burst: u32) {
        lock(&self.state).controls.bucket = Some((f64::from(per_second), f64::from(burst)));
    }

    /// Requests answered as throttled so far.
    pub fn throttled(&self) -> usize {
        lock(&self.state).controls.refused
    }

    /// `{"requests", "throttled", "writes": [[sku, quantity, unix_ms], ...]}`
    /// so far, the writes of `sku` only when given.
    pub fn stats(&self, sku: Option<&str>) -> Value {
        lock(&self.state).controls.stats(sku)
    }
}

fn gid(kind: &str, id: u64) -> String {
    format!("gid://shopify/{kind}/{id}")
}

fn gid_id(kind: &str, value: &Value) -> Option<u64> {
    value.as_str()?.strip_prefix(&format!("gid://shopify/{kind}/"))?.parse().ok()
}

/// A product as the Admin API shows it, each variant's inventory level at
/// `location` (null at a location that is not the shop's).
fn shopify_product(p: &ShopifyProduct, location: &Value) -> Value {
    let variants: Vec<Value> = p
        .variants
        .iter()
        .map(|v| {
            let level = (location.as_str() == Some(SHOPIFY_LOCATION))
                .then(|| json!({"quantities": [{"name": "available", "quantity": v.quantity}]}));
            json!({"id": gid("ProductVariant", v.id), "title": v.title.clone().unwrap_or_else(|| "Default Title".to_owned()),
                "sku": v.sku, "price": v.price, "inventoryQuantity": v.quantity + v.elsewhere,
                "inventoryItem": {"id": gid("InventoryItem", v.item), "inventoryLevel": level}})
        })
        .collect();
    json!({"id": gid("Product", p.id), "title": p.title, "updatedAt": p.updated_at, "variants": {"nodes": variants}})
}

async fn shopify_graphql(
    req: HttpRequest,
    state: web::Data<Mutex<ShopifyState>>,
    token: web::Data<String>,
    body: web::Json<Value>,
) -> HttpResponse {
    let given = req.headers().get("x-shopify-access-token").and_then(|v| v.to_str().ok());
    if given != Some(token.as_str()) {
        return HttpResponse::Unauthorized().json(
            json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}),
        );
    }
    let mut state = lock(&state);
    let operation = body["operationName"].as_str().unwrap_or_default();
    let forced = state.controls.throttled();
    if forced {
        // As if another app had spent the budget.
        state.budget.level = (Instant::now(), 0.0);
    }
    let (spent, cost) = state.budget.spend(shopify_cost(operation));
    if !spent {
        state.controls.refused += usize::from(!forced);
        return HttpResponse::Ok()
            .json(json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": {"cost": cost}}));
    }
    let vars = &body["variables"];
    let data = match operation {
        "Products" => {
            let first = usize::try_from(vars["first"].as_i64().unwrap_or(50).clamp(1, 250)).unwrap_or(50);
            let start: usize = vars["after"].as_str().and_then(|c| c.parse().ok()).unwrap_or(0);
            let nodes: Vec<Value> = state
                .products
                .iter()
                .skip(start)
                .take(first)
                .map(|p| shopify_product(p, &vars["location"]))
                .collect();
            let end = start + nodes.len();
            json!({"products": {"nodes": nodes, "pageInfo": {"hasNextPage": end < state.products.len(), "endCursor": end.to_string()}}})
        }
        "Product" => {
            let id = gid_id("Product", &vars["id"]);
            let found = state
                .products
                .iter()
                .find(|p| Some(p.id) == id)
                .map(|p| shopify_product(p, &vars["location"]));
            json!({"product": found})
        }
        "Level" => {
            let item = gid_id("InventoryItem", &vars["item"]);
            let variant = state.products.iter().flat_map(|p| &p.variants).find(|v| Some(v.item) == item);
            let level = match (variant, vars["location"].as_str()) {
                (Some(v), Some(SHOPIFY_LOCATION)) => {
                    json!({"quantities": [{"name": "available", "quantity": v.quantity}]})
                }
                _ => Value::Null,
            };
            json!({"inventoryItem": item.map(|_| json!({"inventoryLevel": level}))})
        }
        "Set" => shopify_set(&mut state, &vars["input"]),
        other => {
            return HttpResponse::Ok()
                .json(json!({"errors": [{"message": format!("unknown operation `{other}`")}]}));
        }
    };
    HttpResponse::Ok().json(json!({"data": data, "extensions": {"cost": cost}}))
}

/// `inventorySetQuantities`: all quantities or none; a `compareQuantity`
/// that is not the current quantity refuses the whole write.
fn shopify_set(state: &mut ShopifyState, input: &Value) -> Value {
    state.writes += 1;
    if let Some((item, quantity)) = state.interfere.take() {
        for v in state.products.iter_mut().flat_map(|p| &mut p.variants).filter(|v| v.item == item) {
            v.quantity = quantity;
        }
    }
    let quantities = input["quantities"].as_array().cloned().unwrap_or_default();
    let mut errors = Vec::new();
    for (i, q) in quantities.iter().enumerate() {
        let item = gid_id("InventoryItem", &q["inventoryItemId"]);
        let current = state
            .products
            .iter()
            .flat_map(|p| &p.variants)
            .find(|v| Some(v.item) == item)
            .map(|v| v.quantity);
        let field = json!(["input", "quantities", i.to_string()]);
        match current {
            None => errors.push(json!({"code": "INVALID_INVENTORY_ITEM", "field": field, "message": "The specified inventory item could not be found."})),
            Some(_) if q["locationId"] != SHOPIFY_LOCATION => errors.push(json!({"code": "INVALID_LOCATION", "field": field, "message": "The specified location could not be found."})),
            Some(current) if q["compareQuantity"].as_i64() != Some(current) => errors.push(json!({"code": "COMPARE_QUANTITY_STALE", "field": field,
                "message": "The compareQuantity argument no longer matches the persisted quantity."})),
            Some(_) => {}
        }
    }
    if errors.is_empty() {
        for q in &quantities {
            let item = gid_id("InventoryItem", &q["inventoryItemId"]);
            for v in state.products.iter_mut().flat_map(|p| &mut p.variants).filter(|v| Some(v.item) == item)
            {
                v.quantity = q["quantity"].as_i64().unwrap_or(v.quantity);
                state.controls.land(&v.sku, v.quantity);
            }
        }
    } else if errors.iter().any(|e| e["code"] == "COMPARE_QUANTITY_STALE") {
        state.stale_writes += 1;
    }
    let group = errors.is_empty().then(|| json!({"reason": input["reason"]}));
    json!({"inventorySetQuantities": {"inventoryAdjustmentGroup": group, "userErrors": errors}})
}

// ------------------------------------------------------------ WooCommerce

struct WooProduct {
    id: u64,
    name: String,
    sku: String,
    price: String,
    quantity: i64,
    /// A variation's product (`None`: a product of the list).
    parent: Option<u64>,
    /// A variable product: no stock of its own, its variations have it.
    variable: bool,
    /// A variation's attribute value (`Red / M`).
    option: Option<String>,
}

#[derive(Default)]
struct WooState {
    products: Vec<WooProduct>,
    controls: Controls,
    batches: usize,
    /// Answer every request 503, as a site under maintenance.
    down: bool,
}

/// A fake WooCommerce site.
#[derive(Clone)]
pub struct FakeWooCommerce {
    pub base_url: String,
    pub consumer_key: String,
    pub consumer_secret: String,
    state: Arc<Mutex<WooState>>,
}

struct WooKeys {
    basic: String,
}

impl FakeWooCommerce {
    /// A product with one untitled variant becomes a simple product; one
    /// with titled variants a variable product with a variation each.
    pub async fn start(products: Vec<FakeProduct>) -> std::io::Result<Self> {
        let mut state = WooState::default();
        let mut next_id = 100..;
        for product in products {
            let simple = matches!(product.variants.as_slice(), [only] if only.title.is_none());
            let id = next_id.next().unwrap_or_default();
            if simple {
                let v = &product.variants[0];
                state.products.push(WooProduct {
                    id,
                    name: product.title,
                    sku: v.sku.clone(),
                    price: v.price.clone(),
                    quantity: v.quantity,
                    parent: None,
                    variable: false,
                    option: None,
                });
                continue;
            }
            state.products.push(WooProduct {
                id,
                name: product.title.clone(),
                sku: String::new(),
                price: product.variants.first().map(|v| v.price.clone()).unwrap_or_default(),
                quantity: 0,
                parent: None,
                variable: true,
                option: None,
            });
            for v in product.variants {
                state.products.push(WooProduct {
                    id: next_id.next().unwrap_or_default(),
                    name: product.title.clone(),
                    sku: v.sku,
                    price: v.price,
                    quantity: v.quantity,
                    parent: Some(id),
                    variable: false,
                    option: v.title,
                });
            }
        }
        let key = format!("ck_{}", uuid::Uuid::now_v7().simple());
        let secret = format!("cs_{}", uuid::Uuid::now_v7().simple());
        let keys = web::Data::new(WooKeys {
            basic: format!("Basic {}", STANDARD.encode(format!("{key}:{secret}"))),
        });
        let state = Arc::new(Mutex::new(state));
        let data = web::Data::from(state.clone());
        let base_url = listen(move |cfg| {
            cfg.app_data(data.clone())
                .app_data(keys.clone())
                .route("/wp-json/wc/v3/products", web::get().to(woo_list))
                .route("/wp-json/wc/v3/products/batch", web::post().to(woo_batch))
                .route("/wp-json/wc/v3/products/{id}", web::get().to(woo_get))
                .route("/wp-json/wc/v3/products/{id}/variations", web::get().to(woo_list))
                .route("/wp-json/wc/v3/products/{id}/variations/batch", web::post().to(woo_batch));
        })?;
        Ok(Self { base_url, consumer_key: key, consumer_secret: secret, state })
    }

    pub fn quantity(&self, sku: &str) -> Option<i64> {
        lock(&self.state).products.iter().find(|p| p.sku == sku).map(|p| p.quantity)
    }

    /// The store's id of `sku`'s product or variation, and of its product.
    pub fn ids(&self, sku: &str) -> Option<(u64, u64)> {
        lock(&self.state).products.iter().find(|p| p.sku == sku).map(|p| (p.id, p.parent.unwrap_or(p.id)))
    }

    /// What the store says of `sku` in webhooks and `GET products/{id}`.
    pub fn payload(&self, sku: &str) -> Option<Value> {
        lock(&self.state).products.iter().find(|p| p.sku == sku).map(woo_product)
    }

    /// Set the quantity of `sku` on the store, behind Nexus's back.
    pub fn set_quantity(&self, sku: &str, quantity: i64) {
        for p in lock(&self.state).products.iter_mut().filter(|p| p.sku == sku) {
            p.quantity = quantity;
        }
    }

    /// Answer the next `n` requests with 429 and `Retry-After: 1`.
    pub fn throttle_next(&self, n: usize) {
        lock(&self.state).controls.throttle_next = n;
    }

    /// Answer 429 beyond `n` requests a second (`None`: no limit).
    pub fn limit_per_second(&self, n: Option<u32>) {
        lock(&self.state).controls.per_second = n;
    }

    /// Answer throttled when a leaky bucket of `burst` requests, leaking
    /// `per_second`, would overflow.
    pub fn limit_bucket(&self, per_second: u32, burst: u32) {
        lock(&self.state).controls.bucket = Some((f64::from(per_second), f64::from(burst)));
    }

    /// Requests answered as throttled so far.
    pub fn throttled(&self) -> usize {
        lock(&self.state).controls.refused
    }

    /// `{"requests", "throttled", "writes": [[sku, quantity, unix_ms], ...]}`
    /// so far, the writes of `sku` only when given.
    pub fn stats(&self, sku: Option<&str>) -> Value {
        lock(&self.state).controls.stats(sku)
    }

    /// Batch updates (of products or of one product's variations) received so far.
    pub fn batches(&self) -> usize {
        lock(&self.state).batches
    }

    /// Answer every request with 503 (`true`) until set back (`false`).
    pub fn set_down(&self, down: bool) {
        lock(&self.state).down = down;
    }
}

/// A product, a variable product or a variation as the REST API v3 shows
/// it (a variation as `GET products/{id}` and webhooks do: with its
/// `parent_id` and type `variation`).
fn woo_product(p: &WooProduct) -> Value {
    let kind = match (p.variable, p.parent) {
        (true, _) => "variable",
        (false, Some(_)) => "variation",
        (false, None) => "simple",
    };
    let mut product = json!({"id": p.id, "name": p.name, "type": kind, "status": "publish", "sku": p.sku,
        "price": p.price, "regular_price": p.price, "parent_id": p.parent.unwrap_or(0),
        "manage_stock": !p.variable, "stock_quantity": (!p.variable).then_some(p.quantity),
        "stock_status": if p.variable || p.quantity > 0 { "instock" } else { "outofstock" },
        "date_modified_gmt": "2026-11-20T10:00:00"});
    if let Some(option) = &p.option {
        product["attributes"] = json!([{"id": 0, "name": "Variant", "option": option}]);
    }
    product
}

fn woo_error(status: actix_web::http::StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .json(json!({"code": code, "message": message, "data": {"status": status.as_u16()}}))
}

/// Authentication and the rate limit, before anything else.
fn woo_gate(req: &HttpRequest, keys: &WooKeys, state: &mut WooState) -> Option<HttpResponse> {
    use actix_web::http::StatusCode;
    if state.down {
        return Some(woo_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "woocommerce_maintenance",
            "Briefly unavailable for scheduled maintenance.",
        ));
    }
    let given = req.headers().get("authorization").and_then(|v| v.to_str().ok());
    if given != Some(keys.basic.as_str()) {
        return Some(woo_error(
            StatusCode::UNAUTHORIZED,
            "woocommerce_rest_authentication_error",
            "Consumer key is invalid.",
        ));
    }
    if state.controls.throttled() {
        let mut res = woo_error(
            StatusCode::TOO_MANY_REQUESTS,
            "woocommerce_rest_too_many_requests",
            "Too many requests. Please wait and try again.",
        );
        res.headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, actix_web::http::header::HeaderValue::from(1));
        return Some(res);
    }
    None
}

#[derive(serde::Deserialize)]
struct WooPage {
    page: Option<usize>,
    per_page: Option<usize>,
}

/// The products (`/products`) or one product's variations
/// (`/products/{id}/variations`), a page at a time.
async fn woo_list(
    req: HttpRequest,
    state: web::Data<Mutex<WooState>>,
    keys: web::Data<WooKeys>,
    query: web::Query<WooPage>,
) -> HttpResponse {
    let mut state = lock(&state);
    if let Some(refused) = woo_gate(&req, &keys, &mut state) {
        return refused;
    }
    let parent = req.match_info().get("id").and_then(|id| id.parse::<u64>().ok());
    let per_page = query.per_page.unwrap_or(10).clamp(1, 100);
    let page = query.page.unwrap_or(1).max(1);
    let listed: Vec<&WooProduct> = state.products.iter().filter(|p| p.parent == parent).collect();
    let total = listed.len();
    let pages = total.div_ceil(per_page);
    let items: Vec<Value> =
        listed.into_iter().skip((page - 1) * per_page).take(per_page).map(woo_product).collect();
    HttpResponse::Ok()
        .insert_header(("X-WP-Total", total.to_string()))
        .insert_header(("X-WP-TotalPages", pages.to_string()))
        .json(items)
}

async fn woo_get(
    req: HttpRequest,
    state: web::Data<Mutex<WooState>>,
    keys: web::Data<WooKeys>,
    id: web::Path<u64>,
) -> HttpResponse {
    let mut state = lock(&state);
    if let Some(refused) = woo_gate(&req, &keys, &mut state) {
        return refused;
    }
    match state.products.iter().find(|p| p.id == *id) {
        Some(p) => HttpResponse::Ok().json(woo_product(p)),
        None => woo_error(
            actix_web::http::StatusCode::NOT_FOUND,
            "woocommerce_rest_product_invalid_id",
            "Invalid ID.",
        ),
    }
}

/// `products/batch`, or `products/{id}/variations/batch` for that
/// product's variations only.
async fn woo_batch(
    req: HttpRequest,
    state: web::Data<Mutex<WooState>>,
    keys: web::Data<WooKeys>,
    body: web::Json<Value>,
) -> HttpResponse {
    let mut state = lock(&state);
    if let Some(refused) = woo_gate(&req, &keys, &mut state) {
        return refused;
    }
    let parent = req.match_info().get("id").and_then(|id| id.parse::<u64>().ok());
    state.batches += 1;
    let state = &mut *state;
    let mut answers = Vec::new();
    for update in body["update"].as_array().into_iter().flatten() {
        let id = update["id"].as_u64();
        match state.products.iter_mut().find(|p| Some(p.id) == id && p.parent == parent && !p.variable) {
            Some(p) => {
                if let Some(q) = update["stock_quantity"].as_i64() {
                    p.quantity = q;
                    state.controls.land(&p.sku, q);
                }
                answers.push(woo_product(p));
            }
            None => answers
                .push(json!({"id": update["id"], "error": {"code": "woocommerce_rest_product_invalid_id",
                "message": "Invalid ID.", "data": {"status": 400}}})),
        }
    }
    HttpResponse::Ok().json(json!({"update": answers}))
}

// ----------------------------------------------------------------- Amazon

struct AmazonListing {
    sku: String,
    name: String,
    price: String,
    quantity: i64,
}

struct AmazonState {
    listings: Vec<AmazonListing>,
    controls: Controls,
    /// Access tokens handed out and still honoured.
    tokens: Vec<String>,
    /// Handed out, then expired.
    expired: Vec<String>,
    grants: usize,
    expires_in: u64,
    patches: usize,
}

/// A fake Amazon seller: Login with Amazon's token endpoint and the
/// Selling Partner API's Listings Items, on one port.
#[derive(Clone)]
pub struct FakeAmazon {
    pub base_url: String,
    /// Nexus's `modules.channels.amazon.token_url`.
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    pub seller_id: String,
    pub marketplace_id: String,
    state: Arc<Mutex<AmazonState>>,
}

struct AmazonKeys {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    seller_id: String,
    marketplace_id: String,
}

/// Every listing of the fake is of this product type.
const AMAZON_PRODUCT_TYPE: &str = "HOME";

impl FakeAmazon {
    /// Every variant of `products` becomes a listing of its SKU.
    pub async fn start(products: Vec<FakeProduct>) -> std::io::Result<Self> {
        let listings = products
            .into_iter()
            .flat_map(|p| {
                p.variants.into_iter().map(move |v| AmazonListing {
                    name: match &v.title {
                        Some(t) => format!("{} - {t}", p.title),
                        None => p.title.clone(),
                    },
                    sku: v.sku,
                    price: v.price,
                    quantity: v.quantity,
                })
            })
            .collect();
        let state = AmazonState {
            listings,
            controls: Controls::default(),
            tokens: Vec::new(),
            expired: Vec::new(),
            grants: 0,
            expires_in: 3600,
            patches: 0,
        };
        let simple = uuid::Uuid::now_v7().simple().to_string();
        let keys = AmazonKeys {
            client_id: format!("amzn1.application-oa2-client.{simple}"),
            client_secret: format!("amzn1.oa2-cs.v1.{simple}"),
            refresh_token: format!("Atzr|{simple}"),
            seller_id: "A2FAKESELLER01".to_owned(),
            marketplace_id: "A1PA6795UKMFR9".to_owned(),
        };
        let state = Arc::new(Mutex::new(state));
        let data = web::Data::from(state.clone());
        let shared = web::Data::new(AmazonKeys { ..keys });
        let keys = shared.clone();
        let base_url = listen(move |cfg| {
            cfg.app_data(data.clone())
                .app_data(shared.clone())
                .route("/auth/o2/token", web::post().to(amazon_token))
                .route("/listings/2021-08-01/items/{seller}", web::get().to(amazon_search))
                .route("/listings/2021-08-01/items/{seller}/{sku}", web::get().to(amazon_get))
                .route("/listings/2021-08-01/items/{seller}/{sku}", web::patch().to(amazon_patch));
        })?;
        Ok(Self {
            token_url: format!("{base_url}/auth/o2/token"),
            base_url,
            client_id: keys.client_id.clone(),
            client_secret: keys.client_secret.clone(),
            refresh_token: keys.refresh_token.clone(),
            seller_id: keys.seller_id.clone(),
            marketplace_id: keys.marketplace_id.clone(),
            state,
        })
    }

    /// The fulfillable quantity of the listing with `sku`.
    pub fn quantity(&self, sku: &str) -> Option<i64> {
        lock(&self.state).listings.iter().find(|l| l.sku == sku).map(|l| l.quantity)
    }

    /// Set the fulfillable quantity of `sku`, behind Nexus's back.
    pub fn set_quantity(&self, sku: &str, quantity: i64) {
        for l in lock(&self.state).listings.iter_mut().filter(|l| l.sku == sku) {
            l.quantity = quantity;
        }
    }

    /// Access tokens handed out so far.
    pub fn token_grants(&self) -> usize {
        lock(&self.state).grants
    }

    /// Listing patches received so far.
    pub fn patches(&self) -> usize {
        lock(&self.state).patches
    }

    /// Expire every access token handed out so far.
    pub fn expire_tokens(&self) {
        let mut state = lock(&self.state);
        let tokens = std::mem::take(&mut state.tokens);
        state.expired.extend(tokens);
    }

    /// The `expires_in` of the next access tokens (3600 unless told).
    pub fn token_lifetime(&self, seconds: u64) {
        lock(&self.state).expires_in = seconds;
    }

    /// Answer the next `n` API requests with 429 and `Retry-After: 1`.
    pub fn throttle_next(&self, n: usize) {
        lock(&self.state).controls.throttle_next = n;
    }

    /// Answer 429 beyond `n` API requests a second (`None`: no limit).
    pub fn limit_per_second(&self, n: Option<u32>) {
        lock(&self.state).controls.per_second = n;
    }

    /// Answer throttled when a leaky bucket of `burst` requests, leaking
    /// `per_second`, would overflow.
    pub fn limit_bucket(&self, per_second: u32, burst: u32) {
        lock(&self.state).controls.bucket = Some((f64::from(per_second), f64::from(burst)));
    }

    /// Requests answered as throttled so far.
    pub fn throttled(&self) -> usize {
        lock(&self.state).controls.refused
    }

    /// `{"requests", "throttled", "writes": [[sku, quantity, unix_ms], ...]}`
    /// so far, the writes of `sku` only when given.
    pub fn stats(&self, sku: Option<&str>) -> Value {
        lock(&self.state).controls.stats(sku)
    }
}

fn amazon_error(
    status: actix_web::http::StatusCode,
    code: &str,
    message: &str,
    details: &str,
) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(("x-amzn-RateLimit-Limit", "5.0"))
        .json(json!({"errors": [{"code": code, "message": message, "details": details}]}))
}

#[derive(serde::Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

async fn amazon_token(
    state: web::Data<Mutex<AmazonState>>,
    keys: web::Data<AmazonKeys>,
    form: web::Form<TokenForm>,
) -> HttpResponse {
    let lwa = |status: actix_web::http::StatusCode, error: &str, description: &str| {
        HttpResponse::build(status).json(json!({"error": error, "error_description": description}))
    };
    if form.grant_type.as_deref() != Some("refresh_token") {
        return lwa(
            actix_web::http::StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The authorization grant type is not supported by the authorization server",
        );
    }
    if form.client_id.as_deref() != Some(keys.client_id.as_str())
        || form.client_secret.as_deref() != Some(keys.client_secret.as_str())
    {
        return lwa(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed",
        );
    }
    if form.refresh_token.as_deref() != Some(keys.refresh_token.as_str()) {
        return lwa(
            actix_web::http::StatusCode::BAD_REQUEST,
            "invalid_grant",
            "The request has an invalid grant parameter : refresh_token",
        );
    }
    let mut state = lock(&state);
    state.grants += 1;
    let token = format!("Atza|{}", uuid::Uuid::now_v7().simple());
    state.tokens.push(token.clone());
    HttpResponse::Ok().json(json!({"access_token": token, "refresh_token": keys.refresh_token,
        "token_type": "bearer", "expires_in": state.expires_in}))
}

/// The access token, the seller, the marketplace and the rate limit,
/// before anything else.
fn amazon_gate(
    req: &HttpRequest,
    keys: &AmazonKeys,
    state: &mut AmazonState,
    seller: &str,
) -> Option<HttpResponse> {
    use actix_web::http::StatusCode;
    let denied = "Access to requested resource is denied.";
    let given = req.headers().get("x-amz-access-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if state.expired.iter().any(|t| t == given) {
        return Some(amazon_error(
            StatusCode::FORBIDDEN,
            "Unauthorized",
            denied,
            "The access token you provided has expired.",
        ));
    }
    if !state.tokens.iter().any(|t| t == given) || seller != keys.seller_id {
        return Some(amazon_error(
            StatusCode::FORBIDDEN,
            "Unauthorized",
            denied,
            "The access token you provided is revoked, malformed or invalid.",
        ));
    }
    let marketplace = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "marketplaceIds")
        .map(|(_, v)| v.into_owned());
    if marketplace.as_deref() != Some(keys.marketplace_id.as_str()) {
        return Some(amazon_error(StatusCode::BAD_REQUEST, "InvalidInput", "Invalid marketplaceIds.", ""));
    }
    if state.controls.throttled() {
        let mut res = amazon_error(
            StatusCode::TOO_MANY_REQUESTS,
            "QuotaExceeded",
            "You exceeded your quota for the requested resource.",
            "",
        );
        res.headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, actix_web::http::header::HeaderValue::from(1));
        return Some(res);
    }
    None
}

fn amazon_listing(l: &AmazonListing, marketplace: &str) -> Value {
    json!({"sku": l.sku,
        "summaries": [{"marketplaceId": marketplace, "asin": format!("B0{:08}", l.sku.len() * 7919 % 100_000_000),
            "productType": AMAZON_PRODUCT_TYPE, "conditionType": "new_new",
            "status": if l.quantity > 0 { json!(["BUYABLE", "DISCOVERABLE"]) } else { json!(["DISCOVERABLE"]) },
            "itemName": l.name, "createdDate": "2026-11-01T10:00:00Z", "lastUpdatedDate": "2026-11-20T10:00:00Z"}],
        "offers": [{"marketplaceId": marketplace, "offerType": "B2C", "price": {"currencyCode": "EUR", "amount": l.price}}],
        "fulfillmentAvailability": [{"fulfillmentChannelCode": "DEFAULT", "quantity": l.quantity}]})
}

fn amazon_ok(body: Value) -> HttpResponse {
    HttpResponse::Ok().insert_header(("x-amzn-RateLimit-Limit", "5.0")).json(body)
}

#[derive(serde::Deserialize)]
struct AmazonSearch {
    #[serde(rename = "pageSize")]
    page_size: Option<usize>,
    #[serde(rename = "pageToken")]
    page_token: Option<String>,
}

async fn amazon_search(
    req: HttpRequest,
    state: web::Data<Mutex<AmazonState>>,
    keys: web::Data<AmazonKeys>,
    seller: web::Path<String>,
) -> HttpResponse {
    let mut state = lock(&state);
    if let Some(refused) = amazon_gate(&req, &keys, &mut state, &seller) {
        return refused;
    }
    let Ok(query) = web::Query::<AmazonSearch>::from_query(req.query_string()) else {
        return amazon_error(actix_web::http::StatusCode::BAD_REQUEST, "InvalidInput", "Invalid query.", "");
    };
    let size = query.page_size.unwrap_or(10).clamp(1, 20);
    let start = match &query.page_token {
        None => 0,
        Some(token) => match STANDARD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse().ok())
        {
            Some(start) => start,
            None => {
                return amazon_error(
                    actix_web::http::StatusCode::BAD_REQUEST,
                    "InvalidInput",
                    "Invalid pageToken.",
                    "",
                );
            }
        },
    };
    let items: Vec<Value> = state
        .listings
        .iter()
        .skip(start)
        .take(size)
        .map(|l| amazon_listing(l, &keys.marketplace_id))
        .collect();
    let end = start + items.len();
    let mut pagination = json!({});
    if end < state.listings.len() {
        pagination["nextToken"] = json!(STANDARD.encode(end.to_string()));
    }
    if start > 0 {
        pagination["previousToken"] = json!(STANDARD.encode(start.saturating_sub(size).to_string()));
    }
    amazon_ok(json!({"numberOfResults": state.listings.len(), "pagination": pagination, "items": items}))
}

async fn amazon_get(
    req: HttpRequest,
    state: web::Data<Mutex<AmazonState>>,
    keys: web::Data<AmazonKeys>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (seller, sku) = path.into_inner();
    let mut state = lock(&state);
    if let Some(refused) = amazon_gate(&req, &keys, &mut state, &seller) {
        return refused;
    }
    match state.listings.iter().find(|l| l.sku == sku) {
        Some(l) => amazon_ok(amazon_listing(l, &keys.marketplace_id)),
        None => amazon_error(
            actix_web::http::StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("SKU '{sku}' not found in marketplace {}", keys.marketplace_id),
            "",
        ),
    }
}

async fn amazon_patch(
    req: HttpRequest,
    state: web::Data<Mutex<AmazonState>>,
    keys: web::Data<AmazonKeys>,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
) -> HttpResponse {
    let (seller, sku) = path.into_inner();
    let mut state = lock(&state);
    if let Some(refused) = amazon_gate(&req, &keys, &mut state, &seller) {
        return refused;
    }
    state.patches += 1;
    let state = &mut *state;
    let Some(listing) = state.listings.iter_mut().find(|l| l.sku == sku) else {
        return amazon_error(
            actix_web::http::StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("SKU '{sku}' not found"),
            "",
        );
    };
    let issue = |code: &str, message: &str| {
        amazon_ok(
            json!({"sku": sku, "status": "INVALID", "submissionId": uuid::Uuid::now_v7().simple().to_string(),
            "issues": [{"code": code, "message": message, "severity": "ERROR"}]}),
        )
    };
    if body["productType"] != AMAZON_PRODUCT_TYPE {
        return issue("4000001", "The provided product type does not match the listing's product type.");
    }
    let mut quantity = None;
    for patch in body["patches"].as_array().into_iter().flatten() {
        let value = &patch["value"][0];
        match (patch["op"].as_str(), patch["path"].as_str()) {
            (Some("replace"), Some("/attributes/fulfillment_availability"))
                if value["fulfillment_channel_code"] == "DEFAULT" =>
            {
                match value["quantity"].as_i64().filter(|q| *q >= 0) {
                    Some(q) => quantity = Some(q),
                    None => return issue("90220", "'quantity' must be a whole number of 0 or more."),
                }
            }
            _ => {
                return issue("90000900", "The fake store only takes fulfillment_availability replacements.");
            }
        }
    }
    if let Some(q) = quantity {
        listing.quantity = q;
        state.controls.land(&sku, q);
    }
    amazon_ok(
        json!({"sku": sku, "status": "ACCEPTED", "submissionId": uuid::Uuid::now_v7().simple().to_string(), "issues": []}),
    )
}

// ------------------------------------------------------------------- Etsy

struct EtsyProduct {
    id: u64,
    sku: String,
    /// In cents (divisor 100).
    cents: i64,
    quantity: i64,
}

struct EtsyListing {
    id: u64,
    title: String,
    products: Vec<EtsyProduct>,
}

/// A paid order: (transaction id, listing id, product id, SKU, units) per line.
struct EtsyReceipt {
    id: u64,
    lines: Vec<(u64, u64, u64, String, i64)>,
}

struct EtsyState {
    listings: Vec<EtsyListing>,
    receipts: Vec<EtsyReceipt>,
    controls: Controls,
    tokens: Vec<String>,
    expired: Vec<String>,
    grants: usize,
    puts: usize,
}

/// A fake Etsy shop: the OAuth token endpoint and the Open API v3 listings
/// and their inventory.
#[derive(Clone)]
pub struct FakeEtsy {
    pub base_url: String,
    pub api_key: String,
    pub refresh_token: String,
    pub shop_id: String,
    state: Arc<Mutex<EtsyState>>,
}

struct EtsyKeys {
    api_key: String,
    refresh_token: String,
    shop_id: String,
}

impl FakeEtsy {
    /// Each product becomes a listing, each variant one of its inventory products.
    pub async fn start(products: Vec<FakeProduct>) -> std::io::Result<Self> {
        let mut next = 5000;
        let mut id = || {
            next += 1;
            next
        };
        let listings = products
            .into_iter()
            .map(|p| EtsyListing {
                id: id(),
                title: p.title,
                products: p
                    .variants
                    .into_iter()
                    .map(|v| EtsyProduct {
                        id: id(),
                        cents: crate::modules::channels::driver::minor_units(&v.price).unwrap_or(0),
                        sku: v.sku,
                        quantity: v.quantity,
                    })
                    .collect(),
            })
            .collect();
        let state = EtsyState {
            listings,
            receipts: Vec::new(),
            controls: Controls::default(),
            tokens: Vec::new(),
            expired: Vec::new(),
            grants: 0,
            puts: 0,
        };
        let simple = uuid::Uuid::now_v7().simple().to_string();
        let keys = EtsyKeys {
            api_key: simple[..24].to_owned(),
            refresh_token: format!("12345678.{simple}"),
            shop_id: "12345678".to_owned(),
        };
        let (api_key, refresh_token, shop_id) =
            (keys.api_key.clone(), keys.refresh_token.clone(), keys.shop_id.clone());
        let state = Arc::new(Mutex::new(state));
        let data = web::Data::from(state.clone());
        let keys = web::Data::new(keys);
        let base_url = listen(move |cfg| {
            cfg.app_data(data.clone())
                .app_data(keys.clone())
                .route("/v3/public/oauth/token", web::post().to(etsy_token))
                .route("/v3/application/shops/{shop}/listings", web::get().to(etsy_shop_listings))
                .route("/v3/application/listings/{id}", web::get().to(etsy_listing))
                .route("/v3/application/listings/{id}/inventory", web::get().to(etsy_inventory))
                .route("/v3/application/listings/{id}/inventory", web::put().to(etsy_put_inventory))
                .route("/v3/application/shops/{shop}/receipts/{receipt}", web::get().to(etsy_receipt));
        })?;
        Ok(Self { base_url, api_key, refresh_token, shop_id, state })
    }

    /// The quantity of the inventory product with `sku`.
    pub fn quantity(&self, sku: &str) -> Option<i64> {
        let state = lock(&self.state);
        state.listings.iter().flat_map(|l| &l.products).find(|p| p.sku == sku).map(|p| p.quantity)
    }

    /// A buyer pays for `quantity` units of `sku`: the shop's quantity
    /// drops as Etsy's does, and a receipt is kept; its id, or `None` when
    /// the shop has no such SKU.
    pub fn sell(&self, sku: &str, quantity: i64) -> Option<u64> {
        let mut state = lock(&self.state);
        let id = 7000 + state.receipts.len() as u64 + 1;
        let (listing, product) = state
            .listings
            .iter_mut()
            .find_map(|l| Some((l.id, l.products.iter_mut().find(|p| p.sku == sku)?)))?;
        product.quantity = (product.quantity - quantity).max(0);
        let line = (id * 10, listing, product.id, sku.to_owned(), quantity);
        state.receipts.push(EtsyReceipt { id, lines: vec![line] });
        Some(id)
    }

    /// Etsy's webhook body for a paid `receipt`, as it sends it.
    pub fn order_paid(&self, receipt: u64) -> String {
        json!({"event_type": "order.paid", "shop_id": self.shop_id,
            "resource_url": format!("https://openapi.etsy.com/v3/application/shops/{}/receipts/{receipt}", self.shop_id)})
        .to_string()
    }

    /// Bearer tokens handed out so far.
    pub fn token_grants(&self) -> usize {
        lock(&self.state).grants
    }

    /// Inventory updates received so far.
    pub fn puts(&self) -> usize {
        lock(&self.state).puts
    }

    /// Expire every bearer token handed out so far.
    pub fn expire_tokens(&self) {
        let mut state = lock(&self.state);
        let tokens = std::mem::take(&mut state.tokens);
        state.expired.extend(tokens);
    }

    /// Answer the next `n` API requests with 429 and `Retry-After: 1`.
    pub fn throttle_next(&self, n: usize) {
        lock(&self.state).controls.throttle_next = n;
    }

    /// Answer 429 beyond `n` API requests a second (`None`: no limit).
    pub fn limit_per_second(&self, n: Option<u32>) {
        lock(&self.state).controls.per_second = n;
    }

    /// Answer throttled when a leaky bucket of `burst` requests, leaking
    /// `per_second`, would overflow.
    pub fn limit_bucket(&self, per_second: u32, burst: u32) {
        lock(&self.state).controls.bucket = Some((f64::from(per_second), f64::from(burst)));
    }

    /// Requests answered as throttled so far.
    pub fn throttled(&self) -> usize {
        lock(&self.state).controls.refused
    }

    /// `{"requests", "throttled", "writes": [[sku, quantity, unix_ms], ...]}`
    /// so far, the writes of `sku` only when given.
    pub fn stats(&self, sku: Option<&str>) -> Value {
        lock(&self.state).controls.stats(sku)
    }
}

fn etsy_error(status: actix_web::http::StatusCode, error: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": error}))
}

#[derive(serde::Deserialize)]
struct EtsyTokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    refresh_token: Option<String>,
}

async fn etsy_token(
    state: web::Data<Mutex<EtsyState>>,
    keys: web::Data<EtsyKeys>,
    form: web::Form<EtsyTokenForm>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let oauth = |status: StatusCode, error: &str, description: &str| {
        HttpResponse::build(status).json(json!({"error": error, "error_description": description}))
    };
    if form.grant_type.as_deref() != Some("refresh_token") {
        return oauth(StatusCode::BAD_REQUEST, "unsupported_grant_type", "grant_type must be refresh_token");
    }
    if form.client_id.as_deref() != Some(keys.api_key.as_str()) {
        return oauth(StatusCode::UNAUTHORIZED, "invalid_client", "Invalid client_id");
    }
    if form.refresh_token.as_deref() != Some(keys.refresh_token.as_str()) {
        return oauth(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid refresh token");
    }
    let mut state = lock(&state);
    state.grants += 1;
    let token = format!("12345678.{}", uuid::Uuid::now_v7().simple());
    state.tokens.push(token.clone());
    HttpResponse::Ok().json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600,
        "refresh_token": keys.refresh_token}))
}

/// The API key, the bearer token and the rate limit, before anything else.
fn etsy_gate(req: &HttpRequest, keys: &EtsyKeys, state: &mut EtsyState) -> Option<HttpResponse> {
    use actix_web::http::StatusCode;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if header("x-api-key") != keys.api_key {
        return Some(etsy_error(StatusCode::FORBIDDEN, "Invalid API key"));
    }
    let token = header("authorization").strip_prefix("Bearer ").unwrap_or_default();
    if state.expired.iter().any(|t| t == token) {
        return Some(etsy_error(StatusCode::UNAUTHORIZED, "invalid_token: access token is expired"));
    }
    if !state.tokens.iter().any(|t| t == token) {
        return Some(etsy_error(StatusCode::UNAUTHORIZED, "invalid_token"));
    }
    if state.controls.throttled() {
        let mut res = etsy_error(StatusCode::TOO_MANY_REQUESTS, "You have exceeded your rate limit.");
        res.headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, actix_web::http::header::HeaderValue::from(1));
        return Some(res);
    }
    None
}

fn etsy_inventory_json(l: &EtsyListing) -> Value {
    let products: Vec<Value> = l
        .products
        .iter()
        .map(|p| {
            json!({"product_id": p.id, "sku": p.sku, "is_deleted": false, "property_values": [],
                "offerings": [{"offering_id": p.id + 1_000_000, "quantity": p.quantity, "is_enabled": true, "is_deleted": false,
                    "price": {"amount": p.cents, "divisor": 100, "currency_code": "EUR"}}]})
        })
        .collect();
    json!({"products": products, "price_on_property": [], "quantity_on_property": [], "sku_on_property": []})
}

fn etsy_listing_json(l: &EtsyListing) -> Value {
    let first = l.products.first();
    json!({"listing_id": l.id, "title": l.title, "state": "active", "last_modified_timestamp": 1_795_600_000,
        "quantity": l.products.iter().map(|p| p.quantity).sum::<i64>(),
        "price": {"amount": first.map_or(0, |p| p.cents), "divisor": 100, "currency_code": "EUR"},
        "skus": l.products.iter().map(|p| p.sku.clone()).collect::<Vec<_>>()})
}

#[derive(serde::Deserialize)]
struct EtsyPage {
    limit: Option<usize>,
    offset: Option<usize>,
    includes: Option<String>,
}

async fn etsy_shop_listings(
    req: HttpRequest,
    state: web::Data<Mutex<EtsyState>>,
    keys: web::Data<EtsyKeys>,
    shop: web::Path<String>,
    query: web::Query<EtsyPage>,
) -> HttpResponse {
    let mut state = lock(&state);
    if let Some(refused) = etsy_gate(&req, &keys, &mut state) {
        return refused;
    }
    if *shop != keys.shop_id {
        return etsy_error(actix_web::http::StatusCode::FORBIDDEN, "The shop is not the token's");
    }
    let (limit, offset) = (query.limit.unwrap_or(25).clamp(1, 100), query.offset.unwrap_or(0));
    let inventory = query.includes.as_deref().is_some_and(|i| i.split(',').any(|i| i == "Inventory"));
    let results: Vec<Value> = state
        .listings
        .iter()
        .skip(offset)
        .take(limit)
        .map(|l| {
            let mut listing = etsy_listing_json(l);
            if inventory {
                listing["inventory"] = etsy_inventory_json(l);
            }
            listing
        })
        .collect();
    HttpResponse::Ok().json(json!({"count": state.listings.len(), "results": results}))
}

async fn etsy_listing(
    req: HttpRequest,
    state: web::Data<Mutex<EtsyState>>,
    keys: web::Data<EtsyKeys>,
    id: web::Path<u64>,
) -> HttpResponse {
    etsy_read(&req, &state, &keys, *id, etsy_listing_json)
}

async fn etsy_inventory(
    req: HttpRequest,
    state: web::Data<Mutex<EtsyState>>,
    keys: web::Data<EtsyKeys>,
    id: web::Path<u64>,
) -> HttpResponse {
    etsy_read(&req, &state, &keys, *id, etsy_inventory_json)
}

/// One listing as `view` shows it, after the gate; 404 as Etsy words it.
fn etsy_read(
    req: &HttpRequest,
    state: &Mutex<EtsyState>,
    keys: &EtsyKeys,
    id: u64,
    view: fn(&EtsyListing) -> Value,
) -> HttpResponse {
    let mut state = lock(state);
    if let Some(refused) = etsy_gate(req, keys, &mut state) {
        return refused;
    }
    match state.listings.iter().find(|l| l.id == id) {
        Some(l) => HttpResponse::Ok().json(view(l)),
        None => etsy_error(actix_web::http::StatusCode::NOT_FOUND, &format!("Listing {id} not found")),
    }
}

/// A receipt (`getShopReceipt`) with its transactions, one per line.
async fn etsy_receipt(
    req: HttpRequest,
    state: web::Data<Mutex<EtsyState>>,
    keys: web::Data<EtsyKeys>,
    path: web::Path<(String, u64)>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let mut state = lock(&state);
    if let Some(refused) = etsy_gate(&req, &keys, &mut state) {
        return refused;
    }
    let (shop, id) = path.into_inner();
    if shop != keys.shop_id {
        return etsy_error(StatusCode::FORBIDDEN, "The shop is not the token's");
    }
    let Some(receipt) = state.receipts.iter().find(|r| r.id == id) else {
        return etsy_error(StatusCode::NOT_FOUND, &format!("Receipt {id} not found"));
    };
    let transactions: Vec<Value> = receipt
        .lines
        .iter()
        .map(|(transaction, listing, product, sku, quantity)| {
            json!({"transaction_id": transaction, "receipt_id": receipt.id, "listing_id": listing,
                "product_id": product, "sku": sku, "quantity": quantity, "transaction_type": "listing",
                "is_digital": false, "paid_timestamp": 1_795_600_000, "variations": [], "product_data": []})
        })
        .collect();
    HttpResponse::Ok().json(json!({"receipt_id": receipt.id, "receipt_type": 0, "status": "Paid",
        "is_paid": true, "is_shipped": false, "create_timestamp": 1_795_600_000, "transactions": transactions}))
}

/// The whole inventory, products matched by SKU: one missing, or an
/// offering without a decimal price or a quantity, refuses the update.
async fn etsy_put_inventory(
    req: HttpRequest,
    state: web::Data<Mutex<EtsyState>>,
    keys: web::Data<EtsyKeys>,
    id: web::Path<u64>,
    body: web::Json<Value>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    let mut state = lock(&state);
    if let Some(refused) = etsy_gate(&req, &keys, &mut state) {
        return refused;
    }
    state.puts += 1;
    let state = &mut *state;
    let Some(listing) = state.listings.iter_mut().find(|l| l.id == *id) else {
        return etsy_error(StatusCode::NOT_FOUND, &format!("Listing {id} not found"));
    };
    let given = body["products"].as_array().cloned().unwrap_or_default();
    if given.len() != listing.products.len() {
        return etsy_error(StatusCode::BAD_REQUEST, "products must list every product of the listing");
    }
    let mut updates = Vec::new();
    for p in &given {
        let offering = &p["offerings"][0];
        let (Some(price), Some(quantity)) = (offering["price"].as_f64(), offering["quantity"].as_i64())
        else {
            return etsy_error(StatusCode::BAD_REQUEST, "offerings need a decimal price and a quantity");
        };
        let Some(index) = listing.products.iter().position(|x| p["sku"] == x.sku.as_str()) else {
            return etsy_error(StatusCode::BAD_REQUEST, &format!("unknown sku {}", p["sku"]));
        };
        updates.push((index, (price * 100.0).round() as i64, quantity.max(0)));
    }
    for (index, cents, quantity) in updates {
        listing.products[index].cents = cents;
        listing.products[index].quantity = quantity;
        state.controls.land(&listing.products[index].sku, quantity);
    }
    HttpResponse::Ok().json(etsy_inventory_json(listing))
}

// -------------------------------------------------------------------- SNS

#[derive(Default)]
struct SnsState {
    /// Tokens of the subscriptions confirmed (`GET /confirm?Token=`).
    confirmed: Vec<String>,
    /// Certificate fetches.
    fetches: usize,
}

/// A fake of Amazon SNS's two HTTP surfaces a subscriber touches: the
/// signing certificate (`GET /SimpleNotificationService-fake.pem`, the PEM
/// given) and the subscription confirmation (`GET /confirm?Token=...`,
/// answering SNS's `ConfirmSubscriptionResponse`). Messages are signed by
/// whoever holds the certificate's key (a test, the fake-stores example).
#[derive(Clone)]
pub struct FakeSns {
    pub base_url: String,
    /// `SigningCertURL` to put in messages.
    pub cert_url: String,
    state: Arc<Mutex<SnsState>>,
}

impl FakeSns {
    pub async fn start(cert_pem: String) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(SnsState::default()));
        let data = web::Data::from(state.clone());
        let pem = web::Data::new(cert_pem);
        let base_url = listen(move |cfg| {
            cfg.app_data(data.clone())
                .app_data(pem.clone())
                .route("/SimpleNotificationService-fake.pem", web::get().to(sns_cert))
                .route("/confirm", web::get().to(sns_confirm));
        })?;
        Ok(Self { cert_url: format!("{base_url}/SimpleNotificationService-fake.pem"), base_url, state })
    }

    /// The `SubscribeURL` confirming the subscription with `token`.
    pub fn subscribe_url(&self, token: &str) -> String {
        format!("{}/confirm?Action=ConfirmSubscription&Token={token}", self.base_url)
    }

    /// Tokens confirmed so far.
    pub fn confirmed(&self) -> Vec<String> {
        lock(&self.state).confirmed.clone()
    }

    /// How often the certificate was fetched.
    pub fn certificate_fetches(&self) -> usize {
        lock(&self.state).fetches
    }
}

async fn sns_cert(state: web::Data<Mutex<SnsState>>, pem: web::Data<String>) -> HttpResponse {
    lock(&state).fetches += 1;
    HttpResponse::Ok().content_type("application/x-x509-ca-cert").body(pem.get_ref().clone())
}

#[derive(serde::Deserialize)]
struct SnsConfirm {
    #[serde(rename = "Token")]
    token: String,
}

async fn sns_confirm(state: web::Data<Mutex<SnsState>>, query: web::Query<SnsConfirm>) -> HttpResponse {
    lock(&state).confirmed.push(query.token.clone());
    HttpResponse::Ok().content_type("text/xml").body(
        "<ConfirmSubscriptionResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><ConfirmSubscriptionResult>\
         <SubscriptionArn>arn:aws:sns:eu-west-1:123456789012:nexus:fake</SubscriptionArn></ConfirmSubscriptionResult>\
         </ConfirmSubscriptionResponse>",
    )
}
