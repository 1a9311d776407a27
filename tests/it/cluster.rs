//! Herald on a Redis Cluster: the loopback cluster `scripts/test` starts (three masters, a
//! replica each), with the default sixteen partitions per queue. The acceptance paths
//! (sending, scheduling, retries, dead letters, reconcile), a master killed while messages are
//! due, several worker processes and two schedulers at once, and one tenant's backlog not
//! holding up another's on partitions they share.

use std::{collections::HashSet, time::Duration};

use chrono::Utc;
use herald_core::queue;
use herald_tests::{
    Tenant, TestApp,
    cluster::{self, cluster_config},
    eventually,
    process::{Proc, herald_env},
    providers::{Reply, TwilioMock},
    views::{Replayed, view},
};
use reqwest::StatusCode;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// The API, a worker and a scheduler in this process, on the cluster, sending through `twilio`.
async fn cluster_app(twilio: &TwilioMock, max_attempts: u32) -> TestApp {
    let mut config = cluster_config().await;
    twilio.configure(&mut config);
    config.max_attempts = max_attempts;
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    app.start_scheduler();
    app
}

/// A tenant with a sender of its own (a sender's SMS share one partition: its pace's).
async fn tenant_with_sender(app: &TestApp) -> Tenant {
    app.tenant().await
}

