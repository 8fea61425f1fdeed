//! The Redis backend of the KPIs and leaderboards ([`RedisAnalytics`]),
//! used when `redis_url` is set. It keeps, per tenant (keys
//! `<redis_key_prefix>kpi:{<tenant>}:...`):
//!
//! - `d:<YYYY-MM-DD>`: a hash per UTC day: `orders`, `failed`, `refunds`,
//!   and per currency `o:<CUR>` (orders), `g:<CUR>` (gross), `n:<CUR>`
//!   (refunds) and `r:<CUR>` (refunded);
//! - `c:<YYYY-MM-DD>`: the set of the day's customers (a set, not a
//!   HyperLogLog: the count is exact);
//! - `spend:<CUR>` (sorted set customer → spend) and `spend_orders:<CUR>`
//!   (hash customer → completed orders);
//! - `sold` (sorted set product → units) and `sold_orders` (hash product →
//!   completed orders with it);
//! - `contrib` (hash order → what it adds to its customer's spend: its total
//!   minus its processed refunds) and `applied` (the set of the facts
//!   counted, `o:<order>` and `r:<refund>`);
//! - `built`, present once the state was built from the tables, and
//!   `lock`, held by a rebuild.
//!
//! Facts are applied after their commit by [`KpiListener`], a listener on
//! `order.completed`, `order.failed` and `order.refunded` (a durable job per
//! event, retried while Redis is down; an order never waits for Redis). Each
//! fact is applied by one Lua script, atomically with the marker that says
//! it was: a job run twice counts once. A spend is kept per order and only
//! ever lowered (processed refunds only grow), so a refund and its order's
//! completion applied in any order give the same spend.
//!
//! Reads use the Redis state only when it is `built`; otherwise, and when
//! Redis errs or does not answer within `redis_timeout_ms`, they are
//! answered from the exact database aggregates ([`DbAnalytics`]), as are
//! the realtime windows (a window ending now, to the millisecond, cannot be
//! cut exactly from per-day counters). The first fact of a tenant without a
//! `built` state, and `POST /api/v1/orders/kpis/rebuild`, rebuild it from
//! the tables.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ColumnTrait, DatabaseConnection, Order, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use uuid::Uuid;

use super::{
    COMPLETED, FAILED,
    kpis::{
        Analytics, CurrencyKpis, CustomerSpend, DbAnalytics, KpiRebuild, Kpis, ProductSales, midnight, ranks,
    },
    service::PROCESSED,
};
use crate::{
    error::{ApiError, ApiResult, Code},
    platform::{events::Listener, jobs::JobError, redis::Redis, state::AppState, tenancy::TenantScope},
};
use entity::{order, order_line, order_refund as refund, order_transition as transition};

/// How many orders or refunds one rebuild step reads and applies.
const CHUNK: u64 = 500;
/// How long a rebuild may hold a tenant's lock, in seconds.
const LOCK_SECONDS: u64 = 600;

/// Add `ARGV[c]` (an order's spend) for customer `ARGV[k]` under the order
/// `ARGV[o]`: the first time it counts the order; later only a lower value
/// (more refunds processed) changes it. KEYS[contrib], KEYS[spend],
/// KEYS[spend_orders] are the 3 keys from `at`.
const CONTRIBUTE: &str = r"
local function contribute(at, order, customer, value)
  local new = tonumber(value)
  local old = redis.call('HGET', KEYS[at], order)
  if not old then
    redis.call('HSET', KEYS[at], order, new)
    redis.call('ZINCRBY', KEYS[at + 1], new, customer)
    redis.call('HINCRBY', KEYS[at + 2], customer, 1)
  elseif new < tonumber(old) then
    redis.call('HSET', KEYS[at], order, new)
    redis.call('ZINCRBY', KEYS[at + 1], new - tonumber(old), customer)
  end
end
";

