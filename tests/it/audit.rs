//! The audit log: every change by the operator or a tenant key is recorded with who, what,
//! from where and in which request; a refused request records nothing; a tenant sees only its
//! own; and Postgres itself refuses to change or delete an entry.

use std::time::Duration;

use herald_tests::{
    TestApp,
    app::test_config,
    providers::{Reply, TwilioMock},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The address every request below claims through `X-Forwarded-For` (trusted here).
const CLIENT: &str = "203.0.113.7";

async fn start() -> TestApp {
    let mut config = test_config().await;
    config.trust_forwarded_for = true;
    TestApp::start_with(config).await
}

/// A request with its own `X-Request-Id` and client address.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
    request_id: &str,
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .request(method, app.url(path))
        .bearer_auth(key)
        .header("x-request-id", request_id)
        .header("x-forwarded-for", CLIENT);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Every entry the operator sees, newest first (all pages).
async fn all_entries(app: &TestApp) -> Vec<Value> {
    let mut out = vec![];
    let mut cursor = String::new();
    loop {
        let (status, page) = app
            .get(
                &format!("/v1/admin/audit?limit=100{cursor}"),
                &app.ops_token,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        out.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}

/// The one entry made by the request `request_id`.
fn entry<'a>(entries: &'a [Value], request_id: &str) -> &'a Value {
    let found: Vec<&Value> = entries
        .iter()
        .filter(|e| e["request_id"] == request_id)
        .collect();
    assert_eq!(found.len(), 1, "one entry for {request_id}: {entries:#?}");
    found[0]
}

fn assert_entry(e: &Value, actor: &str, action: &str, target: &str, tenant: Option<&str>) {
    assert_eq!(e["actor"], actor, "{e}");
    assert_eq!(e["action"], action, "{e}");
    assert_eq!(e["target"], target, "{e}");
    assert_eq!(e["tenant_id"].as_str(), tenant, "{e}");
    assert_eq!(e["client_ip"], CLIENT, "{e}");
    assert!(e["id"].as_str().unwrap().starts_with("aud_"), "{e}");
    assert!(e["at"].as_str().is_some(), "{e}");
}

#[tokio::test]
async fn every_change_by_ops_or_a_tenant_key_is_recorded_with_who_where_and_which_request() {
    let app = start().await;
    let ops = app.ops_token.clone();
    let (s, t) = call(
        &app,
        Method::POST,
        "/v1/admin/tenants",
        &ops,
        Some(json!({"name": "Audited"})),
        "rq-tenant",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let tid = t["id"].as_str().unwrap().to_owned();
    let key = t["api_key"].as_str().unwrap().to_owned();
    let prefix = t["key_prefix"].as_str().unwrap().to_owned();

    let (s, k) = call(
        &app,
        Method::POST,
        &format!("/v1/admin/tenants/{tid}/keys"),
        &ops,
        None,
        "rq-key",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let second = k["key_prefix"].as_str().unwrap().to_owned();
    let (s, _) = call(
        &app,
        Method::DELETE,
        &format!("/v1/admin/keys/{second}"),
        &ops,
        None,
        "rq-revoke",
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let (s, b) = call(
        &app,
        Method::PATCH,
        "/v1/tenant",
        &key,
        Some(json!({"help_text": "Call us", "retention_days": 30})),
        "rq-patch",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let (s, ep) = call(
        &app,
        Method::POST,
        "/v1/endpoints",
        &key,
        Some(json!({"url": "https://hooks.example.com/herald"})),
        "rq-ep-create",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{ep}");
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    let secret = ep["secret"].as_str().unwrap().to_owned();
    let (s, b) = call(
        &app,
        Method::PATCH,
        &format!("/v1/endpoints/{ep_id}"),
        &key,
        Some(json!({"description": "main"})),
        "rq-ep-patch",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, rotated) = call(
        &app,
        Method::POST,
        &format!("/v1/endpoints/{ep_id}/rotate-secret"),
        &key,
        None,
        "rq-ep-rotate",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    let (s, _) = call(
        &app,
        Method::DELETE,
        &format!("/v1/endpoints/{ep_id}"),
        &key,
        None,
        "rq-ep-delete",
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let (s, c) = app
        .post("/v1/contacts", &key, &json!({"phone": "+15551230001"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let ct = c["id"].as_str().unwrap().to_owned();
    let (s, b) = call(
        &app,
        Method::POST,
        &format!("/v1/conversations/{ct}/takeover"),
        &key,
        Some(json!({})),
        "rq-takeover",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = call(
        &app,
        Method::POST,
        &format!("/v1/conversations/{ct}/release"),
        &key,
        Some(json!({})),
        "rq-release",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let (s, b) = call(
        &app,
        Method::PATCH,
        &format!("/v1/admin/tenants/{tid}"),
        &ops,
        Some(json!({"suspended": true})),
        "rq-suspend",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // The dashboard: a wrong token, then the right one.
    let http = herald_tests::app::no_redirects();
    let login = |token: String, rid: &'static str| {
        let http = http.clone();
        let url = app.url("/ops/login");
        async move {
            http.post(url)
                .header("x-request-id", rid)
                .header("x-forwarded-for", CLIENT)
                .form(&[("token", token)])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        login("not-the-token".into(), "rq-login-bad").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(login(ops.clone(), "rq-login").await, StatusCode::SEE_OTHER);

    let all = all_entries(&app).await;
    let t = Some(tid.as_str());
    let e = entry(&all, "rq-tenant");
    assert_entry(e, "ops", "tenant.created", &tid, t);
    assert_entry(entry(&all, "rq-key"), "ops", "key.created", &second, t);
    assert_entry(entry(&all, "rq-revoke"), "ops", "key.revoked", &second, t);
    let e = entry(&all, "rq-patch");
    assert_entry(e, &prefix, "tenant.updated", &tid, t);
    assert_eq!(
        e["detail"]["fields"],
        json!(["help_text", "retention_days"]),
        "{e}"
    );
    assert_entry(
        entry(&all, "rq-ep-create"),
        &prefix,
        "endpoint.created",
        &ep_id,
        t,
    );
    let e = entry(&all, "rq-ep-patch");
    assert_entry(e, &prefix, "endpoint.updated", &ep_id, t);
    assert_eq!(e["detail"]["fields"], json!(["description"]), "{e}");
    let e = entry(&all, "rq-ep-rotate");
    assert_entry(e, &prefix, "endpoint.updated", &ep_id, t);
    assert_eq!(e["detail"]["secret_rotated"], true, "{e}");
    assert_entry(
        entry(&all, "rq-ep-delete"),
        &prefix,
        "endpoint.deleted",
        &ep_id,
        t,
    );
    assert_entry(
        entry(&all, "rq-takeover"),
        &prefix,
        "conversation.taken_over",
        &ct,
        t,
    );
    assert_entry(
        entry(&all, "rq-release"),
        &prefix,
        "conversation.released",
        &ct,
        t,
    );
    let e = entry(&all, "rq-suspend");
    assert_entry(e, "ops", "tenant.suspended", &tid, t);
    assert_eq!(e["detail"]["suspended"], true, "{e}");
    assert_entry(
        entry(&all, "rq-login-bad"),
        "ops",
        "ops.login_failed",
        "dashboard",
        None,
    );
    assert_entry(
        entry(&all, "rq-login"),
        "ops",
        "ops.login",
        "dashboard",
        None,
    );

    // No secret or key is ever written down.
    let text = serde_json::to_string(&all).unwrap();
    for s in [
        &key,
        &secret,
        &new_secret,
        &ops,
        &"not-the-token".to_owned(),
    ] {
        assert!(!text.contains(s.as_str()), "the log holds a secret: {text}");
    }
}

#[tokio::test]
async fn a_refused_request_records_nothing() {
    let app = start().await;
    let t = app.tenant().await;
    let before = all_entries(&app).await.len();
    let refused = [
        // Validation, not found, wrong kind of key, no key.
        (
            Method::PATCH,
            "/v1/tenant".to_owned(),
            t.api_key.clone(),
            Some(json!({"retention_days": 0})),
        ),
        (
            Method::POST,
            "/v1/endpoints".to_owned(),
            t.api_key.clone(),
            Some(json!({"url": 5})),
        ),
        (
            Method::DELETE,
            "/v1/endpoints/ep_missing".to_owned(),
            t.api_key.clone(),
            None,
        ),
        (
            Method::DELETE,
            "/v1/admin/keys/hk_nosuchkey".to_owned(),
            app.ops_token.clone(),
            None,
        ),
        (
            Method::POST,
            format!("/v1/admin/tenants/{}/keys", t.id),
            t.api_key.clone(),
            None,
        ),
        (
            Method::POST,
            "/v1/admin/tenants".to_owned(),
            "hk_wrong".to_owned(),
            Some(json!({"name": "x"})),
        ),
        (
            Method::POST,
            "/v1/conversations/ct_missing/takeover".to_owned(),
            t.api_key.clone(),
            Some(json!({})),
        ),
        (
            Method::DELETE,
            "/v1/dead-letters/dl_missing".to_owned(),
            t.api_key.clone(),
            None,
        ),
    ];
    for (i, (method, path, key, body)) in refused.into_iter().enumerate() {
        let (s, b) = call(&app, method, &path, &key, body, &format!("rq-refused-{i}")).await;
        assert!(s.is_client_error(), "{path}: {s} {b}");
    }
    let after = all_entries(&app).await;
    assert_eq!(after.len(), before, "{after:#?}");
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_entries_and_filters_and_pages_work() {
    let app = start().await;
    let a = app.tenant().await;
    let b = app.tenant().await;
    for i in 0..3 {
        let (s, _) = app
            .patch(
                "/v1/tenant",
                &a.api_key,
                &json!({"help_text": format!("A {i}")}),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, _) = app
        .patch("/v1/tenant", &b.api_key, &json!({"help_text": "B"}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .post(
            &format!("/v1/admin/tenants/{}/keys", b.id),
            &app.ops_token,
            &json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    // A's log: its creation and its three changes; nothing of B's, nothing about B.
    let (s, page) = app.get("/v1/audit", &a.api_key).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 4, "{page}");
    assert!(
        data.iter().all(|e| e["tenant_id"] == a.id.as_str()),
        "{page}"
    );
    assert_eq!(data[0]["action"], "tenant.updated", "newest first: {page}");
    assert_eq!(data[3]["action"], "tenant.created", "{page}");

    // Filters: action, actor, time.
    let (_, page) = app.get("/v1/audit?action=tenant.created", &a.api_key).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["data"][0]["actor"], "ops", "{page}");
    let (_, page) = app
        .get(&format!("/v1/audit?actor={}", a.key_prefix), &a.api_key)
        .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 3, "{page}");
    let (_, page) = app
        .get("/v1/audit?since=2999-01-01T00:00:00Z", &a.api_key)
        .await;
    assert_eq!(page["data"], json!([]), "{page}");
    let (_, page) = app
        .get("/v1/audit?until=2000-01-01T00:00:00Z", &a.api_key)
        .await;
    assert_eq!(page["data"], json!([]), "{page}");

    // Pages of two cover every entry once.
    let (_, p1) = app.get("/v1/audit?limit=2", &a.api_key).await;
    let cursor = p1["next_cursor"].as_str().unwrap().to_owned();
    let (_, p2) = app
        .get(&format!("/v1/audit?limit=2&cursor={cursor}"), &a.api_key)
        .await;
    assert_eq!(p2["next_cursor"], Value::Null, "{p2}");
    let ids: Vec<&Value> = p1["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["data"].as_array().unwrap())
        .map(|e| &e["id"])
        .collect();
    let whole: Vec<&Value> = data.iter().map(|e| &e["id"]).collect();
    assert_eq!(ids, whole);

    // The operator's view, narrowed to B: B's creation, its change, the key made for it.
    let (_, page) = app
        .get(
            &format!("/v1/admin/audit?tenant_id={}", b.id),
            &app.ops_token,
        )
        .await;
    let actions: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["key.created", "tenant.updated", "tenant.created"],
        "{page}"
    );

    // Bad filters are 422 naming the field; the ops token is no tenant key and vice versa.
    for (q, field) in [
        ("action=tenant.exploded", "action"),
        ("actor=somebody", "actor"),
        ("since=yesterday", "since"),
        ("until=2024-13-01", "until"),
        ("limit=0", "limit"),
        ("colour=red", "colour"),
    ] {
        let (s, body) = app.get(&format!("/v1/audit?{q}"), &a.api_key).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{q}: {body}");
        assert_eq!(body["error"]["field"], field, "{q}: {body}");
    }
    let (s, body) = app
        .get("/v1/admin/audit?tenant_id=nope", &app.ops_token)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "tenant_id", "{body}");
    assert_eq!(
        app.get("/v1/audit", &app.ops_token).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/v1/admin/audit", &a.api_key).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn dead_letter_replays_and_deletes_are_recorded_with_the_bulk_filter() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    config.max_attempts = 2;
    config.trust_forwarded_for = true;
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    let t = app.tenant().await;
    let mut dead = vec![];
    for i in 0..3 {
        twilio.script([Reply::TwilioError {
            status: 400,
            code: 21214,
            message: "'To' phone number cannot be reached".into(),
        }]);
        let m = app
            .post_sms(&t, &format!("+1555888000{i}"), "will not arrive")
            .await;
        app.wait_for_status(&t, &m.id, "failed", Duration::from_secs(20))
            .await;
        let id = m.id.clone();
        let dl = herald_tests::eventually(
            Duration::from_secs(10),
            "the dead letter is written",
            || async {
                app.dead_letters(&t.api_key, "")
                    .await
                    .into_iter()
                    .find(|d| d.message_id.as_deref() == Some(id.as_str()))
            },
        )
        .await;
        dead.push(dl.id.clone());
    }
    twilio.script([
        Reply::unavailable(),
        Reply::unavailable(),
        Reply::unavailable(),
        Reply::unavailable(),
    ]);
    let (s, b) = call(
        &app,
        Method::POST,
        &format!("/v1/dead-letters/{}/replay", dead[0]),
        &t.api_key,
        Some(json!({})),
        "rq-replay",
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let (s, _) = call(
        &app,
        Method::DELETE,
        &format!("/v1/dead-letters/{}", dead[1]),
        &app.ops_token,
        None,
        "rq-dl-delete",
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = call(
        &app,
        Method::POST,
        "/v1/dead-letters/replay",
        &app.ops_token,
        Some(json!({"ids": [dead[2]], "reason": "rejected"})),
        "rq-bulk",
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["replayed"], 1, "{b}");

    let all = all_entries(&app).await;
    let tid = Some(t.id.as_str());
    assert_entry(
        entry(&all, "rq-replay"),
        &t.key_prefix,
        "dead_letter.replayed",
        &dead[0],
        tid,
    );
    assert_entry(
        entry(&all, "rq-dl-delete"),
        "ops",
        "dead_letter.deleted",
        &dead[1],
        tid,
    );
    let e = entry(&all, "rq-bulk");
    assert_entry(e, "ops", "dead_letters.replayed", "dead_letters", None);
    assert_eq!(
        e["detail"]["filter"],
        json!({"ids": [dead[2]], "reason": "rejected"}),
        "{e}"
    );
    assert_eq!(e["detail"]["replayed"], 1, "{e}");
}

#[tokio::test]
async fn the_database_refuses_to_change_or_delete_an_audit_entry() {
    let app = start().await;
    let t = app.tenant().await;
    let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_log WHERE tenant_id = $1")
        .bind(&t.id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 1, "the creation is recorded");
    for statement in [
        "UPDATE audit_log SET actor = 'someone else' WHERE tenant_id = $1",
        "DELETE FROM audit_log WHERE tenant_id = $1",
    ] {
        let e = sqlx::query(statement)
            .bind(&t.id)
            .execute(&app.db)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("append-only"), "{statement}: {e}");
    }
    let e = sqlx::query("TRUNCATE audit_log")
        .execute(&app.db)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    let (actor,): (String,) = sqlx::query_as("SELECT actor FROM audit_log WHERE tenant_id = $1")
        .bind(&t.id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(actor, "ops", "the entry is as it was");
}
