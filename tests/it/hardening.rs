//! What an outside review found: SSRF through IPv6 forms of private addresses, the AI prompt
//! quoting messages the contact never saw, an outbox that could skip a late commit, the
//! dashboard's sessions and headers, and the edges (overflowing offsets, readiness text,
//! duplicate headers, metrics before the first scrape).

use std::time::Duration;

use herald_core::{
    config::Secret,
    domain::{Channel, id_floor},
    queue::now_ms,
    store::messages::{self, NewMessageRow},
};
use herald_tests::{
    TestApp,
    app::{no_redirects, test_config},
    eventually,
    providers::{ModelMock, ModelReply, TwilioMock},
    proxy::Proxy,
    redis_url,
    views::{ContactView, MessageView, api_error, view},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// SSRF through IPv6 translation ranges
// ---------------------------------------------------------------------------------------

async fn app_refusing_private_targets() -> TestApp {
    let mut config = test_config().await;
    config.webhook_allow_private = false;
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    app
}

#[tokio::test]
async fn webhook_targets_that_embed_or_translate_to_private_addresses_are_refused() {
    let app = app_refusing_private_targets().await;
    let tenant = app.tenant().await;
    for host in [
        "[::127.0.0.1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:169.254.169.254]",
        "[64:ff9b::7f00:1]",
        "[64:ff9b::a9fe:a9fe]",
        "[64:ff9b::a00:1]",
        "[64:ff9b:1::808:808]",
        "[2002:7f00:1::1]",
        "[2002:a9fe:a9fe::1]",
        "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
        "[fec0::1]",
        "[fd12:3456::1]",
        "[fe80::1]",
        "[ff02::1]",
        "[::]",
        "[::1]",
    ] {
        let (status, answer) = app
            .post(
                "/v1/messages",
                &tenant.api_key,
                &json!({"channel": "webhook", "to": format!("https://{host}/hook"), "body": {}}),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{host} was accepted: {answer}"
        );
        assert_eq!(api_error(&answer).field.as_deref(), Some("to"), "{answer}");
    }
    for public in [
        "[2606:4700:4700::1111]",
        "[64:ff9b::808:808]",
        "[2002:808:808::1]",
    ] {
        let (status, answer) = app
            .post(
                "/v1/messages",
                &tenant.api_key,
                &json!({"channel": "webhook", "to": format!("https://{public}/hook"), "body": {}}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{public}: {answer}");
    }
    assert_eq!(app.message_rows().await, 3, "only the public targets");
}

/// Maps `name` to `address` in /etc/hosts for the life of the value, as a DNS record would.
struct HostsEntry {
    line: String,
}

impl HostsEntry {
    fn add(address: &str, name: &str) -> Self {
        use std::io::Write;
        let line = format!("{address} {name}");
        let mut hosts = std::fs::OpenOptions::new()
            .append(true)
            .open("/etc/hosts")
            .expect("this test maps a name in /etc/hosts: run it as root (scripts/test does)");
        writeln!(hosts, "{line}").unwrap();
        Self { line }
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
            let kept: String = hosts
                .lines()
                .filter(|l| *l != self.line)
                .map(|l| format!("{l}\n"))
                .collect();
            let _ = std::fs::write("/etc/hosts", kept);
        }
    }
}

#[tokio::test]
async fn a_name_resolving_to_a_nat64_form_of_loopback_is_refused_when_the_worker_resolves_it() {
    let name = format!("{}.herald-test.example", herald_tests::unique("nat64-"));
    let _entry = HostsEntry::add("64:ff9b::7f00:1", &name);
    let app = app_refusing_private_targets().await;
    let tenant = app.tenant().await;
    let (status, m) = app
        .post(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "webhook", "to": format!("https://{name}/hook"), "body": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "a public-looking name: {m}");
    let m: MessageView = view(&m);
    let m = app
        .wait_for_status(&tenant, &m.id, "failed", Duration::from_secs(20))
        .await;
    let error = m.last_error.as_deref().unwrap();
    assert!(error.contains("private address"), "{error}");
}

// ---------------------------------------------------------------------------------------
// The AI prompt shows only what the contact has seen
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_model_sees_only_texts_the_contact_sent_and_messages_that_went_out() {
    let twilio = TwilioMock::start().await;
    let model = ModelMock::start("gpt-test", ModelReply::Text("Sure.".into())).await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    config.llm = Some(model.endpoint());
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    let tenant = app.tenant().await;
    let phone = "+15559100001";
    let contact: ContactView = app
        .post_as(
            "/v1/contacts",
            &tenant.api_key,
            &json!({"phone": phone, "name": "Ana"}),
            StatusCode::CREATED,
        )
        .await;
    let contact = contact.id;
    // Seen: a text that went out.
    let sent = app
        .post_sms(&tenant, phone, "SEEN: your cleaning is on Tuesday")
        .await;
    app.wait_for_status(&tenant, &sent.id, "sent", Duration::from_secs(10))
        .await;
    // Not seen: one scheduled for tomorrow, and one canceled.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let (status, _) = app
        .post(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "sms", "to": phone, "body": "UNSEEN: scheduled for tomorrow", "send_at": tomorrow}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let later: MessageView = app
        .post_as(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "sms", "to": phone, "body": "UNSEEN: canceled", "send_at": tomorrow}),
            StatusCode::ACCEPTED,
        )
        .await;
    let (status, _) = app.cancel(&tenant, later.id.as_str()).await;
    assert_eq!(status, StatusCode::OK);

    app.text(&twilio, &tenant, phone, "When is my appointment?")
        .await;
    twilio
        .wait_for_sms(phone, "Sure.", Duration::from_secs(20))
        .await;
    let asked = model.received();
    assert_eq!(asked.len(), 1);
    let prompt = asked[0]["messages"].to_string();
    assert!(prompt.contains("SEEN: your cleaning"), "{prompt}");
    assert!(prompt.contains("When is my appointment?"), "{prompt}");
    assert!(
        !prompt.contains("UNSEEN"),
        "the model saw what the contact never did: {prompt}"
    );
    let _ = contact;
}

