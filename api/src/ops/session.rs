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
use crate::{auth::Origin, state::AppState};

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
    csrf_checked(s, csrf)
}

/// The session, if the form carries its CSRF token; else the 403 page.
#[allow(clippy::result_large_err)]
fn csrf_checked(s: Session, csrf: Option<&str>) -> Result<Session, Response> {
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

/// The answer to a login while its address is locked out, if it is: what the limiter said
/// (an unreachable Redis does not stop a login).
fn lock_answer<E>(locked: Result<Option<std::time::Duration>, E>) -> Option<Response> {
    match locked {
        Ok(Some(wait)) => Some(login_locked(wait)),
        Ok(None) | Err(_) => None,
    }
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
    origin: Origin,
    Form(form): Form<LoginForm>,
) -> Response {
    let who = origin
        .client_ip
        .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    if let Some(locked) = lock_answer(state.limiter.login_locked(&who).await) {
        return locked;
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
        ops_sessions::login_failed(&state.db, &origin.by_ops(), "wrong_token").await;
        if let Some(locked) = lock_answer(state.limiter.login_failed(&who).await) {
            return locked;
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
    let id = match ops_sessions::start(&state.db, ops.expose(), &origin.by_ops()).await {
        Ok(id) => id,
        Err(e) => return unavailable(e),
    };
    let cookie = session_cookie(&id, &state.config.public_url);
    let mut response = Redirect::to("/ops").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// The cookie that carries a new session's id: sent only to the dashboard, out of scripts'
/// reach, never on another site's request, and only over TLS when the deployment has it.
fn session_cookie(id: &str, public_url: &str) -> String {
    let secure = if public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{COOKIE}={id}; Path=/ops; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_HOURS * 3600
    )
}

/// What logging out sets: the session cookie, emptied and expired, at the same path.
const LOGGED_OUT_COOKIE: &str = "herald_ops=; Path=/ops; HttpOnly; SameSite=Strict; Max-Age=0";

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
        HeaderValue::from_static(LOGGED_OUT_COOKIE),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use maud::html;

    use super::*;

    fn cookies(values: &[&[u8]]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        headers
    }

    fn session_with(csrf: &str) -> Session {
        Session {
            id_hash: vec![7; 32],
            csrf: csrf.to_owned(),
        }
    }

    async fn html_of(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// The attributes of a `Set-Cookie` value after the name and value, as written.
    fn attributes(cookie: &str) -> Vec<&str> {
        cookie.split(';').skip(1).map(str::trim).collect()
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_read_as_sent() {
        for header in [
            &b"herald_ops=abc"[..],
            b"theme=dark; herald_ops=abc; lang=en",
            b"theme=dark;herald_ops=abc",
            b"  herald_ops=abc  ; theme=dark",
            b"_ga=GA1.2.3; herald_ops=abc;",
        ] {
            assert_eq!(
                cookie_value(&cookies(&[header])).as_deref(),
                Some("abc"),
                "{}",
                String::from_utf8_lossy(header)
            );
        }
        // In a later Cookie header (HTTP/2 sends one per cookie), and past an unreadable one.
        assert_eq!(
            cookie_value(&cookies(&[b"theme=dark", b"herald_ops=abc"])).as_deref(),
            Some("abc")
        );
        assert_eq!(
            cookie_value(&cookies(&[b"theme=\xffdark", b"herald_ops=abc"])).as_deref(),
            Some("abc")
        );
        // Only the first `=` separates the name: base64 padding stays in the value.
        assert_eq!(
            cookie_value(&cookies(&[b"herald_ops=ab=="])).as_deref(),
            Some("ab==")
        );
    }

    #[test]
    fn without_a_cookie_of_exactly_that_name_there_is_no_session() {
        assert_eq!(cookie_value(&HeaderMap::new()), None);
        for header in [
            &b""[..],
            b"theme=dark; lang=en",
            b"herald_ops",
            b"herald_ops; theme=dark",
            b"xherald_ops=abc",
            b"herald_ops_old=abc",
            b"Herald_Ops=abc",
            b"theme=herald_ops=abc",
            b";;;",
        ] {
            assert_eq!(
                cookie_value(&cookies(&[header])),
                None,
                "{}",
                String::from_utf8_lossy(header)
            );
        }
        // An empty value is read as empty, which names no session.
        assert_eq!(
            cookie_value(&cookies(&[b"herald_ops="])).as_deref(),
            Some("")
        );
    }

    #[test]
    fn the_first_session_cookie_wins_when_the_name_repeats() {
        // Browsers send the cookie with the longest path first.
        assert_eq!(
            cookie_value(&cookies(&[b"herald_ops=first; herald_ops=second"])).as_deref(),
            Some("first")
        );
        assert_eq!(
            cookie_value(&cookies(&[b"herald_ops=first", b"herald_ops=second"])).as_deref(),
            Some("first")
        );
    }

    #[test]
    fn the_login_cookie_is_http_only_same_site_strict_for_ops_only_and_lasts_a_session() {
        let cookie = session_cookie("s3cr3t-id", "http://127.0.0.1:8080");
        assert!(cookie.starts_with("herald_ops=s3cr3t-id;"), "{cookie}");
        let attrs = attributes(&cookie);
        assert!(attrs.contains(&"HttpOnly"), "{cookie}");
        assert!(attrs.contains(&"SameSite=Strict"), "{cookie}");
        assert!(attrs.contains(&"Path=/ops"), "{cookie}");
        assert!(attrs.contains(&"Max-Age=43200"), "12 hours: {cookie}");
        assert!(
            !attrs.iter().any(|a| a.starts_with("Domain")),
            "a host-only cookie: {cookie}"
        );
        assert!(
            HeaderValue::from_str(&cookie).is_ok(),
            "the cookie must be sendable"
        );
    }

    #[test]
    fn the_login_cookie_is_secure_exactly_when_the_dashboard_is_served_over_https() {
        let secure = session_cookie("id", "https://herald.example.com");
        assert!(attributes(&secure).contains(&"Secure"), "{secure}");
        for url in ["http://127.0.0.1:8080", "http://herald.example.com"] {
            let plain = session_cookie("id", url);
            assert!(!attributes(&plain).contains(&"Secure"), "{plain}");
        }
    }

    #[test]
    fn logging_out_expires_the_same_cookie_the_login_set() {
        let set = session_cookie("id", "https://herald.example.com");
        let cleared = LOGGED_OUT_COOKIE;
        assert!(cleared.starts_with(&format!("{COOKIE}=;")), "{cleared}");
        assert!(attributes(cleared).contains(&"Max-Age=0"), "{cleared}");
        // A browser replaces a cookie only when name and path match.
        let path = |c: &str| {
            attributes(c)
                .into_iter()
                .find(|a| a.starts_with("Path="))
                .map(str::to_owned)
        };
        assert_eq!(path(cleared), path(&set));
    }

    #[tokio::test]
    async fn a_form_passes_only_with_its_own_sessions_csrf_token() {
        let token = "Zq3kG1wz1l2Z9Jb8uXbP1q1c6Yb4tQyQyV1c0eQ5fAs";
        let s = session_with(token);
        let passed = csrf_checked(s.clone(), Some(token)).unwrap();
        assert_eq!(passed.id_hash, s.id_hash);

        let other_sessions = "Xq3kG1wz1l2Z9Jb8uXbP1q1c6Yb4tQyQyV1c0eQ5fAs";
        let last_changed = &format!("{}t", &token[..token.len() - 1]);
        let refused_tokens = [
            None,
            Some(""),
            Some(other_sessions),
            Some(&token[..token.len() - 1]),
            Some(last_changed.as_str()),
            Some(&format!("{token}x")),
            Some(&format!(" {token}")),
            Some(&token.to_lowercase()),
        ];
        for given in refused_tokens {
            let refusal = csrf_checked(s.clone(), given).unwrap_err();
            assert_eq!(refusal.status(), StatusCode::FORBIDDEN, "{given:?}");
            let page = html_of(refusal).await;
            assert!(page.contains("invalid CSRF token"), "{page}");
            assert!(
                !page.contains(token),
                "a refusal never shows the token: {page}"
            );
        }
    }

    #[test]
    fn a_logged_in_page_carries_its_sessions_csrf_token_in_the_logout_form() {
        let s = session_with("tok\"en<");
        let logged_in = page("Queues", Some(&s), html! { p { "hi" } }).0;
        assert!(
            logged_in.contains(r#"<input type="hidden" name="csrf" value="tok&quot;en&lt;">"#),
            "{logged_in}"
        );
        let anonymous = page("Log in", None, html! {}).0;
        assert!(!anonymous.contains(r#"name="csrf""#), "{anonymous}");
    }

    #[tokio::test]
    async fn a_locked_login_is_429_with_retry_after_in_whole_seconds_rounded_up() {
        for (wait, secs) in [
            (Duration::from_millis(1), "1"),
            (Duration::from_millis(1000), "1"),
            (Duration::from_millis(1001), "2"),
            (Duration::from_secs(900), "900"),
        ] {
            let response = lock_answer::<()>(Ok(Some(wait))).expect("locked");
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(response.headers()[header::RETRY_AFTER], secs, "{wait:?}");
            let page = html_of(response).await;
            assert!(page.contains(&format!("Try again in {secs} s.")), "{page}");
            assert!(
                page.contains(r#"name="token""#),
                "the form stays to try again"
            );
        }
    }

    #[test]
    fn a_login_is_locked_only_when_the_limiter_says_so() {
        assert!(lock_answer::<()>(Ok(None)).is_none());
        assert!(
            lock_answer(Err("redis is down")).is_none(),
            "an unreachable Redis does not stop a login"
        );
        assert!(lock_answer::<()>(Ok(Some(Duration::from_secs(2)))).is_some());
    }

    #[tokio::test]
    async fn the_login_form_escapes_its_error_message() {
        let page = login_form(Some("<script>alert(1)</script> & \"quoted\"")).0;
        assert!(!page.contains("<script>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quoted&quot;"),
            "{page}"
        );
        let clean = login_form(None).0;
        assert!(!clean.contains(r#"class="error""#), "{clean}");
        assert!(clean.contains(r#"action="/ops/login""#), "{clean}");
        assert!(clean.contains(r#"type="password""#), "{clean}");
    }
}
