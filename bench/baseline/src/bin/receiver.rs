//! The webhook receiver of `bench/webhooks.sh`: answers 204 at once and, for
//! every message, records how long after its event occurred it arrived (the
//! body's `timestamp`), counting each `webhook-id` once (delivery is at least
//! once). When it has seen the expected count it prints the rate and the
//! latency percentiles and exits; after 600 s without them it fails.
//!
//! Usage: `receiver PORT EXPECTED [SETTLE_S]`. With `SETTLE_S`, the latency is
//! printed a second time for the events that occurred that many seconds or
//! more after the first: the steady state, without the start of the phase
//! (connections being opened, caches filled). One worker thread: a receiver
//! that costs next to nothing leaves the machine's cores to what is measured.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::sync::Notify;

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    arrivals: Vec<Arrival>,
}

/// One message, first seen: times in milliseconds since the epoch.
struct Arrival {
    at: f64,
    occurred: f64,
}

impl Arrival {
    fn latency(&self) -> f64 {
        self.at - self.occurred
    }
}

struct State {
    expected: usize,
    seen: Mutex<Seen>,
    done: Notify,
}

#[derive(Deserialize)]
struct Event {
    timestamp: DateTime<Utc>,
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

async fn hook(state: web::Data<State>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let now = now_ms();
    let id = req.headers().get("webhook-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (Some(id), Ok(event)) = (id, serde_json::from_slice::<Event>(&body)) else {
        return HttpResponse::BadRequest().finish();
    };
    let occurred = event.timestamp.timestamp_micros() as f64 / 1000.0;
    let mut seen = state.seen.lock().expect("not poisoned");
    if seen.ids.insert(id) {
        seen.arrivals.push(Arrival { at: now, occurred });
        if seen.ids.len() == state.expected {
            state.done.notify_one();
        }
    }
    HttpResponse::NoContent().finish()
}

fn percentile(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// `p50 … p99 … max …` of `latencies`, sorted here.
fn percentiles(mut latencies: Vec<f64>) -> String {
    latencies.sort_by(f64::total_cmp);
    format!(
        "p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        percentile(&latencies, 50),
        percentile(&latencies, 90),
        percentile(&latencies, 99),
        latencies[latencies.len() - 1]
    )
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(expected), Some(settle)) = (
        args.get(1).and_then(|a| a.parse::<u16>().ok()),
        args.get(2).and_then(|a| a.parse::<usize>().ok()),
        args.get(3).map_or(Some(0.0), |a| a.parse::<f64>().ok()),
    ) else {
        eprintln!("usage: receiver PORT EXPECTED [SETTLE_S]");
        std::process::exit(2);
    };
    let state = web::Data::new(State { expected, seen: Mutex::default(), done: Notify::new() });
    let shared = Arc::clone(&state);
    let server =
        HttpServer::new(move || App::new().app_data(state.clone()).default_service(web::post().to(hook)))
            .workers(1)
            .bind(("127.0.0.1", port))?
            .run();
    let handle = server.handle();
    tokio::spawn(server);
    println!("ready");
    let finished = tokio::time::timeout(Duration::from_secs(600), shared.done.notified()).await;
    handle.stop(false).await;
    let seen = shared.seen.lock().expect("not poisoned");
    if finished.is_err() {
        println!("timed out with {} of {expected}", seen.ids.len());
        std::process::exit(1);
    }
    let first = seen.arrivals.iter().map(|a| a.at).fold(f64::INFINITY, f64::min);
    let last = seen.arrivals.iter().map(|a| a.at).fold(f64::NEG_INFINITY, f64::max);
    let span = (last - first) / 1000.0;
    let rate = if span > 0.0 { seen.arrivals.len() as f64 / span } else { 0.0 };
    println!("deliveries: {}  first-to-last: {span:.2} s  rate: {rate:.0}/s", seen.arrivals.len());
    println!(
        "event-to-delivery latency ms: {}",
        percentiles(seen.arrivals.iter().map(Arrival::latency).collect())
    );
    if settle > 0.0 {
        let start = seen.arrivals.iter().map(|a| a.occurred).fold(f64::INFINITY, f64::min) + settle * 1000.0;
        let settled: Vec<f64> =
            seen.arrivals.iter().filter(|a| a.occurred >= start).map(Arrival::latency).collect();
        if !settled.is_empty() {
            println!("  after the first {settle} s ({} events): {}", settled.len(), percentiles(settled));
        }
    }
    Ok(())
}
