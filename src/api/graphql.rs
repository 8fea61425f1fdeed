//! GraphQL at `/graphql` (async-graphql): the same authentication, tenant
//! context, permissions and error codes as REST. The playground (GraphiQL)
//! and its assets are served by Nexus itself, so it works offline.

use actix_web::{
    FromRequest, HttpRequest, HttpResponse, dev::Payload, get, http::header, middleware::from_fn, post, web,
};
use async_graphql::{
    Context, EmptySubscription, MergedObject, Name, Object, Schema, SimpleObject,
    parser::types::{ExecutableDocument, Selection, SelectionSet},
};
use async_graphql_actix_web::GraphQLResponse;

use crate::{
    error::{ApiError, ApiResult, Code, FieldError},
    modules,
    platform::{
        auth::{self, Principal},
        features::{
            Effective,
            routes::{Toggle, effective, set_for_tenant},
        },
        governance::{self, Governed},
        graphql::{Caller, authorized, caller, gql, list_request},
        http::{PageMeta, Validate, parse_json, parse_sort},
        idempotency,
        license::Access,
        license::LicenseView,
        rbac::{FeaturesRead, FeaturesWrite, LicenseRead, TenantRead, UsersRead},
        state::AppState,
        users::{self, TenantView, USER_SORTS, UserFilter, UserView},
        webhooks::graphql::{WebhooksMutation, WebhooksQuery},
    },
};

pub type NexusSchema = Schema<Query, Mutation, EmptySubscription>;

/// Every query field: the platform's and the modules'.
#[derive(MergedObject, Default)]
pub struct Query(PlatformQuery, GovernanceQuery, WebhooksQuery, modules::Query);

/// Every mutation.
#[derive(MergedObject, Default)]
pub struct Mutation(PlatformMutation, WebhooksMutation, modules::Mutation);

pub fn schema(state: &AppState) -> NexusSchema {
    Schema::build(Query::default(), Mutation::default(), EmptySubscription)
        .data(state.clone())
        .limit_depth(state.config.graphql.max_depth)
        .limit_complexity(state.config.graphql.max_complexity)
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
    /// Switch a module or feature key for the tenant, within its license.
    async fn set_feature(
        &self,
        ctx: &Context<'_>,
        key: String,
        enabled: bool,
    ) -> async_graphql::Result<Effective> {
        let (state, principal) = authorized::<FeaturesWrite>(ctx).map_err(gql)?;
        let toggle = Toggle { enabled, effective_at: None, expires_at: None };
        set_for_tenant(state, principal.tenant.id(), principal.user_id, &key, toggle).await.map_err(gql)
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/graphql")
            .wrap(from_fn(idempotency::middleware))
            .wrap(from_fn(governance::middleware))
            .wrap(from_fn(auth::middleware))
            .service(execute)
            .service(playground)
            .service(asset),
    );
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
    let (mut request, doc) = read_request(&req, payload, limit).await?;
    // The modules' services, and batch loaders within the caller's tenant.
    state.modules.graphql_data(&mut request.data, caller.as_ref().ok().map(|p| p.tenant));
    if caller.is_ok() {
        let governed = Governed::of(&req)?;
        governed.require(&state.governance, "feature.graphql")?;
        if let Access::ReadOnly(code) = governed.access(&state.governance)
            && doc.as_ref().is_some_and(has_mutation)
        {
            return Err(ApiError::new(code, "the license allows reads only: no mutations"));
        }
        request = request.data(Governed::clone(&governed));
    }
    let operation = request.operation_name.clone();
    let mut response = schema.execute(request.data(Caller(caller))).await;
    if let Some(doc) = &doc {
        in_selection_order(&mut response.data, doc, operation.as_deref());
    }
    Ok(response.into())
}

/// Puts every object of the answer in the order its fields were selected,
/// as the GraphQL specification asks (section 7.1.2): async-graphql
/// resolves sibling fields concurrently and keeps them in the order they
/// finished, so `{ me tenant }` could come back as `tenant`, `me`.
fn in_selection_order(data: &mut async_graphql::Value, doc: &ExecutableDocument, operation: Option<&str>) {
    let op = match operation {
        Some(name) => doc.operations.iter().find(|(n, _)| n.is_some_and(|n| n.as_str() == name)),
        None => doc.operations.iter().next(),
    };
    if let Some((_, op)) = op {
        reorder(data, &[&op.node.selection_set.node], doc);
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
