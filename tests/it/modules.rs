//! The module contract, shown whole: a module written outside the crate,
//! with its feature key, config section, OpenAPI tag, REST route,
//! permission, event type, job, listener and start-up work, plugged in with
//! one line (`Parts::modules`). Built-in modules list themselves in
//! `src/modules/mod.rs` instead, where their GraphQL types merge too.

use std::sync::{Arc, Mutex};

use actix_web::{HttpResponse, post, web};
use nexus::{
    error::ApiResult,
    platform::{
        db,
        events::{self, EventType, Listener},
        jobs::{self, JobError, JobHandler, NewJob},
        module::{Feature, Grant, Module},
        rbac::{Authorized, Permission},
        state::AppState,
    },
};
use reqwest::Method;
use serde_json::json;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::helpers::{TestApp, assert_problem, eventually, json, test_config};

/// `notes:write`, held by admins, gated by `module.notes`.
struct NotesWrite;

impl Permission for NotesWrite {
    const OBJECT: &'static str = "notes";
    const ACTION: &'static str = "write";
    const FEATURE: Option<&'static str> = Some("module.notes");
}

const NOTE_PINNED: EventType = EventType {
    name: "note.pinned",
    description: "A note was pinned.",
    priority: 5,
    example: || json!({"text": "hello"}),
};
const ECHO_JOB: &str = "notes.echo";

/// `[modules.notes]`.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Settings {
    prefix: String,
}

/// What the module's job, listener and start-up work saw.
#[derive(Default)]
struct Seen {
    started: bool,
    jobs: Vec<String>,
    events: Vec<String>,
}

struct Notes {
    settings: Settings,
    seen: Arc<Mutex<Seen>>,
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
struct Pin {
    text: String,
}

/// Pin a note: an event and a job, in the transaction of the change.
#[utoipa::path(tag = "notes", responses((status = 201, description = "Pinned")), security(("bearer" = [])))]
#[post("/notes/pins")]
async fn pin(
    auth: Authorized<NotesWrite>,
    state: web::Data<AppState>,
    settings: web::Data<Settings>,
    body: web::Json<Pin>,
) -> ApiResult<HttpResponse> {
    let text = format!("{}{}", settings.prefix, body.text);
    let txn = db::begin(&state.db).await?;
    events::publish(&txn, auth.tenant.id(), &NOTE_PINNED, json!({"text": text})).await?;
    jobs::enqueue(&txn, NewJob::new(ECHO_JOB, json!({"text": text})).tenant(auth.tenant.id())).await?;
    txn.commit().await?;
    state.wakeup.wake();
    Ok(HttpResponse::Created().json(json!({"text": text})))
}

struct Echo(Arc<Mutex<Seen>>);

#[async_trait::async_trait]
impl JobHandler for Echo {
    async fn run(&self, _: &AppState, job: &entity::job::Model) -> Result<(), JobError> {
        self.0.lock().unwrap().jobs.push(job.payload["text"].as_str().unwrap_or_default().to_owned());
        Ok(())
    }
}

struct Heard(Arc<Mutex<Seen>>);

#[async_trait::async_trait]
impl Listener for Heard {
    fn name(&self) -> &'static str {
        "notes.heard"
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == NOTE_PINNED.name
    }

    async fn handle(&self, _: &AppState, event: &entity::event::Model) -> Result<(), JobError> {
        self.0.lock().unwrap().events.push(event.data["text"].as_str().unwrap_or_default().to_owned());
        Ok(())
    }
}

