//! OpenTelemetry traces: one trace follows a message from `POST /v1/messages` (continuing the
//! caller's `traceparent`) through its commit, its push, its job and the provider call to the
//! provider's status callback, exported over OTLP/HTTP to a collector on loopback; outbound
//! webhooks carry the trace on. Without an endpoint, no trace context leaves Herald.

use std::time::Duration;

use herald_tests::{
    TestApp,
    app::{init_logs_with_traces, test_config},
    eventually,
    otlp::{ExportedSpan, OtlpCollector},
    providers::{TwilioMock, WebhookReceiver},
    views::MessageView,
};
use reqwest::StatusCode;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// The span of `trace` named `name` (exactly one).
fn one<'a>(trace: &'a [ExportedSpan], name: &str) -> &'a ExportedSpan {
    let found: Vec<&ExportedSpan> = trace.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one `{name}` span in {trace:#?}");
    found[0]
}

/// Waits until `trace_id` holds a span named each of `names`; returns the trace.
async fn wait_for_trace(
    collector: &OtlpCollector,
    trace_id: &str,
    names: &[&str],
) -> Vec<ExportedSpan> {
    eventually(WAIT, "the trace reaches the collector", || async {
        let trace = collector.trace(trace_id);
        names
            .iter()
            .all(|n| trace.iter().any(|s| s.name == *n))
            .then_some(trace)
    })
    .await
}

#[tokio::test]
async fn one_trace_follows_a_message_from_the_callers_request_to_twilio_and_its_status_callback() {
    let collector = OtlpCollector::start().await;
    init_logs_with_traces(&collector);
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    let tenant = app.tenant().await;

    let (trace_id, caller_span) = (random_hex(16), random_hex(8));
    let (status, body) = app
        .post_with_headers(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "sms", "to": "+15551800001", "body": "Your table is ready"}),
            &[("traceparent", &format!("00-{trace_id}-{caller_span}-01"))],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let m: MessageView = serde_json::from_value(body).unwrap();
    app.wait_for_status(&tenant, &m.id, "sent", WAIT).await;

    // Twilio reports delivery at the callback URL Herald gave it.
    let sent = twilio.sent_to("+15551800001");
    let callback = sent[0].form["StatusCallback"].clone();
    assert!(
        callback.contains(&format!("traceparent=00-{trace_id}-")),
        "the callback URL carries the trace: {callback}"
    );
    let sid = twilio.created_to("+15551800001")[0].sid.clone();
    let path = callback.strip_prefix(&app.base).unwrap().to_owned();
    let (status, _) = app
        .twilio_post(
            &path,
            &twilio.auth_token,
            &[
                ("MessageSid", sid.as_str()),
                ("MessageStatus", "delivered"),
                ("AccountSid", "ACtest"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.wait_for_status(&tenant, &m.id, "delivered", WAIT).await;

    let trace = wait_for_trace(
        &collector,
        &trace_id,
        &[
            "POST /v1/messages",
            "postgres.commit",
            "redis.push",
            "job deliveries",
            "provider call",
            "status callback",
        ],
    )
    .await;
    let request = one(&trace, "POST /v1/messages");
    assert_eq!(
        request.parent_span_id, caller_span,
        "the caller's span is the request's parent"
    );
    assert_eq!(request.attributes["http.response.status_code"], "202");
    let commit = one(&trace, "postgres.commit");
    assert_eq!(commit.parent_span_id, request.span_id);
    let push = one(&trace, "redis.push");
    assert_eq!(push.parent_span_id, request.span_id);
    assert_eq!(push.attributes["message_id"], m.id);
    let job = one(&trace, "job deliveries");
    assert_eq!(job.parent_span_id, push.span_id, "the job follows its push");
    assert_eq!(job.attributes["queue"], "deliveries");
    assert_eq!(job.attributes["attempt"], "1");
    assert!(job.attributes.contains_key("lease_ms"), "{job:?}");
    let call = one(&trace, "provider call");
    assert_eq!(call.attributes["provider"], "twilio");
    assert_eq!(call.attributes["outcome"], "accepted");
    assert_eq!(call.status, "Unset");
    let mut ancestor = call.parent_span_id.clone();
    while ancestor != job.span_id {
        let parent = trace
            .iter()
            .find(|s| s.span_id == ancestor)
            .unwrap_or_else(|| panic!("the provider call descends from the job: {trace:#?}"));
        ancestor = parent.parent_span_id.clone();
    }
    let report = one(&trace, "status callback");
    assert_eq!(report.parent_span_id, call.span_id);
    assert_eq!(report.attributes["message_status"], "delivered");

    // A malformed traceparent starts a trace of Herald's own; the request is served.
    let (status, _) = app
        .post_with_headers(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "sms", "to": "+15551800002", "body": "Hi"}),
            &[("traceparent", "00-not-a-trace-01")],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn an_outbound_webhook_carries_the_trace_of_the_message_that_sent_it() {
    let collector = OtlpCollector::start().await;
    init_logs_with_traces(&collector);
    let receiver = WebhookReceiver::start().await;
    let mut app = TestApp::start_with(test_config().await).await;
    app.start_worker();
    let tenant = app.tenant().await;

    let (trace_id, caller_span) = (random_hex(16), random_hex(8));
    let (status, body) = app
        .post_with_headers(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "webhook", "to": receiver.url("/hook"), "body": {"order": 7}}),
            &[("traceparent", &format!("00-{trace_id}-{caller_span}-01"))],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let m: MessageView = serde_json::from_value(body).unwrap();
    app.wait_for_status(&tenant, &m.id, "delivered", WAIT).await;

    let requests = receiver.requests("/hook");
    let traceparent = requests[0].0["traceparent"].to_str().unwrap().to_owned();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[1], trace_id, "the receiver's trace is the caller's");
    let trace = wait_for_trace(&collector, &trace_id, &["provider call"]).await;
    let call = one(&trace, "provider call");
    assert_eq!(call.attributes["provider"], "webhook");
    assert_eq!(
        parts[2], call.span_id,
        "the receiver's parent is Herald's call to it"
    );
}

#[tokio::test]
async fn without_an_endpoint_no_trace_context_leaves_herald() {
    let twilio = TwilioMock::start().await;
    let receiver = WebhookReceiver::start().await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    let tenant = app.tenant().await;
    let caller = format!("00-{}-{}-01", random_hex(16), random_hex(8));

    let (status, body) = app
        .post_with_headers(
            "/v1/messages",
            &tenant.api_key,
            &json!({"channel": "webhook", "to": receiver.url("/hook"), "body": {"order": 8}}),
            &[("traceparent", &caller)],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let hook: MessageView = serde_json::from_value(body).unwrap();
    let sms = app.post_sms(&tenant, "+15551800003", "Hello").await;
    app.wait_for_status(&tenant, &hook.id, "delivered", WAIT)
        .await;
    app.wait_for_status(&tenant, &sms.id, "sent", WAIT).await;

    let (headers, _) = &receiver.requests("/hook")[0];
    assert!(
        headers.get("traceparent").is_none(),
        "no traceparent goes out: {headers:?}"
    );
    let callback = &twilio.sent_to("+15551800003")[0].form["StatusCallback"];
    assert!(!callback.contains("traceparent"), "{callback}");
}
