//! SMS leave at their sender's pace, shared by every worker; a due transactional message goes
//! before a tenant's bulk backlog, and one tenant's burst does not hold another's message.

use std::time::Duration;

use chrono::{DateTime, Utc};
use herald_tests::{
    Tenant, TestApp,
    app::test_config,
    eventually, eventually_ok,
    providers::{Received, TwilioMock},
    views::{GroupSendAccepted, GroupView},
};
use reqwest::StatusCode;
use serde_json::json;

fn parse(t: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(t)
        .expect("an RFC 3339 time")
        .with_timezone(&Utc)
}

/// Arrivals at Twilio from this tenant's number, in order.
fn arrivals_from(twilio: &TwilioMock, tenant: &Tenant) -> Vec<Received> {
    let from = tenant.sms_from.clone().unwrap_or_default();
    let mut got: Vec<Received> = twilio
        .received()
        .into_iter()
        .filter(|r| r.form.get("From") == Some(&from))
        .collect();
    got.sort_by_key(|r| r.at);
    got
}

/// A group of `n` contacts with their own numbers, written straight to Postgres (the API
/// adds members one by one).
async fn group_of(app: &TestApp, tenant: &Tenant, n: i64) -> String {
    let group: GroupView = app
        .post_as(
            "/v1/groups",
            &tenant.api_key,
            &json!({"name": "Everyone"}),
            StatusCode::CREATED,
        )
        .await;
    let salt = herald_tests::unique("");
    sqlx::query(
        "INSERT INTO contacts (id, tenant_id, phone)
         SELECT 'ct_' || substr(md5($2 || g::text), 1, 26), $1, '+1555' || lpad(g::text, 7, '0')
         FROM generate_series(1, $3) AS g",
    )
    .bind(&tenant.id)
    .bind(&salt)
    .bind(n)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO group_members (group_id, contact_id)
         SELECT $1, id FROM contacts WHERE tenant_id = $2",
    )
    .bind(&group.id)
    .bind(&tenant.id)
    .execute(&app.db)
    .await
    .unwrap();
    group.id
}

async fn send_to_group(app: &TestApp, tenant: &Tenant, group: &str, body: &str) -> i64 {
    let sent: GroupSendAccepted = app
        .post_as(
            &format!("/v1/groups/{group}/messages"),
            &tenant.api_key,
            &json!({"channel": "sms", "body": body}),
            StatusCode::ACCEPTED,
        )
        .await;
    sent.recipients
}

#[tokio::test]
async fn two_workers_sharing_a_long_code_send_one_segment_a_second_between_them() {
    let twilio = TwilioMock::start().await;
    let mut app = TestApp::start_with_twilio(test_config().await, &twilio).await;
    app.start_worker();
    // No sms_mps: the number's class, a long code, gives 1 segment per second.
    let tenant = app.tenant_with(json!({"sms_mps": null})).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let m = app
            .post_sms(&tenant, &format!("+1555301{i:04}"), "Your table is ready")
            .await;
        ids.push(m.id);
    }

    // The last one waits for the nine before it, and says so.
    eventually_ok(
        Duration::from_secs(5),
        "the last message expected several seconds ahead",
        || async {
            let m = app.message(&tenant, &ids[9]).await;
            let ahead = m
                .expected_at
                .as_deref()
                .map(|t| (parse(t) - Utc::now()).num_milliseconds());
            match ahead {
                Some(ms) if ms >= 4_000 => Ok(()),
                other => Err(format!("expected {other:?} ms ahead ({})", m.status)),
            }
        },
    )
    .await;

    let arrivals = eventually(Duration::from_secs(30), "ten SMS at Twilio", || async {
        let got = arrivals_from(&twilio, &tenant);
        (got.len() >= 10).then_some(got)
    })
    .await;
    assert_eq!(arrivals.len(), 10, "each message sent once");
    // Slots are a second apart when taken; the calls follow them within what a busy machine
    // takes to pass a message on.
    for pair in arrivals.windows(2) {
        let gap = (pair[1].at - pair[0].at).num_milliseconds();
        assert!(gap >= 700, "two SMS {gap} ms apart from a 1/s sender");
    }
    let span = (arrivals[9].at - arrivals[0].at).num_milliseconds();
    assert!(span >= 8_700, "ten SMS within {span} ms from a 1/s sender");
    let m = app
        .wait_for_status(&tenant, &ids[9], "sent", Duration::from_secs(10))
        .await;
    assert_eq!(
        m.expected_at, None,
        "a message that left is expected no more"
    );
}

