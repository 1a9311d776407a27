//! `/v1/dead-letters`: what could not be delivered, for ops (every tenant) and tenants (their
//! own) to inspect, replay and delete.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use herald_core::{
    domain::is_id,
    services::dead_letters::{self as service, Replay},
    store::dead_letters::{self, DeadLetterFilter},
};
use serde_json::Value;

use crate::{
    auth::{Caller, Origin},
    body::{Fields, JsonBody, Page, known_params},
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
    views,
};

fn parse_time(name: &str, raw: &str) -> ApiResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::invalid(
                "invalid_value",
                name,
                format!("`{name}` must be an RFC 3339 time with an offset"),
            )
        })
}

fn parse_reason(raw: &str) -> ApiResult<String> {
    match raw {
        "exhausted" | "rejected" => Ok(raw.to_owned()),
        _ => Err(ApiError::invalid(
            "invalid_value",
            "reason",
            "`reason` must be `exhausted` or `rejected`",
        )),
    }
}

/// The tenant filter for a caller who asked about `asked`: ops may ask about any tenant; a
/// tenant key sees only its own, so asking about another tenant selects nothing (`None`).
fn scoped_tenant(caller: &Caller, asked: Option<String>) -> Option<Option<String>> {
    match (caller.scope(), asked) {
        (None, asked) => Some(asked),
        (Some(own), Some(asked)) if asked != own => None,
        (Some(own), _) => Some(Some(own.to_owned())),
    }
}

