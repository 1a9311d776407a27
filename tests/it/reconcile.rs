//! Zero duplicates after a crash: an attempt whose outcome was never recorded is resolved by
//! asking the provider before the message is sent again.

use std::time::Duration;

use herald_core::Config;
use herald_tests::{
    Tenant, TestApp,
    app::test_config,
    eventually,
    process::{Proc, herald_env},
    providers::{Reply, TwilioMock},
};
use reqwest::StatusCode;

/// The API in this process; workers are real processes, so they can be killed.
async fn api_with_twilio(twilio: &TwilioMock) -> (TestApp, Config) {
    let mut config = test_config().await;
    twilio.configure(&mut config);
    config.lease = Duration::from_millis(1500);
    config.provider_timeout = Duration::from_secs(10);
    config.worker_concurrency = 100;
    let app = TestApp::start_with(config).await;
    let config = (*app.config).clone();
    (app, config)
}

async fn send_many(
    app: &TestApp,
    tenant: &Tenant,
    n: usize,
    prefix: &str,
) -> Vec<(String, String)> {
    let mut sent = vec![];
    for i in 0..n {
        let to = format!("{prefix}{i:03}");
        let m = app
            .post_sms(tenant, &to, &format!("Your table {i} is ready"))
            .await;
        sent.push((to, m.id.clone()));
    }
    sent
}

