//! A [`PaymentGateway`] over HTTP in Stripe's wire format: form-encoded
//! requests to `POST /v1/payment_intents` (amount, lowercase currency,
//! `confirm=true` with the configured payment method) and `POST
//! /v1/refunds`, a bearer secret key, and an `Idempotency-Key` on every
//! call, so a call retried after a lost answer is the same call at Stripe.
//!
//! Answers: a PaymentIntent `succeeded` is captured; a `card_error` (402)
//! is a decline; any other 4xx (`invalid_request_error`, ...) is refused
//! for good; 429, 5xx and network failures are [`GatewayError`]s, retried
//! with the same key. A captured charge is voided by refunding it in full
//! (Stripe cancels only uncaptured intents). Every object created carries
//! the idempotency key as `metadata[nexus_key]`, by which Stripe's signed
//! callbacks (see [`super::callbacks`]) find their payment or refund.

use std::time::Duration;

use serde::Deserialize;

use super::{Charge, ChargeOutcome, GatewayError, PaymentGateway, Refund, RefundOutcome, StripeSettings};

pub struct Stripe {
    client: reqwest::Client,
    api_base: String,
    secret_key: String,
    payment_method: String,
}

/// Stripe's error body: `{"error": {"type", "code", "message", ...}}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: StripeError,
}

#[derive(Deserialize)]
struct StripeError {
    #[serde(rename = "type")]
    kind: String,
    code: Option<String>,
    message: Option<String>,
    /// The intent a declined card left behind.
    payment_intent: Option<Object>,
}

/// The part of a PaymentIntent or a Refund we read.
#[derive(Deserialize)]
struct Object {
    id: String,
    status: String,
    failure_reason: Option<String>,
    last_payment_error: Option<LastError>,
}

#[derive(Deserialize)]
struct LastError {
    message: Option<String>,
}

/// How a call ended, short of a transport failure.
enum Answer {
    Object(Object),
    /// A 4xx refusal: not worth retrying.
    Refused(StripeError),
}

impl Stripe {
    pub fn new(settings: &StripeSettings) -> anyhow::Result<Self> {
        let secret_key = settings
            .secret_key
            .as_ref()
            .map(|s| s.expose().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!("`modules.orders.stripe.secret_key`: required for gateway = \"stripe\"")
            })?;
        url::Url::parse(&settings.api_base)
            .map_err(|e| anyhow::anyhow!("`modules.orders.stripe.api_base`: {e}"))?;
        anyhow::ensure!(
            (1..=60_000).contains(&settings.timeout_ms),
            "`modules.orders.stripe.timeout_ms`: must be between 1 and 60000"
        );
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            client,
            api_base: settings.api_base.trim_end_matches('/').to_owned(),
            secret_key,
            payment_method: settings.payment_method.clone(),
        })
    }

    /// POST `form` to `path` with `key`.
    async fn post(&self, path: &str, key: &str, form: &[(&str, String)]) -> Result<Answer, GatewayError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let res = self
            .client
            .post(format!("{}{path}", self.api_base))
            .bearer_auth(&self.secret_key)
            .header("Idempotency-Key", key)
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| GatewayError(format!("{path}: {e}")))?;
        let status = res.status();
        let text = res.text().await.map_err(|e| GatewayError(format!("{path}: {e}")))?;
        // Its ids and reasons are kept: without NUL, as PostgreSQL needs.
        let answer = serde_json::from_str(&text).map(crate::platform::db::storable_json);
        if status.is_success() {
            let object = answer
                .and_then(serde_json::from_value)
                .map_err(|e| GatewayError(format!("{path}: an answer that is no Stripe object: {e}")))?;
            return Ok(Answer::Object(object));
        }
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(GatewayError(format!("{path}: HTTP {status}")));
        }
        let body: ErrorBody = answer
            .and_then(serde_json::from_value)
            .map_err(|e| GatewayError(format!("{path}: HTTP {status} without a Stripe error: {e}")))?;
        // A key still in use by a concurrent request: the same call, later.
        if body.error.kind == "idempotency_error" && status.as_u16() == 409 {
            return Err(GatewayError(format!("{path}: {}", body.error.message.unwrap_or_default())));
        }
        Ok(Answer::Refused(body.error))
    }

    /// Refund `amount` (all of it when `None`) of the intent `reference`.
    async fn refund_intent(
        &self,
        reference: &str,
        amount: Option<i64>,
        key: &str,
        reason: &str,
    ) -> Result<RefundOutcome, GatewayError> {
        let mut form = vec![
            ("payment_intent", reference.to_owned()),
            ("metadata[reason]", reason.to_owned()),
            ("metadata[nexus_key]", key.to_owned()),
        ];
        if let Some(amount) = amount {
            form.push(("amount", amount.to_string()));
        }
        Ok(match self.post("/v1/refunds", key, &form).await? {
            Answer::Object(refund) => match refund.status.as_str() {
                // `pending`: accepted, the money is on its way.
                "succeeded" | "pending" => RefundOutcome::Succeeded { reference: refund.id },
                other => RefundOutcome::Failed {
                    reason: refund.failure_reason.unwrap_or_else(|| format!("the refund is {other}")),
                },
            },
            Answer::Refused(e) => RefundOutcome::Failed { reason: describe(&e) },
        })
    }
}

