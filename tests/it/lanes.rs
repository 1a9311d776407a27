//! The queue engine's order: due transactional jobs before due bulk ones, tenants taking
//! turns (by weight), and jobs parked behind their sender's pace released one slot at a time.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use herald_core::{
    domain::Priority,
    queue::{Flow, JobError, NewJob, Pace, RetryPolicy, WorkerOptions, now_ms},
};
use herald_tests::{engine::Engine, eventually};
use serde_json::{Value, json};

type Log = Arc<Mutex<Vec<String>>>;

fn job(id: &str, tenant: &str, priority: Priority) -> NewJob {
    let mut job = NewJob::new(id, &json!({"id": id, "tenant": tenant}), now_ms()).unwrap();
    job.flow = Flow {
        priority,
        tenant: Some(tenant.to_owned()),
    };
    job
}

async fn engine() -> Engine {
    Engine::new(
        5,
        RetryPolicy::new(Duration::from_millis(50), Duration::from_millis(200)),
    )
    .await
}

/// A worker that notes each job's id as it runs it, `concurrency` at a time.
fn logging_worker(
    engine: &Engine,
    concurrency: usize,
) -> (herald_tests::engine::EngineWorker, Log) {
    let log: Log = Arc::default();
    let seen = log.clone();
    let worker = engine.worker(
        WorkerOptions::new(concurrency, Duration::from_secs(10)),
        Duration::from_secs(5),
        move |job: Value, _| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push(job["id"].as_str().unwrap().to_owned());
                tokio::task::yield_now().await;
                Ok(())
            }
        },
    );
    (worker, log)
}

/// How many jobs ran after the log held `mark` entries and before `id`.
fn ran_before(log: &Log, mark: usize, id: &str) -> Option<usize> {
    let log = log.lock().unwrap();
    log.iter()
        .position(|j| j == id)
        .map(|i| i.saturating_sub(mark))
}

async fn backlog(engine: &Engine, tenant: &str, priority: Priority, n: usize) {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| job(&format!("{tenant}-{i}"), tenant, priority))
        .collect();
    assert_eq!(engine.queue.push_many(&jobs).await.unwrap(), n);
}

/// Waits until `n` jobs have run; returns how many had.
async fn after_runs(log: &Log, n: usize) -> usize {
    eventually(Duration::from_secs(30), "the backlog running", || async {
        let len = log.lock().unwrap().len();
        (len >= n).then_some(len)
    })
    .await
}

/// Runs a 5,000-job backlog of `tenant` in `priority`, pushes `newcomer` once 100 have run,
/// and returns how many backlog jobs ran after that and before it.
async fn ran_before_newcomer(tenant: &str, priority: Priority, newcomer: NewJob) -> usize {
    let engine = engine().await;
    backlog(&engine, tenant, priority, 5_000).await;
    let (worker, log) = logging_worker(&engine, 5);
    let mark = after_runs(&log, 100).await;

    let id = newcomer.id.clone();
    engine.queue.push_many(&[newcomer]).await.unwrap();
    let before = eventually(Duration::from_secs(10), "the newcomer ran", || async {
        ran_before(&log, mark, &id)
    })
    .await;
    let all = after_runs(&log, 5_001).await;
    worker.stop().await;
    assert!(
        all - (mark + before) > 1_000,
        "the backlog was nearly drained when {id} ran: nothing was tested"
    );
    before
}

#[tokio::test]
async fn a_due_transactional_job_runs_before_a_tenants_bulk_backlog() {
    let reminder = job("reminder", "ten_a", Priority::Transactional);
    let before = ran_before_newcomer("ten_a", Priority::Bulk, reminder).await;
    // Only what the worker had already leased (its concurrency, and one batch) may go first.
    assert!(
        before <= 10,
        "{before} bulk jobs ran before the due transactional one"
    );
}

#[tokio::test]
async fn a_tenants_job_runs_next_amid_another_tenants_backlog() {
    let other = job("b-1", "ten_b", Priority::Transactional);
    let before = ran_before_newcomer("ten_a", Priority::Transactional, other).await;
    assert!(
        before <= 10,
        "{before} of tenant A's jobs ran before tenant B's"
    );
}

