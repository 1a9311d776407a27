//! Twilio's error codes, classified by code: a number that cannot receive texts is marked
//! unreachable and not texted again until it changes, a filtered text fails as `filtered`, and
//! a busy sender's code is retried, not failed.

use std::time::Duration;

use herald_tests::{
    Tenant, TestApp,
    app::test_config,
    eventually,
    providers::{Reply, TwilioMock},
    views::{ContactView, view},
};
use reqwest::StatusCode;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

async fn app_with_twilio() -> (TestApp, TwilioMock) {
    let twilio = TwilioMock::start().await;
    let app = TestApp::start_with_twilio(test_config().await, &twilio).await;
    (app, twilio)
}

fn twilio_error(code: u32, message: &str) -> Reply {
    Reply::TwilioError {
        status: 400,
        code,
        message: message.to_owned(),
    }
}

async fn contact(app: &TestApp, tenant: &Tenant, id: &str) -> ContactView {
    app.get_as(&format!("/v1/contacts/{id}"), &tenant.api_key)
        .await
}

#[tokio::test]
async fn a_number_twilio_calls_unreachable_is_not_texted_again_until_the_phone_changes() {
    let (app, twilio) = app_with_twilio().await;
    let tenant = app.tenant().await;
    let (landline, mobile) = ("+15551400001", "+15551400002");
    let created: ContactView = app
        .post_as(
            "/v1/contacts",
            &tenant.api_key,
            &json!({"phone": landline, "name": "Lee"}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(created.phone_status, "ok");

    twilio.script([twilio_error(
        21614,
        "'To' number is not a valid mobile number",
    )]);
    let first = app.post_sms(&tenant, landline, "Your visit is at 9").await;
    let failed = app
        .wait_for_status(&tenant, &first.id, "failed", WAIT)
        .await;
    assert!(
        failed
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("21614")),
        "{failed}"
    );
    assert_eq!(
        contact(&app, &tenant, &created.id).await.phone_status,
        "unreachable"
    );

    // The next text to that number is suppressed before any call, saying why.
    let second = app.post_sms(&tenant, landline, "Your visit is at 10").await;
    let suppressed = app
        .wait_for_status(&tenant, &second.id, "suppressed", WAIT)
        .await;
    assert_eq!(
        suppressed.details_of("suppressed"),
        ["unreachable"],
        "{suppressed}"
    );
    assert_eq!(suppressed.attempts, 0, "{suppressed}");
    assert_eq!(
        twilio.calls_to(landline),
        1,
        "one call, the one that was refused"
    );

    // Another tenant's contact with the same number is not affected.
    let other = app.tenant().await;
    let theirs = app.post_sms(&other, landline, "hello").await;
    app.wait_for_status(&other, &theirs.id, "sent", WAIT).await;

    // A new phone is reachable again, and texted.
    let (status, changed) = app
        .patch(
            &format!("/v1/contacts/{}", created.id),
            &tenant.api_key,
            &json!({"phone": mobile}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let changed: ContactView = view(&changed);
    assert_eq!(changed.phone_status, "ok", "{changed:?}");
    let third = app.post_sms(&tenant, mobile, "Your visit is at 11").await;
    app.wait_for_status(&tenant, &third.id, "sent", WAIT).await;
    assert_eq!(twilio.calls_to(mobile), 1);
}

#[tokio::test]
async fn a_filtered_text_fails_as_filtered_and_a_full_sender_queue_is_retried() {
    let (app, twilio) = app_with_twilio().await;
    let tenant = app.tenant().await;

    twilio.script([twilio_error(30007, "Message filtered")]);
    let to = "+15551400011";
    let m = app.post_sms(&tenant, to, "WIN A PRIZE").await;
    let failed = app.wait_for_status(&tenant, &m.id, "failed", WAIT).await;
    let error = failed.last_error.clone().unwrap_or_default();
    assert!(
        error.starts_with("filtered: ") && error.contains("30007"),
        "{failed}"
    );
    assert_eq!(
        failed.details_of("failed").last().map(String::as_str),
        Some(error.as_str())
    );
    assert_eq!(
        contact_status_of(&app, &tenant, to).await.as_deref(),
        None,
        "filtered content says nothing about the number"
    );

    // 21611 (the sender's queue is full) is a 400, yet worth another try.
    twilio.script([twilio_error(21611, "queue full")]);
    let to = "+15551400012";
    let m = app.post_sms(&tenant, to, "see you soon").await;
    let sent = app.wait_for_status(&tenant, &m.id, "sent", WAIT).await;
    assert_eq!(sent.attempts, 2, "{sent}");
    assert_eq!(twilio.calls_to(to), 2);
    assert!(
        sent.event_statuses().contains(&"retrying".to_owned()),
        "{sent}"
    );
}

/// The phone status of the tenant's contact for `phone`, if it has one.
async fn contact_status_of(app: &TestApp, tenant: &Tenant, phone: &str) -> Option<String> {
    sqlx::query_scalar("SELECT phone_status FROM contacts WHERE tenant_id = $1 AND phone = $2")
        .bind(&tenant.id)
        .bind(phone)
        .fetch_optional(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_sender_twilio_refuses_is_paused_for_its_tenant_alone_and_resumes_once_fixed() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    config.circuit.cooldown = Duration::from_millis(500);
    config.circuit.max_cooldown = Duration::from_secs(1);
    let app = TestApp::start_with_twilio(config, &twilio).await;
    let (a, b) = (app.tenant().await, app.tenant().await);
    let a_from = a.sms_from.clone().unwrap();
    twilio.for_sender(
        &a_from,
        Some(twilio_error(
            21606,
            "The 'From' phone number provided is not a valid, SMS-capable number",
        )),
    );

    // A's first text finds the sender refused: it waits, and so do the texts after it.
    let first = app.post_sms(&a, "+15551400021", "one").await;
    let waiting = app.wait_for_status(&a, &first.id, "retrying", WAIT).await;
    assert!(
        waiting
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("sender paused: ") && e.contains("21606")),
        "{waiting}"
    );
    let mut rest = vec![];
    for i in 2..=5 {
        rest.push(
            app.post_sms(&a, &format!("+155514000{}", 20 + i), "more")
                .await
                .id,
        );
    }
    let b_text = app.post_sms(&b, "+15551400031", "B is unaffected").await;
    app.wait_for_status(&b, &b_text.id, "sent", WAIT).await;

    // Readiness says so, by code, without naming the tenant.
    let ready = eventually(WAIT, "readiness names the paused sender", || async {
        let (_, body) = app.get("/readyz", "").await;
        let senders = body["checks"]["senders"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        senders.starts_with("paused: 1 SMS sender").then_some(body)
    })
    .await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let text = ready.to_string();
    assert!(
        text.contains("21606") && !text.contains(&a.id) && !text.contains(&a_from),
        "{text}"
    );

    // While paused, only the probes reach Twilio (one per cool-down), not every waiting text.
    let seen = eventually(WAIT, "a probe or two", || async {
        let calls = twilio.received().len();
        (calls >= 3).then_some(calls)
    })
    .await;
    assert!(
        seen <= 4,
        "{seen} calls: A's 5 texts, B's 1; the rest waited"
    );
    for id in &rest {
        let m = app.message(&a, id).await;
        assert!(m.attempts <= 1, "waiting spends no attempts: {m}");
        assert_ne!(m.status, "failed", "{m}");
    }

    // The operator fixes the number: the next probe goes through, and everything follows.
    twilio.for_sender(&a_from, None);
    for id in std::iter::once(&first.id).chain(&rest) {
        app.wait_for_status(&a, id, "sent", Duration::from_secs(20))
            .await;
    }
    let (_, body) = app.get("/readyz", "").await;
    assert_eq!(body["checks"]["senders"], "ok", "{body}");
}
