//! A minimal built-in general ledger behind the [`Ledger`] trait: balanced
//! journal entries posted in the caller's transaction (a goods receipt and
//! its accounting commit together or not at all). An external accounting
//! system would implement the same trait (`nexus::Parts::ledger`). It has
//! no feature key of its own: procurement's (`module.procurement`) gates it.

use std::sync::Arc;

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, DatabaseConnection, DatabaseTransaction, EntityTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::{scope, service_config::ServiceConfig};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, Problem},
    platform::{
        http::{ListRequest, Paged, Sort, Sorts, parse_sort},
        module::{Grant, Module, Setup},
        rbac::{Authorized, grants},
        tenancy::TenantScope,
    },
};
use entity::journal_entry;

grants! {
    LedgerRead => "ledger", "read", "module.procurement", ["admin", "manager"];
}

pub const INVENTORY: &str = "inventory";
pub const ACCOUNTS_PAYABLE: &str = "accounts_payable";

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq, async_graphql::SimpleObject)]
pub struct JournalLine {
    #[schema(example = "inventory")]
    pub account: String,
    /// Minor units.
    pub debit: i64,
    pub credit: i64,
}

/// An entry to post; it must balance.
pub struct NewEntry {
    pub reference: String,
    pub memo: String,
    pub currency: String,
    pub lines: Vec<JournalLine>,
}

impl NewEntry {
    pub fn balanced(&self) -> bool {
        let debit: i64 = self.lines.iter().map(|l| l.debit).sum();
        let credit: i64 = self.lines.iter().map(|l| l.credit).sum();
        !self.lines.is_empty() && debit == credit && self.lines.iter().all(|l| l.debit >= 0 && l.credit >= 0)
    }
}

#[async_trait::async_trait]
pub trait Ledger: Send + Sync {
    /// Post a balanced entry in the caller's transaction; its id.
    async fn post(&self, txn: &DatabaseTransaction, tenant: TenantScope, entry: NewEntry) -> ApiResult<Uuid>;
    /// Posted entries, optionally of one reference.
    async fn entries(
        &self,
        tenant: TenantScope,
        reference: Option<String>,
        sort: Sort<journal_entry::Column>,
        list: &ListRequest,
    ) -> ApiResult<Paged<EntryView>>;
}

/// The built-in ledger: rows in `journal_entries`.
pub struct BuiltInLedger {
    db: DatabaseConnection,
}

impl BuiltInLedger {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[async_trait::async_trait]
impl Ledger for BuiltInLedger {
    async fn post(&self, txn: &DatabaseTransaction, tenant: TenantScope, entry: NewEntry) -> ApiResult<Uuid> {
        if !entry.balanced() {
            return Err(ApiError::internal(anyhow::anyhow!("unbalanced journal entry {}", entry.reference)));
        }
        let id = Uuid::now_v7();
        journal_entry::Entity::insert(journal_entry::ActiveModel {
            id: Set(id),
            tenant_id: Set(tenant.id()),
            reference: Set(entry.reference),
            memo: Set(entry.memo),
            currency: Set(entry.currency),
            lines: Set(json!(entry.lines)),
            created_at: Set(Utc::now()),
        })
        .exec_without_returning(txn)
        .await?;
        Ok(id)
    }

    async fn entries(
        &self,
        tenant: TenantScope,
        reference: Option<String>,
        sort: Sort<journal_entry::Column>,
        list: &ListRequest,
    ) -> ApiResult<Paged<EntryView>> {
        let condition =
            Condition::all().add_option(reference.map(|r| journal_entry::Column::Reference.eq(r)));
        let scope = tenant.find::<journal_entry::Entity>();
        let entries = list.fetch(&self.db, scope, condition, sort).await?;
        let views: ApiResult<Vec<EntryView>> = entries
            .data
            .into_iter()
            .map(|m| {
                let lines = serde_json::from_value(m.lines).map_err(|e| {
                    ApiError::internal(anyhow::anyhow!("journal entry {} has unreadable lines: {e}", m.id))
                })?;
                Ok(EntryView {
                    id: m.id,
                    lines,
                    reference: m.reference,
                    memo: m.memo,
                    currency: m.currency,
                    created_at: m.created_at,
                })
            })
            .collect();
        Ok(Paged { data: views?, meta: entries.meta })
    }
}

#[derive(Debug, Serialize, ToSchema, async_graphql::SimpleObject)]
#[graphql(name = "JournalEntry")]
pub struct EntryView {
    pub id: Uuid,
    #[schema(example = "purchase_order:0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11")]
    pub reference: String,
    pub memo: String,
    pub currency: String,
    pub lines: Vec<JournalLine>,
    pub created_at: DateTime<Utc>,
}

/// The ledger module: journal entries over REST, and the ledger other
/// modules post to.
pub struct LedgerModule {
    ledger: Arc<dyn Ledger>,
}

impl LedgerModule {
    /// The built-in ledger, or `ledger` when the build brings its own.
    pub fn new(setup: &Setup, ledger: Option<Arc<dyn Ledger>>) -> Self {
        Self { ledger: ledger.unwrap_or_else(|| Arc::new(BuiltInLedger::new(setup.db.clone()))) }
    }

