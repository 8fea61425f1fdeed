//! KPIs and leaderboards of the orders, behind [`Analytics`]. Two
//! backends: [`DbAnalytics`] here computes them exactly from the orders,
//! their transitions, lines and refunds at each request (index-backed, see
//! `m20261128_000016_order_kpis`); `super::kpis_redis::RedisAnalytics`
//! keeps counters and sorted sets in Redis when `redis_url` is set. What
//! counts when is defined in docs/orders.md ("KPIs and leaderboards"):
//!
//! - an order counts (orders, gross, customers) when it reaches `completed`,
//!   at the time of that transition; a failed one when it reaches `failed`;
//! - a refund counts (refunds, refunded) when it is `processed`, at the
//!   time it was (its `updated_at`); revenue is gross minus refunded;
//! - leaderboards rank completed orders net of their refunds (`total -
//!   refunded`), per currency; bestsellers sum the quantities of the lines
//!   of completed orders.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use sea_orm::{
    ColumnTrait, DatabaseConnection, Order, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{COMPLETED, FAILED, service::PROCESSED};
use crate::{
    error::{ApiError, ApiResult, Code, FieldError},
    platform::tenancy::TenantScope,
};
use entity::{order, order_line, order_refund as refund, order_transition as transition};

/// The longest date range of `GET /api/v1/orders/kpis`, in days.
pub const MAX_DAYS: i64 = 366;
/// The longest realtime window, in minutes.
pub const MAX_MINUTES: i64 = 1440;
/// The most entries of a leaderboard.
pub const MAX_LIMIT: u64 = 100;

/// The figures of one currency in a period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "CurrencyKpis")]
pub struct CurrencyKpis {
    #[schema(example = "EUR")]
    pub currency: String,
    /// Orders completed.
    #[schema(example = 12)]
    pub orders: i64,
    /// Sum of the totals of the orders completed, minor units.
    #[schema(example = 59976)]
    pub gross: i64,
    /// Refunds processed.
    #[schema(example = 1)]
    pub refunds: i64,
    /// Sum of the refunds processed, minor units.
    #[schema(example = 1000)]
    pub refunded: i64,
    /// `gross - refunded`.
    #[schema(example = 58976)]
    pub revenue: i64,
    /// `gross / orders`, rounded down; 0 without orders.
    #[schema(example = 4998)]
    pub average_order_value: i64,
}

/// The KPIs of a period `[from, to)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "OrderKpis")]
pub struct Kpis {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Orders completed (every currency).
    #[schema(example = 12)]
    pub orders: i64,
    /// Orders failed.
    #[schema(example = 2)]
    pub failed: i64,
    /// Distinct customers of the orders completed.
    #[schema(example = 9)]
    pub unique_customers: i64,
    /// Refunds processed (every currency).
    #[schema(example = 1)]
    pub refunds: i64,
    /// Per currency, by code.
    pub currencies: Vec<CurrencyKpis>,
}

/// A customer's place on the spend leaderboard of a currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "CustomerSpend")]
pub struct CustomerSpend {
    pub customer_id: Uuid,
    /// 1 for the largest spend; customers with equal spend share a rank.
    /// `null` for a customer with no completed order in the currency.
    #[schema(example = 1)]
    pub rank: Option<i64>,
    /// Sum of `total - refunded` of their completed orders, minor units.
    #[schema(example = 4998)]
    pub spend: i64,
    /// Their completed orders.
    #[schema(example = 2)]
    pub orders: i64,
}

/// A product's quantity sold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "ProductSales")]
pub struct ProductSales {
    pub product_id: Uuid,
    /// 1 for the largest quantity; equal quantities share a rank.
    #[schema(example = 1)]
    pub rank: i64,
    /// Units on the lines of completed orders.
    #[schema(example = 42)]
    pub quantity: i64,
    /// Completed orders with the product.
    #[schema(example = 30)]
    pub orders: i64,
}

/// What a rebuild of the KPIs did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "KpiRebuild")]
pub struct KpiRebuild {
    /// `redis`, or `database` (nothing is kept apart from the tables: there
    /// is nothing to rebuild).
    #[schema(example = "redis")]
    pub backend: String,
    /// Orders that completed or failed, counted again.
    #[schema(example = 1200)]
    pub orders: i64,
    /// Refunds processed, counted again.
    #[schema(example = 37)]
    pub refunds: i64,
}

