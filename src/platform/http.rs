//! HTTP plumbing shared by every route: the request context (request id,
//! tracing span, problem+json for every error whoever produced it), the
//! validated JSON extractor, extractor error mapping, envelopes and paging.

use std::{sync::Arc, time::Instant};

use actix_web::{
    Error, FromRequest, HttpMessage, HttpRequest, HttpResponse,
    body::{BoxBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::{
        Method, StatusCode,
        header::{self, HeaderValue},
    },
    middleware::Next,
    web,
};
use futures_util::future::LocalBoxFuture;
use sea_orm::{
    ConnectionTrait, DbErr, EntityTrait, Iterable, Order, PaginatorTrait, PrimaryKeyToColumn, QueryOrder,
    QuerySelect, Select,
};
use serde::{Serialize, de::DeserializeOwned};
use tracing::Instrument;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, Code, FieldError, PROBLEM_JSON, REQUEST_ID, problem, problem_response},
    platform::{
        auth::Principal,
        db::{self, QueryStats},
        validate,
    },
};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Outermost middleware: assigns the request id (echoing a sane client one),
/// opens the request span, refuses control characters smuggled in the URL, makes
/// sure every error leaves as problem+json with the request id in it, and
/// reports the database queries the request ran (in the log, and to an
/// authenticated caller in `Server-Timing`).
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned);
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        route = tracing::field::Empty,
        tenant_id = tracing::field::Empty,
        user_id = tracing::field::Empty,
    );
    let started = Instant::now();
    let id = request_id.clone();
    let queries = Arc::new(QueryStats::default());
    let counted = queries.clone();
    let mut res = REQUEST_ID
        .scope(
            id,
            db::counted(counted, async move {
                let res = if !clean_url(req.uri().path()) || !req.uri().query().is_none_or(clean_url) {
                    let err = ApiError::new(
                        Code::InvalidString,
                        "the URL must decode to UTF-8 without control characters",
                    );
                    req.error_response(err)
                } else {
                    // Handlers' and extractors' errors arrive here as responses;
                    // an `Err` could only come from a middleware, and every one
                    // of ours answers with an ApiError (already problem+json).
                    next.call(req).await?.map_into_boxed_body()
                };
                Ok::<_, Error>(ensure_problem(res))
            })
            .instrument(span.clone()),
        )
        .await?;
    if let Some(route) = res.request().match_pattern() {
        span.record("route", route.as_str());
    }
    let (count, db_time) = (queries.count(), queries.elapsed());
    span.in_scope(|| {
        tracing::info!(
            status = res.status().as_u16(),
            latency_ms = started.elapsed().as_millis() as u64,
            db_queries = count,
            db_ms = db_time.as_millis() as u64,
            "served"
        );
    });
    // Only to authenticated callers: before sign-in, how many queries a
    // login ran could tell a known email from an unknown one.
    if res.request().extensions().get::<std::rc::Rc<Principal>>().is_some() {
        let timing = format!("db;dur={:.3};desc=\"{count} queries\"", db_time.as_secs_f64() * 1000.0);
        if let Ok(value) = HeaderValue::from_str(&timing) {
            res.headers_mut().insert(header::HeaderName::from_static("server-timing"), value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(header::HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    Ok(res)
}

/// A path or query whose percent-decoding is valid UTF-8 (no lone
/// surrogates) without NUL characters.
fn clean_url(s: &str) -> bool {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .is_ok_and(|decoded| !decoded.chars().any(validate::forbidden_char))
}

/// Any error response that is not already problem+json (actix's own 404,
/// 405, payload or extractor errors) is rewritten as one, by status.
fn ensure_problem(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return res;
    }
    let code = Code::for_status(status);
    let detail = match (res.response().error(), status.is_client_error()) {
        (Some(err), true) => err.to_string(),
        (Some(err), false) => {
            tracing::error!(error = %err, "unhandled error");
            "an internal error occurred; it has been logged".to_owned()
        }
        (None, _) => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let body = problem(code, detail, Vec::new());
    let (req, old) = res.into_parts();
    let mut new = problem_response(&body);
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            new.headers_mut().insert(name.clone(), value.clone());
        }
    }
    ServiceResponse::new(req, new)
}

/// The methods the API documents for each route pattern, e.g. `GET, PATCH`:
/// read once from the OpenAPI document the server was built with.
pub struct AllowedMethods(std::collections::HashMap<String, HeaderValue>);

impl AllowedMethods {
    pub fn of(doc: &utoipa::openapi::OpenApi) -> Self {
        let allowed = doc.paths.paths.iter().filter_map(|(path, item)| {
            let methods = [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("PATCH", item.patch.is_some()),
                ("DELETE", item.delete.is_some()),
            ];
            let names: Vec<&str> = methods.iter().filter(|(_, has)| *has).map(|(name, _)| *name).collect();
            Some((path.clone(), HeaderValue::from_str(&names.join(", ")).ok()?))
        });
        Self(allowed.collect())
    }
}

/// App default service: 405 with `Allow` when the path exists under other
/// methods, 404 otherwise.
pub async fn no_route(req: HttpRequest) -> ApiResult<HttpResponse> {
    if !req.resource_map().has_resource(req.path()) {
        return Err(ApiError::new(Code::NotFound, format!("no route for {} {}", req.method(), req.path())));
    }
    let err =
        ApiError::new(Code::MethodNotAllowed, format!("{} is not allowed on {}", req.method(), req.path()));
    let mut res = actix_web::ResponseError::error_response(&err);
    let allowed = req.app_data::<web::Data<AllowedMethods>>();
    let pattern = req.resource_map().match_pattern(req.path());
    if let (Some(allowed), Some(pattern)) = (allowed, pattern)
        && let Some(allow) = allowed.0.get(&pattern)
    {
        res.headers_mut().insert(header::ALLOW, allow.clone());
    }
    Ok(res)
}

/// `/api/documentation` -> `/api/documentation/` (where Swagger UI lives).
pub async fn swagger_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "/api/documentation/")).finish()
}

