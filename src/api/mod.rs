//! Assembly: the route table, the OpenAPI document, the GraphQL schema.

pub mod graphql;

use actix_web::{App, middleware::from_fn};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_actix_web::{AppExt, scope, service_config::ServiceConfig};

use crate::platform::{
    audit, auth, cors, events, features, governance, health, idempotency, jobs, license, module::Modules,
    users, versioning, webhooks,
};

/// Every REST route: the platform's and each module's. Paths and schemas
/// are collected from the handlers' `#[utoipa::path]` by utoipa-actix-web,
/// never listed by hand.
pub fn routes(cfg: &mut ServiceConfig, modules: &Modules) {
    cfg.configure(health::routes).service(
        scope("/api/v1")
            // Last wrapped runs first: versioning, audit, authentication,
            // governance, idempotency.
            .wrap(from_fn(idempotency::middleware))
            .wrap(from_fn(governance::middleware))
            .wrap(from_fn(auth::middleware))
            .wrap(from_fn(audit::middleware))
            .wrap(from_fn(versioning::middleware))
            .configure(auth::routes::routes)
            .configure(users::routes::routes)
            .configure(audit::routes::routes)
            .configure(webhooks::routes::routes)
            .configure(events::routes::routes)
            .configure(license::routes::routes)
            .configure(features::routes::routes)
            .configure(cors::routes)
            .configure(|cfg| modules.routes(cfg))
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
        (name = "cors", description = "Browser origins allowed per tenant"),
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

/// What holds for every operation, said once rather than on each handler:
/// - every authenticated POST under `/api/v1` takes `Idempotency-Key`, and
///   may answer 409 (in flight) or 422 (reused with another body);
/// - `page` and `per_page` have their bounds; optional headers are strings,
///   never `null`;
/// - any operation taking parameters or a body answers 400 to a malformed
///   one (a path id that is no UUID, a bad query value, invalid JSON, a bad
///   header), and a body may get 413 or 415;
/// - error responses are `application/problem+json`, each with an example
///   of its own status (the `Problem` schema's own example is a 422).
struct Conventions;

impl Conventions {
    fn apply(path: &str, is_post: bool, operation: &mut utoipa::openapi::path::Operation) {
        use crate::{
            error::PROBLEM_JSON,
            platform::http::{MAX_PAGE, MAX_PER_PAGE},
        };
        use utoipa::{
            Number,
            openapi::{
                ContentBuilder, Ref, RefOr, Required, ResponseBuilder,
                path::{ParameterBuilder, ParameterIn},
                schema::{ObjectBuilder, Schema, SchemaType, Type},
            },
        };
        let idempotent = is_post && operation.security.is_some() && path.starts_with("/api/v1/");
        if idempotent {
            let parameter = ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Send the same key again within 24 h to get the first answer back (with \
                     `Idempotent-Replayed: true`) instead of acting twice; another body with the \
                     same key is a 422 `idempotency_conflict`, and 409 while the first is in flight.",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[\\x21-\\x7E]{1,255}$"))
                        .max_length(Some(255)),
                ))
                .build();
            operation.parameters.get_or_insert_with(Vec::new).push(parameter.into());
        }
        for parameter in operation.parameters.iter_mut().flatten() {
            let RefOr::T(parameter) = parameter else { continue };
            let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut() else { continue };
            if parameter.parameter_in == ParameterIn::Header {
                schema.schema_type = SchemaType::Type(Type::String);
            }
            let maximum = match parameter.name.as_str() {
                "page" => MAX_PAGE,
                "per_page" => MAX_PER_PAGE,
                _ => continue,
            };
            schema.minimum = Some(Number::UInt(1));
            schema.maximum = Some(Number::UInt(maximum as usize));
        }

        let takes_input =
            operation.parameters.as_ref().is_some_and(|p| !p.is_empty()) || operation.request_body.is_some();
        let has_body = operation.request_body.is_some();
        let answers = [
            (takes_input, "400", "A malformed parameter, header or JSON body"),
            (has_body, "413", "The body is larger than the server accepts"),
            (has_body, "415", "The body is not sent as application/json"),
            (idempotent, "409", "A request with this Idempotency-Key is still in flight"),
            (idempotent, "422", "This Idempotency-Key was used with another request"),
        ];
        for (applies, status, description) in answers {
            if applies && !operation.responses.responses.contains_key(status) {
                let problem = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
                let response = ResponseBuilder::new().description(description).content(PROBLEM_JSON, problem);
                operation.responses.responses.insert(status.to_owned(), RefOr::T(response.build()));
            }
        }

        let problem = Some(RefOr::Ref(Ref::from_schema_name("Problem")));
        for (status, response) in operation.responses.responses.iter_mut() {
            let RefOr::T(response) = response else { continue };
            let declared = response.content.get("application/json");
            if matches!(declared, Some(RefOr::T(content)) if content.schema == problem)
                && let Some(content) = response.content.shift_remove("application/json")
            {
                response.content.insert(PROBLEM_JSON.to_owned(), content);
            }
            if let Some(RefOr::T(content)) = response.content.get_mut(PROBLEM_JSON) {
                content.example = Some(Self::example(status.parse().unwrap_or(500)));
            }
        }
    }

    /// A typical problem for `status`, as an example.
    fn example(status: u16) -> serde_json::Value {
        use crate::error::{Code, FieldError, problem};
        let (code, detail) = match status {
            400 => (Code::InvalidQuery, "cannot sort by `colour`"),
            401 => (Code::Unauthenticated, "the token is invalid or has expired"),
            403 => (Code::Forbidden, "this action needs the permission inventory:write"),
            404 => (Code::NotFound, "product not found"),
            409 => (Code::Conflict, "cannot approve a purchase order that is approved"),
            410 => (Code::Gone, "this API version was retired"),
            413 => (Code::PayloadTooLarge, "the body is larger than the server accepts"),
            415 => (Code::UnsupportedMediaType, "send the body as application/json"),
            412 => (Code::PreconditionFailed, "the product is at version 4, not the one in If-Match"),
            422 => (Code::ValidationFailed, "the request body has invalid fields"),
            429 => (Code::RateLimited, "too many requests; retry after the time in Retry-After"),
            503 => (Code::DatabaseUnavailable, "the database is unavailable; retry shortly"),
            _ => (Code::Internal, "an internal error occurred"),
        };
        let errors = match code {
            Code::ValidationFailed => {
                vec![FieldError::new("lines[0].quantity", "must be a positive whole number")]
            }
            Code::InvalidQuery => vec![FieldError::new("sort", "must be one of sku, name, created_at")],
            _ => Vec::new(),
        };
        let mut example = serde_json::json!(problem(code, detail.to_owned(), errors));
        example["request_id"] = "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11".into();
        example
    }
}

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                (false, &mut item.get),
                (false, &mut item.put),
                (true, &mut item.post),
                (false, &mut item.delete),
                (false, &mut item.patch),
            ];
            for (is_post, operation) in operations {
                if let Some(operation) = operation {
                    Self::apply(path, is_post, operation);
                }
            }
        }
    }
}

