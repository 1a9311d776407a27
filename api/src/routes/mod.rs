//! The router: every route of the contract that exists so far.

pub mod admin;
pub mod appointments;
pub mod contacts;
pub mod conversations;
pub mod dead_letters;
pub mod health;
pub mod inbound;
pub mod messages;
pub mod subscriptions;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request},
    http::{HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use herald_core::domain::new_id;
use tracing::{Instrument, info, info_span};

use crate::{body::MAX_BODY, error::ApiError, openapi, state::AppState};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(metrics))
        .route("/v1/admin/tenants", post(admin::create_tenant))
        .route("/v1/admin/tenants/{id}/keys", post(admin::create_key))
        .route("/v1/admin/keys/{key_prefix}", delete(admin::revoke_key))
        .route("/v1/admin/queues", get(admin::queues))
        .route("/v1/admin/messages/{id}", get(admin::message))
        .route(
            "/v1/messages",
            post(messages::create_message).get(messages::list_messages),
        )
        .route("/v1/messages/{id}", get(messages::get_message))
        .route("/v1/messages/{id}/cancel", post(messages::cancel_message))
        .route("/v1/inbound/twilio/status", post(inbound::twilio_status))
        .route("/v1/inbound/twilio/sms", post(inbound::twilio_sms))
        .route("/v1/appointments", post(appointments::create))
        .route(
            "/v1/appointments/{id}",
            get(appointments::get)
                .patch(appointments::patch)
                .delete(appointments::delete),
        )
        .route("/v1/subscriptions", post(subscriptions::create))
        .route(
            "/v1/subscriptions/{id}",
            get(subscriptions::get).delete(subscriptions::delete),
        )
        .route("/v1/contacts", post(contacts::create))
        .route(
            "/v1/contacts/{id}",
            get(contacts::get).patch(contacts::patch),
        )
        .route("/v1/conversations/{contact_id}", get(conversations::get))
        .route(
            "/v1/conversations/{contact_id}/takeover",
            post(conversations::takeover),
        )
        .route(
            "/v1/conversations/{contact_id}/release",
            post(conversations::release),
        )
        .route(
            "/v1/conversations/{contact_id}/reply",
            post(conversations::reply),
        )
        .route("/v1/dead-letters", get(dead_letters::list))
        .route("/v1/dead-letters/replay", post(dead_letters::replay_many))
        .route(
            "/v1/dead-letters/{id}",
            get(dead_letters::get).delete(dead_letters::delete),
        )
        .route("/v1/dead-letters/{id}/replay", post(dead_letters::replay))
        .merge(crate::ops::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .route_layer(middleware::from_fn(track))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Prometheus text format; the queue gauges are read fresh for each scrape.
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    herald_core::metrics::record_queue_depths(&[state.queue.clone(), state.replies.clone()]).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        herald_core::metrics::install().render(),
    )
}

async fn openapi_json() -> impl IntoResponse {
    Json(openapi::document())
}

/// Counts and times every routed request by its route pattern (not its path, so ids do not
/// explode the label set).
async fn track(req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("herald_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("herald_http_requests_total", "route" => route, "method" => method, "status" => status).increment(1);
    response
}

async fn not_found() -> ApiError {
    metrics::counter!("herald_http_requests_total", "route" => "unmatched", "method" => "any", "status" => "404").increment(1);
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// The id of the request being served, for the jobs it causes.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Gives every request an id (the caller's `X-Request-Id` when it sends a sane one), a span
/// that every log line of the request carries, and one log line when it is answered.
async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 100 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| new_id("req"));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = info_span!(
        "request",
        request_id = %id,
        method = %method,
        path = %path,
        tenant_id = tracing::field::Empty,
        message_id = tracing::field::Empty,
    );
    let mut req = req;
    req.extensions_mut().insert(RequestId(id.clone()));
    let started = std::time::Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.in_scope(|| {
        if path != "/healthz" && path != "/readyz" {
            info!(
                status,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "answered"
            );
        }
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}
