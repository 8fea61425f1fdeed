//! GraphQL at `/graphql` (async-graphql): the same authentication, tenant
//! context, permissions and error codes as REST. The playground (GraphiQL)
//! and its assets are served by Nexus itself, so it works offline.

use actix_web::{
    FromRequest, HttpRequest, HttpResponse, dev::Payload, get, http::header, middleware::from_fn, post, web,
};
use async_graphql::{Context, EmptySubscription, MergedObject, Object, Schema, SimpleObject};
use async_graphql_actix_web::{GraphQLRequest, GraphQLResponse};

use crate::{
    error::{ApiError, ApiResult},
    modules,
    platform::{
        auth::{self, Principal},
        features::{
            Effective,
            routes::{Toggle, effective, set_for_tenant},
        },
        governance::{self, Governed},
        graphql::{Caller, authorized, caller, gql},
        http::{PageMeta, PageRequest},
        idempotency,
        license::Access,
        license::LicenseView,
        rbac::{FeaturesRead, FeaturesWrite, LicenseRead, TenantRead, UsersRead},
        state::AppState,
        users::{self, TenantView, UserFilter, UserView},
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

    /// Users of the tenant, oldest first.
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 1)] page: u64,
        #[graphql(default = 25)] per_page: u64,
    ) -> async_graphql::Result<UserPage> {
        let (state, principal) = authorized::<UsersRead>(ctx).map_err(gql)?;
        let page = PageRequest::new(Some(page), Some(per_page)).map_err(gql)?;
        let filter =
            UserFilter { email: None, disabled: None, sort: (entity::user::Column::CreatedAt, false) };
        let paged = users::list(&state.db, principal.tenant, filter, page).await.map_err(gql)?;
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

#[post("")]
async fn execute(
    req: HttpRequest,
    state: web::Data<AppState>,
    schema: web::Data<NexusSchema>,
    request: GraphQLRequest,
) -> ApiResult<GraphQLResponse> {
    let caller =
        Principal::from_request(&req, &mut Payload::None).into_inner().map_err(|e| (e.code, e.detail));
    let mut request = request.into_inner();
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
