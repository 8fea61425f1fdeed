//! Domain events through a transactional outbox. [`publish`] writes the
//! event and a dispatch job in the caller's transaction, so an event exists
//! exactly when its change was committed. The dispatch job then, in one
//! transaction, fans the event out to the tenant's webhook endpoints and
//! enqueues one job per interested internal listener, so a listener that
//! fails is retried on its own without repeating the others.

pub mod routes;
pub mod stream;

use std::sync::Arc;

use chrono::Utc;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::platform::{
    jobs::{self, JobError, JobHandler, NewJob},
    state::AppState,
    webhooks,
};
use entity::{event, job};

/// A kind of event: its name, what it means, an example of its `data`.
pub struct EventType {
    pub name: &'static str,
    pub description: &'static str,
    /// 1-10: the lane its dispatch job runs in (deliveries run at their
    /// endpoint's priority).
    pub priority: i16,
    pub example: fn() -> Value,
}

macro_rules! event_types {
    ($($ident:ident => $name:literal, $priority:literal, $description:literal, $example:expr;)*) => {
        $(pub const $ident: EventType = EventType {
            name: $name,
            description: $description,
            priority: $priority,
            example: || $example,
        };)*
        /// Every event type Nexus emits.
        pub const CATALOGUE: &[&EventType] = &[$(&$ident),*];
    };
}

