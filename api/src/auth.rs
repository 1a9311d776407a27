//! Who is calling: a tenant API key (tenant routes) or the ops token (admin routes). Each
//! kind is refused on the other's routes with 403; a missing or unknown key is 401, and a
//! suspended tenant's key is 403 `tenant_suspended` everywhere. Keys are looked up in Postgres
//! on every request, so a suspension (or its end) holds from the next request.
//!
//! Every authenticated request counts against its key's rate (`HERALD_API_RATE`; the ops
//! token has a bucket of its own). Failed authentication counts against the client address
//! (`HERALD_AUTH_FAILURE_RATE`): past it, requests from that address are answered 429 before
//! any key is looked up, so guessing keys costs Postgres nothing.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{StatusCode, request::Parts},
};
use herald_core::{domain::audit::AuditOrigin, store::tenants::TenantRow};
use tower_http::request_id::RequestId;

use crate::{error::ApiError, state::AppState};

/// The most addresses remembered as over their failure budget.
const MAX_BLOCKED: usize = 10_000;

/// Client addresses over their failed-authentication budget, until when. Kept in each API
/// process so a blocked address costs neither Redis nor Postgres; the budget itself is shared
/// through Redis.
#[derive(Debug, Default)]
pub struct FailedAuth {
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl FailedAuth {
    fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        let until = *blocked.get(&ip)?;
        until.checked_duration_since(Instant::now())
    }

    fn block(&self, ip: IpAddr, wait: Duration) {
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        if blocked.len() >= MAX_BLOCKED {
            let now = Instant::now();
            blocked.retain(|_, until| *until > now);
            if blocked.len() >= MAX_BLOCKED {
                blocked.clear();
            }
        }
        blocked.insert(ip, Instant::now() + wait);
    }
}

/// The address a request came from: the peer's, or behind a proxy
/// (`HERALD_TRUST_FORWARDED_FOR`) the last address in `X-Forwarded-For`, the one the proxy
/// itself added.
pub fn client_ip(parts: &Parts, state: &AppState) -> Option<IpAddr> {
    if state.config.trust_forwarded_for
        && let Some(ip) = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|a| a.trim().parse::<IpAddr>().ok())
    {
        return Some(ip);
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Where a request came from and which it is: what the audit log stamps on the entries it
/// causes, with whoever authenticated it ([`Origin::by_ops`], [`Origin::by_key`]).
pub struct Origin {
    pub client_ip: Option<IpAddr>,
    pub request_id: Option<String>,
}

impl Origin {
    pub fn by_ops(&self) -> AuditOrigin {
        AuditOrigin::ops(self.client_ip, self.request_id.clone())
    }

    pub fn by_key(&self, key_prefix: &str) -> AuditOrigin {
        AuditOrigin {
            actor: key_prefix.to_owned(),
            client_ip: self.client_ip,
            request_id: self.request_id.clone(),
        }
    }

    pub fn by(&self, caller: &Caller) -> AuditOrigin {
        match caller {
            Caller::Ops => self.by_ops(),
            Caller::Tenant(_, key_prefix) => self.by_key(key_prefix),
        }
    }
}

impl FromRequestParts<AppState> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Origin {
            client_ip: client_ip(parts, state),
            request_id: crate::routes::request_id(parts.extensions.get::<RequestId>()),
        })
    }
}

fn too_many_failures(wait: Duration) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_failed_authentications",
        "too many requests with a missing or unknown key came from this address; wait and retry with a valid key",
    );
    e.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
    e
}

/// Before any lookup: 429 while the caller's address is over its failure budget.
fn check_not_blocked(parts: &Parts, state: &AppState) -> Result<(), ApiError> {
    match client_ip(parts, state).and_then(|ip| state.failed_auth.blocked_for(ip)) {
        Some(wait) => Err(too_many_failures(wait)),
        None => Ok(()),
    }
}

/// Counts a failed authentication against the caller's address; answers `error`, or 429 once
/// the address is over its budget.
async fn failed(parts: &Parts, state: &AppState, error: ApiError) -> ApiError {
    let Some(ip) = client_ip(parts, state) else {
        return error;
    };
    let took = tokio::time::timeout(
        Duration::from_millis(100),
        state
            .limiter
            .take(&format!("authfail:{ip}"), state.config.auth_failure_rate),
    )
    .await;
    match took {
        Ok(Ok(Some(wait))) => {
            tracing::warn!(client_ip = %ip, "too many failed authentications from one address; refusing it for a while");
            state.failed_auth.block(ip, wait);
            too_many_failures(wait)
        }
        _ => error,
    }
}

/// A caller authenticated with a live tenant API key.
pub struct Tenant {
    pub tenant: TenantRow,
    pub key_prefix: String,
}

