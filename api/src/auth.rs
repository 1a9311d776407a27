//! Who is calling: a tenant API key (tenant routes) or the ops token (admin routes). Each
//! kind is refused on the other's routes with 403; a missing or unknown key is 401.

use axum::{extract::FromRequestParts, http::request::Parts};
use herald_core::{services::tenants, store::tenants::TenantRow};

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

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

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
        match tenants::authenticate(&state.db, token).await? {
            Some((tenant, key_prefix)) => Ok(Tenant { tenant, key_prefix }),
            None => Err(ApiError::unauthorized("unknown or revoked API key")),
        }
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
        if tenants::authenticate(&state.db, token).await?.is_some() {
            return Err(ApiError::forbidden(
                "forbidden",
                "tenant API keys cannot use admin routes",
            ));
        }
        Err(ApiError::unauthorized("unknown ops token"))
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn secrets_compare_by_content() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
