//! SSRF guard for outbound webhook URLs.
//!
//! Tenants choose where we POST, so without a guard a webhook is a way to make the server reach
//! its own loopback services, the private network, or the cloud metadata endpoint. The check runs
//! twice: at registration (syntax, scheme, IP-literal hosts) for a quick, clear error, and at
//! delivery on the resolved addresses, inside the HTTP client's resolver, so the client connects to exactly those
//! and a DNS rebind between check and connect cannot redirect the request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// Longer URLs are almost certainly abuse and bloat every delivery log row.
const MAX_URL_LEN: usize = 2048;

/// Cloud metadata hostnames, refused whatever they resolve to: inside a cloud they map to the
/// metadata service, which hands out instance credentials.
const METADATA_HOSTS: &[&str] = &["metadata.google.internal", "metadata"];

/// IPv4 ranges that are not public destinations (IANA special-purpose registry).
const FORBIDDEN_V4: &[Ipv4Net] = &[
    Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8), // "this network", incl. unspecified
    Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8), // private
    Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10), // CGNAT shared space
    Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8), // loopback
    Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16), // link-local, incl. 169.254.169.254 metadata
    Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12), // private
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 0, 0), 24), // IETF protocol assignments
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 2, 0), 24), // documentation TEST-NET-1
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16), // private
    Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15), // benchmarking
    Ipv4Net::new_assert(Ipv4Addr::new(198, 51, 100, 0), 24), // documentation TEST-NET-2
    Ipv4Net::new_assert(Ipv4Addr::new(203, 0, 113, 0), 24), // documentation TEST-NET-3
    Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4), // multicast
    Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4), // reserved, incl. broadcast
];

/// IPv6 ranges that are not public destinations. `::` and `::1` are covered by the
/// IPv4-compatible rule (they embed 0.0.0.0 and 0.0.0.1, both in 0.0.0.0/8).
const FORBIDDEN_V6: &[Ipv6Net] = &[
    Ipv6Net::new_assert(Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64), // discard-only
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    Ipv6Net::new_assert(Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7), // unique local
    Ipv6Net::new_assert(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
    Ipv6Net::new_assert(Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10), // site-local (deprecated)
    Ipv6Net::new_assert(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8), // multicast
];

/// What `localhost` and `*.localhost` stand for (RFC 6761: they always name
/// this machine, so they are never looked up in DNS).
const LOOPBACK: [IpAddr; 2] = [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];

fn is_localhost(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost")
}

/// NAT64 well-known prefix: the gateway forwards to the embedded IPv4 address.
const NAT64: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96);
/// 6to4: the relay forwards to the IPv4 address in bits 16..48.
const SIX_TO_FOUR: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16);

/// Where outbound webhooks may go.
#[derive(Clone, Debug, Default)]
pub struct UrlPolicy {
    /// Allow http:// (development); otherwise only https://.
    pub allow_http: bool,
    /// Networks that may be targeted even though private/loopback (e.g. 127.0.0.0/8 in tests).
    pub allow_networks: Vec<IpNet>,
}

/// Why a webhook URL was refused. Messages are meant for the tenant registering the URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("invalid webhook URL: {0}")]
    Invalid(String),
    #[error("webhook URL must use https")]
    Scheme,
    #[error("webhook URL must not contain a user name or password")]
    Credentials,
    #[error("webhook URL targets a non-public address ({0})")]
    Forbidden(IpAddr),
    #[error("webhook host could not be resolved: {0}")]
    Unresolvable(String),
}

