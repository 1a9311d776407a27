//! Resend's email API: JSON with a Bearer key, and an idempotency key per message and run, so
//! a repeated attempt within a run is deduplicated by Resend while a replay is a new send.

use futures_util::{FutureExt, future::BoxFuture};
use serde::Deserialize;

use super::{
    MAX_ERROR_BODY, Outbound, Provider, Refusal, SendOutcome, capped_text, classify_status,
    classify_transport,
};
use crate::config::Secret;

pub struct Resend {
    client: reqwest::Client,
    emails_url: String,
    api_key: Secret<String>,
}

impl Resend {
    pub fn new(client: reqwest::Client, base_url: &str, api_key: Secret<String>) -> Self {
        Self {
            client,
            emails_url: format!("{base_url}/emails"),
            api_key,
        }
    }
}

#[derive(Deserialize)]
struct Created {
    id: Option<String>,
}

#[derive(Deserialize)]
struct ResendError {
    name: Option<String>,
    message: Option<String>,
}

impl Provider for Resend {
    fn name(&self) -> &'static str {
        "resend"
    }

    fn send<'a>(&'a self, m: &'a Outbound<'a>) -> BoxFuture<'a, SendOutcome> {
        async move {
            let Some(from) = m.from else {
                return SendOutcome::Rejected {
                    error: "the tenant has no email_from address to send from".to_owned(),
                    refusal: Refusal::Refused,
                };
            };
            let body = serde_json::json!({
                "from": from,
                "to": [m.to],
                "subject": m.subject.unwrap_or_default(),
                "text": m.body,
            });
            let response = self
                .client
                .post(&self.emails_url)
                .bearer_auth(self.api_key.expose())
                .header("Idempotency-Key", format!("{}-{}", m.message_id, m.run))
                .json(&body)
                .send()
                .await;
            let response = match response {
                Ok(r) => r,
                Err(e) => return classify_transport("resend", &e),
            };
            let status = response.status();
            let headers = response.headers().clone();
            let text = capped_text(response, MAX_ERROR_BODY).await;
            if status.is_success() {
                let id = serde_json::from_str::<Created>(&text)
                    .ok()
                    .and_then(|c| c.id);
                return SendOutcome::Accepted {
                    provider_message_id: id,
                };
            }
            let parsed = serde_json::from_str::<ResendError>(&text).ok();
            let error = match parsed {
                Some(ResendError { name, message }) => format!(
                    "resend HTTP {} {}: {}",
                    status.as_u16(),
                    name.unwrap_or_default(),
                    message.unwrap_or_default()
                ),
                None => format!("resend HTTP {}: {text}", status.as_u16()),
            };
            let error = crate::domain::clean_text(&error, crate::domain::MAX_ERROR_TEXT);
            classify_status(status, &headers, error)
        }
        .boxed()
    }
}
