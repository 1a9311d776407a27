//! `/v1/conversations/{contact_id}`: a contact's texts, who answers them, and a person's reply.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use herald_core::{
    domain::{SmsText, is_id},
    services::replies,
    store::{contacts, conversations as entries},
};

use crate::{
    auth::Tenant,
    body::{Fields, JsonBody, Page, known_params},
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
    views,
};

async fn contact(
    state: &AppState,
    tenant_id: &str,
    id: &str,
) -> ApiResult<herald_core::store::contacts::ContactRow> {
    if !is_id("ct", id) {
        return Err(ApiError::not_found("contact"));
    }
    contacts::get(&state.db, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))
}

/// A contact's conversation, oldest first.
#[utoipa::path(
    get, path = "/v1/conversations/{contact_id}", tag = "conversations",
    params(("contact_id" = String, Path), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = views::Conversation), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get(
    auth: Tenant,
    State(state): State<AppState>,
    Path(contact_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::Conversation>> {
    known_params(&q, &["limit", "cursor"])?;
    let page = Page::from_query(&q, |c| is_id("msg", c))?;
    let c = contact(&state, &auth.tenant.id, &contact_id).await?;
    let mut rows = entries::conversation(
        &state.db,
        &auth.tenant.id,
        &c.id,
        page.cursor.as_deref(),
        page.limit,
    )
    .await?;
    let more = rows.len() as i64 > page.limit;
    rows.truncate(page.limit as usize);
    let next_cursor = if more {
        rows.last().map(|m| m.id.clone())
    } else {
        None
    };
    Ok(Json(views::Conversation {
        contact_id: c.id,
        mode: c.mode,
        data: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

async fn set_mode(
    state: &AppState,
    tenant_id: &str,
    contact_id: &str,
    mode: &str,
) -> ApiResult<Json<views::ConversationMode>> {
    if !is_id("ct", contact_id) {
        return Err(ApiError::not_found("contact"));
    }
    let c = contacts::set_mode(&state.db, tenant_id, contact_id, mode)
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    Ok(Json(views::ConversationMode {
        contact_id: c.id,
        mode: c.mode,
    }))
}

/// A person takes the conversation over: no AI replies until it is released.
#[utoipa::path(
    post, path = "/v1/conversations/{contact_id}/takeover", tag = "conversations",
    params(("contact_id" = String, Path)),
    responses((status = 200, body = views::ConversationMode), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn takeover(
    auth: Tenant,
    State(state): State<AppState>,
    Path(contact_id): Path<String>,
) -> ApiResult<Json<views::ConversationMode>> {
    set_mode(&state, &auth.tenant.id, &contact_id, "human").await
}

/// Hand the conversation back to the AI.
#[utoipa::path(
    post, path = "/v1/conversations/{contact_id}/release", tag = "conversations",
    params(("contact_id" = String, Path)),
    responses((status = 200, body = views::ConversationMode), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn release(
    auth: Tenant,
    State(state): State<AppState>,
    Path(contact_id): Path<String>,
) -> ApiResult<Json<views::ConversationMode>> {
    set_mode(&state, &auth.tenant.id, &contact_id, "ai").await
}

/// A person's reply, sent through the ordinary delivery path.
#[utoipa::path(
    post, path = "/v1/conversations/{contact_id}/reply", tag = "conversations",
    params(("contact_id" = String, Path)),
    request_body(content = crate::requests::ReplyIn, description = "`{\"body\"}`"),
    responses((status = 202, body = views::Message), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn reply(
    auth: Tenant,
    State(state): State<AppState>,
    Path(contact_id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<views::Message>)> {
    let mut f = Fields::new(body)?;
    let text = SmsText::parse(f.req_str("body")?)
        .map_err(|_| {
            f.invalid_value(
                "body",
                format!("`body` must be 1 to {} characters", SmsText::MAX_CHARS),
            )
        })?
        .into_string();
    f.finish()?;
    let c = contact(&state, &auth.tenant.id, &contact_id).await?;
    if c.phone.is_none() {
        return Err(ApiError::invalid(
            "invalid_value",
            "contact_id",
            "this contact has no phone number to text",
        ));
    }
    if auth.tenant.sms_from.is_none() {
        return Err(ApiError::invalid(
            "sms_from_not_configured",
            "contact_id",
            "this tenant has no sms_from number; set one before sending SMS",
        ));
    }
    let m = replies::human_reply(&state.intake, &auth.tenant, &c, &text).await?;
    Ok((StatusCode::ACCEPTED, Json(m.into())))
}
