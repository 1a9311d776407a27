//! Retries that honour the provider: a 429's `Retry-After` sets the next attempt, and a call
//! that hangs past the provider timeout is retried.

use std::time::Duration;

use herald_tests::{
    TestApp,
    app::test_config,
    ms_between,
    providers::{Reply, TwilioMock},
};

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
    let m = app.post_sms(&tenant, "+15551010001", "patience").await;
    let sent = app
        .wait_for_status(&tenant, &m.id, "sent", Duration::from_secs(20))
        .await;
    assert_eq!(sent.attempts, 2, "{sent}");
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
    let m = app.post_sms(&tenant, "+15551010002", "hello?").await;
    let sent = app
        .wait_for_status(&tenant, &m.id, "sent", Duration::from_secs(20))
        .await;
    assert_eq!(sent.attempts, 2, "{sent}");
    assert_eq!(twilio.received().len(), 2);
    let retrying = sent.details_of("retrying");
    assert_eq!(retrying.len(), 1, "{sent}");
    let detail = retrying[0].to_lowercase();
    assert!(
        detail.contains("timed out") || detail.contains("timeout"),
        "the retrying event says the call timed out: {detail}"
    );
    assert_eq!(
        sent.event_statuses(),
        ["queued", "sending", "retrying", "sending", "sent"]
    );
}
