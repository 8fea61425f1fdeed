//! Keys in `idempotency_keys` (SQLite and PostgreSQL). A claim is an insert
//! that the unique index on (tenant, user, route, key) lets only one of two
//! simultaneous requests make; an expired key is taken over by a
//! conditional update, which also only one request can make.

use crate::platform::tenancy::SystemScope;
use std::time::Duration;

use chrono::Utc;
use entity::idempotency_key::{self as row, Column};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Select,
    sea_query::{Expr, OnConflict},
};
use uuid::Uuid;

use super::{Found, Record, Scope, Token};
use crate::error::{ApiError, ApiResult, Code};

const IN_PROGRESS: &str = "in_progress";
const COMPLETED: &str = "completed";

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

trait ScopeFilter: QueryFilter + Sized {
    fn scoped(self, scope: &Scope) -> Self {
        self.filter(Column::TenantId.eq(scope.tenant_id))
            .filter(Column::UserId.eq(scope.user_id))
            .filter(Column::Route.eq(scope.route.as_str()))
            .filter(Column::Key.eq(scope.key.as_str()))
    }
}

impl<T: QueryFilter + Sized> ScopeFilter for T {}

pub(super) async fn begin(
    db: &impl ConnectionTrait,
    scope: &Scope,
    fingerprint: &str,
    lease: Duration,
) -> ApiResult<Found> {
    for _ in 0..super::CLAIM_ATTEMPTS {
        let now = Utc::now();
        let claim = Uuid::now_v7();
        let fresh = row::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant_id: Set(scope.tenant_id),
            user_id: Set(scope.user_id),
            route: Set(scope.route.clone()),
            key: Set(scope.key.clone()),
            fingerprint: Set(fingerprint.to_owned()),
            status: Set(IN_PROGRESS.to_owned()),
            claim_id: Set(claim),
            response_status: Set(None),
            response_headers: Set(None),
            response_body: Set(None),
            response_sealed: Set(false),
            created_at: Set(now),
            expires_at: Set(now + chrono_duration(lease)),
        };
        let inserted = row::Entity::insert(fresh)
            .on_conflict(
                OnConflict::columns([Column::TenantId, Column::UserId, Column::Route, Column::Key])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
        if inserted == 1 {
            return Ok(Found::Claimed(Token::Database(claim)));
        }
        // Taken: free again if it expired (a kept response past its window,
        // or a claim whose request died).
        let taken = SystemScope
            .update_many::<row::Entity>()
            .col_expr(Column::Fingerprint, Expr::value(fingerprint))
            .col_expr(Column::Status, Expr::value(IN_PROGRESS))
            .col_expr(Column::ClaimId, Expr::value(claim))
            .col_expr(Column::ResponseStatus, Expr::value(Option::<i32>::None))
            .col_expr(Column::ResponseHeaders, Expr::value(Option::<serde_json::Value>::None))
            .col_expr(Column::ResponseBody, Expr::value(Option::<Vec<u8>>::None))
            .col_expr(Column::ResponseSealed, Expr::value(false))
            .col_expr(Column::CreatedAt, Expr::value(now))
            .col_expr(Column::ExpiresAt, Expr::value(now + chrono_duration(lease)))
            .scoped(scope)
            .filter(Column::ExpiresAt.lte(now))
            .exec(db)
            .await?;
        if taken.rows_affected == 1 {
            return Ok(Found::Claimed(Token::Database(claim)));
        }
        let existing: Select<row::Entity> = SystemScope.find::<row::Entity>().scoped(scope);
        let Some(existing) = existing.one(db).await? else {
            continue; // released in between: claim again
        };
        if existing.expires_at <= Utc::now() {
            continue; // expired in between: take it over
        }
        return found(existing);
    }
    Err(ApiError::new(Code::Conflict, "this Idempotency-Key is changing hands; retry shortly"))
}

fn found(existing: row::Model) -> ApiResult<Found> {
    if existing.status != COMPLETED {
        return Ok(Found::InProgress { fingerprint: existing.fingerprint });
    }
    let status = existing
        .response_status
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a completed idempotency key without a status")))?;
    let headers = match existing.response_headers {
        Some(json) => serde_json::from_value(json).map_err(ApiError::internal)?,
        None => Vec::new(),
    };
    let record = Record {
        status,
        headers,
        body: existing.response_body.unwrap_or_default(),
        sealed: existing.response_sealed,
    };
    Ok(Found::Completed { fingerprint: existing.fingerprint, record })
}

pub(super) async fn complete(
    db: &impl ConnectionTrait,
    scope: &Scope,
    claim: Uuid,
    record: &Record,
    retention: Duration,
) -> ApiResult<bool> {
    let headers = serde_json::to_value(&record.headers).map_err(ApiError::internal)?;
    let res = SystemScope
        .update_many::<row::Entity>()
        .col_expr(Column::Status, Expr::value(COMPLETED))
        .col_expr(Column::ResponseStatus, Expr::value(i32::from(record.status)))
        .col_expr(Column::ResponseHeaders, Expr::value(headers))
        .col_expr(Column::ResponseBody, Expr::value(record.body.clone()))
        .col_expr(Column::ResponseSealed, Expr::value(record.sealed))
        .col_expr(Column::ExpiresAt, Expr::value(Utc::now() + chrono_duration(retention)))
        .scoped(scope)
        .filter(Column::ClaimId.eq(claim))
        .filter(Column::Status.eq(IN_PROGRESS))
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

pub(super) async fn release(db: &impl ConnectionTrait, scope: &Scope, claim: Uuid) -> ApiResult<()> {
    SystemScope
        .delete_many::<row::Entity>()
        .scoped(scope)
        .filter(Column::ClaimId.eq(claim))
        .filter(Column::Status.eq(IN_PROGRESS))
        .exec(db)
        .await?;
    Ok(())
}

pub(super) async fn prune(db: &impl ConnectionTrait) -> Result<u64, DbErr> {
    let res =
        SystemScope.delete_many::<row::Entity>().filter(Column::ExpiresAt.lt(Utc::now())).exec(db).await?;
    Ok(res.rows_affected)
}
