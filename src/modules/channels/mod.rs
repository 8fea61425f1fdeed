//! Channels (`module.channels`): a tenant's stores on sales channels
//! (Shopify, WooCommerce, Amazon, Etsy), kept in step with local stock. A connection
//! says where a store is, how to sign in (credentials sealed with the
//! platform's cipher, never returned), which warehouse it sells from and
//! how many units to hold back. A catalog import maps the store's variants
//! to local products by SKU (creating the missing ones through
//! [`InventoryService`]); from then on every stock change of a mapped
//! product pushes its available-to-promise quantity (on hand - reserved -
//! buffer, never below 0) to each store, coalesced per product and batched
//! per store (see [`service`]). Verified webhooks of the stores come back
//! as stock movements, which push to the other stores in turn. Each channel
//! is a [`ChannelDriver`].

pub mod amazon;
pub mod cli;
pub mod driver;
pub mod etsy;
pub mod fakes;
pub mod graphql;
pub mod routes;
pub mod service;
pub mod shopify;
pub mod sns;
pub mod woocommerce;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use actix_web::web;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

pub use driver::{ChannelDriver, DriverError, RatePolicy, RemoteProduct};

use crate::{
    error::ApiResult,
    modules::inventory::InventoryService,
    platform::{
        events::{EventType, Listener, event_types},
        http::{ListRequest, Paged, Sort, Sorts},
        jobs::JobHandler,
        module::{Feature, Grant, Module, Setup},
        rbac::grants,
        tenancy::{TenantMutable, TenantOwned, TenantScope},
    },
};
use entity::{channel_connection as connection, channel_mapping as mapping};

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
    channel_connection,
    channel_dead_letter,
    channel_drift,
    channel_mapping,
    channel_sync_run,
    channel_webhook_receipt
);

grants! {
    ChannelsRead => "channels", "read", "module.channels", ["admin", "manager", "user", "viewer"];
    ChannelsWrite => "channels", "write", "module.channels", ["admin", "manager"];
}

