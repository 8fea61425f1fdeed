//! GraphQL at `/graphql` (async-graphql): the same authentication, tenant
//! context, permissions and error codes as REST. The playground (GraphiQL)
//! and its assets are served by Nexus itself, so it works offline.

use actix_web::{
    FromRequest, HttpRequest, HttpResponse, dev::Payload, get, http::header, middleware::from_fn, post, web,
};
use async_graphql::{Context, EmptySubscription, MergedObject, Object, Schema, SimpleObject};
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
fn has_mutation(query: &str) -> bool {
    async_graphql::parser::parse_query(query).is_ok_and(|doc| {
        doc.operations
            .iter()
            .any(|(_, op)| op.node.ty == async_graphql::parser::types::OperationType::Mutation)
    })
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
    let mut request = read_request(&req, payload, limit).await?;
    // The modules' services, and batch loaders within the caller's tenant.
    state.modules.graphql_data(&mut request.data, caller.as_ref().ok().map(|p| p.tenant));
    if caller.is_ok() {
        let governed = Governed::of(&req)?;
        governed.require(&state.governance, "feature.graphql")?;
        if let Access::ReadOnly(code) = governed.access(&state.governance)
            && has_mutation(&request.query)
        {
            return Err(ApiError::new(code, "the license allows reads only: no mutations"));
        }
        request = request.data(Governed::clone(&governed));
    }
    Ok(schema.execute(request.data(Caller(caller))).await.into())
}

/// A GraphQL request as JSON, under the input rules REST has: JSON only
/// (415; multipart too, since no field takes an upload), at most `limit`
/// bytes (413, refused before reading when `Content-Length` says so),
/// strings free of NUL in the body and in the document's arguments (400
/// `invalid_string`).
async fn read_request(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> ApiResult<async_graphql::Request> {
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
    if document_has_forbidden(&parsed.query) {
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
    Ok(request)
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
fn document_has_forbidden(query: &str) -> bool {
    use async_graphql::Positioned;
    use async_graphql::parser::types::{Selection, SelectionSet};
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
    // A document that does not parse is reported by the schema as usual.
    let Ok(doc) = async_graphql::parser::parse_query(query) else { return false };
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
