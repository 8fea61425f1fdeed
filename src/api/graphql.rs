//! GraphQL at `/graphql` (async-graphql): the same authentication, tenant
//! context, permissions and error codes as REST. The playground (GraphiQL)
//! and its assets are served by Nexus itself, so it works offline.

use actix_web::{
    FromRequest, HttpRequest, HttpResponse, dev::Payload, get, http::header, middleware::from_fn, post, web,
};
use async_graphql::{
    Context, MergedObject, Name, Object, Schema, SimpleObject,
    parser::types::{ExecutableDocument, Selection, SelectionSet},
};
use async_graphql_actix_web::GraphQLResponse;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    error::{ApiError, ApiResult, Code, FieldError},
    modules,
    platform::{
        audit::{
            graphql::Mutations,
            routes::{self as audit, AuditFilter, AuditLogView},
        },
        auth::{
            self, Principal,
            routes::CreateTokenRequest,
            service::{self as auth_service, IssuedToken, TokenView},
        },
        cors::{self, Origins},
        events,
        features::{
            Effective,
            routes::{GlobalToggle, Toggle, clear_for_all, clear_for_tenant, effective, set_for_tenant},
        },
        governance::{self, Governed},
        graphql::{Caller, authorized, caller, gql, list_request, operation, validated},
        http::{PageMeta, Validate, parse_json, parse_sort},
        idempotency,
        jobs::{
            LaneStats,
            routes::{self as jobs, JobView, ReplayRequest, Replayed},
            tracking_queued,
        },
        license::{
            Access, Assignment, LicenseView,
            routes::{self as license_routes, LicenseWithUsage},
        },
        rbac::{
            AuditRead, CorsWrite, EventsRead, FeaturesManage, FeaturesRead, FeaturesWrite, JobsManage,
            LicenseRead, LicenseWrite, LicensesManage, RolesWrite, TenantRead, UsersRead, UsersWrite,
        },
        state::AppState,
        users::{
            self, TenantView, USER_SORTS, UserFilter, UserView,
            routes::{self as user_routes, CreateUser},
        },
        webhooks::graphql::{WebhooksMutation, WebhooksQuery},
    },
};

pub type NexusSchema = Schema<Query, Mutation, Subscription>;

/// Every query field: the platform's and the modules'.
#[derive(MergedObject, Default)]
pub struct Query(PlatformQuery, GovernanceQuery, OperatorQuery, WebhooksQuery, modules::Query);

/// Every mutation.
#[derive(MergedObject, Default)]
pub struct Mutation(PlatformMutation, OperatorMutation, WebhooksMutation, modules::Mutation);

pub fn schema(state: &AppState) -> NexusSchema {
    Schema::build(Query::default(), Mutation::default(), Subscription)
        .data(state.clone())
        .limit_depth(state.config.graphql.max_depth)
        .limit_complexity(state.config.graphql.max_complexity)
        .extension(super::cost::QueryCost)
        .finish()
}

#[derive(SimpleObject)]
pub struct UserPage {
    items: Vec<UserView>,
    page_info: PageMeta,
}

#[derive(Default)]
pub struct PlatformQuery;

