//! Twilio's Messages API: a form POST with HTTP Basic auth, answered by JSON.

use futures_util::{FutureExt, future::BoxFuture};
use serde::Deserialize;

use super::{
    MAX_ERROR_BODY, Outbound, Provider, SendOutcome, capped_text, classify_status,
    classify_transport,
};
use crate::config::Secret;

/// Twilio error codes that no retry can fix: the number is invalid, unreachable, or has
/// unsubscribed (21610, which also opts the contact out).
const PERMANENT_CODES: [u32; 8] = [21211, 21214, 21408, 21606, 21610, 21612, 21614, 30006];
/// The recipient replied STOP at the carrier.
pub const UNSUBSCRIBED: u32 = 21610;

pub struct Twilio {
    client: reqwest::Client,
    messages_url: String,
    account_sid: String,
    auth_token: Secret<String>,
    status_callback: String,
}

impl Twilio {
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        account_sid: &str,
        auth_token: Secret<String>,
        public_url: &str,
    ) -> Self {
        Self {
            client,
            messages_url: format!("{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json"),
            account_sid: account_sid.to_owned(),
            auth_token,
            status_callback: format!("{public_url}/v1/inbound/twilio/status"),
        }
    }
}

#[derive(Deserialize)]
struct Created {
    sid: Option<String>,
}

#[derive(Deserialize)]
struct TwilioError {
    code: Option<u32>,
    message: Option<String>,
}

impl Provider for Twilio {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn send<'a>(&'a self, m: &'a Outbound<'a>) -> BoxFuture<'a, SendOutcome> {
        async move {
            let Some(from) = m.from else {
                return SendOutcome::Rejected {
                    error: "the tenant has no sms_from number to send from".to_owned(),
                    opt_out: false,
                };
            };
            let form = [
                ("To", m.to),
                ("From", from),
                ("Body", m.body),
                ("StatusCallback", self.status_callback.as_str()),
            ];
            let response = self
                .client
                .post(&self.messages_url)
                .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
                .form(&form)
                .send()
                .await;
            let response = match response {
                Ok(r) => r,
                Err(e) => return classify_transport("twilio", &e),
            };
            let status = response.status();
            let headers = response.headers().clone();
            let body = capped_text(response, MAX_ERROR_BODY).await;
            if status.is_success() {
                let sid = serde_json::from_str::<Created>(&body)
                    .ok()
                    .and_then(|c| c.sid);
                return SendOutcome::Accepted {
                    provider_message_id: sid,
                };
            }
            let parsed = serde_json::from_str::<TwilioError>(&body).ok();
            let code = parsed.as_ref().and_then(|e| e.code);
            let message = parsed.and_then(|e| e.message).unwrap_or(body);
            let error = crate::domain::clean_text(
                &match code {
                    Some(code) => format!("twilio {code} (HTTP {}): {message}", status.as_u16()),
                    None => format!("twilio HTTP {}: {message}", status.as_u16()),
                },
                crate::domain::MAX_ERROR_TEXT,
            );
            match code {
                Some(code) if PERMANENT_CODES.contains(&code) && status.is_client_error() => {
                    SendOutcome::Rejected {
                        error,
                        opt_out: code == UNSUBSCRIBED,
                    }
                }
                _ => classify_status(status, &headers, error),
            }
        }
        .boxed()
    }
}
