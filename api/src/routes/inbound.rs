//! `/v1/inbound/*`: what providers send Herald, form-encoded and signed as the provider signs
//! it. A bad or missing signature is 403 and changes nothing.

use axum::{
    body::Bytes,
    extract::{OriginalUri, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use herald_core::{
    providers::twilio_signature,
    services::{
        inbound::{self, CallStatus, Inbound, Received},
        reports,
    },
};

use crate::{
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
};

const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>";

/// The form parameters of a request Twilio signed.
struct TwilioForm(Vec<(String, String)>);

impl TwilioForm {
    /// The first value of `name`, else of `alias` (Twilio's older parameter names).
    fn get(&self, name: &str, alias: Option<&str>) -> Option<String> {
        let find = |n: &str| self.0.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        find(name).or_else(|| alias.and_then(find))
    }
}

/// 422 for a signed form without the fields the route needs.
fn missing(message: &str, field: &str) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "missing_field", message).field(field)
}

/// The form parameters of a request Twilio signed, or 403.
fn verified_twilio_form(
    state: &AppState,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<TwilioForm> {
    let Some(token) = state.config.twilio.auth_token.as_ref() else {
        return Err(ApiError::forbidden(
            "invalid_signature",
            "Twilio requests cannot be verified: HERALD_TWILIO_AUTH_TOKEN is not set",
        ));
    };
    let signature = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::forbidden("invalid_signature", "missing X-Twilio-Signature"))?;
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| {
        ApiError::forbidden("invalid_signature", "the body is not a form Twilio signed")
    })?;
    let path_and_query = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let url = format!("{}{path_and_query}", state.config.public_url);
    if !twilio_signature::validate(token.expose(), &url, &params, signature) {
        tracing::warn!(url, "rejected a request with a bad X-Twilio-Signature");
        return Err(ApiError::forbidden(
            "invalid_signature",
            "X-Twilio-Signature does not match this request",
        ));
    }
    // Signed as sent; stored without what Postgres cannot hold.
    let params = params
        .into_iter()
        .map(|(k, v)| (k, v.replace('\0', "")))
        .collect();
    Ok(TwilioForm(params))
}

fn twiml() -> Response {
    ([(header::CONTENT_TYPE, "text/xml")], EMPTY_TWIML).into_response()
}

/// Twilio's status callback: moves a message to `sent`, `delivered`, `undelivered` or
/// `failed`, never backwards.
#[utoipa::path(
    post, path = "/v1/inbound/twilio/status", tag = "inbound",
    request_body(content = crate::requests::TwilioStatusIn, content_type = "application/x-www-form-urlencoded", description = "Twilio's status callback: MessageSid, MessageStatus, ErrorCode, ..."),
    params(("X-Twilio-Signature" = String, Header)),
    responses((status = 200, description = "`<Response/>`"), (status = 403, description = "bad or missing signature", body = ErrorBody)),
)]
pub async fn twilio_status(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let form = verified_twilio_form(&state, &uri, &headers, &body)?;
    let (Some(sid), Some(status)) = (
        form.get("MessageSid", Some("SmsSid")),
        form.get("MessageStatus", Some("SmsStatus")),
    ) else {
        return Err(missing(
            "MessageSid and MessageStatus are required",
            "MessageStatus",
        ));
    };
    let error_code = form.get("ErrorCode", None);
    // The callback URL names the message and run it was sent for (covered by the signature).
    let query: Vec<(String, String)> = uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let callback_for = match (
        param("message_id"),
        param("run").and_then(|r| r.parse().ok()),
    ) {
        (Some(id), Some(run)) if herald_core::domain::is_id("msg", id) => {
            Some(reports::CallbackFor {
                message_id: id.to_owned(),
                run,
            })
        }
        _ => None,
    };
    let redelivery = reports::Redelivery {
        queue: &state.queue,
        after: state.config.redeliver_after,
    };
    let report = reports::twilio_status(
        &state.db,
        &redelivery,
        &sid,
        &status,
        error_code.as_deref(),
        callback_for.as_ref(),
    );
    match param("traceparent").filter(|_| herald_core::traces::enabled()) {
        // The report joins the trace of the provider call it answers.
        Some(traceparent) => {
            let span = tracing::info_span!(
                "status callback",
                provider = "twilio",
                message_status = %status,
                otel.kind = "server",
            );
            herald_core::traces::follow(&span, Some(traceparent));
            tracing::Instrument::instrument(report, span).await?
        }
        None => report.await?,
    };
    Ok(twiml())
}

/// Twilio's inbound SMS webhook: the text is stored on its contact's conversation, keywords
/// act at once, and replies are jobs. Answers `<Response/>` straight away.
#[utoipa::path(
    post, path = "/v1/inbound/twilio/sms", tag = "inbound",
    request_body(content = crate::requests::TwilioInboundSms, content_type = "application/x-www-form-urlencoded", description = "Twilio's inbound message: From, To, Body, MessageSid, ..."),
    params(("X-Twilio-Signature" = String, Header)),
    responses((status = 200, description = "`<Response/>`"), (status = 403, description = "bad or missing signature", body = ErrorBody)),
)]
pub async fn twilio_sms(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let form = verified_twilio_form(&state, &uri, &headers, &body)?;
    let (Some(from), Some(to), Some(sid)) = (
        form.get("From", None),
        form.get("To", None),
        form.get("MessageSid", Some("SmsSid")),
    ) else {
        return Err(missing("From, To and MessageSid are required", "From"));
    };
    let inbound = Inbound {
        from,
        to,
        body: form.get("Body", None).unwrap_or_default(),
        sid,
    };
    match inbound::receive(&state.db, &state.intake, &state.replies, &inbound).await? {
        Received::UnknownNumber => {
            tracing::warn!(to = %inbound.to, "inbound text to a number no tenant sends from")
        }
        Received::Duplicate => tracing::debug!(sid = %inbound.sid, "inbound text seen before"),
        Received::Stored { .. } => {}
    }
    Ok(twiml())
}

/// Twilio's call status callback: a missed call (`no-answer`, `busy`, `failed`) to a tenant's
/// number texts the caller back, once per cooldown, and shows on their conversation.
#[utoipa::path(
    post, path = "/v1/inbound/twilio/voice-status", tag = "inbound",
    request_body(content = crate::requests::TwilioCallStatusIn, content_type = "application/x-www-form-urlencoded", description = "Twilio's call status callback: CallSid, CallStatus, From, To, ..."),
    params(("X-Twilio-Signature" = String, Header)),
    responses((status = 200, description = "`<Response/>`"), (status = 403, description = "bad or missing signature", body = ErrorBody)),
)]
pub async fn twilio_voice_status(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let form = verified_twilio_form(&state, &uri, &headers, &body)?;
    let (Some(call_sid), Some(status), Some(from), Some(to)) = (
        form.get("CallSid", None),
        form.get("CallStatus", None),
        form.get("From", None),
        form.get("To", None),
    ) else {
        return Err(missing(
            "CallSid, CallStatus, From and To are required",
            "CallStatus",
        ));
    };
    let call = CallStatus {
        call_sid,
        status,
        from,
        to,
    };
    let outcome = inbound::missed_call(&state.db, &state.intake, &call).await?;
    tracing::debug!(call_sid = %call.call_sid, ?outcome, "call status callback");
    Ok(twiml())
}