event_types! {
    EVENTS;
    CHANNEL_SYNC_STARTED => "channel.sync_started", 4, "A catalog import, full push or reconcile of a connection started (`kind`: `import`, `push` or `reconcile`).",
        json!({"run_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a31", "connection_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a21", "kind": "import"});
    CHANNEL_SYNC_SUCCEEDED => "channel.sync_succeeded", 4, "An import went through every page of the store, or a push or reconcile through every mapping (with its counts).",
        json!({"run_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a31", "connection_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a21", "kind": "import", "listed": 12, "linked": 10, "created": 2, "skipped": 0});
    CHANNEL_SYNC_FAILED => "channel.sync_failed", 7, "An import, push or reconcile stopped; `error` says why.",
        json!({"run_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a31", "connection_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a21", "kind": "import", "error": "401 Unauthorized: Invalid API key or access token"});
    CHANNEL_PRODUCT_IMPORTED => "channel.product_imported", 4, "A store's variant was mapped to a local product (found by SKU, or created).",
        json!({"connection_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a21", "product_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "sku": "TSHIRT-RED-M", "remote_product_id": "gid://shopify/Product/1001", "remote_variant_id": "gid://shopify/ProductVariant/2001", "created": false});
    CHANNEL_THROTTLED => "channel.throttled", 6, "A store asked Nexus to slow down (429 or its cost budget); pushes wait as long as it asked.",
        json!({"connection_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a21", "channel": "shopify", "retry_after_seconds": 2, "error": "429 Too Many Requests: Exceeded 2 calls per second"});
    CHANNEL_WEBHOOK_RECEIVED => "channel.webhook_received", 4, "A store's webhook was verified and handled; `outcome` says how.",
        json!({"connection_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a21", "receipt_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a41", "topic": "inventory_levels/update", "event_id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", "outcome": "applied"});
    CHANNEL_INVENTORY_UPDATED => "channel.inventory_updated", 6, "A store's stock change (a sale there) was booked as a stock movement; it propagates to the other stores.",
        json!({"connection_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a21", "product_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "sku": "TSHIRT-RED-M", "remote_quantity": 6, "quantity": -2, "on_hand": 38});
    CHANNEL_DEAD_LETTERED => "channel.dead_lettered", 7, "A push to a store failed on every attempt; the product's push is kept as a dead letter to replay or dismiss.",
        json!({"dead_letter_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a51", "connection_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a21", "product_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "sku": "TSHIRT-RED-M", "quantity": 38, "attempts": 10, "error": "503 Service Unavailable: maintenance"});
    CHANNEL_DISCONNECTED => "channel.disconnected", 8, "A store refused the connection's credentials; nothing is pushed to it until they are replaced.",
        json!({"connection_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a21", "channel": "woocommerce", "error": "401 Unauthorized: Consumer key is invalid."});
}

/// The module's feature key.
pub const MODULE: &str = "module.channels";

pub const CONNECTED: &str = "connected";
pub const THROTTLED: &str = "throttled";
pub const DISCONNECTED: &str = "disconnected";
pub const STATUSES: [&str; 3] = [CONNECTED, THROTTLED, DISCONNECTED];

/// The most units a safety buffer may hold back.
pub const MAX_BUFFER: i64 = 1_000_000_000;

/// `[modules.channels]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// A store must answer within this (1 to 120000 ms).
    pub timeout_ms: u64,
    /// Products pushed to one store per batch (1 to 100); also the batch of
    /// full pushes and reconciles.
    pub push_batch_size: u64,
    /// Every this many seconds each connected store is reconciled (its
    /// quantities read and drift corrected); 0: only on demand.
    pub reconcile_interval_secs: u64,
    /// Pace every call to a store through its credential's token bucket
    /// (`rate_limit` of its channel); `false` lifts every bucket.
    pub rate_limits: bool,
    /// Attempts of a push to one store before its products land in the
    /// dead letters (1 to 100).
    pub push_attempts: i32,
    pub shopify: ShopifySettings,
    pub woocommerce: WooCommerceSettings,
    pub amazon: AmazonSettings,
    pub etsy: EtsySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timeout_ms: 10_000,
            push_batch_size: 50,
            rate_limits: true,
            reconcile_interval_secs: 3600,
            push_attempts: 10,
            shopify: ShopifySettings::default(),
            woocommerce: WooCommerceSettings::default(),
            amazon: AmazonSettings::default(),
            etsy: EtsySettings::default(),
        }
    }
}

impl Settings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// `[modules.channels.shopify]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShopifySettings {
    /// The Admin API version in every URL.
    pub api_version: String,
    pub rate_limit: RatePolicy,
}

impl Default for ShopifySettings {
    fn default() -> Self {
        Self { api_version: "2025-01".to_owned(), rate_limit: RatePolicy { per_second: 2, burst: 40 } }
    }
}

/// `[modules.channels.woocommerce]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WooCommerceSettings {
    pub rate_limit: RatePolicy,
}

impl Default for WooCommerceSettings {
    fn default() -> Self {
        Self { rate_limit: RatePolicy { per_second: 25, burst: 100 } }
    }
}

/// `[modules.channels.amazon]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmazonSettings {
    /// Login with Amazon's token endpoint.
    pub token_url: String,
    pub rate_limit: RatePolicy,
    /// A regular expression the host of an SNS message's `SigningCertURL`
    /// (and of a `SubscribeURL` to confirm) must match.
    pub sns_cert_host: String,
    /// Whether those URLs may be plain http: where base URLs may (development).
    #[serde(skip)]
    pub sns_allow_http: bool,
}

impl Default for AmazonSettings {
    fn default() -> Self {
        Self {
            token_url: "https://api.amazon.com/auth/o2/token".to_owned(),
            rate_limit: RatePolicy { per_second: 1, burst: 10 },
            sns_cert_host: sns::DEFAULT_CERT_HOST.to_owned(),
            sns_allow_http: false,
        }
    }
}

impl AmazonSettings {
    /// `sns_cert_host`, compiled (checked when the module starts).
    pub fn sns_cert_host_pattern(&self) -> Result<regex::Regex, String> {
        regex::Regex::new(&self.sns_cert_host)
            .map_err(|e| format!("`modules.channels.amazon.sns_cert_host`: not a regular expression: {e}"))
    }
}

/// `[modules.channels.etsy]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtsySettings {
    pub rate_limit: RatePolicy,
}

