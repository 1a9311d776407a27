//! Who is calling: a tenant API key (tenant routes) or the ops token (admin routes). Each
//! kind is refused on the other's routes with 403; a missing or unknown key is 401.

use axum::{extract::FromRequestParts, http::request::Parts};
use herald_core::store::tenants::TenantRow;

use crate::{error::ApiError, state::AppState};

/// A caller authenticated with a live tenant API key.
pub struct Tenant {
    pub tenant: TenantRow,
    #[allow(dead_code)]
    pub key_prefix: String,
}

/// A caller authenticated with the ops token.
pub struct Ops;

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <key>` header"))?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not readable"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <key>`"))?;
    Ok(token)
}

use herald_core::domain::constant_time_eq;

fn is_ops_token(state: &AppState, token: &str) -> bool {
    state
        .config
        .ops_token
        .as_ref()
        .is_some_and(|ops| constant_time_eq(ops.expose().as_bytes(), token.as_bytes()))
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        if is_ops_token(state, token) {
            return Err(ApiError::forbidden(
                "forbidden",
                "the ops token cannot be used on tenant routes; use a tenant API key",
            ));
        }
        let Some((tenant, key_prefix)) = state.keys.authenticate(token).await? else {
            return Err(ApiError::unauthorized("unknown or revoked API key"));
        };
        rate_limit(state, &key_prefix).await?;
        tracing::Span::current().record("tenant_id", tenant.id.as_str());
        Ok(Tenant { tenant, key_prefix })
    }
}

/// `HERALD_API_RATE` per key: 429 with `Retry-After` past it. The limit must never take the
/// API down with it, so an unreachable Redis lets the request through.
async fn rate_limit(state: &AppState, key_prefix: &str) -> Result<(), ApiError> {
    let rate = state.config.api_rate;
    let took = tokio::time::timeout(
        std::time::Duration::from_millis(100),
        state.limiter.take(&format!("api:{key_prefix}"), rate),
    )
    .await;
    match took {
        Ok(Ok(Some(wait))) => {
            let mut e = ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this API key is limited to {rate} requests per second; slow down and retry"
                ),
            );
            e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
            Err(e)
        }
        Ok(Ok(None)) => Ok(()),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "API rate limit unavailable; request allowed");
            Ok(())
        }
        Err(_) => Ok(()),
    }
}

impl FromRequestParts<AppState> for Ops {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        if state.config.ops_token.is_none() {
            return Err(ApiError::forbidden(
                "admin_disabled",
                "admin routes are disabled: HERALD_OPS_TOKEN is not set on this server",
            ));
        }
        if is_ops_token(state, token) {
            return Ok(Ops);
        }
        if state.keys.authenticate(token).await?.is_some() {
            return Err(ApiError::forbidden(
                "forbidden",
                "tenant API keys cannot use admin routes",
            ));
        }
        Err(ApiError::unauthorized("unknown ops token"))
    }
}

/// Either kind of caller, on routes both may use (dead letters): ops see every tenant, a
/// tenant key sees its own.
pub enum Caller {
    Ops,
    Tenant(Box<TenantRow>),
}

impl Caller {
    /// The tenant whose data this caller may see; `None` for ops (all of it).
    pub fn scope(&self) -> Option<&str> {
        match self {
            Caller::Ops => None,
            Caller::Tenant(t) => Some(&t.id),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        if is_ops_token(state, token) {
            return Ok(Caller::Ops);
        }
        match state.keys.authenticate(token).await? {
            Some((tenant, _)) => Ok(Caller::Tenant(Box::new(tenant))),
            None => Err(ApiError::unauthorized("unknown or revoked API key")),
        }
    }
}