fn describe(e: &StripeError) -> String {
    let message = e.message.clone().unwrap_or_else(|| e.kind.clone());
    match &e.code {
        Some(code) => format!("{message} ({code})"),
        None => message,
    }
}

#[async_trait::async_trait]
impl PaymentGateway for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn charge(&self, charge: &Charge) -> Result<ChargeOutcome, GatewayError> {
        let form = [
            ("amount", charge.amount.to_string()),
            ("currency", charge.currency.to_lowercase()),
            ("confirm", "true".to_owned()),
            ("payment_method", self.payment_method.clone()),
            ("description", charge.description.clone()),
            ("metadata[nexus_key]", charge.idempotency_key.clone()),
        ];
        Ok(match self.post("/v1/payment_intents", &charge.idempotency_key, &form).await? {
            Answer::Object(intent) if intent.status == "succeeded" => {
                ChargeOutcome::Approved { reference: intent.id }
            }
            // Processing, or waiting for the customer (3-D Secure): not a
            // capture the saga can ship on.
            Answer::Object(intent) => {
                let reason = intent
                    .last_payment_error
                    .and_then(|e| e.message)
                    .unwrap_or_else(|| format!("the payment is {}", intent.status));
                ChargeOutcome::Declined { reference: intent.id, reason }
            }
            Answer::Refused(e) => ChargeOutcome::Declined {
                reference: e.payment_intent.as_ref().map(|i| i.id.clone()).unwrap_or_default(),
                reason: describe(&e),
            },
        })
    }

    async fn void(&self, reference: &str, idempotency_key: &str) -> Result<(), GatewayError> {
        match self.refund_intent(reference, None, idempotency_key, "voided").await? {
            RefundOutcome::Succeeded { .. } => Ok(()),
            RefundOutcome::Failed { reason } => Err(GatewayError(format!("the void was refused: {reason}"))),
        }
    }

    async fn refund(&self, refund: &Refund) -> Result<RefundOutcome, GatewayError> {
        self.refund_intent(
            &refund.charge_reference,
            Some(refund.amount),
            &refund.idempotency_key,
            &refund.reason,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_need_a_secret_key_and_a_url() {
        let mut settings = StripeSettings::default();
        assert!(Stripe::new(&settings).err().unwrap().to_string().contains("secret_key"));
        settings.secret_key = serde_json::from_value(serde_json::json!("sk_test_1")).unwrap();
        assert!(Stripe::new(&settings).is_ok());
        settings.api_base = "not a url".into();
        assert!(Stripe::new(&settings).err().unwrap().to_string().contains("api_base"));
    }

    #[test]
    fn a_stripe_error_reads_as_its_message_and_code() {
        let body: ErrorBody = serde_json::from_str(
            r#"{"error": {"type": "card_error", "code": "card_declined", "message": "Your card was declined."}}"#,
        )
        .unwrap();
        assert_eq!(describe(&body.error), "Your card was declined. (card_declined)");
    }
}
