//! What every handler shares.

use std::sync::Arc;

use herald_core::{
    Config,
    queue::Queue,
    ratelimit::RateLimiter,
    services::{messages::Intake, tenants::KeyLookup},
};
use sqlx::PgPool;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    /// The `deliveries` queue (cancel removes waiting jobs; stats for ops).
    pub queue: Queue,
    /// The `ai-replies` queue.
    pub replies: Queue,
    /// The `events` queue (redeliveries are pushed at once).
    pub events: Queue,
    pub intake: Arc<Intake>,
    pub keys: KeyLookup,
    /// Per API key (`HERALD_API_RATE`), shared by every API process through Redis.
    pub limiter: RateLimiter,
    /// Client addresses over their failed-authentication budget.
    pub failed_auth: Arc<crate::auth::FailedAuth>,
}
