//! What Herald promises under trouble: retries that honour the provider, timeouts, signed
//! webhooks, no double sends, cancel races, Redis and Postgres outages, refused private
//! targets, idempotency keys, circuit breakers and rate limits.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::http::HeaderMap;
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use herald_core::config::Secret;
use herald_tests::{
    Tenant, TestApp,
    app::test_config,
    eventually,
    providers::{Reply, TwilioMock},
    proxy::Proxy,
    redis_url,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

fn event_statuses(m: &Value) -> Vec<String> {
    m["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect()
}

/// Milliseconds from `a` to `b`.
fn ms_between(a: DateTime<Utc>, b: DateTime<Utc>) -> i64 {
    (b - a).num_milliseconds()
}

// ---------------------------------------------------------------------------------------
// Retries: Retry-After and timeouts
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_429_with_retry_after_puts_the_next_attempt_off_that_long() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    twilio.script([Reply::Raw {
        status: 429,
        body: r#"{"code": 20429, "message": "Too Many Requests", "status": 429}"#.into(),
        headers: vec![("Retry-After".into(), "2".into())],
    }]);
    let tenant = app.tenant().await;
    let m = app.send_sms(&tenant, "+15551010001", "patience").await;
    let sent = app
        .wait_for_status(
            &tenant,
            m["id"].as_str().unwrap(),
            "sent",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(sent["attempts"], 2, "{sent}");
    let calls = twilio.received();
    assert_eq!(calls.len(), 2, "one refused call, one accepted");
    let gap = ms_between(calls[0].at, calls[1].at);
    // The backoff alone (50 ms base, 400 ms cap) would come back within 400 ms.
    assert!(
        gap >= 1900,
        "the second call came {gap} ms after the first; Retry-After asked for 2 s"
    );
}

#[tokio::test]
async fn a_provider_call_that_hangs_past_the_timeout_is_retried_and_sent() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    config.provider_timeout = Duration::from_millis(500);
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    twilio.script([Reply::Hang(Duration::from_secs(3))]);
    let tenant = app.tenant().await;
    let m = app.send_sms(&tenant, "+15551010002", "hello?").await;
    let sent = app
        .wait_for_status(
            &tenant,
            m["id"].as_str().unwrap(),
            "sent",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(sent["attempts"], 2, "{sent}");
    assert_eq!(twilio.received().len(), 2);
    let events = sent["events"].as_array().unwrap();
    let retrying: Vec<&Value> = events
        .iter()
        .filter(|e| e["status"] == "retrying")
        .collect();
    assert_eq!(retrying.len(), 1, "{events:?}");
    let detail = retrying[0]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        detail.contains("timed out") || detail.contains("timeout"),
        "the retrying event says the call timed out: {detail}"
    );
    assert_eq!(
        event_statuses(&sent),
        ["queued", "sending", "retrying", "sending", "sent"]
    );
}

// ---------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------

/// A webhook receiver on loopback: records every request and answers from its script
/// (statuses, in order), then 200.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    async fn start(script: impl IntoIterator<Item = u16>) -> (Self, String) {
        let receiver = Self::default();
        receiver.script.lock().unwrap().extend(script);
        let state = receiver.clone();
        let router = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    state.got.lock().unwrap().push((headers, body));
                    let status = state.script.lock().unwrap().pop_front().unwrap_or(200);
                    (StatusCode::from_u16(status).unwrap(), "receiver says so")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (receiver, url)
    }

    fn got(&self) -> Vec<(HeaderMap, String)> {
        self.got.lock().unwrap().clone()
    }
}

/// HMAC-SHA256 (RFC 2104), written out here so the test checks Herald against the
/// definition rather than against the same library call.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    const BLOCK: usize = 64;
    let mut k = if key.len() > BLOCK {
        Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(BLOCK, 0);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let mut inner = Sha256::new();
    inner.update(&ipad);
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(&opad);
    outer.update(inner);
    outer.finalize().to_vec()
}

/// The Standard Webhooks signature (`v1,<base64>`) of one delivery.
fn standard_webhooks_signature(secret: &str, id: &str, timestamp: &str, body: &str) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .expect("the secret is base64");
    let mac = hmac_sha256(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac))
}

