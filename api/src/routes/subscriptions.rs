//! `/v1/subscriptions`: a daily message at each contact's own local hour.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use chrono::{NaiveTime, Utc};
use herald_core::{
    domain::{Channel, SmsText, is_id, new_id, parse_local_time},
    schedule::first_daily_date,
    store::{
        contacts,
        subscriptions::{self, SubscriptionRow},
    },
};

use crate::{
    auth::Tenant,
    body::{Fields, JsonBody},
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
    views,
};

/// Subscribe a contact to a daily message.
#[utoipa::path(
    post, path = "/v1/subscriptions", tag = "subscriptions",
    request_body(content = crate::requests::SubscriptionIn, description = "`{\"contact_id\", \"send_at_local\": \"07:30\", \"channel\"?: \"sms\", \"content\": {\"kind\": \"static\", \"body\"} | {\"kind\": \"ai\", \"prompt\"}}`"),
    responses((status = 201, body = views::Subscription), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn create(
    auth: Tenant,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<views::Subscription>)> {
    let new = parse_new(body)?;
    let unknown = || {
        ApiError::invalid(
            "unknown_contact",
            "contact_id",
            format!("there is no contact {}", new.contact_id),
        )
    };
    if !is_id("ct", &new.contact_id) {
        return Err(unknown());
    }
    let contact = contacts::get(&state.db, &auth.tenant.id, &new.contact_id)
        .await?
        .ok_or_else(unknown)?;
    let (address, what) = match new.channel {
        Channel::Email => (&contact.email, "email"),
        _ => (&contact.phone, "phone"),
    };
    if address.is_none() {
        return Err(ApiError::invalid(
            "invalid_value",
            "contact_id",
            format!("the contact has no {what} address for {}", new.channel),
        ));
    }
    let zone: chrono_tz::Tz = contact
        .timezone
        .as_deref()
        .unwrap_or(&auth.tenant.timezone)
        .parse()
        .unwrap_or(chrono_tz::UTC);
    let row = SubscriptionRow {
        id: new_id("sub"),
        tenant_id: auth.tenant.id.clone(),
        contact_id: contact.id,
        send_at_local: new.send_at_local,
        channel: new.channel,
        content_kind: new.kind.to_owned(),
        content: new.text,
        first_date: first_daily_date(Utc::now(), zone, new.send_at_local),
        last_date: None,
        created_at: Utc::now(),
        deleted_at: None,
    };
    let created = subscriptions::insert(&state.db, &row).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// A subscription request, checked field by field.
struct NewSubscription {
    contact_id: String,
    send_at_local: NaiveTime,
    channel: Channel,
    /// `static` or `ai`.
    kind: &'static str,
    /// The body, or the prompt.
    text: String,
}

fn parse_new(body: serde_json::Value) -> Result<NewSubscription, ApiError> {
    let mut f = Fields::new(body)?;
    let contact_id = f.req_str("contact_id")?;
    let at = f.req_str("send_at_local")?;
    let send_at_local = parse_local_time(&at).map_err(|e| f.invalid_value("send_at_local", e.0))?;
    let channel = match f.opt_str("channel")?.as_deref() {
        None | Some("sms") => Channel::Sms,
        Some("email") => Channel::Email,
        Some(other) => {
            return Err(f.invalid_value(
                "channel",
                format!("daily messages go by sms or email, not `{other}`"),
            ));
        }
    };
    let mut content = f
        .opt_object("content")?
        .ok_or_else(|| f.missing("content"))?;
    let kind = content.req_str("kind")?;
    let (kind, field) = match kind.as_str() {
        "static" => ("static", "body"),
        "ai" => ("ai", "prompt"),
        other => {
            return Err(content.invalid_value(
                "kind",
                format!("`content.kind` must be static or ai, not `{other}`"),
            ));
        }
    };
    let text = SmsText::parse(content.req_str(field)?).map_err(|_| {
        content.invalid_value(
            field,
            format!(
                "`content.{field}` must be 1 to {} characters",
                SmsText::MAX_CHARS
            ),
        )
    })?;
    content.finish()?;
    f.finish()?;
    Ok(NewSubscription {
        contact_id,
        send_at_local,
        channel,
        kind,
        text: text.into_string(),
    })
}

/// A subscription.
#[utoipa::path(
    get, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "`sub_...`")),
    responses((status = 200, body = views::Subscription), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<views::Subscription>> {
    subscriptions::get(&state.db, Some(&auth.tenant.id), &id)
        .await?
        .map(|s| Json(s.into()))
        .ok_or_else(|| ApiError::not_found("subscription"))
}

/// End a subscription: no more daily messages.
#[utoipa::path(
    delete, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "`sub_...`")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn delete(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if subscriptions::delete(&state.db, &auth.tenant.id, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("subscription"))
    }
}