/// KPIs and leaderboards, one implementation per backend.
#[async_trait::async_trait]
pub trait Analytics: Send + Sync {
    /// The KPIs of each UTC day from `from` to `to`, both included.
    async fn daily_kpis(&self, tenant: TenantScope, from: NaiveDate, to: NaiveDate) -> ApiResult<Vec<Kpis>>;
    /// The KPIs of `[from, to)`.
    async fn kpis(&self, tenant: TenantScope, from: DateTime<Utc>, to: DateTime<Utc>) -> ApiResult<Kpis>;
    /// The customers with the largest spend in `currency`, best first.
    async fn top_customers(
        &self,
        tenant: TenantScope,
        currency: &str,
        limit: u64,
    ) -> ApiResult<Vec<CustomerSpend>>;
    /// One customer's place (404 for a customer not of this tenant).
    async fn customer_rank(
        &self,
        tenant: TenantScope,
        customer: Uuid,
        currency: &str,
    ) -> ApiResult<CustomerSpend>;
    /// The products sold most, by quantity.
    async fn bestsellers(&self, tenant: TenantScope, limit: u64) -> ApiResult<Vec<ProductSales>>;
    /// Build what the backend keeps for the tenant again from the tables.
    async fn rebuild(&self, tenant: TenantScope) -> ApiResult<KpiRebuild>;
}

/// A `YYYY-MM-DD` date of the query, or 400 `invalid_query` naming `field`.
pub fn parse_date(field: &str, value: &str) -> ApiResult<NaiveDate> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| invalid(field, "must be a date, YYYY-MM-DD"))
}

/// The days `from..=to`: `to` not before `from`, at most [`MAX_DAYS`].
pub fn check_range(from: NaiveDate, to: NaiveDate) -> ApiResult<()> {
    if to < from {
        return Err(invalid("to", "must not be before `from`"));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(invalid("to", &format!("the range may hold at most {MAX_DAYS} days")));
    }
    Ok(())
}

pub fn check_minutes(minutes: i64) -> ApiResult<()> {
    if !(1..=MAX_MINUTES).contains(&minutes) {
        return Err(invalid("minutes", &format!("must be between 1 and {MAX_MINUTES}")));
    }
    Ok(())
}

/// A leaderboard's length: 10 when absent, 1 to [`MAX_LIMIT`].
pub fn check_limit(limit: Option<i64>) -> ApiResult<u64> {
    match limit {
        None => Ok(10),
        Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => Ok(n as u64),
        Some(_) => Err(invalid("limit", &format!("must be between 1 and {MAX_LIMIT}"))),
    }
}

pub fn check_currency(currency: &str) -> ApiResult<()> {
    crate::platform::validate::currency(currency).map_err(|m| invalid("currency", &m))
}

fn invalid(field: &str, message: &str) -> ApiError {
    let mut err = ApiError::new(Code::InvalidQuery, format!("`{field}` is invalid"));
    err.errors.push(FieldError::new(field, message));
    err
}

pub(super) fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
}

/// An order that completed or failed in the window.
struct Done {
    at: DateTime<Utc>,
    completed: bool,
    customer: Uuid,
    currency: String,
    total: i64,
}

/// A refund processed in the window.
struct Given {
    at: DateTime<Utc>,
    currency: String,
    amount: i64,
}

fn of<'a>(currencies: &'a mut BTreeMap<String, CurrencyKpis>, currency: &str) -> &'a mut CurrencyKpis {
    currencies
        .entry(currency.to_owned())
        .or_insert_with(|| CurrencyKpis { currency: currency.to_owned(), ..Default::default() })
}

/// The KPIs of `[from, to)` from what happened in it.
fn summarize<'a>(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    done: impl Iterator<Item = &'a Done>,
    given: impl Iterator<Item = &'a Given>,
) -> Kpis {
    let (mut orders, mut failed, mut refunds) = (0, 0, 0);
    let mut customers = HashSet::new();
    let mut currencies: BTreeMap<String, CurrencyKpis> = BTreeMap::new();
    for d in done.filter(|d| d.at >= from && d.at < to) {
        if d.completed {
            orders += 1;
            customers.insert(d.customer);
            let c = of(&mut currencies, &d.currency);
            c.orders += 1;
            c.gross += d.total;
        } else {
            failed += 1;
        }
    }
    for g in given.filter(|g| g.at >= from && g.at < to) {
        refunds += 1;
        let c = of(&mut currencies, &g.currency);
        c.refunds += 1;
        c.refunded += g.amount;
    }
    let currencies = currencies
        .into_values()
        .map(|mut c| {
            c.revenue = c.gross - c.refunded;
            c.average_order_value = if c.orders > 0 { c.gross / c.orders } else { 0 };
            c
        })
        .collect();
    Kpis { from, to, orders, failed, unique_customers: customers.len() as i64, refunds, currencies }
}

/// Exact aggregates over the database, at each request.
pub struct DbAnalytics {
    db: DatabaseConnection,
}

