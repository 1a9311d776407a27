//! Consent on record: set through the API, changed by STOP and START, every change kept.

use herald_tests::{
    TestApp,
    app::test_config,
    providers::TwilioMock,
    views::{ConsentView, ContactView, Page, api_error, view},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

fn consent(status: &str, method: &str, source: Option<&str>, text: Option<&str>) -> ConsentView {
    ConsentView {
        status: status.to_owned(),
        at: None,
        method: Some(method.to_owned()),
        source: source.map(str::to_owned),
        text: text.map(str::to_owned),
    }
}

/// The consent without its time, to compare.
fn untimed(mut c: ConsentView) -> ConsentView {
    assert!(c.at.is_some(), "a consent given has a time: {c:?}");
    c.at = None;
    c
}

#[tokio::test]
async fn consent_is_set_by_the_api_and_by_stop_and_start_and_every_change_is_kept() {
    let twilio = TwilioMock::start().await;
    let app = TestApp::start_with_twilio(test_config().await, &twilio).await;
    let tenant = app.tenant().await;
    let phone = "+15551500001";
    let c: ContactView = app
        .post_as(
            "/v1/contacts",
            &tenant.api_key,
            &json!({"phone": phone}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(c.consent.status, "unknown");
    assert_eq!(c.consent.at, None);
    let path = format!("/v1/contacts/{}", c.id);

    let form = "I agree to receive appointment texts from Acme Dental.";
    let (status, body) = app
        .patch(
            &path,
            &tenant.api_key,
            &json!({"consent": {"status": "opted_in", "method": "web_form", "at": "2026-11-01T09:30:00Z",
                    "source": "https://acme.test/book", "text": form}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let given: ContactView = view(&body);
    assert_eq!(
        given.consent.at.as_deref(),
        Some("2026-11-01T09:30:00.000Z")
    );
    assert_eq!(
        untimed(given.consent),
        consent(
            "opted_in",
            "web_form",
            Some("https://acme.test/book"),
            Some(form)
        )
    );
    assert!(!given.opted_out);

    // Bad consent is refused naming its field, and changes nothing.
    let future = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    for (bad, field) in [
        (
            json!({"status": "maybe", "method": "api"}),
            "consent.status",
        ),
        (
            json!({"status": "opted_in", "method": "telepathy"}),
            "consent.method",
        ),
        (json!({"method": "api"}), "consent.status"),
        (
            json!({"status": "opted_in", "method": "api", "at": future}),
            "consent.at",
        ),
        (
            json!({"status": "opted_in", "method": "api", "text": ""}),
            "consent.text",
        ),
        (
            json!({"status": "opted_in", "method": "api", "why": "x"}),
            "consent.why",
        ),
    ] {
        let (status, body) = app
            .patch(
                &path,
                &tenant.api_key,
                &json!({"name": "Changed", "consent": bad}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(
            api_error(&body).field.as_deref(),
            Some(field),
            "{bad}: {body}"
        );
    }
    let unchanged: ContactView = app.get_as(&path, &tenant.api_key).await;
    assert_eq!(unchanged.consent.status, "opted_in");
    assert_eq!(
        unchanged.name, None,
        "the name in a refused request was not kept either"
    );

    // STOP withdraws it, START gives it back, each as texted.
    app.text(&twilio, &tenant, phone, "STOP").await;
    let stopped: ContactView = app.get_as(&path, &tenant.api_key).await;
    assert!(stopped.opted_out);
    assert_eq!(
        untimed(stopped.consent),
        consent(
            "opted_out",
            "sms_keyword",
            Some("inbound sms"),
            Some("STOP")
        )
    );
    let suppressed = app.post_sms(&tenant, phone, "are you there?").await;
    app.wait_for_status(&tenant, &suppressed.id, "suppressed", WAIT)
        .await;
    app.text(&twilio, &tenant, phone, "start").await;
    let started: ContactView = app.get_as(&path, &tenant.api_key).await;
    assert!(!started.opted_out);
    assert_eq!(started.consent.status, "opted_in");

    // Every change, oldest first, in pages.
    let events = format!("{path}/consent-events");
    let first: Page<ConsentView> = app
        .get_as(&format!("{events}?limit=2"), &tenant.api_key)
        .await;
    let statuses: Vec<(&str, Option<&str>)> = first
        .data
        .iter()
        .map(|e| (e.status.as_str(), e.method.as_deref()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("opted_in", Some("web_form")),
            ("opted_out", Some("sms_keyword"))
        ]
    );
    assert_eq!(
        first.data[0].at.as_deref(),
        Some("2026-11-01T09:30:00.000Z")
    );
    let cursor = first.next_cursor.clone().expect("a second page");
    let second: Page<ConsentView> = app
        .get_as(
            &format!("{events}?limit=2&cursor={cursor}"),
            &tenant.api_key,
        )
        .await;
    assert_eq!(second.data.len(), 1, "{:?}", second.data);
    assert_eq!(second.data[0].text.as_deref(), Some("start"));
    assert_eq!(second.next_cursor, None);

    // Another tenant sees none of it.
    let other = app.tenant().await;
    let (status, body): (StatusCode, Value) = app.get(&events, &other.api_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

/// Posts an SMS with `priority`; returns its id.
async fn post_with_priority(
    app: &TestApp,
    tenant: &herald_tests::Tenant,
    to: &str,
    priority: &str,
) -> String {
    let (status, body) = app
        .post(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "sms", "to": to, "body": "Spring offer", "priority": priority}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    view::<herald_tests::views::MessageView>(&body).id
}

#[tokio::test]
async fn bulk_sms_need_the_consent_their_tenant_requires_and_stop_at_its_cap_while_transactional_ones_go()
 {
    let twilio = TwilioMock::start().await;
    let app = TestApp::start_with_twilio(test_config().await, &twilio).await;
    let rules =
        json!({"require_consent_for_bulk": true, "frequency_cap": {"max": 2, "per": "24h"}});
    let (status, created) = app
        .post(
            "/v1/admin/tenants",
            &app.ops_token,
            &json!({"name": "Rules Dental", "require_consent_for_bulk": true,
                    "frequency_cap": {"max": 2, "per": "1d"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["require_consent_for_bulk"], true);
    assert_eq!(created["frequency_cap"], json!({"max": 2, "per": "1d"}));
    let (status, bad) = app
        .post(
            "/v1/admin/tenants",
            &app.ops_token,
            &json!({"name": "Bad", "frequency_cap": {"max": 0, "per": "1d"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    assert_eq!(api_error(&bad).field.as_deref(), Some("frequency_cap.max"));

    let tenant = app.tenant_with(rules).await;
    let (agreed, unknown) = ("+15551500011", "+15551500012");
    let c: ContactView = app
        .post_as(
            "/v1/contacts",
            &tenant.api_key,
            &json!({"phone": agreed}),
            StatusCode::CREATED,
        )
        .await;
    let (status, body) = app
        .patch(
            &format!("/v1/contacts/{}", c.id),
            &tenant.api_key,
            &json!({"consent": {"status": "opted_in", "method": "paper"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // No consent on record: bulk is suppressed, a transactional text still goes.
    let bulk = post_with_priority(&app, &tenant, unknown, "bulk").await;
    let m = app
        .wait_for_status(&tenant, &bulk, "suppressed", WAIT)
        .await;
    assert_eq!(m.details_of("suppressed"), ["no consent"], "{m}");
    let reminder = post_with_priority(&app, &tenant, unknown, "transactional").await;
    app.wait_for_status(&tenant, &reminder, "sent", WAIT).await;

    // With consent: two bulk texts a day, then the cap; transactional texts are never capped.
    for _ in 0..2 {
        let id = post_with_priority(&app, &tenant, agreed, "bulk").await;
        app.wait_for_status(&tenant, &id, "sent", WAIT).await;
    }
    let third = post_with_priority(&app, &tenant, agreed, "bulk").await;
    let m = app
        .wait_for_status(&tenant, &third, "suppressed", WAIT)
        .await;
    assert_eq!(m.details_of("suppressed"), ["frequency cap"], "{m}");
    let reminder = post_with_priority(&app, &tenant, agreed, "transactional").await;
    app.wait_for_status(&tenant, &reminder, "sent", WAIT).await;
    assert_eq!(twilio.calls_to(agreed), 3, "two bulk, one transactional");
    assert_eq!(twilio.calls_to(unknown), 1, "the transactional one");

    // Another tenant without rules sends bulk freely.
    let other = app.tenant().await;
    let id = post_with_priority(&app, &other, unknown, "bulk").await;
    app.wait_for_status(&other, &id, "sent", WAIT).await;
}

#[tokio::test]
async fn bulk_texts_racing_to_one_number_send_no_more_than_the_cap() {
    let twilio = TwilioMock::start().await;
    let app = TestApp::start_with_twilio(test_config().await, &twilio).await;
    let tenant = app
        .tenant_with(json!({"frequency_cap": {"max": 1, "per": "1d"}}))
        .await;
    let to = "+15551500021";
    // Due together, they are claimed together or side by side by the workers.
    let ids = futures_util::future::join_all(
        (0..6).map(|_| post_with_priority(&app, &tenant, to, "bulk")),
    )
    .await;
    let mut sent = 0;
    for id in &ids {
        let m = herald_tests::eventually(WAIT, "each bulk text settled", || async {
            let m = app.message(&tenant, id).await;
            matches!(m.status.as_str(), "sent" | "suppressed").then_some(m)
        })
        .await;
        if m.status == "sent" {
            sent += 1;
        } else {
            assert_eq!(m.details_of("suppressed"), ["frequency cap"], "{m}");
        }
    }
    assert_eq!(sent, 1, "a cap of one bulk text a day");
    assert_eq!(twilio.calls_to(to), 1);
}