/// An order that completed or failed. KEYS: built, applied, day, day's
/// customers, sold, sold_orders, contrib, spend, spend_orders. ARGV: force
/// (`1`: apply without a built state, in a rebuild), order, `completed` or
/// `failed`, customer, currency, total, spend, then product and units pairs.
/// -1 without a built state, 1 when counted now, 0 when counted before.
const APPLY_ORDER: &str = r"
if ARGV[1] ~= '1' and redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local counted = redis.call('SADD', KEYS[2], 'o:' .. ARGV[2])
if counted == 1 then
  if ARGV[3] == 'failed' then
    redis.call('HINCRBY', KEYS[3], 'failed', 1)
  else
    redis.call('HINCRBY', KEYS[3], 'orders', 1)
    redis.call('HINCRBY', KEYS[3], 'o:' .. ARGV[5], 1)
    redis.call('HINCRBY', KEYS[3], 'g:' .. ARGV[5], ARGV[6])
    redis.call('SADD', KEYS[4], ARGV[4])
    for i = 8, #ARGV, 2 do
      redis.call('ZINCRBY', KEYS[5], ARGV[i + 1], ARGV[i])
      redis.call('HINCRBY', KEYS[6], ARGV[i], 1)
    end
  end
end
if ARGV[3] == 'completed' then contribute(7, ARGV[2], ARGV[4], ARGV[7]) end
return counted
";

/// A processed refund. KEYS: built, applied, day, contrib, spend,
/// spend_orders. ARGV: force, refund, currency, amount, order, customer,
/// the order's spend (empty unless it is completed).
const APPLY_REFUND: &str = r"
if ARGV[1] ~= '1' and redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local counted = redis.call('SADD', KEYS[2], 'r:' .. ARGV[2])
if counted == 1 then
  redis.call('HINCRBY', KEYS[3], 'refunds', 1)
  redis.call('HINCRBY', KEYS[3], 'n:' .. ARGV[3], 1)
  redis.call('HINCRBY', KEYS[3], 'r:' .. ARGV[3], ARGV[4])
end
if ARGV[7] ~= '' then contribute(4, ARGV[5], ARGV[6], ARGV[7]) end
return counted
";

/// Drop the lock KEYS[1] if it still holds ARGV[1].
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Why a fact or a read did not go through Redis.
#[derive(Debug)]
pub enum Miss {
    /// The tenant's state is not built (new tenant, wiped Redis, rebuild).
    NotBuilt,
    /// Redis erred or did not answer in time.
    Down(String),
    /// Another rebuild of the tenant holds the lock.
    Busy,
    Db(ApiError),
}

impl From<ApiError> for Miss {
    fn from(err: ApiError) -> Self {
        Miss::Db(err)
    }
}

impl From<sea_orm::DbErr> for Miss {
    fn from(err: sea_orm::DbErr) -> Self {
        Miss::Db(err.into())
    }
}

impl From<redis::RedisError> for Miss {
    fn from(err: redis::RedisError) -> Self {
        Miss::Down(err.to_string())
    }
}

/// KPIs and leaderboards kept in Redis, the database answering when Redis
/// cannot.
pub struct RedisAnalytics {
    redis: Redis,
    db: DatabaseConnection,
    exact: DbAnalytics,
}

/// The last order of a fact: what its spend and counters need.
struct Settled {
    id: Uuid,
    customer: Uuid,
    currency: String,
    total: i64,
    status: String,
}

impl RedisAnalytics {
    pub fn new(redis: Redis, db: DatabaseConnection) -> Self {
        Self { redis, exact: DbAnalytics::new(db.clone()), db }
    }

    /// The Redis key `name` of the tenant.
    fn key(&self, tenant: TenantScope, name: &str) -> String {
        self.redis.key(&format!("kpi:{{{}}}:{name}", tenant.id()))
    }

    fn day(&self, tenant: TenantScope, kind: char, at: NaiveDate) -> String {
        self.key(tenant, &format!("{kind}:{at}"))
    }

    /// Run `pipe`, bounded by the Redis timeout.
    async fn run<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, Miss> {
        let mut conn = self.redis.conn();
        match tokio::time::timeout(self.redis.timeout(), pipe.query_async(&mut conn)).await {
            Ok(reply) => Ok(reply?),
            Err(_) => Err(Miss::Down(format!("no answer within {} ms", self.redis.timeout().as_millis()))),
        }
    }

