//! What every GraphQL resolver shares, platform and modules alike: the
//! caller resolved before execution, the permission check, and errors that
//! carry the same code as REST. The schema itself is assembled in `src/api/`.

use async_graphql::{
    Context, ErrorExtensions,
    parser::types::{ExecutableDocument, OperationDefinition},
};

use crate::{
    error::{ApiError, ApiResult, Code},
    platform::{
        auth::Principal,
        governance::Governed,
        http::{DEFAULT_LIMIT, ListRequest, Validate},
        rbac::{self, Permission},
        state::AppState,
    },
};

/// The caller, resolved before execution; resolvers that need it fail with
/// the same code REST would answer.
pub struct Caller(pub Result<Principal, (Code, String)>);

/// GraphQL errors carry the REST code, status and field errors in
/// `extensions`; internal causes are logged, as REST does.
impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        self.log_source();
        let code = self.code;
        let fields =
            serde_json::to_value(&self.errors).ok().and_then(|v| async_graphql::Value::from_json(v).ok());
        async_graphql::Error::new(self.detail.clone()).extend_with(|_, e| {
            e.set("code", code.as_str());
            e.set("status", code.status().as_u16());
            if let Some(fields) = fields.clone().filter(|_| !self.errors.is_empty()) {
                e.set("errors", fields);
            }
        })
    }
}

pub fn gql(err: ApiError) -> async_graphql::Error {
    err.extend()
}

/// A mutation's input after the checks its REST body passes, or
/// `validation_failed` naming each field, as REST answers.
pub fn validated<T: Validate>(input: T) -> async_graphql::Result<T> {
    input.validate().map_err(|errors| gql(ApiError::validation(errors)))?;
    Ok(input)
}

/// Context data a resolver needs, or an internal error naming it.
pub fn data<'a, T: std::any::Any + Send + Sync>(ctx: &'a Context<'_>) -> ApiResult<&'a T> {
    ctx.data::<T>().map_err(|_| {
        ApiError::internal(anyhow::anyhow!("GraphQL context lacks {}", std::any::type_name::<T>()))
    })
}

pub fn caller<'a>(ctx: &'a Context<'_>) -> ApiResult<(&'a AppState, &'a Principal)> {
    let state = data::<AppState>(ctx)?;
    match &data::<Caller>(ctx)?.0 {
        Ok(principal) => Ok((state, principal)),
        Err((code, detail)) => Err(ApiError::new(*code, detail.clone())),
    }
}

/// The caller, holding permission `P` in a tenant with `P`'s feature on.
/// Fails closed when governance did not run.
pub fn authorized<'a, P: Permission>(ctx: &'a Context<'_>) -> ApiResult<(&'a AppState, &'a Principal)> {
    let (state, principal) = caller(ctx)?;
    rbac::check::<P>(&state.rbac, principal)?;
    if let Some(key) = P::FEATURE {
        data::<Governed>(ctx)?.require(&state.governance, key)?;
    }
    Ok((state, principal))
}

/// The list request of a connection field (`first`, 25 when `null`,
/// `after`, `before`), with the same validation and error codes as REST;
/// the total is counted only when the query selects `pageInfo { total }`.
pub fn list_request(
    ctx: &Context<'_>,
    first: Option<i64>,
    after: Option<&str>,
    before: Option<&str>,
) -> async_graphql::Result<ListRequest> {
    let total = ctx.look_ahead().field("pageInfo").field("total").exists();
    let first = first.unwrap_or(DEFAULT_LIMIT);
    ListRequest::connection(first, after, before, total).map_err(gql)
}

/// The operation a request runs: the one named, or the document's only one
/// (none when a name is needed and missing, as execution refuses it).
pub fn operation<'a>(doc: &'a ExecutableDocument, name: Option<&str>) -> Option<&'a OperationDefinition> {
    let mut ops = doc.operations.iter();
    let (_, op) = match name {
        Some(name) => ops.find(|(n, _)| n.is_some_and(|n| n.as_str() == name))?,
        None => ops.next().filter(|_| ops.next().is_none())?,
    };
    Some(&op.node)
}
