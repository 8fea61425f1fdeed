//! REST routes of the channels module.

use std::collections::BTreeMap;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, delete, get, patch, post, web};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::{scope, service_config::ServiceConfig};
use uuid::Uuid;

use super::{
    CONNECTION_SORTS, ChannelService, ChannelsRead, ChannelsWrite, ConnectionChanges, ConnectionFilter,
    ConnectionView, DEAD_LETTER_SORTS, DeadLetterCount, DeadLetterFilter, DeadLetterView, DriftView,
    ImportView, MAPPING_SORTS, MODULE, MappingFilter, MappingView, NewConnection, RECEIPT_SORTS, ReceiptView,
    RemoteProduct, STATUSES, SyncRunView,
};
use crate::{
    error::{ApiError, ApiResult, Code, Problem},
    platform::{
        http::{
            ApiJson, Data, Paged, Validate, created, if_match, no_content, ok, ok_with_etag, one_of,
            parse_sort,
        },
        rbac::Authorized,
        state::AppState,
    },
};

pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(
        scope("/channel-connections")
            .service(list_channel_connections)
            .service(create_channel_connection)
            .service(get_channel_connection)
            .service(update_channel_connection)
            .service(delete_channel_connection)
            .service(get_channel_remote_product)
            .service(start_channel_import)
            .service(get_channel_import)
            .service(push_channel_product)
            .service(start_channel_sync)
            .service(start_channel_reconcile)
            .service(list_channel_sync_runs)
            .service(get_channel_sync_run)
            .service(list_channel_drifts)
            .service(list_channel_webhook_receipts),
    )
    .service(scope("/channel-mappings").service(list_channel_mappings))
    .service(
        scope("/channel-dead-letters")
            .service(list_channel_dead_letters)
            .service(replay_channel_dead_letters)
            .service(dismiss_channel_dead_letters)
            .service(replay_channel_dead_letter)
            .service(dismiss_channel_dead_letter),
    )
    .service(scope("/channel-webhooks").service(receive_channel_webhook));
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnection {
    /// `shopify`, `woocommerce`, `amazon` or `etsy`.
    #[schema(example = "shopify", pattern = "^(shopify|woocommerce|amazon|etsy)$")]
    channel: String,
    /// Unique in the tenant.
    #[schema(example = "EU shop", min_length = 1, max_length = 200)]
    name: String,
    /// Where the store's API is: `https://` (plain `http://` in development);
    /// never a private or loopback address unless `webhooks.allow_networks` lists it.
    #[schema(example = "https://eu-shop.myshopify.com", min_length = 1, max_length = 2048)]
    base_url: String,
    /// Shopify: `access_token`; WooCommerce: `consumer_key` and
    /// `consumer_secret`; Amazon: `client_id`, `client_secret`,
    /// `refresh_token`, `seller_id` and `marketplace_id`; Etsy: `api_key`,
    /// `refresh_token` and `shop_id`. Stored encrypted; never shown again.
    #[schema(example = json!({"access_token": "shpat_0123456789abcdef"}))]
    credentials: BTreeMap<String, String>,
    /// The secret the store signs its webhooks with. Stored encrypted.
    #[schema(min_length = 1, max_length = 500)]
    webhook_secret: Option<String>,
    /// The local warehouse whose stock the store sells.
    warehouse_id: Uuid,
    /// The store's location (required for Shopify: `gid://shopify/Location/...`).
    #[schema(example = "gid://shopify/Location/1", min_length = 1, max_length = 200)]
    remote_location_id: Option<String>,
    /// The store's currency; products an import creates carry it.
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
    currency: String,
    /// Units held back from the store (0 when absent).
    #[schema(example = 2, minimum = 0, maximum = 1_000_000_000)]
    safety_buffer: Option<i64>,
}

impl Validate for CreateConnection {}

/// Connect a store. Its credentials are checked against what the channel
/// needs (not against the store: the first import or push does that).
#[utoipa::path(tag = "channels", request_body = CreateConnection,
    responses((status = 201, body = Data<ConnectionView>), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, description = "The name is taken", body = Problem),
        (status = 422, description = "Invalid fields: an unknown channel or warehouse, missing credentials, a refused URL", body = Problem)),
    security(("bearer" = [])))]