#[Object]
impl PlatformQuery {
    /// The caller.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<UserView> {
        let (state, principal) = caller(ctx).map_err(gql)?;
        let home = crate::platform::tenancy::TenantScope::new(principal.home_tenant_id);
        users::get(&state.db, home, principal.user_id).await.map_err(gql)
    }

    /// The tenant the caller acts in.
    async fn tenant(&self, ctx: &Context<'_>) -> async_graphql::Result<TenantView> {
        let (state, principal) = authorized::<TenantRead>(ctx).map_err(gql)?;
        users::tenant(&state.db, principal.tenant).await.map_err(gql)
    }

    /// Users of the tenant, newest first (as `GET /api/v1/users`).
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<UserPage> {
        let (state, principal) = authorized::<UsersRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let sort = parse_sort(None, &USER_SORTS).map_err(gql)?;
        let filter = UserFilter { email: None, disabled: None, sort };
        let paged = users::list(&state.db, principal.tenant, filter, &list).await.map_err(gql)?;
        Ok(UserPage { items: paged.data, page_info: paged.meta })
    }

    /// A user of the tenant (as `GET /api/v1/users/{id}`).
    async fn user(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<UserView> {
        let (state, principal) = authorized::<UsersRead>(ctx).map_err(gql)?;
        users::get(&state.db, principal.tenant, id).await.map_err(gql)
    }

    /// The tenant's audit trail, newest first (as `GET /api/v1/audit-logs`).
    #[allow(clippy::too_many_arguments)]
    async fn audit_logs(
        &self,
        ctx: &Context<'_>,
        user_id: Option<Uuid>,
        route: Option<String>,
        status: Option<i32>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<AuditLogPage> {
        let (state, principal) = authorized::<AuditRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let filter = AuditFilter { sort: None, user_id, route, status, from, to };
        let paged = audit::list_entries(&state.db, principal.tenant, filter, &list).await.map_err(gql)?;
        Ok(AuditLogPage { items: paged.data, page_info: paged.meta })
    }

    /// The caller's active tokens, newest first; never their values (as
    /// `GET /api/v1/auth/tokens`).
    async fn api_tokens(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<TokenView>> {
        let (state, principal) = caller(ctx).map_err(gql)?;
        auth_service::list_tokens(state, principal).await.map_err(gql)
    }

    /// The browser origins allowed to call the API for the tenant (as
    /// `GET /api/v1/cors-origins`).
    async fn cors_origins(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<String>> {
        let (state, principal) = authorized::<TenantRead>(ctx).map_err(gql)?;
        cors::origins_of(&state.db, principal.tenant.id()).await.map_err(|e| gql(e.into()))
    }
}

#[derive(SimpleObject)]
pub struct AuditLogPage {
    items: Vec<AuditLogView>,
    page_info: PageMeta,
}

/// `/graphql` passes the same authentication and governance (rate limits,
/// license, `feature.graphql`) as the REST API.
#[derive(Default)]
pub struct GovernanceQuery;

#[Object]
impl GovernanceQuery {
    /// The tenant's license: tier, state, dates and limits.
    async fn license(&self, ctx: &Context<'_>) -> async_graphql::Result<LicenseView> {
        let (state, principal) = authorized::<LicenseRead>(ctx).map_err(gql)?;
        let gov = &state.governance;
        let license = crate::platform::license::find_or_start(&state.db, &gov.tiers, principal.tenant.id())
            .await
            .map_err(gql)?;
        Ok(crate::platform::license::view(&license, &gov.tiers, chrono::Utc::now()))
    }

    /// Every module and feature key with its effective state, and why.
    async fn features(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Effective>> {
        let (state, principal) = authorized::<FeaturesRead>(ctx).map_err(gql)?;
        effective(state, principal.tenant.id()).await.map_err(gql)
    }
}

#[derive(Default)]
pub struct PlatformMutation;

#[Object]
impl PlatformMutation {
    /// Switch a module or feature key for the tenant, within its license,
    /// from `effectiveAt` (default now) until `expiresAt` (default until
    /// changed), as `PUT /api/v1/features/{key}`.
    async fn set_feature(
        &self,
        ctx: &Context<'_>,
        key: String,
        enabled: bool,
        effective_at: Option<DateTime<Utc>>,
        expires_at: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<Effective> {
        let (state, principal) = authorized::<FeaturesWrite>(ctx).map_err(gql)?;
        let toggle = Toggle { enabled, effective_at, expires_at };
        set_for_tenant(state, principal.tenant.id(), principal.user_id, &key, toggle).await.map_err(gql)
    }

    /// Remove the tenant's own toggle of a key (as `DELETE /api/v1/features/{key}`).
    async fn clear_feature(&self, ctx: &Context<'_>, key: String) -> async_graphql::Result<Effective> {
        let (state, principal) = authorized::<FeaturesWrite>(ctx).map_err(gql)?;
        clear_for_tenant(state, principal.tenant.id(), &key).await.map_err(gql)
    }

    /// Apply a signed license key (as `POST /api/v1/license/key`).
    async fn apply_license_key(&self, ctx: &Context<'_>, key: String) -> async_graphql::Result<LicenseView> {
        let (state, principal) = authorized::<LicenseWrite>(ctx).map_err(gql)?;
        let license =
            crate::platform::license::apply(state, principal.tenant.id(), &key).await.map_err(gql)?;
        Ok(crate::platform::license::view(&license, &state.governance.tiers, Utc::now()))
    }

    /// Create a user in the tenant, within the license's user limit (as
    /// `POST /api/v1/users`).
    async fn create_user(&self, ctx: &Context<'_>, input: CreateUser) -> async_graphql::Result<UserView> {
        let (state, principal) = authorized::<UsersWrite>(ctx).map_err(gql)?;
        validated(input)?.run(state, principal.tenant).await.map_err(gql)
    }

    /// Disable a user: their tokens are refused from the next request (as
    /// `POST /api/v1/users/{id}/disable`).
    async fn disable_user(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<UserView> {
        let (state, principal) = authorized::<UsersWrite>(ctx).map_err(gql)?;
        user_routes::set_disabled(principal, state, id, true).await.map_err(gql)
    }

    /// Re-enable a user (as `POST /api/v1/users/{id}/enable`).
    async fn enable_user(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<UserView> {
        let (state, principal) = authorized::<UsersWrite>(ctx).map_err(gql)?;
        user_routes::set_disabled(principal, state, id, false).await.map_err(gql)
    }

    /// Give a user a role (as `PUT /api/v1/users/{id}/roles/{role}`).
    async fn assign_role(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        role: String,
    ) -> async_graphql::Result<UserView> {
        let (state, principal) = authorized::<RolesWrite>(ctx).map_err(gql)?;
        user_routes::set_role(state, principal.tenant, id, &role, true).await.map_err(gql)
    }

    /// Take a role from a user (as `DELETE /api/v1/users/{id}/roles/{role}`).
    async fn remove_role(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        role: String,
    ) -> async_graphql::Result<UserView> {
        let (state, principal) = authorized::<RolesWrite>(ctx).map_err(gql)?;
        user_routes::set_role(state, principal.tenant, id, &role, false).await.map_err(gql)
    }

    /// Create a personal API token of the caller's; its value is in this
    /// answer only (as `POST /api/v1/auth/tokens`).
    async fn create_api_token(
        &self,
        ctx: &Context<'_>,
        input: CreateTokenRequest,
    ) -> async_graphql::Result<IssuedToken> {
        let (state, principal) = caller(ctx).map_err(gql)?;
        validated(input)?.run(state, principal).await.map_err(gql)
    }

    /// Revoke one of the caller's tokens, refused from the next request on
    /// every instance (as `DELETE /api/v1/auth/tokens/{id}`); `true`.
    async fn revoke_api_token(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<bool> {
        let (state, principal) = caller(ctx).map_err(gql)?;
        auth_service::revoke_token(state, principal, id).await.map_err(gql)?;
        Ok(true)
    }

    /// Replace the tenant's allowed browser origins, from the next request
    /// (as `PUT /api/v1/cors-origins`); the origins as stored.
    async fn set_cors_origins(
        &self,
        ctx: &Context<'_>,
        origins: Vec<String>,
    ) -> async_graphql::Result<Vec<String>> {
        let (state, principal) = authorized::<CorsWrite>(ctx).map_err(gql)?;
        let saved = validated(Origins { origins })?.save(state, principal.tenant.id()).await.map_err(gql)?;
        Ok(saved.origins)
    }
}

#[derive(SimpleObject)]
pub struct JobPage {
    items: Vec<JobView>,
    page_info: PageMeta,
}

/// What a super-admin operates across tenants: the job queue, any tenant's
/// license, global feature values (`/api/v1/admin/...` in REST).
#[derive(Default)]
pub struct OperatorQuery;

#[Object]
impl OperatorQuery {
    /// Jobs by status (`pending`, `running`, `completed` or `dead`, the
    /// default) and kind, newest first (as `GET /api/v1/admin/jobs`).
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        status: Option<String>,
        kind: Option<String>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<JobPage> {
        let (state, _) = authorized::<JobsManage>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let paged = jobs::jobs(state, status, kind, &list).await.map_err(gql)?;
        Ok(JobPage { items: paged.data, page_info: paged.meta })
    }

    /// Queue health per lane (as `GET /api/v1/admin/jobs/stats`).
    async fn job_stats(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<LaneStats>> {
        let (state, _) = authorized::<JobsManage>(ctx).map_err(gql)?;
        crate::platform::jobs::stats(&state.db).await.map_err(|e| gql(e.into()))
    }

    /// Any tenant's license and this month's usage (as
    /// `GET /api/v1/admin/tenants/{tenant_id}/license`).
    async fn tenant_license(
        &self,
        ctx: &Context<'_>,
        tenant_id: Uuid,
    ) -> async_graphql::Result<LicenseWithUsage> {
        let (state, _) = authorized::<LicensesManage>(ctx).map_err(gql)?;
        license_routes::of_tenant(state, tenant_id).await.map_err(gql)
    }
}

#[derive(Default)]
pub struct OperatorMutation;

#[Object]
impl OperatorMutation {
    /// Queue one dead job again with fresh attempts (as
    /// `POST /api/v1/admin/jobs/{id}/replay`).
    async fn replay_job(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Replayed> {
        let (state, _) = authorized::<JobsManage>(ctx).map_err(gql)?;
        jobs::replay_dead(state, id).await.map_err(gql)
    }

    /// Queue every dead job (of `kind`, when given) again (as
    /// `POST /api/v1/admin/jobs/replay`).
    async fn replay_jobs(&self, ctx: &Context<'_>, kind: Option<String>) -> async_graphql::Result<Replayed> {
        let (state, _) = authorized::<JobsManage>(ctx).map_err(gql)?;
        validated(ReplayRequest { kind })?.run(state).await.map_err(gql)
    }

    /// Set any tenant's tier, status, dates or limit overrides (as
    /// `PUT /api/v1/admin/tenants/{tenant_id}/license`).
    async fn assign_tenant_license(
        &self,
        ctx: &Context<'_>,
        tenant_id: Uuid,
        input: Assignment,
    ) -> async_graphql::Result<LicenseWithUsage> {
        let (state, _) = authorized::<LicensesManage>(ctx).map_err(gql)?;
        license_routes::assign_to(state, tenant_id, validated(input)?).await.map_err(gql)
    }

    /// Set a key's global value for every tenant: `state` is `enabled`,
    /// `disabled`, `deprecated` or `removed` (as
    /// `PUT /api/v1/admin/features/{key}`); `true`.
    async fn set_global_feature(
        &self,
        ctx: &Context<'_>,
        key: String,
        state: String,
        effective_at: Option<DateTime<Utc>>,
        expires_at: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<bool> {
        let (app, principal) = authorized::<FeaturesManage>(ctx).map_err(gql)?;
        let toggle = validated(GlobalToggle { state, effective_at, expires_at })?;
        toggle.run(app, &key, principal.user_id).await.map_err(gql)?;
        Ok(true)
    }

    /// Remove a key's global value: tenants follow the default again (as
    /// `DELETE /api/v1/admin/features/{key}`); `true`.
    async fn clear_global_feature(&self, ctx: &Context<'_>, key: String) -> async_graphql::Result<bool> {
        let (state, _) = authorized::<FeaturesManage>(ctx).map_err(gql)?;
        clear_for_all(state, &key).await.map_err(gql)?;
        Ok(true)
    }
}

/// Live events over GraphQL (graphql-transport-ws at `/graphql/ws`).
pub struct Subscription;

/// An event, as a webhook receives it.
#[derive(SimpleObject)]
#[graphql(name = "Event")]
pub struct EventMessage {
    id: Uuid,
    /// The event type, e.g. `product.created`.
    #[graphql(name = "type")]
    event_type: String,
    tenant_id: Uuid,
    timestamp: DateTime<Utc>,
    data: serde_json::Value,
}

#[async_graphql::Subscription]
impl Subscription {
    /// The tenant's events as they are committed: the stream
    /// `GET /api/v1/events` serves, with the same permission (`events:read`).
    /// `types` filters (`["product.*", "order.paid"]`; all when absent);
    /// `after` resumes after an event id, replaying what was committed
    /// since. It ends when the token is revoked or the account disabled.
    async fn events(
        &self,
        ctx: &Context<'_>,
        types: Option<Vec<String>>,
        after: Option<Uuid>,
    ) -> async_graphql::Result<impl futures_util::Stream<Item = EventMessage> + use<>> {
        use futures_util::StreamExt;
        let (state, principal) = authorized::<EventsRead>(ctx).map_err(gql)?;
        let types = types.map(|t| t.join(","));
        let patterns = events::routes::patterns(&state.event_types, types.as_deref()).map_err(gql)?;
        let stream = events::routes::tenant_events(state, principal, patterns, after).await.map_err(gql)?;
        Ok(stream.filter_map(|item| async move {
            match item {
                events::routes::Item::Event(e) => Some(EventMessage {
                    id: e.id,
                    event_type: e.event_type.clone(),
                    tenant_id: e.tenant_id,
                    timestamp: e.occurred_at,
                    data: e.data.clone(),
                }),
                events::routes::Item::Beat => None,
            }
        }))
    }
}

/// `/graphql`'s way to its handler: authentication, governance,
/// idempotency, as one middleware (see [`super::chain`]).
async fn chain(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    auth::middleware(req, |req| {
        governance::middleware(req, |req| idempotency::middleware(req, |req| next.call(req)))
    })
    .await
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/graphql")
            .wrap(from_fn(chain))
            .service(execute)
            .service(subscribe)
            .service(playground)
            .service(asset),
    );
}

/// `/graphql/ws`: subscriptions over a WebSocket (the graphql-transport-ws
/// protocol, and the older graphql-ws). The caller is who the
/// `connection_init` payload's `Authorization` (`Bearer <token>`, with an
/// optional `X-Tenant-ID`) names, since browsers cannot set headers on a
/// WebSocket; else the upgrade request's own `Authorization` header. The
/// tenant's `feature.graphql` must be on, as for `POST /graphql`.
#[get("/ws")]
async fn subscribe(
    req: HttpRequest,
    state: web::Data<AppState>,
    schema: web::Data<NexusSchema>,
    payload: web::Payload,
) -> actix_web::Result<HttpResponse> {
    let upgraded =
        actix_web::HttpMessage::extensions(&req).get::<std::rc::Rc<Principal>>().map(|p| (**p).clone());
    let state = state.into_inner();
    let on_init = move |init: serde_json::Value| async move {
        let field = |name: &str| {
            init.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.as_str())
        };
        let principal = match field("authorization") {
            Some(value) => auth::authenticate_value(&state, value, field("x-tenant-id")).await,
            None => upgraded.ok_or_else(|| {
                ApiError::new(
                    Code::Unauthenticated,
                    "send `Authorization: Bearer <token>` in connection_init",
                )
            }),
        }
        .map_err(gql)?;
        let governed = governance::for_stream(&state, &principal).await.map_err(gql)?;
        governed.require(&state.governance, "feature.graphql").map_err(gql)?;
        let mut data = async_graphql::Data::default();
        data.insert((*state).clone());
        state.modules.graphql_data(&mut data, Some(principal.tenant));
        data.insert(governed);
        data.insert(Caller(Ok(principal)));
        Ok(data)
    };
    async_graphql_actix_web::GraphQLSubscription::new(Schema::clone(&schema))
        .on_connection_init(on_init)
        .start(&req, payload)
}

/// Whether the document runs a mutation (a read-only license refuses it).
fn has_mutation(doc: &ExecutableDocument) -> bool {
    doc.operations.iter().any(|(_, op)| op.node.ty == async_graphql::parser::types::OperationType::Mutation)
}

/// The largest body an anonymous caller may send: introspection fits many
/// times over, and nothing bigger is read before the caller is known.
const ANONYMOUS_MAX_BODY: usize = 16 * 1024;

#[post("")]
async fn execute(
    req: HttpRequest,
    state: web::Data<AppState>,
    schema: web::Data<NexusSchema>,
    payload: web::Payload,
) -> ApiResult<GraphQLResponse> {
    let caller =
        Principal::from_request(&req, &mut Payload::None).into_inner().map_err(|e| (e.code, e.detail));
    let limit = if caller.is_ok() { state.config.http.max_body_bytes } else { ANONYMOUS_MAX_BODY };
    let (request, doc) = read_request(&req, payload, limit).await?;
    let mutations =
        doc.as_ref().map(|doc| Mutations::of(doc, request.operation_name.as_deref(), &request.variables));
    let Some(mutations) = mutations.filter(|m| !m.is_empty()) else {
        return run(&req, &state, &schema, request, caller, doc.as_ref()).await.map(Into::into);
    };
    // As REST's audit step: the entries are written once the change is done,
    // then the job lanes the change queued into are woken.
    tracking_queued(async {
        let response = run(&req, &state, &schema, request, caller, doc.as_ref()).await;
        mutations.record(&state, &req, response.as_ref()).await;
        state.wakeup.wake();
        response.map(Into::into)
    })
    .await
}

/// Executes a request the caller may make.
async fn run(
    req: &HttpRequest,
    state: &AppState,
    schema: &NexusSchema,
    mut request: async_graphql::Request,
    caller: Result<Principal, (Code, String)>,
    doc: Option<&ExecutableDocument>,
) -> ApiResult<async_graphql::Response> {
    // The modules' services, and batch loaders within the caller's tenant.
    state.modules.graphql_data(&mut request.data, caller.as_ref().ok().map(|p| p.tenant));
    if caller.is_ok() {
        let governed = Governed::of(req)?;
        governed.require(&state.governance, "feature.graphql")?;
        if let Access::ReadOnly(code) = governed.access(&state.governance)
            && doc.is_some_and(has_mutation)
        {
            return Err(ApiError::new(code, "the license allows reads only: no mutations"));
        }
        request = request.data(Governed::clone(&governed));
    }
    let operation = request.operation_name.clone();
    let mut response = schema.execute(request.data(Caller(caller))).await;
    if let Some(doc) = doc {
        in_selection_order(&mut response.data, doc, operation.as_deref());
    }
    Ok(response)
}

/// Puts every object of the answer in the order its fields were selected,
/// as the GraphQL specification asks (section 7.1.2): async-graphql
/// resolves sibling fields concurrently and keeps them in the order they
/// finished, so `{ me tenant }` could come back as `tenant`, `me`.
fn in_selection_order(data: &mut async_graphql::Value, doc: &ExecutableDocument, name: Option<&str>) {
    if let Some(op) = operation(doc, name) {
        reorder(data, &[&op.selection_set.node], doc);
    }
}

fn reorder(value: &mut async_graphql::Value, sets: &[&SelectionSet], doc: &ExecutableDocument) {
    use async_graphql::Value;
    match value {
        Value::Object(map) => {
            let mut selected: Vec<(&Name, Vec<&SelectionSet>)> = Vec::new();
            for set in sets {
                collect(set, doc, &mut selected);
            }
            let mut rest = std::mem::take(map);
            for (key, sub) in selected {
                if let Some(mut field) = rest.shift_remove(key) {
                    reorder(&mut field, &sub, doc);
                    map.insert(key.clone(), field);
                }
            }
            map.extend(rest);
        }
        Value::List(items) => items.iter_mut().for_each(|item| reorder(item, sets, doc)),
        _ => {}
    }
}

/// The response keys of a selection set in order, fragments spread in
/// place, each with the selection sets asking for it (merged, as the
/// executor merges them).
fn collect<'a>(
    set: &'a SelectionSet,
    doc: &'a ExecutableDocument,
    out: &mut Vec<(&'a Name, Vec<&'a SelectionSet>)>,
) {
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => {
                let key = &field.node.response_key().node;
                let sub = &field.node.selection_set.node;
                match out.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, sets)) => sets.push(sub),
                    None => out.push((key, vec![sub])),
                }
            }
            Selection::FragmentSpread(spread) => {
                if let Some(fragment) = doc.fragments.get(&spread.node.fragment_name.node) {
                    collect(&fragment.node.selection_set.node, doc, out);
                }
            }
            Selection::InlineFragment(fragment) => collect(&fragment.node.selection_set.node, doc, out),
        }
    }
}

/// A GraphQL request as JSON, under the input rules REST has: JSON only
/// (415; multipart too, since no field takes an upload), at most `limit`
/// bytes (413, refused before reading when `Content-Length` says so),
/// strings free of NUL in the body and in the document's arguments (400
/// `invalid_string`).
/// The parsed document comes along when it parses (when not, the schema
/// reports why as usual).
async fn read_request(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> ApiResult<(async_graphql::Request, Option<ExecutableDocument>)> {
    use futures_util::StreamExt;
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.starts_with("multipart/") {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "multipart bodies are not accepted: no GraphQL field takes a file upload; send application/json",
        ));
    }
    if !content_type.starts_with("application/json") {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "send the GraphQL request as application/json",
        ));
    }
    let too_large = || ApiError::new(Code::PayloadTooLarge, format!("the body is larger than {limit} bytes"));
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(Code::BadRequest, e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let parsed: GraphqlBody = parse_json(&body)?;
    let doc = async_graphql::parser::parse_query(&parsed.query).ok();
    if doc.as_ref().is_some_and(document_has_forbidden) {
        let mut err = ApiError::new(
            Code::InvalidString,
            "strings must not contain control characters other than tab and line breaks",
        );
        err.errors.push(FieldError::new("query", "a string argument contains a control character"));
        return Err(err);
    }
    let mut request = async_graphql::Request::new(parsed.query);
    if let Some(name) = parsed.operation_name {
        request = request.operation_name(name);
    }
    if let Some(variables) = parsed.variables {
        request = request.variables(async_graphql::Variables::from_json(variables));
    }
    Ok((request, doc))
}

/// The body of a GraphQL request (graphql-over-http).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphqlBody {
    query: String,
    operation_name: Option<String>,
    variables: Option<serde_json::Value>,
}

