//! `/v1/contacts`: the people a tenant messages.

use std::collections::HashMap;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use chrono::Utc;
use herald_core::{
    domain::{EmailAddress, PhoneNumber, TimeZone, is_id, new_id},
    services::privacy::{self, Erased},
    store::contacts::{self, Consent, ContactChanges, ContactFilter, NewContact},
};
use serde_json::Value;

use crate::{
    auth::{Origin, Tenant},
    body::{Fields, JsonBody, Page, bool_param, known_params, query_param},
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
    views,
};

pub(super) fn phone(f: &mut Fields) -> ApiResult<Option<String>> {
    f.opt_str("phone")?
        .map(|p| PhoneNumber::parse(&p).map(|p| p.as_str().to_owned()))
        .transpose()
        .map_err(|e| f.invalid_value("phone", e.0))
}

pub(super) fn email(f: &mut Fields) -> ApiResult<Option<String>> {
    f.opt_str("email")?
        .map(|e| EmailAddress::parse(&e).map(|e| e.as_str().to_owned()))
        .transpose()
        .map_err(|e| f.invalid_value("email", e.0))
}

pub(super) fn timezone(f: &mut Fields) -> ApiResult<Option<String>> {
    f.opt_str("timezone")?
        .map(|t| TimeZone::parse(&t).map(|t| t.name().to_owned()))
        .transpose()
        .map_err(|e| f.invalid_value("timezone", e.0))
}

pub(super) fn name(f: &mut Fields) -> ApiResult<Option<String>> {
    match f.opt_str("name")? {
        Some(n) if n.trim().is_empty() || n.chars().count() > 200 => {
            Err(f.invalid_value("name", "`name` must be 1 to 200 characters"))
        }
        other => Ok(other.map(|n| n.trim().to_owned())),
    }
}

/// `consent`: `{"status", "at"?, "method", "source"?, "text"?}`, `at` now by default and never
/// in the future.
fn consent(f: &mut Fields) -> ApiResult<Option<Consent>> {
    consent_with(f, None)
}

/// [`consent`], with `method` defaulting to `default_method` when given (an import's).
pub(super) fn consent_with(
    f: &mut Fields,
    default_method: Option<&str>,
) -> ApiResult<Option<Consent>> {
    const STATUSES: [&str; 3] = ["opted_in", "opted_out", "unknown"];
    const METHODS: [&str; 6] = [
        "web_form",
        "sms_keyword",
        "paper",
        "verbal",
        "import",
        "api",
    ];
    let Some(mut c) = f.opt_object("consent")? else {
        return Ok(None);
    };
    let status = c.req_str("status")?;
    if !STATUSES.contains(&status.as_str()) {
        return Err(c.invalid_value(
            "status",
            format!("`consent.status` is opted_in, opted_out or unknown, not `{status}`"),
        ));
    }
    let method = match (c.opt_str("method")?, default_method) {
        (Some(m), _) => m,
        (None, Some(default)) => default.to_owned(),
        (None, None) => return Err(c.missing("method")),
    };
    if !METHODS.contains(&method.as_str()) {
        return Err(c.invalid_value(
            "method",
            format!(
                "`consent.method` is web_form, sms_keyword, paper, verbal, import or api, not `{method}`"
            ),
        ));
    }
    let now = Utc::now();
    let at = match c.opt_time("at")? {
        Some(t) if t > now + chrono::Duration::minutes(5) => {
            return Err(c.invalid_value("at", "`consent.at` cannot be in the future"));
        }
        Some(t) => t,
        None => now,
    };
    let mut bounded = |name: &str, max: usize| -> ApiResult<Option<String>> {
        match c.opt_str(name)? {
            Some(s) if s.trim().is_empty() || s.chars().count() > max => Err(c.invalid_value(
                name,
                format!("`consent.{name}` must be 1 to {max} characters"),
            )),
            other => Ok(other),
        }
    };
    let source = bounded("source", 500)?;
    let text = bounded("text", 2000)?;
    c.finish()?;
    Ok(Some(Consent {
        status,
        at,
        method,
        source,
        text,
    }))
}

