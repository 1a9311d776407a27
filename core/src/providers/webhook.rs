//! Outbound webhooks, signed as Standard Webhooks: `webhook-id`, `webhook-timestamp` and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed by the tenant's
//! `whsec_` secret. Targets resolving to private addresses are refused after DNS too, so a
//! public name pointed at an internal address cannot reach internal services.

use std::{net::SocketAddr, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use futures_util::{FutureExt, future::BoxFuture};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::{StatusCode, header::CONTENT_TYPE};
use sha2::Sha256;

use super::{
    MAX_ERROR_BODY, Outbound, Provider, Refusal, SendOutcome, capped_text, classify_status,
    classify_transport,
};
use crate::domain::is_private_ip;

pub struct WebhookSender {
    client: reqwest::Client,
    allow_private: bool,
}

impl WebhookSender {
    pub fn new(timeout: Duration, allow_private: bool) -> Self {
        crate::install_crypto();
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Herald-Webhooks/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(64)
            // A proxy from the environment would resolve the target itself, past the check.
            .no_proxy();
        if !allow_private {
            builder = builder.dns_resolver(PublicOnly);
        }
        Self {
            client: builder.build().unwrap_or_else(|_| {
                reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .unwrap_or_default()
            }),
            allow_private,
        }
    }

    /// A target given as an IP address is never resolved, so the resolver cannot check it:
    /// it is checked here (a message accepted before a range was known to be private, say).
    fn private_literal(&self, url: &str) -> bool {
        if self.allow_private {
            return false;
        }
        match reqwest::Url::parse(url)
            .ok()
            .as_ref()
            .and_then(|u| u.host())
        {
            Some(url::Host::Ipv4(ip)) => is_private_ip(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => is_private_ip(std::net::IpAddr::V6(ip)),
            _ => false,
        }
    }
}

/// Resolves names with the system resolver and refuses any answer that includes a private,
/// loopback or link-local address.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.iter().any(|a| is_private_ip(a.ip())) {
                return Err(format!("{host} resolves to a private address").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The Standard Webhooks signature of one delivery: `v1,<base64>`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// What a signed POST came to.
pub enum Posted {
    /// The receiver answered: its status, headers and (a bounded part of) its body.
    Answered {
        status: StatusCode,
        headers: reqwest::header::HeaderMap,
        text: String,
    },
    /// Not called: the target is (or resolves to) a private address.
    Private(&'static str),
    /// No answer: no connection, or no answer in time.
    NoAnswer(reqwest::Error),
}

impl WebhookSender {
    /// POSTs `body` (JSON) to `url` as Standard Webhooks delivery `id`, signed with each of
    /// `secrets` (a rotated secret and its successor both sign for a while; receivers accept
    /// any signature they can verify), with the current span's `traceparent` when traces are
    /// on. Reads at most [`MAX_ERROR_BODY`] of the answer.
    pub async fn post_signed(&self, url: &str, id: &str, body: &str, secrets: &[&str]) -> Posted {
        if self.private_literal(url) {
            return Posted::Private("webhook target is a private address");
        }
        let timestamp = chrono::Utc::now().timestamp();
        let signatures: Vec<String> = secrets
            .iter()
            .filter_map(|secret| sign(secret, id, timestamp, body))
            .collect();
        let mut request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signatures.join(" "));
        // With traces on, the receiver's spans can join the call's trace.
        if let Some(traceparent) = crate::traces::traceparent() {
            request = request.header("traceparent", traceparent);
        }
        let response = request.body(body.to_owned()).send().await;
        match response {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                // Read (a bounded part of) the body even on success, so a short answer leaves
                // the connection reusable; a long one is cut off with its connection.
                let text = capped_text(response, MAX_ERROR_BODY).await;
                Posted::Answered {
                    status,
                    headers,
                    text,
                }
            }
            Err(e) => {
                let private = std::iter::successors(std::error::Error::source(&e), |s| s.source())
                    .any(|s| s.to_string().contains("resolves to a private address"));
                if private {
                    Posted::Private("webhook target resolves to a private address")
                } else {
                    Posted::NoAnswer(e)
                }
            }
        }
    }
}

impl Provider for WebhookSender {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, m: &'a Outbound<'a>) -> BoxFuture<'a, SendOutcome> {
        async move {
            if sign(m.webhook_secret, m.message_id, 0, "").is_none() {
                return SendOutcome::Rejected {
                    error: "the tenant's webhook secret is not valid base64".to_owned(),
                    refusal: Refusal::Refused,
                };
            }
            let (status, headers, text) = match self
                .post_signed(m.to, m.message_id, m.body, &[m.webhook_secret])
                .await
            {
                Posted::Answered {
                    status,
                    headers,
                    text,
                } => (status, headers, text),
                Posted::Private(why) => {
                    return SendOutcome::Rejected {
                        error: why.to_owned(),
                        refusal: Refusal::Refused,
                    };
                }
                Posted::NoAnswer(e) => return classify_transport("webhook", &e),
            };
            if status.is_success() {
                return SendOutcome::Accepted {
                    provider_message_id: None,
                };
            }
            let error = crate::domain::clean_text(
                &format!("webhook receiver answered HTTP {}: {text}", status.as_u16()),
                crate::domain::MAX_ERROR_TEXT,
            );
            if status == StatusCode::GONE {
                return SendOutcome::Rejected {
                    error,
                    refusal: Refusal::Refused,
                };
            }
            classify_status(status, &headers, error)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example from the Standard Webhooks specification.
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
