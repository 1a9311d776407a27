//! [`TestApp`]: the real API (and, when asked, the real worker and scheduler) started
//! in-process on a fresh database and Redis prefix, with typed helpers for the tests.

use std::{sync::Arc, time::Duration};

use herald_core::{
    Config,
    config::{LogFormat, Secret},
};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    eventually, eventually_ok, fresh_database, redis_url, unique,
    views::{
        ContactView, ConversationView, CreatedTenantView, DeadLetterView, GroupView, MessageView,
        Page, QueueStatsView, SubscriptionView, view,
    },
};

/// A tenant created through the admin API.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub api_key: String,
    pub key_prefix: String,
    pub webhook_secret: String,
    pub sms_from: Option<String>,
}

pub struct TestApp {
    pub config: Arc<Config>,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub http: reqwest::Client,
    pub db: PgPool,
    pub redis: herald_core::queue::Redis,
    pub ops_token: String,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A client that keeps redirects for the test to see.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

static LOGS: std::sync::Once = std::sync::Once::new();

/// Logs (captured by the test runner) and the TLS provider, once per test process.
pub fn init_logs() {
    LOGS.call_once(|| init_logs_with(None));
}

/// [`init_logs`] exporting every span of this process to `collector` as OpenTelemetry
/// traces, in batches a tenth of a second apart. It must come first in its process (nextest
/// runs each test in its own): once logging has started, it cannot add the exporter.
pub fn init_logs_with_traces(collector: &crate::otlp::OtlpCollector) {
    let mut first = false;
    LOGS.call_once(|| {
        first = true;
        let mut export = herald_core::traces::Export::new(
            &format!("{}/v1/traces", collector.endpoint),
            "herald-tests",
        );
        export.every = Duration::from_millis(100);
        init_logs_with(Some(&export));
    });
    assert!(
        first,
        "traces are set up before anything else logs in this process"
    );
}

fn init_logs_with(traces: Option<&herald_core::traces::Export>) {
    herald_core::install_crypto();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,sqlx=warn".to_owned());
    herald_core::telemetry::init_with(LogFormat::Pretty, &filter, traces);
}

/// A configuration for one test: its own database and Redis prefix, quick retries, short
/// leases, and an ops token.
pub async fn test_config() -> Config {
    init_logs();
    let db = fresh_database().await;
    let mut config = Config::for_urls(&db, &redis_url());
    config.queue_prefix = unique("t");
    config.ops_token = Some(Secret::new(unique("ops-token-")));
    config.retry_base = Duration::from_millis(50);
    config.retry_max = Duration::from_millis(400);
    config.lease = Duration::from_millis(2000);
    config.provider_timeout = Duration::from_millis(2000);
    config.shutdown_timeout = Duration::from_secs(5);
    config.worker_concurrency = 20;
    config.database_pool_size = 10;
    config.webhook_allow_private = true;
    // Many workers share one test process: any free port.
    config.worker_metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config.scheduler_metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    config
}

impl TestApp {
    /// The API alone.
    pub async fn start() -> Self {
        Self::start_with(test_config().await).await
    }

    /// The API with this configuration (built from [`test_config`]).
    pub async fn start_with(mut config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        config.listen = addr;
        config.public_url = base.clone();
        let config = Arc::new(config);
        let shutdown = CancellationToken::new();
        let api = tokio::spawn(herald_api::serve(
            config.clone(),
            listener,
            shutdown.clone(),
        ));
        let db = PgPool::connect(config.database_url.expose()).await.unwrap();
        let redis = herald_core::queue::connect(config.redis_url.expose()).unwrap();
        let app = Self {
            ops_token: config
                .ops_token
                .as_ref()
                .map(|t| t.expose().clone())
                .unwrap_or_default(),
            config,
            base,
            http: reqwest::Client::new(),
            db,
            redis,
            shutdown,
            tasks: vec![api],
        };
        eventually(
            Duration::from_secs(30),
            "the API answers /healthz",
            || async {
                let r = app.http.get(app.url("/healthz")).send().await.ok()?;
                (r.status() == StatusCode::OK).then_some(())
            },
        )
        .await;
        app
    }

