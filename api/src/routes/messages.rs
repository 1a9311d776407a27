//! `/v1/messages`: accept, read, list and cancel messages.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Duration, Utc};
use herald_core::{
    domain::{
        Channel, EmailAddress, EmailSubject, MessageStatus, PhoneNumber, Priority, SmsText,
        WebhookUrl, is_id,
    },
    services::messages::{self as service, Created, NewMessage},
    store::messages::{CancelOutcome, ListFilter},
};
use serde_json::Value;

use crate::{
    auth::Tenant,
    body::{Fields, IdempotencyKey, JsonBody, Page, known_params},
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
    views,
};

const MAX_METADATA_BYTES: usize = 4096;
const MAX_AHEAD_DAYS: i64 = 366;

/// Accept a message: sent now, or at `send_at` to the millisecond and never early.
#[utoipa::path(
    post, path = "/v1/messages", tag = "messages",
    request_body(content = crate::requests::MessageIn, description = "`{\"channel\": \"sms\" | \"email\" | \"webhook\", \"to\", \"body\", \"subject\"?, \"send_at\"?, \"expires_at\"?, \"respect_quiet_hours\"?, \"contact_id\"?, \"metadata\"?}`"),
    params(("Idempotency-Key" = Option<String>, Header, description = "the same key with an equal body within 24 h answers the same message")),
    responses(
        (status = 202, description = "accepted", body = views::Message),
        (status = 200, description = "the message this Idempotency-Key created before", body = views::Message),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn create_message(
    auth: Tenant,
    State(state): State<AppState>,
    request_id: Option<axum::Extension<tower_http::request_id::RequestId>>,
    idempotency_key: IdempotencyKey,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let idempotency = idempotency_key.with_body(&body);
    let new = parse_new_message(body, state.config.webhook_allow_private)?;
    let request_id = super::request_id(request_id.as_ref().map(|e| &e.0));
    let created = state
        .intake
        .create(
            &auth.tenant,
            &new,
            idempotency.as_ref(),
            request_id.as_deref(),
        )
        .await;
    if let Ok(Created::New(m) | Created::Existing(m)) = &created {
        tracing::Span::current().record("message_id", m.id.as_str());
    }
    Ok(match created? {
        Created::New(m) => (StatusCode::ACCEPTED, Json(views::Message::from(m))).into_response(),
        Created::Existing(m) => (StatusCode::OK, Json(views::Message::from(m))).into_response(),
    })
}

/// Checks every field of a message request, in the contract's terms.
pub fn parse_new_message(body: Value, allow_private_webhooks: bool) -> ApiResult<NewMessage> {
    let mut f = Fields::new(body)?;
    let channel_raw = f.req_str("channel")?;
    let channel = Channel::parse(&channel_raw).ok_or_else(|| {
        f.invalid_value(
            "channel",
            format!("`channel` must be sms, email or webhook, not `{channel_raw}`"),
        )
    })?;
    let to = recipient(&mut f, channel, allow_private_webhooks)?;
    let body = message_body(&mut f, channel)?;
    let subject = email_subject(&mut f, channel)?;
    let (send_at, expires_at) = schedule(&mut f)?;
    let respect_quiet_hours = f.opt_bool("respect_quiet_hours")?.unwrap_or(true);
    let contact_id = f.opt_str("contact_id")?;
    if let Some(id) = &contact_id
        && !is_id("ct", id)
    {
        return Err(ApiError::invalid(
            "unknown_contact",
            "contact_id",
            format!("there is no contact {id}"),
        ));
    }
    let metadata = metadata(&mut f)?;
    let priority = priority(&mut f, Priority::Transactional)?;
    f.finish()?;

    if to.is_none() && contact_id.is_none() {
        return Err(ApiError::invalid(
            "missing_field",
            "to",
            match channel {
                Channel::Webhook => "`to` is required for webhooks",
                _ => "`to` is required unless `contact_id` gives the recipient",
            },
        ));
    }
    Ok(NewMessage {
        channel,
        priority,
        to,
        subject,
        body,
        send_at,
        expires_at,
        respect_quiet_hours,
        contact_id,
        metadata,
    })
}

/// `priority`: `transactional` or `bulk`, `default` when absent.
pub(super) fn priority(f: &mut Fields, default: Priority) -> ApiResult<Priority> {
    match f.opt_str("priority")? {
        None => Ok(default),
        Some(raw) => Priority::parse(&raw).ok_or_else(|| {
            f.invalid_value(
                "priority",
                format!("`priority` is transactional or bulk, not `{raw}`"),
            )
        }),
    }
}

/// `to`, checked as the channel's kind of address.
fn recipient(
    f: &mut Fields,
    channel: Channel,
    allow_private_webhooks: bool,
) -> ApiResult<Option<String>> {
    let Some(raw) = f.opt_str("to")? else {
        return Ok(None);
    };
    let to = match channel {
        Channel::Sms => PhoneNumber::parse(&raw).map(|p| p.as_str().to_owned()),
        Channel::Email => EmailAddress::parse(&raw).map(|e| e.as_str().to_owned()),
        Channel::Webhook => {
            WebhookUrl::parse(&raw, allow_private_webhooks).map(|u| u.as_str().to_owned())
        }
    };
    to.map(Some).map_err(|e| f.invalid_value("to", e.0))
}

/// `body`: text for SMS and email (an SMS at most 1600 characters), any JSON for a
/// webhook (stored as its serialization).
pub(super) fn message_body(f: &mut Fields, channel: Channel) -> ApiResult<String> {
    if channel == Channel::Webhook {
        let doc = f.take("body").ok_or_else(|| f.missing("body"))?;
        return serde_json::to_string(&doc).map_err(|e| ApiError::internal(&e));
    }
    let text = f.req_str("body")?;
    match (channel, SmsText::parse(text.clone())) {
        (_, Err(None)) => Err(f.invalid_value("body", "`body` must not be empty")),
        (Channel::Sms, Err(Some(chars))) => Err(f.invalid_value(
            "body",
            format!(
                "an SMS `body` is at most {} characters; this one has {chars}",
                SmsText::MAX_CHARS
            ),
        )),
        _ => Ok(text),
    }
}

/// `subject`: required for email, refused elsewhere.
pub(super) fn email_subject(f: &mut Fields, channel: Channel) -> ApiResult<Option<String>> {
    match (channel, f.opt_str("subject")?) {
        (Channel::Email, None) => Err(f.missing("subject")),
        (Channel::Email, Some(s)) => match EmailSubject::parse(s) {
            Some(subject) => Ok(Some(subject.into_string())),
            None => Err(f.invalid_value(
                "subject",
                format!(
                    "`subject` must be 1 to {} characters",
                    EmailSubject::MAX_CHARS
                ),
            )),
        },
        (_, Some(_)) => Err(f.invalid_value("subject", "`subject` is only for email")),
        (_, None) => Ok(None),
    }
}

/// `send_at` (a past time means now; at most 366 days ahead) and `expires_at` (later than
/// `send_at`; a day after it by default).
pub(super) fn schedule(f: &mut Fields) -> ApiResult<(DateTime<Utc>, DateTime<Utc>)> {
    let now = Utc::now();
    let send_at = match f.opt_time("send_at")? {
        Some(t) if t > now + Duration::days(MAX_AHEAD_DAYS) => {
            return Err(f.invalid_value(
                "send_at",
                format!("`send_at` is at most {MAX_AHEAD_DAYS} days ahead"),
            ));
        }
        Some(t) => t.max(now),
        None => now,
    };
    let expires_at = match f.opt_time("expires_at")? {
        Some(t) if t <= send_at => {
            return Err(f.invalid_value(
                "expires_at",
                "`expires_at` must be later than `send_at` (and than now)",
            ));
        }
        Some(t) => t,
        None => send_at + Duration::hours(24),
    };
    Ok((send_at, expires_at))
}

/// `metadata`: an object of at most 4 KiB of JSON, `{}` by default.
pub(super) fn metadata(f: &mut Fields) -> ApiResult<Value> {
    match f.take("metadata") {
        None => Ok(Value::Object(Default::default())),
        Some(v @ Value::Object(_)) => {
            let size = serde_json::to_string(&v)
                .map(|s| s.len())
                .unwrap_or(usize::MAX);
            if size > MAX_METADATA_BYTES {
                return Err(f.invalid_value(
                    "metadata",
                    format!("`metadata` is at most 4 KiB of JSON; this is {size} bytes"),
                ));
            }
            Ok(v)
        }
        Some(_) => Err(ApiError::invalid(
            "invalid_type",
            "metadata",
            "`metadata` must be an object",
        )),
    }
}

/// A message and its events.
#[utoipa::path(
    get, path = "/v1/messages/{id}", tag = "messages",
    params(("id" = String, Path, description = "`msg_...`")),
    responses((status = 200, body = views::MessageWithEvents), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get_message(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<views::MessageWithEvents>> {
    if !is_id("msg", &id) {
        return Err(ApiError::not_found("message"));
    }
    let (message, events) = service::get(&state.db, &auth.tenant.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    let message = views::Message::with_expected(&state.queue, vec![message])
        .await
        .remove(0);
    Ok(Json(views::MessageWithEvents {
        message,
        events: events.into_iter().map(Into::into).collect(),
        tenant_id: None,
    }))
}

/// A page of messages, newest first.
#[utoipa::path(
    get, path = "/v1/messages", tag = "messages",
    params(
        ("status" = Option<String>, Query, description = "only messages in this status"),
        ("contact_id" = Option<String>, Query, description = "only messages to this contact"),
        ("limit" = Option<i64>, Query, description = "1..100, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, body = views::MessagePage), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list_messages(
    auth: Tenant,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::MessagePage>> {
    known_params(&q, &["status", "contact_id", "limit", "cursor"])?;
    let page = Page::from_query(&q, |c| is_id("msg", c))?;
    let status = match q.get("status").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(MessageStatus::parse(s).ok_or_else(|| {
            ApiError::invalid(
                "invalid_value",
                "status",
                format!("`{s}` is not a message status"),
            )
        })?),
    };
    let filter = ListFilter {
        status: status.map(MessageStatus::as_str),
        contact_id: q
            .get("contact_id")
            .map(String::as_str)
            .filter(|c| !c.is_empty()),
        before_id: page.cursor.as_deref(),
    };
    let (rows, next_cursor) =
        service::list(&state.db, &auth.tenant.id, &filter, page.limit).await?;
    Ok(Json(views::MessagePage {
        data: views::Message::with_expected(&state.queue, rows).await,
        next_cursor,
    }))
}

/// Cancel a message that has not started sending.
#[utoipa::path(
    post, path = "/v1/messages/{id}/cancel", tag = "messages",
    params(("id" = String, Path, description = "`msg_...`")),
    responses(
        (status = 200, description = "canceled (also when it already was)", body = views::Message),
        (status = 404, body = ErrorBody),
        (status = 409, description = "it is sending or done", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn cancel_message(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<views::Message>> {
    if !is_id("msg", &id) {
        return Err(ApiError::not_found("message"));
    }
    match service::cancel(&state.db, &state.queue, &auth.tenant.id, &id).await? {
        CancelOutcome::Canceled(m) | CancelOutcome::AlreadyCanceled(m) => Ok(Json(m.into())),
        CancelOutcome::TooLate(m) => Err(ApiError::conflict(
            "not_cancelable",
            format!("the message is {} and can no longer be canceled", m.status),
        )),
        CancelOutcome::NotFound => Err(ApiError::not_found("message")),
    }
}
