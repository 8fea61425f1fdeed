//! Webhook endpoint management over GraphQL: the same services, permissions
//! and error codes as the REST routes.

use async_graphql::{ComplexObject, Context, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{AttemptView, DeliveryView, EndpointChanges, EndpointView, EndpointWithSecret, NewEndpoint};
use crate::{
    error::ApiError,
    platform::{
        graphql::{authorized, gql, list_request},
        http::PageMeta,
        rbac::{WebhooksRead, WebhooksWrite},
        state::AppState,
    },
};

type Result<T> = async_graphql::Result<T>;

fn check(
    state: &AppState,
    url: Option<&str>,
    description: Option<&str>,
    types: Option<&[String]>,
    priority: Option<i16>,
) -> Result<()> {
    let policy = state.config.url_policy().map_err(|e| gql(ApiError::internal(anyhow::anyhow!(e))))?;
    super::check_endpoint(&policy, &state.event_types, url, description, types, priority)
        .map_err(|errors| gql(ApiError::validation(errors)))
}

#[derive(SimpleObject)]
#[graphql(name = "WebhookEndpointPage")]
pub struct EndpointPage {
    items: Vec<EndpointView>,
    page_info: PageMeta,
}

#[derive(SimpleObject)]
#[graphql(name = "WebhookDeliveryPage")]
pub struct DeliveryPage {
    items: Vec<DeliveryView>,
    page_info: PageMeta,
}

#[derive(SimpleObject)]
#[graphql(name = "WebhookEventType")]
pub struct EventTypeInfo {
    name: &'static str,
    description: &'static str,
    /// An example of the event's `data`.
    example: serde_json::Value,
}

#[ComplexObject]
impl EndpointView {
    /// Deliveries to this endpoint, newest first.
    async fn deliveries(
        &self,
        ctx: &Context<'_>,
        status: Option<String>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> Result<DeliveryPage> {
        let (state, principal) = authorized::<WebhooksRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let paged =
            super::deliveries(&state.db, principal.tenant, self.id, status, &list).await.map_err(gql)?;
        Ok(DeliveryPage { items: paged.data, page_info: paged.meta })
    }
}

#[ComplexObject]
impl DeliveryView {
    /// Every HTTP attempt of this delivery, first first.
    async fn attempt_log(&self, ctx: &Context<'_>) -> Result<Vec<AttemptView>> {
        let (state, principal) = authorized::<WebhooksRead>(ctx).map_err(gql)?;
        super::attempts(&state.db, principal.tenant, self.endpoint_id, self.id).await.map_err(gql)
    }
}

#[derive(Default)]
pub struct WebhooksQuery;

#[Object]
impl WebhooksQuery {
    /// The tenant's webhook endpoints, newest first.
    async fn webhook_endpoints(
        &self,
        ctx: &Context<'_>,
        enabled: Option<bool>,
        #[graphql(default_with = "Some(25)")] first: Option<i64>,
        after: Option<String>,
        before: Option<String>,
    ) -> Result<EndpointPage> {
        let (state, principal) = authorized::<WebhooksRead>(ctx).map_err(gql)?;
        let list = list_request(ctx, first, after.as_deref(), before.as_deref())?;
        let paged = super::list(&state.db, principal.tenant, enabled, &list).await.map_err(gql)?;
        Ok(EndpointPage { items: paged.data, page_info: paged.meta })
    }

    async fn webhook_endpoint(&self, ctx: &Context<'_>, id: Uuid) -> Result<EndpointView> {
        let (state, principal) = authorized::<WebhooksRead>(ctx).map_err(gql)?;
        super::get(&state.db, principal.tenant, id).await.map_err(gql)
    }

    /// Every event type an endpoint can subscribe to.
    async fn webhook_event_types(&self, ctx: &Context<'_>) -> Result<Vec<EventTypeInfo>> {
        let (state, _) = authorized::<WebhooksRead>(ctx).map_err(gql)?;
        Ok(state
            .event_types
            .iter()
            .map(|t| EventTypeInfo { name: t.name, description: t.description, example: (t.example)() })
            .collect())
    }
}

#[derive(InputObject)]
#[graphql(name = "WebhookEndpointInput")]
pub struct EndpointInput {
    url: String,
    #[graphql(default)]
    description: String,
    /// Exact types, `prefix.*` wildcards, or `*`.
    event_types: Vec<String>,
    #[graphql(default = true)]
    enabled: bool,
    #[graphql(default = 5)]
    priority: i16,
}

#[derive(InputObject)]
#[graphql(name = "WebhookEndpointChanges")]
pub struct ChangesInput {
    url: Option<String>,
    description: Option<String>,
    event_types: Option<Vec<String>>,
    enabled: Option<bool>,
    priority: Option<i16>,
}

#[derive(Default)]
pub struct WebhooksMutation;

#[Object]
impl WebhooksMutation {
    /// Register an endpoint; the answer holds its secret, shown only once.
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        input: EndpointInput,
    ) -> Result<EndpointWithSecret> {
        let (state, principal) = authorized::<WebhooksWrite>(ctx).map_err(gql)?;
        check(
            state,
            Some(&input.url),
            Some(&input.description),
            Some(&input.event_types),
            Some(input.priority),
        )?;
        let new = NewEndpoint {
            url: input.url,
            description: input.description.trim().to_owned(),
            event_types: input.event_types,
            enabled: input.enabled,
            priority: input.priority,
        };
        super::create(state, principal.tenant, new).await.map_err(gql)
    }

    /// Change an endpoint; with `version`, refuse (`precondition_failed`) if
    /// it changed since it was read.
    async fn update_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        changes: ChangesInput,
        version: Option<i32>,
    ) -> Result<EndpointView> {
        let (state, principal) = authorized::<WebhooksWrite>(ctx).map_err(gql)?;
        let c = changes;
        check(state, c.url.as_deref(), c.description.as_deref(), c.event_types.as_deref(), c.priority)?;
        let changes = EndpointChanges {
            url: c.url,
            description: c.description.map(|d| d.trim().to_owned()),
            event_types: c.event_types,
            enabled: c.enabled,
            priority: c.priority,
        };
        super::update(&state.db, principal.tenant, id, version, changes).await.map_err(gql)
    }

    async fn delete_webhook_endpoint(&self, ctx: &Context<'_>, id: Uuid) -> Result<bool> {
        let (state, principal) = authorized::<WebhooksWrite>(ctx).map_err(gql)?;
        super::delete(&state.db, principal.tenant, id).await.map_err(gql)?;
        Ok(true)
    }

    /// A new secret; the old one keeps signing beside it for the overlap.
    async fn rotate_webhook_secret(&self, ctx: &Context<'_>, id: Uuid) -> Result<EndpointWithSecret> {
        let (state, principal) = authorized::<WebhooksWrite>(ctx).map_err(gql)?;
        super::rotate_secret(state, principal.tenant, id).await.map_err(gql)
    }

    /// Send a `webhook.test` event to the endpoint.
    async fn send_webhook_test(&self, ctx: &Context<'_>, id: Uuid) -> Result<DeliveryView> {
        let (state, principal) = authorized::<WebhooksWrite>(ctx).map_err(gql)?;
        super::send_test(state, principal.tenant, id).await.map_err(gql)
    }

    /// Start a new delivery round for a delivery that has ended.
    async fn resend_webhook_delivery(
        &self,
        ctx: &Context<'_>,
        endpoint_id: Uuid,
        delivery_id: Uuid,
    ) -> Result<DeliveryView> {
        let (state, principal) = authorized::<WebhooksWrite>(ctx).map_err(gql)?;
        super::resend(state, principal.tenant, endpoint_id, delivery_id).await.map_err(gql)
    }

    /// Resend the endpoint's failed deliveries created since `since`; the count.
    async fn recover_webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        endpoint_id: Uuid,
        since: DateTime<Utc>,
    ) -> Result<u64> {
        let (state, principal) = authorized::<WebhooksWrite>(ctx).map_err(gql)?;
        super::recover(state, principal.tenant, endpoint_id, since).await.map_err(gql)
    }
}
