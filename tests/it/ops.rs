//! What ops look at: Prometheus metrics after traffic, the OpenAPI document of every route,
//! and request ids on every answer.

use std::time::Duration;

use herald_tests::{
    TestApp, app::test_config, eventually, process::free_port, providers::TwilioMock,
    views::api_error,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use herald_tests::prometheus_sample as sample;

#[tokio::test]
async fn metrics_appear_after_traffic() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    let worker_port = free_port();
    config.worker_metrics_listen = Some(format!("127.0.0.1:{worker_port}").parse().unwrap());
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    let tenant = app.tenant().await;
    let m = app
        .post_sms(&tenant, "+15551234567", "metrics please")
        .await;
    app.wait_for_status(&tenant, &m.id, "sent", Duration::from_secs(15))
        .await;
    let (status, _) = app
        .get(
            "/v1/messages/msg_01AAAAAAAAAAAAAAAAAAAAAAAA",
            &tenant.api_key,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    let posted = sample(
        &text,
        "herald_http_requests_total",
        &[
            "route=\"/v1/messages\"",
            "method=\"POST\"",
            "status=\"202\"",
        ],
    );
    assert_eq!(posted, Some(1.0), "{text}");
    assert!(
        sample(
            &text,
            "herald_http_requests_total",
            &["route=\"/v1/messages/{id}\"", "status=\"404\""]
        )
        .is_some(),
        "requests are labelled by route pattern, not path"
    );
    assert!(
        text.contains("herald_http_request_duration_seconds_bucket"),
        "latency histograms"
    );
    assert_eq!(
        sample(
            &text,
            "herald_messages_accepted_total",
            &["channel=\"sms\""]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &text,
            "herald_queue_depth",
            &["queue=\"deliveries\"", "state=\"pending\""]
        )
        .is_some(),
        "queue depths"
    );

    // The worker serves its own.
    let worker = eventually(
        Duration::from_secs(10),
        "the worker's /metrics shows the job",
        || async {
            let r = app
                .http
                .get(format!("http://127.0.0.1:{worker_port}/metrics"))
                .send()
                .await
                .ok()?;
            let text = r.text().await.ok()?;
            sample(
                &text,
                "herald_jobs_total",
                &["queue=\"deliveries\"", "outcome=\"completed\""],
            )
            .map(|_| text)
        },
    )
    .await;
    assert_eq!(
        sample(
            &worker,
            "herald_provider_calls_total",
            &["provider=\"twilio\"", "outcome=\"accepted\""]
        ),
        Some(1.0)
    );
    assert!(worker.contains("herald_provider_call_duration_seconds_bucket"));
    assert!(worker.contains("herald_job_duration_seconds_bucket"));
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_listed_route_answers() {
    let app = TestApp::start().await;
    let (status, doc) = app.get("/openapi.json", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    documented.sort();
    // Every route of the contract (the router is built from the same annotations).
    for (method, path) in [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("POST", "/v1/admin/tenants"),
        ("GET", "/v1/admin/tenants"),
        ("GET", "/v1/admin/tenants/{id}"),
        ("PATCH", "/v1/admin/tenants/{id}"),
        ("GET", "/v1/tenant"),
        ("PATCH", "/v1/tenant"),
        ("POST", "/v1/contacts/import"),
        ("POST", "/v1/admin/tenants/{id}/keys"),
        ("DELETE", "/v1/admin/keys/{key_prefix}"),
        ("GET", "/v1/admin/queues"),
        ("GET", "/v1/admin/audit"),
        ("GET", "/v1/audit"),
        ("GET", "/v1/admin/messages/{id}"),
        ("POST", "/v1/messages"),
        ("GET", "/v1/messages"),
        ("GET", "/v1/messages/{id}"),
        ("POST", "/v1/messages/{id}/cancel"),
        ("POST", "/v1/contacts"),
        ("GET", "/v1/contacts/{id}"),
        ("PATCH", "/v1/contacts/{id}"),
        ("GET", "/v1/contacts/{id}/export"),
        ("DELETE", "/v1/contacts/{id}"),
        ("POST", "/v1/appointments"),
        ("GET", "/v1/appointments/{id}"),
        ("PATCH", "/v1/appointments/{id}"),
        ("DELETE", "/v1/appointments/{id}"),
        ("POST", "/v1/subscriptions"),
        ("GET", "/v1/subscriptions/{id}"),
        ("DELETE", "/v1/subscriptions/{id}"),
        ("GET", "/v1/contacts"),
        ("GET", "/v1/appointments"),
        ("GET", "/v1/subscriptions"),
        ("PATCH", "/v1/subscriptions/{id}"),
        ("GET", "/v1/groups"),
        ("PATCH", "/v1/groups/{id}"),
        ("GET", "/v1/groups/{id}/members"),
        ("POST", "/v1/groups/{id}/members"),
        ("GET", "/v1/conversations"),
        ("GET", "/v1/conversations/{contact_id}"),
        ("POST", "/v1/conversations/{contact_id}/takeover"),
        ("POST", "/v1/conversations/{contact_id}/release"),
        ("POST", "/v1/conversations/{contact_id}/reply"),
        ("POST", "/v1/inbound/twilio/sms"),
        ("POST", "/v1/inbound/twilio/status"),
        ("GET", "/v1/dead-letters"),
        ("GET", "/v1/dead-letters/{id}"),
        ("POST", "/v1/dead-letters/{id}/replay"),
        ("POST", "/v1/dead-letters/replay"),
        ("DELETE", "/v1/dead-letters/{id}"),
        ("POST", "/v1/endpoints"),
        ("GET", "/v1/endpoints"),
        ("GET", "/v1/endpoints/{id}"),
        ("PATCH", "/v1/endpoints/{id}"),
        ("DELETE", "/v1/endpoints/{id}"),
        ("POST", "/v1/endpoints/{id}/rotate-secret"),
        ("GET", "/v1/endpoints/{id}/attempts"),
        ("POST", "/v1/endpoints/{id}/recover"),
        ("POST", "/v1/events/{id}/redeliver"),
        ("GET", "/v1/admin/endpoints"),
        ("GET", "/v1/admin/endpoints/{id}/attempts"),
        ("POST", "/v1/admin/events/{id}/redeliver"),
        ("GET", "/v1/admin/conversations"),
    ] {
        assert!(
            documented.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} is missing from /openapi.json"
        );
    }
    // And every documented route exists: it answers with anything but "no such route".
    for (method, path) in &documented {
        let url = app.url(&path.replace('{', "x").replace('}', ""));
        let r = app
            .http
            .request(method.parse().unwrap(), url)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            !(status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such route")
                && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is documented but not routed ({status})"
        );
    }
    // Every operation says what it answers.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} has no responses"
            );
        }
    }
}

