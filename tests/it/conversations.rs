//! Conversations: inbound texts (signed by Twilio), the keywords that must always work (STOP,
//! START, HELP), AI replies with their fallbacks, a person taking over, and the contacts API.

use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_tests::{
    Tenant, TestApp,
    app::test_config,
    eventually, eventually_ok,
    providers::{ModelMock, ModelReply, TwilioMock, chat, turn},
    views::{ContactView, MessageView, api_error, entry, view},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const INBOUND_PATH: &str = "/v1/inbound/twilio/sms";
const PRIMARY: &str = "primary-model";
const FALLBACK: &str = "fallback-model";
const QUESTION: &str = "What time do you open?";
const ANSWER: &str = "We open at 9 AM, Monday to Friday.";
const FALLBACK_ANSWER: &str = "Our doors open at nine on weekdays.";
const WAIT: Duration = Duration::from_secs(20);

/// The API and the worker, with Twilio and two model endpoints on loopback.
struct Setup {
    app: TestApp,
    twilio: TwilioMock,
    model: ModelMock,
    fallback: ModelMock,
}

async fn setup_with(primary: ModelReply, fallback: ModelReply, llm_timeout: Duration) -> Setup {
    let twilio = TwilioMock::start().await;
    let model = ModelMock::start(PRIMARY, primary).await;
    let fallback = ModelMock::start(FALLBACK, fallback).await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    config.llm = Some(model.endpoint());
    config.llm_fallback = Some(fallback.endpoint());
    config.llm_timeout = llm_timeout;
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    Setup {
        app,
        twilio,
        model,
        fallback,
    }
}

/// Both models answer.
async fn setup() -> Setup {
    setup_with(
        ModelReply::Text(ANSWER.to_owned()),
        ModelReply::Text(FALLBACK_ANSWER.to_owned()),
        Duration::from_secs(3),
    )
    .await
}

impl Setup {
    /// `phone` texts QUESTION to the tenant; waits for the SMS answering it with `answer` and
    /// returns that AI reply as stored, with its events.
    async fn ask(&self, tenant: &Tenant, phone: &str, answer: &str) -> MessageView {
        self.app.text(&self.twilio, tenant, phone, QUESTION).await;
        self.twilio.wait_for_sms(phone, answer, WAIT).await;
        let cid = contact_id_texting(&self.app, tenant, QUESTION).await;
        wait_for_reply(&self.app, tenant, &cid, "ai", 1).await
    }
}

/// The inbound messages with this body, newest first.
async fn inbound_with_body(app: &TestApp, tenant: &Tenant, body: &str) -> Vec<MessageView> {
    app.messages(tenant, "")
        .await
        .data
        .into_iter()
        .filter(|m| m.direction == "inbound" && m.body == body)
        .collect()
}

/// The contact id on the (first) inbound text with this body.
async fn contact_id_texting(app: &TestApp, tenant: &Tenant, body: &str) -> String {
    let found = inbound_with_body(app, tenant, body).await;
    let m = found
        .last()
        .unwrap_or_else(|| panic!("no inbound message {body:?} is listed"));
    assert_eq!(m.author, "contact", "{m}");
    assert_eq!(m.status, "received", "{m}");
    m.contact_id
        .as_deref()
        .unwrap_or_else(|| panic!("the inbound message has no contact_id: {m}"))
        .to_owned()
}

/// The outbound messages to this contact written by `author`, newest first.
async fn outbound_by(
    app: &TestApp,
    tenant: &Tenant,
    contact_id: &str,
    author: &str,
) -> Vec<MessageView> {
    app.messages(tenant, &format!("&contact_id={contact_id}"))
        .await
        .data
        .into_iter()
        .filter(|m| m.direction == "outbound" && m.author == author)
        .collect()
}

/// Waits until the contact has `n` outbound messages by `author` and the newest is `sent`;
/// returns that one, with its events.
async fn wait_for_reply(
    app: &TestApp,
    tenant: &Tenant,
    contact_id: &str,
    author: &str,
    n: usize,
) -> MessageView {
    let newest = eventually_ok(
        WAIT,
        &format!("{n} outbound message(s) by {author} to {contact_id}"),
        || async {
            let found = outbound_by(app, tenant, contact_id, author).await;
            if found.len() >= n {
                Ok(found[0].clone())
            } else {
                Err(format!("{} of them: {found:?}", found.len()))
            }
        },
    )
    .await;
    app.wait_for_status(tenant, &newest.id, "sent", WAIT).await
}

/// `POST /v1/contacts` with a phone (asserting 201); returns the id.
async fn create_contact(app: &TestApp, tenant: &Tenant, phone: &str) -> String {
    let c: ContactView = app
        .post_as(
            "/v1/contacts",
            &tenant.api_key,
            &json!({"phone": phone}),
            StatusCode::CREATED,
        )
        .await;
    c.id
}

/// Waits until the `ai-replies` queue has nothing pending, scheduled or running.
async fn wait_for_idle_reply_queue(app: &TestApp) {
    eventually_ok(WAIT, "the ai-replies queue is idle", || async {
        let q = app.queue_stats("ai-replies").await;
        if q.is_idle() {
            Ok(())
        } else {
            Err(format!("stats {q}"))
        }
    })
    .await;
}

/// A contact as raw JSON, for tests of its whole shape.
async fn contact_json(app: &TestApp, tenant: &Tenant, id: &str) -> Value {
    app.get_as(&format!("/v1/contacts/{id}"), &tenant.api_key)
        .await
}

// ---------------------------------------------------------------------------------------------
// Keywords
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn stop_words_in_any_case_suppress_sms_and_start_words_let_it_through_again() {
    let s = setup().await;
    let app = &s.app;
    let tenant = app.tenant().await;
    let phone = "+15557770001";

    s.app.text(&s.twilio, &tenant, phone, "stop").await;
    let cid = contact_id_texting(app, &tenant, "stop").await;

    let mut sent_bodies = Vec::new();
    for (i, (stop, start)) in [
        ("stop", "START"),
        (" Quit ", "yes"),
        ("UNSUBSCRIBE", " unstop "),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            s.app.text(&s.twilio, &tenant, phone, stop).await;
        }
        assert!(
            app.contact(&tenant, &cid).await.opted_out,
            "{stop:?} opts the number out"
        );
        let blocked_body = format!("blocked after {stop:?}");
        let blocked = app.post_sms(&tenant, phone, &blocked_body).await;
        let blocked = app
            .wait_for_status(&tenant, &blocked.id, "suppressed", WAIT)
            .await;
        assert!(
            !blocked.event_statuses().contains(&"sending".to_owned()),
            "a suppressed SMS never starts sending: {blocked}"
        );

        s.app.text(&s.twilio, &tenant, phone, start).await;
        assert!(
            !app.contact(&tenant, &cid).await.opted_out,
            "{start:?} opts the number back in"
        );
        let allowed_body = format!("allowed after {start:?}");
        let allowed = app.post_sms(&tenant, phone, &allowed_body).await;
        app.wait_for_status(&tenant, &allowed.id, "sent", WAIT)
            .await;
        sent_bodies.push(allowed_body);
        // The later SMS went out, so the suppressed one had its chance and did not.
        assert_eq!(
            s.twilio.bodies_to(phone),
            sent_bodies,
            "only the SMS sent while opted in reach Twilio"
        );
    }

    // Keyword texts get no AI reply: a question afterwards gets the first and only one.
    s.app.text(&s.twilio, &tenant, phone, QUESTION).await;
    let reply = wait_for_reply(app, &tenant, &cid, "ai", 1).await;
    assert_eq!(reply.body, ANSWER);
    wait_for_idle_reply_queue(app).await;
    let requests = s.model.received();
    assert_eq!(
        requests.len(),
        1,
        "only the question reached the model: {requests:?}"
    );
    assert_eq!(chat(&requests[0]).last().unwrap(), &turn("user", QUESTION));
    assert_eq!(outbound_by(app, &tenant, &cid, "ai").await.len(), 1);

    // Keyword texts are stored on the conversation too.
    let inbound: Vec<String> = app
        .conversation(&tenant, &cid)
        .await
        .entries()
        .into_iter()
        .filter(|(d, _, _)| d == "inbound")
        .map(|(_, _, b)| b)
        .collect();
    assert_eq!(
        inbound,
        [
            "stop",
            "START",
            " Quit ",
            "yes",
            "UNSUBSCRIBE",
            " unstop ",
            QUESTION
        ]
    );
}