#[tokio::test]
async fn tenants_with_backlogs_share_the_workers_by_their_weights() {
    let engine = engine().await;
    // A tenant's weight is its sender's rate, learned when a slot is asked of it.
    for (tenant, rate) in [("ten_slow", 1.0), ("ten_fast", 3.0)] {
        let pace = Pace {
            sender: format!("+1555{rate}"),
            priority: Priority::Transactional,
            cost: 1,
            rate,
            tenant: tenant.to_owned(),
        };
        engine.queue.take_slot(&pace).await.unwrap();
    }
    backlog(&engine, "ten_slow", Priority::Transactional, 2_000).await;
    backlog(&engine, "ten_fast", Priority::Transactional, 2_000).await;
    let (worker, log) = logging_worker(&engine, 1);
    after_runs(&log, 400).await;
    worker.stop().await;

    let first: Vec<String> = log.lock().unwrap()[..400].to_vec();
    let fast = first.iter().filter(|j| j.starts_with("ten_fast")).count();
    let slow = first.len() - fast;
    // 3 to 1: 300 and 100, give or take the first turns.
    assert!(
        (280..=320).contains(&fast),
        "of the first 400 jobs {fast} were the weight-3 tenant's and {slow} the weight-1 tenant's"
    );
}

/// Each job sent, with when (ms).
type SentLog = Arc<Mutex<Vec<(String, i64)>>>;

/// A worker that sends through `sender` at `rate` segments per second, one job at a time,
/// noting when each job was sent, as the delivery handler does: a slot, else parked.
fn paced_worker(
    engine: &Engine,
    sender: &'static str,
    rate: f64,
) -> (herald_tests::engine::EngineWorker, SentLog) {
    let sent: SentLog = Arc::default();
    let seen = sent.clone();
    let queue = engine.same_queue();
    let worker = engine.worker(
        WorkerOptions::new(1, Duration::from_secs(10)),
        Duration::from_secs(5),
        move |job: Value, meta| {
            let (seen, queue) = (seen.clone(), queue.clone());
            async move {
                let priority = if job["bulk"].as_bool() == Some(true) {
                    Priority::Bulk
                } else {
                    Priority::Transactional
                };
                let pace = Pace {
                    sender: sender.to_owned(),
                    priority,
                    cost: job["segments"].as_u64().unwrap_or(1) as u32,
                    rate,
                    tenant: "ten_a".to_owned(),
                };
                if !meta.paced && !queue.take_slot(&pace).await.unwrap() {
                    return Err(JobError::Park(pace));
                }
                let id = job["id"].as_str().unwrap().to_owned();
                seen.lock().unwrap().push((id, now_ms()));
                Ok(())
            }
        },
    );
    (worker, sent)
}

#[tokio::test]
async fn parked_jobs_leave_one_slot_apart_transactional_first_and_a_canceled_one_never() {
    let engine = engine().await;
    let (worker, sent) = paced_worker(&engine, "+15550001111", 5.0);
    let bulk: Vec<NewJob> = (0..10)
        .map(|i| {
            let id = format!("bulk-{i}");
            NewJob::new(&id, &json!({"id": id, "bulk": true}), now_ms()).unwrap()
        })
        .collect();
    engine.queue.push_many(&bulk).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the first bulk job sent",
        || async { (!sent.lock().unwrap().is_empty()).then_some(()) },
    )
    .await;

    // A parked job says when its turn comes: the last, behind seven or eight others at 5
    // segments a second, over a second out.
    eventually(
        Duration::from_secs(5),
        "bulk-9 expected over a second ahead",
        || async {
            let at = engine.queue.expected(&["bulk-9"]).await.unwrap()[0]?;
            (at - now_ms() >= 1_000).then_some(())
        },
    )
    .await;
    assert!(engine.queue.remove_waiting("bulk-8").await.unwrap());

    engine
        .queue
        .push("urgent", &json!({"id": "urgent", "segments": 2}), now_ms())
        .await
        .unwrap();
    let all = eventually(Duration::from_secs(15), "every job sent", || async {
        let s = sent.lock().unwrap().clone();
        (s.len() >= 10).then_some(s)
    })
    .await;
    worker.stop().await;

    let ids: Vec<&str> = all.iter().map(|(id, _)| id.as_str()).collect();
    assert!(!ids.contains(&"bulk-8"), "a canceled parked job was sent");
    let urgent = ids.iter().position(|id| *id == "urgent").unwrap();
    assert!(
        urgent <= 2,
        "the transactional job went out {urgent}th, behind bulk parked before it: {ids:?}"
    );
    for (pair, ids) in all.windows(2).zip(ids.windows(2)) {
        let gap = pair[1].1 - pair[0].1;
        // 200 ms a segment; the urgent job is two segments, so the one after it waits 400.
        let slot = if ids[0] == "urgent" { 400 } else { 200 };
        assert!(
            gap >= slot - 60,
            "{} left {gap} ms after {} at 5 segments a second",
            ids[1],
            ids[0]
        );
    }
    assert!(
        engine.queue.stats().await.unwrap().pending == 0,
        "nothing stays parked"
    );
}
