//! What a GraphQL operation costs. Its complexity (each selected field is a
//! point, as `graphql.max_complexity` counts them) comes back in
//! `extensions.cost`, and the operation counts against the caller's rate
//! limits as one request per `graphql.points_per_request` points, so a
//! costly query weighs more than a cheap one, as Shopify's and GitHub's
//! GraphQL APIs do. The governance middleware counted the HTTP request as
//! one; the rest is spent here, after validation and before anything runs.

use std::{num::NonZeroU32, sync::Arc};

use async_graphql::{
    ServerError, ValidationResult,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextRequest, NextValidation},
};
use serde_json::json;

use crate::{
    error::{ApiError, Code},
    platform::{governance, graphql::Caller, state::AppState},
};

/// The extension, registered on the schema.
pub struct QueryCost;

impl ExtensionFactory for QueryCost {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Cost::default())
    }
}

/// One operation's cost, once validated.
#[derive(Default)]
struct Cost(std::sync::Mutex<Option<serde_json::Value>>);

/// How many requests `complexity` points count as: at least one.
pub fn requests(complexity: usize, points_per_request: usize) -> usize {
    complexity.div_ceil(points_per_request.max(1)).max(1)
}

fn refused(err: ApiError) -> Vec<ServerError> {
    use async_graphql::ErrorExtensions;
    vec![err.extend().into_server_error(async_graphql::Pos::default())]
}

#[async_trait::async_trait]
impl Extension for Cost {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        let (Some(state), Some(Caller(Ok(principal)))) =
            (ctx.data_opt::<AppState>(), ctx.data_opt::<Caller>())
        else {
            return Ok(result);
        };
        let requests = requests(result.complexity, state.config.graphql.points_per_request);
        let mut cost = json!({ "complexity": result.complexity, "requests": requests });
        if let Some(extra) = NonZeroU32::new(u32::try_from(requests - 1).unwrap_or(u32::MAX)) {
            let decision = governance::spend(state, principal, extra).await.map_err(refused)?;
            if !decision.allowed {
                let retry = decision.retry_after_secs.unwrap_or(1);
                return Err(refused(ApiError::new(
                    Code::RateLimited,
                    format!(
                        "this query counts as {requests} requests, more than your rate limit has left; retry in {retry} s or select fewer fields"
                    ),
                )));
            }
            if decision.limit.is_some() {
                cost["remaining"] = json!(decision.remaining);
            }
        }
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(cost);
        Ok(result)
    }

    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> async_graphql::Response {
        let response = next.run(ctx).await;
        let cost = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        match cost.and_then(|c| async_graphql::Value::from_json(c).ok()) {
            Some(cost) => response.extension("cost", cost),
            None => response,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_query_counts_as_one_request_per_points_begun() {
        assert_eq!(super::requests(0, 25), 1);
        assert_eq!(super::requests(25, 25), 1);
        assert_eq!(super::requests(26, 25), 2);
        assert_eq!(super::requests(500, 25), 20);
        assert_eq!(super::requests(7, 0), 7, "a zero setting counts each point");
    }
}
