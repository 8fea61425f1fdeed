//! Procurement over GraphQL: purchase orders with their vendor and lines,
//! each line with its product and the product's stock, all batch-loaded.

use std::{collections::HashMap, sync::Arc};

use async_graphql::{ComplexObject, Context, Enum, InputObject, Object, SimpleObject};
use sea_orm::{ColumnTrait, QueryFilter};
use uuid::Uuid;

use super::{
    Action, LineView, NewLine, OrderFilter, PurchaseOrderView, ReceiptLine, STATES, VendorFilter, VendorView,
    check_order, check_receipt,
};
use crate::{
    api::graphql::{authorized, gql},
    error::ApiError,
    modules::inventory::{
        ProductView,
        graphql::{Loader, ProductId, loader},
    },
    platform::{
        http::{PageMeta, PageRequest, one_of},
        rbac::{InventoryRead, ProcurementApprove, ProcurementRead, ProcurementWrite},
    },
};

/// A vendor by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VendorId(pub Uuid);

impl async_graphql::dataloader::Loader<VendorId> for Loader {
    type Value = VendorView;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[VendorId]) -> Result<HashMap<VendorId, Self::Value>, Self::Error> {
        let ids: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
        let rows = self
            .tenant
            .find::<entity::vendor::Entity>()
            .filter(entity::vendor::Column::Id.is_in(ids))
            .all(&self.db)
            .await
            .map_err(|e| Arc::new(ApiError::from(e)))?;
        Ok(rows.into_iter().map(|m| (VendorId(m.id), m.into())).collect())
    }
}

#[ComplexObject]
impl PurchaseOrderView {
    /// Batch-loaded: a page of orders costs one vendor query.
    async fn vendor(&self, ctx: &Context<'_>) -> async_graphql::Result<VendorView> {
        authorized::<ProcurementRead>(ctx).map_err(gql)?;
        let vendor =
            loader(ctx)?.load_one(VendorId(self.vendor_id)).await.map_err(|e| gql(ApiError::clone_of(&e)))?;
        vendor.ok_or_else(|| gql(ApiError::not_found("vendor")))
    }
}

#[ComplexObject]
impl LineView {
    async fn product(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<ProductView>> {
        authorized::<InventoryRead>(ctx).map_err(gql)?;
        loader(ctx)?.load_one(ProductId(self.product_id)).await.map_err(|e| gql(ApiError::clone_of(&e)))
    }
}

#[derive(SimpleObject)]
#[graphql(name = "PurchaseOrderPage")]
pub struct OrderPage {
    items: Vec<PurchaseOrderView>,
    page_info: PageMeta,
}

#[derive(Default)]
pub struct ProcurementQuery;

#[Object]
impl ProcurementQuery {
    /// Purchase orders, newest first.
    async fn purchase_orders(
        &self,
        ctx: &Context<'_>,
        status: Option<String>,
        vendor_id: Option<Uuid>,
        #[graphql(default = 1)] page: u64,
        #[graphql(default = 25)] per_page: u64,
    ) -> async_graphql::Result<OrderPage> {
        let (state, principal) = authorized::<ProcurementRead>(ctx).map_err(gql)?;
        let page = PageRequest::new(Some(page), Some(per_page)).map_err(gql)?;
        one_of("status", status.as_deref(), &STATES).map_err(gql)?;
        let filter = OrderFilter { status, vendor_id, ..OrderFilter::default() };
        let paged = state.procurement.list_orders(principal.tenant, filter, page).await.map_err(gql)?;
        Ok(OrderPage { items: paged.data, page_info: paged.meta })
    }

    async fn purchase_order(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<PurchaseOrderView> {
        let (state, principal) = authorized::<ProcurementRead>(ctx).map_err(gql)?;
        state.procurement.get_order(principal.tenant, id).await.map_err(gql)
    }

    /// Vendors by name.
    async fn vendors(
        &self,
        ctx: &Context<'_>,
        active: Option<bool>,
        #[graphql(default = 1)] page: u64,
        #[graphql(default = 25)] per_page: u64,
    ) -> async_graphql::Result<Vec<VendorView>> {
        let (state, principal) = authorized::<ProcurementRead>(ctx).map_err(gql)?;
        let page = PageRequest::new(Some(page), Some(per_page)).map_err(gql)?;
        let filter = VendorFilter { active, sort: (entity::vendor::Column::Name, false) };
        Ok(state.procurement.list_vendors(principal.tenant, filter, page).await.map_err(gql)?.data)
    }
}

#[derive(InputObject)]
#[graphql(name = "PurchaseOrderLineInput")]
pub struct LineInput {
    product_id: Uuid,
    quantity: i64,
    unit_cost: i64,
}

#[derive(InputObject)]
#[graphql(name = "ReceiptLineInput")]
pub struct ReceiptInput {
    line_id: Uuid,
    quantity: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(name = "PurchaseOrderAction")]
pub enum ActionInput {
    Submit,
    Approve,
    Cancel,
    Close,
}

#[derive(Default)]
pub struct ProcurementMutation;

#[Object]
impl ProcurementMutation {
    /// Draft a purchase order; the total is computed by the server.
    async fn create_purchase_order(
        &self,
        ctx: &Context<'_>,
        vendor_id: Uuid,
        warehouse_id: Uuid,
        lines: Vec<LineInput>,
        notes: Option<String>,
    ) -> async_graphql::Result<PurchaseOrderView> {
        let (state, principal) = authorized::<ProcurementWrite>(ctx).map_err(gql)?;
        let lines: Vec<NewLine> = lines
            .into_iter()
            .map(|l| NewLine { product_id: l.product_id, quantity: l.quantity, unit_cost: l.unit_cost })
            .collect();
        check_order(notes.as_deref(), &lines).map_err(|errors| gql(ApiError::validation(errors)))?;
        let tenant = principal.tenant;
        state
            .procurement
            .create_order(tenant, principal.user_id, vendor_id, warehouse_id, notes, lines)
            .await
            .map_err(gql)
    }

    /// Move an order through its state machine (approval needs
    /// procurement:approve); `ifVersion` works as `If-Match` does on REST.
    async fn transition_purchase_order(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        action: ActionInput,
        if_version: Option<i32>,
    ) -> async_graphql::Result<PurchaseOrderView> {
        let (state, principal) = match action {
            ActionInput::Approve => authorized::<ProcurementApprove>(ctx),
            _ => authorized::<ProcurementWrite>(ctx),
        }
        .map_err(gql)?;
        let action = match action {
            ActionInput::Submit => Action::Submit,
            ActionInput::Approve => Action::Approve,
            ActionInput::Cancel => Action::Cancel,
            ActionInput::Close => Action::Close,
        };
        state
            .procurement
            .transition(principal.tenant, principal.user_id, id, if_version, action)
            .await
            .map_err(gql)
    }

    /// Receive goods: order, stock and ledger in one transaction.
    async fn receive_goods(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        lines: Vec<ReceiptInput>,
        if_version: Option<i32>,
    ) -> async_graphql::Result<PurchaseOrderView> {
        let (state, principal) = authorized::<ProcurementWrite>(ctx).map_err(gql)?;
        let lines: Vec<ReceiptLine> =
            lines.into_iter().map(|l| ReceiptLine { line_id: l.line_id, quantity: l.quantity }).collect();
        check_receipt(&lines).map_err(|errors| gql(ApiError::validation(errors)))?;
        state
            .procurement
            .receive(principal.tenant, principal.user_id, id, if_version, lines)
            .await
            .map_err(gql)
    }
}