    /// The processed refunds of each of `orders`, summed.
    async fn refunded(&self, tenant: TenantScope, orders: &[Uuid]) -> Result<HashMap<Uuid, i64>, Miss> {
        let rows: Vec<(Uuid, i64)> = tenant
            .find::<refund::Entity>()
            .select_only()
            .column(refund::Column::OrderId)
            .column_as(Expr::cust("CAST(SUM(amount) AS BIGINT)"), "refunded")
            .filter(refund::Column::OrderId.is_in(orders.iter().copied()))
            .filter(refund::Column::Status.eq(PROCESSED))
            .group_by(refund::Column::OrderId)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().collect())
    }

    async fn settled(&self, tenant: TenantScope, ids: &[Uuid]) -> Result<Vec<Settled>, Miss> {
        let rows: Vec<(Uuid, Uuid, String, i64, String)> = tenant
            .find::<order::Entity>()
            .select_only()
            .columns([
                order::Column::Id,
                order::Column::CustomerId,
                order::Column::Currency,
                order::Column::Total,
                order::Column::Status,
            ])
            .filter(order::Column::Id.is_in(ids.iter().copied()))
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, customer, currency, total, status)| Settled { id, customer, currency, total, status })
            .collect())
    }

    /// Apply the completion or failure of each of `ids` (at most [`CHUNK`])
    /// that completed or failed; `force` without a built state. The number
    /// counted now.
    async fn apply_orders(&self, tenant: TenantScope, ids: &[Uuid], force: bool) -> Result<u64, Miss> {
        let orders: Vec<Settled> = self
            .settled(tenant, ids)
            .await?
            .into_iter()
            .filter(|o| o.status == COMPLETED || o.status == FAILED)
            .collect();
        if orders.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = orders.iter().map(|o| o.id).collect();
        let ended: HashMap<Uuid, DateTime<Utc>> = tenant
            .find::<transition::Entity>()
            .select_only()
            .columns([transition::Column::OrderId, transition::Column::At])
            .filter(transition::Column::OrderId.is_in(ids.iter().copied()))
            .filter(transition::Column::ToStatus.is_in([COMPLETED, FAILED]))
            .into_tuple::<(Uuid, DateTime<Utc>)>()
            .all(&self.db)
            .await?
            .into_iter()
            .collect();
        let mut sold: HashMap<Uuid, BTreeMap<Uuid, i64>> = HashMap::new();
        let lines: Vec<(Uuid, Uuid, i64)> = tenant
            .find::<order_line::Entity>()
            .select_only()
            .columns([
                order_line::Column::OrderId,
                order_line::Column::ProductId,
                order_line::Column::Quantity,
            ])
            .filter(order_line::Column::OrderId.is_in(ids.iter().copied()))
            .into_tuple()
            .all(&self.db)
            .await?;
        for (order_id, product, quantity) in lines {
            *sold.entry(order_id).or_default().entry(product).or_default() += quantity;
        }
        let refunded = self.refunded(tenant, &ids).await?;
        let script = format!("{CONTRIBUTE}{APPLY_ORDER}");
        let mut pipe = redis::pipe();
        for o in &orders {
            let Some(at) = ended.get(&o.id) else { continue };
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(&script).arg(9);
            cmd.arg(self.key(tenant, "built")).arg(self.key(tenant, "applied"));
            cmd.arg(self.day(tenant, 'd', at.date_naive())).arg(self.day(tenant, 'c', at.date_naive()));
            cmd.arg(self.key(tenant, "sold")).arg(self.key(tenant, "sold_orders"));
            cmd.arg(self.key(tenant, "contrib"));
            cmd.arg(self.key(tenant, &format!("spend:{}", o.currency)));
            cmd.arg(self.key(tenant, &format!("spend_orders:{}", o.currency)));
            let spend = o.total - refunded.get(&o.id).copied().unwrap_or(0);
            cmd.arg(if force { "1" } else { "0" }).arg(o.id.to_string()).arg(&o.status);
            cmd.arg(o.customer.to_string()).arg(&o.currency).arg(o.total).arg(spend);
            for (product, quantity) in sold.get(&o.id).into_iter().flatten() {
                cmd.arg(product.to_string()).arg(*quantity);
            }
            pipe.add_command(cmd);
        }
        counted(self.run::<Vec<i64>>(&pipe).await?)
    }

    /// Apply each of `ids` (at most [`CHUNK`]) that was processed.
    async fn apply_refunds(&self, tenant: TenantScope, ids: &[Uuid], force: bool) -> Result<u64, Miss> {
        let refunds: Vec<(Uuid, Uuid, String, i64, DateTime<Utc>)> = tenant
            .find::<refund::Entity>()
            .select_only()
            .columns([
                refund::Column::Id,
                refund::Column::OrderId,
                refund::Column::Currency,
                refund::Column::Amount,
                refund::Column::UpdatedAt,
            ])
            .filter(refund::Column::Id.is_in(ids.iter().copied()))
            .filter(refund::Column::Status.eq(PROCESSED))
            .into_tuple()
            .all(&self.db)
            .await?;
        if refunds.is_empty() {
            return Ok(0);
        }
        let order_ids: Vec<Uuid> = refunds.iter().map(|r| r.1).collect();
        let orders: HashMap<Uuid, Settled> =
            self.settled(tenant, &order_ids).await?.into_iter().map(|o| (o.id, o)).collect();
        let refunded = self.refunded(tenant, &order_ids).await?;
        let script = format!("{CONTRIBUTE}{APPLY_REFUND}");
        let mut pipe = redis::pipe();
        for (id, order_id, currency, amount, at) in &refunds {
            let Some(o) = orders.get(order_id) else { continue };
            let spend = if o.status == COMPLETED {
                (o.total - refunded.get(order_id).copied().unwrap_or(0)).to_string()
            } else {
                String::new()
            };
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(&script).arg(6);
            cmd.arg(self.key(tenant, "built")).arg(self.key(tenant, "applied"));
            cmd.arg(self.day(tenant, 'd', at.date_naive())).arg(self.key(tenant, "contrib"));
            cmd.arg(self.key(tenant, &format!("spend:{}", o.currency)));
            cmd.arg(self.key(tenant, &format!("spend_orders:{}", o.currency)));
            cmd.arg(if force { "1" } else { "0" }).arg(id.to_string()).arg(currency).arg(*amount);
            cmd.arg(order_id.to_string()).arg(o.customer.to_string()).arg(spend);
            pipe.add_command(cmd);
        }
        counted(self.run::<Vec<i64>>(&pipe).await?)
    }

    /// Apply the fact of one event (an order completed or failed, a refund
    /// processed) once, however often it is called; a tenant whose state is
    /// not built is rebuilt instead (which applies it too).
    /// While another rebuild holds the lock this waits for it (up to 5 s,
    /// then `Busy`).
    pub async fn apply(&self, tenant: TenantScope, fact: Fact) -> Result<(), Miss> {
        for _ in 0..100 {
            let applied = match fact {
                Fact::Order(id) => self.apply_orders(tenant, &[id], false).await,
                Fact::Refund(id) => self.apply_refunds(tenant, &[id], false).await,
            };
            match applied {
                Err(Miss::NotBuilt) => match self.build(tenant).await {
                    Err(Miss::Busy) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                    built => return built.map(|_| ()),
                },
                other => return other.map(|_| ()),
            }
        }
        Err(Miss::Busy)
    }

    /// Drop the tenant's state and build it again from the tables: every
    /// order that completed or failed and every refund processed.
    pub async fn build(&self, tenant: TenantScope) -> Result<KpiRebuild, Miss> {
        let lock = self.key(tenant, "lock");
        let token = Uuid::now_v7().to_string();
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&lock).arg(&token).arg("NX").arg("EX").arg(LOCK_SECONDS);
        let (locked,): (Option<String>,) = self.run(&pipe).await?;
        if locked.is_none() {
            return Err(Miss::Busy);
        }
        let built = self.rebuild_locked(tenant, &lock).await;
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL").arg(UNLOCK).arg(1).arg(&lock).arg(&token).ignore();
        let unlocked = self.run::<()>(&pipe).await;
        let built = built?;
        unlocked?;
        Ok(built)
    }

    async fn rebuild_locked(&self, tenant: TenantScope, lock: &str) -> Result<KpiRebuild, Miss> {
        let built = self.key(tenant, "built");
        self.run::<()>(redis::pipe().cmd("DEL").arg(&built).ignore()).await?;
        // Every key of the tenant but the lock, found by pattern.
        let pattern = format!("{}*", glob_escape(&self.key(tenant, "")));
        let mut cursor = 0u64;
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
            let ((next, keys),): ((u64, Vec<String>),) = self.run(&pipe).await?;
            let keys: Vec<String> = keys.into_iter().filter(|k| k != lock).collect();
            if !keys.is_empty() {
                self.run::<()>(redis::pipe().cmd("DEL").arg(keys).ignore()).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut rebuilt = KpiRebuild { backend: "redis".into(), orders: 0, refunds: 0 };
        let mut after: Option<Uuid> = None;
        loop {
            let mut query = tenant
                .find::<order::Entity>()
                .select_only()
                .column(order::Column::Id)
                .filter(order::Column::Status.is_in([COMPLETED, FAILED]))
                .order_by(order::Column::Id, Order::Asc)
                .limit(CHUNK);
            if let Some(after) = after {
                query = query.filter(order::Column::Id.gt(after));
            }
            let ids: Vec<Uuid> = query.into_tuple().all(&self.db).await?;
            let Some(last) = ids.last().copied() else { break };
            self.apply_orders(tenant, &ids, true).await?;
            rebuilt.orders += ids.len() as i64;
            after = Some(last);
        }
        let mut after: Option<Uuid> = None;
        loop {
            let mut query = tenant
                .find::<refund::Entity>()
                .select_only()
                .column(refund::Column::Id)
                .filter(refund::Column::Status.eq(PROCESSED))
                .order_by(refund::Column::Id, Order::Asc)
                .limit(CHUNK);
            if let Some(after) = after {
                query = query.filter(refund::Column::Id.gt(after));
            }
            let ids: Vec<Uuid> = query.into_tuple().all(&self.db).await?;
            let Some(last) = ids.last().copied() else { break };
            self.apply_refunds(tenant, &ids, true).await?;
            rebuilt.refunds += ids.len() as i64;
            after = Some(last);
        }
        self.run::<()>(redis::pipe().cmd("SET").arg(&built).arg(1).ignore()).await?;
        Ok(rebuilt)
    }

    /// The days `from..=to` from Redis; `NotBuilt` without a built state.
    async fn days(&self, tenant: TenantScope, from: NaiveDate, to: NaiveDate) -> Result<Vec<Kpis>, Miss> {
        let days: Vec<NaiveDate> = from.iter_days().take_while(|d| *d <= to).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(self.key(tenant, "built"));
        for day in &days {
            pipe.cmd("HGETALL").arg(self.day(tenant, 'd', *day));
            pipe.cmd("SCARD").arg(self.day(tenant, 'c', *day));
        }
        let reply: Vec<redis::Value> = self.run(&pipe).await?;
        let mut reply = reply.into_iter();
        if !matches!(reply.next().map(redis::from_redis_value::<bool>), Some(Ok(true))) {
            return Err(Miss::NotBuilt);
        }
        let mut out = Vec::with_capacity(days.len());
        for day in days {
            let mut next = || reply.next().unwrap_or(redis::Value::Nil);
            let fields: HashMap<String, i64> = redis::from_redis_value(next()).map_err(unexpected)?;
            let customers: i64 = redis::from_redis_value(next()).map_err(unexpected)?;
            out.push(day_kpis(day, &fields, customers));
        }
        Ok(out)
    }

    /// The first `limit` members of the sorted set `board`, largest score
    /// first and ties by id, with their ranks and counts in `counts`.
    async fn board(
        &self,
        tenant: TenantScope,
        board: &str,
        counts: &str,
        limit: u64,
    ) -> Result<Vec<(Uuid, i64, i64, i64)>, Miss> {
        let (board, counts) = (self.key(tenant, board), self.key(tenant, counts));
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(self.key(tenant, "built"));
        pipe.cmd("ZREVRANGE").arg(&board).arg(0).arg(limit - 1).arg("WITHSCORES");
        let (built, top): (bool, Vec<(String, f64)>) = self.run(&pipe).await?;
        if !built {
            return Err(Miss::NotBuilt);
        }
        let Some(last) = top.last().map(|t| t.1) else { return Ok(Vec::new()) };
        // Redis orders equal scores by member, descending here: take the
        // lowest ids among those tied with the last one instead.
        let mut entries: Vec<(String, f64)> = top.into_iter().filter(|t| t.1 > last).collect();
        let want = limit as usize - entries.len();
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGEBYSCORE")
            .arg(&board)
            .arg(last)
            .arg(last)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(want);
        let (tied,): (Vec<(String, f64)>,) = self.run(&pipe).await?;
        entries.extend(tied);
        let mut entries: Vec<(Uuid, i64)> = entries
            .into_iter()
            .map(|(member, score)| Ok((Uuid::parse_str(&member).map_err(unexpected)?, score as i64)))
            .collect::<Result<_, Miss>>()?;
        entries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(&counts).arg(entries.iter().map(|e| e.0.to_string()).collect::<Vec<_>>());
        let (orders,): (Vec<Option<i64>>,) = self.run(&pipe).await?;
        let ranks = ranks(&entries.iter().map(|e| e.1).collect::<Vec<_>>());
        Ok(entries
            .into_iter()
            .zip(ranks)
            .zip(orders)
            .map(|(((id, score), rank), orders)| (id, rank, score, orders.unwrap_or(0)))
            .collect())
    }

    async fn rank(&self, tenant: TenantScope, customer: Uuid, currency: &str) -> Result<CustomerSpend, Miss> {
        let board = self.key(tenant, &format!("spend:{currency}"));
        let member = customer.to_string();
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(self.key(tenant, "built"));
        pipe.cmd("ZSCORE").arg(&board).arg(&member);
        pipe.cmd("HGET").arg(self.key(tenant, &format!("spend_orders:{currency}"))).arg(&member);
        let (built, score, orders): (bool, Option<f64>, Option<i64>) = self.run(&pipe).await?;
        if !built {
            return Err(Miss::NotBuilt);
        }
        let Some(score) = score else {
            return Ok(CustomerSpend { customer_id: customer, rank: None, spend: 0, orders: 0 });
        };
        let mut pipe = redis::pipe();
        pipe.cmd("ZCOUNT").arg(&board).arg(format!("({score}")).arg("+inf");
        let (above,): (i64,) = self.run(&pipe).await?;
        Ok(CustomerSpend {
            customer_id: customer,
            rank: Some(above + 1),
            spend: score as i64,
            orders: orders.unwrap_or(0),
        })
    }

    /// What Redis answered, or else (logged) what the database answers.
    async fn or_exact<T>(
        &self,
        what: &str,
        redis: Result<T, Miss>,
        exact: impl std::future::Future<Output = ApiResult<T>>,
    ) -> ApiResult<T> {
        match redis {
            Ok(answer) => return Ok(answer),
            Err(Miss::Db(err)) => return Err(err),
            Err(Miss::NotBuilt) => {}
            Err(Miss::Busy) => {}
            Err(Miss::Down(err)) => {
                tracing::warn!(error = %err, what, "KPIs: Redis unusable, answering from the database");
            }
        }
        exact.await
    }
}

