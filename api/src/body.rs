//! Reading request bodies and query strings into checked values, with errors that name the
//! field: 400 for a body that is not JSON, 413 past 64 KiB (5 MiB for a contact import), 422
//! for the wrong shape.

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::StatusCode,
};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The largest body the API reads.
pub const MAX_BODY: usize = 64 * 1024;

/// The largest contact import (its route alone lifts the router's limit to this).
pub const MAX_IMPORT_BODY: usize = 5 * 1024 * 1024;

/// A contact import's body, up to [`MAX_IMPORT_BODY`], unparsed (JSON or CSV), with its
/// Content-Type.
pub struct ImportBody {
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for ImportBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = read_bytes(
            req,
            state,
            MAX_IMPORT_BODY,
            "; split the import into several requests",
        )
        .await?;
        Ok(Self {
            content_type,
            bytes,
        })
    }
}

/// A JSON body, read with the size limit and parsed, whatever its Content-Type says.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_json(req, state, MAX_BODY).await.map(JsonBody)
    }
}

/// A JSON body of up to `MAX` bytes, for the few routes that take more than [`MAX_BODY`];
/// such a route also lifts axum's `DefaultBodyLimit` to `MAX`, for itself alone.
pub struct LargeJsonBody<const MAX: usize>(pub Value);

impl<S: Send + Sync, const MAX: usize> FromRequest<S> for LargeJsonBody<MAX> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_json(req, state, MAX).await.map(LargeJsonBody)
    }
}

/// `bytes` as people say it: `64 KiB`, `1 MiB`.
fn size_name(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

/// Reads a body of at most `max` bytes: 413 past it (the message ends with `advice`), 400
/// when it cannot be read.
async fn read_bytes<S: Send + Sync>(
    req: Request,
    state: &S,
    max: usize,
    advice: &str,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than {}{advice}", size_name(max)),
        )
    };
    let bytes = Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "the request body could not be read",
            )
        }
    })?;
    if bytes.len() > max {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Reads a body of at most `max` bytes as a JSON document: 413 past it, 400 when it is not
/// JSON, 422 when it holds U+0000.
async fn read_json<S: Send + Sync>(req: Request, state: &S, max: usize) -> Result<Value, ApiError> {
    let value = parse_json(&read_bytes(req, state, max, "").await?)?;
    refuse_nul(&value)?;
    Ok(value)
}

/// A body as JSON: 400 when it is empty or not JSON.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// 422 naming the field when U+0000 is anywhere in a JSON document, in a value or a key:
/// Postgres cannot store it, and a request it would fail must change nothing.
pub fn refuse_nul(value: &Value) -> Result<(), ApiError> {
    match nul_at(value, "") {
        None => Ok(()),
        Some(field) => {
            let shown = if field.is_empty() { "the body" } else { &field };
            Err(ApiError::invalid(
                "invalid_text",
                if field.is_empty() {
                    "body".to_owned()
                } else {
                    field.clone()
                },
                format!(
                    "`{shown}` contains the character U+0000, which cannot be stored; remove it"
                ),
            ))
        }
    }
}

/// The path of the first field holding U+0000 (`metadata.note`, `reminders[1].before`; a
/// key holding it is named by its parent's path and the key as sent, NUL removed).
fn nul_at(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::String(s) => herald_core::domain::has_nul(s).then(|| path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_at(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let child = if path.is_empty() {
                k.replace('\0', "")
            } else {
                format!("{path}.{}", k.replace('\0', ""))
            };
            if herald_core::domain::has_nul(k) {
                return Some(child);
            }
            nul_at(v, &child)
        }),
        _ => None,
    }
}

/// The `Idempotency-Key` header, when there is one: 1 to 255 ASCII characters, trimmed (422
/// naming the header otherwise).
pub struct IdempotencyKey(pub Option<String>);

