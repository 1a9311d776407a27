//! Providers: who a message is handed to (Twilio, Resend, a webhook receiver, or the `log`
//! providers that only record it), and the one place where a provider's answer is classified
//! as accepted, rejected for good, or worth another try.

pub mod llm;
pub mod log;
pub mod resend;
pub mod twilio;
pub mod twilio_codes;
pub mod twilio_signature;
pub mod webhook;

use std::time::Duration;

use futures_util::future::BoxFuture;
use reqwest::{StatusCode, header::HeaderMap};

/// What one provider call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Accepted; for SMS and email `sent`, for a webhook `delivered`.
    Accepted { provider_message_id: Option<String> },
    /// Rejected for good: `failed`, with a dead letter. `refusal` says what it means for the
    /// contact, where the provider said more than "no".
    Rejected { error: String, refusal: Refusal },
    /// Refused for a reason only the operator can fix (Twilio's credentials, a region not
    /// enabled, a sender that cannot send): the sender is paused, and the message waits for
    /// the fix. `account_wide` when every sender of the account is refused.
    OperatorError {
        error: String,
        code: u32,
        account_wide: bool,
    },
    /// Worth another try after the retry policy's delay, or `retry_after` if longer.
    /// `throttled` when the provider answered 429: it is up, only asking to slow down, which
    /// is no evidence of an outage for its circuit.
    Transient {
        error: String,
        retry_after: Option<Duration>,
        throttled: bool,
    },
}

/// What a refusal means beyond this message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing more than the refusal.
    Refused,
    /// The recipient unsubscribed at the carrier (Twilio 21610): the contact is opted out.
    OptedOut,
    /// The number cannot receive texts: the contact's phone is marked unreachable.
    Unreachable,
    /// A carrier filtered the text (Twilio 30007).
    Filtered,
}

/// One outbound message as a provider needs it.
#[derive(Debug, Clone)]
pub struct Outbound<'a> {
    pub message_id: &'a str,
    pub tenant_id: &'a str,
    pub to: &'a str,
    pub from: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub body: &'a str,
    /// The run of the message (0 at first, +1 per replay): part of idempotency keys.
    pub run: i32,
    /// The tenant's webhook signing secret (`whsec_...`).
    pub webhook_secret: &'a str,
}

/// What a provider says about an earlier attempt whose outcome Herald never recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The provider cannot be asked, and need not be: a repeat is harmless to it (Resend
    /// drops a repeated `Idempotency-Key`, a webhook receiver a repeated `webhook-id`).
    Unsupported,
    /// What the provider holds that could be that attempt (same recipient, sender and body,
    /// created since it began), oldest first; empty when it has nothing.
    Candidates(Vec<Candidate>),
    /// The provider could not be asked now (down, 5xx, timeout).
    Unavailable(String),
}

/// A message the provider has that may be the attempt being resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub provider_message_id: String,
    /// The provider's own status word for it (`queued`, `sent`, `delivered`, ...).
    pub status: String,
}

/// Something that sends messages of one channel.
pub trait Provider: Send + Sync {
    /// A name for logs and metrics: `twilio`, `resend`, `webhook`, `log`.
    fn name(&self) -> &'static str;
    fn send<'a>(&'a self, message: &'a Outbound<'a>) -> BoxFuture<'a, SendOutcome>;
    /// Asks whether an attempt to send `message` that began at `since` arrived.
    fn lookup<'a>(
        &'a self,
        _message: &'a Outbound<'a>,
        _since: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Lookup> {
        Box::pin(async { Lookup::Unsupported })
    }
}

/// Classifies an HTTP answer that was not a success: 408, 429 and 5xx are transient (with
/// `Retry-After` honoured), other 4xx are permanent.
pub fn classify_status(status: StatusCode, headers: &HeaderMap, error: String) -> SendOutcome {
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        SendOutcome::Transient {
            error,
            retry_after: retry_after(headers),
            throttled: status == StatusCode::TOO_MANY_REQUESTS,
        }
    } else {
        SendOutcome::Rejected {
            error,
            refusal: Refusal::Refused,
        }
    }
}

/// Classifies a failure to get an answer at all: timeouts and connection errors are transient.
pub fn classify_transport(provider: &str, error: &reqwest::Error) -> SendOutcome {
    let what = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    // The full chain, without the URL (which may carry an account id).
    let mut detail = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    let error = if detail.is_empty() {
        format!("{provider}: {what}")
    } else {
        crate::domain::clean_text(
            &format!("{provider}: {what}: {detail}"),
            crate::domain::MAX_ERROR_TEXT,
        )
    };
    SendOutcome::Transient {
        error,
        retry_after: None,
        throttled: false,
    }
}

/// The most bytes of a provider's or receiver's answer Herald reads when it is an error (or
/// a success whose body only carries an id).
pub const MAX_ERROR_BODY: usize = 16 * 1024;
/// The most bytes of a model's answer Herald reads.
pub const MAX_MODEL_BODY: usize = 256 * 1024;

/// Reads at most `cap` bytes of a response's body. What lies past the cap is never read: the
/// response is dropped with its body unfinished, which closes the connection, so a receiver
/// answering with gigabytes costs `cap` bytes of memory and no more. Returns the bytes read
/// and whether the body went on past the cap.
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::with_capacity(
        response
            .content_length()
            .map_or(1024, |n| usize::try_from(n).unwrap_or(cap).min(cap)),
    );
    while let Some(chunk) = response.chunk().await? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// A response's body as text, read up to `cap` bytes (see [`read_capped`]); empty when it
/// could not be read. Invalid UTF-8 (or a character cut by the cap) becomes U+FFFD.
pub async fn capped_text(response: reqwest::Response, cap: usize) -> String {
    match read_capped(response, cap).await {
        Ok((bytes, _)) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    let ms = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

/// An HTTP client for provider calls: bounded by the provider timeout, no redirects (a
/// provider that redirects is misconfigured, and a webhook must not be bounced elsewhere).
pub fn http_client(timeout: Duration) -> reqwest::Client {
    crate::install_crypto();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Herald/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(256)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_the_contract_says() {
        let h = HeaderMap::new();
        for code in [408, 429, 500, 502, 503, 504] {
            let s = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(
                    classify_status(s, &h, String::new()),
                    SendOutcome::Transient { .. }
                ),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 410, 422] {
            let s = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(
                    classify_status(s, &h, String::new()),
                    SendOutcome::Rejected { .. }
                ),
                "{code}"
            );
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "30".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(30)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        h.insert(reqwest::header::RETRY_AFTER, later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
    }
}