/// The Lua replies of a pipeline of applies: how many counted now;
/// `NotBuilt` when a script found no built state.
fn counted(replies: Vec<i64>) -> Result<u64, Miss> {
    if replies.contains(&-1) {
        return Err(Miss::NotBuilt);
    }
    Ok(replies.into_iter().filter(|r| *r == 1).count() as u64)
}

fn unexpected(err: impl std::fmt::Display) -> Miss {
    Miss::Down(format!("unexpected reply: {err}"))
}

/// `key` with the glob characters of SCAN MATCH escaped.
fn glob_escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The KPIs of `day` from its hash and its number of customers.
fn day_kpis(day: NaiveDate, fields: &HashMap<String, i64>, customers: i64) -> Kpis {
    let get = |name: &str| fields.get(name).copied().unwrap_or(0);
    let mut currencies: BTreeMap<String, CurrencyKpis> = BTreeMap::new();
    for name in fields.keys() {
        if let Some((kind, currency)) = name.split_once(':')
            && matches!(kind, "o" | "n")
        {
            currencies.entry(currency.to_owned()).or_insert_with(|| {
                let (orders, gross) = (get(&format!("o:{currency}")), get(&format!("g:{currency}")));
                let refunded = get(&format!("r:{currency}"));
                CurrencyKpis {
                    currency: currency.to_owned(),
                    orders,
                    gross,
                    refunds: get(&format!("n:{currency}")),
                    refunded,
                    revenue: gross - refunded,
                    average_order_value: if orders > 0 { gross / orders } else { 0 },
                }
            });
        }
    }
    Kpis {
        from: midnight(day),
        to: midnight(day) + chrono::Duration::days(1),
        orders: get("orders"),
        failed: get("failed"),
        unique_customers: customers,
        refunds: get("refunds"),
        currencies: currencies.into_values().collect(),
    }
}

