//! Order notifications: what the customer of an order is told when it is
//! placed, paid, completed, failed, cancelled or refunded.
//!
//! The step that moves the order writes, in its own transaction, one row
//! per channel (`log`, `email`, `webhook`) and a durable `orders.notify`
//! job for the rows to send (one for those of every order the step moved
//! together, up to a hundred). The job hands each row to its channel's
//! [`Notifier`]; a row refused is tried again with the job (the runner's
//! backoff; the rows sent meanwhile are not sent again), and the last
//! attempt leaves it `failed` with the error (to be sent again with a
//! resend). A channel the customer turned off, or email with
//! no SMTP host configured, gets its row `skipped`, the reason in
//! `last_error`, so the history shows every decision.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration as StdDuration,
};

use chrono::{DateTime, Utc};
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::authentication::Credentials,
};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DatabaseTransaction, QueryFilter,
    QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    config::Secret,
    error::{ApiError, ApiResult, Code, FieldError},
    platform::{
        db::insert_all,
        events,
        http::{ListRequest, Paged, Sort, Sorts},
        jobs::{self, JobError, NewJob},
        tenancy::TenantScope,
    },
};
use entity::{customer, order, order_notification as notification};

pub const NOTIFY_JOB: &str = "orders.notify";

/// How many notifications of a job are sent side by side.
const SENDS_AT_ONCE: usize = 8;

/// Channels.
pub const LOG: &str = "log";
pub const EMAIL: &str = "email";
pub const WEBHOOK: &str = "webhook";
pub const CHANNELS: [&str; 3] = [LOG, EMAIL, WEBHOOK];

/// What a notification is about.
pub const PLACED: &str = "placed";
pub const PAID: &str = "paid";
pub const COMPLETED: &str = "completed";
pub const FAILED_ORDER: &str = "failed";
pub const CANCELLED: &str = "cancelled";
pub const REFUNDED: &str = "refunded";
pub const TYPES: [&str; 6] = [PLACED, PAID, COMPLETED, FAILED_ORDER, CANCELLED, REFUNDED];

/// Notification states.
pub const PENDING: &str = "pending";
pub const SENT: &str = "sent";
pub const FAILED: &str = "failed";
pub const SKIPPED: &str = "skipped";
pub const STATUSES: [&str; 4] = [PENDING, SENT, FAILED, SKIPPED];

/// `[modules.orders.notifications]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// How many times a notification is tried before it is `failed` (1 to 100).
    pub max_attempts: u32,
    /// The SMTP relay of the email channel.
    pub smtp: SmtpSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self { max_attempts: 5, smtp: SmtpSettings::default() }
    }
}

/// `[modules.orders.notifications.smtp]`: without `host`, email is off.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: Option<String>,
    pub port: u16,
    /// The sender, `orders@shop.example` or `Shop <orders@shop.example>`.
    pub from: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls: SmtpTls,
    /// How long one SMTP conversation may take, in milliseconds (1 to 60000).
    pub timeout_ms: u64,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: None,
            port: 587,
            from: "Nexus <orders@localhost>".to_owned(),
            username: None,
            password: None,
            tls: SmtpTls::Starttls,
            timeout_ms: 10_000,
        }
    }
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text: a relay on the same host or network only.
    None,
    /// Plain, then upgraded with STARTTLS (required).
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// One channel's way of delivering a notification.
#[async_trait::async_trait]
pub trait Notifier: Send + Sync {
    fn channel(&self) -> &'static str;
    /// Whether the channel can send at all (email: an SMTP host is set).
    fn enabled(&self) -> bool {
        true
    }
    /// Deliver `n`; the error says why not.
    async fn send(&self, db: &DatabaseConnection, n: &notification::Model) -> Result<(), String>;
}

/// Writes the notification to the server's log.
pub struct LogNotifier;

#[async_trait::async_trait]
impl Notifier for LogNotifier {
    fn channel(&self) -> &'static str {
        LOG
    }

    async fn send(&self, _: &DatabaseConnection, n: &notification::Model) -> Result<(), String> {
        tracing::info!(tenant = %n.tenant_id, order = %n.order_id, notification = %n.id,
            kind = n.notification_type, to = n.recipient, subject = n.subject, "order notification");
        Ok(())
    }
}

