//! What the API answers with: the contract's JSON shapes, built from store rows.

use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::HashMap;

use herald_core::domain::{Channel, MessageStatus, Segments};
use herald_core::queue::Queue;
use herald_core::store::{
    messages::{EventRow, MessageRow, segment_count},
    tenants::TenantRow,
};
use serde::Serialize;
use utoipa::ToSchema;

/// RFC 3339 with milliseconds and a `Z` offset.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn opt_time(t: Option<DateTime<Utc>>) -> Option<String> {
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
pub struct Event {
    pub at: String,
    pub status: String,
    pub detail: Option<String>,
}

impl From<EventRow> for Event {
    fn from(e: EventRow) -> Self {
        Self {
            at: time(e.at),
            status: e.status,
            detail: e.detail,
        }
    }
}

/// A message with its history, oldest event first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageWithEvents {
    #[serde(flatten)]
    pub message: Message,
    pub events: Vec<Event>,
    /// The owning tenant (ops views only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    pub data: Vec<Message>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuietHours {
    /// `HH:MM`, local to the recipient.
    pub start: String,
    pub end: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTenant {
    /// `ten_...`
    pub id: String,
    pub name: String,
    /// Shown once: only its hash is kept.
    pub api_key: String,
    /// The key's first 12 characters, safe to show and log.
    pub key_prefix: String,
    /// `whsec_...`: signs this tenant's outbound webhooks.
    pub webhook_secret: String,
    pub timezone: String,
    pub sms_from: Option<String>,
    /// The Twilio Messaging Service SMS are sent through, if any (instead of `sms_from`).
    pub messaging_service_sid: Option<String>,
    pub email_from: Option<String>,
    pub quiet_hours: Option<QuietHours>,
    /// A bulk SMS to a contact whose consent is not `opted_in` is suppressed (`no consent`).
    pub require_consent_for_bulk: bool,
    /// At most `max` bulk messages per contact within `per`; null: no cap.
    pub frequency_cap: Option<FrequencyCap>,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FrequencyCap {
    pub max: i32,
    /// `30m`, `24h`, `7d`.
    pub per: String,
}

/// A span in the largest whole unit of minutes, hours or days.
fn span(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{}m", s / 60),
    }
}

fn quiet_hours(t: &TenantRow) -> Option<QuietHours> {
    match (t.quiet_start, t.quiet_end) {
        (Some(start), Some(end)) => Some(QuietHours {
            start: start.format("%H:%M").to_string(),
            end: end.format("%H:%M").to_string(),
        }),
        _ => None,
    }
}

fn frequency_cap(t: &TenantRow) -> Option<FrequencyCap> {
    match (t.frequency_cap_max, t.frequency_cap_per) {
        (Some(max), Some(per)) => Some(FrequencyCap {
            max,
            per: span(i64::from(per.days) * 86_400 + per.microseconds / 1_000_000),
        }),
        _ => None,
    }
}

impl CreatedTenant {
    pub fn new(t: TenantRow, api_key: String, key_prefix: String) -> Self {
        Self {
            quiet_hours: quiet_hours(&t),
            frequency_cap: frequency_cap(&t),
            id: t.id,
            name: t.name,
            api_key,
            key_prefix,
            webhook_secret: t.webhook_secret,
            timezone: t.timezone,
            sms_from: t.sms_from,
            messaging_service_sid: t.messaging_service_sid,
            email_from: t.email_from,
            require_consent_for_bulk: t.require_consent_for_bulk,
            created_at: time(t.created_at),
        }
    }
}