/// What one event adds to the KPIs.
#[derive(Clone, Copy, Debug)]
pub enum Fact {
    /// An order completed or failed.
    Order(Uuid),
    /// A refund was processed.
    Refund(Uuid),
}

#[async_trait::async_trait]
impl Analytics for RedisAnalytics {
    async fn daily_kpis(&self, tenant: TenantScope, from: NaiveDate, to: NaiveDate) -> ApiResult<Vec<Kpis>> {
        super::kpis::check_range(from, to)?;
        let redis = self.days(tenant, from, to).await;
        self.or_exact("daily KPIs", redis, self.exact.daily_kpis(tenant, from, to)).await
    }

    async fn kpis(&self, tenant: TenantScope, from: DateTime<Utc>, to: DateTime<Utc>) -> ApiResult<Kpis> {
        self.exact.kpis(tenant, from, to).await
    }

    async fn top_customers(
        &self,
        tenant: TenantScope,
        currency: &str,
        limit: u64,
    ) -> ApiResult<Vec<CustomerSpend>> {
        let redis = self
            .board(tenant, &format!("spend:{currency}"), &format!("spend_orders:{currency}"), limit)
            .await
            .map(|entries| {
                entries
                    .into_iter()
                    .map(|(customer_id, rank, spend, orders)| CustomerSpend {
                        customer_id,
                        rank: Some(rank),
                        spend,
                        orders,
                    })
                    .collect()
            });
        self.or_exact("top customers", redis, self.exact.top_customers(tenant, currency, limit)).await
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
        let redis = self.rank(tenant, customer, currency).await;
        self.or_exact("customer rank", redis, self.exact.customer_rank(tenant, customer, currency)).await
    }