#[tokio::test]
async fn stop_suppresses_an_sms_scheduled_before_it_when_its_time_comes() {
    let s = setup().await;
    let app = &s.app;
    let tenant = app.tenant().await;
    let phone = "+15557770002";

    let send_at = Utc::now() + chrono::Duration::milliseconds(2500);
    let (status, m) = app
        .post(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "sms", "to": phone, "body": "see you soon", "send_at": send_at.to_rfc3339()}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{m}");
    let m: MessageView = view(&m);
    assert_eq!(m.status, "scheduled");
    let id = m.id.as_str();
    let send_at: DateTime<Utc> = m.send_at.parse().unwrap();

    s.app.text(&s.twilio, &tenant, phone, "STOP").await;
    let cid = contact_id_texting(app, &tenant, "STOP").await;
    assert!(app.contact(&tenant, &cid).await.opted_out);

    let suppressed = app.wait_for_status(&tenant, id, "suppressed", WAIT).await;
    let events = &suppressed.events;
    let last = events.last().unwrap();
    assert_eq!(last.status, "suppressed", "{suppressed}");
    let at: DateTime<Utc> = last.at.parse().unwrap();
    assert!(
        at >= send_at,
        "suppressed at its time, not before: {at} < {send_at}"
    );
    assert!(
        !suppressed.event_statuses().contains(&"sending".to_owned()),
        "{suppressed}"
    );

    // A later SMS to another number goes out: the suppressed one had its chance.
    let witness = app.post_sms(&tenant, "+15557779999", "witness").await;
    app.wait_for_status(&tenant, &witness.id, "sent", WAIT)
        .await;
    assert_eq!(
        s.twilio.calls_to(phone),
        0,
        "Twilio never hears of the opted-out SMS"
    );
}

