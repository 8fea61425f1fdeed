//! Channels over GraphQL: the same service, permissions and errors as REST.

use std::{collections::BTreeMap, sync::Arc};

use async_graphql::{Context, InputObject, Json, Object, SimpleObject};
use uuid::Uuid;

use super::{
    CONNECTION_SORTS, ChannelService, ChannelsRead, ChannelsWrite, ConnectionChanges, ConnectionFilter,
    ConnectionView, DEAD_LETTER_SORTS, DeadLetterCount, DeadLetterFilter, DeadLetterView, DriftView,
    ImportView, MAPPING_SORTS, MappingFilter, MappingView, NewConnection, RECEIPT_SORTS, ReceiptView,
    RemoteProduct, STATUSES, SyncRunView,
};
use crate::platform::{
    graphql::{authorized, data, gql, list_request},
    http::{PageMeta, one_of, parse_sort},
};

fn service<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Arc<dyn ChannelService>> {
    data::<Arc<dyn ChannelService>>(ctx).map_err(gql)
}

#[derive(SimpleObject)]
pub struct ChannelConnectionPage {
    items: Vec<ConnectionView>,
    page_info: PageMeta,
}

#[derive(SimpleObject)]
pub struct ChannelWebhookReceiptPage {
    items: Vec<ReceiptView>,
    page_info: PageMeta,
}

#[derive(SimpleObject)]
pub struct ChannelSyncRunPage {
    items: Vec<SyncRunView>,
    page_info: PageMeta,
}

#[derive(SimpleObject)]
pub struct ChannelDriftPage {
    items: Vec<DriftView>,
    page_info: PageMeta,
}

#[derive(SimpleObject)]
pub struct ChannelDeadLetterPage {
    items: Vec<DeadLetterView>,
    page_info: PageMeta,
}

#[derive(SimpleObject)]
pub struct ChannelMappingPage {
    items: Vec<MappingView>,
    page_info: PageMeta,
}

/// A store's product with its own payload.
#[derive(SimpleObject)]
pub struct ChannelRemoteProductWithRaw {
    product: RemoteProduct,
    raw: Json<serde_json::Value>,
}

/// A credential, by name.
#[derive(InputObject)]
pub struct ChannelCredentialInput {
    name: String,
    value: String,
}

fn credentials(list: Vec<ChannelCredentialInput>) -> BTreeMap<String, String> {
    list.into_iter().map(|c| (c.name, c.value)).collect()
}

#[derive(Default)]
pub struct Query;

