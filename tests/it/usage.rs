//! Usage per tenant and day (`GET /v1/usage`, `GET /v1/admin/usage`, the dashboard's page and
//! the gauges of the spend alert), and the metrics the alert rules read: what a business
//! sees of what its texts and its AI cost, and what ops are paged on.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use herald_core::services::usage::UsageWatch;
use herald_tests::{
    Tenant, TestApp,
    app::{no_redirects, test_config},
    eventually,
    providers::{ModelMock, ModelReply, Reply, TwilioMock, twilio_segments},
    views::api_error,
};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);
const MODEL: &str = "usage-model";
const ANSWER: &str = "We open at nine tomorrow.";

use herald_tests::prometheus_sample as sample;

async fn metrics(app: &TestApp) -> String {
    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap()
}

/// The API and the worker with Twilio and one model on loopback.
async fn setup() -> (TestApp, TwilioMock, ModelMock) {
    let twilio = TwilioMock::start().await;
    let model = ModelMock::start(MODEL, ModelReply::Text(ANSWER.to_owned())).await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    config.llm = Some(model.endpoint());
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    (app, twilio, model)
}

/// Midnight starting `date` in `zone`.
fn local_midnight(zone: Tz, date: NaiveDate) -> DateTime<Utc> {
    zone.from_local_datetime(&date.and_hms_opt(0, 0, 0).unwrap())
        .earliest()
        .unwrap()
        .with_timezone(&Utc)
}

fn today_in(zone: Tz) -> NaiveDate {
    Utc::now().with_timezone(&zone).date_naive()
}

/// The tenant's message ids not in `known`.
async fn ids_besides(app: &TestApp, tenant: &Tenant, known: &[String]) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM messages WHERE tenant_id = $1 AND NOT (id = ANY($2))")
        .bind(&tenant.id)
        .bind(known)
        .fetch_all(&app.db)
        .await
        .unwrap()
}

/// Moves when these messages were accepted, as if they had come in at `at`.
async fn accepted_at(app: &TestApp, ids: &[String], at: DateTime<Utc>) {
    sqlx::query("UPDATE messages SET created_at = $2 WHERE id = ANY($1)")
        .bind(ids)
        .bind(at)
        .execute(&app.db)
        .await
        .unwrap();
}

/// `phone` texts the tenant and its AI reply reaches Twilio.
async fn ask(app: &TestApp, twilio: &TwilioMock, tenant: &Tenant, phone: &str) {
    app.text(twilio, tenant, phone, "When do you open tomorrow?")
        .await;
    twilio.wait_for_sms(phone, ANSWER, WAIT).await;
}

/// Twilio's own count of the segments of what it took for these recipients.
fn segments_twilio_took(twilio: &TwilioMock, recipients: &[&str]) -> i64 {
    recipients
        .iter()
        .flat_map(|to| twilio.created_to(to))
        .map(|m| i64::from(twilio_segments(&m.body)))
        .sum()
}

fn day<'a>(usage: &'a Value, date: NaiveDate) -> &'a Value {
    usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["date"] == date.to_string())
        .unwrap_or_else(|| panic!("no {date} in {usage}"))
}

