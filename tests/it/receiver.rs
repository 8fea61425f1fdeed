//! A local webhook receiver: a real HTTP server on a random port that
//! records every request and answers from a script (then 200).

use std::{
    collections::VecDeque,
    net::TcpListener,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

#[derive(Clone, Debug)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap_or_default()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Reply {
    Status(u16),
    /// A status with `Retry-After: <secs>`.
    RetryAfter(u16, u64),
    /// A status with this body.
    Body(u16, &'static str),
    /// Answer 200, but only after this long (a timeout when longer than
    /// the delivery timeout).
    Slow(Duration),
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

pub struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
}

impl Receiver {
    pub async fn start(script: &[Reply]) -> Self {
        let shared = Arc::new(Shared::default());
        shared.script.lock().unwrap().extend(script.iter().copied());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().unwrap().port());
        let data = web::Data::from(shared.clone());
        let server =
            HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(receive)))
                .workers(1)
                .listen(listener)
                .unwrap()
                .run();
        tokio::spawn(server);
        Self { url, shared }
    }

    /// The most requests this receiver was answering at once.
    pub fn most_in_flight(&self) -> usize {
        self.shared.most_in_flight.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Wait until `n` requests arrived (at most 10 s) and return them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        crate::helpers::eventually(10, || async {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let reply = shared.script.lock().unwrap().pop_front();
    let status = match reply {
        Some(Reply::Status(status) | Reply::RetryAfter(status, _) | Reply::Body(status, _)) => status,
        None | Some(Reply::Slow(_)) => 200,
    };
    shared.received.lock().unwrap().push(Received { headers, body: body.to_vec(), status });
    let status = actix_web::http::StatusCode::from_u16(status).unwrap();
    let response = match reply {
        None => HttpResponse::Ok().body("ok"),
        Some(Reply::Status(_)) => HttpResponse::build(status).body(format!("status {}", status.as_u16())),
        Some(Reply::Body(_, body)) => HttpResponse::build(status).body(body),
        Some(Reply::RetryAfter(_, secs)) => {
            HttpResponse::build(status).insert_header(("retry-after", secs.to_string())).finish()
        }
        Some(Reply::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            HttpResponse::Ok().body("late")
        }
    };
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}