#[tokio::test]
async fn help_and_info_get_the_tenants_help_text_and_no_ai_reply() {
    let s = setup().await;
    let app = &s.app;
    let help = "Acme Dental: call 555-0100 or reply here. Reply STOP to opt out.";
    let tenant = app.tenant_with(json!({"help_text": help})).await;
    let phone = "+15557770003";

    s.app.text(&s.twilio, &tenant, phone, "HELP").await;
    let sms = s.twilio.wait_for_sms(phone, help, WAIT).await;
    assert_eq!(
        sms.form["From"],
        tenant.sms_from.clone().unwrap(),
        "the help text comes from the tenant's number"
    );
    let cid = contact_id_texting(app, &tenant, "HELP").await;
    let system = wait_for_reply(app, &tenant, &cid, "system", 1).await;
    assert_eq!(system.body, help);
    assert_eq!(system.to, phone);
    assert_eq!(system.contact_id.as_deref(), Some(cid.as_str()));

    s.app.text(&s.twilio, &tenant, phone, " info ").await;
    wait_for_reply(app, &tenant, &cid, "system", 2).await;

    // A question afterwards gets its AI reply: by then any reply to HELP would have come.
    s.app.text(&s.twilio, &tenant, phone, QUESTION).await;
    wait_for_reply(app, &tenant, &cid, "ai", 1).await;
    wait_for_idle_reply_queue(app).await;
    let requests = s.model.received();
    assert_eq!(
        requests.len(),
        1,
        "HELP and INFO never reach the model: {requests:?}"
    );
    assert_eq!(chat(&requests[0]).last().unwrap(), &turn("user", QUESTION));
    assert_eq!(s.twilio.bodies_to(phone), [help, help, ANSWER]);
    assert_eq!(outbound_by(app, &tenant, &cid, "ai").await.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// AI replies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_question_is_answered_by_the_primary_model_as_a_user_turn() {
    let s = setup().await;
    let app = &s.app;
    let prompt = "You are the assistant of Acme Dental. Keep answers short.";
    let tenant = app.tenant_with(json!({"system_prompt": prompt})).await;
    let phone = "+15557770004";

    s.app.text(&s.twilio, &tenant, phone, QUESTION).await;
    let sms = s.twilio.wait_for_sms(phone, ANSWER, WAIT).await;
    assert_eq!(sms.form["From"], tenant.sms_from.clone().unwrap());

    let requests = s.model.received();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["model"], PRIMARY);
    let turns = chat(&requests[0]);
    assert_eq!(
        turns,
        [turn("system", prompt), turn("user", QUESTION)],
        "the system prompt first, the text as the last user message"
    );
    assert!(
        !turns[0].1.contains(QUESTION),
        "the text is never spliced into the system prompt"
    );

    let cid = contact_id_texting(app, &tenant, QUESTION).await;
    let reply = wait_for_reply(app, &tenant, &cid, "ai", 1).await;
    assert_eq!(reply.body, ANSWER);
    assert_eq!(reply.direction, "outbound");
    assert_eq!(reply.channel, "sms");
    assert_eq!(reply.to, phone);
    assert_eq!(reply.contact_id.as_deref(), Some(cid.as_str()));
    assert_eq!(reply.model.as_deref(), Some(PRIMARY));
    assert_eq!(
        reply.usage,
        Some(json!({"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}))
    );

    let c = app.conversation(&tenant, &cid).await;
    assert_eq!(c.contact_id, cid.as_str());
    assert_eq!(c.mode, "ai");
    assert_eq!(
        c.entries(),
        [
            entry("inbound", "contact", QUESTION),
            entry("outbound", "ai", ANSWER)
        ]
    );
    assert_eq!(c.data[0].status, "received");
    assert_eq!(c.data[1].status, "sent");
    assert_eq!(c.data[1].id, reply.id);

    // A follow-up: the model sees the conversation so far, then the new text last.
    let follow_up = "And on Saturday?";
    let saturday = "Saturdays 10 AM to 2 PM.";
    s.model.script([ModelReply::Text(saturday.to_owned())]);
    s.app.text(&s.twilio, &tenant, phone, follow_up).await;
    s.twilio.wait_for_sms(phone, saturday, WAIT).await;
    let requests = s.model.received();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        chat(&requests[1]),
        [
            turn("system", prompt),
            turn("user", QUESTION),
            turn("assistant", ANSWER),
            turn("user", follow_up),
        ]
    );
    wait_for_reply(app, &tenant, &cid, "ai", 2).await;
    assert_eq!(
        app.conversation(&tenant, &cid).await.entries(),
        [
            entry("inbound", "contact", QUESTION),
            entry("outbound", "ai", ANSWER),
            entry("inbound", "contact", follow_up),
            entry("outbound", "ai", saturday),
        ]
    );
    assert!(
        s.fallback.received().is_empty(),
        "the fallback is not asked"
    );
}

#[tokio::test]
async fn a_primary_that_answers_on_its_retry_is_used() {
    let s = setup().await;
    let app = &s.app;
    let tenant = app.tenant().await;
    let phone = "+15557770005";
    s.model.script([ModelReply::Status(429)]);

    let reply = s.ask(&tenant, phone, ANSWER).await;
    assert_eq!(reply.model.as_deref(), Some(PRIMARY));
    assert_eq!(s.model.received().len(), 2, "one call and one retry");
    assert!(s.fallback.received().is_empty());
}

#[tokio::test]
async fn the_fallback_answers_when_the_primary_fails_twice() {
    let s = setup_with(
        ModelReply::Status(500),
        ModelReply::Text(FALLBACK_ANSWER.to_owned()),
        Duration::from_secs(3),
    )
    .await;
    let app = &s.app;
    let tenant = app.tenant().await;
    let phone = "+15557770006";

    let reply = s.ask(&tenant, phone, FALLBACK_ANSWER).await;
    assert_eq!(reply.body, FALLBACK_ANSWER);
    assert_eq!(reply.model.as_deref(), Some(FALLBACK));
    assert!(
        reply.usage.as_ref().is_some_and(Value::is_object),
        "{reply}"
    );
    assert_eq!(
        s.model.received().len(),
        2,
        "the primary is called and retried once"
    );
    let fallback = s.fallback.received();
    assert_eq!(fallback.len(), 1, "{fallback:?}");
    assert_eq!(fallback[0]["model"], FALLBACK);
    assert_eq!(chat(&fallback[0]).last().unwrap(), &turn("user", QUESTION));
    assert_eq!(s.twilio.bodies_to(phone), [FALLBACK_ANSWER]);
}

#[tokio::test]
async fn the_canned_reply_answers_when_both_models_fail() {
    let s = setup_with(
        ModelReply::Status(500),
        ModelReply::Status(503),
        Duration::from_secs(3),
    )
    .await;
    let app = &s.app;
    let canned = "Thanks! Someone from Acme Dental will text you back shortly.";
    let tenant = app.tenant_with(json!({"canned_reply": canned})).await;
    let phone = "+15557770007";

    let reply = s.ask(&tenant, phone, canned).await;
    assert_eq!(reply.body, canned);
    assert_eq!(reply.model, None, "{reply}");
    assert_eq!(reply.usage, None, "{reply}");
    assert_eq!(s.model.received().len(), 2, "the primary and its retry");
    assert_eq!(s.fallback.received().len(), 2, "the fallback and its retry");

    // A tenant without a canned reply of its own still gets an answer.
    let plain = app.tenant().await;
    let other = "+15557770008";
    s.app.text(&s.twilio, &plain, other, QUESTION).await;
    let cid = contact_id_texting(app, &plain, QUESTION).await;
    let reply = wait_for_reply(app, &plain, &cid, "ai", 1).await;
    assert_eq!(reply.model, None, "{reply}");
    let body = reply.body.as_str().unwrap();
    assert!(!body.trim().is_empty(), "{reply}");
    assert_eq!(s.twilio.bodies_to(other), [body]);
}

#[tokio::test]
async fn a_primary_that_hangs_past_the_timeout_is_left_for_the_fallback() {
    let s = setup_with(
        ModelReply::Hang(Duration::from_secs(30)),
        ModelReply::Text(FALLBACK_ANSWER.to_owned()),
        Duration::from_millis(400),
    )
    .await;
    let app = &s.app;
    let tenant = app.tenant().await;
    let phone = "+15557770009";

    // Had Herald waited for the primary, it would answer "late answer" after 30 s.
    let reply = s.ask(&tenant, phone, FALLBACK_ANSWER).await;
    assert_eq!(reply.model.as_deref(), Some(FALLBACK));
    assert!(
        !s.model.received().is_empty(),
        "the primary was asked first"
    );
    assert_eq!(s.fallback.received().len(), 1);
}

#[tokio::test]
async fn a_long_model_answer_is_cut_to_320_characters() {
    let long = "Thanks for asking! We are open from nine in the morning until five in the \
                evening on weekdays, and on Saturdays until noon. "
        .repeat(8);
    assert!(long.chars().count() > 900);
    let s = setup_with(
        ModelReply::Text(long.clone()),
        ModelReply::Text(FALLBACK_ANSWER.to_owned()),
        Duration::from_secs(3),
    )
    .await;
    let app = &s.app;
    let tenant = app.tenant().await;
    let phone = "+15557770010";

    s.app.text(&s.twilio, &tenant, phone, QUESTION).await;
    let cid = contact_id_texting(app, &tenant, QUESTION).await;
    let reply = wait_for_reply(app, &tenant, &cid, "ai", 1).await;
    let body = reply.body.as_str().unwrap();
    let chars = body.chars().count();
    assert!(
        (1..=320).contains(&chars),
        "the reply is {chars} characters: {body:?}"
    );
    assert!(
        body.starts_with("Thanks for asking! We are open"),
        "{body:?}"
    );
    assert_eq!(reply.model.as_deref(), Some(PRIMARY));
    let sent = s.twilio.bodies_to(phone);
    assert_eq!(sent, [body], "Twilio gets the cut reply");
    assert!(sent[0].chars().count() <= 320);
}

#[tokio::test]
async fn a_long_text_reaches_the_model_cut_to_1000_characters() {
    let s = setup().await;
    let app = &s.app;
    let tenant = app.tenant().await;
    let phone = "+15557770011";
    let long = format!("Question: {}", "please tell me more ".repeat(75));
    assert!(long.chars().count() > 1400 && long.chars().count() <= 1600);

    s.app.text(&s.twilio, &tenant, phone, &long).await;
    s.twilio.wait_for_sms(phone, ANSWER, WAIT).await;
    let requests = s.model.received();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let turns = chat(&requests[0]);
    let (role, content) = turns.last().unwrap();
    assert_eq!(role, "user");
    assert!(
        content.starts_with("Question: please tell me more"),
        "{content:?}"
    );
    let chars = content.chars().count();
    assert!(
        chars <= 1000,
        "the text handed to the model is {chars} characters, over 1000"
    );
    assert!(!turns[0].1.contains("please tell me more"));
}

// ---------------------------------------------------------------------------------------------
// A person takes over
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn one_taken_over_gets_no_ai_reply_and_is_answered_again_once_released() {
    let s = setup().await;
    let app = &s.app;
    let tenant = app.tenant().await;
    let phone = "+15557770012";
    let cid = create_contact(app, &tenant, phone).await;
    assert_eq!(app.conversation(&tenant, &cid).await.mode, "ai");

    let (status, mode) = app
        .post(
            &format!("/v1/conversations/{cid}/takeover"),
            &tenant.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{mode}");
    assert_eq!(mode, json!({"contact_id": cid, "mode": "human"}));
    assert_eq!(app.conversation(&tenant, &cid).await.mode, "human");
    assert_eq!(app.contact(&tenant, &cid).await.mode, "human");

    let asked = "Can I move my appointment?";
    s.app.text(&s.twilio, &tenant, phone, asked).await;
    let person = "Hi, this is Dana. Sure, what day works for you?";
    let (status, m) = app
        .post(
            &format!("/v1/conversations/{cid}/reply"),
            &tenant.api_key,
            &json!({"body": person}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{m}");
    let m: MessageView = view(&m);
    assert_eq!(m.author, "human");
    assert_eq!(m.direction, "outbound");
    assert_eq!(m.to, phone);
    assert_eq!(m.contact_id.as_deref(), Some(cid.as_str()));
    assert!(m.id.starts_with("msg_"), "{m}");
    let sms = s.twilio.wait_for_sms(phone, person, WAIT).await;
    assert_eq!(sms.form["From"], tenant.sms_from.clone().unwrap());
    app.wait_for_status(&tenant, &m.id, "sent", WAIT).await;

    // The person's reply went out after the text was stored, and no reply job is left.
    wait_for_idle_reply_queue(app).await;
    assert!(
        s.model.received().is_empty(),
        "no model is asked while a person has the conversation: {:?}",
        s.model.received()
    );
    assert!(outbound_by(app, &tenant, &cid, "ai").await.is_empty());
    assert_eq!(s.twilio.bodies_to(phone), [person]);

    let (status, mode) = app
        .post(
            &format!("/v1/conversations/{cid}/release"),
            &tenant.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{mode}");
    assert_eq!(mode, json!({"contact_id": cid, "mode": "ai"}));

    let next = "Thursday afternoon, please.";
    s.app.text(&s.twilio, &tenant, phone, next).await;
    let reply = wait_for_reply(app, &tenant, &cid, "ai", 1).await;
    assert_eq!(reply.body, ANSWER);
    let requests = s.model.received();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let turns = chat(&requests[0]);
    assert_eq!(turns[0].0, "system");
    assert_eq!(
        turns[1..],
        [
            turn("user", asked),
            turn("assistant", person),
            turn("user", next)
        ],
        "the model sees the conversation, the person's reply included"
    );

    let c = app.conversation(&tenant, &cid).await;
    assert_eq!(c.mode, "ai");
    assert_eq!(
        c.entries(),
        [
            entry("inbound", "contact", asked),
            entry("outbound", "human", person),
            entry("inbound", "contact", next),
            entry("outbound", "ai", ANSWER),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Inbound webhook
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_text_from_an_unknown_number_creates_a_contact_in_the_tenants_time_zone() {
    let s = setup().await;
    let app = &s.app;
    let tenant = app
        .tenant_with(json!({"timezone": "America/Chicago"}))
        .await;
    let phone = "+15557770013";
    assert_eq!(app.contact_rows().await, 0);

    s.app.text(&s.twilio, &tenant, phone, QUESTION).await;
    let inbound = inbound_with_body(app, &tenant, QUESTION).await;
    assert_eq!(inbound.len(), 1, "{inbound:?}");
    assert_eq!(inbound[0].channel, "sms");
    let cid = contact_id_texting(app, &tenant, QUESTION).await;
    assert!(cid.starts_with("ct_"), "{cid}");
    let c = app.contact(&tenant, &cid).await;
    assert_eq!(c.phone.as_deref(), Some(phone));
    assert_eq!(c.timezone, "America/Chicago", "{c}");
    assert!(!c.opted_out);
    assert_eq!(c.mode, "ai");
    assert_eq!(app.contact_rows().await, 1);
    let stored: Option<String> = sqlx::query_scalar("SELECT timezone FROM contacts WHERE id = $1")
        .bind(&cid)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("America/Chicago"));

    // The same number again is the same contact.
    s.app
        .text(&s.twilio, &tenant, phone, "Are you open on Sunday?")
        .await;
    assert_eq!(
        contact_id_texting(app, &tenant, "Are you open on Sunday?").await,
        cid
    );
    assert_eq!(app.contact_rows().await, 1);
}

#[tokio::test]
async fn a_retried_inbound_webhook_is_stored_and_answered_once() {
    let s = setup().await;
    let app = &s.app;
    let tenant = app.tenant().await;
    let phone = "+15557770014";
    let to = tenant.sms_from.clone().unwrap();
    let sid = "SM0123456789abcdef0123456789abcdef";
    let params = [
        ("MessageSid", sid),
        ("AccountSid", "ACtest"),
        ("From", phone),
        ("To", to.as_str()),
        ("Body", QUESTION),
        ("NumMedia", "0"),
    ];
    for attempt in 1..=2 {
        let (status, body) = app
            .twilio_post(INBOUND_PATH, &s.twilio.auth_token, &params)
            .await;
        assert_eq!(status, StatusCode::OK, "attempt {attempt}: {body}");
        assert!(body.contains("<Response/>"), "attempt {attempt}: {body}");
    }
    assert_eq!(inbound_with_body(app, &tenant, QUESTION).await.len(), 1);
    let cid = contact_id_texting(app, &tenant, QUESTION).await;
    wait_for_reply(app, &tenant, &cid, "ai", 1).await;

    // A later, different text gets its reply: by then a second reply to the retry would have come.
    let later = "Do you take walk-ins?";
    s.model
        .script([ModelReply::Text("Yes, walk-ins are welcome.".to_owned())]);
    s.app.text(&s.twilio, &tenant, phone, later).await;
    wait_for_reply(app, &tenant, &cid, "ai", 2).await;
    wait_for_idle_reply_queue(app).await;
    assert_eq!(s.model.received().len(), 2, "{:?}", s.model.received());
    assert_eq!(outbound_by(app, &tenant, &cid, "ai").await.len(), 2);
    assert_eq!(s.twilio.calls_to(phone), 2);
    let inbound: Vec<String> = app
        .conversation(&tenant, &cid)
        .await
        .entries()
        .into_iter()
        .filter(|(d, _, _)| d == "inbound")
        .map(|(_, _, b)| b)
        .collect();
    assert_eq!(inbound, [QUESTION, later]);
}

#[tokio::test]
async fn an_inbound_text_with_a_bad_signature_is_refused_and_changes_nothing() {
    let s = setup().await;
    let app = &s.app;
    let tenant = app.tenant().await;
    let phone = "+15557770015";
    let to = tenant.sms_from.clone().unwrap();
    let form = |body: &str| -> Vec<(String, String)> {
        [
            ("MessageSid", format!("SM{}", "ab".repeat(16))),
            ("AccountSid", "ACtest".to_owned()),
            ("From", phone.to_owned()),
            ("To", to.clone()),
            ("Body", body.to_owned()),
            ("NumMedia", "0".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    };
    app.assert_forged_twilio_posts_refused(
        INBOUND_PATH,
        &s.twilio.auth_token,
        &form("STOP"),
        &form("Hello there"),
        "/v1/inbound/twilio/status",
    )
    .await;
    assert_eq!(app.message_rows().await, 0, "no message stored");
    assert_eq!(app.contact_rows().await, 0, "no contact created");

    // The forged STOPs opted nobody out.
    let m = app.post_sms(&tenant, phone, "still reachable").await;
    app.wait_for_status(&tenant, &m.id, "sent", WAIT).await;
    assert_eq!(s.twilio.calls_to(phone), 1);
    assert!(s.model.received().is_empty());
}

#[tokio::test]
async fn one_of_another_tenant_is_not_found() {
    let s = setup().await;
    let app = &s.app;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let phone = "+15557770016";

    s.app.text(&s.twilio, &a, phone, QUESTION).await;
    let cid = contact_id_texting(app, &a, QUESTION).await;
    wait_for_reply(app, &a, &cid, "ai", 1).await;

    // Every route naming A's contact answers B as it answers a contact that never existed.
    let none = json!({});
    let reply = json!({"body": "not yours"});
    let rename = json!({"name": "Mallory"});
    let routes: [(&str, String, &Tenant, Option<&Value>); 7] = [
        ("GET", format!("/v1/conversations/{cid}"), &b, None),
        ("GET", format!("/v1/contacts/{cid}"), &b, None),
        (
            "POST",
            format!("/v1/conversations/{cid}/takeover"),
            &b,
            Some(&none),
        ),
        (
            "POST",
            format!("/v1/conversations/{cid}/release"),
            &b,
            Some(&none),
        ),
        (
            "POST",
            format!("/v1/conversations/{cid}/reply"),
            &b,
            Some(&reply),
        ),
        ("PATCH", format!("/v1/contacts/{cid}"), &b, Some(&rename)),
        (
            "GET",
            "/v1/conversations/ct_doesnotexist".to_owned(),
            &a,
            None,
        ),
    ];
    for (method, path, tenant, body) in routes {
        let (status, answer) = match (method, body) {
            ("PATCH", Some(body)) => app.patch(&path, &tenant.api_key, body).await,
            (_, Some(body)) => app.post(&path, &tenant.api_key, body).await,
            (_, None) => app.get(&path, &tenant.api_key).await,
        };
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
        assert_eq!(api_error(&answer).code, "not_found", "{method} {path}");
    }

    // A's conversation is as it was.
    let c = app.conversation(&a, &cid).await;
    assert_eq!(c.mode, "ai");
    assert_eq!(
        c.entries(),
        [
            entry("inbound", "contact", QUESTION),
            entry("outbound", "ai", ANSWER)
        ]
    );
    assert_eq!(app.contact(&a, &cid).await.name, None);

    // The same number texting B is B's own contact, and its STOP at B leaves A alone.
    s.app.text(&s.twilio, &b, phone, "STOP").await;
    let b_cid = contact_id_texting(app, &b, "STOP").await;
    assert_ne!(b_cid, cid);
    assert!(app.contact(&b, &b_cid).await.opted_out);
    assert!(!app.contact(&a, &cid).await.opted_out);
    let c = app.conversation(&b, &b_cid).await;
    assert_eq!(c.entries(), [entry("inbound", "contact", "STOP")]);
    let m = app.post_sms(&a, phone, "from A").await;
    app.wait_for_status(&a, &m.id, "sent", WAIT).await;
}

// ---------------------------------------------------------------------------------------------
// Contacts API
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_contacts_api_creates_reads_and_patches_contacts() {
    let app = TestApp::start().await;
    let tenant = app
        .tenant_with(json!({"timezone": "America/Chicago"}))
        .await;

    let (status, ana) = app
        .post(
            "/v1/contacts",
            &tenant.api_key,
            &json!({"phone": "+15551112222", "name": "Ana"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ana}");
    let created: ContactView = view(&ana);
    let id = created.id.clone();
    assert!(id.starts_with("ct_"), "{id}");
    assert_eq!(created.phone.as_deref(), Some("+15551112222"));
    assert_eq!(created.name.as_deref(), Some("Ana"));
    assert_eq!(
        created.timezone, "America/Chicago",
        "defaults to the tenant's"
    );
    assert!(!created.opted_out);
    // The whole body reads back the same, field for field.
    assert_eq!(contact_json(&app, &tenant, &id).await, ana);

    let (status, paris) = app
        .post(
            "/v1/contacts",
            &tenant.api_key,
            &json!({"phone": "+33612345678", "timezone": "Europe/Paris", "email": "luc@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{paris}");
    let paris: ContactView = view(&paris);
    assert_eq!(paris.timezone, "Europe/Paris");
    assert_eq!(paris.email.as_deref(), Some("luc@example.com"));
    assert_eq!(paris.name, None);
    let rows = app.contact_rows().await;
    assert_eq!(rows, 2);

    let (status, dup) = app
        .post(
            "/v1/contacts",
            &tenant.api_key,
            &json!({"phone": "+15551112222", "name": "Someone else"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{dup}");
    assert_eq!(api_error(&dup).code, "contact_exists", "{dup}");

    for (body, field) in [
        (json!({"phone": "555-1234"}), "phone"),
        (
            json!({"phone": "+15553334444", "timezone": "Mars/Olympus"}),
            "timezone",
        ),
    ] {
        let (status, err) = app.post("/v1/contacts", &tenant.api_key, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {err}");
        assert_eq!(
            api_error(&err).field.as_deref(),
            Some(field),
            "{body}: {err}"
        );
    }
    assert_eq!(
        app.contact_rows().await,
        rows,
        "a rejected create adds nothing"
    );

    let (status, missing) = app
        .get("/v1/contacts/ct_doesnotexist", &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");

    let path = format!("/v1/contacts/{id}");
    let patch = |body: Value| {
        let (app, path, key) = (&app, &path, &tenant.api_key);
        async move { app.patch(path, key, &body).await }
    };
    let (status, changed) = patch(json!({"name": "Ana María", "timezone": "Asia/Tokyo"})).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let patched: ContactView = view(&changed);
    assert_eq!(patched.name.as_deref(), Some("Ana María"));
    assert_eq!(patched.timezone, "Asia/Tokyo");
    assert_eq!(
        patched.phone.as_deref(),
        Some("+15551112222"),
        "unnamed fields stay"
    );
    assert_eq!(contact_json(&app, &tenant, &id).await, changed);

    let (status, cleared) = patch(json!({"name": null})).await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    let unnamed: ContactView = view(&cleared);
    assert_eq!(unnamed.name, None, "{cleared}");
    assert_eq!(unnamed.timezone, "Asia/Tokyo");
    assert_eq!(app.contact(&tenant, &id).await.name, None);

    let (status, err) = patch(json!({"timezone": "Nowhere/Special"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(api_error(&err).field.as_deref(), Some("timezone"), "{err}");
    let (status, err) = patch(json!({"phone": "+33612345678"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(api_error(&err).code, "contact_exists", "{err}");
    assert_eq!(
        contact_json(&app, &tenant, &id).await,
        cleared,
        "a rejected patch changes nothing"
    );
}

#[tokio::test]
async fn an_ai_reply_job_lost_with_redis_data_is_queued_again() {
    let twilio = TwilioMock::start().await;
    let model = ModelMock::start(PRIMARY, ModelReply::Text(ANSWER.to_owned())).await;
    let fallback = ModelMock::start(FALLBACK, ModelReply::Text(FALLBACK_ANSWER.to_owned())).await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    config.llm = Some(model.endpoint());
    config.llm_fallback = Some(fallback.endpoint());
    // No worker yet: the reply job waits in Redis.
    let mut app = TestApp::start_with(config).await;
    app.start_scheduler();
    let s = Setup {
        app,
        twilio,
        model,
        fallback,
    };
    let tenant = s.app.tenant_with(json!({})).await;
    let marker = format!("{{{}:ai-replies}}:reconciled", s.app.config.queue_prefix);
    let mut conn = s.app.redis.clone();
    eventually(WAIT, "the scheduler reconciles the queues", || {
        let (mut conn, marker) = (conn.clone(), marker.clone());
        async move {
            redis::cmd("GET")
                .arg(&marker)
                .query_async::<Option<String>>(&mut conn)
                .await
                .ok()
                .flatten()
        }
    })
    .await;

    let from = "+15557000001";
    s.app.text(&s.twilio, &tenant, from, QUESTION).await;
    let inbound: String =
        sqlx::query_scalar("SELECT id FROM messages WHERE direction = 'inbound' AND needs_reply")
            .fetch_one(&s.app.db)
            .await
            .unwrap();
    // The reply outbox has moved past it, so only the reconcile can bring its job back.
    s.app
        .wait_for_outbox_past("ai-replies", &inbound, WAIT)
        .await;
    // Redis loses the queue's data.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{{}:ai-replies}}*", s.app.config.queue_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.iter().any(|k| k.ends_with(":data")), "{keys:?}");
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();

    let mut app = s.app;
    app.start_worker();
    let s = Setup { app, ..s };
    s.twilio.wait_for_sms(from, ANSWER, WAIT).await;
    assert_eq!(s.twilio.sent_to(from).len(), 1, "one reply");
    let still_waiting: bool = sqlx::query_scalar("SELECT needs_reply FROM messages WHERE id = $1")
        .bind(&inbound)
        .fetch_one(&s.app.db)
        .await
        .unwrap();
    assert!(!still_waiting, "the text is marked answered");
}
