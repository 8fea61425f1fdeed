//! CSV import of orders: the seed's columns, several rows per order
//! (consecutive rows with the same `external_order_id` form one order).
//!
//! The file is streamed: a blocking thread reads it record by record with
//! the `csv` crate and hands each record over a small bounded channel, so
//! memory stays flat whatever the size. The header is checked first (a
//! wrong one changes nothing); then each bad row is reported with its line
//! and column and the rest of the file goes on. An order with a bad row is
//! not imported. Customers are upserted by external id (or email), products
//! by SKU through [`InventoryService`](crate::modules::inventory::InventoryService);
//! an order whose `external_order_id` exists is skipped, so importing a file
//! twice creates nothing new. Each order is written as
//! `POST /api/v1/orders` writes one (totals computed by the server, its
//! history, `order.created` and its saga's first step), but up to
//! [`BATCH_ORDERS`] orders at a time, in one transaction with a multi-row
//! `INSERT` per table.
//!
//! `POST /api/v1/orders/imports` stores the upload in the database in
//! chunks (`order_import_chunks`), so the `orders.import` job can run on
//! any worker of any instance; the chunks are deleted when it ends.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io::{self, Read},
    sync::Arc,
};

use actix_web::web::Bytes;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use futures_util::{StreamExt, stream::BoxStream};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::{sync::mpsc, task::JoinHandle};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    MAX_LINES, NewOrder, NewOrderLine, check_order,
    notify::Notifiers,
    service::{IMPORT_JOB, Priced, SWEEP_JOB, SeaOrmOrders, insert_orders},
};
use crate::{
    error::{ApiError, ApiResult, Code, FieldError},
    modules::inventory::{NewProduct, ProductFilter, check_quantity},
    platform::{
        db::{insert_all, one_of},
        http::ListRequest,
        jobs::{self, NewJob},
        tenancy::TenantScope,
        validate,
    },
};
use entity::{customer, order, order_import as import, order_import_chunk as chunk};

/// The header an import file starts with, exactly.
pub const COLUMNS: [&str; 10] = [
    "external_order_id",
    "order_placed_at",
    "currency",
    "customer_id",
    "customer_email",
    "customer_name",
    "product_sku",
    "product_name",
    "unit_price_cents",
    "qty",
];

/// Bad rows kept with an import (all are counted).
pub const MAX_ERRORS: usize = 100;
/// The pieces an upload is stored in.
const CHUNK_BYTES: usize = 256 * 1024;
/// Progress is recorded every this many rows.
const REPORT_EVERY: u64 = 500;
/// Products (by SKU) and customers remembered during an import, each
/// forgotten when this many, to stay flat.
const MAX_CACHED: usize = 50_000;
/// The most orders, and lines, one transaction of an import writes.
const BATCH_ORDERS: usize = 500;
const BATCH_LINES: usize = 2_000;
/// Batches written at once on PostgreSQL, while the next is read (see
/// [`Writes`]). SQLite has one writer and gains nothing from it (measured),
/// so there each batch is written before the next is read, as before.
const PG_WRITERS: usize = 2;
/// Tries of a batch that collides with another writer's (see [`Writer::write`]).
const MAX_WRITE_ATTEMPTS: u32 = 5;

/// Import states.
pub const UPLOADING: &str = "uploading";
pub const QUEUED: &str = "queued";
pub const RUNNING: &str = "running";
pub const DONE: &str = "completed";
pub const IMPORT_FAILED: &str = "failed";

/// ISO 4217 codes in use.
const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BHD",
    "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF", "CLP", "CNY",
    "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP",
    "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR",
    "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT",
    "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR",
    "MVR", "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD",
    "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY",
    "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG",
    "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// A bad row: where, and what is wrong.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, async_graphql::SimpleObject, PartialEq, Eq)]
#[graphql(name = "OrderImportError")]
pub struct RowError {
    /// The line of the file (the header is line 1).
    #[schema(example = 7)]
    pub line: u64,
    /// The column's name; `null` when the whole row is concerned.
    #[schema(example = "qty")]
    pub column: Option<String>,
    #[schema(example = "must be at least 1")]
    pub message: String,
}

/// What an import did so far.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Data rows read.
    pub rows: u64,
    pub created: u64,
    pub skipped: u64,
    pub error_count: u64,
    /// The first [`MAX_ERRORS`] errors.
    pub errors: Vec<RowError>,
}

impl Tally {
    fn error(&mut self, line: u64, column: Option<&str>, message: impl Into<String>) {
        self.error_count += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(RowError { line, column: column.map(str::to_owned), message: message.into() });
        }
    }
}

/// Told how an import goes, every [`REPORT_EVERY`] rows and at the end.
#[async_trait::async_trait]
pub trait Progress: Send {
    async fn report(&mut self, tally: &Tally) -> ApiResult<()>;
}

