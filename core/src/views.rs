//! The API's JSON shapes that more than the API shows: a Message, a Contact and a
//! conversation entry are also the `data` of the events Herald posts to a tenant's endpoints,
//! which the worker renders. Built from store rows.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    domain::{
        Channel, MessageStatus, Segments,
        events::{EventType, Subject},
    },
    queue::Queue,
    store::messages::{MessageRow, segment_count},
};

/// RFC 3339 with milliseconds and a `Z` offset.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn opt_time(t: Option<DateTime<Utc>>) -> Option<String> {
    t.map(time)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    /// `msg_...`
    pub id: String,
    /// `sms`, `email` or `webhook`.
    pub channel: String,
    pub to: String,
    pub subject: Option<String>,
    /// The text (sms, email) or the JSON document (webhook).
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    /// scheduled, queued, sending, retrying, sent, delivered, failed, undelivered, canceled,
    /// suppressed, expired or dead.
    pub status: String,
    pub send_at: String,
    pub expires_at: String,
    /// Provider calls in the current run.
    pub attempts: i32,
    pub last_error: Option<String>,
    pub provider_message_id: Option<String>,
    pub contact_id: Option<String>,
    pub created_at: String,
    pub sent_at: Option<String>,
    pub delivered_at: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// `outbound` or `inbound`.
    pub direction: String,
    /// Who wrote it: `api`, `contact`, `ai`, `human` or `system`.
    pub author: String,
    /// For an AI reply: the model that answered (null for the canned reply).
    pub model: Option<String>,
    /// For an AI reply: the model's token usage.
    #[schema(value_type = Option<Object>)]
    pub usage: Option<serde_json::Value>,
    /// `transactional` or `bulk`.
    pub priority: String,
    /// An SMS: `GSM-7` or `UCS-2` (null for email and webhooks).
    pub encoding: Option<String>,
    /// An SMS: the segments it is sent and billed as (160 GSM-7 characters or 70 UCS-2 in
    /// one; 153 or 67 each when split). Null for email and webhooks.
    pub segments: Option<i16>,
    /// When it is expected to leave, given its time, its retries and its sender's pace (the
    /// due transactional messages before it, for a bulk one). Null once it has left, or for
    /// an inbound message.
    pub expected_at: Option<String>,
    /// When its body, subject and error texts were removed: by the tenant's retention, or
    /// because its contact was erased. Null while it has them.
    pub redacted_at: Option<String>,
}

impl From<MessageRow> for Message {
    fn from(m: MessageRow) -> Self {
        // A row written before segments were recorded is measured now.
        let (encoding, segments) = match (m.channel, m.encoding, m.segments) {
            (Channel::Sms, Some(e), Some(n)) => (Some(e), Some(n)),
            (Channel::Sms, _, _) => {
                let s = Segments::of(&m.body);
                (Some(s.encoding), Some(segment_count(s)))
            }
            _ => (None, None),
        };
        let expected_at = waiting(&m.direction, m.status).then(|| time(m.send_at.max(Utc::now())));
        let body = if m.channel == Channel::Webhook {
            serde_json::from_str(&m.body).unwrap_or(serde_json::Value::String(m.body))
        } else {
            serde_json::Value::String(m.body)
        };
        Self {
            id: m.id,
            channel: m.channel.as_str().to_owned(),
            to: m.to_addr,
            subject: m.subject,
            body,
            status: m.status.as_str().to_owned(),
            send_at: time(m.send_at),
            expires_at: time(m.expires_at),
            attempts: m.attempts,
            last_error: m.last_error,
            provider_message_id: m.provider_message_id,
            contact_id: m.contact_id,
            created_at: time(m.created_at),
            sent_at: opt_time(m.sent_at),
            delivered_at: opt_time(m.delivered_at),
            metadata: m.metadata,
            direction: m.direction,
            author: m.author,
            model: m.model,
            usage: m.usage,
            priority: m.priority.as_str().to_owned(),
            encoding: encoding.map(|e| e.as_str().to_owned()),
            segments,
            expected_at,
            redacted_at: opt_time(m.redacted_at),
        }
    }
}

/// Whether an outbound message has yet to leave.
fn waiting(direction: &str, status: MessageStatus) -> bool {
    direction == "outbound"
        && matches!(
            status,
            MessageStatus::Scheduled | MessageStatus::Queued | MessageStatus::Retrying
        )
}

impl Message {
    /// Messages as the API shows them, with `expected_at` from the queue: when each waiting
    /// one's job is due, or its sender's pace reaches it. While Redis cannot say, the time
    /// asked for (or now) stands.
    pub async fn with_expected(queue: &Queue, rows: Vec<MessageRow>) -> Vec<Message> {
        let ids: Vec<&str> = rows
            .iter()
            .filter(|m| waiting(&m.direction, m.status))
            .map(|m| m.id.as_str())
            .collect();
        let expected: HashMap<String, i64> = match queue.expected(&ids).await {
            Ok(at) => ids
                .iter()
                .zip(at)
                .filter_map(|(id, at)| Some(((*id).to_owned(), at?)))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "expected times unavailable");
                HashMap::new()
            }
        };
        rows.into_iter()
            .map(|m| {
                let at = expected.get(&m.id).copied();
                let mut view = Message::from(m);
                if let (Some(ms), Some(_)) = (at, &view.expected_at)
                    && let Some(t) = DateTime::<Utc>::from_timestamp_millis(ms)
                {
                    view.expected_at = Some(time(t));
                }
                view
            })
            .collect()
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Contact {
    /// `ct_...`
    pub id: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    /// IANA time zone.
    pub timezone: String,
    pub opted_out: bool,
    /// `ok`, or `unreachable` once a carrier reported that the phone cannot receive texts
    /// (Twilio 21211, 21612, 21614, 21635, 30005, 30006): SMS to it are then `suppressed`
    /// until the phone is changed.
    pub phone_status: String,
    pub consent: Consent,
    /// Who answers this contact's texts: `ai` or `human`.
    pub mode: String,
    pub created_at: String,
}