#[tokio::test]
async fn a_reminder_due_amid_a_10000_member_group_send_of_its_tenant_leaves_within_one_slot() {
    let twilio = TwilioMock::start().await;
    let app = TestApp::start_with_twilio(test_config().await, &twilio).await;
    // A slot of five seconds: long beside the time a worker takes to pass a message on, even
    // on a machine busy with the rest of the suite (at two seconds, a loaded run once let a
    // second bulk SMS take the slot while the reminder was still on its way to the queue).
    let tenant = app.tenant_with(json!({"sms_mps": 0.2})).await;
    let group = group_of(&app, &tenant, 10_000).await;
    assert_eq!(
        send_to_group(&app, &tenant, &group, "Our spring sale starts today").await,
        10_000
    );
    // The send is under way at its pace, the rest of its 10,000 waiting.
    eventually(
        Duration::from_secs(30),
        "the group send going out",
        || async { (arrivals_from(&twilio, &tenant).len() >= 2).then_some(()) },
    )
    .await;

    let posted = Utc::now();
    let reminder = app
        .post_sms(
            &tenant,
            "+15553029999",
            "Reminder: dentist tomorrow at 9:00",
        )
        .await;
    assert_eq!(reminder.priority, "transactional");
    let arrived = eventually(Duration::from_secs(15), "the reminder sent", || async {
        arrivals_from(&twilio, &tenant)
            .into_iter()
            .find(|r| r.form.get("To").map(String::as_str) == Some("+15553029999"))
    })
    .await;
    let bulk_between = arrivals_from(&twilio, &tenant)
        .iter()
        .filter(|r| r.at > posted && r.at < arrived.at)
        .count();
    assert!(
        bulk_between <= 1,
        "{bulk_between} bulk SMS went before the reminder"
    );
    let waited = (arrived.at - posted).num_milliseconds();
    assert!(
        waited < 5_000 + 1_000,
        "the reminder waited {waited} ms behind a 5 s slot sender's bulk backlog"
    );
}

#[tokio::test]
async fn a_tenants_message_due_amid_another_tenants_10000_message_burst_leaves_within_a_second() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    // Tenant A may send as fast as the workers go: its burst competes for them.
    config.tenant_send_rate = 100_000;
    let app = TestApp::start_with_twilio(config, &twilio).await;
    let a = app.tenant_with(json!({"sms_mps": 10_000})).await;
    let b = app.tenant().await;
    let group = group_of(&app, &a, 10_000).await;
    assert_eq!(send_to_group(&app, &a, &group, "Flash sale").await, 10_000);
    eventually(
        Duration::from_secs(30),
        "tenant A's burst going out",
        || async { (arrivals_from(&twilio, &a).len() >= 100).then_some(()) },
    )
    .await;

    let posted = Utc::now();
    app.post_sms(&b, "+15553039999", "Your order has shipped")
        .await;
    let arrived = eventually(Duration::from_secs(10), "tenant B's SMS sent", || async {
        arrivals_from(&twilio, &b).into_iter().next()
    })
    .await;
    let a_sent = arrivals_from(&twilio, &a).len();
    assert!(
        a_sent < 10_000,
        "tenant A's burst was over ({a_sent} sent) before B's message went: nothing was tested"
    );
    let waited = (arrived.at - posted).num_milliseconds();
    assert!(
        waited < 1_000,
        "tenant B's message waited {waited} ms behind tenant A's burst"
    );
}

#[tokio::test]
async fn a_tenants_sms_mps_sets_its_pace_counted_in_segments() {
    let twilio = TwilioMock::start().await;
    let app = TestApp::start_with_twilio(test_config().await, &twilio).await;
    let tenant = app.tenant_with(json!({"sms_mps": 5})).await;
    let long = "Your appointment is confirmed. ".repeat(6);
    let mut bodies = vec![long.as_str(), "See you soon", "Reply STOP to opt out"];
    bodies.push(long.as_str());
    for (i, body) in bodies.iter().enumerate() {
        let m = app
            .post_sms(&tenant, &format!("+1555304{i:04}"), body)
            .await;
        assert_eq!(m.segments, Some(if body.len() > 160 { 2 } else { 1 }));
    }
    let arrivals = eventually(Duration::from_secs(15), "four SMS at Twilio", || async {
        let got = arrivals_from(&twilio, &tenant);
        (got.len() >= 4).then_some(got)
    })
    .await;
    // 200 ms a segment at 5 a second: a two-segment text holds the sender 400 ms (give or
    // take what a busy machine takes to pass a message on).
    let slot = |r: &Received| {
        if r.form.get("Body").map_or(0, String::len) > 160 {
            400
        } else {
            200
        }
    };
    for pair in arrivals.windows(2) {
        let gap = (pair[1].at - pair[0].at).num_milliseconds();
        assert!(
            gap >= slot(&pair[0]) - 100,
            "an SMS {gap} ms after one of {} ms at 5 segments a second",
            slot(&pair[0])
        );
    }
    let span = (arrivals[3].at - arrivals[0].at).num_milliseconds();
    let slots: i64 = arrivals[..3].iter().map(slot).sum();
    assert!(
        span >= slots - 100,
        "four SMS within {span} ms, {slots} ms of slots"
    );

    for bad in [json!(0), json!(-1), json!(10_001), json!("fast")] {
        let (status, body) = app
            .post(
                "/v1/admin/tenants",
                &app.ops_token,
                &json!({"name": "Too fast", "sms_mps": bad}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(
            herald_tests::views::api_error(&body).field.as_deref(),
            Some("sms_mps")
        );
    }
}