impl Default for EtsySettings {
    fn default() -> Self {
        Self { rate_limit: RatePolicy { per_second: 10, burst: 50 } }
    }
}

/// A store connection as the API shows it: never its credentials.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "ChannelConnection")]
pub struct ConnectionView {
    pub id: Uuid,
    /// `shopify`, `woocommerce`, `amazon` or `etsy`.
    #[schema(example = "shopify")]
    pub channel: String,
    #[schema(example = "EU shop")]
    pub name: String,
    #[schema(example = "https://eu-shop.myshopify.com")]
    pub base_url: String,
    /// The names of the credentials it holds (their values are never shown).
    #[schema(example = json!(["access_token"]))]
    pub credentials: Vec<String>,
    /// Whether inbound webhooks have a secret to be verified with.
    pub webhook_secret_set: bool,
    pub warehouse_id: Uuid,
    /// The store's location (Shopify: `gid://shopify/Location/...`).
    #[schema(example = "gid://shopify/Location/1")]
    pub remote_location_id: Option<String>,
    #[schema(example = "EUR")]
    pub currency: String,
    /// Units held back from the store.
    #[schema(example = 2)]
    pub safety_buffer: i64,
    /// `connected`, `throttled` or `disconnected`.
    #[schema(example = "connected")]
    pub status: String,
    /// The store's last error, in its own words.
    pub last_error: Option<String>,
    pub status_changed_at: DateTime<Utc>,
    /// How fast the channel lets one credential call it.
    pub rate_limit: RatePolicy,
    /// Send it back in `If-Match` to update.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A local product linked to a store's variant.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "ChannelMapping")]
pub struct MappingView {
    pub id: Uuid,
    pub connection_id: Uuid,
    pub product_id: Uuid,
    #[schema(example = "gid://shopify/Product/1001")]
    pub remote_product_id: String,
    #[schema(example = "gid://shopify/ProductVariant/2001")]
    pub remote_variant_id: String,
    pub inventory_item_id: Option<String>,
    #[schema(example = "TSHIRT-RED-M")]
    pub sku: String,
    /// A push to the store is queued.
    pub push_pending: bool,
    /// What was last written to the store.
    #[schema(example = 38)]
    pub last_pushed_quantity: Option<i64>,
    pub last_pushed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<mapping::Model> for MappingView {
    fn from(m: mapping::Model) -> Self {
        Self {
            id: m.id,
            connection_id: m.connection_id,
            product_id: m.product_id,
            remote_product_id: m.remote_product_id,
            remote_variant_id: m.remote_variant_id,
            inventory_item_id: m.inventory_item_id,
            sku: m.sku,
            push_pending: m.dirty,
            last_pushed_quantity: m.last_pushed_quantity,
            last_pushed_at: m.last_pushed_at,
            created_at: m.created_at,
        }
    }
}

/// A catalog import and how far it got.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "ChannelImport")]
pub struct ImportView {
    pub id: Uuid,
    pub connection_id: Uuid,
    /// `pending`, `running`, `succeeded` or `failed`.
    #[schema(example = "running")]
    pub status: String,
    /// Pages of the store read so far.
    pub pages: i64,
    /// Variants the store listed.
    #[schema(example = 12)]
    pub listed: i64,
    /// Mapped to a local product with the same SKU.
    #[schema(example = 10)]
    pub linked: i64,
    /// Mapped to a local product the import created.
    #[schema(example = 2)]
    pub created: i64,
    /// Not mapped: no SKU, or its product or variant is mapped already.
    pub skipped: i64,
    /// Why it failed, or why the last variant was skipped.
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<entity::channel_sync_run::Model> for ImportView {
    fn from(r: entity::channel_sync_run::Model) -> Self {
        Self {
            id: r.id,
            connection_id: r.connection_id,
            status: r.status,
            pages: r.pages,
            listed: r.listed,
            linked: r.linked,
            created: r.created,
            skipped: r.skipped,
            error: r.error,
            started_at: r.started_at,
            finished_at: r.finished_at,
            created_at: r.created_at,
        }
    }
}

/// A full push or a reconcile of a connection and how far it got.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "ChannelSyncRun")]
pub struct SyncRunView {
    pub id: Uuid,
    pub connection_id: Uuid,
    /// `push` (every mapped product's ATP written to the store) or
    /// `reconcile` (the store's quantities read, drift corrected).
    #[schema(example = "push")]
    pub kind: String,
    /// `pending`, `running`, `succeeded` or `failed`.
    #[schema(example = "running")]
    pub status: String,
    /// Mapped products to go through.
    #[schema(example = 120)]
    pub total: i64,
    /// Gone through so far (failed ones included).
    #[schema(example = 50)]
    pub done: i64,
    /// Of those, the ones the store refused or could not say.
    #[schema(example = 0)]
    pub failed: i64,
    /// Reconcile: the ones whose store quantity was not their ATP.
    #[schema(example = 2)]
    pub drifted: i64,
    /// Why it failed, or why the last product failed.
    pub error: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<entity::channel_sync_run::Model> for SyncRunView {
    fn from(r: entity::channel_sync_run::Model) -> Self {
        Self {
            id: r.id,
            connection_id: r.connection_id,
            kind: r.kind,
            status: r.status,
            total: r.total,
            done: r.done,
            failed: r.failed,
            drifted: r.drifted,
            error: r.error,
            started_at: r.started_at,
            finished_at: r.finished_at,
            created_at: r.created_at,
        }
    }
}

/// A product whose store quantity a reconcile run found off its ATP.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "ChannelDrift")]
pub struct DriftView {
    pub id: Uuid,
    pub run_id: Uuid,
    pub product_id: Uuid,
    #[schema(example = "MUG-WHITE")]
    pub sku: String,
    /// What the store showed; `null` when it has no such variant any more.
    #[schema(example = 7)]
    pub remote: Option<i64>,
    /// The ATP it should show (on hand - reserved - buffer).
    #[schema(example = 12)]
    pub expected: i64,
    /// The ATP was written to the store.
    pub corrected: bool,
    /// Why it was not corrected.
    pub detail: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<entity::channel_drift::Model> for DriftView {
    fn from(d: entity::channel_drift::Model) -> Self {
        Self {
            id: d.id,
            run_id: d.run_id,
            product_id: d.product_id,
            sku: d.sku,
            remote: d.remote,
            expected: d.expected,
            corrected: d.corrected,
            detail: d.detail,
            created_at: d.created_at,
        }
    }
}

/// A webhook a store sent, as the log shows it.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "ChannelWebhookReceipt")]
pub struct ReceiptView {
    pub id: Uuid,
    pub connection_id: Uuid,
    #[schema(example = "inventory_levels/update")]
    pub topic: Option<String>,
    /// The store's id of the event.
    pub event_id: Option<String>,
    /// Whether its signature verified (with the connection's webhook
    /// secret; Amazon: with SNS's certificate).
    pub verified: bool,
    /// `applied` (booked as a stock movement), `unchanged`, `unmapped`,
    /// `ignored`, `rejected`, `confirmed` (an SNS subscription), `forged` or
    /// `replayed`.
    #[schema(example = "applied")]
    pub outcome: String,
    pub detail: Option<String>,
    pub duration_ms: i64,
    pub received_at: DateTime<Utc>,
}

impl From<entity::channel_webhook_receipt::Model> for ReceiptView {
    fn from(r: entity::channel_webhook_receipt::Model) -> Self {
        Self {
            id: r.id,
            connection_id: r.connection_id,
            topic: r.topic,
            event_id: r.event_id,
            verified: r.verified,
            outcome: r.outcome,
            detail: r.detail,
            duration_ms: r.duration_ms,
            received_at: r.received_at,
        }
    }
}

/// A push whose retries ran out, kept to be replayed or dismissed.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "ChannelDeadLetter")]
pub struct DeadLetterView {
    pub id: Uuid,
    pub connection_id: Uuid,
    pub product_id: Uuid,
    #[schema(example = "TSHIRT-RED-M")]
    pub sku: String,
    #[schema(example = "gid://shopify/ProductVariant/2001")]
    pub remote_variant_id: String,
    /// The available-to-promise quantity the last attempt meant to write
    /// (a replay pushes the quantity of then instead).
    #[schema(example = 38)]
    pub quantity: i64,
    /// The store's last error, in its own words.
    #[schema(example = "503 Service Unavailable: maintenance")]
    pub last_error: String,
    /// Attempts made before it landed here.
    #[schema(example = 10)]
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
}

impl From<entity::channel_dead_letter::Model> for DeadLetterView {
    fn from(d: entity::channel_dead_letter::Model) -> Self {
        Self {
            id: d.id,
            connection_id: d.connection_id,
            product_id: d.product_id,
            sku: d.sku,
            remote_variant_id: d.remote_variant_id,
            quantity: d.quantity,
            last_error: d.last_error,
            attempts: d.attempts,
            created_at: d.created_at,
        }
    }
}

/// How many dead letters a replay or dismissal of many took.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "ChannelDeadLetterCount")]
pub struct DeadLetterCount {
    /// Dead letters replayed (or dismissed).
    #[schema(example = 3)]
    pub count: u64,
    /// Left in place: their connection is disconnected (a replay only).
    #[schema(example = 0)]
    pub skipped: u64,
}

/// A new connection, as REST and GraphQL give it (checked by the service).
#[derive(Clone, Debug)]
pub struct NewConnection {
    pub channel: String,
    pub name: String,
    pub base_url: String,
    pub credentials: BTreeMap<String, String>,
    pub webhook_secret: Option<String>,
    pub warehouse_id: Uuid,
    pub remote_location_id: Option<String>,
    pub currency: String,
    pub safety_buffer: i64,
}

/// Changes of a connection; `None` keeps the value. New credentials
/// replace the old ones whole and put the connection back to `connected`.
#[derive(Clone, Debug, Default)]
pub struct ConnectionChanges {
    pub name: Option<String>,
    pub base_url: Option<String>,
    pub credentials: Option<BTreeMap<String, String>>,
    pub webhook_secret: Option<String>,
    pub warehouse_id: Option<Uuid>,
    pub remote_location_id: Option<String>,
    pub safety_buffer: Option<i64>,
}

/// Connections: newest first unless sorted otherwise.
pub const CONNECTION_SORTS: Sorts<connection::Column> = Sorts {
    fields: &[("created_at", connection::Column::CreatedAt), ("name", connection::Column::Name)],
    default: "-created_at",
};

/// Mappings: newest first.
pub const MAPPING_SORTS: Sorts<mapping::Column> =
    Sorts { fields: &[("created_at", mapping::Column::CreatedAt)], default: "-created_at" };

/// Webhook receipts: newest first.
pub const RECEIPT_SORTS: Sorts<entity::channel_webhook_receipt::Column> = Sorts {
    fields: &[("received_at", entity::channel_webhook_receipt::Column::ReceivedAt)],
    default: "-received_at",
};

/// Push and reconcile runs: newest first.
pub const SYNC_RUN_SORTS: Sorts<entity::channel_sync_run::Column> =
    Sorts { fields: &[("created_at", entity::channel_sync_run::Column::CreatedAt)], default: "-created_at" };

/// A run's drift: by SKU.
pub const DRIFT_SORTS: Sorts<entity::channel_drift::Column> =
    Sorts { fields: &[("sku", entity::channel_drift::Column::Sku)], default: "sku" };

pub struct ConnectionFilter {
    pub channel: Option<String>,
    pub status: Option<String>,
    pub sort: Sort<connection::Column>,
}

/// Dead letters: oldest first (the order they failed in).
pub const DEAD_LETTER_SORTS: Sorts<entity::channel_dead_letter::Column> = Sorts {
    fields: &[("created_at", entity::channel_dead_letter::Column::CreatedAt)],
    default: "created_at",
};

pub struct DeadLetterFilter {
    pub connection_id: Option<Uuid>,
    pub sort: Sort<entity::channel_dead_letter::Column>,
}

pub struct MappingFilter {
    pub connection_id: Option<Uuid>,
    pub product_id: Option<Uuid>,
    pub sort: Sort<mapping::Column>,
}

/// Everything the routes, GraphQL and the sync jobs may do with channels.
#[async_trait::async_trait]
pub trait ChannelService: Send + Sync {
    /// The channels of this build.
    fn channels(&self) -> Vec<&'static str>;
    /// 422 naming the field for anything invalid (an unknown channel or
    /// warehouse, missing credentials, a URL the SSRF guard refuses); 409
    /// when the name is taken.
    async fn create_connection(&self, tenant: TenantScope, new: NewConnection) -> ApiResult<ConnectionView>;
    async fn list_connections(
        &self,
        tenant: TenantScope,
        filter: ConnectionFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<ConnectionView>>;
    async fn get_connection(&self, tenant: TenantScope, id: Uuid) -> ApiResult<ConnectionView>;
    /// 412 when `if_match` is not the current version.
    async fn update_connection(
        &self,
        tenant: TenantScope,
        id: Uuid,
        if_match: Option<i32>,
        changes: ConnectionChanges,
    ) -> ApiResult<ConnectionView>;
    /// With its mappings and imports.
    async fn delete_connection(&self, tenant: TenantScope, id: Uuid) -> ApiResult<()>;
    /// One product as the store has it now, normalised: 404 when the store
    /// has no such product, 409 when it refuses the credentials (the
    /// connection is then disconnected), 503 when it is down or throttling.
    async fn remote_product(
        &self,
        tenant: TenantScope,
        id: Uuid,
        remote_id: &str,
    ) -> ApiResult<RemoteProduct>;
    /// Queue a catalog import of the connection.
    async fn start_import(&self, tenant: TenantScope, id: Uuid) -> ApiResult<ImportView>;
    async fn get_import(&self, tenant: TenantScope, id: Uuid, run_id: Uuid) -> ApiResult<ImportView>;
    /// Queue a full push of the connection: the ATP of every mapped product
    /// written to the store in batches (409 when it is disconnected).
    async fn start_sync(&self, tenant: TenantScope, id: Uuid) -> ApiResult<SyncRunView>;
    /// Queue a reconcile of the connection: the store's quantity of every
    /// mapped product read, compared with its ATP, and drift corrected (409
    /// when it is disconnected).
    async fn start_reconcile(&self, tenant: TenantScope, id: Uuid) -> ApiResult<SyncRunView>;
    /// The connection's push and reconcile runs, newest first.
    async fn list_sync_runs(
        &self,
        tenant: TenantScope,
        id: Uuid,
        list: &ListRequest,
    ) -> ApiResult<Paged<SyncRunView>>;
    async fn get_sync_run(&self, tenant: TenantScope, id: Uuid, run_id: Uuid) -> ApiResult<SyncRunView>;
    /// The drift a reconcile run found, by SKU.
    async fn list_drifts(
        &self,
        tenant: TenantScope,
        id: Uuid,
        run_id: Uuid,
        list: &ListRequest,
    ) -> ApiResult<Paged<DriftView>>;
    async fn list_mappings(
        &self,
        tenant: TenantScope,
        filter: MappingFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<MappingView>>;
    /// Queue a push of the product's ATP to the store (404 when the
    /// product is not mapped on the connection).
    async fn push_product(&self, tenant: TenantScope, id: Uuid, product_id: Uuid) -> ApiResult<MappingView>;
    /// Pushes whose retries ran out, of one connection or all.
    async fn list_dead_letters(
        &self,
        tenant: TenantScope,
        filter: DeadLetterFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<DeadLetterView>>;
    /// Push the product of a dead letter again, with its ATP of now, and
    /// drop the letter (409 when its connection is disconnected).
    async fn replay_dead_letter(&self, tenant: TenantScope, id: Uuid) -> ApiResult<MappingView>;
    /// Replay every dead letter of a connection, or of the tenant; those of
    /// disconnected connections stay.
    async fn replay_dead_letters(
        &self,
        tenant: TenantScope,
        connection_id: Option<Uuid>,
    ) -> ApiResult<DeadLetterCount>;
    /// Drop a dead letter without pushing.
    async fn dismiss_dead_letter(&self, tenant: TenantScope, id: Uuid) -> ApiResult<()>;
    /// Drop every dead letter of a connection, or of the tenant.
    async fn dismiss_dead_letters(
        &self,
        tenant: TenantScope,
        connection_id: Option<Uuid>,
    ) -> ApiResult<DeadLetterCount>;
    /// The tenant holding connection `id` (404 when none does), for a
    /// store's webhook to be governed as the tenant's requests are.
    async fn webhook_tenant(&self, id: Uuid) -> ApiResult<Uuid>;
    /// A store's webhook to connection `id` (whichever tenant holds it):
    /// verified before anything else (401 `unauthenticated` when forged
    /// or replayed), logged whatever happens; a stock change of a mapped
    /// variant becomes a stock movement, an SNS subscription is confirmed.
    async fn receive_webhook(
        &self,
        id: Uuid,
        headers: driver::Headers,
        body: &[u8],
    ) -> ApiResult<ReceiptView>;
    /// The webhooks a connection received, newest first.
    async fn list_receipts(
        &self,
        tenant: TenantScope,
        id: Uuid,
        sort: Sort<entity::channel_webhook_receipt::Column>,
        list: &ListRequest,
    ) -> ApiResult<Paged<ReceiptView>>;
}

/// The channels module: its service, jobs, listener and how it plugs in.
pub struct Channels {
    service: Arc<service::SeaOrmChannels>,
}

impl Channels {
    pub fn new(setup: &Setup, inventory: Arc<dyn InventoryService>) -> anyhow::Result<Self> {
        let mut settings: Settings = setup.config("channels")?;
        anyhow::ensure!(
            (1..=120_000).contains(&settings.timeout_ms),
            "`modules.channels.timeout_ms`: must be between 1 and 120000"
        );
        anyhow::ensure!(
            (1..=100).contains(&settings.push_batch_size),
            "`modules.channels.push_batch_size`: must be between 1 and 100"
        );
        anyhow::ensure!(
            (1..=100).contains(&settings.push_attempts),
            "`modules.channels.push_attempts`: must be between 1 and 100"
        );
        settings.amazon.sns_cert_host_pattern().map_err(anyhow::Error::msg)?;
        let http = crate::platform::webhooks::delivery::client(setup.config)?;
        let policy = setup.config.url_policy().map_err(anyhow::Error::msg)?;
        settings.amazon.sns_allow_http = policy.allow_http;
        let cipher = crate::platform::crypto::Cipher::from_base64_key(setup.config.encryption_key.expose())?;
        let drivers = driver::drivers(&http, &settings);
        let service = service::SeaOrmChannels::new(
            setup.db.clone(),
            inventory,
            drivers,
            cipher,
            policy,
            &settings,
            setup.limiter.clone(),
        );
        Ok(Self { service: Arc::new(service) })
    }

    /// What other modules are given.
    pub fn service(&self) -> Arc<dyn ChannelService> {
        self.service.clone()
    }
}

#[async_trait::async_trait]
impl Module for Channels {
    fn name(&self) -> &'static str {
        "channels"
    }

    fn feature(&self) -> Option<Feature> {
        Some(Feature {
            key: MODULE,
            description: "Sales channel stores (Shopify, WooCommerce, Amazon, Etsy) kept in step with available-to-promise stock",
            default: true,
            tier: "professional",
        })
    }

    fn tags(&self) -> &'static [(&'static str, &'static str)] {
        &[("channels", "Sales channel connections, mappings, imports and stock pushes (module.channels)")]
    }

    fn routes(&self, cfg: &mut ServiceConfig) {
        cfg.app_data(web::Data::from(self.service()));
        routes::routes(cfg);
    }

    fn graphql_data(&self, data: &mut async_graphql::Data, _tenant: Option<TenantScope>) {
        data.insert(self.service());
    }

    fn grants(&self) -> &'static [Grant] {
        GRANTS
    }

    fn event_types(&self) -> &'static [&'static EventType] {
        EVENTS
    }

    fn jobs(&self) -> Vec<(&'static str, Arc<dyn JobHandler>)> {
        service::handlers(&self.service)
    }

    fn listeners(&self) -> Vec<Arc<dyn Listener>> {
        vec![Arc::new(service::StockChanged(self.service.clone()))]
    }

    /// Queue the next scheduled reconcile (once, whoever asks), unless off.
    async fn start(&self, state: &crate::platform::state::AppState) -> anyhow::Result<()> {
        self.service.schedule_reconcile(&state.db, Utc::now()).await?;
        Ok(())
    }
}