    pub fn service(&self) -> Arc<dyn Ledger> {
        self.ledger.clone()
    }
}

impl Module for LedgerModule {
    fn name(&self) -> &'static str {
        "ledger"
    }

    fn tags(&self) -> &'static [(&'static str, &'static str)] {
        &[("ledger", "The built-in ledger's journal entries")]
    }

    fn routes(&self, cfg: &mut ServiceConfig) {
        cfg.app_data(web::Data::from(self.service())).service(scope("/ledger").service(list_entries));
    }

    fn graphql_data(&self, data: &mut async_graphql::Data, _tenant: Option<TenantScope>) {
        data.insert(self.service());
    }

    fn grants(&self) -> &'static [Grant] {
        GRANTS
    }
}

/// Journal entries: newest first unless sorted otherwise.
const ENTRY_SORTS: Sorts<journal_entry::Column> =
    Sorts { fields: &[("created_at", journal_entry::Column::CreatedAt)], default: "-created_at" };

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct EntryQuery {
        /// `-created_at` (the default, newest first) or `created_at`.
        #[param(pattern = "^-?created_at$")]
        sort: Option<String>,
        /// Exact reference, e.g. `purchase_order:<id>`.
        reference: Option<String>,
    }
}

/// Journal entries of the built-in ledger, newest first unless sorted otherwise.
#[utoipa::path(
    tag = "ledger",
    params(EntryQuery),
    responses(
        (status = 200, description = "A page of entries", body = Paged<EntryView>),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
    ),
    security(("bearer" = []))
)]
#[get("/entries")]
async fn list_entries(
    auth: Authorized<LedgerRead>,
    ledger: web::Data<dyn Ledger>,
    query: web::Query<EntryQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    let sort = parse_sort(q.sort.as_deref(), &ENTRY_SORTS)?;
    Ok(HttpResponse::Ok().json(ledger.entries(auth.tenant, q.reference, sort, &list).await?))
}

#[derive(async_graphql::SimpleObject)]
#[graphql(name = "JournalEntryPage")]
pub struct EntryPage {
    items: Vec<EntryView>,
    page_info: crate::platform::http::PageMeta,
}

#[derive(Default)]
pub struct Query;

#[async_graphql::Object(name = "LedgerQuery")]
impl Query {
    /// Journal entries, newest first (as `GET /api/v1/ledger/entries`).
    async fn ledger_entries(
        &self,
        ctx: &async_graphql::Context<'_>,
        reference: Option<String>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<EntryPage> {
        use crate::platform::graphql::{authorized, data, gql, list_request};
        let (_, principal) = authorized::<LedgerRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let sort = parse_sort(None, &ENTRY_SORTS).map_err(gql)?;
        let ledger = data::<Arc<dyn Ledger>>(ctx).map_err(gql)?;
        let paged = ledger.entries(principal.tenant, reference, sort, &list).await.map_err(gql)?;
        Ok(EntryPage { items: paged.data, page_info: paged.meta })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_balanced_entries_post() {
        let line = |account: &str, debit, credit| JournalLine { account: account.into(), debit, credit };
        let entry =
            |lines| NewEntry { reference: "r".into(), memo: "m".into(), currency: "EUR".into(), lines };
        assert!(entry(vec![line(INVENTORY, 500, 0), line(ACCOUNTS_PAYABLE, 0, 500)]).balanced());
        assert!(!entry(vec![line(INVENTORY, 500, 0), line(ACCOUNTS_PAYABLE, 0, 499)]).balanced());
        assert!(!entry(vec![]).balanced());
        assert!(!entry(vec![line(INVENTORY, -5, -5)]).balanced());
    }
}
