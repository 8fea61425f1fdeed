//! GraphQL mutations in the audit log. One request may run several
//! mutation fields, each its own change, so each gets its own entry: the
//! route is the field's schema coordinate (`Mutation.createUser`), the path
//! `/graphql`, the status what REST would have answered for that field, and
//! the summary its arguments, variables substituted and secrets redacted as
//! in a REST body. Queries and subscriptions are not recorded, as REST does
//! not record reads.

use actix_web::{HttpRequest, http::StatusCode};
use async_graphql::{
    Name, Value as ConstValue, Variables,
    parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet},
};
use serde_json::{Map, Value, json};

use crate::{
    error::ApiError,
    platform::{graphql::operation, state::AppState},
};

/// The mutation fields a request asks to run, before it runs.
pub struct Mutations(Vec<Field>);

struct Field {
    /// The response key (the alias, else the name): how errors point at it.
    key: String,
    route: String,
    summary: Option<Value>,
}

impl Mutations {
    /// The top-level fields of the operation the request runs, if it is a
    /// mutation; empty for a query, a subscription, or no such operation.
    pub fn of(doc: &ExecutableDocument, operation_name: Option<&str>, variables: &Variables) -> Self {
        let Some(op) = operation(doc, operation_name).filter(|op| op.ty == OperationType::Mutation) else {
            return Self(Vec::new());
        };
        let variable = |name: Name| -> Result<ConstValue, ()> {
            let default = || {
                let def = op.variable_definitions.iter().find(|d| d.node.name.node == name)?;
                def.node.default_value().cloned()
            };
            Ok(variables.get(&name).cloned().or_else(default).unwrap_or(ConstValue::Null))
        };
        let mut fields = Vec::new();
        top_level(&op.selection_set.node, doc, &mut |field| {
            let arguments: Map<String, Value> = field
                .arguments
                .iter()
                .map(|(name, value)| {
                    let value = value.node.clone().into_const_with(variable).unwrap_or(ConstValue::Null);
                    (name.node.to_string(), value.into_json().unwrap_or(Value::Null))
                })
                .collect();
            let summary = (!arguments.is_empty()).then(|| {
                let arguments = Value::Object(arguments);
                let bytes = arguments.to_string().len();
                super::bounded(arguments, bytes).unwrap_or_else(|| json!({ "bytes": bytes }))
            });
            fields.push(Field {
                key: field.response_key().node.to_string(),
                route: format!("Mutation.{}", field.name.node),
                summary,
            });
        });
        Self(fields)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes an entry for each field that ran, or for each field when the
    /// request was refused before any ran (`outcome` is `Err`, or the
    /// response has an error with no path).
    pub async fn record(
        self,
        state: &AppState,
        req: &HttpRequest,
        outcome: Result<&async_graphql::Response, &ApiError>,
    ) {
        let entries = self.0.into_iter().filter_map(|field| {
            let status = match outcome {
                Err(err) => err.code.status(),
                Ok(response) => status_of(response, &field.key)?,
            };
            Some(super::record(state, req, field.route, status, field.summary))
        });
        futures_util::future::join_all(entries).await;
    }
}

/// The status REST would answer for the field `key`: that of its own error
/// (or of an error of the whole request, which stops every field), 200 when
/// it answered; `None` when it did not run (`@skip`).
fn status_of(response: &async_graphql::Response, key: &str) -> Option<StatusCode> {
    use async_graphql::PathSegment;
    // An error below the field (in what it answered) came after the change.
    let error = response.errors.iter().find(|e| match e.path.as_slice() {
        [] => true,
        [PathSegment::Field(field)] => field == key,
        _ => false,
    });
    if let Some(error) = error {
        let status = error.extensions.as_ref().and_then(|x| match x.get("status") {
            Some(ConstValue::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            _ => None,
        });
        // async-graphql's own errors (an unknown field, a malformed
        // argument) carry no status: the request was at fault.
        return Some(status.and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::BAD_REQUEST));
    }
    match &response.data {
        ConstValue::Object(data) if data.contains_key(key) => Some(StatusCode::OK),
        _ => None,
    }
}

/// Calls `visit` with each field of a selection set, fragments spread in place.
fn top_level<'a>(
    set: &'a SelectionSet,
    doc: &'a ExecutableDocument,
    visit: &mut impl FnMut(&'a async_graphql::parser::types::Field),
) {
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => visit(&field.node),
            Selection::FragmentSpread(spread) => {
                if let Some(fragment) = doc.fragments.get(&spread.node.fragment_name.node) {
                    top_level(&fragment.node.selection_set.node, doc, visit);
                }
            }
            Selection::InlineFragment(fragment) => top_level(&fragment.node.selection_set.node, doc, visit),
        }
    }
}
