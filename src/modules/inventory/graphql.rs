//! Inventory over GraphQL: products with their stock levels, loaded in
//! batches (a page of products costs one stock query, not one per product).

use std::collections::HashMap;

use async_graphql::{ComplexObject, Context, Object, SimpleObject, dataloader::DataLoader};
use sea_orm::{ColumnTrait, DatabaseConnection, QueryFilter};
use uuid::Uuid;

use super::{ProductFilter, ProductView, StockLevelView};
use crate::{
    api::graphql::{authorized, gql},
    error::ApiError,
    platform::{
        http::{PageMeta, PageRequest},
        rbac::InventoryRead,
        tenancy::TenantScope,
    },
};
use entity::{product, stock_level};

/// Batches lookups of one request, within its tenant.
pub struct Loader {
    pub db: DatabaseConnection,
    pub tenant: TenantScope,
}

/// Stock levels of products, by product id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LevelsOf(pub Uuid);

/// A product by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProductId(pub Uuid);

fn db_error(err: sea_orm::DbErr) -> std::sync::Arc<ApiError> {
    std::sync::Arc::new(ApiError::from(err))
}

impl async_graphql::dataloader::Loader<LevelsOf> for Loader {
    type Value = Vec<StockLevelView>;
    type Error = std::sync::Arc<ApiError>;

    async fn load(&self, keys: &[LevelsOf]) -> Result<HashMap<LevelsOf, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let levels = self
            .tenant
            .find::<stock_level::Entity>()
            .filter(stock_level::Column::ProductId.is_in(ids))
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let views = super::service::stock_views(&self.db, self.tenant, levels).await.map_err(db_error)?;
        let mut out: HashMap<LevelsOf, Vec<StockLevelView>> = keys.iter().map(|k| (*k, Vec::new())).collect();
        for view in views {
            out.entry(LevelsOf(view.product_id)).or_default().push(view);
        }
        Ok(out)
    }
}

impl async_graphql::dataloader::Loader<ProductId> for Loader {
    type Value = ProductView;
    type Error = std::sync::Arc<ApiError>;

    async fn load(&self, keys: &[ProductId]) -> Result<HashMap<ProductId, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let rows = self
            .tenant
            .find::<product::Entity>()
            .filter(product::Column::Id.is_in(ids))
            .all(&self.db)
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().map(|m| (ProductId(m.id), super::service::product_view(m))).collect())
    }
}

pub fn loader<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a DataLoader<Loader>> {
    ctx.data::<DataLoader<Loader>>().map_err(|_| gql(ApiError::internal(anyhow::anyhow!("no data loader"))))
}

#[ComplexObject]
impl ProductView {
    /// Stock of this product in every warehouse.
    async fn stock_levels(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<StockLevelView>> {
        authorized::<InventoryRead>(ctx).map_err(gql)?;
        let levels =
            loader(ctx)?.load_one(LevelsOf(self.id)).await.map_err(|e| gql(ApiError::clone_of(&e)))?;
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
pub struct InventoryQuery;

#[Object]
impl InventoryQuery {
    /// Products, newest first.
    async fn products(
        &self,
        ctx: &Context<'_>,
        sku: Option<String>,
        #[graphql(default = 1)] page: u64,
        #[graphql(default = 25)] per_page: u64,
    ) -> async_graphql::Result<ProductPage> {
        let (state, principal) = authorized::<InventoryRead>(ctx).map_err(gql)?;
        let page = PageRequest::new(Some(page), Some(per_page)).map_err(gql)?;
        let filter = ProductFilter { sku, active: None, sort: (product::Column::CreatedAt, true) };
        let paged = state.inventory.list_products(principal.tenant, filter, page).await.map_err(gql)?;
        Ok(ProductPage { items: paged.data, page_info: paged.meta })
    }

    async fn product(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<ProductView> {
        let (state, principal) = authorized::<InventoryRead>(ctx).map_err(gql)?;
        state.inventory.get_product(principal.tenant, id).await.map_err(gql)
    }
}
