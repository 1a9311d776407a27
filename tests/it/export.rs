//! A contact's export (`GET /v1/contacts/{id}/export`): everything Herald holds about one
//! person, each object as its own route shows it, nobody else's; written as a stream; audited.

use std::time::Duration;

use herald_tests::{
    Tenant, TestApp,
    app::test_config,
    providers::TwilioMock,
    views::{AppointmentView, ContactView, MessageView, api_error},
};
use reqwest::{StatusCode, header::HeaderMap};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// `GET /v1/contacts/{id}/export` with `key`, read chunk by chunk as it arrives.
async fn export_chunks(
    app: &TestApp,
    key: &str,
    id: &str,
) -> (StatusCode, HeaderMap, Vec<Vec<u8>>) {
    let mut r = app
        .http
        .get(app.url(&format!("/v1/contacts/{id}/export")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    let mut chunks = Vec::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        chunks.push(chunk.to_vec());
    }
    (status, headers, chunks)
}

/// The tenant's export of the contact, checked to be a 200 download of one JSON document.
async fn export(app: &TestApp, tenant: &Tenant, id: &str) -> (Value, usize) {
    let (status, headers, chunks) = export_chunks(app, &tenant.api_key, id).await;
    let body = chunks.concat();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"contact-{id}.json\"").as_str()
    );
    let doc: Value = serde_json::from_slice(&body).expect("the export is one JSON document");
    let mut keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "appointments",
            "consent_events",
            "contact",
            "conversation",
            "groups",
            "messages",
            "subscriptions"
        ]
    );
    (doc, chunks.len())
}

/// `doc[list]` as an array.
fn list<'a>(doc: &'a Value, list: &str) -> &'a Vec<Value> {
    doc[list]
        .as_array()
        .unwrap_or_else(|| panic!("`{list}` is not a list: {doc}"))
}

/// The `id` of each item.
fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn new_contact(app: &TestApp, tenant: &Tenant, body: Value) -> ContactView {
    app.post_as("/v1/contacts", &tenant.api_key, &body, StatusCode::CREATED)
        .await
}

async fn send(app: &TestApp, tenant: &Tenant, body: Value) -> MessageView {
    app.post_as("/v1/messages", &tenant.api_key, &body, StatusCode::ACCEPTED)
        .await
}

async fn appointment(app: &TestApp, tenant: &Tenant, contact_id: &str) -> AppointmentView {
    let starts_at = chrono::Utc::now() + chrono::Duration::days(3);
    app.post_as(
        "/v1/appointments",
        &tenant.api_key,
        &json!({
            "contact_id": contact_id,
            "starts_at": starts_at.to_rfc3339(),
            "reminders": [{"before": "24h"}, {"before": "2h"}],
            "body_template": "Hi {{name}}, see you at {{time}} on {{date}}.",
        }),
        StatusCode::CREATED,
    )
    .await
}