#[post("")]
async fn create_channel_connection(
    auth: Authorized<ChannelsWrite>,
    channels: web::Data<dyn ChannelService>,
    body: ApiJson<CreateConnection>,
) -> ApiResult<HttpResponse> {
    let b = body.0;
    let new = NewConnection {
        channel: b.channel,
        name: b.name,
        base_url: b.base_url,
        credentials: b.credentials,
        webhook_secret: b.webhook_secret,
        warehouse_id: b.warehouse_id,
        remote_location_id: b.remote_location_id,
        currency: b.currency,
        safety_buffer: b.safety_buffer.unwrap_or(0),
    };
    Ok(created(channels.create_connection(auth.tenant, new).await?))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct ConnectionQuery {
        /// `created_at`, `name`; prefix `-` for descending (default `-created_at`).
        #[param(pattern = "^-?(created_at|name)$")]
        sort: Option<String>,
        /// `shopify`, `woocommerce`, `amazon` or `etsy`.
        #[param(pattern = "^(shopify|woocommerce|amazon|etsy)$")]
        channel: Option<String>,
        /// `connected`, `throttled` or `disconnected`.
        #[param(pattern = "^(connected|throttled|disconnected)$")]
        status: Option<String>,
    }
}

/// Store connections, newest first unless sorted otherwise.
#[utoipa::path(tag = "channels", params(ConnectionQuery),
    responses((status = 200, body = Paged<ConnectionView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("")]
async fn list_channel_connections(
    auth: Authorized<ChannelsRead>,
    channels: web::Data<dyn ChannelService>,
    query: web::Query<ConnectionQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    let sort = parse_sort(q.sort.as_deref(), &CONNECTION_SORTS)?;
    one_of("channel", q.channel.as_deref(), &channels.channels())?;
    one_of("status", q.status.as_deref(), &STATUSES)?;
    let filter = ConnectionFilter { channel: q.channel, status: q.status, sort };
    Ok(HttpResponse::Ok().json(channels.list_connections(auth.tenant, filter, &list).await?))
}

/// One connection; its `ETag` is the version to send in `If-Match`.
#[utoipa::path(tag = "channels",
    responses((status = 200, body = Data<ConnectionView>, headers(("ETag" = String, description = "The version, quoted"))),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/{id}")]
async fn get_channel_connection(
    auth: Authorized<ChannelsRead>,
    channels: web::Data<dyn ChannelService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let view = channels.get_connection(auth.tenant, id.into_inner()).await?;
    let version = view.version;
    Ok(ok_with_etag(view, version))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConnection {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    #[schema(min_length = 1, max_length = 2048)]
    base_url: Option<String>,
    /// Replaces every credential and puts the connection back to `connected`.
    credentials: Option<BTreeMap<String, String>>,
    #[schema(min_length = 1, max_length = 500)]
    webhook_secret: Option<String>,
    warehouse_id: Option<Uuid>,
    #[schema(min_length = 1, max_length = 200)]
    remote_location_id: Option<String>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    safety_buffer: Option<i64>,
}

impl Validate for UpdateConnection {}

/// Change a connection; `If-Match` refuses (412) a change made meanwhile.
/// A change of what the store should show (credentials, URL, location,
/// warehouse, buffer) pushes every mapped product again.
#[utoipa::path(tag = "channels", request_body = UpdateConnection,
    params(("If-Match" = Option<String>, Header, description = "The ETag read before", pattern = r#"^(W/)?"[0-9]+"$"#)),
    responses((status = 200, body = Data<ConnectionView>), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, description = "The name is taken", body = Problem),
        (status = 412, description = "The connection changed since it was read", body = Problem),
        (status = 422, body = Problem)),
    security(("bearer" = [])))]
#[patch("/{id}")]
async fn update_channel_connection(
    auth: Authorized<ChannelsWrite>,
    state: web::Data<AppState>,
    channels: web::Data<dyn ChannelService>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: ApiJson<UpdateConnection>,
) -> ApiResult<HttpResponse> {
    let b = body.0;
    let changes = ConnectionChanges {
        name: b.name,
        base_url: b.base_url,
        credentials: b.credentials,
        webhook_secret: b.webhook_secret,
        warehouse_id: b.warehouse_id,
        remote_location_id: b.remote_location_id,
        safety_buffer: b.safety_buffer,
    };
    let view = channels.update_connection(auth.tenant, id.into_inner(), if_match(&req)?, changes).await?;
    state.wakeup.wake();
    let version = view.version;
    Ok(ok_with_etag(view, version))
}

/// Disconnect and forget a store, with its mappings and imports.
#[utoipa::path(tag = "channels",
    responses((status = 204, description = "Deleted"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[delete("/{id}")]
async fn delete_channel_connection(
    auth: Authorized<ChannelsWrite>,
    channels: web::Data<dyn ChannelService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    channels.delete_connection(auth.tenant, id.into_inner()).await?;
    Ok(no_content())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RemoteQuery {
    /// The store's product id (`gid://shopify/Product/1001`, `42`).
    #[param(min_length = 1, max_length = 200)]
    remote_id: String,
}

/// One product as the store has it now, normalised, with the store's own
/// payload in `raw`.
#[utoipa::path(tag = "channels", params(RemoteQuery),
    responses((status = 200, body = Data<RemoteProduct>), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, description = "No such connection, or the store has no such product", body = Problem),
        (status = 409, description = "The store refused the credentials (the connection is now disconnected)", body = Problem),
        (status = 503, description = "The store is down, throttling or answered garbage", body = Problem)),
    security(("bearer" = [])))]
#[get("/{id}/remote-product")]
async fn get_channel_remote_product(
    auth: Authorized<ChannelsRead>,
    channels: web::Data<dyn ChannelService>,
    id: web::Path<Uuid>,
    query: web::Query<RemoteQuery>,
) -> ApiResult<HttpResponse> {
    Ok(ok(channels.remote_product(auth.tenant, id.into_inner(), &query.remote_id).await?))
}

/// Import the store's catalog: every variant with a SKU is mapped to the
/// local product with that SKU, created when missing. Runs in the
/// background, a page at a time; follow it with the import's URL.
#[utoipa::path(tag = "channels",
    responses((status = 202, body = Data<ImportView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[post("/{id}/imports")]
async fn start_channel_import(
    auth: Authorized<ChannelsWrite>,
    state: web::Data<AppState>,
    channels: web::Data<dyn ChannelService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let run = channels.start_import(auth.tenant, id.into_inner()).await?;
    state.wakeup.wake();
    Ok(HttpResponse::Accepted().json(Data { data: run }))
}

/// An import and how far it got.
#[utoipa::path(tag = "channels",
    responses((status = 200, body = Data<ImportView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/{id}/imports/{import_id}")]
async fn get_channel_import(
    auth: Authorized<ChannelsRead>,
    channels: web::Data<dyn ChannelService>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (id, import_id) = path.into_inner();
    Ok(ok(channels.get_import(auth.tenant, id, import_id).await?))
}

/// Push the product's available-to-promise quantity to the store now (in
/// the background; `last_pushed_quantity` shows when it landed).
#[utoipa::path(tag = "channels",
    responses((status = 202, body = Data<MappingView>), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, description = "No such connection, or the product is not mapped on it", body = Problem),
        (status = 409, description = "The connection is disconnected", body = Problem)),
    security(("bearer" = [])))]
#[post("/{id}/products/{product_id}/push")]
async fn push_channel_product(
    auth: Authorized<ChannelsWrite>,
    state: web::Data<AppState>,
    channels: web::Data<dyn ChannelService>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (id, product_id) = path.into_inner();
    let mapping = channels.push_product(auth.tenant, id, product_id).await?;
    state.wakeup.wake();
    Ok(HttpResponse::Accepted().json(Data { data: mapping }))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct MappingQuery {
        /// `created_at`; prefix `-` for descending (default `-created_at`).
        #[param(pattern = "^-?created_at$")]
        sort: Option<String>,
        connection_id: Option<Uuid>,
        product_id: Option<Uuid>,
    }
}

/// Local products linked to store variants, newest first.
#[utoipa::path(tag = "channels", params(MappingQuery),
    responses((status = 200, body = Paged<MappingView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("")]
async fn list_channel_mappings(
    auth: Authorized<ChannelsRead>,
    channels: web::Data<dyn ChannelService>,
    query: web::Query<MappingQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    let sort = parse_sort(q.sort.as_deref(), &MAPPING_SORTS)?;
    let filter = MappingFilter { connection_id: q.connection_id, product_id: q.product_id, sort };
    Ok(HttpResponse::Ok().json(channels.list_mappings(auth.tenant, filter, &list).await?))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct ReceiptQuery {
        /// `received_at`; prefix `-` for descending (default `-received_at`).
        #[param(pattern = "^-?received_at$")]
        sort: Option<String>,
    }
}

/// The webhooks a store sent to the connection, verified or not, newest first.
#[utoipa::path(tag = "channels", params(ReceiptQuery),
    responses((status = 200, body = Paged<ReceiptView>), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/{id}/webhook-receipts")]
async fn list_channel_webhook_receipts(
    auth: Authorized<ChannelsRead>,
    channels: web::Data<dyn ChannelService>,
    id: web::Path<Uuid>,
    query: web::Query<ReceiptQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    let sort = parse_sort(q.sort.as_deref(), &RECEIPT_SORTS)?;
    Ok(HttpResponse::Ok().json(channels.list_receipts(auth.tenant, id.into_inner(), sort, &list).await?))
}

/// Push the available-to-promise quantity of every mapped product to the
/// store, in batches, in the background (whether it changed or not).
/// Follow it with the run's URL: `total`, `done`, `failed`.
#[utoipa::path(tag = "channels",
    responses((status = 202, body = Data<SyncRunView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "The connection is disconnected", body = Problem)),
    security(("bearer" = [])))]
#[post("/{id}/sync")]
async fn start_channel_sync(
    auth: Authorized<ChannelsWrite>,
    state: web::Data<AppState>,
    channels: web::Data<dyn ChannelService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let run = channels.start_sync(auth.tenant, id.into_inner()).await?;
    state.wakeup.wake();
    Ok(HttpResponse::Accepted().json(Data { data: run }))
}

/// Reconcile the store: read its quantity of every mapped product, compare
/// it with the available-to-promise quantity, keep each difference as
/// drift (`.../drifts`) and correct it by pushing. In the background;
/// scheduled runs also come every `reconcile_interval_secs`.
#[utoipa::path(tag = "channels",
    responses((status = 202, body = Data<SyncRunView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "The connection is disconnected", body = Problem)),
    security(("bearer" = [])))]
#[post("/{id}/reconcile")]
async fn start_channel_reconcile(
    auth: Authorized<ChannelsWrite>,
    state: web::Data<AppState>,
    channels: web::Data<dyn ChannelService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let run = channels.start_reconcile(auth.tenant, id.into_inner()).await?;
    state.wakeup.wake();
    Ok(HttpResponse::Accepted().json(Data { data: run }))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct RunQuery {}
}

/// The connection's push and reconcile runs, newest first.
#[utoipa::path(tag = "channels", params(RunQuery),
    responses((status = 200, body = Paged<SyncRunView>), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/{id}/sync-runs")]
async fn list_channel_sync_runs(
    auth: Authorized<ChannelsRead>,
    channels: web::Data<dyn ChannelService>,
    id: web::Path<Uuid>,
    query: web::Query<RunQuery>,
) -> ApiResult<HttpResponse> {
    let list = query.into_inner().list()?;
    Ok(HttpResponse::Ok().json(channels.list_sync_runs(auth.tenant, id.into_inner(), &list).await?))
}

/// A push or reconcile run and how far it got.
#[utoipa::path(tag = "channels",
    responses((status = 200, body = Data<SyncRunView>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/{id}/sync-runs/{run_id}")]
async fn get_channel_sync_run(
    auth: Authorized<ChannelsRead>,
    channels: web::Data<dyn ChannelService>,
    path: web::Path<(Uuid, Uuid)>,
) -> ApiResult<HttpResponse> {
    let (id, run_id) = path.into_inner();
    Ok(ok(channels.get_sync_run(auth.tenant, id, run_id).await?))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct DriftQuery {}
}

/// What a reconcile run found off: per SKU, the store's quantity, the
/// available-to-promise it should show and whether it was corrected.
#[utoipa::path(tag = "channels", params(DriftQuery),
    responses((status = 200, body = Paged<DriftView>), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[get("/{id}/sync-runs/{run_id}/drifts")]
async fn list_channel_drifts(
    auth: Authorized<ChannelsRead>,
    channels: web::Data<dyn ChannelService>,
    path: web::Path<(Uuid, Uuid)>,
    query: web::Query<DriftQuery>,
) -> ApiResult<HttpResponse> {
    let (id, run_id) = path.into_inner();
    let list = query.into_inner().list()?;
    Ok(HttpResponse::Ok().json(channels.list_drifts(auth.tenant, id, run_id, &list).await?))
}

crate::list_query! {
    #[derive(Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    struct DeadLetterQuery {
        /// `created_at`; prefix `-` for descending (default `created_at`, oldest first).
        #[param(pattern = "^-?created_at$")]
        sort: Option<String>,
        /// Only the dead letters of this connection.
        connection_id: Option<Uuid>,
    }
}

/// Pushes to a store whose retries ran out, oldest first.
#[utoipa::path(tag = "channels", params(DeadLetterQuery),
    responses((status = 200, body = Paged<DeadLetterView>), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = [])))]
#[get("")]
async fn list_channel_dead_letters(
    auth: Authorized<ChannelsRead>,
    channels: web::Data<dyn ChannelService>,
    query: web::Query<DeadLetterQuery>,
) -> ApiResult<HttpResponse> {
    let q = query.into_inner();
    let list = q.list()?;
    let sort = parse_sort(q.sort.as_deref(), &DEAD_LETTER_SORTS)?;
    let filter = DeadLetterFilter { connection_id: q.connection_id, sort };
    Ok(HttpResponse::Ok().json(channels.list_dead_letters(auth.tenant, filter, &list).await?))
}

/// Which dead letters: those of one connection, or all of the tenant's.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterScope {
    /// Absent: every connection of the tenant.
    connection_id: Option<Uuid>,
}