impl IdempotencyKey {
    /// The key with the hash of the request it came with.
    pub fn with_body(self, body: &Value) -> Option<herald_core::services::messages::Idempotency> {
        self.0
            .map(|key| herald_core::services::messages::Idempotency::new(key, body))
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let Some(raw) = parts.headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        raw.to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty() && k.len() <= 255)
            .map(|k| Self(Some(k.to_owned())))
            .ok_or_else(|| {
                ApiError::invalid(
                    "invalid_value",
                    "Idempotency-Key",
                    "Idempotency-Key must be 1 to 255 ASCII characters (spaces inside are kept, around it trimmed)",
                )
            })
    }
}

/// A JSON object whose fields are taken one by one; any field left over is unknown (422).
pub struct Fields {
    map: Map<String, Value>,
    prefix: String,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Fields {
    /// The body as an object (422 if it is another JSON value).
    pub fn new(value: Value) -> Result<Self, ApiError> {
        Self::nested(value, "")
    }

    fn nested(value: Value, prefix: &str) -> Result<Self, ApiError> {
        match value {
            Value::Object(map) => Ok(Self {
                map,
                prefix: prefix.to_owned(),
            }),
            other => {
                let field = prefix.trim_end_matches('.');
                let mut e = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_type",
                    format!("expected a JSON object, got {}", type_name(&other)),
                );
                if !field.is_empty() {
                    e = e.field(field);
                }
                Err(e)
            }
        }
    }

    pub fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Takes a field; JSON `null` counts as absent.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name).filter(|v| !v.is_null())
    }

    /// Whether the field was present, even as `null`.
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub fn missing(&self, name: &str) -> ApiError {
        ApiError::invalid(
            "missing_field",
            self.path(name),
            format!("`{}` is required", self.path(name)),
        )
    }

    fn wrong_type(&self, name: &str, expected: &str, got: &Value) -> ApiError {
        ApiError::invalid(
            "invalid_type",
            self.path(name),
            format!(
                "`{}` must be {expected}, not {}",
                self.path(name),
                type_name(got)
            ),
        )
    }

    pub fn invalid_value(&self, name: &str, message: impl Into<String>) -> ApiError {
        ApiError::invalid("invalid_value", self.path(name), message)
    }

    pub fn opt_str(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(name, "a string", &other)),
        }
    }

    pub fn req_str(&mut self, name: &str) -> Result<String, ApiError> {
        self.opt_str(name)?.ok_or_else(|| self.missing(name))
    }

    pub fn opt_bool(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(self.wrong_type(name, "true or false", &other)),
        }
    }

    /// An RFC 3339 time with an offset.
    pub fn opt_time(&mut self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        match self.opt_str(name)? {
            None => Ok(None),
            Some(s) => DateTime::parse_from_rfc3339(&s).map(|t| Some(t.with_timezone(&Utc))).map_err(|_| {
                self.invalid_value(
                    name,
                    format!("`{}` must be an RFC 3339 time with an offset, such as 2026-03-03T15:30:00-05:00", self.path(name)),
                )
            }),
        }
    }

    pub fn opt_object(&mut self, name: &str) -> Result<Option<Fields>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => {
                Fields::nested(v, &format!("{}.", self.path(name))).map(Some)
            }
            Some(other) => Err(self.wrong_type(name, "an object", &other)),
        }
    }

    /// Fails on the first field nobody took.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(name) => Err(ApiError::invalid(
                "unknown_field",
                format!("{}{name}", self.prefix),
                format!("`{}{name}` is not a field of this request", self.prefix),
            )),
        }
    }
}

/// A page request: `limit` (1..100, default 50) and an opaque `cursor`.
pub struct Page {
    pub limit: i64,
    pub cursor: Option<String>,
}

