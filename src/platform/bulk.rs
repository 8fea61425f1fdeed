//! Bulk endpoints (`feature.bulk-operations`): up to 1000 items a request,
//! each handled on its own (partial success), with a result per item in
//! the order given. A module's bulk route runs each item through the same
//! parsing, service call, checks and events as its single-item endpoint.

use std::future::Future;

use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::{
    error::{ApiError, ApiResult, FieldError, Problem},
    platform::http::Validate,
};

pub const MAX_ITEMS: usize = 1000;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// 1 to 1000 items, each shaped like the body of the single-item endpoint.
    #[schema(value_type = Vec<Object>, min_items = 1, max_items = 1000)]
    items: Vec<Value>,
}

impl Validate for BulkRequest {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        if self.items.is_empty() || self.items.len() > MAX_ITEMS {
            Err(vec![FieldError::new("items", format!("must hold 1 to {MAX_ITEMS} items"))])
        } else {
            Ok(())
        }
    }
}

/// The outcome of one item.
#[derive(Serialize, ToSchema)]
pub struct ItemResult {
    /// Position in `items`.
    index: usize,
    /// What the single-item endpoint would have answered.
    #[schema(example = 201)]
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Problem>,
}

#[derive(Serialize, ToSchema)]
pub struct BulkMeta {
    succeeded: usize,
    failed: usize,
}

#[derive(Serialize, ToSchema)]
pub struct BulkResponse {
    data: Vec<ItemResult>,
    meta: BulkMeta,
}

impl BulkRequest {
    /// Run `create` on each item's JSON body in order, one after the other;
    /// a failing item fails alone.
    pub async fn each<T, F, Fut>(self, mut create: F) -> HttpResponse
    where
        T: Serialize,
        F: FnMut(Vec<u8>) -> Fut,
        Fut: Future<Output = ApiResult<T>>,
    {
        let mut results = Vec::with_capacity(self.items.len());
        for (index, item) in self.items.into_iter().enumerate() {
            let result = async {
                let bytes = serde_json::to_vec(&item).map_err(ApiError::internal)?;
                serde_json::to_value(create(bytes).await?).map_err(ApiError::internal)
            }
            .await;
            results.push(match result {
                Ok(data) => ItemResult { index, status: 201, data: Some(data), error: None },
                Err(err) => ItemResult {
                    index,
                    status: err.code.status().as_u16(),
                    data: None,
                    error: Some(err.problem()),
                },
            });
        }
        let succeeded = results.iter().filter(|r| r.error.is_none()).count();
        let meta = BulkMeta { succeeded, failed: results.len() - succeeded };
        HttpResponse::Ok().json(BulkResponse { data: results, meta })
    }
}
