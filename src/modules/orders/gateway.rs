//! Payments behind one trait. The saga charges an order's total and, to
//! compensate, voids the charge; refunds give part or all of a captured
//! charge back. Every call carries an idempotency key, so a call retried
//! after a timeout never charges (or refunds) twice. This build has the
//! simulated gateway; the configuration chooses it (`[modules.orders]
//! gateway`).

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::SimulatedSettings;

/// A charge of an order's total.
#[derive(Clone, Debug)]
pub struct Charge {
    /// The same for every attempt of this payment.
    pub idempotency_key: String,
    /// Minor units.
    pub amount: i64,
    pub currency: String,
    pub description: String,
}

/// What the gateway answered a charge with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Captured: the money is taken.
    Approved { reference: String },
    /// Refused for good (card declined, ...): not worth retrying.
    Declined { reference: String, reason: String },
}

/// A refund of (part of) a captured charge.
#[derive(Clone, Debug)]
pub struct Refund {
    /// The same for every attempt of this refund.
    pub idempotency_key: String,
    /// The gateway's reference of the captured charge.
    pub charge_reference: String,
    /// Minor units.
    pub amount: i64,
    pub currency: String,
    pub reason: String,
}

/// What the gateway answered a refund with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The money is on its way back.
    Succeeded { reference: String },
    /// Refused for good: not worth retrying.
    Failed { reason: String },
}

/// The gateway could not be reached or failed: retry with the same key.
#[derive(Debug)]
pub struct GatewayError(pub String);

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "payment gateway: {}", self.0)
    }
}

#[async_trait::async_trait]
pub trait PaymentGateway: Send + Sync {
    /// Its name, recorded on each payment.
    fn name(&self) -> &'static str;
    /// Charge; the same key answers the same outcome again.
    async fn charge(&self, charge: &Charge) -> Result<ChargeOutcome, GatewayError>;
    /// Give a captured charge back (compensation); idempotent per key.
    async fn void(&self, reference: &str, idempotency_key: &str) -> Result<(), GatewayError>;
    /// Give (part of) a captured charge back; the same key answers the
    /// same outcome again and never refunds twice.
    async fn refund(&self, refund: &Refund) -> Result<RefundOutcome, GatewayError>;
}

/// The seeds' fake gateway: approves a configured share of payments after
/// a configured delay. The outcome of a payment is drawn from its
/// idempotency key and the seed, so retries agree and runs repeat.
pub struct Simulated {
    success_rate: f64,
    refund_success_rate: f64,
    delay: Duration,
    seed: u64,
}

impl Simulated {
    pub fn new(settings: &SimulatedSettings) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&settings.success_rate),
            "`modules.orders.simulated.success_rate`: must be between 0.0 and 1.0"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&settings.refund_success_rate),
            "`modules.orders.simulated.refund_success_rate`: must be between 0.0 and 1.0"
        );
        anyhow::ensure!(
            settings.delay_ms <= 60_000,
            "`modules.orders.simulated.delay_ms`: must be at most 60000"
        );
        Ok(Self {
            success_rate: settings.success_rate,
            refund_success_rate: settings.refund_success_rate,
            delay: Duration::from_millis(settings.delay_ms),
            seed: settings.seed,
        })
    }

    /// A uniform draw in [0, 1) and a reference, both fixed by seed and key.
    fn draw(&self, key: &str) -> (f64, String) {
        let digest =
            Sha256::new().chain_update(self.seed.to_be_bytes()).chain_update(key.as_bytes()).finalize();
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        let fraction = (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
        (fraction, format!("sim_{}", hex::encode(&digest[8..20])))
    }
}

