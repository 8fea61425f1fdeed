//! Inventory over GraphQL: products with their stock levels, loaded in
//! batches (a page of products costs one stock query, not one per product).

use std::{collections::HashMap, sync::Arc};

use async_graphql::{ComplexObject, Context, EmptyMutation, Object, SimpleObject, dataloader::DataLoader};
use uuid::Uuid;

use super::{InventoryRead, InventoryService, PRODUCT_SORTS, ProductFilter, ProductView, StockLevelView};
use crate::{
    error::ApiError,
    platform::{
        graphql::{authorized, data, gql, list_request},
        http::{PageMeta, parse_sort},
        tenancy::TenantScope,
    },
};

/// Batches inventory lookups of one request, within its tenant.
pub struct Loader {
    inventory: Arc<dyn InventoryService>,
    tenant: TenantScope,
}

/// The request's batch loader, run on counted tasks (see `db::spawn_counted`).
pub fn loader(inventory: Arc<dyn InventoryService>, tenant: TenantScope) -> DataLoader<Loader> {
    DataLoader::new(Loader { inventory, tenant }, crate::platform::db::spawn_counted)
}

/// Stock levels of products, by product id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LevelsOf(pub Uuid);

/// A product by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProductId(pub Uuid);

impl async_graphql::dataloader::Loader<LevelsOf> for Loader {
    type Value = Vec<StockLevelView>;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[LevelsOf]) -> Result<HashMap<LevelsOf, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let views = self.inventory.levels_of_products(self.tenant, ids).await.map_err(Arc::new)?;
        let mut out: HashMap<LevelsOf, Vec<StockLevelView>> = keys.iter().map(|k| (*k, Vec::new())).collect();
        for view in views {
            out.entry(LevelsOf(view.product_id)).or_default().push(view);
        }
        Ok(out)
    }
}

impl async_graphql::dataloader::Loader<ProductId> for Loader {
    type Value = ProductView;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[ProductId]) -> Result<HashMap<ProductId, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let products = self.inventory.products_by_ids(self.tenant, ids).await.map_err(Arc::new)?;
        Ok(products.into_iter().map(|p| (ProductId(p.id), p)).collect())
    }
}

/// A product by id, batch-loaded: for other modules' objects that point at one.
pub async fn product(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<ProductView>> {
    authorized::<InventoryRead>(ctx).map_err(gql)?;
    let loader = data::<DataLoader<Loader>>(ctx).map_err(gql)?;
    loader.load_one(ProductId(id)).await.map_err(|e| gql(ApiError::clone_of(&e)))
}

#[ComplexObject]
impl ProductView {
    /// Stock of this product in every warehouse.
    async fn stock_levels(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<StockLevelView>> {
        authorized::<InventoryRead>(ctx).map_err(gql)?;
        let loader = data::<DataLoader<Loader>>(ctx).map_err(gql)?;
        let levels = loader.load_one(LevelsOf(self.id)).await.map_err(|e| gql(ApiError::clone_of(&e)))?;
        Ok(levels.unwrap_or_default())
    }
}

#[derive(SimpleObject)]
#[graphql(name = "ProductPage")]
pub struct ProductPage {
    items: Vec<ProductView>,
    page_info: PageMeta,
}

#[derive(Default)]
pub struct Query;

/// Inventory has no GraphQL mutations yet.
pub type Mutation = EmptyMutation;

#[Object(name = "InventoryQuery")]
impl Query {
    /// Products, newest first (as `GET /api/v1/products`).
    async fn products(
        &self,
        ctx: &Context<'_>,
        sku: Option<String>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<ProductPage> {
        let (_, principal) = authorized::<InventoryRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let sort = parse_sort(None, &PRODUCT_SORTS).map_err(gql)?;
        let filter = ProductFilter { sku, active: None, sort };
        let inventory = data::<Arc<dyn InventoryService>>(ctx).map_err(gql)?;
        let paged = inventory.list_products(principal.tenant, filter, &list).await.map_err(gql)?;
        Ok(ProductPage { items: paged.data, page_info: paged.meta })
    }

    async fn product(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<ProductView> {
        let (_, principal) = authorized::<InventoryRead>(ctx).map_err(gql)?;
        let inventory = data::<Arc<dyn InventoryService>>(ctx).map_err(gql)?;
        inventory.get_product(principal.tenant, id).await.map_err(gql)
    }
}