impl UrlPolicy {
    /// Parses the allowlist from config strings ("127.0.0.0/8", "::1/128"; a bare IP means /32
    /// or /128). The error names the bad entry.
    pub fn new(allow_http: bool, allow_networks: &[String]) -> Result<Self, String> {
        let allow_networks = allow_networks
            .iter()
            .map(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("invalid network in webhook allowlist: {entry:?}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { allow_http, allow_networks })
    }

    /// Syntax check at registration: absolute http(s) URL with a host, https unless
    /// `allow_http`, no user:password, at most 2048 characters. An IP-literal host is judged
    /// right away; hostnames are only judged on their resolved addresses in [`Self::resolve_host`],
    /// because what they resolve to can change after registration.
    pub fn check_url(&self, url: &str) -> Result<Url, UrlError> {
        if url.len() > MAX_URL_LEN {
            return Err(UrlError::Invalid(format!("longer than {MAX_URL_LEN} characters")));
        }
        let parsed = Url::parse(url).map_err(|e| UrlError::Invalid(e.to_string()))?;
        self.check_parsed(&parsed)?;
        Ok(parsed)
    }

    /// At delivery, from the HTTP client's resolver (so the addresses checked are the ones
    /// connected to and a DNS rebind cannot slip between check and connect): resolve `host` and
    /// refuse if ANY address is forbidden and not allowlisted, because the client may fall back
    /// to any of them. Metadata hostnames are refused whatever they resolve to.
    pub async fn resolve_host(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, UrlError> {
        let bare = host.trim_end_matches('.');
        if METADATA_HOSTS.contains(&bare) {
            return Err(UrlError::Invalid(format!("{bare} is a cloud metadata endpoint")));
        }
        if is_localhost(&bare.to_ascii_lowercase()) {
            return Ok(self.localhost()?.into_iter().map(|ip| SocketAddr::new(ip, port)).collect());
        }
        let resolved = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| UrlError::Unresolvable(format!("{host}: {e}")))?;
        let mut addrs = Vec::new();
        for addr in resolved {
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if addrs.is_empty() {
            return Err(UrlError::Unresolvable(format!("{host}: no addresses")));
        }
        match addrs.iter().find(|addr| !self.is_allowed_ip(addr.ip())) {
            Some(addr) => Err(UrlError::Forbidden(addr.ip())),
            None => Ok(addrs),
        }
    }

    /// True when `ip` may be targeted: it is allowlisted, or it is not in a forbidden range.
    /// Addresses that embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4) are
    /// judged by that IPv4 address, since that is where the packets end up.
    pub fn is_allowed_ip(&self, ip: IpAddr) -> bool {
        let embedded = match ip {
            IpAddr::V4(_) => None,
            IpAddr::V6(v6) => embedded_ipv4(v6),
        };
        let allowlisted = |ip: IpAddr| self.allow_networks.iter().any(|net| net.contains(&ip));
        if allowlisted(ip) || embedded.is_some_and(|v4| allowlisted(v4.into())) {
            return true;
        }
        match (ip, embedded) {
            (_, Some(v4)) | (IpAddr::V4(v4), None) => !FORBIDDEN_V4.iter().any(|net| net.contains(&v4)),
            (IpAddr::V6(v6), None) => !FORBIDDEN_V6.iter().any(|net| net.contains(&v6)),
        }
    }

    /// The checks that need no DNS: scheme, host, credentials, IP literals, metadata names.
    fn check_parsed(&self, url: &Url) -> Result<(), UrlError> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => return Err(UrlError::Scheme),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        match url.host() {
            // The url crate already normalised exotic spellings (0x7f.1, 2130706433, ...) here.
            Some(Host::Ipv4(ip)) => self.check_ip(ip.into()),
            Some(Host::Ipv6(ip)) => self.check_ip(ip.into()),
            Some(Host::Domain(host)) => {
                // Hosts are lowercased by the parser; a trailing dot names the same host.
                let host = host.trim_end_matches('.');
                if METADATA_HOSTS.contains(&host) {
                    return Err(UrlError::Invalid(format!("{host} is a cloud metadata endpoint")));
                }
                if is_localhost(host) {
                    // Judged now, by the same rule as at delivery.
                    self.localhost()?;
                }
                Ok(())
            }
            None => Err(UrlError::Invalid("no host".into())),
        }
    }

    /// The loopback addresses a `localhost` name may reach: those the
    /// allowlist covers (`127.0.0.1`, `::1`). None covered: refused, at
    /// registration and at delivery alike.
    fn localhost(&self) -> Result<Vec<IpAddr>, UrlError> {
        let allowed: Vec<IpAddr> = LOOPBACK.into_iter().filter(|ip| self.is_allowed_ip(*ip)).collect();
        if allowed.is_empty() { Err(UrlError::Forbidden(LOOPBACK[0])) } else { Ok(allowed) }
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), UrlError> {
        if self.is_allowed_ip(ip) { Ok(()) } else { Err(UrlError::Forbidden(ip)) }
    }
}

/// The IPv4 address an IPv6 address stands for, if it embeds one.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let octets = ip.octets();
    let tail = || Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
    if let Some(v4) = ip.to_ipv4() {
        // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d, incl. :: and ::1).
        Some(v4)
    } else if NAT64.contains(&ip) {
        Some(tail())
    } else if SIX_TO_FOUR.contains(&ip) {
        Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> UrlPolicy {
        UrlPolicy::default()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn loopback_allowed() -> UrlPolicy {
        UrlPolicy::new(false, &["127.0.0.0/8".into(), "::1".into()]).unwrap()
    }

    #[test]
    fn public_ips_allowed() {
        for addr in ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(strict().is_allowed_ip(ip(addr)), "{addr}");
        }
        assert!(strict().check_url("https://8.8.8.8/hook").is_ok());
        assert!(strict().check_url("https://[2606:4700:4700::1111]:8443/hook").is_ok());
    }

    #[test]
    fn forbidden_classes_refused() {
        let forbidden = [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "100::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
        ];
        for addr in forbidden {
            assert!(!strict().is_allowed_ip(ip(addr)), "{addr} should be forbidden");
        }
        // Neighbours of the ranges stay allowed.
        for addr in ["172.32.0.1", "100.128.0.1", "198.20.0.1", "11.0.0.1", "2002:808:808::1"] {
            assert!(strict().is_allowed_ip(ip(addr)), "{addr} should be allowed");
        }
    }

    #[test]
    fn ip_literal_urls_refused_at_registration() {
        let p = strict();
        assert_eq!(p.check_url("https://127.0.0.1/"), Err(UrlError::Forbidden(ip("127.0.0.1"))));
        assert_eq!(
            p.check_url("https://169.254.169.254/latest"),
            Err(UrlError::Forbidden(ip("169.254.169.254")))
        );
        assert_eq!(p.check_url("https://[::1]/"), Err(UrlError::Forbidden(ip("::1"))));
        assert_eq!(
            p.check_url("https://[::ffff:10.0.0.1]/"),
            Err(UrlError::Forbidden(ip("::ffff:10.0.0.1")))
        );
        // Alternative spellings of 127.0.0.1 are normalised by the parser and still caught.
        for url in ["https://2130706433/", "https://0x7f.0.0.1/", "https://127.1/"] {
            assert_eq!(p.check_url(url), Err(UrlError::Forbidden(ip("127.0.0.1"))), "{url}");
        }
    }

    #[test]
    fn allowlisted_loopback_allowed() {
        let p = loopback_allowed();
        assert!(p.is_allowed_ip(ip("127.0.0.1")));
        assert!(p.is_allowed_ip(ip("::1")));
        assert!(p.is_allowed_ip(ip("::ffff:127.0.0.1")));
        assert!(!p.is_allowed_ip(ip("10.0.0.1")));
        assert!(!p.is_allowed_ip(ip("169.254.169.254")));
        assert!(p.check_url("https://127.0.0.1:8080/hook").is_ok());
    }

    #[test]
    fn allowlist_parsing() {
        let p =
            UrlPolicy::new(true, &["10.0.0.0/8".into(), " 192.168.1.5 ".into(), "fd00::/8".into()]).unwrap();
        assert!(p.allow_http);
        assert_eq!(p.allow_networks[1], "192.168.1.5/32".parse::<IpNet>().unwrap());
        let err = UrlPolicy::new(false, &["127.0.0.0/8".into(), "localhost".into()]).unwrap_err();
        assert!(err.contains("\"localhost\""), "{err}");
        assert!(UrlPolicy::new(false, &["10.0.0.0/33".into()]).is_err());
    }

    #[test]
    fn http_refused_unless_allowed() {
        assert_eq!(strict().check_url("http://example.com/hook"), Err(UrlError::Scheme));
        let dev = UrlPolicy { allow_http: true, ..UrlPolicy::default() };
        assert!(dev.check_url("http://example.com/hook").is_ok());
        assert_eq!(dev.check_url("ftp://example.com/"), Err(UrlError::Scheme));
        assert_eq!(dev.check_url("file:///etc/passwd"), Err(UrlError::Scheme));
    }

    #[test]
    fn credentials_refused() {
        assert_eq!(strict().check_url("https://user:pw@example.com/"), Err(UrlError::Credentials));
        assert_eq!(strict().check_url("https://user@example.com/"), Err(UrlError::Credentials));
    }

    #[test]
    fn malformed_and_oversized_refused() {
        assert!(matches!(strict().check_url("not a url"), Err(UrlError::Invalid(_))));
        assert!(matches!(strict().check_url("/relative/path"), Err(UrlError::Invalid(_))));
        assert!(matches!(strict().check_url("https://"), Err(UrlError::Invalid(_))));
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(matches!(strict().check_url(&long), Err(UrlError::Invalid(_))));
        let url = strict().check_url("https://Example.COM/hook?x=1").unwrap();
        assert_eq!(url.host_str(), Some("example.com"));
    }

    #[test]
    fn metadata_hostnames_refused() {
        for url in
            ["https://metadata.google.internal/", "https://METADATA/", "https://metadata.google.internal./x"]
        {
            assert!(matches!(strict().check_url(url), Err(UrlError::Invalid(_))), "{url}");
        }
        assert!(strict().check_url("https://metadata.example.com/").is_ok());
    }

    #[tokio::test]
    async fn resolve_localhost_refused_without_allowlist() {
        assert!(matches!(strict().resolve_host("localhost", 443).await, Err(UrlError::Forbidden(_))));
        // What the system resolver answers is judged the same way.
        assert!(matches!(strict().resolve_host("127.0.0.1", 443).await, Err(UrlError::Forbidden(_))));
    }

    #[tokio::test]
    async fn resolve_localhost_allowed_with_loopback_allowlist() {
        let addrs = loopback_allowed().resolve_host("localhost", 443).await.unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 443), "{addrs:?}");
    }

