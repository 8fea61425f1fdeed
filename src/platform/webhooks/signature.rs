//! Standard Webhooks (<https://www.standardwebhooks.com>) signatures.
//!
//! We follow the published scheme byte for byte rather than inventing our own, so receivers can
//! verify our deliveries with any off-the-shelf Standard Webhooks (or Svix) library:
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, with several
//! space-separated signatures while a secret is being rotated.

use anyhow::{Context, anyhow, bail};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Prefix of secrets as shown to tenants; it marks the text as a webhook secret, not key bytes.
pub const SECRET_PREFIX: &str = "whsec_";

const SIGNATURE_VERSION: &str = "v1";
/// 24 bytes = 192 bits, comfortably above HMAC-SHA256's security needs and what Svix issues.
const SECRET_LEN: usize = 24;

/// A new secret: `"whsec_"` + base64 (standard, padded) of 24 random bytes.
pub fn generate_secret() -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(rand::random::<[u8; SECRET_LEN]>()))
}

/// The signature of one delivery: `"v1," + base64(HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}"))`.
///
/// The key is the base64 decoding of the secret after the `whsec_` prefix; a secret without
/// the prefix is decoded as a whole, as the reference libraries do.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> anyhow::Result<String> {
    let tag = keyed_mac(secret, msg_id, timestamp, body)?.finalize().into_bytes();
    Ok(format!("{SIGNATURE_VERSION},{}", STANDARD.encode(tag)))
}

/// The `webhook-signature` header value for several secrets (the current one and, during a
/// rotation, the previous ones): their signatures joined by a single space, so a receiver still
/// configured with an old secret keeps accepting deliveries.
pub fn signature_header(
    secrets: &[&str],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> anyhow::Result<String> {
    if secrets.is_empty() {
        bail!("no webhook secret to sign with");
    }
    let signatures = secrets
        .iter()
        .map(|secret| sign(secret, msg_id, timestamp, body))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(signatures.join(" "))
}

/// What a receiver does: true when any space-separated `v1,<sig>` entry of `header` matches and
/// `|now - timestamp| <= tolerance_secs`.
///
/// The timestamp window stops replays of captured deliveries; the comparison is constant-time
/// (`Mac::verify_slice`) so response timing does not leak how much of a forged signature was
/// right. Entries of other versions and malformed entries are skipped, as the spec requires.
pub fn verify(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
    now: i64,
    tolerance_secs: i64,
) -> bool {
    let fresh = u64::try_from(tolerance_secs).is_ok_and(|tolerance| now.abs_diff(timestamp) <= tolerance);
    if !fresh {
        return false;
    }
    let Ok(mac) = keyed_mac(secret, msg_id, timestamp, body) else {
        return false;
    };
    header
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == SIGNATURE_VERSION)
        .filter_map(|(_, signature)| STANDARD.decode(signature).ok())
        .any(|signature| mac.clone().verify_slice(&signature).is_ok())
}