/// Error handlers for actix's extractors, so they speak our catalogue.
pub fn extractor_config(cfg: &mut web::ServiceConfig, max_body_bytes: usize) {
    cfg.app_data(web::PayloadConfig::new(max_body_bytes))
        .app_data(web::JsonConfig::default().limit(max_body_bytes).error_handler(|err, _| {
            let code = Code::for_status(actix_web::ResponseError::status_code(&err));
            let code = if code == Code::BadRequest { Code::MalformedJson } else { code };
            ApiError::new(code, err.to_string()).into()
        }))
        .app_data(web::QueryConfig::default().error_handler(|err, _| {
            let message = err.to_string();
            let message = message.trim_start_matches("Query deserialize error: ");
            let (field, explained) = explain(message);
            let mut error =
                ApiError::new(Code::InvalidQuery, format!("the query string is invalid: {explained}"));
            error.errors.push(FieldError::new(field.unwrap_or_else(|| "query".to_owned()), explained));
            error.into()
        }))
        .app_data(web::PathConfig::default().error_handler(|err, req| {
            // `PATCH /webhooks/event-types` matched `/webhooks/{id}`: the path
            // exists, just not with this method.
            let static_route = req.app_data::<web::Data<AllowedMethods>>().and_then(|a| a.0.get(req.path()));
            if let Some(allow) = static_route {
                let detail = format!("{} is not allowed on {}", req.method(), req.path());
                let mut res =
                    actix_web::ResponseError::error_response(&ApiError::new(Code::MethodNotAllowed, detail));
                res.headers_mut().insert(header::ALLOW, allow.clone());
                return actix_web::error::InternalError::from_response(err, res).into();
            }
            let (_, explained) = explain(&err.to_string());
            let detail = format!("{} is not a valid path: {explained}", req.path());
            let mut error = ApiError::new(Code::InvalidPath, detail);
            error.errors.push(FieldError::new("path", explained));
            error.into()
        }));
}

/// What a deserializer's message means, in an integrator's words: the field
/// it names (when it names one) and what is expected of it. serde's own
/// wording (`invalid type: floating point `19.99`, expected i64`) never
/// reaches a client.
pub fn explain(message: &str) -> (Option<String>, String) {
    let message = message.split(" at line ").next().unwrap_or(message);
    let quoted = |m: &str| m.split('`').nth(1).map(str::to_owned);
    if let Some(rest) = message.strip_prefix("missing field ") {
        return (quoted(rest), "is required".to_owned());
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let expected = rest.split_once("expected one of ").map(|(_, list)| list.replace('`', ""));
        let text = match expected {
            Some(list) => format!("is not a known field; expected one of {list}"),
            None => "is not a known field".to_owned(),
        };
        return (quoted(rest), text);
    }
    let expected = message.rsplit_once("expected ").map(|(_, e)| e.trim());
    let text = match expected {
        Some("i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "isize") => {
            if message.contains("invalid value: integer `-") {
                "must not be negative".to_owned()
            } else {
                "must be a whole number".to_owned()
            }
        }
        Some("a boolean") => "must be true or false".to_owned(),
        Some("a string") => "must be a string".to_owned(),
        Some("a sequence") => "must be an array".to_owned(),
        Some(e) if e.starts_with("struct") || e == "a map" || e.starts_with("a map") => {
            "must be an object".to_owned()
        }
        Some(e) if e.starts_with("UUID") || e.contains("UUID") => {
            "must be a UUID such as 0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11".to_owned()
        }
        _ if message.contains("UUID parsing failed") || message.contains("invalid length") => {
            "must be a UUID such as 0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11".to_owned()
        }
        _ if message.contains("invalid digit") || message.contains("number too large") => {
            "must be a whole number".to_owned()
        }
        _ if message.contains("input contains invalid characters")
            || message.contains("premature end of input") =>
        {
            "must be an RFC 3339 timestamp such as 2026-11-22T09:14:45Z".to_owned()
        }
        _ => message.to_owned(),
    };
    (None, text)
}