fn phone_taken() -> ApiError {
    ApiError::conflict(
        "contact_exists",
        "another contact of this tenant has this phone number",
    )
    .field("phone")
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// Create a contact (its time zone defaults to the tenant's).
#[utoipa::path(
    post, path = "/v1/contacts", tag = "contacts",
    request_body(content = crate::requests::ContactIn, description = "`{\"phone\"?: E.164, \"email\"?, \"name\"?, \"timezone\"?: IANA}`"),
    responses((status = 201, body = views::Contact), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn create(
    auth: Tenant,
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<views::Contact>)> {
    let mut f = Fields::new(body)?;
    let new = NewContact {
        id: new_id("ct"),
        tenant_id: auth.tenant.id.clone(),
        phone: phone(&mut f)?,
        email: email(&mut f)?,
        name: name(&mut f)?,
        timezone: Some(timezone(&mut f)?.unwrap_or_else(|| auth.tenant.timezone.clone())),
    };
    f.finish()?;
    if new.phone.is_none() && new.email.is_none() {
        return Err(ApiError::invalid(
            "missing_field",
            "phone",
            "a contact needs a `phone` or an `email`",
        ));
    }
    let created = contacts::insert(&state.db, &new)
        .await?
        .ok_or_else(phone_taken)?;
    Ok((
        StatusCode::CREATED,
        Json(views::Contact::new(created, &auth.tenant.timezone)),
    ))
}

/// A contact.
#[utoipa::path(
    get, path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path, description = "`ct_...`")),
    responses((status = 200, body = views::Contact), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn get(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<views::Contact>> {
    if !is_id("ct", &id) {
        return Err(ApiError::not_found("contact"));
    }
    contacts::get(&state.db, &auth.tenant.id, &id)
        .await?
        .map(|c| Json(views::Contact::new(c, &auth.tenant.timezone)))
        .ok_or_else(|| ApiError::not_found("contact"))
}

/// What `DELETE /v1/contacts/{id}` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErasedOut {
    pub erased: Erased,
}

/// Erase a contact, irreversibly: their name, phone and email, and every message body,
/// conversation text and error text about them, go from every table (the message rows stay,
/// without them, for the tenant's figures); what was waiting to be sent is canceled; their
/// appointments, subscriptions and memberships are removed. An opted-out number stays
/// suppressed, kept only as a keyed hash. Then the contact is 404.
#[utoipa::path(
    delete, path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path, description = "`ct_...`")),
    responses((status = 200, body = ErasedOut), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn erase(
    auth: Tenant,
    origin: Origin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ErasedOut>> {
    if !is_id("ct", &id) {
        return Err(ApiError::not_found("contact"));
    }
    let origin = origin.by_key(&auth.key_prefix);
    privacy::erase(&state.db, &auth.tenant.id, &id, &origin)
        .await?
        .map(|erased| Json(ErasedOut { erased }))
        .ok_or_else(|| ApiError::not_found("contact"))
}

/// Change a contact's phone, email, name, time zone or consent (`null` clears the email or
/// name); a consent given or withdrawn is kept as a consent event.
#[utoipa::path(
    patch, path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path, description = "`ct_...`")),
    request_body(content = crate::requests::ContactIn, description = "`{\"phone\"?, \"email\"?, \"name\"?, \"timezone\"?, \"consent\"?: {\"status\", \"at\"?, \"method\", \"source\"?, \"text\"?}}`"),
    responses((status = 200, body = views::Contact), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn patch(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<views::Contact>> {
    let clears = |v: &Value, k: &str| v.get(k).is_some_and(Value::is_null);
    let (clear_email, clear_name) = (clears(&body, "email"), clears(&body, "name"));
    let mut f = Fields::new(body)?;
    let changes = ContactChanges {
        phone: phone(&mut f)?,
        email: match email(&mut f)? {
            Some(e) => Some(Some(e)),
            None if clear_email => Some(None),
            None => None,
        },
        name: match name(&mut f)? {
            Some(n) => Some(Some(n)),
            None if clear_name => Some(None),
            None => None,
        },
        timezone: timezone(&mut f)?,
    };
    let consent = consent(&mut f)?;
    f.finish()?;
    if !is_id("ct", &id) {
        return Err(ApiError::not_found("contact"));
    }
    // The changes and the consent (with its event) land together or not at all.
    let mut tx = state.db.begin().await?;
    let mut updated = match contacts::update(&mut *tx, &auth.tenant.id, &id, &changes).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(ApiError::not_found("contact")),
        Err(e) if is_unique_violation(&e) => return Err(phone_taken()),
        Err(e) => return Err(e.into()),
    };
    if let Some(consent) = &consent {
        updated = contacts::set_consent(&mut *tx, &auth.tenant.id, &id, consent)
            .await?
            .ok_or_else(|| ApiError::not_found("contact"))?;
    }
    tx.commit().await?;
    Ok(Json(views::Contact::new(updated, &auth.tenant.timezone)))
}

/// A contact's consent as it changed: every change, oldest first (STOP and START included).
#[utoipa::path(
    get, path = "/v1/contacts/{id}/consent-events", tag = "contacts",
    params(("id" = String, Path, description = "`ct_...`"), ("limit" = Option<i64>, Query), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = views::ConsentEventPage), (status = 404, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn consent_events(
    auth: Tenant,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::ConsentEventPage>> {
    known_params(&q, &["limit", "cursor"])?;
    let page = Page::from_query(&q, |c| c.parse::<i64>().is_ok_and(|n| n > 0))?;
    if !is_id("ct", &id) {
        return Err(ApiError::not_found("contact"));
    }
    contacts::get(&state.db, &auth.tenant.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("contact"))?;
    let after = page.cursor.as_deref().and_then(|c| c.parse().ok());
    let mut rows = contacts::consent_events(&state.db, &id, after, page.limit).await?;
    let more = rows.len() as i64 > page.limit;
    rows.truncate(page.limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(views::ConsentEventPage {
        data: rows.into_iter().map(views::Consent::from).collect(),
        next_cursor,
    }))
}

/// A page of the tenant's contacts, newest first.
#[utoipa::path(
    get, path = "/v1/contacts", tag = "contacts",
    params(
        ("phone" = Option<String>, Query, description = "E.164: only the contact with this number"),
        ("email" = Option<String>, Query, description = "only contacts with this address (any case)"),
        ("group_id" = Option<String>, Query, description = "only members of this group (another tenant's, or an unknown one, has none)"),
        ("opted_out" = Option<bool>, Query, description = "only opted-out (`true`) or not opted-out (`false`) contacts"),
        ("q" = Option<String>, Query, description = "part of the name, any case"),
        ("limit" = Option<i64>, Query, description = "1..100, default 50"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses((status = 200, body = views::ContactPage), (status = 422, body = ErrorBody)),
    security(("api_key" = []))
)]
pub async fn list(
    auth: Tenant,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<views::ContactPage>> {
    known_params(
        &q,
        &[
            "phone",
            "email",
            "group_id",
            "opted_out",
            "q",
            "limit",
            "cursor",
        ],
    )?;
    let page = Page::from_query(&q, |c| is_id("ct", c))?;
    let phone = query_param(&q, "phone", "an E.164 number such as +15551234567", |p| {
        PhoneNumber::parse(p).ok()
    })?;
    let email = query_param(
        &q,
        "email",
        "an email address such as name@example.com",
        |e| EmailAddress::parse(e).ok(),
    )?;
    let name_part = query_param(&q, "q", "1 to 200 characters of a name", |n| {
        (n.chars().count() <= 200).then_some(n)
    })?;
    let filter = ContactFilter {
        phone: phone.as_ref().map(PhoneNumber::as_str),
        email: email.as_ref().map(EmailAddress::as_str),
        group_id: q
            .get("group_id")
            .map(String::as_str)
            .filter(|g| !g.is_empty()),
        opted_out: bool_param(&q, "opted_out")?,
        name_part,
        before_id: page.cursor.as_deref(),
    };
    let rows = contacts::list(&state.db, &auth.tenant.id, &filter, page.limit).await?;
    let (rows, next_cursor) = page.cut(rows, |c| c.id.clone());
    Ok(Json(views::ContactPage {
        data: rows
            .into_iter()
            .map(|c| views::Contact::new(c, &auth.tenant.timezone))
            .collect(),
        next_cursor,
    }))
}