impl Page {
    pub fn from_query(
        q: &HashMap<String, String>,
        cursor_ok: impl Fn(&str) -> bool,
    ) -> Result<Self, ApiError> {
        let limit = match q.get("limit") {
            None => 50,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => {
                    return Err(ApiError::invalid(
                        "invalid_value",
                        "limit",
                        "`limit` must be a whole number from 1 to 100",
                    ));
                }
            },
        };
        let cursor = match q.get("cursor").map(String::as_str) {
            None | Some("") => None,
            Some(c) if cursor_ok(c) => Some(c.to_owned()),
            Some(_) => {
                return Err(ApiError::invalid(
                    "invalid_value",
                    "cursor",
                    "`cursor` is not one this API gave out",
                ));
            }
        };
        Ok(Self { limit, cursor })
    }

    /// This page of `rows`, which were fetched with one row more than the limit to tell
    /// whether another page follows, and the cursor of the next page (`cursor_of` its last
    /// row), if one does.
    pub fn cut<T>(
        &self,
        rows: Vec<T>,
        cursor_of: impl Fn(&T) -> String,
    ) -> (Vec<T>, Option<String>) {
        herald_core::store::cut(rows, self.limit, cursor_of)
    }
}

/// An RFC 3339 time with an offset, in UTC.
pub fn rfc3339(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// An optional query parameter: absent or empty is `None`, else what `parse` makes of it,
/// or 422 naming the parameter with `expected` in the message.
pub fn query_param<'q, T>(
    q: &'q HashMap<String, String>,
    name: &str,
    expected: &str,
    parse: impl FnOnce(&'q str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    match q.get(name).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(raw) => parse(raw).map(Some).ok_or_else(|| {
            ApiError::invalid(
                "invalid_value",
                name,
                format!("`{name}` must be {expected}"),
            )
        }),
    }
}

/// A `true` or `false` query parameter.
pub fn bool_param(q: &HashMap<String, String>, name: &str) -> Result<Option<bool>, ApiError> {
    query_param(q, name, "true or false", |raw| match raw {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    })
}

