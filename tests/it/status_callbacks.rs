//! Twilio's status callbacks: signed, forward only, and a `failed` one keeps a dead letter
//! (and 21610 opts the number out).

use std::time::Duration;

use herald_core::providers::twilio_signature;
use herald_tests::{
    Tenant, TestApp,
    app::test_config,
    providers::TwilioMock,
    views::{MessageView, api_error},
};
use reqwest::StatusCode;
use serde_json::Value;

const STATUS_PATH: &str = "/v1/inbound/twilio/status";

async fn app_with_twilio() -> (TestApp, TwilioMock) {
    let twilio = TwilioMock::start().await;
    let app = TestApp::start_with_twilio(test_config().await, &twilio).await;
    (app, twilio)
}

/// How a callback is signed.
enum Signed<'a> {
    /// With this auth token (the right one, or not).
    With(&'a str),
    /// No `X-Twilio-Signature` at all.
    Missing,
    /// This header value, whatever the request.
    Header(&'a str),
}

/// POSTs a status callback form; returns the status and the body text.
async fn callback(
    app: &TestApp,
    signed: Signed<'_>,
    params: &[(&str, &str)],
) -> (StatusCode, String) {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let body = serde_urlencoded::to_string(&params).unwrap();
    let mut req = app
        .http
        .post(app.url(STATUS_PATH))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    match signed {
        Signed::With(token) => {
            let url = format!("{}{STATUS_PATH}", app.base);
            req = req.header(
                "X-Twilio-Signature",
                twilio_signature::compute(token, &url, &params),
            );
        }
        Signed::Header(value) => req = req.header("X-Twilio-Signature", value),
        Signed::Missing => {}
    }
    let r = req.send().await.expect("the API answers");
    let status = r.status();
    (status, r.text().await.unwrap())
}

/// A status callback's form as Twilio sends it.
fn form<'a>(
    twilio: &'a TwilioMock,
    sid: &'a str,
    status: &'a str,
    to: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AccountSid", twilio.account_sid.as_str()),
        ("ApiVersion", "2010-04-01"),
        ("MessageSid", sid),
        ("SmsSid", sid),
        ("MessageStatus", status),
        ("SmsStatus", status),
        ("To", to),
        ("From", "+15005550006"),
    ]
}

/// Sends an SMS and waits for it to be `sent`; returns it (with its Twilio sid).
async fn sent_sms(app: &TestApp, tenant: &Tenant, to: &str) -> MessageView {
    let m = app.post_sms(tenant, to, "status please").await;
    let sent = app
        .wait_for_status(tenant, &m.id, "sent", Duration::from_secs(15))
        .await;
    assert!(sent.provider_message_id.is_some(), "{sent}");
    sent
}

async fn dead_letter_count(app: &TestApp) -> usize {
    app.dead_letters(&app.ops_token, "").await.len()
}

