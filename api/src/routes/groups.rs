//! `/v1/groups`: contact groups, and messages to a whole group.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use herald_core::{
    domain::{Channel, Priority, is_id, new_id},
    services::groups::{self as service, GroupSend, Sent},
    store::{contacts, groups},
};
use serde_json::Value;

use crate::{
    auth::Tenant,
    body::{Fields, IdempotencyKey, JsonBody, LargeJsonBody, Page, known_params},
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
    views,
};

use super::messages::{email_subject, message_body, metadata, priority, schedule};

async fn group(state: &AppState, tenant_id: &str, id: &str) -> ApiResult<groups::GroupRow> {
    if !is_id("grp", id) {
        return Err(ApiError::not_found("group"));
    }
    groups::get(&state.db, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("group"))
}

async fn view(state: &AppState, g: groups::GroupRow) -> ApiResult<views::Group> {
    let members = groups::member_count(&state.db, &g.id).await?;
    Ok(views::Group {
        id: g.id,
        name: g.name,
        members,
        created_at: views::time(g.created_at),
    })
}

/// `name`: 1 to 200 characters, trimmed.
fn group_name(f: &mut Fields) -> ApiResult<String> {
    let name = f.req_str("name")?;
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(f.invalid_value("name", "`name` must be 1 to 200 characters"));
    }
    Ok(name.trim().to_owned())
}

