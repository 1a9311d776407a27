//! `/v1/admin/*`: tenants and API keys, with the ops token.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use herald_core::providers::twilio::is_messaging_service;
use herald_core::{
    domain::{PhoneNumber, TimeZone, parse_email_sender, parse_local_time},
    services::tenants::{self, NewTenant},
};
use serde_json::Value;

use crate::{
    auth::Ops,
    body::{Fields, JsonBody},
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
    views,
};

/// The default quiet window, 21:00 to 08:00 in the recipient's time zone.
const DEFAULT_QUIET: (&str, &str) = ("21:00", "08:00");

/// Create a tenant and its first API key.
#[utoipa::path(
    post, path = "/v1/admin/tenants", tag = "admin",
    request_body(content = crate::requests::TenantIn, description = "`{\"name\", \"timezone\"?, \"sms_from\"?, \"email_from\"?, \"quiet_hours\"?: {\"start\", \"end\"} | null, \"help_text\"?, \"system_prompt\"?, \"canned_reply\"?}`"),
    responses(
        (status = 201, body = views::CreatedTenant),
        (status = 409, description = "sms_from belongs to another tenant", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("ops_token" = []))
)]
pub async fn create_tenant(
    _ops: Ops,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<views::CreatedTenant>)> {
    let new = parse_new_tenant(body)?;
    let created = tenants::create(&state.db, &new).await?;
    Ok((
        StatusCode::CREATED,
        Json(views::CreatedTenant::new(
            created.tenant,
            created.api_key,
            created.key_prefix,
        )),
    ))
}

/// `quiet_hours`: absent, the default window; `null`, none; else `{"start", "end"}`.
fn quiet_hours(f: &mut Fields) -> ApiResult<Option<(chrono::NaiveTime, chrono::NaiveTime)>> {
    // Absent: the default window. `null`: no quiet hours.
    let explicit_null = f.has("quiet_hours");
    Ok(match f.opt_object("quiet_hours")? {
        Some(mut q) => {
            let start = q.req_str("start")?;
            let end = q.req_str("end")?;
            let start = parse_local_time(&start).map_err(|e| q.invalid_value("start", e.0))?;
            let end = parse_local_time(&end).map_err(|e| q.invalid_value("end", e.0))?;
            if start == end {
                return Err(
                    q.invalid_value("end", "quiet hours must not start and end at the same time")
                );
            }
            q.finish()?;
            Some((start, end))
        }
        None if explicit_null => None,
        None => Some((
            parse_local_time(DEFAULT_QUIET.0).map_err(|e| ApiError::internal(&e))?,
            parse_local_time(DEFAULT_QUIET.1).map_err(|e| ApiError::internal(&e))?,
        )),
    })
}

/// `frequency_cap`: `{"max": 1..1000, "per": "30m" | "24h" | "7d"}`, or none.
fn frequency_cap(f: &mut Fields) -> ApiResult<Option<(i32, std::time::Duration)>> {
    Ok(match f.opt_object("frequency_cap")? {
        None => None,
        Some(mut cap) => {
            let max = match cap.take("max") {
                None => return Err(cap.missing("max")),
                Some(v) => match v.as_i64() {
                    Some(n) if (1..=1000).contains(&n) => n as i32,
                    _ => {
                        return Err(cap.invalid_value(
                            "max",
                            "`frequency_cap.max` must be a whole number from 1 to 1000",
                        ));
                    }
                },
            };
            let per = cap.req_str("per")?;
            let per = herald_core::schedule::parse_offset(&per)
                .map_err(|e| cap.invalid_value("per", e.0))?;
            cap.finish()?;
            Some((max, per))
        }
    })
}

fn parse_new_tenant(body: Value) -> ApiResult<NewTenant> {
    let mut f = Fields::new(body)?;
    let name = f.req_str("name")?;
    let name = name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(f.invalid_value("name", "`name` must be 1 to 200 characters"));
    }
    let timezone = match f.opt_str("timezone")? {
        None => TimeZone::parse("UTC").map_err(|e| f.invalid_value("timezone", e.0))?,
        Some(tz) => TimeZone::parse(&tz).map_err(|e| f.invalid_value("timezone", e.0))?,
    };
    let sms_from = f
        .opt_str("sms_from")?
        .map(|s| PhoneNumber::parse(&s))
        .transpose()
        .map_err(|e| f.invalid_value("sms_from", e.0))?;
    let email_from = f
        .opt_str("email_from")?
        .map(|s| parse_email_sender(&s))
        .transpose()
        .map_err(|e| f.invalid_value("email_from", e.0))?;
    let quiet_hours = quiet_hours(&mut f)?;
    let text = |f: &mut Fields, name: &str, max: usize| -> ApiResult<Option<String>> {
        match f.opt_str(name)? {
            Some(t) if t.trim().is_empty() || t.chars().count() > max => {
                Err(f.invalid_value(name, format!("`{name}` must be 1 to {max} characters")))
            }
            other => Ok(other),
        }
    };
    let help_text = text(&mut f, "help_text", 320)?;
    let system_prompt = text(&mut f, "system_prompt", 4000)?;
    let canned_reply = text(&mut f, "canned_reply", 320)?;
    let missed_call_text = text(&mut f, "missed_call_text", 320)?;
    let missed_call_cooldown_minutes = match f.take("missed_call_cooldown_minutes") {
        None => 10,
        Some(v) => match v.as_i64() {
            Some(n) if (0..=1440).contains(&n) => n as i32,
            _ => {
                return Err(f.invalid_value(
                    "missed_call_cooldown_minutes",
                    "`missed_call_cooldown_minutes` must be a whole number from 0 to 1440",
                ));
            }
        },
    };
    let require_consent_for_bulk = f.opt_bool("require_consent_for_bulk")?.unwrap_or(false);
    let frequency_cap = frequency_cap(&mut f)?;
    let messaging_service_sid = match f.opt_str("messaging_service_sid")? {
        Some(sid) if !is_messaging_service(&sid) => {
            return Err(f.invalid_value(
                "messaging_service_sid",
                "`messaging_service_sid` is a Twilio Messaging Service sid: MG and 32 hex digits",
            ));
        }
        other => other,
    };
    let sms_mps = match f.take("sms_mps") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(mps) if mps > 0.0 && mps <= 10_000.0 => Some(mps),
            _ => {
                return Err(f.invalid_value(
                    "sms_mps",
                    "`sms_mps` is segments per second: a number over 0, at most 10000",
                ));
            }
        },
    };
    f.finish()?;
    Ok(NewTenant {
        sms_mps,
        messaging_service_sid,
        require_consent_for_bulk,
        frequency_cap,
        name,
        timezone,
        sms_from,
        email_from,
        quiet_hours,
        help_text,
        system_prompt,
        canned_reply,
        missed_call_text,
        missed_call_cooldown_minutes,
    })
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
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<views::CreatedKey>)> {
    match tenants::create_key(&state.db, &id).await? {
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
    State(state): State<AppState>,
    Path(prefix): Path<String>,
) -> ApiResult<StatusCode> {
    if tenants::revoke_key(&state.db, &prefix).await? {
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