/// Posts an SMS due at `send_at` (now if `None`); returns its id.
async fn post_sms_at(
    app: &TestApp,
    tenant: &Tenant,
    to: &str,
    send_at: Option<chrono::DateTime<Utc>>,
) -> String {
    let mut body = json!({"channel": "sms", "to": to, "body": format!("Hello {to}")});
    if let Some(at) = send_at {
        body["send_at"] = json!(at.to_rfc3339());
    }
    let (status, m) = app.post("/v1/messages", &tenant.api_key, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{m}");
    m["id"].as_str().unwrap().to_owned()
}

/// Waits until each message is `sent` and its number got exactly one SMS.
async fn each_sent_once(
    app: &TestApp,
    twilio: &TwilioMock,
    tenant: &Tenant,
    sent: &[(String, String)],
) {
    for (to, id) in sent {
        app.wait_for_status(tenant, id, "sent", WAIT).await;
        let created = twilio.created_to(to).len();
        assert_eq!(created, 1, "{to} got the text {created} times");
    }
}

/// The masters holding keys of this app's queues.
async fn masters_holding(app: &TestApp) -> HashSet<String> {
    let mut holding = HashSet::new();
    for m in cluster::masters().await {
        let pattern = format!("{{{}:*", app.config.queue_prefix);
        if !cluster::keys_on(&m.addr, &pattern).await.is_empty() {
            holding.insert(m.addr);
        }
    }
    holding
}

#[tokio::test]
async fn on_a_cluster_messages_are_sent_scheduled_retried_and_dead_lettered() {
    let twilio = TwilioMock::start().await;
    let app = cluster_app(&twilio, 3).await;
    // Several tenants (senders), so the work spreads over partitions.
    let tenants = [
        tenant_with_sender(&app).await,
        tenant_with_sender(&app).await,
        tenant_with_sender(&app).await,
    ];
    // The first two calls get a 503: those two messages are retried and then go.
    twilio.script([Reply::unavailable(), Reply::unavailable()]);
    let later = Utc::now() + chrono::Duration::seconds(3);
    let mut sent = vec![Vec::new(), Vec::new(), Vec::new()];
    for i in 0..45 {
        let t = i % 3;
        let to = format!("+1555880{i:04}");
        // A third of them are due in 3 s.
        let at = (i % 3 == 1).then_some(later);
        let id = post_sms_at(&app, &tenants[t], &to, at).await;
        sent[t].push((to, id, at));
    }
    for (t, tenant) in tenants.iter().enumerate() {
        for (to, id, at) in &sent[t] {
            let m = app.wait_for_status(tenant, id, "sent", WAIT).await;
            let calls = twilio.sent_to(to);
            assert_eq!(twilio.created_to(to).len(), 1, "{to}: one SMS");
            if let Some(at) = at {
                assert!(
                    calls.iter().all(|c| c.at >= *at),
                    "{to} was sent before its time: {m}"
                );
            }
        }
    }
    // Each 503 cost one more attempt (of one message, or of two: whichever the calls were).
    let mut attempts = 0;
    for (t, tenant) in tenants.iter().enumerate() {
        for (_, id, _) in &sent[t] {
            attempts += app.message(tenant, id).await.attempts;
        }
    }
    assert_eq!(attempts, 47, "45 messages, two of their attempts retried");
    assert_eq!(twilio.received().len(), 47, "45 sends and 2 refused calls");

    // A number the carrier never reaches ends dead after three attempts; its dead letter is
    // replayed once the number works.
    let tenant = &tenants[0];
    twilio.always_for("+15558809999", Reply::unavailable());
    let doomed = post_sms_at(&app, tenant, "+15558809999", None).await;
    let dead = app.wait_for_status(tenant, &doomed, "dead", WAIT).await;
    assert_eq!(dead.attempts, 3, "{dead}");
    let dl = eventually(WAIT, "the dead letter is listed", || async {
        app.dead_letters(&tenant.api_key, "")
            .await
            .into_iter()
            .find(|d| d.message_id.as_deref() == Some(doomed.as_str()))
    })
    .await;
    twilio.always_for("+15558809999", Reply::Accept);
    let (status, replayed) = app
        .post(
            &format!("/v1/dead-letters/{}/replay", dl.id),
            &tenant.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    let _: Replayed = view(&replayed);
    app.wait_for_status(tenant, &doomed, "sent", WAIT).await;
    assert_eq!(twilio.created_to("+15558809999").len(), 1);

    // The queues' keys are spread over more than one master.
    let holding = masters_holding(&app).await;
    assert!(
        holding.len() >= 2,
        "the queues live on more than one master: {holding:?}"
    );
    app.wait_for_drained_queue(0, WAIT).await;
}

#[tokio::test]
async fn the_reconcile_restores_the_jobs_of_a_partition_that_lost_its_data() {
    let twilio = TwilioMock::start().await;
    let app = cluster_app(&twilio, 3).await;
    let tenant = tenant_with_sender(&app).await;
    let q = queue::deliveries(&app.config, app.redis.clone());
    let part = q.partition_of(tenant.sms_from.as_deref().unwrap());
    let tag = q.hash_tag(part).to_owned();

    let at = Utc::now() + chrono::Duration::hours(1);
    for i in 0..30 {
        post_sms_at(&app, &tenant, &format!("+1555881{i:04}"), Some(at)).await;
    }
    eventually(WAIT, "30 jobs are scheduled", || async {
        (app.deliveries_stats().await.scheduled == 30).then_some(())
    })
    .await;
    // The reconcile has marked every partition (its first pass at start).
    eventually(WAIT, "the first reconcile has run", || async {
        let master = cluster::master_of(&tag).await;
        (!cluster::keys_on(&master.addr, &format!("{tag}:reconciled"))
            .await
            .is_empty())
        .then_some(())
    })
    .await;

    // The master of the sender's partition loses everything of it (a restart without its
    // data), marker included.
    let master = cluster::master_of(&tag).await;
    let keys = cluster::keys_on(&master.addr, &format!("{tag}*")).await;
    assert!(keys.len() > 2, "the partition holds the jobs: {keys:?}");
    let mut conn = cluster::node(&master.addr).await.unwrap();
    let deleted: usize = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted, keys.len(), "the partition's data is gone");

    let stats = eventually(WAIT, "the reconcile queues the 30 jobs again", || async {
        let s = app.deliveries_stats().await;
        (s.scheduled == 30).then_some(s)
    })
    .await;
    assert_eq!(stats.pending, 0, "{stats:?}");
    assert!(
        !cluster::keys_on(&master.addr, &format!("{tag}:scheduled"))
            .await
            .is_empty(),
        "back in the sender's partition"
    );
    assert!(twilio.received().is_empty(), "nothing went early");
}

#[tokio::test]
async fn killing_a_master_while_messages_are_due_loses_none_and_sends_none_twice() {
    let twilio = TwilioMock::start().await;
    let app = cluster_app(&twilio, 8).await;
    let tenant = tenant_with_sender(&app).await;
    let q = queue::deliveries(&app.config, app.redis.clone());
    let tag = q
        .hash_tag(q.partition_of(tenant.sms_from.as_deref().unwrap()))
        .to_owned();
    let master = cluster::master_of(&tag).await;

    // 40 due now, 80 due over the next 8 s: many are waiting on the master when it dies.
    let start = Utc::now();
    let mut sent = Vec::new();
    for i in 0..120 {
        let to = format!("+1555882{i:04}");
        let at = (i >= 40).then(|| start + chrono::Duration::milliseconds(100 * (i - 40)));
        let id = post_sms_at(&app, &tenant, &to, at).await;
        sent.push((to, id));
    }
    eventually(WAIT, "the first messages are sent", || async {
        (twilio.received().len() >= 20).then_some(())
    })
    .await;
    let killed = cluster::kill_master(&master.addr).await;

    each_sent_once(&app, &twilio, &tenant, &sent).await;
    assert_eq!(twilio.received().len(), 120, "one call per message");
    // The reconcile that noticed the failover gave each message it found `sending` a job due
    // when that claim would go stale, in case its attempt never reports back; that job finds
    // the message sent and leaves. So the queue drains within the stale-claim time.
    let drained = WAIT + app.config.stale_claim_after();
    app.wait_for_drained_queue(0, drained).await;
    killed.restart().await;
}

#[tokio::test]
async fn three_workers_and_two_schedulers_on_a_cluster_send_each_message_once() {
    let twilio = TwilioMock::start().await;
    let mut config = cluster_config().await;
    twilio.configure(&mut config);
    config.worker_concurrency = 10;
    let app = TestApp::start_with(config).await;
    let env = herald_env(&app.config);
    let _procs = [
        Proc::start("herald-worker", &env),
        Proc::start("herald-worker", &env),
        Proc::start("herald-worker", &env),
        Proc::start("herald-scheduler", &env),
        Proc::start("herald-scheduler", &env),
    ];
    let tenants = [
        tenant_with_sender(&app).await,
        tenant_with_sender(&app).await,
        tenant_with_sender(&app).await,
        tenant_with_sender(&app).await,
    ];
    let mut sent = vec![Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for i in 0..200 {
        let t = i % 4;
        let to = format!("+1555883{i:04}");
        sent[t].push((to.clone(), post_sms_at(&app, &tenants[t], &to, None).await));
    }
    for (t, tenant) in tenants.iter().enumerate() {
        each_sent_once(&app, &twilio, tenant, &sent[t]).await;
    }
    app.wait_for_drained_queue(0, WAIT).await;
    assert_eq!(twilio.received().len(), 200, "one call per message");
}

#[tokio::test]
async fn a_tenants_backlog_on_a_cluster_does_not_hold_up_another_tenant() {
    let twilio = TwilioMock::start().await;
    let mut config = cluster_config().await;
    twilio.configure(&mut config);
    config.worker_concurrency = 4;
    config.provider_timeout = Duration::from_secs(1);
    let mut app = TestApp::start_with(config).await;
    // Tenant A's webhooks go to an endpoint that never answers: each call holds a worker slot
    // until the 1 s provider timeout, so 300 of them fill every slot for over a minute, spread
    // over every partition (by message id).
    let slow = herald_tests::providers::WebhookReceiver::start().await;
    slow.hang("/slow");
    let a = app.tenant().await;
    for i in 0..300 {
        let (status, m) = app
            .post(
                "/v1/messages",
                &a.api_key,
                &json!({"channel": "webhook", "to": slow.url("/slow"), "body": format!("{{\"n\":{i}}}")}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{m}");
    }
    app.start_worker();
    eventually(WAIT, "tenant A's webhooks are under way", || async {
        (slow.requests("/slow").len() >= 4).then_some(())
    })
    .await;

    // Tenant B's one SMS goes within seconds, not behind A's 300.
    let b = tenant_with_sender(&app).await;
    let posted = Utc::now();
    let id = post_sms_at(&app, &b, "+15558840001", None).await;
    app.wait_for_status(&b, &id, "sent", Duration::from_secs(20))
        .await;
    let took = twilio.sent_to("+15558840001")[0].at - posted;
    assert!(
        took < chrono::Duration::seconds(10),
        "B's SMS waited {} ms behind A's backlog",
        took.num_milliseconds()
    );
    assert!(
        slow.requests("/slow").len() < 150,
        "A's backlog was still there when B's went"
    );
}

#[tokio::test]
async fn under_sentinel_a_killed_primary_loses_no_message_and_sends_none_twice() {
    let twilio = TwilioMock::start().await;
    let mut config = cluster::sentinel_config().await;
    twilio.configure(&mut config);
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    app.start_scheduler();
    let tenant = tenant_with_sender(&app).await;

    // 20 due now, 40 due over the next 6 s.
    let start = Utc::now();
    let mut sent = Vec::new();
    for i in 0..60 {
        let to = format!("+1555885{i:04}");
        let at = (i >= 20).then(|| start + chrono::Duration::milliseconds(150 * (i - 20)));
        sent.push((to.clone(), post_sms_at(&app, &tenant, &to, at).await));
    }
    eventually(WAIT, "the first messages are sent", || async {
        (twilio.received().len() >= 10).then_some(())
    })
    .await;
    let killed = cluster::kill_sentinel_primary().await;

    each_sent_once(&app, &twilio, &tenant, &sent).await;
    assert_eq!(twilio.received().len(), 60, "one call per message");
    app.wait_for_drained_queue(0, WAIT).await;
    killed.restart().await;
}
