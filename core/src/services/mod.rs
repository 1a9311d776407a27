//! Services: one free function per use case, called by the thin transports (axum handlers,
//! apalis handlers, cron ticks).

pub mod delivery;
pub mod enqueue;
pub mod messages;
pub mod tenants;

use serde::{Deserialize, Serialize};

/// The job on the `deliveries` queue: which message to send. The job id is the message id,
/// so pushing the same message twice leaves one job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeliveryJob {
    pub message_id: String,
}
