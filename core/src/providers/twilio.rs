//! Twilio's Messages API: a form POST with HTTP Basic auth, answered by JSON; and its Message
//! list resource, to find out whether an attempt whose answer never came did arrive.

use futures_util::{FutureExt, future::BoxFuture};
use serde::Deserialize;

use super::{
    Candidate, Lookup, MAX_ERROR_BODY, Outbound, Provider, Refusal, SendOutcome, capped_text,
    classify_status, classify_transport, read_capped, retry_after,
    twilio_codes::{self, CodeClass},
};
use crate::config::Secret;

/// Whether a sender is a Twilio Messaging Service sid (`MG` and 32 hex digits).
pub fn is_messaging_service(sender: &str) -> bool {
    sender.len() == 34
        && sender.starts_with("MG")
        && sender[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Messages per page of the list resource.
const PAGE_SIZE: u32 = 50;
/// The most pages one lookup reads (a recipient sent more than this many texts by one sender
/// within the window is not looked through: the attempt stays unresolved).
const MAX_PAGES: usize = 20;
/// The most bytes of one page Herald reads.
const MAX_PAGE_BODY: usize = 1024 * 1024;
/// How far before the attempt's start a message may be dated: Twilio's clock and ours differ
/// a little, and `date_created` has whole seconds.
const CLOCK_SLACK: chrono::Duration = chrono::Duration::seconds(60);

pub struct Twilio {
    client: reqwest::Client,
    base_url: String,
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
            base_url: base_url.trim_end_matches('/').to_owned(),
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

/// A page of the Message list resource.
#[derive(Deserialize)]
struct Page {
    messages: Vec<Listed>,
    next_page_uri: Option<String>,
}

#[derive(Deserialize)]
struct Listed {
    sid: String,
    body: Option<String>,
    status: Option<String>,
    direction: Option<String>,
    date_created: Option<String>,
}

impl Twilio {
    /// Where Twilio reports this message's status: the callback names the message and its run,
    /// so a report for an attempt whose answer never came still finds its message.
    /// With traces on, it carries the provider call's `traceparent` (hex digits and dashes),
    /// so the callback's span joins the message's trace.
    fn status_callback(&self, m: &Outbound<'_>) -> String {
        let mut url = format!(
            "{}?message_id={}&run={}",
            self.status_callback, m.message_id, m.run
        );
        if let Some(traceparent) = crate::traces::traceparent() {
            url.push_str("&traceparent=");
            url.push_str(&traceparent);
        }
        url
    }

    /// Reads the list of messages to `m.to` from its sender, newest first, until they are
    /// older than `since`; returns those with the same body, oldest first.
    async fn list_since(
        &self,
        m: &Outbound<'_>,
        from: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Candidate>, String> {
        let oldest = since - CLOCK_SLACK;
        let mut url = reqwest::Url::parse(&self.messages_url).map_err(|e| e.to_string())?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("To", m.to);
            // A Messaging Service's messages come from its numbers: the list is read by recipient.
            if !is_messaging_service(from) {
                query.append_pair("From", from);
            }
            query.append_pair("PageSize", &PAGE_SIZE.to_string());
        }
        let mut found = Vec::new();
        for _ in 0..MAX_PAGES {
            let response = self
                .client
                .get(url.clone())
                .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
                .send()
                .await
                .map_err(|e| match classify_transport("twilio", &e) {
                    SendOutcome::Transient { error, .. } => error,
                    _ => "twilio: request failed".to_owned(),
                })?;
            let status = response.status();
            if !status.is_success() {
                let text = capped_text(response, MAX_ERROR_BODY).await;
                return Err(crate::domain::clean_text(
                    &format!("twilio HTTP {} listing messages: {text}", status.as_u16()),
                    crate::domain::MAX_ERROR_TEXT,
                ));
            }
            let (body, cut) = read_capped(response, MAX_PAGE_BODY)
                .await
                .map_err(|e| format!("twilio: reading the message list: {e}"))?;
            if cut {
                return Err("twilio: a page of the message list was larger than 1 MiB".to_owned());
            }
            let page: Page = serde_json::from_slice(&body)
                .map_err(|e| format!("twilio: the message list could not be read: {e}"))?;
            let mut older = false;
            for listed in page.messages {
                let created = listed
                    .date_created
                    .as_deref()
                    .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
                    .map(|d| d.with_timezone(&chrono::Utc));
                if created.is_some_and(|c| c < oldest) {
                    older = true;
                    continue;
                }
                let outbound = listed
                    .direction
                    .as_deref()
                    .is_none_or(|d| d.starts_with("outbound"));
                if outbound && listed.body.as_deref() == Some(m.body) {
                    found.push(Candidate {
                        provider_message_id: listed.sid,
                        status: listed.status.unwrap_or_else(|| "queued".to_owned()),
                    });
                }
            }
            match page.next_page_uri {
                Some(next) if !older && !next.is_empty() => {
                    url = reqwest::Url::parse(&format!("{}{next}", self.base_url))
                        .map_err(|e| format!("twilio: bad next_page_uri: {e}"))?;
                }
                _ => {
                    found.reverse();
                    return Ok(found);
                }
            }
        }
        Err(format!(
            "twilio: more than {} messages to this recipient since the attempt; not looked through",
            PAGE_SIZE as usize * MAX_PAGES
        ))
    }
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
                    refusal: Refusal::Refused,
                };
            };
            let callback = self.status_callback(m);
            // A Messaging Service (`MG...`) picks the number itself.
            let sender = if is_messaging_service(from) {
                "MessagingServiceSid"
            } else {
                "From"
            };
            let form = [
                ("To", m.to),
                (sender, from),
                ("Body", m.body),
                ("StatusCallback", callback.as_str()),
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
            let refused = |refusal| SendOutcome::Rejected {
                error: error.clone(),
                refusal,
            };
            match code.map(twilio_codes::class) {
                // A 5xx is Twilio's own trouble, whatever code it carries.
                _ if status.is_server_error() => classify_status(status, &headers, error),
                Some(CodeClass::Unreachable) => refused(Refusal::Unreachable),
                Some(CodeClass::OptedOut) => refused(Refusal::OptedOut),
                Some(CodeClass::Filtered) => refused(Refusal::Filtered),
                Some(CodeClass::Transient) => SendOutcome::Transient {
                    retry_after: retry_after(&headers),
                    throttled: status == reqwest::StatusCode::TOO_MANY_REQUESTS
                        || code == Some(20429),
                    error,
                },
                Some(CodeClass::Operator) => SendOutcome::OperatorError {
                    account_wide: code == Some(twilio_codes::BAD_CREDENTIALS),
                    code: code.unwrap_or_default(),
                    error,
                },
                Some(CodeClass::Other) | None => classify_status(status, &headers, error),
            }
        }
        .boxed()
    }

    fn lookup<'a>(
        &'a self,
        m: &'a Outbound<'a>,
        since: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Lookup> {
        async move {
            let Some(from) = m.from else {
                // Never sent: there is no sender it could have gone from.
                return Lookup::Candidates(vec![]);
            };
            match self.list_since(m, from, since).await {
                Ok(found) => Lookup::Candidates(found),
                Err(e) => Lookup::Unavailable(e),
            }
        }
        .boxed()
    }
}