// ---------------------------------------------------------------------------------------
// The outbox never skips a message
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_message_committed_long_after_its_id_was_minted_is_still_queued_by_the_outbox() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    app.start_scheduler();
    let tenant = app.tenant().await;

    // An id minted by a host whose clock is a minute behind, in a transaction that stays open
    // past the outbox's grace, and no push of its job (as when Redis refused the API's push).
    let floor = id_floor("msg", now_ms() - 60_000);
    let id = format!("{}7Q3Z", &floor[..floor.len() - 4]);
    let mut row = NewMessageRow::outbound(
        &tenant.id,
        Channel::Sms,
        "+15559200001",
        tenant.sms_from.as_deref(),
        "committed late",
        "api",
    );
    row.id = id.clone();
    let mut tx = app.db.begin().await.unwrap();
    messages::insert(&mut *tx, &row).await.unwrap();
    let opened = chrono::Utc::now();

    // Meanwhile other messages come and go, and the sweep keeps running.
    let other = app.post_sms(&tenant, "+15559200002", "meanwhile").await;
    app.wait_for_status(&tenant, &other.id, "sent", Duration::from_secs(10))
        .await;
    // The long transaction is the scenario itself: it stays open until the sweep has stepped
    // again more than twice the grace (3 s) after it began.
    let past_grace = opened + chrono::Duration::seconds(6);
    eventually(
        Duration::from_secs(30),
        "the outbox sweep steps on past the grace while the transaction is open",
        || async {
            let stepped: Option<bool> = sqlx::query_scalar(
                "SELECT next_at > $1 FROM outbox_watermarks WHERE name = 'deliveries'",
            )
            .bind(past_grace)
            .fetch_optional(&app.db)
            .await
            .unwrap()
            .flatten();
            stepped.filter(|s| *s)
        },
    )
    .await;
    tx.commit().await.unwrap();

    app.wait_for_status(&tenant, &id, "sent", Duration::from_secs(30))
        .await;
    assert_eq!(twilio.calls_to("+15559200001"), 1);
}