/// Sends the notification as a plain-text email over SMTP.
pub struct EmailNotifier {
    transport: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
}

impl EmailNotifier {
    pub fn new(settings: &SmtpSettings) -> anyhow::Result<Self> {
        let Some(host) = settings.host.as_deref().filter(|h| !h.trim().is_empty()) else {
            return Ok(Self { transport: None });
        };
        anyhow::ensure!(
            (1..=60_000).contains(&settings.timeout_ms),
            "`modules.orders.notifications.smtp.timeout_ms`: must be between 1 and 60000"
        );
        let from: Mailbox = settings.from.parse().map_err(|e| {
            anyhow::anyhow!("`modules.orders.notifications.smtp.from`: not an email address ({e})")
        })?;
        let mut builder = match settings.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
        }
        .port(settings.port)
        .timeout(Some(StdDuration::from_millis(settings.timeout_ms)));
        match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
            }
            (None, None) => {}
            _ => anyhow::bail!(
                "`modules.orders.notifications.smtp`: give both `username` and `password`, or neither"
            ),
        }
        Ok(Self { transport: Some((builder.build(), from)) })
    }
}

#[async_trait::async_trait]
impl Notifier for EmailNotifier {
    fn channel(&self) -> &'static str {
        EMAIL
    }

    fn enabled(&self) -> bool {
        self.transport.is_some()
    }

    async fn send(&self, _: &DatabaseConnection, n: &notification::Model) -> Result<(), String> {
        let Some((transport, from)) = &self.transport else {
            return Err(EMAIL_OFF.to_owned());
        };
        let to: Mailbox = n.recipient.parse().map_err(|e| format!("bad recipient `{}`: {e}", n.recipient))?;
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(&n.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(n.body.clone())
            .map_err(|e| e.to_string())?;
        transport.send(message).await.map(|_| ()).map_err(|e| format!("SMTP: {e}"))
    }
}

/// Hands the notification to the tenant's webhooks: an
/// `order.notification` event through the outbox, signed and retried by
/// the webhook deliveries.
pub struct WebhookNotifier;

#[async_trait::async_trait]
impl Notifier for WebhookNotifier {
    fn channel(&self) -> &'static str {
        WEBHOOK
    }

    async fn send(&self, db: &DatabaseConnection, n: &notification::Model) -> Result<(), String> {
        let data = json!({"notification_id": n.id, "order_id": n.order_id, "customer_id": n.customer_id,
            "type": n.notification_type, "subject": n.subject, "body": n.body});
        events::publish(db, n.tenant_id, &super::ORDER_NOTIFICATION, data)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

const EMAIL_OFF: &str = "the email channel is off: no SMTP host is configured";

/// The notifiers of every channel, and how often a notification is tried.
pub struct Notifiers {
    by_channel: HashMap<&'static str, Arc<dyn Notifier>>,
    max_attempts: i32,
}

impl Notifiers {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (1..=100).contains(&settings.max_attempts),
            "`modules.orders.notifications.max_attempts`: must be between 1 and 100"
        );
        let all: [Arc<dyn Notifier>; 3] =
            [Arc::new(LogNotifier), Arc::new(EmailNotifier::new(&settings.smtp)?), Arc::new(WebhookNotifier)];
        Ok(Self {
            by_channel: all.into_iter().map(|n| (n.channel(), n)).collect(),
            max_attempts: i32::try_from(settings.max_attempts).unwrap_or(100),
        })
    }

    fn enabled(&self, channel: &str) -> bool {
        self.by_channel.get(channel).is_some_and(|n| n.enabled())
    }
}

impl Default for Notifiers {
    fn default() -> Self {
        Self::new(&Settings::default()).unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }
}

