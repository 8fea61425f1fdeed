//! Assembly: the route table, the OpenAPI document, the GraphQL schema.

pub mod graphql;

use actix_web::{App, middleware::from_fn};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_actix_web::{AppExt, scope, service_config::ServiceConfig};

use crate::platform::{audit, auth, events, features, governance, health, jobs, license, users, webhooks};

/// Every REST route. Paths and schemas are collected from the handlers'
/// `#[utoipa::path]` by utoipa-actix-web, never listed by hand.
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.configure(health::routes).service(
        scope("/api/v1")
            // Last wrapped runs first: audit, authentication, governance.
            .wrap(from_fn(governance::middleware))
            .wrap(from_fn(auth::middleware))
            .wrap(from_fn(audit::middleware))
            .configure(auth::routes::routes)
            .configure(users::routes::routes)
            .configure(audit::routes::routes)
            .configure(webhooks::routes::routes)
            .configure(events::routes::routes)
            .configure(license::routes::routes)
            .configure(features::routes::routes)
            .configure(jobs::routes::routes),
    );
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Nexus API",
        description = "Multi-tenant headless ERP API. Authenticate with `POST /api/v1/auth/login` \
                       and send `Authorization: Bearer <token>`. Errors are RFC 9457 problem+json \
                       with a stable `code`.",
        license(name = "Apache-2.0"),
    ),
    modifiers(&BearerAuth),
    components(schemas(crate::error::Problem, crate::error::FieldError)),
    tags(
        (name = "auth", description = "Registration, login and API tokens"),
        (name = "users", description = "Tenant users and roles (tenant admins)"),
        (name = "audit", description = "Append-only audit trail"),
        (name = "webhooks", description = "Outbound webhooks: endpoints, deliveries, attempts"),
        (name = "license", description = "The tenant's license: tier, state, limits, signed keys"),
        (name = "features", description = "Module and feature toggles"),
        (name = "events", description = "The live event stream (Server-Sent Events)"),
        (name = "jobs", description = "Background job queue health and dead letters (operators)"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
    }
}

/// The OpenAPI document, built from the same route table the server uses.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, doc) =
        App::new().into_utoipa_app().openapi(ApiDoc::openapi()).configure(routes).split_for_parts();
    doc
}

/// The document as committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    let mut json = openapi().to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}
