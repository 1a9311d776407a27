//! `/v1/subscriptions`: a daily message at each contact's own local hour.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use chrono::{NaiveTime, Utc};
use herald_core::{
    domain::{Channel, SmsText, is_id, new_id, parse_local_time},
    schedule::first_daily_date,
    services::daily::{self, SubscriptionChanges},
    store::{
        contacts,
        subscriptions::{self, SubscriptionFilter, SubscriptionRow},
    },
};

use crate::{
    auth::Tenant,
    body::{Fields, JsonBody, Page, bool_param, known_params},
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
        paused: false,
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
    let (kind, text) = content(&mut f)?.ok_or_else(|| f.missing("content"))?;
    f.finish()?;
    Ok(NewSubscription {
        contact_id,
        send_at_local,
        channel,
        kind,
        text,
    })
}

/// `content`: `{"kind": "static", "body"}` or `{"kind": "ai", "prompt"}`, as the kind and its
/// text.
fn content(f: &mut Fields) -> Result<Option<(&'static str, String)>, ApiError> {
    let Some(mut content) = f.opt_object("content")? else {
        return Ok(None);
    };
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
    Ok(Some((kind, text.into_string())))
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

/// A page of the tenant's subscriptions, newest first.
#[utoipa::path(
    get, path = "/v1/subscriptions", tag = "subscriptions",
    params(
        ("contact_id" = Option<String>, Query, description = "only this contact's"),
        ("paused" = Option<bool>, Query, description = "`true`: only paused ones; `false`: only active ones"),
        ("limit" = Option<i64>, Query, description = "1..100, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, body = views::SubscriptionPage), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list(
    auth: Tenant,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::SubscriptionPage>> {
    known_params(&q, &["contact_id", "paused", "limit", "cursor"])?;
    let page = Page::from_query(&q, |c| is_id("sub", c))?;
    let filter = SubscriptionFilter {
        contact_id: q
            .get("contact_id")
            .map(String::as_str)
            .filter(|c| !c.is_empty()),
        paused: bool_param(&q, "paused")?,
        before_id: page.cursor.as_deref(),
    };
    let rows = subscriptions::list(&state.db, &auth.tenant.id, &filter, page.limit).await?;
    let (rows, next_cursor) = page.cut(rows, |s| s.id.clone());
    Ok(Json(views::SubscriptionPage {
        data: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Change a subscription's local time, content, or pause it. A new `send_at_local` (or a
/// resume) takes effect from the first local day that has no message yet and whose time
/// is still ahead: one message per local date, still.
#[utoipa::path(
    patch, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "`sub_...`")),
    request_body(content = crate::requests::SubscriptionPatch, description = "`{\"send_at_local\"?, \"content\"?, \"paused\"?}`"),
    responses((status = 200, body = views::Subscription), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn patch(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<views::Subscription>> {
    let mut f = Fields::new(body)?;
    let send_at_local = f
        .opt_str("send_at_local")?
        .map(|at| parse_local_time(&at).map_err(|e| f.invalid_value("send_at_local", e.0)))
        .transpose()?;
    let changes = SubscriptionChanges {
        send_at_local,
        content: content(&mut f)?,
        paused: f.opt_bool("paused")?,
    };
    f.finish()?;
    if !is_id("sub", &id) {
        return Err(ApiError::not_found("subscription"));
    }
    daily::change(&state.db, &auth.tenant.id, &id, &changes)
        .await?
        .map(|s| Json(s.into()))
        .ok_or_else(|| ApiError::not_found("subscription"))
}
