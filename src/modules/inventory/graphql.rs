//! Inventory over GraphQL: products with their stock levels, loaded in
//! batches (a page of products costs one stock query, not one per product),
//! and every REST operation of the module as a query or mutation, through
//! the same inputs, validation and service calls as `routes.rs`.

use std::{collections::HashMap, sync::Arc};

use async_graphql::{ComplexObject, Context, Object, SimpleObject, dataloader::DataLoader};
use uuid::Uuid;

use super::{
    InventoryRead, InventoryService, InventoryWrite, LEVEL_SORTS, LevelFilter, MOVEMENT_KINDS,
    MOVEMENT_SORTS, MovementFilter, MovementView, PRODUCT_SORTS, ProductFilter, ProductView, Recommendation,
    ReservationView, Settings, StockLevelView, WAREHOUSE_SORTS, WarehouseFilter, WarehouseView,
    routes::{
        Adjustment, CreateProduct, CreateWarehouse, Reorder, Reserve, Settle, Transfer, UpdateProduct, settle,
    },
};
use crate::{
    error::ApiError,
    platform::{
        graphql::{authorized, data, gql, list_request, validated},
        http::{PageMeta, one_of, parse_sort},
        search::{Search, Window},
        tenancy::TenantScope,
    },
};

fn service<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a dyn InventoryService> {
    Ok(&**data::<Arc<dyn InventoryService>>(ctx).map_err(gql)?)
}

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

#[ComplexObject]
impl StockLevelView {
    /// The level's product (REST: `expand=product`).
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProductView>> {
        product(ctx, self.product_id).await
    }
}

#[derive(SimpleObject)]
#[graphql(name = "ProductPage")]
pub struct ProductPage {
    items: Vec<ProductView>,
    page_info: PageMeta,
}

/// A page of some inventory list.
#[derive(SimpleObject)]
#[graphql(concrete(name = "WarehousePage", params(WarehouseView)))]
#[graphql(concrete(name = "StockLevelPage", params(StockLevelView)))]
#[graphql(concrete(name = "StockMovementPage", params(MovementView)))]
pub struct Page<T: async_graphql::OutputType> {
    items: Vec<T>,
    page_info: PageMeta,
}

impl<T: async_graphql::OutputType> From<crate::platform::http::Paged<T>> for Page<T> {
    fn from(paged: crate::platform::http::Paged<T>) -> Self {
        Page { items: paged.data, page_info: paged.meta }
    }
}

#[derive(Default)]
pub struct Query;

