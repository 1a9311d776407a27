//! herald-api and herald-worker as real processes, as production runs them.

use std::time::Duration;

use herald_tests::{
    app::test_config,
    eventually,
    process::{Proc, free_port},
    providers::TwilioMock,
    views::{CreatedTenantView, MessageView},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn an_sms_goes_the_whole_way_through_real_processes() {
    let mut config = test_config().await;
    let twilio = TwilioMock::start().await;
    twilio.configure(&mut config);
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let ops = config.ops_token.as_ref().unwrap().expose().clone();
    let mut env = herald_tests::process::herald_env(&config);
    env.push(("HERALD_LISTEN".to_owned(), format!("127.0.0.1:{port}")));
    env.push(("HERALD_PUBLIC_URL".to_owned(), api.clone()));
    let mut api_proc = Proc::start("herald-api", &env);
    let mut worker = Proc::start("herald-worker", &env);

    let http = reqwest::Client::new();
    eventually(Duration::from_secs(30), "herald-api is ready", || async {
        let r = http.get(format!("{api}/readyz")).send().await.ok()?;
        (r.status() == StatusCode::OK).then_some(())
    })
    .await;

    let tenant: CreatedTenantView = http
        .post(format!("{api}/v1/admin/tenants"))
        .bearer_auth(&ops)
        .json(&json!({"name": "Process Clinic", "sms_from": "+15005550006", "quiet_hours": null}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = tenant.api_key;
    let r = http
        .post(format!("{api}/v1/messages"))
        .bearer_auth(&key)
        .json(&json!({"channel": "sms", "to": "+15557654321", "body": "Hello from a real process"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = r.json::<MessageView>().await.unwrap().id;

    let sent = eventually(
        Duration::from_secs(30),
        "the message reads back as sent",
        || async {
            let m: MessageView = http
                .get(format!("{api}/v1/messages/{id}"))
                .bearer_auth(&key)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (m.status == "sent").then_some(m)
        },
    )
    .await;
    assert!(
        sent.provider_message_id
            .as_deref()
            .unwrap()
            .starts_with("SM")
    );
    let calls = twilio.received();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].form["To"], "+15557654321");

    // SIGTERM stops both cleanly.
    api_proc.signal("TERM").await;
    worker.signal("TERM").await;
    let api_exit = tokio::time::timeout(Duration::from_secs(20), api_proc.wait())
        .await
        .expect("herald-api exits after SIGTERM");
    let worker_exit = tokio::time::timeout(Duration::from_secs(20), worker.wait())
        .await
        .expect("herald-worker exits after SIGTERM");
    assert_eq!(api_exit, Some(0));
    assert_eq!(worker_exit, Some(0));
}

#[tokio::test]
async fn a_binary_with_bad_configuration_names_the_variable() {
    let output = tokio::process::Command::new(herald_tests::process::bin("herald-worker"))
        .env_clear()
        .env("HERALD_REDIS_URL", "redis://127.0.0.1:1")
        .env("HERALD_MAX_ATTEMPTS", "lots")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("HERALD_DATABASE_URL"), "{stderr}");
    assert!(stderr.contains("HERALD_MAX_ATTEMPTS"), "{stderr}");
}

#[tokio::test]
async fn a_delivery_log_line_carries_its_queue_attempt_message_tenant_and_request() {
    let twilio = herald_tests::providers::TwilioMock::start().await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    let app = herald_tests::TestApp::start_with(config).await;
    let tenant = app.tenant().await;
    twilio.script([herald_tests::providers::Reply::TwilioError {
        status: 400,
        code: 21211,
        message: "The 'To' number is not a valid phone number.".into(),
    }]);
    let (_worker, lines) = Proc::start_logged(
        "herald-worker",
        &herald_tests::process::herald_env(&app.config),
    );
    let r = app
        .http
        .post(app.url("/v1/messages"))
        .bearer_auth(&tenant.api_key)
        .header("x-request-id", "req-from-the-client-42")
        .json(&json!({"channel": "sms", "to": "+15557650000", "body": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = r.json::<MessageView>().await.unwrap().id;
    let line: Value = eventually(
        Duration::from_secs(30),
        "the worker logs the rejection",
        || async {
            let lines = lines.lock().unwrap().clone();
            lines
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["fields"]["message"] == "provider rejected the message")
        },
    )
    .await;
    let spans = line["spans"].as_array().expect("the line lists its spans");
    let field = |name: &str| spans.iter().find_map(|s| s.get(name).cloned());
    assert_eq!(field("queue"), Some(json!("deliveries")), "{line}");
    assert_eq!(field("attempt"), Some(json!(1)), "{line}");
    assert_eq!(field("message_id"), Some(json!(id)), "{line}");
    assert_eq!(field("tenant_id"), Some(json!(tenant.id)), "{line}");
    assert_eq!(
        field("request_id"),
        Some(json!("req-from-the-client-42")),
        "{line}"
    );
}
