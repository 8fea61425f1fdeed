//! Stripe's signed callbacks (webhook events) about a tenant's payments
//! and refunds, received at `POST /api/v1/orders/payments/stripe/callback/{tenant_id}`.
//!
//! The `Stripe-Signature` header (`t=<unix time>,v1=<hex>[,v1=<hex>...]`)
//! is checked exactly as Stripe's libraries check it: the HMAC-SHA256 of
//! `"<t>.<raw body>"` with the endpoint secret must equal one of the `v1`
//! signatures (compared in constant time), and `t` must lie within the
//! tolerance of now. A forged or stale callback, or a second delivery of an
//! event id already received, is refused (401), logged, and changes
//! nothing. A verified event is applied in one transaction with its log
//! row, and only to what it still changes:
//!
//! - `payment_intent.succeeded`: a `pending` (unanswered) payment is
//!   captured; a `reserved` order becomes `paid` and its saga goes on; the
//!   money of an order that ended meanwhile is voided.
//! - `payment_intent.payment_failed`: a `pending` payment is declined and
//!   its `reserved` order fails, compensated (its stock released).
//! - `refund.updated` and `charge.refunded` (each refund it lists): a
//!   refund that succeeded moves `requested` → `processed`; one that failed
//!   or was cancelled moves `requested` or `processed` → `failed` and its
//!   amount may be refunded again; the refund of a void ends the payment
//!   `voided`.
//!
//! Payments and refunds are found by the gateway's id, or by the
//! `metadata[nexus_key]` Nexus sends with every call (the idempotency key),
//! so a callback about a charge whose answer was lost finds it too.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, PaginatorTrait, QueryFilter,
    sea_query::{Expr, ExprTrait},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    CANCELLED, FAILED, RESERVED,
    service::{
        CAPTURED, DECLINED, FULFIL_JOB, PENDING_PAYMENT, PROCESSED, REFUND_FAILED, REQUESTED, SeaOrmOrders,
        VOIDED, VOIDING, find_order, publish_refund, step, transition, void_captured,
    },
};
use crate::{
    error::{ApiError, ApiResult, Code},
    platform::{
        jobs,
        tenancy::{SystemScope, TenantScope},
    },
};
use entity::{order_gateway_callback as callback, order_payment as payment, order_refund as refund};

/// How callbacks are verified: `[modules.orders.stripe] webhook_secret`
/// and `webhook_tolerance_seconds`.
#[derive(Clone, Debug)]
pub struct CallbackSettings {
    /// The endpoint's signing secret (`whsec_...`); none: every callback
    /// is refused.
    pub secret: Option<String>,
    /// How far the signature's timestamp may be from now, in seconds.
    pub tolerance_seconds: i64,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        Self { secret: None, tolerance_seconds: 300 }
    }
}

/// Outcomes of a callback.
pub const APPLIED: &str = "applied";
pub const UNCHANGED: &str = "unchanged";
pub const IGNORED: &str = "ignored";
pub const REJECTED: &str = "rejected";
pub const FORGED: &str = "forged";
pub const STALE: &str = "stale";
pub const REPLAYED: &str = "replayed";

/// Every outcome, for the log's filter.
pub const OUTCOMES: [&str; 7] = [APPLIED, UNCHANGED, IGNORED, REJECTED, FORGED, STALE, REPLAYED];

/// A callback received, as the log shows it.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "OrderGatewayCallback")]
pub struct CallbackView {
    pub id: Uuid,
    /// The gateway that sent it (`stripe`).
    #[schema(example = "stripe")]
    pub gateway: String,
    /// Whether its signature verified (a replay verifies, and is refused).
    pub verified: bool,
    /// Stripe's id of the event.
    #[schema(example = "evt_1PqR2sT3uV4wX5yZ")]
    pub event_id: Option<String>,
    #[schema(example = "payment_intent.succeeded")]
    pub event_type: Option<String>,
    /// `applied` (a payment, refund or order changed), `unchanged` (applied
    /// before), `ignored` (an event type Nexus does not act on, or about
    /// nothing of this tenant), `rejected` (signed, but not a Stripe
    /// event); in the log also the refused: `forged`, `stale`, `replayed`.
    #[schema(example = "applied")]
    pub outcome: String,
    pub detail: Option<String>,
    pub received_at: DateTime<Utc>,
}