/// The OpenAPI document, built from the same route table the server uses.
pub fn openapi(modules: &Modules) -> utoipa::openapi::OpenApi {
    let (_, mut doc) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(|cfg| routes(cfg, modules))
        .split_for_parts();
    // The modules' tags, after the platform's own resources.
    let tags = doc.tags.get_or_insert_with(Vec::new);
    let at = tags.iter().position(|t| t.name == "features").map_or(tags.len(), |i| i + 1);
    let module_tags = modules.tags().map(|(name, description)| {
        utoipa::openapi::tag::TagBuilder::new().name(name).description(Some(description)).build()
    });
    tags.splice(at..at, module_tags);
    // After the routes are collected: it edits their operations.
    Conventions.modify(&mut doc);
    doc
}

/// The document as committed in `openapi/openapi.json`.
pub fn openapi_json(modules: &Modules) -> String {
    let mut json = openapi(modules).to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_error_response_is_documented_as_problem_json_with_an_example_of_its_status() {
        let modules = crate::modules::offline().unwrap();
        let doc = serde_json::to_value(super::openapi(&modules)).unwrap();
        let mut seen = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let Some(responses) = operation["responses"].as_object() else { continue };
                for (status, response) in responses.iter().filter(|(s, _)| s.starts_with(['4', '5'])) {
                    let content = &response["content"];
                    assert!(content.get("application/json").is_none(), "{method} {path} {status} says JSON");
                    let example = &content["application/problem+json"]["example"];
                    assert_eq!(example["status"].as_u64(), status.parse().ok(), "{method} {path} {status}");
                    assert!(example["code"].is_string() && example["detail"].is_string());
                    seen += 1;
                }
            }
        }
        assert!(seen > 200, "only {seen} error responses documented");
    }
}
