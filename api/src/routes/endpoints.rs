//! `/v1/endpoints` and `/v1/events`: where a tenant's events go, what was attempted, and
//! sending events again.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use herald_core::{
    domain::{
        audit::{AuditAction, AuditOrigin},
        is_id,
    },
    services::{
        audit,
        events::{self as service, EndpointInput, RedeliverError},
    },
    store::events::{self as store, EndpointFields},
};
use serde_json::Value;

use crate::{
    auth::{Ops, Origin, Tenant},
    body::{Fields, JsonBody, Page, known_params, query_param, rfc3339},
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
    views,
};

/// `events`: a list of event type names.
fn event_types(f: &mut Fields) -> ApiResult<Option<Vec<String>>> {
    let Some(value) = f.take("events") else {
        return Ok(None);
    };
    let wrong = || {
        ApiError::invalid(
            "invalid_type",
            "events",
            "`events` must be an array of event type names",
        )
    };
    match value {
        Value::Array(items) if items.len() <= 64 => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(wrong()),
            })
            .collect::<ApiResult<Vec<_>>>()
            .map(Some),
        _ => Err(wrong()),
    }
}

/// What a create or update body says, checked.
fn endpoint_input(state: &AppState, body: Value, patch: bool) -> ApiResult<EndpointFields> {
    let clears_description = body.get("description").is_some_and(Value::is_null);
    let mut f = Fields::new(body)?;
    let url = f.opt_str("url")?;
    if url.is_none() && !patch {
        return Err(f.missing("url"));
    }
    let events = event_types(&mut f)?;
    let description = match f.opt_str("description")? {
        Some(d) => Some(Some(d)),
        None if clears_description => Some(None),
        None => None,
    };
    let enabled = if patch { f.opt_bool("enabled")? } else { None };
    f.finish()?;
    let input = EndpointInput {
        url,
        events,
        description,
        enabled,
    };
    Ok(input.validate(state.config.webhook_allow_private)?)
}

fn not_found() -> ApiError {
    ApiError::not_found("endpoint")
}