#[Object(name = "InventoryQuery")]
impl Query {
    /// Products, newest first (as `GET /api/v1/products`).
    #[allow(clippy::too_many_arguments)]
    async fn products(
        &self,
        ctx: &Context<'_>,
        sku: Option<String>,
        q: Option<String>,
        created_after: Option<chrono::DateTime<chrono::Utc>>,
        created_before: Option<chrono::DateTime<chrono::Utc>>,
        updated_after: Option<chrono::DateTime<chrono::Utc>>,
        updated_before: Option<chrono::DateTime<chrono::Utc>>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<ProductPage> {
        let (_, principal) = authorized::<InventoryRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let sort = parse_sort(None, &PRODUCT_SORTS).map_err(gql)?;
        let filter = ProductFilter {
            sku,
            active: None,
            q: Search::parse(q.as_deref()).map_err(gql)?,
            created: Window::new("created", created_after, created_before).map_err(gql)?,
            updated: Window::new("updated", updated_after, updated_before).map_err(gql)?,
            sort,
        };
        let paged = service(ctx)?.list_products(principal.tenant, filter, &list).await.map_err(gql)?;
        Ok(ProductPage { items: paged.data, page_info: paged.meta })
    }

    /// A product (as `GET /api/v1/products/{id}`).
    async fn product(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<ProductView> {
        let (_, principal) = authorized::<InventoryRead>(ctx).map_err(gql)?;
        service(ctx)?.get_product(principal.tenant, id).await.map_err(gql)
    }

    /// Warehouses, by code (as `GET /api/v1/warehouses`).
    #[allow(clippy::too_many_arguments)]
    async fn warehouses(
        &self,
        ctx: &Context<'_>,
        q: Option<String>,
        created_after: Option<chrono::DateTime<chrono::Utc>>,
        created_before: Option<chrono::DateTime<chrono::Utc>>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<Page<WarehouseView>> {
        let (_, principal) = authorized::<InventoryRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let filter = WarehouseFilter {
            q: Search::parse(q.as_deref()).map_err(gql)?,
            created: Window::new("created", created_after, created_before).map_err(gql)?,
            sort: parse_sort(None, &WAREHOUSE_SORTS).map_err(gql)?,
        };
        Ok(service(ctx)?.list_warehouses(principal.tenant, filter, &list).await.map_err(gql)?.into())
    }

    /// A warehouse (as `GET /api/v1/warehouses/{id}`).
    async fn warehouse(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<WarehouseView> {
        let (_, principal) = authorized::<InventoryRead>(ctx).map_err(gql)?;
        service(ctx)?.get_warehouse(principal.tenant, id).await.map_err(gql)
    }

    /// Stock levels, by product (as `GET /api/v1/stock-levels`).
    async fn stock_levels(
        &self,
        ctx: &Context<'_>,
        product_id: Option<Uuid>,
        warehouse_id: Option<Uuid>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<Page<StockLevelView>> {
        let (_, principal) = authorized::<InventoryRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let sort = parse_sort(None, &LEVEL_SORTS).map_err(gql)?;
        let filter = LevelFilter { product_id, warehouse_id, sort };
        Ok(service(ctx)?.stock_levels(principal.tenant, filter, &list).await.map_err(gql)?.into())
    }

    /// The stock ledger, newest first (as `GET /api/v1/stock-movements`).
    #[allow(clippy::too_many_arguments)]
    async fn stock_movements(
        &self,
        ctx: &Context<'_>,
        product_id: Option<Uuid>,
        warehouse_id: Option<Uuid>,
        kind: Option<String>,
        reference: Option<String>,
        created_after: Option<chrono::DateTime<chrono::Utc>>,
        created_before: Option<chrono::DateTime<chrono::Utc>>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<Page<MovementView>> {
        let (_, principal) = authorized::<InventoryRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let sort = parse_sort(None, &MOVEMENT_SORTS).map_err(gql)?;
        one_of("kind", kind.as_deref(), &MOVEMENT_KINDS).map_err(gql)?;
        let created = Window::new("created", created_after, created_before).map_err(gql)?;
        let filter = MovementFilter { product_id, warehouse_id, kind, reference, created, sort };
        Ok(service(ctx)?.movements(principal.tenant, filter, &list).await.map_err(gql)?.into())
    }

    /// Levels below their reorder point, most urgent first (as
    /// `GET /api/v1/inventory/reorder-recommendations`).
    async fn reorder_recommendations(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Recommendation>> {
        let (_, principal) = authorized::<InventoryRead>(ctx).map_err(gql)?;
        service(ctx)?.reorder_recommendations(principal.tenant).await.map_err(gql)
    }

    /// A reservation by its reference (as `GET /api/v1/reservations/{reference}`).
    async fn reservation(
        &self,
        ctx: &Context<'_>,
        reference: String,
    ) -> async_graphql::Result<ReservationView> {
        let (_, principal) = authorized::<InventoryRead>(ctx).map_err(gql)?;
        service(ctx)?.reservation(principal.tenant, &reference).await.map_err(gql)
    }
}

#[derive(Default)]
pub struct Mutation;

/// Each mutation is its REST operation: the same input, validation, errors
/// and permission (`inventory:write`).
#[Object(name = "InventoryMutation")]
impl Mutation {
    /// Create a product (as `POST /api/v1/products`).
    async fn create_product(
        &self,
        ctx: &Context<'_>,
        input: CreateProduct,
    ) -> async_graphql::Result<ProductView> {
        let (_, principal) = authorized::<InventoryWrite>(ctx).map_err(gql)?;
        let input = validated(input)?;
        service(ctx)?.create_product(principal.tenant, input.into()).await.map_err(gql)
    }

    /// Change a product (as `PATCH /api/v1/products/{id}`); `ifVersion`
    /// works as `If-Match` does, `active: false` archives it.
    async fn update_product(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        input: UpdateProduct,
        if_version: Option<i32>,
    ) -> async_graphql::Result<ProductView> {
        let (_, principal) = authorized::<InventoryWrite>(ctx).map_err(gql)?;
        let input = validated(input)?;
        service(ctx)?.update_product(principal.tenant, id, if_version, input.into()).await.map_err(gql)
    }

    /// Create a warehouse (as `POST /api/v1/warehouses`).
    async fn create_warehouse(
        &self,
        ctx: &Context<'_>,
        input: CreateWarehouse,
    ) -> async_graphql::Result<WarehouseView> {
        let (_, principal) = authorized::<InventoryWrite>(ctx).map_err(gql)?;
        validated(input)?.run(service(ctx)?, principal.tenant).await.map_err(gql)
    }

    /// Set a level's reorder point and quantity (as
    /// `PUT /api/v1/stock-levels/{product_id}/{warehouse_id}/reorder`).
    async fn set_reorder(
        &self,
        ctx: &Context<'_>,
        product_id: Uuid,
        warehouse_id: Uuid,
        input: Reorder,
    ) -> async_graphql::Result<StockLevelView> {
        let (_, principal) = authorized::<InventoryWrite>(ctx).map_err(gql)?;
        validated(input)?.run(service(ctx)?, principal.tenant, product_id, warehouse_id).await.map_err(gql)
    }

    /// Change on-hand stock (as `POST /api/v1/stock/adjustments`).
    async fn adjust_stock(
        &self,
        ctx: &Context<'_>,
        input: Adjustment,
    ) -> async_graphql::Result<StockLevelView> {
        let (state, principal) = authorized::<InventoryWrite>(ctx).map_err(gql)?;
        let input = validated(input)?;
        input.run(&state.db, service(ctx)?, principal.tenant, principal.user_id).await.map_err(gql)
    }

    /// Move stock between warehouses (as `POST /api/v1/stock/transfers`);
    /// `true` once moved.
    async fn transfer_stock(&self, ctx: &Context<'_>, input: Transfer) -> async_graphql::Result<bool> {
        let (state, principal) = authorized::<InventoryWrite>(ctx).map_err(gql)?;
        let input = validated(input)?;
        input.run(&state.db, service(ctx)?, principal.tenant, principal.user_id).await.map_err(gql)?;
        Ok(true)
    }

    /// Hold stock for a reference, every line or none (as
    /// `POST /api/v1/reservations`).
    async fn reserve_stock(
        &self,
        ctx: &Context<'_>,
        input: Reserve,
    ) -> async_graphql::Result<ReservationView> {
        let (_, principal) = authorized::<InventoryWrite>(ctx).map_err(gql)?;
        let input = validated(input)?;
        let settings = data::<Settings>(ctx).map_err(gql)?;
        input.run(service(ctx)?, settings, principal.tenant, principal.user_id).await.map_err(gql)
    }

    /// Ship what a reservation holds (as `POST /api/v1/reservations/{reference}/commit`).
    async fn commit_reservation(
        &self,
        ctx: &Context<'_>,
        reference: String,
    ) -> async_graphql::Result<ReservationView> {
        let (state, principal) = authorized::<InventoryWrite>(ctx).map_err(gql)?;
        let tenant = principal.tenant;
        settle(&state.db, service(ctx)?, tenant, principal.user_id, &reference, Settle::Commit)
            .await
            .map_err(gql)
    }

    /// Give back what a reservation holds (as `POST /api/v1/reservations/{reference}/release`).
    async fn release_reservation(
        &self,
        ctx: &Context<'_>,
        reference: String,
    ) -> async_graphql::Result<ReservationView> {
        let (state, principal) = authorized::<InventoryWrite>(ctx).map_err(gql)?;
        let tenant = principal.tenant;
        settle(&state.db, service(ctx)?, tenant, principal.user_id, &reference, Settle::Release)
            .await
            .map_err(gql)
    }
}
