//! `/ops`: the dashboard for ops people. Server-rendered HTML from compile-checked,
//! auto-escaping templates (maud), no JavaScript, no build step.
//!
//! Logging in with the ops token starts a session kept in Postgres (see [`session`]). Every
//! action is a POST carrying the session's CSRF token; a bulk replay shows what it will do and
//! asks for confirmation first. Every answer under `/ops` forbids scripts, framing, sniffing and
//! caching; notices are the dashboard's own, by code; a database that does not answer is a 503
//! page, never its error. The pages read through the services, like the API.

mod audit;
mod dead_letters;
mod endpoints;
mod inbox;
mod layout;
mod messages;
mod queues;
mod session;
mod usage;

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};

use crate::state::AppState;

/// The dashboard's one stylesheet.
const STYLE: &str = include_str!("style.css");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/assets/ops.css", get(stylesheet))
        .merge(pages())
}

fn pages() -> Router<AppState> {
    Router::new()
        .route("/ops", get(queues::overview))
        .route("/ops/login", get(session::login_page).post(session::login))
        .route("/ops/logout", post(session::logout))
        .route("/ops/dead-letters", get(dead_letters::list))
        .route("/ops/dead-letters/replay", post(dead_letters::bulk_replay))
        .route("/ops/dead-letters/{id}", get(dead_letters::detail))
        .route(
            "/ops/dead-letters/{id}/replay",
            post(dead_letters::replay_one),
        )
        .route(
            "/ops/dead-letters/{id}/delete",
            post(dead_letters::delete_one),
        )
        .route("/ops/messages", get(messages::lookup))
        .route("/ops/endpoints", get(endpoints::list))
        .route("/ops/endpoints/{id}", get(endpoints::detail))
        .route("/ops/events/{id}/redeliver", post(endpoints::redeliver))
        .route("/ops/inbox", get(inbox::list))
        .route("/ops/audit", get(audit::list))
        .route("/ops/usage", get(usage::list))
        .layer(middleware::from_fn(security_headers))
}

/// Every answer under `/ops`: no script may run (not even inline), no page may frame it, no
/// type is guessed, nothing is cached.
async fn security_headers(req: Request, next: Next) -> Response {
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

/// The stylesheet, outside `/ops` so browsers may cache it.
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
