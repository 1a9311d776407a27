//! The `/ops` dashboard, driven in a real headless Chromium: logging in, seeing a dead letter,
//! replaying it and watching it leave the list while its message is sent; and the doors that
//! must stay shut (no session, no CSRF token).

use std::time::Duration;

use herald_tests::{
    Tenant, TestApp,
    app::{no_redirects, test_config},
    browser::Browser,
    eventually,
    providers::{Reply, TwilioMock, WebhookReceiver},
    views::{DeadLetterView, Page},
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

/// An app whose first SMS is rejected for good by Twilio, so it has one dead letter; returns
/// the dead letter's and the message's ids.
async fn app_with_a_dead_letter() -> (TestApp, TwilioMock, Tenant, String, String) {
    let twilio = TwilioMock::start().await;
    // A 503 first (a failed job, retried), then Twilio refuses the number for good.
    twilio.script([
        Reply::TwilioError {
            status: 503,
            code: 20503,
            message: "Service Unavailable".into(),
        },
        Reply::TwilioError {
            status: 400,
            code: 21214,
            message:
                "Permission to send an SMS has not been enabled for the region of +15550001111"
                    .into(),
        },
    ]);
    let mut config = test_config().await;
    twilio.configure(&mut config);
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    let tenant = app.tenant().await;
    let m = app
        .post_sms(&tenant, "+15550001111", "Your order is ready for pickup")
        .await;
    let message_id = m.id.clone();
    app.wait_for_status(&tenant, &message_id, "failed", Duration::from_secs(15))
        .await;
    // The dead letter is written right after the message is marked failed.
    let dead_letter = eventually(
        Duration::from_secs(10),
        "the dead letter is written",
        || async {
            let page: Page<DeadLetterView> = app.get_as("/v1/dead-letters", &app.ops_token).await;
            page.data.first().map(|d| d.id.clone())
        },
    )
    .await;
    (app, twilio, tenant, dead_letter, message_id)
}

/// The CSRF token in a page's forms.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn ops_log_in_see_a_dead_letter_replay_it_and_its_message_is_sent() {
    let (app, twilio, tenant, dead_letter, message_id) = app_with_a_dead_letter().await;
    let browser = Browser::start().await;

    // Without a session the dashboard sends the visitor to log in.
    browser.goto(&app.url("/ops/dead-letters")).await;
    browser.wait_for_url("/ops/login").await;
    browser
        .type_into("input[name=token]", "not-the-token")
        .await;
    browser.click("#login").await;
    browser.wait_for_source("That is not the ops token").await;

    browser.type_into("input[name=token]", &app.ops_token).await;
    browser.click("#login").await;
    browser.wait_for_url("/ops").await;
    let queues = browser.text("#queues").await;
    assert!(
        queues.contains("deliveries") && queues.contains("ai-replies"),
        "{queues}"
    );
    // The last hour per queue: the attempt that failed and the job that completed are in
    // the deliveries chart.
    let chart = browser.text(".chart[data-queue=deliveries] .legend").await;
    assert!(
        chart.contains("1 completed") && chart.contains("1 failed"),
        "{chart}"
    );
    browser
        .find(".chart[data-queue=deliveries] rect.failed")
        .await;
    browser
        .find(".chart[data-queue=deliveries] rect.done")
        .await;
    browser.find(".chart[data-queue=ai-replies]").await;
    assert!(
        !browser.scrolls_sideways().await,
        "the queues page fits 1280 px"
    );
    browser.save_screenshot("dashboard-queues").await;
    let cookie = browser
        .cookies()
        .await
        .into_iter()
        .find(|c| c["name"] == "herald_ops")
        .expect("the session cookie");
    assert_eq!(cookie["httpOnly"], Value::Bool(true));
    assert_eq!(cookie["sameSite"], "Strict");

    browser.goto(&app.url("/ops/dead-letters")).await;
    assert!(
        browser.text("#dead-letters").await.contains(&dead_letter),
        "the dead letter is listed"
    );
    assert!(
        !browser.scrolls_sideways().await,
        "the dead-letter table fits a 1280 px window"
    );
    browser
        .click(&format!("a[href=\"/ops/dead-letters/{dead_letter}\"]"))
        .await;
    browser
        .wait_for_url(&format!("/ops/dead-letters/{dead_letter}"))
        .await;
    let detail = browser.wait_for_source("21214").await; // its error history
    assert!(detail.contains(&message_id));
    assert!(
        !browser.scrolls_sideways().await,
        "the dead letter's page fits a 1280 px window"
    );
    browser.save_screenshot("dashboard-dead-letter").await;

    browser.click("#replay").await;
    let notice = browser.text("#notice").await;
    assert!(notice.contains("Replayed"), "{notice}");
    assert!(
        !browser.text("#dead-letters").await.contains(&dead_letter),
        "a replayed dead letter leaves the list"
    );

    app.wait_for_status(&tenant, &message_id, "sent", Duration::from_secs(15))
        .await;
    browser
        .goto(&app.url(&format!("/ops/messages?id={message_id}")))
        .await;
    let status = eventually(
        Duration::from_secs(5),
        "the dashboard shows it sent",
        || async {
            let s = browser.text("#status").await;
            (s == "sent").then_some(s)
        },
    )
    .await;
    assert_eq!(status, "sent");
    assert!(
        browser
            .text("#events")
            .await
            .contains("replayed from dead letter")
    );
    assert_eq!(
        twilio.received().len(),
        3,
        "unavailable once, rejected once, then sent once"
    );
    browser.save_screenshot("dashboard-message").await;
}

