//! HTTP plumbing shared by every route: the request context (request id,
//! tracing span, problem+json for every error whoever produced it), the
//! validated JSON extractor, extractor error mapping, envelopes and keyset paging.

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
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::future::LocalBoxFuture;
use sea_orm::{
    ColumnTrait, ColumnType, Condition, ConnectionTrait, EntityTrait, FromQueryResult, IdenStatic, Iterable,
    ModelTrait, Order, PaginatorTrait, PrimaryKeyToColumn, QueryFilter, QueryOrder, QueryTrait, Select,
    Statement, Value,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
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

/// What every request goes through, API or not: the request context,
/// then CORS. One middleware calling each step with the rest of the chain,
/// as the API's own chain calls its steps (docs/architecture.md).
pub async fn edge(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    request_context(req, |req| crate::platform::cors::middleware(req, |req| next.call(req))).await
}

/// The outermost step: assigns the request id (echoing a sane client one),
/// opens the request span, refuses control characters smuggled in the URL, makes
/// sure every error leaves as problem+json with the request id in it, and
/// reports the database queries the request ran (in the log, and to an
/// authenticated caller in `Server-Timing`).
pub async fn request_context<B, F>(
    req: ServiceRequest,
    next: impl FnOnce(ServiceRequest) -> F,
) -> Result<ServiceResponse<BoxBody>, Error>
where
    B: MessageBody + 'static,
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
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
                    next(req).await?.map_into_boxed_body()
                };
                Ok::<_, Error>(ensure_problem(res))
            })
            .instrument(span.clone()),
        )
        .await?;
    // The route template is matched again only for a span that is logged.
    if !span.is_disabled()
        && let Some(route) = res.request().match_pattern()
    {
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
        let us = db_time.as_micros();
        let timing = format!("db;dur={}.{:03};desc=\"{count} queries\"", us / 1000, us % 1000);
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

/// Where a page sits in its list, and the cursors to its neighbours.
#[derive(Clone, Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "PageInfo")]
pub struct PageMeta {
    /// Whether more items lie beyond this page in the direction it was read:
    /// after it, or before it when read with `ending_before` or a previous
    /// cursor.
    pub has_more: bool,
    /// The `cursor` of the page after this one; `null` when nothing follows.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
    /// The `cursor` of the page before this one; `null` on the first page.
    #[schema(required = true)]
    pub previous_cursor: Option<String>,
    /// How many items match in all: only with `include=total`, which costs
    /// a count.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = 123)]
    pub total: Option<u64>,
}

pub const DEFAULT_LIMIT: i64 = 25;
pub const MAX_LIMIT: i64 = 100;

/// The sorts a list offers (`field` or `-field`) and its default, shared by
/// its REST route and its GraphQL field so that both agree.
pub struct Sorts<C: 'static> {
    pub fields: &'static [(&'static str, C)],
    pub default: &'static str,
}

/// A list's sort: the field as the query names it, its column, and the
/// direction.
#[derive(Clone, Copy, Debug)]
pub struct Sort<C> {
    pub field: &'static str,
    pub column: C,
    pub desc: bool,
}

impl<C> Sort<C> {
    /// As the query writes it: `name` or `-name`.
    pub fn name(&self) -> String {
        format!("{}{}", if self.desc { "-" } else { "" }, self.field)
    }
}

/// Resolve `sort` (`field` or `-field`; the list's default when absent)
/// against the fields a list offers.
pub fn parse_sort<C: Copy>(sort: Option<&str>, sorts: &Sorts<C>) -> ApiResult<Sort<C>> {
    let sort = sort.unwrap_or(sorts.default);
    let (name, desc) = match sort.strip_prefix('-') {
        Some(name) => (name, true),
        None => (sort, false),
    };
    let found = sorts.fields.iter().find(|(field, _)| *field == name);
    found.map(|&(field, column)| Sort { field, column, desc }).ok_or_else(|| {
        let fields: Vec<&str> = sorts.fields.iter().map(|(f, _)| *f).collect();
        let mut err = ApiError::new(Code::InvalidQuery, format!("cannot sort by `{name}`"));
        err.errors.push(FieldError::new("sort", format!("must be one of {}", fields.join(", "))));
        err
    })
}

/// A position in a list as the client hands it back: the sort it was made
/// for, whether it reads the rows before it (rather than after), and the
/// row's sort value followed by its key (its id). Sent as base64url JSON.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    s: String,
    #[serde(default)]
    b: bool,
    k: Vec<serde_json::Value>,
}

