//! heraldctl, the ops CLI, run as a real process against a running API: what an operator
//! types, what it prints, and the exit codes scripts rely on.

use std::{process::Stdio, time::Duration};

use herald_tests::{
    TestApp,
    app::test_config,
    eventually,
    process::{bin, free_port},
    providers::{Reply, TwilioMock, WebhookReceiver},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// One finished heraldctl run.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("--json output does not parse ({e}): {self:?}"))
    }
}

/// Runs heraldctl with exactly these environment variables (plus PATH), so nothing from the
/// developer's shell (a real `HERALD_OPS_TOKEN`, say) leaks in.
async fn heraldctl_with(env: &[(&str, &str)], args: &[&str]) -> Run {
    let out = tokio::process::Command::new(bin("heraldctl"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("heraldctl runs");
    Run {
        code: out.status.code().expect("heraldctl exits, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs heraldctl against `app` with its ops token.
async fn heraldctl(app: &TestApp, args: &[&str]) -> Run {
    heraldctl_with(
        &[
            ("HERALD_URL", &app.base),
            ("HERALD_OPS_TOKEN", &app.ops_token),
        ],
        args,
    )
    .await
}

/// Runs heraldctl and asserts it succeeded.
async fn ok(app: &TestApp, args: &[&str]) -> Run {
    let run = heraldctl(app, args).await;
    assert_eq!(run.code, 0, "heraldctl {args:?}: {run:?}");
    run
}

/// The table row that mentions `id`.
fn row<'a>(run: &'a Run, id: &str) -> &'a str {
    run.stdout
        .lines()
        .find(|l| l.contains(id))
        .unwrap_or_else(|| panic!("no row for {id}: {run:?}"))
}

#[tokio::test]
async fn lists_shows_replays_and_deletes_a_dead_letter() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    let tenant = app.tenant().await;
    twilio.script([Reply::TwilioError {
        status: 400,
        code: 21214,
        message: "'To' phone number cannot be reached".into(),
    }]);

    let m = app.post_sms(&tenant, "+15556660101", "hello").await;
    let msg_id = m.id.as_str();
    app.wait_for_status(&tenant, msg_id, "failed", Duration::from_secs(20))
        .await;
    let dl_id = eventually(
        Duration::from_secs(10),
        "the dead letter is listed",
        || async {
            app.dead_letters(&app.ops_token, "")
                .await
                .into_iter()
                .find(|d| d.message_id.as_deref() == Some(msg_id))
                .map(|d| d.id)
        },
    )
    .await;

    // The table, with a filter that selects it and one that does not.
    let list = ok(&app, &["dlq", "list"]).await;
    assert!(list.stdout.starts_with("ID "), "a header row: {list:?}");
    let line = row(&list, &dl_id);
    for part in [
        msg_id,
        tenant.id.as_str(),
        "deliveries",
        "rejected",
        "21214",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[7], "-", "not replayed yet: {line}");
    let filtered = ok(
        &app,
        &[
            "dlq",
            "list",
            "--tenant",
            &tenant.id,
            "--reason",
            "rejected",
            "--since",
            "1h",
            "--queue",
            "deliveries",
        ],
    )
    .await;
    row(&filtered, &dl_id);
    let none = ok(&app, &["dlq", "list", "--reason", "exhausted"]).await;
    assert!(!none.stdout.contains(&dl_id), "{none:?}");
    assert!(none.stdout.contains("no dead letters"), "{none:?}");

    // --json is the API's answer, pages joined.
    let json = ok(&app, &["dlq", "list", "--json"]).await.json();
    let listed = json["data"].as_array().unwrap();
    assert!(listed.iter().any(|d| d["id"] == dl_id.as_str()), "{json}");
    assert!(json["next_cursor"].is_null(), "{json}");

    let show = ok(&app, &["dlq", "show", &dl_id]).await;
    for part in [&dl_id, msg_id, "rejected", "errors:", "21214"] {
        assert!(show.stdout.contains(part), "{part} in {show:?}");
    }
    let shown = ok(&app, &["dlq", "show", &dl_id, "--json"]).await.json();
    assert_eq!(shown["id"], dl_id.as_str());
    assert_eq!(shown["errors"].as_array().unwrap().len(), 1, "{shown}");

    // The mock accepts from now on, so the replay goes out.
    let replay = ok(&app, &["dlq", "replay", &dl_id]).await;
    assert!(replay.stdout.contains(msg_id), "{replay:?}");
    app.wait_for_status(&tenant, msg_id, "sent", Duration::from_secs(15))
        .await;
    let again = ok(&app, &["dlq", "list"]).await;
    let replayed_at = row(&again, &dl_id).split_whitespace().nth(7).unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(replayed_at).is_ok(),
        "replayed_at is a time: {again:?}"
    );

    // Ops can follow the message itself, whichever tenant it belongs to.
    let message = ok(&app, &["messages", "show", msg_id]).await;
    let events = message
        .stdout
        .split_once("events:")
        .map(|(_, e)| e)
        .unwrap_or_else(|| panic!("an events section: {message:?}"));
    for status in ["failed", "sent"] {
        assert!(events.contains(status), "{status} event: {message:?}");
    }
    assert!(message.stdout.contains(&tenant.id), "{message:?}");

    let queues = ok(&app, &["queues"]).await;
    assert!(queues.stdout.starts_with("NAME "), "{queues:?}");
    assert!(queues.stdout.contains("PENDING"), "{queues:?}");
    row(&queues, "deliveries");

    let delete = ok(&app, &["dlq", "delete", &dl_id]).await;
    assert!(delete.stdout.contains(&dl_id), "{delete:?}");
    let gone = heraldctl(&app, &["dlq", "show", &dl_id]).await;
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(gone.stderr.contains("not found (not_found"), "{gone:?}");
    assert!(gone.stderr.contains("404"), "{gone:?}");
    assert!(gone.stdout.is_empty(), "{gone:?}");
}

#[tokio::test]
async fn lists_endpoints_and_their_attempts_redelivers_an_event_and_shows_an_inbox() {
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

    // Every tenant's endpoints, or one tenant's.
    let list = ok(&app, &["endpoints", "list"]).await;
    assert!(list.stdout.starts_with("ID "), "a header row: {list:?}");
    let line = row(&list, &ep_a);
    for part in [
        a.id.as_str(),
        "yes",
        &receiver.url("/a"),
        "message.delivered",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
    assert!(row(&list, &ep_b).contains(&b.id), "{list:?}");
    let only_a = ok(&app, &["endpoints", "list", "--tenant", &a.id]).await;
    row(&only_a, &ep_a);
    assert!(!only_a.stdout.contains(&ep_b), "{only_a:?}");
    let json = ok(&app, &["endpoints", "list", "--json"]).await.json();
    let listed = json["data"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{json}");
    assert!(
        listed
            .iter()
            .all(|e| e["tenant_id"].is_string() && e.get("secret").is_none()),
        "{json}"
    );

    // The endpoint's attempts: the delivery, and no failures.
    let attempts = eventually(WAIT, "the attempt is listed", || async {
        let run = ok(&app, &["endpoints", "attempts", &ep_a]).await;
        run.stdout.contains(&evt).then_some(run)
    })
    .await;
    let line = row(&attempts, &evt);
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        (cols[2], cols[4], cols[5], cols[7]),
        ("message.delivered", "succeeded", "200", "-"),
        "type, status, code, no error: {line}"
    );
    assert!(cols[6].parse::<u32>().is_ok(), "a duration in ms: {line}");
    let failed = ok(
        &app,
        &[
            "endpoints",
            "attempts",
            &ep_a,
            "--status",
            "failed",
            "--since",
            "1h",
        ],
    )
    .await;
    assert!(failed.stdout.contains("no attempts"), "{failed:?}");

    // Sent again: the receiver hears the same webhook-id a second time.
    let redelivered = ok(&app, &["events", "redeliver", &evt]).await;
    assert!(
        redelivered
            .stdout
            .contains(&format!("redelivered {evt} to 1 endpoints")),
        "{redelivered:?}"
    );
    eventually(WAIT, "the event arrives again", || async {
        let ids = receiver.webhook_ids("/a");
        (ids.iter().filter(|i| **i == evt).count() == 2).then_some(())
    })
    .await;
    for args in [
        &["events", "redeliver", "evt_00000000000000000000000000"][..],
        &["endpoints", "attempts", "ep_00000000000000000000000000"],
    ] {
        let gone = heraldctl(&app, args).await;
        assert_eq!(gone.code, 1, "{gone:?}");
        assert!(
            gone.stderr.contains("not_found") && gone.stderr.contains("404"),
            "{gone:?}"
        );
    }

    // A tenant's inbox: a conversation waiting for a person.
    let contact = app
        .waiting_conversation(&twilio, &a, "+15550180001", "is anyone there?")
        .await;
    let inbox = ok(&app, &["inbox", "--tenant", &a.id]).await;
    assert!(inbox.stdout.starts_with("CONTACT "), "{inbox:?}");
    let line = row(&inbox, &contact);
    for part in ["+15550180001", "human", "yes", "contact: is anyone there?"] {
        assert!(line.contains(part), "{part} in {line}");
    }
    let waiting = ok(
        &app,
        &[
            "inbox",
            "--tenant",
            &a.id,
            "--needs-reply",
            "--mode",
            "human",
        ],
    )
    .await;
    row(&waiting, &contact);
    for args in [
        &["inbox", "--tenant", a.id.as_str(), "--mode", "ai"][..],
        &["inbox", "--tenant", b.id.as_str()],
    ] {
        let none = ok(&app, args).await;
        assert_eq!(none.stdout, "no conversations\n", "{args:?}");
    }
    let json = ok(&app, &["inbox", "--tenant", &a.id, "--json"])
        .await
        .json();
    assert_eq!(json["data"][0]["contact_id"], contact.as_str(), "{json}");
    let bad = heraldctl(&app, &["inbox", "--tenant", "acme"]).await;
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("field tenant_id"), "{bad:?}");
    app.stop().await;
}

#[tokio::test]
async fn creates_a_tenant_whose_keys_work_until_revoked() {
    let app = TestApp::start().await;
    let created = ok(
        &app,
        &[
            "tenants",
            "create",
            "--name",
            "Ctl Clinic",
            "--timezone",
            "America/New_York",
            "--email-from",
            "ctl@clinic.test",
            "--no-quiet-hours",
        ],
    )
    .await;
    let value = |name: &str| {
        created
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(name)?.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {name} line: {created:?}"))
            .to_owned()
    };
    let (tenant_id, first_key, first_prefix) =
        (value("id "), value("api_key "), value("key_prefix "));
    assert!(tenant_id.starts_with("ten_"), "{created:?}");
    assert!(
        value("webhook_secret ").starts_with("whsec_"),
        "{created:?}"
    );
    assert_eq!(value("quiet_hours "), "off", "{created:?}");
    assert!(first_key.starts_with(&first_prefix), "{created:?}");

    let second = ok(&app, &["keys", "create", &tenant_id, "--json"])
        .await
        .json();
    let second_key = second["api_key"].as_str().unwrap();

    let status = |key: String| {
        let app = &app;
        async move { app.get("/v1/messages", &key).await.0 }
    };
    assert_eq!(status(first_key.clone()).await, StatusCode::OK);
    assert_eq!(status(second_key.to_owned()).await, StatusCode::OK);

    let revoked = ok(&app, &["keys", "revoke", &first_prefix]).await;
    assert!(revoked.stdout.contains(&first_prefix), "{revoked:?}");
    assert_eq!(status(first_key).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status(second_key.to_owned()).await,
        StatusCode::OK,
        "only the revoked key stops working"
    );

    let again = heraldctl(&app, &["keys", "revoke", &first_prefix]).await;
    assert_eq!(again.code, 1, "{again:?}");
}

#[tokio::test]
async fn lists_the_audit_log_filtered_as_a_table_or_json() {
    let app = TestApp::start().await;
    let (a, b) = (app.tenant().await, app.tenant().await);
    let key = ok(&app, &["keys", "create", &a.id, "--json"]).await.json();
    let prefix = key["key_prefix"].as_str().unwrap().to_owned();

    // Newest first: the key just created, by the operator.
    let all = ok(&app, &["audit"]).await;
    assert!(all.stdout.starts_with("AT "), "a header row: {all:?}");
    let first = all.stdout.lines().nth(1).unwrap();
    let cols: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(
        (cols[1], cols[2], cols[3], cols[4]),
        ("ops", "key.created", prefix.as_str(), a.id.as_str()),
        "{all:?}"
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(cols[0]).is_ok(),
        "{first}"
    );
    assert!(
        all.stdout.contains(&b.id),
        "every tenant's entries: {all:?}"
    );

    let only_b = ok(&app, &["audit", "--tenant", &b.id, "--since", "1h"]).await;
    let line = row(&only_b, "tenant.created");
    assert!(line.contains(&b.id), "{only_b:?}");
    assert!(!only_b.stdout.contains(&a.id), "{only_b:?}");
    let keys = ok(
        &app,
        &[
            "audit",
            "--action",
            "key.created",
            "--actor",
            "ops",
            "--json",
        ],
    )
    .await
    .json();
    let entries = keys["data"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{keys}");
    assert_eq!(entries[0]["target"], prefix.as_str(), "{keys}");
    assert_eq!(entries[0]["tenant_id"], a.id.as_str(), "{keys}");
    assert!(
        entries[0]["id"].as_str().unwrap().starts_with("aud_"),
        "{keys}"
    );
    assert!(keys["next_cursor"].is_null(), "{keys}");
    let limited = ok(&app, &["audit", "--limit", "1"]).await;
    assert!(limited.stdout.contains("raise --limit"), "{limited:?}");
    let none = ok(&app, &["audit", "--actor", "hk_000000000"]).await;
    assert_eq!(none.stdout, "no audit entries\n", "{none:?}");

    // The API refuses what it cannot read (422, exit 1); a `--since` that is no time is
    // refused before any call, like every command's (exit 2).
    let bad = heraldctl(&app, &["audit", "--actor", "somebody"]).await;
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(
        bad.stderr.contains("field actor") && bad.stderr.contains("422"),
        "{bad:?}"
    );
    let since = heraldctl(&app, &["audit", "--since", "yesterday"]).await;
    assert_eq!(since.code, 2, "{since:?}");
    assert!(since.stderr.contains("`--since`"), "{since:?}");
    assert!(since.stdout.is_empty(), "{since:?}");
}

#[tokio::test]
async fn prints_the_apis_refusal_and_exits_1() {
    let app = TestApp::start().await;
    let bad_token = heraldctl_with(
        &[
            ("HERALD_URL", &app.base),
            ("HERALD_OPS_TOKEN", "not-the-token"),
        ],
        &["queues"],
    )
    .await;
    assert_eq!(bad_token.code, 1, "{bad_token:?}");
    assert!(
        bad_token
            .stderr
            .starts_with("heraldctl: unknown ops token (unauthorized"),
        "{bad_token:?}"
    );
    assert!(bad_token.stderr.contains("401"), "{bad_token:?}");

    // --token wins over the environment.
    let flag = heraldctl_with(
        &[
            ("HERALD_URL", &app.base),
            ("HERALD_OPS_TOKEN", "not-the-token"),
        ],
        &["queues", "--token", &app.ops_token],
    )
    .await;
    assert_eq!(flag.code, 0, "{flag:?}");

    let invalid = heraldctl(
        &app,
        &[
            "tenants",
            "create",
            "--name",
            "X",
            "--timezone",
            "Mars/Olympus",
        ],
    )
    .await;
    assert_eq!(invalid.code, 1, "{invalid:?}");
    assert!(invalid.stderr.contains("field timezone"), "{invalid:?}");
    assert!(invalid.stderr.contains("422"), "{invalid:?}");
}

#[tokio::test]
async fn refuses_usage_errors_with_exit_2_before_calling_the_api() {
    // Nothing listens here: a call would exit 3, so exit 2 proves no call was made.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let env = [("HERALD_URL", closed.as_str()), ("HERALD_OPS_TOKEN", "t")];

    let unknown = heraldctl_with(&env, &["frobnicate"]).await;
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(
        unknown
            .stderr
            .contains("unrecognized subcommand 'frobnicate'"),
        "{unknown:?}"
    );

    let bare_filter = heraldctl_with(&env, &["dlq", "replay", "--filter"]).await;
    assert_eq!(bare_filter.code, 2, "{bare_filter:?}");
    assert!(bare_filter.stderr.contains("--all"), "{bare_filter:?}");
    assert!(bare_filter.stderr.contains("filter"), "{bare_filter:?}");

    let unknown_flag = heraldctl_with(&env, &["queues", "--verbose"]).await;
    assert_eq!(unknown_flag.code, 2, "{unknown_flag:?}");

    let missing = heraldctl_with(&env, &["dlq", "show"]).await;
    assert_eq!(missing.code, 2, "{missing:?}");

    let no_token = heraldctl_with(&[("HERALD_URL", closed.as_str())], &["queues"]).await;
    assert_eq!(no_token.code, 2, "{no_token:?}");
    assert!(no_token.stderr.contains("HERALD_OPS_TOKEN"), "{no_token:?}");

    for args in [&[][..], &["help"], &["--help"]] {
        let help = heraldctl_with(&[], args).await;
        assert_eq!(help.code, 0, "{args:?}: {help:?}");
        assert!(help.stdout.contains("dlq replay"), "{help:?}");
    }
}

#[tokio::test]
async fn exits_3_naming_the_url_when_the_api_cannot_be_reached() {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let run = heraldctl_with(
        &[("HERALD_URL", closed.as_str()), ("HERALD_OPS_TOKEN", "t")],
        &["dlq", "list"],
    )
    .await;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains(&closed), "{run:?}");
    assert!(run.stderr.contains("could not reach"), "{run:?}");
}