impl Validate for DeadLetterScope {}

/// Push the product of a dead letter again, with its available-to-promise
/// quantity of now (not the one that failed), and drop the letter.
#[utoipa::path(tag = "channels",
    responses((status = 202, description = "Queued; the mapping shows the push pending", body = Data<MappingView>),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "The connection is disconnected", body = Problem)),
    security(("bearer" = [])))]
#[post("/{id}/replay")]
async fn replay_channel_dead_letter(
    auth: Authorized<ChannelsWrite>,
    state: web::Data<AppState>,
    channels: web::Data<dyn ChannelService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    let mapping = channels.replay_dead_letter(auth.tenant, id.into_inner()).await?;
    state.wakeup.wake();
    Ok(HttpResponse::Accepted().json(Data { data: mapping }))
}

/// Replay every dead letter of a connection (or of the tenant); those of
/// disconnected connections stay and are counted as `skipped`.
#[utoipa::path(tag = "channels", request_body = DeadLetterScope,
    responses((status = 202, body = Data<DeadLetterCount>), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, description = "No such connection", body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
#[post("/replay")]
async fn replay_channel_dead_letters(
    auth: Authorized<ChannelsWrite>,
    state: web::Data<AppState>,
    channels: web::Data<dyn ChannelService>,
    body: ApiJson<DeadLetterScope>,
) -> ApiResult<HttpResponse> {
    let count = channels.replay_dead_letters(auth.tenant, body.0.connection_id).await?;
    state.wakeup.wake();
    Ok(HttpResponse::Accepted().json(Data { data: count }))
}

/// Drop a dead letter without pushing.
#[utoipa::path(tag = "channels",
    responses((status = 204, description = "Dismissed"), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = [])))]
