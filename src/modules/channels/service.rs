//! [`ChannelService`] on sea-orm, and the sync engine: the catalog import
//! and the stock push, each a durable job.
//!
//! **Push.** A stock event of a mapped product marks its mapping `dirty`
//! (and counts the change) and queues one `channels.push` job per store,
//! unless one is queued already (`push_queued` on the connection), all in
//! the listener's transaction. The job reads the current levels when it
//! runs, so a burst of changes becomes one push per product, and pushes
//! the dirty mappings of its store in batches. A mapping is clean again
//! only if no change came while its push was on the way. A store's 429
//! (or Shopify's cost budget) defers the job by what the store asked and
//! marks the connection `throttled`; refused credentials mark it
//! `disconnected` with the store's message and stop its pushes until new
//! credentials are saved; anything else is retried with the runner's
//! backoff.
//!
//! **Import.** One job run per page of the store: each variant with a SKU
//! is mapped to the local product with that SKU, created when missing;
//! the page's mappings, events and progress commit together with the job
//! of the next page.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use chrono::{Duration, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
    sea_query::{Expr, OnConflict},
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    CHANNEL_DEAD_LETTERED, CHANNEL_DISCONNECTED, CHANNEL_INVENTORY_UPDATED, CHANNEL_PRODUCT_IMPORTED,
    CHANNEL_SYNC_FAILED, CHANNEL_SYNC_STARTED, CHANNEL_SYNC_SUCCEEDED, CHANNEL_THROTTLED,
    CHANNEL_WEBHOOK_RECEIVED, CONNECTED, ChannelService, ConnectionChanges, ConnectionFilter, ConnectionView,
    DISCONNECTED, DeadLetterCount, DeadLetterFilter, DeadLetterView, DriftView, ImportView, MAX_BUFFER,
    MappingFilter, MappingView, NewConnection, ReceiptView, Settings, SyncRunView, THROTTLED,
    driver::{ChannelDriver, DriverError, Drivers, Headers, Inbound, Pace, Push, RemoteProduct, Store},
};
use crate::{
    error::{ApiError, ApiResult, Code, FieldError},
    modules::inventory::{Cause, InventoryService, Line, NewProduct, ProductFilter},
    platform::{
        crypto::Cipher,
        events::{self, Listener},
        http::{ListRequest, Paged, Sort, changed_meanwhile, check_version},
        jobs::{self, JobError, JobHandler, NewJob},
        ratelimit::RateLimiter,
        state::AppState,
        tenancy::{SystemScope, TenantScope},
        validate::{self, Checks},
        webhooks::ssrf::{UrlError, UrlPolicy},
    },
};
use entity::{
    channel_connection as connection, channel_dead_letter as dead, channel_mapping as mapping,
    channel_sync_run as run, channel_webhook_receipt as receipt,
};

mod sync;

pub use sync::{PUSH, RECONCILE, RECONCILE_SCAN_JOB, SYNC_JOB};

pub const IMPORT_JOB: &str = "channels.import";
pub const PUSH_JOB: &str = "channels.push";

/// Sync run states.
pub const PENDING: &str = "pending";
pub const RUNNING: &str = "running";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";

/// Webhook receipt outcomes.
pub const APPLIED: &str = "applied";
pub const UNCHANGED: &str = "unchanged";
pub const UNMAPPED: &str = "unmapped";
pub const IGNORED: &str = "ignored";
pub const REJECTED: &str = "rejected";
pub const FORGED: &str = "forged";
pub const REPLAYED: &str = "replayed";
/// A subscription (Amazon SNS) confirmed.
pub const CONFIRMED: &str = "confirmed";

pub struct SeaOrmChannels {
    db: DatabaseConnection,
    inventory: Arc<dyn InventoryService>,
    drivers: Drivers,
    cipher: Cipher,
    urls: UrlPolicy,
    batch: u64,
    /// `None` when `rate_limits` is off: calls are not paced.
    limiter: Option<RateLimiter>,
    /// Seconds between scheduled reconciles; 0: none.
    reconcile_every: u64,
    /// Attempts of a push job before its products land in the dead letters.
    attempts: i32,
}

/// Why a base URL is refused, in the words of a store's address.
fn url_message(err: UrlError) -> String {
    match err {
        UrlError::Invalid(why) => format!("is not a valid URL: {why}"),
        UrlError::Scheme => "must use https".to_owned(),
        UrlError::Credentials => "must not contain a user name or password".to_owned(),
        UrlError::Forbidden(ip) => format!("targets a non-public address ({ip})"),
        UrlError::Unresolvable(why) => format!("cannot be resolved: {why}"),
    }
}

/// Text from outside that names something: 1 to `max` characters, not
/// blank, within the character rule.
fn identifier(value: &str, max: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("must not be blank".to_owned());
    }
    validate::plain_text(value, max)
}

fn buffer(value: i64) -> Result<(), String> {
    if (0..=MAX_BUFFER).contains(&value) { Ok(()) } else { Err(format!("must be from 0 to {MAX_BUFFER}")) }
}

async fn find_connection(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    id: Uuid,
) -> ApiResult<connection::Model> {
    tenant.get::<connection::Entity>(db, id).await?.ok_or_else(|| ApiError::not_found("channel connection"))
}

/// Queue the push job of a connection unless one is queued already.
async fn queue_push(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    connection_id: Uuid,
    attempts: i32,
) -> ApiResult<()> {
    // Lock the connection's row until this transaction ends, whatever
    // `push_queued` holds (PostgreSQL locks no row a WHERE does not match):
    // a running push job that releases the connection meanwhile waits for
    // this commit, then finds the mappings marked dirty here and takes the
    // push over again. Without it, a job could release and find nothing
    // dirty between this transaction's marks and its commit, and the
    // change would wait for the next one.
    tenant
        .update_many::<connection::Entity>()
        .filter(connection::Column::Id.eq(connection_id))
        .col_expr(connection::Column::PushQueued, Expr::col(connection::Column::PushQueued))
        .exec(db)
        .await?;
    let claimed = tenant
        .update_many::<connection::Entity>()
        .filter(connection::Column::Id.eq(connection_id))
        .filter(connection::Column::PushQueued.eq(false))
        .filter(connection::Column::Status.ne(DISCONNECTED))
        .col_expr(connection::Column::PushQueued, Expr::value(true))
        .exec(db)
        .await?;
    if claimed.rows_affected > 0 {
        let job = NewJob::new(PUSH_JOB, json!({"connection_id": connection_id}))
            .tenant(tenant.id())
            .priority(6)
            .max_attempts(attempts);
        jobs::enqueue(db, job).await?;
    }
    Ok(())
}

/// How a driver reaches the store of connection `c`.
pub(super) fn store_of<'a>(
    c: &'a connection::Model,
    credentials: &'a BTreeMap<String, String>,
    pace: &'a Pace,
) -> Store<'a> {
    Store { base_url: &c.base_url, credentials, location_id: c.remote_location_id.as_deref(), pace }
}

/// The connection's mapping that `by` names (a variant or inventory item).
async fn mapping_of(
    db: &impl ConnectionTrait,
    c: &connection::Model,
    by: impl sea_orm::sea_query::IntoCondition,
) -> ApiResult<Option<mapping::Model>> {
    Ok(TenantScope::new(c.tenant_id)
        .find::<mapping::Entity>()
        .filter(mapping::Column::ConnectionId.eq(c.id))
        .filter(by)
        .one(db)
        .await?)
}

/// Mark mappings to be pushed (a stock change of their product).
async fn mark_dirty(db: &impl ConnectionTrait, tenant: TenantScope, condition: Condition) -> ApiResult<()> {
    use sea_orm::sea_query::ExprTrait;
    tenant
        .update_many::<mapping::Entity>()
        .filter(condition)
        .col_expr(mapping::Column::Dirty, Expr::value(true))
        .col_expr(mapping::Column::Changes, Expr::col(mapping::Column::Changes).add(1))
        .exec(db)
        .await?;
    Ok(())
}

impl SeaOrmChannels {
    pub fn new(
        db: DatabaseConnection,
        inventory: Arc<dyn InventoryService>,
        drivers: Drivers,
        cipher: Cipher,
        urls: UrlPolicy,
        settings: &Settings,
        limiter: RateLimiter,
    ) -> Self {
        let limiter = settings.rate_limits.then_some(limiter);
        Self {
            db,
            inventory,
            drivers,
            cipher,
            urls,
            batch: settings.push_batch_size,
            limiter,
            reconcile_every: settings.reconcile_interval_secs,
            attempts: settings.push_attempts,
        }
    }

