//! `nexus orders ...`: the operators' commands, on the database directly
//! (no server needed), through the same service as REST and GraphQL.

use std::{
    io::{IsTerminal, Read},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use indicatif::{ProgressBar, ProgressStyle};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use super::{
    NewRefund, OrderService, check_refund,
    import::{ImportTo, Progress, Tally},
};
use crate::{
    error::{ApiError, ApiResult},
    modules::inventory::{InventoryService, WAREHOUSE_SORTS, WarehouseFilter},
    platform::{
        http::{ListRequest, parse_sort},
        search::{Search, Window},
        tenancy::{SystemScope, TenantScope},
    },
};

/// An error of the service as the command line shows it: the detail and
/// each field; the cause of an internal error is logged, as the server
/// logs it.
pub fn describe(err: ApiError) -> anyhow::Error {
    err.log_source();
    let fields: Vec<String> = err.errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
    if fields.is_empty() {
        anyhow::anyhow!("{} ({})", err.detail, err.code.as_str())
    } else {
        anyhow::anyhow!("{} ({}): {}", err.detail, err.code.as_str(), fields.join("; "))
    }
}

/// Refund `amount` of an order (by id, in whichever tenant holds it), then
/// carry the refund out through the gateway at once rather than waiting for
/// a worker; the same `key` gives the first refund back.
pub async fn refund(
    db: &DatabaseConnection,
    orders: Arc<dyn OrderService>,
    order_id: Uuid,
    amount: i64,
    reason: String,
    key: String,
) -> anyhow::Result<()> {
    let new = NewRefund { amount, reason: reason.trim().to_owned(), idempotency_key: key };
    check_refund(&new).map_err(|errors| describe(ApiError::validation(errors)))?;
    let order = SystemScope
        .get::<entity::order::Entity>(db, order_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no order {order_id}"))?;
    let tenant = TenantScope::new(order.tenant_id);
    let (requested, created) = orders.refund_order(tenant, order_id, new).await.map_err(describe)?;
    if !created {
        println!("this key was used before: refund {} ({})", requested.id, requested.status);
    }
    let refund = orders.settle_refund(tenant, requested.id).await.map_err(describe)?;
    let view = orders.get_order(tenant, order_id).await.map_err(describe)?;
    match refund.failure_reason {
        Some(reason) => anyhow::bail!("refund {} failed: {reason}", refund.id),
        None => println!(
            "refund {} of {} {} {}; the order has {} {} refunded",
            refund.id, refund.amount, refund.currency, refund.status, view.refunded, view.currency
        ),
    }
    Ok(())
}

/// The warehouse named by its id or its code.
async fn warehouse(
    inventory: &dyn InventoryService,
    tenant: TenantScope,
    handle: &str,
) -> anyhow::Result<Uuid> {
    if let Ok(id) = Uuid::parse_str(handle) {
        return Ok(inventory.get_warehouse(tenant, id).await.map_err(describe)?.id);
    }
    let sort = parse_sort(None, &WAREHOUSE_SORTS).map_err(describe)?;
    let q = Search::parse(Some(handle)).map_err(describe)?;
    let mut cursor = None;
    loop {
        let list = ListRequest::new(Some(100), &[], cursor.as_deref(), None).map_err(describe)?;
        let filter = WarehouseFilter { q: q.clone(), created: Window::default(), sort };
        let page = inventory.list_warehouses(tenant, filter, &list).await.map_err(describe)?;
        if let Some(w) = page.data.iter().find(|w| w.code == handle) {
            return Ok(w.id);
        }
        match page.meta.next_cursor {
            Some(next) => cursor = Some(next),
            None => anyhow::bail!("no warehouse `{handle}`"),
        }
    }
}

/// The progress of an import: a bar on a terminal (the share of the file
/// read, the counts, the time left), else a line on stderr at each report.
struct Bar {
    bar: Option<ProgressBar>,
    read: Arc<AtomicU64>,
}

impl Bar {
    fn new(size: u64, read: Arc<AtomicU64>) -> anyhow::Result<Self> {
        let style =
            ProgressStyle::with_template("{wide_bar} {percent:>3}% {msg} ({elapsed} elapsed, {eta} left)")?;
        let bar = std::io::stderr().is_terminal().then(|| ProgressBar::new(size).with_style(style));
        Ok(Self { bar, read })
    }
}

#[async_trait::async_trait]
impl Progress for Bar {
    async fn report(&mut self, t: &Tally) -> ApiResult<()> {
        let line = format!(
            "{} rows: {} orders created, {} skipped, {} errors",
            t.rows, t.created, t.skipped, t.error_count
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.read.load(Ordering::Relaxed));
                bar.set_message(line);
            }
            None => eprintln!("{line}"),
        }
        Ok(())
    }
}

/// A reader that counts the bytes read through it.
struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Import a CSV file of orders now; progress on stderr (a bar on a
/// terminal), the summary and the bad rows on stdout. A wrong header changes nothing and fails.
pub async fn import(
    orders: Arc<dyn OrderService>,
    inventory: Arc<dyn InventoryService>,
    tenant: TenantScope,
    file: &std::path::Path,
    warehouse_handle: &str,
    send_receipts: bool,
) -> anyhow::Result<()> {
    let warehouse_id = warehouse(inventory.as_ref(), tenant, warehouse_handle).await?;
    let to = ImportTo { warehouse_id, send_receipts };
    let source =
        std::fs::File::open(file).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
    let read = Arc::new(AtomicU64::new(0));
    let mut bar = Bar::new(source.metadata()?.len(), read.clone())?;
    let source = Counted { inner: std::io::BufReader::new(source), read };
    let tally = orders.import_file(tenant, to, Box::new(source), &mut bar).await;
    if let Some(bar) = bar.bar {
        bar.finish_and_clear();
    }
    let tally = tally.map_err(describe)?;
    println!(
        "imported {}: {} rows, {} orders created, {} skipped (they exist), {} errors",
        file.display(),
        tally.rows,
        tally.created,
        tally.skipped,
        tally.error_count
    );
    for e in &tally.errors {
        println!("line {}, column {}: {}", e.line, e.column.as_deref().unwrap_or("-"), e.message);
    }
    if tally.error_count > tally.errors.len() as u64 {
        println!("... and {} more errors", tally.error_count - tally.errors.len() as u64);
    }
    println!("the orders' sagas run on a running server or `nexus worker`");
    Ok(())
}
