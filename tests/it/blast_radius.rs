//! One tenant can never hurt another: input Postgres cannot store is refused at the edge,
//! outside text is cleaned and its reads bounded, circuits open on outages and not on one
//! recipient or one tenant, rate limits count right, and strangers' costs have budgets.
//! Each test has tenant A misbehave (or be unlucky) and checks what tenant B notices.

use std::{sync::Arc, time::Duration};

use herald_core::services::breaker::BreakerSettings;
use herald_tests::{
    TestApp,
    app::test_config,
    eventually,
    providers::{FloodServer, ModelMock, ModelReply, Reply, TwilioMock, WebhookReceiver},
    views::{ConversationView, MessageView, api_error},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinSet;

/// Circuits that judge quickly, for tests: 5 calls, half failing, from 3 recipients.
fn quick_circuits(cooldown: Duration) -> BreakerSettings {
    BreakerSettings {
        window: Duration::from_secs(30),
        min_calls: 5,
        failure_rate: 0.5,
        min_recipients: 3,
        cooldown,
        max_cooldown: cooldown * 4,
        max_circuits: 1_000,
    }
}

/// The events of a message that say it was put off, and why.
fn put_off_events(m: &MessageView) -> Vec<String> {
    m.details()
        .into_iter()
        .filter(|d| d.starts_with("put off until"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Text that Postgres cannot store never gets in
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_tenants_nul_requests_get_422_while_anothers_valid_ones_all_succeed() {
    let app = Arc::new(TestApp::start().await);
    let a = app.tenant().await;
    let b = app.tenant().await;
    let mut set = JoinSet::new();
    for i in 0..100 {
        let (app, a, b) = (app.clone(), a.clone(), b.clone());
        set.spawn(async move {
            let bad = app
                .post(
                    "/v1/messages",
                    &a.api_key,
                    &json!({"channel": "sms", "to": format!("+1555200{i:04}"), "body": "bad\u{0}text"}),
                )
                .await;
            let good = app
                .post(
                    "/v1/messages",
                    &b.api_key,
                    &json!({"channel": "sms", "to": format!("+1555300{i:04}"), "body": "hello"}),
                )
                .await;
            (bad, good)
        });
    }
    for ((bad_status, bad), (good_status, good)) in set.join_all().await {
        assert_eq!(
            good_status,
            StatusCode::ACCEPTED,
            "B's valid request: {good}"
        );
        assert_eq!(bad_status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        assert_eq!(api_error(&bad).code, "invalid_text", "{bad}");
        assert_eq!(api_error(&bad).field.as_deref(), Some("body"), "{bad}");
    }
    assert_eq!(app.message_rows().await, 100, "only B's messages exist");
}

#[tokio::test]
async fn nul_is_refused_with_422_naming_the_field_on_every_route_and_changes_nothing() {
    let app = TestApp::start().await;
    let t = app.tenant().await;
    let key = t.api_key.as_str();
    let ops = app.ops_token.as_str();
    let nul = "a\u{0}b";
    let cases: Vec<(&str, &str, &str, Value, &str)> = vec![
        (
            "POST",
            "/v1/messages",
            key,
            json!({"channel": "sms", "to": "+15551234567", "body": nul}),
            "body",
        ),
        (
            "POST",
            "/v1/messages",
            key,
            json!({"channel": "email", "to": "a@example.com", "subject": nul, "body": "x"}),
            "subject",
        ),
        (
            "POST",
            "/v1/messages",
            key,
            json!({"channel": "sms", "to": "+15551234567", "body": "x", "metadata": {"note": nul}}),
            "metadata.note",
        ),
        (
            "POST",
            "/v1/messages",
            key,
            json!({"channel": "sms", "to": "+15551234567", "body": "x", "metadata": {nul: 1}}),
            "metadata.ab",
        ),
        (
            "POST",
            "/v1/messages",
            key,
            json!({"channel": "webhook", "to": "https://example.com/h", "body": {"list": ["ok", nul]}}),
            "body.list[1]",
        ),
        (
            "POST",
            "/v1/contacts",
            key,
            json!({"phone": "+15551234567", "name": nul}),
            "name",
        ),
        (
            "PATCH",
            "/v1/contacts/ct_none",
            key,
            json!({"name": nul}),
            "name",
        ),
        (
            "POST",
            "/v1/appointments",
            key,
            json!({"contact_id": "ct_none", "starts_at": "2030-01-01T10:00:00Z", "reminders": [{"before": "2h"}], "body_template": nul}),
            "body_template",
        ),
        (
            "POST",
            "/v1/subscriptions",
            key,
            json!({"contact_id": "ct_none", "send_at_local": "07:30", "content": {"kind": "ai", "prompt": nul}}),
            "content.prompt",
        ),
        ("POST", "/v1/groups", key, json!({"name": nul}), "name"),
        (
            "POST",
            "/v1/groups/grp_none/messages",
            key,
            json!({"channel": "sms", "body": nul}),
            "body",
        ),
        (
            "POST",
            "/v1/conversations/ct_none/reply",
            key,
            json!({"body": nul}),
            "body",
        ),
        (
            "POST",
            "/v1/admin/tenants",
            ops,
            json!({"name": nul}),
            "name",
        ),
        (
            "POST",
            "/v1/admin/tenants",
            ops,
            json!({"name": "x", "help_text": nul}),
            "help_text",
        ),
        (
            "POST",
            "/v1/dead-letters/replay",
            ops,
            json!({"queue": nul}),
            "queue",
        ),
    ];
    let tenants_before: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&app.db)
        .await
        .unwrap();
    for (method, path, auth, body, field) in cases {
        let req = match method {
            "POST" => app.http.post(app.url(path)),
            _ => app.http.patch(app.url(path)),
        };
        let r = req.bearer_auth(auth).json(&body).send().await.unwrap();
        let status = r.status();
        let answer: Value = r.json().await.unwrap();
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {path}: {answer}"
        );
        assert_eq!(
            api_error(&answer).code,
            "invalid_text",
            "{method} {path}: {answer}"
        );
        assert_eq!(
            api_error(&answer).field.as_deref(),
            Some(field),
            "{method} {path}: {answer}"
        );
    }
    for (path, auth, field) in [
        ("/v1/messages?status=%00", key, "status"),
        ("/v1/messages?contact_id=ct_%00x", key, "contact_id"),
        ("/v1/messages/msg_%00", key, "path"),
        ("/v1/dead-letters?queue=%00", ops, "queue"),
        ("/v1/contacts/ct%00", key, "path"),
    ] {
        let (status, answer) = app.get(path, auth).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "GET {path}: {answer}"
        );
        assert_eq!(
            api_error(&answer).field.as_deref(),
            Some(field),
            "GET {path}: {answer}"
        );
    }
    assert_eq!(app.message_rows().await, 0);
    let tenants_after: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(tenants_after, tenants_before, "no tenant was created");
}

#[tokio::test]
async fn a_receivers_unstorable_error_fails_nobody_elses_webhooks_and_none_is_sent_twice() {
    let mut config = test_config().await;
    config.max_attempts = 2;
    config.worker_concurrency = 50;
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    let receiver = WebhookReceiver::start().await;
    // A's receiver fails with a body holding NUL and other control characters.
    let mut nasty = b"boom\x00\x07\x1b[31m ".to_vec();
    nasty.extend(std::iter::repeat_n(b'z', 5000));
    receiver.answer("/a", 500, nasty);
    let a = app.tenant().await;
    let b = app.tenant().await;

    let mut a_ids = vec![];
    let mut b_ids = vec![];
    for i in 0..150 {
        if i % 3 == 0 {
            a_ids.push(
                app.post_webhook(&a, &receiver.url("/a"), json!({"n": i}))
                    .await
                    .id,
            );
        }
        b_ids.push(
            app.post_webhook(&b, &receiver.url("/b"), json!({"n": i}))
                .await
                .id,
        );
    }
    for id in &b_ids {
        app.wait_for_status(&b, id, "delivered", Duration::from_secs(60))
            .await;
    }
    for id in &a_ids {
        let m = app
            .wait_for_status(&a, id, "dead", Duration::from_secs(60))
            .await;
        let error = m.last_error.as_deref().unwrap();
        assert!(
            !error.contains('\u{0}') && !error.contains('\u{1b}'),
            "{error:?}"
        );
        assert!(error.len() <= 1024, "{} bytes of error kept", error.len());
        assert!(
            error.contains("HTTP 500") && error.contains("boom"),
            "{error}"
        );
    }
    app.wait_for_drained_queue(0, Duration::from_secs(20)).await;
    let mut ids = receiver.webhook_ids("/b");
    assert_eq!(ids.len(), 150, "each of B's webhooks arrived once");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 150, "no webhook of B arrived twice");
    let sending: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE status = 'sending'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(sending, 0, "no message is stuck sending");
}

// ---------------------------------------------------------------------------------------
// Bounded reads
// ---------------------------------------------------------------------------------------

/// The resident memory high-water mark of this test process, in MiB (nextest runs each test
/// in a process of its own, where the worker runs too).
fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

#[tokio::test]
async fn a_64_mib_error_body_from_a_receiver_or_twilio_is_never_read_whole() {
    const HUGE: u64 = 64 * 1024 * 1024;
    let flood = FloodServer::start(503, HUGE).await;
    let mut config = test_config().await;
    config.max_attempts = 2;
    config.sms_provider = herald_core::config::SmsProviderKind::Twilio;
    config.twilio.account_sid = Some("ACflood".to_owned());
    config.twilio.auth_token = Some(herald_core::config::Secret::new("token".to_owned()));
    config.twilio.base_url = flood.base_url.clone();
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    let tenant = app.tenant().await;
    let before = peak_rss_mib();

    let hook = app
        .post_webhook(
            &tenant,
            &format!("{}/hook", flood.base_url),
            json!({"n": 1}),
        )
        .await
        .id;
    let sms = app.post_sms(&tenant, "+15551239999", "hello").await;
    let sms = sms.id.as_str();
    for id in [hook.as_str(), sms] {
        let m = app
            .wait_for_status(&tenant, id, "dead", Duration::from_secs(60))
            .await;
        let error = m.last_error.as_deref().unwrap();
        assert!(error.len() <= 1024, "{} bytes of error kept", error.len());
        assert!(error.contains("503"), "{error}");
    }
    assert_eq!(flood.requests(), 4, "two attempts each");
    // Each answer was cut off after 16 KiB; what the server produced beyond that sat in
    // socket buffers when the connection was closed.
    let produced = flood.produced();
    assert!(
        produced < 4 * 16 * 1024 * 1024,
        "the server had to produce {} MiB for 4 answers of 64 MiB",
        produced / 1024 / 1024
    );
    let grew = peak_rss_mib().saturating_sub(before);
    assert!(grew < 48, "memory grew by {grew} MiB reading error bodies");
}

// ---------------------------------------------------------------------------------------
// Circuit breakers
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn numbers_failing_forever_go_dead_on_their_own_schedule_while_other_tenants_send() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    config.max_attempts = 4;
    config.retry_base = Duration::from_millis(50);
    config.retry_max = Duration::from_millis(200);
    // A circuit opened by mistake would hold everything for a minute.
    config.circuit = quick_circuits(Duration::from_secs(60));
    let app = TestApp::start_with_twilio(config, &twilio).await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    twilio.always_for("+15554000001", Reply::unavailable());
    twilio.always_for("+15554000002", Reply::unavailable());

    let bad: Vec<String> = [
        app.post_sms(&a, "+15554000001", "to a dead phone").await,
        app.post_sms(&a, "+15554000002", "to another").await,
    ]
    .iter()
    .map(|m| m.id.clone())
    .collect();
    let mut good = vec![];
    for i in 0..20 {
        let m = app
            .post_sms(&b, &format!("+155541000{i:02}"), "appointment tomorrow")
            .await;
        good.push(m.id.clone());
    }
    for id in &good {
        let m = app
            .wait_for_status(&b, id, "sent", Duration::from_secs(15))
            .await;
        assert_eq!(m.attempts, 1, "{m}");
        assert!(put_off_events(&m).is_empty(), "B was put off: {m}");
    }
    for (id, to) in bad.iter().zip(["+15554000001", "+15554000002"]) {
        let m = app
            .wait_for_status(&a, id, "dead", Duration::from_secs(20))
            .await;
        assert_eq!(m.attempts, 4, "{m}");
        assert_eq!(twilio.calls_to(to), 4, "exactly max attempts calls");
        assert!(put_off_events(&m).is_empty(), "{m}");
    }
}

