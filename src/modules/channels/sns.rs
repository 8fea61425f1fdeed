//! Amazon SNS messages delivered to an HTTP/S subscription, as SP-API
//! notifications arrive when their destination fans out through an SNS
//! topic. A message is authentic when its `Signature` verifies against the
//! certificate at `SigningCertURL` (fetched once per URL and kept), whose
//! host must match the allowed pattern (`sns.<region>.amazonaws.com` by
//! default) over https (http only where base URLs may be http, i.e. in
//! development). The string to sign is the message's fields, each as
//! `Name\nvalue\n`, in the order SNS documents per type;
//! `SignatureVersion` 1 is SHA1withRSA, 2 is SHA256withRSA.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use regex::Regex;
use rsa::{Pkcs1v15Sign, RsaPublicKey, pkcs8::DecodePublicKey};
use serde_json::Value;
use sha2::Digest;
use x509_cert::{
    Certificate,
    der::{DecodePem, Encode},
};

/// The default allowed certificate host: SNS in any region, China included.
pub const DEFAULT_CERT_HOST: &str = r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$";

/// The fields signed, in order, by message type.
const NOTIFICATION_FIELDS: [&str; 6] = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"];
const SUBSCRIPTION_FIELDS: [&str; 7] =
    ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"];

pub struct Verifier {
    http: reqwest::Client,
    timeout: Duration,
    /// The allowed host pattern, or why it is not one (then nothing is allowed).
    cert_host: Result<Regex, String>,
    allow_http: bool,
    /// Public keys of the certificates fetched, by URL.
    keys: Mutex<HashMap<String, RsaPublicKey>>,
}

