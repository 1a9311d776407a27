//! `/v1/appointments`: appointments and their reminders.

use std::collections::{HashMap, HashSet};

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use chrono::{DateTime, Duration, Utc};
use herald_core::{
    domain::{Channel, SmsText, is_id},
    schedule::parse_offset,
    services::appointments::{self as service, NewAppointment},
    store::appointments::{self as store, AppointmentFilter},
};
use serde_json::Value;

use crate::{
    auth::Tenant,
    body::{Fields, JsonBody, Page, known_params, query_param, rfc3339},
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
    views,
};

fn starts_at(f: &mut Fields) -> ApiResult<chrono::DateTime<Utc>> {
    let t = f
        .opt_time("starts_at")?
        .ok_or_else(|| f.missing("starts_at"))?;
    if t <= Utc::now() {
        return Err(f.invalid_value("starts_at", "`starts_at` must be in the future"));
    }
    if t > Utc::now() + Duration::days(366) {
        return Err(f.invalid_value("starts_at", "`starts_at` is at most 366 days ahead"));
    }
    Ok(t)
}

/// Create an appointment with its reminders.
#[utoipa::path(
    post, path = "/v1/appointments", tag = "appointments",
    request_body(content = crate::requests::AppointmentIn, description = "`{\"contact_id\", \"starts_at\", \"reminders\": [{\"before\": \"24h\"}, {\"before\": \"2h\"}], \"channel\"?: \"sms\", \"body_template\": \"Hi {{name}}, see you at {{time}} on {{date}}.\"}`"),
    responses((status = 201, body = views::Appointment), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn create(
    auth: Tenant,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<views::Appointment>)> {
    let mut f = Fields::new(body)?;
    let contact_id = f.req_str("contact_id")?;
    let starts_at = starts_at(&mut f)?;
    let reminders = match f.take("reminders") {
        None => return Err(f.missing("reminders")),
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= 10 => items,
        Some(Value::Array(_)) => return Err(f.invalid_value("reminders", "give 1 to 10 reminders")),
        Some(_) => {
            return Err(ApiError::invalid(
                "invalid_type",
                "reminders",
                "`reminders` must be an array of {\"before\": \"2h\"}",
            ));
        }
    };
    let mut parsed = Vec::new();
    let mut seen = HashSet::new();
    for (i, item) in reminders.into_iter().enumerate() {
        let field = format!("reminders[{i}].before");
        let before = match item.get("before") {
            Some(Value::String(s)) => s.trim().to_owned(),
            _ => {
                return Err(ApiError::invalid(
                    "invalid_value",
                    field,
                    "each reminder is {\"before\": \"<n>m|h|d\"}",
                ));
            }
        };
        let offset = parse_offset(&before)
            .map_err(|e| ApiError::invalid("invalid_value", field.clone(), e.0))?;
        if !seen.insert(offset) {
            return Err(ApiError::invalid(
                "invalid_value",
                field,
                "two reminders at the same time",
            ));
        }
        parsed.push((before, offset));
    }
    let channel = match f.opt_str("channel")?.as_deref() {
        None | Some("sms") => Channel::Sms,
        Some("email") => Channel::Email,
        Some(other) => {
            return Err(f.invalid_value(
                "channel",
                format!("reminders go by sms or email, not `{other}`"),
            ));
        }
    };
    let body_template = SmsText::parse(f.req_str("body_template")?)
        .map_err(|_| {
            f.invalid_value(
                "body_template",
                format!(
                    "`body_template` must be 1 to {} characters",
                    SmsText::MAX_CHARS
                ),
            )
        })?
        .into_string();
    f.finish()?;
    if !is_id("ct", &contact_id) {
        return Err(ApiError::invalid(
            "unknown_contact",
            "contact_id",
            format!("there is no contact {contact_id}"),
        ));
    }
    let new = NewAppointment {
        contact_id,
        starts_at,
        reminders: parsed,
        channel,
        body_template,
    };
    let (a, reminders) = service::create(&state.db, &state.queue, &auth.tenant, &new)
        .await
        .map_err(ApiError::from)?;
    Ok((
        StatusCode::CREATED,
        Json(views::Appointment::new(a, reminders)),
    ))
}

/// An appointment with its reminders.
#[utoipa::path(
    get, path = "/v1/appointments/{id}", tag = "appointments",
    params(("id" = String, Path, description = "`apt_...`")),
    responses((status = 200, body = views::Appointment), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<views::Appointment>> {
    let (a, reminders) = service::get(&state.db, &auth.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("appointment"))?;
    Ok(Json(views::Appointment::new(a, reminders)))
}

/// Move an appointment: unsent reminders keep their ids and get their new times.
#[utoipa::path(
    patch, path = "/v1/appointments/{id}", tag = "appointments",
    params(("id" = String, Path, description = "`apt_...`")),
    request_body(content = crate::requests::AppointmentMove, description = "`{\"starts_at\"}`"),
    responses((status = 200, body = views::Appointment), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn patch(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<views::Appointment>> {
    let mut f = Fields::new(body)?;
    let starts_at = starts_at(&mut f)?;
    f.finish()?;
    let (a, reminders) = service::reschedule(&state.db, &state.queue, &auth.tenant, &id, starts_at)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found("appointment"))?;
    Ok(Json(views::Appointment::new(a, reminders)))
}

/// Delete an appointment: its unsent reminders are canceled.
#[utoipa::path(
    delete, path = "/v1/appointments/{id}", tag = "appointments",
    params(("id" = String, Path, description = "`apt_...`")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn delete(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if service::cancel(&state.db, &state.queue, &auth.tenant, &id)
        .await
        .map_err(ApiError::from)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("appointment"))
    }
}

/// A list cursor: the last appointment's start (microseconds since the epoch) and id, since
/// starts are not unique.
fn cursor_of(a: &store::AppointmentRow) -> String {
    format!("{}.{}", a.starts_at.timestamp_micros(), a.id)
}

fn parse_cursor(c: &str) -> Option<(DateTime<Utc>, &str)> {
    let (micros, id) = c.split_once('.')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    is_id("apt", id).then_some((at, id))
}

/// A page of the tenant's appointments with their reminders, soonest first (canceled ones
/// too, with `canceled_at`).
#[utoipa::path(
    get, path = "/v1/appointments", tag = "appointments",
    params(
        ("contact_id" = Option<String>, Query, description = "only this contact's"),
        ("from" = Option<String>, Query, description = "RFC 3339: starting at or after this"),
        ("to" = Option<String>, Query, description = "RFC 3339: starting before this"),
        ("limit" = Option<i64>, Query, description = "1..100, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, body = views::AppointmentPage), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list(
    auth: Tenant,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::AppointmentPage>> {
    known_params(&q, &["contact_id", "from", "to", "limit", "cursor"])?;
    let page = Page::from_query(&q, |c| parse_cursor(c).is_some())?;
    let expected = "an RFC 3339 time with an offset, such as 2026-03-03T15:30:00-05:00";
    let from = query_param(&q, "from", expected, rfc3339)?;
    let to = query_param(&q, "to", expected, rfc3339)?;
    if let (Some(from), Some(to)) = (from, to)
        && to < from
    {
        return Err(ApiError::invalid(
            "invalid_value",
            "to",
            "`to` must not be earlier than `from`",
        ));
    }
    let filter = AppointmentFilter {
        contact_id: q
            .get("contact_id")
            .map(String::as_str)
            .filter(|c| !c.is_empty()),
        from,
        to,
        after: page.cursor.as_deref().and_then(parse_cursor),
    };
    let rows = store::list(&state.db, &auth.tenant.id, &filter, page.limit).await?;
    let (rows, next_cursor) = page.cut(rows, cursor_of);
    let rows = service::with_reminders(&state.db, rows).await?;
    Ok(Json(views::AppointmentPage {
        data: rows
            .into_iter()
            .map(|(a, reminders)| views::Appointment::new(a, reminders))
            .collect(),
        next_cursor,
    }))
}
