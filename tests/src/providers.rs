//! Provider servers on loopback that speak the real wire formats, record what they receive,
//! and answer as scripted.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::json;
use tokio::net::TcpListener;

/// One request as the provider saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: DateTime<Utc>,
    pub path: String,
    pub headers: HeaderMap,
    /// Form fields (Twilio).
    pub form: HashMap<String, String>,
    pub body: Bytes,
}

/// How the next request is answered.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The provider's normal success answer.
    Accept,
    /// A Twilio-style error body with this HTTP status and error code.
    TwilioError {
        status: u16,
        code: u32,
        message: String,
    },
    /// Any status, body and headers.
    Raw {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Wait this long before answering with success (past a client's timeout, it hangs).
    /// The message is created when the request arrives, as Twilio creates it whether or not
    /// its answer reaches the caller.
    Hang(Duration),
    /// The request never gets through: nothing is created; after this long, a 503.
    Lost(Duration),
}

impl Reply {
    /// A 503 with a plain body, as a provider that is down answers.
    pub fn unavailable() -> Self {
        Self::Raw {
            status: 503,
            body: "upstream unavailable".into(),
            headers: vec![],
        }
    }
}

/// A message Twilio holds (what its Message list resource shows).
#[derive(Debug, Clone)]
pub struct TwilioMessage {
    pub sid: String,
    pub to: String,
    pub from: String,
    pub body: String,
    pub status: String,
    pub created: DateTime<Utc>,
}

#[derive(Default)]
struct MockState {
    received: Vec<Received>,
    script: VecDeque<Reply>,
    /// Every request to one of these recipients gets its reply, whatever the script says.
    by_recipient: HashMap<String, Reply>,
    /// Every request from one of these senders gets its reply (a number that cannot send).
    by_sender: HashMap<String, Reply>,
    /// The answer when the script is empty (`None`: accept).
    default: Option<Reply>,
    /// Messages created, oldest first.
    created: Vec<TwilioMessage>,
    /// The list resource answers this status instead of the list (`None`: it works).
    list_fails: Option<u16>,
    /// List requests received.
    list_calls: usize,
}

/// A Twilio Messages API on loopback: checks HTTP Basic auth like Twilio (20003 on a wrong
/// credential) and answers 201 with a Twilio message resource.
#[derive(Clone)]
pub struct TwilioMock {
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    state: Arc<Mutex<MockState>>,
}

impl TwilioMock {
    pub async fn start() -> Self {
        let account_sid = format!("AC{}", crate::unique("").trim_start_matches('_').repeat(2));
        let auth_token = crate::unique("tok");
        let state = Arc::new(Mutex::new(MockState::default()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let mock = Self {
            base_url,
            account_sid,
            auth_token,
            state,
        };
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                post(twilio_create).get(twilio_list),
            )
            .with_state(mock.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        mock
    }

    /// Answers the next requests with these replies, in order; then `Accept` again.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// The messages Twilio holds for `to`: what was really sent, however many requests asked.
    pub fn created_to(&self, to: &str) -> Vec<TwilioMessage> {
        self.state
            .lock()
            .unwrap()
            .created
            .iter()
            .filter(|m| m.to == to)
            .cloned()
            .collect()
    }

    /// Makes the Message list resource answer `status` (`None`: answer again).
    pub fn list_fails(&self, status: Option<u16>) {
        self.state.lock().unwrap().list_fails = status;
    }

    /// How many list requests arrived.
    pub fn list_calls(&self) -> usize {
        self.state.lock().unwrap().list_calls
    }

    /// Answers every request to `to` with `reply`, for good (a number whose carrier keeps
    /// failing).
    pub fn always_for(&self, to: &str, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .by_recipient
            .insert(to.to_owned(), reply);
    }

    /// Answers every request from `from` with `reply` (a sender the account cannot use), or
    /// as usual again with `None` (the operator fixed it).
    pub fn for_sender(&self, from: &str, reply: Option<Reply>) {
        let mut state = self.state.lock().unwrap();
        match reply {
            Some(reply) => state.by_sender.insert(from.to_owned(), reply),
            None => state.by_sender.remove(from),
        };
    }

    /// Answers every request with `reply` while the script is empty (Twilio down), or
    /// accepts again with `None`.
    pub fn otherwise(&self, reply: Option<Reply>) {
        self.state.lock().unwrap().default = reply;
    }

    /// The requests that asked to send to `to`, oldest first.
    pub fn sent_to(&self, to: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.form.get("To").map(String::as_str) == Some(to))
            .collect()
    }

    /// The bodies of the texts sent to `to`, oldest first.
    pub fn bodies_to(&self, to: &str) -> Vec<String> {
        self.sent_to(to)
            .iter()
            .map(|r| r.form.get("Body").cloned().unwrap_or_default())
            .collect()
    }

    /// Waits until a request asked to send `body` to `to`; returns it.
    pub async fn wait_for_sms(&self, to: &str, body: &str, within: Duration) -> Received {
        crate::eventually_ok(
            within,
            &format!("Twilio is asked to send {body:?} to {to}"),
            || async {
                self.sent_to(to)
                    .into_iter()
                    .find(|r| r.form.get("Body").map(String::as_str) == Some(body))
                    .ok_or_else(|| format!("texts to {to}: {:?}", self.bodies_to(to)))
            },
        )
        .await
    }

    /// How many requests asked to send to `to`.
    pub fn calls_to(&self, to: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .received
            .iter()
            .filter(|r| r.form.get("To").map(String::as_str) == Some(to))
            .count()
    }

    /// Configures `config` to send SMS through this mock.
    pub fn configure(&self, config: &mut herald_core::Config) {
        config.sms_provider = herald_core::config::SmsProviderKind::Twilio;
        config.twilio.account_sid = Some(self.account_sid.clone());
        config.twilio.auth_token = Some(herald_core::config::Secret::new(self.auth_token.clone()));
        config.twilio.base_url = self.base_url.clone();
    }
}

async fn twilio_create(
    State(mock): State<TwilioMock>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = url_decode_form(&body);
    let received = Received {
        at: Utc::now(),
        path: format!("/2010-04-01/Accounts/{sid}/Messages.json"),
        headers: headers.clone(),
        form: form.clone(),
        body,
    };
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", mock.account_sid, mock.auth_token))
    );
    let authorized = sid == mock.account_sid
        && headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str());
    let reply = {
        let mut state = mock.state.lock().unwrap();
        state.received.push(received);
        let to = form.get("To").cloned().unwrap_or_default();
        let from = form.get("From").cloned().unwrap_or_default();
        match state
            .by_sender
            .get(&from)
            .or_else(|| state.by_recipient.get(&to))
        {
            Some(reply) => reply.clone(),
            None => state
                .script
                .pop_front()
                .or_else(|| state.default.clone())
                .unwrap_or(Reply::Accept),
        }
    };
    if !authorized {
        return twilio_error(401, 20003, "Authenticate");
    }
    if !form.contains_key("From") && !form.contains_key("MessagingServiceSid") {
        return twilio_error(
            400,
            21603,
            "A 'From' or 'MessagingServiceSid' parameter is required",
        );
    }
    match reply {
        Reply::Accept => twilio_created(&mock, &form),
        Reply::Hang(d) => {
            let created = twilio_created(&mock, &form);
            tokio::time::sleep(d).await;
            created
        }
        Reply::Lost(d) => {
            tokio::time::sleep(d).await;
            twilio_error(503, 20503, "Service Unavailable")
        }
        Reply::TwilioError {
            status,
            code,
            message,
        } => twilio_error(status, code, &message),
        Reply::Raw {
            status,
            body,
            headers,
        } => {
            let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
            for (k, v) in headers {
                r.headers_mut().insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            r
        }
    }
}

/// Twilio's Message list resource: messages filtered by `To` and `From`, newest first, in
/// pages of `PageSize` (default 50) with Twilio's paging fields.
async fn twilio_list(
    State(mock): State<TwilioMock>,
    Path(sid): Path<String>,
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", mock.account_sid, mock.auth_token))
    );
    if sid != mock.account_sid
        || headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str())
    {
        return twilio_error(401, 20003, "Authenticate");
    }
    let (failing, mut matching) = {
        let mut state = mock.state.lock().unwrap();
        state.list_calls += 1;
        let matching: Vec<TwilioMessage> = state
            .created
            .iter()
            .filter(|m| q.get("To").is_none_or(|to| *to == m.to))
            .filter(|m| q.get("From").is_none_or(|from| *from == m.from))
            .cloned()
            .collect();
        (state.list_fails, matching)
    };
    if let Some(status) = failing {
        return twilio_error(status, 20500, "Internal Server Error");
    }
    matching.reverse();
    let size: usize = q
        .get("PageSize")
        .and_then(|p| p.parse().ok())
        .unwrap_or(50)
        .clamp(1, 1000);
    let page: usize = q.get("Page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let base = format!("/2010-04-01/Accounts/{sid}/Messages.json");
    let filter: String = ["To", "From"]
        .iter()
        .filter_map(|k| q.get(*k).map(|v| format!("{k}={}", v.replace('+', "%2B"))))
        .collect::<Vec<_>>()
        .join("&");
    let page_uri = |p: usize| {
        format!(
            "{base}?{filter}&PageSize={size}&Page={p}&PageToken=PA{}",
            p * size
        )
    };
    let slice: Vec<serde_json::Value> = matching
        .iter()
        .skip(page * size)
        .take(size)
        .map(|m| {
            json!({
                "account_sid": mock.account_sid,
                "api_version": "2010-04-01",
                "body": m.body,
                "date_created": m.created.to_rfc2822(),
                "date_sent": m.created.to_rfc2822(),
                "date_updated": m.created.to_rfc2822(),
                "direction": "outbound-api",
                "error_code": null,
                "error_message": null,
                "from": m.from,
                "messaging_service_sid": null,
                "num_media": "0",
                "num_segments": twilio_segments(&m.body).to_string(),
                "price": null,
                "price_unit": "USD",
                "sid": m.sid,
                "status": m.status,
                "to": m.to,
                "uri": format!("{base}/{}.json", m.sid).replace("Messages.json/", "Messages/"),
            })
        })
        .collect();
    let more = matching.len() > (page + 1) * size;
    let body = json!({
        "end": page * size + slice.len().saturating_sub(1),
        "first_page_uri": page_uri(0),
        "messages": slice,
        "next_page_uri": if more { Some(page_uri(page + 1)) } else { None },
        "page": page,
        "page_size": size,
        "previous_page_uri": if page > 0 { Some(page_uri(page - 1)) } else { None },
        "start": page * size,
        "uri": page_uri(page),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// Decodes an `application/x-www-form-urlencoded` body.
pub fn url_decode_form(body: &[u8]) -> HashMap<String, String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// Creates the message Twilio would hold for this request and answers 201 with it.
fn twilio_created(mock: &TwilioMock, form: &HashMap<String, String>) -> Response {
    let account_sid = mock.account_sid.as_str();
    let sid = format!("SM{}", crate::unique("").repeat(2));
    let now = Utc::now().to_rfc2822();
    mock.state.lock().unwrap().created.push(TwilioMessage {
        sid: sid.clone(),
        to: form.get("To").cloned().unwrap_or_default(),
        // Through a Messaging Service, Twilio picks the number: the mock keeps the service.
        from: form
            .get("From")
            .or_else(|| form.get("MessagingServiceSid"))
            .cloned()
            .unwrap_or_default(),
        body: form.get("Body").cloned().unwrap_or_default(),
        status: "queued".to_owned(),
        created: Utc::now(),
    });
    let body = json!({
        "account_sid": account_sid,
        "api_version": "2010-04-01",
        "body": form.get("Body"),
        "date_created": now,
        "date_sent": null,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": form.get("From"),
        "messaging_service_sid": form.get("MessagingServiceSid"),
        "num_media": "0",
        "num_segments": twilio_segments(form.get("Body").map_or("", String::as_str)).to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {"media": format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json")},
        "to": form.get("To"),
        "uri": format!("/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json"),
    });
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// GSM 03.38's basic character set: one septet each.
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡\
ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Its extension table: an escape and the character, two septets each.
const GSM_EXTENSION: &str = "^{}\\[~]|€\u{c}";

/// The segments Twilio bills for `body` (its `num_segments`), counted as Twilio documents
/// it, independently of Herald's own count: GSM-7 when every character is in GSM 03.38 (160
/// septets in one segment, else 153 per segment), else UCS-2 (70 UTF-16 units in one segment,
/// else 67 per segment).
pub fn twilio_segments(body: &str) -> u32 {
    let septets: Option<u32> = body
        .chars()
        .map(|c| {
            if GSM_BASIC.contains(c) {
                Some(1)
            } else if GSM_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    let (units, single, per) = match septets {
        Some(n) => (n, 160, 153),
        None => (body.encode_utf16().count() as u32, 70, 67),
    };
    if units <= single {
        1
    } else {
        units.div_ceil(per)
    }
}

fn twilio_error(status: u16, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    });
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

/// `(role, content)` of each chat message a model was sent (a request [`ModelMock`] saw).
pub fn chat(request: &serde_json::Value) -> Vec<(String, String)> {
    request["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in the chat request: {request}"))
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// An expected turn of [`chat`].
pub fn turn(role: &str, content: &str) -> (String, String) {
    (role.to_owned(), content.to_owned())
}

/// How the model endpoint answers the next chat completion.
#[derive(Debug, Clone)]
pub enum ModelReply {
    /// A completion with this text.
    Text(String),
    /// An HTTP error status (429 and 5xx are retried once by Herald).
    Status(u16),
    /// Answer after this long (past Herald's timeout, it is a timeout).
    Hang(Duration),
}

#[derive(Default)]
struct ModelState {
    received: Vec<serde_json::Value>,
    /// The `usage` of every completion answered, oldest first.
    reported: Vec<serde_json::Value>,
    script: VecDeque<ModelReply>,
    default: Option<ModelReply>,
}

/// An OpenAI-compatible chat completions endpoint (`POST {base}/chat/completions`) on
/// loopback, answering as scripted and recording every request body.
#[derive(Clone)]
pub struct ModelMock {
    /// The base URL to configure, ending in `/v1` like OpenAI's, Ollama's and vLLM's.
    pub base_url: String,
    pub model: String,
    state: Arc<Mutex<ModelState>>,
}

impl ModelMock {
    /// An endpoint that answers `default` whenever its script is empty.
    pub async fn start(model: &str, default: ModelReply) -> Self {
        let state = Arc::new(Mutex::new(ModelState {
            default: Some(default),
            ..Default::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let mock = Self {
            base_url,
            model: model.to_owned(),
            state,
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(model_complete))
            .with_state(mock.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        mock
    }

    pub fn script(&self, replies: impl IntoIterator<Item = ModelReply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// Request bodies received, oldest first.
    pub fn received(&self) -> Vec<serde_json::Value> {
        self.state.lock().unwrap().received.clone()
    }

    /// The `usage` objects of the completions it answered, oldest first.
    pub fn reported_usage(&self) -> Vec<serde_json::Value> {
        self.state.lock().unwrap().reported.clone()
    }

    /// An endpoint configuration pointing at this mock.
    pub fn endpoint(&self) -> herald_core::config::LlmEndpoint {
        herald_core::config::LlmEndpoint {
            base_url: self.base_url.clone(),
            api_key: Some(herald_core::config::Secret::new("sk-test".to_owned())),
            model: self.model.clone(),
        }
    }
}

async fn model_complete(State(mock): State<ModelMock>, body: Bytes) -> Response {
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let reply = {
        let mut state = mock.state.lock().unwrap();
        state.received.push(json.clone());
        state
            .script
            .pop_front()
            .or_else(|| state.default.clone())
            .unwrap_or(ModelReply::Status(500))
    };
    let text = match reply {
        ModelReply::Text(t) => t,
        ModelReply::Status(code) => {
            let body =
                json!({"error": {"message": "the model is unavailable", "type": "server_error"}});
            return (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response();
        }
        ModelReply::Hang(d) => {
            tokio::time::sleep(d).await;
            "late answer".to_owned()
        }
    };
    let usage = json!({"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49});
    mock.state.lock().unwrap().reported.push(usage.clone());
    let body = json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": Utc::now().timestamp(),
        "model": json["model"].as_str().unwrap_or(&mock.model),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": usage,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// A webhook receiver on loopback: records every request by path and answers by path, with
/// any status and body (bytes, so a test can answer what Postgres cannot store).
#[derive(Clone, Default)]
pub struct WebhookReceiver {
    pub base_url: String,
    state: Arc<Mutex<ReceiverState>>,
}

#[derive(Default)]
struct ReceiverState {
    got: Vec<(String, HeaderMap, Bytes)>,
    answers: HashMap<String, (u16, Bytes)>,
    /// Statuses answered first, in order, before the path's standing answer.
    scripts: HashMap<String, VecDeque<u16>>,
    /// Paths whose requests are recorded and never answered (an endpoint that hangs: the
    /// caller's own timeout ends each request).
    hanging: HashSet<String>,
}

impl WebhookReceiver {
    /// A receiver that answers 200 to every path until told otherwise.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Self {
            base_url: format!("http://{}", listener.local_addr().unwrap()),
            state: Arc::default(),
        };
        let state = receiver.state.clone();
        let app = Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let path = uri.path().to_owned();
                    let hangs = {
                        let mut s = state.lock().unwrap();
                        s.got.push((path.clone(), headers.clone(), body.clone()));
                        s.hanging.contains(&path)
                    };
                    if hangs {
                        std::future::pending::<()>().await;
                    }
                    let mut s = state.lock().unwrap();
                    let scripted = s.scripts.get_mut(&path).and_then(VecDeque::pop_front);
                    let (status, body) = match scripted {
                        Some(status) => (status, Bytes::from_static(b"receiver says so")),
                        None => s
                            .answers
                            .get(&path)
                            .cloned()
                            .unwrap_or((200, Bytes::from_static(b"ok"))),
                    };
                    (StatusCode::from_u16(status).unwrap(), body).into_response()
                }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Answers every request to `path` with this status and body.
    pub fn answer(&self, path: &str, status: u16, body: impl Into<Bytes>) {
        self.state
            .lock()
            .unwrap()
            .answers
            .insert(path.to_owned(), (status, body.into()));
    }

    /// Records every request to `path` and never answers it (an endpoint that hangs).
    pub fn hang(&self, path: &str) {
        self.state.lock().unwrap().hanging.insert(path.to_owned());
    }

    /// Answers the next requests to `path` with these statuses, in order, then as before.
    pub fn answer_first(&self, path: &str, statuses: impl IntoIterator<Item = u16>) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .entry(path.to_owned())
            .or_default()
            .extend(statuses);
    }

    /// The headers and bodies of the requests received at `path`, oldest first.
    pub fn requests(&self, path: &str) -> Vec<(HeaderMap, Bytes)> {
        self.state
            .lock()
            .unwrap()
            .got
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, h, b)| (h.clone(), b.clone()))
            .collect()
    }

    /// The bodies received at `path`, oldest first.
    pub fn bodies(&self, path: &str) -> Vec<Bytes> {
        self.requests(path).into_iter().map(|(_, b)| b).collect()
    }

    /// The `webhook-id` headers of the requests received at `path`, oldest first.
    pub fn webhook_ids(&self, path: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .got
            .iter()
            .filter(|(p, _, _)| p == path)
            .filter_map(|(_, h, _)| h.get("webhook-id")?.to_str().ok().map(str::to_owned))
            .collect()
    }
}

/// A server on loopback that answers every request with `status` and an endless stream of
/// filler, counting how many bytes the client made it produce: a receiver (or a provider)
/// answering with a body far larger than anyone should read.
#[derive(Clone)]
pub struct FloodServer {
    pub base_url: String,
    produced: Arc<std::sync::atomic::AtomicU64>,
    requests: Arc<std::sync::atomic::AtomicU64>,
}

impl FloodServer {
    /// Each answer is `status` with a body of `bytes` filler bytes, produced only as fast as
    /// the client reads them.
    pub async fn start(status: u16, bytes: u64) -> Self {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Self {
            base_url: format!("http://{}", listener.local_addr().unwrap()),
            produced: Arc::default(),
            requests: Arc::default(),
        };
        let (produced, requests) = (server.produced.clone(), server.requests.clone());
        let app = Router::new().fallback(move || {
            let produced = produced.clone();
            requests.fetch_add(1, Ordering::SeqCst);
            async move {
                const CHUNK: usize = 64 * 1024;
                let chunk = Bytes::from(vec![b'x'; CHUNK]);
                let chunks = bytes.div_ceil(CHUNK as u64);
                let stream = futures_util::stream::iter(0..chunks).map(move |_| {
                    produced.fetch_add(CHUNK as u64, Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(chunk.clone())
                });
                let mut r = axum::body::Body::from_stream(stream).into_response();
                *r.status_mut() = StatusCode::from_u16(status).unwrap();
                r.headers_mut().insert(
                    axum::http::header::CONTENT_LENGTH,
                    (chunks * CHUNK as u64).to_string().parse().unwrap(),
                );
                r
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        server
    }

    /// Filler bytes produced so far (what the clients read, plus what socket buffers hold).
    pub fn produced(&self) -> u64 {
        self.produced.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}
