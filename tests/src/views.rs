//! Typed views of what the API answers (the contract's shapes, `/work/shared/API.md` and
//! `api/src/views.rs`), so tests read fields by name and a missing or mistyped field fails
//! where the body is read.
//!
//! Views ignore fields they do not name (the contract welcomes additions); a test that checks
//! the raw shape (say, that a field is absent) reads the `serde_json::Value` instead. Times stay
//! strings so tests still see their exact form; [`time`] parses one.

use std::{collections::BTreeMap, fmt};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// Reads `value` as `T`, panicking with the body when it does not fit.
pub fn view<T: DeserializeOwned>(value: &Value) -> T {
    T::deserialize(value).unwrap_or_else(|e| {
        panic!(
            "the body is not a {}: {e}: {value}",
            std::any::type_name::<T>()
        )
    })
}

/// An RFC 3339 time from a view.
pub fn time(s: &str) -> DateTime<Utc> {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} is not an RFC 3339 time: {e}"))
}

/// Views print as JSON (of the fields they name), for assertion messages.
macro_rules! display_as_json {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&serde_json::to_string(self).map_err(|_| fmt::Error)?)
            }
        }
    )*};
}

/// A message (`POST /v1/messages`, a page of messages), and with its `events` when read one
/// at a time (`GET /v1/messages/{id}`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MessageView {
    pub id: String,
    pub channel: String,
    pub to: String,
    pub subject: Option<String>,
    /// Text for sms and email, any JSON for a webhook.
    pub body: Value,
    pub status: String,
    pub send_at: String,
    pub expires_at: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub provider_message_id: Option<String>,
    pub contact_id: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
    pub delivered_at: Option<String>,
    pub metadata: Value,
    pub direction: String,
    pub author: String,
    pub model: Option<String>,
    pub usage: Option<Value>,
    /// `transactional` or `bulk`.
    pub priority: String,
    /// An SMS: `GSM-7` or `UCS-2`; null otherwise.
    pub encoding: Option<String>,
    /// An SMS: how many segments it is sent as; null otherwise.
    pub segments: Option<i64>,
    /// When it is expected to leave; null once it has.
    pub expected_at: Option<String>,
    /// When its texts were removed (retention or erasure).
    #[serde(default)]
    pub redacted_at: Option<String>,
    /// Oldest first; empty where the answer carries none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventView>,
    /// Ops views only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

impl MessageView {
    /// The statuses of its events, oldest first.
    pub fn event_statuses(&self) -> Vec<String> {
        self.events.iter().map(|e| e.status.clone()).collect()
    }

    /// The details of the events with `status`, oldest first.
    pub fn details_of(&self, status: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e.status == status)
            .map(|e| e.detail.clone().unwrap_or_default())
            .collect()
    }

    /// Its events with `status` whose detail mentions `detail_part` (in any case).
    pub fn events_with(&self, status: &str, detail_part: &str) -> Vec<&EventView> {
        self.events
            .iter()
            .filter(|e| {
                e.status == status
                    && e.detail
                        .as_deref()
                        .is_some_and(|d| d.to_lowercase().contains(detail_part))
            })
            .collect()
    }

    /// The details of all its events, oldest first.
    pub fn details(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| e.detail.clone())
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EventView {
    pub at: String,
    pub status: String,
    pub detail: Option<String>,
}

/// `{"data": [...], "next_cursor": ...}`
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// One queue's counts (`GET /v1/admin/queues`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct QueueStatsView {
    pub name: String,
    pub pending: u64,
    pub scheduled: u64,
    pub running: u64,
    pub dead: u64,
    pub completed_last_minute: u64,
    pub failed_last_minute: u64,
    pub oldest_due_seconds: f64,
}