/// The canonical string SNS signed for `message`, or why there is none.
pub fn string_to_sign(message: &Value) -> Result<String, String> {
    let fields: &[&str] = match message["Type"].as_str() {
        Some("Notification") => &NOTIFICATION_FIELDS,
        Some("SubscriptionConfirmation" | "UnsubscribeConfirmation") => &SUBSCRIPTION_FIELDS,
        Some(other) => return Err(format!("`{other}` is not an SNS message type")),
        None => return Err("the body is not an SNS message (no Type)".to_owned()),
    };
    let mut out = String::new();
    for field in fields {
        match message[*field].as_str() {
            Some(value) => {
                out.push_str(field);
                out.push('\n');
                out.push_str(value);
                out.push('\n');
            }
            // Only a notification's Subject is optional.
            None if *field == "Subject" => {}
            None => return Err(format!("the SNS message has no {field}")),
        }
    }
    Ok(out)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Verifier {
    pub fn new(
        http: reqwest::Client,
        timeout: Duration,
        cert_host: Result<Regex, String>,
        allow_http: bool,
    ) -> Self {
        Self { http, timeout, cert_host, allow_http, keys: Mutex::new(HashMap::new()) }
    }

    /// `Ok` when `url` may be fetched: https (or http where allowed), a host
    /// matching the allowed pattern, no user name or password.
    pub fn allowed(&self, url: &str) -> Result<url::Url, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let scheme_ok = parsed.scheme() == "https" || (self.allow_http && parsed.scheme() == "http");
        if !scheme_ok {
            return Err(format!("`{url}` is not https"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!("`{url}` carries credentials"));
        }
        let pattern = self.cert_host.as_ref().map_err(Clone::clone)?;
        match parsed.host_str() {
            Some(host) if pattern.is_match(host) => Ok(parsed),
            _ => Err(format!("the host of `{url}` is not an allowed SNS host")),
        }
    }

    /// The public key of the certificate at `url`, fetched once.
    async fn key(&self, url: &str) -> Result<RsaPublicKey, String> {
        if let Some(key) = lock(&self.keys).get(url) {
            return Ok(key.clone());
        }
        let allowed = self.allowed(url)?;
        let res = self
            .http
            .get(allowed)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| format!("the signing certificate could not be fetched: {e}"))?;
        if !res.status().is_success() {
            return Err(format!("the signing certificate could not be fetched: {}", res.status()));
        }
        let pem = res.bytes().await.map_err(|e| format!("the signing certificate could not be read: {e}"))?;
        let cert = Certificate::from_pem(&pem)
            .map_err(|e| format!("the signing certificate is not PEM X.509: {e}"))?;
        let validity = &cert.tbs_certificate.validity;
        let now = std::time::SystemTime::now();
        if now < validity.not_before.to_system_time() || now > validity.not_after.to_system_time() {
            return Err("the signing certificate is not valid now".to_owned());
        }
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| format!("the signing certificate's key cannot be read: {e}"))?;
        let key = RsaPublicKey::from_public_key_der(&spki)
            .map_err(|e| format!("the signing certificate's key is not RSA: {e}"))?;
        lock(&self.keys).insert(url.to_owned(), key.clone());
        Ok(key)
    }

    /// Whether `body` is an SNS message signed by SNS; `Ok` with the message.
    pub async fn verify(&self, body: &[u8]) -> Result<Value, String> {
        let message: Value =
            serde_json::from_slice(body).map_err(|e| format!("the body is not an SNS message: {e}"))?;
        let canonical = string_to_sign(&message)?;
        let signature = message["Signature"]
            .as_str()
            .and_then(|s| STANDARD.decode(s).ok())
            .ok_or_else(|| "the SNS message has no base64 Signature".to_owned())?;
        let url = message["SigningCertURL"]
            .as_str()
            .ok_or_else(|| "the SNS message has no SigningCertURL".to_owned())?;
        let (scheme, hashed) = match message["SignatureVersion"].as_str() {
            Some("1") => {
                (Pkcs1v15Sign::new::<sha1::Sha1>(), sha1::Sha1::digest(canonical.as_bytes()).to_vec())
            }
            Some("2") => {
                (Pkcs1v15Sign::new::<sha2::Sha256>(), sha2::Sha256::digest(canonical.as_bytes()).to_vec())
            }
            _ => return Err("SignatureVersion must be 1 or 2".to_owned()),
        };
        let key = self.key(url).await?;
        key.verify(scheme, &hashed, &signature)
            .map_err(|_| "the signature does not match the message".to_owned())?;
        Ok(message)
    }

    /// Confirm a subscription: GET its `SubscribeURL` when its host is allowed too.
    pub async fn confirm(&self, url: &str) -> Result<(), String> {
        let allowed = self.allowed(url)?;
        let res = self
            .http
            .get(allowed)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| format!("SNS could not be reached to confirm: {e}"))?;
        if res.status().is_success() {
            Ok(())
        } else {
            Err(format!("SNS refused the confirmation: {}", res.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_string_to_sign_follows_the_type() {
        let notification = json!({"Type": "Notification", "MessageId": "m", "TopicArn": "t", "Message": "hi",
            "Timestamp": "2026-11-28T10:00:00.000Z", "SignatureVersion": "1", "Signature": "x", "SigningCertURL": "u"});
        assert_eq!(
            string_to_sign(&notification).unwrap(),
            "Message\nhi\nMessageId\nm\nTimestamp\n2026-11-28T10:00:00.000Z\nTopicArn\nt\nType\nNotification\n"
        );
        let mut with_subject = notification.clone();
        with_subject["Subject"] = json!("s");
        assert!(string_to_sign(&with_subject).unwrap().contains("MessageId\nm\nSubject\ns\nTimestamp"));
        let confirmation = json!({"Type": "SubscriptionConfirmation", "MessageId": "m", "TopicArn": "t",
            "Message": "confirm", "Timestamp": "x", "Token": "tok", "SubscribeURL": "https://sns"});
        assert_eq!(
            string_to_sign(&confirmation).unwrap(),
            "Message\nconfirm\nMessageId\nm\nSubscribeURL\nhttps://sns\nTimestamp\nx\nToken\ntok\nTopicArn\nt\nType\nSubscriptionConfirmation\n"
        );
        let mut missing = confirmation;
        missing.as_object_mut().unwrap().remove("Token");
        assert!(string_to_sign(&missing).is_err());
        assert!(string_to_sign(&json!({"Type": "Other"})).is_err());
    }

    #[test]
    fn only_sns_hosts_over_https_are_fetched() {
        let v = Verifier::new(
            reqwest::Client::new(),
            Duration::from_secs(1),
            Ok(Regex::new(DEFAULT_CERT_HOST).unwrap()),
            false,
        );
        assert!(v.allowed("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem").is_ok());
        assert!(v.allowed("https://sns.cn-north-1.amazonaws.com.cn/x.pem").is_ok());
        for bad in [
            "http://sns.eu-west-1.amazonaws.com/x.pem",
            "https://sns.eu-west-1.amazonaws.com.evil.example/x.pem",
            "https://evil.example/sns.eu-west-1.amazonaws.com",
            "https://user:pw@sns.eu-west-1.amazonaws.com/x.pem",
            "not a url",
        ] {
            assert!(v.allowed(bad).is_err(), "{bad}");
        }
    }
}