async fn wait_in_flight(twilio: &TwilioMock, n: usize) {
    eventually(
        Duration::from_secs(30),
        "every send is in flight at Twilio",
        || async { (twilio.received().len() >= n).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_worker_killed_with_50_sms_in_flight_sends_each_exactly_once_after_a_restart() {
    let twilio = TwilioMock::start().await;
    let (app, config) = api_with_twilio(&twilio).await;
    let tenant = app.tenant().await;
    // Twilio takes every message at once but answers only after 3 s.
    twilio.script(std::iter::repeat_n(Reply::Hang(Duration::from_secs(3)), 50));
    let mut worker = Proc::start("herald-worker", &herald_env(&config));
    let sent = send_many(&app, &tenant, 50, "+1555610").await;
    wait_in_flight(&twilio, 50).await;
    worker.signal("KILL").await;
    worker.wait().await;

    let _restarted = Proc::start("herald-worker", &herald_env(&config));
    for (to, id) in &sent {
        let m = app
            .wait_for_status(&tenant, id, "sent", Duration::from_secs(60))
            .await;
        assert_eq!(
            twilio.created_to(to).len(),
            1,
            "{to} got the text {} times",
            twilio.created_to(to).len()
        );
        let reconciled = m
            .details()
            .iter()
            .any(|d| d.starts_with("reconciled: twilio already had"));
        assert!(reconciled, "the reconciliation is not in the events: {m}");
        assert_eq!(
            m.provider_message_id.as_deref(),
            Some(twilio.created_to(to)[0].sid.as_str()),
            "{m}"
        );
    }
    assert_eq!(twilio.received().len(), 50, "no send was repeated");
}

#[tokio::test]
async fn while_twilio_cannot_be_asked_nothing_is_sent_again_and_all_go_once_it_answers() {
    let twilio = TwilioMock::start().await;
    let (app, mut config) = api_with_twilio(&twilio).await;
    config.retry_base = Duration::from_millis(200);
    config.retry_max = Duration::from_millis(500);
    let tenant = app.tenant().await;
    twilio.script(std::iter::repeat_n(Reply::Hang(Duration::from_secs(3)), 10));
    let mut worker = Proc::start("herald-worker", &herald_env(&config));
    let sent = send_many(&app, &tenant, 10, "+1555620").await;
    wait_in_flight(&twilio, 10).await;
    worker.signal("KILL").await;
    worker.wait().await;

    twilio.list_fails(Some(503));
    let _restarted = Proc::start("herald-worker", &herald_env(&config));
    // Every message has asked and been told nothing, and none was sent again.
    eventually(
        Duration::from_secs(30),
        "each message asked Twilio twice",
        || async { (twilio.list_calls() >= 20).then_some(()) },
    )
    .await;
    let (_, first) = &sent[0];
    let m = app.message(&tenant, first).await;
    assert!(m.status == "retrying" || m.status == "sending", "{m}");
    assert!(
        m.details()
            .iter()
            .any(|d| d.contains("could not ask twilio whether an earlier attempt arrived")),
        "{m}"
    );
    assert_eq!(
        twilio.received().len(),
        10,
        "a message was sent again before Twilio answered"
    );

    twilio.list_fails(None);
    for (to, id) in &sent {
        app.wait_for_status(&tenant, id, "sent", Duration::from_secs(30))
            .await;
        assert_eq!(twilio.created_to(to).len(), 1, "{to}");
    }
    assert_eq!(twilio.received().len(), 10);
}

#[tokio::test]
async fn a_send_that_never_reached_twilio_is_sent_once_after_the_restart() {
    let twilio = TwilioMock::start().await;
    let (app, config) = api_with_twilio(&twilio).await;
    let tenant = app.tenant().await;
    twilio.script([Reply::Lost(Duration::from_secs(30))]);
    let mut worker = Proc::start("herald-worker", &herald_env(&config));
    let sent = send_many(&app, &tenant, 1, "+1555630").await;
    wait_in_flight(&twilio, 1).await;
    worker.signal("KILL").await;
    worker.wait().await;
    assert!(twilio.created_to(&sent[0].0).is_empty());

    let _restarted = Proc::start("herald-worker", &herald_env(&config));
    let m = app
        .wait_for_status(&tenant, &sent[0].1, "sent", Duration::from_secs(30))
        .await;
    assert_eq!(twilio.created_to(&sent[0].0).len(), 1);
    assert!(
        m.details()
            .iter()
            .any(|d| d.starts_with("reconciled: twilio has no message")),
        "{m}"
    );
}

#[tokio::test]
async fn a_graceful_stop_records_what_is_in_flight_and_leaves_nothing_to_reconcile() {
    let twilio = TwilioMock::start().await;
    let (app, config) = api_with_twilio(&twilio).await;
    let tenant = app.tenant().await;
    twilio.script(std::iter::repeat_n(Reply::Hang(Duration::from_secs(2)), 20));
    let mut worker = Proc::start("herald-worker", &herald_env(&config));
    let sent = send_many(&app, &tenant, 20, "+1555640").await;
    wait_in_flight(&twilio, 20).await;
    worker.signal("TERM").await;
    let code = tokio::time::timeout(Duration::from_secs(20), worker.wait())
        .await
        .expect("the worker stops within its shutdown bound");
    assert_eq!(code, Some(0));
    // No other worker runs: what is recorded, the stopping worker recorded.
    for (to, id) in &sent {
        let m = app.message(&tenant, id).await;
        assert_eq!(m.status, "sent", "{m}");
        assert_eq!(twilio.created_to(to).len(), 1);
        assert!(
            !m.details().iter().any(|d| d.starts_with("reconciled")),
            "{m}"
        );
    }
}

#[tokio::test]
async fn the_log_provider_finds_its_own_record_of_an_attempt_whose_outcome_was_lost() {
    let mut app = TestApp::start().await;
    app.start_worker();
    let tenant = app.tenant().await;
    let m = app.post_sms(&tenant, "+15556500001", "logged once").await;
    let id = m.id.clone();
    app.wait_for_status(&tenant, &id, "sent", Duration::from_secs(10))
        .await;
    // As if the worker had died after the log provider recorded the send and before the
    // outcome was written, and Redis had lost the job: a stale `sending` claim.
    sqlx::query(
        "UPDATE messages SET status = 'sending', provider_message_id = NULL,
                updated_at = now() - interval '1 hour' WHERE id = $1",
    )
    .bind(&id)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query("DELETE FROM provider_refs WHERE message_id = $1")
        .bind(&id)
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query("UPDATE log_deliveries SET at = now() - interval '1 hour' WHERE message_id = $1")
        .bind(&id)
        .execute(&app.db)
        .await
        .unwrap();
    let row = herald_core::store::messages::get_any(&app.db, &id)
        .await
        .unwrap()
        .unwrap();
    let queue = herald_core::queue::deliveries(&app.config, app.redis.clone());
    let job = herald_core::domain::jobs::DeliveryJob::new(
        &row.id,
        &row.tenant_id,
        row.channel,
        &row.to_addr,
    );
    queue
        .push(&row.id, &job, herald_core::queue::now_ms())
        .await
        .unwrap();

    let m = eventually(
        Duration::from_secs(20),
        "the message is sent again, on paper",
        || async {
            let m = app.message(&tenant, &id).await;
            (m.status == "sent"
                && m.details()
                    .iter()
                    .any(|d| d.starts_with("reconciled: log already had")))
            .then_some(m)
        },
    )
    .await;
    let logged: i64 =
        sqlx::query_scalar("SELECT count(*) FROM log_deliveries WHERE message_id = $1")
            .bind(&id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(logged, 1, "the log provider recorded a second send: {m}");
}

#[tokio::test]
async fn a_status_callback_for_a_lost_answer_finds_its_message_by_the_url() {
    let twilio = TwilioMock::start().await;
    let (app, _config) = api_with_twilio(&twilio).await;
    let tenant = app.tenant().await;
    let m = app.post_sms(&tenant, "+15556600001", "waiting").await;
    let id = m.id.clone();
    // Its attempt is under way and its answer will never come back.
    sqlx::query("UPDATE messages SET status = 'sending', attempts = 1 WHERE id = $1")
        .bind(&id)
        .execute(&app.db)
        .await
        .unwrap();
    let report = [
        ("MessageSid", "SMlostanswer0000000000000000000001"),
        ("MessageStatus", "delivered"),
        ("AccountSid", twilio.account_sid.as_str()),
    ];
    // Without the message in the URL, an unknown sid moves nothing.
    let (status, _) = app
        .twilio_post("/v1/inbound/twilio/status", &twilio.auth_token, &report)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.message(&tenant, &id).await.status, "sending");
    // With it (as Herald sends the callback URL), the report settles the attempt.
    let (status, _) = app
        .twilio_post(
            &format!("/v1/inbound/twilio/status?message_id={id}&run=0"),
            &twilio.auth_token,
            &report,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let m = app.message(&tenant, &id).await;
    assert_eq!(m.status, "delivered", "{m}");
    assert_eq!(
        m.provider_message_id.as_deref(),
        Some("SMlostanswer0000000000000000000001")
    );
    // A forged URL for another run does nothing.
    let other = app.post_sms(&tenant, "+15556600002", "other").await;
    let other_id = other.id.as_str();
    sqlx::query("UPDATE messages SET status = 'sending' WHERE id = $1")
        .bind(other_id)
        .execute(&app.db)
        .await
        .unwrap();
    app.twilio_post(
        &format!("/v1/inbound/twilio/status?message_id={other_id}&run=7"),
        &twilio.auth_token,
        &[
            ("MessageSid", "SMlostanswer0000000000000000000002"),
            ("MessageStatus", "delivered"),
        ],
    )
    .await;
    assert_eq!(app.message(&tenant, other_id).await.status, "sending");
}