impl Validate for GraphqlBody {}

/// Whether a string argument of the document breaks the character rule
/// (`"a\u0000b"` in the query text): refused as in variables and REST bodies.
fn document_has_forbidden(doc: &ExecutableDocument) -> bool {
    use async_graphql::Positioned;
    use async_graphql_value::Value;
    fn bad(value: &Value) -> bool {
        match value {
            Value::String(s) => s.chars().any(crate::platform::validate::forbidden_char),
            Value::List(items) => items.iter().any(bad),
            Value::Object(fields) => {
                fields.iter().any(|(k, v)| bad(v) || k.chars().any(crate::platform::validate::forbidden_char))
            }
            _ => false,
        }
    }
    fn in_set(set: &Positioned<SelectionSet>) -> bool {
        set.node.items.iter().any(|item| match &item.node {
            Selection::Field(field) => {
                let f = &field.node;
                f.arguments.iter().any(|(_, v)| bad(&v.node))
                    || f.directives.iter().any(|d| d.node.arguments.iter().any(|(_, v)| bad(&v.node)))
                    || in_set(&f.selection_set)
            }
            Selection::InlineFragment(fragment) => in_set(&fragment.node.selection_set),
            Selection::FragmentSpread(_) => false,
        })
    }
    doc.operations.iter().any(|(_, op)| {
        in_set(&op.node.selection_set)
            || op
                .node
                .variable_definitions
                .iter()
                .any(|d| d.node.default_value.as_ref().is_some_and(|v| bad(&v.node.clone().into_value())))
    }) || doc.fragments.values().any(|f| in_set(&f.node.selection_set))
}

