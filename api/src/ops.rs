//! `/ops`: the dashboard for ops people. Server-rendered HTML, no JavaScript, no build step.
//!
//! Logging in with the ops token starts a session kept in Postgres: the HttpOnly,
//! SameSite=Strict cookie carries a random id of which only the hash is stored, so every API
//! process knows it, logging out ends it everywhere at once (a copied cookie stops working),
//! and changing the ops token ends every session. Every action is a POST carrying the
//! session's CSRF token; a bulk replay shows what it will do and asks for confirmation first.
//! Every answer under `/ops` forbids scripts, framing, sniffing and caching; notices are the
//! dashboard's own, by code; a database that does not answer is a 503 page, never its error.

use std::collections::HashMap;

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use herald_core::{
    domain::constant_time_eq,
    services::dead_letters::{self as replays, Replay},
    store::{
        dead_letters::{self, DeadLetterFilter, DeadLetterRow},
        messages,
    },
};
use sha2::{Digest, Sha256};

use crate::{auth::ClientIp, state::AppState, views::time};

const COOKIE: &str = "herald_ops";
/// How long a session lasts.
const SESSION_HOURS: i64 = 12;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/assets/ops.css", get(stylesheet))
        .merge(pages())
}

fn pages() -> Router<AppState> {
    Router::new()
        .route("/ops", get(queues_page))
        .route("/ops/login", get(login_page).post(login))
        .route("/ops/logout", post(logout))
        .route("/ops/dead-letters", get(dead_letters_page))
        .route("/ops/dead-letters/replay", post(bulk_replay))
        .route("/ops/dead-letters/{id}", get(dead_letter_page))
        .route("/ops/dead-letters/{id}/replay", post(replay_one))
        .route("/ops/dead-letters/{id}/delete", post(delete_one))
        .route("/ops/messages", get(message_page))
        .layer(axum::middleware::from_fn(security_headers))
}

// ----- sessions and CSRF --------------------------------------------------------------------

/// A logged-in caller.
struct Session {
    /// The hash of the cookie's id, as stored.
    id_hash: Vec<u8>,
    csrf: String,
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256(data: &str) -> Vec<u8> {
    Sha256::digest(data.as_bytes()).to_vec()
}

/// The fingerprint of the ops token a session was started with: a new token ends it.
fn token_hash(state: &AppState) -> Option<Vec<u8>> {
    state.config.ops_token.as_ref().map(|t| sha256(t.expose()))
}

/// Starts a session; returns the cookie's value.
async fn new_session(state: &AppState) -> Result<Option<String>, sqlx::Error> {
    let Some(token_hash) = token_hash(state) else {
        return Ok(None);
    };
    let id = random_token();
    sqlx::query("DELETE FROM ops_sessions WHERE expires_at < now()")
        .execute(&state.db)
        .await?;
    sqlx::query(
        "INSERT INTO ops_sessions (id_hash, csrf, token_hash, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(hours => $4))",
    )
    .bind(sha256(&id))
    .bind(random_token())
    .bind(token_hash)
    .bind(SESSION_HOURS as i32)
    .execute(&state.db)
    .await?;
    Ok(Some(id))
}

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
async fn session(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, Response> {
    let (Some(value), Some(token_hash)) = (cookie_value(headers), token_hash(state)) else {
        return Ok(None);
    };
    if value.len() > 128 {
        return Ok(None);
    }
    let id_hash = sha256(&value);
    let csrf: Option<String> = sqlx::query_scalar(
        "SELECT csrf FROM ops_sessions WHERE id_hash = $1 AND token_hash = $2 AND expires_at > now()",
    )
    .bind(&id_hash)
    .bind(token_hash)
    .fetch_optional(&state.db)
    .await
    .map_err(unavailable)?;
    Ok(csrf.map(|csrf| Session { id_hash, csrf }))
}

fn csrf_ok(session: &Session, form: &HashMap<String, String>) -> bool {
    form.get("csrf")
        .is_some_and(|given| constant_time_eq(session.csrf.as_bytes(), given.as_bytes()))
}

fn to_login() -> Response {
    Redirect::to("/ops/login").into_response()
}

fn refused(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        page(
            "Refused",
            None,
            &format!("<p class=\"error\">{}</p>", esc(why)),
        ),
    )
        .into_response()
}

/// The page for a database (or Redis) that did not answer: what happened in plain words,
/// never the driver's text, which is logged.
fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "the dashboard could not reach the database");
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        page(
            "Unavailable",
            None,
            "<h1>The database is not answering</h1><p>Herald's dashboard cannot reach Postgres right now. Messages already accepted are safe; try again in a few seconds.</p>",
        ),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// Runs an action only for a logged-in caller with a valid CSRF token.
