//! Live events for Server-Sent Events streams. After an event is dispatched
//! (so it is committed), it is broadcast to this process's streams; with
//! Redis it goes through a pub/sub channel instead, so a stream on any
//! instance sees events dispatched on every instance. If Redis is down the
//! event is still broadcast locally, and the relay reconnects by itself.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::platform::redis::Redis;
use entity::event;

/// The pub/sub channel, after the `redis_key_prefix`.
const CHANNEL: &str = "events";

/// An event as streams see it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LiveEvent {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub event_type: String,
    pub data: Value,
    pub occurred_at: DateTime<Utc>,
}

impl From<&event::Model> for LiveEvent {
    fn from(e: &event::Model) -> Self {
        Self {
            id: e.id,
            tenant_id: e.tenant_id,
            event_type: e.event_type.clone(),
            data: e.data.clone(),
            occurred_at: e.occurred_at,
        }
    }
}

#[derive(Clone)]
pub struct EventBus {
    local: broadcast::Sender<Arc<LiveEvent>>,
    redis: Option<Redis>,
}

impl EventBus {
    /// `buffer`: live events a slow stream may fall behind before it
    /// catches up from the outbox (`events.sse_buffer`).
    pub fn new(redis: Option<Redis>, buffer: usize) -> Self {
        Self { local: broadcast::channel(buffer).0, redis }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.local.subscribe()
    }

    /// Announce a committed event to every stream.
    pub async fn publish(&self, event: &event::Model) {
        let live = LiveEvent::from(event);
        if let Some(redis) = &self.redis {
            let published = match serde_json::to_string(&live) {
                Ok(json) => redis.publish(CHANNEL, json).await,
                Err(err) => Err(err.to_string()),
            };
            match published {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "Redis publish failed; streaming the event locally only")
                }
            }
        }
        let _ = self.local.send(Arc::new(live));
    }

    /// With Redis: relay the channel into this process's broadcast, for as
    /// long as the process runs, reconnecting after an outage.
    pub fn start_relay(&self) {
        let Some(redis) = &self.redis else { return };
        let local = self.local.clone();
        redis.relay(CHANNEL, move |payload| {
            if let Ok(live) = serde_json::from_str::<LiveEvent>(&payload) {
                let _ = local.send(Arc::new(live));
            }
            true
        });
    }
}