impl DbAnalytics {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// The completions, failures and processed refunds of `[from, to)`.
    async fn facts(
        &self,
        tenant: TenantScope,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> ApiResult<(Vec<Done>, Vec<Given>)> {
        let moves: Vec<(Uuid, String, DateTime<Utc>)> = tenant
            .find::<transition::Entity>()
            .select_only()
            .columns([transition::Column::OrderId, transition::Column::ToStatus, transition::Column::At])
            .filter(transition::Column::ToStatus.is_in([COMPLETED, FAILED]))
            .filter(transition::Column::At.gte(from))
            .filter(transition::Column::At.lt(to))
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut orders: HashMap<Uuid, (Uuid, String, i64)> = HashMap::new();
        let ids: Vec<Uuid> = moves.iter().map(|m| m.0).collect();
        for chunk in ids.chunks(500) {
            let rows: Vec<(Uuid, Uuid, String, i64)> = tenant
                .find::<order::Entity>()
                .select_only()
                .columns([
                    order::Column::Id,
                    order::Column::CustomerId,
                    order::Column::Currency,
                    order::Column::Total,
                ])
                .filter(order::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(&self.db)
                .await?;
            orders.extend(
                rows.into_iter().map(|(id, customer, currency, total)| (id, (customer, currency, total))),
            );
        }
        let done = moves
            .into_iter()
            .filter_map(|(id, to_status, at)| {
                let (customer, currency, total) = orders.get(&id)?.clone();
                Some(Done { at, completed: to_status == COMPLETED, customer, currency, total })
            })
            .collect();
        let given = tenant
            .find::<refund::Entity>()
            .select_only()
            .columns([refund::Column::UpdatedAt, refund::Column::Currency, refund::Column::Amount])
            .filter(refund::Column::Status.eq(PROCESSED))
            .filter(refund::Column::UpdatedAt.gte(from))
            .filter(refund::Column::UpdatedAt.lt(to))
            .into_tuple::<(DateTime<Utc>, String, i64)>()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|(at, currency, amount)| Given { at, currency, amount })
            .collect();
        Ok((done, given))
    }

    /// Every customer with a completed order in `currency`: (customer,
    /// spend, orders), largest spend first.
    async fn spends(&self, tenant: TenantScope, currency: &str) -> ApiResult<Vec<(Uuid, i64, i64)>> {
        Ok(tenant
            .find::<order::Entity>()
            .select_only()
            .column(order::Column::CustomerId)
            .column_as(Expr::cust("CAST(SUM(total - refunded) AS BIGINT)"), "spend")
            .column_as(Expr::cust("CAST(COUNT(*) AS BIGINT)"), "orders")
            .filter(order::Column::Status.eq(COMPLETED))
            .filter(order::Column::Currency.eq(currency))
            .group_by(order::Column::CustomerId)
            .order_by(Expr::cust("spend"), Order::Desc)
            .order_by(order::Column::CustomerId, Order::Asc)
            .into_tuple()
            .all(&self.db)
            .await?)
    }
}

/// Competition ranks ("1224") of values sorted largest first.
pub(super) fn ranks(values: &[i64]) -> Vec<i64> {
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let rank = if i > 0 && values[i - 1] == *v { out[i - 1] } else { i as i64 + 1 };
        out.push(rank);
    }
    out
}

#[async_trait::async_trait]
impl Analytics for DbAnalytics {
    async fn daily_kpis(&self, tenant: TenantScope, from: NaiveDate, to: NaiveDate) -> ApiResult<Vec<Kpis>> {
        check_range(from, to)?;
        let (start, end) = (midnight(from), midnight(to) + Duration::days(1));
        let (done, given) = self.facts(tenant, start, end).await?;
        Ok(from
            .iter_days()
            .take_while(|day| *day <= to)
            .map(|day| {
                let (a, b) = (midnight(day), midnight(day) + Duration::days(1));
                summarize(a, b, done.iter(), given.iter())
            })
            .collect())
    }

    async fn kpis(&self, tenant: TenantScope, from: DateTime<Utc>, to: DateTime<Utc>) -> ApiResult<Kpis> {
        let (done, given) = self.facts(tenant, from, to).await?;
        Ok(summarize(from, to, done.iter(), given.iter()))
    }

    async fn top_customers(
        &self,
        tenant: TenantScope,
        currency: &str,
        limit: u64,
    ) -> ApiResult<Vec<CustomerSpend>> {
        let spends = self.spends(tenant, currency).await?;
        let ranks = ranks(&spends.iter().map(|s| s.1).collect::<Vec<_>>());
        Ok(spends
            .into_iter()
            .zip(ranks)
            .take(limit as usize)
            .map(|((customer_id, spend, orders), rank)| CustomerSpend {
                customer_id,
                rank: Some(rank),
                spend,
                orders,
            })
            .collect())
    }