/// Dead letters, newest first.
#[utoipa::path(
    get, path = "/v1/dead-letters", tag = "dead letters",
    params(
        ("queue" = Option<String>, Query), ("tenant_id" = Option<String>, Query),
        ("reason" = Option<String>, Query, description = "`exhausted` or `rejected`"),
        ("since" = Option<String>, Query, description = "RFC 3339"), ("until" = Option<String>, Query, description = "RFC 3339"),
        ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query),
    ),
    responses((status = 200, body = views::DeadLetterPage), (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("ops_token" = []))
)]
pub async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::DeadLetterPage>> {
    known_params(
        &q,
        &[
            "queue",
            "tenant_id",
            "reason",
            "since",
            "until",
            "limit",
            "cursor",
        ],
    )?;
    let page = Page::from_query(&q, |c| is_id("dl", c))?;
    let get = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let reason = get("reason").map(|r| parse_reason(&r)).transpose()?;
    let since = get("since").map(|t| parse_time("since", &t)).transpose()?;
    let until = get("until").map(|t| parse_time("until", &t)).transpose()?;
    let Some(tenant_id) = scoped_tenant(&caller, get("tenant_id")) else {
        return Ok(Json(views::DeadLetterPage {
            data: vec![],
            next_cursor: None,
        }));
    };
    let filter = DeadLetterFilter {
        tenant_id,
        ids: None,
        queue: get("queue"),
        reason,
        since,
        until,
        unreplayed: false,
    };
    let mut rows =
        dead_letters::list(&state.db, &filter, page.cursor.as_deref(), page.limit).await?;
    let more = rows.len() as i64 > page.limit;
    rows.truncate(page.limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(Json(views::DeadLetterPage {
        data: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// One dead letter.
#[utoipa::path(
    get, path = "/v1/dead-letters/{id}", tag = "dead letters",
    params(("id" = String, Path, description = "`dl_...`")),
    responses((status = 200, body = views::DeadLetter), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("ops_token" = []))
)]
pub async fn get(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<views::DeadLetter>> {
    dead_letters::get(&state.db, &id, caller.scope())
        .await?
        .map(|d| Json(d.into()))
        .ok_or_else(|| ApiError::not_found("dead letter"))
}

/// Replay one dead letter: its message starts a fresh run with fresh attempts.
#[utoipa::path(
    post, path = "/v1/dead-letters/{id}/replay", tag = "dead letters",
    params(("id" = String, Path, description = "`dl_...`")),
    responses(
        (status = 202, body = views::Replayed),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the message was meanwhile sent, canceled or replayed, or has expired", body = ErrorBody),
    ),
    security(("api_key" = []), ("ops_token" = []))
)]
pub async fn replay(
    caller: Caller,
    origin: Origin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<views::Replayed>)> {
    match service::replay(
        &state.db,
        &state.queue,
        &id,
        caller.scope(),
        Some(&origin.by(&caller)),
    )
    .await
    .map_err(ApiError::from)?
    {
        Replay::Replayed(m) => Ok((
            StatusCode::ACCEPTED,
            Json(views::Replayed {
                message_id: m.id,
                status: m.status.as_str().to_owned(),
            }),
        )),
        Replay::NotReplayable { redacted: true, .. } => Err(ApiError::conflict(
            "redacted",
            "the message's text was removed (retention or erasure); there is nothing to send",
        )),
        Replay::NotReplayable {
            status,
            expired: true,
            ..
        } => Err(ApiError::conflict(
            "expired",
            format!("the message is {status} and its expires_at has passed; it will not be sent"),
        )),
        Replay::NotReplayable { status, .. } => Err(ApiError::conflict(
            "not_replayable",
            format!("the message is {status} now; only failed or dead messages are replayed"),
        )),
        Replay::NotFound => Err(ApiError::not_found("dead letter")),
    }
}

/// Replay every dead letter a filter selects (not yet replayed). An empty filter replays
/// nothing: say `{"all": true}` to replay them all.
#[utoipa::path(
    post, path = "/v1/dead-letters/replay", tag = "dead letters",
    request_body(content = crate::requests::ReplayFilterIn, description = "`{\"ids\"?: [...], \"queue\"?, \"tenant_id\"?, \"reason\"?, \"since\"?, \"until\"?, \"all\"?: true}`"),
    responses((status = 202, body = views::ReplayedCount), (status = 422, body = ErrorBody)),
    security(("api_key" = []), ("ops_token" = []))
)]
pub async fn replay_many(
    caller: Caller,
    origin: Origin,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<views::ReplayedCount>)> {
    let mut f = Fields::new(body)?;
    let ids = match f.take("ids") {
        None => None,
        Some(Value::Array(items)) => Some(
            items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(ApiError::invalid(
                        "invalid_type",
                        "ids",
                        "`ids` must be an array of dead letter ids",
                    )),
                })
                .collect::<ApiResult<Vec<String>>>()?,
        ),
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_type",
                "ids",
                "`ids` must be an array of dead letter ids",
            ));
        }
    };
    let queue = f.opt_str("queue")?;
    let tenant_id = f.opt_str("tenant_id")?;
    let reason = f.opt_str("reason")?.map(|r| parse_reason(&r)).transpose()?;
    let since = f.opt_time("since")?;
    let until = f.opt_time("until")?;
    let all = f.opt_bool("all")?.unwrap_or(false);
    f.finish()?;
    let asked_tenant = tenant_id.is_some();
    let Some(tenant_id) = scoped_tenant(&caller, tenant_id) else {
        return Ok((
            StatusCode::ACCEPTED,
            Json(views::ReplayedCount { replayed: 0 }),
        ));
    };
    let filter = DeadLetterFilter {
        tenant_id,
        ids,
        queue,
        reason,
        since,
        until,
        unreplayed: true,
    };
    if filter.is_empty() && !asked_tenant && !all {
        return Err(ApiError::invalid(
            "filter_required",
            "all",
            "an empty filter replays nothing: give ids or a filter, or say {\"all\": true}",
        ));
    }
    let replayed = service::replay_matching(&state.db, &state.queue, &filter, &origin.by(&caller))
        .await
        .map_err(ApiError::from)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(views::ReplayedCount { replayed }),
    ))
}

/// Delete a dead letter.
#[utoipa::path(
    delete, path = "/v1/dead-letters/{id}", tag = "dead letters",
    params(("id" = String, Path, description = "`dl_...`")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("ops_token" = []))
)]
pub async fn delete(
    caller: Caller,
    origin: Origin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if service::delete(&state.db, &id, caller.scope(), &origin.by(&caller)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("dead letter"))
    }
}