/// A tenant's settings (`GET /v1/tenant`, and the operator's views of any tenant). A text
/// setting that is null means Herald's default text is used.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantSettings {
    /// `ten_...`
    pub id: String,
    pub name: String,
    /// IANA time zone.
    pub timezone: String,
    /// E.164; also routes inbound SMS to this tenant.
    pub sms_from: Option<String>,
    /// The Twilio Messaging Service SMS are sent through, if any (instead of `sms_from`).
    pub messaging_service_sid: Option<String>,
    /// SMS segments per second over the pace of the sender's class (null: the class's).
    pub sms_mps: Option<f64>,
    pub email_from: Option<String>,
    /// Null: no quiet hours.
    pub quiet_hours: Option<QuietHours>,
    /// The answer to HELP or INFO.
    pub help_text: Option<String>,
    /// The AI's instructions (null: Herald's safe default).
    pub ai_system_prompt: Option<String>,
    /// Texted to a caller whose call was missed.
    pub missed_call_text: Option<String>,
    /// At most `max` bulk messages per contact within `per`; null: no cap.
    pub frequency_cap: Option<FrequencyCap>,
    /// A bulk SMS to a contact whose consent is not `opted_in` is suppressed (`no consent`).
    pub require_consent_for_bulk: bool,
    /// Days bodies and texts are kept (1..3650).
    pub retention_days: i32,
    /// Set by the operator: keys are refused and messages wait.
    pub suspended: bool,
    /// Sent when no model answers.
    pub canned_reply: Option<String>,
    /// One missed-call text-back per caller within this many minutes.
    pub missed_call_cooldown_minutes: i32,
    pub created_at: String,
}