/// Edge validation of a parsed body; domain newtypes do most of the work.
pub trait Validate {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        Ok(())
    }
}

/// A JSON body that is `application/json`, within the size limit, well
/// formed, free of NUL characters, of the right shape, and valid.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + Validate + 'static> FromRequest for ApiJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = req
            .mime_type()
            .ok()
            .flatten()
            .is_some_and(|m| m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"));
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::new(
                    Code::UnsupportedMediaType,
                    "the request body must be application/json",
                ));
            }
            let bytes = bytes.await.map_err(|err| {
                let status = err.as_response_error().status_code();
                ApiError::new(Code::for_status(status), err.to_string())
            })?;
            parse_json(&bytes).map(ApiJson)
        })
    }
}

/// Parse and validate a JSON document into `T` (the body of [`ApiJson`]).
pub fn parse_json<T: DeserializeOwned + Validate>(bytes: &[u8]) -> ApiResult<T> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|err| {
        let message = err.to_string();
        // Lone surrogates and bad \u escapes: strings that are not Unicode.
        let code = if ["surrogate", "escape", "unicode"].iter().any(|m| message.contains(m)) {
            Code::InvalidString
        } else {
            Code::MalformedJson
        };
        ApiError::new(code, message)
    })?;
    if let Some((field, c)) = find_forbidden(&value, String::new()) {
        let mut err = ApiError::new(
            Code::InvalidString,
            "strings must not contain control characters other than tab and line breaks",
        );
        err.errors
            .push(FieldError::new(field, format!("contains the control character U+{:04X}", u32::from(c))));
        return Err(err);
    }
    let mut value = value;
    integral_floats_as_integers(&mut value);
    let parsed: T = serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let (named, message) = explain(&err.into_inner().to_string());
        // A missing or unknown field is named by the message, inside the path.
        let field = match (path.as_str(), named) {
            (".", Some(name)) => name,
            (".", None) => "body".to_owned(),
            // An unknown field's path already ends with it.
            (path, Some(name)) if path == name || path.ends_with(&format!(".{name}")) => path.to_owned(),
            (path, Some(name)) => format!("{path}.{name}"),
            (path, None) => path.to_owned(),
        };
        ApiError::validation(vec![FieldError::new(field, message)])
    })?;
    parsed.validate().map_err(ApiError::validation)?;
    Ok(parsed)
}

/// `3.0` is the integer 3 in JSON Schema, so an integer field takes it:
/// numbers with no fraction, within the exact range, become integers.
fn integral_floats_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0)
                && f.abs() <= validate::MAX_EXACT_INTEGER as f64
            {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// The first string or key breaking the character rule, and its character.
fn find_forbidden(value: &serde_json::Value, path: String) -> Option<(String, char)> {
    use serde_json::Value;
    let bad = |s: &str| s.chars().find(|c| validate::forbidden_char(*c));
    match value {
        Value::String(s) => bad(s).map(|c| (path, c)),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, v)| find_forbidden(v, format!("{path}[{i}]")))
        }
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let child = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            match bad(k) {
                Some(c) => Some((child, c)),
                None => find_forbidden(v, child),
            }
        }),
        _ => None,
    }
}

/// `{"data": ...}`: the envelope of a single resource.
#[derive(Debug, Serialize, ToSchema)]
pub struct Data<T> {
    pub data: T,
}

/// `{"data": [...], "meta": {...}}`: the envelope of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Paged<T> {
    pub data: Vec<T>,
    pub meta: PageMeta,
}

impl<T> Paged<T> {
    /// The same page, each item turned into another.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Paged<U> {
        Paged { data: self.data.into_iter().map(f).collect(), meta: self.meta }
    }
}

