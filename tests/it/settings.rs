//! Tenant settings: a tenant reads and changes its own (checked as creation checks them), a
//! change holds from the next message, and the operator lists, changes and suspends tenants.

use std::time::Duration;

use chrono::{Timelike, Utc};
use herald_tests::{
    Tenant, TestApp,
    app::test_config,
    eventually_ok,
    providers::TwilioMock,
    views::{MessageView, Page, api_error, view},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

/// Every field `GET /v1/tenant` answers, as the contract lists them.
const SETTINGS: [&str; 15] = [
    "id",
    "name",
    "timezone",
    "sms_from",
    "messaging_service_sid",
    "sms_mps",
    "email_from",
    "quiet_hours",
    "help_text",
    "ai_system_prompt",
    "missed_call_text",
    "frequency_cap",
    "require_consent_for_bulk",
    "retention_days",
    "suspended",
];

async fn settings(app: &TestApp, tenant: &Tenant) -> Value {
    let (status, body) = app.get("/v1/tenant", &tenant.api_key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// `PATCH /v1/admin/tenants/{id}` with the ops token (asserting 200).
async fn ops_patch(app: &TestApp, tenant: &Tenant, body: Value) -> Value {
    let (status, answer) = app
        .patch(
            &format!("/v1/admin/tenants/{}", tenant.id),
            &app.ops_token,
            &body,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "PATCH {body}: {answer}");
    answer
}

/// A message read with the ops token (the tenant's key may be refused).
async fn ops_message(app: &TestApp, id: &str) -> MessageView {
    app.get_as(&format!("/v1/admin/messages/{id}"), &app.ops_token)
        .await
}

#[tokio::test]
async fn a_tenant_reads_and_changes_its_settings_and_a_bad_change_changes_nothing() {
    let app = TestApp::start().await;
    let t = app.tenant().await;
    let other = app.tenant().await;

    let before = settings(&app, &t).await;
    for field in SETTINGS {
        assert!(
            before.get(field).is_some(),
            "GET /v1/tenant has {field}: {before}"
        );
    }
    assert_eq!(before["id"], t.id.as_str());
    assert_eq!(before["sms_from"], t.sms_from.as_deref().unwrap());
    assert_eq!(before["retention_days"], 90, "the default: {before}");
    assert_eq!(before["suspended"], false);
    assert_eq!(before["quiet_hours"], Value::Null);

    let change = json!({
        "name": "Acme Dental West",
        "timezone": "America/Chicago",
        "quiet_hours": {"start": "22:00", "end": "07:30"},
        "help_text": "Acme Dental: call 555-0100. Reply STOP to opt out.",
        "ai_system_prompt": "You answer for Acme Dental West, briefly.",
        "missed_call_text": "Sorry we missed you!",
        "frequency_cap": {"max": 2, "per": "30m"},
        "require_consent_for_bulk": true,
        "retention_days": 30,
        "sms_mps": 2.5,
        "email_from": "West <west@acme.test>",
    });
    let (status, changed) = app.patch("/v1/tenant", &t.api_key, &change).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    for (field, value) in change.as_object().unwrap() {
        assert_eq!(&changed[field], value, "{field} in {changed}");
    }
    assert_eq!(changed["sms_from"], before["sms_from"], "left out: kept");
    assert_eq!(
        settings(&app, &t).await,
        changed,
        "GET reads what PATCH set"
    );

    let now = settings(&app, &t).await;
    let refused = [
        (
            json!({"timezone": "Mars/Olympus"}),
            "invalid_value",
            "timezone",
        ),
        (
            json!({"retention_days": 0}),
            "invalid_value",
            "retention_days",
        ),
        (
            json!({"retention_days": 3651}),
            "invalid_value",
            "retention_days",
        ),
        (
            json!({"retention_days": "90"}),
            "invalid_value",
            "retention_days",
        ),
        (
            json!({"quiet_hours": {"start": "25:00", "end": "08:00"}}),
            "invalid_value",
            "quiet_hours.start",
        ),
        (
            json!({"quiet_hours": {"start": "08:00", "end": "08:00"}}),
            "invalid_value",
            "quiet_hours.end",
        ),
        (json!({"sms_from": "555-0100"}), "invalid_value", "sms_from"),
        (
            json!({"messaging_service_sid": "MG123"}),
            "invalid_value",
            "messaging_service_sid",
        ),
        (json!({"sms_mps": 0}), "invalid_value", "sms_mps"),
        (
            json!({"frequency_cap": {"max": 0, "per": "24h"}}),
            "invalid_value",
            "frequency_cap.max",
        ),
        (json!({"help_text": ""}), "invalid_value", "help_text"),
        (json!({"name": null}), "invalid_value", "name"),
        (json!({"suspended": true}), "read_only", "suspended"),
        (json!({"id": "ten_x"}), "read_only", "id"),
        (json!({"colour": "blue"}), "unknown_field", "colour"),
        // A good change beside a bad one is not applied either.
        (
            json!({"name": "Renamed", "email_from": "not an address"}),
            "invalid_value",
            "email_from",
        ),
    ];
    for (body, code, field) in refused {
        let (status, error) = app.patch("/v1/tenant", &t.api_key, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        let error = api_error(&error);
        assert_eq!(
            (error.code.as_str(), error.field.as_deref()),
            (code, Some(field)),
            "{body}"
        );
    }
    // Another tenant's number routes its inbound texts: it cannot be taken.
    let (status, error) = app
        .patch(
            "/v1/tenant",
            &t.api_key,
            &json!({"sms_from": other.sms_from, "name": "Thief"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    let error = api_error(&error);
    assert_eq!(error.code, "sms_from_taken");
    assert_eq!(error.field.as_deref(), Some("sms_from"));
    assert_eq!(
        settings(&app, &t).await,
        now,
        "no refused change was applied"
    );

    // `null` unsets what may be unset.
    let (status, cleared) = app
        .patch(
            "/v1/tenant",
            &t.api_key,
            &json!({"quiet_hours": null, "frequency_cap": null, "help_text": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["quiet_hours"], Value::Null);
    assert_eq!(cleared["frequency_cap"], Value::Null);
    assert_eq!(cleared["help_text"], Value::Null);
    assert_eq!(cleared["name"], "Acme Dental West");
}

#[tokio::test]
async fn a_changed_sender_is_used_by_the_very_next_sms_and_routes_inbound_texts() {
    let twilio = TwilioMock::start().await;
    let app = TestApp::start_with_twilio(test_config().await, &twilio).await;
    let t = app.tenant().await;
    let old = t.sms_from.clone().unwrap();

    let first = app
        .post_sms(&t, "+15550170001", "from the old number")
        .await;
    app.wait_for_status(&t, &first.id, "sent", WAIT).await;
    assert_eq!(twilio.sent_to("+15550170001")[0].form["From"], old);
    // Created before the change, due after it.
    let (status, later) = app
        .post(
            "/v1/messages",
            &t.api_key,
            &json!({"channel": "sms", "to": "+15550170003", "body": "due later",
                    "send_at": (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339()}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{later}");
    let later: MessageView = view(&later);

    let new = "+15005550199";
    let (status, changed) = app
        .patch("/v1/tenant", &t.api_key, &json!({"sms_from": new}))
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");

    let next = app
        .post_sms(&t, "+15550170002", "from the new number")
        .await;
    app.wait_for_status(&t, &next.id, "sent", WAIT).await;
    assert_eq!(twilio.sent_to("+15550170002")[0].form["From"], new);
    app.wait_for_status(&t, &later.id, "sent", WAIT).await;
    assert_eq!(
        twilio.sent_to("+15550170003")[0].form["From"],
        new,
        "a message created before the change goes from the sender of when it leaves"
    );

    // Texts to the new number reach the tenant.
    let renamed = Tenant {
        sms_from: Some(new.to_owned()),
        ..t.clone()
    };
    app.text(&twilio, &renamed, "+15550170009", "are you open today?")
        .await;
    let inbound: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE tenant_id = $1 AND direction = 'inbound' AND from_addr = $2",
    )
    .bind(&t.id)
    .bind("+15550170009")
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(inbound, 1, "the text to the new number is the tenant's");
}

#[tokio::test]
async fn changed_quiet_hours_defer_the_next_message() {
    let twilio = TwilioMock::start().await;
    let app = TestApp::start_with_twilio(test_config().await, &twilio).await;
    let t = app.tenant().await; // UTC, no quiet hours

    let before = app.post_sms(&t, "+15550180001", "no quiet hours yet").await;
    app.wait_for_status(&t, &before.id, "sent", WAIT).await;

    // A window around now, in the tenant's zone (UTC).
    let now = Utc::now();
    let hhmm = |t: chrono::DateTime<Utc>| format!("{:02}:{:02}", t.hour(), t.minute());
    let window = json!({
        "start": hhmm(now - chrono::Duration::hours(1)),
        "end": hhmm(now + chrono::Duration::hours(1)),
    });
    let (status, changed) = app
        .patch("/v1/tenant", &t.api_key, &json!({"quiet_hours": window}))
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");

    let after = app.post_sms(&t, "+15550180002", "now it is quiet").await;
    let deferred = eventually_ok(WAIT, "the next SMS is deferred by quiet hours", || async {
        let m = app.message(&t, &after.id).await;
        if m.status == "scheduled" && !m.events_with("scheduled", "quiet hours").is_empty() {
            Ok(m)
        } else {
            Err(m.to_string())
        }
    })
    .await;
    assert_eq!(deferred.attempts, 0, "{deferred}");
    assert!(
        herald_tests::views::time(&deferred.send_at) > now + chrono::Duration::minutes(50),
        "send_at moves to the window's end: {deferred}"
    );
    assert_eq!(twilio.calls_to("+15550180002"), 0);
}

#[tokio::test]
async fn a_suspended_tenant_is_refused_and_its_messages_wait_while_others_send() {
    let twilio = TwilioMock::start().await;
    let app = TestApp::start_with_twilio(test_config().await, &twilio).await;
    let a = app.tenant().await;
    let b = app.tenant().await;

    // Due in two seconds: after the suspension below.
    let (status, held) = app
        .post(
            "/v1/messages",
            &a.api_key,
            &json!({"channel": "sms", "to": "+15550190001", "body": "held while suspended",
                    "send_at": (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339()}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{held}");
    let held: MessageView = view(&held);
    let suspended = ops_patch(&app, &a, json!({"suspended": true})).await;
    assert_eq!(suspended["suspended"], true);

    // Every route of the tenant refuses its keys.
    for (method, path) in [
        ("GET", "/v1/tenant"),
        ("GET", "/v1/messages"),
        ("POST", "/v1/messages"),
        ("GET", "/v1/dead-letters"),
        ("POST", "/v1/contacts/import"),
    ] {
        let (status, body) = match method {
            "GET" => app.get(path, &a.api_key).await,
            _ => app.post(path, &a.api_key, &json!({})).await,
        };
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        assert_eq!(api_error(&body).code, "tenant_suspended", "{method} {path}");
    }

    // The worker holds the due message, and says so on it, without an attempt.
    let waiting = eventually_ok(WAIT, "the suspended tenant's message is held", || async {
        let m = ops_message(&app, &held.id).await;
        if m.details().iter().any(|d| d.contains("suspended")) {
            Ok(m)
        } else {
            Err(m.to_string())
        }
    })
    .await;
    assert!(
        ["scheduled", "queued"].contains(&waiting.status.as_str()),
        "{waiting}"
    );
    assert_eq!(waiting.attempts, 0, "{waiting}");

    // Tenant B sends meanwhile.
    let theirs = app.post_sms(&b, "+15550190002", "B is not suspended").await;
    app.wait_for_status(&b, &theirs.id, "sent", WAIT).await;
    let still = ops_message(&app, &held.id).await;
    assert_eq!(still.attempts, 0, "{still}");
    assert!(
        ["scheduled", "queued"].contains(&still.status.as_str()),
        "{still}"
    );
    assert_eq!(twilio.calls_to("+15550190001"), 0, "nothing left for A");

    // A text to the suspended tenant is kept, and gets no AI reply.
    app.text(&twilio, &a, "+15550190009", "hello?").await;
    let (stored, needs_reply): (i64, bool) = sqlx::query_as(
        "SELECT count(*), bool_or(needs_reply) FROM messages
         WHERE tenant_id = $1 AND direction = 'inbound' AND from_addr = '+15550190009'",
    )
    .bind(&a.id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((stored, needs_reply), (1, false));

    // Lifted: the key works and the message leaves, with its first attempt.
    let lifted = ops_patch(&app, &a, json!({"suspended": false})).await;
    assert_eq!(lifted["suspended"], false);
    let sent = app
        .wait_for_status(&a, &held.id, "sent", Duration::from_secs(10))
        .await;
    assert_eq!(sent.attempts, 1, "{sent}");
    assert_eq!(twilio.calls_to("+15550190001"), 1);
}

#[tokio::test]
async fn ops_list_read_and_change_every_tenant() {
    let app = TestApp::start().await;
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(app.tenant().await);
    }

    let first: Page<Value> = app
        .get_as("/v1/admin/tenants?limit=2", &app.ops_token)
        .await;
    assert_eq!(first.data.len(), 2, "{first}");
    let cursor = first.next_cursor.clone().expect("a second page");
    let second: Page<Value> = app
        .get_as(
            &format!("/v1/admin/tenants?limit=2&cursor={cursor}"),
            &app.ops_token,
        )
        .await;
    assert_eq!(second.next_cursor, None, "{second}");
    let listed: Vec<&str> = first
        .data
        .iter()
        .chain(&second.data)
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = created.iter().rev().map(|t| t.id.as_str()).collect();
    assert_eq!(listed, newest_first);
    for field in SETTINGS {
        assert!(
            first.data[0].get(field).is_some(),
            "a listed tenant has {field}"
        );
    }
    for (query, field) in [("limit=0", "limit"), ("cursor=nope", "cursor")] {
        let (status, body) = app
            .get(&format!("/v1/admin/tenants?{query}"), &app.ops_token)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(api_error(&body).field.as_deref(), Some(field));
    }

    let t = &created[0];
    let one: Value = app
        .get_as(&format!("/v1/admin/tenants/{}", t.id), &app.ops_token)
        .await;
    assert_eq!(one, settings(&app, t).await, "ops see what the tenant sees");
    let changed = ops_patch(
        &app,
        t,
        json!({"name": "Renamed by ops", "retention_days": 7, "suspended": true}),
    )
    .await;
    assert_eq!(
        (
            &changed["name"],
            &changed["retention_days"],
            &changed["suspended"]
        ),
        (&json!("Renamed by ops"), &json!(7), &json!(true))
    );
    let (status, body) = app
        .patch(
            &format!("/v1/admin/tenants/{}", t.id),
            &app.ops_token,
            &json!({"suspended": "yes"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(api_error(&body).field.as_deref(), Some("suspended"));

    for id in ["ten_01ARZ3NDEKTSV4RRFFQ69G5FAV", "not-an-id"] {
        let (status, _) = app
            .get(&format!("/v1/admin/tenants/{id}"), &app.ops_token)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
        let (status, _) = app
            .patch(
                &format!("/v1/admin/tenants/{id}"),
                &app.ops_token,
                &json!({"name": "x"}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}");
    }
    // A tenant key is no operator.
    let (status, body) = app.get("/v1/admin/tenants", &created[1].api_key).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(api_error(&body).code, "forbidden");
}
