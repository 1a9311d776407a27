//! What the API answers with: the contract's JSON shapes, built from store rows.

use chrono::{DateTime, Utc};

use herald_core::store::{
    messages::{EventRow, MessageRow},
    tenants::TenantRow,
};
use serde::Serialize;
use utoipa::ToSchema;

pub use herald_core::views::{
    Consent, Contact, ConversationEntry, GroupSendStatus, Message, opt_time, time,
};

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
    /// How long the oldest due job has waited for a worker, in seconds (0: none waits; jobs
    /// waiting for their sender's pace are not counted).
    pub oldest_due_seconds: f64,
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
            oldest_due_seconds: s.oldest_due_seconds,
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

/// A page of a contact's consent events, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentEventPage {
    pub data: Vec<Consent>,
    pub next_cursor: Option<String>,
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
    /// The local date of the first delivery (after a change of `send_at_local` or a resume:
    /// of the first delivery since).
    pub first_delivery_date: String,
    /// A paused subscription creates no daily message.
    pub paused: bool,
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
            paused: s.paused,
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

impl From<herald_core::store::groups::GroupWithCount> for Group {
    fn from(g: herald_core::store::groups::GroupWithCount) -> Self {
        Self {
            id: g.group.id,
            name: g.group.name,
            members: g.members,
            created_at: time(g.group.created_at),
        }
    }
}

/// A group a contact is a member of: the group, and when the contact was added to it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Membership {
    #[serde(flatten)]
    pub group: Group,
    pub added_at: String,
}

impl From<herald_core::store::groups::Membership> for Membership {
    fn from(m: herald_core::store::groups::Membership) -> Self {
        Self {
            group: m.group.into(),
            added_at: time(m.added_at),
        }
    }
}

/// Everything Herald holds about one contact (`GET /v1/contacts/{id}/export`), each object
/// as its own route shows it. The document is written a page at a time, in this order, and
/// never built whole.
#[derive(ToSchema)]
#[allow(dead_code)] // read by utoipa's derive: the route writes the document piece by piece
pub struct ContactExport {
    /// As `GET /v1/contacts/{id}` shows it.
    pub contact: Contact,
    /// Every change of the contact's consent, oldest first.
    pub consent_events: Vec<Consent>,
    /// Every message about the person, newest first, as `GET /v1/messages/{id}` shows it:
    /// naming the contact, sent to their phone or email address, or texted from their phone.
    pub messages: Vec<MessageWithEvents>,
    /// The whole SMS conversation, oldest first, as `GET /v1/conversations/{contact_id}`
    /// shows its entries.
    pub conversation: Vec<ConversationEntry>,
    /// The contact's appointments with their reminders, soonest first.
    pub appointments: Vec<Appointment>,
    /// The contact's subscriptions, newest first.
    pub subscriptions: Vec<Subscription>,
    /// The groups the contact is a member of, newest group first.
    pub groups: Vec<Membership>,
}

/// A page of subscriptions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionPage {
    pub data: Vec<Subscription>,
    pub next_cursor: Option<String>,
}

/// A page of appointments, soonest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppointmentPage {
    pub data: Vec<Appointment>,
    pub next_cursor: Option<String>,
}

/// A page of groups, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupPage {
    pub data: Vec<Group>,
    pub next_cursor: Option<String>,
}

/// What adding contacts to a group did.
#[derive(Debug, Serialize, ToSchema)]
pub struct MembersAdded {
    /// Contacts that became members.
    pub added: i64,
    /// Contacts that were members already.
    pub already: i64,
    /// Ids that are not this tenant's contacts (nothing was done with them), in the order given.
    pub unknown: Vec<String>,
}

/// One conversation in the inbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboxRow {
    pub contact_id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    /// `ai` or `human`.
    pub mode: String,
    /// The conversation's newest entry.
    pub last_entry: Option<ConversationEntry>,
    /// The newest entry is an inbound text: the contact waits for an answer.
    pub needs_reply: bool,
}

impl From<herald_core::services::inbox::InboxItem> for InboxRow {
    fn from(i: herald_core::services::inbox::InboxItem) -> Self {
        Self {
            contact_id: i.row.contact_id,
            name: i.row.name,
            phone: i.row.phone,
            mode: i.row.mode,
            last_entry: i.last_entry.map(Into::into),
            needs_reply: i.row.last_inbound,
        }
    }
}

