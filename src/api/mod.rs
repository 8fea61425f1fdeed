//! Assembly: the route table, the OpenAPI document, the GraphQL schema.

mod cost;
pub mod graphql;
mod text;

use actix_web::{
    App, Error,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    middleware::{Next, from_fn},
};
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
            .wrap(from_fn(chain))
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

/// Every `/api/v1` request's way to its handler, in this order:
/// versioning, audit, authentication, governance, idempotency. One
/// middleware that calls each step with the rest of the chain: a request
/// allocates and dispatches once here instead of once per step.
pub async fn chain(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    versioning::middleware(req, |req| {
        audit::middleware(req, |req| {
            auth::middleware(req, |req| {
                governance::middleware(req, |req| idempotency::middleware(req, |req| next.call(req)))
            })
        })
    })
    .await
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
/// - optional headers are strings, never `null`;
/// - any operation taking parameters or a body answers 400 to a malformed
///   one (a path id that is no UUID, a bad query value, invalid JSON, a bad
///   header), and a body may get 413 or 415;
/// - error responses are `application/problem+json`, each with an example
///   of its own status (the `Problem` schema's own example is a 422).
struct Conventions {
    /// The feature key that gates each tag's operations.
    features: std::collections::HashMap<String, String>,
    /// The document's schemas, to name a real field of a request body.
    schemas: std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>>,
}

impl Conventions {
    fn new(modules: &Modules, doc: &utoipa::openapi::OpenApi) -> Self {
        let mut features: std::collections::HashMap<String, String> =
            [("webhooks", "feature.webhooks"), ("events", "feature.webhooks")]
                .into_iter()
                .map(|(tag, key)| (tag.to_owned(), key.to_owned()))
                .collect();
        for module in modules.iter() {
            if let Some(feature) = module.feature() {
                for (tag, _) in module.tags() {
                    features.insert((*tag).to_owned(), feature.key.to_owned());
                }
            }
        }
        let schemas = doc.components.as_ref().map(|c| c.schemas.clone()).unwrap_or_default();
        Self { features, schemas }
    }

    fn apply(&self, path: &str, method: &str, operation: &mut utoipa::openapi::path::Operation) {
        let is_post = method == "post";
        use crate::error::PROBLEM_JSON;
        use utoipa::openapi::{
            ContentBuilder, Ref, RefOr, Required, ResponseBuilder,
            path::{ParameterBuilder, ParameterIn},
            schema::{ObjectBuilder, Schema, SchemaType, Type},
        };
        let idempotent = is_post && operation.security.is_some() && path.starts_with("/api/v1/");
        // An operation that requires the key declares it itself.
        let declared = operation
            .parameters
            .iter()
            .flatten()
            .any(|p| matches!(p, RefOr::T(p) if p.name.eq_ignore_ascii_case("idempotency-key")));
        if idempotent && !declared {
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
                        .pattern(Some(crate::platform::idempotency::KEY_PATTERN))
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
            // The key's rule, also where an operation declares it required.
            if parameter.name.eq_ignore_ascii_case("idempotency-key") {
                schema.pattern = Some(crate::platform::idempotency::KEY_PATTERN.to_owned());
                schema.max_length = Some(255);
            }
        }

        let takes_input =
            operation.parameters.as_ref().is_some_and(|p| !p.is_empty()) || operation.request_body.is_some();
        let has_body = operation.request_body.is_some();
        let authenticated = operation.security.is_some() && path.starts_with("/api/v1/");
        let answers = [
            (takes_input, "400", "A malformed parameter, header or JSON body"),
            (has_body, "413", "The body is larger than the server accepts"),
            (has_body, "415", "The body is not sent as application/json"),
            (has_body, "422", "Fields that are not valid (or an Idempotency-Key used with another request)"),
            (idempotent, "409", "A request with this Idempotency-Key is still in flight"),
            (idempotent, "422", "This Idempotency-Key was used with another request"),
            (
                authenticated,
                "429",
                "The user's or the tenant's rate limit is reached; retry after Retry-After",
            ),
            (authenticated, "503", "A backend is unavailable; retry after Retry-After"),
        ];
        for (applies, status, description) in answers {
            if applies && !operation.responses.responses.contains_key(status) {
                let problem = ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build();
                let response = ResponseBuilder::new().description(description).content(PROBLEM_JSON, problem);
                operation.responses.responses.insert(status.to_owned(), RefOr::T(response.build()));
            }
        }

        let problem = Some(RefOr::Ref(Ref::from_schema_name("Problem")));
        let examples: Vec<(String, Vec<(&'static str, serde_json::Value)>)> = operation
            .responses
            .responses
            .keys()
            .map(|status| {
                (status.clone(), self.examples(status.parse().unwrap_or(500), path, method, operation))
            })
            .collect();
        for ((status, response), (_, examples)) in operation.responses.responses.iter_mut().zip(examples) {
            let RefOr::T(response) = response else { continue };
            if response.description.is_empty() {
                response.description = Self::description(status).to_owned();
            }
            let declared = response.content.get("application/json");
            if matches!(declared, Some(RefOr::T(content)) if content.schema == problem)
                && let Some(content) = response.content.shift_remove("application/json")
            {
                response.content.insert(PROBLEM_JSON.to_owned(), content);
            }
            if let Some(RefOr::T(content)) = response.content.get_mut(PROBLEM_JSON) {
                let mut examples = examples.into_iter();
                content.example = examples.next().map(|(_, example)| example);
                // A second case of the same status (a feature that is off).
                for (name, example) in examples {
                    let example =
                        utoipa::openapi::example::ExampleBuilder::new().value(Some(example)).build();
                    content.examples.insert(name.to_owned(), RefOr::T(example));
                }
                if !content.examples.is_empty()
                    && let Some(first) = content.example.take()
                {
                    let named = utoipa::openapi::example::ExampleBuilder::new().value(Some(first)).build();
                    content.examples.insert("default".to_owned(), RefOr::T(named));
                }
            }
        }
    }

    /// What a status means, for responses declared without a description.
    fn description(status: &str) -> &'static str {
        match status {
            "200" => "OK",
            "201" => "Created",
            "202" => "Accepted",
            "204" => "No content",
            "400" => "A malformed parameter, header or body",
            "401" => "No token, or an invalid, expired or revoked one",
            "403" => "A permission the caller's roles lack, a feature that is off, or the license",
            "404" => "Not found (another tenant's resources are not found either)",
            "405" => "Not allowed on this path",
            "409" => "In conflict with the current state",
            "410" => "Gone",
            "412" => "If-Match names another version",
            "413" => "The body is larger than the server accepts",
            "415" => "The body is not sent as application/json",
            "422" => "Fields that are not valid",
            "429" => "Too many requests; retry after Retry-After",
            "503" => "A backend is unavailable; retry after Retry-After",
            _ => "An error",
        }
    }

    /// The resource a path is about, in words: `/purchase-orders/{id}` is
    /// a "purchase order".
    fn resource(path: &str) -> String {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let named = segments
            .iter()
            .enumerate()
            .rev()
            .find(|(i, s)| !s.starts_with('{') && segments.get(i + 1).is_some_and(|n| n.starts_with('{')))
            .map(|(_, s)| *s)
            .or_else(|| segments.last().copied().filter(|s| !s.starts_with('{')))
            .unwrap_or("resource");
        let singular = match named {
            s if s.ends_with("ies") => format!("{}y", &s[..s.len() - 3]),
            s if s.ends_with('s') => s[..s.len() - 1].to_owned(),
            s => s.to_owned(),
        };
        singular.replace('-', " ")
    }

    /// The permission an operation needs, as its 403 names it.
    fn permission(path: &str, method_is_read: bool, tag: &str) -> String {
        let action = if path.ends_with("/approve") {
            "approve"
        } else if path.starts_with("/api/v1/admin/") {
            "manage"
        } else if method_is_read {
            "read"
        } else {
            "write"
        };
        let object = match tag {
            "users" if path.contains("/roles/") => "roles",
            "license" if path.starts_with("/api/v1/admin/") => "licenses",
            "cors" if method_is_read => "tenant",
            other => other,
        };
        format!("{object}:{action}")
    }

    /// Typical problems of `status` for this operation, the usual one first.
    fn examples(
        &self,
        status: u16,
        path: &str,
        method: &str,
        operation: &utoipa::openapi::path::Operation,
    ) -> Vec<(&'static str, serde_json::Value)> {
        use crate::error::{Code, FieldError, problem};
        let tag = operation.tags.iter().flatten().next().map_or("", String::as_str);
        let params: Vec<&str> = operation
            .parameters
            .iter()
            .flatten()
            .filter_map(|p| match p {
                utoipa::openapi::RefOr::T(p) => Some(p.name.as_str()),
                _ => None,
            })
            .collect();
        let is_read = method == "get";
        let resource = Self::resource(path);
        let sort_fields = operation
            .parameters
            .iter()
            .flatten()
            .filter_map(|p| match p {
                utoipa::openapi::RefOr::T(p) if p.name == "sort" => Some(p),
                _ => None,
            })
            .find_map(|p| serde_json::to_value(&p.schema).ok()?["pattern"].as_str().map(str::to_owned))
            .map(|pattern| {
                let fields = pattern.trim_start_matches("^-?").trim_end_matches('$');
                fields.trim_start_matches('(').trim_end_matches(')').replace('|', ", ")
            });
        let body_field = self.body_field(operation);
        let mut cases: Vec<(&'static str, Code, String, Vec<FieldError>)> = Vec::new();
        match status {
            400 => {
                if let Some(fields) = sort_fields {
                    let errors = vec![FieldError::new("sort", format!("must be one of {fields}"))];
                    cases.push(("default", Code::InvalidQuery, "cannot sort by `colour`".into(), errors));
                } else if path.contains('{') {
                    let errors = vec![FieldError::new(
                        "path",
                        "must be a UUID such as 0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11",
                    )];
                    let detail = format!("{} is not a valid path: the id must be a UUID", path.replace('{', "<").replace('}', ">"));
                    cases.push(("default", Code::InvalidPath, detail, errors));
                } else if operation.request_body.is_some() {
                    let detail = "the body is not valid JSON: EOF while parsing an object".to_owned();
                    cases.push(("default", Code::MalformedJson, detail, Vec::new()));
                } else {
                    let field = params.first().copied().unwrap_or("query").to_owned();
                    let errors = vec![FieldError::new(field, "is not valid")];
                    cases.push(("default", Code::InvalidQuery, "the query string is invalid".into(), errors));
                }
            }
            401 => cases.push(("default", Code::Unauthenticated, "the token is invalid or has expired".into(), vec![])),
            403 => {
                let permission = Self::permission(path, is_read, tag);
                let detail = format!("this action needs the permission {permission}");
                cases.push(("forbidden", Code::Forbidden, detail, vec![]));
                if let Some(key) = self.features.get(tag) {
                    let detail = format!("{key} is disabled: the tenant switched it off");
                    cases.push(("feature_disabled", Code::FeatureDisabled, detail, vec![]));
                }
            }
            404 => cases.push(("default", Code::NotFound, format!("{resource} not found"), vec![])),
            409 if path.contains("purchase-orders/") => {
                let detail = "cannot approve a purchase order that is approved".to_owned();
                cases.push(("default", Code::Conflict, detail, vec![]));
            }
            409 if path.starts_with("/api/v1/reservations") || path.starts_with("/api/v1/stock") => {
                let detail = "not enough stock of TSHIRT-RED-M in the warehouse for this change".to_owned();
                let errors = vec![FieldError::new("sku", "TSHIRT-RED-M")];
                cases.push(("default", Code::InsufficientStock, detail, errors));
            }
            409 if !is_read && operation.responses.responses.get("409").is_some_and(|r| matches!(r, utoipa::openapi::RefOr::T(r) if r.description.contains("Idempotency-Key"))) => {
                let detail = "a request with this Idempotency-Key is still in flight; retry shortly".to_owned();
                cases.push(("default", Code::Conflict, detail, vec![]));
            }
            409 => {
                let detail = format!("a {resource} with these unique fields already exists");
                cases.push(("default", Code::Conflict, detail, vec![]));
            }
            410 => cases.push(("default", Code::Gone, "this API version was retired".into(), vec![])),
            412 => {
                let detail = format!("the {resource} is at version 4, not the one in If-Match");
                cases.push(("default", Code::PreconditionFailed, detail, vec![]));
            }
            413 => cases.push(("default", Code::PayloadTooLarge, "the body is larger than the server accepts".into(), vec![])),
            415 => cases.push(("default", Code::UnsupportedMediaType, "send the body as application/json".into(), vec![])),
            422 => {
                let errors = vec![FieldError::new(body_field.unwrap_or_else(|| "body".to_owned()), "is required")];
                cases.push(("default", Code::ValidationFailed, "the request has invalid fields".into(), errors));
            }
            429 => cases.push(("default", Code::RateLimited, "too many requests; retry after the time in Retry-After".into(), vec![])),
            503 => cases.push(("default", Code::DatabaseUnavailable, "the database is unavailable; retry shortly".into(), vec![])),
            _ => cases.push(("default", Code::Internal, "an internal error occurred".into(), vec![])),
        }
        cases
            .into_iter()
            .map(|(name, code, detail, errors)| {
                let mut example = serde_json::json!(problem(code, detail, errors));
                example["request_id"] = "0193a5c2-5c1e-7b0a-9d3e-3f1f6f0e7a11".into();
                (name, example)
            })
            .collect()
    }

    /// A field of the operation's request body, required ones first.
    fn body_field(&self, operation: &utoipa::openapi::path::Operation) -> Option<String> {
        let body = serde_json::to_value(operation.request_body.as_ref()?).ok()?;
        let name = body["content"]["application/json"]["schema"]["$ref"].as_str()?.rsplit('/').next()?;
        let schema = serde_json::to_value(self.schemas.get(name)?).ok()?;
        schema["required"][0]
            .as_str()
            .or_else(|| schema["properties"].as_object()?.keys().next().map(String::as_str))
            .map(str::to_owned)
    }
}

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                ("get", &mut item.get),
                ("put", &mut item.put),
                ("post", &mut item.post),
                ("delete", &mut item.delete),
                ("patch", &mut item.patch),
            ];
            for (method, operation) in operations {
                if let Some(operation) = operation {
                    self.apply(path, method, operation);
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
    Conventions::new(modules, &doc).modify(&mut doc);
    text::declare(&mut doc);
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
    /// Operation ids name handlers (`list_purchase_orders`): two modules'
    /// handlers of the same name would make the document invalid.
    #[test]
    fn operation_ids_are_unique() {
        let modules = crate::modules::offline().unwrap();
        let doc = serde_json::to_value(super::openapi(&modules)).unwrap();
        let mut seen = std::collections::HashMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if let Some(id) = operation["operationId"].as_str()
                    && let Some(other) = seen.insert(id.to_owned(), format!("{method} {path}"))
                {
                    panic!("operationId `{id}` of {method} {path} is also {other}'s");
                }
            }
        }
    }

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
                    let problem = &content["application/problem+json"];
                    let example = if problem["example"].is_null() {
                        &problem["examples"]["default"]["value"]
                    } else {
                        &problem["example"]
                    };
                    assert_eq!(example["status"].as_u64(), status.parse().ok(), "{method} {path} {status}");
                    assert!(example["code"].is_string() && example["detail"].is_string());
                    seen += 1;
                }
            }
        }
        assert!(seen > 200, "only {seen} error responses documented");
    }

    fn document() -> serde_json::Value {
        serde_json::to_value(super::openapi(&crate::modules::offline().unwrap())).unwrap()
    }

    /// OpenAPI requires a description on every response object.
    #[test]
    fn every_response_has_a_description() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    let description = response["description"].as_str().unwrap_or_default();
                    assert!(!description.is_empty(), "{method} {path} {status} has no description");
                }
            }
        }
    }

    /// Each operation's error examples are its own: its permission, its
    /// module's key, its resource.
    #[test]
    fn error_examples_belong_to_their_operation() {
        let doc = document();
        let problem = |path: &str, method: &str, status: &str| {
            doc["paths"][path][method]["responses"][status]["content"]["application/problem+json"].clone()
        };
        let detail = |p: &serde_json::Value, name: &str| {
            let value = if name == "example" { &p["example"] } else { &p["examples"][name]["value"] };
            value["detail"].as_str().unwrap_or_default().to_owned()
        };
        let approve = problem("/api/v1/purchase-orders/{id}/approve", "post", "403");
        assert_eq!(detail(&approve, "default"), "this action needs the permission procurement:approve");
        assert_eq!(
            detail(&approve, "feature_disabled"),
            "module.procurement is disabled: the tenant switched it off"
        );
        assert_eq!(approve["examples"]["feature_disabled"]["value"]["code"], "feature_disabled");
        let users = problem("/api/v1/users", "get", "403");
        assert_eq!(detail(&users, "example"), "this action needs the permission users:read");
        assert_eq!(detail(&problem("/api/v1/vendors/{id}", "get", "404"), "example"), "vendor not found");
        assert_eq!(detail(&problem("/api/v1/products/{id}", "get", "404"), "example"), "product not found");
        let sort = problem("/api/v1/products", "get", "400");
        assert_eq!(sort["example"]["errors"][0]["message"], "must be one of sku, name, created_at");
    }
}