/// Create a group.
#[utoipa::path(
    post, path = "/v1/groups", tag = "groups",
    request_body(content = crate::requests::GroupIn, description = "`{\"name\"}`"),
    responses((status = 201, body = views::Group), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn create(
    auth: Tenant,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<views::Group>)> {
    let mut f = Fields::new(body)?;
    let name = group_name(&mut f)?;
    f.finish()?;
    let g = groups::insert(&state.db, &new_id("grp"), &auth.tenant.id, &name).await?;
    Ok((StatusCode::CREATED, Json(view(&state, g).await?)))
}

/// A group and its member count.
#[utoipa::path(
    get, path = "/v1/groups/{id}", tag = "groups",
    params(("id" = String, Path, description = "`grp_...`")),
    responses((status = 200, body = views::Group), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<views::Group>> {
    let g = group(&state, &auth.tenant.id, &id).await?;
    Ok(Json(view(&state, g).await?))
}

/// Delete a group (its members' contacts stay).
#[utoipa::path(
    delete, path = "/v1/groups/{id}", tag = "groups",
    params(("id" = String, Path, description = "`grp_...`")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn delete(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if is_id("grp", &id) && groups::delete(&state.db, &auth.tenant.id, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("group"))
    }
}

/// Add a contact to a group (again is fine).
#[utoipa::path(
    put, path = "/v1/groups/{id}/members/{contact_id}", tag = "groups",
    params(("id" = String, Path), ("contact_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn add_member(
    auth: Tenant,
    State(state): State<AppState>,
    Path((id, contact_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let g = group(&state, &auth.tenant.id, &id).await?;
    if !is_id("ct", &contact_id)
        || contacts::get(&state.db, &auth.tenant.id, &contact_id)
            .await?
            .is_none()
    {
        return Err(ApiError::not_found("contact"));
    }
    groups::add_member(&state.db, &g.id, &contact_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a contact from a group.
#[utoipa::path(
    delete, path = "/v1/groups/{id}/members/{contact_id}", tag = "groups",
    params(("id" = String, Path), ("contact_id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn remove_member(
    auth: Tenant,
    State(state): State<AppState>,
    Path((id, contact_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let g = group(&state, &auth.tenant.id, &id).await?;
    if groups::remove_member(&state.db, &g.id, &contact_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("member"))
    }
}

/// A group's members, newest contact first.
#[utoipa::path(
    get, path = "/v1/groups/{id}/members", tag = "groups",
    params(("id" = String, Path), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = views::ContactPage), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn members(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::ContactPage>> {
    known_params(&q, &["limit", "cursor"])?;
    let page = Page::from_query(&q, |c| is_id("ct", c))?;
    let g = group(&state, &auth.tenant.id, &id).await?;
    let rows = groups::members(&state.db, &g.id, page.cursor.as_deref(), page.limit).await?;
    let (rows, next_cursor) = page.cut(rows, |c| c.id.clone());
    Ok(Json(views::ContactPage {
        data: rows
            .into_iter()
            .map(|c| views::Contact::new(c, &auth.tenant.timezone))
            .collect(),
        next_cursor,
    }))
}

/// A page of the tenant's groups, newest first, with their member counts.
#[utoipa::path(
    get, path = "/v1/groups", tag = "groups",
    params(
        ("limit" = Option<i64>, Query, description = "1..100, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, body = views::GroupPage), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list(
    auth: Tenant,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::GroupPage>> {
    known_params(&q, &["limit", "cursor"])?;
    let page = Page::from_query(&q, |c| is_id("grp", c))?;
    let rows = groups::list(
        &state.db,
        &auth.tenant.id,
        page.cursor.as_deref(),
        page.limit,
    )
    .await?;
    let (rows, next_cursor) = page.cut(rows, |g| g.group.id.clone());
    Ok(Json(views::GroupPage {
        data: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Rename a group.
#[utoipa::path(
    patch, path = "/v1/groups/{id}", tag = "groups",
    params(("id" = String, Path, description = "`grp_...`")),
    request_body(content = crate::requests::GroupRename, description = "`{\"name\"}`"),
    responses((status = 200, body = views::Group), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn patch(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<views::Group>> {
    let mut f = Fields::new(body)?;
    let name = group_name(&mut f)?;
    f.finish()?;
    if !is_id("grp", &id) {
        return Err(ApiError::not_found("group"));
    }
    let g = groups::rename(&state.db, &auth.tenant.id, &id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("group"))?;
    Ok(Json(view(&state, g).await?))
}

/// The most contacts one request adds to a group.
const MAX_NEW_MEMBERS: usize = 10_000;

/// The body limit of [`add_members`]: 10,000 ids of about 30 characters are some 350 KiB,
/// more than the 64 KiB every other route takes. The router lifts axum's limit to this for
/// that route alone.
pub const MEMBERS_MAX_BODY: usize = 1024 * 1024;

/// `contact_ids`: 1 to 10,000 strings.
fn contact_ids(body: Value) -> ApiResult<Vec<String>> {
    let mut f = Fields::new(body)?;
    let ids = match f.take("contact_ids") {
        None => return Err(f.missing("contact_ids")),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_type",
                "contact_ids",
                "`contact_ids` must be an array of contact ids",
            ));
        }
    };
    if ids.is_empty() || ids.len() > MAX_NEW_MEMBERS {
        return Err(f.invalid_value(
            "contact_ids",
            format!(
                "give 1 to {MAX_NEW_MEMBERS} contact ids; this has {}",
                ids.len()
            ),
        ));
    }
    f.finish()?;
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| match id {
            Value::String(s) => Ok(s),
            _ => Err(ApiError::invalid(
                "invalid_type",
                format!("contact_ids[{i}]"),
                format!("`contact_ids[{i}]` must be a string"),
            )),
        })
        .collect()
}

/// Add up to 10,000 contacts to a group at once: each one of the tenant's contacts becomes a
/// member (`added`) or already was one (`already`); any other id is listed as `unknown`.
/// An id given twice counts once.
#[utoipa::path(
    post, path = "/v1/groups/{id}/members", tag = "groups",
    params(("id" = String, Path, description = "`grp_...`")),
    request_body(content = crate::requests::GroupMembersIn, description = "`{\"contact_ids\": [\"ct_...\", ...]}` (1 to 10,000; the body up to 1 MiB)"),
    responses(
        (status = 200, body = views::MembersAdded),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn add_members(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    LargeJsonBody(body): LargeJsonBody<MEMBERS_MAX_BODY>,
) -> ApiResult<Json<views::MembersAdded>> {
    let ids = contact_ids(body)?;
    let g = group(&state, &auth.tenant.id, &id).await?;
    let done = groups::add_members(&state.db, &auth.tenant.id, &g.id, &ids).await?;
    Ok(Json(views::MembersAdded {
        added: done.added,
        already: done.already,
        unknown: done.unknown,
    }))
}

fn parse_send(body: Value) -> ApiResult<GroupSend> {
    let mut f = Fields::new(body)?;
    let channel_raw = f.req_str("channel")?;
    let channel = match Channel::parse(&channel_raw) {
        Some(c @ (Channel::Sms | Channel::Email)) => c,
        _ => {
            return Err(f.invalid_value(
                "channel",
                format!("a group send goes by sms or email, not `{channel_raw}`"),
            ));
        }
    };
    let body = message_body(&mut f, channel)?;
    let subject = email_subject(&mut f, channel)?;
    let (send_at, expires_at) = schedule(&mut f)?;
    let respect_quiet_hours = f.opt_bool("respect_quiet_hours")?.unwrap_or(true);
    let metadata = metadata(&mut f)?;
    let priority = priority(&mut f, Priority::Bulk)?;
    f.finish()?;
    Ok(GroupSend {
        channel,
        priority,
        subject,
        body,
        send_at,
        expires_at,
        respect_quiet_hours,
        metadata,
    })
}

/// Send one message to every member of a group, each with its own status, retries, opt-out
/// and quiet hours; `Idempotency-Key` covers the whole send.
#[utoipa::path(
    post, path = "/v1/groups/{id}/messages", tag = "groups",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body(content = crate::requests::GroupSendIn, description = "`{\"channel\": \"sms\" | \"email\", \"body\", \"subject\"?, \"send_at\"?, \"expires_at\"?, \"respect_quiet_hours\"?, \"metadata\"?}`"),
    responses(
        (status = 202, body = views::GroupSendAccepted),
        (status = 200, description = "the send this Idempotency-Key made before", body = views::GroupSendAccepted),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn send(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    idempotency_key: IdempotencyKey,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let idempotency = idempotency_key.with_body(&body);
    let new = parse_send(body)?;
    if !is_id("grp", &id) {
        return Err(ApiError::not_found("group"));
    }
    let answer = |status: StatusCode, g: groups::GroupMessageRow| {
        (
            status,
            Json(views::GroupSendAccepted {
                id: g.id,
                group_id: g.group_id,
                recipients: g.recipients,
            }),
        )
            .into_response()
    };
    match service::send(
        &state.db,
        &state.queue,
        &auth.tenant,
        &id,
        &new,
        idempotency.as_ref(),
    )
    .await?
    {
        Sent::New(g) => Ok(answer(StatusCode::ACCEPTED, g)),
        Sent::Existing(g) => Ok(answer(StatusCode::OK, g)),
    }
}

/// A group send's messages counted by status.
#[utoipa::path(
    get, path = "/v1/group-messages/{id}", tag = "groups",
    params(("id" = String, Path, description = "`gms_...`")),
    responses((status = 200, body = views::GroupSendStatus), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn send_status(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<views::GroupSendStatus>> {
    let g = groups::get_send(&state.db, &auth.tenant.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("group message"))?;
    let counts = groups::send_counts(&state.db, &g.id)
        .await?
        .into_iter()
        .collect();
    Ok(Json(views::GroupSendStatus {
        id: g.id,
        group_id: g.group_id,
        channel: g.channel.as_str().to_owned(),
        recipients: g.recipients,
        counts,
        created_at: views::time(g.created_at),
        completed_at: g.completed_at.map(views::time),
    }))
}