#[tokio::test]
async fn every_request_body_is_documented_by_a_type() {
    let app = TestApp::start().await;
    let (status, doc) = app.get("/openapi.json", "").await;
    assert_eq!(status, StatusCode::OK);
    let mut bodies = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(content) = op["requestBody"]["content"].as_object() else {
                continue;
            };
            bodies += 1;
            for (kind, media) in content {
                let schema = &media["schema"];
                let reference = schema["$ref"].as_str().unwrap_or_else(|| {
                    panic!("{method} {path} ({kind}) has an untyped body: {schema}")
                });
                let name = reference.trim_start_matches("#/components/schemas/");
                let fields = &doc["components"]["schemas"][name]["properties"];
                assert!(
                    fields.as_object().is_some_and(|f| !f.is_empty()),
                    "{method} {path}: {name} spells out no field"
                );
            }
        }
    }
    assert_eq!(bodies, 23, "every route that takes a body");
    let message = &doc["components"]["schemas"]["MessageIn"]["properties"];
    for field in [
        "channel",
        "to",
        "body",
        "subject",
        "send_at",
        "expires_at",
        "contact_id",
        "metadata",
    ] {
        assert!(message.get(field).is_some(), "MessageIn has no {field}");
    }
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let app = TestApp::start().await;
    let t = app.tenant().await;
    let r = app
        .http
        .get(app.url("/v1/messages"))
        .bearer_auth(&t.api_key)
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(id.starts_with("req_"), "{id}");
    let r = app.http.get(app.url("/nowhere")).send().await.unwrap();
    assert!(r.headers().contains_key("x-request-id"), "also on a 404");
    let r = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "from-the-caller-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-request-id"],
        "from-the-caller-42",
        "a caller's id is kept"
    );
}

