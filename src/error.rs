//! One error type and one catalogue of stable codes, rendered once as
//! RFC 9457 `application/problem+json`.

use actix_web::{HttpResponse, ResponseError, http::StatusCode, http::header};
use sea_orm::{DbErr, SqlErr};
use serde::Serialize;
use utoipa::ToSchema;

tokio::task_local! {
    /// The id of the request being served; set by the request-id middleware
    /// so every problem body can name it.
    pub static REQUEST_ID: String;
}

macro_rules! catalogue {
    ($($variant:ident => $status:ident, $code:literal, $title:literal;)*) => {
        /// Every error code Nexus answers with. Codes are a stable contract.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Code { $($variant),* }

        impl Code {
            pub const ALL: &[Code] = &[$(Code::$variant),*];
            pub fn as_str(self) -> &'static str { match self { $(Code::$variant => $code),* } }
            pub fn status(self) -> StatusCode { match self { $(Code::$variant => StatusCode::$status),* } }
            pub fn title(self) -> &'static str { match self { $(Code::$variant => $title),* } }
        }
    };
}

catalogue! {
    BadRequest => BAD_REQUEST, "bad_request", "Bad request";
    MalformedJson => BAD_REQUEST, "malformed_json", "Malformed JSON";
    InvalidQuery => BAD_REQUEST, "invalid_query", "Invalid query parameter";
    InvalidPath => BAD_REQUEST, "invalid_path", "Invalid path parameter";
    InvalidHeader => BAD_REQUEST, "invalid_header", "Invalid header";
    InvalidString => BAD_REQUEST, "invalid_string", "String contains a forbidden character";
    Unauthenticated => UNAUTHORIZED, "unauthenticated", "Authentication required";
    InvalidCredentials => UNAUTHORIZED, "invalid_credentials", "Invalid credentials";
    Forbidden => FORBIDDEN, "forbidden", "Forbidden";
    FeatureDisabled => FORBIDDEN, "feature_disabled", "Feature disabled";
    LicenseReadOnly => FORBIDDEN, "license_read_only", "License is read-only";
    LicenseSuspended => FORBIDDEN, "license_suspended", "License suspended";
    LicenseExpired => FORBIDDEN, "license_expired", "License expired";
    LicenseTerminated => FORBIDDEN, "license_terminated", "License terminated";
    LicenseLimit => FORBIDDEN, "license_limit", "License limit reached";
    NotFound => NOT_FOUND, "not_found", "Not found";
    MethodNotAllowed => METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed";
    Conflict => CONFLICT, "conflict", "Conflict";
    InsufficientStock => CONFLICT, "insufficient_stock", "Insufficient stock";
    RefundAmountExceeded => CONFLICT, "refund_amount_exceeded", "Refund amount exceeded";
    NotificationNotFailed => CONFLICT, "notification_not_failed", "Notification not failed";
    StockLimitExceeded => UNPROCESSABLE_ENTITY, "stock_limit_exceeded", "Stock limit exceeded";
    Gone => GONE, "gone", "Gone";
    PreconditionFailed => PRECONDITION_FAILED, "precondition_failed", "Precondition failed";
    PayloadTooLarge => PAYLOAD_TOO_LARGE, "payload_too_large", "Payload too large";
    UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Unsupported media type";
    ValidationFailed => UNPROCESSABLE_ENTITY, "validation_failed", "Validation failed";
    IdempotencyConflict => UNPROCESSABLE_ENTITY, "idempotency_conflict", "Idempotency key reused";
    RateLimited => TOO_MANY_REQUESTS, "rate_limited", "Too many requests";
    Internal => INTERNAL_SERVER_ERROR, "internal_error", "Internal server error";
    ServiceUnavailable => SERVICE_UNAVAILABLE, "service_unavailable", "Service unavailable";
    DatabaseUnavailable => SERVICE_UNAVAILABLE, "database_unavailable", "Database unavailable";
}

impl Code {
    /// The code a bare status maps to, for responses no handler wrote
    /// (actix's own 404/405, payload errors, ...).
    pub fn for_status(status: StatusCode) -> Code {
        match status.as_u16() {
            401 => Code::Unauthenticated,
            403 => Code::Forbidden,
            404 => Code::NotFound,
            405 => Code::MethodNotAllowed,
            409 => Code::Conflict,
            410 => Code::Gone,
            412 => Code::PreconditionFailed,
            413 => Code::PayloadTooLarge,
            415 => Code::UnsupportedMediaType,
            422 => Code::ValidationFailed,
            429 => Code::RateLimited,
            503 => Code::ServiceUnavailable,
            400..=499 => Code::BadRequest,
            _ => Code::Internal,
        }
    }
}

