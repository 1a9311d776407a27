//! Services: one free function per use case, called by the thin transports (axum handlers,
//! apalis handlers, cron ticks).

pub mod appointments;
pub mod audit;
pub mod breaker;
pub mod contacts;
pub mod daily;
pub mod dead_letters;
pub mod delivery;
pub mod enqueue;
pub mod events;
pub mod export;
pub mod groups;
pub mod inbound;
pub mod inbox;
pub mod messages;
pub mod ops_sessions;
pub mod pacing;
pub mod pauses;
pub mod privacy;
pub mod replies;
pub mod reports;
pub mod suspensions;
pub mod tenants;
pub mod usage;