#[get("")]
async fn playground() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(include_str!("../../assets/graphiql/index.html"))
}

#[get("/assets/{file}")]
async fn asset(file: web::Path<String>) -> HttpResponse {
    let (body, content_type): (&'static [u8], &str) = match file.as_str() {
        "graphiql.min.js" => (include_bytes!("../../assets/graphiql/graphiql.min.js"), "text/javascript"),
        "graphiql.min.css" => (include_bytes!("../../assets/graphiql/graphiql.min.css"), "text/css"),
        "react.production.min.js" => {
            (include_bytes!("../../assets/graphiql/react.production.min.js"), "text/javascript")
        }
        "react-dom.production.min.js" => {
            (include_bytes!("../../assets/graphiql/react-dom.production.min.js"), "text/javascript")
        }
        _ => return actix_web::ResponseError::error_response(&ApiError::not_found("asset")),
    };
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=86400"))
        .body(body)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use async_graphql::Schema;

    use super::{Mutation, Query, Subscription};

    /// Every REST operation (by operation id) and the GraphQL field that
    /// does the same, as `Type.field`.
    const PARITY: &[(&str, &str)] = &[
        ("me", "Query.me"),
        ("current_tenant", "Query.tenant"),
        ("list_users", "Query.users"),
        ("get_user", "Query.user"),
        ("create_user", "Mutation.createUser"),
        ("disable_user", "Mutation.disableUser"),
        ("enable_user", "Mutation.enableUser"),
        ("assign_role", "Mutation.assignRole"),
        ("remove_role", "Mutation.removeRole"),
        ("list_audit_logs", "Query.auditLogs"),
        ("get_license", "Query.license"),
        ("apply_key", "Mutation.applyLicenseKey"),
        ("list_features", "Query.features"),
        ("set_feature", "Mutation.setFeature"),
        ("clear_feature", "Mutation.clearFeature"),
        ("list_endpoints", "Query.webhookEndpoints"),
        ("get_endpoint", "Query.webhookEndpoint"),
        ("event_types", "Query.webhookEventTypes"),
        ("create_endpoint", "Mutation.createWebhookEndpoint"),
        ("update_endpoint", "Mutation.updateWebhookEndpoint"),
        ("delete_endpoint", "Mutation.deleteWebhookEndpoint"),
        ("rotate_secret", "Mutation.rotateWebhookSecret"),
        ("send_test", "Mutation.sendWebhookTest"),
        ("resend_delivery", "Mutation.resendWebhookDelivery"),
        ("recover_deliveries", "Mutation.recoverWebhookDeliveries"),
        ("list_deliveries", "WebhookEndpoint.deliveries"),
        ("list_attempts", "WebhookDelivery.attemptLog"),
        ("list_products", "Query.products"),
        ("get_product", "Query.product"),
        ("create_product", "Mutation.createProduct"),
        ("update_product", "Mutation.updateProduct"),
        ("list_warehouses", "Query.warehouses"),
        ("get_warehouse", "Query.warehouse"),
        ("create_warehouse", "Mutation.createWarehouse"),
        ("list_levels", "Query.stockLevels"),
        ("set_reorder", "Mutation.setReorder"),
        ("recommendations", "Query.reorderRecommendations"),
        ("list_movements", "Query.stockMovements"),
        ("adjust", "Mutation.adjustStock"),
        ("transfer", "Mutation.transferStock"),
        ("reserve", "Mutation.reserveStock"),
        ("get_reservation", "Query.reservation"),
        ("commit_reservation", "Mutation.commitReservation"),
        ("release_reservation", "Mutation.releaseReservation"),
        ("list_vendors", "Query.vendors"),
        ("get_vendor", "Query.vendor"),
        ("create_vendor", "Mutation.createVendor"),
        ("update_vendor", "Mutation.updateVendor"),
        ("delete_vendor", "Mutation.deleteVendor"),
        ("list_purchase_orders", "Query.purchaseOrders"),
        ("get_purchase_order", "Query.purchaseOrder"),
        ("create_purchase_order", "Mutation.createPurchaseOrder"),
        ("submit_purchase_order", "Mutation.transitionPurchaseOrder"),
        ("approve_purchase_order", "Mutation.transitionPurchaseOrder"),
        ("cancel_purchase_order", "Mutation.transitionPurchaseOrder"),
        ("close_purchase_order", "Mutation.transitionPurchaseOrder"),
        ("receive_goods", "Mutation.receiveGoods"),
        ("list_entries", "Query.ledgerEntries"),
        ("list_customers", "Query.customers"),
        ("list_orders", "Query.orders"),
        ("order_kpis", "Query.orderKpis"),
        ("order_kpis_realtime", "Query.orderKpisRealtime"),
        ("rebuild_order_kpis", "Mutation.rebuildOrderKpis"),
        ("top_customers", "Query.topCustomers"),
        ("customer_rank", "Query.customerRank"),
        ("bestsellers", "Query.bestsellers"),
        ("get_order", "Query.order"),
        ("place_order", "Mutation.placeOrder"),
        ("cancel_order", "Mutation.cancelOrder"),
        ("stream_events", "Subscription.events"),
        ("get_customer", "Query.customer"),
        ("create_customer", "Mutation.createCustomer"),
        ("list_order_refunds", "Order.refunds"),
        ("refund_order", "Mutation.refundOrder"),
        ("list_notifications", "Query.orderNotifications"),
        ("list_order_notifications", "Order.notifications"),
        ("get_notification", "Query.orderNotification"),
        ("notification_stats", "Query.notificationStats"),
        ("recent_notifications", "Query.recentNotifications"),
        ("resend_notification", "Mutation.resendNotification"),
        ("get_notification_preferences", "Customer.notifications"),
        ("update_notification_preferences", "Mutation.updateNotificationPreferences"),
        ("list_payment_callbacks", "Query.orderGatewayCallbacks"),
        ("list_order_imports", "Query.orderImports"),
        ("get_order_import", "Query.orderImport"),
        ("upload_order_import", "Mutation.importOrders"),
        ("list_channel_connections", "Query.channelConnections"),
        ("get_channel_connection", "Query.channelConnection"),
        ("create_channel_connection", "Mutation.createChannelConnection"),
        ("update_channel_connection", "Mutation.updateChannelConnection"),
        ("delete_channel_connection", "Mutation.deleteChannelConnection"),
        ("get_channel_remote_product", "Query.channelRemoteProduct"),
        ("start_channel_import", "Mutation.startChannelImport"),
        ("get_channel_import", "Query.channelImport"),
        ("list_channel_mappings", "Query.channelMappings"),
        ("push_channel_product", "Mutation.pushChannelProduct"),
        ("start_channel_sync", "Mutation.startChannelSync"),
        ("start_channel_reconcile", "Mutation.startChannelReconcile"),
        ("list_channel_sync_runs", "Query.channelSyncRuns"),
        ("get_channel_sync_run", "Query.channelSyncRun"),
        ("list_channel_drifts", "Query.channelDrifts"),
        ("list_channel_webhook_receipts", "Query.channelWebhookReceipts"),
        ("list_channel_dead_letters", "Query.channelDeadLetters"),
        ("replay_channel_dead_letter", "Mutation.replayChannelDeadLetter"),
        ("replay_channel_dead_letters", "Mutation.replayChannelDeadLetters"),
        ("dismiss_channel_dead_letter", "Mutation.dismissChannelDeadLetter"),
        ("dismiss_channel_dead_letters", "Mutation.dismissChannelDeadLetters"),
        ("list_tokens", "Query.apiTokens"),
        ("create_token", "Mutation.createApiToken"),
        ("revoke_token", "Mutation.revokeApiToken"),
        ("get_origins", "Query.corsOrigins"),
        ("put_origins", "Mutation.setCorsOrigins"),
        ("list_jobs", "Query.jobs"),
        ("job_stats", "Query.jobStats"),
        ("replay_one", "Mutation.replayJob"),
        ("replay_many", "Mutation.replayJobs"),
        ("admin_get_license", "Query.tenantLicense"),
        ("admin_assign_license", "Mutation.assignTenantLicense"),
        ("set_global", "Mutation.setGlobalFeature"),
        ("clear_global", "Mutation.clearGlobalFeature"),
    ];

    /// REST operations GraphQL does differently, and why.
    const REST_ONLY: &[(&str, &str)] = &[
        ("health", "a load balancer's liveness probe, outside the API"),
        ("ready", "a load balancer's readiness probe, outside the API"),
        ("register", "signing up hands out the token GraphQL requests carry"),
        ("login", "signing in hands out the token GraphQL requests carry"),
        ("logout", "ends the session the token belongs to, as signing in starts it"),
        ("bulk_products", "one GraphQL document sends many createProduct mutations under aliases"),
        (
            "bulk_purchase_orders",
            "one GraphQL document sends many createPurchaseOrder mutations under aliases",
        ),
        (
            "receive_channel_webhook",
            "a store calls it, signed with the connection's secret: not an API to program against",
        ),
        (
            "receive_stripe_callback",
            "Stripe calls it, signed with the endpoint's secret: an inbound receiver, not an API to program against",
        ),
    ];

    /// The fields of each object type of the schema, from its SDL.
    fn fields() -> HashMap<String, BTreeSet<String>> {
        let sdl = Schema::build(Query::default(), Mutation::default(), Subscription).finish().sdl();
        let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
        let mut current: Option<String> = None;
        for line in sdl.lines() {
            if let Some(rest) = line.strip_prefix("type ") {
                current = rest.split([' ', '{']).next().map(str::to_owned);
            } else if line.starts_with('}') {
                current = None;
            } else if let Some(ty) = &current
                && let Some(name) = line.trim_start().split(['(', ':']).next().filter(|n| !n.is_empty())
                && line.starts_with('\t')
                && !line.trim_start().starts_with(['"', '#', ')'])
            {
                out.entry(ty.clone()).or_default().insert(name.trim().to_owned());
            }
        }
        out
    }

    /// A capability exists in REST and GraphQL alike: a REST operation
    /// without its GraphQL field (or a reason it has none) fails here.
    #[test]
    fn every_rest_operation_has_its_graphql_field() {
        let modules = crate::modules::offline().unwrap();
        let doc = serde_json::to_value(crate::api::openapi(&modules)).unwrap();
        let schema = fields();
        let mut missing = Vec::new();
        let mut seen = BTreeSet::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                let Some(id) = operation["operationId"].as_str() else { continue };
                seen.insert(id.to_owned());
                if let Some((_, field)) = PARITY.iter().find(|(op, _)| *op == id) {
                    let (ty, name) = field.split_once('.').unwrap();
                    if !schema.get(ty).is_some_and(|f| f.contains(name)) {
                        missing.push(format!("{id}: {field} is not in the schema"));
                    }
                } else if !REST_ONLY.iter().any(|(op, _)| *op == id) {
                    missing.push(format!("{id}: no GraphQL field named for it"));
                }
            }
        }
        assert!(missing.is_empty(), "REST operations without GraphQL:\n{}", missing.join("\n"));
        let listed = PARITY.iter().map(|(op, _)| *op).chain(REST_ONLY.iter().map(|(op, _)| *op));
        let stale: Vec<&str> = listed.filter(|op| !seen.contains(*op)).collect();
        assert!(stale.is_empty(), "listed but not REST operations: {stale:?}");
    }
}