async fn app_with_worker() -> TestApp {
    let mut app = TestApp::start().await;
    app.start_worker();
    app
}

async fn post_webhook(app: &TestApp, tenant: &Tenant, url: &str, body: Value) -> String {
    let (status, m) = app
        .post(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "webhook", "to": url, "body": body}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{m}");
    m["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_webhook_carries_a_standard_webhooks_signature_over_what_was_sent() {
    // The signing helper against the Standard Webhooks specification's own example.
    assert_eq!(
        standard_webhooks_signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            r#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );

    let app = app_with_worker().await;
    let tenant = app.tenant().await;
    let other = app.tenant().await;
    let secret_bytes = STANDARD
        .decode(tenant.webhook_secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    assert_eq!(secret_bytes.len(), 32, "whsec_ + base64 of 32 random bytes");

    let (receiver, url) = Receiver::start([]).await;
    let payload = json!({"event": "appointment.booked", "id": 42, "note": "é ☃ \"quoted\""});
    let id = post_webhook(&app, &tenant, &url, payload.clone()).await;
    app.wait_for_status(&tenant, &id, "delivered", Duration::from_secs(15))
        .await;
    let got = receiver.got();
    assert_eq!(got.len(), 1);
    let (headers, body) = &got[0];
    let header = |name: &str| {
        headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header: {headers:?}"))
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(header("webhook-id"), id);
    assert!(header("content-type").starts_with("application/json"));
    let timestamp = header("webhook-timestamp");
    let ts: i64 = timestamp.parse().expect("unix seconds");
    assert!(
        (Utc::now().timestamp() - ts).abs() <= 60,
        "webhook-timestamp {ts} is now"
    );
    assert_eq!(serde_json::from_str::<Value>(body).unwrap(), payload);

    let expected = standard_webhooks_signature(&tenant.webhook_secret, &id, &timestamp, body);
    let signatures = header("webhook-signature");
    assert!(
        signatures.split(' ').any(|s| s == expected),
        "webhook-signature {signatures:?} does not contain {expected}"
    );
    let forged = standard_webhooks_signature(&other.webhook_secret, &id, &timestamp, body);
    assert!(
        !signatures.split(' ').any(|s| s == forged),
        "signed with the tenant's own secret, not another's"
    );
}

#[tokio::test]
async fn a_webhook_answered_410_fails_for_good_with_a_dead_letter() {
    let app = app_with_worker().await;
    let tenant = app.tenant().await;
    let (receiver, url) = Receiver::start([410]).await;
    let id = post_webhook(&app, &tenant, &url, json!({"event": "gone"})).await;
    let failed = app
        .wait_for_status(&tenant, &id, "failed", Duration::from_secs(15))
        .await;
    assert!(
        failed["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("410")),
        "{failed}"
    );
    assert_eq!(failed["attempts"], 1, "{failed}");
    let letters = eventually(
        Duration::from_secs(10),
        "the dead letter is listed",
        || async {
            let (status, page) = app
                .get("/v1/dead-letters?reason=rejected", &tenant.api_key)
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let data = page["data"].as_array().unwrap().clone();
            (!data.is_empty()).then_some(data)
        },
    )
    .await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["message_id"], id.as_str());
    assert_eq!(letters[0]["reason"], "rejected");
    app.wait_for_drained_queue(0, Duration::from_secs(10)).await;
    assert_eq!(receiver.got().len(), 1, "410 is not retried");
}

#[tokio::test]
async fn a_webhook_answered_503_then_200_is_delivered_after_a_retry() {
    let app = app_with_worker().await;
    let tenant = app.tenant().await;
    let (receiver, url) = Receiver::start([503]).await;
    let id = post_webhook(&app, &tenant, &url, json!({"event": "flaky"})).await;
    let delivered = app
        .wait_for_status(&tenant, &id, "delivered", Duration::from_secs(15))
        .await;
    assert_eq!(delivered["attempts"], 2, "{delivered}");
    assert!(delivered["delivered_at"].is_string(), "{delivered}");
    assert_eq!(
        event_statuses(&delivered),
        ["queued", "sending", "retrying", "sending", "delivered"]
    );
    let got = receiver.got();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].0["webhook-id"], got[1].0["webhook-id"],
        "a retry keeps its webhook-id, so the receiver can deduplicate"
    );
    let (status, page) = app.get("/v1/dead-letters", &tenant.api_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["data"], json!([]), "no dead letter");
}

#[tokio::test]
async fn private_webhook_targets_are_refused_by_default() {
    let mut config = test_config().await;
    config.webhook_allow_private = false;
    let app = TestApp::start_with(config).await;
    let tenant = app.tenant().await;
    for to in [
        "https://127.0.0.1/x",
        "http://hooks.example.com/x",
        "https://localhost/x",
        "https://10.1.2.3/x",
        "https://192.168.0.10/x",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/x",
    ] {
        let (status, body) = app
            .post(
                "/v1/messages",
                &tenant.api_key,
                &json!({"channel": "webhook", "to": to, "body": {"x": 1}}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{to}: {body}");
        assert_eq!(body["error"]["field"], "to", "{to}: {body}");
    }
    assert_eq!(app.message_rows().await, 0, "nothing created");
    assert_eq!(
        app.queue_keys().await,
        Vec::<String>::new(),
        "nothing queued"
    );
}

// ---------------------------------------------------------------------------------------
// Exactly one send
// ---------------------------------------------------------------------------------------

async fn app_with_twilio(config: herald_core::Config, twilio: &TwilioMock) -> TestApp {
    let mut config = config;
    twilio.configure(&mut config);
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    app
}

#[tokio::test]
async fn a_duplicated_delivery_job_sends_once() {
    let twilio = TwilioMock::start().await;
    let app = app_with_twilio(test_config().await, &twilio).await;
    let tenant = app.tenant().await;
    let to = "+15551020001";
    // Due a moment from now, so the original job and its duplicate come due together.
    let send_at = Utc::now() + chrono::Duration::milliseconds(1500);
    let (status, m) = app
        .post(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "sms", "to": to, "body": "once", "send_at": send_at.to_rfc3339()}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{m}");
    let id = m["id"].as_str().unwrap();
    let due: DateTime<Utc> = m["send_at"].as_str().unwrap().parse().unwrap();

    let (client, conn) = herald_core::queue::connect(app.config.redis_url.expose()).unwrap();
    let queue = herald_core::queue::deliveries(&app.config, client, conn);
    let job = herald_core::domain::jobs::DeliveryJob::new(
        id,
        &tenant.id,
        herald_core::domain::Channel::Sms,
        to,
    );
    for copy in ["dup-a", "dup-b"] {
        let added = queue
            .push(&format!("{copy}-{id}"), &job, due.timestamp_millis())
            .await
            .unwrap();
        assert!(added, "the duplicate job was queued");
    }

    let sent = app
        .wait_for_status(&tenant, id, "sent", Duration::from_secs(15))
        .await;
    app.wait_for_drained_queue(3, Duration::from_secs(15)).await;
    assert_eq!(twilio.calls_to(to), 1, "three jobs, one send");

    // Yet another copy once it is sent: nothing more goes out.
    let added = queue
        .push(
            &format!("dup-late-{id}"),
            &job,
            herald_core::queue::now_ms(),
        )
        .await
        .unwrap();
    assert!(added);
    app.wait_for_drained_queue(4, Duration::from_secs(15)).await;
    assert_eq!(twilio.calls_to(to), 1, "a late duplicate sends nothing");
    let after = app.message(&tenant, id).await;
    assert_eq!(after["status"], "sent", "{after}");
    assert_eq!(after["attempts"], 1, "{after}");
    assert_eq!(after["provider_message_id"], sent["provider_message_id"]);
    assert_eq!(
        event_statuses(&after)
            .iter()
            .filter(|s| *s == "sent")
            .count(),
        1,
        "{after}"
    );
}

#[tokio::test]
async fn a_cancel_racing_the_send_either_cancels_it_or_loses_never_both() {
    let twilio = TwilioMock::start().await;
    let app = Arc::new(app_with_twilio(test_config().await, &twilio).await);
    let tenant = app.tenant().await;
    let mut set = JoinSet::new();
    for i in 0..20u64 {
        let (app, tenant) = (app.clone(), tenant.clone());
        set.spawn(async move {
            let to = format!("+1555103{i:04}");
            let m = app.send_sms(&tenant, &to, "race").await;
            let id = m["id"].as_str().unwrap().to_owned();
            // Spread the cancels over the moment the worker picks the message up, so both
            // outcomes of the race occur (this waits for nothing).
            tokio::time::sleep(Duration::from_millis(i % 10)).await;
            let (status, body) = app.cancel(&tenant, &id).await;
            (to, id, status, body)
        });
    }
    let results = set.join_all().await;

    let mut canceled = 0;
    let mut lost = 0;
    for (to, id, status, body) in &results {
        match *status {
            StatusCode::OK => {
                assert_eq!(body["status"], "canceled", "{body}");
                canceled += 1;
            }
            StatusCode::CONFLICT => {
                assert_eq!(body["error"]["code"], "not_cancelable", "{body}");
                app.wait_for_status(&tenant, id, "sent", Duration::from_secs(15))
                    .await;
                lost += 1;
            }
            other => panic!("cancel of {id} ({to}) answered {other}: {body}"),
        }
    }
    app.wait_for_drained_queue(lost, Duration::from_secs(15))
        .await;
    for (to, id, status, _) in &results {
        let m = app.message(&tenant, id).await;
        let calls = twilio.calls_to(to);
        if *status == StatusCode::OK {
            assert_eq!(m["status"], "canceled", "canceled, yet: {m}");
            assert_eq!(calls, 0, "canceled (200), yet sent: {m}");
        } else {
            assert_eq!(m["status"], "sent", "{m}");
            assert_eq!(calls, 1, "cancel refused (409), so sent exactly once: {m}");
        }
    }
    assert_eq!(twilio.received().len() as u64, lost);
    eprintln!("cancel race: {canceled} canceled, {lost} sent");
}

// ---------------------------------------------------------------------------------------
// Outages
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn messages_posted_while_redis_is_down_are_accepted_and_sent_once_it_is_back() {
    let twilio = TwilioMock::start().await;
    let redis_proxy = Proxy::start(&Proxy::target_of(&redis_url())).await;
    let mut config = test_config().await;
    config.redis_url = Secret::new(redis_proxy.url_for(&redis_url()));
    let mut app = app_with_twilio(config, &twilio).await;
    app.start_scheduler();
    let tenant = app.tenant().await;

    // The whole path works before the outage.
    let before = app.send_sms(&tenant, "+15551040000", "before").await;
    app.wait_for_status(
        &tenant,
        before["id"].as_str().unwrap(),
        "sent",
        Duration::from_secs(15),
    )
    .await;

    redis_proxy.cut();
    let mut posted = vec![];
    for i in 1..=5 {
        let to = format!("+155510400{i:02}");
        let started = Instant::now();
        let (status, m) = app
            .post(
                "/v1/messages",
                &tenant.api_key,
                &json!({"channel": "sms", "to": to, "body": "during the outage"}),
            )
            .await;
        let took = started.elapsed();
        assert_eq!(status, StatusCode::ACCEPTED, "POST with Redis down: {m}");
        assert!(
            took < Duration::from_secs(2),
            "POST with Redis down took {took:?}"
        );
        posted.push((to, m["id"].as_str().unwrap().to_owned()));
    }
    redis_proxy.restore();

    for (_, id) in &posted {
        app.wait_for_status(&tenant, id, "sent", Duration::from_secs(30))
            .await;
    }
    app.wait_for_drained_queue(0, Duration::from_secs(15)).await;
    for (to, id) in &posted {
        assert_eq!(twilio.calls_to(to), 1, "{id} to {to} was sent exactly once");
        assert_eq!(app.message(&tenant, id).await["attempts"], 1);
    }
    assert_eq!(twilio.received().len(), 1 + posted.len());
}

/// A test configuration whose Postgres is reached through a proxy the test can cut.
async fn config_behind_pg_proxy() -> (herald_core::Config, Proxy) {
    let mut config = test_config().await;
    let database_url = config.database_url.expose().clone();
    let pg_proxy = Proxy::start(&Proxy::target_of(&database_url)).await;
    config.database_url = Secret::new(pg_proxy.url_for(&database_url));
    (config, pg_proxy)
}

/// Posts `n` SMS due at `send_at`; returns (to, id) pairs.
async fn post_due_at(
    app: &TestApp,
    tenant: &Tenant,
    first_to: u32,
    n: u32,
    send_at: DateTime<Utc>,
) -> Vec<(String, String)> {
    let mut posted = vec![];
    for i in 0..n {
        let to = format!("+1555{:07}", first_to + i);
        let (status, m) = app
            .post(
                "/v1/messages",
                &tenant.api_key,
                &json!({"channel": "sms", "to": to, "body": "see you tomorrow", "send_at": send_at}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{m}");
        posted.push((to, m["id"].as_str().unwrap().to_owned()));
    }
    posted
}

/// Waits until the scheduler has reconciled the deliveries queue against the current Redis.
async fn wait_for_reconcile(app: &TestApp) {
    let key = format!("{{{}:deliveries}}:reconciled", app.config.queue_prefix);
    eventually(
        Duration::from_secs(15),
        "the scheduler reconciles the queue",
        || async {
            let mut conn = app.redis.clone();
            let run: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .ok()?;
            run
        },
    )
    .await;
}

#[tokio::test]
async fn jobs_lost_with_redis_data_are_queued_again_and_sent_once() {
    let twilio = TwilioMock::start().await;
    let mut app = app_with_twilio(test_config().await, &twilio).await;
    app.start_scheduler();
    let tenant = app.tenant().await;
    wait_for_reconcile(&app).await;

    let send_at = Utc::now() + chrono::Duration::seconds(14);
    let posted = post_due_at(&app, &tenant, 1060000, 4, send_at).await;
    for (_, id) in &posted {
        app.wait_for_outbox_past("deliveries", id, Duration::from_secs(20))
            .await;
    }
    // One of them was claimed an hour ago by a worker that then died, its job lost too.
    let (stuck_to, stuck) = posted[0].clone();
    sqlx::query(
        "UPDATE messages SET status = 'sending', attempts = 1, claim_attempt = 1,
                updated_at = now() - interval '1 hour' WHERE id = $1",
    )
    .bind(&stuck)
    .execute(&app.db)
    .await
    .unwrap();
    for (_, id) in &posted[1..] {
        assert_eq!(app.message(&tenant, id).await["status"], "scheduled");
    }

    // Redis loses this deployment's data (a failover to a replica that was empty).
    let keys = app.queue_keys().await;
    assert!(!keys.is_empty());
    let mut conn = app.redis.clone();
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();

    // The stuck one goes out at once, the others at their time; each exactly once.
    let m = app
        .wait_for_status(&tenant, &stuck, "sent", Duration::from_secs(20))
        .await;
    assert_eq!(m["attempts"], 2, "{m}");
    let events = m["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["status"] == "retrying"
            && e["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("never reported back")),
        "the takeover is on the record: {m}"
    );
    assert_eq!(twilio.calls_to(&stuck_to), 1);
    for (to, id) in &posted[1..] {
        let m = app
            .wait_for_status(&tenant, id, "sent", Duration::from_secs(30))
            .await;
        let sent_at: DateTime<Utc> = m["sent_at"].as_str().unwrap().parse().unwrap();
        assert!(sent_at >= send_at, "{id} sent at {sent_at}, due {send_at}");
        assert_eq!(twilio.calls_to(to), 1, "{to} got one text");
    }
    assert_eq!(twilio.received().len(), posted.len());
}

/// A private `redis-server` with the AOF fsynced on every write, in its own directory.
struct PrivateRedis {
    dir: std::path::PathBuf,
    port: u16,
    child: Option<tokio::process::Child>,
}

impl PrivateRedis {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(herald_tests::unique("herald-redis-"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Self {
            dir,
            port: herald_tests::process::free_port(),
            child: None,
        };
        redis.run().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", self.dir.to_str().unwrap()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is on PATH (scripts/test installs it)");
        self.child = Some(child);
        let url = self.url();
        eventually(Duration::from_secs(10), "redis-server answers", || async {
            let client = redis::Client::open(url.as_str()).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .ok()
        })
        .await;
    }

    /// Stops the server the way an operator restarts it (SIGTERM: the AOF is kept) and starts
    /// it again on the same port and data.
    async fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().unwrap();
            let status = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await
                .unwrap();
            assert!(status.success());
            child.wait().await.unwrap();
        }
        self.run().await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_redis_restart_that_lost_recent_writes_loses_no_message() {
    let mut redis = PrivateRedis::start().await;
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    config.redis_url = Secret::new(redis.url());
    let mut app = app_with_twilio(config, &twilio).await;
    app.start_scheduler();
    let tenant = app.tenant().await;
    wait_for_reconcile(&app).await;

    let send_at = Utc::now() + chrono::Duration::seconds(14);
    let posted = post_due_at(&app, &tenant, 1070000, 3, send_at).await;
    for (_, id) in &posted {
        app.wait_for_outbox_past("deliveries", id, Duration::from_secs(20))
            .await;
    }
    // The writes of the last second before a crash are gone from the AOF: here, the jobs.
    // The reconcile marker was written long before and survives; only the server's run id
    // tells that Redis restarted.
    let mut conn = app.redis.clone();
    let job_keys: Vec<String> = app
        .queue_keys()
        .await
        .into_iter()
        .filter(|k| !k.ends_with(":reconciled"))
        .collect();
    let _: () = redis::cmd("DEL")
        .arg(&job_keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    redis.restart().await;

    for (to, id) in &posted {
        let m = app
            .wait_for_status(&tenant, id, "sent", Duration::from_secs(30))
            .await;
        let sent_at: DateTime<Utc> = m["sent_at"].as_str().unwrap().parse().unwrap();
        assert!(sent_at >= send_at, "{id} sent at {sent_at}, due {send_at}");
        assert_eq!(twilio.calls_to(to), 1, "{to} got one text");
    }
    assert_eq!(twilio.received().len(), posted.len());
}

#[tokio::test]
async fn an_outcome_that_cannot_be_recorded_while_postgres_is_down_is_recorded_later_without_a_second_send()
 {
    let twilio = TwilioMock::start().await;
    let (config, pg_proxy) = config_behind_pg_proxy().await;
    let app = app_with_twilio(config, &twilio).await;
    let tenant = app.tenant().await;
    // The provider takes its time, and Postgres goes away while it does.
    twilio.script([Reply::Hang(Duration::from_millis(500))]);
    let to = "+15551051000";
    let m = app.send_sms(&tenant, to, "recorded once").await;
    let id = m["id"].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(10),
        "the provider is called",
        || async { (twilio.calls_to(to) == 1).then_some(()) },
    )
    .await;
    pg_proxy.cut();
    // The worker fails to record what the provider said (its connections are refused)...
    eventually(
        Duration::from_secs(10),
        "the worker tries to record the outcome",
        || async { (pg_proxy.refused() > 0).then_some(()) },
    )
    .await;
    // ... for longer than a job is put off for an outage (5 s), then Postgres is back.
    let until = Instant::now() + Duration::from_secs(6);
    eventually(Duration::from_secs(10), "six seconds of outage", || async {
        (Instant::now() >= until).then_some(())
    })
    .await;
    pg_proxy.restore();

    let sent = app
        .wait_for_status(&tenant, &id, "sent", Duration::from_secs(20))
        .await;
    assert_eq!(sent["attempts"], 1, "{sent}");
    app.wait_for_drained_queue(1, Duration::from_secs(20)).await;
    assert_eq!(twilio.calls_to(to), 1, "the message was sent once");
}

#[tokio::test]
async fn an_outcome_lost_to_a_long_postgres_outage_leaves_no_message_stuck_in_sending() {
    let twilio = TwilioMock::start().await;
    let (config, pg_proxy) = config_behind_pg_proxy().await;
    let stale_after = config.stale_claim_after();
    let app = app_with_twilio(config, &twilio).await;
    let tenant = app.tenant().await;
    twilio.script([Reply::Hang(Duration::from_millis(500))]);
    let to = "+15551052000";
    let m = app.send_sms(&tenant, to, "not stuck").await;
    let id = m["id"].as_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(10),
        "the provider is called",
        || async { (twilio.calls_to(to) == 1).then_some(()) },
    )
    .await;
    let cut_at = Instant::now();
    pg_proxy.cut();
    // Longer than the worker waits to record an outcome (20 s).
    let until = cut_at + Duration::from_secs(23);
    eventually(Duration::from_secs(30), "23 seconds of outage", || async {
        (Instant::now() >= until).then_some(())
    })
    .await;
    assert!(
        pg_proxy.refused() > 0,
        "the worker tried to record the outcome"
    );
    pg_proxy.restore();
    // Nobody knows whether that attempt's text went out. The message stays `sending`
    // until its claim is stale; then Twilio is asked whether it has that attempt, it does,
    // and the message ends `sent`: not stuck, and never sent again.
    let m = app.message(&tenant, &id).await;
    assert_eq!(m["status"], "sending", "{m}");
    assert_eq!(twilio.calls_to(to), 1);
    let sent = app
        .wait_for_status(&tenant, &id, "sent", stale_after + Duration::from_secs(30))
        .await;
    let details: Vec<&str> = sent["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert!(
        details.iter().any(|d| d.contains("never reported back")),
        "{sent}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.starts_with("reconciled: twilio already had")),
        "{sent}"
    );
    assert_eq!(
        twilio.calls_to(to),
        1,
        "the unrecorded attempt was not repeated"
    );
    assert_eq!(twilio.created_to(to).len(), 1);
}

#[tokio::test]
async fn with_postgres_down_a_post_answers_503_with_retry_after_within_seconds() {
    let (config, pg_proxy) = config_behind_pg_proxy().await;
    let app = TestApp::start_with(config).await;
    let tenant = app.tenant().await;
    app.send_sms(&tenant, "+15551050000", "before").await;

    pg_proxy.cut();
    let mut during = vec![];
    for attempt in 1..=3 {
        let started = Instant::now();
        let r = app
            .http
            .post(app.url("/v1/messages"))
            .bearer_auth(&tenant.api_key)
            .json(&json!({"channel": "sms", "to": "+15551050001", "body": "during"}))
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {attempt} with Postgres down got no answer: {e}"));
        let took = started.elapsed();
        let status = r.status();
        let retry_after = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = r.json().await.unwrap_or(Value::Null);
        during.push((status, took, retry_after, body));
    }
    pg_proxy.restore();

    let m = eventually(
        Duration::from_secs(20),
        &format!("POST answers 202 once Postgres is back (answers while down: {during:?})"),
        || async {
            let (status, m) = app
                .post(
                    "/v1/messages",
                    &tenant.api_key,
                    &json!({"channel": "sms", "to": "+15551050002", "body": "after"}),
                )
                .await;
            (status == StatusCode::ACCEPTED).then_some(m)
        },
    )
    .await;
    for (status, took, retry_after, body) in &during {
        let all = format!("answers while Postgres was down: {during:?}");
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{all}");
        assert!(*took < Duration::from_secs(10), "{all}");
        assert_eq!(body["error"]["code"], "unavailable", "{all}");
        let secs: u64 = retry_after
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("503 without a Retry-After in seconds: {all}"));
        assert!(secs >= 1, "{all}");
    }
    assert_eq!(m["status"], "queued", "{m}");
    assert_eq!(
        app.message_rows().await,
        2,
        "the refused POSTs created nothing"
    );
}

// ---------------------------------------------------------------------------------------
// Idempotency keys
// ---------------------------------------------------------------------------------------

async fn post_text(
    app: &TestApp,
    key: &str,
    idempotency_key: &str,
    text: &str,
) -> (StatusCode, Value) {
    let r = app
        .http
        .post(app.url("/v1/messages"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("Idempotency-Key", idempotency_key)
        .body(text.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_idempotency_key_answers_the_same_message_for_an_equal_body() {
    let app = TestApp::start().await;
    let tenant = app.tenant().await;
    let first_text = r#"{"channel": "sms", "to": "+15551060001", "body": "once only", "metadata": {"a": 1, "b": [1, 2]}}"#;
    let same_text = "{\n  \"metadata\":{\"b\":[1,2],\"a\":1},\"body\":\"once only\",\n\"to\":\"+15551060001\",   \"channel\":\"sms\"}";

    let (status, first) = post_text(&app, &tenant.api_key, "order-1001", first_text).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, again) = post_text(&app, &tenant.api_key, "order-1001", same_text).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the same key and an equal body: {again}"
    );
    assert_eq!(again["id"], first["id"], "{again}");
    assert_eq!(again["body"], first["body"]);
    assert_eq!(again["metadata"], first["metadata"]);
    assert_eq!(app.message_rows().await, 1, "one row");

    let different = r#"{"channel": "sms", "to": "+15551060001", "body": "something else"}"#;
    let (status, conflict) = post_text(&app, &tenant.api_key, "order-1001", different).await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(
        conflict["error"]["code"], "idempotency_key_reused",
        "{conflict}"
    );
    assert_eq!(conflict["error"]["field"], "Idempotency-Key", "{conflict}");
    assert_eq!(app.message_rows().await, 1, "the conflict created nothing");

    let (status, other) = post_text(&app, &tenant.api_key, "order-1002", first_text).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{other}");
    assert_ne!(other["id"], first["id"]);
    assert_eq!(app.message_rows().await, 2);

    // Keys are per tenant: another tenant's same key is its own.
    let tenant_b = app.tenant().await;
    let (status, theirs) = post_text(&app, &tenant_b.api_key, "order-1001", first_text).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{theirs}");
    assert_ne!(theirs["id"], first["id"]);
    assert_eq!(app.message_rows().await, 3);
}

// ---------------------------------------------------------------------------------------
// Rate limits (circuit breakers: see blast_radius.rs)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_tenant_send_rate_defers_sends_without_failing_them() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    config.tenant_send_rate = 2;
    let app = Arc::new(app_with_twilio(config, &twilio).await);
    let tenant = app.tenant().await;
    let mut set = JoinSet::new();
    for i in 0..10 {
        let (app, tenant) = (app.clone(), tenant.clone());
        set.spawn(async move {
            let m = app
                .send_sms(&tenant, &format!("+155510800{i:02}"), "paced")
                .await;
            m["id"].as_str().unwrap().to_owned()
        });
    }
    let ids = set.join_all().await;
    for id in &ids {
        let m = app
            .wait_for_status(&tenant, id, "sent", Duration::from_secs(30))
            .await;
        assert_eq!(m["attempts"], 1, "deferred, not failed: {m}");
        assert!(!event_statuses(&m).iter().any(|s| s == "retrying"), "{m}");
    }
    let calls = twilio.received();
    assert_eq!(calls.len(), 10);
    let first = calls.iter().map(|c| c.at).min().unwrap();
    let last = calls.iter().map(|c| c.at).max().unwrap();
    let span = ms_between(first, last);
    // A burst of 4, then 2 per second for the other 6: about 3 s.
    assert!(
        span >= 2500,
        "10 sends at 2/s (burst 4) went out within {span} ms"
    );
}

#[tokio::test]
async fn the_api_rate_limits_one_key_and_not_another() {
    let mut config = test_config().await;
    config.api_rate = 5;
    let app = TestApp::start_with(config).await;
    let a = app.tenant().await;
    let b = app.tenant().await;

    let mut ok = 0;
    let mut limited = 0;
    for _ in 0..40 {
        let r = app
            .http
            .get(app.url("/v1/messages"))
            .bearer_auth(&a.api_key)
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                let secs: u64 = retry_after
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("429 without Retry-After seconds: {retry_after:?}"));
                assert!(secs >= 1, "Retry-After: {secs}");
                limited += 1;
            }
            other => panic!("GET /v1/messages answered {other}"),
        }
    }
    assert!(limited > 0, "40 quick requests at 5/s: none limited");
    assert!(ok >= 10, "the burst (2x the rate) goes through: {ok} ok");

    for _ in 0..5 {
        let (status, body) = app.get("/v1/messages", &b.api_key).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "another tenant's key is its own: {body}"
        );
    }
}