#[tokio::test]
async fn a_tenant_whose_every_recipient_fails_holds_back_nobody_else() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    config.max_attempts = 8;
    config.circuit = quick_circuits(Duration::from_secs(60));
    let app = TestApp::start_with_twilio(config, &twilio).await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let mut a_ids = vec![];
    for i in 0..10 {
        let to = format!("+155544000{i:02}");
        twilio.always_for(&to, Reply::unavailable());
        let m = app.post_sms(&a, &to, "to a carrier that is down").await;
        a_ids.push(m.id.clone());
    }
    // A's own circuit opens...
    let put_off = eventually(Duration::from_secs(20), "A is put off", || async {
        for id in &a_ids {
            if let Some(e) = put_off_events(&app.message(&a, id).await).pop() {
                return Some(e);
            }
        }
        None
    })
    .await;
    assert!(
        put_off.contains("this tenant's twilio circuit"),
        "{put_off}"
    );
    // ...and B's texts go straight out.
    for i in 0..10 {
        let m = app
            .post_sms(&b, &format!("+155545000{i:02}"), "your table is ready")
            .await;
        let m = app
            .wait_for_status(&b, &m.id, "sent", Duration::from_secs(10))
            .await;
        assert_eq!(m.attempts, 1, "{m}");
        assert!(put_off_events(&m).is_empty(), "B was put off: {m}");
    }
}

