//! Reaching people: the missed-call text-back (Twilio's signed call status callback) and
//! contact groups with bulk sends to every member.

use std::time::Duration;

use chrono::Utc;
use herald_tests::{
    Tenant, TestApp,
    app::test_config,
    eventually, eventually_ok,
    providers::{ModelMock, ModelReply, TwilioMock, chat, turn},
    unique,
    views::{
        ContactView, GroupSendAccepted, GroupSendView, GroupView, MessageView, Page, api_error,
        entry, time, view,
    },
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
        let m = self.app.post_sms(tenant, to, &body).await;
        self.app.wait_for_status(tenant, &m.id, "sent", WAIT).await;
        self.twilio.wait_for_sms(to, &body, WAIT).await;
    }
}

/// The outbound `system` messages to `phone` (text-backs), newest first.
async fn text_backs(app: &TestApp, tenant: &Tenant, phone: &str) -> Vec<MessageView> {
    app.messages(tenant, "")
        .await
        .data
        .into_iter()
        .filter(|m| m.direction == "outbound" && m.author == "system" && m.to == phone)
        .collect()
}

/// Waits until `phone` has `n` text-backs, the newest `sent`; returns them, newest first.
async fn wait_for_text_backs(
    app: &TestApp,
    tenant: &Tenant,
    phone: &str,
    n: usize,
) -> Vec<MessageView> {
    let found = eventually_ok(WAIT, &format!("{n} text-back(s) to {phone}"), || async {
        let found = text_backs(app, tenant, phone).await;
        if found.len() >= n {
            Ok(found)
        } else {
            Err(format!("{} of them: {found:?}", found.len()))
        }
    })
    .await;
    app.wait_for_status(tenant, &found[0].id, "sent", WAIT)
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

fn missed(status: &str) -> (String, String, String) {
    entry("inbound", "system", &format!("Missed call ({status})"))
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
async fn a_missed_call_texts_the_caller_once_and_shows_on_the_conversation() {
    let s = setup().await;
    let app = &s.app;
    let tenant = app
        .tenant_with(json!({"missed_call_text": TEXT_BACK}))
        .await;
    let from = tenant.sms_from.clone().unwrap();
    let caller = "+15558880001";
    assert_eq!(app.contact_rows().await, 0);

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
    assert_eq!(text_back.body, TEXT_BACK);
    assert_eq!(text_back.channel, "sms");
    assert_eq!(text_back.status, "sent");
    let cid = text_back
        .contact_id
        .as_deref()
        .unwrap_or_else(|| panic!("the text-back has no contact_id: {text_back}"))
        .to_owned();
    assert!(cid.starts_with("ct_"), "{cid}");
    let c = app.contact(&tenant, &cid).await;
    assert_eq!(c.phone.as_deref(), Some(caller));
    assert!(!c.opted_out);
    assert_eq!(app.contact_rows().await, 1);

    let conv = app.conversation(&tenant, &cid).await;
    assert_eq!(
        conv.entries(),
        [missed("no-answer"), entry("outbound", "system", TEXT_BACK)],
        "{conv}"
    );
    assert_eq!(conv.data[1].id, text_back.id);
    assert_eq!(conv.data[1].status, "sent");

    // `busy` and `failed` are missed calls too.
    for (caller, status) in [("+15558880002", "busy"), ("+15558880003", "failed")] {
        s.call(&tenant, caller, &call_sid(), status).await;
        s.twilio.wait_for_sms(caller, TEXT_BACK, WAIT).await;
        let sent = wait_for_text_backs(app, &tenant, caller, 1).await;
        let cid = sent[0].contact_id.as_deref().unwrap();
        assert_eq!(
            app.conversation(&tenant, cid).await.entries(),
            [missed(status), entry("outbound", "system", TEXT_BACK)],
            "{status}"
        );
    }

    // An answered call (in progress, then completed) is no missed call: nothing happens.
    let answered = "+15558880004";
    let rows = app.message_rows().await;
    let contacts = app.contact_rows().await;
    let sid = call_sid();
    for status in ["ringing", "in-progress", "completed"] {
        s.call(&tenant, answered, &sid, status).await;
    }
    assert_eq!(
        app.message_rows().await,
        rows,
        "an answered call stores nothing"
    );
    assert_eq!(app.contact_rows().await, contacts, "and creates no contact");

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
    let plain = app.tenant_with(json!({"name": "Bright Smiles"})).await;
    let caller = "+15558880005";
    s.call(&plain, caller, &call_sid(), "no-answer").await;
    let sent = wait_for_text_backs(app, &plain, caller, 1).await;
    let body = sent[0].body.as_str().unwrap();
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
async fn one_text_back_per_caller_within_the_cooldown_and_a_retried_callback_changes_nothing() {
    let s = setup().await;
    let app = &s.app;

    // The default cooldown (10 minutes).
    let tenant = app
        .tenant_with(json!({"missed_call_text": TEXT_BACK}))
        .await;
    let caller = "+15558880011";
    let first = call_sid();
    s.call(&tenant, caller, &first, "no-answer").await;
    let sent = wait_for_text_backs(app, &tenant, caller, 1).await;
    let cid = sent[0].contact_id.as_deref().unwrap().to_owned();

    let second = call_sid();
    s.call(&tenant, caller, &second, "busy").await;
    let expected = [
        missed("no-answer"),
        entry("outbound", "system", TEXT_BACK),
        missed("busy"),
    ];
    assert_eq!(
        app.conversation(&tenant, &cid).await.entries(),
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
    assert_eq!(app.conversation(&tenant, &cid).await.entries(), expected);

    s.witness(&tenant, caller).await;
    let bodies = s.twilio.bodies_to(caller);
    assert_eq!(bodies.len(), 2, "the text-back and the witness: {bodies:?}");
    assert_eq!(bodies[0], TEXT_BACK);
    assert_eq!(text_backs(app, &tenant, caller).await.len(), 1);

    // With no cooldown, every new call texts back; a retried one still does not.
    let eager = app
        .tenant_with(json!({"missed_call_text": TEXT_BACK, "missed_call_cooldown_minutes": 0}))
        .await;
    let caller = "+15558880012";
    let first = call_sid();
    s.call(&eager, caller, &first, "no-answer").await;
    let sent = wait_for_text_backs(app, &eager, caller, 1).await;
    let cid = sent[0].contact_id.as_deref().unwrap().to_owned();
    s.call(&eager, caller, &first, "no-answer").await;
    assert_eq!(
        text_backs(app, &eager, caller).await.len(),
        1,
        "a retried callback is the same call, even with no cooldown"
    );

    s.call(&eager, caller, &call_sid(), "no-answer").await;
    let sent = wait_for_text_backs(app, &eager, caller, 2).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().all(|m| m.status == "sent"), "{sent:?}");
    assert_eq!(
        app.conversation(&eager, &cid).await.entries(),
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
async fn an_opted_out_caller_gets_no_text_back_but_the_missed_call_is_recorded() {
    let s = setup().await;
    let app = &s.app;
    let tenant = app
        .tenant_with(json!({"missed_call_text": TEXT_BACK}))
        .await;
    let caller = "+15558880021";

    s.app.text(&s.twilio, &tenant, caller, "STOP").await;
    let cid = contact_of(app, &tenant, caller).await;
    assert!(app.contact(&tenant, &cid).await.opted_out);

    s.call(&tenant, caller, &call_sid(), "no-answer").await;
    let conv = app.conversation(&tenant, &cid).await;
    let all = conv.entries();
    assert_eq!(
        all[..2],
        [entry("inbound", "contact", "STOP"), missed("no-answer")],
        "the missed call is on the conversation: {conv}"
    );
    // Nothing that could reach the caller: no text-back, or at most a suppressed one.
    for e in conv.data.iter().skip(2) {
        assert_eq!(e.direction, "outbound", "{conv}");
        assert_eq!(e.status, "suppressed", "{conv}");
    }
    for m in text_backs(app, &tenant, caller).await {
        let m = app
            .wait_for_status(&tenant, &m.id, "suppressed", WAIT)
            .await;
        assert!(!m.events.iter().any(|e| e.status == "sending"), "{m}");
    }
    assert_eq!(app.contact_rows().await, 1, "the same contact");

    // A later SMS to someone else reaches Twilio: the caller heard nothing by then.
    s.witness(&tenant, "+15558880029").await;
    assert_eq!(
        s.twilio.calls_to(caller),
        0,
        "nothing to an opted-out number"
    );

    // Opted back in, the next missed call texts back: the skipped one used no cooldown.
    s.app.text(&s.twilio, &tenant, caller, "START").await;
    assert!(!app.contact(&tenant, &cid).await.opted_out);
    s.call(&tenant, caller, &call_sid(), "busy").await;
    s.twilio.wait_for_sms(caller, TEXT_BACK, WAIT).await;
    assert_eq!(s.twilio.bodies_to(caller), [TEXT_BACK]);
}

#[tokio::test]
async fn the_callers_reply_to_the_text_back_gets_an_ai_answer_that_saw_the_text_back() {
    let s = setup().await;
    let app = &s.app;
    let tenant = app
        .tenant_with(json!({"missed_call_text": TEXT_BACK}))
        .await;
    let caller = "+15558880031";

    s.call(&tenant, caller, &call_sid(), "no-answer").await;
    let sent = wait_for_text_backs(app, &tenant, caller, 1).await;
    let cid = sent[0].contact_id.as_deref().unwrap().to_owned();
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
        app.messages(&tenant, &format!("&contact_id={cid}"))
            .await
            .data
            .into_iter()
            .find(|m| m.direction == "outbound" && m.author == "ai")
    })
    .await;
    let ai = app.wait_for_status(&tenant, &ai.id, "sent", WAIT).await;
    assert_eq!(ai.body, ANSWER);
    assert_eq!(
        app.conversation(&tenant, &cid).await.entries(),
        [
            missed("no-answer"),
            entry("outbound", "system", TEXT_BACK),
            entry("inbound", "contact", reply),
            entry("outbound", "ai", ANSWER),
        ]
    );
}

#[tokio::test]
async fn a_call_status_callback_with_a_bad_signature_is_refused_and_stores_nothing() {
    let s = setup().await;
    let app = &s.app;
    let tenant = app
        .tenant_with(json!({"missed_call_text": TEXT_BACK}))
        .await;
    let caller = "+15558880041";
    let sid = call_sid();
    let form = call_form(&tenant, caller, &sid, "no-answer");
    // Signed for an answered call, sent as a missed one; or signed for the SMS webhook.
    let answered = call_form(&tenant, caller, &sid, "completed");
    app.assert_forged_twilio_posts_refused(
        VOICE_PATH,
        &s.twilio.auth_token,
        &form,
        &answered,
        "/v1/inbound/twilio/sms",
    )
    .await;
    assert_eq!(app.message_rows().await, 0, "no message stored");
    assert_eq!(app.contact_rows().await, 0, "no contact created");
    s.witness(&tenant, "+15558880049").await;
    assert_eq!(s.twilio.calls_to(caller), 0, "no text-back");

    // The forged callbacks took neither the call sid nor the cooldown: the real one texts back.
    s.call(&tenant, caller, &sid, "no-answer").await;
    s.twilio.wait_for_sms(caller, TEXT_BACK, WAIT).await;
    let cid = contact_of(app, &tenant, caller).await;
    assert_eq!(
        app.conversation(&tenant, &cid).await.entries(),
        [missed("no-answer"), entry("outbound", "system", TEXT_BACK)]
    );
}

#[tokio::test]
async fn a_text_back_during_quiet_hours_waits_for_the_end_of_the_window() {
    let s = setup().await;
    let app = &s.app;
    let tenant = app.tenant_with(json!({"missed_call_text": TEXT_BACK, "timezone": "UTC", "quiet_hours": quiet_now_in_utc()}),
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
    let id = found[0].id.clone();
    let m = eventually(WAIT, "the text-back is deferred by quiet hours", || async {
        let m = app.message(&tenant, &id).await;
        (m.status == "scheduled" && !m.events_with("scheduled", "quiet hours").is_empty())
            .then_some(m)
    })
    .await;
    let send_at = time(&m.send_at);
    assert!(
        send_at > called_at + chrono::Duration::minutes(60)
            && send_at <= called_at + chrono::Duration::minutes(121),
        "deferred to the end of the window (in about two hours): {m}"
    );
    assert_eq!(m.attempts, 0, "{m}");

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
    let urgent: MessageView = view(&urgent);
    app.wait_for_status(&tenant, &urgent.id, "sent", WAIT).await;
    assert_eq!(s.twilio.calls_to(caller), 0, "nothing during quiet hours");
    assert_eq!(app.message(&tenant, &id).await.status, "scheduled");
}

// ---------------------------------------------------------------------------------------------
// Contact groups
// ---------------------------------------------------------------------------------------------

/// `POST /v1/contacts` (asserting 201); returns the id.
async fn new_contact(app: &TestApp, tenant: &Tenant, body: Value) -> String {
    let c: ContactView = app
        .post_as("/v1/contacts", &tenant.api_key, &body, StatusCode::CREATED)
        .await;
    c.id
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
async fn wait_for_counts(
    app: &TestApp,
    tenant: &Tenant,
    id: &str,
    expected: Value,
) -> GroupSendView {
    let what = format!("group send {id} counts {expected}");
    eventually_ok(WAIT, &what, || async {
        let g: GroupSendView = app
            .get_as(&format!("/v1/group-messages/{id}"), &tenant.api_key)
            .await;
        if json!(g.counts) == expected {
            Ok(g)
        } else {
            Err(format!("read {g}"))
        }
    })
    .await
}

/// The tenant's messages to `contact_id`, newest first.
async fn messages_of(app: &TestApp, tenant: &Tenant, contact_id: &str) -> Vec<MessageView> {
    app.messages(tenant, &format!("&contact_id={contact_id}"))
        .await
        .data
        .into_iter()
        .filter(|m| m.direction == "outbound")
        .collect()
}

async fn outbound_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messages WHERE direction = 'outbound'")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn groups_have_members_that_can_be_added_listed_in_pages_and_removed() {
    let app = TestApp::start().await;
    let tenant = app.tenant().await;

    let g = app.new_group(&tenant, "Tuesday patients").await;
    let gid = g.id.clone();
    assert!(gid.starts_with("grp_"), "{g}");
    assert_eq!(g.name, "Tuesday patients");
    assert_eq!(g.members, 0);
    time(&g.created_at);
    let (status, read) = app.get(&format!("/v1/groups/{gid}"), &tenant.api_key).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read, json!(g), "the group reads back as created");

    let mut ids = Vec::new();
    for phone in ["+15558881001", "+15558881002", "+15558881003"] {
        let id = new_contact(&app, &tenant, json!({"phone": phone})).await;
        assert_eq!(
            app.put_member(&tenant, &gid, &id).await,
            StatusCode::NO_CONTENT
        );
        ids.push(id);
    }
    // Adding a member again is fine, and changes nothing.
    assert_eq!(
        app.put_member(&tenant, &gid, &ids[0]).await,
        StatusCode::NO_CONTENT
    );
    let read: GroupView = app
        .get_as(&format!("/v1/groups/{gid}"), &tenant.api_key)
        .await;
    assert_eq!(read.members, 3, "{read}");
    // An unknown contact is not found.
    assert_eq!(
        app.put_member(&tenant, &gid, "ct_doesnotexist").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.put_member(&tenant, "grp_doesnotexist", &ids[0]).await,
        StatusCode::NOT_FOUND
    );

    // Two pages of members.
    let path = format!("/v1/groups/{gid}/members");
    let first: Page<ContactView> = app
        .get_as(&format!("{path}?limit=2"), &tenant.api_key)
        .await;
    assert_eq!(first.data.len(), 2, "{first}");
    let cursor = first
        .next_cursor
        .as_deref()
        .unwrap_or_else(|| panic!("a first page of 2 of 3 has a next_cursor: {first}"));
    let second: Page<ContactView> = app
        .get_as(&format!("{path}?limit=2&cursor={cursor}"), &tenant.api_key)
        .await;
    assert_eq!(second.data.len(), 1, "{second}");
    assert_eq!(second.next_cursor, None, "{second}");
    let mut listed: Vec<String> = first
        .data
        .iter()
        .chain(&second.data)
        .map(|c| c.id.clone())
        .collect();
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected, "every member once");
    let member = &first.data[0];
    assert!(
        member.phone.is_some() && !member.opted_out,
        "a Contact: {member}"
    );
    for bad in ["limit=0", "limit=101"] {
        let (status, err) = app.get(&format!("{path}?{bad}"), &tenant.api_key).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {err}");
        assert_eq!(
            api_error(&err).field.as_deref(),
            Some("limit"),
            "{bad}: {err}"
        );
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
    let read: GroupView = app
        .get_as(&format!("/v1/groups/{gid}"), &tenant.api_key)
        .await;
    assert_eq!(read.members, 2, "{read}");
    let all: Page<ContactView> = app.get_as(&path, &tenant.api_key).await;
    assert_eq!(all.data.len(), 2, "{all}");
    assert_eq!(all.next_cursor, None);
    assert_eq!(
        app.contact(&tenant, &ids[1]).await.id,
        ids[1].as_str(),
        "the contact stays"
    );

    // An empty group lists an empty page.
    let empty = app.new_group(&tenant, "Nobody yet").await;
    let (status, page) = app
        .get(
            &format!("/v1/groups/{}/members", empty.id.as_str()),
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
        app.contact(&tenant, id).await;
    }
}

#[tokio::test]
async fn a_group_sms_reaches_each_member_once_suppresses_the_opted_out_and_is_idempotent() {
    let s = setup().await;
    let app = &s.app;
    let tenant = app.tenant_with(json!({})).await;
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
    assert!(app.contact(&tenant, &cy_id).await.opted_out);

    let g = app.new_group(&tenant, "Newsletter").await;
    let gid = g.id.clone();
    for id in [&ana_id, &ben_id, &cy_id, &dee_id] {
        assert_eq!(
            app.put_member(&tenant, &gid, id).await,
            StatusCode::NO_CONTENT
        );
    }

    // One SMS per member with a phone (Dee has none).
    let body = "We're closed Monday for the holiday. See you Tuesday!";
    let send = json!({"channel": "sms", "body": body, "metadata": {"campaign": "holiday"}});
    let key = unique("group-send-");
    let (status, accepted) = group_send(app, &tenant, &gid, &send, Some(&key)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let accepted: GroupSendAccepted = view(&accepted);
    let gms = accepted.id.clone();
    assert!(gms.starts_with("gms_"), "{accepted}");
    assert_eq!(accepted.group_id, gid.as_str());
    assert_eq!(accepted.recipients, 3, "members with a phone: {accepted}");

    let settled = wait_for_counts(app, &tenant, &gms, json!({"sent": 2, "suppressed": 1})).await;
    assert_eq!(settled.id, gms.as_str());
    assert_eq!(settled.group_id, gid.as_str());
    assert_eq!(settled.channel, "sms");
    assert_eq!(settled.recipients, 3);
    time(&settled.created_at);

    // Each member's message is an ordinary message, listed with its contact.
    for (id, phone, status) in [
        (&ana_id, ana, "sent"),
        (&ben_id, ben, "sent"),
        (&cy_id, cy, "suppressed"),
    ] {
        let found = messages_of(app, &tenant, id).await;
        assert_eq!(found.len(), 1, "{phone}: {found:?}");
        let m = app
            .wait_for_status(&tenant, &found[0].id, status, WAIT)
            .await;
        assert_eq!(m.to, phone);
        assert_eq!(m.body, body);
        assert_eq!(m.channel, "sms");
        assert_eq!(m.contact_id.as_deref(), Some(id.as_str()));
        assert_eq!(m.metadata["campaign"], "holiday", "{m}");
        assert_eq!(m.priority, "bulk", "a group send is bulk by default");
        let stored: (Option<String>, Option<i16>) =
            sqlx::query_as("SELECT encoding, segments FROM messages WHERE id = $1")
                .bind(&m.id)
                .fetch_one(&app.db)
                .await
                .unwrap();
        assert_eq!(
            stored,
            (Some("GSM-7".to_owned()), Some(1)),
            "kept with the row"
        );
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
    let again: GroupSendAccepted = view(&again);
    assert_eq!(again.id, gms.as_str());
    assert_eq!(again.recipients, 3);
    // The same key, another body: refused.
    let other = json!({"channel": "sms", "body": "Something else entirely."});
    let (status, conflict) = group_send(app, &tenant, &gid, &other, Some(&key)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(
        api_error(&conflict).code,
        "idempotency_key_reused",
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
    let accepted: GroupSendAccepted = view(&accepted);
    assert_eq!(accepted.recipients, 2, "{accepted}");
    assert_ne!(accepted.id, gms.as_str());
    wait_for_counts(
        app,
        &tenant,
        accepted.id.as_str(),
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
    let accepted: GroupSendAccepted = view(&accepted);
    assert_eq!(accepted.recipients, 2, "members with an email: {accepted}");
    let mails = wait_for_counts(app, &tenant, accepted.id.as_str(), json!({"sent": 2})).await;
    assert_eq!(mails.channel, "email");
    let dee_mail = messages_of(app, &tenant, &dee_id).await;
    assert_eq!(dee_mail.len(), 1, "{dee_mail:?}");
    assert_eq!(dee_mail[0].to, "dee@example.com");
    assert_eq!(dee_mail[0].subject.as_deref(), Some("Holiday hours"));

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
async fn a_group_sms_respects_quiet_hours_in_each_members_zone() {
    let s = setup().await;
    let app = &s.app;
    let tenant = app
        .tenant_with(json!({"timezone": "UTC", "quiet_hours": quiet_now_in_utc()}))
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
    let g = app.new_group(&tenant, "Everyone").await;
    let gid = g.id.as_str();
    for id in [&sleeper_id, &awake_id] {
        assert_eq!(
            app.put_member(&tenant, gid, id).await,
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
    let accepted: GroupSendAccepted = view(&accepted);
    assert_eq!(accepted.recipients, 2);
    let gms = accepted.id.as_str();

    s.twilio.wait_for_sms(awake, body, WAIT).await;
    let deferred = messages_of(app, &tenant, &sleeper_id).await;
    assert_eq!(deferred.len(), 1, "{deferred:?}");
    let id = deferred[0].id.as_str();
    let m = eventually(
        WAIT,
        "the sleeper's SMS is deferred by quiet hours",
        || async {
            let m = app.message(&tenant, id).await;
            (m.status == "scheduled" && !m.events_with("scheduled", "quiet hours").is_empty())
                .then_some(m)
        },
    )
    .await;
    assert!(
        time(&m.send_at) > Utc::now() + chrono::Duration::minutes(60),
        "{m}"
    );
    wait_for_counts(app, &tenant, gms, json!({"sent": 1, "scheduled": 1})).await;
    assert_eq!(s.twilio.calls_to(sleeper), 0);
}

#[tokio::test]
async fn another_tenants_group_is_not_found_and_takes_no_foreign_contact() {
    let app = TestApp::start().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let a_contact = new_contact(&app, &a, json!({"phone": "+15558884001"})).await;
    let b_contact = new_contact(&app, &b, json!({"phone": "+15558884002"})).await;
    let g = app.new_group(&a, "A's group").await;
    let gid = g.id.clone();
    assert_eq!(
        app.put_member(&a, &gid, &a_contact).await,
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
    let accepted: GroupSendAccepted = view(&accepted);
    let gms = accepted.id.clone();
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
        app.put_member(&b, &gid, &b_contact).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.put_member(&b, &gid, &a_contact).await,
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
        app.put_member(&a, &gid, &b_contact).await,
        StatusCode::NOT_FOUND
    );

    let read: GroupView = app.get_as(&format!("/v1/groups/{gid}"), &a.api_key).await;
    assert_eq!(read.members, 1, "{read}");
    let members: Page<ContactView> = app
        .get_as(&format!("/v1/groups/{gid}/members"), &a.api_key)
        .await;
    let ids: Vec<&str> = members.data.iter().map(|c| c.id.as_str()).collect();
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
async fn a_group_send_that_fails_validation_creates_nothing() {
    let app = TestApp::start().await;
    let tenant = app.tenant().await;
    let phone = new_contact(
        &app,
        &tenant,
        json!({"phone": "+15558885001", "email": "e@example.com"}),
    )
    .await;
    let g = app.new_group(&tenant, "Validated").await;
    let gid = g.id.clone();
    assert_eq!(
        app.put_member(&tenant, &gid, &phone).await,
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
        assert_eq!(
            api_error(&err).field.as_deref(),
            Some(field),
            "{body}: {err}"
        );
    }
    let (status, err) = app
        .post("/v1/groups", &tenant.api_key, &json!({"name": ""}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(api_error(&err).field.as_deref(), Some("name"), "{err}");
    let (status, err) = app.post("/v1/groups", &tenant.api_key, &json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(api_error(&err).field.as_deref(), Some("name"), "{err}");
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
