//! The request bodies of the API as types, so `/openapi.json` spells every field out. The
//! handlers read bodies with [`crate::body::Fields`], field by field, because the contract's
//! errors name the field at fault with a stable code (`missing_field`, `invalid_type`,
//! `unknown_field`, ...), which a generic deserializer cannot give; these types are what the
//! handlers accept, field for field (`every_request_body_is_documented_by_a_type` checks that
//! each route names one).
#![allow(dead_code)] // read by utoipa's derive, not by the handlers

use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/messages`.
#[derive(ToSchema)]
pub struct MessageIn {
    #[schema(example = "sms")]
    channel: ChannelIn,
    /// The recipient for its channel (E.164 phone, email address, https URL); optional when
    /// `contact_id` gives it.
    #[schema(example = "+15551234567")]
    to: Option<String>,
    /// sms: 1..1600 characters; email: the text part; webhook: any JSON value, sent as that JSON.
    #[schema(value_type = Value)]
    body: Value,
    /// email only, required there (1..998 characters).
    subject: Option<String>,
    /// RFC 3339; honoured to the millisecond and never early; default now; at most 366 days
    /// ahead; a past time means now.
    send_at: Option<String>,
    /// RFC 3339; default `send_at` + 24 h; never sent after this.
    expires_at: Option<String>,
    /// SMS only: wait for the end of the recipient's quiet hours (default true).
    respect_quiet_hours: Option<bool>,
    /// `ct_...`
    contact_id: Option<String>,
    /// Any JSON object up to 4 KiB, kept with the message.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// `transactional` (default) or `bulk`.
    priority: Option<String>,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ChannelIn {
    Sms,
    Email,
    Webhook,
}

/// `POST /v1/admin/tenants`.
#[derive(ToSchema)]
pub struct TenantIn {
    name: String,
    /// IANA time zone (default UTC).
    #[schema(example = "America/New_York")]
    timezone: Option<String>,
    /// E.164; also routes inbound SMS to this tenant.
    sms_from: Option<String>,
    /// `Name <address>` or a bare address.
    email_from: Option<String>,
    /// Default 21:00-08:00; `null` turns quiet hours off.
    quiet_hours: Option<QuietHoursIn>,
    /// The answer to HELP or INFO.
    help_text: Option<String>,
    /// The AI's instructions, up to 4000 characters.
    ai_system_prompt: Option<String>,
    /// The older name of `ai_system_prompt` (give one of them).
    system_prompt: Option<String>,
    /// Sent when no model answers.
    canned_reply: Option<String>,
    /// Texted to a caller whose call was missed.
    missed_call_text: Option<String>,
    /// One text-back per caller within this many minutes (0..1440, default 10).
    missed_call_cooldown_minutes: Option<i32>,
    /// A bulk SMS to a contact whose consent is not `opted_in` is suppressed (default false).
    require_consent_for_bulk: Option<bool>,
    /// At most `max` (1..1000) bulk messages per contact within `per` (`30m`, `24h`, `7d`).
    frequency_cap: Option<FrequencyCapIn>,
    /// A Twilio Messaging Service (`MG` + 32 hex) to send SMS through instead of `sms_from`
    /// (Herald then sends `MessagingServiceSid`, not `From`).
    messaging_service_sid: Option<String>,
    /// SMS segments per second (over 0, at most 10000), over the pace the sender's class gives:
    /// short code 100, toll-free 3, other numbers 1, a Messaging Service 10.
    sms_mps: Option<f64>,
    /// Days message bodies and conversation texts are kept (1..3650, default 90).
    retention_days: Option<i32>,
}

/// `PATCH /v1/tenant`: any of these; the rest stay as they are. `null` unsets a setting that
/// may be unset (`sms_from`, `messaging_service_sid`, `sms_mps`, `email_from`, `quiet_hours`
/// (then there are none), the texts, `frequency_cap`); `name`, `timezone`,
/// `require_consent_for_bulk`, `missed_call_cooldown_minutes` and `retention_days` cannot be
/// null. `id` and `suspended` cannot be set here (422 `read_only`).
#[derive(ToSchema)]
pub struct TenantSettingsIn {
    /// 1..200 characters.
    name: Option<String>,
    /// IANA time zone.
    #[schema(example = "America/New_York")]
    timezone: Option<String>,
    /// E.164; also routes inbound SMS to this tenant, so another tenant's number is 409
    /// `sms_from_taken`. Used by the next SMS sent, also of messages created before.
    sms_from: Option<String>,
    /// `MG` + 32 hex: SMS go through this Twilio Messaging Service instead of `sms_from`.
    messaging_service_sid: Option<String>,
    /// SMS segments per second (over 0, at most 10000).
    sms_mps: Option<f64>,
    /// `Name <address>` or a bare address.
    email_from: Option<String>,
    /// `{"start", "end"}` local to the recipient; `null` turns quiet hours off.
    quiet_hours: Option<QuietHoursIn>,
    /// The answer to HELP or INFO (1..320 characters).
    help_text: Option<String>,
    /// The AI's instructions (1..4000 characters).
    ai_system_prompt: Option<String>,
    /// Texted to a caller whose call was missed (1..320 characters).
    missed_call_text: Option<String>,
    /// At most `max` (1..1000) bulk messages per contact within `per` (`30m`, `24h`, `7d`).
    frequency_cap: Option<FrequencyCapIn>,
    /// A bulk SMS to a contact whose consent is not `opted_in` is suppressed.
    require_consent_for_bulk: Option<bool>,
    /// Days message bodies and conversation texts are kept (1..3650).
    retention_days: Option<i32>,
    /// Sent when no model answers (1..320 characters).
    canned_reply: Option<String>,
    /// One missed-call text-back per caller within this many minutes (0..1440).
    missed_call_cooldown_minutes: Option<i32>,
}

/// `PATCH /v1/admin/tenants/{id}`: the settings `PATCH /v1/tenant` takes, and `suspended`.
#[derive(ToSchema)]
pub struct TenantAdminIn {
    /// 1..200 characters.
    name: Option<String>,
    /// IANA time zone.
    #[schema(example = "America/New_York")]
    timezone: Option<String>,
    /// E.164; also routes inbound SMS to this tenant, so another tenant's number is 409
    /// `sms_from_taken`. Used by the next SMS sent, also of messages created before.
    sms_from: Option<String>,
    /// `MG` + 32 hex: SMS go through this Twilio Messaging Service instead of `sms_from`.
    messaging_service_sid: Option<String>,
    /// SMS segments per second (over 0, at most 10000).
    sms_mps: Option<f64>,
    /// `Name <address>` or a bare address.
    email_from: Option<String>,
    /// `{"start", "end"}` local to the recipient; `null` turns quiet hours off.
    quiet_hours: Option<QuietHoursIn>,
    /// The answer to HELP or INFO (1..320 characters).
    help_text: Option<String>,
    /// The AI's instructions (1..4000 characters).
    ai_system_prompt: Option<String>,
    /// Texted to a caller whose call was missed (1..320 characters).
    missed_call_text: Option<String>,
    /// At most `max` (1..1000) bulk messages per contact within `per` (`30m`, `24h`, `7d`).
    frequency_cap: Option<FrequencyCapIn>,
    /// A bulk SMS to a contact whose consent is not `opted_in` is suppressed.
    require_consent_for_bulk: Option<bool>,
    /// Days message bodies and conversation texts are kept (1..3650).
    retention_days: Option<i32>,
    /// Sent when no model answers (1..320 characters).
    canned_reply: Option<String>,
    /// One missed-call text-back per caller within this many minutes (0..1440).
    missed_call_cooldown_minutes: Option<i32>,
    /// true: the tenant's keys get 403 `tenant_suspended` and its messages wait (without
    /// spending attempts); false: they go out again within seconds.
    suspended: Option<bool>,
}

/// `POST /v1/contacts/import` as JSON.
#[derive(ToSchema)]
pub struct ContactImportIn {
    /// Up to 10,000 rows, upserted by `phone` (within the tenant).
    contacts: Vec<ContactImportRow>,
    /// `grp_...`: every imported contact (created or updated) joins this group.
    group_id: Option<String>,
}

/// One contact to import: the checks of `POST /v1/contacts`, and `phone` is required (rows are
/// matched by it). A field left out keeps the existing contact's value.
#[derive(ToSchema)]
pub struct ContactImportRow {
    /// E.164.
    phone: String,
    email: Option<String>,
    name: Option<String>,
    /// IANA time zone (a new contact's default: the tenant's).
    timezone: Option<String>,
    /// As `PATCH /v1/contacts/{id}` takes it, except that `method` defaults to `import`.
    consent: Option<ConsentImportIn>,
}

/// A consent given in an import.
#[derive(ToSchema)]
pub struct ConsentImportIn {
    /// `opted_in`, `opted_out` or `unknown`.
    status: String,
    /// RFC 3339 (default: now; never in the future).
    at: Option<String>,
    /// `web_form`, `sms_keyword`, `paper`, `verbal`, `import` (default) or `api`.
    method: Option<String>,
    /// Where it was given, up to 500 characters.
    source: Option<String>,
    /// The words the contact agreed to, up to 2000 characters.
    text: Option<String>,
}

/// `POST /v1/contacts/import` as `text/csv`: the columns a header row may name, in any order
/// (at least `phone`); every other row is one contact. An empty cell is a value left out.
#[derive(ToSchema)]
pub struct ContactImportCsv {
    /// E.164.
    phone: String,
    email: Option<String>,
    name: Option<String>,
    timezone: Option<String>,
    /// `opted_in`, `opted_out` or `unknown`; the other consent columns need it.
    consent_status: Option<String>,
    /// Default `import`.
    consent_method: Option<String>,
    /// RFC 3339 (default: now).
    consent_at: Option<String>,
    consent_source: Option<String>,
    consent_text: Option<String>,
}

#[derive(ToSchema)]
pub struct QuietHoursIn {
    #[schema(example = "21:00")]
    start: String,
    #[schema(example = "08:00")]
    end: String,
}

/// `POST /v1/contacts`, and `PATCH /v1/contacts/{id}` (any of them; `null` clears `email` or
/// `name`).
#[derive(ToSchema)]
pub struct ContactIn {
    /// E.164.
    phone: Option<String>,
    email: Option<String>,
    name: Option<String>,
    /// IANA time zone (default: the tenant's).
    timezone: Option<String>,
    /// `PATCH` only: the contact's consent as given or withdrawn (kept as a consent event).
    consent: Option<ConsentIn>,
}

/// A contact's consent, as `PATCH /v1/contacts/{id}` sets it.
#[derive(ToSchema)]
pub struct ConsentIn {
    /// `opted_in`, `opted_out` or `unknown`.
    status: String,
    /// RFC 3339; when it was given (default: now; never in the future).
    at: Option<String>,
    /// `web_form`, `sms_keyword`, `paper`, `verbal`, `import` or `api`.
    method: String,
    /// Where it was given (a form's URL, a store), up to 500 characters.
    source: Option<String>,
    /// The words the contact agreed to, up to 2000 characters.
    text: Option<String>,
}

/// A tenant's cap of bulk messages per contact.
#[derive(ToSchema)]
pub struct FrequencyCapIn {
    max: i32,
    per: String,
}

/// `POST /v1/appointments`.
#[derive(ToSchema)]
pub struct AppointmentIn {
    contact_id: String,
    /// RFC 3339.
    starts_at: String,
    /// 1 to 10 offsets before `starts_at`.
    reminders: Vec<ReminderIn>,
    /// `sms` (default) or `email`.
    channel: Option<ChannelIn>,
    /// `{{name}}`, `{{time}}` (like 3:30 PM) and `{{date}}` (like Tuesday, March 3) render in
    /// the contact's time zone; 1..1600 characters.
    #[schema(example = "Hi {{name}}, see you at {{time}} on {{date}}.")]
    body_template: String,
}

#[derive(ToSchema)]
pub struct ReminderIn {
    /// `<n>m`, `<n>h` or `<n>d`, at most 366 days.
    #[schema(example = "24h")]
    before: String,
}

/// `PATCH /v1/appointments/{id}`.
#[derive(ToSchema)]
pub struct AppointmentMove {
    /// RFC 3339: the new start; unsent reminders move with it.
    starts_at: String,
}

/// `POST /v1/subscriptions`.
#[derive(ToSchema)]
pub struct SubscriptionIn {
    contact_id: String,
    /// `HH:MM` in the contact's time zone.
    #[schema(example = "07:30")]
    send_at_local: String,
    /// `sms` (default) or `email`.
    channel: Option<ChannelIn>,
    content: SubscriptionContentIn,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum SubscriptionKind {
    Static,
    Ai,
}

/// A static text (`body`), or what the AI is asked to write each day (`prompt`).
#[derive(ToSchema)]
pub struct SubscriptionContentIn {
    kind: SubscriptionKind,
    /// For `static`: 1..1600 characters.
    body: Option<String>,
    /// For `ai`: 1..1600 characters.
    prompt: Option<String>,
}

/// `PATCH /v1/subscriptions/{id}`: any of these.
#[derive(ToSchema)]
pub struct SubscriptionPatch {
    /// `HH:MM` in the contact's time zone; from the first local day without a message whose
    /// new time is still ahead.
    #[schema(example = "08:15")]
    send_at_local: Option<String>,
    content: Option<SubscriptionContentIn>,
    /// `true`: no daily message until `false` (a resume sends nothing late for a day whose
    /// time has passed).
    paused: Option<bool>,
}

/// `POST /v1/groups`.
#[derive(ToSchema)]
pub struct GroupIn {
    name: String,
}

/// `PATCH /v1/groups/{id}`.
#[derive(ToSchema)]
pub struct GroupRename {
    /// 1..200 characters.
    name: String,
}

/// `POST /v1/groups/{id}/members`: contacts to add.
#[derive(ToSchema)]
pub struct GroupMembersIn {
    /// 1 to 10,000 contact ids (`ct_...`) of this tenant; others are answered as `unknown`.
    contact_ids: Vec<String>,
}

/// `POST /v1/groups/{id}/messages`: one message to every member.
#[derive(ToSchema)]
pub struct GroupSendIn {
    /// `sms` or `email`.
    channel: ChannelIn,
    /// sms: 1..1600 characters.
    body: String,
    /// email only, required there.
    subject: Option<String>,
    send_at: Option<String>,
    expires_at: Option<String>,
    respect_quiet_hours: Option<bool>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// `bulk` (default) or `transactional`.
    priority: Option<String>,
}

/// `POST /v1/conversations/{contact_id}/reply`: a person's reply.
#[derive(ToSchema)]
pub struct ReplyIn {
    /// 1..1600 characters.
    body: String,
}

/// `POST /v1/endpoints` (`url` required) and `PATCH /v1/endpoints/{id}` (any of them).
#[derive(ToSchema)]
pub struct EndpointIn {
    /// Where events are posted: `https` on a public address, as for the webhook channel.
    #[schema(example = "https://example.com/herald/events")]
    url: Option<String>,
    /// Event types to receive (default: every type): `message.sent`, `message.delivered`,
    /// `message.failed`, `message.undelivered`, `message.dead`, `message.suppressed`,
    /// `message.expired`, `inbound.received`, `contact.opted_out`, `contact.opted_in`,
    /// `conversation.human_needed`, `group_send.completed`.
    events: Option<Vec<String>>,
    /// Up to 500 characters; `null` clears it.
    description: Option<String>,
    /// `PATCH` only: `false` stops deliveries, `true` starts them again (and clears
    /// `disabled_reason`).
    enabled: Option<bool>,
}

/// `POST /v1/endpoints/{id}/recover`.
#[derive(ToSchema)]
pub struct RecoverIn {
    /// RFC 3339: every event since then that the endpoint has not had is sent again.
    since: String,
}

/// `POST /v1/dead-letters/replay`: which dead letters; an empty filter replays nothing unless
/// `all` is true.
#[derive(ToSchema)]
pub struct ReplayFilterIn {
    /// Up to 1,000 `dl_...` ids.
    ids: Option<Vec<String>>,
    queue: Option<String>,
    /// Ops only; a tenant key replays its own.
    tenant_id: Option<String>,
    /// `exhausted` or `rejected`.
    reason: Option<String>,
    since: Option<String>,
    until: Option<String>,
    all: Option<bool>,
}

/// Twilio's inbound SMS webhook, form-encoded as Twilio sends it (signed).
#[derive(ToSchema)]
pub struct TwilioInboundSms {
    #[schema(rename = "MessageSid")]
    message_sid: String,
    #[schema(rename = "From")]
    from: String,
    #[schema(rename = "To")]
    to: String,
    #[schema(rename = "Body")]
    body: String,
}

/// Twilio's status callback, form-encoded (signed). Herald's callback URL carries
/// `?message_id=&run=`, which the signature covers.
#[derive(ToSchema)]
pub struct TwilioStatusIn {
    #[schema(rename = "MessageSid")]
    message_sid: String,
    /// `queued`, `sent`, `delivered`, `undelivered`, `failed`, ...
    #[schema(rename = "MessageStatus")]
    message_status: String,
    #[schema(rename = "ErrorCode")]
    error_code: Option<String>,
}

/// Twilio's call status callback, form-encoded (signed).
#[derive(ToSchema)]
pub struct TwilioCallStatusIn {
    #[schema(rename = "CallSid")]
    call_sid: String,
    /// `no-answer`, `busy` and `failed` are missed calls.
    #[schema(rename = "CallStatus")]
    call_status: String,
    #[schema(rename = "From")]
    from: String,
    #[schema(rename = "To")]
    to: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use utoipa::PartialSchema;

    use super::*;

    fn schema<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).unwrap()
    }

    fn required(schema: &Value) -> Vec<&str> {
        schema["required"]
            .as_array()
            .map(|r| r.iter().map(|f| f.as_str().unwrap()).collect())
            .unwrap_or_default()
    }

    fn fields(schema: &Value) -> Vec<&str> {
        let mut names: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn every_body_documents_the_fields_the_contract_names_and_requires_only_what_it_must() {
        let cases = [
            (
                "MessageIn",
                schema::<MessageIn>(),
                &[
                    "body",
                    "channel",
                    "contact_id",
                    "expires_at",
                    "metadata",
                    "priority",
                    "respect_quiet_hours",
                    "send_at",
                    "subject",
                    "to",
                ][..],
                &["channel", "body"][..],
            ),
            (
                "ContactIn",
                schema::<ContactIn>(),
                &["consent", "email", "name", "phone", "timezone"],
                &[],
            ),
            (
                "AppointmentIn",
                schema::<AppointmentIn>(),
                &[
                    "body_template",
                    "channel",
                    "contact_id",
                    "reminders",
                    "starts_at",
                ],
                &["contact_id", "starts_at", "reminders", "body_template"],
            ),
            (
                "SubscriptionIn",
                schema::<SubscriptionIn>(),
                &["channel", "contact_id", "content", "send_at_local"],
                &["contact_id", "send_at_local", "content"],
            ),
            (
                "SubscriptionContentIn",
                schema::<SubscriptionContentIn>(),
                &["body", "kind", "prompt"],
                &["kind"],
            ),
            (
                "EndpointIn",
                schema::<EndpointIn>(),
                &["description", "enabled", "events", "url"],
                &[],
            ),
            ("RecoverIn", schema::<RecoverIn>(), &["since"], &["since"]),
            (
                "ReplayFilterIn",
                schema::<ReplayFilterIn>(),
                &[
                    "all",
                    "ids",
                    "queue",
                    "reason",
                    "since",
                    "tenant_id",
                    "until",
                ],
                &[],
            ),
            ("ReplyIn", schema::<ReplyIn>(), &["body"], &["body"]),
            (
                "GroupSendIn",
                schema::<GroupSendIn>(),
                &[
                    "body",
                    "channel",
                    "expires_at",
                    "metadata",
                    "priority",
                    "respect_quiet_hours",
                    "send_at",
                    "subject",
                ],
                &["channel", "body"],
            ),
        ];
        for (name, schema, all, needed) in cases {
            assert_eq!(fields(&schema), all, "{name}");
            assert_eq!(required(&schema), needed, "{name}");
        }
    }

    #[test]
    fn a_messages_body_is_documented_as_any_json_value() {
        // Text for sms and email, any JSON for a webhook: a client generated from the
        // document must not be told it has to be an object.
        let message = schema::<MessageIn>();
        let body = &message["properties"]["body"];
        assert!(body.get("type").is_none(), "{body}");
        assert_eq!(
            message["properties"]["metadata"]["type"],
            json!(["object", "null"])
        );
    }

    #[test]
    fn channels_and_content_kinds_are_spelt_as_the_contract_spells_them() {
        assert_eq!(
            schema::<ChannelIn>()["enum"],
            json!(["sms", "email", "webhook"])
        );
        assert_eq!(
            schema::<SubscriptionKind>()["enum"],
            json!(["static", "ai"])
        );
        assert_eq!(
            schema::<MessageIn>()["properties"]["channel"]["$ref"],
            "#/components/schemas/ChannelIn"
        );
    }

    #[test]
    fn a_tenants_quiet_hours_may_be_null_to_turn_them_off() {
        let tenant = schema::<TenantIn>();
        assert_eq!(required(&tenant), ["name"]);
        let quiet = &tenant["properties"]["quiet_hours"]["oneOf"];
        assert!(
            quiet
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["type"] == "null"),
            "{quiet}"
        );
        assert_eq!(required(&schema::<QuietHoursIn>()), ["start", "end"]);
    }

    #[test]
    fn twilios_forms_are_documented_with_twilios_own_field_names() {
        assert_eq!(
            required(&schema::<TwilioInboundSms>()),
            ["MessageSid", "From", "To", "Body"]
        );
        let status = schema::<TwilioStatusIn>();
        assert_eq!(
            fields(&status),
            ["ErrorCode", "MessageSid", "MessageStatus"]
        );
        assert_eq!(required(&status), ["MessageSid", "MessageStatus"]);
        assert_eq!(
            required(&schema::<TwilioCallStatusIn>()),
            ["CallSid", "CallStatus", "From", "To"]
        );
    }
}
