//! The filters every list offers the same way: `q`, a case-insensitive
//! search for a piece of text in the list's names (and SKUs, codes...), and
//! time windows, `created_after` / `created_before` (and `updated_*`).
//! PostgreSQL answers `q` from trigram indexes that start with the tenant
//! (`pg_trgm` + `btree_gin`, migration 000015), and the windows from the
//! `(tenant_id, created_at, id)` indexes the lists sort by.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition,
    sea_query::{Expr, ExprTrait, Func, LikeExpr},
};

use crate::error::{ApiError, ApiResult, Code, FieldError};

/// The longest `q` accepted, in characters.
pub const MAX_QUERY: usize = 100;

/// A validated `q`: the pattern `%text%`, lowercased, with `%`, `_` and `\`
/// standing for themselves.
#[derive(Clone, Debug)]
pub struct Search(String);

fn refused(field: &str, message: impl Into<String>) -> ApiError {
    let mut err = ApiError::new(Code::InvalidQuery, "invalid list filters");
    err.errors.push(FieldError::new(field, message));
    err
}

impl Search {
    /// `None` when `q` is absent; 400 `invalid_query` when it is blank or
    /// longer than [`MAX_QUERY`] characters.
    pub fn parse(q: Option<&str>) -> ApiResult<Option<Self>> {
        let Some(q) = q.map(str::trim) else { return Ok(None) };
        if q.is_empty() || q.chars().count() > MAX_QUERY {
            return Err(refused("q", format!("must be 1 to {MAX_QUERY} characters")));
        }
        let mut pattern = String::with_capacity(q.len() + 2);
        pattern.push('%');
        for c in q.to_lowercase().chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        Ok(Some(Self(pattern)))
    }

    /// Rows where any of `columns`, lowercased, holds the text.
    pub fn on<C: ColumnTrait>(&self, columns: &[C]) -> Condition {
        columns.iter().fold(Condition::any(), |any, column| {
            let lowered = Expr::expr(Func::lower(Expr::col(*column)));
            any.add(lowered.like(LikeExpr::new(self.0.clone()).escape('\\')))
        })
    }
}

/// A time window: from `after` (inclusive) until `before` (exclusive).
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    pub after: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
}

impl Window {
    /// 400 `invalid_query` naming `<name>_before` when it is not after
    /// `<name>_after`.
    pub fn new(name: &str, after: Option<DateTime<Utc>>, before: Option<DateTime<Utc>>) -> ApiResult<Self> {
        if let (Some(a), Some(b)) = (after, before)
            && b <= a
        {
            return Err(refused(&format!("{name}_before"), format!("must be after {name}_after")));
        }
        Ok(Self { after, before })
    }

    /// Rows whose `column` falls in the window.
    pub fn on<C: ColumnTrait>(&self, column: C) -> Condition {
        Condition::all()
            .add_option(self.after.map(|a| column.gte(a)))
            .add_option(self.before.map(|b| column.lt(b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_is_trimmed_lowercased_and_taken_literally() {
        assert!(Search::parse(None).unwrap().is_none());
        assert_eq!(Search::parse(Some("  T-Shirt ")).unwrap().unwrap().0, "%t-shirt%");
        assert_eq!(Search::parse(Some("50%_off\\")).unwrap().unwrap().0, "%50\\%\\_off\\\\%");
        for bad in ["", "   ", &"x".repeat(MAX_QUERY + 1)] {
            assert_eq!(Search::parse(Some(bad)).unwrap_err().code, Code::InvalidQuery, "{bad:?}");
        }
    }

    #[test]
    fn a_window_ends_after_it_starts() {
        let t = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        assert!(Window::new("created", t("2026-01-01T00:00:00Z"), t("2026-02-01T00:00:00Z")).is_ok());
        assert!(Window::new("created", None, t("2026-02-01T00:00:00Z")).is_ok());
        let err = Window::new("created", t("2026-02-01T00:00:00Z"), t("2026-02-01T00:00:00Z")).unwrap_err();
        assert_eq!(err.errors[0].field, "created_before");
    }
}
