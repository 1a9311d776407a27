//! Every validation error in the contract: its status, code and field, and nothing created.

use herald_tests::{TestApp, views::api_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Asserts the answer and that no message row and no queue key exist afterwards.
async fn assert_refused(
    app: &TestApp,
    (status, body): (StatusCode, Value),
    want: StatusCode,
    code: &str,
    field: Option<&str>,
    case: &str,
) {
    assert_eq!(status, want, "{case}: {body}");
    assert_eq!(api_error(&body).code, code, "{case}: {body}");
    assert_eq!(api_error(&body).field.as_deref(), field, "{case}: {body}");
    let message = api_error(&body).message;
    assert!(
        message.len() > 10,
        "{case}: the message should help a person: {body}"
    );
    assert_eq!(
        app.message_rows().await,
        0,
        "{case}: a rejected request must leave no row"
    );
    assert!(
        app.queue_keys().await.is_empty(),
        "{case}: a rejected request must leave no job"
    );
}

#[tokio::test]
async fn every_bad_message_request_is_refused_with_its_field() {
    let app = TestApp::start().await;
    let t = app.tenant().await;
    let far = (chrono::Utc::now() + chrono::Duration::days(400)).to_rfc3339();
    let sms = |extra: Value| {
        let mut base = json!({"channel": "sms", "to": "+15551234567", "body": "hi"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = v.clone();
            }
        }
        base
    };
    let cases: Vec<(&str, Value, &str, Option<&str>)> = vec![
        ("not an object", json!(["sms"]), "invalid_type", None),
        (
            "no channel",
            json!({"to": "+15551234567", "body": "hi"}),
            "missing_field",
            Some("channel"),
        ),
        (
            "unknown channel",
            sms(json!({"channel": "fax"})),
            "invalid_value",
            Some("channel"),
        ),
        (
            "channel of the wrong type",
            sms(json!({"channel": 5})),
            "invalid_type",
            Some("channel"),
        ),
        (
            "bad phone",
            sms(json!({"to": "555-1234"})),
            "invalid_value",
            Some("to"),
        ),
        (
            "phone without plus",
            sms(json!({"to": "15551234567"})),
            "invalid_value",
            Some("to"),
        ),
        (
            "no recipient",
            sms(json!({"to": null})),
            "missing_field",
            Some("to"),
        ),
        (
            "no body",
            sms(json!({"body": null})),
            "missing_field",
            Some("body"),
        ),
        (
            "empty body",
            sms(json!({"body": ""})),
            "invalid_value",
            Some("body"),
        ),
        (
            "body too long",
            sms(json!({"body": "x".repeat(1601)})),
            "invalid_value",
            Some("body"),
        ),
        (
            "body of the wrong type",
            sms(json!({"body": 12})),
            "invalid_type",
            Some("body"),
        ),
        (
            "subject on sms",
            sms(json!({"subject": "hello"})),
            "invalid_value",
            Some("subject"),
        ),
        (
            "unknown priority",
            sms(json!({"priority": "urgent"})),
            "invalid_value",
            Some("priority"),
        ),
        (
            "priority of the wrong type",
            sms(json!({"priority": 1})),
            "invalid_type",
            Some("priority"),
        ),
        (
            "unparsable send_at",
            sms(json!({"send_at": "tomorrow at noon"})),
            "invalid_value",
            Some("send_at"),
        ),
        (
            "send_at without offset",
            sms(json!({"send_at": "2030-01-01T10:00:00"})),
            "invalid_value",
            Some("send_at"),
        ),
        (
            "send_at too far ahead",
            sms(json!({"send_at": far})),
            "invalid_value",
            Some("send_at"),
        ),
        (
            "expires before it is sent",
            sms(json!({"expires_at": "2020-01-01T00:00:00Z"})),
            "invalid_value",
            Some("expires_at"),
        ),
        (
            "quiet hours flag of the wrong type",
            sms(json!({"respect_quiet_hours": "yes"})),
            "invalid_type",
            Some("respect_quiet_hours"),
        ),
        (
            "metadata not an object",
            sms(json!({"metadata": "x"})),
            "invalid_type",
            Some("metadata"),
        ),
        (
            "metadata over 4 KiB",
            sms(json!({"metadata": {"blob": "x".repeat(5000)}})),
            "invalid_value",
            Some("metadata"),
        ),
        (
            "unknown field",
            sms(json!({"sendAt": "2030-01-01T10:00:00Z"})),
            "unknown_field",
            Some("sendAt"),
        ),
        (
            "unknown contact",
            sms(json!({"contact_id": "ct_01JD3Z8K6T3V4W5X6Y7Z8A9B0C"})),
            "unknown_contact",
            Some("contact_id"),
        ),
        (
            "malformed contact id",
            sms(json!({"contact_id": "bob"})),
            "unknown_contact",
            Some("contact_id"),
        ),
        (
            "email without subject",
            json!({"channel": "email", "to": "a@example.com", "body": "hi"}),
            "missing_field",
            Some("subject"),
        ),
        (
            "bad email",
            json!({"channel": "email", "to": "not-an-address", "subject": "s", "body": "hi"}),
            "invalid_value",
            Some("to"),
        ),
        (
            "webhook without body",
            json!({"channel": "webhook", "to": "https://hooks.example.com/x"}),
            "missing_field",
            Some("body"),
        ),
        (
            "webhook to ftp",
            json!({"channel": "webhook", "to": "ftp://hooks.example.com/x", "body": {}}),
            "invalid_value",
            Some("to"),
        ),
        (
            "webhook without to",
            json!({"channel": "webhook", "body": {"a": 1}}),
            "missing_field",
            Some("to"),
        ),
    ];
    for (case, body, code, field) in cases {
        let answer = app.post("/v1/messages", &t.api_key, &body).await;
        assert_refused(
            &app,
            answer,
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            field,
            case,
        )
        .await;
    }
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused() {
    let app = TestApp::start().await;
    let t = app.tenant().await;
    let answer = app
        .post_raw("/v1/messages", &t.api_key, "{\"channel\": \"sms\",")
        .await;
    assert_refused(
        &app,
        answer,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        None,
        "truncated JSON",
    )
    .await;
    let answer = app.post_raw("/v1/messages", &t.api_key, "").await;
    assert_refused(
        &app,
        answer,
        StatusCode::BAD_REQUEST,
        "invalid_json",
        None,
        "empty body",
    )
    .await;
    let huge = json!({"channel": "sms", "to": "+15551234567", "body": "hi", "metadata": {"x": "y".repeat(70 * 1024)}});
    let answer = app
        .post_raw(
            "/v1/messages",
            &t.api_key,
            serde_json::to_vec(&huge).unwrap(),
        )
        .await;
    assert_refused(
        &app,
        answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
        "body over 64 KiB",
    )
    .await;
    let long_key = "k".repeat(300);
    let answer = app
        .post_with_headers(
            "/v1/messages",
            &t.api_key,
            &json!({"channel": "sms", "to": "+15551234567", "body": "hi"}),
            &[("Idempotency-Key", long_key.as_str())],
        )
        .await;
    assert_refused(
        &app,
        answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_value",
        Some("Idempotency-Key"),
        "long idempotency key",
    )
    .await;
}

#[tokio::test]
async fn bad_list_parameters_name_the_parameter() {
    let app = TestApp::start().await;
    let t = app.tenant().await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("cursor=garbage", "cursor"),
        ("status=lost", "status"),
        ("colour=blue", "colour"),
    ] {
        let (status, body) = app.get(&format!("/v1/messages?{query}"), &t.api_key).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(
            api_error(&body).field.as_deref(),
            Some(field),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn bad_tenant_requests_name_the_field() {
    let app = TestApp::start().await;
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        ("no name", json!({}), "missing_field", "name"),
        ("blank name", json!({"name": "  "}), "invalid_value", "name"),
        (
            "bad time zone",
            json!({"name": "x", "timezone": "Mars/Olympus"}),
            "invalid_value",
            "timezone",
        ),
        (
            "bad sms_from",
            json!({"name": "x", "sms_from": "12345"}),
            "invalid_value",
            "sms_from",
        ),
        (
            "bad email_from",
            json!({"name": "x", "email_from": "nobody"}),
            "invalid_value",
            "email_from",
        ),
        (
            "bad quiet start",
            json!({"name": "x", "quiet_hours": {"start": "25:00", "end": "08:00"}}),
            "invalid_value",
            "quiet_hours.start",
        ),
        (
            "quiet hours missing end",
            json!({"name": "x", "quiet_hours": {"start": "21:00"}}),
            "missing_field",
            "quiet_hours.end",
        ),
        (
            "quiet hours not an object",
            json!({"name": "x", "quiet_hours": "21-8"}),
            "invalid_type",
            "quiet_hours",
        ),
        (
            "unknown field",
            json!({"name": "x", "plan": "gold"}),
            "unknown_field",
            "plan",
        ),
    ];
    for (case, body, code, field) in cases {
        let (status, answer) = app.post("/v1/admin/tenants", &app.ops_token, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{case}: {answer}");
        assert_eq!(api_error(&answer).code, code, "{case}: {answer}");
        assert_eq!(
            api_error(&answer).field.as_deref(),
            Some(field),
            "{case}: {answer}"
        );
    }
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(tenants, 0, "no refused request created a tenant");
}
