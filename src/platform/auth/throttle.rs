//! Anonymous sign-in and registration are throttled per client address and
//! per account (429 with `Retry-After`), on the same limiter as the API's
//! rate limits, so several instances share the counts through Redis. The
//! client address is the peer's, or, behind a trusted reverse proxy, the
//! nearest address in `X-Forwarded-For` that is not a trusted proxy.

use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;

use crate::{
    error::{ApiError, ApiResult, Code},
    platform::{ratelimit::Quota, state::AppState},
};

/// The client's address as the server should believe it.
pub fn client_ip(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    if !trusted.iter().any(|net| net.contains(&peer)) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    // Right to left: each trusted proxy appended the address it saw.
    let client = forwarded.iter().rev().find(|ip| !trusted.iter().any(|net| net.contains(*ip)));
    Some(client.or(forwarded.first()).copied().unwrap_or(peer))
}

/// Count one attempt from the request's address and, for a sign-in, against
/// `account` (`tenant/email`); refuse with 429 once either is over its quota.
pub async fn attempt(state: &AppState, req: &HttpRequest, account: Option<&str>) -> ApiResult<()> {
    let trusted = state.config.trusted_proxies().map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
    let auth = &state.config.auth;
    let address = client_ip(req, &trusted).map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let mut checks =
        vec![(format!("auth:address:{address}"), auth.attempts_per_minute_per_address, "address")];
    if let Some(account) = account {
        checks.push((format!("auth:account:{account}"), auth.attempts_per_minute_per_account, "account"));
    }
    let chain: Vec<(&str, Quota)> = checks
        .iter()
        .map(|(key, per_minute, _)| (key.as_str(), Quota { per_minute: Some(*per_minute) }))
        .collect();
    let decisions = state.governance.limiter.check_chain(&chain).await;
    if let Some(((_, _, what), decision)) = checks.iter().zip(decisions).find(|(_, d)| !d.allowed) {
        let retry = decision.retry_after_secs.unwrap_or(60);
        return Err(ApiError::new(
            Code::RateLimited,
            format!("too many sign-in attempts for this {what}; retry in {retry} s"),
        )
        .retry_after(retry));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn from(peer: &str, forwarded: Option<&str>) -> HttpRequest {
        let req = TestRequest::default().peer_addr(peer.parse().unwrap());
        match forwarded {
            Some(f) => req.insert_header(("x-forwarded-for", f)).to_http_request(),
            None => req.to_http_request(),
        }
    }

    #[test]
    fn the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // An untrusted peer cannot claim another address.
        assert_eq!(client_ip(&from("203.0.113.5:1", Some("198.51.100.1")), &trusted), ip("203.0.113.5"));
        // Behind trusted proxies: the nearest untrusted address, right to left.
        let chain = "198.51.100.1, 203.0.113.9, 10.0.0.2";
        assert_eq!(client_ip(&from("10.0.0.1:1", Some(chain)), &trusted), ip("203.0.113.9"));
        // A trusted peer without the header is the client itself.
        assert_eq!(client_ip(&from("10.0.0.1:1", None), &trusted), ip("10.0.0.1"));
        // Garbage in the header is skipped.
        assert_eq!(
            client_ip(&from("10.0.0.1:1", Some("nonsense, 198.51.100.4")), &trusted),
            ip("198.51.100.4")
        );
    }
}
