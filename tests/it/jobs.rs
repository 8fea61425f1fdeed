//! The outbox and the job queue: listeners run durably and are retried,
//! dead jobs are kept and replayable, queue health is reported.

use nexus::platform::tenancy::SystemScope;
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use nexus::platform::{
    events::Listener,
    jobs::{self, JobError, NewJob},
    state::AppState,
};
use sea_orm::{ColumnTrait, QueryFilter};
use serde_json::json;

use crate::helpers::{TestApp, assert_problem, eventually, json, test_config};

/// A listener on `user.created` that fails its first `failures` runs.
struct Flaky {
    failures: usize,
    runs: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Listener for Flaky {
    fn name(&self) -> &'static str {
        "test.flaky"
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == "user.created"
    }

    async fn handle(&self, _: &AppState, event: &entity::event::Model) -> Result<(), JobError> {
        assert_eq!(event.event_type, "user.created");
        let run = self.runs.fetch_add(1, Ordering::SeqCst);
        // A NUL, which PostgreSQL's text refuses: the error is kept all the same.
        if run < self.failures { Err(JobError::retry(format!("failure\0{run}"))) } else { Ok(()) }
    }
}

#[tokio::test]
async fn a_failing_listener_is_retried_until_it_succeeds() {
    let runs = Arc::new(AtomicUsize::new(0));
    let dir = tempfile::tempdir().unwrap();
    let listener = Arc::new(Flaky { failures: 2, runs: runs.clone() });
    let app = TestApp::spawn_with_listeners(test_config(dir.path()), dir, vec![listener]).await;
    // Registering creates the owner: one `user.created` event.
    app.register().await;
    let job = eventually(10, || async {
        let jobs = SystemScope
            .find::<entity::job::Entity>()
            .filter(entity::job::Column::Kind.eq("event.listener"))
            .filter(entity::job::Column::Status.eq("completed"))
            .all(&app.state.db)
            .await
            .unwrap();
        jobs.into_iter().next()
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(job.attempts, 3, "two failures, then success");
    assert_eq!(job.payload["listener"], "test.flaky");
    assert_eq!(job.last_error.as_deref(), Some("failure\u{FFFD}1"));
}

#[tokio::test]
async fn dead_jobs_are_kept_listed_and_replayed() {
    let app = TestApp::spawn().await;
    let tenant = app.register().await;
    let root = app.super_admin(&tenant).await;
    // A job no handler knows fails at once and goes dead with its payload.
    let id = jobs::enqueue(&app.state.db, NewJob::new("test.unknown", json!({"n": 1})).max_attempts(3))
        .await
        .unwrap();
    let dead = eventually(10, || async {
        let body =
            json(app.get("/api/v1/admin/jobs?status=dead&kind=test.unknown&include=total", &root).await)
                .await;
        // The page and its total are two queries: a job that goes dead
        // between them is counted but not listed yet.
        (body["meta"]["total"] == 1 && body["data"][0]["id"].is_string()).then_some(body)
    })
    .await;
    assert_eq!(dead["data"][0]["id"], id.to_string());
    assert_eq!(dead["data"][0]["payload"], json!({"n": 1}));
    assert!(dead["data"][0]["last_error"].as_str().unwrap().contains("no handler"));

    let stats = json(app.get("/api/v1/admin/jobs/stats", &root).await).await;
    let default_lane =
        stats["data"].as_array().unwrap().iter().find(|l| l["lane"] == "default").unwrap().clone();
    assert!(default_lane["dead"].as_u64().unwrap() >= 1, "{stats}");

    let res = app.post(&format!("/api/v1/admin/jobs/{id}/replay"), &root, json!({})).await;
    assert_eq!(json(res).await["data"]["replayed"], 1);
    // Replayed, it fails again and is dead again, with fresh attempts.
    eventually(10, || async {
        let body =
            json(app.get("/api/v1/admin/jobs?status=dead&kind=test.unknown&include=total", &root).await)
                .await;
        (body["meta"]["total"] == 1 && body["data"][0]["attempts"] == 1).then_some(())
    })
    .await;
    let res = app.post("/api/v1/admin/jobs/replay", &root, json!({"kind": "test.unknown"})).await;
    assert_eq!(json(res).await["data"]["replayed"], 1);
    let res =
        app.post(&format!("/api/v1/admin/jobs/{}/replay", uuid::Uuid::now_v7()), &root, json!({})).await;
    assert_problem(res, 404, "not_found").await;

    // Tenant admins do not see the shared queue.
    assert_problem(app.get("/api/v1/admin/jobs", &tenant.token).await, 403, "forbidden").await;
}

#[tokio::test]
async fn a_job_held_by_a_dead_worker_runs_again_when_its_lease_expires() {
    // No workers: the job stays where the "crashed" worker left it.
    let app = TestApp::spawn_adjusted(|f| f.merge(("jobs.run_in_server", false))).await;
    let receiver = crate::receiver::Receiver::start(&[]).await;
    let tenant = app.register().await;
    let res =
        app.post("/api/v1/webhooks", &tenant.token, json!({"url": receiver.url, "event_types": ["*"]})).await;
    let id = json(res).await["data"]["id"].as_str().unwrap().to_owned();
    app.post(&format!("/api/v1/webhooks/{id}/test"), &tenant.token, json!({})).await;
    let job = SystemScope
        .find::<entity::job::Entity>()
        .filter(entity::job::Column::Kind.eq("webhook.deliver"))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    // A worker claimed it, then died: running, lease already expired.
    crate::helpers::held_by_a_dead_worker(&app, job).await;

    let _worker = app.sibling().await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got[0].json()["type"], "webhook.test");
    app.drained().await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let got: Vec<_> =
        receiver.received().iter().map(|r| (r.header("webhook-id").to_owned(), r.json())).collect();
    assert_eq!(got.len(), 1, "{got:?}");
}

const CHAIN_JOB: &str = "test.chain";

/// A module with one job kind: link `n` queues link `n + 1` with
/// `enqueue_next_all` and hands it on with `adopt_next` up to 3, whose run completes itself with `complete`. A
/// payload with `"fail": true` completes its job in a transaction it then
/// rolls back, and fails, on its first attempt.
struct Chain(Arc<std::sync::Mutex<Vec<(i64, i32)>>>);

#[async_trait::async_trait]
impl nexus::platform::module::Module for Chain {
    fn name(&self) -> &'static str {
        "chain"
    }

    fn jobs(&self) -> Vec<(&'static str, Arc<dyn jobs::JobHandler>)> {
        vec![(CHAIN_JOB, Arc::new(Link(self.0.clone())))]
    }
}