    /// The token bucket of a connection's credential.
    fn pace(&self, c: &connection::Model, credentials: &BTreeMap<String, String>) -> ApiResult<Pace> {
        let policy = self.driver(&c.channel)?.policy();
        Ok(Pace::new(self.limiter.clone(), &c.channel, &c.base_url, credentials, policy))
    }

    fn driver(&self, channel: &str) -> ApiResult<&Arc<dyn ChannelDriver>> {
        self.drivers.get(channel).ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("a connection of channel `{channel}`, not in this build"))
        })
    }

    /// The credentials of a connection, opened.
    fn credentials(&self, c: &connection::Model) -> ApiResult<BTreeMap<String, String>> {
        let opened = self.cipher.decrypt(&c.credentials).map_err(ApiError::internal)?;
        serde_json::from_str(&opened).map_err(ApiError::internal)
    }

    fn view(&self, c: connection::Model) -> ApiResult<ConnectionView> {
        let credentials = self.credentials(&c)?.into_keys().collect();
        let rate_limit = self.driver(&c.channel)?.policy();
        Ok(ConnectionView {
            id: c.id,
            channel: c.channel,
            name: c.name,
            base_url: c.base_url,
            credentials,
            webhook_secret_set: c.webhook_secret.is_some(),
            warehouse_id: c.warehouse_id,
            remote_location_id: c.remote_location_id,
            currency: c.currency,
            safety_buffer: c.safety_buffer,
            status: c.status,
            last_error: c.last_error,
            status_changed_at: c.status_changed_at,
            rate_limit,
            version: c.version,
            created_at: c.created_at,
            updated_at: c.updated_at,
        })
    }

    /// Exactly the credentials `driver` needs, each 1 to 500 characters.
    fn check_credentials(checks: &mut Checks, driver: &dyn ChannelDriver, given: &BTreeMap<String, String>) {
        for field in driver.credential_fields() {
            let result = match given.get(*field) {
                Some(value) => identifier(value, 500),
                None => Err("is required".to_owned()),
            };
            checks.check(&format!("credentials.{field}"), result);
        }
        for name in given.keys().filter(|k| !driver.credential_fields().contains(&k.as_str())) {
            let known = driver.credential_fields().join(", ");
            checks.check(
                &format!("credentials.{name}"),
                Err(format!("is not a {} credential; expected {known}", driver.channel())),
            );
        }
    }

    fn check_common(&self, checks: &mut Checks, name: Option<&str>, url: Option<&str>, secret: Option<&str>) {
        if let Some(name) = name {
            checks.check("name", validate::name(name));
        }
        if let Some(url) = url {
            checks.check("base_url", self.urls.check_url(url).map(|_| ()).map_err(url_message));
        }
        if let Some(secret) = secret {
            checks.check("webhook_secret", identifier(secret, 500));
        }
    }

    fn check_new(&self, new: &NewConnection) -> Result<(), Vec<FieldError>> {
        let mut checks = Checks::default();
        match self.drivers.get(&new.channel) {
            None => {
                let names = self.drivers.names().join(", ");
                checks.check("channel", Err(format!("must be one of {names}")));
            }
            Some(driver) => {
                Self::check_credentials(&mut checks, driver.as_ref(), &new.credentials);
                if driver.needs_location() && new.remote_location_id.is_none() {
                    checks.check("remote_location_id", Err(format!("is required for {}", new.channel)));
                }
            }
        }
        self.check_common(&mut checks, Some(&new.name), Some(&new.base_url), new.webhook_secret.as_deref());
        if let Some(location) = &new.remote_location_id {
            checks.check("remote_location_id", identifier(location, 200));
        }
        checks
            .check("currency", validate::currency(&new.currency))
            .check("safety_buffer", buffer(new.safety_buffer));
        checks.finish()
    }

    /// 422 on `warehouse_id` unless the tenant has that warehouse.
    async fn check_warehouse(&self, tenant: TenantScope, id: Uuid) -> ApiResult<()> {
        match self.inventory.get_warehouse(tenant, id).await {
            Ok(_) => Ok(()),
            Err(err) if err.code == Code::NotFound => {
                Err(ApiError::validation(vec![FieldError::new("warehouse_id", "no such warehouse")]))
            }
            Err(err) => Err(err),
        }
    }

    fn name_taken(name: &str) -> impl FnOnce(sea_orm::DbErr) -> ApiError + '_ {
        move |e| match ApiError::from(e) {
            err if err.code == Code::Conflict => {
                ApiError::new(Code::Conflict, format!("a channel connection named `{name}` exists already"))
            }
            err => err,
        }
    }

    /// The store's error as an answer to the API caller; refused
    /// credentials also disconnect the connection.
    async fn store_error(&self, tenant: TenantScope, c: &connection::Model, err: DriverError) -> ApiError {
        match err {
            DriverError::NotFound(message) => ApiError::new(Code::NotFound, message),
            DriverError::Unauthorized(message) => {
                if let Err(e) = self.disconnect(tenant, c, &message).await {
                    return e;
                }
                ApiError::new(
                    Code::Conflict,
                    format!("the store refused the connection's credentials: {message}"),
                )
            }
            DriverError::Throttled { retry_after, message } => {
                ApiError::new(Code::ServiceUnavailable, format!("the store is throttling: {message}"))
                    .retry_after(retry_after.as_secs().max(1))
            }
            DriverError::Stale(message) | DriverError::Failed(message) => {
                ApiError::new(Code::ServiceUnavailable, format!("the store failed: {message}"))
            }
        }
    }

    /// Refused credentials: `disconnected` with the store's message, once.
    async fn disconnect(&self, tenant: TenantScope, c: &connection::Model, message: &str) -> ApiResult<()> {
        let txn = crate::platform::db::begin(&self.db).await?;
        let changed = tenant
            .update_many::<connection::Entity>()
            .filter(connection::Column::Id.eq(c.id))
            .filter(connection::Column::Status.ne(DISCONNECTED))
            .col_expr(connection::Column::Status, Expr::value(DISCONNECTED))
            .col_expr(connection::Column::LastError, Expr::value(message))
            .col_expr(connection::Column::StatusChangedAt, Expr::value(Utc::now()))
            .col_expr(connection::Column::PushQueued, Expr::value(false))
            .exec(&txn)
            .await?;
        if changed.rows_affected > 0 {
            let data = json!({"connection_id": c.id, "channel": c.channel, "error": message});
            events::publish(&txn, tenant.id(), &CHANNEL_DISCONNECTED, data).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// The store asked to slow down: `throttled`, announced once.
    async fn throttle(
        &self,
        tenant: TenantScope,
        c: &connection::Model,
        wait: std::time::Duration,
        message: &str,
    ) -> ApiResult<()> {
        let txn = crate::platform::db::begin(&self.db).await?;
        let changed = tenant
            .update_many::<connection::Entity>()
            .filter(connection::Column::Id.eq(c.id))
            .filter(connection::Column::Status.eq(CONNECTED))
            .col_expr(connection::Column::Status, Expr::value(THROTTLED))
            .col_expr(connection::Column::LastError, Expr::value(message))
            .col_expr(connection::Column::StatusChangedAt, Expr::value(Utc::now()))
            .exec(&txn)
            .await?;
        if changed.rows_affected > 0 {
            let data = json!({"connection_id": c.id, "channel": c.channel,
                "retry_after_seconds": wait.as_secs().max(1), "error": message});
            events::publish(&txn, tenant.id(), &CHANNEL_THROTTLED, data).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// A call went through: a throttled connection is connected again.
    async fn recovered(&self, tenant: TenantScope, c: &connection::Model) -> ApiResult<()> {
        tenant
            .update_many::<connection::Entity>()
            .filter(connection::Column::Id.eq(c.id))
            .filter(connection::Column::Status.eq(THROTTLED))
            .col_expr(connection::Column::Status, Expr::value(CONNECTED))
            .col_expr(connection::Column::StatusChangedAt, Expr::value(Utc::now()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// A failure that is retried: kept as the connection's last error.
    async fn failed(&self, tenant: TenantScope, c: &connection::Model, message: &str) -> ApiResult<()> {
        tenant
            .update_many::<connection::Entity>()
            .filter(connection::Column::Id.eq(c.id))
            .col_expr(connection::Column::LastError, Expr::value(message))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// What the job does with a store's error: wait, stop or retry.
    async fn job_error(
        &self,
        tenant: TenantScope,
        c: &connection::Model,
        job: &entity::job::Model,
        err: DriverError,
    ) -> Result<JobError, JobError> {
        Ok(match err {
            DriverError::Throttled { retry_after, message } => {
                self.throttle(tenant, c, retry_after, &message).await?;
                let wait = Duration::from_std(retry_after).unwrap_or(Duration::seconds(1));
                JobError::Defer(Utc::now() + wait)
            }
            DriverError::Unauthorized(message) => {
                self.disconnect(tenant, c, &message).await?;
                JobError::Fail(message)
            }
            other => {
                let message = other.to_string();
                self.failed(tenant, c, &message).await?;
                if job.attempts >= job.max_attempts {
                    JobError::Fail(message)
                } else {
                    JobError::retry(message)
                }
            }
        })
    }

    /// ATP of each product at the connection's warehouse: on hand -
    /// reserved - buffer, never below 0.
    async fn atp(
        &self,
        tenant: TenantScope,
        c: &connection::Model,
        products: Vec<Uuid>,
    ) -> ApiResult<HashMap<Uuid, i64>> {
        let levels = self.inventory.levels_of_products(tenant, products).await?;
        Ok(levels
            .into_iter()
            .filter(|l| l.warehouse_id == c.warehouse_id)
            .map(|l| (l.product_id, (l.on_hand - l.reserved - c.safety_buffer).max(0)))
            .collect())
    }

    /// `channels.push`: write the ATP of every dirty mapping of a store.
    pub async fn push(
        &self,
        tenant: TenantScope,
        connection_id: Uuid,
        job: &entity::job::Model,
    ) -> Result<(), JobError> {
        let Some(c) = tenant.get::<connection::Entity>(&self.db, connection_id).await? else {
            return Ok(());
        };
        let outcome = match self.push_dirty(tenant, &c).await {
            Ok(()) => return Ok(()),
            Err(Stop::Job(err)) => err,
            Err(Stop::Store(err)) => {
                // Refused credentials disconnect instead: new ones push everything again.
                let refused = matches!(err, DriverError::Unauthorized(_));
                let outcome = self.job_error(tenant, &c, job, err).await?;
                if let (JobError::Fail(error), false) = (&outcome, refused) {
                    self.dead_letter(tenant, &c, job.attempts, error).await?;
                }
                outcome
            }
        };
        let last = job.attempts >= job.max_attempts;
        if matches!(outcome, JobError::Fail(_)) || (last && matches!(outcome, JobError::Retry { .. })) {
            // Nothing more will run: the next change queues a push again.
            self.release(tenant, &c).await?;
        }
        Err(outcome)
    }

    /// The retries of a push ran out: each product still to push becomes a
    /// dead letter (with the ATP it was meant to get) and is no longer
    /// pushed until it changes again or the letter is replayed.
    async fn dead_letter(
        &self,
        tenant: TenantScope,
        c: &connection::Model,
        attempts: i32,
        error: &str,
    ) -> ApiResult<()> {
        let txn = crate::platform::db::begin(&self.db).await?;
        let dirty = tenant
            .find::<mapping::Entity>()
            .filter(mapping::Column::ConnectionId.eq(c.id))
            .filter(mapping::Column::Dirty.eq(true))
            .all(&txn)
            .await?;
        let atp = self.atp(tenant, c, dirty.iter().map(|m| m.product_id).collect()).await?;
        let now = Utc::now();
        for m in dirty {
            let quantity = atp.get(&m.product_id).copied().unwrap_or(0);
            let letter = dead::Entity::insert(dead::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant_id: Set(tenant.id()),
                connection_id: Set(c.id),
                mapping_id: Set(m.id),
                product_id: Set(m.product_id),
                sku: Set(m.sku.clone()),
                remote_variant_id: Set(m.remote_variant_id.clone()),
                quantity: Set(quantity),
                last_error: Set(error.to_owned()),
                attempts: Set(attempts),
                created_at: Set(now),
            })
            .exec_with_returning(&txn)
            .await?;
            tenant
                .update_many::<mapping::Entity>()
                .filter(mapping::Column::Id.eq(m.id))
                .filter(mapping::Column::Changes.eq(m.changes))
                .col_expr(mapping::Column::Dirty, Expr::value(false))
                .exec(&txn)
                .await?;
            let data = json!({"dead_letter_id": letter.id, "connection_id": c.id, "product_id": m.product_id,
                "sku": m.sku, "quantity": quantity, "attempts": attempts, "error": error});
            events::publish(&txn, tenant.id(), &CHANNEL_DEAD_LETTERED, data).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Replay dead letters: their products are pushed again (with the ATP
    /// of when the push runs) and the letters dropped, in one transaction.
    /// Letters of disconnected connections stay; their number is returned.
    async fn replay(&self, tenant: TenantScope, letters: Vec<dead::Model>) -> ApiResult<DeadLetterCount> {
        let txn = crate::platform::db::begin(&self.db).await?;
        let mut connections: HashMap<Uuid, bool> = HashMap::new();
        let (mut count, mut skipped) = (0, 0);
        for letter in letters {
            let open = match connections.get(&letter.connection_id) {
                Some(open) => *open,
                None => {
                    let c = find_connection(&txn, tenant, letter.connection_id).await?;
                    let open = c.status != DISCONNECTED;
                    connections.insert(c.id, open);
                    open
                }
            };
            if !open {
                skipped += 1;
                continue;
            }
            mark_dirty(&txn, tenant, Condition::all().add(mapping::Column::Id.eq(letter.mapping_id))).await?;
            tenant.delete_many::<dead::Entity>().filter(dead::Column::Id.eq(letter.id)).exec(&txn).await?;
            count += 1;
        }
        for (id, open) in connections {
            if open {
                queue_push(&txn, tenant, id, self.attempts).await?;
            }
        }
        txn.commit().await?;
        Ok(DeadLetterCount { count, skipped })
    }

    /// No push job is queued for the connection any more.
    async fn release(&self, tenant: TenantScope, c: &connection::Model) -> ApiResult<()> {
        tenant
            .update_many::<connection::Entity>()
            .filter(connection::Column::Id.eq(c.id))
            .col_expr(connection::Column::PushQueued, Expr::value(false))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Take the push job over again when a change slipped in after the last
    /// read of dirty mappings (it found a job queued and queued none);
    /// `false` when nothing is left or another job took it.
    async fn retake(&self, tenant: TenantScope, c: &connection::Model) -> ApiResult<bool> {
        let left = tenant
            .find::<mapping::Entity>()
            .filter(mapping::Column::ConnectionId.eq(c.id))
            .filter(mapping::Column::Dirty.eq(true))
            .count(&self.db)
            .await?;
        if left == 0 {
            return Ok(false);
        }
        let taken = tenant
            .update_many::<connection::Entity>()
            .filter(connection::Column::Id.eq(c.id))
            .filter(connection::Column::PushQueued.eq(false))
            .col_expr(connection::Column::PushQueued, Expr::value(true))
            .exec(&self.db)
            .await?;
        Ok(taken.rows_affected > 0)
    }

    async fn push_dirty(&self, tenant: TenantScope, c: &connection::Model) -> Result<(), Stop> {
        if c.status == DISCONNECTED {
            self.release(tenant, c).await?;
            return Ok(());
        }
        let driver = self.driver(&c.channel)?.clone();
        let credentials = self.credentials(c)?;
        let pace = self.pace(c, &credentials)?;
        let store = store_of(c, &credentials, &pace);
        loop {
            let dirty = tenant
                .find::<mapping::Entity>()
                .filter(mapping::Column::ConnectionId.eq(c.id))
                .filter(mapping::Column::Dirty.eq(true))
                .order_by_asc(mapping::Column::Id)
                .limit(self.batch)
                .all(&self.db)
                .await?;
            if dirty.is_empty() {
                self.release(tenant, c).await?;
                if self.retake(tenant, c).await? {
                    continue;
                }
                return Ok(());
            }
            let atp = self.atp(tenant, c, dirty.iter().map(|m| m.product_id).collect()).await?;
            let pushes = sync::pushes_of(&dirty, &atp);
            driver.push_quantities(&store, &pushes).await.map_err(Stop::Store)?;
            self.recovered(tenant, c).await?;
            let txn = crate::platform::db::begin(&self.db).await?;
            sync::record_pushed(&txn, tenant, dirty.iter().zip(&pushes)).await?;
            txn.commit().await?;
        }
    }
}

/// Why a sync step stopped: the store said no, or our side failed.
enum Stop {
    Store(DriverError),
    Job(JobError),
}

impl From<sea_orm::DbErr> for Stop {
    fn from(err: sea_orm::DbErr) -> Self {
        Stop::Job(err.into())
    }
}

impl From<ApiError> for Stop {
    fn from(err: ApiError) -> Self {
        Stop::Job(err.into())
    }
}

/// A variant mapped by one page of an import.
struct Imported {
    product: RemoteProduct,
    variant: usize,
    product_id: Uuid,
    sku: String,
    created: bool,
}

/// A page's counts.
#[derive(Default)]
struct Tally {
    listed: i64,
    linked: i64,
    created: i64,
    skipped: i64,
    error: Option<String>,
}

impl Tally {
    fn skip(&mut self, why: String) {
        self.skipped += 1;
        self.error = Some(why);
    }
}

impl SeaOrmChannels {
    /// The local product with `sku`, created from the store's variant
    /// when there is none. `Err` says why the variant is skipped.
    async fn local_product(
        &self,
        tenant: TenantScope,
        c: &connection::Model,
        product: &RemoteProduct,
        variant: usize,
        sku: &str,
    ) -> ApiResult<Result<(Uuid, bool), String>> {
        let by_sku = || async {
            let filter = ProductFilter::by_sku(sku)?;
            let list = ListRequest::new(Some(1), &[], None, None)?;
            Ok::<_, ApiError>(self.inventory.list_products(tenant, filter, &list).await?.data.pop())
        };
        if let Some(found) = by_sku().await? {
            return Ok(Ok((found.id, false)));
        }
        let v = &product.variants[variant];
        let name = match &v.title {
            Some(title) => format!("{} ({title})", product.title.trim()),
            None => product.title.trim().to_owned(),
        };
        let name: String = if name.is_empty() { sku.to_owned() } else { name.chars().take(200).collect() };
        let new = NewProduct {
            sku: sku.to_owned(),
            name,
            barcode: None,
            unit_price: v.price.unwrap_or(0).max(0),
            currency: c.currency.clone(),
            attributes: json!({}),
            active: true,
        };
        match self.inventory.create_product(tenant, new).await {
            Ok(created) => Ok(Ok((created.id, true))),
            // Created meanwhile (another import, a user): link it.
            Err(err) if err.code == Code::Conflict => match by_sku().await? {
                Some(found) => Ok(Ok((found.id, false))),
                None => Ok(Err(err.detail)),
            },
            Err(err) if err.code == Code::ValidationFailed => Ok(Err(err.detail)),
            Err(err) => Err(err),
        }
    }

    /// A run that has not ended, with its connection; `None` once it ended
    /// or its connection was deleted (the run's jobs then do nothing).
    pub(super) async fn open_run(
        &self,
        tenant: TenantScope,
        run_id: Uuid,
    ) -> ApiResult<Option<(run::Model, connection::Model)>> {
        let Some(r) = tenant.get::<run::Entity>(&self.db, run_id).await? else { return Ok(None) };
        if [SUCCEEDED, FAILED].contains(&r.status.as_str()) {
            return Ok(None);
        }
        let c = tenant.get::<connection::Entity>(&self.db, r.connection_id).await?;
        Ok(c.map(|c| (r, c)))
    }

    /// `channels.import`: one page of the store.
    pub async fn import(
        &self,
        tenant: TenantScope,
        run_id: Uuid,
        job: &entity::job::Model,
    ) -> Result<(), JobError> {
        let Some((r, c)) = self.open_run(tenant, run_id).await? else { return Ok(()) };
        match self.import_page(tenant, &c, &r).await {
            Ok(()) => Ok(()),
            Err(Stop::Job(err)) => Err(err),
            Err(Stop::Store(err)) => match self.job_error(tenant, &c, job, err).await? {
                JobError::Fail(error) => {
                    self.end_run(tenant, &r, &error).await?;
                    Err(JobError::Fail(error))
                }
                other => Err(other),
            },
        }
    }

    async fn end_run(&self, tenant: TenantScope, r: &run::Model, error: &str) -> ApiResult<()> {
        let now = Utc::now();
        let txn = crate::platform::db::begin(&self.db).await?;
        let ended = tenant
            .update_many::<run::Entity>()
            .filter(run::Column::Id.eq(r.id))
            .filter(run::Column::Status.is_in([PENDING, RUNNING]))
            .col_expr(run::Column::Status, Expr::value(FAILED))
            .col_expr(run::Column::Error, Expr::value(error))
            .col_expr(run::Column::FinishedAt, Expr::value(now))
            .col_expr(run::Column::UpdatedAt, Expr::value(now))
            .exec(&txn)
            .await?;
        if ended.rows_affected > 0 {
            let data =
                json!({"run_id": r.id, "connection_id": r.connection_id, "kind": r.kind, "error": error});
            events::publish(&txn, tenant.id(), &CHANNEL_SYNC_FAILED, data).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    async fn import_page(
        &self,
        tenant: TenantScope,
        c: &connection::Model,
        r: &run::Model,
    ) -> Result<(), Stop> {
        let driver = self.driver(&c.channel)?.clone();
        let credentials = self.credentials(c)?;
        let pace = self.pace(c, &credentials)?;
        let store = store_of(c, &credentials, &pace);
        let page = driver.list_products(&store, None, r.cursor.as_deref()).await.map_err(Stop::Store)?;
        self.recovered(tenant, c).await?;
        let mut tally = Tally::default();
        let mut imported = Vec::new();
        for product in page.products {
            for variant in 0..product.variants.len() {
                tally.listed += 1;
                let v = &product.variants[variant];
                let sku = v.sku.as_deref().map(str::trim).unwrap_or_default().to_owned();
                if sku.is_empty() || identifier(&sku, 64).is_err() {
                    tally.skip(format!("variant {} has no usable SKU", v.id));
                    continue;
                }
                match self.local_product(tenant, c, &product, variant, &sku).await? {
                    Ok((product_id, created)) => imported.push(Imported {
                        product: product.clone(),
                        variant,
                        product_id,
                        sku,
                        created,
                    }),
                    Err(why) => tally.skip(format!("variant {} ({sku}): {why}", v.id)),
                }
            }
        }
        let now = Utc::now();
        let txn = crate::platform::db::begin(&self.db).await?;
        for i in imported {
            let v = &i.product.variants[i.variant];
            let inserted = mapping::Entity::insert(mapping::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant_id: Set(tenant.id()),
                connection_id: Set(c.id),
                product_id: Set(i.product_id),
                remote_product_id: Set(i.product.id.clone()),
                remote_variant_id: Set(v.id.clone()),
                inventory_item_id: Set(v.inventory_item_id.clone()),
                sku: Set(i.sku.clone()),
                changes: Set(0),
                dirty: Set(false),
                last_pushed_quantity: Set(None),
                last_pushed_at: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
            })
            // Either side mapped already (any unique index): nothing.
            .on_conflict(OnConflict::new().do_nothing().to_owned())
            .exec_without_returning(&txn)
            .await;
            let inserted = match inserted {
                Ok(rows) => rows > 0,
                Err(sea_orm::DbErr::RecordNotInserted) => false,
                Err(err) => return Err(err.into()),
            };
            if !inserted {
                tally.skip(format!("variant {} ({}): it or its product is mapped already", v.id, i.sku));
                continue;
            }
            if i.created {
                tally.created += 1;
            } else {
                tally.linked += 1;
            }
            let data = json!({"connection_id": c.id, "product_id": i.product_id, "sku": i.sku,
                "remote_product_id": i.product.id, "remote_variant_id": v.id, "created": i.created});
            events::publish(&txn, tenant.id(), &CHANNEL_PRODUCT_IMPORTED, data).await?;
        }
        use sea_orm::sea_query::ExprTrait;
        let add = |column: run::Column, n: i64| Expr::col(column).add(n);
        let mut update = tenant
            .update_many::<run::Entity>()
            .filter(run::Column::Id.eq(r.id))
            .filter(run::Column::Status.is_in([PENDING, RUNNING]))
            .col_expr(run::Column::Pages, add(run::Column::Pages, 1))
            .col_expr(run::Column::Listed, add(run::Column::Listed, tally.listed))
            .col_expr(run::Column::Linked, add(run::Column::Linked, tally.linked))
            .col_expr(run::Column::Created, add(run::Column::Created, tally.created))
            .col_expr(run::Column::Skipped, add(run::Column::Skipped, tally.skipped))
            .col_expr(run::Column::Cursor, Expr::value(page.next.clone()))
            .col_expr(run::Column::StartedAt, Expr::value(r.started_at.unwrap_or(now)))
            .col_expr(run::Column::UpdatedAt, Expr::value(now));
        if let Some(error) = &tally.error {
            update = update.col_expr(run::Column::Error, Expr::value(error.clone()));
        }
        update = match &page.next {
            Some(_) => update.col_expr(run::Column::Status, Expr::value(RUNNING)),
            None => update
                .col_expr(run::Column::Status, Expr::value(SUCCEEDED))
                .col_expr(run::Column::FinishedAt, Expr::value(now)),
        };
        if update.exec(&txn).await?.rows_affected == 0 {
            return Ok(()); // ended meanwhile: this page's work is dropped
        }
        match page.next {
            Some(_) => {
                let job = NewJob::new(IMPORT_JOB, json!({"run_id": r.id})).tenant(tenant.id()).priority(4);
                jobs::enqueue(&txn, job).await?;
            }
            None => {
                let done = tenant
                    .get::<run::Entity>(&txn, r.id)
                    .await?
                    .ok_or_else(|| ApiError::not_found("channel import"))?;
                let data = json!({"run_id": r.id, "connection_id": c.id, "kind": r.kind, "listed": done.listed,
                    "linked": done.linked, "created": done.created, "skipped": done.skipped});
                events::publish(&txn, tenant.id(), &CHANNEL_SYNC_SUCCEEDED, data).await?;
            }
        }
        txn.commit().await?;
        Ok(())
    }

    /// The listener: mark the mappings of the changed products at the
    /// changed warehouses dirty and queue their stores' pushes.
    async fn stock_changed(&self, tenant: TenantScope, data: &Value) -> ApiResult<()> {
        let id = |v: &Value| v.as_str().and_then(|s| Uuid::parse_str(s).ok());
        let mut changed: HashSet<(Uuid, Uuid)> = HashSet::new();
        match data["lines"].as_array() {
            Some(lines) => {
                for line in lines {
                    if let (Some(p), Some(w)) = (id(&line["product_id"]), id(&line["warehouse_id"])) {
                        changed.insert((p, w));
                    }
                }
            }
            None => {
                if let Some(p) = id(&data["product_id"]) {
                    for key in ["warehouse_id", "from_warehouse_id", "to_warehouse_id"] {
                        if let Some(w) = id(&data[key]) {
                            changed.insert((p, w));
                        }
                    }
                }
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let warehouses: HashSet<Uuid> = changed.iter().map(|(_, w)| *w).collect();
        let connections = tenant
            .find::<connection::Entity>()
            .filter(connection::Column::WarehouseId.is_in(warehouses))
            .filter(connection::Column::Status.ne(DISCONNECTED))
            .all(&self.db)
            .await?;
        if connections.is_empty() {
            return Ok(());
        }
        let txn = crate::platform::db::begin(&self.db).await?;
        for c in &connections {
            let products: Vec<Uuid> =
                changed.iter().filter(|(_, w)| *w == c.warehouse_id).map(|(p, _)| *p).collect();
            let condition = Condition::all()
                .add(mapping::Column::ConnectionId.eq(c.id))
                .add(mapping::Column::ProductId.is_in(products.clone()));
            let mapped = tenant.find::<mapping::Entity>().filter(condition.clone()).count(&txn).await?;
            if mapped > 0 {
                mark_dirty(&txn, tenant, condition).await?;
                queue_push(&txn, tenant, c.id, self.attempts).await?;
            }
        }
        txn.commit().await?;
        Ok(())
    }
}

/// What a verified webhook came to, and the stock change it booked.
enum Handled {
    Done {
        outcome: &'static str,
        detail: Option<String>,
    },
    /// Refused by inventory (e.g. it would take more than is there): the
    /// transaction is rolled back, the receipt kept.
    Rejected(String),
}

impl SeaOrmChannels {
    /// Log a receipt outside any change.
    #[allow(clippy::too_many_arguments)]
    async fn log_receipt(
        &self,
        db: &impl ConnectionTrait,
        c: &connection::Model,
        inbound: Option<&Inbound>,
        dedupe: bool,
        verified: bool,
        outcome: &str,
        detail: Option<String>,
        started: std::time::Instant,
    ) -> ApiResult<receipt::Model> {
        let event_id = inbound.and_then(|i| i.event_id.clone());
        let row = receipt::Entity::insert(receipt::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(c.tenant_id),
            connection_id: Set(c.id),
            topic: Set(inbound.and_then(|i| i.topic.clone())),
            dedupe_key: Set(event_id.clone().filter(|_| dedupe)),
            event_id: Set(event_id),
            verified: Set(verified),
            outcome: Set(outcome.to_owned()),
            detail: Set(detail),
            duration_ms: Set(i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)),
            received_at: Set(Utc::now()),
        })
        .exec_with_returning(db)
        .await?;
        Ok(row)
    }

    /// Book a verified stock change: the store now holds `quantity` where
    /// it held what was last pushed, so on hand moves by the difference
    /// (a sale on the store is a negative one). Units sold (a receipt) move
    /// it by minus each line. The movement's `stock.adjusted` then pushes
    /// the new ATP to every store.
    async fn apply(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        c: &connection::Model,
        inbound: &Inbound,
    ) -> ApiResult<Handled> {
        let done = |outcome, detail: &str| Ok(Handled::Done { outcome, detail: Some(detail.to_owned()) });
        if !inbound.sold.is_empty() {
            return self.apply_sales(txn, c, inbound).await;
        }
        let Some(stock) = &inbound.stock else {
            return done(IGNORED, inbound.note.as_deref().unwrap_or("the topic carries no stock change"));
        };
        if stock.location_id.is_some() && stock.location_id != c.remote_location_id {
            return done(IGNORED, "a location other than the connection's");
        }
        let by = match (&stock.inventory_item_id, &stock.variant_id) {
            (Some(item), _) => mapping::Column::InventoryItemId.eq(item.clone()),
            (None, Some(variant)) => mapping::Column::RemoteVariantId.eq(variant.clone()),
            (None, None) => return done(IGNORED, "the change names no variant"),
        };
        let Some(m) = mapping_of(txn, c, by).await? else {
            return done(UNMAPPED, "no local product is mapped to the variant");
        };
        let Some(pushed) = m.last_pushed_quantity else {
            return done(IGNORED, "nothing was pushed for the product yet: the change cannot be told apart");
        };
        let delta = stock.quantity - pushed;
        if delta == 0 {
            return done(UNCHANGED, "the store holds what was pushed");
        }
        if let Err(why) = self.book(txn, c, inbound, &m, delta, Some(stock.quantity)).await? {
            return Ok(Handled::Rejected(why));
        }
        Ok(Handled::Done { outcome: APPLIED, detail: Some(format!("on hand {delta:+}")) })
    }

    /// Units sold on the store, line by line: each mapped variant's product
    /// moves by minus the units, and the store is taken to hold that many
    /// fewer than was pushed. One line refused refuses them all.
    async fn apply_sales(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        c: &connection::Model,
        inbound: &Inbound,
    ) -> ApiResult<Handled> {
        let (mut booked, mut unmapped) = (Vec::new(), Vec::new());
        for sale in &inbound.sold {
            let by = mapping::Column::RemoteVariantId.eq(sale.variant_id.clone());
            let Some(m) = mapping_of(txn, c, by).await? else {
                unmapped.push(sale.variant_id.as_str());
                continue;
            };
            let remote = m.last_pushed_quantity.map(|pushed| (pushed - sale.quantity).max(0));
            if let Err(why) = self.book(txn, c, inbound, &m, -sale.quantity, remote).await? {
                return Ok(Handled::Rejected(format!("{}: {why}", m.sku)));
            }
            booked.push(format!("{} {:+}", m.sku, -sale.quantity));
        }
        let unmapped =
            (!unmapped.is_empty()).then(|| format!("no local product is mapped to {}", unmapped.join(", ")));
        if booked.is_empty() {
            return Ok(Handled::Done { outcome: UNMAPPED, detail: unmapped });
        }
        let detail = format!("on hand {}", booked.join(", "));
        let detail = match unmapped {
            Some(unmapped) => format!("{detail}; {unmapped}"),
            None => detail,
        };
        Ok(Handled::Done { outcome: APPLIED, detail: Some(detail) })
    }

    /// One stock movement of a mapped product by `delta`, referencing the
    /// event (or what it names), with `channel.inventory_updated`; the
    /// mapping then says the store holds `remote` when known. `Err`: why
    /// inventory refused it (e.g. it would take more than is on hand).
    async fn book(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        c: &connection::Model,
        inbound: &Inbound,
        m: &mapping::Model,
        delta: i64,
        remote: Option<i64>,
    ) -> ApiResult<Result<(), String>> {
        let tenant = TenantScope::new(c.tenant_id);
        let of = inbound.reference.as_deref().or(inbound.event_id.as_deref()).unwrap_or("webhook");
        let cause = Cause {
            user_id: None,
            reason: Some(format!("{} webhook", c.channel)),
            reference: Some(format!("channel:{}:{of}", c.id)),
        };
        let line = Line { product_id: m.product_id, warehouse_id: c.warehouse_id, quantity: delta };
        let level = match self.inventory.adjust(txn, tenant, line, cause).await {
            Ok(level) => level,
            Err(err)
                if matches!(
                    err.code,
                    Code::InsufficientStock
                        | Code::StockLimitExceeded
                        | Code::ValidationFailed
                        | Code::NotFound
                ) =>
            {
                return Ok(Err(err.detail));
            }
            Err(err) => return Err(err),
        };
        if let Some(remote) = remote {
            tenant
                .update_many::<mapping::Entity>()
                .filter(mapping::Column::Id.eq(m.id))
                .col_expr(mapping::Column::LastPushedQuantity, Expr::value(remote))
                .col_expr(mapping::Column::UpdatedAt, Expr::value(Utc::now()))
                .exec(txn)
                .await?;
        }
        let data = json!({"connection_id": c.id, "product_id": m.product_id, "sku": m.sku,
            "remote_quantity": remote, "quantity": delta, "on_hand": level.on_hand});
        events::publish(txn, tenant.id(), &CHANNEL_INVENTORY_UPDATED, data).await?;
        Ok(Ok(()))
    }
}

#[async_trait::async_trait]
impl ChannelService for SeaOrmChannels {
    fn channels(&self) -> Vec<&'static str> {
        self.drivers.names()
    }

    async fn create_connection(&self, tenant: TenantScope, new: NewConnection) -> ApiResult<ConnectionView> {
        self.check_new(&new).map_err(ApiError::validation)?;
        self.check_warehouse(tenant, new.warehouse_id).await?;
        let now = Utc::now();
        let sealed =
            self.cipher.encrypt(&serde_json::to_string(&new.credentials).map_err(ApiError::internal)?);
        let name = new.name.trim().to_owned();
        let model = connection::Entity::insert(connection::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.id()),
            channel: Set(new.channel),
            name: Set(name.clone()),
            base_url: Set(new.base_url),
            credentials: Set(sealed),
            webhook_secret: Set(new.webhook_secret.map(|s| self.cipher.encrypt(&s))),
            warehouse_id: Set(new.warehouse_id),
            remote_location_id: Set(new.remote_location_id),
            currency: Set(new.currency),
            safety_buffer: Set(new.safety_buffer),
            status: Set(CONNECTED.to_owned()),
            last_error: Set(None),
            status_changed_at: Set(now),
            push_queued: Set(false),
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .exec_with_returning(&self.db)
        .await
        .map_err(Self::name_taken(&name))?;
        self.view(model)
    }

    async fn list_connections(
        &self,
        tenant: TenantScope,
        filter: ConnectionFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<ConnectionView>> {
        let condition = Condition::all()
            .add_option(filter.channel.map(|c| connection::Column::Channel.eq(c)))
            .add_option(filter.status.map(|s| connection::Column::Status.eq(s)));
        let scope = tenant.find::<connection::Entity>();
        let Paged { data, meta } = list.fetch(&self.db, scope, condition, filter.sort).await?;
        Ok(Paged { data: data.into_iter().map(|c| self.view(c)).collect::<ApiResult<_>>()?, meta })
    }

    async fn get_connection(&self, tenant: TenantScope, id: Uuid) -> ApiResult<ConnectionView> {
        self.view(find_connection(&self.db, tenant, id).await?)
    }

    async fn update_connection(
        &self,
        tenant: TenantScope,
        id: Uuid,
        if_match: Option<i32>,
        changes: ConnectionChanges,
    ) -> ApiResult<ConnectionView> {
        let current = find_connection(&self.db, tenant, id).await?;
        let driver = self.driver(&current.channel)?;
        let mut checks = Checks::default();
        if let Some(credentials) = &changes.credentials {
            Self::check_credentials(&mut checks, driver.as_ref(), credentials);
        }
        self.check_common(
            &mut checks,
            changes.name.as_deref(),
            changes.base_url.as_deref(),
            changes.webhook_secret.as_deref(),
        );
        if let Some(location) = &changes.remote_location_id {
            checks.check("remote_location_id", identifier(location, 200));
        }
        if let Some(b) = changes.safety_buffer {
            checks.check("safety_buffer", buffer(b));
        }
        checks.finish().map_err(ApiError::validation)?;
        if let Some(warehouse) = changes.warehouse_id {
            self.check_warehouse(tenant, warehouse).await?;
        }
        let txn = crate::platform::db::begin(&self.db).await?;
        let current = find_connection(&txn, tenant, id).await?;
        check_version("channel connection", current.version, if_match)?;
        let now = Utc::now();
        let mut update = tenant
            .update_many::<connection::Entity>()
            .filter(connection::Column::Id.eq(id))
            .filter(connection::Column::Version.eq(current.version))
            .col_expr(connection::Column::Version, Expr::value(current.version + 1))
            .col_expr(connection::Column::UpdatedAt, Expr::value(now));
        let name = changes.name.as_deref().map(str::trim).unwrap_or(&current.name).to_owned();
        if changes.name.is_some() {
            update = update.col_expr(connection::Column::Name, Expr::value(name.clone()));
        }
        if let Some(url) = changes.base_url.clone() {
            update = update.col_expr(connection::Column::BaseUrl, Expr::value(url));
        }
        if let Some(secret) = &changes.webhook_secret {
            update =
                update.col_expr(connection::Column::WebhookSecret, Expr::value(self.cipher.encrypt(secret)));
        }
        if let Some(location) = changes.remote_location_id.clone() {
            update = update.col_expr(connection::Column::RemoteLocationId, Expr::value(location));
        }
        if let Some(warehouse) = changes.warehouse_id {
            update = update.col_expr(connection::Column::WarehouseId, Expr::value(warehouse));
        }
        if let Some(b) = changes.safety_buffer {
            update = update.col_expr(connection::Column::SafetyBuffer, Expr::value(b));
        }
        if let Some(credentials) = &changes.credentials {
            let sealed =
                self.cipher.encrypt(&serde_json::to_string(credentials).map_err(ApiError::internal)?);
            update = update
                .col_expr(connection::Column::Credentials, Expr::value(sealed))
                .col_expr(connection::Column::Status, Expr::value(CONNECTED))
                .col_expr(connection::Column::LastError, Expr::value(Option::<String>::None))
                .col_expr(connection::Column::StatusChangedAt, Expr::value(now));
        }
        if update.exec(&txn).await.map_err(Self::name_taken(&name))?.rows_affected == 0 {
            return Err(changed_meanwhile("channel connection"));
        }
        // What the store should show changed (or it can be reached again):
        // push every mapped product.
        let resync = changes.credentials.is_some()
            || changes.base_url.is_some()
            || changes.remote_location_id.is_some()
            || changes.warehouse_id.is_some_and(|w| w != current.warehouse_id)
            || changes.safety_buffer.is_some_and(|b| b != current.safety_buffer);
        if resync {
            mark_dirty(&txn, tenant, Condition::all().add(mapping::Column::ConnectionId.eq(id))).await?;
            let mapped = tenant
                .find::<mapping::Entity>()
                .filter(mapping::Column::ConnectionId.eq(id))
                .count(&txn)
                .await?;
            if mapped > 0 {
                queue_push(&txn, tenant, id, self.attempts).await?;
            }
        }
        let updated = find_connection(&txn, tenant, id).await?;
        txn.commit().await?;
        self.view(updated)
    }

    async fn delete_connection(&self, tenant: TenantScope, id: Uuid) -> ApiResult<()> {
        let txn = crate::platform::db::begin(&self.db).await?;
        find_connection(&txn, tenant, id).await?;
        tenant
            .delete_many::<mapping::Entity>()
            .filter(mapping::Column::ConnectionId.eq(id))
            .exec(&txn)
            .await?;
        tenant
            .delete_many::<entity::channel_drift::Entity>()
            .filter(entity::channel_drift::Column::ConnectionId.eq(id))
            .exec(&txn)
            .await?;
        tenant.delete_many::<dead::Entity>().filter(dead::Column::ConnectionId.eq(id)).exec(&txn).await?;
        tenant.delete_many::<run::Entity>().filter(run::Column::ConnectionId.eq(id)).exec(&txn).await?;
        tenant
            .delete_many::<receipt::Entity>()
            .filter(receipt::Column::ConnectionId.eq(id))
            .exec(&txn)
            .await?;
        tenant.delete_many::<connection::Entity>().filter(connection::Column::Id.eq(id)).exec(&txn).await?;
        txn.commit().await?;
        Ok(())
    }

    async fn remote_product(
        &self,
        tenant: TenantScope,
        id: Uuid,
        remote_id: &str,
    ) -> ApiResult<RemoteProduct> {
        let c = find_connection(&self.db, tenant, id).await?;
        let driver = self.driver(&c.channel)?;
        let credentials = self.credentials(&c)?;
        let pace = self.pace(&c, &credentials)?;
        let store = store_of(&c, &credentials, &pace);
        match driver.fetch_product(&store, remote_id).await {
            Ok(product) => {
                self.recovered(tenant, &c).await?;
                Ok(product)
            }
            Err(err) => Err(self.store_error(tenant, &c, err).await),
        }
    }

    async fn start_import(&self, tenant: TenantScope, id: Uuid) -> ApiResult<ImportView> {
        let txn = crate::platform::db::begin(&self.db).await?;
        let c = find_connection(&txn, tenant, id).await?;
        let now = Utc::now();
        let r = run::Entity::insert(run::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.id()),
            connection_id: Set(c.id),
            kind: Set("import".to_owned()),
            status: Set(PENDING.to_owned()),
            cursor: Set(None),
            pages: Set(0),
            listed: Set(0),
            linked: Set(0),
            created: Set(0),
            skipped: Set(0),
            error: Set(None),
            total: Set(0),
            done: Set(0),
            failed: Set(0),
            drifted: Set(0),
            started_at: Set(None),
            finished_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .exec_with_returning(&txn)
        .await?;
        let data = json!({"run_id": r.id, "connection_id": c.id, "kind": r.kind});
        events::publish(&txn, tenant.id(), &CHANNEL_SYNC_STARTED, data).await?;
        jobs::enqueue(&txn, NewJob::new(IMPORT_JOB, json!({"run_id": r.id})).tenant(tenant.id()).priority(4))
            .await?;
        txn.commit().await?;
        Ok(r.into())
    }

    async fn get_import(&self, tenant: TenantScope, id: Uuid, run_id: Uuid) -> ApiResult<ImportView> {
        let r = tenant
            .find_by_id::<run::Entity>(run_id)
            .filter(run::Column::ConnectionId.eq(id))
            .one(&self.db)
            .await?
            .ok_or_else(|| ApiError::not_found("channel import"))?;
        Ok(r.into())
    }

    async fn start_sync(&self, tenant: TenantScope, id: Uuid) -> ApiResult<SyncRunView> {
        self.start_run(tenant, id, PUSH).await
    }

    async fn start_reconcile(&self, tenant: TenantScope, id: Uuid) -> ApiResult<SyncRunView> {
        self.start_run(tenant, id, RECONCILE).await
    }

    async fn list_sync_runs(
        &self,
        tenant: TenantScope,
        id: Uuid,
        list: &ListRequest,
    ) -> ApiResult<Paged<SyncRunView>> {
        self.sync_runs(tenant, id, list).await
    }

    async fn get_sync_run(&self, tenant: TenantScope, id: Uuid, run_id: Uuid) -> ApiResult<SyncRunView> {
        Ok(self.find_sync_run(tenant, id, run_id).await?.into())
    }

    async fn list_drifts(
        &self,
        tenant: TenantScope,
        id: Uuid,
        run_id: Uuid,
        list: &ListRequest,
    ) -> ApiResult<Paged<DriftView>> {
        self.drifts(tenant, id, run_id, list).await
    }

    async fn list_mappings(
        &self,
        tenant: TenantScope,
        filter: MappingFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<MappingView>> {
        let condition = Condition::all()
            .add_option(filter.connection_id.map(|c| mapping::Column::ConnectionId.eq(c)))
            .add_option(filter.product_id.map(|p| mapping::Column::ProductId.eq(p)));
        let scope = tenant.find::<mapping::Entity>();
        Ok(list.fetch(&self.db, scope, condition, filter.sort).await?.map(Into::into))
    }

    async fn push_product(&self, tenant: TenantScope, id: Uuid, product_id: Uuid) -> ApiResult<MappingView> {
        let txn = crate::platform::db::begin(&self.db).await?;
        let c = find_connection(&txn, tenant, id).await?;
        if c.status == DISCONNECTED {
            let detail = "the connection is disconnected; save working credentials first";
            return Err(ApiError::new(Code::Conflict, detail));
        }
        let condition = Condition::all()
            .add(mapping::Column::ConnectionId.eq(id))
            .add(mapping::Column::ProductId.eq(product_id));
        let m = tenant
            .find::<mapping::Entity>()
            .filter(condition.clone())
            .one(&txn)
            .await?
            .ok_or_else(|| ApiError::not_found("mapping of the product on this connection"))?;
        mark_dirty(&txn, tenant, condition).await?;
        queue_push(&txn, tenant, id, self.attempts).await?;
        let m =
            tenant.get::<mapping::Entity>(&txn, m.id).await?.ok_or_else(|| ApiError::not_found("mapping"))?;
        txn.commit().await?;
        Ok(m.into())
    }

    async fn list_dead_letters(
        &self,
        tenant: TenantScope,
        filter: DeadLetterFilter,
        list: &ListRequest,
    ) -> ApiResult<Paged<DeadLetterView>> {
        let condition =
            Condition::all().add_option(filter.connection_id.map(|c| dead::Column::ConnectionId.eq(c)));
        Ok(list.fetch(&self.db, tenant.find::<dead::Entity>(), condition, filter.sort).await?.map(Into::into))
    }

    async fn replay_dead_letter(&self, tenant: TenantScope, id: Uuid) -> ApiResult<MappingView> {
        let letter = tenant
            .get::<dead::Entity>(&self.db, id)
            .await?
            .ok_or_else(|| ApiError::not_found("channel dead letter"))?;
        let mapping_id = letter.mapping_id;
        if self.replay(tenant, vec![letter]).await?.skipped > 0 {
            let detail = "the connection is disconnected; save working credentials first";
            return Err(ApiError::new(Code::Conflict, detail));
        }
        let m = tenant
            .get::<mapping::Entity>(&self.db, mapping_id)
            .await?
            .ok_or_else(|| ApiError::not_found("mapping"))?;
        Ok(m.into())
    }

    async fn replay_dead_letters(
        &self,
        tenant: TenantScope,
        connection_id: Option<Uuid>,
    ) -> ApiResult<DeadLetterCount> {
        if let Some(id) = connection_id {
            find_connection(&self.db, tenant, id).await?;
        }
        let letters = tenant
            .find::<dead::Entity>()
            .filter(Condition::all().add_option(connection_id.map(|c| dead::Column::ConnectionId.eq(c))))
            .all(&self.db)
            .await?;
        self.replay(tenant, letters).await
    }

    async fn dismiss_dead_letter(&self, tenant: TenantScope, id: Uuid) -> ApiResult<()> {
        let gone =
            tenant.delete_many::<dead::Entity>().filter(dead::Column::Id.eq(id)).exec(&self.db).await?;
        if gone.rows_affected == 0 {
            return Err(ApiError::not_found("channel dead letter"));
        }
        Ok(())
    }

    async fn dismiss_dead_letters(
        &self,
        tenant: TenantScope,
        connection_id: Option<Uuid>,
    ) -> ApiResult<DeadLetterCount> {
        if let Some(id) = connection_id {
            find_connection(&self.db, tenant, id).await?;
        }
        let gone = tenant
            .delete_many::<dead::Entity>()
            .filter(Condition::all().add_option(connection_id.map(|c| dead::Column::ConnectionId.eq(c))))
            .exec(&self.db)
            .await?;
        Ok(DeadLetterCount { count: gone.rows_affected, skipped: 0 })
    }

    async fn webhook_tenant(&self, id: Uuid) -> ApiResult<Uuid> {
        // Not yet knowing whose it is, a read across tenants.
        let c = SystemScope
            .get::<connection::Entity>(&self.db, id)
            .await?
            .ok_or_else(|| ApiError::not_found("channel connection"))?;
        Ok(c.tenant_id)
    }

    async fn receive_webhook(&self, id: Uuid, headers: Headers, body: &[u8]) -> ApiResult<ReceiptView> {
        let started = std::time::Instant::now();
        // Not yet knowing whose it is, the one read across tenants.
        let c = SystemScope
            .get::<connection::Entity>(&self.db, id)
            .await?
            .ok_or_else(|| ApiError::not_found("channel connection"))?;
        let driver = self.driver(&c.channel)?.clone();
        let secret = match &c.webhook_secret {
            Some(sealed) => Some(self.cipher.decrypt(sealed).map_err(ApiError::internal)?),
            None => None,
        };
        let refused = |detail: &str| ApiError::new(Code::Unauthenticated, detail.to_owned());
        if let Err(why) = driver.verify_webhook(secret.as_deref(), &headers, body).await {
            self.log_receipt(&self.db, &c, None, false, false, FORGED, Some(why.clone()), started).await?;
            tracing::warn!(connection_id = %c.id, tenant_id = %c.tenant_id, "refused a channel webhook: {why}");
            return Err(refused(&format!("the webhook does not verify: {why}")));
        }
        let mut inbound = match driver.parse_webhook(&headers, body) {
            Ok(inbound) => inbound,
            Err(why) => {
                let row =
                    self.log_receipt(&self.db, &c, None, false, true, REJECTED, Some(why), started).await?;
                return Ok(row.into());
            }
        };
        let tenant = TenantScope::new(c.tenant_id);
        let replay = |event_id: &str| {
            ApiError::new(Code::Unauthenticated, format!("event `{event_id}` was received already"))
        };
        if let Some(event_id) = &inbound.event_id {
            let seen = tenant
                .find::<receipt::Entity>()
                .filter(receipt::Column::ConnectionId.eq(c.id))
                .filter(receipt::Column::DedupeKey.eq(event_id.clone()))
                .count(&self.db)
                .await?;
            if seen > 0 {
                let detail = Some("a second delivery of a received event".to_owned());
                self.log_receipt(&self.db, &c, Some(&inbound), false, true, REPLAYED, detail, started)
                    .await?;
                return Err(replay(event_id));
            }
        }
        if inbound.resource.is_some() {
            // A verified event that names what to read (Etsy's receipt):
            // read it now. When the store fails, nothing is booked and the
            // event stays receivable, so the store's retry books it.
            let credentials = self.credentials(&c)?;
            let pace = self.pace(&c, &credentials)?;
            let store = store_of(&c, &credentials, &pace);
            if let Err(err) = driver.resolve_webhook(&store, &mut inbound).await {
                let detail = Some(format!("the store's resource could not be read: {err}"));
                self.log_receipt(&self.db, &c, Some(&inbound), false, true, REJECTED, detail, started)
                    .await?;
                return Err(self.store_error(tenant, &c, err).await);
            }
        }
        let confirmed = match &inbound.subscribe_url {
            Some(url) => Some(match driver.confirm_subscription(url).await {
                Ok(()) => (CONFIRMED, "the subscription was confirmed".to_owned()),
                Err(why) => (REJECTED, why),
            }),
            None => None,
        };
        let txn = crate::platform::db::begin(&self.db).await?;
        let handled = match confirmed {
            Some((outcome, detail)) => Handled::Done { outcome, detail: Some(detail) },
            None => self.apply(&txn, &c, &inbound).await?,
        };
        let (outcome, detail, booked) = match handled {
            Handled::Done { outcome, detail } => (outcome, detail, true),
            Handled::Rejected(detail) => (REJECTED, Some(detail), false),
        };
        let written = if booked {
            self.log_receipt(&txn, &c, Some(&inbound), true, true, outcome, detail.clone(), started).await
        } else {
            txn.rollback().await?;
            return Ok(self
                .log_receipt(&self.db, &c, Some(&inbound), true, true, outcome, detail, started)
                .await?
                .into());
        };
        let row = match written {
            Ok(row) => row,
            // The same event, received meanwhile by another request.
            Err(err) if err.code == Code::Conflict => {
                txn.rollback().await?;
                let detail = Some("a second delivery of a received event".to_owned());
                self.log_receipt(&self.db, &c, Some(&inbound), false, true, REPLAYED, detail, started)
                    .await?;
                return Err(replay(inbound.event_id.as_deref().unwrap_or_default()));
            }
            Err(err) => return Err(err),
        };
        let data = json!({"connection_id": c.id, "receipt_id": row.id, "topic": row.topic,
            "event_id": row.event_id, "outcome": row.outcome});
        events::publish(&txn, tenant.id(), &CHANNEL_WEBHOOK_RECEIVED, data).await?;
        txn.commit().await?;
        Ok(row.into())
    }

    async fn list_receipts(
        &self,
        tenant: TenantScope,
        id: Uuid,
        sort: Sort<receipt::Column>,
        list: &ListRequest,
    ) -> ApiResult<Paged<ReceiptView>> {
        find_connection(&self.db, tenant, id).await?;
        let condition = Condition::all().add(receipt::Column::ConnectionId.eq(id));
        Ok(list.fetch(&self.db, tenant.find::<receipt::Entity>(), condition, sort).await?.map(Into::into))
    }
}

/// The import and push jobs, for the stores of every tenant.
struct Job {
    channels: Arc<SeaOrmChannels>,
    push: bool,
}

pub fn handlers(channels: &Arc<SeaOrmChannels>) -> Vec<(&'static str, Arc<dyn JobHandler>)> {
    vec![
        (IMPORT_JOB, Arc::new(Job { channels: channels.clone(), push: false })),
        (PUSH_JOB, Arc::new(Job { channels: channels.clone(), push: true })),
        (SYNC_JOB, Arc::new(sync::SyncJob(channels.clone()))),
        (RECONCILE_SCAN_JOB, Arc::new(sync::ReconcileScan(channels.clone()))),
    ]
}

fn id_in(job: &entity::job::Model, field: &str) -> Result<Uuid, JobError> {
    job.payload
        .get(field)
        .and_then(Value::as_str)
        .and_then(|v| Uuid::parse_str(v).ok())
        .ok_or_else(|| JobError::Fail(format!("payload has no {field}")))
}

#[async_trait::async_trait]
impl JobHandler for Job {
    async fn run(&self, _: &AppState, job: &entity::job::Model) -> Result<(), JobError> {
        let tenant =
            TenantScope::new(job.tenant_id.ok_or_else(|| JobError::Fail("job has no tenant".into()))?);
        if self.push {
            self.channels.push(tenant, id_in(job, "connection_id")?, job).await
        } else {
            self.channels.import(tenant, id_in(job, "run_id")?, job).await
        }
    }
}

/// Stock events of mapped products queue pushes to their stores.
pub struct StockChanged(pub Arc<SeaOrmChannels>);

/// The inventory events that change what a store may sell.
const STOCK_EVENTS: [&str; 6] = [
    "stock.adjusted",
    "stock.transferred",
    "stock.reserved",
    "stock.released",
    "stock.shipped",
    // A purchase order's receipt books stock without a `stock.*` event.
    "goods.received",
];

#[async_trait::async_trait]
impl Listener for StockChanged {
    fn name(&self) -> &'static str {
        "channels.stock_changed"
    }

    fn wants(&self, event_type: &str) -> bool {
        STOCK_EVENTS.contains(&event_type)
    }

    /// The events of tenants with a store connected: the others have
    /// nothing to push.
    async fn relevant(
        &self,
        db: &sea_orm::DatabaseTransaction,
        events: &[&entity::event::Model],
    ) -> Result<Vec<Uuid>, sea_orm::DbErr> {
        let tenants: HashSet<Uuid> = events.iter().map(|e| e.tenant_id).collect();
        let connected: HashSet<Uuid> = crate::platform::tenancy::SystemScope
            .find::<connection::Entity>()
            .select_only()
            .column(connection::Column::TenantId)
            .distinct()
            .filter(crate::platform::db::one_of(
                db.get_database_backend(),
                connection::Column::TenantId,
                tenants.into_iter().collect(),
            ))
            .filter(connection::Column::Status.ne(DISCONNECTED))
            .into_tuple()
            .all(db)
            .await?
            .into_iter()
            .collect();
        Ok(events.iter().filter(|e| connected.contains(&e.tenant_id)).map(|e| e.id).collect())
    }

    async fn handle(&self, _: &AppState, event: &entity::event::Model) -> Result<(), JobError> {
        self.0.stock_changed(TenantScope::new(event.tenant_id), &event.data).await?;
        Ok(())
    }
}
