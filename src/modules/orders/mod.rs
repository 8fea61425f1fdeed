//! Orders (`module.orders`): customers and sales orders, and the saga that
//! carries an order from `pending` through `reserved` (every line held
//! through [`InventoryService`], all or nothing), `paid` (through a
//! [`PaymentGateway`]) and `fulfilled` (the reservation committed) to
//! `completed`. Each step is a durable job (see [`saga`]); a step that
//! fails compensates the steps done (the reservation released, the payment
//! voided) and ends the order `failed` with the reason. Every transition
//! writes its `order.*` event in the transaction of the change.

pub mod callbacks;
pub mod cli;
pub mod gateway;
pub mod graphql;
pub mod import;
pub mod kpis;
pub mod kpis_redis;
pub mod notify;
pub mod routes;
pub mod saga;
pub mod service;
mod steps;
pub mod stripe;

use std::sync::Arc;

use actix_web::web;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

pub use gateway::{Charge, ChargeOutcome, GatewayError, PaymentGateway, Refund, RefundOutcome, Simulated};
pub use import::{ImportTo, ImportView};

use crate::{
    error::{ApiResult, FieldError},
    modules::inventory::{InventoryService, check_quantity},
    platform::{
        events::{EventType, Listener, event_types},
        http::{ListRequest, Paged, Sort, Sorts},
        jobs::JobHandler,
        module::{Feature, Grant, Module, Setup},
        rbac::grants,
        tenancy::{TenantMutable, TenantOwned, TenantScope},
        validate::{self, Checks},
    },
};
use entity::{customer, order};

macro_rules! tenant_owned {
    ($($module:ident),*) => {$(
        impl TenantOwned for entity::$module::Entity {
            fn tenant_column() -> Self::Column {
                entity::$module::Column::TenantId
            }
        }
        impl TenantMutable for entity::$module::Entity {}
    )*};
}

tenant_owned!(
    customer,
    order,
    order_gateway_callback,
    order_import,
    order_import_chunk,
    order_line,
    order_notification,
    order_payment,
    order_refund,
    order_transition
);

grants! {
    OrdersRead => "orders", "read", "module.orders", ["admin", "manager", "user", "viewer"];
    OrdersWrite => "orders", "write", "module.orders", ["admin", "manager", "user"];
    OrdersRefund => "orders", "refund", "module.orders", ["admin", "manager"];
}

event_types! {
    EVENTS;
    ORDER_CREATED => "order.created", 6, "An order was placed; its saga starts.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "external_order_id": "1042", "customer_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "status": "pending", "total": 4998, "currency": "EUR"});
    ORDER_RESERVED => "order.reserved", 6, "The stock of every line of an order was reserved.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "external_order_id": "1042", "customer_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "status": "reserved", "total": 4998, "currency": "EUR"});
    ORDER_PAID => "order.paid", 7, "An order's payment was captured.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "external_order_id": "1042", "customer_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "status": "paid", "total": 4998, "currency": "EUR"});
    ORDER_FULFILLED => "order.fulfilled", 6, "An order's reserved stock was shipped (the reservation committed).",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "external_order_id": "1042", "customer_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "status": "fulfilled", "total": 4998, "currency": "EUR"});
    ORDER_COMPLETED => "order.completed", 6, "An order went through every step of its saga.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "external_order_id": "1042", "customer_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "status": "completed", "total": 4998, "currency": "EUR"});
    ORDER_FAILED => "order.failed", 7, "A step of an order failed; the steps done were compensated. `reason` says why.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "external_order_id": "1042", "customer_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "status": "failed", "total": 4998, "currency": "EUR", "reason": "not enough stock of TSHIRT-RED-M in the warehouse for this change"});
    ORDER_CANCELLED => "order.cancelled", 7, "An order was cancelled before it was fulfilled; the steps done were compensated.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "external_order_id": "1042", "customer_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "status": "cancelled", "total": 4998, "currency": "EUR", "reason": "the customer changed their mind"});
    ORDER_REFUND_REQUESTED => "order.refund_requested", 6, "A refund of an order was requested; the gateway is asked next.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a13", "order_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "amount": 1000, "currency": "EUR", "status": "requested", "reason": "damaged in transit", "refunded": 1000});
    ORDER_REFUNDED => "order.refunded", 7, "The gateway gave a refund's money back.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a13", "order_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "amount": 1000, "currency": "EUR", "status": "processed", "reason": "damaged in transit", "refunded": 1000});
    ORDER_REFUND_FAILED => "order.refund_failed", 7, "The gateway refused a refund; its amount may be refunded again. `failure_reason` says why.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a13", "order_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "amount": 1000, "currency": "EUR", "status": "failed", "reason": "damaged in transit", "refunded": 0, "failure_reason": "refund refused by the issuer"});
    ORDER_NOTIFICATION => "order.notification", 4, "A notification to an order's customer, for the tenant to deliver (the webhook channel of order notifications). At least once: de-duplicate on `notification_id`.",
        json!({"notification_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a14", "order_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "customer_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "type": "completed", "subject": "Your order 1042 is complete", "body": "Hello Ada Lovelace,\n\nyour order 1042 of 49.98 EUR has shipped and is complete. Thank you!\n"});
}