#[tokio::test]
async fn ops_read_any_tenants_inbox_as_the_tenant_does_and_only_that_tenants() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    // The API alone: texts are stored and nothing answers them.
    let app = TestApp::start_with(config).await;
    let (a, b) = (app.tenant().await, app.tenant().await);
    app.text(&twilio, &a, "+15550190001", "do you open on Sunday?")
        .await;
    let waiting = app
        .waiting_conversation(&twilio, &a, "+15550190002", "a person, please")
        .await;
    app.text(&twilio, &b, "+15550190003", "B's text").await;
    let ops = &app.ops_token;
    let inbox = |query: String| {
        let app = &app;
        async move {
            let (status, page) = app
                .get(&format!("/v1/admin/conversations?{query}"), ops)
                .await;
            assert_eq!(status, StatusCode::OK, "{query}: {page}");
            page
        }
    };

    // Exactly what the tenant's own inbox answers, filters and all.
    for filter in [
        "",
        "&mode=human",
        "&mode=ai",
        "&needs_reply=true",
        "&limit=1",
    ] {
        let ops_page = inbox(format!("tenant_id={}{filter}", a.id)).await;
        let (_, own) = app
            .get(
                &format!("/v1/conversations?{}", filter.trim_start_matches('&')),
                &a.api_key,
            )
            .await;
        assert_eq!(ops_page, own, "{filter}");
    }
    let all_a = inbox(format!("tenant_id={}", a.id)).await;
    let phones: Vec<&str> = all_a["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["phone"].as_str().unwrap())
        .collect();
    assert_eq!(phones, ["+15550190002", "+15550190001"], "newest first");
    let human = inbox(format!("tenant_id={}&mode=human", a.id)).await;
    assert_eq!(human["data"].as_array().unwrap().len(), 1, "{human}");
    assert_eq!(human["data"][0]["contact_id"], waiting.as_str());
    assert_eq!(human["data"][0]["needs_reply"], true);
    assert_eq!(human["data"][0]["last_entry"]["body"], "a person, please");
    let first = inbox(format!("tenant_id={}&limit=1", a.id)).await;
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = inbox(format!("tenant_id={}&limit=1&cursor={cursor}", a.id)).await;
    assert_eq!(second["data"][0]["phone"], "+15550190001", "{second}");
    let only_b = inbox(format!("tenant_id={}", b.id)).await;
    assert_eq!(only_b["data"].as_array().unwrap().len(), 1, "{only_b}");
    assert_eq!(only_b["data"][0]["last_entry"]["body"], "B's text");
    let nobody = inbox("tenant_id=ten_00000000000000000000000000".into()).await;
    assert_eq!(nobody, json!({"data": [], "next_cursor": null}));

    // The tenant is required and must look like one; bad filters name their field.
    for (query, code, field) in [
        ("", "missing_field", "tenant_id"),
        ("tenant_id=", "missing_field", "tenant_id"),
        ("tenant_id=acme", "invalid_value", "tenant_id"),
        ("mode=ai", "missing_field", "tenant_id"),
    ] {
        let (status, body) = app
            .get(&format!("/v1/admin/conversations?{query}"), ops)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        let e = api_error(&body);
        assert_eq!(
            (e.code.as_str(), e.field.as_deref()),
            (code, Some(field)),
            "{query}"
        );
    }
    for (filter, field) in [
        ("mode=robot", "mode"),
        ("needs_reply=maybe", "needs_reply"),
        ("limit=101", "limit"),
        ("cursor=abc", "cursor"),
        ("q=ann", "q"),
    ] {
        let (status, body) = app
            .get(
                &format!("/v1/admin/conversations?tenant_id={}&{filter}", a.id),
                ops,
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{filter}: {body}");
        assert_eq!(api_error(&body).field.as_deref(), Some(field), "{filter}");
    }

    // Only the ops token opens it.
    let (status, _) = app
        .get(
            &format!("/v1/admin/conversations?tenant_id={}", a.id),
            &a.api_key,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
