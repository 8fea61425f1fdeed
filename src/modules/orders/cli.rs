//! `nexus orders ...`: the operators' commands, on the database directly
//! (no server needed), through the same service as REST and GraphQL.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use uuid::Uuid;

use super::{NewRefund, OrderService, check_refund};
use crate::{
    error::ApiError,
    platform::tenancy::{SystemScope, TenantScope},
};

/// An error of the service as the command line shows it: the detail and
/// each field.
pub fn describe(err: ApiError) -> anyhow::Error {
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
        .find_by_id::<entity::order::Entity>(order_id)
        .one(db)
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
