//! Redis and Postgres going away: messages are accepted or refused quickly, none is lost,
//! none is sent twice, none is left stuck.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use herald_core::config::Secret;
use herald_tests::{
    Tenant, TestApp,
    app::test_config,
    eventually,
    providers::{Reply, TwilioMock},
    proxy::Proxy,
    redis_url,
    views::{MessageView, api_error, view},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn messages_posted_while_redis_is_down_are_accepted_and_sent_once_it_is_back() {
    let twilio = TwilioMock::start().await;
    let redis_proxy = Proxy::start(&Proxy::target_of(&redis_url())).await;
    let mut config = test_config().await;
    config.redis_url = Secret::new(redis_proxy.url_for(&redis_url()));
    let mut app = TestApp::start_with_twilio(config, &twilio).await;
    app.start_scheduler();
    let tenant = app.tenant().await;

    // The whole path works before the outage.
    let before = app.post_sms(&tenant, "+15551040000", "before").await;
    app.wait_for_status(&tenant, &before.id, "sent", Duration::from_secs(15))
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
        posted.push((to, view::<MessageView>(&m).id));
    }
    redis_proxy.restore();

    for (_, id) in &posted {
        app.wait_for_status(&tenant, id, "sent", Duration::from_secs(30))
            .await;
    }
    app.wait_for_drained_queue(0, Duration::from_secs(15)).await;
    for (to, id) in &posted {
        assert_eq!(twilio.calls_to(to), 1, "{id} to {to} was sent exactly once");
        assert_eq!(app.message(&tenant, id).await.attempts, 1);
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

/// An SMS to `to` whose Twilio call is under way (Twilio holds its answer for 500 ms) when
/// Postgres goes away: the proxy in front of Postgres is already cut.
struct PostgresCutMidSend {
    twilio: TwilioMock,
    pg_proxy: Proxy,
    app: TestApp,
    tenant: Tenant,
    id: String,
}

async fn postgres_cut_mid_send(to: &str) -> PostgresCutMidSend {
    let twilio = TwilioMock::start().await;
    let (config, pg_proxy) = config_behind_pg_proxy().await;
    let app = TestApp::start_with_twilio(config, &twilio).await;
    let tenant = app.tenant().await;
    twilio.script([Reply::Hang(Duration::from_millis(500))]);
    let id = app.post_sms(&tenant, to, "sent during an outage").await.id;
    eventually(
        Duration::from_secs(10),
        "the provider is called",
        || async { (twilio.calls_to(to) == 1).then_some(()) },
    )
    .await;
    pg_proxy.cut();
    PostgresCutMidSend {
        twilio,
        pg_proxy,
        app,
        tenant,
        id,
    }
}

/// Posts `n` SMS due at `send_at` and waits until the outbox has swept past them (their jobs
/// are in Redis, not only in Postgres); returns (to, id) pairs.
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
        posted.push((to, view::<MessageView>(&m).id));
    }
    for (_, id) in &posted {
        app.wait_for_outbox_past("deliveries", id, Duration::from_secs(20))
            .await;
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
    let mut app = TestApp::start_with_twilio(test_config().await, &twilio).await;
    app.start_scheduler();
    let tenant = app.tenant().await;
    wait_for_reconcile(&app).await;

    let send_at = Utc::now() + chrono::Duration::seconds(14);
    let posted = post_due_at(&app, &tenant, 1060000, 4, send_at).await;
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
        assert_eq!(app.message(&tenant, id).await.status, "scheduled");
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
    assert_eq!(m.attempts, 2, "{m}");
    assert!(
        m.events.iter().any(|e| e.status == "retrying"
            && e.detail
                .as_deref()
                .unwrap_or_default()
                .contains("never reported back")),
        "the takeover is on the record: {m}"
    );
    assert_eq!(twilio.calls_to(&stuck_to), 1);
    for (to, id) in &posted[1..] {
        let m = app
            .wait_for_status(&tenant, id, "sent", Duration::from_secs(30))
            .await;
        let sent_at: DateTime<Utc> = m.sent_at.as_deref().unwrap().parse().unwrap();
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
    let mut app = TestApp::start_with_twilio(config, &twilio).await;
    app.start_scheduler();
    let tenant = app.tenant().await;
    wait_for_reconcile(&app).await;

    let send_at = Utc::now() + chrono::Duration::seconds(14);
    let posted = post_due_at(&app, &tenant, 1070000, 3, send_at).await;
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
        let sent_at: DateTime<Utc> = m.sent_at.as_deref().unwrap().parse().unwrap();
        assert!(sent_at >= send_at, "{id} sent at {sent_at}, due {send_at}");
        assert_eq!(twilio.calls_to(to), 1, "{to} got one text");
    }
    assert_eq!(twilio.received().len(), posted.len());
}

#[tokio::test]
async fn an_outcome_that_cannot_be_recorded_while_postgres_is_down_is_recorded_later_without_a_second_send()
 {
    let to = "+15551051000";
    let PostgresCutMidSend {
        twilio,
        pg_proxy,
        app,
        tenant,
        id,
    } = postgres_cut_mid_send(to).await;
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
    assert_eq!(sent.attempts, 1, "{sent}");
    app.wait_for_drained_queue(1, Duration::from_secs(20)).await;
    assert_eq!(twilio.calls_to(to), 1, "the message was sent once");
}

#[tokio::test]
async fn an_outcome_lost_to_a_long_postgres_outage_leaves_no_message_stuck_in_sending() {
    let to = "+15551052000";
    let PostgresCutMidSend {
        twilio,
        pg_proxy,
        app,
        tenant,
        id,
    } = postgres_cut_mid_send(to).await;
    let cut_at = Instant::now();
    let stale_after = app.config.stale_claim_after();
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
    assert_eq!(m.status, "sending", "{m}");
    assert_eq!(twilio.calls_to(to), 1);
    let sent = app
        .wait_for_status(&tenant, &id, "sent", stale_after + Duration::from_secs(30))
        .await;
    let details: Vec<&str> = sent
        .events
        .iter()
        .filter_map(|e| e.detail.as_deref())
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
    app.post_sms(&tenant, "+15551050000", "before").await;

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
            (status == StatusCode::ACCEPTED).then(|| view::<MessageView>(&m))
        },
    )
    .await;
    for (status, took, retry_after, body) in &during {
        let all = format!("answers while Postgres was down: {during:?}");
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{all}");
        assert!(*took < Duration::from_secs(10), "{all}");
        assert_eq!(api_error(body).code, "unavailable", "{all}");
        let secs: u64 = retry_after
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("503 without a Retry-After in seconds: {all}"));
        assert!(secs >= 1, "{all}");
    }
    assert_eq!(m.status, "queued", "{m}");
    assert_eq!(
        app.message_rows().await,
        2,
        "the refused POSTs created nothing"
    );
}
