//! Reading request bodies and query strings into checked values, with errors that name the
//! field: 400 for a body that is not JSON, 413 past 64 KiB, 422 for the wrong shape.

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

/// A JSON body, read with the size limit and parsed, whatever its Content-Type says.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the body is larger than 64 KiB",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "the request body could not be read",
                )
            }
        })?;
        if bytes.len() > MAX_BODY {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the body is larger than 64 KiB",
            ));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the body is empty; send a JSON object",
            ));
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the body is not valid JSON: {e}"),
            )
        })?;
        refuse_nul(&value)?;
        Ok(JsonBody(value))
    }
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

/// The `Idempotency-Key` header, when there is one: 1 to 255 visible characters (422
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
                    "Idempotency-Key must be 1 to 255 visible ASCII characters",
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
    use serde_json::json;

    use super::*;

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