// ---------------------------------------------------------------------------------------
// The dashboard
// ---------------------------------------------------------------------------------------

async fn ops_page(
    app: &TestApp,
    http: &reqwest::Client,
    path: &str,
    cookie: &str,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let r = http
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.text().await.unwrap())
}

#[tokio::test]
async fn logging_out_ends_the_session_for_every_copy_of_its_cookie() {
    let app = TestApp::start().await;
    let http = no_redirects();
    let cookie = app.ops_login(&http).await;
    let (status, _, page) = ops_page(&app, &http, "/ops", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries a CSRF token")
        .to_owned();
    let copied = cookie.clone();
    let r = http
        .post(app.url("/ops/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (status, headers, _) = ops_page(&app, &http, "/ops", &copied).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "a copied cookie still worked"
    );
    assert_eq!(headers["location"], "/ops/login");
}

#[tokio::test]
async fn every_dashboard_answer_forbids_scripts_framing_sniffing_and_caching() {
    let app = TestApp::start().await;
    let http = no_redirects();
    let cookie = app.ops_login(&http).await;
    for (path, cookie) in [
        ("/ops/login", ""),
        ("/ops", ""),
        ("/ops", cookie.as_str()),
        ("/ops/dead-letters", cookie.as_str()),
        ("/ops/messages?id=msg_x", cookie.as_str()),
        ("/ops/dead-letters/dl_nothing", cookie.as_str()),
    ] {
        let (status, headers, body) = ops_page(&app, &http, path, cookie).await;
        let csp = headers
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path} ({status}) has no CSP"))
            .to_str()
            .unwrap();
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["cache-control"], "no-store", "{path}");
        assert!(!body.contains("<script"), "{path}");
        assert!(!body.contains("<style"), "{path}: inline style");
    }
    let r = http.get(app.url("/assets/ops.css")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
}

#[tokio::test]
async fn notices_are_the_dashboards_own_never_text_from_the_link() {
    let app = TestApp::start().await;
    let http = no_redirects();
    let cookie = app.ops_login(&http).await;
    let (_, _, page) = ops_page(
        &app,
        &http,
        "/ops/dead-letters?notice=Your%20account%20is%20locked%2C%20call%20%2B1-555-0100",
        &cookie,
    )
    .await;
    assert!(!page.contains("account is locked"), "free text was shown");
    assert!(
        !page.contains("id=\"notice\""),
        "an unknown code shows nothing"
    );
    let (_, _, page) = ops_page(
        &app,
        &http,
        "/ops/dead-letters?notice=bulk_replayed&n=3",
        &cookie,
    )
    .await;
    assert!(page.contains("Replayed 3 dead letters."), "{page}");
    let (_, _, page) = ops_page(
        &app,
        &http,
        "/ops/dead-letters?notice=deleted&id=%3Cb%3Eevil%3C%2Fb%3E",
        &cookie,
    )
    .await;
    assert!(!page.contains("evil"), "an id of the wrong shape was shown");
}

#[tokio::test]
async fn a_postgres_outage_shows_a_503_page_without_the_drivers_words() {
    let mut config = test_config().await;
    let database_url = config.database_url.expose().clone();
    let pg = Proxy::start(&Proxy::target_of(&database_url)).await;
    config.database_url = Secret::new(pg.url_for(&database_url));
    config.database_pool_size = 2;
    let app = TestApp::start_with(config).await;
    let http = no_redirects();
    let cookie = app.ops_login(&http).await;
    pg.cut();
    let (status, headers, page) = ops_page(&app, &http, "/ops/dead-letters", &cookie).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{page}");
    assert!(headers.contains_key("retry-after"));
    assert!(page.contains("database is not answering"), "{page}");
    for driver in [
        "pool",
        "timed out",
        "error returned",
        "connection",
        "sqlx",
        "os error",
    ] {
        assert!(
            !page.to_lowercase().contains(driver),
            "driver text {driver:?}: {page}"
        );
    }
    pg.restore();
}

// ---------------------------------------------------------------------------------------
// Edges
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_reminder_offset_that_overflows_is_refused_not_wrapped_around() {
    let app = TestApp::start().await;
    let tenant = app.tenant().await;
    let (_, contact) = app
        .post(
            "/v1/contacts",
            &tenant.api_key,
            &json!({"phone": "+15559300001"}),
        )
        .await;
    let starts_at = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    for before in [
        "144115188075855873d",
        "307445734561825861h",
        "18446744073709551615m",
    ] {
        let (status, answer) = app
            .post(
                "/v1/appointments",
                &tenant.api_key,
                &json!({"contact_id": contact["id"], "starts_at": starts_at,
                        "reminders": [{"before": before}], "body_template": "See you {{time}}"}),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{before}: {answer}"
        );
        assert_eq!(
            api_error(&answer).field.as_deref(),
            Some("reminders[0].before"),
            "{answer}"
        );
    }
    assert_eq!(app.message_rows().await, 0);
}

#[tokio::test]
async fn readiness_says_in_plain_words_which_dependency_is_down() {
    let mut config = test_config().await;
    let redis = Proxy::start(&Proxy::target_of(&redis_url())).await;
    config.redis_url = Secret::new(redis.url_for(&redis_url()));
    let app = TestApp::start_with(config).await;
    redis.cut();
    let body = eventually(Duration::from_secs(10), "/readyz answers 503", || async {
        let r = app.http.get(app.url("/readyz")).send().await.ok()?;
        (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())?;
        r.json::<Value>().await.ok()
    })
    .await;
    assert_eq!(body["status"], "unready");
    assert_eq!(body["checks"]["postgres"], "ok");
    let why = body["checks"]["redis"].as_str().unwrap();
    assert!(why.starts_with("down: Redis"), "{why}");
    for driver in [
        "refused",
        "os error",
        "io error",
        "broken pipe",
        "127.0.0.1",
    ] {
        assert!(!why.to_lowercase().contains(driver), "driver text: {why}");
    }
    redis.restore();
}

#[tokio::test]
async fn two_authorization_headers_are_a_400() {
    let app = TestApp::start().await;
    let tenant = app.tenant().await;
    let r = app
        .http
        .get(app.url("/v1/messages"))
        .header("authorization", format!("Bearer {}", tenant.api_key))
        .header("authorization", format!("Bearer {}", app.ops_token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        api_error(&body).field.as_deref(),
        Some("Authorization"),
        "{body}"
    );
}

#[tokio::test]
async fn requests_made_before_the_first_scrape_are_in_it() {
    let app = TestApp::start().await;
    let tenant = app.tenant().await;
    for i in 0..3 {
        app.post_sms(&tenant, &format!("+155594000{i:02}"), "counted")
            .await;
    }
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let accepted: f64 = text
        .lines()
        .find(|l| l.starts_with("herald_messages_accepted_total{channel=\"sms\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no accepted count in the first scrape:\n{text}"));
    assert_eq!(accepted, 3.0);
    let posts = text.lines().find(|l| {
        l.starts_with("herald_http_requests_total{")
            && l.contains("route=\"/v1/messages\"")
            && l.contains("method=\"POST\"")
            && l.contains("status=\"202\"")
    });
    assert!(
        posts.is_some_and(|l| l.ends_with(" 3")),
        "the three POSTs are not counted: {posts:?}\n{text}"
    );
}
