//! `/v1/conversations`: the inbox, a contact's texts, who answers them, and a person's reply.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use herald_core::{
    domain::{SmsText, is_id},
    services::{inbox, replies},
    store::{
        contacts,
        conversations::{self as entries, InboxFilter},
    },
};

use crate::{
    auth::{Ops, Origin, Tenant},
    body::{Fields, JsonBody, Page, bool_param, known_params, query_param},
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
    let rows = entries::conversation(
        &state.db,
        &auth.tenant.id,
        &c.id,
        page.cursor.as_deref(),
        page.limit,
    )
    .await?;
    let (rows, next_cursor) = page.cut(rows, |m| m.id.clone());
    Ok(Json(views::Conversation {
        contact_id: c.id,
        mode: c.mode,
        data: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// The inbox: a page of the tenant's conversations, newest activity first, each with its
/// newest entry.
#[utoipa::path(
    get, path = "/v1/conversations", tag = "conversations",
    params(
        ("mode" = Option<String>, Query, description = "`ai` or `human`: only conversations answered so"),
        ("needs_reply" = Option<bool>, Query, description = "`true`: only those whose newest entry is an inbound text"),
        ("limit" = Option<i64>, Query, description = "1..100, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, body = views::InboxPage), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn inbox(
    auth: Tenant,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::InboxPage>> {
    known_params(&q, &["mode", "needs_reply", "limit", "cursor"])?;
    inbox_page(&state, &auth.tenant.id, &q).await.map(Json)
}

/// Any tenant's inbox, for ops: `GET /v1/conversations` of the tenant `tenant_id`.
#[utoipa::path(
    get, path = "/v1/admin/conversations", tag = "admin",
    params(
        ("tenant_id" = String, Query, description = "`ten_...`: whose inbox (required)"),
        ("mode" = Option<String>, Query, description = "`ai` or `human`: only conversations answered so"),
        ("needs_reply" = Option<bool>, Query, description = "`true`: only those whose newest entry is an inbound text"),
        ("limit" = Option<i64>, Query, description = "1..100, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, body = views::InboxPage), (status = 422, body = ErrorBody)),
    security(("ops_token" = []))
)]
pub async fn admin_inbox(
    _ops: Ops,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::InboxPage>> {
    known_params(&q, &["tenant_id", "mode", "needs_reply", "limit", "cursor"])?;
    let tenant_id = match q.get("tenant_id").map(String::as_str) {
        None | Some("") => {
            return Err(ApiError::invalid(
                "missing_field",
                "tenant_id",
                "`tenant_id` is required: whose inbox to show",
            ));
        }
        Some(t) if is_id("ten", t) => t,
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_value",
                "tenant_id",
                "`tenant_id` must be a tenant id (`ten_...`)",
            ));
        }
    };
    inbox_page(&state, tenant_id, &q).await.map(Json)
}

/// A page of the tenant's inbox as the query asks (its filters, limit and cursor).
async fn inbox_page(
    state: &AppState,
    tenant_id: &str,
    q: &HashMap<String, String>,
) -> ApiResult<views::InboxPage> {
    let page = Page::from_query(q, |c| is_id("msg", c))?;
    let mode = query_param(q, "mode", "ai or human", |m| {
        ["ai", "human"].into_iter().find(|known| *known == m)
    })?;
    let filter = InboxFilter {
        mode,
        needs_reply: bool_param(q, "needs_reply")?,
        before_entry: page.cursor.as_deref(),
    };
    let items = inbox::inbox(&state.db, tenant_id, &filter, page.limit).await?;
    let (items, next_cursor) = page.cut(items, |i| i.row.last_entry_id.clone());
    Ok(views::InboxPage {
        data: items.into_iter().map(Into::into).collect(),
        next_cursor,
    })
}

async fn set_mode(
    state: &AppState,
    auth: &Tenant,
    contact_id: &str,
    human: bool,
    origin: &Origin,
) -> ApiResult<Json<views::ConversationMode>> {
    if !is_id("ct", contact_id) {
        return Err(ApiError::not_found("contact"));
    }
    let origin = origin.by_key(&auth.key_prefix);
    let c = inbox::set_mode(&state.db, &auth.tenant.id, contact_id, human, &origin)
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
    origin: Origin,
    State(state): State<AppState>,
    Path(contact_id): Path<String>,
) -> ApiResult<Json<views::ConversationMode>> {
    set_mode(&state, &auth, &contact_id, true, &origin).await
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
    origin: Origin,
    State(state): State<AppState>,
    Path(contact_id): Path<String>,
) -> ApiResult<Json<views::ConversationMode>> {
    set_mode(&state, &auth, &contact_id, false, &origin).await
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