#[tokio::test]
async fn a_signed_delivered_callback_moves_a_sent_sms_forward_and_a_late_sent_does_not_undo_it() {
    let (app, twilio) = app_with_twilio().await;
    let tenant = app.tenant().await;
    let to = "+15558880001";
    let sent = sent_sms(&app, &tenant, to).await;
    let id = sent.id.as_str();
    let sid = sent.provider_message_id.as_deref().unwrap();
    assert!(sent.delivered_at.is_none(), "{sent}");

    let (status, body) = callback(
        &app,
        Signed::With(&twilio.auth_token),
        &form(&twilio, sid, "delivered", to),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let delivered = app.message(&tenant, id).await;
    assert_eq!(delivered.status, "delivered", "{delivered}");
    assert!(delivered.delivered_at.is_some(), "{delivered}");
    let events = delivered.event_statuses();
    assert_eq!(
        events.last().map(String::as_str),
        Some("delivered"),
        "{events:?}"
    );

    // Twilio's callbacks can arrive out of order: a late `sent` changes nothing.
    let (status, body) = callback(
        &app,
        Signed::With(&twilio.auth_token),
        &form(&twilio, sid, "sent", to),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let after = app.message(&tenant, id).await;
    assert_eq!(after.status, "delivered", "{after}");
    assert_eq!(after.delivered_at, delivered.delivered_at, "{after}");
    assert_eq!(after.event_statuses(), events, "no new event");
    assert_eq!(dead_letter_count(&app).await, 0);
}

#[tokio::test]
async fn a_callback_with_a_wrong_or_missing_signature_is_refused_and_changes_nothing() {
    let (app, twilio) = app_with_twilio().await;
    let tenant = app.tenant().await;
    let to = "+15558880002";
    let sent = sent_sms(&app, &tenant, to).await;
    let id = sent.id.as_str();
    let sid = sent.provider_message_id.as_deref().unwrap();
    let mut failed = form(&twilio, sid, "failed", to);
    failed.push(("ErrorCode", "21610"));

    // Signed by someone without the auth token, unsigned, garbage, and a valid signature
    // over other parameters.
    let mut delivered = form(&twilio, sid, "delivered", to);
    delivered.push(("ErrorCode", ""));
    let url = format!("{}{STATUS_PATH}", app.base);
    let other_params: Vec<(String, String)> = delivered
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let signature_of_other = twilio_signature::compute(&twilio.auth_token, &url, &other_params);
    let cases: [(&str, Signed<'_>); 4] = [
        ("another token", Signed::With("not-the-auth-token")),
        ("no signature", Signed::Missing),
        ("garbage", Signed::Header("not a signature")),
        (
            "another request's signature",
            Signed::Header(&signature_of_other),
        ),
    ];
    for (what, signed) in cases {
        let (status, body) = callback(&app, signed, &failed).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(
            api_error(&error).code,
            "invalid_signature",
            "{what}: {body}"
        );
    }

    let after = app.message(&tenant, id).await;
    assert_eq!(after.status, "sent", "{after}");
    assert_eq!(
        after.event_statuses(),
        sent.event_statuses(),
        "no new event"
    );
    assert_eq!(after.last_error, sent.last_error, "{after}");
    assert_eq!(dead_letter_count(&app).await, 0, "no dead letter");
    // The number was not opted out: the next SMS to it goes out.
    sent_sms(&app, &tenant, to).await;
    assert_eq!(twilio.calls_to(to), 2);
}

#[tokio::test]
async fn a_failed_callback_with_21610_fails_the_message_and_opts_the_number_out() {
    let (app, twilio) = app_with_twilio().await;
    let tenant = app.tenant().await;
    let to = "+15558880003";
    let sent = sent_sms(&app, &tenant, to).await;
    let id = sent.id.as_str();
    let sid = sent.provider_message_id.as_deref().unwrap();
    let mut params = form(&twilio, sid, "failed", to);
    params.push(("ErrorCode", "21610"));

    let (status, body) = callback(&app, Signed::With(&twilio.auth_token), &params).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let failed = app.message(&tenant, id).await;
    assert_eq!(failed.status, "failed", "{failed}");
    assert!(
        failed
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("21610")),
        "{failed}"
    );
    assert_eq!(
        failed.event_statuses().last().map(String::as_str),
        Some("failed")
    );

    let letters = app.dead_letters(&tenant.api_key, "").await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.message_id.as_deref(), Some(id), "{letter}");
    assert_eq!(letter.reason, "rejected", "{letter}");
    assert_eq!(letter.tenant_id, tenant.id.as_str(), "{letter}");

    // The number is opted out: the next SMS to it is suppressed without a provider call.
    let calls = twilio.received().len();
    let next = app.post_sms(&tenant, to, "are you there?").await;
    let suppressed = app
        .wait_for_status(&tenant, &next.id, "suppressed", Duration::from_secs(15))
        .await;
    app.wait_for_drained_queue(0, Duration::from_secs(10)).await;
    assert_eq!(twilio.received().len(), calls, "no provider call");
    assert_eq!(twilio.calls_to(to), 1);

    // Another tenant's SMS to the same number still goes out: the opt-out is per tenant.
    let other = app.tenant().await;
    sent_sms(&app, &other, to).await;
    assert_eq!(twilio.calls_to(to), 2);

    // `attempts` counts provider calls (API.md), and none was made.
    assert_eq!(
        suppressed.attempts, 0,
        "a suppressed message made no provider call: {suppressed}"
    );
}

#[tokio::test]
async fn a_callback_for_an_unknown_sid_is_answered_and_changes_nothing() {
    let (app, twilio) = app_with_twilio().await;
    let tenant = app.tenant().await;
    let to = "+15558880004";
    let sent = sent_sms(&app, &tenant, to).await;
    let id = sent.id.as_str();
    let rows = app.message_rows().await;

    let unknown = "SM00000000000000000000000000000000";
    for status in ["delivered", "failed"] {
        let mut params = form(&twilio, unknown, status, to);
        params.push(("ErrorCode", "21610"));
        let (code, body) = callback(&app, Signed::With(&twilio.auth_token), &params).await;
        assert_eq!(code, StatusCode::OK, "{status}: {body}");
    }

    let after = app.message(&tenant, id).await;
    assert_eq!(after.status, "sent", "{after}");
    assert_eq!(after.event_statuses(), sent.event_statuses());
    assert_eq!(app.message_rows().await, rows, "no row");
    assert_eq!(dead_letter_count(&app).await, 0, "no dead letter");
    // Nobody was opted out.
    sent_sms(&app, &tenant, to).await;
    assert_eq!(twilio.calls_to(to), 2);
}

#[tokio::test]
async fn an_undelivered_callback_with_30006_marks_the_phone_unreachable_and_later_sms_wait_for_a_new_one()
 {
    let (app, twilio) = app_with_twilio().await;
    let tenant = app.tenant().await;
    let to = "+15558880031";
    let sent = sent_sms(&app, &tenant, to).await;
    let sid = sent.provider_message_id.as_deref().unwrap();
    let mut params = form(&twilio, sid, "undelivered", to);
    params.push(("ErrorCode", "30006"));

    let (status, body) = callback(&app, Signed::With(&twilio.auth_token), &params).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let undelivered = app.message(&tenant, &sent.id).await;
    assert_eq!(undelivered.status, "undelivered", "{undelivered}");
    let phone_status: String =
        sqlx::query_scalar("SELECT phone_status FROM contacts WHERE tenant_id = $1 AND phone = $2")
            .bind(&tenant.id)
            .bind(to)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(phone_status, "unreachable");

    let next = app.post_sms(&tenant, to, "are you there?").await;
    let suppressed = app
        .wait_for_status(&tenant, &next.id, "suppressed", Duration::from_secs(15))
        .await;
    assert_eq!(suppressed.details_of("suppressed"), ["unreachable"]);
    assert_eq!(twilio.calls_to(to), 1, "no call after the report");
}

#[tokio::test]
async fn an_sms_undelivered_for_a_passing_reason_is_sent_once_more_and_only_once() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    config.redeliver_after = Duration::from_secs(1);
    let app = TestApp::start_with_twilio(config, &twilio).await;
    let tenant = app.tenant().await;
    let to = "+15558880041";
    let sent = sent_sms(&app, &tenant, to).await;
    let undelivered = |sid: String| {
        let mut params: Vec<(String, String)> = form(&twilio, "", "undelivered", to)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for (k, v) in params.iter_mut() {
            if k == "MessageSid" || k == "SmsSid" {
                *v = sid.clone();
            }
        }
        params.push(("ErrorCode".to_owned(), "30003".to_owned()));
        params
    };

    // The handset was off (30003): the text is scheduled to go once more, a second later.
    let first = undelivered(sent.provider_message_id.clone().unwrap());
    let first: Vec<(&str, &str)> = first
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, body) = callback(&app, Signed::With(&twilio.auth_token), &first).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let waiting = app.message(&tenant, &sent.id).await;
    assert_eq!(waiting.status, "scheduled", "{waiting}");
    assert_eq!(
        waiting.event_statuses()[waiting.events.len() - 2..],
        ["undelivered", "scheduled"]
    );
    let resent = app
        .wait_for_status(&tenant, &sent.id, "sent", Duration::from_secs(15))
        .await;
    let created = twilio.created_to(to);
    assert_eq!(created.len(), 2, "sent once more: {resent}");

    // Undelivered again: that was its one more chance.
    let second = undelivered(created[1].sid.clone());
    let second: Vec<(&str, &str)> = second
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, body) = callback(&app, Signed::With(&twilio.auth_token), &second).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let last = app.message(&tenant, &sent.id).await;
    assert_eq!(last.status, "undelivered", "{last}");
    app.wait_for_drained_queue(2, Duration::from_secs(10)).await;
    assert_eq!(twilio.created_to(to).len(), 2, "not a third time");
}