#[derive(Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "PageInfo")]
pub struct PageMeta {
    #[schema(example = 1)]
    pub page: u64,
    #[schema(example = 25)]
    pub per_page: u64,
    #[schema(example = 123)]
    pub total: u64,
    #[schema(example = 5)]
    pub total_pages: u64,
}

pub const DEFAULT_PER_PAGE: u64 = 25;
pub const MAX_PER_PAGE: u64 = 100;
/// Far beyond any real list, and small enough that the offset fits the
/// databases' signed 64-bit integers.
pub const MAX_PAGE: u64 = 10_000_000;

/// A validated page request (`page` from 1, `per_page` 1..=100).
#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    pub page: u64,
    pub per_page: u64,
}

impl PageRequest {
    pub fn new(page: Option<u64>, per_page: Option<u64>) -> ApiResult<Self> {
        let page = page.unwrap_or(1);
        let per_page = per_page.unwrap_or(DEFAULT_PER_PAGE);
        let mut errors = Vec::new();
        if page == 0 || page > MAX_PAGE {
            errors.push(FieldError::new("page", format!("must be between 1 and {MAX_PAGE}")));
        }
        if per_page == 0 || per_page > MAX_PER_PAGE {
            errors.push(FieldError::new("per_page", format!("must be between 1 and {MAX_PER_PAGE}")));
        }
        if errors.is_empty() {
            Ok(Self { page, per_page })
        } else {
            let mut err = ApiError::new(Code::InvalidQuery, "invalid paging parameters");
            err.errors = errors;
            Err(err)
        }
    }

    pub fn offset(&self) -> u64 {
        (self.page - 1) * self.per_page
    }

    /// This page of `query` ordered by `sort` (a column, and whether
    /// descending), ties broken by the primary key in the same direction so
    /// that pages never overlap; with the number of rows matching in all.
    pub async fn fetch<E>(
        self,
        db: &impl ConnectionTrait,
        query: Select<E>,
        sort: (E::Column, bool),
    ) -> Result<Paged<E::Model>, DbErr>
    where
        E: EntityTrait,
        E::Model: Sync,
    {
        let total = query.clone().count(db).await?;
        let order = if sort.1 { Order::Desc } else { Order::Asc };
        let mut query = query.order_by(sort.0, order.clone());
        for key in E::PrimaryKey::iter() {
            query = query.order_by(key.into_column(), order.clone());
        }
        let rows = query.offset(self.offset()).limit(self.per_page).all(db).await?;
        Ok(self.into_paged(rows, total))
    }

    pub fn into_paged<T>(self, data: Vec<T>, total: u64) -> Paged<T> {
        Paged {
            data,
            meta: PageMeta {
                page: self.page,
                per_page: self.per_page,
                total,
                total_pages: total.div_ceil(self.per_page),
            },
        }
    }
}

/// Resolve `sort` (`field` or `-field`) against the fields a list allows.
pub fn parse_sort<C: Copy>(
    sort: Option<&str>,
    allowed: &[(&str, C)],
    default: (C, bool),
) -> ApiResult<(C, bool)> {
    let Some(sort) = sort else { return Ok(default) };
    let (name, desc) = match sort.strip_prefix('-') {
        Some(name) => (name, true),
        None => (sort, false),
    };
    allowed.iter().find(|(field, _)| *field == name).map(|(_, col)| (*col, desc)).ok_or_else(|| {
        let fields: Vec<&str> = allowed.iter().map(|(f, _)| *f).collect();
        let mut err = ApiError::new(Code::InvalidQuery, format!("cannot sort by `{name}`"));
        err.errors.push(FieldError::new("sort", format!("must be one of {}", fields.join(", "))));
        err
    })
}

/// 400 `invalid_query` unless the filter `field`, when given, is one of
/// `allowed`.
pub fn one_of(field: &str, value: Option<&str>, allowed: &[&str]) -> ApiResult<()> {
    match value {
        Some(v) if !allowed.contains(&v) => {
            let mut err = ApiError::new(Code::InvalidQuery, format!("`{v}` is not a {field} here"));
            err.errors.push(FieldError::new(field, format!("must be one of {}", allowed.join(", "))));
            Err(err)
        }
        _ => Ok(()),
    }
}

