//! The jobs Herald queues: plain serde payloads, small, naming what to work on. A job's id is
//! the id of what it works on, so pushing it twice leaves one job.

use serde::{Deserialize, Serialize};

use super::{Channel, Priority, Segments};
use crate::{
    queue::{Flow, QueuedJob},
    store::messages::MessageRow,
};

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
    /// Bulk jobs wait behind every due transactional one (absent: transactional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// An SMS: the number or Messaging Service it leaves from, and its segments, for the
    /// sender's pace (absent in jobs queued before pacing: those are not paced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<u16>,
    /// With traces on: the W3C `traceparent` of the span that queued it, so the job's spans
    /// join the message's trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
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
            priority: None,
            sender: None,
            segments: None,
            traceparent: None,
        }
    }

    /// The job for a stored message: its tenant, channel and target, its priority, and for
    /// an SMS its sender and segments.
    pub fn for_message(m: &MessageRow) -> Self {
        let segments = m
            .segments
            .or_else(|| i16::try_from(Segments::of(&m.body).count).ok());
        Self::new(&m.id, &m.tenant_id, m.channel, &m.to_addr).paced(
            m.priority,
            m.from_addr.as_deref(),
            segments,
        )
    }

    /// With its priority and, for an SMS, what its sender's pace needs.
    pub fn paced(
        mut self,
        priority: Priority,
        sender: Option<&str>,
        segments: Option<i16>,
    ) -> Self {
        self.priority = (priority == Priority::Bulk).then_some(Priority::Bulk);
        if self.channel == Some(Channel::Sms) {
            self.sender = sender.map(str::to_owned);
            self.segments = Some(segments.and_then(|n| u16::try_from(n).ok()).unwrap_or(1));
        }
        self
    }

    pub fn priority(&self) -> Priority {
        self.priority.unwrap_or(Priority::Transactional)
    }
}

impl QueuedJob for DeliveryJob {
    fn flow(&self) -> Flow {
        Flow {
            priority: self.priority(),
            tenant: self.tenant_id.clone(),
        }
    }

    fn route(&self) -> Option<&str> {
        self.sender.as_deref()
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

impl QueuedJob for AiJob {}
