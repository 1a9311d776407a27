//! OpenAI-compatible chat models (OpenAI, Ollama, vLLM): `POST {base}/chat/completions`.
//! Each call is bounded by `HERALD_LLM_TIMEOUT_MS` and tried once more on 429 or 5xx; the
//! primary model, then the fallback, then a canned reply, so a question always gets an answer.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::config::LlmEndpoint;

/// One turn of a chat.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Turn {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    pub content: String,
}

/// What a model answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    /// The model that answered, as the endpoint named it.
    pub model: String,
    /// The endpoint's `usage` object (prompt, completion and total tokens).
    pub usage: Option<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("the model endpoint answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the model endpoint could not be reached: {0}")]
    Transport(String),
    #[error("the model endpoint's answer had no text")]
    Empty,
    #[error("the model endpoint's answer was larger than 256 KiB")]
    TooLarge,
}

impl LlmError {
    /// 429, 5xx and transport failures are worth one more try.
    fn retryable(&self) -> bool {
        match self {
            LlmError::Status { status, .. } => *status == 429 || *status >= 500,
            LlmError::Transport(_) => true,
            LlmError::Empty | LlmError::TooLarge => false,
        }
    }
}

#[derive(Deserialize)]
struct ChatResponse {
    model: Option<String>,
    choices: Vec<Choice>,
    usage: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

/// One configured model endpoint.
pub struct ChatModel {
    client: reqwest::Client,
    endpoint: LlmEndpoint,
}

impl ChatModel {
    pub fn new(endpoint: LlmEndpoint, timeout: Duration) -> Self {
        crate::install_crypto();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("Herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { client, endpoint }
    }

    pub fn model(&self) -> &str {
        &self.endpoint.model
    }

    async fn call(&self, turns: &[Turn]) -> Result<Completion, LlmError> {
        let body = serde_json::json!({
            "model": self.endpoint.model,
            "messages": turns,
            "max_tokens": 200,
            "temperature": 0.3,
        });
        let mut request = self
            .client
            .post(format!("{}/chat/completions", self.endpoint.base_url))
            .json(&body);
        if let Some(key) = &self.endpoint.api_key {
            request = request.bearer_auth(key.expose());
        }
        let response = request.send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out".to_owned()
            } else {
                e.to_string()
            };
            LlmError::Transport(what)
        })?;
        let status = response.status();
        if !status.is_success() {
            let text = super::capped_text(response, super::MAX_ERROR_BODY).await;
            return Err(LlmError::Status {
                status: status.as_u16(),
                body: crate::domain::clean_text(&text, 200),
            });
        }
        let (body, cut) = super::read_capped(response, super::MAX_MODEL_BODY)
            .await
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        if cut {
            return Err(LlmError::TooLarge);
        }
        let parsed: ChatResponse = serde_json::from_slice(&body).map_err(|_| LlmError::Empty)?;
        let content = parsed
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .ok_or(LlmError::Empty)?;
        Ok(Completion {
            text: content,
            model: parsed.model.unwrap_or_else(|| self.endpoint.model.clone()),
            usage: parsed.usage,
        })
    }

    /// One call, tried once more after a short pause on 429, 5xx or a transport failure.
    pub async fn complete(&self, turns: &[Turn]) -> Result<Completion, LlmError> {
        (|| self.call(turns))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(250))
                    .with_max_times(1),
            )
            .when(LlmError::retryable)
            .await
    }
}

/// Who wrote a reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Model(Completion),
    /// No model answered: the tenant's canned reply.
    Canned,
}

/// The primary model, the fallback model, and the canned reply behind them.
pub struct Assistant {
    pub primary: Option<ChatModel>,
    pub fallback: Option<ChatModel>,
}

impl Assistant {
    pub fn from_config(config: &crate::Config) -> Self {
        Self {
            primary: config
                .llm
                .clone()
                .map(|e| ChatModel::new(e, config.llm_timeout)),
            fallback: config
                .llm_fallback
                .clone()
                .map(|e| ChatModel::new(e, config.llm_timeout)),
        }
    }

