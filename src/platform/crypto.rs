//! Encryption at rest for tenant secrets (webhook signing secrets, later channel credentials).
//!
//! These secrets have to be recoverable (we sign with them), so they cannot be hashed; instead
//! they are sealed with XChaCha20-Poly1305 under a server key that lives in configuration, not
//! in the database. A database dump alone then reveals nothing usable.
//!
//! XChaCha20's 24-byte nonce is large enough to draw at random for every encryption without a
//! realistic chance of reuse, so no nonce counter has to be stored or coordinated between
//! instances.

use anyhow::{Context, anyhow, bail};
use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce, aead::Aead};

/// Version tag in front of every sealed value, so the algorithm or key can be changed later
/// while old rows stay readable.
const VERSION_PREFIX: &str = "v1:";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Seals and opens secrets with the configured server key.
#[derive(Clone)]
pub struct Cipher {
    aead: XChaCha20Poly1305,
}

impl Cipher {
    /// From the configured key: the text is base64 (standard) of exactly 32 bytes.
    ///
    /// Surrounding whitespace is ignored because keys usually arrive through files or environment
    /// variables with a trailing newline. Errors never include the key or the decoder's message
    /// (which would quote an offending character of it).
    pub fn from_base64_key(key: &str) -> anyhow::Result<Self> {
        let bytes = STANDARD
            .decode(key.trim())
            .map_err(|_| anyhow!("encryption key is not valid base64 (standard alphabet, padded)"))?;
        if bytes.len() != KEY_LEN {
            bail!("encryption key must decode to {KEY_LEN} bytes, got {}", bytes.len());
        }
        let aead = XChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|_| anyhow!("encryption key must decode to {KEY_LEN} bytes"))?;
        Ok(Self { aead })
    }

    /// Seals `plaintext` as `"v1:" + base64(nonce || ciphertext+tag)` with a fresh random nonce,
    /// so equal secrets never produce equal stored values.
    pub fn encrypt(&self, plaintext: &str) -> String {
        let nonce = XNonce::from(rand::random::<[u8; NONCE_LEN]>());
        let Ok(ciphertext) = self.aead.encrypt(&nonce, plaintext.as_bytes()) else {
            // The only failure is a message longer than the cipher's 256 GiB limit, which no
            // in-memory &str holding a secret can reach.
            unreachable!("XChaCha20-Poly1305 encryption of an in-memory string cannot fail");
        };
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        format!("{VERSION_PREFIX}{}", STANDARD.encode(sealed))
    }

    /// Opens a value produced by [`Cipher::encrypt`]. Fails on an unknown version, bad base64,
    /// truncated input, or when authentication fails (tampered data or a different key).
    pub fn decrypt(&self, sealed: &str) -> anyhow::Result<String> {
        let encoded = sealed
            .strip_prefix(VERSION_PREFIX)
            .ok_or_else(|| anyhow!("sealed secret has an unknown version (expected {VERSION_PREFIX:?})"))?;
        let bytes = STANDARD.decode(encoded).context("sealed secret is not valid base64")?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            bail!("sealed secret is too short ({} bytes)", bytes.len());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().context("sealed secret has a bad nonce")?;
        let plaintext = self
            .aead
            .decrypt(&XNonce::from(nonce), ciphertext)
            .map_err(|_| anyhow!("sealed secret failed authentication (wrong key or tampered data)"))?;
        String::from_utf8(plaintext).context("sealed secret is not valid UTF-8")
    }
}

/// Never print key material, not even in debug logs of a containing config struct.
impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        STANDARD.encode([byte; KEY_LEN])
    }

    fn cipher(byte: u8) -> Cipher {
        Cipher::from_base64_key(&key(byte)).unwrap()
    }

    #[test]
    fn round_trip() {
        let c = cipher(7);
        for plaintext in ["", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "ünïcødé ✓"] {
            let sealed = c.encrypt(plaintext);
            assert!(sealed.starts_with("v1:"));
            assert_eq!(c.decrypt(&sealed).unwrap(), plaintext);
        }
    }

    #[test]
    fn two_encryptions_differ() {
        let c = cipher(7);
        let (a, b) = (c.encrypt("same"), c.encrypt("same"));
        assert_ne!(a, b);
        assert_eq!(c.decrypt(&a).unwrap(), c.decrypt(&b).unwrap());
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let c = cipher(7);
        let sealed = c.encrypt("secret");
        let mut bytes = STANDARD.decode(&sealed[3..]).unwrap();
        for i in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[i] ^= 1;
            let tampered = format!("v1:{}", STANDARD.encode(&bytes));
            assert!(c.decrypt(&tampered).is_err(), "flip at byte {i} went unnoticed");
            bytes[i] ^= 1;
        }
    }

    #[test]
    fn wrong_key_fails() {
        let sealed = cipher(7).encrypt("secret");
        let err = cipher(8).decrypt(&sealed).unwrap_err();
        assert!(err.to_string().contains("authentication"), "{err}");
    }

    #[test]
    fn malformed_input_refused() {
        let c = cipher(7);
        let sealed = c.encrypt("secret");
        assert!(c.decrypt(&sealed.replacen("v1:", "v2:", 1)).is_err());
        assert!(c.decrypt(&sealed[3..]).is_err());
        assert!(c.decrypt("v1:not base64!").is_err());
        assert!(c.decrypt(&format!("v1:{}", STANDARD.encode([0u8; NONCE_LEN + TAG_LEN - 1]))).is_err());
    }

    #[test]
    fn bad_key_refused_without_echoing_it() {
        let short = STANDARD.encode([1u8; 31]);
        let err = Cipher::from_base64_key(&short).unwrap_err().to_string();
        assert!(err.contains("32 bytes") && err.contains("31"), "{err}");
        assert!(!err.contains(&short));
        assert!(Cipher::from_base64_key(&STANDARD.encode([1u8; 33])).is_err());
        let err = Cipher::from_base64_key("s3cr3t-not-base64!").unwrap_err().to_string();
        assert!(err.contains("base64") && !err.contains("s3cr3t"), "{err}");
        // A trailing newline from a key file is tolerated.
        assert!(Cipher::from_base64_key(&format!("{}\n", key(1))).is_ok());
    }

    #[test]
    fn debug_hides_key() {
        assert_eq!(format!("{:?}", cipher(7)), "Cipher(***)");
    }
}