#[tokio::test]
async fn when_twilio_is_down_the_circuits_open_spend_no_attempts_and_all_go_out_once_it_is_back() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    config.max_attempts = 8;
    config.retry_base = Duration::from_millis(100);
    config.retry_max = Duration::from_millis(400);
    config.circuit = quick_circuits(Duration::from_millis(1500));
    let app = TestApp::start_with_twilio(config, &twilio).await;
    let busy = [app.tenant().await, app.tenant().await];
    let quiet = app.tenant().await;
    twilio.otherwise(Some(Reply::unavailable()));

    let mut ids = vec![];
    for i in 0..12 {
        let tenant = &busy[i % 2];
        let to = format!("+155542000{i:02}");
        let m = app.post_sms(tenant, &to, "reminder").await;
        ids.push((tenant, to, m.id.clone()));
    }
    // The circuits open: messages are put off with an event saying why and until when.
    let put_off = eventually(
        Duration::from_secs(20),
        "a message is put off by an open circuit",
        || async {
            for (tenant, _, id) in &ids {
                if let Some(e) = put_off_events(&app.message(tenant, id).await).pop() {
                    return Some(e);
                }
            }
            None
        },
    )
    .await;
    assert!(put_off.contains("twilio circuit is open"), "{put_off}");
    // Two tenants see Twilio fail and none sees it work: the shared circuit holds back a
    // quiet tenant's text too, before it spends an attempt.
    let q = app.post_sms(&quiet, "+15554209999", "hello").await;
    let q = q.id.clone();
    let held = eventually(
        Duration::from_secs(10),
        "the quiet tenant's text is put off",
        || async {
            let m = app.message(&quiet, &q).await;
            (!put_off_events(&m).is_empty()).then_some(m)
        },
    )
    .await;
    assert!(
        put_off_events(&held)[0].contains("failing for several tenants"),
        "{held}"
    );
    // While it stays down, calls are few: probes, not every message's every attempt. Watched
    // over one whole turn of the circuit: a probe fails, the circuit opens again, and the
    // quiet tenant's text is put off anew.
    let calls_while_down = twilio.received().len();
    let first_put_off = put_off_events(&held);
    eventually(
        Duration::from_secs(30),
        "the circuit opens again after a failed probe and puts the quiet text off anew",
        || async {
            let m = app.message(&quiet, &q).await;
            (put_off_events(&m) != first_put_off).then_some(())
        },
    )
    .await;
    let more = twilio.received().len() - calls_while_down;
    assert!(
        more <= 13,
        "{more} calls in one turn of the circuits while they were open"
    );
    for (tenant, _, id) in &ids {
        let m = app.message(tenant, id).await;
        assert_ne!(m.status, "dead", "the outage spent its attempts: {m}");
    }

    twilio.otherwise(None);
    let back = chrono::Utc::now();
    for (tenant, to, id) in ids
        .iter()
        .chain([(&quiet, "+15554209999".to_owned(), q)].iter())
    {
        let m = app
            .wait_for_status(tenant, id, "sent", Duration::from_secs(30))
            .await;
        assert!(m.attempts < 8, "{m}");
        let since_back = twilio.sent_to(to).iter().filter(|r| r.at >= back).count();
        assert_eq!(
            since_back, 1,
            "{to} was sent {since_back} times once Twilio was back"
        );
    }
}