    pub async fn answer(&self, turns: &[Turn]) -> Answer {
        for (which, model) in [("primary", &self.primary), ("fallback", &self.fallback)] {
            let Some(model) = model else { continue };
            let span = crate::traces::enabled().then(|| {
                tracing::info_span!(
                    "model call",
                    otel.kind = "client",
                    otel.status_code = tracing::field::Empty,
                    role = which,
                    model = model.model(),
                    prompt_tokens = tracing::field::Empty,
                    completion_tokens = tracing::field::Empty,
                )
            });
            let answered = match &span {
                Some(span) => {
                    tracing::Instrument::instrument(model.complete(turns), span.clone()).await
                }
                None => model.complete(turns).await,
            };
            if let Some(span) = &span {
                match &answered {
                    Ok(c) => {
                        let tokens =
                            |key: &str| c.usage.as_ref().and_then(|u| u[key].as_i64()).unwrap_or(0);
                        span.record("prompt_tokens", tokens("prompt_tokens"));
                        span.record("completion_tokens", tokens("completion_tokens"));
                    }
                    Err(_) => {
                        span.record("otel.status_code", "error");
                    }
                }
            }
            let outcome = if answered.is_ok() {
                "answered"
            } else {
                "failed"
            };
            ::metrics::counter!("herald_model_calls_total", "role" => which, "outcome" => outcome)
                .increment(1);
            match answered {
                Ok(c) => return Answer::Model(c),
                Err(e) => warn!(which, model = model.model(), error = %e, "model did not answer"),
            }
        }
        let reason = if self.primary.is_none() && self.fallback.is_none() {
            "no_model"
        } else {
            "models_failed"
        };
        canned_reply_counted(reason);
        Answer::Canned
    }
}

/// Counts a canned reply sent instead of a model's (`herald_canned_replies_total{reason}`):
/// `models_failed`, `no_model` (none configured) or `budget` (the tenant's AI budget is spent).
pub fn canned_reply_counted(reason: &'static str) {
    ::metrics::counter!("herald_canned_replies_total", "reason" => reason).increment(1);
}

/// The longest reply Herald texts (two SMS segments).
pub const MAX_REPLY_CHARS: usize = 320;
/// More than enough of a model's text to cut a reply from.
const MAX_MODEL_REPLY_BYTES: usize = 16 * 1024;

/// Makes a model's answer fit one SMS-sized reply: control characters removed (see
/// [`crate::domain::clean_text`]), whitespace collapsed, at most 320 characters, cut at a
/// sentence or word boundary when it must be cut.
pub fn fit_reply(text: &str) -> String {
    let collapsed = crate::domain::clean_text(text, MAX_MODEL_REPLY_BYTES);
    if collapsed.chars().count() <= MAX_REPLY_CHARS {
        return collapsed;
    }
    let head: String = collapsed.chars().take(MAX_REPLY_CHARS - 1).collect();
    let cut = head
        .rfind(['.', '!', '?'])
        .filter(|i| *i >= MAX_REPLY_CHARS / 2)
        .map(|i| i + 1)
        .or_else(|| head.rfind(' '))
        .unwrap_or(head.len());
    let mut reply = head[..cut].trim_end().to_owned();
    if !reply.ends_with(['.', '!', '?']) {
        reply.push('…');
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_a_reply() {
        assert_eq!(fit_reply("Hi\0 there\u{7}!\r\nBye"), "Hi there! Bye");
    }

    #[test]
    fn short_replies_are_kept_and_tidied() {
        assert_eq!(
            fit_reply("  Hello   there!\n\nSee you soon. "),
            "Hello there! See you soon."
        );
    }

    #[test]
    fn long_replies_are_cut_to_sms_size_at_a_boundary() {
        let long = "This is a sentence about opening hours. ".repeat(20);
        let reply = fit_reply(&long);
        assert!(reply.chars().count() <= MAX_REPLY_CHARS, "{}", reply.len());
        assert!(reply.ends_with('.'), "{reply}");
        let words = "word ".repeat(200);
        let reply = fit_reply(&words);
        assert!(reply.chars().count() <= MAX_REPLY_CHARS);
        assert!(reply.ends_with("word…"), "{reply}");
    }
}
