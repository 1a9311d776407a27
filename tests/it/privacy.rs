//! Erasure and retention: what a privacy review asks of the data Herald keeps.

use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_core::services::privacy::{self, RetentionPace};
use herald_tests::{
    Tenant, TestApp,
    app::test_config,
    eventually,
    providers::{Reply, TwilioMock, WebhookReceiver},
    unique,
    views::{ContactView, DeadLetterView, MessageView, Page, api_error, view},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

/// Every text, varchar, JSON and array column of every table: which of `needles` any row
/// holds, anywhere in it, as `table.column: needle`.
async fn traces(db: &PgPool, needles: &[String]) -> Vec<String> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text
         FROM information_schema.columns c
         JOIN information_schema.tables t
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
           AND c.data_type IN ('text', 'character varying', 'character', 'jsonb', 'json', 'ARRAY')
         ORDER BY 1, 2",
    )
    .fetch_all(db)
    .await
    .unwrap();
    assert!(columns.len() > 50, "the schema's text columns: {columns:?}");
    let mut found = Vec::new();
    for (table, column) in columns {
        let sql = format!(
            "SELECT n FROM unnest($1::text[]) n
             WHERE EXISTS (SELECT 1 FROM \"{table}\" WHERE \"{column}\"::text LIKE '%' || n || '%')"
        );
        let hits: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(needles)
            .fetch_all(db)
            .await
            .unwrap();
        found.extend(hits.into_iter().map(|n| format!("{table}.{column}: {n}")));
    }
    found
}