#[tokio::test]
async fn usage_by_day_matches_what_twilio_and_the_model_saw_on_each_side_of_the_tenants_midnight() {
    let (app, twilio, model) = setup().await;
    // A quarter-hour zone: a day boundary no whole-hour arithmetic would find.
    let zone: Tz = "Asia/Kathmandu".parse().unwrap();
    let tenant = app.tenant_with(json!({"timezone": zone.name()})).await;
    let rejected = "+15551400003";
    twilio.always_for(
        rejected,
        Reply::TwilioError {
            status: 400,
            code: 21211,
            message: "The 'To' number is not a valid phone number.".into(),
        },
    );

    // Before the boundary: two SMS (GSM-7 and UCS-2, two segments each), one Twilio refuses,
    // and a question answered by the model.
    let before = ["+15551400001", "+15551400002", "+15551400009"];
    let sent = [
        app.post_sms(&tenant, before[0], &"a".repeat(200)).await,
        app.post_sms(&tenant, before[1], &"ж".repeat(80)).await,
    ];
    let refused = app.post_sms(&tenant, rejected, "Your code is 1234").await;
    for m in &sent {
        app.wait_for_status(&tenant, &m.id, "sent", WAIT).await;
    }
    app.wait_for_status(&tenant, &refused.id, "failed", WAIT)
        .await;
    ask(&app, &twilio, &tenant, before[2]).await;
    let first = ids_besides(&app, &tenant, &[]).await;
    assert_eq!(first.len(), 5, "3 SMS, a text in and its reply");

    // After it: one SMS and two questions answered.
    let after = ["+15551400004", "+15551400010", "+15551400011"];
    let m = app.post_sms(&tenant, after[0], &"b".repeat(100)).await;
    app.wait_for_status(&tenant, &m.id, "sent", WAIT).await;
    ask(&app, &twilio, &tenant, after[1]).await;
    ask(&app, &twilio, &tenant, after[2]).await;
    let second = ids_besides(&app, &tenant, &first).await;
    assert_eq!(second.len(), 5, "1 SMS, two texts in and their replies");

    // The first lot came in a minute before yesterday began in the tenant's zone, the second
    // a minute after.
    let today = today_in(zone);
    let yesterday = today.pred_opt().unwrap();
    let day_before = yesterday.pred_opt().unwrap();
    let boundary = local_midnight(zone, yesterday);
    accepted_at(&app, &first, boundary - chrono::Duration::minutes(1)).await;
    accepted_at(&app, &second, boundary + chrono::Duration::minutes(1)).await;

    let (status, usage) = app
        .get(
            &format!("/v1/usage?from={day_before}&to={today}"),
            &tenant.api_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    let dates: Vec<&str> = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["date"].as_str().unwrap())
        .collect();
    let expected_dates = [day_before, yesterday, today].map(|d| d.to_string());
    assert_eq!(dates, expected_dates, "every day, oldest first");

    let reported = model.reported_usage();
    assert_eq!(reported.len(), 3, "the model answered three times");
    let tokens =
        |calls: &[Value], key: &str| calls.iter().map(|u| u[key].as_i64().unwrap()).sum::<i64>();
    let (one, two) = reported.split_at(1);

    let d0 = day(&usage, day_before);
    assert_eq!(
        d0["sms_segments"].as_i64().unwrap(),
        segments_twilio_took(&twilio, &before),
        "segments as Twilio counts them, the refused SMS not billed: {d0}"
    );
    assert_eq!(d0["sms_segments"], 2 + 2 + 1, "{d0}");
    assert_eq!(d0["messages"]["sms"]["sent"], 3, "{d0}");
    assert_eq!(d0["messages"]["sms"]["failed"], 1, "{d0}");
    assert_eq!(d0["messages"]["sms"]["received"], 1, "{d0}");
    assert_eq!(
        d0["model_calls"],
        json!([{"model": MODEL, "calls": 1,
                "prompt_tokens": tokens(one, "prompt_tokens"),
                "completion_tokens": tokens(one, "completion_tokens")}])
    );
    assert_eq!(d0["canned_replies"], 0);

    let d1 = day(&usage, yesterday);
    assert_eq!(
        d1["sms_segments"].as_i64().unwrap(),
        segments_twilio_took(&twilio, &after),
        "{d1}"
    );
    assert_eq!(d1["messages"]["sms"]["sent"], 3, "{d1}");
    assert_eq!(d1["messages"]["sms"]["received"], 2, "{d1}");
    assert_eq!(d1["messages"]["sms"]["failed"], 0, "{d1}");
    assert_eq!(
        d1["model_calls"],
        json!([{"model": MODEL, "calls": 2,
                "prompt_tokens": tokens(two, "prompt_tokens"),
                "completion_tokens": tokens(two, "completion_tokens")}])
    );

    let d2 = day(&usage, today);
    assert_eq!(d2["sms_segments"], 0, "nothing today: {d2}");
    assert_eq!(d2["model_calls"], json!([]));
    for channel in ["sms", "email", "webhook"] {
        let counts = d2["messages"][channel].as_object().unwrap();
        assert!(
            counts.contains_key("delivered") && counts.values().all(|n| n == 0),
            "{d2}"
        );
    }

    // Without a range: the last 30 days, today last.
    let (status, last30) = app.get("/v1/usage", &tenant.api_key).await;
    assert_eq!(status, StatusCode::OK);
    let days = last30["data"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    assert_eq!(days[29]["date"], today.to_string());
    assert_eq!(day(&last30, day_before), d0);
}

#[tokio::test]
async fn bad_usage_ranges_are_refused_naming_the_field() {
    let app = TestApp::start().await;
    let tenant = app.tenant().await;
    for (query, field) in [
        ("from=2026-13-01", "from"),
        ("to=yesterday", "to"),
        ("from=2026-03-02&to=2026-03-01", "from"),
        ("from=2025-01-01&to=2026-01-02", "to"),
        ("since=2026-01-01", "since"),
    ] {
        let (status, body) = app
            .get(&format!("/v1/usage?{query}"), &tenant.api_key)
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(
            api_error(&body).field.as_deref(),
            Some(field),
            "{query}: {body}"
        );
    }
    // 366 days is the most, and a day with nothing is there with zeros.
    let (status, body) = app
        .get("/v1/usage?from=2025-01-01&to=2026-01-01", &tenant.api_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 366);
    assert_eq!(body["data"][0]["sms_segments"], 0);

    let (status, body) = app
        .get("/v1/admin/usage?tenant_id=nope", &app.ops_token)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(api_error(&body).field.as_deref(), Some("tenant_id"));
    let (status, _) = app
        .get(
            "/v1/admin/usage?tenant_id=ten_01AAAAAAAAAAAAAAAAAAAAAAAA",
            &app.ops_token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/v1/admin/usage", &tenant.api_key).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a tenant key is no ops token"
    );
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_usage_and_the_operator_sees_each_on_the_api_and_the_dashboard()
{
    let (app, twilio, _model) = setup().await;
    let a = app.tenant().await;
    let b = app
        .tenant_with(json!({"timezone": "America/New_York"}))
        .await;
    for i in 0..3 {
        let m = app
            .post_sms(&a, &format!("+1555150000{i}"), "Your table is ready")
            .await;
        app.wait_for_status(&a, &m.id, "sent", WAIT).await;
    }
    let m = app.post_sms(&b, "+15551510000", "Hi from B").await;
    app.wait_for_status(&b, &m.id, "sent", WAIT).await;
    let _ = twilio;

    let sent_today = |usage: &Value| -> i64 {
        usage["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["messages"]["sms"]["sent"].as_i64().unwrap())
            .sum()
    };
    let (_, usage_b) = app.get("/v1/usage", &b.api_key).await;
    assert_eq!(sent_today(&usage_b), 1, "B's own, none of A's: {usage_b}");
    let (_, usage_a) = app.get("/v1/usage", &a.api_key).await;
    assert_eq!(sent_today(&usage_a), 3);

    let (status, all) = app.get("/v1/admin/usage", &app.ops_token).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let of = |id: &str| {
        all["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tenant_id"] == id)
            .unwrap_or_else(|| panic!("{id} in {all}"))
            .clone()
    };
    assert_eq!(sent_today(&json!({"data": of(&a.id)["days"]})), 3);
    assert_eq!(sent_today(&json!({"data": of(&b.id)["days"]})), 1);
    assert_eq!(of(&b.id)["timezone"], "America/New_York");
    let (_, only_b) = app
        .get(
            &format!("/v1/admin/usage?tenant_id={}", b.id),
            &app.ops_token,
        )
        .await;
    assert_eq!(only_b["data"].as_array().unwrap().len(), 1);
    assert_eq!(only_b["data"][0]["tenant_id"], b.id);

    // The dashboard: one row per tenant with its 30 days' totals, and one tenant's days.
    let http = no_redirects();
    let cookie = app.ops_login(&http).await;
    let page = |path: String| {
        let http = http.clone();
        let cookie = cookie.clone();
        async move {
            let r = http
                .get(path)
                .header(header::COOKIE, cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.text().await.unwrap()
        }
    };
    let html = page(app.url("/ops/usage")).await;
    let row_of = |html: &str, id: &str| {
        let start = html
            .find(&format!("data-tenant=\"{id}\""))
            .unwrap_or_else(|| panic!("a row for {id}"));
        html[start..start + html[start..].find("</tr>").unwrap()].to_owned()
    };
    // Accepted, then sent: the first two number cells.
    let numbers = |row: &str| -> Vec<i64> {
        row.split("<td class=\"num\">")
            .skip(1)
            .map(|c| c[..c.find('<').unwrap()].parse().unwrap())
            .collect()
    };
    assert_eq!(numbers(&row_of(&html, &a.id))[..2], [3, 3]);
    assert_eq!(numbers(&row_of(&html, &b.id))[..2], [1, 1]);
    let html = page(app.url(&format!("/ops/usage?tenant_id={}", b.id))).await;
    assert_eq!(
        html.matches("<tr><td class=\"nowrap\">").count(),
        30,
        "{html}"
    );
    assert!(!html.contains(&a.id), "only B's page");
}

/// A tenant's day: `n` SMS to fresh numbers, sent, then moved to `at`.
async fn sms_day(app: &TestApp, tenant: &Tenant, n: usize, tag: &str, at: DateTime<Utc>) {
    let mut ids = vec![];
    for i in 0..n {
        let m = app
            .post_sms(tenant, &format!("+1555{tag}{i:03}"), "Reminder: your visit")
            .await;
        app.wait_for_status(tenant, &m.id, "sent", WAIT).await;
        ids.push(m.id);
    }
    accepted_at(app, &ids, at).await;
}

#[tokio::test]
async fn a_tenant_whose_day_runs_over_twice_its_average_shows_it_and_another_does_not() {
    let (app, _twilio, _model) = setup().await;
    let spiking = app.tenant().await;
    let steady = app.tenant_with(json!({"timezone": "Asia/Tokyo"})).await;
    let quiet = app.tenant().await;
    for (tenant, zone, today_n, tag) in [
        (&spiking, chrono_tz::UTC, 4, "161"),
        (&steady, chrono_tz::Asia::Tokyo, 1, "162"),
    ] {
        let today = today_in(zone);
        for back in 1..=7 {
            let date = today - chrono::Duration::days(back);
            let noon = local_midnight(zone, date) + chrono::Duration::hours(12);
            sms_day(&app, tenant, 1, &format!("{tag}{back}"), noon).await;
        }
        // Today's are accepted now.
        for i in 0..today_n {
            let m = app
                .post_sms(tenant, &format!("+1555{tag}9{i:02}"), "Sale today")
                .await;
            app.wait_for_status(tenant, &m.id, "sent", WAIT).await;
        }
    }

    // A tenant made today has no whole day to compare with: no average, so no jump.
    let mut watch = UsageWatch::default();
    watch.record(&app.db, Utc::now()).await.unwrap();
    let text = metrics(&app).await;
    assert_eq!(
        sample(
            &text,
            "herald_usage_daily_average",
            &[
                &format!("tenant_id=\"{}\"", spiking.id),
                "kind=\"sms_segments\""
            ]
        ),
        Some(0.0),
        "{text}"
    );
    // Both have been customers for a month.
    sqlx::query("UPDATE tenants SET created_at = now() - interval '30 days'")
        .execute(&app.db)
        .await
        .unwrap();
    let mut watch = UsageWatch::default();
    watch.record(&app.db, Utc::now()).await.unwrap();
    let text = metrics(&app).await;
    let gauge = |name: &str, t: &Tenant| {
        sample(
            &text,
            name,
            &[&format!("tenant_id=\"{}\"", t.id), "kind=\"sms_segments\""],
        )
    };
    assert_eq!(gauge("herald_usage_today", &spiking), Some(4.0), "{text}");
    assert_eq!(gauge("herald_usage_daily_average", &spiking), Some(1.0));
    assert_eq!(gauge("herald_usage_today", &steady), Some(1.0));
    assert_eq!(gauge("herald_usage_daily_average", &steady), Some(1.0));
    assert_eq!(
        gauge("herald_usage_today", &quiet),
        None,
        "no usage, no series"
    );
    assert_eq!(
        sample(
            &text,
            "herald_usage_today",
            &[
                &format!("tenant_id=\"{}\"", spiking.id),
                "kind=\"model_tokens\""
            ]
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn the_metrics_the_alert_rules_read_follow_a_message_and_the_processes() {
    let twilio = TwilioMock::start().await;
    // The only model fails: the reply is the canned text.
    let model = ModelMock::start(MODEL, ModelReply::Status(500)).await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    config.llm = Some(model.endpoint());
    let mut app = TestApp::start_with(config).await;
    let tenant = app.tenant().await;

    // No worker yet: the due SMS waits, and the oldest due job's age grows.
    let m = app.post_sms(&tenant, "+15551700001", "Hello").await;
    let waited = eventually(WAIT, "the oldest due job is a second old", || async {
        let q = app.queue_stats("deliveries").await;
        (q.oldest_due_seconds >= 1.0).then_some(q)
    })
    .await;
    assert_eq!(waited.pending, 1, "{waited:?}");
    let text = metrics(&app).await;
    let age = sample(
        &text,
        "herald_queue_oldest_due_seconds",
        &["queue=\"deliveries\""],
    )
    .unwrap();
    assert!(age >= 1.0, "{text}");
    assert!(
        sample(&text, "herald_worker_heartbeat_timestamp_seconds", &[]).is_none(),
        "no worker, no heartbeat"
    );

    app.start_worker();
    app.start_scheduler();
    app.wait_for_status(&tenant, &m.id, "sent", WAIT).await;
    app.text(&twilio, &tenant, "+15551700002", "Are you open?")
        .await;
    eventually(WAIT, "the canned reply goes out", || async {
        (!twilio.sent_to("+15551700002").is_empty()).then_some(())
    })
    .await;

    let text = eventually(WAIT, "every gauge is there", || async {
        let text = metrics(&app).await;
        let now = Utc::now().timestamp() as f64;
        let recent =
            |name: &str, label: &str| sample(&text, name, &[label]).is_some_and(|t| now - t < 10.0);
        let all = recent(
            "herald_worker_heartbeat_timestamp_seconds",
            "queue=\"deliveries\"",
        ) && recent(
            "herald_worker_heartbeat_timestamp_seconds",
            "queue=\"ai-replies\"",
        ) && ["outbox", "events", "reconcile", "daily"]
            .iter()
            .all(|task| {
                recent(
                    "herald_scheduler_last_run_timestamp_seconds",
                    &format!("task=\"{task}\""),
                )
            })
            && sample(
                &text,
                "herald_queue_oldest_due_seconds",
                &["queue=\"deliveries\""],
            ) == Some(0.0);
        all.then_some(text)
    })
    .await;
    assert_eq!(
        sample(
            &text,
            "herald_messages_finished_total",
            &["channel=\"sms\"", "status=\"sent\""]
        ),
        Some(2.0),
        "the SMS and the canned reply: {text}"
    );
    assert_eq!(
        sample(
            &text,
            "herald_delivery_lateness_seconds_count",
            &["channel=\"sms\""]
        ),
        Some(2.0)
    );
    let late = sample(
        &text,
        "herald_delivery_lateness_seconds_sum",
        &["channel=\"sms\""],
    )
    .unwrap();
    assert!(late >= 1.0, "the first SMS waited for a worker: {late}");
    assert_eq!(
        sample(
            &text,
            "herald_model_calls_total",
            &["role=\"primary\"", "outcome=\"failed\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "herald_canned_replies_total",
            &["reason=\"models_failed\""]
        ),
        Some(1.0)
    );
    let (_, usage) = app.get("/v1/usage", &tenant.api_key).await;
    let canned: i64 = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["canned_replies"].as_i64().unwrap())
        .sum();
    assert_eq!(canned, 1, "the canned reply is in the tenant's usage too");
}