/// GETs `path` (asserting 200) as raw JSON, to compare with the export to the letter.
async fn raw(app: &TestApp, tenant: &Tenant, path: &str) -> Value {
    let (status, body) = app.get(path, &tenant.api_key).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

#[tokio::test]
async fn an_export_holds_everything_about_the_person_as_each_route_shows_it_and_nothing_else() {
    let twilio = TwilioMock::start().await;
    let app = TestApp::start_with_twilio(test_config().await, &twilio).await;
    let tenant = app.tenant().await;
    let elsewhere = app.tenant().await;
    let phone = "+15551700001";

    // Before Herald knew Ann: an SMS to her number, which names no contact.
    let early = app.post_sms(&tenant, phone, "Your table is ready.").await;
    assert_eq!(early.contact_id, None);
    // Sent before her consent changes below, which would suppress it for a while.
    app.wait_for_status(&tenant, &early.id, "sent", WAIT).await;

    let ann = new_contact(
        &app,
        &tenant,
        json!({"phone": phone, "email": "ann@example.com", "name": "Ann Example"}),
    )
    .await;
    let path = format!("/v1/contacts/{}", ann.id);
    for consent in [
        json!({"status": "opted_out", "method": "verbal"}),
        json!({"status": "opted_in", "method": "web_form", "source": "https://acme.test/book", "text": "I agree."}),
    ] {
        let (status, body) = app
            .patch(&path, &tenant.api_key, &json!({"consent": consent}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    // Messages naming her, and an email to her address (in other case) naming no one.
    let sms = [
        send(
            &app,
            &tenant,
            json!({"channel": "sms", "contact_id": ann.id, "body": "Cleaning on Friday."}),
        )
        .await,
        send(
            &app,
            &tenant,
            json!({"channel": "sms", "contact_id": ann.id, "body": "Bring your card."}),
        )
        .await,
    ];
    let mail = send(
        &app,
        &tenant,
        json!({"channel": "email", "contact_id": ann.id, "subject": "Your visit", "body": "See you soon."}),
    )
    .await;
    let raw_mail = send(
        &app,
        &tenant,
        json!({"channel": "email", "to": "ANN@Example.COM", "subject": "Receipt", "body": "Thanks."}),
    )
    .await;
    assert_eq!(raw_mail.contact_id, None);

    // A conversation: a person takes it over, Ann texts, the person answers.
    let (status, body) = app
        .post(
            &format!("/v1/conversations/{}/takeover", ann.id),
            &tenant.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.text(&twilio, &tenant, phone, "Can I come earlier?")
        .await;
    let reply: MessageView = app
        .post_as(
            &format!("/v1/conversations/{}/reply", ann.id),
            &tenant.api_key,
            &json!({"body": "Yes, 2 PM works."}),
            StatusCode::ACCEPTED,
        )
        .await;

    // A text from her number kept from before (its contact was since deleted: it names none).
    let kept_text = herald_core::domain::new_id("msg");
    sqlx::query(
        "WITH m AS (
            INSERT INTO messages (id, tenant_id, channel, direction, author, to_addr, from_addr,
                                  body, status, send_at, expires_at)
            VALUES ($1, $2, 'sms', 'inbound', 'contact', $3, $4, 'Hello?', 'received', now(),
                    now() + interval '1 day')
            RETURNING id
         )
         INSERT INTO message_events (message_id, status, detail) SELECT id, 'received', 'inbound sms' FROM m",
    )
    .bind(&kept_text)
    .bind(&tenant.id)
    .bind(tenant.sms_from.as_deref())
    .bind(phone)
    .execute(&app.db)
    .await
    .unwrap();

    let visit = appointment(&app, &tenant, &ann.id).await;
    assert_eq!(visit.reminders.len(), 2, "{visit}");
    let daily = app.subscribe(&tenant, &ann.id, "07:30").await;
    let groups = [
        app.new_group(&tenant, "Patients").await,
        app.new_group(&tenant, "Newsletter").await,
        app.new_group(&tenant, "Bo's only").await,
    ];
    assert_eq!(
        app.put_member(&tenant, &groups[0].id, &ann.id).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.put_member(&tenant, &groups[1].id, &ann.id).await,
        StatusCode::NO_CONTENT
    );

    // Someone else in the same tenant, and another tenant's contact with Ann's number.
    let bo = new_contact(
        &app,
        &tenant,
        json!({"phone": "+15551700002", "email": "bo@example.com"}),
    )
    .await;
    let bo_sms = send(
        &app,
        &tenant,
        json!({"channel": "sms", "contact_id": bo.id, "body": "Hi Bo."}),
    )
    .await;
    appointment(&app, &tenant, &bo.id).await;
    app.subscribe(&tenant, &bo.id, "07:30").await;
    assert_eq!(
        app.put_member(&tenant, &groups[0].id, &bo.id).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.put_member(&tenant, &groups[2].id, &bo.id).await,
        StatusCode::NO_CONTENT
    );
    let namesake = new_contact(&app, &elsewhere, json!({"phone": phone})).await;
    let namesake_sms = app
        .post_sms(&elsewhere, phone, "Another shop's text.")
        .await;
    app.text(&twilio, &elsewhere, phone, "Wrong shop").await;

    let outbound = [&sms[0], &sms[1], &mail, &raw_mail, &reply, &bo_sms];
    for m in outbound {
        app.wait_for_status(&tenant, &m.id, "sent", WAIT).await;
    }
    app.wait_for_status(&elsewhere, &namesake_sms.id, "sent", WAIT)
        .await;

    let (doc, _) = export(&app, &tenant, &ann.id).await;

    assert_eq!(doc["contact"], raw(&app, &tenant, &path).await);
    let consent = raw(&app, &tenant, &format!("{path}/consent-events?limit=100")).await;
    assert_eq!(list(&consent, "data").len(), 2, "{consent}");
    assert_eq!(doc["consent_events"], consent["data"]);

    // Every message about her, newest first, each as it reads alone.
    let conversation = raw(
        &app,
        &tenant,
        &format!("/v1/conversations/{}?limit=100", ann.id),
    )
    .await;
    let inbound: Vec<&Value> = list(&conversation, "data")
        .iter()
        .filter(|e| e["direction"] == "inbound")
        .collect();
    assert_eq!(inbound.len(), 1, "{conversation}");
    let mut expected: Vec<String> = [&early, &sms[0], &sms[1], &mail, &raw_mail, &reply]
        .iter()
        .map(|m| m.id.clone())
        .chain(visit.reminders.iter().map(|r| r.id.clone()))
        .chain([inbound[0]["id"].as_str().unwrap().to_owned(), kept_text])
        .collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    let messages = list(&doc, "messages");
    assert_eq!(ids(messages), expected, "newest first, nobody else's");
    for m in messages {
        let alone = raw(
            &app,
            &tenant,
            &format!("/v1/messages/{}", m["id"].as_str().unwrap()),
        )
        .await;
        assert!(!list(&alone, "events").is_empty(), "{alone}");
        assert_eq!(*m, alone);
    }
    assert_eq!(doc["conversation"], conversation["data"]);
    assert!(conversation["next_cursor"].is_null());
    assert!(list(&doc, "conversation").len() >= 5, "{conversation}");

    let visit_alone = raw(&app, &tenant, &format!("/v1/appointments/{}", visit.id)).await;
    assert_eq!(doc["appointments"], json!([visit_alone]));
    let daily_alone = raw(&app, &tenant, &format!("/v1/subscriptions/{}", daily.id)).await;
    assert_eq!(doc["subscriptions"], json!([daily_alone]));

    // Her two groups, newest first, as each reads alone, with when she joined.
    let memberships = list(&doc, "groups");
    assert_eq!(
        ids(memberships),
        [groups[1].id.clone(), groups[0].id.clone()]
    );
    for g in memberships {
        let mut g = g.clone();
        let added_at = g.as_object_mut().unwrap().remove("added_at").unwrap();
        herald_tests::views::time(added_at.as_str().unwrap());
        let alone = raw(
            &app,
            &tenant,
            &format!("/v1/groups/{}", g["id"].as_str().unwrap()),
        )
        .await;
        assert_eq!(g, alone);
    }
    assert_eq!(memberships[1]["members"], 2, "Patients has Bo too");

    // The namesake's export in the other tenant has only its own.
    let (theirs, _) = export(&app, &elsewhere, &namesake.id).await;
    let theirs_ids = ids(list(&theirs, "messages"));
    assert!(theirs_ids.contains(&namesake_sms.id), "{theirs}");
    assert!(
        theirs_ids.iter().all(|id| !expected.contains(id)),
        "{theirs}"
    );
}

#[tokio::test]
async fn a_contact_with_twenty_thousand_messages_is_exported_whole_in_order_and_in_many_chunks() {
    let app = TestApp::start().await;
    let tenant = app.tenant().await;
    let phone = "+15551700011";
    let ann = new_contact(&app, &tenant, json!({"phone": phone})).await;
    let bo = new_contact(&app, &tenant, json!({"phone": "+15551700012"})).await;
    // 36,000 of the tenant's messages in one statement: of the oldest 30,000 a third name
    // Ann, a third are to her number naming no one, a third are Bo's; the newest 6,000 are
    // all Bo's. Each has one event.
    sqlx::query(
        "WITH m AS (
            INSERT INTO messages (id, tenant_id, channel, to_addr, body, status, send_at,
                                  expires_at, contact_id)
            SELECT 'msg_' || lpad(n::text, 26, '0'), $1, 'sms',
                   CASE WHEN bo THEN $5 ELSE $3 END, 'Message ' || n, 'sent', now(),
                   now() + interval '1 day',
                   CASE WHEN bo THEN $4 WHEN n % 3 = 1 THEN $2 END
            FROM generate_series(1, 36000) n, LATERAL (SELECT n > 30000 OR n % 3 = 0 AS bo) b
            RETURNING id
         )
         INSERT INTO message_events (message_id, status, detail) SELECT id, 'sent', 'loaded' FROM m",
    )
    .bind(&tenant.id)
    .bind(&ann.id)
    .bind(phone)
    .bind(&bo.id)
    .bind("+15551700012")
    .execute(&app.db)
    .await
    .unwrap();

    let (doc, chunks) = export(&app, &tenant, &ann.id).await;
    assert!(chunks > 1, "the export came in {chunks} chunk(s)");
    let messages = list(&doc, "messages");
    let expected: Vec<String> = (1..=30000u32)
        .rev()
        .filter(|n| n % 3 != 0)
        .map(|n| format!("msg_{n:026}"))
        .collect();
    assert_eq!(messages.len(), 20_000);
    assert!(
        ids(messages) == expected,
        "every message of hers, newest first"
    );
    for m in messages {
        assert_eq!(
            m["events"],
            json!([{"at": m["events"][0]["at"], "status": "sent", "detail": "loaded"}])
        );
    }
    // Her conversation is the SMS naming her, oldest first, every page of it.
    let conversation = ids(list(&doc, "conversation"));
    let named: Vec<String> = (1..=30000u32)
        .filter(|n| n % 3 == 1)
        .map(|n| format!("msg_{n:026}"))
        .collect();
    assert!(
        conversation == named,
        "the whole conversation, oldest first"
    );
}

#[tokio::test]
async fn an_export_of_an_unknown_or_another_tenants_contact_is_404_and_an_export_is_audited() {
    let app = TestApp::start().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let ann = new_contact(&app, &a, json!({"phone": "+15551700021"})).await;
    let theirs = new_contact(&app, &b, json!({"phone": "+15551700021"})).await;

    for id in [
        "ct_01J00000000000000000000000",
        "nonsense",
        theirs.id.as_str(),
    ] {
        let (status, _, chunks) = export_chunks(&app, &a.api_key, id).await;
        let body: Value = serde_json::from_slice(&chunks.concat()).unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND, "{id}: {body}");
        assert_eq!(api_error(&body).code, "not_found", "{id}");
    }
    let (status, _, _) = export_chunks(&app, "hk_not_a_key", &ann.id).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    export(&app, &a, &ann.id).await;
    let (status, audit) = app
        .get("/v1/audit?action=contact.exported", &a.api_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let entries = list(&audit, "data");
    assert_eq!(entries.len(), 1, "only the export that was given: {audit}");
    assert_eq!(entries[0]["actor"], a.key_prefix.as_str());
    assert_eq!(entries[0]["target"], ann.id.as_str());
    assert_eq!(entries[0]["tenant_id"], a.id.as_str());
    let (_, other) = app
        .get("/v1/audit?action=contact.exported", &b.api_key)
        .await;
    assert_eq!(list(&other, "data").len(), 0, "{other}");
}