/// A caller authenticated with the ops token.
pub struct Ops;

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let mut headers = parts
        .headers
        .get_all(axum::http::header::AUTHORIZATION)
        .iter();
    let header = headers
        .next()
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <key>` header"))?;
    if headers.next().is_some() {
        // Which one would count is anyone's guess (a proxy may pick another): refuse both.
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_header",
            "send one Authorization header, not several",
        )
        .field("Authorization"));
    }
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

fn is_ops_token(state: &AppState, token: &str) -> bool {
    state
        .config
        .ops_token
        .as_ref()
        .is_some_and(|ops| herald_core::domain::secrets_match(ops.expose(), token))
}

/// Whom a bearer token names, rate-limited already: the ops token ("ops") or a tenant key
/// (its own bucket).
enum Identified {
    Ops,
    Key {
        tenant: Box<TenantRow>,
        key_prefix: String,
    },
}

/// The request's bearer token, unless its address is blocked for failing too often (429) or it
/// has none that can be used (401, counted as a failure).
async fn token<'p>(parts: &'p Parts, state: &AppState) -> Result<&'p str, ApiError> {
    check_not_blocked(parts, state)?;
    match bearer(parts) {
        Ok(token) => Ok(token),
        Err(e) => Err(failed(parts, state, e).await),
    }
}

/// Whom `token` names, rate-limited in its bucket; `None` when it names nobody.
async fn identify(state: &AppState, token: &str) -> Result<Option<Identified>, ApiError> {
    if is_ops_token(state, token) {
        rate_limit(state, "ops").await?;
        return Ok(Some(Identified::Ops));
    }
    let Some((tenant, key_prefix)) = state.keys.authenticate(token).await? else {
        return Ok(None);
    };
    rate_limit(state, &format!("api:{key_prefix}")).await?;
    tracing::Span::current().record("tenant_id", tenant.id.as_str());
    if tenant.suspended {
        return Err(ApiError::forbidden(
            "tenant_suspended",
            "this tenant is suspended: its keys are refused until the operator lifts the suspension",
        ));
    }
    Ok(Some(Identified::Key {
        tenant: Box::new(tenant),
        key_prefix,
    }))
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = token(parts, state).await?;
        match identify(state, token).await? {
            Some(Identified::Key { tenant, key_prefix }) => Ok(Tenant {
                tenant: *tenant,
                key_prefix,
            }),
            Some(Identified::Ops) => Err(ApiError::forbidden(
                "forbidden",
                "the ops token cannot be used on tenant routes; use a tenant API key",
            )),
            None => {
                let e = ApiError::unauthorized("unknown or revoked API key");
                Err(failed(parts, state, e).await)
            }
        }
    }
}

/// `HERALD_API_RATE` per key (`bucket`): 429 with `Retry-After` past it. The limit must
/// never take the API down with it, so an unreachable Redis lets the request through.
async fn rate_limit(state: &AppState, bucket: &str) -> Result<(), ApiError> {
    let rate = state.config.api_rate;
    let took = tokio::time::timeout(
        std::time::Duration::from_millis(100),
        state.limiter.take(bucket, rate),
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
        let token = token(parts, state).await?;
        if state.config.ops_token.is_none() {
            return Err(ApiError::forbidden(
                "admin_disabled",
                "admin routes are disabled: HERALD_OPS_TOKEN is not set on this server",
            ));
        }
        match identify(state, token).await? {
            Some(Identified::Ops) => Ok(Ops),
            Some(Identified::Key { .. }) => Err(ApiError::forbidden(
                "forbidden",
                "tenant API keys cannot use admin routes",
            )),
            None => {
                let e = ApiError::unauthorized("unknown ops token");
                Err(failed(parts, state, e).await)
            }
        }
    }
}

/// Either kind of caller, on routes both may use (dead letters): ops see every tenant, a
/// tenant key sees its own.
pub enum Caller {
    Ops,
    /// The tenant and the prefix of the key used.
    Tenant(Box<TenantRow>, String),
}

impl Caller {
    /// The tenant whose data this caller may see; `None` for ops (all of it).
    pub fn scope(&self) -> Option<&str> {
        match self {
            Caller::Ops => None,
            Caller::Tenant(t, _) => Some(&t.id),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = token(parts, state).await?;
        match identify(state, token).await? {
            Some(Identified::Ops) => Ok(Caller::Ops),
            Some(Identified::Key { tenant, key_prefix }) => Ok(Caller::Tenant(tenant, key_prefix)),
            None => {
                let e = ApiError::unauthorized("unknown or revoked API key");
                Err(failed(parts, state, e).await)
            }
        }
    }
}
