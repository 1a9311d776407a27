//! Events Herald posts to a tenant's endpoints: their types, and the job that delivers one
//! event to one endpoint.

use std::{fmt, str::FromStr, time::Duration};

use rand::RngExt;
use serde::{Deserialize, Serialize};

use super::Invalid;
use crate::queue::{Flow, QueuedJob};

/// What an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    MessageSent,
    MessageDelivered,
    MessageFailed,
    MessageUndelivered,
    MessageDead,
    MessageSuppressed,
    MessageExpired,
    InboundReceived,
    ContactOptedOut,
    ContactOptedIn,
    ConversationHumanNeeded,
    GroupSendCompleted,
}

impl EventType {
    pub const ALL: [EventType; 12] = [
        Self::MessageSent,
        Self::MessageDelivered,
        Self::MessageFailed,
        Self::MessageUndelivered,
        Self::MessageDead,
        Self::MessageSuppressed,
        Self::MessageExpired,
        Self::InboundReceived,
        Self::ContactOptedOut,
        Self::ContactOptedIn,
        Self::ConversationHumanNeeded,
        Self::GroupSendCompleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::MessageSent => "message.sent",
            Self::MessageDelivered => "message.delivered",
            Self::MessageFailed => "message.failed",
            Self::MessageUndelivered => "message.undelivered",
            Self::MessageDead => "message.dead",
            Self::MessageSuppressed => "message.suppressed",
            Self::MessageExpired => "message.expired",
            Self::InboundReceived => "inbound.received",
            Self::ContactOptedOut => "contact.opted_out",
            Self::ContactOptedIn => "contact.opted_in",
            Self::ConversationHumanNeeded => "conversation.human_needed",
            Self::GroupSendCompleted => "group_send.completed",
        }
    }

    /// What its `data` is rendered from.
    pub fn subject(self) -> Subject {
        match self {
            Self::InboundReceived => Subject::Inbound,
            Self::ContactOptedOut | Self::ContactOptedIn => Subject::Contact,
            Self::ConversationHumanNeeded => Subject::HumanNeeded,
            Self::GroupSendCompleted => Subject::GroupSend,
            _ => Subject::Message,
        }
    }
}

/// What an event's `data` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// The Message.
    Message,
    /// The inbound conversation entry, with its `contact_id`.
    Inbound,
    /// The Contact.
    Contact,
    /// The conversation waiting for a person, with the entry that wants an answer.
    HumanNeeded,
    /// The group send with its counts.
    GroupSend,
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                Invalid(format!(
                    "unknown event type `{s}`; one of: {}",
                    Self::ALL.map(Self::as_str).join(", ")
                ))
            })
    }
}

/// The job on the `events` queue: deliver this event to this endpoint. Its id is
/// [`EventJob::id`], so an event is queued once per endpoint however often it is pushed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventJob {
    pub event_id: String,
    pub endpoint_id: String,
    pub tenant_id: String,
}

impl EventJob {
    pub fn id(&self) -> String {
        format!("{}/{}", self.event_id, self.endpoint_id)
    }
}

impl QueuedJob for EventJob {
    /// Tenants take turns: one tenant's flood of events waits behind nobody else's.
    fn flow(&self) -> Flow {
        Flow {
            tenant: Some(self.tenant_id.clone()),
            ..Flow::default()
        }
    }
}

/// The wait before retrying an event delivery whose `failed` attempts (1-based) all failed:
/// the schedule's entry, give or take a fifth; `None` once the schedule is spent.
pub fn retry_wait(schedule: &[Duration], failed: u32) -> Option<Duration> {
    let base = *schedule.get(usize::try_from(failed).ok()?.checked_sub(1)?)?;
    let factor = rand::rng().random_range(0.8..=1.2);
    Some(base.mul_f64(factor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_reads_back_from_its_name() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
        }
        let err = "message.lost".parse::<EventType>().unwrap_err();
        assert!(err.0.contains("message.sent"), "{}", err.0);
    }

    #[test]
    fn retries_follow_the_schedule_within_a_fifth_and_then_stop() {
        let schedule = crate::config::EVENT_RETRY_SCHEDULE;
        for _ in 0..100 {
            let first = retry_wait(&schedule, 1).unwrap();
            assert!((4_000..=6_000).contains(&first.as_millis()), "{first:?}");
            let last = retry_wait(&schedule, 7).unwrap();
            assert!((28_800..=43_200).contains(&last.as_secs()), "{last:?}");
        }
        assert_eq!(retry_wait(&schedule, 8), None);
        assert_eq!(retry_wait(&schedule, 0), None);
    }
}