impl Cursor {
    fn encode(&self) -> String {
        let json = serde_json::json!({"s": self.s, "b": self.b, "k": self.k});
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    fn decode(field: &'static str, text: &str) -> ApiResult<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok();
        bytes
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid_query(field, "is not a cursor this API returned"))
    }
}

/// Where a page starts: next to a row named by its id (`starting_after`,
/// `ending_before`) or by a cursor.
#[derive(Clone, Debug)]
enum Anchor {
    Id(Uuid),
    Cursor(Cursor),
}

#[derive(Clone, Debug)]
struct Start {
    /// The parameter that gave it, named in errors.
    field: &'static str,
    anchor: Anchor,
    /// Read the rows before the anchor (rather than after).
    before: bool,
}

/// A validated list request: how many, from where, and whether to count.
#[derive(Clone, Debug)]
pub struct ListRequest {
    limit: u64,
    from: Option<Start>,
    total: bool,
}

fn invalid_query(field: &str, message: impl Into<String>) -> ApiError {
    let mut err = ApiError::new(Code::InvalidQuery, "invalid paging parameters");
    err.errors.push(FieldError::new(field, message));
    err
}

impl ListRequest {
    /// The REST parameters: `limit`, at most one of `ids` (`starting_after`,
    /// `ending_before`, on lists whose items have ids) and `cursor`, and
    /// `include`.
    pub fn new(
        limit: Option<i64>,
        ids: &[(&'static str, Option<&str>)],
        cursor: Option<&str>,
        include: Option<&str>,
    ) -> ApiResult<Self> {
        let mut errors = Vec::new();
        let limit = checked_limit("limit", limit.unwrap_or(DEFAULT_LIMIT), &mut errors);
        let given: Vec<(&'static str, &str)> = ids
            .iter()
            .copied()
            .chain([("cursor", cursor)])
            .filter_map(|(field, value)| Some((field, value?)))
            .collect();
        if given.len() > 1 {
            let names: Vec<&str> = given.iter().map(|(field, _)| *field).collect();
            for (field, _) in &given {
                errors.push(FieldError::new(*field, format!("give at most one of {}", names.join(", "))));
            }
        }
        let mut from = None;
        if let [(field, value)] = given[..] {
            let anchor = match field {
                "cursor" => Cursor::decode(field, value).map(Anchor::Cursor),
                _ => value.parse().map(Anchor::Id).map_err(|_| invalid_query(field, "must be a UUID")),
            };
            match anchor {
                Ok(Anchor::Cursor(cursor)) => {
                    from = Some(Start { field, before: cursor.b, anchor: Anchor::Cursor(cursor) })
                }
                Ok(anchor) => from = Some(Start { field, anchor, before: field == "ending_before" }),
                Err(err) => errors.extend(err.errors),
            }
        }
        let total = match include {
            None => false,
            Some("total") => true,
            Some(_) => {
                errors.push(FieldError::new("include", "must be total"));
                false
            }
        };
        Self::checked(Self { limit, from, total }, errors)
    }

    /// A GraphQL connection's arguments: `first`, at most one of the
    /// cursors `after` and `before`, and whether `total` was selected.
    pub fn connection(first: i64, after: Option<&str>, before: Option<&str>, total: bool) -> ApiResult<Self> {
        let mut errors = Vec::new();
        let limit = checked_limit("first", first, &mut errors);
        let mut from = None;
        for (field, value, before) in [("after", after, false), ("before", before, true)] {
            let Some(value) = value else { continue };
            if from.is_some() {
                errors.push(FieldError::new(field, "give at most one of after, before"));
                continue;
            }
            match Cursor::decode(field, value) {
                Ok(cursor) => from = Some(Start { field, anchor: Anchor::Cursor(cursor), before }),
                Err(err) => errors.extend(err.errors),
            }
        }
        Self::checked(Self { limit, from, total }, errors)
    }

    fn checked(self, errors: Vec<FieldError>) -> ApiResult<Self> {
        if errors.is_empty() {
            return Ok(self);
        }
        let mut err = ApiError::new(Code::InvalidQuery, "invalid paging parameters");
        err.errors = errors;
        Err(err)
    }

    /// The query of this page's rows: those `scope` sees that match
    /// `filter`, beyond the anchor, in `sort` order with ties broken by the
    /// row's key (its id) so that pages never overlap or skip, reversed
    /// when reading backwards, one more than asked to learn `has_more`.
    /// Reading an anchor given by id costs a query, within `scope`: another
    /// tenant's id is unknown.
    ///
    /// The `LIMIT` is written into the SQL, not bound: PostgreSQL plans a
    /// prepared statement whose limit is a parameter again on every
    /// execution (its generic plan, made for any limit, never looks cheaper
    /// than a plan for the value given), while with a literal limit it keeps
    /// one plan per connection. That planning was a third of what a page of
    /// products cost PostgreSQL (docs/performance.md).
    pub async fn rows_query<E: EntityTrait>(
        &self,
        db: &impl ConnectionTrait,
        scope: Select<E>,
        filter: Condition,
        sort: Sort<E::Column>,
    ) -> ApiResult<Statement> {
        let columns = order_columns::<E>(sort.column);
        let mut query = scope.clone().filter(filter);
        let desc = sort.desc != self.backwards();
        if let Some(from) = &self.from {
            let values = position(db, &scope, &sort, &columns, from).await?;
            query = query.filter(beyond(&columns, values, desc));
        }
        let order = if desc { Order::Desc } else { Order::Asc };
        for column in &columns {
            query = query.order_by(*column, order.clone());
        }
        let mut statement = query.build(db.get_database_backend());
        statement.sql.push_str(&format!(" LIMIT {}", self.limit + 1));
        Ok(statement)
    }

    /// This page (see [`Self::rows_query`]) with its cursors, and the total
    /// only when asked.
    pub async fn fetch<E>(
        &self,
        db: &impl ConnectionTrait,
        scope: Select<E>,
        filter: Condition,
        sort: Sort<E::Column>,
    ) -> ApiResult<Paged<E::Model>>
    where
        E: EntityTrait,
        E::Model: Sync,
    {
        let query = self.rows_query(db, scope.clone(), filter.clone(), sort).await?;
        let mut rows = E::Model::find_by_statement(query).all(db).await?;
        let has_more = rows.len() as u64 > self.limit;
        rows.truncate(self.limit as usize);
        let backwards = self.backwards();
        if backwards {
            rows.reverse();
        }
        let total = if self.total { Some(scope.filter(filter).count(db).await?) } else { None };
        // Read forwards, rows lie before the page when it started from an
        // anchor; read backwards, the anchor itself lies after it.
        let (after, before) = if backwards { (true, has_more) } else { (has_more, self.from.is_some()) };
        let columns = order_columns::<E>(sort.column);
        let cursor = |row: Option<&E::Model>, before: bool| -> ApiResult<Option<String>> {
            let Some(row) = row else { return Ok(None) };
            let k = columns.iter().map(|c| to_json(row.get(*c))).collect::<ApiResult<_>>()?;
            Ok(Some(Cursor { s: sort.name(), b: before, k }.encode()))
        };
        let next_cursor = if after { cursor(rows.last(), false)? } else { None };
        let previous_cursor = if before { cursor(rows.first(), true)? } else { None };
        Ok(Paged { data: rows, meta: PageMeta { has_more, next_cursor, previous_cursor, total } })
    }

    fn backwards(&self) -> bool {
        self.from.as_ref().is_some_and(|from| from.before)
    }
}

fn checked_limit(field: &'static str, limit: i64, errors: &mut Vec<FieldError>) -> u64 {
    if (1..=MAX_LIMIT).contains(&limit) {
        limit.unsigned_abs()
    } else {
        errors.push(FieldError::new(field, format!("must be between 1 and {MAX_LIMIT}")));
        0
    }
}

/// The key of a row: its primary key without the tenant (the id, or a stock
/// level's product and warehouse).
fn key_columns<E: EntityTrait>() -> impl Iterator<Item = E::Column> {
    E::PrimaryKey::iter().map(PrimaryKeyToColumn::into_column).filter(|c| c.as_str() != "tenant_id")
}

/// The columns rows are ordered by: the sort column, then the row's key,
/// which makes the order total.
fn order_columns<E: EntityTrait>(sort: E::Column) -> Vec<E::Column> {
    let mut columns = vec![sort];
    columns.extend(key_columns::<E>().filter(|c| c.as_str() != sort.as_str()));
    columns
}

/// The values of `columns` at the anchor: read from the row for an id,
/// from the cursor (made for this very sort) otherwise.
async fn position<E: EntityTrait>(
    db: &impl ConnectionTrait,
    scope: &Select<E>,
    sort: &Sort<E::Column>,
    columns: &[E::Column],
    from: &Start,
) -> ApiResult<Vec<Value>> {
    let field = from.field;
    match &from.anchor {
        Anchor::Id(id) => {
            let mut keys = key_columns::<E>();
            let (Some(id_column), None) = (keys.next(), keys.next()) else {
                return Err(invalid_query(field, "items of this list have no ids; use cursor"));
            };
            let row = scope.clone().filter(id_column.eq(*id)).one(db).await?;
            let row = row.ok_or_else(|| invalid_query(field, "is not the id of an item of this list"))?;
            Ok(columns.iter().map(|c| row.get(*c)).collect())
        }
        Anchor::Cursor(cursor) => {
            let name = sort.name();
            if cursor.s != name {
                let message = format!("was made for sort `{}`, not `{name}`", cursor.s);
                return Err(invalid_query(field, message));
            }
            let decoded: Option<Vec<Value>> = (cursor.k.len() == columns.len())
                .then(|| columns.iter().zip(&cursor.k).map(|(c, v)| from_json(c.def().get_column_type(), v)))
                .and_then(Iterator::collect);
            decoded.ok_or_else(|| invalid_query(field, "is not a cursor this API returned"))
        }
    }
}

/// Rows strictly beyond `values` in the order of `columns` (descending or
/// not): `a > v OR (a = v AND (b > w ...))`, which SQLite and PostgreSQL
/// both run, led by `a >= v` so that an index on the sort column bounds the
/// scan.
fn beyond<C: ColumnTrait>(columns: &[C], values: Vec<Value>, desc: bool) -> Condition {
    let past = |c: C, v: Value| if desc { c.lt(v) } else { c.gt(v) };
    let mut pairs: Vec<(C, Value)> = columns.iter().copied().zip(values).collect();
    let Some((last, value)) = pairs.pop() else { return Condition::all() };
    let bound = pairs.first().map(|(c, v)| if desc { c.lte(v.clone()) } else { c.gte(v.clone()) });
    let mut cond = Condition::any().add(past(last, value));
    for (column, value) in pairs.into_iter().rev() {
        let tie = Condition::all().add(column.eq(value.clone())).add(cond);
        cond = Condition::any().add(past(column, value)).add(tie);
    }
    match bound {
        Some(bound) => Condition::all().add(bound).add(cond),
        None => cond,
    }
}

fn to_json(value: Value) -> ApiResult<serde_json::Value> {
    Ok(match value {
        Value::String(Some(s)) => s.into(),
        Value::Uuid(Some(id)) => id.to_string().into(),
        Value::ChronoDateTimeUtc(Some(t)) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true).into(),
        Value::BigInt(Some(n)) => n.into(),
        Value::Int(Some(n)) => n.into(),
        other => return Err(ApiError::internal(anyhow::anyhow!("a list cannot be paged by {other:?}"))),
    })
}

/// A cursor's value read back as the column's type, or nothing when it is
/// not one.
fn from_json(column_type: &ColumnType, json: &serde_json::Value) -> Option<Value> {
    Some(match column_type {
        ColumnType::String(_) | ColumnType::Text | ColumnType::Char(_) => json.as_str()?.to_owned().into(),
        ColumnType::Uuid => json.as_str()?.parse::<Uuid>().ok()?.into(),
        ColumnType::TimestampWithTimeZone => {
            DateTime::parse_from_rfc3339(json.as_str()?).ok()?.with_timezone(&Utc).into()
        }
        ColumnType::BigInteger => json.as_i64()?.into(),
        ColumnType::Integer => i32::try_from(json.as_i64()?).ok()?.into(),
        _ => return None,
    })
}

/// The query parameters of a list: its own (`sort`, filters) and the paging
/// ones, documented once here; `list()` validates the paging ones. Items
/// without ids (`cursor_only`) page by cursor alone.
#[macro_export]
macro_rules! list_query {
    ($(#[$attr:meta])* struct $name:ident { $($fields:tt)* }) => {
        $crate::list_query!(@build [$(#[$attr])*] $name [
            starting_after = "The id of an item of this list: the items after it.",
            ending_before = "The id of an item of this list: the items before it.",
        ] { $($fields)* });
    };
    ($(#[$attr:meta])* cursor_only struct $name:ident { $($fields:tt)* }) => {
        $crate::list_query!(@build [$(#[$attr])*] $name [] { $($fields)* });
    };
    (@build [$(#[$attr:meta])*] $name:ident [$($id:ident = $doc:literal,)*] { $($fields:tt)* }) => {
        $(#[$attr])*
        struct $name {
            /// How many items, from 1 to 100 (default 25).
            #[param(minimum = 1, maximum = 100, example = 25)]
            limit: Option<i64>,
            $(
                #[doc = $doc]
                #[param(format = Uuid)]
                $id: Option<String>,
            )*
            /// `meta.next_cursor` or `meta.previous_cursor` of a page read with
            /// the same `sort`.
            cursor: Option<String>,
            /// `total` adds `meta.total`, the number of matching items.
            #[param(pattern = "^total$")]
            include: Option<String>,
            $($fields)*
        }

        impl $name {
            fn list(&self) -> $crate::error::ApiResult<$crate::platform::http::ListRequest> {
                $crate::platform::http::ListRequest::new(
                    self.limit,
                    &[$((stringify!($id), self.$id.as_deref()),)*],
                    self.cursor.as_deref(),
                    self.include.as_deref(),
                )
            }
        }
    };
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

/// The related objects `expand` names (comma-separated:
/// `expand=vendor,lines.product`, as Stripe's `expand[]`), each one of
/// `allowed`; 400 `invalid_query` naming `expand` otherwise.
pub fn expansions(expand: Option<&str>, allowed: &[&'static str]) -> ApiResult<Vec<&'static str>> {
    let mut out = Vec::new();
    for name in expand.map(|e| e.split(',')).into_iter().flatten() {
        let Some(known) = allowed.iter().find(|a| **a == name) else {
            let mut err = ApiError::new(Code::InvalidQuery, format!("`{name}` cannot be expanded here"));
            err.errors.push(FieldError::new("expand", format!("must name {}", allowed.join(", "))));
            return Err(err);
        };
        out.push(*known);
    }
    Ok(out)
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
        let fields = |err: ApiError| err.errors.into_iter().map(|e| e.field).collect::<Vec<_>>();
        let ids = [("starting_after", None), ("ending_before", None)];
        assert_eq!(fields(ListRequest::new(Some(0), &ids, None, None).unwrap_err()), ["limit"]);
        assert_eq!(fields(ListRequest::new(Some(101), &ids, None, None).unwrap_err()), ["limit"]);
        assert_eq!(fields(ListRequest::new(None, &ids, None, Some("count")).unwrap_err()), ["include"]);
        let id = Uuid::now_v7().to_string();
        let both = [("starting_after", Some(id.as_str())), ("ending_before", None)];
        assert_eq!(
            fields(ListRequest::new(None, &both, Some("x"), None).unwrap_err()),
            ["starting_after", "cursor"]
        );
        let bad_id = [("starting_after", Some("42")), ("ending_before", None)];
        assert_eq!(fields(ListRequest::new(None, &bad_id, None, None).unwrap_err()), ["starting_after"]);
        assert_eq!(fields(ListRequest::connection(0, None, None, false).unwrap_err()), ["first"]);
        let list = ListRequest::new(Some(100), &ids, None, Some("total")).unwrap();
        assert_eq!((list.limit, list.total, list.from.is_none()), (100, true, true));
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor =
            Cursor { s: "-name".into(), b: true, k: vec!["Ann".into(), Uuid::nil().to_string().into()] };
        let decoded = Cursor::decode("cursor", &cursor.encode()).unwrap();
        assert_eq!(decoded, cursor);
        for garbage in ["", "%%%", "bm90IGpzb24", &URL_SAFE_NO_PAD.encode(r#"{"s":"name","k":[],"x":1}"#)] {
            let err = Cursor::decode("after", garbage).unwrap_err();
            assert_eq!((err.code, err.errors[0].field.as_str()), (Code::InvalidQuery, "after"), "{garbage}");
        }
        // A value is read back as its column's type, or not at all.
        let at = "2026-11-22T09:14:45.123456Z";
        let time = from_json(&ColumnType::TimestampWithTimeZone, &at.into()).unwrap();
        assert_eq!(to_json(time).unwrap(), at);
        assert!(from_json(&ColumnType::TimestampWithTimeZone, &"yesterday".into()).is_none());
        assert!(from_json(&ColumnType::Uuid, &1.into()).is_none());
        assert!(from_json(&ColumnType::Integer, &i64::MAX.into()).is_none());
    }

    #[test]
    fn sort_accepts_only_known_fields() {
        let sorts = Sorts { fields: &[("name", 1), ("created_at", 2)], default: "-created_at" };
        let sort = parse_sort(Some("-name"), &sorts).unwrap();
        assert_eq!((sort.column, sort.desc, sort.name()), (1, true, "-name".to_owned()));
        let sort = parse_sort(None, &sorts).unwrap();
        assert_eq!((sort.column, sort.desc), (2, true));
        assert!(parse_sort(Some("password_hash"), &sorts).is_err());
    }
}