async fn post_message(app: &TestApp, tenant: &Tenant, body: Value) -> MessageView {
    let (status, answer) = app.post("/v1/messages", &tenant.api_key, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    view(&answer)
}

async fn created(app: &TestApp, tenant: &Tenant, path: &str, body: Value) -> Value {
    let (status, answer) = app.post(path, &tenant.api_key, &body).await;
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

/// The ids of the messages whose event snapshots Herald keeps for event webhooks.
async fn event_count(db: &PgPool, tenant: &Tenant) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = $1")
        .bind(&tenant.id)
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn erasure_leaves_no_trace_of_the_person_cancels_what_waits_and_keeps_their_stop() {
    let twilio = TwilioMock::start().await;
    let app = TestApp::start_with_twilio(test_config().await, &twilio).await;
    let receiver = WebhookReceiver::start().await;
    let tenant = app.tenant().await;
    let other_tenant = app.tenant().await;
    app.create_endpoint(
        &tenant,
        &receiver.url("/events"),
        &[
            "message.sent",
            "message.failed",
            "inbound.received",
            "contact.opted_out",
        ],
    )
    .await;

    // Everything about one person, each piece a string found nowhere else.
    let tag = unique("");
    let digits: String = tag.chars().filter(char::is_ascii_digit).take(7).collect();
    let phone = format!("+1555{digits:0<7}");
    let email = format!("zelda.{tag}@example.test");
    let name = format!("Zelda Quill {tag}");
    let text = |what: &str| format!("{what} {tag}");
    let person: ContactView = app
        .post_as(
            "/v1/contacts",
            &tenant.api_key,
            &json!({"phone": phone, "email": email, "name": name}),
            StatusCode::CREATED,
        )
        .await;
    let (status, body) = app
        .patch(
            &format!("/v1/contacts/{}", person.id),
            &tenant.api_key,
            &json!({"consent": {"status": "opted_in", "method": "paper",
                    "source": text("signed form of"), "text": text("I, Zelda, agree")}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let by_contact = post_message(
        &app,
        &tenant,
        json!({"channel": "sms", "contact_id": person.id, "body": text("cleaning reminder")}),
    )
    .await;
    let by_number = post_message(
        &app,
        &tenant,
        json!({"channel": "sms", "to": phone, "body": text("by number"), "metadata": {"who": name}}),
    )
    .await;
    for m in [&by_contact, &by_number] {
        app.wait_for_status(&tenant, &m.id, "sent", WAIT).await;
    }
    twilio.script([Reply::TwilioError {
        status: 400,
        code: 21617,
        message: format!("The message to {phone} exceeds the 1600 character limit"),
    }]);
    let failed = post_message(
        &app,
        &tenant,
        json!({"channel": "sms", "contact_id": person.id, "body": text("refused")}),
    )
    .await;
    app.wait_for_status(&tenant, &failed.id, "failed", WAIT)
        .await;
    eventually(WAIT, "the refusal's dead letter", || async {
        (app.dead_letters(&tenant.api_key, "").await.len() == 1).then_some(())
    })
    .await;
    let mail = post_message(
        &app,
        &tenant,
        json!({"channel": "email", "to": email, "subject": text("your invoice"), "body": text("invoice body")}),
    )
    .await;
    app.wait_for_status(&tenant, &mail.id, "sent", WAIT).await;

    // A conversation a person answers.
    let (status, taken) = app
        .post(
            &format!("/v1/conversations/{}/takeover", person.id),
            &tenant.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{taken}");
    app.text(&twilio, &tenant, &phone, &text("can I move my visit"))
        .await;
    let reply: MessageView = view(
        &created(
            &app,
            &tenant,
            &format!("/v1/conversations/{}/reply", person.id),
            json!({"body": text("yes, Thursday works")}),
        )
        .await,
    );
    app.wait_for_status(&tenant, &reply.id, "sent", WAIT).await;

    // What still waits: a reminder and a daily text (and, below, a message due in three
    // seconds); a group.
    let starts = Utc::now() + chrono::Duration::days(3);
    created(
        &app,
        &tenant,
        "/v1/appointments",
        json!({"contact_id": person.id, "starts_at": starts.to_rfc3339(),
               "reminders": [{"before": "24h"}], "body_template": "Hi {{name}}, see you {{date}}."}),
    )
    .await;
    created(
        &app,
        &tenant,
        "/v1/subscriptions",
        json!({"contact_id": person.id, "send_at_local": "08:00",
               "content": {"kind": "static", "body": text("good morning")}}),
    )
    .await;
    let group = created(&app, &tenant, "/v1/groups", json!({"name": "Regulars"})).await;
    created(
        &app,
        &tenant,
        &format!("/v1/groups/{}/members", group["id"].as_str().unwrap()),
        json!({"contact_ids": [person.id]}),
    )
    .await;

    // Then STOP.
    app.text(&twilio, &tenant, &phone, "STOP").await;
    assert!(app.contact(&tenant, &person.id).await.opted_out);

    // Another contact of the tenant, and the same number at another tenant: untouched.
    let neighbour: ContactView = app
        .post_as(
            "/v1/contacts",
            &tenant.api_key,
            &json!({"phone": "+15557000001", "name": "Neighbour"}),
            StatusCode::CREATED,
        )
        .await;
    let kept = post_message(
        &app,
        &tenant,
        json!({"channel": "sms", "contact_id": neighbour.id, "body": "neighbour keeps"}),
    )
    .await;
    app.wait_for_status(&tenant, &kept.id, "sent", WAIT).await;

    let scheduled_before = app.deliveries_stats().await.scheduled;
    let soon = post_message(
        &app,
        &tenant,
        json!({"channel": "sms", "contact_id": person.id, "body": text("due soon"),
               "send_at": (Utc::now() + chrono::Duration::seconds(3)).to_rfc3339()}),
    )
    .await;
    let about: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE tenant_id = $1
           AND (contact_id = $2 OR to_addr IN ($3, $4) OR from_addr = $3)",
    )
    .bind(&tenant.id)
    .bind(&person.id)
    .bind(&phone)
    .bind(&email)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let needles = vec![
        phone.clone(),
        phone.trim_start_matches('+').to_owned(),
        email.clone(),
        name.clone(),
        tag.clone(),
    ];
    assert!(
        traces(&app.db, &needles).await.len() > 10,
        "the person is all over the database before the erasure"
    );
    let events_before = event_count(&app.db, &tenant).await;

    // Erase.
    let path = format!("/v1/contacts/{}", person.id);
    let (status, answer) = app.delete(&path, &tenant.api_key).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let erased = &answer["erased"];
    assert_eq!(erased["messages"], about, "{answer}");
    assert_eq!(erased["appointments"], 1, "{answer}");
    assert_eq!(erased["subscriptions"], 1, "{answer}");
    assert_eq!(
        erased["canceled"], 2,
        "the reminder and the due message: {answer}"
    );
    assert_eq!(erased["dead_letters"], 1, "{answer}");
    // The conversation: two texts in (one STOP), the person's reply, and every SMS by contact.
    assert!(
        erased["conversation_entries"].as_u64().unwrap() >= 4,
        "{answer}"
    );
    assert!(erased["events"].as_u64().unwrap() >= 5, "{answer}");

    let hits = traces(&app.db, &needles).await;
    assert!(hits.is_empty(), "left after the erasure: {hits:#?}");
    let (status, _) = app.get(&path, &tenant.api_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, again) = app.delete(&path, &tenant.api_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{again}");
    assert_eq!(
        event_count(&app.db, &tenant).await,
        events_before - erased["events"].as_i64().unwrap()
    );

    // The rows stay for the tenant's figures, without their texts.
    let redacted = app.message(&tenant, &by_contact.id).await;
    assert_eq!(
        (
            redacted.status.as_str(),
            redacted.to.as_str(),
            &redacted.body
        ),
        ("sent", "", &json!(""))
    );
    assert!(redacted.redacted_at.is_some(), "{redacted:?}");
    assert!(
        redacted
            .events
            .iter()
            .all(|e| e.detail.is_none() || e.detail.as_deref() == Some("")),
        "{redacted:?}"
    );
    assert_eq!(
        redacted.event_statuses(),
        ["queued", "sending", "sent"],
        "the steps stay, without their details"
    );
    assert_eq!(app.message(&tenant, &soon.id).await.status, "canceled");
    assert!(app.dead_letters(&tenant.api_key, "").await.is_empty());
    assert_eq!(
        app.message(&tenant, &kept.id).await.body,
        json!("neighbour keeps")
    );
    assert_eq!(
        app.contact(&tenant, &neighbour.id).await.name.as_deref(),
        Some("Neighbour")
    );

    // The due message's job finds nothing to send.
    eventually(WAIT, "the due message's job ran", || async {
        let stats = app.deliveries_stats().await;
        (stats.scheduled == scheduled_before && stats.pending == 0 && stats.running == 0)
            .then_some(())
    })
    .await;
    assert!(
        !twilio.bodies_to(&phone).contains(&text("due soon")),
        "{:?}",
        twilio.bodies_to(&phone)
    );

    // The STOP outlives the erasure, for this tenant only.
    let by_number_again = post_message(
        &app,
        &tenant,
        json!({"channel": "sms", "to": phone, "body": "still there?"}),
    )
    .await;
    let m = app
        .wait_for_status(&tenant, &by_number_again.id, "suppressed", WAIT)
        .await;
    assert_eq!(
        m.details_of("suppressed"),
        ["the recipient has opted out; not sent"]
    );
    let elsewhere = post_message(
        &app,
        &other_tenant,
        json!({"channel": "sms", "to": phone, "body": "another business"}),
    )
    .await;
    app.wait_for_status(&other_tenant, &elsewhere.id, "sent", WAIT)
        .await;
    let again: ContactView = app
        .post_as(
            "/v1/contacts",
            &tenant.api_key,
            &json!({"phone": phone}),
            StatusCode::CREATED,
        )
        .await;
    assert!(again.opted_out, "{again:?}");
    assert_eq!(again.consent.status, "opted_out");
    assert_eq!(again.consent.method.as_deref(), Some("sms_keyword"));
    let history: Page<Value> = app
        .get_as(
            &format!("/v1/contacts/{}/consent-events", again.id),
            &tenant.api_key,
        )
        .await;
    assert_eq!(history.data.len(), 1, "{:?}", history.data);
    assert_eq!(history.data[0]["status"], "opted_out");
    let to_again = post_message(
        &app,
        &tenant,
        json!({"channel": "sms", "contact_id": again.id, "body": "hello again"}),
    )
    .await;
    app.wait_for_status(&tenant, &to_again.id, "suppressed", WAIT)
        .await;
    // Texting START is the person's way back in, as ever.
    app.text(&twilio, &tenant, &phone, "START").await;
    assert!(!app.contact(&tenant, &again.id).await.opted_out);

    // The audit log has it, with the counts and nothing personal.
    let (status, audit) = app
        .get("/v1/audit?action=contact.erased", &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let entries = audit["data"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["target"], json!(person.id));
    assert_eq!(entries[0]["actor"], json!(&tenant.api_key[..12]));
    assert_eq!(entries[0]["detail"]["erased"], *erased);
}

#[tokio::test]
async fn a_contact_of_another_tenant_cannot_be_erased() {
    let app = TestApp::start().await;
    let (a, b) = (app.tenant().await, app.tenant().await);
    let theirs: ContactView = app
        .post_as(
            "/v1/contacts",
            &a.api_key,
            &json!({"phone": "+15557000002", "name": "Kept"}),
            StatusCode::CREATED,
        )
        .await;
    let path = format!("/v1/contacts/{}", theirs.id);
    for bad in [path.as_str(), "/v1/contacts/ct_nope", "/v1/contacts/x"] {
        let (status, body) = app.delete(bad, &b.api_key).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}: {body}");
    }
    assert_eq!(
        app.contact(&a, &theirs.id).await.name.as_deref(),
        Some("Kept")
    );
}

/// Waits until the clock has passed `t` by a few milliseconds (ids carry milliseconds).
async fn past(t: DateTime<Utc>) {
    eventually(Duration::from_secs(1), "the clock moved on", || async {
        (Utc::now() > t + chrono::Duration::milliseconds(3)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn retention_removes_the_texts_older_than_the_tenant_keeps_and_nothing_younger() {
    let twilio = TwilioMock::start().await;
    let mut app = TestApp::start_with_twilio(test_config().await, &twilio).await;
    app.start_scheduler();
    let receiver = WebhookReceiver::start().await;
    let tenant = app.tenant_with(json!({"retention_days": 30})).await;
    let keeper = app.tenant_with(json!({"retention_days": 365})).await;
    for t in [&tenant, &keeper] {
        app.create_endpoint(t, &receiver.url("/events"), &["message.sent"])
            .await;
    }
    let (phone, other) = ("+15557000010", "+15557000011");

    // Old: sent texts of both tenants, a conversation text, a refused one with a dead letter,
    // and one scheduled far ahead.
    let old_sent = app.post_sms(&tenant, phone, "old text").await;
    let keeper_old = app.post_sms(&keeper, phone, "keeper's old text").await;
    twilio.always_for(
        other,
        Reply::TwilioError {
            status: 400,
            code: 21617,
            message: "The message exceeds the 1600 character limit".into(),
        },
    );
    let old_failed = app.post_sms(&tenant, other, "old refused").await;
    // (Taken over, so no reply joins it.)
    app.waiting_conversation(&twilio, &tenant, phone, "old question")
        .await;
    let ahead = post_message(
        &app,
        &tenant,
        json!({"channel": "sms", "to": phone, "body": "far ahead",
               "send_at": (Utc::now() + chrono::Duration::days(60)).to_rfc3339(),
               "expires_at": (Utc::now() + chrono::Duration::days(61)).to_rfc3339()}),
    )
    .await;
    for (t, m, status) in [
        (&tenant, &old_sent, "sent"),
        (&keeper, &keeper_old, "sent"),
        (&tenant, &old_failed, "failed"),
    ] {
        app.wait_for_status(t, &m.id, status, WAIT).await;
    }
    eventually(WAIT, "the refusal's dead letter", || async {
        (app.dead_letters(&tenant.api_key, "").await.len() == 1).then_some(())
    })
    .await;
    // Their events have been delivered, and the attempts recorded.
    eventually(WAIT, "two message.sent events delivered", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM event_attempts")
            .fetch_one(&app.db)
            .await
            .unwrap();
        (n >= 2).then_some(())
    })
    .await;
    let boundary = Utc::now();
    past(boundary).await;

    // Young.
    let young = app.post_sms(&tenant, phone, "young text").await;
    app.wait_for_status(&tenant, &young.id, "sent", WAIT).await;
    let inbound_old: String = sqlx::query_scalar(
        "SELECT id FROM messages WHERE tenant_id = $1 AND direction = 'inbound' AND body = 'old question'",
    )
    .bind(&tenant.id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let events_of = |tenant_id: String| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE tenant_id = $1")
                .bind(tenant_id)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    eventually(WAIT, "the young text's event", || async {
        (events_of(tenant.id.clone()).await >= 2).then_some(())
    })
    .await;
    let (young_events, keeper_events) = (
        events_of(tenant.id.clone()).await - 1,
        events_of(keeper.id.clone()).await,
    );

    // Thirty days after the boundary: the old are older than the tenant keeps them.
    let later = boundary + chrono::Duration::days(30);
    let pace = RetentionPace {
        batch: 2,
        rest: 0.0,
    };
    let go = CancellationToken::new();
    let done = privacy::retention_pass(&app.db, later, pace, &go)
        .await
        .unwrap();
    assert!(done.ran);
    assert_eq!(done.messages_redacted, 3, "{done:?}");
    assert_eq!(done.events_removed, 1, "{done:?}");
    assert!(done.attempts_removed >= 1, "{done:?}");

    for id in [&old_sent.id, &old_failed.id, &inbound_old] {
        let m = app.message(&tenant, id).await;
        assert_eq!(m.body, json!(""), "{m:?}");
        assert!(m.redacted_at.is_some(), "{m:?}");
        assert_eq!(m.last_error, None, "{m:?}");
        assert!(!m.to.is_empty(), "addresses stay: {m:?}");
        for e in &m.events {
            if ["retrying", "failed", "dead"].contains(&e.status.as_str()) {
                assert_eq!(e.detail, None, "{m:?}");
            }
        }
    }
    let failed = app.message(&tenant, &old_failed.id).await;
    assert_eq!(failed.status, "failed", "statuses stay");
    assert!(
        failed.event_statuses().contains(&"failed".to_owned()),
        "{failed:?}"
    );
    let letters: Vec<DeadLetterView> = app.dead_letters(&tenant.api_key, "").await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].payload, json!({}));
    assert!(
        letters[0].errors.iter().all(|e| e.error.is_empty()) && !letters[0].errors.is_empty(),
        "{:?}",
        letters[0].errors
    );
    let (status, refused) = app
        .post(
            &format!("/v1/dead-letters/{}/replay", letters[0].id),
            &tenant.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(api_error(&refused).code, "redacted", "{refused}");

    // Younger, waiting, or another tenant's that keeps a year: untouched.
    assert_eq!(
        app.message(&tenant, &young.id).await.body,
        json!("young text")
    );
    assert_eq!(
        app.message(&tenant, &ahead.id).await.body,
        json!("far ahead")
    );
    assert_eq!(
        app.message(&keeper, &keeper_old.id).await.body,
        json!("keeper's old text")
    );
    assert_eq!(events_of(tenant.id.clone()).await, young_events);
    assert_eq!(events_of(keeper.id.clone()).await, keeper_events);
    let listed: Page<MessageView> = app.messages(&tenant, "").await;
    assert_eq!(listed.data.len(), 5, "every message is still counted");

    // Another pass finds nothing more; the one scheduled ahead is redacted once done and old.
    let again = privacy::retention_pass(&app.db, later, pace, &go)
        .await
        .unwrap();
    assert_eq!(again.messages_redacted, 0, "{again:?}");
    let (status, body) = app.cancel(&tenant, &ahead.id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ahead_old = Utc::now() + chrono::Duration::days(61 + 30);
    let done = privacy::retention_pass(&app.db, ahead_old, pace, &go)
        .await
        .unwrap();
    assert!(done.messages_redacted >= 1, "{done:?}");
    assert_eq!(app.message(&tenant, &ahead.id).await.body, json!(""));
    assert_eq!(
        app.message(&keeper, &keeper_old.id).await.body,
        json!("keeper's old text"),
        "a year is not up yet"
    );
}

/// `n` delivered SMS of `tenant`, made a second apart from `from` (ids as Herald makes them
/// then), written straight into the table; their ids.
async fn old_messages(db: &PgPool, tenant: &Tenant, from: DateTime<Utc>, n: usize) -> Vec<String> {
    let (ids, times): (Vec<String>, Vec<DateTime<Utc>>) = (0..n)
        .map(|i| {
            let at = from + chrono::Duration::seconds(i as i64);
            (
                herald_core::domain::id_floor("msg", at.timestamp_millis()),
                at,
            )
        })
        .unzip();
    sqlx::query(
        "INSERT INTO messages (id, tenant_id, channel, to_addr, body, status, send_at, expires_at,
                               created_at, sent_at)
         SELECT x.id, $1, 'sms', '+15557000020', 'an old text', 'delivered', x.at,
                x.at + interval '1 day', x.at, x.at
         FROM unnest($2::text[], $3::timestamptz[]) AS x(id, at)",
    )
    .bind(&tenant.id)
    .bind(&ids)
    .bind(&times)
    .execute(db)
    .await
    .unwrap();
    ids
}

async fn redacted(db: &PgPool, tenant: &Tenant) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE tenant_id = $1 AND redacted_at IS NOT NULL",
    )
    .bind(&tenant.id)
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_tenant_with_a_large_backlog_does_not_hold_up_anothers_retention() {
    let app = TestApp::start().await;
    // A comes first in the pass's order (ids sort by creation).
    let a = app.tenant().await;
    let b = app.tenant().await;
    let long_ago = Utc::now() - chrono::Duration::days(200);
    old_messages(&app.db, &a, long_ago, 5_000).await;
    old_messages(&app.db, &b, long_ago + chrono::Duration::days(1), 3).await;

    let stop = CancellationToken::new();
    let pass = tokio::spawn({
        let (db, stop) = (app.db.clone(), stop.clone());
        async move {
            let pace = RetentionPace {
                batch: 10,
                rest: 4.0,
            };
            privacy::retention_pass(&db, Utc::now(), pace, &stop).await
        }
    });
    // B's texts go after A's first turn, not after A's whole backlog.
    let a_when_b_done = eventually(Duration::from_secs(30), "B's old texts removed", || async {
        (redacted(&app.db, &b).await == 3).then_some(redacted(&app.db, &a).await)
    })
    .await;
    stop.cancel();
    let done = pass.await.unwrap().unwrap();
    assert!(
        a_when_b_done <= 1_000,
        "A had {a_when_b_done} of 5,000 redacted before B's 3 (turns of 100)"
    );
    assert_eq!(done.failed_tenants, 0);
    // The next pass finishes A from where this one stopped.
    let go = CancellationToken::new();
    let pace = RetentionPace {
        batch: 500,
        rest: 0.0,
    };
    privacy::retention_pass(&app.db, Utc::now(), pace, &go)
        .await
        .unwrap();
    assert_eq!(redacted(&app.db, &a).await, 5_000);
}

#[tokio::test]
async fn a_tenant_whose_retention_fails_does_not_stop_anothers() {
    let app = TestApp::start().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let long_ago = Utc::now() - chrono::Duration::days(200);
    old_messages(&app.db, &a, long_ago, 20).await;
    old_messages(&app.db, &b, long_ago + chrono::Duration::days(1), 20).await;
    // A's rows refuse to change (as a broken row or a constraint of A's data would).
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE FUNCTION refuse_a() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'tenant A''s row cannot change'; END $$;
         CREATE TRIGGER refuse_a BEFORE UPDATE ON messages FOR EACH ROW
             WHEN (OLD.tenant_id = '{}') EXECUTE FUNCTION refuse_a();",
        a.id
    )))
    .execute(&app.db)
    .await
    .unwrap();

    let go = CancellationToken::new();
    let pace = RetentionPace {
        batch: 5,
        rest: 0.0,
    };
    let done = privacy::retention_pass(&app.db, Utc::now(), pace, &go)
        .await
        .unwrap();
    assert_eq!(done.failed_tenants, 1, "{done:?}");
    assert_eq!(redacted(&app.db, &a).await, 0);
    assert_eq!(
        redacted(&app.db, &b).await,
        20,
        "B's texts went all the same"
    );
}
