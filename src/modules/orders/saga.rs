//! The order saga as durable jobs, one kind per step:
//!
//! ```text
//! orders.reserve -> orders.pay -> orders.fulfil -> orders.complete
//!      |               |              |
//!      +-- failed <----+--------------+   (compensated: stock released, payment voided)
//! ```
//!
//! Each step queues the next in the transaction of its change, which also
//! completes its own job, and the worker that ran it runs that one next,
//! without a claim ([`crate::platform::jobs::enqueue_next_all`]); the
//! steps that workers run at the same time share that transaction (see
//! [`super::steps`]). A step is idempotent: it acts only on an order in
//! the state it starts from, locked while it moves it, so a re-run, a
//! retry or a second worker changes nothing. A failing run (database, gateway) is retried
//! with the runner's backoff. `orders.void_payment` gives a captured
//! payment back when an order fails or is cancelled after it was paid.
//! `orders.refund` carries a requested refund out through the gateway,
//! with a key fixed per refund, so a lost answer is asked again and never
//! refunds twice. `orders.import` imports an uploaded CSV file (see
//! [`super::import`]); `orders.import_sweep` drops an upload that was cut
//! off before it was complete. `orders.notify` sends order
//! notifications, those of a step together (see [`super::notify`]).

use std::sync::Arc;

use uuid::Uuid;

use super::service::{
    COMPLETE_JOB, FULFIL_JOB, IMPORT_JOB, PAY_JOB, REFUND_JOB, RESERVE_JOB, SWEEP_JOB, SeaOrmOrders, VOID_JOB,
};
use crate::platform::{
    jobs::{JobError, JobHandler},
    state::AppState,
    tenancy::TenantScope,
};

#[derive(Clone, Copy)]
enum Step {
    Reserve,
    Pay,
    Fulfil,
    Complete,
    Void,
    Refund,
    Import,
    Sweep,
    Notify,
}

/// One step of the saga, for the orders of every tenant.
struct StepJob {
    orders: Arc<SeaOrmOrders>,
    step: Step,
}

pub fn handlers(orders: &Arc<SeaOrmOrders>) -> Vec<(&'static str, Arc<dyn JobHandler>)> {
    [
        (RESERVE_JOB, Step::Reserve),
        (PAY_JOB, Step::Pay),
        (FULFIL_JOB, Step::Fulfil),
        (COMPLETE_JOB, Step::Complete),
        (VOID_JOB, Step::Void),
        (REFUND_JOB, Step::Refund),
        (IMPORT_JOB, Step::Import),
        (SWEEP_JOB, Step::Sweep),
        (super::notify::NOTIFY_JOB, Step::Notify),
    ]
    .into_iter()
    .map(|(kind, step)| (kind, Arc::new(StepJob { orders: orders.clone(), step }) as Arc<dyn JobHandler>))
    .collect()
}

fn id_in(job: &entity::job::Model, field: &str) -> Result<Uuid, JobError> {
    job.payload
        .get(field)
        .and_then(|v| v.as_str())
        .and_then(|v| Uuid::parse_str(v).ok())
        .ok_or_else(|| JobError::Fail(format!("payload has no {field}")))
}

#[async_trait::async_trait]
impl JobHandler for StepJob {
    async fn run(&self, _: &AppState, job: &entity::job::Model) -> Result<(), JobError> {
        let tenant =
            TenantScope::new(job.tenant_id.ok_or_else(|| JobError::Fail("job has no tenant".into()))?);
        let orders = &self.orders;
        match self.step {
            Step::Reserve => orders.reserve(tenant, id_in(job, "order_id")?).await?,
            Step::Pay => orders.pay(tenant, id_in(job, "order_id")?).await?,
            Step::Fulfil => orders.fulfil(tenant, id_in(job, "order_id")?).await?,
            Step::Complete => orders.complete(tenant, id_in(job, "order_id")?).await?,
            Step::Void => orders.void_payment(tenant, id_in(job, "payment_id")?).await?,
            Step::Refund => {
                orders.process_refund(tenant, id_in(job, "refund_id")?).await?;
            }
            Step::Import => orders.run_import(tenant, id_in(job, "import_id")?).await?,
            Step::Sweep => orders.sweep_import(tenant, id_in(job, "import_id")?).await?,
            Step::Notify => {
                let ids = super::notify::job_ids(&job.payload)
                    .ok_or_else(|| JobError::Fail("payload has no notification_ids".into()))?;
                let last_attempt = job.attempts >= job.max_attempts;
                super::notify::deliver(&orders.db, &orders.notifiers, tenant, ids, last_attempt).await?;
                return Ok(()); // queues nothing
            }
        }
        Ok(())
    }
}
