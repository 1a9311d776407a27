//! The router: every route of the contract that exists so far.

pub mod admin;
pub mod appointments;
pub mod audit;
pub mod contacts;
pub mod conversations;
pub mod dead_letters;
pub mod endpoints;
pub mod export;
pub mod groups;
pub mod health;
pub mod import;
pub mod inbound;
pub mod messages;
pub mod subscriptions;
pub mod tenant;
pub mod usage;

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request},
    http::{
        HeaderValue, StatusCode,
        header::{CONTENT_TYPE, HeaderName},
    },
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use herald_core::domain::new_id;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    timeout::TimeoutLayer,
};
use tracing::{Instrument, info, info_span, warn};
use utoipa_axum::{
    router::{OpenApiRouter, UtoipaMethodRouterExt},
    routes,
};

use crate::{
    body::{MAX_BODY, MAX_IMPORT_BODY},
    error::ApiError,
    openapi,
    state::AppState,
};

/// The API's routes and the OpenAPI document describing exactly them: every route is added
/// through `utoipa_axum::routes!`, which reads the handler's `#[utoipa::path]`, so a route
/// cannot exist without its documentation.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(openapi_json))
        .routes(routes!(metrics))
        .routes(routes!(admin::create_tenant, admin::list_tenants))
        .routes(routes!(admin::get_tenant, admin::patch_tenant))
        .routes(routes!(tenant::get, tenant::patch))
        .routes(routes!(admin::create_key))
        .routes(routes!(admin::revoke_key))
        .routes(routes!(admin::queues))
        .routes(routes!(audit::admin_list))
        .routes(routes!(audit::list))
        .routes(routes!(usage::get))
        .routes(routes!(usage::admin))
        .routes(routes!(admin::message))
        .routes(routes!(endpoints::admin_list))
        .routes(routes!(endpoints::admin_attempts))
        .routes(routes!(endpoints::admin_redeliver))
        .routes(routes!(conversations::admin_inbox))
        .routes(routes!(messages::create_message, messages::list_messages))
        .routes(routes!(messages::get_message))
        .routes(routes!(messages::cancel_message))
        .routes(routes!(inbound::twilio_status))
        .routes(routes!(inbound::twilio_sms))
        .routes(routes!(inbound::twilio_voice_status))
        .routes(routes!(appointments::create, appointments::list))
        .routes(routes!(
            appointments::get,
            appointments::patch,
            appointments::delete
        ))
        .routes(routes!(subscriptions::create, subscriptions::list))
        .routes(routes!(
            subscriptions::get,
            subscriptions::patch,
            subscriptions::delete
        ))
        .routes(routes!(contacts::create, contacts::list))
        .routes(routes!(import::import).layer(DefaultBodyLimit::max(MAX_IMPORT_BODY)))
        .routes(routes!(contacts::get, contacts::patch, contacts::erase))
        .routes(routes!(contacts::consent_events))
        .routes(routes!(export::export))
        .routes(routes!(conversations::inbox))
        .routes(routes!(conversations::get))
        .routes(routes!(conversations::takeover))
        .routes(routes!(conversations::release))
        .routes(routes!(conversations::reply))
        .routes(routes!(groups::create, groups::list))
        .routes(routes!(groups::get, groups::patch, groups::delete))
        .routes(routes!(groups::members))
        // The one route that reads more than 64 KiB: 10,000 contact ids.
        .routes(routes!(groups::add_members).layer(DefaultBodyLimit::max(groups::MEMBERS_MAX_BODY)))
        .routes(routes!(groups::add_member, groups::remove_member))
        .routes(routes!(groups::send))
        .routes(routes!(groups::send_status))
        .routes(routes!(endpoints::create, endpoints::list))
        .routes(routes!(endpoints::get, endpoints::patch, endpoints::delete))
        .routes(routes!(endpoints::rotate_secret))
        .routes(routes!(endpoints::attempts))
        .routes(routes!(endpoints::recover))
        .routes(routes!(endpoints::redeliver))
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
    let routes = api
        .merge(crate::ops::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(refuse_nul))
        .route_layer(middleware::from_fn(track));
    edges(routes, REQUEST_TIMEOUT).with_state(state)
}

/// What every request passes through, outermost last: it gets its id, then its span and
/// log line, then at most `timeout`; a panicking handler becomes a 500 inside all of them.
fn edges<S: Clone + Send + Sync + 'static>(routes: Router<S>, timeout: Duration) -> Router<S> {
    routes
        .layer(CatchPanicLayer::custom(panicked))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(middleware::from_fn(trace_request))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MintRequestId))
        .layer(middleware::map_request(drop_unusable_request_id))
}

