//! `/v1/contacts`: the people a tenant messages.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use herald_core::{
    domain::{EmailAddress, PhoneNumber, TimeZone, is_id, new_id},
    store::contacts::{self, ContactChanges, NewContact},
};
use serde_json::Value;

use crate::{
    auth::Tenant,
    body::{Fields, JsonBody},
    error::{ApiError, ApiResult, ErrorBody},
    state::AppState,
    views,
};

fn phone(f: &mut Fields) -> ApiResult<Option<String>> {
    f.opt_str("phone")?
        .map(|p| PhoneNumber::parse(&p).map(|p| p.as_str().to_owned()))
        .transpose()
        .map_err(|e| f.invalid_value("phone", e.0))
}

fn email(f: &mut Fields) -> ApiResult<Option<String>> {
    f.opt_str("email")?
        .map(|e| EmailAddress::parse(&e).map(|e| e.as_str().to_owned()))
        .transpose()
        .map_err(|e| f.invalid_value("email", e.0))
}

fn timezone(f: &mut Fields) -> ApiResult<Option<String>> {
    f.opt_str("timezone")?
        .map(|t| TimeZone::parse(&t).map(|t| t.name().to_owned()))
        .transpose()
        .map_err(|e| f.invalid_value("timezone", e.0))
}

fn name(f: &mut Fields) -> ApiResult<Option<String>> {
    match f.opt_str("name")? {
        Some(n) if n.trim().is_empty() || n.chars().count() > 200 => {
            Err(f.invalid_value("name", "`name` must be 1 to 200 characters"))
        }
        other => Ok(other.map(|n| n.trim().to_owned())),
    }
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

/// Change a contact's phone, email, name or time zone (`null` clears the email or name).
#[utoipa::path(
    patch, path = "/v1/contacts/{id}", tag = "contacts",
    params(("id" = String, Path, description = "`ct_...`")),
    request_body(content = crate::requests::ContactIn, description = "`{\"phone\"?, \"email\"?, \"name\"?, \"timezone\"?}`"),
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
    f.finish()?;
    if !is_id("ct", &id) {
        return Err(ApiError::not_found("contact"));
    }
    match contacts::update(&state.db, &auth.tenant.id, &id, &changes).await {
        Ok(Some(c)) => Ok(Json(views::Contact::new(c, &auth.tenant.timezone))),
        Ok(None) => Err(ApiError::not_found("contact")),
        Err(e) if is_unique_violation(&e) => Err(phone_taken()),
        Err(e) => Err(e.into()),
    }
}