#[Object(name = "ChannelsQuery")]
impl Query {
    /// Store connections, newest first (as `GET /api/v1/channel-connections`).
    async fn channel_connections(
        &self,
        ctx: &Context<'_>,
        channel: Option<String>,
        status: Option<String>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<ChannelConnectionPage> {
        let (_, principal) = authorized::<ChannelsRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let channels = service(ctx)?;
        one_of("channel", channel.as_deref(), &channels.channels()).map_err(gql)?;
        one_of("status", status.as_deref(), &STATUSES).map_err(gql)?;
        let sort = parse_sort(None, &CONNECTION_SORTS).map_err(gql)?;
        let filter = ConnectionFilter { channel, status, sort };
        let paged = channels.list_connections(principal.tenant, filter, &list).await.map_err(gql)?;
        Ok(ChannelConnectionPage { items: paged.data, page_info: paged.meta })
    }

    async fn channel_connection(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<ConnectionView> {
        let (_, principal) = authorized::<ChannelsRead>(ctx).map_err(gql)?;
        service(ctx)?.get_connection(principal.tenant, id).await.map_err(gql)
    }

    /// One product as the store has it now.
    async fn channel_remote_product(
        &self,
        ctx: &Context<'_>,
        connection_id: Uuid,
        remote_id: String,
    ) -> async_graphql::Result<ChannelRemoteProductWithRaw> {
        let (_, principal) = authorized::<ChannelsRead>(ctx).map_err(gql)?;
        let product =
            service(ctx)?.remote_product(principal.tenant, connection_id, &remote_id).await.map_err(gql)?;
        Ok(ChannelRemoteProductWithRaw { raw: Json(product.raw.clone()), product })
    }

    async fn channel_import(
        &self,
        ctx: &Context<'_>,
        connection_id: Uuid,
        id: Uuid,
    ) -> async_graphql::Result<ImportView> {
        let (_, principal) = authorized::<ChannelsRead>(ctx).map_err(gql)?;
        service(ctx)?.get_import(principal.tenant, connection_id, id).await.map_err(gql)
    }

    /// Local products linked to store variants, newest first.
    /// A connection's push and reconcile runs, newest first.
    async fn channel_sync_runs(
        &self,
        ctx: &Context<'_>,
        connection_id: Uuid,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<ChannelSyncRunPage> {
        let (_, principal) = authorized::<ChannelsRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let paged =
            service(ctx)?.list_sync_runs(principal.tenant, connection_id, &list).await.map_err(gql)?;
        Ok(ChannelSyncRunPage { items: paged.data, page_info: paged.meta })
    }

    /// A push or reconcile run and how far it got.
    async fn channel_sync_run(
        &self,
        ctx: &Context<'_>,
        connection_id: Uuid,
        id: Uuid,
    ) -> async_graphql::Result<SyncRunView> {
        let (_, principal) = authorized::<ChannelsRead>(ctx).map_err(gql)?;
        service(ctx)?.get_sync_run(principal.tenant, connection_id, id).await.map_err(gql)
    }

    /// The drift a reconcile run found, by SKU.
    async fn channel_drifts(
        &self,
        ctx: &Context<'_>,
        connection_id: Uuid,
        run_id: Uuid,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<ChannelDriftPage> {
        let (_, principal) = authorized::<ChannelsRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let paged =
            service(ctx)?.list_drifts(principal.tenant, connection_id, run_id, &list).await.map_err(gql)?;
        Ok(ChannelDriftPage { items: paged.data, page_info: paged.meta })
    }

    async fn channel_mappings(
        &self,
        ctx: &Context<'_>,
        connection_id: Option<Uuid>,
        product_id: Option<Uuid>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<ChannelMappingPage> {
        let (_, principal) = authorized::<ChannelsRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let sort = parse_sort(None, &MAPPING_SORTS).map_err(gql)?;
        let filter = MappingFilter { connection_id, product_id, sort };
        let paged = service(ctx)?.list_mappings(principal.tenant, filter, &list).await.map_err(gql)?;
        Ok(ChannelMappingPage { items: paged.data, page_info: paged.meta })
    }

    /// Pushes whose retries ran out, oldest first (as `GET /api/v1/channel-dead-letters`).
    async fn channel_dead_letters(
        &self,
        ctx: &Context<'_>,
        connection_id: Option<Uuid>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<ChannelDeadLetterPage> {
        let (_, principal) = authorized::<ChannelsRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let sort = parse_sort(None, &DEAD_LETTER_SORTS).map_err(gql)?;
        let filter = DeadLetterFilter { connection_id, sort };
        let paged = service(ctx)?.list_dead_letters(principal.tenant, filter, &list).await.map_err(gql)?;
        Ok(ChannelDeadLetterPage { items: paged.data, page_info: paged.meta })
    }

    /// The webhooks a store sent to a connection, newest first.
    async fn channel_webhook_receipts(
        &self,
        ctx: &Context<'_>,
        connection_id: Uuid,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> async_graphql::Result<ChannelWebhookReceiptPage> {
        let (_, principal) = authorized::<ChannelsRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let sort = parse_sort(None, &RECEIPT_SORTS).map_err(gql)?;
        let paged =
            service(ctx)?.list_receipts(principal.tenant, connection_id, sort, &list).await.map_err(gql)?;
        Ok(ChannelWebhookReceiptPage { items: paged.data, page_info: paged.meta })
    }
}

#[derive(InputObject)]
pub struct CreateChannelConnectionInput {
    channel: String,
    name: String,
    base_url: String,
    credentials: Vec<ChannelCredentialInput>,
    webhook_secret: Option<String>,
    warehouse_id: Uuid,
    remote_location_id: Option<String>,
    currency: String,
    /// 0 when absent.
    safety_buffer: Option<i64>,
}

#[derive(InputObject)]
pub struct UpdateChannelConnectionInput {
    name: Option<String>,
    base_url: Option<String>,
    /// Replaces every credential.
    credentials: Option<Vec<ChannelCredentialInput>>,
    webhook_secret: Option<String>,
    warehouse_id: Option<Uuid>,
    remote_location_id: Option<String>,
    safety_buffer: Option<i64>,
}

#[derive(Default)]
pub struct Mutation;

#[Object(name = "ChannelsMutation")]
impl Mutation {
    /// Connect a store (as `POST /api/v1/channel-connections`).
    async fn create_channel_connection(
        &self,
        ctx: &Context<'_>,
        input: CreateChannelConnectionInput,
    ) -> async_graphql::Result<ConnectionView> {
        let (_, principal) = authorized::<ChannelsWrite>(ctx).map_err(gql)?;
        let new = NewConnection {
            channel: input.channel,
            name: input.name,
            base_url: input.base_url,
            credentials: credentials(input.credentials),
            webhook_secret: input.webhook_secret,
            warehouse_id: input.warehouse_id,
            remote_location_id: input.remote_location_id,
            currency: input.currency,
            safety_buffer: input.safety_buffer.unwrap_or(0),
        };
        service(ctx)?.create_connection(principal.tenant, new).await.map_err(gql)
    }

    /// Change a connection; `ifMatch` refuses a change made meanwhile.
    async fn update_channel_connection(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        input: UpdateChannelConnectionInput,
        if_version: Option<i32>,
    ) -> async_graphql::Result<ConnectionView> {
        let (state, principal) = authorized::<ChannelsWrite>(ctx).map_err(gql)?;
        let changes = ConnectionChanges {
            name: input.name,
            base_url: input.base_url,
            credentials: input.credentials.map(credentials),
            webhook_secret: input.webhook_secret,
            warehouse_id: input.warehouse_id,
            remote_location_id: input.remote_location_id,
            safety_buffer: input.safety_buffer,
        };
        let view =
            service(ctx)?.update_connection(principal.tenant, id, if_version, changes).await.map_err(gql)?;
        state.wakeup.wake();
        Ok(view)
    }

    async fn delete_channel_connection(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<bool> {
        let (_, principal) = authorized::<ChannelsWrite>(ctx).map_err(gql)?;
        service(ctx)?.delete_connection(principal.tenant, id).await.map_err(gql)?;
        Ok(true)
    }

    /// Import the store's catalog in the background.
    async fn start_channel_import(
        &self,
        ctx: &Context<'_>,
        connection_id: Uuid,
    ) -> async_graphql::Result<ImportView> {
        let (state, principal) = authorized::<ChannelsWrite>(ctx).map_err(gql)?;
        let run = service(ctx)?.start_import(principal.tenant, connection_id).await.map_err(gql)?;
        state.wakeup.wake();
        Ok(run)
    }

    /// Push the ATP of every mapped product to the store in the background.
    async fn start_channel_sync(
        &self,
        ctx: &Context<'_>,
        connection_id: Uuid,
    ) -> async_graphql::Result<SyncRunView> {
        let (state, principal) = authorized::<ChannelsWrite>(ctx).map_err(gql)?;
        let run = service(ctx)?.start_sync(principal.tenant, connection_id).await.map_err(gql)?;
        state.wakeup.wake();
        Ok(run)
    }

    /// Read the store's quantities, report and correct drift, in the background.
    async fn start_channel_reconcile(
        &self,
        ctx: &Context<'_>,
        connection_id: Uuid,
    ) -> async_graphql::Result<SyncRunView> {
        let (state, principal) = authorized::<ChannelsWrite>(ctx).map_err(gql)?;
        let run = service(ctx)?.start_reconcile(principal.tenant, connection_id).await.map_err(gql)?;
        state.wakeup.wake();
        Ok(run)
    }

    /// Push a product's ATP to the store in the background.
    async fn push_channel_product(
        &self,
        ctx: &Context<'_>,
        connection_id: Uuid,
        product_id: Uuid,
    ) -> async_graphql::Result<MappingView> {
        let (state, principal) = authorized::<ChannelsWrite>(ctx).map_err(gql)?;
        let mapping =
            service(ctx)?.push_product(principal.tenant, connection_id, product_id).await.map_err(gql)?;
        state.wakeup.wake();
        Ok(mapping)
    }

    /// Push a dead letter's product again with its ATP of now, and drop the letter.
    async fn replay_channel_dead_letter(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<MappingView> {
        let (state, principal) = authorized::<ChannelsWrite>(ctx).map_err(gql)?;
        let mapping = service(ctx)?.replay_dead_letter(principal.tenant, id).await.map_err(gql)?;
        state.wakeup.wake();
        Ok(mapping)
    }

    /// Replay every dead letter of a connection, or of the tenant.
    async fn replay_channel_dead_letters(
        &self,
        ctx: &Context<'_>,
        connection_id: Option<Uuid>,
    ) -> async_graphql::Result<DeadLetterCount> {
        let (state, principal) = authorized::<ChannelsWrite>(ctx).map_err(gql)?;
        let count = service(ctx)?.replay_dead_letters(principal.tenant, connection_id).await.map_err(gql)?;
        state.wakeup.wake();
        Ok(count)
    }

    /// Drop a dead letter without pushing.
    async fn dismiss_channel_dead_letter(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<bool> {
        let (_, principal) = authorized::<ChannelsWrite>(ctx).map_err(gql)?;
        service(ctx)?.dismiss_dead_letter(principal.tenant, id).await.map_err(gql)?;
        Ok(true)
    }

    /// Drop every dead letter of a connection, or of the tenant.
    async fn dismiss_channel_dead_letters(
        &self,
        ctx: &Context<'_>,
        connection_id: Option<Uuid>,
    ) -> async_graphql::Result<DeadLetterCount> {
        let (_, principal) = authorized::<ChannelsWrite>(ctx).map_err(gql)?;
        service(ctx)?.dismiss_dead_letters(principal.tenant, connection_id).await.map_err(gql)
    }
}
