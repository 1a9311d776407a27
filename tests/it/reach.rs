//! Reaching people: the missed-call text-back (Twilio's signed call status callback) and
//! contact groups with bulk sends to every member.

use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_core::providers::twilio_signature;
use herald_tests::{
    Tenant, TestApp,
    app::test_config,
    eventually,
    providers::{ModelMock, ModelReply, TwilioMock},
    unique,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const VOICE_PATH: &str = "/v1/inbound/twilio/voice-status";
const MODEL: &str = "primary-model";
const ANSWER: &str = "Yes, Friday at 10 AM is free. Shall I book it?";
const TEXT_BACK: &str = "Sorry we missed you at Acme Dental! Reply here and we'll help right away.";
const WAIT: Duration = Duration::from_secs(20);

/// The API and the worker, with Twilio and a model on loopback.
struct Setup {
    app: TestApp,
    twilio: TwilioMock,
    model: ModelMock,
}

async fn setup() -> Setup {
    let twilio = TwilioMock::start().await;
    let model = ModelMock::start(MODEL, ModelReply::Text(ANSWER.to_owned())).await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    config.llm = Some(model.endpoint());
    config.llm_timeout = Duration::from_secs(3);
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    Setup { app, twilio, model }
}

/// A tenant with its own `sms_from`, no quiet hours, and `extra` fields.
async fn tenant_with(app: &TestApp, extra: Value) -> Tenant {
    let n: u64 = rand::random::<u64>() % 1_000_000_000;
    let mut body = json!({
        "name": "Acme Dental",
        "sms_from": format!("+1500{n:09}"),
        "email_from": "Acme Dental <hello@acme.test>",
        "quiet_hours": null,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.create_tenant(body).await
}

/// A Twilio call sid (`CA` and 32 hex digits).
fn call_sid() -> String {
    format!("CA{}", unique("").repeat(2))
}

/// Twilio's call status callback form for a call from `from` to the tenant's number.
fn call_form(tenant: &Tenant, from: &str, sid: &str, status: &str) -> Vec<(String, String)> {
    let to = tenant.sms_from.clone().expect("the tenant has an sms_from");
    [
        ("AccountSid", "ACtest".to_owned()),
        ("ApiVersion", "2010-04-01".to_owned()),
        ("CallSid", sid.to_owned()),
        ("CallStatus", status.to_owned()),
        ("Called", to.clone()),
        ("Caller", from.to_owned()),
        ("Direction", "inbound".to_owned()),
        ("From", from.to_owned()),
        ("To", to),
        ("Timestamp", Utc::now().to_rfc2822()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn borrowed(form: &[(String, String)]) -> Vec<(&str, &str)> {
    form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

impl Setup {
    /// A signed call status callback (asserting 200 and TwiML).
    async fn call(&self, tenant: &Tenant, from: &str, sid: &str, status: &str) {
        let form = call_form(tenant, from, sid, status);
        let (code, body) = self
            .app
            .twilio_post(VOICE_PATH, &self.twilio.auth_token, &borrowed(&form))
            .await;
        assert_eq!(
            code,
            StatusCode::OK,
            "call status {status} from {from}: {body}"
        );
        assert!(body.contains("<Response"), "{body}");
    }

    /// An ordinary SMS to `to` that reaches Twilio: whatever was queued before it had its
    /// chance by then.
    async fn witness(&self, tenant: &Tenant, to: &str) {
        let body = format!("witness {}", unique(""));
        let m = self.app.send_sms(tenant, to, &body).await;
        self.app
            .wait_for_status(tenant, m["id"].as_str().unwrap(), "sent", WAIT)
            .await;
        self.twilio.wait_for_sms(to, &body, WAIT).await;
    }
}

/// The tenant's messages (`GET /v1/messages`), newest first.
async fn messages(app: &TestApp, tenant: &Tenant, query: &str) -> Vec<Value> {
    let (status, page) = app
        .get(&format!("/v1/messages?limit=100{query}"), &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["data"].as_array().unwrap().clone()
}

/// The outbound `system` messages to `phone` (text-backs), newest first.
async fn text_backs(app: &TestApp, tenant: &Tenant, phone: &str) -> Vec<Value> {
    messages(app, tenant, "")
        .await
        .into_iter()
        .filter(|m| m["direction"] == "outbound" && m["author"] == "system" && m["to"] == phone)
        .collect()
}

/// Waits until `phone` has `n` text-backs, the newest `sent`; returns them, newest first.
async fn wait_for_text_backs(app: &TestApp, tenant: &Tenant, phone: &str, n: usize) -> Vec<Value> {
    let found = eventually(WAIT, &format!("{n} text-back(s) to {phone}"), || async {
        let found = text_backs(app, tenant, phone).await;
        (found.len() >= n).then_some(found)
    })
    .await;
    app.wait_for_status(tenant, found[0]["id"].as_str().unwrap(), "sent", WAIT)
        .await;
    text_backs(app, tenant, phone).await
}

/// The tenant's contact with this phone number.
async fn contact_of(app: &TestApp, tenant: &Tenant, phone: &str) -> String {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM contacts WHERE tenant_id = $1 AND phone = $2")
            .bind(&tenant.id)
            .bind(phone)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(ids.len(), 1, "one contact for {phone}: {ids:?}");
    ids[0].clone()
}

async fn contact(app: &TestApp, tenant: &Tenant, id: &str) -> Value {
    let (status, c) = app
        .get(&format!("/v1/contacts/{id}"), &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    c
}

async fn conversation(app: &TestApp, tenant: &Tenant, contact_id: &str) -> Value {
    let (status, c) = app
        .get(&format!("/v1/conversations/{contact_id}"), &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    c
}

/// `(direction, author, body)` of each conversation entry, oldest first.
fn entries(conversation: &Value) -> Vec<(String, String, String)> {
    conversation["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["direction"].as_str().unwrap().to_owned(),
                e["author"].as_str().unwrap().to_owned(),
                e["body"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn entry(direction: &str, author: &str, body: &str) -> (String, String, String) {
    (direction.to_owned(), author.to_owned(), body.to_owned())
}

fn missed(status: &str) -> (String, String, String) {
    entry("inbound", "system", &format!("Missed call ({status})"))
}

/// `(role, content)` of each chat message a model was sent.
fn chat(request: &Value) -> Vec<(String, String)> {
    request["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in the chat request: {request}"))
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn turn(role: &str, content: &str) -> (String, String) {
    (role.to_owned(), content.to_owned())
}

async fn contact_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM contacts")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

fn events_with<'a>(m: &'a Value, status: &str, detail_part: &str) -> Vec<&'a Value> {
    m["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["status"] == status
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.to_lowercase().contains(detail_part))
        })
        .collect()
}

fn at(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("not RFC 3339: {v}: {e}"))
}

/// Quiet hours that cover now in UTC: from an hour ago until two hours from now.
fn quiet_now_in_utc() -> Value {
    let now = Utc::now();
    json!({
        "start": (now - chrono::Duration::hours(1)).format("%H:%M").to_string(),
        "end": (now + chrono::Duration::hours(2)).format("%H:%M").to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Missed-call text-back
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn reach_a_missed_call_texts_the_caller_once_and_shows_on_the_conversation() {
    let s = setup().await;
    let app = &s.app;
    let tenant = tenant_with(app, json!({"missed_call_text": TEXT_BACK})).await;
    let from = tenant.sms_from.clone().unwrap();
    let caller = "+15558880001";
    assert_eq!(contact_rows(app).await, 0);

    s.call(&tenant, caller, &call_sid(), "no-answer").await;
    let sms = s.twilio.wait_for_sms(caller, TEXT_BACK, WAIT).await;
    assert_eq!(sms.form["To"], caller);
    assert_eq!(
        sms.form["From"], from,
        "the text-back comes from the tenant's number"
    );
    assert!(
        sms.form
            .get("StatusCallback")
            .is_some_and(|c| c.starts_with(&app.url("/v1/inbound/twilio/status?message_id=msg_"))),
        "an ordinary SMS, with its status callback: {:?}",
        sms.form.get("StatusCallback")
    );

    // The caller is now a contact, and the text-back an ordinary message by `system`.
    let sent = wait_for_text_backs(app, &tenant, caller, 1).await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    let text_back = &sent[0];
    assert_eq!(text_back["body"], TEXT_BACK);
    assert_eq!(text_back["channel"], "sms");
    assert_eq!(text_back["status"], "sent");
    let cid = text_back["contact_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the text-back has no contact_id: {text_back}"))
        .to_owned();
    assert!(cid.starts_with("ct_"), "{cid}");
    let c = contact(app, &tenant, &cid).await;
    assert_eq!(c["phone"], caller);
    assert_eq!(c["opted_out"], false);
    assert_eq!(contact_rows(app).await, 1);

    let conv = conversation(app, &tenant, &cid).await;
    assert_eq!(
        entries(&conv),
        [missed("no-answer"), entry("outbound", "system", TEXT_BACK)],
        "{conv}"
    );
    assert_eq!(conv["data"][1]["id"], text_back["id"]);
    assert_eq!(conv["data"][1]["status"], "sent");

    // `busy` and `failed` are missed calls too.
    for (caller, status) in [("+15558880002", "busy"), ("+15558880003", "failed")] {
        s.call(&tenant, caller, &call_sid(), status).await;
        s.twilio.wait_for_sms(caller, TEXT_BACK, WAIT).await;
        let sent = wait_for_text_backs(app, &tenant, caller, 1).await;
        let cid = sent[0]["contact_id"].as_str().unwrap();
        assert_eq!(
            entries(&conversation(app, &tenant, cid).await),
            [missed(status), entry("outbound", "system", TEXT_BACK)],
            "{status}"
        );
    }

    // An answered call (in progress, then completed) is no missed call: nothing happens.
    let answered = "+15558880004";
    let rows = app.message_rows().await;
    let contacts = contact_rows(app).await;
    let sid = call_sid();
    for status in ["ringing", "in-progress", "completed"] {
        s.call(&tenant, answered, &sid, status).await;
    }
    assert_eq!(
        app.message_rows().await,
        rows,
        "an answered call stores nothing"
    );
    assert_eq!(contact_rows(app).await, contacts, "and creates no contact");

    // A later SMS reaches Twilio: by then any text-back would have been sent.
    s.witness(&tenant, answered).await;
    assert_eq!(s.twilio.calls_to(answered), 1, "only the witness");
    for caller in ["+15558880001", "+15558880002", "+15558880003"] {
        assert_eq!(
            s.twilio.bodies_to(caller),
            [TEXT_BACK],
            "one text-back to {caller}"
        );
    }

    // A tenant without a missed-call text of its own gets the default one, with its name.
    let plain = tenant_with(app, json!({"name": "Bright Smiles"})).await;
    let caller = "+15558880005";
    s.call(&plain, caller, &call_sid(), "no-answer").await;
    let sent = wait_for_text_backs(app, &plain, caller, 1).await;
    let body = sent[0]["body"].as_str().unwrap();
    assert!(
        body.starts_with("Sorry we missed your call! This is Bright Smiles."),
        "the default text-back: {body:?}"
    );
    assert_eq!(s.twilio.bodies_to(caller), [body]);
    assert_eq!(
        s.twilio.sent_to(caller)[0].form["From"],
        plain.sms_from.clone().unwrap()
    );
}

#[tokio::test]
async fn reach_one_text_back_per_caller_within_the_cooldown_and_a_retried_callback_changes_nothing()
{
    let s = setup().await;
    let app = &s.app;

    // The default cooldown (10 minutes).
    let tenant = tenant_with(app, json!({"missed_call_text": TEXT_BACK})).await;
    let caller = "+15558880011";
    let first = call_sid();
    s.call(&tenant, caller, &first, "no-answer").await;
    let sent = wait_for_text_backs(app, &tenant, caller, 1).await;
    let cid = sent[0]["contact_id"].as_str().unwrap().to_owned();

    let second = call_sid();
    s.call(&tenant, caller, &second, "busy").await;
    let expected = [
        missed("no-answer"),
        entry("outbound", "system", TEXT_BACK),
        missed("busy"),
    ];
    assert_eq!(
        entries(&conversation(app, &tenant, &cid).await),
        expected,
        "the second call is on the conversation"
    );
    assert_eq!(
        text_backs(app, &tenant, caller).await.len(),
        1,
        "no second text-back inside the cooldown"
    );

    // Twilio retries both callbacks: nothing new is stored or sent.
    let rows = app.message_rows().await;
    s.call(&tenant, caller, &second, "busy").await;
    s.call(&tenant, caller, &first, "no-answer").await;
    assert_eq!(
        app.message_rows().await,
        rows,
        "a retried callback stores nothing"
    );
    assert_eq!(entries(&conversation(app, &tenant, &cid).await), expected);

    s.witness(&tenant, caller).await;
    let bodies = s.twilio.bodies_to(caller);
    assert_eq!(bodies.len(), 2, "the text-back and the witness: {bodies:?}");
    assert_eq!(bodies[0], TEXT_BACK);
    assert_eq!(text_backs(app, &tenant, caller).await.len(), 1);

    // With no cooldown, every new call texts back; a retried one still does not.
    let eager = tenant_with(
        app,
        json!({"missed_call_text": TEXT_BACK, "missed_call_cooldown_minutes": 0}),
    )
    .await;
    let caller = "+15558880012";
    let first = call_sid();
    s.call(&eager, caller, &first, "no-answer").await;
    let sent = wait_for_text_backs(app, &eager, caller, 1).await;
    let cid = sent[0]["contact_id"].as_str().unwrap().to_owned();
    s.call(&eager, caller, &first, "no-answer").await;
    assert_eq!(
        text_backs(app, &eager, caller).await.len(),
        1,
        "a retried callback is the same call, even with no cooldown"
    );

    s.call(&eager, caller, &call_sid(), "no-answer").await;
    let sent = wait_for_text_backs(app, &eager, caller, 2).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|m| m["status"] == "sent"), "{sent:?}");
    assert_eq!(
        entries(&conversation(app, &eager, &cid).await),
        [
            missed("no-answer"),
            entry("outbound", "system", TEXT_BACK),
            missed("no-answer"),
            entry("outbound", "system", TEXT_BACK),
        ]
    );
    s.twilio.wait_for_sms(caller, TEXT_BACK, WAIT).await;
    eventually(WAIT, "both text-backs reach Twilio", || async {
        (s.twilio.calls_to(caller) >= 2).then_some(())
    })
    .await;
    s.witness(&eager, caller).await;
    assert_eq!(
        s.twilio.calls_to(caller),
        3,
        "two text-backs and the witness"
    );
    assert_eq!(s.twilio.bodies_to(caller)[..2], [TEXT_BACK, TEXT_BACK]);
}

#[tokio::test]
async fn reach_an_opted_out_caller_gets_no_text_back_but_the_missed_call_is_recorded() {
    let s = setup().await;
    let app = &s.app;
    let tenant = tenant_with(app, json!({"missed_call_text": TEXT_BACK})).await;
    let caller = "+15558880021";

    s.app.text(&s.twilio, &tenant, caller, "STOP").await;
    let cid = contact_of(app, &tenant, caller).await;
    assert_eq!(contact(app, &tenant, &cid).await["opted_out"], true);

    s.call(&tenant, caller, &call_sid(), "no-answer").await;
    let conv = conversation(app, &tenant, &cid).await;
    let all = entries(&conv);
    assert_eq!(
        all[..2],
        [entry("inbound", "contact", "STOP"), missed("no-answer")],
        "the missed call is on the conversation: {conv}"
    );
    // Nothing that could reach the caller: no text-back, or at most a suppressed one.
    for e in conv["data"].as_array().unwrap().iter().skip(2) {
        assert_eq!(e["direction"], "outbound", "{conv}");
        assert_eq!(e["status"], "suppressed", "{conv}");
    }
    for m in text_backs(app, &tenant, caller).await {
        let m = app
            .wait_for_status(&tenant, m["id"].as_str().unwrap(), "suppressed", WAIT)
            .await;
        assert!(
            !m["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["status"] == "sending"),
            "{m}"
        );
    }
    assert_eq!(contact_rows(app).await, 1, "the same contact");

    // A later SMS to someone else reaches Twilio: the caller heard nothing by then.
    s.witness(&tenant, "+15558880029").await;
    assert_eq!(
        s.twilio.calls_to(caller),
        0,
        "nothing to an opted-out number"
    );

    // Opted back in, the next missed call texts back: the skipped one used no cooldown.
    s.app.text(&s.twilio, &tenant, caller, "START").await;
    assert_eq!(contact(app, &tenant, &cid).await["opted_out"], false);
    s.call(&tenant, caller, &call_sid(), "busy").await;
    s.twilio.wait_for_sms(caller, TEXT_BACK, WAIT).await;
    assert_eq!(s.twilio.bodies_to(caller), [TEXT_BACK]);
}

#[tokio::test]
async fn reach_the_callers_reply_to_the_text_back_gets_an_ai_answer_that_saw_the_text_back() {
    let s = setup().await;
    let app = &s.app;
    let tenant = tenant_with(app, json!({"missed_call_text": TEXT_BACK})).await;
    let caller = "+15558880031";

    s.call(&tenant, caller, &call_sid(), "no-answer").await;
    let sent = wait_for_text_backs(app, &tenant, caller, 1).await;
    let cid = sent[0]["contact_id"].as_str().unwrap().to_owned();
    assert!(s.model.received().is_empty(), "a missed call asks no model");

    let reply = "Hi, can I book a cleaning for Friday?";
    s.app.text(&s.twilio, &tenant, caller, reply).await;
    let sms = s.twilio.wait_for_sms(caller, ANSWER, WAIT).await;
    assert_eq!(sms.form["From"], tenant.sms_from.clone().unwrap());
    assert_eq!(s.twilio.bodies_to(caller), [TEXT_BACK, ANSWER]);

    let requests = s.model.received();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["model"], MODEL);
    let turns = chat(&requests[0]);
    assert_eq!(turns[0].0, "system", "{turns:?}");
    let n = turns.len();
    assert!(n >= 3, "{turns:?}");
    assert_eq!(
        turns[n - 2..],
        [turn("assistant", TEXT_BACK), turn("user", reply)],
        "the model sees the text-back as the assistant's turn, then the reply: {turns:?}"
    );

    let ai = eventually(WAIT, "the AI reply is listed", || async {
        messages(app, &tenant, &format!("&contact_id={cid}"))
            .await
            .into_iter()
            .find(|m| m["direction"] == "outbound" && m["author"] == "ai")
    })
    .await;
    let ai = app
        .wait_for_status(&tenant, ai["id"].as_str().unwrap(), "sent", WAIT)
        .await;
    assert_eq!(ai["body"], ANSWER);
    assert_eq!(
        entries(&conversation(app, &tenant, &cid).await),
        [
            missed("no-answer"),
            entry("outbound", "system", TEXT_BACK),
            entry("inbound", "contact", reply),
            entry("outbound", "ai", ANSWER),
        ]
    );
}

#[tokio::test]
async fn reach_a_call_status_callback_with_a_bad_signature_is_refused_and_stores_nothing() {
    let s = setup().await;
    let app = &s.app;
    let tenant = tenant_with(app, json!({"missed_call_text": TEXT_BACK})).await;
    let caller = "+15558880041";
    let sid = call_sid();
    let form = call_form(&tenant, caller, &sid, "no-answer");
    let url = app.url(VOICE_PATH);

    // Signed with the wrong auth token.
    let (status, body) = app
        .twilio_post(VOICE_PATH, "not-the-auth-token", &borrowed(&form))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "wrong token: {body}");
    let error: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
    assert_eq!(error["error"]["code"], "invalid_signature", "{body}");

    // No signature at all.
    let r = app.http.post(&url).form(&form).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "missing signature");

    // Signed for other parameters (an answered call), sent as a missed one.
    let answered = call_form(&tenant, caller, &sid, "completed");
    let signed_for = twilio_signature::compute(&s.twilio.auth_token, &url, &answered);
    let r = app
        .http
        .post(&url)
        .header("X-Twilio-Signature", signed_for)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "tampered body");

    // Signed for the SMS webhook's URL.
    let elsewhere = twilio_signature::compute(
        &s.twilio.auth_token,
        &app.url("/v1/inbound/twilio/sms"),
        &form,
    );
    let r = app
        .http
        .post(&url)
        .header("X-Twilio-Signature", elsewhere)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "signed for another URL");

    assert_eq!(app.message_rows().await, 0, "no message stored");
    assert_eq!(contact_rows(app).await, 0, "no contact created");
    s.witness(&tenant, "+15558880049").await;
    assert_eq!(s.twilio.calls_to(caller), 0, "no text-back");

    // The forged callbacks took neither the call sid nor the cooldown: the real one texts back.
    s.call(&tenant, caller, &sid, "no-answer").await;
    s.twilio.wait_for_sms(caller, TEXT_BACK, WAIT).await;
    let cid = contact_of(app, &tenant, caller).await;
    assert_eq!(
        entries(&conversation(app, &tenant, &cid).await),
        [missed("no-answer"), entry("outbound", "system", TEXT_BACK)]
    );
}

#[tokio::test]
async fn reach_a_text_back_during_quiet_hours_waits_for_the_end_of_the_window() {
    let s = setup().await;
    let app = &s.app;
    let tenant = tenant_with(
        app,
        json!({"missed_call_text": TEXT_BACK, "timezone": "UTC", "quiet_hours": quiet_now_in_utc()}),
    )
    .await;
    let caller = "+15558880051";
    let called_at = Utc::now();

    s.call(&tenant, caller, &call_sid(), "no-answer").await;
    let found = text_backs(app, &tenant, caller).await;
    assert_eq!(
        found.len(),
        1,
        "the text-back is created at once: {found:?}"
    );
    let id = found[0]["id"].as_str().unwrap().to_owned();
    let m = eventually(WAIT, "the text-back is deferred by quiet hours", || async {
        let m = app.message(&tenant, &id).await;
        (m["status"] == "scheduled" && !events_with(&m, "scheduled", "quiet hours").is_empty())
            .then_some(m)
    })
    .await;
    let send_at = at(&m["send_at"]);
    assert!(
        send_at > called_at + chrono::Duration::minutes(60)
            && send_at <= called_at + chrono::Duration::minutes(121),
        "deferred to the end of the window (in about two hours): {m}"
    );
    assert_eq!(m["attempts"], 0, "{m}");

    // An urgent SMS (not respecting quiet hours) goes out; the text-back still waits.
    let other = "+15558880059";
    let (status, urgent) = app
        .post(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "sms", "to": other, "body": "urgent", "respect_quiet_hours": false}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{urgent}");
    app.wait_for_status(&tenant, urgent["id"].as_str().unwrap(), "sent", WAIT)
        .await;
    assert_eq!(s.twilio.calls_to(caller), 0, "nothing during quiet hours");
    assert_eq!(app.message(&tenant, &id).await["status"], "scheduled");
}

// ---------------------------------------------------------------------------------------------
// Contact groups
// ---------------------------------------------------------------------------------------------

/// `POST /v1/contacts` (asserting 201); returns the id.
async fn new_contact(app: &TestApp, tenant: &Tenant, body: Value) -> String {
    let (status, c) = app.post("/v1/contacts", &tenant.api_key, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    c["id"].as_str().unwrap().to_owned()
}

/// `POST /v1/groups` (asserting 201); returns the group.
async fn new_group(app: &TestApp, tenant: &Tenant, name: &str) -> Value {
    let (status, g) = app
        .post("/v1/groups", &tenant.api_key, &json!({"name": name}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{g}");
    g
}

async fn put_member(app: &TestApp, tenant: &Tenant, group: &str, contact: &str) -> StatusCode {
    let r = app
        .http
        .put(app.url(&format!("/v1/groups/{group}/members/{contact}")))
        .bearer_auth(&tenant.api_key)
        .send()
        .await
        .unwrap();
    r.status()
}

async fn group_send(
    app: &TestApp,
    tenant: &Tenant,
    group: &str,
    body: &Value,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let path = format!("/v1/groups/{group}/messages");
    match key {
        Some(k) => {
            app.post_with_headers(&path, &tenant.api_key, body, &[("Idempotency-Key", k)])
                .await
        }
        None => app.post(&path, &tenant.api_key, body).await,
    }
}

/// Waits until the group send's counts are `expected`; returns the send.
async fn wait_for_counts(app: &TestApp, tenant: &Tenant, id: &str, expected: Value) -> Value {
    let mut last = Value::Null;
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let (status, g) = app
                .get(&format!("/v1/group-messages/{id}"), &tenant.api_key)
                .await;
            assert_eq!(status, StatusCode::OK, "{g}");
            if g["counts"] == expected {
                return g;
            }
            last = g;
            tokio::time::sleep(Duration::from_millis(20)).await; // poll until the deadline
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("group send {id} never counted {expected}; last read: {last}"))
}

/// The tenant's messages to `contact_id`, newest first.
async fn messages_of(app: &TestApp, tenant: &Tenant, contact_id: &str) -> Vec<Value> {
    messages(app, tenant, &format!("&contact_id={contact_id}"))
        .await
        .into_iter()
        .filter(|m| m["direction"] == "outbound")
        .collect()
}

async fn outbound_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messages WHERE direction = 'outbound'")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn reach_groups_have_members_that_can_be_added_listed_in_pages_and_removed() {
    let app = TestApp::start().await;
    let tenant = app.tenant().await;

    let g = new_group(&app, &tenant, "Tuesday patients").await;
    let gid = g["id"].as_str().unwrap().to_owned();
    assert!(gid.starts_with("grp_"), "{g}");
    assert_eq!(g["name"], "Tuesday patients");
    assert_eq!(g["members"], 0);
    at(&g["created_at"]);
    let (status, read) = app.get(&format!("/v1/groups/{gid}"), &tenant.api_key).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read, g);

    let mut ids = Vec::new();
    for phone in ["+15558881001", "+15558881002", "+15558881003"] {
        let id = new_contact(&app, &tenant, json!({"phone": phone})).await;
        assert_eq!(
            put_member(&app, &tenant, &gid, &id).await,
            StatusCode::NO_CONTENT
        );
        ids.push(id);
    }
    // Adding a member again is fine, and changes nothing.
    assert_eq!(
        put_member(&app, &tenant, &gid, &ids[0]).await,
        StatusCode::NO_CONTENT
    );
    let (_, read) = app.get(&format!("/v1/groups/{gid}"), &tenant.api_key).await;
    assert_eq!(read["members"], 3, "{read}");
    // An unknown contact is not found.
    assert_eq!(
        put_member(&app, &tenant, &gid, "ct_doesnotexist").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        put_member(&app, &tenant, "grp_doesnotexist", &ids[0]).await,
        StatusCode::NOT_FOUND
    );

    // Two pages of members.
    let path = format!("/v1/groups/{gid}/members");
    let (status, first) = app.get(&format!("{path}?limit=2"), &tenant.api_key).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["data"].as_array().unwrap().len(), 2, "{first}");
    let cursor = first["next_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("a first page of 2 of 3 has a next_cursor: {first}"));
    let (status, second) = app
        .get(&format!("{path}?limit=2&cursor={cursor}"), &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["data"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["next_cursor"], Value::Null, "{second}");
    let mut listed: Vec<String> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["data"].as_array().unwrap())
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected, "every member once");
    let member = &first["data"][0];
    assert!(
        member["phone"].is_string() && member["opted_out"] == false,
        "a Contact: {member}"
    );
    for bad in ["limit=0", "limit=101"] {
        let (status, err) = app.get(&format!("{path}?{bad}"), &tenant.api_key).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {err}");
        assert_eq!(err["error"]["field"], "limit", "{bad}: {err}");
    }

    // Removing a member; removing it again, or a stranger, is not found.
    let member_path = format!("/v1/groups/{gid}/members/{}", ids[1]);
    let (status, body) = app.delete(&member_path, &tenant.api_key).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = app.delete(&member_path, &tenant.api_key).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "not a member any more: {body}"
    );
    let (_, read) = app.get(&format!("/v1/groups/{gid}"), &tenant.api_key).await;
    assert_eq!(read["members"], 2, "{read}");
    let (_, all) = app.get(&path, &tenant.api_key).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 2, "{all}");
    assert_eq!(all["next_cursor"], Value::Null);
    assert_eq!(
        contact(&app, &tenant, &ids[1]).await["id"],
        ids[1].as_str(),
        "the contact stays"
    );

    // An empty group lists an empty page.
    let empty = new_group(&app, &tenant, "Nobody yet").await;
    let (status, page) = app
        .get(
            &format!("/v1/groups/{}/members", empty["id"].as_str().unwrap()),
            &tenant.api_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page, json!({"data": [], "next_cursor": null}));

    // Deleting the group: gone, its contacts stay.
    let (status, body) = app
        .delete(&format!("/v1/groups/{gid}"), &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = app.get(&format!("/v1/groups/{gid}"), &tenant.api_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app.get(&path, &tenant.api_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app
        .delete(&format!("/v1/groups/{gid}"), &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    for id in &ids {
        contact(&app, &tenant, id).await;
    }
}

#[tokio::test]
async fn reach_a_group_sms_reaches_each_member_once_suppresses_the_opted_out_and_is_idempotent() {
    let s = setup().await;
    let app = &s.app;
    let tenant = tenant_with(app, json!({})).await;
    let (ana, ben, cy) = ("+15558882001", "+15558882002", "+15558882003");
    let ana_id = new_contact(
        app,
        &tenant,
        json!({"phone": ana, "name": "Ana", "email": "ana@example.com"}),
    )
    .await;
    let ben_id = new_contact(app, &tenant, json!({"phone": ben, "name": "Ben"})).await;
    let cy_id = new_contact(app, &tenant, json!({"phone": cy, "name": "Cy"})).await;
    let dee_id = new_contact(
        app,
        &tenant,
        json!({"email": "dee@example.com", "name": "Dee"}),
    )
    .await;
    s.app.text(&s.twilio, &tenant, cy, "STOP").await;
    assert_eq!(contact(app, &tenant, &cy_id).await["opted_out"], true);

    let g = new_group(app, &tenant, "Newsletter").await;
    let gid = g["id"].as_str().unwrap().to_owned();
    for id in [&ana_id, &ben_id, &cy_id, &dee_id] {
        assert_eq!(
            put_member(app, &tenant, &gid, id).await,
            StatusCode::NO_CONTENT
        );
    }

    // One SMS per member with a phone (Dee has none).
    let body = "We're closed Monday for the holiday. See you Tuesday!";
    let send = json!({"channel": "sms", "body": body, "metadata": {"campaign": "holiday"}});
    let key = unique("group-send-");
    let (status, accepted) = group_send(app, &tenant, &gid, &send, Some(&key)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let gms = accepted["id"].as_str().unwrap().to_owned();
    assert!(gms.starts_with("gms_"), "{accepted}");
    assert_eq!(accepted["group_id"], gid.as_str());
    assert_eq!(
        accepted["recipients"], 3,
        "members with a phone: {accepted}"
    );

    let settled = wait_for_counts(app, &tenant, &gms, json!({"sent": 2, "suppressed": 1})).await;
    assert_eq!(settled["id"], gms.as_str());
    assert_eq!(settled["group_id"], gid.as_str());
    assert_eq!(settled["channel"], "sms");
    assert_eq!(settled["recipients"], 3);
    at(&settled["created_at"]);

    // Each member's message is an ordinary message, listed with its contact.
    for (id, phone, status) in [
        (&ana_id, ana, "sent"),
        (&ben_id, ben, "sent"),
        (&cy_id, cy, "suppressed"),
    ] {
        let found = messages_of(app, &tenant, id).await;
        assert_eq!(found.len(), 1, "{phone}: {found:?}");
        let m = app
            .wait_for_status(&tenant, found[0]["id"].as_str().unwrap(), status, WAIT)
            .await;
        assert_eq!(m["to"], phone);
        assert_eq!(m["body"], body);
        assert_eq!(m["channel"], "sms");
        assert_eq!(m["contact_id"], id.as_str());
        assert_eq!(m["metadata"]["campaign"], "holiday", "{m}");
    }
    assert!(
        messages_of(app, &tenant, &dee_id).await.is_empty(),
        "no SMS without a phone"
    );
    assert_eq!(s.twilio.bodies_to(ana), [body]);
    assert_eq!(s.twilio.bodies_to(ben), [body]);
    assert_eq!(
        s.twilio.calls_to(cy),
        0,
        "the opted-out member is never sent to"
    );
    let from = tenant.sms_from.clone().unwrap();
    assert!(
        s.twilio
            .sent_to(ana)
            .iter()
            .chain(&s.twilio.sent_to(ben))
            .all(|r| r.form["From"] == from)
    );

    // The same key and body: the same send, nothing new.
    let rows = outbound_rows(app).await;
    let (status, again) = group_send(app, &tenant, &gid, &send, Some(&key)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], gms.as_str());
    assert_eq!(again["recipients"], 3);
    // The same key, another body: refused.
    let other = json!({"channel": "sms", "body": "Something else entirely."});
    let (status, conflict) = group_send(app, &tenant, &gid, &other, Some(&key)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(
        conflict["error"]["code"], "idempotency_key_reused",
        "{conflict}"
    );
    assert_eq!(outbound_rows(app).await, rows, "neither created a message");
    s.witness(&tenant, ana).await;
    assert_eq!(
        s.twilio.bodies_to(ana).len(),
        2,
        "the send and the witness: {:?}",
        s.twilio.bodies_to(ana)
    );
    assert_eq!(s.twilio.bodies_to(ben), [body], "Ben got the send once");
    assert!(
        !s.twilio
            .bodies_to(ana)
            .iter()
            .any(|b| b == "Something else entirely.")
    );

    // Ben leaves: the next send goes to the two members with a phone.
    let (status, _) = app
        .delete(
            &format!("/v1/groups/{gid}/members/{ben_id}"),
            &tenant.api_key,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let next = "Reminder: closed Monday.";
    let (status, accepted) = group_send(
        app,
        &tenant,
        &gid,
        &json!({"channel": "sms", "body": next}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["recipients"], 2, "{accepted}");
    assert_ne!(accepted["id"], gms.as_str());
    wait_for_counts(
        app,
        &tenant,
        accepted["id"].as_str().unwrap(),
        json!({"sent": 1, "suppressed": 1}),
    )
    .await;
    s.twilio.wait_for_sms(ana, next, WAIT).await;

    // By email: the members with an address (Ana and Dee).
    let (status, accepted) = group_send(
        app,
        &tenant,
        &gid,
        &json!({"channel": "email", "subject": "Holiday hours", "body": body}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(
        accepted["recipients"], 2,
        "members with an email: {accepted}"
    );
    let mails = wait_for_counts(
        app,
        &tenant,
        accepted["id"].as_str().unwrap(),
        json!({"sent": 2}),
    )
    .await;
    assert_eq!(mails["channel"], "email");
    let dee_mail = messages_of(app, &tenant, &dee_id).await;
    assert_eq!(dee_mail.len(), 1, "{dee_mail:?}");
    assert_eq!(dee_mail[0]["to"], "dee@example.com");
    assert_eq!(dee_mail[0]["subject"], "Holiday hours");

    s.witness(&tenant, ben).await;
    assert_eq!(
        s.twilio.bodies_to(ben).len(),
        2,
        "Ben got nothing after leaving: {:?}",
        s.twilio.bodies_to(ben)
    );
    assert_eq!(s.twilio.calls_to(cy), 0);
}

#[tokio::test]
async fn reach_a_group_sms_respects_quiet_hours_in_each_members_zone() {
    let s = setup().await;
    let app = &s.app;
    let tenant = tenant_with(
        app,
        json!({"timezone": "UTC", "quiet_hours": quiet_now_in_utc()}),
    )
    .await;
    // Quiet now in UTC; six hours ahead it is outside the three-hour window.
    let sleeper = "+15558883001";
    let awake = "+15558883002";
    let sleeper_id = new_contact(app, &tenant, json!({"phone": sleeper})).await;
    let awake_id = new_contact(
        app,
        &tenant,
        json!({"phone": awake, "timezone": "Etc/GMT-6"}),
    )
    .await;
    let g = new_group(app, &tenant, "Everyone").await;
    let gid = g["id"].as_str().unwrap();
    for id in [&sleeper_id, &awake_id] {
        assert_eq!(
            put_member(app, &tenant, gid, id).await,
            StatusCode::NO_CONTENT
        );
    }

    let body = "Flu shots are in.";
    let (status, accepted) = group_send(
        app,
        &tenant,
        gid,
        &json!({"channel": "sms", "body": body}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["recipients"], 2);
    let gms = accepted["id"].as_str().unwrap();

    s.twilio.wait_for_sms(awake, body, WAIT).await;
    let deferred = messages_of(app, &tenant, &sleeper_id).await;
    assert_eq!(deferred.len(), 1, "{deferred:?}");
    let id = deferred[0]["id"].as_str().unwrap();
    let m = eventually(
        WAIT,
        "the sleeper's SMS is deferred by quiet hours",
        || async {
            let m = app.message(&tenant, id).await;
            (m["status"] == "scheduled" && !events_with(&m, "scheduled", "quiet hours").is_empty())
                .then_some(m)
        },
    )
    .await;
    assert!(
        at(&m["send_at"]) > Utc::now() + chrono::Duration::minutes(60),
        "{m}"
    );
    wait_for_counts(app, &tenant, gms, json!({"sent": 1, "scheduled": 1})).await;
    assert_eq!(s.twilio.calls_to(sleeper), 0);
}

#[tokio::test]
async fn reach_another_tenants_group_is_not_found_and_takes_no_foreign_contact() {
    let app = TestApp::start().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let a_contact = new_contact(&app, &a, json!({"phone": "+15558884001"})).await;
    let b_contact = new_contact(&app, &b, json!({"phone": "+15558884002"})).await;
    let g = new_group(&app, &a, "A's group").await;
    let gid = g["id"].as_str().unwrap().to_owned();
    assert_eq!(
        put_member(&app, &a, &gid, &a_contact).await,
        StatusCode::NO_CONTENT
    );
    let (status, accepted) = group_send(
        &app,
        &a,
        &gid,
        &json!({"channel": "sms", "body": "hi"}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let gms = accepted["id"].as_str().unwrap().to_owned();
    let rows = app.message_rows().await;

    // B sees none of it.
    for path in [
        format!("/v1/groups/{gid}"),
        format!("/v1/groups/{gid}/members"),
        format!("/v1/group-messages/{gms}"),
    ] {
        let (status, body) = app.get(&path, &b.api_key).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    assert_eq!(
        put_member(&app, &b, &gid, &b_contact).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        put_member(&app, &b, &gid, &a_contact).await,
        StatusCode::NOT_FOUND
    );
    let (status, body) = app
        .delete(&format!("/v1/groups/{gid}/members/{a_contact}"), &b.api_key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = group_send(
        &app,
        &b,
        &gid,
        &json!({"channel": "sms", "body": "hijack"}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app.delete(&format!("/v1/groups/{gid}"), &b.api_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // A cannot add B's contact to its own group either.
    assert_eq!(
        put_member(&app, &a, &gid, &b_contact).await,
        StatusCode::NOT_FOUND
    );

    let (status, read) = app.get(&format!("/v1/groups/{gid}"), &a.api_key).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["members"], 1, "{read}");
    let (_, members) = app
        .get(&format!("/v1/groups/{gid}/members"), &a.api_key)
        .await;
    let ids: Vec<&str> = members["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a_contact.as_str()]);
    assert_eq!(
        app.message_rows().await,
        rows,
        "B's attempts created nothing"
    );
    let (status, _) = app
        .get(&format!("/v1/group-messages/{gms}"), &a.api_key)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn reach_a_group_send_that_fails_validation_creates_nothing() {
    let app = TestApp::start().await;
    let tenant = app.tenant().await;
    let phone = new_contact(
        &app,
        &tenant,
        json!({"phone": "+15558885001", "email": "e@example.com"}),
    )
    .await;
    let g = new_group(&app, &tenant, "Validated").await;
    let gid = g["id"].as_str().unwrap().to_owned();
    assert_eq!(
        put_member(&app, &tenant, &gid, &phone).await,
        StatusCode::NO_CONTENT
    );
    let rows = app.message_rows().await;
    let keys = app.queue_keys().await;

    for (body, field) in [
        (json!({"channel": "webhook", "body": "x"}), "channel"),
        (json!({"channel": "fax", "body": "x"}), "channel"),
        (json!({"channel": "email", "body": "no subject"}), "subject"),
        (json!({"channel": "sms"}), "body"),
        (
            json!({"channel": "sms", "body": "x", "send_at": "tomorrow"}),
            "send_at",
        ),
    ] {
        let (status, err) = group_send(&app, &tenant, &gid, &body, Some(&unique("k-"))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    let (status, err) = app
        .post("/v1/groups", &tenant.api_key, &json!({"name": ""}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["field"], "name", "{err}");
    let (status, err) = app.post("/v1/groups", &tenant.api_key, &json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["field"], "name", "{err}");
    let (status, err) = group_send(
        &app,
        &tenant,
        "grp_doesnotexist",
        &json!({"channel": "sms", "body": "x"}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    let (status, err) = app
        .get("/v1/group-messages/gms_doesnotexist", &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");

    assert_eq!(app.message_rows().await, rows, "no message created");
    assert_eq!(app.queue_keys().await, keys, "nothing queued");
    let sends: i64 = sqlx::query_scalar("SELECT count(*) FROM group_messages")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(sends, 0, "no group send recorded");
}
