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
        if run < self.failures { Err(JobError::retry(format!("failure {run}"))) } else { Ok(()) }
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
    assert_eq!(job.last_error.as_deref(), Some("failure 1"));
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
