//! `/v1/tenant`: a tenant's own settings, with its key. The checks of every setting live
//! here once, for creating a tenant, for a tenant changing its own, and for the operator.

use axum::{Json, extract::State};
use chrono::NaiveTime;
use herald_core::{
    domain::{PhoneNumber, TimeZone, parse_email_sender, parse_local_time},
    providers::twilio::is_messaging_service,
    services::tenants::{self, TenantChanges},
};
use serde_json::Value;

use crate::{
    auth::{Origin, Tenant},
    body::{Fields, JsonBody},
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
    views,
};

/// Who is setting: what may be set, and what a left-out setting means, follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setter {
    /// The operator creating a tenant: `name` is required, left-out settings take defaults.
    Creation,
    /// The tenant, with its key: anything but `suspended`.
    Tenant,
    /// The operator changing a tenant: anything, `suspended` too.
    Operator,
}

/// A request's settings, checked: `422` naming the first field at fault.
pub fn settings(body: Value, setter: Setter) -> ApiResult<TenantChanges> {
    let mut f = Fields::new(body)?;
    for read_only in ["id", "created_at", "webhook_secret"] {
        if f.has(read_only) {
            return Err(ApiError::invalid(
                "read_only",
                read_only,
                format!("`{read_only}` cannot be changed"),
            ));
        }
    }
    let suspended = match setter {
        Setter::Operator => not_null(&mut f, "suspended", |f| f.opt_bool("suspended"))?,
        Setter::Tenant if f.has("suspended") => {
            return Err(ApiError::invalid(
                "read_only",
                "suspended",
                "only the operator suspends a tenant or lifts a suspension",
            ));
        }
        // Left for `finish`: not a field of creation.
        _ => None,
    };
    let name = match setter {
        Setter::Creation => Some(f.req_str("name")?),
        _ => not_null(&mut f, "name", |f| f.opt_str("name"))?,
    };
    let name = match name.map(|n| n.trim().to_owned()) {
        Some(n) if n.is_empty() || n.chars().count() > 200 => {
            return Err(f.invalid_value("name", "`name` must be 1 to 200 characters"));
        }
        other => other,
    };
    let changes = TenantChanges {
        name,
        suspended,
        timezone: not_null_on_change(&mut f, "timezone", setter, |f| {
            f.opt_str("timezone")?
                .map(|tz| TimeZone::parse(&tz).map_err(|e| f.invalid_value("timezone", e.0)))
                .transpose()
        })?,
        sms_from: nullable(&mut f, "sms_from", |f| {
            f.opt_str("sms_from")?
                .map(|s| PhoneNumber::parse(&s).map_err(|e| f.invalid_value("sms_from", e.0)))
                .transpose()
        })?,
        email_from: nullable(&mut f, "email_from", |f| {
            f.opt_str("email_from")?
                .map(|s| parse_email_sender(&s).map_err(|e| f.invalid_value("email_from", e.0)))
                .transpose()
        })?,
        quiet_hours: nullable(&mut f, "quiet_hours", quiet_hours)?,
        help_text: nullable(&mut f, "help_text", |f| text(f, "help_text", 320))?,
        system_prompt: system_prompt(&mut f)?,
        canned_reply: nullable(&mut f, "canned_reply", |f| text(f, "canned_reply", 320))?,
        missed_call_text: nullable(&mut f, "missed_call_text", |f| {
            text(f, "missed_call_text", 320)
        })?,
        missed_call_cooldown_minutes: not_null_on_change(
            &mut f,
            "missed_call_cooldown_minutes",
            setter,
            |f| whole(f, "missed_call_cooldown_minutes", 0, 1440),
        )?,
        require_consent_for_bulk: not_null_on_change(
            &mut f,
            "require_consent_for_bulk",
            setter,
            |f| f.opt_bool("require_consent_for_bulk"),
        )?,
        frequency_cap: nullable(&mut f, "frequency_cap", frequency_cap)?,
        messaging_service_sid: nullable(&mut f, "messaging_service_sid", |f| {
            match f.opt_str("messaging_service_sid")? {
                Some(sid) if !is_messaging_service(&sid) => Err(f.invalid_value(
                    "messaging_service_sid",
                    "`messaging_service_sid` is a Twilio Messaging Service sid: MG and 32 hex digits",
                )),
                other => Ok(other),
            }
        })?,
        sms_mps: nullable(&mut f, "sms_mps", sms_mps)?,
        retention_days: not_null_on_change(&mut f, "retention_days", setter, |f| {
            whole(f, "retention_days", 1, 3650)
        })?,
    };
    f.finish()?;
    Ok(changes)
}

/// A setting that may be unset: `None` left out, `Some(None)` an explicit `null`.
fn nullable<T>(
    f: &mut Fields,
    name: &str,
    parse: impl FnOnce(&mut Fields) -> ApiResult<Option<T>>,
) -> ApiResult<Option<Option<T>>> {
    let present = f.has(name);
    Ok(match parse(f)? {
        Some(v) => Some(Some(v)),
        None if present => Some(None),
        None => None,
    })
}