/// Prometheus metrics of this API process (and the queue depths, read fresh for each scrape).
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> impl IntoResponse {
    herald_core::metrics::record_queue_depths(&[
        state.queue.clone(),
        state.replies.clone(),
        state.events.clone(),
    ])
    .await;
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
    if herald_core::traces::enabled() {
        herald_core::traces::rename_current(format!("{method} {route}"));
    }
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

/// How long any request may take before it is answered 503; the database and Redis calls
/// under it have their own, shorter bounds, so this catches only what nothing else did.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids Herald mints: `req_` and a sortable id.
#[derive(Debug, Clone, Copy)]
struct MintRequestId;

impl MakeRequestId for MintRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&new_id("req"))
            .ok()
            .map(RequestId::new)
    }
}

/// A caller's `X-Request-Id` is kept when it is up to 100 printable ASCII characters;
/// anything else is dropped, and Herald mints one instead.
async fn drop_unusable_request_id(mut req: Request) -> Request {
    let usable = |v: &HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty() && b.len() <= 100 && b.iter().all(u8::is_ascii_graphic)
    };
    if req.headers().get(X_REQUEST_ID).is_some_and(|v| !usable(v)) {
        req.headers_mut().remove(X_REQUEST_ID);
    }
    req
}

/// The id of the request being served (for the jobs it causes).
pub fn request_id(req_id: Option<&RequestId>) -> Option<String> {
    req_id
        .and_then(|id| id.header_value().to_str().ok())
        .map(str::to_owned)
}

/// A span that every log line of the request carries, one log line when it is answered,
/// and the contract's error body on a bare 503 of the timeout layer.
async fn trace_request(req: Request, next: Next) -> Response {
    let id = request_id(req.extensions().get::<RequestId>()).unwrap_or_default();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // The trace's fields stay empty (and out of the logs) unless traces are on; the span is
    // named by its route once routing has matched one (see `track`).
    let span = info_span!(
        "request",
        request_id = %id,
        method = %method,
        path = %path,
        tenant_id = tracing::field::Empty,
        message_id = tracing::field::Empty,
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    let traced = herald_core::traces::enabled();
    if traced {
        span.record("otel.name", method.as_str());
        span.record("otel.kind", "server");
    }
    // A caller's trace continues here.
    herald_core::traces::follow(
        &span,
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    let started = std::time::Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    if response.status() == StatusCode::SERVICE_UNAVAILABLE
        && !response.headers().contains_key(CONTENT_TYPE)
    {
        span.in_scope(|| {
            warn!(
                timeout_ms = REQUEST_TIMEOUT.as_millis() as u64,
                "request timed out"
            )
        });
        response = ApiError::unavailable("this request took too long; Herald").into_response();
    }
    let status = response.status().as_u16();
    if traced {
        span.record("http.response.status_code", status);
    }
    span.in_scope(|| {
        if path != "/healthz" && path != "/readyz" {
            info!(
                status,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "answered"
            );
        }
    });
    response
}

/// A handler that panicked: logged with what it said, answered like any internal error.
fn panicked(cause: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let said = cause
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| cause.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    ApiError::internal(&format_args!("a handler panicked: {said}")).into_response()
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, routing::get};
    use tower::ServiceExt;

    use super::*;

    async fn boom() -> &'static str {
        panic!("the handler's own words")
    }

    fn app() -> Router {
        let routes = Router::new()
            .route("/boom", get(boom))
            .route(
                "/stuck",
                get(|| async { std::future::pending::<&'static str>().await }),
            )
            .route("/fine", get(|| async { "fine" }));
        edges(routes, Duration::from_millis(100))
    }

    async fn get_with(path: &str, request_id: Option<&str>) -> (StatusCode, Response) {
        let mut req = axum::http::Request::get(path);
        if let Some(id) = request_id {
            req = req.header("x-request-id", id);
        }
        let response = app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        (response.status(), response)
    }

    async fn error_code(response: Response) -> String {
        let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["error"]["code"].as_str().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_the_contracts_500() {
        let (status, response) = get_with("/boom", None).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().contains_key("x-request-id"));
        assert_eq!(error_code(response).await, "internal");
        // The process goes on serving.
        assert_eq!(get_with("/fine", None).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_request_past_the_timeout_answers_503_with_an_error_body() {
        let (status, response) = get_with("/stuck", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        assert_eq!(error_code(response).await, "unavailable");
    }

    #[tokio::test]
    async fn a_usable_request_id_is_kept_and_a_bad_one_replaced() {
        let (_, kept) = get_with("/fine", Some("client-id-42")).await;
        assert_eq!(kept.headers()["x-request-id"], "client-id-42");

        let long = "x".repeat(101);
        let (_, replaced) = get_with("/fine", Some(&long)).await;
        let id = replaced.headers()["x-request-id"].to_str().unwrap();
        assert!(id.starts_with("req_"), "{id}");

        let (_, minted) = get_with("/fine", None).await;
        let id = minted.headers()["x-request-id"].to_str().unwrap();
        assert!(id.starts_with("req_"), "{id}");
    }
}