/// One invalid input field.
#[derive(Clone, Debug, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field in the request, e.g. `email` or `lines[2].quantity`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// An RFC 9457 problem document, as every error is answered.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:nexus:problem:validation_failed",
    "title": "Validation failed",
    "status": 422,
    "detail": "the request body has invalid fields",
    "code": "validation_failed",
    "request_id": "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11",
    "errors": [{"field": "email", "message": "is not a valid email address"}]
}))]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    pub code: &'static str,
    pub request_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// Logged, never shown to the client.
    source: Option<anyhow::Error>,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        // A 503 is retried after a second unless said otherwise.
        let retry_after = (code.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(1);
        Self { code, detail: detail.into(), errors: Vec::new(), source: None, retry_after }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self {
            code: Code::ValidationFailed,
            detail: "the request has invalid fields".to_owned(),
            errors,
            source: None,
            retry_after: None,
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(Code::NotFound, format!("{what} not found"))
    }

    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        Self {
            code: Code::Internal,
            detail: "an internal error occurred; it has been logged".to_owned(),
            errors: Vec::new(),
            source: Some(source.into()),
            retry_after: None,
        }
    }

    pub fn unavailable(source: impl Into<anyhow::Error>) -> Self {
        Self {
            source: Some(source.into()),
            ..Self::new(Code::ServiceUnavailable, "a backing service is unavailable; retry shortly")
        }
    }

    /// The database cannot be reached (or went away mid-statement): the
    /// client may retry shortly; nothing was changed.
    pub fn database_unavailable(source: impl Into<anyhow::Error>) -> Self {
        Self {
            source: Some(source.into()),
            ..Self::new(Code::DatabaseUnavailable, "the database is unavailable; retry shortly")
        }
    }

    /// The same error for another answer (a shared one, e.g. from a batch
    /// loader); the hidden cause stays with the original.
    pub fn clone_of(err: &ApiError) -> ApiError {
        err.log_source();
        ApiError {
            code: err.code,
            detail: err.detail.clone(),
            errors: err.errors.clone(),
            source: None,
            retry_after: err.retry_after,
        }
    }

    /// Log the hidden cause of an internal or unavailable error.
    pub fn log_source(&self) {
        if let Some(source) = &self.source {
            tracing::error!(code = self.code.as_str(), error = ?source, "request failed");
        }
    }

    /// Ask the client to come back after `secs` seconds.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn problem(&self) -> Problem {
        problem(self.code, self.detail.clone(), self.errors.clone())
    }
}

pub fn problem(code: Code, detail: String, errors: Vec<FieldError>) -> Problem {
    Problem {
        kind: format!("urn:nexus:problem:{}", code.as_str()),
        title: code.title(),
        status: code.status().as_u16(),
        detail,
        code: code.as_str(),
        request_id: REQUEST_ID.try_with(Clone::clone).unwrap_or_default(),
        errors,
    }
}

pub const PROBLEM_JSON: &str = "application/problem+json";

pub fn problem_response(problem: &Problem) -> HttpResponse {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = HttpResponse::build(status);
    builder.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
    if status == StatusCode::UNAUTHORIZED {
        builder.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
    }
    builder.body(serde_json::to_vec(problem).unwrap_or_default())
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.log_source();
        let mut res = problem_response(&self.problem());
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        res
    }
}

impl From<DbErr> for ApiError {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                return ApiError::new(Code::Conflict, "a resource with these unique fields already exists");
            }
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => {
                return ApiError::new(
                    Code::Conflict,
                    "a referenced resource does not exist or is still in use",
                );
            }
            _ => {}
        }
        if transient_conflict(&err) {
            return ApiError::new(Code::Conflict, "the change collided with a concurrent one; retry it");
        }
        match err {
            DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => ApiError::database_unavailable(err),
            err if connection_lost(&err) => ApiError::database_unavailable(err),
            other => ApiError::internal(other),
        }
    }
}

/// A deadlock or serialization failure (SQLSTATE 40P01, 40001): nothing was
/// changed, and the same request may succeed when retried.
fn transient_conflict(err: &DbErr) -> bool {
    use sea_orm::{RuntimeErr, sqlx};
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err else {
        return false;
    };
    matches!(e.as_ref(), sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "40P01" || c == "40001"))
}

/// Whether a statement failed because the database went away under it
/// (the socket closed, the server shut down or is starting): a 503 the
/// client may retry, not a 500.
fn connection_lost(err: &DbErr) -> bool {
    use sea_orm::{RuntimeErr, sqlx};
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err else {
        return false;
    };
    match e.as_ref() {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        // SQLSTATE class 08 (connection exception) and 57P (operator
        // intervention: shutdown, cannot connect now).
        sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(err: redis::RedisError) -> Self {
        ApiError::unavailable(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_lost_mid_statement_is_a_503_not_a_500() {
        use sea_orm::{RuntimeErr, sqlx};
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let lost = DbErr::Exec(RuntimeErr::SqlxError(std::sync::Arc::new(sqlx::Error::Io(reset))));
        let err = ApiError::from(lost);
        assert_eq!((err.code, err.retry_after), (Code::DatabaseUnavailable, Some(1)));
        let other = DbErr::Query(RuntimeErr::Internal("syntax error".into()));
        assert_eq!(ApiError::from(other).code, Code::Internal);
    }

    /// docs/errors.md describes every code the server can answer.
    #[test]
    fn the_error_guide_lists_every_code() {
        let guide = include_str!("../docs/errors.md");
        for code in Code::ALL {
            let row = format!("| `{}` | {} |", code.as_str(), code.status().as_u16());
            assert!(guide.contains(&row), "docs/errors.md lacks the row {row}");
        }
    }

    #[test]
    fn codes_are_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str()), "duplicate {}", code.as_str());
            assert!(code.as_str().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = ApiError::internal(anyhow::anyhow!("password=hunter2 at db.rs:12"));
        let body = serde_json::to_string(&err.problem()).unwrap();
        assert!(!body.contains("hunter2"));
        assert!(body.contains("\"code\":\"internal_error\""));
    }
}