/// A notification as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "OrderNotification")]
pub struct NotificationView {
    pub id: Uuid,
    pub order_id: Uuid,
    pub customer_id: Uuid,
    /// placed, paid, completed, failed, cancelled or refunded.
    #[serde(rename = "type")]
    #[graphql(name = "type")]
    #[schema(example = "completed")]
    pub notification_type: String,
    /// log, email or webhook.
    #[schema(example = "email")]
    pub channel: String,
    /// The email address (log, email) or the event type (webhook).
    #[schema(example = "ada@example.com")]
    pub recipient: String,
    #[schema(example = "Your order 1042 is complete")]
    pub subject: String,
    pub body: String,
    /// pending, sent, failed or skipped.
    #[schema(example = "sent")]
    pub status: String,
    /// Deliveries tried.
    pub attempts: i32,
    /// Why the last try failed, or why it was skipped.
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<notification::Model> for NotificationView {
    fn from(m: notification::Model) -> Self {
        Self {
            id: m.id,
            order_id: m.order_id,
            customer_id: m.customer_id,
            notification_type: m.notification_type,
            channel: m.channel,
            recipient: m.recipient,
            subject: m.subject,
            body: m.body,
            status: m.status,
            attempts: m.attempts,
            last_error: m.last_error,
            sent_at: m.sent_at,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// Notifications: newest first unless sorted otherwise.
pub const NOTIFICATION_SORTS: Sorts<notification::Column> =
    Sorts { fields: &[("created_at", notification::Column::CreatedAt)], default: "-created_at" };

/// Which notifications a list holds.
pub struct NotificationFilter {
    pub notification_type: Option<String>,
    pub channel: Option<String>,
    pub status: Option<String>,
    pub customer_id: Option<Uuid>,
    pub order_id: Option<Uuid>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub sort: Sort<notification::Column>,
}

/// 400 `invalid_query` naming the field unless each given filter is known.
pub fn check_filter(f: &NotificationFilter) -> ApiResult<()> {
    crate::platform::http::one_of("type", f.notification_type.as_deref(), &TYPES)?;
    crate::platform::http::one_of("channel", f.channel.as_deref(), &CHANNELS)?;
    crate::platform::http::one_of("status", f.status.as_deref(), &STATUSES)?;
    check_window(f.created_after, f.created_before)
}

/// 400 when a window ends before it starts.
pub fn check_window(after: Option<DateTime<Utc>>, before: Option<DateTime<Utc>>) -> ApiResult<()> {
    match (after, before) {
        (Some(a), Some(b)) if b < a => {
            let mut err = ApiError::new(Code::InvalidQuery, "`created_before` is before `created_after`");
            err.errors = vec![FieldError::new("created_before", "must not be before created_after")];
            Err(err)
        }
        _ => Ok(()),
    }
}

/// The most `recent` gives.
pub const MAX_RECENT: i64 = 100;

/// 400 unless `limit` is 1 to 100 (10 when absent).
pub fn check_recent(limit: Option<i64>) -> ApiResult<u64> {
    match limit.unwrap_or(10) {
        n @ 1..=MAX_RECENT => Ok(n.unsigned_abs()),
        _ => {
            let mut err = ApiError::new(Code::InvalidQuery, "`limit` must be between 1 and 100");
            err.errors = vec![FieldError::new("limit", "must be between 1 and 100")];
            Err(err)
        }
    }
}

/// Counts of notifications per state.
#[derive(Clone, Debug, Default, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "NotificationCounts")]
pub struct Counts {
    pub total: i64,
    pub pending: i64,
    pub sent: i64,
    pub failed: i64,
    pub skipped: i64,
}

impl Counts {
    fn add(&mut self, status: &str, n: i64) {
        self.total += n;
        match status {
            PENDING => self.pending += n,
            SENT => self.sent += n,
            FAILED => self.failed += n,
            _ => self.skipped += n,
        }
    }
}

/// One channel: whether it can send, and its notifications per state.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "NotificationChannelStats")]
pub struct ChannelStats {
    #[schema(example = "email")]
    pub channel: String,
    /// `false`: the channel is off (email without an SMTP host); its
    /// notifications are skipped.
    pub enabled: bool,
    pub counts: Counts,
}

/// Notifications created in a window, per state, per channel and per type.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "NotificationStats")]
pub struct NotificationStats {
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Every channel.
    pub all: Counts,
    /// log, email, webhook.
    pub channels: Vec<ChannelStats>,
    /// Per type, those that were created.
    pub types: Vec<TypeCount>,
}

#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "NotificationTypeCount")]
pub struct TypeCount {
    #[serde(rename = "type")]
    #[graphql(name = "type")]
    #[schema(example = "completed")]
    pub notification_type: String,
    pub counts: Counts,
}

pub fn money(amount: i64, currency: &str) -> String {
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", abs / 100, abs % 100)
}

/// The subject and body of a notification of `kind` about `order`;
/// `detail` is the reason (failed, cancelled) or the amount refunded.
fn compose(kind: &str, order: &order::Model, name: &str, detail: Option<&str>) -> (String, String) {
    let reference = order.external_order_id.clone().unwrap_or_else(|| order.id.to_string());
    let total = money(order.total, &order.currency);
    let detail = detail.unwrap_or_default();
    let (subject, text) = match kind {
        PLACED => (
            format!("We received your order {reference}"),
            format!("we received your order {reference} of {total}. We will write again when it is paid."),
        ),
        PAID => (
            format!("Payment received for order {reference}"),
            format!("your payment of {total} for order {reference} was received. We are preparing it now."),
        ),
        COMPLETED => (
            format!("Your order {reference} is complete"),
            format!("your order {reference} of {total} has shipped and is complete. Thank you!"),
        ),
        FAILED_ORDER => (
            format!("Your order {reference} could not be completed"),
            format!(
                "we could not complete your order {reference}: {detail}. Nothing was charged or any charge is given back."
            ),
        ),
        CANCELLED => (
            format!("Your order {reference} was cancelled"),
            format!("your order {reference} was cancelled: {detail}. Any charge is given back."),
        ),
        _ => (
            format!("Refund for order {reference}"),
            format!("we refunded {detail} of your order {reference}."),
        ),
    };
    (subject, format!("Hello {name},\n\n{text}\n"))
}

/// Write the notifications of `kind` about `order` (one per channel) and
/// queue the sending of those not skipped, in `txn`: the transaction of
/// the order's change.
pub async fn queue(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    notifiers: &Notifiers,
    order: &order::Model,
    kind: &str,
    detail: Option<&str>,
) -> ApiResult<()> {
    queue_many(txn, tenant, notifiers, std::slice::from_ref(order), kind, detail).await
}

/// [`queue`] for many orders: one query for their customers, a multi-row
/// `INSERT` for the notifications and one for the jobs.
pub async fn queue_many(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    notifiers: &Notifiers,
    orders: &[order::Model],
    kind: &str,
    detail: Option<&str>,
) -> ApiResult<()> {
    let ids: HashSet<Uuid> = orders.iter().map(|o| o.customer_id).collect();
    let customers: HashMap<Uuid, customer::Model> = tenant
        .find::<customer::Entity>()
        .filter(customer::Column::Id.is_in(ids))
        .all(txn)
        .await?
        .into_iter()
        .map(|c| (c.id, c))
        .collect();
    let now = Utc::now();
    let mut rows = Vec::with_capacity(orders.len() * CHANNELS.len());
    let mut sends = Vec::new();
    for order in orders {
        let customer = customers.get(&order.customer_id).ok_or_else(|| ApiError::not_found("customer"))?;
        let (subject, body) = compose(kind, order, &customer.name, detail);
        for channel in CHANNELS {
            let skipped = match channel {
                EMAIL if !customer.notify_email => Some("the customer turned email notifications off"),
                EMAIL if !notifiers.enabled(EMAIL) => Some(EMAIL_OFF),
                WEBHOOK if !customer.notify_webhook => Some("the customer turned webhook notifications off"),
                _ => None,
            };
            let recipient = if channel == WEBHOOK { super::ORDER_NOTIFICATION.name } else { &customer.email };
            let id = Uuid::now_v7();
            rows.push(notification::ActiveModel {
                id: Set(id),
                tenant_id: Set(tenant.id()),
                order_id: Set(order.id),
                customer_id: Set(customer.id),
                notification_type: Set(kind.to_owned()),
                channel: Set(channel.to_owned()),
                recipient: Set(recipient.to_owned()),
                subject: Set(subject.clone()),
                body: Set(body.clone()),
                status: Set(if skipped.is_some() { SKIPPED } else { PENDING }.to_owned()),
                attempts: Set(0),
                last_error: Set(skipped.map(str::to_owned)),
                sent_at: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
            });
            if skipped.is_none() {
                sends.push(id);
            }
        }
    }
    insert_all(txn, rows).await?;
    let jobs = sends.chunks(SEND_BATCH).map(|ids| send_job(tenant, notifiers, ids));
    jobs::enqueue_many(txn, jobs.collect()).await?;
    Ok(())
}

/// The most notifications one `orders.notify` job sends.
const SEND_BATCH: usize = 100;

/// The job sending `ids`, written together.
fn send_job(tenant: TenantScope, notifiers: &Notifiers, ids: &[Uuid]) -> NewJob {
    NewJob::new(NOTIFY_JOB, json!({ "notification_ids": ids }))
        .tenant(tenant.id())
        .priority(4)
        .max_attempts(notifiers.max_attempts)
}

/// The notifications an `orders.notify` job sends (`notification_id`: one,
/// in a job queued by a version that sent them one job each).
pub fn job_ids(payload: &serde_json::Value) -> Option<Vec<Uuid>> {
    let parse = |v: &serde_json::Value| v.as_str().and_then(|v| Uuid::parse_str(v).ok());
    match (payload.get("notification_id"), payload.get("notification_ids")) {
        (Some(id), _) => Some(vec![parse(id)?]),
        (None, Some(serde_json::Value::Array(ids))) => ids.iter().map(parse).collect(),
        _ => None,
    }
}

async fn find(db: &impl ConnectionTrait, tenant: TenantScope, id: Uuid) -> ApiResult<notification::Model> {
    tenant.get::<notification::Entity>(db, id).await?.ok_or_else(|| ApiError::not_found("notification"))
}

/// Send those of the notifications `ids` still `pending`, each on its
/// channel, a few side by side. Each one sent is `sent`; each refused
/// stays `pending` with its error, to be tried again with the job, or on
/// the job's `last_attempt` is `failed`. The job succeeds when every one
/// was sent.
pub async fn deliver(
    db: &DatabaseConnection,
    notifiers: &Notifiers,
    tenant: TenantScope,
    ids: Vec<Uuid>,
    last_attempt: bool,
) -> Result<(), JobError> {
    use futures_util::{StreamExt, TryStreamExt, stream};
    let refused: Vec<Option<String>> = stream::iter(ids)
        .map(|id| deliver_one(db, notifiers, tenant, id, last_attempt))
        .buffer_unordered(SENDS_AT_ONCE)
        .try_collect()
        .await?;
    match refused.into_iter().flatten().next() {
        None => Ok(()),
        Some(error) if last_attempt => Err(JobError::Fail(error)),
        Some(error) => Err(JobError::retry(error)),
    }
}

/// Send notification `id` if still `pending` (each read and written by its
/// id: one row, whatever the table's size); the error of a refusal.
async fn deliver_one(
    db: &DatabaseConnection,
    notifiers: &Notifiers,
    tenant: TenantScope,
    id: Uuid,
    last_attempt: bool,
) -> Result<Option<String>, sea_orm::DbErr> {
    let Some(n) = tenant.get::<notification::Entity>(db, id).await? else {
        return Ok(None);
    };
    if n.status != PENDING {
        return Ok(None); // sent meanwhile, or given up
    }
    let outcome = match notifiers.by_channel.get(n.channel.as_str()) {
        Some(notifier) => notifier.send(db, &n).await,
        None => Err(format!("no channel `{}`", n.channel)),
    };
    let now = Utc::now();
    let update = tenant
        .update_many::<notification::Entity>()
        .filter(notification::Column::Id.eq(id))
        .filter(notification::Column::Status.eq(PENDING))
        .col_expr(notification::Column::Attempts, Expr::col(notification::Column::Attempts).add(1))
        .col_expr(notification::Column::UpdatedAt, Expr::value(now));
    match outcome {
        Ok(()) => {
            update
                .col_expr(notification::Column::Status, Expr::value(SENT))
                .col_expr(notification::Column::SentAt, Expr::value(Some(now)))
                .col_expr(notification::Column::LastError, Expr::value(Option::<String>::None))
                .exec(db)
                .await?;
            Ok(None)
        }
        Err(error) => {
            let status = if last_attempt { FAILED } else { PENDING };
            update
                .col_expr(notification::Column::Status, Expr::value(status))
                .col_expr(notification::Column::LastError, Expr::value(Some(error.clone())))
                .exec(db)
                .await?;
            Ok(Some(error))
        }
    }
}

pub async fn list(
    db: &DatabaseConnection,
    tenant: TenantScope,
    filter: NotificationFilter,
    list: &ListRequest,
) -> ApiResult<Paged<NotificationView>> {
    use notification::Column as C;
    if let Some(order_id) = filter.order_id {
        tenant.get::<order::Entity>(db, order_id).await?.ok_or_else(|| ApiError::not_found("order"))?;
    }
    let condition = Condition::all()
        .add_option(filter.notification_type.map(|t| C::NotificationType.eq(t)))
        .add_option(filter.channel.map(|c| C::Channel.eq(c)))
        .add_option(filter.status.map(|s| C::Status.eq(s)))
        .add_option(filter.customer_id.map(|c| C::CustomerId.eq(c)))
        .add_option(filter.order_id.map(|o| C::OrderId.eq(o)))
        .add_option(filter.created_after.map(|t| C::CreatedAt.gte(t)))
        .add_option(filter.created_before.map(|t| C::CreatedAt.lt(t)));
    let scope = tenant.find::<notification::Entity>();
    Ok(list.fetch(db, scope, condition, filter.sort).await?.map(Into::into))
}

pub async fn get(db: &DatabaseConnection, tenant: TenantScope, id: Uuid) -> ApiResult<NotificationView> {
    Ok(find(db, tenant, id).await?.into())
}

/// The `limit` newest notifications.
pub async fn recent(
    db: &DatabaseConnection,
    tenant: TenantScope,
    limit: u64,
) -> ApiResult<Vec<NotificationView>> {
    let rows = tenant
        .find::<notification::Entity>()
        .order_by_desc(notification::Column::CreatedAt)
        .order_by_desc(notification::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

pub async fn stats(
    db: &DatabaseConnection,
    notifiers: &Notifiers,
    tenant: TenantScope,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
) -> ApiResult<NotificationStats> {
    use notification::Column as C;
    let rows: Vec<(String, String, String, i64)> = tenant
        .find::<notification::Entity>()
        .filter(
            Condition::all()
                .add_option(created_after.map(|t| C::CreatedAt.gte(t)))
                .add_option(created_before.map(|t| C::CreatedAt.lt(t))),
        )
        .select_only()
        .column(C::Channel)
        .column(C::NotificationType)
        .column(C::Status)
        .column_as(C::Id.count(), "n")
        .group_by(C::Channel)
        .group_by(C::NotificationType)
        .group_by(C::Status)
        .into_tuple()
        .all(db)
        .await?;
    let mut all = Counts::default();
    let mut channels: Vec<ChannelStats> = CHANNELS
        .iter()
        .map(|c| ChannelStats {
            channel: (*c).to_owned(),
            enabled: notifiers.enabled(c),
            counts: Counts::default(),
        })
        .collect();
    let mut types: Vec<TypeCount> = Vec::new();
    for (channel, kind, status, n) in rows {
        all.add(&status, n);
        if let Some(c) = channels.iter_mut().find(|c| c.channel == channel) {
            c.counts.add(&status, n);
        }
        match types.iter_mut().find(|t| t.notification_type == kind) {
            Some(t) => t.counts.add(&status, n),
            None => {
                let mut counts = Counts::default();
                counts.add(&status, n);
                types.push(TypeCount { notification_type: kind, counts });
            }
        }
    }
    types.sort_by_key(|t| TYPES.iter().position(|k| *k == t.notification_type));
    Ok(NotificationStats { created_after, created_before, all, channels, types })
}

/// Send a `failed` notification again: `pending`, with a new job. 409
/// `notification_not_failed` for any other state.
pub async fn resend(
    db: &DatabaseConnection,
    notifiers: &Notifiers,
    tenant: TenantScope,
    id: Uuid,
) -> ApiResult<NotificationView> {
    let txn = crate::platform::db::begin(db).await?;
    let n = find(&txn, tenant, id).await?;
    let moved = tenant
        .update_many::<notification::Entity>()
        .filter(notification::Column::Id.eq(id))
        .filter(notification::Column::Status.eq(FAILED))
        .col_expr(notification::Column::Status, Expr::value(PENDING))
        .col_expr(notification::Column::UpdatedAt, Expr::value(Utc::now()))
        .exec(&txn)
        .await?;
    if moved.rows_affected == 0 {
        return Err(ApiError::new(
            Code::NotificationNotFailed,
            format!("only a failed notification is sent again; this one is {}", n.status),
        ));
    }
    jobs::enqueue(&txn, send_job(tenant, notifiers, &[id])).await?;
    let view = find(&txn, tenant, id).await?.into();
    sea_orm::TransactionSession::commit(txn).await?;
    Ok(view)
}

/// Set a customer's notification preferences.
pub async fn set_preferences(
    db: &DatabaseConnection,
    tenant: TenantScope,
    customer_id: Uuid,
    preferences: &super::Notifications,
) -> ApiResult<customer::Model> {
    let moved = tenant
        .update_many::<customer::Entity>()
        .filter(customer::Column::Id.eq(customer_id))
        .col_expr(customer::Column::NotifyEmail, Expr::value(preferences.email))
        .col_expr(customer::Column::NotifyWebhook, Expr::value(preferences.webhook))
        .col_expr(customer::Column::UpdatedAt, Expr::value(Utc::now()))
        .exec(db)
        .await?;
    if moved.rows_affected == 0 {
        return Err(ApiError::not_found("customer"));
    }
    tenant.get::<customer::Entity>(db, customer_id).await?.ok_or_else(|| ApiError::not_found("customer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_written_with_two_decimals() {
        assert_eq!(money(4998, "EUR"), "49.98 EUR");
        assert_eq!(money(5, "USD"), "0.05 USD");
        assert_eq!(money(-1000, "EUR"), "-10.00 EUR");
    }

    #[test]
    fn a_job_names_its_notifications_and_one_queued_before_lots_is_still_read() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let job = send_job(TenantScope::new(Uuid::now_v7()), &Notifiers::default(), &[a, b]);
        assert_eq!(job_ids(&job.payload), Some(vec![a, b]));
        assert_eq!(job_ids(&json!({ "notification_id": a })), Some(vec![a]));
        assert_eq!(job_ids(&json!({ "notification_ids": [a, "not an id"] })), None);
        assert_eq!(job_ids(&json!({})), None);
    }

    #[test]
    fn email_is_off_without_a_host_and_a_bad_sender_is_refused() {
        let notifiers = Notifiers::default();
        assert!(!notifiers.enabled(EMAIL));
        assert!(notifiers.enabled(LOG) && notifiers.enabled(WEBHOOK));
        let smtp = SmtpSettings {
            host: Some("127.0.0.1".into()),
            from: "not an address".into(),
            ..Default::default()
        };
        assert!(EmailNotifier::new(&smtp).is_err());
        let smtp = SmtpSettings { host: Some("127.0.0.1".into()), tls: SmtpTls::None, ..Default::default() };
        assert!(EmailNotifier::new(&smtp).unwrap().enabled());
    }
}