    async fn bestsellers(&self, tenant: TenantScope, limit: u64) -> ApiResult<Vec<ProductSales>> {
        let redis = self.board(tenant, "sold", "sold_orders", limit).await.map(|entries| {
            entries
                .into_iter()
                .map(|(product_id, rank, quantity, orders)| ProductSales {
                    product_id,
                    rank,
                    quantity,
                    orders,
                })
                .collect()
        });
        self.or_exact("bestsellers", redis, self.exact.bestsellers(tenant, limit)).await
    }

    async fn rebuild(&self, tenant: TenantScope) -> ApiResult<KpiRebuild> {
        match self.build(tenant).await {
            Ok(rebuilt) => Ok(rebuilt),
            Err(Miss::Db(err)) => Err(err),
            Err(Miss::Busy) => Err(ApiError::new(
                Code::Conflict,
                "a rebuild of this tenant's KPIs is under way; retry later",
            )),
            Err(Miss::NotBuilt) | Err(Miss::Down(_)) => Err(ApiError::unavailable(anyhow::anyhow!(
                "Redis is unavailable; the KPIs cannot be rebuilt now"
            ))),
        }
    }
}

/// Applies `order.completed`, `order.failed` and `order.refunded` to the
/// Redis state, one durable job per event: retried while Redis is down.
pub struct KpiListener(pub std::sync::Arc<RedisAnalytics>);