impl From<TenantRow> for TenantSettings {
    fn from(t: TenantRow) -> Self {
        Self {
            quiet_hours: quiet_hours(&t),
            frequency_cap: frequency_cap(&t),
            id: t.id,
            name: t.name,
            timezone: t.timezone,
            sms_from: t.sms_from,
            messaging_service_sid: t.messaging_service_sid,
            sms_mps: t.sms_mps,
            email_from: t.email_from,
            help_text: t.help_text,
            ai_system_prompt: t.system_prompt,
            missed_call_text: t.missed_call_text,
            require_consent_for_bulk: t.require_consent_for_bulk,
            retention_days: t.retention_days,
            suspended: t.suspended,
            canned_reply: t.canned_reply,
            missed_call_cooldown_minutes: t.missed_call_cooldown_minutes,
            created_at: time(t.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPage {
    pub data: Vec<TenantSettings>,
    pub next_cursor: Option<String>,
}

/// What `POST /v1/contacts/import` did: rows created, rows updated, and each row refused
/// (which changed nothing).
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportResult {
    pub created: u64,
    pub updated: u64,
    pub rejected: Vec<RejectedRow>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RejectedRow {
    /// 0-based: the item of `contacts`, or the CSV data row (the header not counted).
    pub index: usize,
    /// The field at fault (`phone`, `consent.status`); null when the row itself is (a CSV
    /// row with the wrong number of cells).
    pub field: Option<String>,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    pub api_key: String,
    pub key_prefix: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unready`.
    pub status: &'static str,
    pub checks: ReadinessChecks,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessChecks {
    /// `ok`, or why not.
    pub postgres: String,
    pub redis: String,
    /// `ok`, or how many SMS senders are paused until the operator fixes what Twilio
    /// refused, by error code (Herald is ready; those senders' messages wait).
    pub senders: String,
}

/// One queue's counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueStats {
    pub name: String,
    /// Due now and waiting for a worker, or for their SMS sender's pace.
    pub pending: u64,
    /// Of `pending`, SMS waiting for their sender's pace.
    pub paced: u64,
    /// Due later.
    pub scheduled: u64,
    /// Leased by a worker right now.
    pub running: u64,
    pub dead: u64,
    pub completed_last_minute: u64,
    pub failed_last_minute: u64,
}

impl From<herald_core::queue::QueueStats> for QueueStats {
    fn from(s: herald_core::queue::QueueStats) -> Self {
        Self {
            name: s.name,
            pending: s.pending,
            paced: s.paced,
            scheduled: s.scheduled,
            running: s.running,
            dead: s.dead,
            completed_last_minute: s.completed_last_minute,
            failed_last_minute: s.failed_last_minute,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptError {
    pub at: String,
    pub error: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetter {
    /// `dl_...`
    pub id: String,
    pub queue: String,
    pub tenant_id: String,
    pub message_id: Option<String>,
    /// `exhausted` (every attempt failed) or `rejected` (the provider refused it for good).
    pub reason: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub attempts: i32,
    pub errors: Vec<AttemptError>,
    pub dead_at: String,
    pub replayed_at: Option<String>,
}

impl From<herald_core::store::dead_letters::DeadLetterRow> for DeadLetter {
    fn from(d: herald_core::store::dead_letters::DeadLetterRow) -> Self {
        let errors = d
            .errors
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| AttemptError {
                        at: e["at"]
                            .as_str()
                            .and_then(|t| t.parse::<DateTime<Utc>>().ok())
                            .map(time)
                            .unwrap_or_default(),
                        error: e["error"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            id: d.id,
            queue: d.queue,
            tenant_id: d.tenant_id,
            message_id: d.message_id,
            reason: d.reason,
            payload: d.payload,
            attempts: d.attempts,
            errors,
            dead_at: time(d.dead_at),
            replayed_at: opt_time(d.replayed_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    pub data: Vec<DeadLetter>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    pub message_id: String,
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayedCount {
    pub replayed: u64,
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

impl From<herald_core::store::contacts::ConsentEventRow> for Consent {
    fn from(e: herald_core::store::contacts::ConsentEventRow) -> Self {
        Self {
            status: e.status,
            at: Some(time(e.at)),
            method: e.method,
            source: e.source,
            text: e.text,
        }
    }
}

/// A page of a contact's consent events, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentEventPage {
    pub data: Vec<Consent>,
    pub next_cursor: Option<String>,
}

impl Contact {
    pub fn new(c: herald_core::store::contacts::ContactRow, tenant_timezone: &str) -> Self {
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
pub struct Conversation {
    pub contact_id: String,
    /// `ai` or `human`.
    pub mode: String,
    pub data: Vec<ConversationEntry>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationMode {
    pub contact_id: String,
    pub mode: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Appointment {
    /// `apt_...`
    pub id: String,
    pub contact_id: String,
    pub starts_at: String,
    pub channel: String,
    pub body_template: String,
    /// Its reminders, earliest first (those whose time had passed were not created).
    pub reminders: Vec<Message>,
    pub canceled_at: Option<String>,
}

impl Appointment {
    pub fn new(
        a: herald_core::store::appointments::AppointmentRow,
        reminders: Vec<MessageRow>,
    ) -> Self {
        Self {
            id: a.id,
            contact_id: a.contact_id,
            starts_at: time(a.starts_at),
            channel: a.channel.as_str().to_owned(),
            body_template: a.body_template,
            reminders: reminders.into_iter().map(Into::into).collect(),
            canceled_at: opt_time(a.canceled_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionContent {
    /// `static` or `ai`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Subscription {
    /// `sub_...`
    pub id: String,
    pub contact_id: String,
    /// `HH:MM` in the contact's time zone.
    pub send_at_local: String,
    pub channel: String,
    pub content: SubscriptionContent,
    /// The local date of the first delivery.
    pub first_delivery_date: String,
    pub created_at: String,
}

impl From<herald_core::store::subscriptions::SubscriptionRow> for Subscription {
    fn from(s: herald_core::store::subscriptions::SubscriptionRow) -> Self {
        let (body, prompt) = if s.content_kind == "ai" {
            (None, Some(s.content))
        } else {
            (Some(s.content), None)
        };
        Self {
            id: s.id,
            contact_id: s.contact_id,
            send_at_local: s.send_at_local.format("%H:%M").to_string(),
            channel: s.channel.as_str().to_owned(),
            content: SubscriptionContent {
                kind: s.content_kind,
                body,
                prompt,
            },
            first_delivery_date: s.first_date.to_string(),
            created_at: time(s.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Group {
    /// `grp_...`
    pub id: String,
    pub name: String,
    pub members: i64,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ContactPage {
    pub data: Vec<Contact>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GroupSendAccepted {
    /// `gms_...`
    pub id: String,
    pub group_id: String,
    /// Members with an address for the channel: one message each.
    pub recipients: i32,
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
}