pub const PENDING: &str = "pending";
pub const RESERVED: &str = "reserved";
pub const PAID: &str = "paid";
pub const FULFILLED: &str = "fulfilled";
pub const COMPLETED: &str = "completed";
pub const FAILED: &str = "failed";
pub const CANCELLED: &str = "cancelled";
/// Every state, in the order an order goes through them.
pub const STATES: [&str; 7] = [PENDING, RESERVED, PAID, FULFILLED, COMPLETED, FAILED, CANCELLED];
/// The states an order may be cancelled from: before its stock shipped.
pub const CANCELLABLE: [&str; 3] = [PENDING, RESERVED, PAID];
/// The states an order may be refunded in: its payment is captured.
pub const REFUNDABLE: [&str; 3] = [PAID, FULFILLED, COMPLETED];

/// The most lines one order may hold.
pub const MAX_LINES: usize = 500;

/// `[modules.orders]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The payment gateway: `simulated` or `stripe`.
    pub gateway: GatewayKind,
    /// How long an order's reservation holds its stock (1 to 604800 s);
    /// a saga stuck longer fails when it ships.
    pub reservation_ttl_seconds: u32,
    /// The largest CSV file `POST /api/v1/orders/imports` takes, in bytes.
    pub import_max_bytes: u64,
    /// The simulated gateway.
    pub simulated: SimulatedSettings,
    /// The Stripe gateway.
    pub stripe: StripeSettings,
    /// Order notifications: attempts and the SMTP relay.
    pub notifications: notify::Settings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            gateway: GatewayKind::Simulated,
            reservation_ttl_seconds: 86_400,
            import_max_bytes: 100 * 1024 * 1024,
            simulated: Default::default(),
            stripe: Default::default(),
            notifications: Default::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GatewayKind {
    Simulated,
    Stripe,
}

/// `[modules.orders.stripe]`: Stripe's PaymentIntents and Refunds API (or
/// anything speaking it).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StripeSettings {
    /// Where the API is (`https://api.stripe.com`).
    pub api_base: String,
    /// The secret key (`sk_live_...`, `sk_test_...`); required with
    /// `gateway = "stripe"`.
    pub secret_key: Option<crate::config::Secret>,
    /// The payment method each charge confirms with.
    pub payment_method: String,
    /// How long a call may take, in milliseconds (1 to 60000).
    pub timeout_ms: u64,
    /// The signing secret of the webhook endpoint (`whsec_...`) Stripe's
    /// callbacks are verified with; none: every callback is refused.
    pub webhook_secret: Option<crate::config::Secret>,
    /// How far a callback's signature timestamp may be from now, in
    /// seconds (1 to 86400).
    pub webhook_tolerance_seconds: u32,
}

impl Default for StripeSettings {
    fn default() -> Self {
        Self {
            api_base: "https://api.stripe.com".to_owned(),
            secret_key: None,
            payment_method: "pm_card_visa".to_owned(),
            timeout_ms: 10_000,
            webhook_secret: None,
            webhook_tolerance_seconds: 300,
        }
    }
}

/// `[modules.orders.simulated]`: a gateway that decides by a seeded hash
/// of the payment's idempotency key, so one payment always gets the same
/// answer and a test run is deterministic.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatedSettings {
    /// The share of payments approved, 0.0 to 1.0.
    pub success_rate: f64,
    /// The share of refunds the gateway carries out, 0.0 to 1.0.
    pub refund_success_rate: f64,
    /// How long each call takes, in milliseconds (at most 60000).
    pub delay_ms: u64,
    /// Mixed into every decision: another seed, other outcomes.
    pub seed: u64,
}