    async fn customer_rank(
        &self,
        tenant: TenantScope,
        customer: Uuid,
        currency: &str,
    ) -> ApiResult<CustomerSpend> {
        tenant
            .get::<entity::customer::Entity>(&self.db, customer)
            .await?
            .ok_or_else(|| ApiError::not_found("customer"))?;
        let spends = self.spends(tenant, currency).await?;
        let ranks = ranks(&spends.iter().map(|s| s.1).collect::<Vec<_>>());
        Ok(spends
            .into_iter()
            .zip(ranks)
            .find(|(s, _)| s.0 == customer)
            .map(|((customer_id, spend, orders), rank)| CustomerSpend {
                customer_id,
                rank: Some(rank),
                spend,
                orders,
            })
            .unwrap_or(CustomerSpend { customer_id: customer, rank: None, spend: 0, orders: 0 }))
    }

    async fn bestsellers(&self, tenant: TenantScope, limit: u64) -> ApiResult<Vec<ProductSales>> {
        let completed = sea_orm::sea_query::Query::select()
            .column(order::Column::Id)
            .from(order::Entity)
            .and_where(order::Column::TenantId.eq(tenant.id()))
            .and_where(order::Column::Status.eq(COMPLETED))
            .to_owned();
        let rows: Vec<(Uuid, i64, i64)> = tenant
            .find::<order_line::Entity>()
            .select_only()
            .column(order_line::Column::ProductId)
            .column_as(Expr::cust("CAST(SUM(quantity) AS BIGINT)"), "quantity")
            .column_as(Expr::cust("CAST(COUNT(DISTINCT order_id) AS BIGINT)"), "orders")
            .filter(order_line::Column::OrderId.in_subquery(completed))
            .group_by(order_line::Column::ProductId)
            .order_by(Expr::cust("quantity"), Order::Desc)
            .order_by(order_line::Column::ProductId, Order::Asc)
            .into_tuple()
            .all(&self.db)
            .await?;
        let ranks = ranks(&rows.iter().map(|r| r.1).collect::<Vec<_>>());
        Ok(rows
            .into_iter()
            .zip(ranks)
            .take(limit as usize)
            .map(|((product_id, quantity, orders), rank)| ProductSales { product_id, rank, quantity, orders })
            .collect())
    }

    async fn rebuild(&self, _: TenantScope) -> ApiResult<KpiRebuild> {
        Ok(KpiRebuild { backend: "database".into(), orders: 0, refunds: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_a_rank() {
        assert_eq!(ranks(&[9, 7, 7, 3]), [1, 2, 2, 4]);
        assert!(ranks(&[]).is_empty());
    }

    #[test]
    fn a_period_counts_what_happened_in_it_and_nets_the_refunds() {
        let day = midnight(NaiveDate::from_ymd_opt(2026, 11, 28).unwrap_or_default());
        let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let done = |minutes, completed, customer, currency: &str, total| Done {
            at: day + Duration::minutes(minutes),
            completed,
            customer,
            currency: currency.to_owned(),
            total,
        };
        let done = [
            done(0, true, ada, "EUR", 1000),
            done(60, true, ada, "EUR", 2001),
            done(61, true, bob, "USD", 500),
            done(62, false, bob, "EUR", 9999),
            // The next day: not in the period.
            done(24 * 60, true, bob, "EUR", 7000),
        ];
        let given = [Given { at: day + Duration::minutes(90), currency: "EUR".into(), amount: 300 }];
        let k = summarize(day, day + Duration::days(1), done.iter(), given.iter());
        assert_eq!((k.orders, k.failed, k.unique_customers, k.refunds), (3, 1, 2, 1));
        let eur = CurrencyKpis {
            currency: "EUR".into(),
            orders: 2,
            gross: 3001,
            refunds: 1,
            refunded: 300,
            revenue: 2701,
            average_order_value: 1500,
        };
        let usd = CurrencyKpis {
            currency: "USD".into(),
            orders: 1,
            gross: 500,
            revenue: 500,
            average_order_value: 500,
            ..Default::default()
        };
        assert_eq!(k.currencies, [eur, usd]);
    }

    #[test]
    fn a_range_is_bounded_and_ordered() {
        let day = |s| parse_date("from", s).unwrap();
        assert!(check_range(day("2026-01-01"), day("2026-12-31")).is_ok());
        assert_eq!(check_range(day("2026-01-02"), day("2026-01-01")).unwrap_err().errors[0].field, "to");
        assert!(check_range(day("2024-01-01"), day("2025-01-01")).is_err());
        assert_eq!(parse_date("from", "2026-02-30").unwrap_err().errors[0].field, "from");
    }
}