#[delete("/{id}")]
async fn dismiss_channel_dead_letter(
    auth: Authorized<ChannelsWrite>,
    channels: web::Data<dyn ChannelService>,
    id: web::Path<Uuid>,
) -> ApiResult<HttpResponse> {
    channels.dismiss_dead_letter(auth.tenant, id.into_inner()).await?;
    Ok(no_content())
}

/// Drop every dead letter of a connection (or of the tenant) without pushing.
#[utoipa::path(tag = "channels", request_body = DeadLetterScope,
    responses((status = 200, body = Data<DeadLetterCount>), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, description = "No such connection", body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
#[post("/dismiss")]
async fn dismiss_channel_dead_letters(
    auth: Authorized<ChannelsWrite>,
    channels: web::Data<dyn ChannelService>,
    body: ApiJson<DeadLetterScope>,
) -> ApiResult<HttpResponse> {
    Ok(ok(channels.dismiss_dead_letters(auth.tenant, body.0.connection_id).await?))
}

/// Where a store sends its webhooks for one connection: give this URL to
/// the store. No token: the signature is the authentication, checked
/// before anything else: Shopify's `X-Shopify-Hmac-Sha256` and
/// WooCommerce's `X-WC-Webhook-Signature` (the base64 HMAC-SHA256 of the
/// raw body with the connection's `webhook_secret`), Etsy's Standard
/// Webhooks `webhook-signature` (HMAC-SHA256 of `id.timestamp.body` with
/// the `whsec_` secret, the timestamp within 5 minutes), and Amazon's SNS
/// messages (signed by SNS, checked against its certificate from an
/// allowed host; a `SubscriptionConfirmation` is confirmed). A forged
/// webhook, or a second delivery of an event id already received, is
/// refused and logged; a verified stock change of a mapped variant becomes
/// a stock movement. Refused like the tenant's own requests when its
/// `module.channels` is off or its license does not include it.
#[utoipa::path(tag = "channels",
    request_body(content = Object, description = "The store's webhook payload, as it sends it", content_type = "application/json"),
    params(
        ("X-Shopify-Hmac-Sha256" = Option<String>, Header, description = "Shopify's signature"),
        ("X-Shopify-Topic" = Option<String>, Header, description = "Shopify's topic (`inventory_levels/update` changes stock)"),
        ("X-Shopify-Webhook-Id" = Option<String>, Header, description = "Shopify's event id (deduplicated)"),
        ("X-WC-Webhook-Signature" = Option<String>, Header, description = "WooCommerce's signature"),
        ("X-WC-Webhook-Topic" = Option<String>, Header, description = "WooCommerce's topic (`product.updated` changes stock)"),
        ("X-WC-Webhook-Delivery-ID" = Option<String>, Header, description = "WooCommerce's event id (deduplicated)"),
        ("webhook-id" = Option<String>, Header, description = "Etsy's event id (deduplicated)"),
        ("webhook-timestamp" = Option<String>, Header, description = "Etsy's signing time, Unix seconds"),
        ("webhook-signature" = Option<String>, Header, description = "Etsy's signature: `v1,<base64>`"),
        ("x-amz-sns-message-type" = Option<String>, Header, description = "SNS's message type; its body may then be `text/plain`"),
    ),
    responses((status = 200, description = "Verified and handled; `outcome` says how", body = Data<ReceiptView>),
        (status = 401, description = "Forged or a replay of a received event (logged either way)", body = Problem),
        (status = 403, description = "The tenant's `module.channels` is off or not licensed (`feature_disabled`), or its license is closed", body = Problem),
        (status = 404, description = "No such connection", body = Problem),
        (status = 415, description = "The body is not JSON", body = Problem)))]
#[post("/{id}")]
async fn receive_channel_webhook(
    req: HttpRequest,
    state: web::Data<AppState>,
    channels: web::Data<dyn ChannelService>,
    id: web::Path<Uuid>,
    body: web::Bytes,
) -> ApiResult<HttpResponse> {
    // SNS posts its JSON messages as text/plain.
    let is_json = req.mime_type().ok().flatten().is_some_and(|m| m.subtype() == "json")
        || req.headers().contains_key("x-amz-sns-message-type");
    if !is_json {
        return Err(ApiError::new(Code::UnsupportedMediaType, "a webhook body must be application/json"));
    }
    let id = id.into_inner();
    // The tenant's module must be on and its license open, as for its users.
    let tenant = channels.webhook_tenant(id).await?;
    crate::platform::governance::for_tenant(&state, tenant).await?.require(&state.governance, MODULE)?;
    let headers = req
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_ascii_lowercase(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let receipt = channels.receive_webhook(id, headers, &body).await?;
    state.wakeup.wake();
    Ok(ok(receipt))
}
