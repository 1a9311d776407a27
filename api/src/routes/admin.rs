//! `/v1/admin/*`: tenants (created, listed, changed, suspended) and API keys, with the ops
//! token.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use herald_core::{
    domain::{is_id, parse_local_time},
    services::tenants::{self, NewTenant},
};
use serde_json::Value;

use super::tenant::{self, Setter};
use crate::{
    auth::{Ops, Origin},
    body::{JsonBody, Page, known_params},
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
    views,
};

/// The default quiet window, 21:00 to 08:00 in the recipient's time zone.
const DEFAULT_QUIET: (&str, &str) = ("21:00", "08:00");

/// Create a tenant and its first API key.
#[utoipa::path(
    post, path = "/v1/admin/tenants", tag = "admin",
    request_body(content = crate::requests::TenantIn, description = "`{\"name\", \"timezone\"?, \"sms_from\"?, \"email_from\"?, \"quiet_hours\"?: {\"start\", \"end\"} | null, \"help_text\"?, \"ai_system_prompt\"?, \"canned_reply\"?, \"retention_days\"?, ...}`"),
    responses(
        (status = 201, body = views::CreatedTenant),
        (status = 409, description = "sms_from belongs to another tenant", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("ops_token" = []))
)]
pub async fn create_tenant(
    _ops: Ops,
    origin: Origin,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<views::CreatedTenant>)> {
    let new = parse_new_tenant(body)?;
    let created = tenants::create(&state.db, &new, Some(&origin.by_ops())).await?;
    Ok((
        StatusCode::CREATED,
        Json(views::CreatedTenant::new(
            created.tenant,
            created.api_key,
            created.key_prefix,
        )),
    ))
}

fn parse_new_tenant(body: Value) -> ApiResult<NewTenant> {
    let mut changes = tenant::settings(body, Setter::Creation)?;
    let name = changes
        .name
        .take()
        .ok_or_else(|| ApiError::internal(&"creation settings without a name"))?;
    let default_quiet = (
        parse_local_time(DEFAULT_QUIET.0).map_err(|e| ApiError::internal(&e))?,
        parse_local_time(DEFAULT_QUIET.1).map_err(|e| ApiError::internal(&e))?,
    );
    Ok(changes.into_new(name, default_quiet))
}