impl From<callback::Model> for CallbackView {
    fn from(m: callback::Model) -> Self {
        Self {
            id: m.id,
            gateway: m.gateway,
            verified: m.verified,
            event_id: m.event_id,
            event_type: m.event_type,
            outcome: m.outcome,
            detail: m.detail,
            received_at: m.received_at,
        }
    }
}

/// Which logged callbacks to list.
pub struct CallbackFilter {
    pub outcome: Option<String>,
    pub sort: crate::platform::http::Sort<callback::Column>,
}

/// The callback log: newest first unless sorted otherwise.
pub const CALLBACK_SORTS: crate::platform::http::Sorts<callback::Column> = crate::platform::http::Sorts {
    fields: &[("received_at", callback::Column::ReceivedAt)],
    default: "-received_at",
};

/// A page of the tenant's callbacks; 400 naming `outcome` for an unknown one.
pub async fn list(
    db: &impl ConnectionTrait,
    tenant: TenantScope,
    filter: CallbackFilter,
    list: &crate::platform::http::ListRequest,
) -> ApiResult<crate::platform::http::Paged<CallbackView>> {
    crate::platform::http::one_of("outcome", filter.outcome.as_deref(), &OUTCOMES)?;
    let mut condition = Condition::all();
    if let Some(outcome) = filter.outcome {
        condition = condition.add(callback::Column::Outcome.eq(outcome));
    }
    Ok(list.fetch(db, tenant.find::<callback::Entity>(), condition, filter.sort).await?.map(Into::into))
}

/// How a `Stripe-Signature` failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No signature, a malformed header, or no `v1` matching the body.
    Forged(&'static str),
    /// Signed, but `t` is further than the tolerance from now.
    Stale,
}

/// Check `header` (`Stripe-Signature`) over `body` with `secret`, as
/// Stripe's libraries do: any `v1` may match, compared in constant time;
/// then `t` within `tolerance` seconds of `now`.
pub fn verify_signature(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<(), Refusal> {
    let header = header.ok_or(Refusal::Forged("no Stripe-Signature header"))?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) if timestamp.is_none() => timestamp = Some(t),
            Some(("v1", v)) => signatures.push(v),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Refusal::Forged("the Stripe-Signature header has no timestamp"))?;
    let at: i64 = timestamp.parse().map_err(|_| Refusal::Forged("the signature's timestamp is no number"))?;
    if signatures.is_empty() {
        return Err(Refusal::Forged("the Stripe-Signature header has no v1 signature"));
    }
    let matches = signatures.iter().filter_map(|s| hex::decode(s).ok()).any(|signature| {
        let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else { return false };
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&signature).is_ok()
    });
    if !matches {
        return Err(Refusal::Forged("no v1 signature matches the body"));
    }
    if (now - at).abs() > tolerance {
        return Err(Refusal::Stale);
    }
    Ok(())
}

/// The part of an event Nexus reads.
#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: Value,
}

/// What applying an event came to.
struct Applied {
    outcome: &'static str,
    detail: Option<String>,
}

impl Applied {
    fn new(outcome: &'static str, detail: impl Into<String>) -> Self {
        Self { outcome, detail: Some(detail.into()) }
    }
}

/// `metadata.nexus_key` of a Stripe object.
fn nexus_key(object: &Value) -> Option<&str> {
    object.get("metadata").and_then(|m| m.get("nexus_key")).and_then(Value::as_str)
}

fn text<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get(field).and_then(Value::as_str)
}