struct Link(Arc<std::sync::Mutex<Vec<(i64, i32)>>>);

#[async_trait::async_trait]
impl jobs::JobHandler for Link {
    async fn run(&self, state: &AppState, job: &entity::job::Model) -> Result<(), JobError> {
        let n = job.payload["n"].as_i64().unwrap();
        self.0.lock().unwrap().push((n, job.attempts));
        let txn = nexus::platform::db::begin(&state.db).await?;
        if job.payload["fail"] == true && job.attempts == 1 {
            jobs::complete(&txn).await?;
            sea_orm::TransactionSession::rollback(txn).await?;
            return Err(JobError::retry("rolled back"));
        }
        if n == 3 {
            jobs::complete(&txn).await?;
            sea_orm::TransactionSession::commit(txn).await?;
            return Ok(());
        }
        let this = jobs::current().expect("a job run");
        let next = NewJob::new(CHAIN_JOB, json!({ "n": n + 1 }));
        let mut next = jobs::enqueue_next_all(&txn, vec![(this, next)]).await?;
        sea_orm::TransactionSession::commit(txn).await?;
        jobs::adopt_next(next.remove(0));
        Ok(())
    }
}

#[tokio::test]
async fn a_run_completes_its_job_and_hands_on_its_follow_up_in_its_own_transaction() {
    let runs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let dir = tempfile::tempdir().unwrap();
    let parts = nexus::Parts { modules: vec![Arc::new(Chain(runs.clone()))], ..Default::default() };
    let app = TestApp::spawn_with_parts(test_config(dir.path()), dir, parts).await;

    jobs::enqueue(&app.state.db, NewJob::new(CHAIN_JOB, json!({"n": 0, "fail": true}))).await.unwrap();
    app.state.wakeup.wake();
    eventually(10, || async { (runs.lock().unwrap().len() == 5).then_some(()) }).await;
    app.drained().await;

    // The first link's completion rolled back with its transaction, so the
    // worker recorded the failure and it ran again; the links it queued ran
    // once each, in order.
    assert_eq!(*runs.lock().unwrap(), [(0, 1), (0, 2), (1, 1), (2, 1), (3, 1)]);
    let chain = SystemScope
        .find::<entity::job::Entity>()
        .filter(entity::job::Column::Kind.eq(CHAIN_JOB))
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(chain.len(), 4);
    for job in &chain {
        assert_eq!(job.status, "completed", "{job:?}");
        assert!(
            job.finished_at.is_some() && job.locked_by.is_none() && job.locked_until.is_none(),
            "{job:?}"
        );
    }
    let first = chain.iter().find(|j| j.payload["n"] == 0).unwrap();
    assert_eq!((first.attempts, first.last_error.as_deref()), (2, Some("rolled back")));
}

