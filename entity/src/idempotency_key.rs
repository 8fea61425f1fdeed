use sea_orm::entity::prelude::*;

/// A client's `Idempotency-Key` on a POST, per tenant, user and route. While
/// its first request runs the key is `in_progress` under a short lease (a
/// crashed request does not hold it for ever); then it keeps that request's
/// response for replay until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    /// The route template, e.g. `/api/v1/users/{id}/roles`.
    pub route: String,
    /// The client's key: 1 to 255 visible ASCII characters.
    pub key: String,
    /// Hex SHA-256 of the method, path, query string and body.
    pub fingerprint: String,
    /// `in_progress` or `completed`.
    pub status: String,
    /// The request holding the key; a new claim when an expired key is
    /// taken over, so a late finisher cannot overwrite its successor.
    pub claim_id: Uuid,
    pub response_status: Option<i32>,
    /// `[[name, value], ...]`: the replayed headers (content-type, location, etag).
    pub response_headers: Option<Json>,
    pub response_body: Option<Vec<u8>>,
    /// The body is sealed with the server's encryption key.
    pub response_sealed: bool,
    pub created_at: DateTimeUtc,
    /// End of the lease while in progress, end of the replay window once
    /// completed. Past it, the key is free again.
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