/// An import as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "OrderImport")]
pub struct ImportView {
    pub id: Uuid,
    /// `uploading`, `queued`, `running`, `completed` or `failed`.
    #[schema(example = "completed")]
    pub status: String,
    #[schema(example = "orders.csv")]
    pub filename: String,
    pub warehouse_id: Uuid,
    /// Whether each imported order's customer is told it was placed (its
    /// `placed` notifications); off unless asked for.
    pub send_receipts: bool,
    pub size_bytes: i64,
    /// Data rows read so far.
    pub rows_done: i64,
    /// Orders created.
    pub created: i64,
    /// Orders whose `external_order_id` existed already.
    pub skipped: i64,
    /// Bad rows (each counted; `errors` holds the first 100).
    pub error_count: i64,
    pub errors: Vec<RowError>,
    /// Why the import failed as a whole (a wrong header).
    pub failure_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<import::Model> for ImportView {
    type Error = ApiError;

    fn try_from(m: import::Model) -> ApiResult<Self> {
        let errors = serde_json::from_value(m.errors).map_err(ApiError::internal)?;
        Ok(Self {
            id: m.id,
            status: m.status,
            filename: m.filename,
            warehouse_id: m.warehouse_id,
            send_receipts: m.send_receipts,
            size_bytes: m.size_bytes,
            rows_done: m.rows_done,
            created: m.created,
            skipped: m.skipped,
            error_count: m.error_count,
            errors,
            failure_reason: m.failure_reason,
            created_at: m.created_at,
            updated_at: m.updated_at,
            finished_at: m.finished_at,
        })
    }
}

/// Imports: newest first.
pub const IMPORT_SORTS: crate::platform::http::Sorts<import::Column> = crate::platform::http::Sorts {
    fields: &[("created_at", import::Column::CreatedAt)],
    default: "-created_at",
};

fn header_error(message: impl Into<String>) -> ApiError {
    ApiError::validation(vec![FieldError::new("file", message)])
}

/// The header must be the seed's columns, in order.
fn check_header(record: &csv::ByteRecord) -> ApiResult<()> {
    let found: Vec<String> = record
        .iter()
        .map(|f| String::from_utf8_lossy(f).trim().trim_start_matches('\u{feff}').to_owned())
        .collect();
    if found == COLUMNS {
        Ok(())
    } else {
        Err(header_error(format!("the header must be `{}`, found `{}`", COLUMNS.join(","), found.join(","))))
    }
}

/// A data row, checked.
#[derive(Debug)]
struct Row {
    line: u64,
    external_order_id: String,
    placed_at: DateTime<Utc>,
    currency: String,
    customer_id: Option<String>,
    email: String,
    name: String,
    sku: String,
    product_name: Option<String>,
    unit_price: i64,
    qty: i64,
}

/// RFC 3339, or a date and time (`2026-11-28 14:05:00`) or a date, in UTC.
fn parse_time(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(value, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Check a record; every bad field is reported.
fn parse_row(line: u64, record: &csv::ByteRecord) -> Result<Row, Vec<RowError>> {
    let error = |column: &str, message: &str| RowError {
        line,
        column: Some(column.to_owned()),
        message: message.to_owned(),
    };
    if record.len() != COLUMNS.len() {
        let message = format!("expected {} fields, found {}", COLUMNS.len(), record.len());
        return Err(vec![RowError { line, column: None, message }]);
    }
    let mut errors = Vec::new();
    let mut fields = Vec::with_capacity(COLUMNS.len());
    for (column, raw) in COLUMNS.iter().zip(record.iter()) {
        match std::str::from_utf8(raw) {
            Ok(text) if text.contains('\0') => errors.push(error(column, "contains a NUL byte")),
            Ok(text) => match validate::plain_text(text, 500) {
                Ok(()) => {}
                Err(message) => errors.push(error(column, &message)),
            },
            Err(_) => errors.push(error(column, "is not valid UTF-8")),
        }
        fields.push(String::from_utf8_lossy(raw).trim().to_owned());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let [external_order_id, placed_at, currency, customer_id, email, name, sku, product_name, price, qty] =
        <[String; 10]>::try_from(fields)
            .map_err(|_| vec![RowError { line, column: None, message: "bad row".into() }])?;
    let mut check = |column: &str, result: Result<(), String>| {
        if let Err(message) = result {
            errors.push(error(column, &message));
        }
    };
    check("external_order_id", super::identifier(&external_order_id, 200));
    let placed_at = parse_time(&placed_at);
    if placed_at.is_none() {
        check("order_placed_at", Err("is not a date and time (RFC 3339, e.g. 2026-11-28T14:05:00Z)".into()));
    }
    if !CURRENCIES.contains(&currency.as_str()) {
        check("currency", Err("is not a known ISO 4217 currency code (e.g. EUR)".into()));
    }
    if !customer_id.is_empty() {
        check("customer_id", super::identifier(&customer_id, 200));
    }
    check("customer_email", validate::email(&email));
    if !name.is_empty() {
        check("customer_name", validate::name(&name));
    }
    check("product_sku", super::identifier(&sku, 100));
    if !product_name.is_empty() {
        check("product_name", validate::name(&product_name));
    }
    let unit_price = match price.parse::<i64>() {
        Ok(p) if p >= 0 => Some(p),
        _ => {
            check("unit_price_cents", Err("must be a whole number of cents, not negative".into()));
            None
        }
    };
    let quantity = match qty.parse::<i64>() {
        Ok(q) => {
            check("qty", check_quantity(q));
            Some(q)
        }
        Err(_) => {
            check("qty", Err("must be a whole number".into()));
            None
        }
    };
    match (placed_at, unit_price, quantity) {
        (Some(placed_at), Some(unit_price), Some(qty)) if errors.is_empty() => Ok(Row {
            line,
            external_order_id,
            placed_at,
            currency,
            customer_id: Some(customer_id).filter(|c| !c.is_empty()),
            name: if name.is_empty() { email.clone() } else { name },
            email,
            sku,
            product_name: Some(product_name).filter(|n| !n.is_empty()),
            unit_price,
            qty,
        }),
        _ => Err(errors),
    }
}

/// What the reading thread hands over.
enum Item {
    /// A record and its line.
    Record(u64, csv::ByteRecord),
    /// A record the CSV reader could not read (bad quoting): reported, and
    /// reading goes on.
    Bad(u64, String),
    /// The source failed (a read error): the import stops.
    Failed(String),
}

/// Read `source` as CSV on a blocking thread, a record at a time.
fn spawn_reader(source: Box<dyn Read + Send>) -> mpsc::Receiver<Item> {
    let (tx, rx) = mpsc::channel(256);
    tokio::task::spawn_blocking(move || {
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(source);
        let mut record = csv::ByteRecord::new();
        loop {
            let item = match reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => Item::Record(record.position().map_or(0, |p| p.line()), record.clone()),
                Err(err) => {
                    let line = err.position().map_or(0, |p| p.line());
                    match err.kind() {
                        csv::ErrorKind::Io(e) => Item::Failed(e.to_string()),
                        _ => Item::Bad(line, err.to_string()),
                    }
                }
            };
            let stop = matches!(item, Item::Failed(_));
            if tx.blocking_send(item).is_err() || stop {
                break;
            }
        }
    });
    rx
}

/// What an import has looked up, kept across batches (each map cleared
/// when it holds [`MAX_CACHED`] entries).
#[derive(Default)]
struct Known {
    /// By SKU: the product's id and whether it is active.
    products: HashMap<String, (Uuid, bool)>,
    /// Shared with the writes in flight, which only read it.
    customers: Arc<Customers>,
}

/// How the file names a customer: by its `customer_id` (the external id),
/// else by its email. Ordered: new customers are inserted in this order.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum CustomerKey {
    External(String),
    Email(String),
}

impl CustomerKey {
    fn of(row: &Row) -> Self {
        match &row.customer_id {
            Some(external) => Self::External(external.clone()),
            None => Self::Email(row.email.clone()),
        }
    }
}

/// An order of the file, checked and priced; its customer is found or
/// made when its batch is written.
struct Pending {
    external_order_id: String,
    customer: CustomerKey,
    email: String,
    name: String,
    priced: Priced,
}

/// Orders written together, in one transaction with multi-row `INSERT`s:
/// at most [`BATCH_ORDERS`] orders or [`BATCH_LINES`] lines.
#[derive(Default)]
struct Batch {
    orders: Vec<Pending>,
    lines: usize,
}

impl Batch {
    fn push(&mut self, order: Pending) {
        self.lines += order.priced.new.lines.len();
        self.orders.push(order);
    }

    fn is_full(&self) -> bool {
        self.orders.len() >= BATCH_ORDERS || self.lines >= BATCH_LINES
    }
}

/// The rows of the order being read.
#[derive(Default)]
struct Group {
    key: Option<String>,
    rows: Vec<Row>,
    /// A row of it was bad: the order is not imported.
    bad: bool,
}

/// Where an import's orders go, and whether their customers hear of them.
#[derive(Clone, Copy, Debug)]
pub struct ImportTo {
    /// Where the orders' stock is reserved and shipped from.
    pub warehouse_id: Uuid,
    /// Write each order's `placed` notifications, as `POST /orders` does.
    /// Off by default: a shop export's orders were placed, and their
    /// customers told, elsewhere (Shopify's `send_receipt` is off for
    /// imported orders too). The saga's later ones are written either way.
    pub send_receipts: bool,
}

/// What writes an import's batches: cheap to clone into a task.
#[derive(Clone)]
struct Writer {
    db: DatabaseConnection,
    /// The `placed` notifications' senders, when receipts are sent.
    receipts: Option<Arc<Notifiers>>,
    /// Held by a writer while it looks its customers up and inserts the new
    /// ones: customers named by email have no unique key to collide on, so
    /// two writers must not both find one missing and create it.
    customer_lock: Arc<tokio::sync::Mutex<()>>,
}

/// What a batch's write made.
struct Written {
    created: u64,
    skipped: u64,
    /// The customers of its orders, found or made.
    customers: Customers,
}

type Customers = HashMap<CustomerKey, Uuid>;

impl Writer {
    /// Write a batch: the new customers its orders need first, committed
    /// one writer at a time (in key order, so that another import waits
    /// instead of deadlocking), then in one transaction its orders whose
    /// `external_order_id` is new (the others are skipped). Another import
    /// creating the same orders or customers by external id meanwhile makes
    /// a transaction fail on a unique key: it is then tried again, seeing
    /// them.
    async fn write(self, tenant: TenantScope, batch: Batch, mut known: Arc<Customers>) -> ApiResult<Written> {
        let mut attempt = 1;
        loop {
            match self.try_write(tenant, &batch, &known).await {
                Ok(written) => return Ok(written),
                Err(err) if err.code == Code::Conflict && attempt < MAX_WRITE_ATTEMPTS => {
                    known = Arc::default();
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// One attempt of [`Self::write`].
    async fn try_write(&self, tenant: TenantScope, batch: &Batch, known: &Customers) -> ApiResult<Written> {
        let ids: Vec<String> = batch.orders.iter().map(|o| o.external_order_id.clone()).collect();
        let backend = self.db.get_database_backend();
        let existing: HashSet<String> = tenant
            .find::<order::Entity>()
            .select_only()
            .column(order::Column::ExternalOrderId)
            .filter(one_of(backend, order::Column::ExternalOrderId, ids))
            .into_tuple::<Option<String>>()
            .all(&self.db)
            .await?
            .into_iter()
            .flatten()
            .collect();
        let mut seen = HashSet::new();
        let fresh: Vec<&Pending> = batch
            .orders
            .iter()
            .filter(|o| !existing.contains(&o.external_order_id) && seen.insert(&o.external_order_id))
            .collect();
        let skipped = (batch.orders.len() - fresh.len()) as u64;
        let customers = {
            let _one_at_a_time = self.customer_lock.lock().await;
            let (customers, new_customers) = self.customers(tenant, &fresh, known).await?;
            if !new_customers.is_empty() {
                let txn = crate::platform::db::begin(&self.db).await?;
                insert_all(&txn, new_customers).await?;
                sea_orm::TransactionSession::commit(txn).await?;
            }
            customers
        };
        let mut priced = Vec::with_capacity(fresh.len());
        for order in &fresh {
            let mut p = order.priced.clone();
            p.new.customer_id = customers[&order.customer];
            priced.push(p);
        }
        let created = priced.len() as u64;
        let txn = crate::platform::db::begin(&self.db).await?;
        insert_orders(&txn, tenant, self.receipts.as_deref(), priced).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(Written { created, skipped, customers })
    }

    /// The customer of each order: known, found by external id (or by
    /// email when the file gives none), or new (returned to be inserted,
    /// in [`CustomerKey`] order).
    async fn customers(
        &self,
        tenant: TenantScope,
        orders: &[&Pending],
        known: &Customers,
    ) -> ApiResult<(Customers, Vec<customer::ActiveModel>)> {
        let mut found = HashMap::new();
        let (mut externals, mut emails) = (HashSet::new(), HashSet::new());
        for o in orders {
            match known.get(&o.customer) {
                Some(id) => {
                    found.insert(o.customer.clone(), *id);
                }
                None => match &o.customer {
                    CustomerKey::External(id) => _ = externals.insert(id.clone()),
                    CustomerKey::Email(email) => _ = emails.insert(email.clone()),
                },
            }
        }
        let backend = self.db.get_database_backend();
        if !externals.is_empty() {
            let rows = tenant
                .find::<customer::Entity>()
                .filter(one_of(backend, customer::Column::ExternalId, externals.into_iter().collect()))
                .all(&self.db)
                .await?;
            for c in rows {
                if let Some(external) = c.external_id {
                    found.insert(CustomerKey::External(external), c.id);
                }
            }
        }
        if !emails.is_empty() {
            let rows = tenant
                .find::<customer::Entity>()
                .filter(one_of(backend, customer::Column::Email, emails.into_iter().collect()))
                .order_by_asc(customer::Column::CreatedAt)
                .all(&self.db)
                .await?;
            for c in rows {
                found.entry(CustomerKey::Email(c.email)).or_insert(c.id);
            }
        }
        let now = Utc::now();
        let mut new = Vec::new();
        for o in orders {
            if found.contains_key(&o.customer) {
                continue;
            }
            let id = Uuid::now_v7();
            found.insert(o.customer.clone(), id);
            new.push((
                &o.customer,
                customer::ActiveModel {
                    id: Set(id),
                    tenant_id: Set(tenant.id()),
                    external_id: Set(match &o.customer {
                        CustomerKey::External(external) => Some(external.clone()),
                        CustomerKey::Email(_) => None,
                    }),
                    email: Set(o.email.clone()),
                    name: Set(o.name.clone()),
                    notify_email: Set(true),
                    notify_webhook: Set(true),
                    created_at: Set(now),
                    updated_at: Set(now),
                },
            ));
        }
        new.sort_by(|a, b| a.0.cmp(b.0));
        Ok((found, new.into_iter().map(|(_, row)| row).collect()))
    }
}

/// The batches being written while the file is read on, each in its own
/// task and transaction: on PostgreSQL up to [`PG_WRITERS`] at once, on as
/// many connections, while the next batch is read and priced.
struct Writes {
    writer: Writer,
    tenant: TenantScope,
    running: VecDeque<JoinHandle<ApiResult<Written>>>,
    at_once: usize,
}

impl Writes {
    fn new(writer: Writer, tenant: TenantScope) -> Self {
        let at_once = match writer.db.get_database_backend() {
            DbBackend::Postgres => PG_WRITERS,
            _ => 0,
        };
        Self { writer, tenant, running: VecDeque::new(), at_once }
    }

    /// Start writing `batch`; return when no more writes run than may go
    /// on while the next batch is read.
    async fn start(&mut self, batch: Batch, known: &mut Known, tally: &mut Tally) -> ApiResult<()> {
        if !batch.orders.is_empty() {
            let write = self.writer.clone().write(self.tenant, batch, known.customers.clone());
            self.running.push_back(crate::platform::db::spawn_counted(write));
        }
        while self.running.len() > self.at_once {
            self.wait_oldest(known, tally).await?;
        }
        Ok(())
    }

    /// Wait for every write started.
    async fn finish(&mut self, known: &mut Known, tally: &mut Tally) -> ApiResult<()> {
        while !self.running.is_empty() {
            self.wait_oldest(known, tally).await?;
        }
        Ok(())
    }

    async fn wait_oldest(&mut self, known: &mut Known, tally: &mut Tally) -> ApiResult<()> {
        let Some(write) = self.running.pop_front() else { return Ok(()) };
        let written =
            write.await.map_err(|e| ApiError::internal(anyhow::anyhow!("an import write: {e}")))??;
        tally.created += written.created;
        tally.skipped += written.skipped;
        let customers = Arc::make_mut(&mut known.customers);
        if customers.len() + written.customers.len() > MAX_CACHED {
            customers.clear();
        }
        customers.extend(written.customers);
        Ok(())
    }
}

impl Drop for Writes {
    /// An import that stops on an error stops its other writes too.
    fn drop(&mut self) {
        self.running.iter().for_each(JoinHandle::abort);
    }
}

impl SeaOrmOrders {
    /// Import the CSV `source` as orders of `to.warehouse_id`. A wrong header
    /// is a `validation_failed` naming `file`, and nothing changes; each bad
    /// row is counted and reported in the tally, and the rest goes on.
    pub async fn import_csv(
        &self,
        tenant: TenantScope,
        to: ImportTo,
        source: Box<dyn Read + Send>,
        progress: &mut dyn Progress,
    ) -> ApiResult<Tally> {
        let mut items = spawn_reader(source);
        match items.recv().await {
            Some(Item::Record(_, header)) => check_header(&header)?,
            Some(Item::Bad(_, message)) => {
                return Err(header_error(format!("the header cannot be read: {message}")));
            }
            Some(Item::Failed(message)) => return Err(ApiError::internal(anyhow::anyhow!("{message}"))),
            None => return Err(header_error("the file is empty")),
        }
        let mut tally = Tally::default();
        let mut group = Group::default();
        let mut batch = Batch::default();
        let mut known = Known::default();
        let mut writes = Writes::new(
            Writer {
                db: self.db.clone(),
                receipts: to.send_receipts.then(|| self.notifiers.clone()),
                customer_lock: Arc::default(),
            },
            tenant,
        );
        while let Some(item) = items.recv().await {
            match item {
                Item::Record(line, record) => {
                    tally.rows += 1;
                    let key = record.get(0).map(|k| String::from_utf8_lossy(k).trim().to_owned());
                    if key != group.key {
                        let done = std::mem::replace(&mut group, Group { key, ..Group::default() });
                        if let Some(order) =
                            self.prepare(tenant, to.warehouse_id, done, &mut known, &mut tally).await?
                        {
                            batch.push(order);
                        }
                        if batch.is_full() {
                            writes.start(std::mem::take(&mut batch), &mut known, &mut tally).await?;
                        }
                    }
                    match parse_row(line, &record) {
                        Ok(row) => add(&mut group, row, &mut tally),
                        Err(errors) => {
                            group.bad = true;
                            for e in errors {
                                tally.error(e.line, e.column.as_deref(), e.message);
                            }
                        }
                    }
                }
                Item::Bad(line, message) => {
                    tally.rows += 1;
                    group.bad = true;
                    tally.error(line, None, message);
                }
                Item::Failed(message) => {
                    return Err(ApiError::internal(anyhow::anyhow!("reading the file: {message}")));
                }
            }
            if tally.rows.is_multiple_of(REPORT_EVERY) {
                progress.report(&tally).await?;
            }
        }
        if let Some(order) = self.prepare(tenant, to.warehouse_id, group, &mut known, &mut tally).await? {
            batch.push(order);
        }
        writes.start(batch, &mut known, &mut tally).await?;
        writes.finish(&mut known, &mut tally).await?;
        progress.report(&tally).await?;
        Ok(tally)
    }

    /// The order a group of rows makes, priced, unless a row was bad or a
    /// product cannot be found or made (reported in the tally).
    async fn prepare(
        &self,
        tenant: TenantScope,
        warehouse_id: Uuid,
        group: Group,
        known: &mut Known,
        tally: &mut Tally,
    ) -> ApiResult<Option<Pending>> {
        let Some(first) = group.rows.first() else { return Ok(None) };
        if group.bad {
            return Ok(None);
        }
        let mut lines = Vec::with_capacity(group.rows.len());
        let mut products = Vec::with_capacity(group.rows.len());
        for row in &group.rows {
            match self.product_for(tenant, row, &mut known.products).await {
                Ok((id, sku)) => {
                    lines.push(NewOrderLine {
                        product_id: Some(id),
                        sku: None,
                        quantity: row.qty,
                        unit_price: row.unit_price,
                    });
                    products.push((id, sku));
                }
                Err(err) if is_final(&err) => {
                    tally.error(row.line, Some("product_sku"), describe(&err));
                    return Ok(None);
                }
                Err(err) => return Err(err),
            }
        }
        let new = NewOrder {
            external_order_id: Some(first.external_order_id.clone()),
            placed_at: Some(first.placed_at),
            channel: "import".to_owned(),
            // Set when the batch is written, see `Batch`.
            customer_id: Uuid::nil(),
            warehouse_id,
            currency: first.currency.clone(),
            lines,
        };
        let priced =
            check_order(&new).map_err(ApiError::validation).and_then(|()| Priced::new(new, products));
        match priced {
            Ok(priced) => Ok(Some(Pending {
                external_order_id: first.external_order_id.clone(),
                customer: CustomerKey::of(first),
                email: first.email.clone(),
                name: first.name.clone(),
                priced,
            })),
            Err(err) => {
                tally.error(first.line, None, describe(&err));
                Ok(None)
            }
        }
    }

    /// The product of a row's SKU (its id and SKU), created from
    /// `product_name` when there is none; an inactive one is refused.
    async fn product_for(
        &self,
        tenant: TenantScope,
        row: &Row,
        cache: &mut HashMap<String, (Uuid, bool)>,
    ) -> ApiResult<(Uuid, String)> {
        let (id, active) = match cache.get(&row.sku) {
            Some(found) => *found,
            None => {
                let found = self.find_or_create_product(tenant, row).await?;
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
                cache.insert(row.sku.clone(), found);
                found
            }
        };
        if !active {
            return Err(ApiError::new(Code::Conflict, "the product is inactive"));
        }
        Ok((id, row.sku.clone()))
    }

    async fn find_or_create_product(&self, tenant: TenantScope, row: &Row) -> ApiResult<(Uuid, bool)> {
        if let Some(found) = self.product_by_sku(tenant, &row.sku).await? {
            return Ok(found);
        }
        let Some(name) = &row.product_name else {
            return Err(ApiError::new(
                Code::NotFound,
                "no product has this SKU, and the row has no product_name to create it",
            ));
        };
        let new = NewProduct {
            sku: row.sku.clone(),
            name: name.clone(),
            barcode: None,
            unit_price: row.unit_price,
            currency: row.currency.clone(),
            attributes: json!({}),
            active: true,
        };
        match self.inventory.create_product(tenant, new).await {
            Ok(p) => Ok((p.id, p.active)),
            // Created meanwhile: that one.
            Err(err) if err.code == Code::Conflict => self
                .product_by_sku(tenant, &row.sku)
                .await?
                .ok_or_else(|| ApiError::new(Code::Conflict, "the SKU is taken and not found")),
            Err(err) => Err(err),
        }
    }

    /// The product with this SKU: its id and whether it is active.
    async fn product_by_sku(&self, tenant: TenantScope, sku: &str) -> ApiResult<Option<(Uuid, bool)>> {
        let filter = ProductFilter::by_sku(sku)?;
        let list = ListRequest::new(Some(1), &[], None, None)?;
        Ok(self.inventory.list_products(tenant, filter, &list).await?.data.pop().map(|p| (p.id, p.active)))
    }

    /// The `orders.import` job: read the stored upload, record the outcome,
    /// drop the chunks. A run that stops half-way (a crash, a database
    /// error) is run again from the start; the orders it placed are then
    /// counted as skipped.
    pub async fn run_import(&self, tenant: TenantScope, import_id: Uuid) -> ApiResult<()> {
        let Some(found) = tenant.get::<import::Entity>(&self.db, import_id).await? else {
            return Ok(());
        };
        if ![QUEUED, RUNNING].contains(&found.status.as_str()) {
            return Ok(());
        }
        record(&self.db, tenant, import_id, RUNNING, &Tally::default(), None).await?;
        let source = Chunks {
            db: self.db.clone(),
            tenant,
            import_id,
            next: 0,
            buffer: Vec::new(),
            at: 0,
            runtime: tokio::runtime::Handle::current(),
        };
        let mut progress = Recorder { orders: self, tenant, import_id };
        let to = ImportTo { warehouse_id: found.warehouse_id, send_receipts: found.send_receipts };
        let outcome = self.import_csv(tenant, to, Box::new(source), &mut progress).await;
        let (status, tally, reason) = match outcome {
            Ok(tally) => (DONE, tally, None),
            Err(err) if err.code == Code::ValidationFailed => {
                let reason = err.errors.first().map_or(err.detail.clone(), |e| e.message.clone());
                (IMPORT_FAILED, Tally::default(), Some(reason))
            }
            Err(err) => return Err(err),
        };
        // The outcome and the end of the stored file, together.
        let txn = crate::platform::db::begin(&self.db).await?;
        tenant
            .delete_many::<chunk::Entity>()
            .filter(chunk::Column::ImportId.eq(import_id))
            .exec(&txn)
            .await?;
        record(&txn, tenant, import_id, status, &tally, reason).await?;
        tenant
            .update_many::<import::Entity>()
            .filter(import::Column::Id.eq(import_id))
            .col_expr(import::Column::FinishedAt, Expr::value(Some(Utc::now())))
            .exec(&txn)
            .await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(())
    }

    /// The `orders.import_sweep` job: an import still `uploading` an hour
    /// after it began was cut off; it and its chunks go.
    pub async fn sweep_import(&self, tenant: TenantScope, import_id: Uuid) -> ApiResult<()> {
        tenant
            .delete_many::<import::Entity>()
            .filter(import::Column::Id.eq(import_id))
            .filter(import::Column::Status.eq(UPLOADING))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Store an upload: the header is checked on the first bytes (a wrong
    /// one stores nothing), the file is kept in chunks, and the import job
    /// is queued. More than `max_bytes` is a 413 and nothing is kept.
    pub async fn store_upload(
        &self,
        tenant: TenantScope,
        to: ImportTo,
        filename: String,
        max_bytes: u64,
        mut body: BoxStream<'static, ApiResult<Bytes>>,
    ) -> ApiResult<import::Model> {
        match self.inventory.get_warehouse(tenant, to.warehouse_id).await {
            Err(err) if err.code == Code::NotFound => {
                return Err(ApiError::validation(vec![FieldError::new("warehouse_id", "no such warehouse")]));
            }
            other => other?,
        };
        let mut buffer: Vec<u8> = Vec::new();
        let mut size: u64 = 0;
        let mut stored: Option<import::Model> = None;
        let mut seq = 0;
        let outcome: ApiResult<()> = async {
            loop {
                let next = body.next().await.transpose()?;
                if let Some(bytes) = &next {
                    size += bytes.len() as u64;
                    if size > max_bytes {
                        return Err(ApiError::new(
                            Code::PayloadTooLarge,
                            format!(
                                "the file is larger than {max_bytes} bytes (modules.orders.import_max_bytes)"
                            ),
                        ));
                    }
                    buffer.extend_from_slice(bytes);
                }
                let ended = next.is_none();
                if stored.is_none() && (ended || buffer.contains(&b'\n') || buffer.len() >= CHUNK_BYTES) {
                    first_line_header(&buffer)?;
                    stored = Some(self.new_import(tenant, to, &filename).await?);
                }
                if let Some(import) = &stored {
                    while buffer.len() >= CHUNK_BYTES || (ended && !buffer.is_empty()) {
                        let take = buffer.len().min(CHUNK_BYTES);
                        let data: Vec<u8> = buffer.drain(..take).collect();
                        self.store_chunk(tenant, import.id, seq, data).await?;
                        seq += 1;
                    }
                }
                if ended {
                    return Ok(());
                }
            }
        }
        .await;
        let Some(import) = stored else {
            outcome?;
            return Err(header_error("the file is empty"));
        };
        if let Err(err) = outcome {
            tenant
                .delete_many::<import::Entity>()
                .filter(import::Column::Id.eq(import.id))
                .exec(&self.db)
                .await?;
            return Err(err);
        }
        let txn = crate::platform::db::begin(&self.db).await?;
        tenant
            .update_many::<import::Entity>()
            .filter(import::Column::Id.eq(import.id))
            .col_expr(import::Column::Status, Expr::value(QUEUED))
            .col_expr(import::Column::SizeBytes, Expr::value(i64::try_from(size).unwrap_or(i64::MAX)))
            .col_expr(import::Column::UpdatedAt, Expr::value(Utc::now()))
            .exec(&txn)
            .await?;
        let job = NewJob::new(IMPORT_JOB, json!({"import_id": import.id})).tenant(tenant.id()).priority(4);
        jobs::enqueue(&txn, job).await?;
        let queued = tenant
            .get::<import::Entity>(&txn, import.id)
            .await?
            .ok_or_else(|| ApiError::not_found("import"))?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(queued)
    }

    async fn new_import(
        &self,
        tenant: TenantScope,
        to: ImportTo,
        filename: &str,
    ) -> ApiResult<import::Model> {
        let now = Utc::now();
        let txn = crate::platform::db::begin(&self.db).await?;
        let created = import::Entity::insert(import::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.id()),
            warehouse_id: Set(to.warehouse_id),
            send_receipts: Set(to.send_receipts),
            filename: Set(filename.to_owned()),
            size_bytes: Set(0),
            status: Set(UPLOADING.to_owned()),
            rows_done: Set(0),
            created: Set(0),
            skipped: Set(0),
            error_count: Set(0),
            errors: Set(json!([])),
            failure_reason: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
            finished_at: Set(None),
        })
        .exec_with_returning(&txn)
        .await?;
        // An upload cut off (the client or the server gone) never reaches
        // `queued`: this job drops it and its chunks later.
        let mut sweep =
            NewJob::new(SWEEP_JOB, json!({"import_id": created.id})).tenant(tenant.id()).priority(2);
        sweep.run_at = now + chrono::Duration::hours(1);
        jobs::enqueue(&txn, sweep).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        Ok(created)
    }

    async fn store_chunk(
        &self,
        tenant: TenantScope,
        import_id: Uuid,
        seq: i32,
        data: Vec<u8>,
    ) -> ApiResult<()> {
        chunk::Entity::insert(chunk::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.id()),
            import_id: Set(import_id),
            seq: Set(seq),
            data: Set(data),
        })
        .exec_without_returning(&self.db)
        .await?;
        Ok(())
    }
}

/// Write an import's state and counts.
async fn record(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    import_id: Uuid,
    status: &str,
    tally: &Tally,
    reason: Option<String>,
) -> ApiResult<()> {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    tenant
        .update_many::<import::Entity>()
        .filter(import::Column::Id.eq(import_id))
        .col_expr(import::Column::Status, Expr::value(status))
        .col_expr(import::Column::RowsDone, Expr::value(count(tally.rows)))
        .col_expr(import::Column::Created, Expr::value(count(tally.created)))
        .col_expr(import::Column::Skipped, Expr::value(count(tally.skipped)))
        .col_expr(import::Column::ErrorCount, Expr::value(count(tally.error_count)))
        .col_expr(import::Column::Errors, Expr::value(json!(tally.errors)))
        .col_expr(import::Column::FailureReason, Expr::value(reason))
        .col_expr(import::Column::UpdatedAt, Expr::value(Utc::now()))
        .exec(db)
        .await?;
    Ok(())
}

/// Check the header held by the first line of `bytes`.
fn first_line_header(bytes: &[u8]) -> ApiResult<()> {
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(line);
    let mut record = csv::ByteRecord::new();
    match reader.read_byte_record(&mut record) {
        Ok(true) => check_header(&record),
        Ok(false) => Err(header_error("the file is empty")),
        Err(err) => Err(header_error(format!("the header cannot be read: {err}"))),
    }
}

/// Add a good row to its order, checking it agrees with the order's first row.
fn add(group: &mut Group, row: Row, tally: &mut Tally) {
    if let Some(first) = group.rows.first() {
        let differs = [
            ("order_placed_at", first.placed_at != row.placed_at),
            ("currency", first.currency != row.currency),
            ("customer_id", first.customer_id != row.customer_id),
            ("customer_email", first.email != row.email),
        ];
        for (column, _) in differs.iter().filter(|(_, d)| *d) {
            let message = format!("differs from line {} of the same order", first.line);
            tally.error(row.line, Some(column), message);
            group.bad = true;
        }
        if group.bad {
            return;
        }
    }
    if group.rows.len() >= MAX_LINES {
        tally.error(row.line, None, format!("an order holds at most {MAX_LINES} lines"));
        group.bad = true;
        return;
    }
    group.rows.push(row);
}

/// Whether an error is the row's (reported) rather than the system's (retried).
fn is_final(err: &ApiError) -> bool {
    err.code.status().is_client_error()
}

fn describe(err: &ApiError) -> String {
    match err.errors.as_slice() {
        [] => err.detail.clone(),
        fields => fields.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "),
    }
}

/// The stored chunks of an upload, read in order from a blocking thread.
struct Chunks {
    db: DatabaseConnection,
    tenant: TenantScope,
    import_id: Uuid,
    next: i32,
    buffer: Vec<u8>,
    at: usize,
    runtime: tokio::runtime::Handle,
}

impl Read for Chunks {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.buffer.len() {
            let query = self
                .tenant
                .find::<chunk::Entity>()
                .filter(chunk::Column::ImportId.eq(self.import_id))
                .filter(chunk::Column::Seq.eq(self.next));
            let found = self.runtime.block_on(query.one(&self.db)).map_err(io::Error::other)?;
            let Some(found) = found else { return Ok(0) };
            self.buffer = found.data;
            self.at = 0;
            self.next += 1;
        }
        let n = out.len().min(self.buffer.len() - self.at);
        out[..n].copy_from_slice(&self.buffer[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Progress of a stored import, written to its row.
struct Recorder<'a> {
    orders: &'a SeaOrmOrders,
    tenant: TenantScope,
    import_id: Uuid,
}

#[async_trait::async_trait]
impl Progress for Recorder<'_> {
    async fn report(&mut self, tally: &Tally) -> ApiResult<()> {
        record(&self.orders.db, self.tenant, self.import_id, RUNNING, tally, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &[&str]) -> csv::ByteRecord {
        csv::ByteRecord::from(fields.to_vec())
    }

    const GOOD: [&str; 10] =
        ["1001", "2026-11-28T10:00:00Z", "EUR", "C-1", "ada@example.com", "Ada", "MUG", "Mug", "1250", "2"];

    #[test]
    fn a_good_row_parses_and_a_bad_one_names_each_column() {
        let row = parse_row(2, &record(&GOOD)).unwrap();
        assert_eq!((row.qty, row.unit_price, row.currency.as_str()), (2, 1250, "EUR"));
        let bad = ["1001", "yesterday", "EUX", "", "not-an-email", "", "M\0G", "", "-1", "0"];
        let errors = parse_row(3, &record(&bad)).unwrap_err();
        let columns: Vec<&str> = errors.iter().filter_map(|e| e.column.as_deref()).collect();
        assert_eq!(columns, ["product_sku"], "a NUL byte is reported first, alone");
        let bad = ["1001", "yesterday", "EUX", "", "not-an-email", "", "MUG", "", "-1", "0"];
        let errors = parse_row(3, &record(&bad)).unwrap_err();
        let columns: Vec<&str> = errors.iter().filter_map(|e| e.column.as_deref()).collect();
        assert_eq!(columns, ["order_placed_at", "currency", "customer_email", "unit_price_cents", "qty"]);
        assert!(errors.iter().all(|e| e.line == 3));
        let short = parse_row(4, &record(&GOOD[..9])).unwrap_err();
        assert_eq!(short[0].column, None);
    }

    #[test]
    fn dates_are_rfc3339_or_plain_utc() {
        assert!(parse_time("2026-11-28T10:00:00+01:00").is_some());
        assert_eq!(parse_time("2026-11-28 09:00:00"), parse_time("2026-11-28T09:00:00Z"));
        assert_eq!(parse_time("2026-11-28"), parse_time("2026-11-28T00:00:00Z"));
        assert!(parse_time("28/11/2026").is_none());
    }

    #[test]
    fn the_header_must_be_the_seed_columns() {
        assert!(check_header(&record(&COLUMNS)).is_ok());
        let mut wrong = COLUMNS;
        wrong.swap(0, 1);
        assert_eq!(check_header(&record(&wrong)).unwrap_err().errors[0].field, "file");
        assert!(first_line_header(format!("{}\r\n1,2", COLUMNS.join(",")).as_bytes()).is_ok());
    }

    #[test]
    fn errors_are_counted_but_kept_bounded() {
        let mut tally = Tally::default();
        for line in 0..(MAX_ERRORS as u64 + 10) {
            tally.error(line, None, "bad");
        }
        assert_eq!((tally.error_count, tally.errors.len()), (MAX_ERRORS as u64 + 10, MAX_ERRORS));
    }
}