#[async_trait::async_trait]
impl PaymentGateway for Simulated {
    fn name(&self) -> &'static str {
        "simulated"
    }

    async fn charge(&self, charge: &Charge) -> Result<ChargeOutcome, GatewayError> {
        tokio::time::sleep(self.delay).await;
        let (fraction, reference) = self.draw(&charge.idempotency_key);
        Ok(if fraction < self.success_rate {
            ChargeOutcome::Approved { reference }
        } else {
            ChargeOutcome::Declined { reference, reason: "card declined (simulated)".to_owned() }
        })
    }

    async fn void(&self, _reference: &str, _idempotency_key: &str) -> Result<(), GatewayError> {
        tokio::time::sleep(self.delay).await;
        Ok(())
    }

    async fn refund(&self, refund: &Refund) -> Result<RefundOutcome, GatewayError> {
        tokio::time::sleep(self.delay).await;
        let (fraction, reference) = self.draw(&refund.idempotency_key);
        Ok(if fraction < self.refund_success_rate {
            RefundOutcome::Succeeded { reference: reference.replacen("sim_", "sim_re_", 1) }
        } else {
            RefundOutcome::Failed { reason: "refund refused by the issuer (simulated)".to_owned() }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(success_rate: f64, seed: u64) -> Simulated {
        let settings =
            SimulatedSettings { success_rate, refund_success_rate: success_rate, delay_ms: 0, seed };
        Simulated::new(&settings).unwrap()
    }

    fn charge(key: &str) -> Charge {
        Charge { idempotency_key: key.into(), amount: 100, currency: "EUR".into(), description: "t".into() }
    }

    #[tokio::test]
    async fn outcomes_follow_the_rate_and_repeat_per_key() {
        let always = gateway(1.0, 1);
        let never = gateway(0.0, 1);
        let half = gateway(0.5, 7);
        let mut approved = 0;
        for i in 0..1000 {
            let key = format!("order:{i}:charge");
            assert!(matches!(always.charge(&charge(&key)).await.unwrap(), ChargeOutcome::Approved { .. }));
            assert!(matches!(never.charge(&charge(&key)).await.unwrap(), ChargeOutcome::Declined { .. }));
            let first = half.charge(&charge(&key)).await.unwrap();
            assert_eq!(first, half.charge(&charge(&key)).await.unwrap(), "the same key, the same answer");
            approved += usize::from(matches!(first, ChargeOutcome::Approved { .. }));
        }
        assert!((400..600).contains(&approved), "{approved} of 1000 approved at 0.5");
    }

    #[tokio::test]
    async fn refunds_follow_their_rate_and_repeat_per_key() {
        let refund = |key: &str| Refund {
            idempotency_key: key.into(),
            charge_reference: "sim_1".into(),
            amount: 50,
            currency: "EUR".into(),
            reason: "t".into(),
        };
        let (always, never, half) = (gateway(1.0, 1), gateway(0.0, 1), gateway(0.5, 3));
        let mut succeeded = 0;
        for i in 0..1000 {
            let key = format!("refund:{i}");
            let ok = always.refund(&refund(&key)).await.unwrap();
            assert!(
                matches!(&ok, RefundOutcome::Succeeded { reference } if reference.starts_with("sim_re_"))
            );
            assert!(matches!(never.refund(&refund(&key)).await.unwrap(), RefundOutcome::Failed { .. }));
            let first = half.refund(&refund(&key)).await.unwrap();
            assert_eq!(first, half.refund(&refund(&key)).await.unwrap(), "the same key, the same answer");
            succeeded += usize::from(matches!(first, RefundOutcome::Succeeded { .. }));
        }
        assert!((400..600).contains(&succeeded), "{succeeded} of 1000 refunded at 0.5");
    }

    #[test]
    fn a_rate_outside_zero_to_one_is_refused() {
        let settings =
            SimulatedSettings { success_rate: 1.5, refund_success_rate: 1.0, delay_ms: 0, seed: 0 };
        assert!(Simulated::new(&settings).is_err());
        let settings =
            SimulatedSettings { success_rate: 1.0, refund_success_rate: -0.1, delay_ms: 0, seed: 0 };
        assert!(Simulated::new(&settings).is_err());
    }
}
