//! The HTTP side: one client with the ops token and a 10 s timeout, and the mapping of every
//! answer to a JSON value or a [`Failure`].

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

use crate::failure::{ApiError, Failure};

/// Long enough for a bulk replay over many dead letters, short enough that a hung API does
/// not hang a script.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The API at `base`, called with the ops token.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl Client {
    /// `base` comes from `--url` or `HERALD_URL`; `source` names which, for the error.
    pub fn new(base: &str, source: &str, token: String) -> Result<Self, Failure> {
        let base = Url::parse(base)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                Failure::usage(format!(
                    "{source} must be an http(s) URL like http://127.0.0.1:8080, not `{base}`"
                ))
            })?;
        // reqwest is built without a default TLS provider in this workspace.
        herald_core::install_crypto();
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("heraldctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Unexpected(format!("could not set up the HTTP client: {e}")))?;
        Ok(Self { http, base, token })
    }

    pub async fn get(&self, path: &[&str], query: &[(&str, String)]) -> Result<Value, Failure> {
        self.call(Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &[&str], body: Option<&Value>) -> Result<Value, Failure> {
        self.call(Method::POST, path, &[], body).await
    }

    /// Answers `Value::Null` for the API's 204s.
    pub async fn delete(&self, path: &[&str]) -> Result<Value, Failure> {
        self.call(Method::DELETE, path, &[], None).await
    }

    /// `path` is given as segments so that ids typed by a person are percent-encoded and can
    /// never reach a different route (`dlq show ../admin/queues`).
    fn url(&self, path: &[&str], query: &[(&str, String)]) -> Result<Url, Failure> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| Failure::usage(format!("`{}` cannot be a base URL", self.base)))?
            .pop_if_empty()
            .extend(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    async fn call(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let url = self.url(path, query)?;
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable = |e: reqwest::Error| Failure::Unreachable {
            url: self.base.as_str().trim_end_matches('/').to_owned(),
            cause: cause(&e),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(Failure::Api {
                status,
                error: api_error(&text),
            });
        }
        if status == StatusCode::NO_CONTENT || text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            Failure::Unexpected(format!(
                "the API answered {status} with a body that is not JSON ({e})"
            ))
        })
    }
}

/// The contract's `{"error": {"code", "message", "field"}}`, or the raw body if it is not that.
fn api_error(body: &str) -> ApiError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    let str_of = |key: &str| error.and_then(|e| e[key].as_str()).map(str::to_owned);
    match (str_of("code"), str_of("message")) {
        (Some(code), Some(message)) => ApiError::Contract {
            code,
            message,
            field: str_of("field"),
        },
        _ => ApiError::Raw(body.to_owned()),
    }
}

/// What went wrong on the wire, in words: reqwest's own message is "error sending request
/// for url (...)", while the useful part ("Connection refused") is at the end of its chain.
fn cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("no answer within {} s", TIMEOUT.as_secs());
    }
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_one_encoded_path_segment() {
        let client = Client::new("http://127.0.0.1:8080/", "HERALD_URL", "t".into()).unwrap();
        let url = client
            .url(
                &["v1", "dead-letters", "../admin/queues"],
                &[("since", "2026-03-01T10:00:00+01:00".into())],
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/v1/dead-letters/..%2Fadmin%2Fqueues?since=2026-03-01T10%3A00%3A00%2B01%3A00"
        );
    }

    #[test]
    fn a_base_url_with_a_path_keeps_it() {
        let client = Client::new("https://ops.example.com/herald", "--url", "t".into()).unwrap();
        let url = client.url(&["v1", "admin", "queues"], &[]).unwrap();
        assert_eq!(
            url.as_str(),
            "https://ops.example.com/herald/v1/admin/queues"
        );
    }

    #[test]
    fn a_url_that_is_not_http_is_a_usage_error_naming_its_source() {
        let e = Client::new("127.0.0.1:8080", "HERALD_URL", "t".into()).unwrap_err();
        assert!(e.to_string().contains("HERALD_URL"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn the_contract_error_is_read_and_anything_else_kept_raw() {
        let e = api_error(
            r#"{"error": {"code": "invalid_value", "message": "bad", "field": "since"}}"#,
        );
        let failure = Failure::Api {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: e,
        };
        assert_eq!(
            failure.to_string(),
            "bad (invalid_value, field since, HTTP 422)"
        );
        let raw = Failure::Api {
            status: StatusCode::BAD_GATEWAY,
            error: api_error("<html>bad gateway</html>"),
        };
        assert_eq!(
            raw.to_string(),
            "the API answered 502 Bad Gateway: <html>bad gateway</html>"
        );
    }
}