#[async_trait::async_trait]
impl Listener for KpiListener {
    fn name(&self) -> &'static str {
        "orders.kpis"
    }

    fn wants(&self, event_type: &str) -> bool {
        [super::ORDER_COMPLETED.name, super::ORDER_FAILED.name, super::ORDER_REFUNDED.name]
            .contains(&event_type)
    }

    async fn handle(&self, _: &AppState, event: &entity::event::Model) -> Result<(), JobError> {
        let id = event
            .data
            .get("id")
            .and_then(|v| v.as_str())
            .and_then(|v| Uuid::parse_str(v).ok())
            .ok_or_else(|| JobError::Fail("the event has no id".to_owned()))?;
        let fact =
            if event.event_type == super::ORDER_REFUNDED.name { Fact::Refund(id) } else { Fact::Order(id) };
        match self.0.apply(TenantScope::new(event.tenant_id), fact).await {
            Ok(()) => Ok(()),
            Err(Miss::Busy) => Err(JobError::Defer(Utc::now() + chrono::Duration::milliseconds(200))),
            Err(Miss::Db(err)) => Err(err.into()),
            Err(Miss::NotBuilt) => Err(JobError::retry("the KPIs of the tenant are not built")),
            Err(Miss::Down(err)) => Err(JobError::retry(format!("Redis: {err}"))),
        }
    }
}