/// A page of the inbox, newest activity first.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboxPage {
    pub data: Vec<InboxRow>,
    pub next_cursor: Option<String>,
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

/// An event endpoint: where a tenant's events go.
#[derive(Debug, Serialize, ToSchema)]
pub struct Endpoint {
    /// `ep_...`
    pub id: String,
    pub url: String,
    /// The event types it receives.
    pub events: Vec<String>,
    pub description: Option<String>,
    /// `whsec_...`: verify each delivery's `webhook-signature` with it (Standard Webhooks).
    pub secret: String,
    pub enabled: bool,
    /// Why Herald disabled it (no successful delivery for `HERALD_ENDPOINT_DISABLE_AFTER`).
    pub disabled_reason: Option<String>,
    pub created_at: String,
}

impl From<herald_core::store::events::EndpointRow> for Endpoint {
    fn from(e: herald_core::store::events::EndpointRow) -> Self {
        Self {
            id: e.id,
            url: e.url,
            events: e.events,
            description: e.description,
            secret: e.secret,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            created_at: time(e.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointPage {
    pub data: Vec<Endpoint>,
    pub next_cursor: Option<String>,
}

/// An event endpoint as ops see it: with its tenant, and without its secret (which only
/// the tenant needs, to verify deliveries).
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminEndpoint {
    /// `ep_...`
    pub id: String,
    /// `ten_...`: whose endpoint it is.
    pub tenant_id: String,
    pub url: String,
    /// The event types it receives.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// Why Herald disabled it (no successful delivery for `HERALD_ENDPOINT_DISABLE_AFTER`).
    pub disabled_reason: Option<String>,
    pub created_at: String,
}

impl From<herald_core::store::events::EndpointRow> for AdminEndpoint {
    fn from(e: herald_core::store::events::EndpointRow) -> Self {
        Self {
            id: e.id,
            tenant_id: e.tenant_id,
            url: e.url,
            events: e.events,
            description: e.description,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            created_at: time(e.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminEndpointPage {
    pub data: Vec<AdminEndpoint>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointSecret {
    pub secret: String,
}

/// One call Herald made to an endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventAttempt {
    /// `att_...`
    pub id: String,
    /// `evt_...`
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub at: String,
    /// `succeeded` or `failed`.
    pub status: String,
    /// The endpoint's HTTP status (null when it did not answer).
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
}

impl From<herald_core::store::events::AttemptRow> for EventAttempt {
    fn from(a: herald_core::store::events::AttemptRow) -> Self {
        Self {
            id: a.id,
            event_id: a.event_id,
            kind: a.kind,
            at: time(a.at),
            status: a.status,
            status_code: a.status_code,
            error: a.error,
            duration_ms: a.duration_ms,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventAttemptPage {
    pub data: Vec<EventAttempt>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Redelivered {
    /// Deliveries queued again (one per endpoint, for an event).
    pub redelivered: usize,
}

/// One audit log entry: who (`actor`: a key prefix or `ops`) did what to which object, from
/// where, in which request.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// `aud_...`
    pub id: String,
    pub at: String,
    /// The key prefix of a tenant key, or `ops` (ops token or dashboard session).
    pub actor: String,
    /// `tenant.created`, `key.revoked`, `endpoint.updated`, `dead_letters.replayed`, ...
    pub action: String,
    /// The id the action is about (or `dashboard`, `dead_letters`).
    pub target: String,
    pub tenant_id: Option<String>,
    pub client_ip: Option<String>,
    pub request_id: Option<String>,
    /// What changed (field names, a filter, counts); never a secret or a key.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<herald_core::store::audit::AuditRow> for AuditEntry {
    fn from(r: herald_core::store::audit::AuditRow) -> Self {
        Self {
            id: r.id,
            at: time(r.at),
            actor: r.actor,
            action: r.action,
            target: r.target,
            tenant_id: r.tenant_id,
            client_ip: r.client_ip,
            request_id: r.request_id,
            detail: r.detail,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub data: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}
