//! The jobs Herald queues: plain serde payloads, small, naming what to work on. A job's id is
//! the id of what it works on, so pushing it twice leaves one job.

use serde::{Deserialize, Serialize};

use super::Channel;

/// The job on the `deliveries` queue: which message to send. The job id is the message id,
/// so pushing the same message twice leaves one job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeliveryJob {
    pub message_id: String,
    /// The tenant and channel, for the send rate, and the webhook target's origin
    /// (`scheme://host:port`), for the tenant's circuit there: both are checked before the
    /// message is claimed, so a job put off spends nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The API request that caused it, so the worker's log lines carry it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl DeliveryJob {
    pub fn new(message_id: &str, tenant_id: &str, channel: Channel, to: &str) -> Self {
        let host = match channel {
            Channel::Webhook => webhook_origin(to),
            _ => None,
        };
        Self {
            message_id: message_id.to_owned(),
            tenant_id: Some(tenant_id.to_owned()),
            channel: Some(channel),
            host,
            request_id: None,
        }
    }
}

/// A webhook URL's origin, `scheme://host:port` (the port spelled out even when it is the
/// default), which names the tenant's circuit for it.
pub fn webhook_origin(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?;
    let port = url.port_or_known_default()?;
    Some(format!("{}://{host}:{port}", url.scheme()))
}

/// A job on the `ai-replies` queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum AiJob {
    /// Answer this inbound text. Its job id is the inbound message's id, so a text gets one
    /// job.
    Reply { inbound_id: String },
    /// Write and send an AI subscription's message for this local date.
    Daily {
        subscription_id: String,
        local_date: chrono::NaiveDate,
    },
}
