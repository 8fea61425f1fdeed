//! A local server speaking Stripe's PaymentIntents and Refunds API as
//! Nexus uses it: form-encoded requests, a bearer secret key, and
//! `Idempotency-Key` replays (the same key answers what it answered first,
//! without acting again). It can lose answers: the first `lose` calls are
//! carried out and then answered 500, as a timeout would leave them. It
//! can be slow: the first PaymentIntent it creates is recorded under its
//! key at once and answered only after `delay` (a caller that gave up
//! meanwhile finds it on retry, as at Stripe). And it can be down: every
//! call answered 503 without acting.

use std::{
    collections::HashMap,
    net::TcpListener,
    sync::{Arc, Mutex},
    time::Duration,
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

pub const SECRET: &str = "sk_test_nexus";

/// One request as received.
#[derive(Clone, Debug)]
pub struct Call {
    pub path: String,
    pub key: Option<String>,
    pub content_type: String,
    pub authorization: String,
    pub form: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    /// Answers by idempotency key.
    answers: HashMap<String, (u16, Value)>,
    /// Captured amount and refunded amount by intent.
    intents: HashMap<String, (i64, i64)>,
    refunds: usize,
    lose: usize,
    /// How long the first PaymentIntent's creation is answered late.
    delay: Option<Duration>,
    down: bool,
}

pub struct FakeStripe {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeStripe {
    pub async fn start(lose: usize) -> Self {
        Self::start_with(State { lose, ..State::default() })
    }

    /// A Stripe that answers the first PaymentIntent it creates after `delay`.
    pub async fn start_slow(delay: Duration) -> Self {
        Self::start_with(State { delay: Some(delay), ..State::default() })
    }

    fn start_with(state: State) -> Self {
        let state = Arc::new(Mutex::new(state));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let data = web::Data::new(state.clone());
        let server =
            HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(answer)))
                .workers(1)
                .listen(listener)
                .unwrap()
                .run();
        tokio::spawn(server);
        Self { url, state }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Payment intents created (not replayed).
    pub fn intents(&self) -> usize {
        self.state.lock().unwrap().intents.len()
    }

    pub fn refunds(&self) -> usize {
        self.state.lock().unwrap().refunds
    }

    /// Down (every call 503, nothing done) or up again.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }
}

fn error(kind: &str, code: &str, message: &str) -> Value {
    json!({"error": {"type": kind, "code": code, "message": message}})
}

async fn answer(req: HttpRequest, body: web::Bytes, state: web::Data<Arc<Mutex<State>>>) -> HttpResponse {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let call = Call {
        path: req.path().to_owned(),
        key: header("idempotency-key"),
        content_type: header("content-type").unwrap_or_default(),
        authorization: header("authorization").unwrap_or_default(),
        form: url::form_urlencoded::parse(&body).into_owned().collect(),
    };
    let (status, body, late) = {
        let mut state = state.lock().unwrap();
        state.calls.push(call.clone());
        let created_before = state.intents.len();
        let (status, body) = respond(&mut state, &call);
        let first_intent = created_before == 0 && state.intents.len() == 1;
        (status, body, state.delay.filter(|_| first_intent))
    };
    if let Some(delay) = late {
        tokio::time::sleep(delay).await;
    }
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).json(body)
}

fn respond(state: &mut State, call: &Call) -> (u16, Value) {
    if state.down {
        return (503, error("api_error", "unavailable", "Stripe is unavailable"));
    }
    if call.authorization != format!("Bearer {SECRET}") {
        (401, error("invalid_request_error", "api_key_invalid", "Invalid API Key provided"))
    } else if let Some(key) = &call.key {
        match state.answers.get(key).cloned() {
            Some(first) => first,
            None => {
                let first = act(state, call);
                state.answers.insert(key.clone(), first.clone());
                if state.lose > 0 {
                    state.lose -= 1;
                    (500, error("api_error", "lost", "the answer was lost"))
                } else {
                    first
                }
            }
        }
    } else {
        act(state, call)
    }
}

fn act(state: &mut State, call: &Call) -> (u16, Value) {
    let amount = |name: &str| call.form.get(name).and_then(|a| a.parse::<i64>().ok());
    match call.path.as_str() {
        "/v1/payment_intents" => {
            let id = format!("pi_{}", state.intents.len() + 1);
            let method = call.form.get("payment_method").map(String::as_str);
            if let Some(message) = match method {
                Some("pm_card_chargeDeclined") => Some("Your card was declined."),
                // A message with a NUL (`\u0000` in the JSON).
                Some("pm_card_chargeDeclinedNul") => Some("Your card was\0 declined."),
                _ => None,
            } {
                let mut body = error("card_error", "card_declined", message);
                body["error"]["payment_intent"] =
                    json!({"id": id, "object": "payment_intent", "status": "requires_payment_method"});
                return (402, body);
            }
            let Some(total) = amount("amount") else {
                return (
                    400,
                    error("invalid_request_error", "parameter_missing", "Missing required param: amount."),
                );
            };
            state.intents.insert(id.clone(), (total, 0));
            (
                200,
                json!({"id": id, "object": "payment_intent", "amount": total,
                "currency": call.form.get("currency"), "status": "succeeded"}),
            )
        }
        "/v1/refunds" => {
            let intent = call.form.get("payment_intent").cloned().unwrap_or_default();
            let Some((captured, refunded)) = state.intents.get(&intent).copied() else {
                return (404, error("invalid_request_error", "resource_missing", "No such payment_intent"));
            };
            let wanted = amount("amount").unwrap_or(captured - refunded);
            if wanted > captured - refunded {
                return (
                    400,
                    error(
                        "invalid_request_error",
                        "amount_too_large",
                        "Refund amount is greater than unrefunded amount",
                    ),
                );
            }
            state.intents.insert(intent.clone(), (captured, refunded + wanted));
            state.refunds += 1;
            (
                200,
                json!({"id": format!("re_{}", state.refunds), "object": "refund", "amount": wanted,
                "payment_intent": intent, "status": "succeeded"}),
            )
        }
        _ => (404, error("invalid_request_error", "resource_missing", "Unrecognized request URL")),
    }
}