#[tokio::test]
async fn twilio_answering_429_is_a_slow_down_not_an_outage() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    config.circuit = quick_circuits(Duration::from_secs(60));
    let app = TestApp::start_with_twilio(config, &twilio).await;
    let tenant = app.tenant().await;
    let throttled = Reply::TwilioError {
        status: 429,
        code: 20429,
        message: "Too Many Requests".into(),
    };
    twilio.script(std::iter::repeat_n(throttled, 8));
    let mut ids = vec![];
    for i in 0..8 {
        let m = app
            .post_sms(&tenant, &format!("+155543000{i:02}"), "hi")
            .await;
        ids.push(m.id.clone());
    }
    for id in &ids {
        let m = app
            .wait_for_status(&tenant, id, "sent", Duration::from_secs(15))
            .await;
        assert!(put_off_events(&m).is_empty(), "{m}");
    }
}

#[tokio::test]
async fn a_tenants_failing_endpoints_on_a_shared_host_do_not_hold_back_another_tenants_webhooks() {
    let mut config = test_config().await;
    config.max_attempts = 10;
    config.circuit = quick_circuits(Duration::from_secs(60));
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    let host = WebhookReceiver::start().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let mut a_ids = vec![];
    for i in 0..6 {
        let path = format!("/a/{i}");
        host.answer(&path, 500, "down");
        a_ids.push(
            app.post_webhook(&a, &host.url(&path), json!({"n": i}))
                .await
                .id,
        );
    }
    // A's circuit for that host opens (its endpoints there are all failing)...
    eventually(
        Duration::from_secs(20),
        "tenant A's circuit for the host opens",
        || async {
            for id in &a_ids {
                let m = app.message(&a, id).await;
                if !put_off_events(&m).is_empty() {
                    return Some(());
                }
            }
            None
        },
    )
    .await;
    // ...and B's webhooks to the same host go straight through.
    let mut b_ids = vec![];
    for i in 0..5 {
        b_ids.push(
            app.post_webhook(&b, &host.url("/b"), json!({"n": i}))
                .await
                .id,
        );
    }
    for id in &b_ids {
        let m = app
            .wait_for_status(&b, id, "delivered", Duration::from_secs(10))
            .await;
        assert!(put_off_events(&m).is_empty(), "{m}");
    }
    assert_eq!(host.bodies("/b").len(), 5);
}