/// Dispatch jobs waiting together are fanned out together: one run takes up
/// to a hundred, each event still reaching exactly the endpoints that want
/// it, of its own tenant.
#[tokio::test]
async fn events_waiting_together_are_dispatched_in_batches_each_to_its_own_tenants_endpoints() {
    use nexus::platform::events::{FEATURE_TOGGLED, USER_ROLE_ASSIGNED, publish, publish_many};
    let app = TestApp::spawn_adjusted(|f| {
        f.merge(("jobs.run_in_server", false)).merge(("webhooks.allow_networks", vec!["127.0.0.1"]))
    })
    .await;
    let (a, b) = (app.register().await, app.register().await);
    let (to_a, to_b) =
        (crate::receiver::Receiver::start(&[]).await, crate::receiver::Receiver::start(&[]).await);
    for (tenant, receiver, types) in [(&a, &to_a, json!(["user.*"])), (&b, &to_b, json!(["*"]))] {
        let res = app
            .post("/api/v1/webhooks", &tenant.token, json!({"url": receiver.url, "event_types": types}))
            .await;
        assert_eq!(res.status(), 201);
    }
    let txn = nexus::platform::db::begin(&app.state.db).await.unwrap();
    let data = |n: usize, tag: &str| (0..n).map(|i| json!({"n": i, "tag": tag})).collect::<Vec<_>>();
    // A's wanted events one by one (a dispatch job each), the rest in two
    // lots (a dispatch job for each lot).
    for event in data(70, "a") {
        publish(&txn, a.id, &USER_ROLE_ASSIGNED, event).await.unwrap();
    }
    publish_many(&txn, a.id, &FEATURE_TOGGLED, data(20, "a-unwanted")).await.unwrap();
    publish_many(&txn, b.id, &FEATURE_TOGGLED, data(80, "b")).await.unwrap();
    sea_orm::TransactionSession::commit(txn).await.unwrap();

    // Four workers a lane: a claim takes a job per free slot, and each run
    // takes the due rest with it, so there are about a claim's worth of runs.
    let worker =
        app.sibling_adjusted(|f| f.merge(("jobs.default_workers", 4)).merge(("jobs.high_workers", 4))).await;
    to_a.wait_for(70).await;
    to_b.wait_for(80).await;
    worker.drained().await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    for (receiver, tenant, tag, n) in [(&to_a, &a, "a", 70), (&to_b, &b, "b", 80)] {
        let got = receiver.received();
        let ids: std::collections::HashSet<_> =
            got.iter().map(|r| r.header("webhook-id").to_owned()).collect();
        assert_eq!((got.len(), ids.len()), (n, n), "each event once");
        for r in &got {
            let body = r.json();
            assert_eq!(body["tenant_id"], tenant.id.to_string(), "{body}");
            assert_eq!(body["data"]["tag"], tag, "{body}");
        }
    }
    // 72 dispatch jobs (and the registrations' own) in a few runs, not one
    // each: the jobs a run took share its time of completion.
    let dispatches = SystemScope
        .find::<entity::job::Entity>()
        .filter(entity::job::Column::Kind.eq("event.dispatch"))
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(dispatches.len() >= 72 && dispatches.iter().all(|j| j.status == "completed"));
    let lots: Vec<usize> = dispatches
        .iter()
        .filter_map(|j| j.payload.get("event_ids").and_then(|ids| ids.as_array()).map(Vec::len))
        .collect();
    assert_eq!(lots.iter().filter(|n| [20, 80].contains(n)).count(), 2, "one job per lot: {lots:?}");
    let finished: std::collections::HashSet<_> = dispatches.iter().map(|j| j.finished_at).collect();
    assert!(finished.len() <= 12, "{} runs for {} events", finished.len(), dispatches.len());
}