#[allow(clippy::result_large_err)] // a refusal is the rare path, and answered at once
async fn guard(
    state: &AppState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<Session, Response> {
    let Some(s) = session(state, headers).await? else {
        return Err(refused("You are not logged in."));
    };
    if !csrf_ok(&s, form) {
        return Err(refused(
            "This form is stale or did not come from this dashboard (invalid CSRF token). Go back, reload and try again.",
        ));
    }
    Ok(s)
}

/// Every answer under `/ops`: no script may run (not even inline), no page may frame it, no
/// type is guessed, nothing is cached.
pub async fn security_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The dashboard's stylesheet, outside `/ops` so browsers may cache it.
async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        STYLE,
    )
        .into_response()
}

// ----- HTML -----------------------------------------------------------------------------------

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const STYLE: &str = "
:root { --ink:#1d2330; --muted:#667085; --line:#e4e7ec; --bg:#f7f8fa; --accent:#2f5bea; --bad:#c0362c; --good:#1f8a4c; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif; color:var(--ink); background:var(--bg); }
header { background:#111827; color:#fff; padding:12px 28px; display:flex; align-items:center; gap:28px; }
header .brand { font-weight:700; letter-spacing:.5px; }
header nav a { color:#d0d5dd; text-decoration:none; margin-right:18px; }
header nav a:hover { color:#fff; }
header form { margin-left:auto; }
main { max-width:1120px; margin:28px auto; padding:0 28px; }
h1 { font-size:22px; margin:0 0 18px; }
h2 { font-size:17px; margin:28px 0 10px; }
table { width:100%; border-collapse:collapse; background:#fff; border:1px solid var(--line); border-radius:8px; overflow:hidden; }
th, td { text-align:left; padding:9px 12px; border-bottom:1px solid var(--line); vertical-align:top; overflow-wrap:anywhere; }
td code { word-break:break-all; }
th { background:#f2f4f7; font-size:12px; text-transform:uppercase; letter-spacing:.4px; color:var(--muted); }
td.num { text-align:right; font-variant-numeric: tabular-nums; }
tr:last-child td { border-bottom:0; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size:13px; }
pre { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px; overflow:auto; }
form.inline { display:inline; }
.filters { display:flex; gap:10px; align-items:end; flex-wrap:wrap; background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px; margin-bottom:16px; }
.filters label { font-size:12px; color:var(--muted); display:flex; flex-direction:column; gap:4px; }
input, select { font:inherit; padding:6px 8px; border:1px solid #cfd4dc; border-radius:6px; background:#fff; }
button { font:inherit; padding:6px 14px; border-radius:6px; border:1px solid var(--accent); background:var(--accent); color:#fff; cursor:pointer; }
button.secondary { background:#fff; color:var(--accent); }
button.danger { background:var(--bad); border-color:var(--bad); }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; background:#eef2ff; color:#3538cd; }
.badge.bad { background:#fef3f2; color:var(--bad); }
.badge.good { background:#ecfdf3; color:var(--good); }
.muted { color:var(--muted); }
.error { color:var(--bad); }
.notice { background:#ecfdf3; border:1px solid #abefc6; color:#085d3a; padding:10px 14px; border-radius:8px; margin-bottom:16px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:16px 20px; max-width:420px; margin:60px auto; }
.actions { display:flex; gap:10px; margin:14px 0; }
";

fn page(title: &str, session: Option<&Session>, body: &str) -> Html<String> {
    let nav = match session {
        Some(s) => format!(
            "<nav><a href=\"/ops\">Queues</a><a href=\"/ops/dead-letters\">Dead letters</a><a href=\"/ops/messages\">Messages</a></nav>\
             <form method=\"post\" action=\"/ops/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button class=\"secondary\" type=\"submit\">Log out</button></form>",
            esc(&s.csrf)
        ),
        None => String::new(),
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Herald ops</title><link rel=\"stylesheet\" href=\"/assets/ops.css\"></head>\
         <body><header><span class=\"brand\">Herald ops</span>{nav}</header><main>{body}</main></body></html>",
        esc(title)
    ))
}

fn fmt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(time).unwrap_or_else(|| "—".to_owned())
}

fn status_badge(status: &str) -> String {
    let class = match status {
        "sent" | "delivered" => "good",
        "failed" | "dead" | "undelivered" | "expired" => "bad",
        _ => "",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(status))
}

// ----- login ------------------------------------------------------------------------------------

async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Ok(Some(_)) = session(&state, &headers).await {
        return Redirect::to("/ops").into_response();
    }
    login_form(None).into_response()
}

fn login_form(error: Option<&str>) -> Html<String> {
    let error = error
        .map(|e| format!("<p class=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    page(
        "Log in",
        None,
        &format!(
            "<div class=\"card\"><h1>Log in</h1>{error}\
             <form method=\"post\" action=\"/ops/login\">\
             <p><label>Ops token<br><input type=\"password\" name=\"token\" autocomplete=\"current-password\" style=\"width:100%\" autofocus></label></p>\
             <button type=\"submit\" id=\"login\">Log in</button></form>\
             <p class=\"muted\">The token is <code>HERALD_OPS_TOKEN</code> of this deployment.</p></div>"
        ),
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

/// Checks the ops token. After five failures from one address the login backs off: locked
/// for 1 s, then twice as long per further failure, up to 15 minutes (shared by every API
/// process through Redis; an unreachable Redis does not stop a login).
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Form(form): Form<HashMap<String, String>>,
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
    let given = form.get("token").map(|t| t.trim()).unwrap_or_default();
    if !herald_core::domain::secrets_match(ops.expose(), given) {
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
    let value = match new_session(&state).await {
        Ok(Some(value)) => value,
        Ok(None) => {
            return (
                StatusCode::FORBIDDEN,
                login_form(Some("The dashboard is disabled.")),
            )
                .into_response();
        }
        Err(e) => return unavailable(e),
    };
    let secure = if state.config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={value}; Path=/ops; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_HOURS * 3600
    );
    let mut response = Redirect::to("/ops").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let s = match guard(&state, &headers, &form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    // The session ends here for every copy of its cookie.
    if let Err(e) = sqlx::query("DELETE FROM ops_sessions WHERE id_hash = $1")
        .bind(&s.id_hash)
        .execute(&state.db)
        .await
    {
        return unavailable(e);
    }
    let mut response = Redirect::to("/ops/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("herald_ops=; Path=/ops; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

// ----- pages ------------------------------------------------------------------------------------

async fn queues_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let s = match session(&state, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return to_login(),
        Err(page) => return page,
    };
    let mut rows = String::new();
    for q in [&state.queue, &state.replies] {
        match q.stats().await {
            Ok(st) => rows.push_str(&format!(
                "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&st.name), st.pending, st.scheduled, st.running, st.dead, st.completed_last_minute, st.failed_last_minute
            )),
            Err(e) => {
                tracing::warn!(queue = q.name(), error = %e, "the dashboard could not read queue counts");
                rows.push_str(&format!(
                    "<tr><td><code>{}</code></td><td colspan=\"6\" class=\"error\">Redis is not answering; the counts are unknown right now.</td></tr>",
                    esc(q.name())
                ))
            }
        }
    }
    let unreplayed = dead_letters::list(
        &state.db,
        &DeadLetterFilter {
            unreplayed: true,
            ..Default::default()
        },
        None,
        99,
    )
    .await
    .map(|r| r.len())
    .unwrap_or(0);
    let more = if unreplayed > 99 {
        "100+".to_owned()
    } else {
        unreplayed.to_string()
    };
    let body = format!(
        "<h1>Queues</h1><table id=\"queues\"><thead><tr><th>Queue</th><th>Pending</th><th>Scheduled</th><th>Running</th><th>Dead</th><th>Completed / min</th><th>Failed / min</th></tr></thead><tbody>{rows}</tbody></table>\
         <h2>Dead letters</h2><p><a href=\"/ops/dead-letters\">{more} waiting for a decision</a> (replay or delete).</p>"
    );
    page("Queues", Some(&s), &body).into_response()
}

fn filter_from(q: &HashMap<String, String>) -> (DeadLetterFilter, String) {
    let get = |k: &str| {
        q.get(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let parse = |k: &str| {
        get(k)
            .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let filter = DeadLetterFilter {
        tenant_id: get("tenant_id"),
        ids: None,
        queue: get("queue"),
        reason: get("reason").filter(|r| r == "exhausted" || r == "rejected"),
        since: parse("since"),
        until: parse("until"),
        unreplayed: get("replayed").is_none(),
    };
    let description = [
        filter.queue.as_ref().map(|v| format!("queue {v}")),
        filter.tenant_id.as_ref().map(|v| format!("tenant {v}")),
        filter.reason.as_ref().map(|v| format!("reason {v}")),
        filter.since.map(|v| format!("since {}", time(v))),
        filter.until.map(|v| format!("until {}", time(v))),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    (filter, description)
}

fn hidden_filter(q: &HashMap<String, String>) -> String {
    ["queue", "tenant_id", "reason", "since", "until"]
        .iter()
        .filter_map(|k| q.get(*k).filter(|v| !v.trim().is_empty()).map(|v| (k, v)))
        .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(v)))
        .collect()
}

fn last_error(d: &DeadLetterRow) -> String {
    d.errors
        .as_array()
        .and_then(|e| e.last())
        .and_then(|e| e["error"].as_str())
        .map(|e| herald_core::domain::truncate(e, 90))
        .unwrap_or_default()
}

async fn dead_letters_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = match session(&state, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return to_login(),
        Err(page) => return page,
    };
    let (filter, description) = filter_from(&q);
    let rows = match dead_letters::list(&state.db, &filter, q.get("cursor").map(String::as_str), 50)
        .await
    {
        Ok(rows) => rows,
        Err(e) => return unavailable(e),
    };
    let more = rows.len() > 50;
    let mut table = String::new();
    for d in rows.iter().take(50) {
        table.push_str(&format!(
            "<tr data-id=\"{id}\"><td><a href=\"/ops/dead-letters/{id}\"><code>{id}</code></a></td><td>{queue}</td><td><code>{tenant}</code></td><td><code>{message}</code></td>\
             <td><span class=\"badge bad\">{reason}</span></td><td class=\"num\">{attempts}</td><td>{dead_at}</td><td class=\"muted\">{error}</td></tr>",
            id = esc(&d.id),
            queue = esc(&d.queue),
            tenant = esc(&d.tenant_id),
            message = esc(d.message_id.as_deref().unwrap_or("—")),
            reason = esc(&d.reason),
            attempts = d.attempts,
            dead_at = fmt_time(Some(d.dead_at)),
            error = esc(&last_error(d)),
        ));
    }
    if table.is_empty() {
        table =
            "<tr><td colspan=\"8\" class=\"muted\" id=\"empty\">No dead letters match.</td></tr>"
                .to_owned();
    }
    let value = |k: &str| esc(q.get(k).map(String::as_str).unwrap_or_default());
    let selected = |r: &str| {
        if q.get("reason").map(String::as_str) == Some(r) {
            " selected"
        } else {
            ""
        }
    };
    let next = if more {
        rows.get(49)
            .map(|l| {
                let mut params: Vec<String> = q
                    .iter()
                    .filter(|(k, _)| k.as_str() != "cursor")
                    .map(|(k, v)| format!("{}={}", url_escape(k), url_escape(v)))
                    .collect();
                params.push(format!("cursor={}", url_escape(&l.id)));
                format!(
                    "<p><a href=\"/ops/dead-letters?{}\">Next page →</a></p>",
                    params.join("&")
                )
            })
            .unwrap_or_default()
    } else {
        String::new()
    };
    let scope = if description.is_empty() {
        "every dead letter not yet replayed".to_owned()
    } else {
        format!("those matching {description}")
    };
    let notice = notice_html(&q);
    let body = format!(
        "<h1>Dead letters</h1>{notice}\
         <form class=\"filters\" method=\"get\" action=\"/ops/dead-letters\">\
         <label>Queue<input name=\"queue\" value=\"{queue}\" placeholder=\"deliveries\"></label>\
         <label>Tenant<input name=\"tenant_id\" value=\"{tenant}\" placeholder=\"ten_…\"></label>\
         <label>Reason<select name=\"reason\"><option value=\"\">any</option><option{ex}>exhausted</option><option{rj}>rejected</option></select></label>\
         <label>Since<input name=\"since\" value=\"{since}\" placeholder=\"2026-11-21T00:00:00Z\"></label>\
         <label><span><input type=\"checkbox\" name=\"replayed\" value=\"1\"{shown}> include replayed</span></label>\
         <button type=\"submit\">Filter</button></form>\
         <table id=\"dead-letters\"><thead><tr><th>Id</th><th>Queue</th><th>Tenant</th><th>Message</th><th>Reason</th><th>Attempts</th><th>Dead at</th><th>Last error</th></tr></thead><tbody>{table}</tbody></table>{next}\
         <h2>Bulk replay</h2><form method=\"post\" action=\"/ops/dead-letters/replay\">{hidden}<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <p>Replay {scope}. You will be asked to confirm.</p><button type=\"submit\" class=\"secondary\" id=\"bulk-replay\">Replay these…</button></form>",
        queue = value("queue"),
        tenant = value("tenant_id"),
        since = value("since"),
        ex = selected("exhausted"),
        rj = selected("rejected"),
        shown = if q.contains_key("replayed") {
            " checked"
        } else {
            ""
        },
        hidden = hidden_filter(&q),
        csrf = esc(&s.csrf),
        scope = esc(&scope),
        notice = notice,
    );
    page("Dead letters", Some(&s), &body).into_response()
}

async fn dead_letter_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = match session(&state, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return to_login(),
        Err(page) => return page,
    };
    let d = match dead_letters::get(&state.db, &id, None).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                page("Not found", Some(&s), "<p>No such dead letter.</p>"),
            )
                .into_response();
        }
        Err(e) => return unavailable(e),
    };
    let notice = notice_html(&q);
    let errors: String = d
        .errors
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    format!(
                        "<tr><td>{}</td><td>{}</td></tr>",
                        esc(e["at"].as_str().unwrap_or_default()),
                        esc(e["error"].as_str().unwrap_or_default())
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let message = d
        .message_id
        .as_deref()
        .map(|m| {
            format!(
                "<a href=\"/ops/messages?id={}\"><code>{}</code></a>",
                url_escape(m),
                esc(m)
            )
        })
        .unwrap_or_else(|| "—".to_owned());
    let token = esc(&s.csrf);
    let body = format!(
        "<h1>Dead letter <code>{id}</code></h1>{notice}\
         <table><tbody><tr><th>Queue</th><td>{queue}</td></tr><tr><th>Tenant</th><td><code>{tenant}</code></td></tr>\
         <tr><th>Message</th><td>{message}</td></tr><tr><th>Reason</th><td><span class=\"badge bad\">{reason}</span></td></tr>\
         <tr><th>Attempts</th><td>{attempts}</td></tr><tr><th>Dead at</th><td>{dead_at}</td></tr><tr><th>Replayed at</th><td id=\"replayed-at\">{replayed}</td></tr></tbody></table>\
         <div class=\"actions\">\
         <form class=\"inline\" method=\"post\" action=\"/ops/dead-letters/{id}/replay\"><input type=\"hidden\" name=\"csrf\" value=\"{token}\"><button type=\"submit\" id=\"replay\">Replay</button></form>\
         <form class=\"inline\" method=\"post\" action=\"/ops/dead-letters/{id}/delete\"><input type=\"hidden\" name=\"csrf\" value=\"{token}\"><button type=\"submit\" class=\"danger\" id=\"delete\">Delete</button></form></div>\
         <h2>Errors, oldest first</h2><table><thead><tr><th>At</th><th>Error</th></tr></thead><tbody>{errors}</tbody></table>\
         <h2>Payload</h2><pre>{payload}</pre>",
        id = esc(&d.id),
        queue = esc(&d.queue),
        tenant = esc(&d.tenant_id),
        reason = esc(&d.reason),
        attempts = d.attempts,
        dead_at = fmt_time(Some(d.dead_at)),
        replayed = fmt_time(d.replayed_at),
        payload = esc(&serde_json::to_string_pretty(&d.payload).unwrap_or_default()),
    );
    page("Dead letter", Some(&s), &body).into_response()
}

/// What the dashboard says after an action, by code. Only the dashboard's own sentences are
/// shown, with nothing from the query string but an id of the right shape, a count or a known
/// status, so a link cannot make the dashboard say anything else.
fn notice_html(q: &HashMap<String, String>) -> String {
    let id = q
        .get("id")
        .filter(|i| herald_core::domain::is_id("dl", i))
        .map(|i| esc(i));
    let n = q.get("n").and_then(|n| n.parse::<u64>().ok());
    let status = q
        .get("status")
        .and_then(|s| herald_core::domain::MessageStatus::parse(s))
        .map(|s| s.as_str());
    let text = match (q.get("notice").map(String::as_str), id, n, status) {
        (Some("replayed"), Some(id), _, _) => {
            format!("Replayed {id}: its message is queued again.")
        }
        (Some("expired"), _, _, _) => "Not replayed: the message has expired.".to_owned(),
        (Some("not_replayable"), _, _, Some(status)) => {
            format!("Not replayed: the message is {status} now.")
        }
        (Some("not_found"), _, _, _) => "No such dead letter.".to_owned(),
        (Some("deleted"), Some(id), _, _) => format!("Deleted {id}."),
        (Some("bulk_replayed"), _, Some(n), _) => format!("Replayed {n} dead letters."),
        (Some("failed"), _, _, _) => {
            "That could not be done: the database did not answer. Try again in a moment.".to_owned()
        }
        _ => return String::new(),
    };
    format!("<div class=\"notice\" id=\"notice\">{text}</div>")
}

/// Back to the list with a notice (see [`notice_html`]).
fn back_to_list(code: &str, params: &[(&str, String)]) -> Response {
    let mut url = format!("/ops/dead-letters?notice={code}");
    for (k, v) in params {
        url.push_str(&format!("&{k}={}", url_escape(v)));
    }
    Redirect::to(&url).into_response()
}

async fn replay_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = guard(&state, &headers, &form).await {
        return r;
    }
    match replays::replay(&state.db, &state.queue, &id, None).await {
        Ok(Replay::Replayed(_)) => back_to_list("replayed", &[("id", id)]),
        Ok(Replay::NotReplayable { expired: true, .. }) => back_to_list("expired", &[]),
        Ok(Replay::NotReplayable { status, .. }) => {
            back_to_list("not_replayable", &[("status", status.to_string())])
        }
        Ok(Replay::NotFound) => back_to_list("not_found", &[]),
        Err(e) => {
            tracing::warn!(error = %e, dead_letter = %id, "dashboard replay failed");
            back_to_list("failed", &[])
        }
    }
}

async fn delete_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(r) = guard(&state, &headers, &form).await {
        return r;
    }
    match dead_letters::delete(&state.db, &id, None).await {
        Ok(true) => back_to_list("deleted", &[("id", id)]),
        Ok(false) => back_to_list("not_found", &[]),
        Err(e) => {
            tracing::warn!(error = %e, dead_letter = %id, "dashboard delete failed");
            back_to_list("failed", &[])
        }
    }
}

/// A bulk replay: first a confirmation page saying how many it will replay, then the replay.
async fn bulk_replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let s = match guard(&state, &headers, &form).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (filter, description) = filter_from(&form);
    if form.get("confirm").map(String::as_str) == Some("yes") {
        return match replays::replay_matching(&state.db, &state.queue, &filter).await {
            Ok(n) => back_to_list("bulk_replayed", &[("n", n.to_string())]),
            Err(e) => {
                tracing::warn!(error = %e, "dashboard bulk replay failed");
                back_to_list("failed", &[])
            }
        };
    }
    let count = dead_letters::list(&state.db, &filter, None, 999)
        .await
        .map(|r| r.len())
        .unwrap_or(0);
    let count = if count > 999 {
        "more than 999".to_owned()
    } else {
        count.to_string()
    };
    let scope = if description.is_empty() {
        "every dead letter not yet replayed".to_owned()
    } else {
        format!("the dead letters matching {description}")
    };
    let body = format!(
        "<h1>Replay dead letters?</h1><p>This replays <strong id=\"count\">{count}</strong> of {scope}: each message starts a fresh run and is sent again.</p>\
         <div class=\"actions\"><form method=\"post\" action=\"/ops/dead-letters/replay\">{hidden}<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"confirm\" value=\"yes\">\
         <button type=\"submit\" id=\"confirm\">Yes, replay them</button></form><a href=\"/ops/dead-letters\">Cancel</a></div>",
        scope = esc(&scope),
        hidden = hidden_filter(&form),
        csrf = esc(&s.csrf),
    );
    page("Confirm replay", Some(&s), &body).into_response()
}

async fn message_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let s = match session(&state, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return to_login(),
        Err(page) => return page,
    };
    let id = q.get("id").map(|i| i.trim().to_owned()).unwrap_or_default();
    let mut body = format!(
        "<h1>Messages</h1><form class=\"filters\" method=\"get\" action=\"/ops/messages\"><label>Message id<input name=\"id\" value=\"{}\" placeholder=\"msg_…\" size=\"34\"></label><button type=\"submit\">Look up</button></form>",
        esc(&id)
    );
    if !id.is_empty() {
        match messages::get_any(&state.db, &id).await {
            Ok(Some(m)) => {
                let events: String = messages::events(&state.db, &id)
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| {
                        format!(
                            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                            fmt_time(Some(e.at)),
                            status_badge(&e.status),
                            esc(e.detail.as_deref().unwrap_or_default())
                        )
                    })
                    .collect();
                body.push_str(&format!(
                    "<table id=\"message\"><tbody><tr><th>Status</th><td id=\"status\">{status}</td></tr><tr><th>Tenant</th><td><code>{tenant}</code></td></tr>\
                     <tr><th>Channel</th><td>{channel}</td></tr><tr><th>To</th><td>{to}</td></tr><tr><th>Attempts</th><td>{attempts}</td></tr>\
                     <tr><th>Last error</th><td>{error}</td></tr><tr><th>Provider id</th><td><code>{provider}</code></td></tr><tr><th>Body</th><td>{text}</td></tr></tbody></table>\
                     <h2>Events, oldest first</h2><table id=\"events\"><thead><tr><th>At</th><th>Status</th><th>Detail</th></tr></thead><tbody>{events}</tbody></table>",
                    status = status_badge(&m.status),
                    tenant = esc(&m.tenant_id),
                    channel = esc(&m.channel),
                    to = esc(&m.to_addr),
                    attempts = m.attempts,
                    error = esc(m.last_error.as_deref().unwrap_or("—")),
                    provider = esc(m.provider_message_id.as_deref().unwrap_or("—")),
                    text = esc(&herald_core::domain::truncate(&m.body, 500)),
                ));
            }
            Ok(None) => body.push_str("<p class=\"muted\">No message with that id.</p>"),
            Err(e) => return unavailable(e),
        }
    }
    page("Messages", Some(&s), &body).into_response()
}