pub fn is_mutating(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

pub fn created<T: Serialize>(data: T) -> HttpResponse {
    HttpResponse::Created().json(Data { data })
}

pub fn ok<T: Serialize>(data: T) -> HttpResponse {
    HttpResponse::Ok().json(Data { data })
}

/// `{"data": ...}` with `ETag: "<version>"`, for resources updated with `If-Match`.
pub fn ok_with_etag<T: Serialize>(data: T, version: i32) -> HttpResponse {
    with_etag(ok(data), version)
}

/// `res` with `ETag: "<version>"`, the value `If-Match` takes back.
pub fn with_etag(mut res: HttpResponse, version: i32) -> HttpResponse {
    if let Ok(value) = HeaderValue::from_str(&format!("\"{version}\"")) {
        res.headers_mut().insert(header::ETAG, value);
    }
    res
}

/// The version in `If-Match: "<version>"`, when sent (400 `invalid_header`
/// when it is not one).
pub fn if_match(req: &HttpRequest) -> ApiResult<Option<i32>> {
    let Some(value) = req.headers().get(header::IF_MATCH) else { return Ok(None) };
    value
        .to_str()
        .ok()
        .map(|v| v.trim().strip_prefix("W/").unwrap_or(v.trim()))
        .map(|v| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v))
        .filter(|v| !v.is_empty() && v.len() <= 9 && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| ApiError::new(Code::InvalidHeader, "If-Match must be the resource's ETag, e.g. \"3\""))
}

/// 412 `precondition_failed` unless `if_match`, when sent, is the
/// `current` version of the `what` being changed.
pub fn check_version(what: &str, current: i32, if_match: Option<i32>) -> ApiResult<()> {
    match if_match {
        Some(v) if v != current => Err(ApiError::new(
            Code::PreconditionFailed,
            format!("the {what} is at version {current}, not the one in If-Match"),
        )),
        _ => Ok(()),
    }
}

/// 412 for a versioned update that found another change committed first.
pub fn changed_meanwhile(what: &str) -> ApiError {
    ApiError::new(Code::PreconditionFailed, format!("the {what} changed meanwhile; read it again"))
}

pub fn no_content() -> HttpResponse {
    HttpResponse::build(StatusCode::NO_CONTENT).finish()
}

/// Remember who acted, for the audit log (set by authentication and by the
/// endpoints that establish identity, such as login).
#[derive(Clone, Copy, Debug)]
pub struct Actor {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
}

pub fn record_actor(req: &HttpRequest, actor: Actor) {
    let span = tracing::Span::current();
    span.record("tenant_id", tracing::field::display(actor.tenant_id));
    span.record("user_id", tracing::field::display(actor.user_id));
    req.extensions_mut().insert(actor);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Body {
        #[allow(dead_code)]
        name: String,
        #[allow(dead_code)]
        count: u32,
    }
    impl Validate for Body {}

    fn code_of(json: &str) -> (&'static str, Vec<FieldError>) {
        let err = parse_json::<Body>(json.as_bytes()).unwrap_err();
        (err.code.as_str(), err.errors)
    }

    #[test]
    fn json_errors_have_stable_codes() {
        assert_eq!(code_of("{").0, "malformed_json");
        assert_eq!(code_of(r#"{"name":"a\u0000b","count":1}"#).0, "invalid_string");
        assert_eq!(code_of(r#"{"name":"\ud800","count":1}"#).0, "invalid_string");
        let (code, errors) = code_of(r#"{"name":"a","count":-1}"#);
        assert_eq!(code, "validation_failed");
        assert_eq!(errors[0].field, "count");
        assert_eq!(code_of(r#"{"name":"a"}"#).0, "validation_failed");
        assert_eq!(code_of(r#"{"name":"a\u0007","count":1}"#).0, "invalid_string", "a control character");
        assert!(parse_json::<Body>(br#"{"name":"a\tb\n","count":1}"#).is_ok(), "tab and line breaks");
        // 3.0 is an integer to JSON Schema; 3.5 is not.
        assert!(parse_json::<Body>(br#"{"name":"a","count":3.0}"#).is_ok_and(|b| b.count == 3));
        assert_eq!(code_of(r#"{"name":"a","count":3.5}"#).0, "validation_failed");
    }

    #[test]
    fn paging_is_bounded() {
        assert!(PageRequest::new(Some(0), None).is_err());
        assert!(PageRequest::new(None, Some(101)).is_err());
        let page = PageRequest::new(Some(3), Some(10)).unwrap();
        assert_eq!(page.offset(), 20);
        assert_eq!(page.into_paged(Vec::<u8>::new(), 21).meta.total_pages, 3);
    }

    #[test]
    fn sort_accepts_only_known_fields() {
        let allowed = [("name", 1), ("created_at", 2)];
        assert_eq!(parse_sort(Some("-name"), &allowed, (2, true)).unwrap(), (1, true));
        assert_eq!(parse_sort(None, &allowed, (2, true)).unwrap(), (2, true));
        assert!(parse_sort(Some("password_hash"), &allowed, (2, true)).is_err());
    }
}