#[tokio::test]
async fn every_page_refuses_a_visitor_without_a_session() {
    let (app, _twilio, _tenant, dead_letter, _) = app_with_a_dead_letter().await;
    let http = no_redirects();
    for page in [
        "/ops",
        "/ops/dead-letters",
        &format!("/ops/dead-letters/{dead_letter}"),
        "/ops/messages",
        "/ops/endpoints",
        "/ops/endpoints/ep_00000000000000000000000000",
        "/ops/inbox",
        "/ops/audit",
    ] {
        let r = http.get(app.url(page)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{page}");
        assert_eq!(r.headers()[header::LOCATION], "/ops/login", "{page}");
    }
    // A forged cookie is no session either.
    let r = http
        .get(app.url("/ops"))
        .header(header::COOKIE, "herald_ops=9999999999.abc.forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = http
        .post(app.url(&format!("/ops/dead-letters/{dead_letter}/replay")))
        .form(&[("csrf", "whatever")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let d = app.dead_letter(&app.ops_token, &dead_letter).await;
    assert_eq!(d.replayed_at, None, "nothing was replayed");
    let r = http
        .post(app.url("/ops/events/evt_00000000000000000000000000/redeliver"))
        .form(&[("csrf", "whatever")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_action_without_the_csrf_token_is_refused() {
    let (app, _twilio, _tenant, dead_letter, _) = app_with_a_dead_letter().await;
    let http = no_redirects();
    let cookie = app.ops_login(&http).await;
    let action = app.url(&format!("/ops/dead-letters/{dead_letter}/replay"));
    for form in [vec![], vec![("csrf", "forged-token")]] {
        let r = http
            .post(&action)
            .header(header::COOKIE, &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "csrf {form:?}");
        assert!(r.text().await.unwrap().contains("CSRF"));
    }
    let d = app.dead_letter(&app.ops_token, &dead_letter).await;
    assert_eq!(d.replayed_at, None, "a refused action changes nothing");

    // The token from the page itself works.
    let page = http
        .get(app.url(&format!("/ops/dead-letters/{dead_letter}")))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = http
        .post(&action)
        .header(header::COOKIE, &cookie)
        .form(&[("csrf", csrf_of(&page))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let d = app.dead_letter(&app.ops_token, &dead_letter).await;
    assert!(d.replayed_at.is_some(), "{d}");
}

#[tokio::test]
async fn a_bulk_replay_asks_for_confirmation_before_it_replays() {
    let (app, _twilio, _tenant, dead_letter, _) = app_with_a_dead_letter().await;
    let http = no_redirects();
    let cookie = app.ops_login(&http).await;
    let list = http
        .get(app.url("/ops/dead-letters?reason=rejected"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&list);
    let r = http
        .post(app.url("/ops/dead-letters/replay"))
        .header(header::COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str()), ("reason", "rejected")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let confirm = r.text().await.unwrap();
    assert!(
        confirm.contains("Replay dead letters?") && confirm.contains("id=\"count\">1<"),
        "{confirm}"
    );
    let d = app.dead_letter(&app.ops_token, &dead_letter).await;
    assert_eq!(d.replayed_at, None, "asking changes nothing");

    let r = http
        .post(app.url("/ops/dead-letters/replay"))
        .header(header::COOKIE, &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("reason", "rejected"),
            ("confirm", "yes"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let d = app.dead_letter(&app.ops_token, &dead_letter).await;
    assert!(d.replayed_at.is_some(), "confirmed, it replays: {d}");
}

/// Where an event stands for its endpoints: `pending` once it is set to go again.
async fn delivery_statuses(app: &TestApp, event_id: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT status FROM event_deliveries WHERE event_id = $1")
        .bind(event_id)
        .fetch_all(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn ops_see_endpoints_and_their_attempts_redeliver_an_event_and_read_an_inbox() {
    const WAIT: Duration = Duration::from_secs(20);
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    config.event_retry_schedule = vec![Duration::from_millis(200)];
    let mut app = TestApp::start_with_twilio(config, &twilio).await;
    app.start_scheduler();
    let receiver = WebhookReceiver::start().await;
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
    let texted = "<script>alert('hi')</script> & is anyone there?";
    let contact = app
        .waiting_conversation(&twilio, &a, "+15550180002", texted)
        .await;

    let browser = Browser::start().await;
    browser.goto(&app.url("/ops/login")).await;
    browser.type_into("input[name=token]", &app.ops_token).await;
    browser.click("#login").await;
    browser.wait_for_url("/ops").await;

    // Every tenant's endpoints, from the navigation; then one tenant's.
    browser.click("nav a[href=\"/ops/endpoints\"]").await;
    browser.wait_for_url("/ops/endpoints").await;
    let all = browser.text("#endpoints").await;
    for part in [&ep_a, &ep_b, &a.id, &b.id, &receiver.url("/a")] {
        assert!(all.contains(part.as_str()), "{part} in {all}");
    }
    assert!(
        all.contains("message.delivered") && all.contains("enabled"),
        "{all}"
    );
    browser.type_into("input[name=tenant_id]", &b.id).await;
    browser.click("form.filters button").await;
    browser
        .wait_for_url(&format!("/ops/endpoints?tenant_id={}", b.id))
        .await;
    let only_b = browser.text("#endpoints").await;
    assert!(
        only_b.contains(&ep_b) && !only_b.contains(&ep_a),
        "{only_b}"
    );

    // One endpoint's attempts, newest first, each with a Redeliver button.
    let attempt = format!("#attempts tr[data-event=\"{evt}\"]");
    // The attempt is recorded just after the receiver answered.
    eventually(WAIT, "the attempt is shown", || async {
        browser
            .goto(&app.url(&format!("/ops/endpoints/{ep_a}")))
            .await;
        let html = browser.source().await;
        html.contains(&format!("data-event=\"{evt}\""))
            .then_some(())
    })
    .await;
    let cells = browser.text(&attempt).await;
    for part in ["message.delivered", "succeeded", "200", " ms", "Redeliver"] {
        assert!(cells.contains(part), "{part} in {cells}");
    }
    assert!(
        !browser.scrolls_sideways().await,
        "the endpoint's page fits a 1280 px window"
    );
    browser.save_screenshot("dashboard-endpoint").await;

    // A forged form changes nothing; the page's own button sends the event again.
    let http = no_redirects();
    let cookie = app.ops_login(&http).await;
    let r = http
        .post(app.url(&format!("/ops/events/{evt}/redeliver")))
        .header(header::COOKIE, &cookie)
        .form(&[("csrf", "forged-token"), ("endpoint_id", ep_a.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(delivery_statuses(&app, &evt).await, ["delivered"]);
    browser.click(&format!("{attempt} button")).await;
    browser
        .wait_for_url(&format!(
            "/ops/endpoints/{ep_a}?notice=redelivered&id={evt}&n=1"
        ))
        .await;
    let notice = browser.text("#notice").await;
    assert!(notice.contains(&format!("Redelivered {evt}")), "{notice}");
    eventually(WAIT, "the receiver hears the event again", || async {
        let ids = receiver.webhook_ids("/a");
        (ids.iter().filter(|i| **i == evt).count() == 2).then_some(())
    })
    .await;

    // A tenant's inbox: the conversation that waits, its text shown as text.
    browser.click("nav a[href=\"/ops/inbox\"]").await;
    browser.wait_for_url("/ops/inbox").await;
    browser.type_into("input[name=tenant_id]", &a.id).await;
    browser.click("form.filters button").await;
    let conversation = format!("#inbox tr[data-contact=\"{contact}\"]");
    let cells = browser.text(&conversation).await;
    for part in ["Ann Example", "+15550180002", "human", "yes", texted] {
        assert!(cells.contains(part), "{part} in {cells}");
    }
    assert!(
        !browser.scrolls_sideways().await,
        "the inbox fits a 1280 px window"
    );
    browser.save_screenshot("dashboard-inbox").await;
    let html = http
        .get(app.url(&format!("/ops/inbox?tenant_id={}", a.id)))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("&lt;script&gt;alert(&#39;hi&#39;)&lt;/script&gt; &amp; is anyone")
            || html.contains("&lt;script&gt;alert('hi')&lt;/script&gt; &amp; is anyone"),
        "the text is escaped: {html}"
    );
    assert!(!html.contains("<script>"), "{html}");
    let ai_only = http
        .get(app.url(&format!("/ops/inbox?tenant_id={}&mode=ai", a.id)))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ai_only.contains("No conversations.") && !ai_only.contains(&contact));

    // Its last entry leads to the message lookup.
    browser.click(&format!("{conversation} td.last a")).await;
    eventually(WAIT, "the message lookup opens", || async {
        let url = browser.current_url().await;
        url.contains("/ops/messages?id=msg_").then_some(())
    })
    .await;
    let message = browser.text("#message").await;
    assert!(message.contains(texted), "{message}");
    app.stop().await;
}

#[tokio::test]
async fn ops_read_the_audit_log_filtered_by_tenant_with_its_detail_escaped() {
    let app = TestApp::start().await;
    let a = app.tenant().await;
    let named = "<script>alert('x')</script> & Co";
    let b = app.tenant_with(json!({ "name": named })).await;
    let (status, key) = app
        .post(
            &format!("/v1/admin/tenants/{}/keys", a.id),
            &app.ops_token,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let prefix = key["key_prefix"].as_str().unwrap().to_owned();

    // From the navigation.
    let browser = Browser::start().await;
    browser.goto(&app.url("/ops/login")).await;
    browser.type_into("input[name=token]", &app.ops_token).await;
    browser.click("#login").await;
    browser.wait_for_url("/ops").await;
    browser.click("nav a[href=\"/ops/audit\"]").await;
    browser.wait_for_url("/ops/audit").await;
    // Newest first: this very login, then the key.
    let login = browser.text("#audit tbody tr:nth-child(1)").await;
    assert!(
        login.contains("ops.login") && login.contains("dashboard"),
        "{login}"
    );
    let created = browser.text("#audit tbody tr:nth-child(2)").await;
    for part in ["key.created", prefix.as_str(), a.id.as_str(), "ops", "{}"] {
        assert!(created.contains(part), "{part} in {created}");
    }
    let all = browser.text("#audit").await;
    assert!(
        all.contains(&b.id) && all.contains("tenant.created") && all.contains(named),
        "every tenant's entries, the name shown as text: {all}"
    );

    // One tenant's entries only.
    browser.type_into("input[name=tenant_id]", &a.id).await;
    browser.click("form.filters button").await;
    browser
        .wait_for_url(&format!(
            "/ops/audit?tenant_id={}&action=&actor=&since=",
            a.id
        ))
        .await;
    let only_a = browser.text("#audit").await;
    assert!(
        only_a.contains(&prefix) && only_a.contains(&a.id) && !only_a.contains(&b.id),
        "{only_a}"
    );
    browser.save_screenshot("dashboard-audit").await;

    let http = no_redirects();
    let cookie = app.ops_login(&http).await;
    let get = |path: String| {
        let (http, cookie, app) = (&http, &cookie, &app);
        async move {
            http.get(app.url(&path))
                .header(header::COOKIE, cookie)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let html = get(format!("/ops/audit?tenant_id={}", b.id)).await;
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co")
            || html.contains("&lt;script&gt;alert('x')&lt;/script&gt; &amp; Co"),
        "the detail is escaped: {html}"
    );
    assert!(
        !html.contains("<script>") && !html.contains(&prefix),
        "{html}"
    );
    let keys_only = get(format!(
        "/ops/audit?action=key.created&actor=ops&tenant_id={}",
        a.id
    ))
    .await;
    assert!(
        keys_only.contains(&prefix) && !keys_only.contains("tenant.created</span>"),
        "{keys_only}"
    );
    let mistaken = get("/ops/audit?tenant_id=acme&since=yesterday".to_owned()).await;
    assert!(
        mistaken.contains("That is not a tenant id")
            && mistaken.contains("RFC 3339")
            && mistaken.contains("No audit entries."),
        "{mistaken}"
    );
    app.stop().await;
}
