//! `nexus channels ...`: the operators' commands, on the database directly,
//! through the same service as REST and GraphQL. A subcommand is a variant
//! of `ChannelsCommand` (src/cli.rs) and a function here.

use std::{sync::Arc, time::Duration};

use sea_orm::{DatabaseConnection, QueryOrder};
use uuid::Uuid;

use super::{
    CONNECTION_SORTS, ChannelService, ConnectionFilter, DEAD_LETTER_SORTS, DeadLetterFilter, SyncRunView,
};
use crate::{
    modules::orders::cli::describe,
    platform::{
        http::{ListRequest, parse_sort},
        tenancy::{SystemScope, TenantScope},
    },
};

/// Every connection of `tenant` (all tenants when `None`): its status,
/// last error and last push or reconcile run, as a table.
pub async fn status(
    db: &DatabaseConnection,
    channels: Arc<dyn ChannelService>,
    tenant: Option<entity::tenant::Model>,
) -> anyhow::Result<String> {
    let tenants = match tenant {
        Some(t) => vec![t],
        None => {
            SystemScope
                .find::<entity::tenant::Entity>()
                .order_by_asc(entity::tenant::Column::Slug)
                .all(db)
                .await?
        }
    };
    let mut rows = Vec::new();
    for t in tenants {
        let scope = TenantScope::new(t.id);
        let mut cursor = None;
        loop {
            let list = ListRequest::new(Some(100), &[], cursor.as_deref(), None).map_err(describe)?;
            let sort = parse_sort(Some("name"), &CONNECTION_SORTS).map_err(describe)?;
            let filter = ConnectionFilter { channel: None, status: None, sort };
            let page = channels.list_connections(scope, filter, &list).await.map_err(describe)?;
            for c in page.data {
                let first = ListRequest::new(Some(1), &[], None, None).map_err(describe)?;
                let last = channels.list_sync_runs(scope, c.id, &first).await.map_err(describe)?.data.pop();
                rows.push(vec![
                    t.slug.clone(),
                    c.id.to_string(),
                    c.name,
                    c.channel,
                    c.status,
                    last.map_or_else(|| "-".to_owned(), |r| describe_run(&r)),
                    c.last_error.unwrap_or_else(|| "-".to_owned()),
                ]);
            }
            match page.meta.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    let header = ["tenant", "connection", "name", "channel", "status", "last sync", "last error"];
    Ok(crate::cli::table(&header, &rows, "no channel connections"))
}

/// `push succeeded 2026-11-28 18:00 (30/30, 0 failed)`.
fn describe_run(r: &SyncRunView) -> String {
    let when = r.finished_at.or(r.started_at).unwrap_or(r.created_at).format("%Y-%m-%d %H:%M:%S");
    format!("{} {} {when} ({}/{}, {} failed)", r.kind, r.status, r.done, r.total, r.failed)
}

/// What `nexus channels dead-letters` does with a connection's letters.
pub enum LetterAction {
    List,
    Replay,
    Dismiss,
}

/// The dead letters of connection `id` (in whichever tenant holds it) as a
/// table, or the count replayed or dismissed.
pub async fn dead_letters(
    db: &DatabaseConnection,
    channels: Arc<dyn ChannelService>,
    id: Uuid,
    action: LetterAction,
) -> anyhow::Result<String> {
    let tenant = TenantScope::new(connection(db, id).await?.tenant_id);
    let done = match action {
        LetterAction::Replay => channels.replay_dead_letters(tenant, Some(id)).await.map_err(describe)?,
        LetterAction::Dismiss => channels.dismiss_dead_letters(tenant, Some(id)).await.map_err(describe)?,
        LetterAction::List => {
            let mut rows = Vec::new();
            let mut cursor = None;
            loop {
                let list = ListRequest::new(Some(100), &[], cursor.as_deref(), None).map_err(describe)?;
                let sort = parse_sort(None, &DEAD_LETTER_SORTS).map_err(describe)?;
                let filter = DeadLetterFilter { connection_id: Some(id), sort };
                let page = channels.list_dead_letters(tenant, filter, &list).await.map_err(describe)?;
                for d in page.data {
                    rows.push(vec![
                        d.id.to_string(),
                        d.sku,
                        d.quantity.to_string(),
                        d.attempts.to_string(),
                        d.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        d.last_error,
                    ]);
                }
                match page.meta.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            let header = ["letter", "sku", "quantity", "attempts", "since", "last error"];
            return Ok(crate::cli::table(&header, &rows, "no dead letters"));
        }
    };
    let verb = if matches!(action, LetterAction::Replay) { "replayed" } else { "dismissed" };
    Ok(format!("{} {verb}, {} left (their connection is disconnected)", done.count, done.skipped))
}

/// A connection of any tenant.
async fn connection(db: &DatabaseConnection, id: Uuid) -> anyhow::Result<entity::channel_connection::Model> {
    SystemScope
        .get::<entity::channel_connection::Entity>(db, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no channel connection {id}"))
}

/// Start a full push of connection `id` (in whichever tenant holds it) and
/// follow it to its end: progress on stderr, the outcome on stdout. The
/// run's batches are carried out by the workers of `nexus serve` or
/// `nexus worker`.
pub async fn sync(
    db: &DatabaseConnection,
    channels: Arc<dyn ChannelService>,
    id: Uuid,
    every: Duration,
) -> anyhow::Result<()> {
    let c = connection(db, id).await?;
    let tenant = TenantScope::new(c.tenant_id);
    let run = channels.start_sync(tenant, id).await.map_err(describe)?;
    eprintln!("push run {} of {} ({}): {} products", run.id, c.name, c.channel, run.total);
    let started = std::time::Instant::now();
    let mut warned = false;
    let mut shown = (run.status.clone(), run.done);
    loop {
        tokio::time::sleep(every).await;
        let r = channels.get_sync_run(tenant, id, run.id).await.map_err(describe)?;
        if (r.status.clone(), r.done) != shown {
            eprintln!("{}: {}/{} done, {} failed", r.status, r.done, r.total, r.failed);
            shown = (r.status.clone(), r.done);
        }
        match r.status.as_str() {
            super::service::SUCCEEDED => {
                println!(
                    "push run {} succeeded: {}/{} pushed, {} failed",
                    r.id,
                    r.done - r.failed,
                    r.total,
                    r.failed
                );
                if let Some(error) = r.error.filter(|_| r.failed > 0) {
                    println!("last failure: {error}");
                }
                return Ok(());
            }
            super::service::FAILED => {
                anyhow::bail!("push run {} failed: {}", r.id, r.error.unwrap_or_default())
            }
            super::service::PENDING if !warned && started.elapsed() > Duration::from_secs(15) => {
                eprintln!("no worker has picked the run up yet: is `nexus serve` or `nexus worker` running?");
                warned = true;
            }
            _ => {}
        }
    }
}