event_types! {
    USER_CREATED => "user.created", 5, "A user was added to the tenant.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "email": "grace@example.com", "name": "Grace Hopper", "roles": ["manager"]});
    USER_DISABLED => "user.disabled", 7, "A user was disabled; their tokens stop working.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "email": "grace@example.com"});
    USER_ENABLED => "user.enabled", 5, "A disabled user was enabled again.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "email": "grace@example.com"});
    USER_ROLE_ASSIGNED => "user.role_assigned", 5, "A role was given to a user.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "role": "manager"});
    USER_ROLE_REMOVED => "user.role_removed", 5, "A role was taken from a user.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "role": "manager"});
    WEBHOOK_ENDPOINT_DISABLED => "webhook.endpoint_disabled", 8,
        "Nexus disabled a webhook endpoint: it answered 410 Gone, or failed without a success for too long.",
        json!({"endpoint_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "url": "https://example.com/hooks", "reason": "failing"});
    LICENSE_UPDATED => "license.updated", 7, "A super-admin or a signed key changed the tenant's license.",
        json!({"tier": "enterprise", "status": "active", "expires_at": "2027-11-22T00:00:00Z", "previous_tier": "professional"});
    LICENSE_EXPIRING => "license.expiring_soon", 7, "The license expires within the warning period (30 days).",
        json!({"tier": "professional", "state": "expiring_soon", "expires_at": "2026-12-22T00:00:00Z"});
    LICENSE_GRACE_STARTED => "license.grace_started", 8, "The license expired: the tenant is read-only for the grace period.",
        json!({"tier": "professional", "state": "grace", "expires_at": "2026-11-22T00:00:00Z"});
    LICENSE_EXPIRED => "license.expired", 8, "The grace period ended: only authentication and license endpoints answer.",
        json!({"tier": "professional", "state": "expired", "expires_at": "2026-11-08T00:00:00Z"});
    FEATURE_TOGGLED => "feature.toggled", 6, "A module or feature was switched for the tenant (or globally).",
        json!({"key": "feature.webhooks", "state": "disabled", "scope": "tenant"});
    PRODUCT_CREATED => "product.created", 5, "A product was added to the catalogue.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "sku": "TSHIRT-RED-M", "name": "T-shirt, red, M"});
    PRODUCT_UPDATED => "product.updated", 5, "A product changed.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "sku": "TSHIRT-RED-M", "version": 2});
    STOCK_ADJUSTED => "stock.adjusted", 5, "On-hand stock was adjusted (count, damage, correction).",
        json!({"product_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "sku": "TSHIRT-RED-M", "warehouse_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "quantity": -2, "on_hand": 48, "reason": "damaged"});
    STOCK_LOW => "stock.low", 7, "Available stock fell below the reorder point.",
        json!({"product_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "sku": "TSHIRT-RED-M", "warehouse_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "available": 4, "reorder_point": 5});
    STOCK_RESERVED => "stock.reserved", 6, "Stock was reserved for a reference (all lines).",
        json!({"reference": "order-1042", "lines": [{"product_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "warehouse_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "quantity": 2}]});
    STOCK_RELEASED => "stock.released", 6, "A reservation was released or expired: its stock is available again.",
        json!({"reference": "order-1042", "lines": [], "outcome": "released"});
    STOCK_SHIPPED => "stock.shipped", 6, "A reservation was committed: its stock left the warehouse.",
        json!({"reference": "order-1042", "lines": [], "outcome": "committed"});
    STOCK_TRANSFERRED => "stock.transferred", 5, "Stock moved between warehouses.",
        json!({"product_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "sku": "TSHIRT-RED-M", "from_warehouse_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "to_warehouse_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a13", "quantity": 10});
    PURCHASE_ORDER_CREATED => "purchase_order.created", 5, "A purchase order was drafted.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "vendor_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "total": 45000, "currency": "EUR"});
    PURCHASE_ORDER_SUBMITTED => "purchase_order.submitted", 5, "A purchase order was submitted for approval.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "status": "submitted", "total": 45000});
    PURCHASE_ORDER_APPROVED => "purchase_order.approved", 6, "A purchase order was approved.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "status": "approved", "total": 45000});
    PURCHASE_ORDER_RECEIVED => "purchase_order.received", 6, "Every line of a purchase order was received.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "status": "received", "total": 45000});
    PURCHASE_ORDER_CANCELLED => "purchase_order.cancelled", 6, "A purchase order was cancelled.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "status": "cancelled", "total": 45000});
    PURCHASE_ORDER_CLOSED => "purchase_order.closed", 5, "A purchase order was closed; `short` when lines were never fully received.",
        json!({"id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "status": "closed", "total": 45000, "short": false});
    GOODS_RECEIVED => "goods.received", 6, "Goods were received against a purchase order (stock and ledger booked).",
        json!({"purchase_order_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "lines": [{"line_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a13", "quantity": 40}], "value": 18000, "currency": "EUR"});
    INVENTORY_REORDER_RECOMMENDED => "inventory.reorder_recommended", 4, "The weekly scan found stock below its reorder points.",
        json!({"recommendations": [{"product_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "sku": "TSHIRT-RED-M", "warehouse_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a12", "available": 3, "reorder_point": 10, "suggested_quantity": 17, "preferred_vendor_id": null}]});
    WEBHOOK_TEST => "webhook.test", 9, "Sent by `POST /api/v1/webhooks/{id}/test`, to that endpoint only.",
        json!({"endpoint_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11", "message": "This is a test event from Nexus."});
}

pub fn find_type(name: &str) -> Option<&'static EventType> {
    CATALOGUE.iter().copied().find(|t| t.name == name)
}

pub const DISPATCH_JOB: &str = "event.dispatch";
pub const LISTENER_JOB: &str = "event.listener";

/// Record `event` for `tenant_id` in the caller's transaction, with the job
/// that will fan it out once committed.
pub async fn publish(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    event_type: &EventType,
    data: Value,
) -> Result<Uuid, sea_orm::DbErr> {
    let id = Uuid::now_v7();
    event::Entity::insert(event::ActiveModel {
        id: Set(id),
        tenant_id: Set(tenant_id),
        event_type: Set(event_type.name.to_owned()),
        data: Set(data),
        occurred_at: Set(Utc::now()),
    })
    .exec_without_returning(db)
    .await?;
    let job =
        NewJob::new(DISPATCH_JOB, json!({ "event_id": id })).tenant(tenant_id).priority(event_type.priority);
    jobs::enqueue(db, job).await?;
    Ok(id)
}

/// An event as integrators see it: the webhook body and the SSE `data`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope {
    #[serde(rename = "type")]
    #[schema(example = "user.created")]
    pub event_type: String,
    pub timestamp: chrono::DateTime<Utc>,
    pub tenant_id: Uuid,
    pub data: Value,
}

impl From<&event::Model> for Envelope {
    fn from(e: &event::Model) -> Self {
        Self {
            event_type: e.event_type.clone(),
            timestamp: e.occurred_at,
            tenant_id: e.tenant_id,
            data: e.data.clone(),
        }
    }
}

/// A cross-module reaction to events, run as its own durable job per event.
#[async_trait::async_trait]
pub trait Listener: Send + Sync {
    /// Unique and stable: it names the listener's jobs.
    fn name(&self) -> &'static str;
    fn wants(&self, event_type: &str) -> bool;
    async fn handle(&self, state: &AppState, event: &event::Model) -> Result<(), JobError>;
}

/// The listeners of this build, assembled by the app constructor.
pub type Listeners = Arc<Vec<Arc<dyn Listener>>>;

fn event_id(job: &job::Model) -> Result<Uuid, JobError> {
    job.payload
        .get("event_id")
        .and_then(Value::as_str)
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(|| JobError::Fail("payload has no event_id".to_owned()))
}

async fn load(state: &AppState, job: &job::Model) -> Result<event::Model, JobError> {
    let id = event_id(job)?;
    event::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| JobError::Fail(format!("event {id} is gone")))
}

/// `event.dispatch`: fan out to webhooks and listeners, atomically.
pub struct Dispatch;

#[async_trait::async_trait]
impl JobHandler for Dispatch {
    async fn run(&self, state: &AppState, job: &job::Model) -> Result<(), JobError> {
        let event = load(state, job).await?;
        let txn = crate::platform::db::begin(&state.db).await?;
        webhooks::fan_out(&txn, &event).await?;
        for listener in state.listeners.iter().filter(|l| l.wants(&event.event_type)) {
            let payload = json!({ "event_id": event.id, "listener": listener.name() });
            let job = NewJob::new(LISTENER_JOB, payload).tenant(event.tenant_id).priority(job.priority);
            jobs::enqueue(&txn, job).await?;
        }
        txn.commit().await?;
        state.wakeup.wake();
        state.events.publish(&event).await;
        Ok(())
    }
}

/// `event.listener`: run one listener on one event.
pub struct RunListener;

#[async_trait::async_trait]
impl JobHandler for RunListener {
    async fn run(&self, state: &AppState, job: &job::Model) -> Result<(), JobError> {
        let name = job.payload.get("listener").and_then(Value::as_str).unwrap_or_default();
        let listener = state
            .listeners
            .iter()
            .find(|l| l.name() == name)
            .ok_or_else(|| JobError::Fail(format!("no listener `{name}` in this build")))?;
        let event = load(state, job).await?;
        listener.handle(state, &event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_is_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for t in CATALOGUE {
            assert!(seen.insert(t.name), "duplicate {}", t.name);
            assert!(t.name.split('.').count() == 2, "{} is not `resource.action`", t.name);
            assert!((1..=10).contains(&t.priority));
            assert!((t.example)().is_object());
        }
    }

    #[test]
    fn the_guides_list_every_event_type() {
        for (guide, text) in [
            ("events.md", include_str!("../../../docs/events.md")),
            ("webhooks.md", include_str!("../../../docs/webhooks.md")),
        ] {
            for t in CATALOGUE {
                assert!(text.contains(&format!("| `{}` |", t.name)), "docs/{guide} lacks {}", t.name);
            }
        }
    }
}
