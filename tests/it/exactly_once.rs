//! At most one send per message and one message per request: a duplicated job, a cancel
//! racing the send, and idempotency keys.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use herald_tests::{
    TestApp,
    app::test_config,
    providers::TwilioMock,
    views::{MessageView, api_error, view},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinSet;

#[tokio::test]
async fn a_duplicated_delivery_job_sends_one_text() {
    let twilio = TwilioMock::start().await;
    let app = TestApp::start_with_twilio(test_config().await, &twilio).await;
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
    let m: MessageView = view(&m);
    let id = m.id.as_str();
    let due: DateTime<Utc> = m.send_at.parse().unwrap();

    let redis = herald_core::queue::connect(app.config.redis_url.expose()).unwrap();
    let queue = herald_core::queue::deliveries(&app.config, redis.clone());
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
    assert_eq!(after.status, "sent", "{after}");
    assert_eq!(after.attempts, 1, "{after}");
    assert_eq!(after.provider_message_id, sent.provider_message_id);
    assert_eq!(
        after
            .event_statuses()
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
    let app = Arc::new(TestApp::start_with_twilio(test_config().await, &twilio).await);
    let tenant = app.tenant().await;
    let mut set = JoinSet::new();
    for i in 0..20u64 {
        let (app, tenant) = (app.clone(), tenant.clone());
        set.spawn(async move {
            let to = format!("+1555103{i:04}");
            let m = app.post_sms(&tenant, &to, "race").await;
            let id = m.id.clone();
            // Spread the cancels over the moment the worker picks the message up, so both
            // outcomes of the race can occur: some go at once, others after giving way to the
            // runtime a while (this waits for nothing in particular).
            for _ in 0..(i % 10) * 100 {
                tokio::task::yield_now().await;
            }
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
                assert_eq!(view::<MessageView>(body).status, "canceled", "{body}");
                canceled += 1;
            }
            StatusCode::CONFLICT => {
                assert_eq!(api_error(body).code, "not_cancelable", "{body}");
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
            assert_eq!(m.status, "canceled", "canceled, yet: {m}");
            assert_eq!(calls, 0, "canceled (200), yet sent: {m}");
        } else {
            assert_eq!(m.status, "sent", "{m}");
            assert_eq!(calls, 1, "cancel refused (409), so sent exactly once: {m}");
        }
    }
    assert_eq!(twilio.received().len() as u64, lost);
    eprintln!("cancel race: {canceled} canceled, {lost} sent");
}

// Idempotency keys: one message per key, and a different body under it refused.

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
    let first: MessageView = view(&first);
    let (status, again) = post_text(&app, &tenant.api_key, "order-1001", same_text).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the same key and an equal body: {again}"
    );
    let again: MessageView = view(&again);
    assert_eq!(again.id, first.id, "{again}");
    assert_eq!(again.body, first.body);
    assert_eq!(again.metadata, first.metadata);
    assert_eq!(app.message_rows().await, 1, "one row");

    let different = r#"{"channel": "sms", "to": "+15551060001", "body": "something else"}"#;
    let (status, conflict) = post_text(&app, &tenant.api_key, "order-1001", different).await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(
        api_error(&conflict).code,
        "idempotency_key_reused",
        "{conflict}"
    );
    assert_eq!(
        api_error(&conflict).field.as_deref(),
        Some("Idempotency-Key"),
        "{conflict}"
    );
    assert_eq!(app.message_rows().await, 1, "the conflict created nothing");

    let (status, other) = post_text(&app, &tenant.api_key, "order-1002", first_text).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{other}");
    let other: MessageView = view(&other);
    assert_ne!(other.id, first.id);
    assert_eq!(app.message_rows().await, 2);

    // Keys are per tenant: another tenant's same key is its own.
    let tenant_b = app.tenant().await;
    let (status, theirs) = post_text(&app, &tenant_b.api_key, "order-1001", first_text).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{theirs}");
    let theirs: MessageView = view(&theirs);
    assert_ne!(theirs.id, first.id);
    assert_eq!(app.message_rows().await, 3);
}