/// A page of tenants, newest first.
#[utoipa::path(
    get, path = "/v1/admin/tenants", tag = "admin",
    params(
        ("limit" = Option<i64>, Query, description = "1..100, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, body = views::TenantPage), (status = 422, body = ErrorBody)),
    security(("ops_token" = []))
)]
pub async fn list_tenants(
    _ops: Ops,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::TenantPage>> {
    known_params(&q, &["limit", "cursor"])?;
    let page = Page::from_query(&q, |c| is_id("ten", c))?;
    let (rows, next_cursor) = tenants::list(&state.db, page.cursor.as_deref(), page.limit).await?;
    Ok(Json(views::TenantPage {
        data: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Any tenant's settings, and whether it is suspended.
#[utoipa::path(
    get, path = "/v1/admin/tenants/{id}", tag = "admin",
    params(("id" = String, Path, description = "`ten_...`")),
    responses((status = 200, body = views::TenantSettings), (status = 404, body = ErrorBody)),
    security(("ops_token" = []))
)]
pub async fn get_tenant(
    _ops: Ops,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<views::TenantSettings>> {
    if !is_id("ten", &id) {
        return Err(ApiError::not_found("tenant"));
    }
    herald_core::store::tenants::get(&state.db, &id)
        .await?
        .map(|t| Json(t.into()))
        .ok_or_else(|| ApiError::not_found("tenant"))
}

/// Change any tenant's settings, as `PATCH /v1/tenant` does, and suspend it or lift its
/// suspension (`suspended`). A suspended tenant's keys are refused (403 `tenant_suspended`)
/// from the next request; its due messages wait without spending attempts and leave within
/// seconds of the suspension being lifted. Texts to it are still stored, and not answered by
/// the AI.
#[utoipa::path(
    patch, path = "/v1/admin/tenants/{id}", tag = "admin",
    params(("id" = String, Path, description = "`ten_...`")),
    request_body(content = crate::requests::TenantAdminIn, description = "any of the settings, and `suspended`"),
    responses(
        (status = 200, body = views::TenantSettings),
        (status = 404, body = ErrorBody),
        (status = 409, description = "sms_from belongs to another tenant", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("ops_token" = []))
)]
pub async fn patch_tenant(
    _ops: Ops,
    origin: Origin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<views::TenantSettings>> {
    let changes = tenant::settings(body, Setter::Operator)?;
    if !is_id("ten", &id) {
        return Err(ApiError::not_found("tenant"));
    }
    tenants::update(&state.db, &id, changes, &origin.by_ops())
        .await?
        .map(|t| Json(t.into()))
        .ok_or_else(|| ApiError::not_found("tenant"))
}

/// Create another API key for a tenant.
#[utoipa::path(
    post, path = "/v1/admin/tenants/{id}/keys", tag = "admin",
    params(("id" = String, Path, description = "`ten_...`")),
    responses((status = 201, body = views::CreatedKey), (status = 404, body = ErrorBody)),
    security(("ops_token" = []))
)]
pub async fn create_key(
    _ops: Ops,
    origin: Origin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<views::CreatedKey>)> {
    match tenants::create_key(&state.db, &id, &origin.by_ops()).await? {
        Some((api_key, key_prefix)) => Ok((
            StatusCode::CREATED,
            Json(views::CreatedKey {
                api_key,
                key_prefix,
            }),
        )),
        None => Err(ApiError::not_found("tenant")),
    }
}

/// Revoke an API key: it stops working at once.
#[utoipa::path(
    delete, path = "/v1/admin/keys/{key_prefix}", tag = "admin",
    params(("key_prefix" = String, Path, description = "the key's first 12 characters")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("ops_token" = []))
)]
pub async fn revoke_key(
    _ops: Ops,
    origin: Origin,
    State(state): State<AppState>,
    Path(prefix): Path<String>,
) -> ApiResult<StatusCode> {
    if tenants::revoke_key(&state.db, &prefix, &origin.by_ops()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("API key"))
    }
}

/// Every queue's counts: pending, scheduled, running, dead, and completed and failed in the
/// last minute.
#[utoipa::path(
    get, path = "/v1/admin/queues", tag = "admin",
    responses((status = 200, body = [views::QueueStats]), (status = 503, body = ErrorBody)),
    security(("ops_token" = []))
)]
pub async fn queues(
    _ops: Ops,
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<views::QueueStats>>> {
    let mut all = Vec::new();
    for queue in [&state.queue, &state.replies, &state.events] {
        let stats = queue.stats().await.map_err(|e| {
            tracing::warn!(error = %e, "could not read queue stats");
            ApiError::unavailable("Redis")
        })?;
        all.push(stats.into());
    }
    Ok(Json(all))
}

/// Any tenant's message with its events, for ops.
#[utoipa::path(
    get, path = "/v1/admin/messages/{id}", tag = "admin",
    params(("id" = String, Path, description = "`msg_...`")),
    responses((status = 200, body = views::MessageWithEvents), (status = 404, body = ErrorBody)),
    security(("ops_token" = []))
)]
pub async fn message(
    _ops: Ops,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<views::MessageWithEvents>> {
    let m = herald_core::store::messages::get_any(&state.db, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    let events = herald_core::store::messages::events(&state.db, &id).await?;
    Ok(Json(views::MessageWithEvents {
        tenant_id: Some(m.tenant_id.clone()),
        message: m.into(),
        events: events.into_iter().map(Into::into).collect(),
    }))
}
