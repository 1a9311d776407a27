//! Dead letters: what could not be delivered is kept, scoped to its tenant, listed, paged,
//! replayed (once) and deleted.

use std::{collections::HashSet, time::Duration};

use herald_tests::{
    Tenant, TestApp,
    app::test_config,
    providers::{Reply, TwilioMock},
    views::{DeadLetterView, Page, Replayed, ReplayedCount, api_error, view},
};
use reqwest::StatusCode;
use serde_json::json;

fn invalid_number() -> Reply {
    Reply::TwilioError {
        status: 400,
        code: 21214,
        message: "'To' phone number cannot be reached".into(),
    }
}

fn ids(list: &[DeadLetterView]) -> HashSet<String> {
    list.iter().map(|d| d.id.clone()).collect()
}

/// A message's status as Postgres holds it, whichever tenant it belongs to.
async fn message_status(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM messages WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_message_that_always_gets_503_ends_dead_and_one_replay_sends_it() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    config.max_attempts = 3;
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    let tenant = app.tenant().await;
    twilio.script([
        Reply::unavailable(),
        Reply::unavailable(),
        Reply::unavailable(),
    ]);

    let m = app.post_sms(&tenant, "+15556660001", "doomed").await;
    let id = m.id.as_str();
    let dead = app
        .wait_for_status(&tenant, id, "dead", Duration::from_secs(20))
        .await;
    assert_eq!(dead.attempts, 3, "{dead}");
    let last_error = dead.last_error.as_deref().unwrap_or_default();
    assert!(last_error.contains("503"), "last_error: {dead}");
    assert_eq!(twilio.received().len(), 3, "three attempts, three calls");

    let dl = herald_tests::eventually(
        Duration::from_secs(10),
        "the dead letter is listed",
        || async {
            let list = app.dead_letters(&tenant.api_key, "").await;
            list.into_iter()
                .find(|d| d.message_id.as_deref() == Some(id))
        },
    )
    .await;
    assert_eq!(dl.reason, "exhausted", "{dl}");
    assert_eq!(dl.queue, "deliveries", "{dl}");
    assert_eq!(dl.tenant_id, tenant.id.as_str(), "{dl}");
    assert_eq!(dl.attempts, 3, "{dl}");
    let errors = &dl.errors;
    assert_eq!(errors.len(), 3, "one error per attempt: {dl}");
    for e in errors {
        assert!(!e.at.is_empty(), "{e}");
        assert!(e.error.contains("503"), "{e}");
    }
    assert!(!dl.dead_at.is_empty(), "{dl}");
    assert!(dl.replayed_at.is_none(), "{dl}");
    let dl_id = dl.id.as_str();
    assert!(dl_id.starts_with("dl_"), "{dl_id}");

    // The mock accepts from now on: the replay is a fresh run that goes out at once.
    let (status, replayed) = app
        .post(
            &format!("/v1/dead-letters/{dl_id}/replay"),
            &tenant.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    let replayed: Replayed = view(&replayed);
    assert_eq!(replayed.message_id, id, "{replayed}");
    assert!(!replayed.status.is_empty(), "{replayed}");
    let sent = app
        .wait_for_status(&tenant, id, "sent", Duration::from_secs(15))
        .await;
    assert_eq!(sent.attempts, 1, "a replay starts a new run: {sent}");
    assert_eq!(twilio.received().len(), 4, "the replay made one call");
    // Both runs' every step, in order: the attempts' `sending` and the final `sent` are
    // kept on the message row until the next step, and read back in their places.
    let history: Vec<(&str, &str)> = sent
        .events
        .iter()
        .map(|e| (e.status.as_str(), e.detail.as_deref().unwrap_or_default()))
        .collect();
    let steps: Vec<&str> = history.iter().map(|(status, _)| *status).collect();
    assert_eq!(
        steps,
        [
            "queued", "sending", "retrying", "sending", "retrying", "sending", "dead", "queued",
            "sending", "sent"
        ],
        "the events keep the history: {history:?}"
    );
    let attempts: Vec<&str> = history
        .iter()
        .filter(|(status, _)| *status == "sending")
        .map(|(_, detail)| *detail)
        .collect();
    assert_eq!(
        attempts,
        ["attempt 1", "attempt 2", "attempt 3", "attempt 1"],
        "{history:?}"
    );
    assert!(
        history[7].1.ends_with("(run 1)"),
        "runs count from 0: {history:?}"
    );
    assert!(history[9].1.contains("accepted it"), "{history:?}");
    let times: Vec<_> = sent
        .events
        .iter()
        .map(|e| chrono::DateTime::parse_from_rfc3339(&e.at).unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {times:?}"
    );

    let after = app.dead_letter(&tenant.api_key, dl_id).await;
    assert!(after.replayed_at.is_some(), "replayed_at is set: {after}");

    let (status, again) = app
        .post(
            &format!("/v1/dead-letters/{dl_id}/replay"),
            &tenant.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(api_error(&again).code, "not_replayable", "{again}");
    app.wait_for_drained_queue(0, Duration::from_secs(10)).await;
    assert_eq!(twilio.received().len(), 4, "a refused replay sends nothing");
    assert_eq!(app.message(&tenant, id).await.status, "sent");
}

/// (message id, dead letter id, reason).
type Entry = (String, String, &'static str);

/// Two tenants with dead letters: A has two `rejected` and one `exhausted`, B one `rejected`.
/// Made one at a time, so the mock's script applies to the message at hand.
struct Fixture {
    app: TestApp,
    twilio: TwilioMock,
    a: Tenant,
    b: Tenant,
    /// (message id, dead letter id, reason), oldest first.
    a_dead: Vec<Entry>,
    b_dead: Vec<Entry>,
}

async fn fixture() -> Fixture {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    config.max_attempts = 2;
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    let a = app.tenant().await;
    let b = app.tenant().await;
    let plan: [(&Tenant, &'static str); 4] = [
        (&a, "rejected"),
        (&b, "rejected"),
        (&a, "exhausted"),
        (&a, "rejected"),
    ];
    let mut a_dead = vec![];
    let mut b_dead = vec![];
    for (i, (tenant, reason)) in plan.into_iter().enumerate() {
        let final_status = if reason == "rejected" {
            twilio.script([invalid_number()]);
            "failed"
        } else {
            twilio.script([Reply::unavailable(), Reply::unavailable()]);
            "dead"
        };
        let m = app
            .post_sms(tenant, &format!("+1555777000{i}"), "will not arrive")
            .await;
        let id = m.id.clone();
        app.wait_for_status(tenant, &id, final_status, Duration::from_secs(20))
            .await;
        let dl = herald_tests::eventually(
            Duration::from_secs(10),
            "the dead letter is written",
            || async {
                let list = app.dead_letters(&app.ops_token, "").await;
                list.into_iter()
                    .find(|d| d.message_id.as_deref() == Some(id.as_str()))
            },
        )
        .await;
        assert_eq!(dl.reason, reason, "{dl}");
        assert_eq!(dl.tenant_id, tenant.id.as_str(), "{dl}");
        let entry = (id, dl.id.clone(), reason);
        if tenant.id == a.id {
            a_dead.push(entry);
        } else {
            b_dead.push(entry);
        }
    }
    Fixture {
        app,
        twilio,
        a,
        b,
        a_dead,
        b_dead,
    }
}

#[tokio::test]
async fn a_tenant_sees_and_touches_only_its_own() {
    let Fixture {
        app,
        a,
        b,
        a_dead,
        b_dead,
        ..
    } = fixture().await;
    let a_ids: HashSet<String> = a_dead.iter().map(|d| d.1.clone()).collect();
    let b_ids: HashSet<String> = b_dead.iter().map(|d| d.1.clone()).collect();

    assert_eq!(ids(&app.dead_letters(&a.api_key, "").await), a_ids);
    assert_eq!(ids(&app.dead_letters(&b.api_key, "").await), b_ids);
    assert!(
        app.dead_letters(&b.api_key, &format!("&tenant_id={}", a.id))
            .await
            .is_empty(),
        "asking for another tenant's dead letters selects none"
    );

    let (a_msg, a_dl, _) = &a_dead[0];
    let (status, body) = app
        .get(&format!("/v1/dead-letters/{a_dl}"), &b.api_key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app
        .post(
            &format!("/v1/dead-letters/{a_dl}/replay"),
            &b.api_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app
        .delete(&format!("/v1/dead-letters/{a_dl}"), &b.api_key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Bulk replays by tenant B never reach A's dead letters.
    for filter in [
        json!({"ids": [a_dl]}),
        json!({"tenant_id": a.id}),
        json!({"reason": "exhausted"}),
    ] {
        let (status, body) = app
            .post("/v1/dead-letters/replay", &b.api_key, &filter)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{filter}: {body}");
        assert_eq!(view::<ReplayedCount>(&body).replayed, 0, "{filter}: {body}");
    }

    // A's dead letter is untouched, and A still sees it.
    let dl = app.dead_letter(&a.api_key, a_dl).await;
    assert!(dl.replayed_at.is_none(), "{dl}");
    assert_eq!(app.message(&a, a_msg).await.status, "failed");

    // B's bulk replay with everything selects only B's own.
    let (status, body) = app
        .post("/v1/dead-letters/replay", &b.api_key, &json!({"all": true}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(view::<ReplayedCount>(&body).replayed, 1, "{body}");
    app.wait_for_status(&b, &b_dead[0].0, "sent", Duration::from_secs(15))
        .await;
    for (msg, dl, _) in &a_dead {
        let d = app.dead_letter(&app.ops_token, dl).await;
        assert!(d.replayed_at.is_none(), "{d}");
        assert_ne!(app.message(&a, msg).await.status, "sent");
    }
}

#[tokio::test]
async fn ops_filter_page_bulk_replay_and_delete_them() {
    let Fixture {
        app,
        twilio,
        a,
        b,
        a_dead,
        b_dead,
    } = fixture().await;
    let ops = app.ops_token.clone();
    let all: Vec<_> = a_dead.iter().chain(&b_dead).cloned().collect();
    let all_ids: HashSet<String> = all.iter().map(|d| d.1.clone()).collect();
    let select = |pred: &dyn Fn(&Entry, bool) -> bool| -> HashSet<String> {
        a_dead
            .iter()
            .map(|d| (d, true))
            .chain(b_dead.iter().map(|d| (d, false)))
            .filter(|(d, is_a)| pred(d, *is_a))
            .map(|(d, _)| d.1.clone())
            .collect()
    };

    assert_eq!(ids(&app.dead_letters(&ops, "").await), all_ids);
    assert_eq!(
        ids(&app
            .dead_letters(&ops, &format!("&tenant_id={}", a.id))
            .await),
        select(&|_, is_a| is_a)
    );
    assert_eq!(
        ids(&app
            .dead_letters(&ops, &format!("&tenant_id={}", b.id))
            .await),
        select(&|_, is_a| !is_a)
    );
    assert_eq!(
        ids(&app.dead_letters(&ops, "&reason=rejected").await),
        select(&|d, _| d.2 == "rejected")
    );
    assert_eq!(
        ids(&app.dead_letters(&ops, "&reason=exhausted").await),
        select(&|d, _| d.2 == "exhausted")
    );
    assert_eq!(
        ids(&app
            .dead_letters(&ops, &format!("&tenant_id={}&reason=rejected", a.id))
            .await),
        select(&|d, is_a| is_a && d.2 == "rejected")
    );
    let exhausted = app.dead_letters(&ops, "&reason=exhausted").await;
    assert_eq!(exhausted[0].attempts, 2, "{:?}", exhausted[0]);
    assert_eq!(exhausted[0].errors.len(), 2, "{:?}", exhausted[0]);

    // Pages of one, newest first, until next_cursor is null.
    let mut paged = vec![];
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/v1/dead-letters?limit=1&cursor={c}"),
            None => "/v1/dead-letters?limit=1".to_owned(),
        };
        let page: Page<DeadLetterView> = app.get_as(&path, &ops).await;
        assert!(page.data.len() <= 1, "{page}");
        paged.extend(page.data.iter().map(|d| d.id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(
        paged.len(),
        4,
        "every dead letter once over the pages: {paged:?}"
    );
    assert_eq!(
        paged.iter().cloned().collect::<HashSet<_>>(),
        all_ids,
        "{paged:?}"
    );

    // An empty filter replays nothing.
    let (status, body) = app.post("/v1/dead-letters/replay", &ops, &json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(api_error(&body).code, "filter_required", "{body}");
    for (msg, dl, _) in &all {
        let d = app.dead_letter(&ops, dl).await;
        assert!(d.replayed_at.is_none(), "{d}");
        let status = message_status(&app, msg).await;
        assert!(status == "failed" || status == "dead", "{msg}: {status}");
    }

    // The mock accepts from now on. Replaying the rejected ones sends exactly those.
    let calls_before = twilio.received().len();
    let (status, body) = app
        .post(
            "/v1/dead-letters/replay",
            &ops,
            &json!({"reason": "rejected"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(view::<ReplayedCount>(&body).replayed, 3, "{body}");
    for (msg, _, reason) in &a_dead {
        if *reason == "rejected" {
            let m = app
                .wait_for_status(&a, msg, "sent", Duration::from_secs(15))
                .await;
            assert_eq!(m.attempts, 1, "{m}");
        }
    }
    let m = app
        .wait_for_status(&b, &b_dead[0].0, "sent", Duration::from_secs(15))
        .await;
    assert_eq!(m.attempts, 1, "{m}");
    let (exhausted_msg, exhausted_dl, _) = a_dead.iter().find(|d| d.2 == "exhausted").unwrap();
    app.wait_for_drained_queue(0, Duration::from_secs(10)).await;
    assert_eq!(app.message(&a, exhausted_msg).await.status, "dead");
    assert_eq!(twilio.received().len(), calls_before + 3);
    let d = app.dead_letter(&ops, exhausted_dl).await;
    assert!(d.replayed_at.is_none(), "{d}");

    // `all` replays the rest, and nothing twice.
    let (status, body) = app
        .post("/v1/dead-letters/replay", &ops, &json!({"all": true}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(view::<ReplayedCount>(&body).replayed, 1, "{body}");
    let m = app
        .wait_for_status(&a, exhausted_msg, "sent", Duration::from_secs(15))
        .await;
    assert_eq!(m.attempts, 1, "{m}");
    let (status, body) = app
        .post("/v1/dead-letters/replay", &ops, &json!({"all": true}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(view::<ReplayedCount>(&body).replayed, 0, "{body}");
    app.wait_for_drained_queue(0, Duration::from_secs(10)).await;
    assert_eq!(twilio.received().len(), calls_before + 4);
    for (_, dl, _) in &all {
        let d = app.dead_letter(&ops, dl).await;
        assert!(d.replayed_at.is_some(), "{d}");
    }

    // Delete: 204, then it is gone.
    let (_, dl, _) = &all[0];
    let (status, body) = app.delete(&format!("/v1/dead-letters/{dl}"), &ops).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = app.get(&format!("/v1/dead-letters/{dl}"), &ops).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = app.delete(&format!("/v1/dead-letters/{dl}"), &ops).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(!ids(&app.dead_letters(&ops, "").await).contains(dl));
    // A tenant deletes its own.
    let (_, b_dl) = (&b_dead[0].0, &b_dead[0].1);
    let (status, body) = app
        .delete(&format!("/v1/dead-letters/{b_dl}"), &b.api_key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(app.dead_letters(&b.api_key, "").await.is_empty());
}

#[tokio::test]
async fn a_job_taken_while_its_replay_is_still_committing_waits_for_it_and_sends() {
    let twilio = TwilioMock::start().await;
    let mut config = test_config().await;
    twilio.configure(&mut config);
    config.max_attempts = 1;
    let mut app = TestApp::start_with(config).await;
    app.start_worker();
    let tenant = app.tenant().await;
    twilio.script([Reply::unavailable()]);
    let m = app.post_sms(&tenant, "+15556660009", "slow replay").await;
    let id = m.id.as_str();
    app.wait_for_status(&tenant, id, "dead", Duration::from_secs(20))
        .await;
    // Its job is acknowledged a moment after the message is recorded dead.
    app.wait_for_drained_queue(1, Duration::from_secs(10)).await;

    // A replay whose transaction is slow to commit: the message is back to `queued` inside
    // it, and its job is already in Redis, where a worker takes it at once.
    let mut tx = app.db.begin().await.unwrap();
    sqlx::query(
        "UPDATE messages SET status = 'queued', run = run + 1, attempts = 0, send_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .unwrap();
    let redis = herald_core::queue::connect(&herald_tests::redis_url()).unwrap();
    let queue = herald_core::queue::deliveries(&app.config, redis.clone());
    let job = herald_core::domain::jobs::DeliveryJob::new(
        id,
        &tenant.id,
        herald_core::domain::Channel::Sms,
        "+15556660009",
    );
    assert!(
        queue
            .push(id, &job, herald_core::queue::now_ms())
            .await
            .unwrap()
    );
    // The worker takes it and its claim waits for the replay's row lock.
    herald_tests::eventually(
        Duration::from_secs(10),
        "the worker's claim waits for the replay to commit",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&app.db)
            .await
            .unwrap();
            (waiting > 0).then_some(())
        },
    )
    .await;
    tx.commit().await.unwrap();

    // The worker judged the message as the replay left it, not as it was before.
    let sent = app
        .wait_for_status(&tenant, id, "sent", Duration::from_secs(15))
        .await;
    assert_eq!(sent.attempts, 1, "{sent}");
    assert_eq!(twilio.received().len(), 2, "one failed call, then one send");
}