/// Move payment `p` from `from` to `status` with the intent's id.
async fn settle_payment(
    txn: &DatabaseTransaction,
    tenant: TenantScope,
    p: &payment::Model,
    from: &str,
    status: &str,
    reference: &str,
    reason: Option<String>,
) -> ApiResult<bool> {
    let moved = tenant
        .update_many::<payment::Entity>()
        .filter(payment::Column::Id.eq(p.id))
        .filter(payment::Column::Status.eq(from))
        .col_expr(payment::Column::Status, Expr::value(status))
        .col_expr(payment::Column::GatewayReference, Expr::value(reference))
        .col_expr(payment::Column::FailureReason, Expr::value(reason))
        .col_expr(payment::Column::UpdatedAt, Expr::value(Utc::now()))
        .exec(txn)
        .await?;
    Ok(moved.rows_affected > 0)
}

impl SeaOrmOrders {
    /// Log a callback; `dedupe` claims its event id (a unique key per tenant).
    #[allow(clippy::too_many_arguments)]
    async fn log_callback(
        &self,
        db: &impl ConnectionTrait,
        tenant: TenantScope,
        event: Option<(&str, &str)>,
        dedupe: bool,
        verified: bool,
        outcome: &str,
        detail: Option<String>,
    ) -> ApiResult<callback::Model> {
        let event_id = event.map(|(id, _)| id.to_owned());
        Ok(callback::Entity::insert(callback::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(tenant.id()),
            gateway: Set("stripe".to_owned()),
            dedupe_key: Set(event_id.clone().filter(|_| dedupe)),
            event_id: Set(event_id),
            event_type: Set(event.map(|(_, kind)| kind.to_owned())),
            verified: Set(verified),
            outcome: Set(outcome.to_owned()),
            detail: Set(detail),
            received_at: Set(Utc::now()),
        })
        .exec_with_returning(db)
        .await?)
    }

    /// Receive one Stripe callback for the tenant `tenant_id`: verify,
    /// deduplicate, apply and log it (see the module's documentation).
    pub async fn handle_stripe_callback(
        &self,
        tenant_id: Uuid,
        signature: Option<&str>,
        body: &[u8],
    ) -> ApiResult<CallbackView> {
        // Not yet knowing whether the caller is Stripe: the one read by id.
        SystemScope
            .get::<entity::tenant::Entity>(&self.db, tenant_id)
            .await?
            .ok_or_else(|| ApiError::not_found("tenant"))?;
        let tenant = TenantScope::new(tenant_id);
        let verdict = match &self.callbacks.secret {
            None => Err(Refusal::Forged("no `modules.orders.stripe.webhook_secret` is configured")),
            Some(secret) => verify_signature(
                secret,
                signature,
                body,
                Utc::now().timestamp(),
                self.callbacks.tolerance_seconds,
            ),
        };
        if let Err(refusal) = verdict {
            let (outcome, why) = match refusal {
                Refusal::Forged(why) => (FORGED, why.to_owned()),
                Refusal::Stale => (
                    STALE,
                    format!(
                        "the signature's timestamp is more than {} s from now",
                        self.callbacks.tolerance_seconds
                    ),
                ),
            };
            self.log_callback(&self.db, tenant, None, false, false, outcome, Some(why.clone())).await?;
            tracing::warn!(tenant_id = %tenant_id, "refused a Stripe callback ({outcome}): {why}");
            return Err(ApiError::new(Code::Unauthenticated, format!("the callback does not verify: {why}")));
        }
        // Its id and reasons are kept: without NUL, as PostgreSQL needs.
        let event = serde_json::from_slice(body).map(crate::platform::db::storable_json);
        let event: Event = match event.and_then(serde_json::from_value) {
            Ok(event) => event,
            Err(e) => {
                let detail = format!("not a Stripe event: {e}");
                let row =
                    self.log_callback(&self.db, tenant, None, false, true, REJECTED, Some(detail)).await?;
                return Ok(row.into());
            }
        };
        let named = Some((event.id.as_str(), event.kind.as_str()));
        let replay =
            || ApiError::new(Code::Unauthenticated, format!("event `{}` was received already", event.id));
        let seen = tenant
            .find::<callback::Entity>()
            .filter(callback::Column::DedupeKey.eq(event.id.clone()))
            .count(&self.db)
            .await?;
        let replayed = || Some("a second delivery of a received event".to_owned());
        if seen > 0 {
            self.log_callback(&self.db, tenant, named, false, true, REPLAYED, replayed()).await?;
            tracing::warn!(tenant_id = %tenant_id, event_id = %event.id, "refused a replayed Stripe callback");
            return Err(replay());
        }
        let txn = crate::platform::db::begin(&self.db).await?;
        let applied = self.apply_event(&txn, tenant, &event).await?;
        let row = match self
            .log_callback(&txn, tenant, named, true, true, applied.outcome, applied.detail.clone())
            .await
        {
            Ok(row) => row,
            // The same event, received meanwhile by another request.
            Err(err) if err.code == Code::Conflict => {
                sea_orm::TransactionSession::rollback(txn).await?;
                self.log_callback(&self.db, tenant, named, false, true, REPLAYED, replayed()).await?;
                return Err(replay());
            }
            Err(err) => return Err(err),
        };
        sea_orm::TransactionSession::commit(txn).await?;
        tracing::info!(tenant_id = %tenant_id, event_id = %event.id, event_type = %event.kind,
            outcome = applied.outcome, "received a Stripe callback");
        Ok(row.into())
    }

    async fn apply_event(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        event: &Event,
    ) -> ApiResult<Applied> {
        let object = &event.data.object;
        match event.kind.as_str() {
            "payment_intent.succeeded" => self.intent_succeeded(txn, tenant, object).await,
            "payment_intent.payment_failed" => self.intent_failed(txn, tenant, object).await,
            "refund.updated" => self.refund_updated(txn, tenant, object).await,
            "charge.refunded" => {
                let listed = object.pointer("/refunds/data").and_then(Value::as_array);
                let Some(refunds) = listed.filter(|r| !r.is_empty()) else {
                    return Ok(Applied::new(IGNORED, "the charge lists no refunds"));
                };
                let mut changed = false;
                let mut details = Vec::new();
                for r in refunds {
                    let applied = self.refund_updated(txn, tenant, r).await?;
                    changed |= applied.outcome == APPLIED;
                    details.extend(applied.detail);
                }
                let outcome = if changed { APPLIED } else { UNCHANGED };
                Ok(Applied { outcome, detail: Some(details.join("; ")) })
            }
            other => Ok(Applied::new(IGNORED, format!("Nexus does not act on `{other}`"))),
        }
    }

    /// The payment a PaymentIntent is about: by the gateway's id or by the
    /// key Nexus sent in its metadata.
    async fn payment_of(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        intent: &Value,
    ) -> ApiResult<Option<payment::Model>> {
        let Some(id) = text(intent, "id") else { return Ok(None) };
        let mut matching = Condition::any().add(payment::Column::GatewayReference.eq(id));
        if let Some(key) = nexus_key(intent) {
            matching = matching.add(payment::Column::IdempotencyKey.eq(key));
        }
        Ok(tenant.find::<payment::Entity>().filter(matching).one(txn).await?)
    }

    async fn intent_succeeded(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        intent: &Value,
    ) -> ApiResult<Applied> {
        let Some(p) = self.payment_of(txn, tenant, intent).await? else {
            return Ok(Applied::new(IGNORED, "no payment of this tenant has this payment intent"));
        };
        let reference = text(intent, "id").unwrap_or_default();
        // Unanswered, or declined while the customer was still confirming.
        let from = if p.status == PENDING_PAYMENT || p.status == DECLINED {
            p.status.clone()
        } else {
            return Ok(Applied::new(UNCHANGED, format!("the payment is {} already", p.status)));
        };
        if !settle_payment(txn, tenant, &p, &from, CAPTURED, reference, None).await? {
            return Ok(Applied::new(UNCHANGED, "the payment was answered meanwhile"));
        }
        let order = find_order(txn, tenant, p.order_id).await?;
        if order.status == RESERVED {
            if transition(txn, tenant, &order, RESERVED, super::PAID, None, &super::ORDER_PAID).await? {
                jobs::enqueue(txn, step(tenant, FULFIL_JOB, order.id)).await?;
                return Ok(Applied::new(APPLIED, "the payment is captured and the order paid"));
            }
        } else if [CANCELLED, FAILED].contains(&order.status.as_str()) {
            void_captured(txn, tenant, order.id).await?;
            return Ok(Applied::new(
                APPLIED,
                format!("the payment is captured; the order is {}, so it is voided", order.status),
            ));
        }
        Ok(Applied::new(APPLIED, "the payment is captured"))
    }

    async fn intent_failed(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        intent: &Value,
    ) -> ApiResult<Applied> {
        let Some(p) = self.payment_of(txn, tenant, intent).await? else {
            return Ok(Applied::new(IGNORED, "no payment of this tenant has this payment intent"));
        };
        if p.status != PENDING_PAYMENT {
            return Ok(Applied::new(UNCHANGED, format!("the payment is {} already", p.status)));
        }
        let why = intent
            .pointer("/last_payment_error/message")
            .and_then(Value::as_str)
            .unwrap_or("the payment failed")
            .to_owned();
        let reference = text(intent, "id").unwrap_or_default();
        let declined = Some(why.clone());
        if !settle_payment(txn, tenant, &p, PENDING_PAYMENT, DECLINED, reference, declined).await? {
            return Ok(Applied::new(UNCHANGED, "the payment was answered meanwhile"));
        }
        let order = find_order(txn, tenant, p.order_id).await?;
        let reason = format!("payment declined: {why}");
        let failed =
            self.compensate(txn, tenant, &order, RESERVED, FAILED, &reason, &super::ORDER_FAILED).await?;
        Ok(Applied::new(
            APPLIED,
            if failed { "the payment is declined and the order failed" } else { "the payment is declined" },
        ))
    }

    /// Apply one Stripe Refund object.
    async fn refund_updated(
        &self,
        txn: &DatabaseTransaction,
        tenant: TenantScope,
        object: &Value,
    ) -> ApiResult<Applied> {
        let Some(id) = text(object, "id") else {
            return Ok(Applied::new(IGNORED, "a refund without an id"));
        };
        let status = text(object, "status").unwrap_or_default();
        let succeeded = matches!(status, "succeeded" | "pending");
        let failed = matches!(status, "failed" | "canceled");
        let key = nexus_key(object);
        // The refund of a void: the payment is given back.
        if let Some(charge_key) = key.and_then(|k| k.strip_suffix(":void")) {
            let p = tenant
                .find::<payment::Entity>()
                .filter(payment::Column::IdempotencyKey.eq(charge_key))
                .one(txn)
                .await?;
            let Some(p) = p else {
                return Ok(Applied::new(IGNORED, format!("no payment of this tenant is voided by {id}")));
            };
            if !succeeded || p.status != VOIDING {
                return Ok(Applied::new(
                    UNCHANGED,
                    format!("the payment is {}; the void is {status}", p.status),
                ));
            }
            let moved = tenant
                .update_many::<payment::Entity>()
                .filter(payment::Column::Id.eq(p.id))
                .filter(payment::Column::Status.eq(VOIDING))
                .col_expr(payment::Column::Status, Expr::value(VOIDED))
                .col_expr(payment::Column::UpdatedAt, Expr::value(Utc::now()))
                .exec(txn)
                .await?;
            let outcome = if moved.rows_affected > 0 { APPLIED } else { UNCHANGED };
            return Ok(Applied::new(outcome, format!("the payment is voided by {id}")));
        }
        let own = key.and_then(|k| k.strip_prefix("refund:")).and_then(|k| Uuid::parse_str(k).ok());
        let mut matching = Condition::any().add(refund::Column::GatewayReference.eq(id));
        if let Some(own) = own {
            matching = matching.add(refund::Column::Id.eq(own));
        }
        let Some(r) = tenant.find::<refund::Entity>().filter(matching).one(txn).await? else {
            return Ok(Applied::new(IGNORED, format!("no refund of this tenant is {id}")));
        };
        let (from, to, failure): (&[&str], &str, Option<String>) = if succeeded {
            (&[REQUESTED], PROCESSED, None)
        } else if failed {
            let why = text(object, "failure_reason")
                .map_or_else(|| format!("the refund is {status}"), str::to_owned);
            (&[REQUESTED, PROCESSED], REFUND_FAILED, Some(why))
        } else {
            return Ok(Applied::new(UNCHANGED, format!("the refund {id} is {status}")));
        };
        if !from.contains(&r.status.as_str()) {
            return Ok(Applied::new(UNCHANGED, format!("the refund is {} already", r.status)));
        }
        let moved = tenant
            .update_many::<refund::Entity>()
            .filter(refund::Column::Id.eq(r.id))
            .filter(refund::Column::Status.eq(r.status.clone()))
            .col_expr(refund::Column::Status, Expr::value(to))
            .col_expr(refund::Column::GatewayReference, Expr::value(id))
            .col_expr(refund::Column::FailureReason, Expr::value(failure))
            .col_expr(refund::Column::UpdatedAt, Expr::value(Utc::now()))
            .exec(txn)
            .await?;
        if moved.rows_affected == 0 {
            return Ok(Applied::new(UNCHANGED, "the refund was answered meanwhile"));
        }
        if to == REFUND_FAILED {
            // Its amount may be refunded again.
            tenant
                .update_many::<entity::order::Entity>()
                .filter(entity::order::Column::Id.eq(r.order_id))
                .col_expr(
                    entity::order::Column::Refunded,
                    Expr::col(entity::order::Column::Refunded).sub(r.amount),
                )
                .col_expr(entity::order::Column::UpdatedAt, Expr::value(Utc::now()))
                .exec(txn)
                .await?;
        }
        let updated =
            tenant.get::<refund::Entity>(txn, r.id).await?.ok_or_else(|| ApiError::not_found("refund"))?;
        let event = if to == PROCESSED { &super::ORDER_REFUNDED } else { &super::ORDER_REFUND_FAILED };
        publish_refund(txn, tenant, &updated, event).await?;
        Ok(Applied::new(APPLIED, format!("the refund is {to}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn a_signature_verifies_as_stripe_checks_it() {
        let (secret, body, t) = ("whsec_test", br#"{"id":"evt_1"}"#.as_slice(), 1_700_000_000);
        let good = sign(secret, t, body);
        let check = |header: &str, now: i64| verify_signature(secret, Some(header), body, now, 300);
        assert_eq!(check(&format!("t={t},v1={good}"), t), Ok(()));
        // Any v1 may match (a secret being rolled); v0 and unknown parts are skipped.
        assert_eq!(check(&format!("t={t},v0=00,v1={},v1={good},x=1", "ab".repeat(32)), t + 300), Ok(()));
        assert_eq!(check(&format!("t={t},v1={good}"), t + 301), Err(Refusal::Stale));
        assert_eq!(check(&format!("t={t},v1={good}"), t - 301), Err(Refusal::Stale));
        assert!(matches!(check(&format!("t={},v1={good}", t + 1), t), Err(Refusal::Forged(_))));
        assert!(matches!(
            check(&format!("t={t},v1={}", sign("whsec_other", t, body)), t),
            Err(Refusal::Forged(_))
        ));
        assert!(matches!(check(&format!("t={t}"), t), Err(Refusal::Forged(_))));
        assert!(matches!(check(&format!("v1={good}"), t), Err(Refusal::Forged(_))));
        assert!(matches!(check(&format!("t={t},v1=zz"), t), Err(Refusal::Forged(_))));
        assert!(matches!(verify_signature(secret, None, body, t, 300), Err(Refusal::Forged(_))));
        let tampered = br#"{"id":"evt_2"}"#;
        let header = format!("t={t},v1={good}");
        assert!(matches!(verify_signature(secret, Some(&header), tampered, t, 300), Err(Refusal::Forged(_))));
    }
}
