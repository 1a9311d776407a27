//! One message the whole way: API → Postgres → Redis → worker → provider → `sent`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_tests::{
    TestApp,
    app::test_config,
    eventually,
    providers::{Reply, TwilioMock, WebhookReceiver},
    views::{MessageView, api_error, view},
};
use reqwest::StatusCode;
use serde_json::json;

async fn app_with_twilio() -> (TestApp, TwilioMock) {
    let twilio = TwilioMock::start().await;
    let app = TestApp::start_with_twilio(test_config().await, &twilio).await;
    (app, twilio)
}

#[tokio::test]
async fn an_sms_reaches_twilio_with_the_right_fields_and_reads_back_sent() {
    let (app, twilio) = app_with_twilio().await;
    let tenant = app.tenant().await;

    let m = app
        .post_sms(
            &tenant,
            "+15551234567",
            "Your appointment is tomorrow at 3:30 PM",
        )
        .await;
    assert_eq!(m.status, "queued");
    assert_eq!(m.channel, "sms");
    assert_eq!(m.attempts, 0);
    let id = m.id.as_str();
    assert!(id.starts_with("msg_"), "{id}");

    let sent = app
        .wait_for_status(&tenant, id, "sent", Duration::from_secs(15))
        .await;
    let received = twilio.received();
    assert_eq!(received.len(), 1, "exactly one provider call");
    let call = &received[0];
    assert_eq!(
        call.path,
        format!("/2010-04-01/Accounts/{}/Messages.json", twilio.account_sid)
    );
    assert_eq!(call.form["To"], "+15551234567");
    assert_eq!(call.form["From"], tenant.sms_from.clone().unwrap());
    assert_eq!(call.form["Body"], "Your appointment is tomorrow at 3:30 PM");
    // The callback names the message and its run, so a report for an attempt whose answer
    // was lost still finds it.
    assert_eq!(
        call.form["StatusCallback"],
        format!(
            "{}/v1/inbound/twilio/status?message_id={}&run=0",
            app.base,
            m.id.as_str()
        )
    );
    assert!(
        call.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/x-www-form-urlencoded"),
        "Twilio takes a form"
    );

    let sid = sent.provider_message_id.as_deref().unwrap();
    assert!(
        sid.starts_with("SM") && sid.len() == 34,
        "the Twilio sid is kept: {sid}"
    );
    assert_eq!(sent.attempts, 1);
    assert!(sent.sent_at.is_some());
    assert_eq!(sent.event_statuses(), ["queued", "sending", "sent"]);
}

#[tokio::test]
async fn a_scheduled_sms_goes_out_after_its_time_never_before() {
    let (app, twilio) = app_with_twilio().await;
    let tenant = app.tenant().await;
    let send_at = Utc::now() + chrono::Duration::milliseconds(2000);
    let (status, m) = app
        .post(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "sms", "to": "+15551230000", "body": "later", "send_at": send_at.to_rfc3339()}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{m}");
    let m: MessageView = view(&m);
    assert_eq!(m.status, "scheduled");
    let id = m.id.as_str();

    let sent = app
        .wait_for_status(&tenant, id, "sent", Duration::from_secs(15))
        .await;
    let call = &twilio.received()[0];
    assert!(
        call.at >= send_at,
        "sent {} ms before its time",
        (send_at - call.at).num_milliseconds()
    );
    let sent_at: DateTime<Utc> = sent.sent_at.as_deref().unwrap().parse().unwrap();
    assert!(sent_at >= send_at);
    assert_eq!(sent.event_statuses(), ["scheduled", "sending", "sent"]);
}

#[tokio::test]
async fn a_canceled_message_is_never_sent() {
    let (app, twilio) = app_with_twilio().await;
    let tenant = app.tenant().await;
    let soon = Utc::now() + chrono::Duration::milliseconds(800);
    let m: MessageView = app
        .post_as(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "sms", "to": "+15551110000", "body": "never", "send_at": soon.to_rfc3339()}),
            StatusCode::ACCEPTED,
        )
        .await;
    let id = m.id.as_str();

    let (status, canceled) = app
        .post(
            &format!("/v1/messages/{id}/cancel"),
            &tenant.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{canceled}");
    let canceled: MessageView = view(&canceled);
    assert_eq!(canceled.status, "canceled");
    let (status, again) = app
        .post(
            &format!("/v1/messages/{id}/cancel"),
            &tenant.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "canceling twice is fine: {again}");

    // A later message going out proves the canceled one's time has come and gone.
    let later = (soon + chrono::Duration::milliseconds(700)).to_rfc3339();
    let witness: MessageView = app
        .post_as(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "sms", "to": "+15552220000", "body": "witness", "send_at": later}),
            StatusCode::ACCEPTED,
        )
        .await;
    app.wait_for_status(&tenant, &witness.id, "sent", Duration::from_secs(15))
        .await;
    let sent_to: Vec<String> = twilio
        .received()
        .iter()
        .map(|r| r.form["To"].clone())
        .collect();
    assert_eq!(
        sent_to,
        ["+15552220000"],
        "the canceled message must not reach Twilio"
    );
    assert_eq!(app.message(&tenant, id).await.status, "canceled");
}