/// Refuses query parameters a route does not know.
pub fn known_params(q: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(ApiError::invalid(
            "unknown_field",
            k.clone(),
            format!(
                "`{k}` is not a query parameter of this route (known: {})",
                known.join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use axum::{
        Json, Router,
        body::Body,
        extract::{DefaultBodyLimit, FromRequestParts},
        http::header,
        response::IntoResponse,
        routing::post,
    };
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;

    /// What a client receives for an error: the status and the JSON body.
    async fn answer(e: ApiError) -> (StatusCode, Value) {
        let response = e.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_BODY)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// The error's status, `code` and `field`, as the client reads them.
    async fn refusal(e: ApiError) -> (StatusCode, String, Option<String>) {
        let (status, body) = answer(e).await;
        let error = &body["error"];
        (
            status,
            error["code"].as_str().unwrap().to_owned(),
            error["field"].as_str().map(str::to_owned),
        )
    }

    fn request(content_type: Option<&str>, body: impl Into<Body>) -> Request {
        let mut req = Request::post("/v1/messages");
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        req.body(body.into()).unwrap()
    }

    /// Reads a body the way a handler taking [`JsonBody`] does.
    async fn read(body: impl Into<Body>) -> Result<Value, ApiError> {
        JsonBody::from_request(request(Some("application/json"), body), &())
            .await
            .map(|JsonBody(v)| v)
    }

    /// An echo route behind the API's body limit, as `routes::router` layers it.
    async fn through_the_router(body: Vec<u8>) -> (StatusCode, Value) {
        let app = Router::new()
            .route("/", post(|JsonBody(v): JsonBody| async move { Json(v) }))
            .layer(DefaultBodyLimit::max(MAX_BODY));
        let response = app
            .oneshot(
                Request::post("/")
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 2 * MAX_BODY)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// A JSON document of exactly `len` bytes: a string padded to fit.
    fn json_of_len(len: usize) -> Vec<u8> {
        let doc = format!("\"{}\"", "x".repeat(len - 2));
        assert_eq!(doc.len(), len);
        doc.into_bytes()
    }

    #[tokio::test]
    async fn a_json_body_is_read_whatever_its_content_type_says() {
        for content_type in [
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            None,
        ] {
            let req = request(content_type, r#"{"channel": "sms", "to": "+15551234567"}"#);
            let Ok(JsonBody(v)) = JsonBody::from_request(req, &()).await else {
                panic!("refused with Content-Type {content_type:?}");
            };
            assert_eq!(v, json!({"channel": "sms", "to": "+15551234567"}));
        }
    }

    #[tokio::test]
    async fn a_body_of_exactly_64_kib_is_read_and_one_byte_more_is_413() {
        // Behind the router's limit, as served.
        let (status, echoed) = through_the_router(json_of_len(MAX_BODY)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(echoed.as_str().unwrap().len(), MAX_BODY - 2);
        let (status, body) = through_the_router(json_of_len(MAX_BODY + 1)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(body["error"]["code"], "payload_too_large");
        assert!(body["error"].get("field").is_none(), "{body}");

        // And by the extractor itself, whatever limit the router sets.
        assert!(read(json_of_len(MAX_BODY)).await.is_ok());
        let (status, code, field) =
            refusal(read(json_of_len(MAX_BODY + 1)).await.unwrap_err()).await;
        assert_eq!(
            (status, code.as_str(), field),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None)
        );
    }

    #[tokio::test]
    async fn a_body_that_is_not_json_is_400_invalid_json_naming_no_field() {
        for (body, what) in [
            (&b"{\"channel\": \"sms\","[..], "truncated JSON"),
            (b"", "an empty body"),
            (b" \r\n\t ", "only whitespace"),
            (b"channel=sms&to=%2B15551234567", "a form"),
            (b"{\"body\": \"a\x00b\"}", "a raw NUL byte inside a string"),
            (b"{\"body\": \"\xff\"}", "bytes that are not UTF-8"),
            (b"{\"a\": 1} {\"b\": 2}", "two documents"),
        ] {
            let (status, body) = answer(read(body).await.unwrap_err()).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
            assert_eq!(body["error"]["code"], "invalid_json", "{what}");
            assert!(body["error"].get("field").is_none(), "{what}: {body}");
            assert!(!body["error"]["message"].as_str().unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn a_body_that_cannot_be_read_is_400_invalid_body() {
        let broken = futures_util::stream::once(async {
            Err::<Bytes, _>(std::io::Error::other("connection reset"))
        });
        let (status, body) = answer(read(Body::from_stream(broken)).await.unwrap_err()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "invalid_body");
        assert!(
            !body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("connection reset"),
            "the transport's own words stay out of the answer: {body}"
        );
    }

    #[tokio::test]
    async fn nul_in_a_body_is_422_invalid_text_naming_the_path_to_it() {
        for (doc, field) in [
            (r#"{"body": "hi\u0000"}"#, "body"),
            (r#"{"metadata": {"note": "a\u0000b"}}"#, "metadata.note"),
            (
                r#"{"body": {"list": ["fine", "n\u0000t"]}}"#,
                "body.list[1]",
            ),
            (
                r#"{"reminders": [{"before": "1h"}, {"before": "\u00002h"}]}"#,
                "reminders[1].before",
            ),
            (r#"{"metadata": {"k\u0000ey": "value"}}"#, "metadata.key"),
            (r#""\u0000""#, "body"),
        ] {
            let (status, body) = answer(read(doc).await.unwrap_err()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{doc}");
            assert_eq!(body["error"]["code"], "invalid_text", "{doc}");
            assert_eq!(body["error"]["field"], field, "{doc}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("U+0000"),
                "{body}"
            );
        }
        // The same text without U+0000 passes, and so does an escaped one that is not NUL.
        assert!(
            read(r#"{"metadata": {"note": "a\u0001b \\u0000"}}"#)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_error_body_has_the_contracts_shape() {
        let mut f = Fields::new(json!({})).unwrap();
        let (status, body) = answer(f.req_str("to").unwrap_err()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body,
            json!({"error": {"code": "missing_field", "message": "`to` is required", "field": "to"}})
        );
    }

    #[tokio::test]
    async fn a_required_field_that_is_missing_or_null_is_422_missing_field() {
        for doc in [json!({}), json!({"to": null})] {
            let mut f = Fields::new(doc).unwrap();
            assert_eq!(
                refusal(f.req_str("to").unwrap_err()).await,
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "missing_field".to_owned(),
                    Some("to".to_owned())
                )
            );
        }
        let mut f = Fields::new(json!({"content": {}})).unwrap();
        let mut content = f.opt_object("content").unwrap().unwrap();
        let (_, code, field) = refusal(content.req_str("kind").unwrap_err()).await;
        assert_eq!(
            (code.as_str(), field.as_deref()),
            ("missing_field", Some("content.kind"))
        );
    }

    #[tokio::test]
    async fn a_field_of_the_wrong_type_is_422_invalid_type_naming_it_and_what_it_must_be() {
        let mut f = Fields::new(json!({
            "to": 15551234567_u64,
            "respect_quiet_hours": "yes",
            "send_at": 1_700_000_000,
            "content": ["static"],
        }))
        .unwrap();
        let cases = [
            (f.opt_str("to").unwrap_err(), "to", "a string, not a number"),
            (
                f.opt_bool("respect_quiet_hours").unwrap_err(),
                "respect_quiet_hours",
                "true or false, not a string",
            ),
            (
                f.opt_time("send_at").unwrap_err(),
                "send_at",
                "a string, not a number",
            ),
            (
                f.opt_object("content").err().unwrap(),
                "content",
                "an object, not an array",
            ),
        ];
        for (e, field, says) in cases {
            let (status, body) = answer(e).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
            assert_eq!(body["error"]["code"], "invalid_type", "{field}");
            assert_eq!(body["error"]["field"], field);
            assert_eq!(
                body["error"]["message"],
                format!("`{field}` must be {says}"),
                "{field}"
            );
        }
        let mut f = Fields::new(json!({"content": {"kind": false}})).unwrap();
        let mut content = f.opt_object("content").unwrap().unwrap();
        let (_, code, field) = refusal(content.req_str("kind").unwrap_err()).await;
        assert_eq!(
            (code.as_str(), field.as_deref()),
            ("invalid_type", Some("content.kind"))
        );
    }

    #[tokio::test]
    async fn a_body_that_is_not_an_object_is_422_invalid_type() {
        for (doc, got) in [
            (json!([1, 2]), "an array"),
            (json!("text"), "a string"),
            (json!(7), "a number"),
            (json!(null), "null"),
        ] {
            let (status, body) = answer(Fields::new(doc).err().unwrap()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(body["error"]["code"], "invalid_type");
            assert_eq!(
                body["error"]["message"],
                format!("expected a JSON object, got {got}")
            );
            assert!(body["error"].get("field").is_none(), "{body}");
        }
    }

    #[tokio::test]
    async fn a_field_nobody_took_is_422_unknown_field_naming_it() {
        let mut f = Fields::new(json!({"to": "+15551234567", "colour": "red"})).unwrap();
        f.req_str("to").unwrap();
        assert_eq!(
            refusal(f.finish().unwrap_err()).await,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_field".to_owned(),
                Some("colour".to_owned())
            )
        );
        // A null the handler never asked for is still not a field of the request.
        let f = Fields::new(json!({"colour": null})).unwrap();
        assert_eq!(
            refusal(f.finish().unwrap_err()).await.2.as_deref(),
            Some("colour")
        );

        let mut f = Fields::new(json!({"content": {"kind": "static", "extra": 1}})).unwrap();
        let mut content = f.opt_object("content").unwrap().unwrap();
        content.req_str("kind").unwrap();
        f.finish().unwrap();
        let (_, code, field) = refusal(content.finish().unwrap_err()).await;
        assert_eq!(
            (code.as_str(), field.as_deref()),
            ("unknown_field", Some("content.extra"))
        );

        // Every field taken, nothing left over.
        let mut f = Fields::new(json!({"to": "x", "subject": null})).unwrap();
        assert_eq!(f.opt_str("to").unwrap().as_deref(), Some("x"));
        assert_eq!(f.opt_str("subject").unwrap(), None);
        f.finish().unwrap();
    }

    #[test]
    fn null_reads_as_absent_but_is_told_apart_from_a_missing_field() {
        let mut f = Fields::new(json!({"quiet_hours": null, "name": "Ann"})).unwrap();
        assert!(f.has("quiet_hours"), "`null` turns quiet hours off");
        assert!(!f.has("timezone"));
        assert_eq!(f.take("quiet_hours"), None);
        assert!(f.opt_object("timezone").unwrap().is_none());
        assert_eq!(f.take("name"), Some(json!("Ann")));
        assert_eq!(f.opt_bool("respect_quiet_hours").unwrap(), None);
        assert_eq!(f.path("name"), "name");
    }

    #[tokio::test]
    async fn a_time_needs_rfc_3339_with_an_offset_and_is_read_as_utc() {
        let mut f = Fields::new(json!({
            "send_at": "2026-03-03T15:30:00-05:00",
            "expires_at": "2026-03-03T20:30:00.250Z",
        }))
        .unwrap();
        let send_at = f.opt_time("send_at").unwrap().unwrap();
        assert_eq!(send_at.to_rfc3339(), "2026-03-03T20:30:00+00:00");
        let expires_at = f.opt_time("expires_at").unwrap().unwrap();
        assert_eq!(expires_at.timestamp_subsec_millis(), 250);
        assert_eq!(f.opt_time("absent").unwrap(), None);

        for bad in [
            "2026-03-03T15:30:00",
            "2026-03-03",
            "tomorrow",
            "",
            "2026-02-30T10:00:00Z",
            "1709481000",
        ] {
            let mut f = Fields::new(json!({"content": {"send_at": bad}})).unwrap();
            let mut content = f.opt_object("content").unwrap().unwrap();
            let (status, body) = answer(content.opt_time("send_at").unwrap_err()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert_eq!(body["error"]["code"], "invalid_value", "{bad}");
            assert_eq!(body["error"]["field"], "content.send_at", "{bad}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("RFC 3339"),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn a_value_that_fails_validation_is_422_invalid_value_naming_its_path() {
        let mut f = Fields::new(json!({"content": {"kind": "fax"}})).unwrap();
        let content = f.opt_object("content").unwrap().unwrap();
        let (status, body) =
            answer(content.invalid_value("kind", "`content.kind` must be static or ai")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body,
            json!({"error": {"code": "invalid_value", "message": "`content.kind` must be static or ai", "field": "content.kind"}})
        );
    }

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn ours(c: &str) -> bool {
        c.starts_with("c_")
    }

    #[tokio::test]
    async fn a_page_takes_a_limit_from_1_to_100_defaulting_to_50() {
        let page = Page::from_query(&query(&[]), ours).unwrap();
        assert_eq!((page.limit, page.cursor), (50, None));
        for (raw, limit) in [("1", 1), ("100", 100), ("25", 25)] {
            assert_eq!(
                Page::from_query(&query(&[("limit", raw)]), ours)
                    .unwrap()
                    .limit,
                limit
            );
        }
        for raw in ["0", "101", "-1", "abc", "", "2.5", "99999999999999999999"] {
            let e = Page::from_query(&query(&[("limit", raw)]), ours)
                .err()
                .unwrap();
            assert_eq!(
                refusal(e).await,
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_value".to_owned(),
                    Some("limit".to_owned())
                ),
                "limit={raw}"
            );
        }
    }

    #[tokio::test]
    async fn a_page_takes_only_a_cursor_this_api_gave_out() {
        let page = Page::from_query(&query(&[("cursor", "c_42")]), ours).unwrap();
        assert_eq!(page.cursor.as_deref(), Some("c_42"));
        let page = Page::from_query(&query(&[("cursor", "")]), ours).unwrap();
        assert_eq!(page.cursor, None, "an empty cursor is the first page");
        let e = Page::from_query(&query(&[("cursor", "forged")]), ours)
            .err()
            .unwrap();
        assert_eq!(
            refusal(e).await,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_value".to_owned(),
                Some("cursor".to_owned())
            )
        );
    }

    #[tokio::test]
    async fn a_query_parameter_the_route_does_not_know_is_422_unknown_field() {
        let known = ["limit", "cursor", "status"];
        known_params(&query(&[("limit", "5"), ("status", "sent")]), &known).unwrap();
        known_params(&query(&[]), &known).unwrap();
        let (status, body) = answer(
            known_params(&query(&[("limit", "5"), ("stauts", "sent")]), &known).unwrap_err(),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["code"], "unknown_field");
        assert_eq!(body["error"]["field"], "stauts");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("limit, cursor, status"),
            "the message lists what the route knows: {body}"
        );
    }

    async fn idempotency_key(values: &[&[u8]]) -> Result<Option<String>, ApiError> {
        let mut req = Request::post("/v1/messages");
        for v in values {
            req = req.header(
                "idempotency-key",
                header::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        let (mut parts, _) = req.body(Body::empty()).unwrap().into_parts();
        IdempotencyKey::from_request_parts(&mut parts, &())
            .await
            .map(|k| k.0)
    }

    #[tokio::test]
    async fn an_idempotency_key_is_1_to_255_visible_characters_trimmed() {
        assert_eq!(idempotency_key(&[]).await.unwrap(), None);
        assert_eq!(
            idempotency_key(&[b"  order-42 "]).await.unwrap().as_deref(),
            Some("order-42")
        );
        let longest = "k".repeat(255);
        assert_eq!(
            idempotency_key(&[longest.as_bytes()]).await.unwrap(),
            Some(longest)
        );
        for bad in [
            &b""[..],
            b"   ",
            "k".repeat(256).as_bytes(),
            "clé".as_bytes(),
        ] {
            let e = idempotency_key(&[bad]).await.unwrap_err();
            assert_eq!(
                refusal(e).await,
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_value".to_owned(),
                    Some("Idempotency-Key".to_owned())
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn equal_bodies_hash_alike_however_their_keys_are_ordered_or_spaced() {
        let hash = |doc: &str| {
            IdempotencyKey(Some("k".to_owned()))
                .with_body(&serde_json::from_str(doc).unwrap())
                .unwrap()
                .request_hash
        };
        let a = hash(r#"{"to": "+15551234567", "body": "hi", "metadata": {"x": 1, "y": 2}}"#);
        assert_eq!(
            a,
            hash(r#"{"metadata":{"y":2,"x":1},"body":"hi","to":"+15551234567"}"#)
        );
        assert_ne!(
            a,
            hash(r#"{"to": "+15551234567", "body": "hi!", "metadata": {"x": 1, "y": 2}}"#)
        );
        assert!(IdempotencyKey(None).with_body(&json!({})).is_none());
    }

    #[test]
    fn nul_is_found_wherever_it_hides_and_named_by_its_field() {
        assert_eq!(nul_at(&json!({"body": "hi"}), ""), None);
        assert_eq!(
            nul_at(&json!({"body": "h\0i"}), "").as_deref(),
            Some("body")
        );
        assert_eq!(
            nul_at(&json!({"metadata": {"a": ["x", "y\0"]}}), "").as_deref(),
            Some("metadata.a[1]")
        );
        assert_eq!(
            nul_at(&json!({"metadata": {"k\0ey": 1}}), "").as_deref(),
            Some("metadata.key")
        );
        assert_eq!(nul_at(&json!("\0"), "").as_deref(), Some(""));
        let e = refuse_nul(&json!({"name": "\0"})).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field.as_deref(), Some("name"));
    }
}
