//! Event webhooks: a tenant's endpoints hear of each change they asked for, once, signed as
//! Standard Webhooks (verified here with the specification's algorithm, not Herald's code),
//! retried on failure, disabled after a window of failures, and never for a change that
//! rolled back.

use std::{collections::HashMap, time::Duration};

use chrono::Utc;
use herald_core::Config;
use herald_tests::{
    Tenant, TestApp,
    app::test_config,
    eventually, eventually_ok,
    providers::{TwilioMock, WebhookReceiver},
    standard_webhooks::{signatures_by, verify},
    views::{MessageView, api_error},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const EVENTS: &str = "/events";

/// The API, worker and scheduler, Twilio and a receiver for events and webhooks; retries of
/// events a few hundred milliseconds apart.
async fn started(tune: impl FnOnce(&mut Config)) -> (TestApp, TwilioMock, WebhookReceiver) {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    config.event_retry_schedule = vec![Duration::from_millis(200); 3];
    tune(&mut config);
    let mut app = TestApp::start_with_twilio(config, &twilio).await;
    app.start_scheduler();
    (app, twilio, WebhookReceiver::start().await)
}

/// Registers an endpoint at `url` (every type when `events` is null); returns it.
async fn endpoint(app: &TestApp, tenant: &Tenant, url: &str, events: Value) -> Value {
    let mut body = json!({"url": url, "description": "the client's app"});
    if !events.is_null() {
        body["events"] = events;
    }
    let (status, created) = app.post("/v1/endpoints", &tenant.api_key, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

fn secret(endpoint: &Value) -> String {
    endpoint["secret"].as_str().unwrap().to_owned()
}

/// Every delivery received at `path`, each verified with `secret`: its body, after checking
/// that `webhook-id` names the event in it.
fn verified(receiver: &WebhookReceiver, path: &str, secret: &str) -> Vec<Value> {
    receiver
        .requests(path)
        .into_iter()
        .map(|(headers, body)| {
            verify(secret, &headers, &body).unwrap_or_else(|why| {
                panic!("{why}: {}", String::from_utf8_lossy(&body));
            });
            let event: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                headers.get("webhook-id").unwrap().to_str().unwrap(),
                event["id"],
                "{event}"
            );
            assert!(event["id"].as_str().unwrap().starts_with("evt_"), "{event}");
            event
        })
        .collect()
}

/// The id of what an event is about: the message, contact, entry or group send.
fn subject(event: &Value) -> String {
    let data = &event["data"];
    match event["type"].as_str().unwrap() {
        "conversation.human_needed" => data["last_entry"]["id"].as_str(),
        _ => data["id"].as_str(),
    }
    .unwrap()
    .to_owned()
}

/// Waits for the `kind` event about `id` at `path`; returns it.
async fn wait_for_event(
    receiver: &WebhookReceiver,
    path: &str,
    secret: &str,
    kind: &str,
    id: &str,
) -> Value {
    eventually_ok(WAIT, &format!("{kind} about {id}"), || async {
        let all = verified(receiver, path, secret);
        all.iter()
            .find(|e| e["type"] == kind && subject(e) == id)
            .cloned()
            .ok_or_else(|| {
                let seen: Vec<String> = all
                    .iter()
                    .map(|e| format!("{} {}", e["type"], subject(e)))
                    .collect();
                format!("received {seen:?}")
            })
    })
    .await
}

/// Waits until the `events` queue has nothing waiting, running or due later.
async fn wait_for_quiet_events(app: &TestApp) {
    eventually_ok(WAIT, "the events queue is empty", || async {
        let s = app.queue_stats("events").await;
        if s.pending + s.running + s.scheduled == 0 {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
}

async fn send(app: &TestApp, tenant: &Tenant, body: Value) -> MessageView {
    app.post_as("/v1/messages", &tenant.api_key, &body, StatusCode::ACCEPTED)
        .await
}

/// A Twilio status callback for the message with Twilio id `sid`.
async fn status_callback(app: &TestApp, twilio: &TwilioMock, sid: &str, to: &str, status: &str) {
    let (code, body) = app
        .twilio_post(
            "/v1/inbound/twilio/status",
            &twilio.auth_token,
            &[
                ("AccountSid", twilio.account_sid.as_str()),
                ("MessageSid", sid),
                ("MessageStatus", status),
                ("To", to),
                ("From", "+15005550006"),
            ],
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
}

async fn contact_id(app: &TestApp, tenant: &Tenant, phone: &str) -> String {
    sqlx::query_scalar("SELECT id FROM contacts WHERE tenant_id = $1 AND phone = $2")
        .bind(&tenant.id)
        .bind(phone)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// The contact's id, made for `phone` now.
async fn new_contact(app: &TestApp, tenant: &Tenant, phone: &str) -> String {
    let (status, c) = app
        .post("/v1/contacts", &tenant.api_key, &json!({"phone": phone}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    c["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_event_type_reaches_a_standard_webhooks_receiver_once_per_change() {
    let (app, twilio, receiver) = started(|c| c.max_attempts = 2).await;
    let tenant = app.tenant().await;
    let ep = endpoint(&app, &tenant, &receiver.url(EVENTS), Value::Null).await;
    let secret = secret(&ep);
    assert_eq!(ep["events"].as_array().unwrap().len(), 12, "{ep}");
    assert_eq!(ep["enabled"], true);
    receiver.answer("/reject", 400, "no");
    receiver.answer("/down", 500, "down");
    let mut expected: Vec<(&str, String)> = Vec::new();

    // Sent, then delivered or undelivered by Twilio's callbacks.
    let delivered = app.post_sms(&tenant, "+15550170001", "see you soon").await;
    let undelivered = app.post_sms(&tenant, "+15550170002", "see you later").await;
    for (m, status) in [(&delivered, "delivered"), (&undelivered, "undelivered")] {
        let sent = app.wait_for_status(&tenant, &m.id, "sent", WAIT).await;
        let sid = sent.provider_message_id.clone().unwrap();
        status_callback(&app, &twilio, &sid, &sent.to, status).await;
        expected.push(("message.sent", m.id.clone()));
        expected.push((
            if status == "delivered" {
                "message.delivered"
            } else {
                "message.undelivered"
            },
            m.id.clone(),
        ));
    }
    // Rejected for good, and dead after every attempt failed.
    let failed = app
        .post_webhook(&tenant, &receiver.url("/reject"), json!({"n": 1}))
        .await;
    let dead = app
        .post_webhook(&tenant, &receiver.url("/down"), json!({"n": 2}))
        .await;
    expected.push(("message.failed", failed.id.clone()));
    expected.push(("message.dead", dead.id.clone()));

    // STOP opts out (and the next SMS is suppressed), START opts back in.
    let stopper = "+15550170003";
    app.text(&twilio, &tenant, stopper, "STOP").await;
    let stopper_id = eventually(WAIT, "the STOP contact exists", || async {
        sqlx::query_scalar::<_, String>("SELECT id FROM contacts WHERE phone = $1 AND opted_out")
            .bind(stopper)
            .fetch_optional(&app.db)
            .await
            .unwrap()
    })
    .await;
    let suppressed = app.post_sms(&tenant, stopper, "a bulk offer").await;
    app.wait_for_status(&tenant, &suppressed.id, "suppressed", WAIT)
        .await;
    app.text(&twilio, &tenant, stopper, "START").await;
    expected.push(("contact.opted_out", stopper_id.clone()));
    expected.push(("message.suppressed", suppressed.id.clone()));
    expected.push(("contact.opted_in", stopper_id.clone()));

    // An inbound text; then, the conversation taken over, one that waits for a person.
    let texter = "+15550170004";
    app.text(&twilio, &tenant, texter, "what time do you open?")
        .await;
    let texter_id = contact_id(&app, &tenant, texter).await;
    let (status, taken) = app
        .post(
            &format!("/v1/conversations/{texter_id}/takeover"),
            &tenant.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{taken}");
    app.text(&twilio, &tenant, texter, "hello? anyone?").await;
    let inbound: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM messages WHERE direction = 'inbound' AND contact_id = $1 ORDER BY created_at",
    )
    .bind(&texter_id)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(inbound.len(), 2);
    for id in &inbound {
        expected.push(("inbound.received", id.clone()));
    }
    expected.push(("conversation.human_needed", inbound[1].clone()));

    // A group send of two, completed once both went out.
    let (status, group) = app
        .post("/v1/groups", &tenant.api_key, &json!({"name": "patients"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{group}");
    let gid = group["id"].as_str().unwrap();
    for phone in ["+15550170005", "+15550170006"] {
        let cid = new_contact(&app, &tenant, phone).await;
        let r = app
            .http
            .put(app.url(&format!("/v1/groups/{gid}/members/{cid}")))
            .bearer_auth(&tenant.api_key)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let (status, send) = app
        .post(
            &format!("/v1/groups/{gid}/messages"),
            &tenant.api_key,
            &json!({"channel": "sms", "body": "We are closed on Monday."}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{send}");
    let send_id = send["id"].as_str().unwrap().to_owned();
    expected.push(("group_send.completed", send_id.clone()));

    for (kind, id) in &expected {
        wait_for_event(&receiver, EVENTS, &secret, kind, id).await;
    }
    // The messages of the group and the AI's canned answer to the first text are sent too;
    // once nothing is left to deliver, every change was reported exactly once.
    wait_for_quiet_events(&app).await;
    let all = verified(&receiver, EVENTS, &secret);
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    for e in &all {
        *counts
            .entry((e["type"].as_str().unwrap().to_owned(), subject(e)))
            .or_default() += 1;
    }
    for ((kind, id), n) in &counts {
        assert_eq!(*n, 1, "{kind} about {id} arrived {n} times");
    }
    for (kind, id) in &expected {
        assert!(
            counts.contains_key(&((*kind).to_owned(), id.clone())),
            "{kind} {id}"
        );
    }
    let ids: std::collections::HashSet<&str> =
        all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), all.len(), "every event has its own id");

    // The data is the object as the API shows it, at the change.
    let sent = wait_for_event(&receiver, EVENTS, &secret, "message.sent", &delivered.id).await;
    let now = app.message(&tenant, &delivered.id).await;
    assert_eq!(sent["data"]["status"], "sent", "{sent}");
    assert_eq!(sent["data"]["to"], now.to.as_str());
    assert_eq!(sent["data"]["body"], "see you soon");
    assert_eq!(sent["data"]["segments"], 1);
    assert_eq!(sent["data"]["sent_at"], json!(now.sent_at), "{sent}");
    assert_eq!(sent["data"]["delivered_at"], Value::Null, "{sent}");
    assert!(sent["data"]["expected_at"].is_null());
    let done = wait_for_event(
        &receiver,
        EVENTS,
        &secret,
        "message.delivered",
        &delivered.id,
    )
    .await;
    assert_eq!(
        done["data"]["delivered_at"],
        json!(now.delivered_at),
        "{done}"
    );
    let opted_out =
        wait_for_event(&receiver, EVENTS, &secret, "contact.opted_out", &stopper_id).await;
    assert_eq!(opted_out["data"]["opted_out"], true, "{opted_out}");
    assert_eq!(opted_out["data"]["phone"], stopper);
    assert_eq!(opted_out["data"]["timezone"], "UTC");
    let human = wait_for_event(
        &receiver,
        EVENTS,
        &secret,
        "conversation.human_needed",
        &inbound[1],
    )
    .await;
    assert_eq!(human["data"]["contact_id"], texter_id.as_str());
    assert_eq!(human["data"]["last_entry"]["body"], "hello? anyone?");
    let received =
        wait_for_event(&receiver, EVENTS, &secret, "inbound.received", &inbound[0]).await;
    assert_eq!(received["data"]["contact_id"], texter_id.as_str());
    assert_eq!(received["data"]["body"], "what time do you open?");
    assert_eq!(received["data"]["direction"], "inbound");
    let completed =
        wait_for_event(&receiver, EVENTS, &secret, "group_send.completed", &send_id).await;
    assert_eq!(
        completed["data"]["counts"],
        json!({"sent": 2}),
        "{completed}"
    );
    assert_eq!(completed["data"]["recipients"], 2);
    let (_, read) = app
        .get(&format!("/v1/group-messages/{send_id}"), &tenant.api_key)
        .await;
    assert_eq!(
        read["completed_at"], completed["data"]["completed_at"],
        "{read}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_sms_expiring_in_quiet_hours_is_reported_expired() {
    let (app, _twilio, receiver) = started(|_| {}).await;
    // Quiet from an hour ago to an hour from now, in the tenant's zone (UTC).
    let hhmm = |t: chrono::DateTime<Utc>| t.format("%H:%M").to_string();
    let now = Utc::now();
    let tenant = app
        .tenant_with(json!({"quiet_hours": {
            "start": hhmm(now - chrono::Duration::hours(1)),
            "end": hhmm(now + chrono::Duration::hours(1)),
        }}))
        .await;
    let ep = endpoint(
        &app,
        &tenant,
        &receiver.url(EVENTS),
        json!(["message.expired"]),
    )
    .await;
    let m = send(
        &app,
        &tenant,
        json!({"channel": "sms", "to": "+15550171001", "body": "flash sale",
               "expires_at": (now + chrono::Duration::minutes(20)).to_rfc3339()}),
    )
    .await;
    let e = wait_for_event(&receiver, EVENTS, &secret(&ep), "message.expired", &m.id).await;
    assert_eq!(e["data"]["status"], "expired", "{e}");
    app.stop().await;
}

#[tokio::test]
async fn an_endpoint_hears_only_the_types_it_asked_for() {
    let (app, _twilio, receiver) = started(|_| {}).await;
    let tenant = app.tenant().await;
    let failures = endpoint(
        &app,
        &tenant,
        &receiver.url("/failures"),
        json!(["message.failed"]),
    )
    .await;
    let everything = endpoint(&app, &tenant, &receiver.url(EVENTS), Value::Null).await;
    receiver.answer("/reject", 400, "no");
    let ok = app
        .post_webhook(&tenant, &receiver.url("/ok"), json!({}))
        .await;
    let bad = app
        .post_webhook(&tenant, &receiver.url("/reject"), json!({}))
        .await;
    wait_for_event(
        &receiver,
        "/failures",
        &secret(&failures),
        "message.failed",
        &bad.id,
    )
    .await;
    wait_for_event(
        &receiver,
        EVENTS,
        &secret(&everything),
        "message.delivered",
        &ok.id,
    )
    .await;
    wait_for_quiet_events(&app).await;
    let heard: Vec<String> = verified(&receiver, "/failures", &secret(&failures))
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(heard, ["message.failed"]);
    app.stop().await;
}

#[tokio::test]
async fn failed_deliveries_are_retried_and_every_attempt_is_listed() {
    let (app, _twilio, receiver) = started(|_| {}).await;
    let tenant = app.tenant().await;
    let ep = endpoint(
        &app,
        &tenant,
        &receiver.url(EVENTS),
        json!(["message.delivered"]),
    )
    .await;
    let ep_id = ep["id"].as_str().unwrap();
    receiver.answer_first(EVENTS, [500, 503]);
    let m = app
        .post_webhook(&tenant, &receiver.url("/ok"), json!({}))
        .await;
    wait_for_event(&receiver, EVENTS, &secret(&ep), "message.delivered", &m.id).await;
    wait_for_quiet_events(&app).await;
    let calls = receiver.webhook_ids(EVENTS);
    assert_eq!(calls.len(), 3, "two failures, then the success: {calls:?}");
    assert!(
        calls.iter().all(|id| *id == calls[0]),
        "one event: {calls:?}"
    );

    let attempts = eventually_ok(WAIT, "three attempts listed", || async {
        let (_, page) = app
            .get(&format!("/v1/endpoints/{ep_id}/attempts"), &tenant.api_key)
            .await;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        if data.len() == 3 {
            Ok(data)
        } else {
            Err(page.to_string())
        }
    })
    .await;
    // Newest first.
    let codes: Vec<i64> = attempts
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [200, 503, 500]);
    let statuses: Vec<&str> = attempts
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["succeeded", "failed", "failed"]);
    assert!(
        attempts
            .iter()
            .all(|a| a["event_id"] == calls[0].as_str() && a["type"] == "message.delivered")
    );
    assert!(
        attempts[1]["error"].as_str().unwrap().contains("503"),
        "{}",
        attempts[1]
    );
    assert!(
        attempts
            .iter()
            .all(|a| a["duration_ms"].as_i64().unwrap() >= 0)
    );

    let (_, failed) = app
        .get(
            &format!("/v1/endpoints/{ep_id}/attempts?status=failed&limit=1"),
            &tenant.api_key,
        )
        .await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(failed["data"][0]["status_code"], 503);
    let cursor = failed["next_cursor"].as_str().unwrap();
    let (_, rest) = app
        .get(
            &format!("/v1/endpoints/{ep_id}/attempts?status=failed&limit=1&cursor={cursor}"),
            &tenant.api_key,
        )
        .await;
    assert_eq!(rest["data"][0]["status_code"], 500, "{rest}");
    assert_eq!(rest["next_cursor"], Value::Null);
    let (status, bad) = app
        .get(
            &format!("/v1/endpoints/{ep_id}/attempts?status=maybe"),
            &tenant.api_key,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api_error(&bad).field.as_deref(), Some("status"));
    app.stop().await;
}

#[tokio::test]
async fn an_endpoint_failing_for_the_whole_window_is_disabled_and_says_why() {
    let (app, _twilio, receiver) = started(|c| {
        c.event_retry_schedule = vec![Duration::from_millis(300); 30];
        c.endpoint_disable_after = Duration::from_secs(1);
    })
    .await;
    let tenant = app.tenant().await;
    receiver.answer("/down", 500, "down");
    let down = endpoint(&app, &tenant, &receiver.url("/down"), Value::Null).await;
    let up = endpoint(&app, &tenant, &receiver.url("/up"), Value::Null).await;
    let down_id = down["id"].as_str().unwrap();
    let first = app
        .post_webhook(&tenant, &receiver.url("/ok"), json!({}))
        .await;
    wait_for_event(
        &receiver,
        "/up",
        &secret(&up),
        "message.delivered",
        &first.id,
    )
    .await;

    let disabled = eventually_ok(WAIT, "the failing endpoint is disabled", || async {
        let (_, ep) = app
            .get(&format!("/v1/endpoints/{down_id}"), &tenant.api_key)
            .await;
        if ep["enabled"] == false {
            Ok(ep)
        } else {
            Err(ep.to_string())
        }
    })
    .await;
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("no successful delivery since"), "{reason}");
    assert!(reason.contains("1 second"), "{reason}");
    wait_for_quiet_events(&app).await;
    let calls = receiver.webhook_ids("/down").len();
    assert!(calls >= 2, "it was retried before it was disabled: {calls}");

    // A disabled endpoint hears nothing more; the healthy one goes on.
    let second = app
        .post_webhook(&tenant, &receiver.url("/ok"), json!({}))
        .await;
    wait_for_event(
        &receiver,
        "/up",
        &secret(&up),
        "message.delivered",
        &second.id,
    )
    .await;
    wait_for_quiet_events(&app).await;
    assert_eq!(receiver.webhook_ids("/down").len(), calls);

    // Enabled again (the receiver fixed), it hears what comes next and forgets the reason.
    receiver.answer("/down", 200, "ok");
    let (status, enabled) = app
        .patch(
            &format!("/v1/endpoints/{down_id}"),
            &tenant.api_key,
            &json!({"enabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{enabled}");
    assert_eq!(enabled["disabled_reason"], Value::Null);
    let third = app
        .post_webhook(&tenant, &receiver.url("/ok"), json!({}))
        .await;
    wait_for_event(
        &receiver,
        "/down",
        &secret(&down),
        "message.delivered",
        &third.id,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn an_event_for_a_change_that_rolled_back_never_leaves() {
    let (app, _twilio, receiver) = started(|_| {}).await;
    let tenant = app.tenant().await;
    let ep = endpoint(
        &app,
        &tenant,
        &receiver.url(EVENTS),
        json!(["message.expired"]),
    )
    .await;
    let later = (Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let mut ids = Vec::new();
    for n in 0..2 {
        let m = send(
            &app,
            &tenant,
            json!({"channel": "sms", "to": format!("+1555017200{n}"), "body": "tomorrow", "send_at": later}),
        )
        .await;
        ids.push(m.id);
    }
    // The same change twice: rolled back, then committed.
    for (id, commit) in [(&ids[0], false), (&ids[1], true)] {
        let mut tx = app.db.begin().await.unwrap();
        sqlx::query("UPDATE messages SET status = 'expired' WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .unwrap();
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
    }
    wait_for_event(&receiver, EVENTS, &secret(&ep), "message.expired", &ids[1]).await;
    wait_for_quiet_events(&app).await;
    let subjects: Vec<String> = verified(&receiver, EVENTS, &secret(&ep))
        .iter()
        .map(subject)
        .collect();
    assert_eq!(subjects, [ids[1].clone()]);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE data->>'id' = $1")
        .bind(&ids[0])
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(events, 0, "no event was kept for the rolled-back change");
    app.stop().await;
}

#[tokio::test]
async fn a_rotated_secret_and_the_old_one_both_sign_for_a_day() {
    let (app, _twilio, receiver) = started(|_| {}).await;
    let tenant = app.tenant().await;
    let ep = endpoint(&app, &tenant, &receiver.url(EVENTS), Value::Null).await;
    let (old, id) = (secret(&ep), ep["id"].as_str().unwrap());
    let (status, rotated) = app
        .post(
            &format!("/v1/endpoints/{id}/rotate-secret"),
            &tenant.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_") && new != old);
    let (_, read) = app
        .get(&format!("/v1/endpoints/{id}"), &tenant.api_key)
        .await;
    assert_eq!(read["secret"], new.as_str());

    let m = app
        .post_webhook(&tenant, &receiver.url("/ok"), json!({}))
        .await;
    wait_for_event(&receiver, EVENTS, &new, "message.delivered", &m.id).await;
    let (headers, body) = receiver.requests(EVENTS).pop().unwrap();
    assert_eq!(signatures_by(&new, &headers, &body).unwrap(), 1);
    assert_eq!(
        signatures_by(&old, &headers, &body).unwrap(),
        1,
        "the old secret signs too"
    );
    let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert!(
        verify(other, &headers, &body).is_err(),
        "a stranger's secret verifies nothing"
    );

    // Once the overlap is over, only the new secret signs.
    sqlx::query("UPDATE endpoints SET previous_secret_until = now() WHERE id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
    let m = app
        .post_webhook(&tenant, &receiver.url("/ok"), json!({}))
        .await;
    wait_for_event(&receiver, EVENTS, &new, "message.delivered", &m.id).await;
    let (headers, body) = receiver.requests(EVENTS).pop().unwrap();
    assert_eq!(signatures_by(&old, &headers, &body).unwrap(), 0);
    app.stop().await;
}

#[tokio::test]
async fn an_event_can_be_redelivered_and_an_endpoint_recovered_after_an_outage() {
    let (app, _twilio, receiver) = started(|c| {
        c.event_retry_schedule = vec![Duration::from_millis(100)];
    })
    .await;
    let tenant = app.tenant().await;
    let ep = endpoint(
        &app,
        &tenant,
        &receiver.url(EVENTS),
        json!(["message.delivered"]),
    )
    .await;
    let (secret, id) = (secret(&ep), ep["id"].as_str().unwrap());
    let started_at = Utc::now() - chrono::Duration::seconds(1);

    let m = app
        .post_webhook(&tenant, &receiver.url("/ok"), json!({}))
        .await;
    let event = wait_for_event(&receiver, EVENTS, &secret, "message.delivered", &m.id).await;
    let evt = event["id"].as_str().unwrap();
    let (status, again) = app
        .post(
            &format!("/v1/events/{evt}/redeliver"),
            &tenant.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["redelivered"], 1);
    eventually(WAIT, "the event arrives again", || async {
        (receiver
            .webhook_ids(EVENTS)
            .iter()
            .filter(|i| *i == evt)
            .count()
            == 2)
            .then_some(())
    })
    .await;

    // An outage: two events fail for good (one retry each)...
    receiver.answer(EVENTS, 500, "down");
    let mut lost = Vec::new();
    for _ in 0..2 {
        let m = app
            .post_webhook(&tenant, &receiver.url("/ok"), json!({}))
            .await;
        lost.push(m.id);
    }
    eventually(WAIT, "both fail twice", || async {
        (receiver.webhook_ids(EVENTS).len() >= 2 + 4).then_some(())
    })
    .await;
    wait_for_quiet_events(&app).await;
    // ...and the receiver is back: recover sends what it missed, not what it had.
    receiver.answer(EVENTS, 200, "ok");
    let (status, recovered) = app
        .post(
            &format!("/v1/endpoints/{id}/recover"),
            &tenant.api_key,
            &json!({"since": started_at.to_rfc3339()}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{recovered}");
    assert_eq!(recovered["redelivered"], 2, "{recovered}");
    for m in &lost {
        wait_for_event(&receiver, EVENTS, &secret, "message.delivered", m).await;
    }
    let (status, missing) = app
        .post(
            &format!("/v1/endpoints/{id}/recover"),
            &tenant.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(api_error(&missing).field.as_deref(), Some("since"));
    let (status, _) = app
        .post(
            "/v1/events/evt_00000000000000000000000000/redeliver",
            &tenant.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn endpoints_are_validated_listed_in_pages_changed_and_deleted() {
    let app = TestApp::start().await;
    let tenant = app.tenant().await;
    for (body, field) in [
        (json!({"url": "ftp://example.com/x"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (json!({}), "url"),
        (
            json!({"url": "https://example.com/x", "events": ["message.lost"]}),
            "events",
        ),
        (
            json!({"url": "https://example.com/x", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://example.com/x", "events": "message.sent"}),
            "events",
        ),
        (
            json!({"url": "https://example.com/x", "secret": "mine"}),
            "secret",
        ),
        (
            json!({"url": "https://example.com/x", "description": "x".repeat(501)}),
            "description",
        ),
    ] {
        let (status, e) = app.post("/v1/endpoints", &tenant.api_key, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(api_error(&e).field.as_deref(), Some(field), "{body}: {e}");
    }
    let (_, page) = app.get("/v1/endpoints", &tenant.api_key).await;
    assert_eq!(
        page,
        json!({"data": [], "next_cursor": null}),
        "a rejected request made nothing"
    );

    let mut ids = Vec::new();
    for n in 0..3 {
        let ep = endpoint(
            &app,
            &tenant,
            &format!("https://example.com/{n}"),
            json!(["message.sent", "message.sent"]),
        )
        .await;
        assert_eq!(ep["events"], json!(["message.sent"]));
        ids.push(ep["id"].as_str().unwrap().to_owned());
    }
    let (_, first) = app.get("/v1/endpoints?limit=2", &tenant.api_key).await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = app
        .get(
            &format!("/v1/endpoints?limit=2&cursor={cursor}"),
            &tenant.api_key,
        )
        .await;
    let listed: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["data"].as_array().unwrap())
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()],
        "newest first"
    );
    assert_eq!(second["next_cursor"], Value::Null);

    let path = format!("/v1/endpoints/{}", ids[0]);
    let (status, changed) = app
        .patch(&path, &tenant.api_key, &json!({"events": ["contact.opted_out"], "description": null, "url": "https://example.com/new"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["events"], json!(["contact.opted_out"]));
    assert_eq!(changed["description"], Value::Null);
    assert_eq!(changed["url"], "https://example.com/new");
    let (status, e) = app
        .patch(&path, &tenant.api_key, &json!({"enabled": "yes"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(api_error(&e).field.as_deref(), Some("enabled"));

    // Another tenant sees none of them.
    let other = app.tenant().await;
    let (_, theirs) = app.get("/v1/endpoints", &other.api_key).await;
    assert_eq!(theirs["data"], json!([]));
    for (method, suffix) in [
        ("GET", ""),
        ("PATCH", ""),
        ("POST", "/rotate-secret"),
        ("GET", "/attempts"),
        ("DELETE", ""),
    ] {
        let url = app.url(&format!("{path}{suffix}"));
        let r = app
            .http
            .request(method.parse().unwrap(), url)
            .bearer_auth(&other.api_key)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method} {suffix}");
    }

    let (status, _) = app.delete(&path, &tenant.api_key).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&path, &tenant.api_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.delete(&path, &tenant.api_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

/// A tenant whose endpoint fails every call, with hundreds of events retrying, must not
/// delay another tenant's events.
#[tokio::test]
async fn a_tenant_whose_endpoint_fails_does_not_delay_another_tenants_events() {
    let (app, _twilio, receiver) = started(|c| {
        c.event_retry_schedule = vec![Duration::from_millis(50); 8];
    })
    .await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    receiver.answer("/a", 500, "down");
    endpoint(&app, &a, &receiver.url("/a"), Value::Null).await;
    let b_ep = endpoint(&app, &b, &receiver.url("/b"), Value::Null).await;
    // 400 events for A at once, about one of its messages.
    let m = app.post_webhook(&a, &receiver.url("/ok"), json!({})).await;
    app.wait_for_status(&a, &m.id, "delivered", WAIT).await;
    sqlx::query("SELECT herald_emit($1, 'message.delivered', to_jsonb(m)) FROM messages m, generate_series(1, 400) WHERE m.id = $2")
        .bind(&a.id)
        .bind(&m.id)
        .execute(&app.db)
        .await
        .unwrap();
    // A's calls fail until its endpoint's circuit opens and holds the rest back.
    eventually(WAIT, "A's endpoint is failing", || async {
        (receiver.webhook_ids("/a").len() >= 5).then_some(())
    })
    .await;

    let started = std::time::Instant::now();
    let mb = app.post_webhook(&b, &receiver.url("/ok"), json!({})).await;
    wait_for_event(&receiver, "/b", &secret(&b_ep), "message.delivered", &mb.id).await;
    let waited = started.elapsed();
    let a_pending = app.queue_stats("events").await;
    assert!(
        a_pending.pending + a_pending.scheduled + a_pending.running > 0,
        "A's events were still failing when B's arrived: {a_pending:?}"
    );
    // The sweep runs every second; a second more covers B's message itself.
    assert!(waited < Duration::from_secs(4), "B waited {waited:?}");
    app.stop().await;
}

#[tokio::test]
async fn ops_list_every_tenants_endpoints_and_attempts_and_redeliver_any_event() {
    let (app, _twilio, receiver) = started(|c| {
        c.event_retry_schedule = vec![Duration::from_millis(100)];
    })
    .await;
    let (a, b) = (app.tenant().await, app.tenant().await);
    let ep_a = app
        .create_endpoint(&a, &receiver.url("/a"), &["message.delivered"])
        .await;
    let ep_b = app
        .create_endpoint(&b, &receiver.url("/b"), &["message.delivered"])
        .await;
    app.post_webhook(&a, &receiver.url("/ok"), json!({})).await;
    let evt = eventually(WAIT, "the event reaches a's endpoint", || async {
        receiver.webhook_ids("/a").first().cloned()
    })
    .await;
    let ops = &app.ops_token;

    // Every tenant's endpoints, each with its tenant and without its secret.
    let (status, all) = app.get("/v1/admin/endpoints", ops).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let listed: HashMap<&str, &Value> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e))
        .collect();
    assert_eq!(listed.len(), 2, "{all}");
    assert_eq!(listed[ep_a.as_str()]["tenant_id"], a.id.as_str());
    assert_eq!(listed[ep_b.as_str()]["tenant_id"], b.id.as_str());
    assert_eq!(listed[ep_a.as_str()]["url"], receiver.url("/a"));
    assert_eq!(listed[ep_a.as_str()]["enabled"], true);
    for e in listed.values() {
        assert!(e.get("secret").is_none(), "ops never see a secret: {e}");
    }
    // A tenant filter filters; a page of one leads to the other.
    let (_, only_b) = app
        .get(&format!("/v1/admin/endpoints?tenant_id={}", b.id), ops)
        .await;
    let ids: Vec<&str> = only_b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [ep_b.as_str()], "{only_b}");
    let (_, first) = app.get("/v1/admin/endpoints?limit=1", ops).await;
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, second) = app
        .get(&format!("/v1/admin/endpoints?limit=1&cursor={cursor}"), ops)
        .await;
    assert_ne!(first["data"][0]["id"], second["data"][0]["id"]);
    assert!(second["next_cursor"].is_null(), "{second}");

    // The attempts of any tenant's endpoint, filtered as the tenant's own route does.
    let attempts = eventually_ok(WAIT, "the attempt is recorded", || async {
        let (_, page) = app
            .get(&format!("/v1/admin/endpoints/{ep_a}/attempts"), ops)
            .await;
        if page["data"][0]["event_id"] == evt.as_str() {
            Ok(page)
        } else {
            Err(page.to_string())
        }
    })
    .await;
    let attempt = &attempts["data"][0];
    assert_eq!(attempt["status"], "succeeded", "{attempt}");
    assert_eq!(attempt["status_code"], 200, "{attempt}");
    assert_eq!(attempt["type"], "message.delivered", "{attempt}");
    let (_, own) = app
        .get(&format!("/v1/endpoints/{ep_a}/attempts"), &a.api_key)
        .await;
    assert_eq!(own, attempts, "the same page as the tenant's own");
    let (_, failed) = app
        .get(
            &format!("/v1/admin/endpoints/{ep_a}/attempts?status=failed"),
            ops,
        )
        .await;
    assert_eq!(failed["data"], json!([]), "{failed}");

    // Any tenant's event, sent again.
    let (status, again) = app
        .post(
            &format!("/v1/admin/events/{evt}/redeliver"),
            ops,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["redelivered"], 1, "{again}");
    eventually(WAIT, "the event arrives a second time", || async {
        (receiver
            .webhook_ids("/a")
            .iter()
            .filter(|i| **i == evt)
            .count()
            == 2)
            .then_some(())
    })
    .await;

    // Bad filters name their field; unknown ids are 404.
    for (path, field) in [
        ("/v1/admin/endpoints?tenant_id=acme", "tenant_id"),
        ("/v1/admin/endpoints?limit=0", "limit"),
        ("/v1/admin/endpoints?tenant=x", "tenant"),
        (
            &format!("/v1/admin/endpoints/{ep_a}/attempts?status=lost") as &str,
            "status",
        ),
        (
            &format!("/v1/admin/endpoints/{ep_a}/attempts?since=yesterday"),
            "since",
        ),
    ] {
        let (status, body) = app.get(path, ops).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert_eq!(api_error(&body).field.as_deref(), Some(field), "{path}");
    }
    let unknown_ep = "/v1/admin/endpoints/ep_00000000000000000000000000/attempts";
    assert_eq!(app.get(unknown_ep, ops).await.0, StatusCode::NOT_FOUND);
    let unknown_evt = "/v1/admin/events/evt_00000000000000000000000000/redeliver";
    assert_eq!(
        app.post(unknown_evt, ops, &json!({})).await.0,
        StatusCode::NOT_FOUND
    );

    // Only the ops token opens them; the tenant routes still keep to their tenant.
    let attempts_path = format!("/v1/admin/endpoints/{ep_a}/attempts");
    for path in ["/v1/admin/endpoints", attempts_path.as_str()] {
        assert_eq!(app.get(path, &a.api_key).await.0, StatusCode::FORBIDDEN);
    }
    let redeliver_path = format!("/v1/admin/events/{evt}/redeliver");
    assert_eq!(
        app.post(&redeliver_path, &a.api_key, &json!({})).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get(&format!("/v1/endpoints/{ep_a}/attempts"), &b.api_key)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post(
            &format!("/v1/events/{evt}/redeliver"),
            &b.api_key,
            &json!({})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let (_, b_own) = app.get("/v1/endpoints", &b.api_key).await;
    assert_eq!(b_own["data"].as_array().unwrap().len(), 1, "{b_own}");
    app.stop().await;
}

/// Redis losing its data (a failover to an empty replica) loses no event: the scheduler's
/// reconcile queues every pending delivery again.
#[tokio::test]
async fn event_deliveries_lost_with_redis_data_are_queued_again() {
    let (app, _twilio, receiver) = started(|c| {
        // A failed delivery waits an hour for its retry: only the reconcile can bring it back.
        c.event_retry_schedule = vec![Duration::from_secs(3600)];
    })
    .await;
    let tenant = app.tenant().await;
    let ep = endpoint(
        &app,
        &tenant,
        &receiver.url(EVENTS),
        json!(["message.delivered"]),
    )
    .await;
    receiver.answer_first(EVENTS, [500]);
    let m = app
        .post_webhook(&tenant, &receiver.url("/ok"), json!({}))
        .await;
    eventually_ok(
        WAIT,
        "the first attempt failed and its retry waits",
        || async {
            let s = app.queue_stats("events").await;
            if receiver.webhook_ids(EVENTS).len() == 1 && s.scheduled == 1 {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;

    let pattern = format!("{{{}:events}}*", app.config.queue_prefix);
    let keys = herald_tests::scan_keys(&app.redis, &pattern).await;
    assert!(!keys.is_empty());
    let mut conn = app.redis.clone();
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();

    eventually(WAIT, "the reconcile queues the delivery again", || async {
        (receiver.webhook_ids(EVENTS).len() == 2).then_some(())
    })
    .await;
    let event = wait_for_event(&receiver, EVENTS, &secret(&ep), "message.delivered", &m.id).await;
    let ids = receiver.webhook_ids(EVENTS);
    assert!(ids.iter().all(|id| *id == event["id"]), "{ids:?}");
    wait_for_quiet_events(&app).await;
    let delivered: String = sqlx::query_scalar("SELECT status FROM event_deliveries")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(delivered, "delivered");
    assert_eq!(
        receiver.webhook_ids(EVENTS).len(),
        2,
        "one failure, one delivery"
    );
    app.stop().await;
}