// ---------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_fresh_key_gets_its_whole_burst_under_any_concurrency() {
    let mut config = test_config().await;
    config.api_rate = 200; // burst 400
    let app = Arc::new(TestApp::start_with(config).await);
    let tenant = app.tenant().await;
    let mut set = JoinSet::new();
    for _ in 0..64 {
        let (app, tenant) = (app.clone(), tenant.clone());
        set.spawn(async move {
            let mut statuses = vec![];
            for _ in 0..5 {
                statuses.push(app.get("/v1/messages", &tenant.api_key).await.0);
            }
            statuses
        });
    }
    let statuses: Vec<StatusCode> = set.join_all().await.into_iter().flatten().collect();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(
        limited, 0,
        "320 requests within a burst of 400 were limited"
    );
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
}

#[tokio::test]
async fn dead_letter_routes_count_against_the_key() {
    let mut config = test_config().await;
    config.api_rate = 5;
    let app = TestApp::start_with(config).await;
    let tenant = app.tenant().await;
    let mut limited = 0;
    for _ in 0..40 {
        let (status, body) = app.get("/v1/dead-letters", &tenant.api_key).await;
        match status {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(api_error(&body).code, "rate_limited", "{body}");
                limited += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(
        limited > 0,
        "40 quick dead-letter reads at 5/s: none limited"
    );
}

#[tokio::test]
async fn failed_authentication_is_limited_per_client_address() {
    let mut config = test_config().await;
    config.auth_failure_rate = 2; // burst 4
    config.trust_forwarded_for = true;
    let app = TestApp::start_with(config).await;
    let tenant = app.tenant().await;
    let from = |addr: &'static str, key: String| {
        app.http
            .get(app.url("/v1/messages"))
            .bearer_auth(key)
            .header("x-forwarded-for", format!("198.51.100.7, {addr}"))
            .send()
    };
    let mut unauthorized = 0;
    let mut limited = None;
    for i in 0..20 {
        let r = from("203.0.113.9", format!("hk_guess{i:040}"))
            .await
            .unwrap();
        match r.status() {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let retry_after = r.headers().get("retry-after").cloned();
                let body: Value = r.json().await.unwrap();
                assert_eq!(api_error(&body).code, "too_many_failed_authentications");
                assert!(retry_after.is_some(), "429 without Retry-After");
                limited = Some(i);
            }
            other => panic!("{other}"),
        }
    }
    assert!(
        limited.is_some(),
        "20 guesses from one address: none limited"
    );
    assert!(
        (4..20).contains(&unauthorized),
        "{unauthorized} answered 401"
    );
    // Another address is not held back, with a wrong key or a right one.
    let r = from("203.0.113.10", "hk_wrong".to_owned()).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = from("203.0.113.10", tenant.api_key.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_ops_login_backs_off_after_repeated_failures() {
    let app = TestApp::start().await;
    let login = |token: String| {
        app.http
            .post(app.url("/ops/login"))
            .form(&[("token", token)])
            .send()
    };
    for _ in 0..5 {
        let r = login("wrong-token".to_owned()).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = login("wrong-token".to_owned()).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_some());
    // Locked: even the right token waits.
    let r = login(app.ops_token.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // The lock lasts a second; then the right token logs in (a redirect to the dashboard).
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    eventually(Duration::from_secs(5), "the login lock expires", || async {
        let r = client
            .post(app.url("/ops/login"))
            .form(&[("token", app.ops_token.clone())])
            .send()
            .await
            .ok()?;
        (r.status() == StatusCode::SEE_OTHER).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// A budget per contact for AI replies
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_texter_past_the_ai_budget_is_stored_not_answered_and_gets_one_notice() {
    let twilio = TwilioMock::start().await;
    let model = ModelMock::start("gpt-test", ModelReply::Text("We open at 9.".into())).await;
    let mut config = test_config().await;
    config.llm = Some(model.endpoint());
    config.ai_replies_per_hour = 3;
    let app = TestApp::start_with_twilio(config, &twilio).await;
    let tenant = app.tenant().await;
    let texter = "+15556000001";
    for i in 0..10 {
        app.text(&twilio, &tenant, texter, &format!("question {i}"))
            .await;
    }
    // Three model answers and one short notice, however many texts came.
    eventually(
        Duration::from_secs(20),
        "three answers and a notice",
        || async { (twilio.calls_to(texter) >= 4).then_some(()) },
    )
    .await;
    let contact: String = sqlx::query_scalar("SELECT id FROM contacts WHERE phone = $1")
        .bind(texter)
        .fetch_one(&app.db)
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "every text is handled", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM messages WHERE contact_id = $1 AND needs_reply",
        )
        .bind(&contact)
        .fetch_one(&app.db)
        .await
        .unwrap();
        (waiting == 0).then_some(())
    })
    .await;
    app.wait_for_drained_queue(0, Duration::from_secs(10)).await;
    assert_eq!(
        model.received().len(),
        3,
        "the model was called past the budget"
    );
    let bodies = twilio.bodies_to(texter);
    assert_eq!(bodies.len(), 4, "{bodies:?}");
    assert_eq!(
        bodies.iter().filter(|b| *b == "We open at 9.").count(),
        3,
        "{bodies:?}"
    );
    let conversation: ConversationView = app
        .get_as(
            &format!("/v1/conversations/{contact}?limit=100"),
            &tenant.api_key,
        )
        .await;
    let inbound = conversation
        .data
        .iter()
        .filter(|e| e.direction == "inbound")
        .count();
    assert_eq!(inbound, 10, "every text is stored and shown");

    // Another texter of the same tenant still gets the model.
    app.text(&twilio, &tenant, "+15556000002", "hello?").await;
    twilio
        .wait_for_sms("+15556000002", "We open at 9.", Duration::from_secs(20))
        .await;
}
