//! Logging in and out, and the session every other page needs (see
//! [`herald_core::services::ops_sessions`]).

use axum::{
    Form,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
pub use herald_core::services::ops_sessions::Session;
use herald_core::services::ops_sessions::{self, SESSION_HOURS};
use maud::html;
use serde::Deserialize;

use super::layout::{page, refused, unavailable};
use crate::{auth::ClientIp, state::AppState};

const COOKIE: &str = "herald_ops";

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The caller's live session, if any; a database that does not answer is a 503 page.
#[allow(clippy::result_large_err)] // the page is the rare path, and answered at once
pub async fn session(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, Response> {
    let (Some(id), Some(token)) = (cookie_value(headers), state.config.ops_token.as_ref()) else {
        return Ok(None);
    };
    ops_sessions::find(&state.db, &id, token.expose())
        .await
        .map_err(unavailable)
}

/// The session of a page's caller, or the answer to give instead (to the login page, or 503).
#[allow(clippy::result_large_err)]
pub async fn required(state: &AppState, headers: &HeaderMap) -> Result<Session, Response> {
    match session(state, headers).await? {
        Some(s) => Ok(s),
        None => Err(super::layout::to_login()),
    }
}

/// A form that only carries the CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    pub csrf: Option<String>,
}

/// Runs an action only for a logged-in caller whose form carries its session's CSRF token.
#[allow(clippy::result_large_err)] // a refusal is the rare path, and answered at once
pub async fn guard(
    state: &AppState,
    headers: &HeaderMap,
    csrf: Option<&str>,
) -> Result<Session, Response> {
    let Some(s) = session(state, headers).await? else {
        return Err(refused("You are not logged in."));
    };
    if !ops_sessions::csrf_ok(&s, csrf) {
        return Err(refused(
            "This form is stale or did not come from this dashboard (invalid CSRF token). Go back, reload and try again.",
        ));
    }
    Ok(s)
}

pub async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Ok(Some(_)) = session(&state, &headers).await {
        return Redirect::to("/ops").into_response();
    }
    login_form(None).into_response()
}

fn login_form(error: Option<&str>) -> Html<String> {
    page(
        "Log in",
        None,
        html! {
            div.card {
                h1 { "Log in" }
                @if let Some(e) = error { p.error { (e) } }
                form method="post" action="/ops/login" {
                    p {
                        label { "Ops token" br;
                            input.wide type="password" name="token" autocomplete="current-password" autofocus;
                        }
                    }
                    button #login type="submit" { "Log in" }
                }
                p.muted { "The token is " code { "HERALD_OPS_TOKEN" } " of this deployment." }
            }
        },
    )
}

/// A login locked after repeated failures from one address: 429 with `Retry-After`.
fn login_locked(wait: std::time::Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        login_form(Some(&format!(
            "Too many failed logins from this address. Try again in {secs} s."
        ))),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

/// Checks the ops token. After five failures from one address the login backs off: locked
/// for 1 s, then twice as long per further failure, up to 15 minutes (shared by every API
/// process through Redis; an unreachable Redis does not stop a login).
pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Form(form): Form<LoginForm>,
) -> Response {
    let who = ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    if let Ok(Some(wait)) = state.limiter.login_locked(&who).await {
        return login_locked(wait);
    }
    let Some(ops) = state.config.ops_token.as_ref() else {
        return (
            StatusCode::FORBIDDEN,
            login_form(Some(
                "The dashboard is disabled: HERALD_OPS_TOKEN is not set.",
            )),
        )
            .into_response();
    };
    if !herald_core::domain::secrets_match(ops.expose(), form.token.trim()) {
        tracing::warn!(client_ip = %who, "failed dashboard login");
        if let Ok(Some(wait)) = state.limiter.login_failed(&who).await {
            return login_locked(wait);
        }
        return (
            StatusCode::UNAUTHORIZED,
            login_form(Some("That is not the ops token.")),
        )
            .into_response();
    }
    if let Err(e) = state.limiter.login_succeeded(&who).await {
        tracing::debug!(error = %e, "could not clear failed logins");
    }
    let id = match ops_sessions::start(&state.db, ops.expose()).await {
        Ok(id) => id,
        Err(e) => return unavailable(e),
    };
    let secure = if state.config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={id}; Path=/ops; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_HOURS * 3600
    );
    let mut response = Redirect::to("/ops").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let s = match guard(&state, &headers, form.csrf.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    // The session ends here for every copy of its cookie.
    if let Err(e) = ops_sessions::end(&state.db, &s).await {
        return unavailable(e);
    }
    let mut response = Redirect::to("/ops/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("herald_ops=; Path=/ops; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}