    /// `localhost` gets the same answer at registration as at delivery.
    #[tokio::test]
    async fn localhost_is_judged_alike_at_registration_and_delivery() {
        for url in ["http://localhost:4000/hook", "http://LOCALHOST./hook", "http://api.localhost/hook"] {
            assert_eq!(
                UrlPolicy::new(true, &[]).unwrap().check_url(url).unwrap_err(),
                UrlError::Forbidden(ip("127.0.0.1")),
                "{url}"
            );
        }
        let v4_only = UrlPolicy::new(true, &["127.0.0.1".into()]).unwrap();
        assert!(v4_only.check_url("http://localhost:4000/hook").is_ok());
        let addrs = v4_only.resolve_host("localhost", 4000).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:4000".parse().unwrap()], "only the allowed loopback address");
        let v6_only = UrlPolicy::new(true, &["::1".into()]).unwrap();
        assert!(v6_only.check_url("http://localhost/").is_ok());
        assert_eq!(
            v6_only.resolve_host("app.localhost", 80).await.unwrap(),
            vec!["[::1]:80".parse().unwrap()]
        );
    }

    #[tokio::test]
    async fn resolve_refuses_metadata_names() {
        assert!(matches!(
            loopback_allowed().resolve_host("metadata.google.internal.", 80).await,
            Err(UrlError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn resolve_unknown_host_unresolvable() {
        assert!(matches!(
            strict().resolve_host("nexus-ssrf-test.invalid", 443).await,
            Err(UrlError::Unresolvable(_))
        ));
    }
}
