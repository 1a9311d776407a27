//! Rate limits: a tenant's send rate puts sends off without failing them, and the API
//! throttles one key without touching another (circuit breakers: see blast_radius.rs).

use std::{sync::Arc, time::Duration};

use herald_tests::{
    TestApp, app::test_config, ms_between, providers::TwilioMock, views::api_error,
};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::task::JoinSet;

#[tokio::test]
async fn the_tenant_send_rate_defers_sends_without_failing_them() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    config.tenant_send_rate = 2;
    let app = Arc::new(TestApp::start_with_twilio(config, &twilio).await);
    let tenant = app.tenant().await;
    let mut set = JoinSet::new();
    for i in 0..10 {
        let (app, tenant) = (app.clone(), tenant.clone());
        set.spawn(async move {
            let m = app
                .post_sms(&tenant, &format!("+155510800{i:02}"), "paced")
                .await;
            m.id.clone()
        });
    }
    let ids = set.join_all().await;
    for id in &ids {
        let m = app
            .wait_for_status(&tenant, id, "sent", Duration::from_secs(30))
            .await;
        assert_eq!(m.attempts, 1, "deferred, not failed: {m}");
        assert!(!m.event_statuses().iter().any(|s| s == "retrying"), "{m}");
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
async fn the_api_throttles_one_key_and_not_another() {
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
                assert_eq!(api_error(&body).code, "rate_limited", "{body}");
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
