//! Signed license keys: the vendor signs a license with an Ed25519 private
//! key that never leaves the vendor; Nexus verifies it with the public key
//! from its configuration (`license_public_key`), so a tenant cannot forge
//! or alter one, and a key can be applied offline.
//!
//! Format: `nexus1.<base64url payload>.<base64url signature>`, the signature
//! over the payload bytes (JSON).

use base64::{Engine, engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD as B64URL};
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Assignment;

const PREFIX: &str = "nexus1";

/// What a key grants.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Unique per key, recorded on the license.
    pub key_id: String,
    pub tenant_id: Uuid,
    pub tier: String,
    pub starts_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_users: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_calls_per_month: Option<u64>,
    pub issued_at: DateTime<Utc>,
}

impl Grant {
    pub fn assignment(&self) -> Assignment {
        Assignment {
            tier: Some(self.tier.clone()),
            status: Some(super::ACTIVE.to_owned()),
            starts_at: Some(self.starts_at),
            expires_at: Some(self.expires_at),
            max_users: self.max_users,
            api_calls_per_month: self.api_calls_per_month,
            user_rate_per_minute: None,
            tenant_rate_per_minute: None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not a Nexus license key")]
    Malformed,
    #[error(
        "the license key's signature does not verify: it was not issued for this deployment or was altered"
    )]
    BadSignature,
}

fn decode_key<const N: usize>(text: &str) -> anyhow::Result<[u8; N]> {
    let bytes = STANDARD.decode(text.trim()).map_err(|_| anyhow::anyhow!("not base64"))?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("must decode to {N} bytes"))
}

/// The verifying side, from the configured base64 public key.
pub fn public_key(base64: &str) -> anyhow::Result<VerifyingKey> {
    Ok(VerifyingKey::from_bytes(&decode_key::<32>(base64)?)?)
}

/// The signing side (the vendor's `nexus license sign`), from base64.
pub fn signing_key(base64: &str) -> anyhow::Result<SigningKey> {
    Ok(SigningKey::from_bytes(&decode_key::<32>(base64)?))
}

/// A new key pair, as base64 (private, public).
pub fn generate() -> (String, String) {
    let seed: [u8; 32] = rand::random();
    let key = SigningKey::from_bytes(&seed);
    (STANDARD.encode(key.to_bytes()), STANDARD.encode(key.verifying_key().to_bytes()))
}

pub fn sign(key: &SigningKey, grant: &Grant) -> anyhow::Result<String> {
    let payload = serde_json::to_vec(grant)?;
    let signature = key.sign(&payload);
    Ok(format!("{PREFIX}.{}.{}", B64URL.encode(&payload), B64URL.encode(signature.to_bytes())))
}

pub fn verify(key: &VerifyingKey, text: &str) -> Result<Grant, KeyError> {
    let mut parts = text.trim().split('.');
    let (Some(PREFIX), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(KeyError::Malformed);
    };
    let payload = B64URL.decode(payload).map_err(|_| KeyError::Malformed)?;
    let signature: [u8; 64] =
        B64URL.decode(signature).ok().and_then(|s| s.try_into().ok()).ok_or(KeyError::Malformed)?;
    key.verify(&payload, &Signature::from_bytes(&signature)).map_err(|_| KeyError::BadSignature)?;
    serde_json::from_slice(&payload).map_err(|_| KeyError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        let now = Utc::now();
        Grant {
            key_id: "lk_1".into(),
            tenant_id: Uuid::now_v7(),
            tier: "enterprise".into(),
            starts_at: now,
            expires_at: now + chrono::Duration::days(365),
            max_users: Some(500),
            api_calls_per_month: None,
            issued_at: now,
        }
    }

    #[test]
    fn a_signed_key_verifies_and_a_forged_one_does_not() {
        let (private, public) = generate();
        let (signer, verifier) = (signing_key(&private).unwrap(), public_key(&public).unwrap());
        let key = sign(&signer, &grant()).unwrap();
        assert_eq!(verify(&verifier, &key).unwrap().tier, "enterprise");

        // Altering the payload (say, the tier) breaks the signature.
        let parts: Vec<&str> = key.split('.').collect();
        let mut tampered = grant();
        tampered.tier = "enterprise-plus".into();
        let forged =
            format!("{}.{}.{}", parts[0], B64URL.encode(serde_json::to_vec(&tampered).unwrap()), parts[2]);
        assert_eq!(verify(&verifier, &forged), Err(KeyError::BadSignature));
        // Another vendor key is refused.
        let (other, _) = generate();
        let foreign = sign(&signing_key(&other).unwrap(), &grant()).unwrap();
        assert_eq!(verify(&verifier, &foreign), Err(KeyError::BadSignature));
        assert_eq!(verify(&verifier, "garbage"), Err(KeyError::Malformed));
        assert!(public_key("c2hvcnQ=").is_err());
    }
}
