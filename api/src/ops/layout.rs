//! The page every dashboard view is drawn in, and the small pieces they share.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::session::Session;
use crate::views::time;

/// A whole page: the header (with navigation and logging out, for a logged-in caller) around
/// `body`.
pub fn page(title: &str, session: Option<&Session>, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · Herald ops" }
                    link rel="stylesheet" href="/assets/ops.css";
                }
                body {
                    header {
                        span.brand { "Herald ops" }
                        @if let Some(s) = session {
                            nav {
                                a href="/ops" { "Queues" }
                                a href="/ops/dead-letters" { "Dead letters" }
                                a href="/ops/messages" { "Messages" }
                                a href="/ops/endpoints" { "Endpoints" }
                                a href="/ops/inbox" { "Inbox" }
                                a href="/ops/audit" { "Audit" }
                                a href="/ops/usage" { "Usage" }
                            }
                            form method="post" action="/ops/logout" {
                                input type="hidden" name="csrf" value=(s.csrf);
                                button.secondary type="submit" { "Log out" }
                            }
                        }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// A time as the API shows it, or a dash.
pub fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(time).unwrap_or_else(|| "—".to_owned())
}

/// A message status as a coloured badge.
pub fn status_badge(status: &str) -> Markup {
    let class = match status {
        "sent" | "delivered" => "badge good",
        "failed" | "dead" | "undelivered" | "expired" => "badge bad",
        _ => "badge",
    };
    html! { span class=(class) { (status) } }
}

pub fn to_login() -> Response {
    Redirect::to("/ops/login").into_response()
}

/// 403 with a sentence saying why.
pub fn refused(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        page("Refused", None, html! { p.error { (why) } }),
    )
        .into_response()
}

/// The page for a database that did not answer: what happened in plain words, never the
/// driver's text, which is logged.
pub fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "the dashboard could not reach the database");
    let body = html! {
        h1 { "The database is not answering" }
        p { "Herald's dashboard cannot reach Postgres right now. Messages already accepted are safe; try again in a few seconds." }
    };
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        page("Unavailable", None, body),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// A query value that was given (not absent, not blank).
pub fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Percent-encodes a value for a URL's query.
pub fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
