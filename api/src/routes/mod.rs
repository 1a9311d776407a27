//! The router: every route of the contract that exists so far.

pub mod admin;
pub mod appointments;
pub mod contacts;
pub mod conversations;
pub mod dead_letters;
pub mod groups;
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
};
use herald_core::domain::new_id;
use tracing::{Instrument, info, info_span};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{body::MAX_BODY, error::ApiError, openapi, state::AppState};

/// The API's routes and the OpenAPI document describing exactly them: every route is added
/// through `utoipa_axum::routes!`, which reads the handler's `#[utoipa::path]`, so a route
/// cannot exist without its documentation.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(openapi_json))
        .routes(routes!(metrics))
        .routes(routes!(admin::create_tenant))
        .routes(routes!(admin::create_key))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(admin::queues))
        .routes(routes!(admin::message))
        .routes(routes!(messages::create_message, messages::list_messages))
        .routes(routes!(messages::get_message))
        .routes(routes!(messages::cancel_message))
        .routes(routes!(inbound::twilio_status))
        .routes(routes!(inbound::twilio_sms))
        .routes(routes!(inbound::twilio_voice_status))
        .routes(routes!(appointments::create))
        .routes(routes!(
            appointments::get,
            appointments::patch,
            appointments::delete
        ))
        .routes(routes!(subscriptions::create))
        .routes(routes!(subscriptions::get, subscriptions::delete))
        .routes(routes!(contacts::create))
        .routes(routes!(contacts::get, contacts::patch))
        .routes(routes!(conversations::get))
        .routes(routes!(conversations::takeover))
        .routes(routes!(conversations::release))
        .routes(routes!(conversations::reply))
        .routes(routes!(groups::create))
        .routes(routes!(groups::get, groups::delete))
        .routes(routes!(groups::members))
        .routes(routes!(groups::add_member, groups::remove_member))
        .routes(routes!(groups::send))
        .routes(routes!(groups::send_status))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::replay_many))
        .routes(routes!(dead_letters::get, dead_letters::delete))
        .routes(routes!(dead_letters::replay))
        .split_for_parts()
}

static DOCUMENT: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();

/// The OpenAPI document of every route.
pub fn document() -> utoipa::openapi::OpenApi {
    DOCUMENT.get_or_init(|| api().1).clone()
}

pub fn router(state: AppState) -> Router {
    let (api, doc) = api();
    let _ = DOCUMENT.set(doc);
    api.merge(crate::ops::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(refuse_nul))
        .route_layer(middleware::from_fn(track))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Prometheus metrics of this API process (and the queue depths, read fresh for each scrape).
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
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

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, description = "the OpenAPI 3 document of every route")))]
async fn openapi_json() -> impl IntoResponse {
    Json(document())
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

/// U+0000 in the path, a query parameter or a form field is refused before any handler runs:
/// 422 naming where it is, and nothing changes. Postgres can neither store it nor compare
/// with it, so it would otherwise surface as a 500. (JSON bodies are checked as they are
/// read, by [`crate::body::JsonBody`]; Twilio's signed forms are cleaned, not refused, since
/// Twilio cannot act on a 422.)
async fn refuse_nul(req: Request, next: Next) -> Response {
    if let Some(field) = nul_in_uri(req.uri()) {
        return nul_error(&field).into_response();
    }
    let is_form = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form || req.uri().path().starts_with("/v1/inbound/") {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body is larger than 64 KiB",
        )
        .into_response();
    };
    if let Some(field) = nul_in_form(&bytes) {
        return nul_error(&field).into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

fn nul_error(field: &str) -> ApiError {
    ApiError::invalid(
        "invalid_text",
        field,
        format!("`{field}` contains the character U+0000, which cannot be stored; remove it"),
    )
}

/// `path`, or the name of the query parameter, that holds U+0000 (`%00`).
fn nul_in_uri(uri: &axum::http::Uri) -> Option<String> {
    if uri.path().contains("%00") {
        return Some("path".to_owned());
    }
    uri.query().and_then(|q| nul_in_form(q.as_bytes()))
}

/// The name of the first form field whose name or value holds U+0000.
fn nul_in_form(form: &[u8]) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(form).ok()?;
    pairs
        .into_iter()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
        .map(|(k, _)| {
            let k = k.replace('\0', "");
            if k.is_empty() { "query".to_owned() } else { k }
        })
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