/// The HMAC keyed with the secret and fed the signed content, ready to finalize or verify.
fn keyed_mac(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> anyhow::Result<HmacSha256> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = STANDARD.decode(encoded).context("webhook secret is not valid base64")?;
    if key.is_empty() {
        bail!("webhook secret is empty");
    }
    let mut mac =
        HmacSha256::new_from_slice(&key).map_err(|_| anyhow!("webhook secret has an invalid length"))?;
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(body);
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Official test vector: standard-webhooks/standard-webhooks, libraries/python/tests/
    // test_webhooks.py `test_sign_function` (the same values appear in the other libraries).
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TIMESTAMP: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const TOLERANCE: i64 = 300;

    #[test]
    fn standard_webhooks_test_vector() {
        let signature = sign(VECTOR_SECRET, VECTOR_MSG_ID, VECTOR_TIMESTAMP, VECTOR_BODY).unwrap();
        assert_eq!(signature, VECTOR_SIGNATURE);
        // Without the prefix the secret is decoded as a whole, giving the same key.
        let bare = VECTOR_SECRET.strip_prefix(SECRET_PREFIX).unwrap();
        assert_eq!(sign(bare, VECTOR_MSG_ID, VECTOR_TIMESTAMP, VECTOR_BODY).unwrap(), VECTOR_SIGNATURE);
        assert!(verify(
            VECTOR_SECRET,
            VECTOR_MSG_ID,
            VECTOR_TIMESTAMP,
            VECTOR_BODY,
            VECTOR_SIGNATURE,
            VECTOR_TIMESTAMP,
            TOLERANCE
        ));
    }

    #[test]
    fn generated_secrets_have_prefix_and_24_bytes() {
        let secret = generate_secret();
        let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap();
        assert_eq!(STANDARD.decode(encoded).unwrap().len(), SECRET_LEN);
        assert_ne!(secret, generate_secret());
    }

    #[test]
    fn invalid_secrets_refused() {
        assert!(sign("whsec_not base64!", "id", 1, b"").is_err());
        assert!(sign("whsec_", "id", 1, b"").is_err());
        assert!(signature_header(&[], "id", 1, b"").is_err());
        assert!(!verify("whsec_", "id", 1, b"", "v1,AAAA", 1, TOLERANCE));
    }

    #[test]
    fn verify_accepts_either_of_two_signatures() {
        let (old, new) = (generate_secret(), generate_secret());
        let (id, ts, body) = ("msg_1", 1_700_000_000, b"{\"a\":1}".as_slice());
        let header = signature_header(&[&new, &old], id, ts, body).unwrap();
        assert_eq!(header.split(' ').count(), 2);
        assert!(header.split(' ').all(|s| s.starts_with("v1,")));
        assert!(verify(&new, id, ts, body, &header, ts, TOLERANCE));
        assert!(verify(&old, id, ts, body, &header, ts, TOLERANCE));
        assert!(!verify(&generate_secret(), id, ts, body, &header, ts, TOLERANCE));
    }

    #[test]
    fn verify_skips_other_versions_and_garbage() {
        let header = format!("v2,abc garbage v1,!!! {VECTOR_SIGNATURE}");
        assert!(verify(
            VECTOR_SECRET,
            VECTOR_MSG_ID,
            VECTOR_TIMESTAMP,
            VECTOR_BODY,
            &header,
            VECTOR_TIMESTAMP,
            TOLERANCE
        ));
        let wrong_version = VECTOR_SIGNATURE.replacen("v1,", "v2,", 1);
        assert!(!verify(
            VECTOR_SECRET,
            VECTOR_MSG_ID,
            VECTOR_TIMESTAMP,
            VECTOR_BODY,
            &wrong_version,
            VECTOR_TIMESTAMP,
            TOLERANCE
        ));
    }

    #[test]
    fn verify_rejects_tampered_body_and_id() {
        let (ts, sig) = (VECTOR_TIMESTAMP, VECTOR_SIGNATURE);
        let tampered = br#"{"test": 2432232315}"#;
        assert!(!verify(VECTOR_SECRET, VECTOR_MSG_ID, ts, tampered, sig, ts, TOLERANCE));
        assert!(!verify(VECTOR_SECRET, "msg_other", ts, VECTOR_BODY, sig, ts, TOLERANCE));
    }

    #[test]
    fn verify_enforces_timestamp_tolerance() {
        let secret = generate_secret();
        let (id, body, now) = ("msg_1", b"{}".as_slice(), 1_700_000_000);
        let header_at = |ts: i64| sign(&secret, id, ts, body).unwrap();
        let edge = now - TOLERANCE;
        assert!(verify(&secret, id, edge, body, &header_at(edge), now, TOLERANCE));
        let old = now - TOLERANCE - 1;
        assert!(!verify(&secret, id, old, body, &header_at(old), now, TOLERANCE));
        let future = now + TOLERANCE + 1;
        assert!(!verify(&secret, id, future, body, &header_at(future), now, TOLERANCE));
        assert!(!verify(&secret, id, now, body, &header_at(now), now, -1));
        // Extreme values must not overflow.
        assert!(!verify(&secret, id, i64::MIN, body, &header_at(i64::MIN), i64::MAX, TOLERANCE));
    }
}