/// A setting that always has a value: `null` is refused.
fn not_null<T>(
    f: &mut Fields,
    name: &str,
    parse: impl FnOnce(&mut Fields) -> ApiResult<Option<T>>,
) -> ApiResult<Option<T>> {
    match nullable(f, name, parse)? {
        Some(None) => Err(f.invalid_value(
            name,
            format!("`{name}` cannot be null; leave it out to keep it as it is"),
        )),
        other => Ok(other.flatten()),
    }
}

/// Like [`not_null`] when changing a tenant; at creation `null` means the default, as it
/// always has.
fn not_null_on_change<T>(
    f: &mut Fields,
    name: &str,
    setter: Setter,
    parse: impl FnOnce(&mut Fields) -> ApiResult<Option<T>>,
) -> ApiResult<Option<T>> {
    match setter {
        Setter::Creation => parse(f),
        _ => not_null(f, name, parse),
    }
}

/// A text of 1 to `max` characters.
fn text(f: &mut Fields, name: &str, max: usize) -> ApiResult<Option<String>> {
    match f.opt_str(name)? {
        Some(t) if t.trim().is_empty() || t.chars().count() > max => {
            Err(f.invalid_value(name, format!("`{name}` must be 1 to {max} characters")))
        }
        other => Ok(other),
    }
}

/// A whole number within `min..=max`.
fn whole(f: &mut Fields, name: &str, min: i64, max: i64) -> ApiResult<Option<i32>> {
    match f.take(name) {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (min..=max).contains(&n) => Ok(i32::try_from(n).ok()),
            _ => Err(f.invalid_value(
                name,
                format!("`{name}` must be a whole number from {min} to {max}"),
            )),
        },
    }
}

/// The AI's instructions: `ai_system_prompt`, or `system_prompt` as creation first named it.
fn system_prompt(f: &mut Fields) -> ApiResult<Option<Option<String>>> {
    let new = nullable(f, "ai_system_prompt", |f| text(f, "ai_system_prompt", 4000))?;
    let old = nullable(f, "system_prompt", |f| text(f, "system_prompt", 4000))?;
    match (new, old) {
        (Some(_), Some(_)) => Err(f.invalid_value(
            "ai_system_prompt",
            "give `ai_system_prompt` or `system_prompt` (its older name), not both",
        )),
        (new, old) => Ok(new.or(old)),
    }
}

/// `quiet_hours`: `{"start": "HH:MM", "end": "HH:MM"}`, different times.
fn quiet_hours(f: &mut Fields) -> ApiResult<Option<(NaiveTime, NaiveTime)>> {
    let Some(mut q) = f.opt_object("quiet_hours")? else {
        return Ok(None);
    };
    let start = q.req_str("start")?;
    let end = q.req_str("end")?;
    let start = parse_local_time(&start).map_err(|e| q.invalid_value("start", e.0))?;
    let end = parse_local_time(&end).map_err(|e| q.invalid_value("end", e.0))?;
    if start == end {
        return Err(q.invalid_value("end", "quiet hours must not start and end at the same time"));
    }
    q.finish()?;
    Ok(Some((start, end)))
}

/// `frequency_cap`: `{"max": 1..1000, "per": "30m" | "24h" | "7d"}`.
fn frequency_cap(f: &mut Fields) -> ApiResult<Option<(i32, std::time::Duration)>> {
    let Some(mut cap) = f.opt_object("frequency_cap")? else {
        return Ok(None);
    };
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
    let per =
        herald_core::schedule::parse_offset(&per).map_err(|e| cap.invalid_value("per", e.0))?;
    cap.finish()?;
    Ok(Some((max, per)))
}

/// `sms_mps`: segments per second, over 0 and at most 10000.
fn sms_mps(f: &mut Fields) -> ApiResult<Option<f64>> {
    match f.take("sms_mps") {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(mps) if mps > 0.0 && mps <= 10_000.0 => Ok(Some(mps)),
            _ => Err(f.invalid_value(
                "sms_mps",
                "`sms_mps` is segments per second: a number over 0, at most 10000",
            )),
        },
    }
}

/// The settings of the tenant whose key this is.
#[utoipa::path(
    get, path = "/v1/tenant", tag = "tenant",
    responses((status = 200, body = views::TenantSettings), (status = 403, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get(auth: Tenant) -> Json<views::TenantSettings> {
    Json(auth.tenant.into())
}

/// Change the tenant's own settings (any but `id` and `suspended`; `null` unsets a setting
/// that may be unset, e.g. `"quiet_hours": null` turns quiet hours off). The same checks as
/// creating a tenant. A new sender is used by the next send, quiet hours by the next message.
#[utoipa::path(
    patch, path = "/v1/tenant", tag = "tenant",
    request_body(content = crate::requests::TenantSettingsIn, description = "any of the settings"),
    responses(
        (status = 200, body = views::TenantSettings),
        (status = 409, description = "sms_from belongs to another tenant", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn patch(
    auth: Tenant,
    origin: Origin,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<views::TenantSettings>> {
    let changes = settings(body, Setter::Tenant)?;
    tenants::update(
        &state.db,
        &auth.tenant.id,
        changes,
        &origin.by_key(&auth.key_prefix),
    )
    .await?
    .map(|t| Json(t.into()))
    .ok_or_else(|| ApiError::not_found("tenant"))
}