    /// The API and the worker, sending SMS through `twilio`.
    pub async fn start_with_twilio(
        mut config: Config,
        twilio: &crate::providers::TwilioMock,
    ) -> Self {
        twilio.configure(&mut config);
        let mut app = Self::start_with(config).await;
        app.start_worker();
        app
    }

    /// Starts the real worker in this process, with the app's configuration.
    pub fn start_worker(&mut self) {
        let task = tokio::spawn(herald_worker::run(
            self.config.clone(),
            self.shutdown.child_token(),
        ));
        self.tasks.push(task);
    }

    /// Starts the real scheduler in this process, with the app's configuration.
    pub fn start_scheduler(&mut self) {
        let task = tokio::spawn(herald_scheduler::run(
            self.config.clone(),
            self.shutdown.child_token(),
        ));
        self.tasks.push(task);
    }

    /// Stops everything started in-process and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = req.send().await.expect("the API answers");
        let status = r.status();
        let text = r.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.http.post(self.url(path)).bearer_auth(key).json(body))
            .await
    }

    /// POST with a raw body, for malformed-request tests.
    pub async fn post_raw(
        &self,
        path: &str,
        key: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(self.url(path))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn post_with_headers(
        &self,
        path: &str,
        key: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self.http.post(self.url(path)).bearer_auth(key).json(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req).await
    }

    pub async fn patch(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.http.patch(self.url(path)).bearer_auth(key).json(body))
            .await
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.send(self.http.get(self.url(path)).bearer_auth(key))
            .await
    }

    pub async fn delete(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.send(self.http.delete(self.url(path)).bearer_auth(key))
            .await
    }

    /// Creates a tenant through the admin API (panics unless it answers 201).
    pub async fn create_tenant(&self, body: Value) -> Tenant {
        let t: CreatedTenantView = self
            .post_as(
                "/v1/admin/tenants",
                &self.ops_token,
                &body,
                StatusCode::CREATED,
            )
            .await;
        Tenant {
            id: t.id,
            api_key: t.api_key,
            key_prefix: t.key_prefix,
            webhook_secret: t.webhook_secret,
            sms_from: t.sms_from,
        }
    }

    /// A tenant with its own `sms_from` and `email_from`, no quiet hours (so tests do not
    /// depend on the time of day they run at) and an SMS pace of 1000 segments per second.
    pub async fn tenant(&self) -> Tenant {
        self.tenant_with(json!({})).await
    }

    /// [`Self::tenant`] with `extra` fields of the create request set over its defaults
    /// (`timezone`, `quiet_hours`, `missed_call_text`, ...).
    pub async fn tenant_with(&self, extra: Value) -> Tenant {
        let n: u64 = rand::random::<u64>() % 1_000_000_000;
        let mut body = json!({
            "name": "Acme Dental",
            "sms_from": format!("+1500{n:09}"),
            "email_from": "Acme Dental <hello@acme.test>",
            "quiet_hours": null,
            // Tests of other things send faster than a long code's 1 segment per second.
            "sms_mps": 1000,
        });
        for (k, v) in extra.as_object().expect("extra fields are an object") {
            body[k] = v.clone();
        }
        self.create_tenant(body).await
    }

    /// Registers an event endpoint of the tenant at `url` for these event types (asserting
    /// 201); returns its id.
    pub async fn create_endpoint(&self, tenant: &Tenant, url: &str, events: &[&str]) -> String {
        let (status, created) = self
            .post(
                "/v1/endpoints",
                &tenant.api_key,
                &json!({"url": url, "events": events}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created["id"].as_str().unwrap().to_owned()
    }

    /// A conversation a person has taken over, whose contact (made for `phone`) then texted
    /// `body`: it waits for a reply, and no AI answers it whatever runs. Returns the
    /// contact's id.
    pub async fn waiting_conversation(
        &self,
        twilio: &crate::providers::TwilioMock,
        tenant: &Tenant,
        phone: &str,
        body: &str,
    ) -> String {
        let (status, contact) = self
            .post(
                "/v1/contacts",
                &tenant.api_key,
                &json!({"phone": phone, "name": "Ann Example"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{contact}");
        let id = contact["id"].as_str().unwrap().to_owned();
        let (status, taken) = self
            .post(
                &format!("/v1/conversations/{id}/takeover"),
                &tenant.api_key,
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{taken}");
        self.text(twilio, tenant, phone, body).await;
        id
    }

    /// `POST /v1/groups` (asserting 201); returns the group.
    pub async fn new_group(&self, tenant: &Tenant, name: &str) -> GroupView {
        self.post_as(
            "/v1/groups",
            &tenant.api_key,
            &json!({"name": name}),
            StatusCode::CREATED,
        )
        .await
    }

    /// `PUT /v1/groups/{group}/members/{contact}`; returns the status.
    pub async fn put_member(&self, tenant: &Tenant, group: &str, contact: &str) -> StatusCode {
        let r = self
            .http
            .put(self.url(&format!("/v1/groups/{group}/members/{contact}")))
            .bearer_auth(&tenant.api_key)
            .send()
            .await
            .unwrap();
        r.status()
    }

    /// A daily subscription of the contact at `at` (local `HH:MM`) with a static text
    /// (asserting 201).
    pub async fn subscribe(&self, tenant: &Tenant, contact_id: &str, at: &str) -> SubscriptionView {
        self.post_as(
            "/v1/subscriptions",
            &tenant.api_key,
            &json!({
                "contact_id": contact_id,
                "send_at_local": at,
                "content": {"kind": "static", "body": "Good morning."},
            }),
            StatusCode::CREATED,
        )
        .await
    }

    /// Sends a webhook message with this JSON body to `url` (asserting 202).
    pub async fn post_webhook(&self, tenant: &Tenant, url: &str, body: Value) -> MessageView {
        self.post_as(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "webhook", "to": url, "body": body}),
            StatusCode::ACCEPTED,
        )
        .await
    }

    /// Sends an SMS (asserting 202) and returns the message.
    pub async fn post_sms(&self, tenant: &Tenant, to: &str, body: &str) -> MessageView {
        let (status, m) = self
            .post(
                "/v1/messages",
                &tenant.api_key,
                &json!({"channel": "sms", "to": to, "body": body}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "send sms: {m}");
        view(&m)
    }

    /// Waits until the message reads back with `status`; returns it with its events.
    pub async fn wait_for_status(
        &self,
        tenant: &Tenant,
        id: &str,
        status: &str,
        within: Duration,
    ) -> MessageView {
        eventually_ok(
            within,
            &format!("message {id} becomes {status}"),
            || async {
                let m = self.message(tenant, id).await;
                if m.status == status {
                    Ok(m)
                } else {
                    Err(format!("read {m}"))
                }
            },
        )
        .await
    }

    /// Reads a message (asserting 200), with its events.
    pub async fn message(&self, tenant: &Tenant, id: &str) -> MessageView {
        self.get_as(&format!("/v1/messages/{id}"), &tenant.api_key)
            .await
    }

    /// GETs `path` (asserting 200) and reads the body as `T`.
    pub async fn get_as<T: DeserializeOwned>(&self, path: &str, key: &str) -> T {
        let (code, body) = self.get(path, key).await;
        assert_eq!(code, StatusCode::OK, "GET {path}: {body}");
        view(&body)
    }

    /// POSTs `body` to `path` (asserting `expected`) and reads the answer as `T`.
    pub async fn post_as<T: DeserializeOwned>(
        &self,
        path: &str,
        key: &str,
        body: &Value,
        expected: StatusCode,
    ) -> T {
        let (code, answer) = self.post(path, key, body).await;
        assert_eq!(code, expected, "POST {path} {body}: {answer}");
        view(&answer)
    }

    /// `GET /v1/contacts/{id}` (asserting 200).
    pub async fn contact(&self, tenant: &Tenant, id: &str) -> ContactView {
        self.get_as(&format!("/v1/contacts/{id}"), &tenant.api_key)
            .await
    }

    /// `GET /v1/conversations/{contact_id}` (asserting 200).
    pub async fn conversation(&self, tenant: &Tenant, contact_id: &str) -> ConversationView {
        self.get_as(&format!("/v1/conversations/{contact_id}"), &tenant.api_key)
            .await
    }

    /// `GET /v1/dead-letters/{id}` with `key` (asserting 200).
    pub async fn dead_letter(&self, key: &str, id: &str) -> DeadLetterView {
        self.get_as(&format!("/v1/dead-letters/{id}"), key).await
    }

    /// The dead letters `key` can see (one page of up to 100; `query` is `&reason=...` and
    /// the like).
    pub async fn dead_letters(&self, key: &str, query: &str) -> Vec<DeadLetterView> {
        let page: Page<DeadLetterView> = self
            .get_as(&format!("/v1/dead-letters?limit=100{query}"), key)
            .await;
        page.data
    }

    /// A page of the tenant's messages, newest first (`query` is `&status=...` and the like).
    pub async fn messages(&self, tenant: &Tenant, query: &str) -> Page<MessageView> {
        self.get_as(&format!("/v1/messages?limit=100{query}"), &tenant.api_key)
            .await
    }

    /// `POST /v1/messages/{id}/cancel` with the tenant's key.
    pub async fn cancel(&self, tenant: &Tenant, id: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/v1/messages/{id}/cancel"),
            &tenant.api_key,
            &json!({}),
        )
        .await
    }

    /// The `deliveries` entry of `GET /v1/admin/queues` (asserting 200).
    pub async fn deliveries_stats(&self) -> QueueStatsView {
        self.queue_stats("deliveries").await
    }

    /// The entry of `queue` in `GET /v1/admin/queues` (asserting 200).
    pub async fn queue_stats(&self, queue: &str) -> QueueStatsView {
        let qs: Vec<QueueStatsView> = self.get_as("/v1/admin/queues", &self.ops_token).await;
        qs.iter()
            .find(|q| q.name == queue)
            .cloned()
            .unwrap_or_else(|| panic!("no {queue} queue in {qs:?}"))
    }

    /// Waits until the `deliveries` queue has nothing pending, scheduled or running, and at
    /// least `completed` jobs completed in the last minute; returns the stats.
    pub async fn wait_for_drained_queue(&self, completed: u64, within: Duration) -> QueueStatsView {
        let what = format!("the deliveries queue drains after {completed} completed jobs");
        eventually_ok(within, &what, || async {
            let q = self.deliveries_stats().await;
            if q.is_idle() && q.completed_last_minute >= completed {
                Ok(q)
            } else {
                Err(format!("stats {q}"))
            }
        })
        .await
    }

    /// Waits until the outbox sweep of `queue` (`deliveries`, `ai-replies`) has gone past the
    /// transaction that inserted `message_id`: from then on only the reconcile would queue it
    /// again.
    pub async fn wait_for_outbox_past(&self, queue: &str, message_id: &str, within: Duration) {
        eventually(within, "the outbox sweep passes the message", || async {
            let past: Option<bool> = sqlx::query_scalar(
                "SELECT w.last_xid > m.created_xid FROM outbox_watermarks w, messages m
                 WHERE w.name = $1 AND m.id = $2",
            )
            .bind(queue)
            .bind(message_id)
            .fetch_optional(&self.db)
            .await
            .unwrap()
            .flatten();
            past.filter(|p| *p)
        })
        .await;
    }

    /// Logs in to the dashboard with the ops token through `http` (a client that keeps
    /// redirects, [`no_redirects`]); returns the session cookie (`name=value`).
    pub async fn ops_login(&self, http: &reqwest::Client) -> String {
        let r = http
            .post(self.url("/ops/login"))
            .form(&[("token", self.ops_token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "the ops login");
        let cookie = r.headers()[reqwest::header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        cookie.split(';').next().unwrap().to_owned()
    }

    /// Rows in `messages`, to prove a rejected request created nothing.
    pub async fn message_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM messages")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Rows in `contacts`, to prove a rejected request created nothing.
    pub async fn contact_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM contacts")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Redis keys of this app's `deliveries` queue, to prove a rejected request queued nothing.
    pub async fn queue_keys(&self) -> Vec<String> {
        let pattern = format!("{{{}:deliveries}}*", self.config.queue_prefix);
        let mut keys = crate::scan_keys(&self.redis, &pattern).await;
        // Not a job: the partitions in use, which every process records at start.
        keys.retain(|k| !k.ends_with("}:partitions"));
        keys
    }

    /// POSTs a form to `path` signed as Twilio signs it with `auth_token`; returns the status
    /// and body.
    pub async fn twilio_post(
        &self,
        path: &str,
        auth_token: &str,
        params: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let url = self.url(path);
        let signature = herald_core::providers::twilio_signature::compute(auth_token, &url, &owned);
        let r = self
            .http
            .post(&url)
            .header("X-Twilio-Signature", signature)
            .form(&owned)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// Posts `form` to the Twilio webhook at `path` forged in each way a forger could, and
    /// asserts each is refused with 403: signed with the wrong token (answered
    /// `invalid_signature`), unsigned, signed by `auth_token` for `other_form` (a tampered
    /// body), and signed by `auth_token` for `form` at `other_path` (replayed elsewhere).
    pub async fn assert_forged_twilio_posts_refused(
        &self,
        path: &str,
        auth_token: &str,
        form: &[(String, String)],
        other_form: &[(String, String)],
        other_path: &str,
    ) {
        use herald_core::providers::twilio_signature::compute;

        let borrowed: Vec<(&str, &str)> =
            form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (status, body) = self
            .twilio_post(path, "not-the-auth-token", &borrowed)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "wrong token: {body}");
        let error: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
        assert_eq!(
            crate::views::api_error(&error).code,
            "invalid_signature",
            "{body}"
        );

        let url = self.url(path);
        let forgeries = [
            ("missing signature", None),
            ("tampered body", Some(compute(auth_token, &url, other_form))),
            (
                "signed for another URL",
                Some(compute(auth_token, &self.url(other_path), form)),
            ),
        ];
        for (what, signature) in forgeries {
            let mut request = self.http.post(&url).form(form);
            if let Some(signature) = signature {
                request = request.header("X-Twilio-Signature", signature);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}");
        }
    }

    /// An inbound text from `from` to the tenant's number, as Twilio's webhook delivers it.
    /// A text from `from` to the tenant's number, signed with the mock's token (asserting 200).
    pub async fn text(
        &self,
        twilio: &crate::providers::TwilioMock,
        tenant: &Tenant,
        from: &str,
        body: &str,
    ) {
        let status = self.text_in(&twilio.auth_token, tenant, from, body).await;
        assert_eq!(status, StatusCode::OK, "inbound text {body:?} from {from}");
    }

    pub async fn text_in(
        &self,
        auth_token: &str,
        tenant: &Tenant,
        from: &str,
        body: &str,
    ) -> StatusCode {
        let sid = format!("SM{}", crate::unique("").repeat(2));
        let to = tenant.sms_from.clone().expect("the tenant has an sms_from");
        let (status, answer) = self
            .twilio_post(
                "/v1/inbound/twilio/sms",
                auth_token,
                &[
                    ("MessageSid", &sid),
                    ("AccountSid", "ACtest"),
                    ("From", from),
                    ("To", &to),
                    ("Body", body),
                    ("NumMedia", "0"),
                ],
            )
            .await;
        if status == StatusCode::OK {
            assert!(answer.contains("<Response/>"), "{answer}");
        }
        status
    }
}
