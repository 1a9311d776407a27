//! Outbound webhooks: signed as Standard Webhooks specifies, retried or failed for good by
//! the receiver's answer, and never sent to private addresses unless allowed.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::Utc;
use herald_tests::{
    TestApp, app::test_config, eventually, providers::WebhookReceiver, views::api_error,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A receiver on loopback whose `/hook` answers `first` statuses in order, then 200; returns
/// it with the URL to send to.
async fn receiver(first: impl IntoIterator<Item = u16>) -> (WebhookReceiver, String) {
    let receiver = WebhookReceiver::start().await;
    receiver.answer_first("/hook", first);
    let url = receiver.url("/hook");
    (receiver, url)
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

#[tokio::test]
async fn a_delivery_carries_a_standard_webhooks_signature_over_what_was_sent() {
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

    let (receiver, url) = receiver([]).await;
    let payload = json!({"event": "appointment.booked", "id": 42, "note": "é ☃ \"quoted\""});
    let id = app.post_webhook(&tenant, &url, payload.clone()).await.id;
    app.wait_for_status(&tenant, &id, "delivered", Duration::from_secs(15))
        .await;
    let got = receiver.requests("/hook");
    assert_eq!(got.len(), 1);
    let (headers, body) = &got[0];
    let body = std::str::from_utf8(body).expect("a JSON body is UTF-8");
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
async fn an_answer_of_410_fails_for_good_with_a_dead_letter() {
    let app = app_with_worker().await;
    let tenant = app.tenant().await;
    let (receiver, url) = receiver([410]).await;
    let id = app
        .post_webhook(&tenant, &url, json!({"event": "gone"}))
        .await
        .id;
    let failed = app
        .wait_for_status(&tenant, &id, "failed", Duration::from_secs(15))
        .await;
    assert!(
        failed
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("410")),
        "{failed}"
    );
    assert_eq!(failed.attempts, 1, "{failed}");
    let letters = eventually(
        Duration::from_secs(10),
        "the dead letter is listed",
        || async {
            let data = app.dead_letters(&tenant.api_key, "&reason=rejected").await;
            (!data.is_empty()).then_some(data)
        },
    )
    .await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].message_id.as_deref(), Some(id.as_str()));
    assert_eq!(letters[0].reason, "rejected");
    app.wait_for_drained_queue(0, Duration::from_secs(10)).await;
    assert_eq!(receiver.requests("/hook").len(), 1, "410 is not retried");
}

#[tokio::test]
async fn an_answer_of_503_then_200_is_delivered_after_a_retry() {
    let app = app_with_worker().await;
    let tenant = app.tenant().await;
    let (receiver, url) = receiver([503]).await;
    let id = app
        .post_webhook(&tenant, &url, json!({"event": "flaky"}))
        .await
        .id;
    let delivered = app
        .wait_for_status(&tenant, &id, "delivered", Duration::from_secs(15))
        .await;
    assert_eq!(delivered.attempts, 2, "{delivered}");
    assert!(delivered.delivered_at.is_some(), "{delivered}");
    assert_eq!(
        delivered.event_statuses(),
        ["queued", "sending", "retrying", "sending", "delivered"]
    );
    let got = receiver.requests("/hook");
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].0["webhook-id"], got[1].0["webhook-id"],
        "a retry keeps its webhook-id, so the receiver can deduplicate"
    );
    let letters = app.dead_letters(&tenant.api_key, "").await;
    assert!(letters.is_empty(), "no dead letter: {letters:?}");
}

#[tokio::test]
async fn private_targets_are_refused_by_default() {
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
        assert_eq!(
            api_error(&body).field.as_deref(),
            Some("to"),
            "{to}: {body}"
        );
    }
    assert_eq!(app.message_rows().await, 0, "nothing created");
    assert_eq!(
        app.queue_keys().await,
        Vec::<String>::new(),
        "nothing queued"
    );
}