/// Dispatch runs written together are each decided on their own: a run
/// whose event is gone fails, alone, and the others in its batch go out.
#[tokio::test]
async fn a_dispatch_whose_event_is_gone_fails_alone_and_its_batch_goes_out() {
    use nexus::platform::events::{DISPATCH_JOB, USER_ROLE_ASSIGNED, publish};
    let app = TestApp::spawn_adjusted(|f| {
        f.merge(("jobs.run_in_server", false)).merge(("webhooks.allow_networks", vec!["127.0.0.1"]))
    })
    .await;
    let tenant = app.register().await;
    let receiver = crate::receiver::Receiver::start(&[]).await;
    let res = app
        .post("/api/v1/webhooks", &tenant.token, json!({"url": receiver.url, "event_types": ["user.*"]}))
        .await;
    assert_eq!(res.status(), 201);
    let txn = nexus::platform::db::begin(&app.state.db).await.unwrap();
    for n in 0..3 {
        publish(&txn, tenant.id, &USER_ROLE_ASSIGNED, json!({"n": n})).await.unwrap();
    }
    // Above the others' priority, so the first claim takes it as a run of
    // its own rather than a run taking it with others.
    let missing = uuid::Uuid::now_v7();
    let bad = jobs::enqueue(&txn, NewJob::new(DISPATCH_JOB, json!({"event_id": missing})).priority(7))
        .await
        .unwrap();
    sea_orm::TransactionSession::commit(txn).await.unwrap();

    let worker = app.sibling_adjusted(|f| f.merge(("jobs.default_workers", 8))).await;
    receiver.wait_for(3).await;
    worker.drained().await;
    let got: Vec<serde_json::Value> = receiver.received().iter().map(|r| r.json()).collect();
    let mut tags: Vec<i64> = got
        .iter()
        .filter(|b| b["type"] == "user.role_assigned")
        .filter_map(|b| b["data"]["n"].as_i64())
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, [0, 1, 2], "each event once: {got:?}");
    let dispatches = SystemScope
        .find::<entity::job::Entity>()
        .filter(entity::job::Column::Kind.eq(DISPATCH_JOB))
        .all(&app.state.db)
        .await
        .unwrap();
    let (failed, others): (Vec<_>, Vec<_>) = dispatches.into_iter().partition(|j| j.id == bad);
    assert_eq!(
        (failed[0].status.as_str(), failed[0].attempts, failed[0].last_error.as_deref()),
        ("dead", 1, Some(format!("event {missing} is gone").as_str()))
    );
    assert!(others.iter().all(|j| j.status == "completed"), "{others:?}");
}

/// On PostgreSQL the request path's connections are opened by the HTTP
/// workers that use them; start-up (migrations, the modules' schedules) and
/// the job workers have a pool of their own (`Application::build_with`).
#[tokio::test]
#[ignore = "needs PostgreSQL: set NEXUS_TEST_DATABASE_URL and run with --include-ignored (.ci/run does)"]
async fn on_postgresql_the_request_path_has_a_pool_of_its_own() {
    std::env::var("NEXUS_TEST_DATABASE_URL").expect("NEXUS_TEST_DATABASE_URL");
    let runs = Arc::new(AtomicUsize::new(0));
    let dir = tempfile::tempdir().unwrap();
    let listener = Arc::new(Flaky { failures: 0, runs: runs.clone() });
    let app = TestApp::spawn_with_listeners(test_config(dir.path()), dir, vec![listener]).await;
    let requests = app.state.db.get_postgres_connection_pool();
    assert_eq!(requests.size(), 0, "start-up opened a connection of the request path's pool");
    app.register().await;
    let opened = requests.size();
    assert!(opened >= 1, "the request opened none");
    // The workers dispatch the owner's `user.created` and run the listener.
    eventually(10, || async { (runs.load(Ordering::SeqCst) == 1).then_some(()) }).await;
    assert_eq!(requests.size(), opened, "the job workers opened connections of the request path's pool");
}
