//! Route and version deprecation from configuration (`config/api.toml`,
//! BR-010): `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and a successor
//! `Link` on answers of a deprecated route, and 410 once it is removed. No
//! handler knows about it.

use actix_web::{
    Error,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue, LINK},
    web,
};
use chrono::{NaiveDate, Utc};
use serde::Deserialize;

use crate::{
    error::{ApiError, Code},
    platform::state::AppState,
};

pub const API_TOML: &str = include_str!("../../config/api.toml");

#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub deprecations: Vec<Deprecation>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deprecation {
    /// A route template (`/api/v1/users/{id}`) or a prefix ending in `*`.
    pub route: String,
    /// Only this method; every method when absent.
    pub method: Option<String>,
    /// The day the route is removed (410 from then on).
    pub sunset: NaiveDate,
    /// The day the warnings start; 90 days before the sunset by default.
    pub deprecated_at: Option<NaiveDate>,
    pub successor: Option<String>,
}

impl Deprecation {
    fn matches(&self, method: &str, route: &str) -> bool {
        let route_ok = match self.route.strip_suffix('*') {
            Some(prefix) => route.starts_with(prefix),
            None => route == self.route,
        };
        route_ok && self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
    }

    fn starts(&self) -> NaiveDate {
        self.deprecated_at.unwrap_or(self.sunset - chrono::Duration::days(90))
    }
}

/// The deprecation in force for a request on `today`, if any.
pub fn lookup<'a>(
    config: &'a ApiConfig,
    method: &str,
    route: &str,
    today: NaiveDate,
) -> Option<&'a Deprecation> {
    config.deprecations.iter().find(|d| d.matches(method, route) && d.starts() <= today)
}

fn midnight(day: NaiveDate) -> chrono::DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

pub async fn middleware<B, F>(
    req: ServiceRequest,
    next: impl FnOnce(ServiceRequest) -> F,
) -> Result<ServiceResponse<BoxBody>, Error>
where
    B: MessageBody + 'static,
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    // Matching the route again costs a walk of the route table: only done
    // when a deprecation is configured at all.
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let Some(api) = state.as_ref().map(|s| &s.config.api).filter(|api| !api.deprecations.is_empty()) else {
        return next(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    let route = req.match_pattern().unwrap_or_else(|| req.path().to_owned());
    let today = Utc::now().date_naive();
    let found = lookup(api, req.method().as_str(), &route, today).cloned();
    let Some(deprecation) = found else {
        return next(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    if today >= deprecation.sunset {
        let successor = deprecation.successor.as_deref().map(|s| format!("; use {s}")).unwrap_or_default();
        let detail = format!("{} was removed on {}{successor}", route, deprecation.sunset);
        return Ok(req.error_response(ApiError::new(Code::Gone, detail)).map_into_boxed_body());
    }
    let mut res = next(req).await?.map_into_boxed_body();
    let headers = res.headers_mut();
    let mut put = |name: HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    put(HeaderName::from_static("deprecation"), format!("@{}", midnight(deprecation.starts()).timestamp()));
    put(
        HeaderName::from_static("sunset"),
        midnight(deprecation.sunset).format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
    );
    if let Some(successor) = &deprecation.successor {
        put(LINK, format!("<{successor}>; rel=\"successor-version\""));
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn warnings_start_90_days_before_the_sunset_by_default() {
        let config = ApiConfig {
            deprecations: vec![Deprecation {
                route: "/api/v1/users".into(),
                method: Some("GET".into()),
                sunset: day("2027-06-30"),
                deprecated_at: None,
                successor: Some("/api/v2/users".into()),
            }],
        };
        assert!(lookup(&config, "GET", "/api/v1/users", day("2027-03-31")).is_none());
        assert!(lookup(&config, "GET", "/api/v1/users", day("2027-04-01")).is_some());
        assert!(lookup(&config, "POST", "/api/v1/users", day("2027-05-01")).is_none());
        assert!(lookup(&config, "GET", "/api/v1/users/{id}", day("2027-05-01")).is_none());
    }

    #[test]
    fn a_prefix_deprecates_a_whole_version_and_the_shipped_file_parses() {
        let config = ApiConfig {
            deprecations: vec![Deprecation {
                route: "/api/v1/*".into(),
                method: None,
                sunset: day("2027-06-30"),
                deprecated_at: Some(day("2027-01-01")),
                successor: None,
            }],
        };
        assert!(lookup(&config, "DELETE", "/api/v1/webhooks/{id}", day("2027-01-01")).is_some());
        assert!(lookup(&config, "GET", "/health", day("2027-01-01")).is_none());
        use figment::providers::Format;
        #[derive(Deserialize)]
        struct File {
            api: ApiConfig,
        }
        let shipped: File =
            figment::Figment::from(figment::providers::Toml::string(API_TOML)).extract().unwrap();
        assert!(shipped.api.deprecations.is_empty());
    }
}