/// A contact's consent to texts, or a change of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Consent {
    /// `opted_in`, `opted_out` or `unknown`.
    pub status: String,
    /// When it was given or withdrawn (null while `unknown` and never set).
    pub at: Option<String>,
    /// `web_form`, `sms_keyword`, `paper`, `verbal`, `import` or `api`.
    pub method: Option<String>,
    pub source: Option<String>,
    pub text: Option<String>,
}

impl From<crate::store::contacts::ConsentEventRow> for Consent {
    fn from(e: crate::store::contacts::ConsentEventRow) -> Self {
        Self {
            status: e.status,
            at: Some(time(e.at)),
            method: e.method,
            source: e.source,
            text: e.text,
        }
    }
}

impl Contact {
    pub fn new(c: crate::store::contacts::ContactRow, tenant_timezone: &str) -> Self {
        Self {
            id: c.id,
            phone: c.phone,
            email: c.email,
            name: c.name,
            timezone: c.timezone.unwrap_or_else(|| tenant_timezone.to_owned()),
            opted_out: c.opted_out,
            phone_status: c.phone_status,
            consent: Consent {
                status: c.consent_status,
                at: opt_time(c.consent_at),
                method: c.consent_method,
                source: c.consent_source,
                text: c.consent_text,
            },
            mode: c.mode,
            created_at: time(c.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationEntry {
    pub id: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// `contact`, `ai`, `human`, `system` (or `api` for a message sent through the API).
    pub author: String,
    pub body: String,
    pub at: String,
    pub status: String,
}

impl From<MessageRow> for ConversationEntry {
    fn from(m: MessageRow) -> Self {
        Self {
            id: m.id,
            direction: m.direction,
            author: m.author,
            body: m.body,
            at: time(m.created_at),
            status: m.status.as_str().to_owned(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupSendStatus {
    pub id: String,
    pub group_id: String,
    pub channel: String,
    pub recipients: i32,
    /// Messages by status, e.g. `{"sent": 2, "suppressed": 1}`.
    #[schema(value_type = Object)]
    pub counts: std::collections::BTreeMap<String, i64>,
    pub created_at: String,
    /// When none of its messages was still on its way any more (null until then).
    pub completed_at: Option<String>,
}

/// An inbound text as its event shows it: the conversation entry and its contact.
#[derive(Debug, Serialize)]
pub struct InboundEntry {
    pub contact_id: Option<String>,
    #[serde(flatten)]
    pub entry: ConversationEntry,
}

/// A conversation a person took over, with the text that waits for their answer.
#[derive(Debug, Serialize)]
pub struct HumanNeeded {
    pub contact_id: Option<String>,
    pub mode: &'static str,
    pub last_entry: ConversationEntry,
}

/// A completed group send as `group_send.completed` carries it from the database.
#[derive(Debug, serde::Deserialize)]
struct GroupSendDone {
    id: String,
    group_id: String,
    channel: String,
    recipients: i32,
    counts: std::collections::BTreeMap<String, i64>,
    created_at: DateTime<Utc>,
    completed_at: DateTime<Utc>,
}

/// The body Herald posts for an event, its fields in the contract's order.
#[derive(Serialize)]
struct EventBody<'a, T> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    created_at: String,
    data: T,
}

/// The body Herald posts for an event: `{"id", "type", "created_at", "data"}`, with `data`
/// rendered from the row the event kept as the API shows that kind of object.
pub fn event_body(
    id: &str,
    kind: EventType,
    created_at: DateTime<Utc>,
    data: serde_json::Value,
) -> Result<String, serde_json::Error> {
    use serde_json::from_value;
    fn body<T: Serialize>(
        id: &str,
        kind: EventType,
        at: DateTime<Utc>,
        data: T,
    ) -> Result<String, serde_json::Error> {
        serde_json::to_string(&EventBody {
            id,
            kind: kind.as_str(),
            created_at: time(at),
            data,
        })
    }
    match kind.subject() {
        Subject::Message => body(
            id,
            kind,
            created_at,
            Message::from(from_value::<MessageRow>(data)?),
        ),
        Subject::Inbound => {
            let row: MessageRow = from_value(data)?;
            let entry = InboundEntry {
                contact_id: row.contact_id.clone(),
                entry: row.into(),
            };
            body(id, kind, created_at, entry)
        }
        Subject::HumanNeeded => {
            let row: MessageRow = from_value(data)?;
            let needed = HumanNeeded {
                contact_id: row.contact_id.clone(),
                mode: "human",
                last_entry: row.into(),
            };
            body(id, kind, created_at, needed)
        }
        // The snapshot spells the time zone out already.
        Subject::Contact => body(id, kind, created_at, Contact::new(from_value(data)?, "UTC")),
        Subject::GroupSend => {
            let g: GroupSendDone = from_value(data)?;
            let status = GroupSendStatus {
                id: g.id,
                group_id: g.group_id,
                channel: g.channel,
                recipients: g.recipients,
                counts: g.counts,
                created_at: time(g.created_at),
                completed_at: Some(time(g.completed_at)),
            };
            body(id, kind, created_at, status)
        }
    }
}