#[async_trait::async_trait]
impl Module for Notes {
    fn name(&self) -> &'static str {
        "notes"
    }

    fn feature(&self) -> Option<Feature> {
        Some(Feature { key: "module.notes", description: "Pinned notes", default: true, tier: "basic" })
    }

    fn tags(&self) -> &'static [(&'static str, &'static str)] {
        &[("notes", "Pinned notes (module.notes)")]
    }

    fn routes(&self, cfg: &mut ServiceConfig) {
        cfg.app_data(web::Data::new(self.settings.clone())).service(pin);
    }

    fn grants(&self) -> &'static [Grant] {
        &[Grant { object: "notes", action: "write", roles: &["admin"] }]
    }

    fn event_types(&self) -> &'static [&'static EventType] {
        &[&NOTE_PINNED]
    }

    fn jobs(&self) -> Vec<(&'static str, Arc<dyn JobHandler>)> {
        vec![(ECHO_JOB, Arc::new(Echo(self.seen.clone())))]
    }

    fn listeners(&self) -> Vec<Arc<dyn Listener>> {
        vec![Arc::new(Heard(self.seen.clone()))]
    }

    async fn start(&self, _: &AppState) -> anyhow::Result<()> {
        self.seen.lock().unwrap().started = true;
        Ok(())
    }
}

#[tokio::test]
async fn a_module_plugs_in_its_whole_surface_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let figment = test_config(dir.path()).merge(("modules.notes.prefix", "re: "));
    let config = nexus::config::Config::from_figment(figment.clone()).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let notes = Notes { settings: config.module("notes").unwrap(), seen: seen.clone() };

    // The one registration line.
    let parts = nexus::Parts { modules: vec![Arc::new(notes)], ..Default::default() };

    let app = TestApp::spawn_with_parts(figment, dir, parts).await;
    assert!(seen.lock().unwrap().started, "start-up work runs before the server answers");
    let tenant = app.register().await;

    // The route, with its config section; the event and the job committed with it.
    let res = app.post("/api/v1/notes/pins", &tenant.token, json!({"text": "hello"})).await;
    assert_eq!(res.status(), 201);
    assert_eq!(json(res).await["text"], "re: hello");
    eventually(5, || async {
        let seen = seen.lock().unwrap();
        (seen.jobs == ["re: hello"] && seen.events == ["re: hello"]).then_some(())
    })
    .await;

    // Its permission: granted to admins only, named when refused.
    let (_, viewer) = app.user_with_roles(&tenant, &["viewer"]).await;
    let body =
        assert_problem(app.post("/api/v1/notes/pins", &viewer, json!({"text": "x"})).await, 403, "forbidden")
            .await;
    assert!(body["detail"].as_str().unwrap().contains("notes:write"), "{body}");

    // Its event type is in the catalogue webhooks subscribe to.
    let types = json(app.get("/api/v1/webhooks/event-types", &tenant.token).await).await;
    assert!(types["data"].as_array().unwrap().iter().any(|t| t["name"] == "note.pinned"), "{types}");

    // Its OpenAPI tag and operation are in the served document.
    let doc: serde_json::Value =
        app.client.get(format!("{}/api/openapi.json", app.base)).send().await.unwrap().json().await.unwrap();
    assert!(doc["paths"]["/api/v1/notes/pins"]["post"].is_object());
    assert!(doc["tags"].as_array().unwrap().iter().any(|t| t["name"] == "notes"));

    // Its feature key: listed, and switching it off closes the route.
    let features = json(app.get("/api/v1/features", &tenant.token).await).await;
    assert!(features["data"].as_array().unwrap().iter().any(|f| f["key"] == "module.notes"), "{features}");
    let off = app
        .send_json(
            Method::PUT,
            "/api/v1/features/module.notes",
            Some(&tenant.token),
            json!({"enabled": false}),
        )
        .await;
    assert_eq!(off.status(), 200);
    assert_problem(
        app.post("/api/v1/notes/pins", &tenant.token, json!({"text": "x"})).await,
        403,
        "feature_disabled",
    )
    .await;
}

/// A module whose feature key is not `module.*`, or a second module of the
/// same name, is refused at start.
#[tokio::test]
async fn a_misdeclared_module_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let twice: Vec<Arc<dyn Module>> = vec![
        Arc::new(Notes { settings: Settings::default(), seen: seen.clone() }),
        Arc::new(Notes { settings: Settings::default(), seen }),
    ];
    let config = nexus::config::Config::from_figment(test_config(dir.path())).unwrap();
    let err = nexus::state_with(config, nexus::Parts { modules: twice, ..Default::default() })
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("registered twice"), "{err}");
}