#[tokio::test]
async fn a_message_being_sent_can_no_longer_be_canceled() {
    let (app, twilio) = app_with_twilio().await;
    twilio.script([Reply::Hang(Duration::from_millis(1500))]);
    let tenant = app.tenant().await;
    let m = app.post_sms(&tenant, "+15553330000", "slow provider").await;
    let id = m.id.as_str();
    app.wait_for_status(&tenant, id, "sending", Duration::from_secs(10))
        .await;

    let (status, body) = app
        .post(
            &format!("/v1/messages/{id}/cancel"),
            &tenant.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(api_error(&body).code, "not_cancelable");
    app.wait_for_status(&tenant, id, "sent", Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn transient_provider_errors_are_retried_until_sent() {
    let (app, twilio) = app_with_twilio().await;
    twilio.script([
        Reply::Raw {
            status: 503,
            body: "upstream unavailable".into(),
            headers: vec![],
        },
        Reply::TwilioError {
            status: 500,
            code: 20500,
            message: "Internal Server Error".into(),
        },
    ]);
    let tenant = app.tenant().await;
    let m = app
        .post_sms(&tenant, "+15554440000", "third time lucky")
        .await;
    let id = m.id.as_str();
    let sent = app
        .wait_for_status(&tenant, id, "sent", Duration::from_secs(15))
        .await;
    assert_eq!(sent.attempts, 3);
    assert_eq!(twilio.received().len(), 3);
    assert_eq!(
        sent.event_statuses(),
        [
            "queued", "sending", "retrying", "sending", "retrying", "sending", "sent"
        ]
    );
}

#[tokio::test]
async fn an_invalid_number_rejected_by_twilio_fails_with_its_error() {
    let (app, twilio) = app_with_twilio().await;
    twilio.script([Reply::TwilioError {
        status: 400,
        code: 21211,
        message: "The 'To' number +15550000000 is not a valid phone number.".into(),
    }]);
    let tenant = app.tenant().await;
    let m = app.post_sms(&tenant, "+15550000000", "hello?").await;
    let failed = app
        .wait_for_status(&tenant, &m.id, "failed", Duration::from_secs(15))
        .await;
    let error = failed.last_error.as_deref().unwrap();
    assert!(
        error.contains("21211") && error.contains("not a valid phone number"),
        "{error}"
    );
    assert_eq!(
        twilio.received().len(),
        1,
        "a permanent error is not retried"
    );
}

#[tokio::test]
async fn email_and_webhook_go_out_through_the_log_provider_and_a_receiver() {
    let mut app = TestApp::start().await;
    app.start_worker();
    let tenant = app.tenant().await;

    let (status, email) = app
        .post(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "email", "to": "pat@example.com", "subject": "Your visit", "body": "See you soon."}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{email}");
    let email: MessageView = view(&email);
    let id = email.id.as_str();
    app.wait_for_status(&tenant, id, "sent", Duration::from_secs(15))
        .await;
    let (subject, body): (Option<String>, String) =
        sqlx::query_as("SELECT subject, body FROM log_deliveries WHERE message_id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(subject.as_deref(), Some("Your visit"));
    assert_eq!(body, "See you soon.");

    let receiver = WebhookReceiver::start().await;
    let url = receiver.url("/hook");

    let (status, hook) = app
        .post(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "webhook", "to": url, "body": {"event": "appointment.booked", "id": 42}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{hook}");
    let hook: MessageView = view(&hook);
    assert_eq!(hook.body, json!({"event": "appointment.booked", "id": 42}));
    let id = hook.id.as_str();
    app.wait_for_status(&tenant, id, "delivered", Duration::from_secs(15))
        .await;
    let (headers, body) = eventually(
        Duration::from_secs(5),
        "the receiver got the webhook",
        || async { receiver.requests("/hook").first().cloned() },
    )
    .await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        json!({"event": "appointment.booked", "id": 42})
    );
    assert_eq!(headers["webhook-id"], id);
    assert!(
        headers["webhook-signature"]
            .to_str()
            .unwrap()
            .starts_with("v1,")
    );
}

#[tokio::test]
async fn each_sms_shows_its_encoding_and_the_segments_carriers_bill() {
    let (app, twilio) = app_with_twilio().await;
    let tenant = app.tenant().await;
    let cases = [
        ("+15551300001", "a".repeat(160), "GSM-7", 1),
        ("+15551300002", "a".repeat(161), "GSM-7", 2),
        // The euro sign takes two septets: 159 letters and it are 161.
        ("+15551300003", format!("{}€", "a".repeat(159)), "GSM-7", 2),
        ("+15551300004", "ж".repeat(70), "UCS-2", 1),
        (
            "+15551300005",
            format!("Your visit is confirmed 👍{}", "!".repeat(45)),
            "UCS-2",
            2,
        ),
    ];
    let mut posted = vec![];
    for (to, body, encoding, segments) in &cases {
        let m = app.post_sms(&tenant, to, body).await;
        assert_eq!(m.encoding.as_deref(), Some(*encoding), "{m}");
        assert_eq!(m.segments, Some(*segments), "{m}");
        posted.push(m.id);
    }
    for (id, (to, body, encoding, segments)) in posted.iter().zip(&cases) {
        let sent = app
            .wait_for_status(&tenant, id, "sent", Duration::from_secs(15))
            .await;
        assert_eq!(sent.encoding.as_deref(), Some(*encoding), "{sent}");
        assert_eq!(sent.segments, Some(*segments), "{sent}");
        assert_eq!(twilio.bodies_to(to), [body.as_str()], "the text went whole");
        let stored: (Option<String>, Option<i16>) =
            sqlx::query_as("SELECT encoding, segments FROM messages WHERE id = $1")
                .bind(id)
                .fetch_one(&app.db)
                .await
                .unwrap();
        let want = (Some((*encoding).to_owned()), Some(*segments as i16));
        assert_eq!(stored, want, "kept with the row, not only shown");
    }

    let (status, email) = app
        .post(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "email", "to": "a@example.com", "subject": "Hi", "body": "Hello"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{email}");
    let email: MessageView = view(&email);
    assert_eq!((email.encoding, email.segments), (None, None), "not an SMS");
}

#[tokio::test]
async fn a_message_is_transactional_unless_it_says_bulk() {
    let (app, _twilio) = app_with_twilio().await;
    let tenant = app.tenant().await;
    let plain = app
        .post_sms(&tenant, "+15551300101", "your code is 1234")
        .await;
    assert_eq!(plain.priority, "transactional", "{plain}");
    let (status, bulk) = app
        .post(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "sms", "to": "+15551300102", "body": "20% off", "priority": "bulk"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{bulk}");
    let bulk: MessageView = view(&bulk);
    assert_eq!(bulk.priority, "bulk", "{bulk}");
    let read = app.message(&tenant, &bulk.id).await;
    assert_eq!(read.priority, "bulk", "kept with the row: {read}");
}

#[tokio::test]
async fn a_tenant_with_a_messaging_service_sends_through_it_not_from_its_number() {
    let (app, twilio) = app_with_twilio().await;
    let service = format!("MG{}", "0123456789abcdef".repeat(2));
    let tenant = app
        .tenant_with(json!({"messaging_service_sid": service}))
        .await;
    let m = app
        .post_sms(&tenant, "+15551300201", "via the service")
        .await;
    app.wait_for_status(&tenant, &m.id, "sent", Duration::from_secs(15))
        .await;
    let call = &twilio.sent_to("+15551300201")[0];
    assert_eq!(
        call.form.get("MessagingServiceSid"),
        Some(&service),
        "{:?}",
        call.form
    );
    assert_eq!(call.form.get("From"), None, "Twilio picks the number");

    // A tenant without one still sends from its number.
    let plain = app.tenant().await;
    let m = app
        .post_sms(&plain, "+15551300202", "from the number")
        .await;
    app.wait_for_status(&plain, &m.id, "sent", Duration::from_secs(15))
        .await;
    let call = &twilio.sent_to("+15551300202")[0];
    assert_eq!(call.form.get("From"), plain.sms_from.as_ref());
    assert_eq!(call.form.get("MessagingServiceSid"), None);

    let (status, body) = app
        .post(
            "/v1/admin/tenants",
            &app.ops_token,
            &json!({"name": "Bad service", "messaging_service_sid": "MG123"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        api_error(&body).field.as_deref(),
        Some("messaging_service_sid")
    );
}
