//! The worker loop: one task per lane claiming as many jobs as it has free
//! slots, each run beside a heartbeat that renews its lease. A run that
//! queued its follow-up with [`super::enqueue_next_all`] (the next step of a
//! saga) keeps its slot and runs that job next, already leased to it. It runs inside
//! `nexus serve` and in `nexus worker`; stopping it finishes the runs in
//! flight within a grace period and gives the rest back to the queue.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration as StdDuration,
};

use chrono::{Duration, Utc};
use tokio::{
    sync::{Semaphore, watch},
    task::JoinSet,
};
use uuid::Uuid;

use super::{JobError, LANES, Lane, Ran, claim, finish, heartbeat, prune, release, running};
use crate::{config::JobsConfig, platform::state::AppState};
use entity::job;

pub struct Runner;

/// A running set of workers; `stop` shuts them down gracefully.
pub struct RunnerHandle {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Runner {
    /// Start the workers of this process on `state`.
    pub fn start(state: AppState) -> RunnerHandle {
        let (stop, stopped) = watch::channel(false);
        let worker = format!("{}-{}", hostname(), Uuid::now_v7().simple());
        let mut tasks = JoinSet::new();
        for lane in LANES {
            let slots = state.config.jobs.workers(lane);
            if slots > 0 {
                let lane_worker = LaneWorker { state: state.clone(), lane, slots, worker: worker.clone() };
                tasks.spawn(lane_worker.run(stopped.clone()));
            }
        }
        tasks.spawn(maintenance(state, stopped));
        RunnerHandle { stop, tasks }
    }
}

impl RunnerHandle {
    /// Stop claiming, let runs in flight finish (within the grace period),
    /// give the others back.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "nexus".to_owned())
}

struct LaneWorker {
    state: AppState,
    lane: Lane,
    slots: usize,
    worker: String,
}

impl LaneWorker {
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let config = &self.state.config.jobs;
        let slots = Arc::new(Semaphore::new(self.slots));
        let in_flight: Arc<Mutex<HashSet<Uuid>>> = Arc::default();
        let mut runs = JoinSet::new();
        let poll = StdDuration::from_millis(config.poll_interval_ms);
        let mut idle = poll;
        // Whether the lane may hold due jobs: at start, after a wake-up or a
        // poll, and after a claim that filled every free slot. A finished
        // run frees a slot but claims only then, not for nothing.
        let mut due = true;
        while !*stopped.borrow() {
            let free = slots.available_permits();
            if due && free > 0 {
                match claim(&self.state.db, self.lane, free, &self.worker, config.lease()).await {
                    Ok(jobs) => {
                        idle = poll;
                        due = jobs.len() == free;
                        for job in jobs {
                            let Ok(permit) = slots.clone().acquire_owned().await else { break };
                            if let Ok(mut set) = in_flight.lock() {
                                set.insert(job.id);
                            }
                            let (state, worker, in_flight, stopped) =
                                (self.state.clone(), self.worker.clone(), in_flight.clone(), stopped.clone());
                            runs.spawn(super::tracking_queued(async move {
                                let mut job = Some(job);
                                while let Some(run) = job.take() {
                                    let id = run.id;
                                    let next = run_one(&state, &worker, run).await;
                                    // What the run queued and has not woken yet.
                                    state.wakeup.wake();
                                    match next {
                                        Some(next) if *stopped.borrow() => {
                                            give_back(&state, &worker, next.id).await
                                        }
                                        next => job = next,
                                    }
                                    if let Ok(mut set) = in_flight.lock() {
                                        set.remove(&id);
                                        set.extend(job.as_ref().map(|n| n.id));
                                    }
                                }
                                drop(permit);
                            }));
                        }
                    }
                    Err(err) => {
                        // The database is down: back off, up to 5 s.
                        tracing::warn!(lane = self.lane.as_str(), error = %err, "cannot claim jobs");
                        idle = (idle * 2).min(StdDuration::from_secs(5));
                    }
                }
            }
            tokio::select! {
                _ = self.state.wakeup.wait(self.lane) => due = true,
                _ = tokio::time::sleep(idle) => due = true,
                _ = stopped.changed() => {}
                Some(_) = runs.join_next(), if !runs.is_empty() => {}
            }
        }
        // Shutdown: let runs finish within the grace period, then abort and
        // release what is left so another worker picks it up at once.
        let grace = StdDuration::from_millis(config.shutdown_grace_ms);
        let drained = tokio::time::timeout(grace, async { while runs.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            runs.abort_all();
            let left: Vec<Uuid> =
                in_flight.lock().map(|set| set.iter().copied().collect()).unwrap_or_default();
            match release(&self.state.db, &left, &self.worker).await {
                Ok(n) => tracing::info!(lane = self.lane.as_str(), released = n, "released unfinished jobs"),
                Err(err) => tracing::warn!(error = %err, "could not release jobs; their leases will expire"),
            }
        }
    }
}

/// Give a job leased to this worker back to the queue, uncounted.
async fn give_back(state: &AppState, worker: &str, id: Uuid) {
    if let Err(err) = release(&state.db, &[id], worker).await {
        tracing::warn!(job = %id, error = %err, "could not give the job back; its lease will expire");
    }
}

/// Run a claimed job and record how it ended (unless its handler did, in
/// its own transaction: [`super::complete`]); the job it queued to follow
/// it ([`super::enqueue_next_all`]), leased to this worker, when it succeeded.
async fn run_one(state: &AppState, worker: &str, job: job::Model) -> Option<job::Model> {
    let config = &state.config.jobs;
    let (result, ran) = if job.attempts > job.max_attempts {
        // Claimed again after a lease expired on its last attempt.
        (
            Err(JobError::Fail(job.last_error.clone().unwrap_or_else(|| "lease expired".to_owned()))),
            Ran::default(),
        )
    } else {
        match state.jobs.get(&job.kind) {
            None => (Err(JobError::Fail(format!("no handler for job kind `{}`", job.kind))), Ran::default()),
            Some(handler) => {
                let beat = tokio::spawn(keep_lease(state.clone(), job.id, worker.to_owned()));
                let run = running(&job, worker, config.lease(), handler.run(state, &job)).await;
                beat.abort();
                run
            }
        }
    };
    if let Err(err) = &result {
        tracing::warn!(job = %job.id, kind = job.kind, attempt = job.attempts, error = ?err, "job did not complete");
    }
    let Ran { completed, next } = ran;
    if result.is_ok() && completed {
        return next;
    }
    let ok = result.is_ok();
    let backoff = Duration::milliseconds(i64::try_from(config.retry_base_ms).unwrap_or(1000));
    if let Err(err) = finish(&state.db, &job, worker, result, backoff).await {
        tracing::error!(job = %job.id, error = %err, "could not record the job's outcome; its lease will expire");
    }
    match next {
        Some(next) if !ok => {
            // Its transaction may have committed before the run failed:
            // back to the queue rather than waiting for its lease.
            give_back(state, worker, next.id).await;
            None
        }
        next => next,
    }
}

/// Renew a job's lease every third of its length while it runs.
async fn keep_lease(state: AppState, id: Uuid, worker: String) {
    let lease = state.config.jobs.lease();
    let every = (lease / 3).to_std().unwrap_or(StdDuration::from_secs(10));
    loop {
        tokio::time::sleep(every).await;
        if let Err(err) = heartbeat(&state.db, id, &worker, lease).await {
            tracing::warn!(job = %id, error = %err, "heartbeat failed");
        }
    }
}

/// Periodic housekeeping: prune completed jobs past their retention, and
/// announce license transitions (the scheduler of the license lifecycle;
/// access itself is decided on every request).
async fn maintenance(state: AppState, mut stopped: watch::Receiver<bool>) {
    let config: &JobsConfig = &state.config.jobs;
    let every = StdDuration::from_secs(60);
    while !*stopped.borrow() {
        let before = Utc::now() - Duration::hours(i64::from(config.retention_hours));
        if let Err(err) = prune(&state.db, before).await {
            tracing::warn!(error = %err, "could not prune completed jobs");
        }
        if let Err(err) = state.idempotency.prune().await {
            tracing::warn!(error = %err, "could not prune expired idempotency keys");
        }
        let gov = &state.governance;
        match crate::platform::license::announce_transitions(&state.db, &gov.tiers, Utc::now()).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(announced = n, "license transitions announced");
                gov.invalidate(None).await;
            }
            Err(err) => tracing::warn!(error = %err, "could not check license transitions"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.changed() => {}
        }
    }
}
