//! The cost of the governance chain on one request, in process (no network,
//! no load generator noise): the same endpoint served by the full `/api/v1`
//! stack (CORS, request context, versioning, audit, authentication,
//! governance: license, features, two rate-limit checks, usage; and
//! idempotency) and by a bare stack with only the request context and
//! authentication. Run: `cargo bench --bench middleware`.

use std::time::{Duration, Instant};

use actix_web::{App, middleware::from_fn, test, web};
use nexus::{
    api,
    config::Config,
    platform::{auth, db, http, license, users},
};
use utoipa_actix_web::{AppExt, scope};

const WARMUP: usize = 2_000;
const RUNS: usize = 20_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn report(name: &str, mut times: Vec<Duration>) -> Duration {
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "{name:<34} mean {:>7.1} us   p50 {:>7.1} us   p99 {:>7.1} us",
        mean.as_secs_f64() * 1e6,
        percentile(&times, 0.50).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6
    );
    mean
}

/// Time `RUNS` sequential requests (after a warm-up); the mean.
async fn measure<S, B>(
    name: &str,
    app: &S,
    request: &impl Fn() -> actix_http::Request,
) -> anyhow::Result<Duration>
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    for _ in 0..WARMUP {
        let res = test::call_service(app, request()).await;
        anyhow::ensure!(res.status() == 200, "{name}: {}", res.status());
    }
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let res = test::call_service(app, request()).await;
        times.push(started.elapsed());
        anyhow::ensure!(res.status() == 200, "{name}: {}", res.status());
    }
    Ok(report(name, times))
}

/// The request context alone, outside the bare stack's scope.
async fn context(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    http::request_context(req, |req| next.call(req)).await
}

/// Authentication alone, inside the bare stack's scope.
async fn authenticated(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    auth::middleware(req, |req| next.call(req)).await
}

fn main() -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(async {
        let dir = tempfile::tempdir()?;
        let config = Config::from_figment(
            Config::defaults()
                .merge(("data_dir", dir.path().display().to_string()))
                .merge(("jobs.run_in_server", false)),
        )?;
        let state = nexus::state(config).await?;
        db::migrate(&state.db).await?;
        let data = web::Data::new(state.clone());

        let full = test::init_service(
            App::new()
                .into_utoipa_app()
                .app_data(data.clone())
                .configure(|cfg| api::routes(cfg, &state.modules))
                .into_app()
                .wrap(from_fn(http::edge)),
        )
        .await;
        let bare = test::init_service(
            App::new()
                .into_utoipa_app()
                .app_data(data.clone())
                .service(scope("/api/v1").wrap(from_fn(authenticated)).configure(users::routes::routes))
                .into_app()
                .wrap(from_fn(context)),
        )
        .await;

        let register = test::TestRequest::post()
            .uri("/api/v1/auth/register")
            .set_json(serde_json::json!({"tenant_name": "Bench", "tenant_slug": "bench", "name": "Bench",
                "email": "bench@example.com", "password": "correct horse 42"}))
            .to_request();
        let body: serde_json::Value = test::call_and_read_body_json(&full, register).await;
        let token = body["data"]["token"]["token"].as_str().unwrap_or_default().to_owned();
        let tenant_id = body["data"]["tenant"]["id"].as_str().unwrap_or_default().parse()?;
        // Limits high enough never to refuse, so both rate-limit checks run in full.
        let lift = license::Assignment {
            user_rate_per_minute: Some(1_000_000_000),
            tenant_rate_per_minute: Some(1_000_000_000),
            ..Default::default()
        };
        license::assign(&state.db, &state.governance.tiers, tenant_id, lift, None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;

        let request = || {
            test::TestRequest::get()
                .uri("/api/v1/tenant")
                .insert_header(("authorization", format!("Bearer {token}")))
                .insert_header(("origin", "https://app.example.com"))
                .to_request()
        };
        let bare_mean = measure("bare (context + authentication)", &bare, &request).await?;
        let full_mean = measure("full /api/v1 chain", &full, &request).await?;
        let results = [bare_mean, full_mean];
        let overhead = results[1].saturating_sub(results[0]);
        println!(
            "overhead of the governance chain: {:.1} us per request (mean)",
            overhead.as_secs_f64() * 1e6
        );
        Ok(())
    })
}
