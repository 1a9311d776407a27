//! Tenants are walled off from each other; keys and the ops token each work only where
//! they should.

use herald_tests::{
    TestApp,
    app::test_config,
    views::{
        CreatedKeyView, CreatedTenantView, MessageView, Page, QueueStatsView, api_error, view,
    },
};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn another_tenants_message_is_not_found() {
    let app = TestApp::start().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    let m = app.post_sms(&a, "+15551234567", "for A only").await;
    let id = m.id.as_str();

    let (status, body) = app.get(&format!("/v1/messages/{id}"), &b.api_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(api_error(&body).code, "not_found");
    let (status, _) = app
        .post(&format!("/v1/messages/{id}/cancel"), &b.api_key, &json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app.get("/v1/messages", &b.api_key).await;
    assert_eq!(list, json!({"data": [], "next_cursor": null}));

    let mine = app.message(&a, id).await;
    assert_eq!(mine.status, "queued", "B's cancel attempt changed nothing");
}

#[tokio::test]
async fn a_revoked_key_stops_working_at_once() {
    let app = TestApp::start().await;
    let t = app.tenant().await;
    let (status, _) = app.get("/v1/messages", &t.api_key).await;
    assert_eq!(status, StatusCode::OK);

    let (status, second) = app
        .post(
            &format!("/v1/admin/tenants/{}/keys", t.id),
            &app.ops_token,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second: CreatedKeyView = view(&second);
    let second_key = second.api_key.as_str();
    assert_eq!(second.key_prefix.as_str(), &second_key[..12]);

    let (status, _) = app
        .delete(&format!("/v1/admin/keys/{}", t.key_prefix), &app.ops_token)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get("/v1/messages", &t.api_key).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(api_error(&body).code, "unauthorized");
    let (status, _) = app.get("/v1/messages", second_key).await;
    assert_eq!(status, StatusCode::OK, "the tenant's other key still works");

    let (status, _) = app
        .delete(&format!("/v1/admin/keys/{}", t.key_prefix), &app.ops_token)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a revoked key cannot be revoked twice"
    );
}

#[tokio::test]
async fn keys_and_the_ops_token_only_work_on_their_own_routes() {
    let app = TestApp::start().await;
    let t = app.tenant().await;

    let (status, body) = app.get("/v1/messages", &app.ops_token).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = app
        .post("/v1/admin/tenants", &t.api_key, &json!({"name": "sneaky"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let (status, body) = app.get("/v1/messages", "hk_notarealkey").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let r = app.http.get(app.url("/v1/messages")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(api_error(&body).code, "unauthorized");
    let (status, _) = app
        .post("/v1/admin/tenants", "not-the-token", &json!({"name": "x"}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_routes_are_refused_without_an_ops_token_configured() {
    let mut config = test_config().await;
    config.ops_token = None;
    let app = TestApp::start_with(config).await;
    let (status, body) = app
        .post(
            "/v1/admin/tenants",
            "anything-at-all",
            &json!({"name": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(api_error(&body).code, "admin_disabled");
}

#[tokio::test]
async fn a_tenant_is_created_with_defaults_and_its_number_is_its_own() {
    let app = TestApp::start().await;
    let (status, t) = app
        .post(
            "/v1/admin/tenants",
            &app.ops_token,
            &json!({"name": "Bright Smiles", "sms_from": "+15005550001"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let t: CreatedTenantView = view(&t);
    assert!(t.id.starts_with("ten_"));
    assert!(t.api_key.starts_with("hk_"));
    assert!(t.webhook_secret.starts_with("whsec_"));
    assert_eq!(t.timezone, "UTC");
    assert_eq!(
        t.quiet_hours,
        Some(json!({"start": "21:00", "end": "08:00"}))
    );
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE tenant_id = $1")
        .bind(t.id.as_str())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_ne!(stored, t.api_key.as_bytes(), "only a hash is stored");

    let (status, body) = app
        .post(
            "/v1/admin/tenants",
            &app.ops_token,
            &json!({"name": "Copycat", "sms_from": "+15005550001"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(api_error(&body).field.as_deref(), Some("sms_from"));

    let (status, off) = app
        .post(
            "/v1/admin/tenants",
            &app.ops_token,
            &json!({"name": "Night Owls", "quiet_hours": null, "timezone": "America/New_York"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{off}");
    let off: CreatedTenantView = view(&off);
    assert_eq!(off.quiet_hours, None);
    assert_eq!(off.timezone, "America/New_York");
}

#[tokio::test]
async fn messages_list_newest_first_in_pages() {
    let app = TestApp::start().await;
    let t = app.tenant().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let m = app
            .post_sms(&t, "+15551234567", &format!("message {i}"))
            .await;
        ids.push(m.id.clone());
    }
    ids.reverse();
    let page1: Page<MessageView> = app.get_as("/v1/messages?limit=2", &t.api_key).await;
    let got: Vec<&str> = page1.data.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(got, ids[..2]);
    let cursor = page1.next_cursor.as_deref().unwrap();
    let page2: Page<MessageView> = app
        .get_as(&format!("/v1/messages?limit=2&cursor={cursor}"), &t.api_key)
        .await;
    let page3: Page<MessageView> = app
        .get_as(
            &format!(
                "/v1/messages?limit=2&cursor={}",
                page2.next_cursor.as_deref().unwrap()
            ),
            &t.api_key,
        )
        .await;
    assert_eq!(page3.data.len(), 1);
    assert_eq!(page3.next_cursor, None);
    let queued: Page<MessageView> = app.get_as("/v1/messages?status=sent", &t.api_key).await;
    assert_eq!(queued.data.len(), 0, "nothing is sent without a worker");
}

#[tokio::test]
async fn health_readiness_and_the_openapi_document() {
    let app = TestApp::start().await;
    let (status, body) = app.get("/healthz", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, body) = app.get("/readyz", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"status": "ready", "checks": {"postgres": "ok", "redis": "ok", "senders": "ok"}})
    );

    let (status, doc) = app.get("/openapi.json", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/messages", "post"),
        ("/v1/messages", "get"),
        ("/v1/messages/{id}", "get"),
        ("/v1/messages/{id}/cancel", "post"),
        ("/v1/admin/tenants", "post"),
        ("/v1/admin/tenants/{id}/keys", "post"),
        ("/v1/admin/keys/{key_prefix}", "delete"),
        ("/v1/admin/queues", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from /openapi.json"
        );
    }

    let (status, body) = app.get("/v1/nothing-here", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(api_error(&body).code, "not_found");
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert!(r.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn ops_see_the_queue_counts() {
    let app = TestApp::start().await;
    let t = app.tenant().await;
    app.post_sms(&t, "+15551234567", "now").await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, _) = app
        .post(
            "/v1/messages",
            &t.api_key,
            &json!({"channel": "sms", "to": "+15551234567", "body": "later", "send_at": later}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let queues = herald_tests::eventually(
        std::time::Duration::from_secs(10),
        "both jobs are queued",
        || async {
            let q: Vec<QueueStatsView> = app.get_as("/v1/admin/queues", &app.ops_token).await;
            (q[0].pending == 1 && q[0].scheduled == 1).then_some(q)
        },
    )
    .await;
    assert_eq!(queues[0].name, "deliveries");
    assert_eq!(queues[0].running, 0);
    assert_eq!(queues[0].dead, 0);
    let (status, _) = app.get("/v1/admin/queues", &t.api_key).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