impl QueueStatsView {
    /// Nothing pending, scheduled or running.
    pub fn is_idle(&self) -> bool {
        self.pending == 0 && self.scheduled == 0 && self.running == 0
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DeadLetterView {
    pub id: String,
    pub queue: String,
    pub tenant_id: String,
    pub message_id: Option<String>,
    /// `exhausted` or `rejected`.
    pub reason: String,
    pub payload: Value,
    pub attempts: i64,
    pub errors: Vec<AttemptErrorView>,
    pub dead_at: String,
    pub replayed_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AttemptErrorView {
    pub at: String,
    pub error: String,
}

/// The answer to replaying one dead letter.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Replayed {
    pub message_id: String,
    pub status: String,
}

/// The answer to a bulk replay.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ReplayedCount {
    pub replayed: u64,
}

/// The contract's error body, `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ErrorBody {
    pub error: ErrorView,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ErrorView {
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

/// Reads an error body (panics unless it is one).
pub fn api_error(value: &Value) -> ErrorView {
    view::<ErrorBody>(value).error
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ContactView {
    pub id: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub timezone: String,
    pub opted_out: bool,
    /// `ok` or `unreachable`.
    pub phone_status: String,
    pub consent: ConsentView,
    /// `ai` or `human`.
    pub mode: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ConversationView {
    pub contact_id: String,
    pub mode: String,
    pub data: Vec<ConversationEntryView>,
    pub next_cursor: Option<String>,
}

impl ConversationView {
    /// `(direction, author, body)` of each entry, oldest first.
    pub fn entries(&self) -> Vec<(String, String, String)> {
        self.data
            .iter()
            .map(|e| (e.direction.clone(), e.author.clone(), e.body.clone()))
            .collect()
    }
}

/// An expected entry of [`ConversationView::entries`].
pub fn entry(direction: &str, author: &str, body: &str) -> (String, String, String) {
    (direction.to_owned(), author.to_owned(), body.to_owned())
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ConversationEntryView {
    pub id: String,
    pub direction: String,
    pub author: String,
    pub body: String,
    pub at: String,
    pub status: String,
}

/// `GET /v1/group-messages/{id}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct GroupSendView {
    pub id: String,
    pub group_id: String,
    pub channel: String,
    pub recipients: i64,
    /// Messages by status.
    pub counts: BTreeMap<String, i64>,
    pub created_at: String,
}

/// An appointment with its reminders (`/v1/appointments`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AppointmentView {
    pub id: String,
    pub contact_id: String,
    pub starts_at: String,
    pub channel: String,
    pub body_template: String,
    /// Earliest first.
    pub reminders: Vec<MessageView>,
    pub canceled_at: Option<String>,
}

impl AppointmentView {
    /// The reminder with this id.
    pub fn reminder(&self, id: &str) -> &MessageView {
        self.reminders
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no reminder {id} in {self}"))
    }
}

/// A tenant as created (`POST /v1/admin/tenants`): its key and secret are shown only here.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CreatedTenantView {
    pub id: String,
    pub name: String,
    pub api_key: String,
    pub key_prefix: String,
    pub webhook_secret: String,
    pub timezone: String,
    pub sms_from: Option<String>,
    pub email_from: Option<String>,
    /// `{"start": "HH:MM", "end": "HH:MM"}`, or null when turned off.
    pub quiet_hours: Option<Value>,
    pub created_at: String,
}

/// A new API key (`POST /v1/admin/tenants/{id}/keys`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct CreatedKeyView {
    pub api_key: String,
    pub key_prefix: String,
}

/// A daily subscription (`/v1/subscriptions`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SubscriptionView {
    pub id: String,
    pub contact_id: String,
    /// `HH:MM` in the contact's zone.
    pub send_at_local: String,
    pub channel: String,
    /// `{"kind": "static", "body"}` or `{"kind": "ai", "prompt"}`, kept raw so tests see which
    /// keys are there.
    pub content: Value,
    pub first_delivery_date: String,
    /// A paused subscription creates no daily message.
    pub paused: bool,
    pub created_at: String,
}

/// A contact group (`/v1/groups`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct GroupView {
    pub id: String,
    pub name: String,
    pub members: i64,
    pub created_at: String,
}

/// The answer to adding contacts to a group (`POST /v1/groups/{id}/members`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MembersAddedView {
    pub added: i64,
    pub already: i64,
    pub unknown: Vec<String>,
}

/// One conversation of the inbox (`GET /v1/conversations`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InboxRowView {
    pub contact_id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub mode: String,
    pub last_entry: ConversationEntryView,
    pub needs_reply: bool,
}

/// The answer to a group send (`POST /v1/groups/{id}/messages`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct GroupSendAccepted {
    pub id: String,
    pub group_id: String,
    /// Members with an address for the channel.
    pub recipients: i64,
}

display_as_json!(
    SubscriptionView,
    CreatedTenantView,
    CreatedKeyView,
    Replayed,
    AttemptErrorView,
    EventView,
    AppointmentView,
    GroupView,
    GroupSendAccepted,
    MessageView,
    QueueStatsView,
    DeadLetterView,
    ErrorView,
    ContactView,
    ConversationView,
    GroupSendView,
    MembersAddedView,
    InboxRowView
);

impl<T: Serialize> fmt::Display for Page<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

/// A contact's consent, or one change of it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ConsentView {
    pub status: String,
    pub at: Option<String>,
    pub method: Option<String>,
    pub source: Option<String>,
    pub text: Option<String>,
}