/// Register an endpoint for the tenant's events; the answer carries its signing secret.
#[utoipa::path(
    post, path = "/v1/endpoints", tag = "endpoints",
    request_body(content = crate::requests::EndpointIn, description = "`{\"url\", \"events\"?: [types] (default every type), \"description\"?}`"),
    responses((status = 201, body = views::Endpoint), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn create(
    auth: Tenant,
    origin: Origin,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<views::Endpoint>)> {
    let fields = endpoint_input(&state, body, false)?;
    let created = service::create_endpoint(
        &state.db,
        &auth.tenant.id,
        fields,
        Some(&origin.by_key(&auth.key_prefix)),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// The tenant's endpoints, newest first.
#[utoipa::path(
    get, path = "/v1/endpoints", tag = "endpoints",
    params(("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = views::EndpointPage), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list(
    auth: Tenant,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::EndpointPage>> {
    known_params(&q, &["limit", "cursor"])?;
    let page = Page::from_query(&q, |c| is_id("ep", c))?;
    let rows = store::list_endpoints(
        &state.db,
        Some(&auth.tenant.id),
        page.cursor.as_deref(),
        page.limit + 1,
    )
    .await?;
    let (data, next_cursor) = page.cut(rows, |e| e.id.clone());
    Ok(Json(views::EndpointPage {
        data: data.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Every tenant's endpoints (or one tenant's), newest first, for ops: each with its tenant
/// and without its secret.
#[utoipa::path(
    get, path = "/v1/admin/endpoints", tag = "admin",
    params(
        ("tenant_id" = Option<String>, Query, description = "`ten_...`: only this tenant's"),
        ("limit" = Option<i64>, Query, description = "1..100, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, body = views::AdminEndpointPage), (status = 422, body = ErrorBody)),
    security(("ops_token" = []))
)]
pub async fn admin_list(
    _ops: Ops,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::AdminEndpointPage>> {
    known_params(&q, &["tenant_id", "limit", "cursor"])?;
    let page = Page::from_query(&q, |c| is_id("ep", c))?;
    let tenant_id = query_param(&q, "tenant_id", "a tenant id (`ten_...`)", |t| {
        is_id("ten", t).then_some(t)
    })?;
    let rows =
        store::list_endpoints(&state.db, tenant_id, page.cursor.as_deref(), page.limit + 1).await?;
    let (data, next_cursor) = page.cut(rows, |e| e.id.clone());
    Ok(Json(views::AdminEndpointPage {
        data: data.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

fn endpoint_id(id: &str) -> ApiResult<&str> {
    if is_id("ep", id) {
        Ok(id)
    } else {
        Err(not_found())
    }
}

/// An endpoint.
#[utoipa::path(
    get, path = "/v1/endpoints/{id}", tag = "endpoints",
    params(("id" = String, Path, description = "`ep_...`")),
    responses((status = 200, body = views::Endpoint), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<views::Endpoint>> {
    store::get_endpoint(&state.db, Some(&auth.tenant.id), endpoint_id(&id)?)
        .await?
        .map(|e| Json(e.into()))
        .ok_or_else(not_found)
}

/// Change an endpoint's URL, event types, description, or whether it is enabled (enabling
/// one Herald disabled clears its `disabled_reason`).
#[utoipa::path(
    patch, path = "/v1/endpoints/{id}", tag = "endpoints",
    params(("id" = String, Path, description = "`ep_...`")),
    request_body(content = crate::requests::EndpointIn, description = "`{\"url\"?, \"events\"?, \"description\"?, \"enabled\"?}`"),
    responses((status = 200, body = views::Endpoint), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn patch(
    auth: Tenant,
    origin: Origin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<views::Endpoint>> {
    let fields = endpoint_input(&state, body, true)?;
    let origin = origin.by_key(&auth.key_prefix);
    service::update_endpoint(
        &state.db,
        &auth.tenant.id,
        endpoint_id(&id)?,
        &fields,
        &origin,
    )
    .await?
    .map(|e| Json(e.into()))
    .ok_or_else(not_found)
}

/// Delete an endpoint: nothing more is sent to it, and its attempts go with it.
#[utoipa::path(
    delete, path = "/v1/endpoints/{id}", tag = "endpoints",
    params(("id" = String, Path, description = "`ep_...`")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn delete(
    auth: Tenant,
    origin: Origin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let origin = origin.by_key(&auth.key_prefix);
    if service::delete_endpoint(&state.db, &auth.tenant.id, endpoint_id(&id)?, &origin).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}

/// Give an endpoint a new secret. For 24 hours every delivery carries a signature by each,
/// so the receiver can switch without losing one.
#[utoipa::path(
    post, path = "/v1/endpoints/{id}/rotate-secret", tag = "endpoints",
    params(("id" = String, Path, description = "`ep_...`")),
    responses((status = 200, body = views::EndpointSecret), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn rotate_secret(
    auth: Tenant,
    origin: Origin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<views::EndpointSecret>> {
    let origin = origin.by_key(&auth.key_prefix);
    service::rotate_secret(&state.db, &auth.tenant.id, endpoint_id(&id)?, &origin)
        .await?
        .map(|secret| Json(views::EndpointSecret { secret }))
        .ok_or_else(not_found)
}

/// Every call Herald made to an endpoint, newest first.
#[utoipa::path(
    get, path = "/v1/endpoints/{id}/attempts", tag = "endpoints",
    params(
        ("id" = String, Path, description = "`ep_...`"),
        ("status" = Option<String>, Query, description = "`succeeded` or `failed`"),
        ("since" = Option<String>, Query, description = "RFC 3339: attempts from then on"),
        ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query),
    ),
    responses((status = 200, body = views::EventAttemptPage), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn attempts(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::EventAttemptPage>> {
    attempts_page(&state, Some(&auth.tenant.id), &id, &q)
        .await
        .map(Json)
}

/// Every call Herald made to any tenant's endpoint, newest first, for ops.
#[utoipa::path(
    get, path = "/v1/admin/endpoints/{id}/attempts", tag = "admin",
    params(
        ("id" = String, Path, description = "`ep_...`"),
        ("status" = Option<String>, Query, description = "`succeeded` or `failed`"),
        ("since" = Option<String>, Query, description = "RFC 3339: attempts from then on"),
        ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query),
    ),
    responses((status = 200, body = views::EventAttemptPage), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("ops_token" = []))
)]
pub async fn admin_attempts(
    _ops: Ops,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::EventAttemptPage>> {
    attempts_page(&state, None, &id, &q).await.map(Json)
}

/// A page of the attempts made to endpoint `id` of the tenant (any tenant's for `None`), as
/// the query filters them.
async fn attempts_page(
    state: &AppState,
    tenant_id: Option<&str>,
    id: &str,
    q: &HashMap<String, String>,
) -> ApiResult<views::EventAttemptPage> {
    known_params(q, &["status", "since", "limit", "cursor"])?;
    let page = Page::from_query(q, |c| is_id("att", c))?;
    let status = query_param(q, "status", "succeeded or failed", |s| {
        ["succeeded", "failed"]
            .into_iter()
            .find(|known| *known == s)
    })?;
    let since = query_param(q, "since", "an RFC 3339 time with an offset", rfc3339)?;
    let endpoint = store::get_endpoint(&state.db, tenant_id, endpoint_id(id)?)
        .await?
        .ok_or_else(not_found)?;
    let rows = store::list_attempts(
        &state.db,
        &endpoint.id,
        status,
        since,
        page.cursor.as_deref(),
        page.limit + 1,
    )
    .await?;
    let (data, next_cursor) = page.cut(rows, |a| a.id.clone());
    Ok(views::EventAttemptPage {
        data: data.into_iter().map(Into::into).collect(),
        next_cursor,
    })
}

/// Send an endpoint again every event since `since` that it has not had (after an outage of
/// the receiver), each from a first attempt.
#[utoipa::path(
    post, path = "/v1/endpoints/{id}/recover", tag = "endpoints",
    params(("id" = String, Path, description = "`ep_...`")),
    request_body(content = crate::requests::RecoverIn, description = "`{\"since\": RFC 3339}`"),
    responses(
        (status = 202, body = views::Redelivered),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the endpoint is disabled: enable it first", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn recover(
    auth: Tenant,
    origin: Origin,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<views::Redelivered>)> {
    let mut f = Fields::new(body)?;
    let since = f.opt_time("since")?.ok_or_else(|| f.missing("since"))?;
    f.finish()?;
    let endpoint = store::get_endpoint(&state.db, Some(&auth.tenant.id), endpoint_id(&id)?)
        .await?
        .ok_or_else(not_found)?;
    if !endpoint.enabled {
        return Err(ApiError::conflict(
            "endpoint_disabled",
            "this endpoint is disabled: enable it (PATCH `enabled: true`) before recovering",
        ));
    }
    let redelivered = service::recover(&state.db, &state.events, &endpoint.id, since)
        .await
        .map_err(redeliver_error)?;
    audit::record_after(
        &state.db,
        &origin.by_key(&auth.key_prefix),
        AuditAction::EndpointRecovered,
        &endpoint.id,
        Some(&auth.tenant.id),
        serde_json::json!({ "since": since, "redelivered": redelivered }),
    )
    .await;
    Ok((
        StatusCode::ACCEPTED,
        Json(views::Redelivered { redelivered }),
    ))
}

fn redeliver_error(e: RedeliverError) -> ApiError {
    match e {
        RedeliverError::NotFound => ApiError::not_found("event"),
        RedeliverError::Db(e) => e.into(),
        RedeliverError::Queue(e) => anyhow::Error::from(e).into(),
    }
}

/// Send an event again to each of the tenant's enabled endpoints that had it, from a first
/// attempt.
#[utoipa::path(
    post, path = "/v1/events/{id}/redeliver", tag = "endpoints",
    params(("id" = String, Path, description = "`evt_...`")),
    responses((status = 202, body = views::Redelivered), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn redeliver(
    auth: Tenant,
    origin: Origin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<views::Redelivered>)> {
    let origin = origin.by_key(&auth.key_prefix);
    redeliver_event(&state, Some(&auth.tenant.id), &id, &origin).await
}

/// Send any tenant's event again to each of its tenant's enabled endpoints that had it,
/// from a first attempt, for ops.
#[utoipa::path(
    post, path = "/v1/admin/events/{id}/redeliver", tag = "admin",
    params(("id" = String, Path, description = "`evt_...`")),
    responses((status = 202, body = views::Redelivered), (status = 404, body = ErrorBody)),
    security(("ops_token" = []))
)]
pub async fn admin_redeliver(
    _ops: Ops,
    origin: Origin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<views::Redelivered>)> {
    redeliver_event(&state, None, &id, &origin.by_ops()).await
}

async fn redeliver_event(
    state: &AppState,
    tenant_id: Option<&str>,
    id: &str,
    origin: &AuditOrigin,
) -> ApiResult<(StatusCode, Json<views::Redelivered>)> {
    if !is_id("evt", id) {
        return Err(ApiError::not_found("event"));
    }
    let redelivered = service::redeliver(&state.db, &state.events, tenant_id, id)
        .await
        .map_err(redeliver_error)?;
    service::record_redelivery(&state.db, origin, id, tenant_id, redelivered).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(views::Redelivered { redelivered }),
    ))
}