impl Default for SimulatedSettings {
    fn default() -> Self {
        Self { success_rate: 1.0, refund_success_rate: 1.0, delay_ms: 0, seed: 42 }
    }
}

#[derive(
    Clone,
    Debug,
    Serialize,
    Deserialize,
    ToSchema,
    async_graphql::SimpleObject,
    async_graphql::InputObject,
    PartialEq,
    Eq,
)]
#[graphql(name = "NotificationPreferences", input_name = "NotificationPreferencesInput")]
#[serde(deny_unknown_fields)]
pub struct Notifications {
    /// Order notifications by email.
    #[serde(default = "yes")]
    #[graphql(default = true)]
    pub email: bool,
    /// Order notifications through the tenant's webhooks.
    #[serde(default = "yes")]
    #[graphql(default = true)]
    pub webhook: bool,
}

fn yes() -> bool {
    true
}

impl Default for Notifications {
    fn default() -> Self {
        Self { email: true, webhook: true }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "Customer")]
pub struct CustomerView {
    pub id: Uuid,
    /// The customer's id in the shop or channel they came from.
    #[schema(example = "C-1001")]
    pub external_id: Option<String>,
    #[schema(example = "ada@example.com")]
    pub email: String,
    #[schema(example = "Ada Lovelace")]
    pub name: String,
    pub notifications: Notifications,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<customer::Model> for CustomerView {
    fn from(m: customer::Model) -> Self {
        Self {
            id: m.id,
            external_id: m.external_id,
            email: m.email,
            name: m.name,
            notifications: Notifications { email: m.notify_email, webhook: m.notify_webhook },
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "OrderLine", complex)]
pub struct OrderLineView {
    pub id: Uuid,
    pub product_id: Uuid,
    #[schema(example = "TSHIRT-RED-M")]
    pub sku: String,
    #[schema(example = 2)]
    pub quantity: i64,
    /// Minor units per unit.
    #[schema(example = 2499)]
    pub unit_price: i64,
    /// `quantity * unit_price`.
    #[schema(example = 4998)]
    pub line_total: i64,
}

#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "OrderPayment")]
pub struct PaymentView {
    pub id: Uuid,
    #[schema(example = "simulated")]
    pub gateway: String,
    /// The gateway's id of the charge; `null` until the gateway answered.
    #[schema(example = "sim_3f1f6f0e7a119d3e")]
    pub gateway_reference: Option<String>,
    pub amount: i64,
    pub currency: String,
    /// `pending` (sent, not answered yet), `captured`, `declined`,
    /// `voiding` (the void is queued) or `voided`.
    #[schema(example = "captured")]
    pub status: String,
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A refund of (part of) an order's payment.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "OrderRefund")]
pub struct RefundView {
    pub id: Uuid,
    pub order_id: Uuid,
    /// Minor units.
    #[schema(example = 1000)]
    pub amount: i64,
    #[schema(example = "EUR")]
    pub currency: String,
    #[schema(example = "damaged in transit")]
    pub reason: String,
    /// `requested` (the gateway is asked next), `processed` or `failed`.
    #[schema(example = "processed")]
    pub status: String,
    /// The gateway's id of the refund, once processed.
    #[schema(example = "sim_re_3f1f6f0e7a119d3e")]
    pub gateway_reference: Option<String>,
    /// Why the gateway refused it.
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<entity::order_refund::Model> for RefundView {
    fn from(m: entity::order_refund::Model) -> Self {
        Self {
            id: m.id,
            order_id: m.order_id,
            amount: m.amount,
            currency: m.currency,
            reason: m.reason,
            status: m.status,
            gateway_reference: m.gateway_reference,
            failure_reason: m.failure_reason,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// A refund to make.
#[derive(Clone, Debug)]
pub struct NewRefund {
    /// Minor units, at least 1.
    pub amount: i64,
    pub reason: String,
    /// The same key gives the same refund back instead of a second one.
    pub idempotency_key: String,
}

/// What a refund's input must satisfy, everywhere.
pub fn check_refund(new: &NewRefund) -> Result<(), Vec<FieldError>> {
    let mut checks = Checks::default();
    if new.amount < 1 {
        checks.check("amount", Err("must be at least 1 (minor units)".into()));
    }
    checks.check("reason", identifier(&new.reason, 500));
    checks.check("idempotency_key", identifier(&new.idempotency_key, 255));
    checks.finish()
}

/// One change of an order's state.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "OrderTransition")]
pub struct TransitionView {
    /// `null` when the order was created.
    #[schema(example = "pending")]
    pub from: Option<String>,
    #[schema(example = "reserved")]
    pub to: String,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "Order", complex)]
pub struct OrderView {
    pub id: Uuid,
    #[schema(example = "1042")]
    pub external_order_id: Option<String>,
    /// Where the order came from.
    #[schema(example = "web")]
    pub channel: String,
    pub customer_id: Uuid,
    pub warehouse_id: Uuid,
    #[schema(example = "EUR")]
    pub currency: String,
    /// Sum of the line totals, minor units (computed by the server).
    #[schema(example = 4998)]
    pub total: i64,
    /// pending, reserved, paid, fulfilled, completed, failed or cancelled.
    #[schema(example = "completed")]
    pub status: String,
    /// Why the order failed or was cancelled.
    pub failure_reason: Option<String>,
    /// Minor units refunded or being refunded (refunds `requested` or
    /// `processed`); at most the captured payment.
    #[schema(example = 0)]
    pub refunded: i64,
    /// When the shop says it was placed (imported orders); `null` when it
    /// was placed here, at `created_at`.
    pub placed_at: Option<DateTime<Utc>>,
    pub lines: Vec<OrderLineView>,
    pub payments: Vec<PaymentView>,
    /// Its refunds, oldest first.
    pub refunds: Vec<RefundView>,
    /// Its state changes, oldest first.
    pub history: Vec<TransitionView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A line of a new order: the product by id or by SKU (one of them).
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrderLine {
    pub product_id: Option<Uuid>,
    #[schema(example = "TSHIRT-RED-M", max_length = 100)]
    pub sku: Option<String>,
    #[schema(example = 2, minimum = 1, maximum = 1_000_000_000)]
    pub quantity: i64,
    /// Minor units per unit.
    #[schema(example = 2499, minimum = 0)]
    pub unit_price: i64,
}

/// A new order, as REST, GraphQL and the CSV import give it.
#[derive(Clone, Debug)]
pub struct NewOrder {
    pub external_order_id: Option<String>,
    /// When the shop says it was placed (imports); `None`: now.
    pub placed_at: Option<DateTime<Utc>>,
    pub channel: String,
    pub customer_id: Uuid,
    pub warehouse_id: Uuid,
    pub currency: String,
    pub lines: Vec<NewOrderLine>,
}

/// A new customer.
#[derive(Clone, Debug)]
pub struct NewCustomer {
    pub external_id: Option<String>,
    pub email: String,
    pub name: String,
    pub notifications: Notifications,
}

/// Customers: newest first unless sorted otherwise.
pub const CUSTOMER_SORTS: Sorts<customer::Column> = Sorts {
    fields: &[("created_at", customer::Column::CreatedAt), ("email", customer::Column::Email)],
    default: "-created_at",
};

/// An order's refunds: oldest first.
pub const REFUND_SORTS: Sorts<entity::order_refund::Column> =
    Sorts { fields: &[("created_at", entity::order_refund::Column::CreatedAt)], default: "created_at" };

/// Orders: newest first unless sorted otherwise.
pub const ORDER_SORTS: Sorts<order::Column> = Sorts {
    fields: &[("created_at", order::Column::CreatedAt), ("total", order::Column::Total)],
    default: "-created_at",
};

pub struct CustomerFilter {
    pub email: Option<String>,
    pub sort: Sort<customer::Column>,
}

pub struct OrderFilter {
    pub status: Option<String>,
    pub customer_id: Option<Uuid>,
    pub external_order_id: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub sort: Sort<order::Column>,
}

/// An identifier from outside (an external id, a channel): 1 to `max`
/// characters, not blank, no control characters.
fn identifier(value: &str, max: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("must not be blank".to_owned());
    }
    validate::plain_text(value, max)
}

/// What a new customer must satisfy, over REST and GraphQL alike.
pub fn check_customer(new: &NewCustomer) -> Result<(), Vec<FieldError>> {
    let mut checks = Checks::default();
    checks.check("email", validate::email(&new.email)).check("name", validate::name(&new.name));
    if let Some(id) = &new.external_id {
        checks.check("external_id", identifier(id, 200));
    }
    checks.finish()
}

/// What a new order's input must satisfy, over REST and GraphQL alike.
/// Products, the customer and the warehouse are looked up afterwards.
pub fn check_order(new: &NewOrder) -> Result<(), Vec<FieldError>> {
    let mut checks = Checks::default();
    checks
        .check("currency", validate::currency(&new.currency))
        .check("channel", identifier(&new.channel, 50));
    if let Some(id) = &new.external_order_id {
        checks.check("external_order_id", identifier(id, 200));
    }
    if new.lines.is_empty() || new.lines.len() > MAX_LINES {
        checks.check("lines", Err(format!("must hold 1 to {MAX_LINES} lines")));
    }
    for (i, line) in new.lines.iter().enumerate() {
        match (&line.product_id, &line.sku) {
            (Some(_), None) => {}
            (None, Some(sku)) => {
                checks.check(&format!("lines[{i}].sku"), identifier(sku, 100));
            }
            _ => {
                checks.check(&format!("lines[{i}]"), Err("give either product_id or sku".into()));
            }
        }
        checks.check(&format!("lines[{i}].quantity"), check_quantity(line.quantity));
        if line.unit_price < 0 {
            checks.check(&format!("lines[{i}].unit_price"), Err("must not be negative".into()));
        }
    }
    checks.finish()
}

/// Everything the routes, GraphQL and the saga's jobs may do with
/// customers and orders.
#[async_trait::async_trait]
pub trait OrderService: Send + Sync {
    async fn create_customer(&self, tenant: TenantScope, new: NewCustomer) -> ApiResult<CustomerView>;
    async fn list_customers(
        &self,
        tenant: TenantScope,
        filter: CustomerFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<CustomerView>>;
    async fn get_customer(&self, tenant: TenantScope, id: Uuid) -> ApiResult<CustomerView>;
    /// The customers among `ids` (others are simply absent): for batch loads.
    async fn customers_by_ids(&self, tenant: TenantScope, ids: Vec<Uuid>) -> ApiResult<Vec<CustomerView>>;
    /// Place an order (`pending`) and queue the first step of its saga;
    /// 422 naming the field for an unknown customer, warehouse or product,
    /// 409 when `external_order_id` is taken.
    async fn place_order(&self, tenant: TenantScope, new: NewOrder) -> ApiResult<OrderView>;
    /// A page of orders, each with its lines, payments and history (one
    /// query each for the whole page).
    async fn list_orders(
        &self,
        tenant: TenantScope,
        filter: OrderFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<OrderView>>;
    async fn get_order(&self, tenant: TenantScope, id: Uuid) -> ApiResult<OrderView>;
    /// Cancel an order before it shipped, compensating what was done;
    /// 409 naming its state otherwise.
    async fn cancel_order(
        &self,
        tenant: TenantScope,
        id: Uuid,
        reason: Option<String>,
    ) -> ApiResult<OrderView>;
    /// Refund (part of) a paid order: the refund is `requested` and its
    /// job asks the gateway. The same idempotency key gives the first
    /// refund back (`false`: nothing new). 409 `refund_amount_exceeded`
    /// beyond what was captured minus earlier refunds, 409 `conflict` for
    /// an order that is not paid.
    async fn refund_order(
        &self,
        tenant: TenantScope,
        order_id: Uuid,
        new: NewRefund,
    ) -> ApiResult<(RefundView, bool)>;
    /// A page of an order's refunds, oldest first.
    async fn list_refunds(
        &self,
        tenant: TenantScope,
        order_id: Uuid,
        list: &ListRequest,
    ) -> ApiResult<Paged<RefundView>>;
    /// Send a `requested` refund to the gateway now and record the answer
    /// (what its job does; the command line calls it so as not to wait for
    /// a worker). A refund answered already is returned as it is.
    async fn settle_refund(&self, tenant: TenantScope, refund_id: Uuid) -> ApiResult<RefundView>;
    /// Store an uploaded CSV file (streamed; a wrong header stores nothing,
    /// 413 beyond `import_max_bytes`) and queue its import.
    async fn upload_import(
        &self,
        tenant: TenantScope,
        to: import::ImportTo,
        filename: String,
        body: futures_util::stream::BoxStream<'static, ApiResult<actix_web::web::Bytes>>,
    ) -> ApiResult<ImportView>;
    /// Import a CSV file now (the command line), reporting progress.
    async fn import_file(
        &self,
        tenant: TenantScope,
        to: import::ImportTo,
        source: Box<dyn std::io::Read + Send>,
        progress: &mut dyn import::Progress,
    ) -> ApiResult<import::Tally>;
    async fn get_import(&self, tenant: TenantScope, id: Uuid) -> ApiResult<ImportView>;
    /// A page of imports, newest first.
    async fn list_imports(&self, tenant: TenantScope, list: &ListRequest) -> ApiResult<Paged<ImportView>>;
    /// A page of order notifications; 404 for an unknown `order_id` filter.
    async fn list_notifications(
        &self,
        tenant: TenantScope,
        filter: notify::NotificationFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<notify::NotificationView>>;
    async fn get_notification(&self, tenant: TenantScope, id: Uuid) -> ApiResult<notify::NotificationView>;
    /// The `limit` newest notifications.
    async fn recent_notifications(
        &self,
        tenant: TenantScope,
        limit: u64,
    ) -> ApiResult<Vec<notify::NotificationView>>;
    /// Notifications created in a window, per state, channel and type.
    async fn notification_stats(
        &self,
        tenant: TenantScope,
        created_after: Option<DateTime<Utc>>,
        created_before: Option<DateTime<Utc>>,
    ) -> ApiResult<notify::NotificationStats>;
    /// Send a failed notification again; 409 `notification_not_failed` otherwise.
    async fn resend_notification(&self, tenant: TenantScope, id: Uuid)
    -> ApiResult<notify::NotificationView>;
    /// Set which channels a customer is notified on.
    async fn set_notification_preferences(
        &self,
        tenant: TenantScope,
        customer_id: Uuid,
        preferences: Notifications,
    ) -> ApiResult<CustomerView>;
    /// Receive a Stripe callback for the tenant `tenant_id` (see
    /// [`callbacks`]): 401 when forged, stale or replayed (logged, nothing
    /// else changed), 404 for an unknown tenant.
    async fn receive_stripe_callback(
        &self,
        tenant_id: Uuid,
        signature: Option<String>,
        body: actix_web::web::Bytes,
    ) -> ApiResult<callbacks::CallbackView>;
    /// A page of the gateway callbacks received for the tenant, verified
    /// or not, with what came of each.
    async fn list_callbacks(
        &self,
        tenant: TenantScope,
        filter: callbacks::CallbackFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<callbacks::CallbackView>>;
}

/// The orders module: its service, its saga's jobs and how it plugs in.
pub struct Orders {
    service: Arc<service::SeaOrmOrders>,
    analytics: Arc<dyn kpis::Analytics>,
    /// The Redis backend of the KPIs, when Redis is configured.
    kpi_store: Option<Arc<kpis_redis::RedisAnalytics>>,
}

impl Orders {
    pub fn new(setup: &Setup, inventory: Arc<dyn InventoryService>) -> anyhow::Result<Self> {
        let settings: Settings = setup.config("orders")?;
        anyhow::ensure!(
            (1..=7 * 86_400).contains(&settings.reservation_ttl_seconds),
            "`modules.orders.reservation_ttl_seconds`: must be between 1 and 604800"
        );
        let gateway: Arc<dyn PaymentGateway> = match settings.gateway {
            GatewayKind::Simulated => Arc::new(Simulated::new(&settings.simulated)?),
            GatewayKind::Stripe => Arc::new(stripe::Stripe::new(&settings.stripe)?),
        };
        anyhow::ensure!(
            settings.import_max_bytes >= 1024,
            "`modules.orders.import_max_bytes`: must be at least 1024"
        );
        anyhow::ensure!(
            (1..=86_400).contains(&settings.stripe.webhook_tolerance_seconds),
            "`modules.orders.stripe.webhook_tolerance_seconds`: must be between 1 and 86400"
        );
        let callbacks = callbacks::CallbackSettings {
            secret: settings
                .stripe
                .webhook_secret
                .as_ref()
                .map(|s| s.expose().to_owned())
                .filter(|s| !s.is_empty()),
            tolerance_seconds: i64::from(settings.stripe.webhook_tolerance_seconds),
        };
        let ttl = chrono::Duration::seconds(i64::from(settings.reservation_ttl_seconds));
        let notifiers = notify::Notifiers::new(&settings.notifications)?;
        let service = service::SeaOrmOrders::new(setup.db.clone(), inventory, gateway, ttl)
            .with_import_max_bytes(settings.import_max_bytes)
            .with_notifiers(notifiers)
            .with_callbacks(callbacks);
        let kpi_store = setup
            .redis
            .clone()
            .map(|redis| Arc::new(kpis_redis::RedisAnalytics::new(redis, setup.db.clone())));
        let analytics: Arc<dyn kpis::Analytics> = match &kpi_store {
            Some(store) => store.clone(),
            None => Arc::new(kpis::DbAnalytics::new(setup.db.clone())),
        };
        Ok(Self { service: Arc::new(service), analytics, kpi_store })
    }

    /// What other modules are given.
    pub fn service(&self) -> Arc<dyn OrderService> {
        self.service.clone()
    }
}

#[async_trait::async_trait]
impl Module for Orders {
    fn name(&self) -> &'static str {
        "orders"
    }

    fn feature(&self) -> Option<Feature> {
        Some(Feature {
            key: "module.orders",
            description: "Customers and sales orders: reserve, pay, fulfil as a saga with compensation",
            default: true,
            tier: "basic",
        })
    }

    fn tags(&self) -> &'static [(&'static str, &'static str)] {
        &[("orders", "Customers and sales orders (module.orders)")]
    }

    fn routes(&self, cfg: &mut ServiceConfig) {
        cfg.app_data(web::Data::from(self.service()));
        cfg.app_data(web::Data::from(self.analytics.clone()));
        routes::routes(cfg);
    }

    fn graphql_data(&self, data: &mut async_graphql::Data, tenant: Option<TenantScope>) {
        data.insert(self.service());
        data.insert(self.analytics.clone());
        if let Some(tenant) = tenant {
            data.insert(graphql::loader(self.service(), tenant));
        }
    }

    fn grants(&self) -> &'static [Grant] {
        GRANTS
    }

    fn event_types(&self) -> &'static [&'static EventType] {
        EVENTS
    }

    fn jobs(&self) -> Vec<(&'static str, Arc<dyn JobHandler>)> {
        saga::handlers(&self.service)
    }

    fn listeners(&self) -> Vec<Arc<dyn Listener>> {
        self.kpi_store.iter().map(|store| Arc::new(kpis_redis::KpiListener(store.clone())) as _).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(product_id: Option<Uuid>, sku: Option<&str>, quantity: i64, unit_price: i64) -> NewOrderLine {
        NewOrderLine { product_id, sku: sku.map(str::to_owned), quantity, unit_price }
    }

    fn order(lines: Vec<NewOrderLine>) -> NewOrder {
        NewOrder {
            external_order_id: None,
            placed_at: None,
            channel: "web".into(),
            customer_id: Uuid::now_v7(),
            warehouse_id: Uuid::now_v7(),
            currency: "EUR".into(),
            lines,
        }
    }

    #[test]
    fn an_order_names_every_invalid_field() {
        assert!(check_order(&order(vec![line(None, Some("A-1"), 1, 0)])).is_ok());
        let mut bad = order(vec![
            line(None, None, 0, -1),
            line(Some(Uuid::now_v7()), Some("A-1"), 1, 1),
            line(None, Some(" "), 1_000_000_001, 1),
        ]);
        bad.currency = "eur".into();
        bad.channel = String::new();
        let fields: Vec<String> = check_order(&bad).unwrap_err().into_iter().map(|e| e.field).collect();
        for field in [
            "currency",
            "channel",
            "lines[0]",
            "lines[0].quantity",
            "lines[0].unit_price",
            "lines[1]",
            "lines[2].sku",
            "lines[2].quantity",
        ] {
            assert!(fields.iter().any(|f| f == field), "{field} not in {fields:?}");
        }
        let fields: Vec<String> =
            check_order(&order(vec![])).unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["lines"]);
    }

    #[test]
    fn the_settings_default_to_an_always_approving_simulated_gateway() {
        let settings = Settings::default();
        assert_eq!(settings.gateway, GatewayKind::Simulated);
        assert_eq!(settings.simulated.success_rate, 1.0);
    }
}
