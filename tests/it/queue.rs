//! The queue engine keeps its promises: precision, bursts, an even pace through a backlog,
//! persisted retries, dead jobs, leases and graceful hand-back, and no leftovers.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use herald_core::queue::{DeadFilter, JobError, NewJob, RetryPolicy, WorkerOptions, now_ms};
use herald_tests::{engine::Engine, eventually, process::Proc};
use serde_json::{Value, json};

fn fast_policy() -> RetryPolicy {
    RetryPolicy::new(Duration::from_millis(100), Duration::from_millis(800))
}

fn options(concurrency: usize, lease_ms: u64) -> WorkerOptions {
    WorkerOptions::new(concurrency, Duration::from_millis(lease_ms))
}

async fn push_due_now(engine: &Engine, n: usize) {
    let now = now_ms();
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob::new(format!("j{i}"), &json!({"i": i}), now).unwrap())
        .collect();
    assert_eq!(engine.queue.push_many(&jobs).await.unwrap(), n);
}

/// Waits until `queue` holds no waiting or running job (every ack has landed).
async fn wait_idle(queue: &herald_core::queue::Queue, what: &str) {
    eventually(Duration::from_secs(10), what, || async {
        let s = queue.stats().await.unwrap();
        (s.pending + s.scheduled + s.running == 0).then_some(())
    })
    .await;
}

/// A handler that records each run's payload, then holds the job running until the test
/// hands it a permit.
#[derive(Clone)]
struct Gated {
    runs: Arc<Mutex<Vec<Value>>>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl Default for Gated {
    fn default() -> Self {
        Self {
            runs: Arc::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }
}

type Handled = futures_util::future::BoxFuture<'static, Result<(), JobError>>;

impl Gated {
    fn handler(
        &self,
    ) -> impl Fn(Value, herald_core::queue::JobMeta) -> Handled + Clone + Send + Sync + 'static
    {
        let gated = self.clone();
        move |payload, _| {
            let gated = gated.clone();
            Box::pin(async move {
                gated.runs.lock().unwrap().push(payload);
                gated.gate.acquire().await.unwrap().forget();
                Ok(())
            })
        }
    }

    fn runs(&self) -> Vec<Value> {
        self.runs.lock().unwrap().clone()
    }

    async fn wait_runs(&self, n: usize, what: &str) {
        eventually(Duration::from_secs(10), what, || async {
            (self.runs.lock().unwrap().len() == n).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn jobs_due_in_300_ms_never_start_early() {
    let engine = Engine::new(8, fast_policy()).await;
    let started: Arc<Mutex<Vec<(i64, i64)>>> = Arc::default();
    let seen = started.clone();
    let worker = engine.worker(
        options(20, 5000),
        Duration::from_secs(5),
        move |job: Value, _| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push((job["due"].as_i64().unwrap(), now_ms()));
                Ok(())
            }
        },
    );
    let base = now_ms() + 300;
    for i in 0..20 {
        let due = base + i * 7;
        engine
            .queue
            .push(&format!("j{i}"), &json!({"due": due}), due)
            .await
            .unwrap();
    }
    let runs = eventually(Duration::from_secs(15), "all 20 jobs ran", || async {
        let runs = started.lock().unwrap().clone();
        (runs.len() == 20).then_some(runs)
    })
    .await;
    let worst = runs.iter().map(|(due, at)| at - due).max().unwrap();
    for (due, at) in &runs {
        assert!(
            at >= due,
            "a job due at {due} started {} ms early",
            due - at
        );
    }
    println!("latest start: {worst} ms after its due time");
    worker.stop().await;
}

#[tokio::test]
async fn a_burst_of_100000_due_jobs_all_drains_and_leaves_nothing_behind() {
    let engine = Engine::new(8, fast_policy()).await;
    push_due_now(&engine, 100_000).await;
    let before = engine.queue.stats().await.unwrap();
    assert_eq!(before.pending, 100_000);

    let done = Arc::new(AtomicU64::new(0));
    let counter = done.clone();
    let worker = engine.worker(
        options(200, 10_000),
        Duration::from_secs(5),
        move |_: Value, _| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        },
    );
    eventually(Duration::from_secs(300), "100,000 jobs drained", || async {
        let s = engine.queue.stats().await.unwrap();
        (s.pending + s.running + s.scheduled == 0 && done.load(Ordering::Relaxed) >= 100_000)
            .then_some(())
    })
    .await;
    worker.stop().await;
    let after = engine.queue.stats().await.unwrap();
    assert_eq!(done.load(Ordering::Relaxed), 100_000, "each job ran once");
    assert_eq!(after.dead, 0);
    assert_eq!(after.completed_last_minute, 100_000);

    // Completed jobs leave only expiring counters behind.
    let keys = engine.keys().await;
    assert!(
        keys.iter().all(|k| k.contains(":done:")),
        "leftover keys: {keys:?}"
    );
    let memory = engine.memory().await;
    assert!(
        memory < 16 * 1024,
        "{memory} bytes left in Redis after 100,000 completed jobs"
    );
    let mut conn = engine.redis.clone();
    for key in keys {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 3_720, "{key} must expire, ttl {ttl}");
    }
}

#[tokio::test]
async fn a_50000_backlog_drains_at_an_even_pace() {
    let engine = Engine::new(8, fast_policy()).await;
    push_due_now(&engine, 50_000).await;
    let done = Arc::new(AtomicU64::new(0));
    let marks: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let (counter, stamps) = (done.clone(), marks.clone());
    let worker = engine.worker(
        options(200, 10_000),
        Duration::from_secs(5),
        move |_: Value, _| {
            let (counter, stamps) = (counter.clone(), stamps.clone());
            async move {
                let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 10_000 == 0 || n == 1 {
                    stamps.lock().unwrap().push(Instant::now());
                }
                Ok(())
            }
        },
    );
    eventually(Duration::from_secs(300), "50,000 jobs drained", || async {
        (done.load(Ordering::Relaxed) >= 50_000).then_some(())
    })
    .await;
    worker.stop().await;
    let marks = marks.lock().unwrap().clone();
    assert_eq!(marks.len(), 6, "marks at jobs 1, 10k, 20k, 30k, 40k, 50k");
    let first = marks[1] - marks[0];
    let last = marks[5] - marks[4];
    println!("first 10,000 jobs: {first:?}; last 10,000: {last:?}");
    // Work per job that grew with the backlog would make the first stretch much slower.
    assert!(
        first <= last * 3 + Duration::from_secs(1),
        "the backlog slowed the queue: first 10,000 took {first:?}, last 10,000 {last:?}"
    );
}

#[tokio::test]
async fn failed_attempts_follow_the_policy_survive_a_restart_and_end_dead() {
    let policy = fast_policy();
    let engine = Engine::new(4, policy).await;
    let attempts: Arc<Mutex<Vec<(u32, i64)>>> = Arc::default();
    let fail = Arc::new(AtomicBool::new(true));
    let handler = {
        let (attempts, fail) = (attempts.clone(), fail.clone());
        move |_: Value, meta: herald_core::queue::JobMeta| {
            let (attempts, fail) = (attempts.clone(), fail.clone());
            async move {
                attempts.lock().unwrap().push((meta.attempt, now_ms()));
                if fail.load(Ordering::SeqCst) {
                    Err(JobError::transient(format!(
                        "provider unavailable (attempt {})",
                        meta.attempt
                    )))
                } else {
                    Ok(())
                }
            }
        }
    };
    let first = engine.worker(options(5, 5000), Duration::from_secs(5), handler.clone());
    engine
        .queue
        .push("flaky", &json!({"to": "+15551234567"}), now_ms())
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "two attempts", || async {
        (attempts.lock().unwrap().len() >= 2).then_some(())
    })
    .await;
    first.stop().await;
    // The retry lives in Redis, not in the stopped process.
    let s = engine.queue.stats().await.unwrap();
    assert_eq!(
        s.pending + s.scheduled,
        1,
        "the retry is stored in Redis: {s:?}"
    );
    assert_eq!(s.running, 0);

    let second = engine.worker(options(5, 5000), Duration::from_secs(5), handler.clone());
    let dead = eventually(Duration::from_secs(15), "the job is dead", || async {
        engine.queue.get_dead("flaky").await.unwrap()
    })
    .await;
    let runs = attempts.lock().unwrap().clone();
    let numbers: Vec<u32> = runs.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers,
        [1, 2, 3, 4],
        "attempts count on across the restart, up to the maximum"
    );
    for pair in runs.windows(2) {
        let ((n, a), (_, b)) = (pair[0], pair[1]);
        let ceiling = policy.ceiling(n).as_millis() as i64;
        assert!(
            b - a <= ceiling + 1500,
            "wait after attempt {n} was {} ms, ceiling {ceiling} ms",
            b - a
        );
    }
    assert_eq!(dead.attempts, 4);
    assert_eq!(dead.errors.len(), 4);
    assert_eq!(dead.errors[3].error, "provider unavailable (attempt 4)");
    assert_eq!(dead.payload, json!({"to": "+15551234567"}));

    let page = engine
        .queue
        .list_dead(&DeadFilter::default(), 0, 10)
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 1);
    assert_eq!(page.jobs[0].id, "flaky");
    assert!(page.next_offset.is_none());
    let future = DeadFilter {
        since_ms: Some(now_ms() + 60_000),
        until_ms: None,
    };
    assert!(
        engine
            .queue
            .list_dead(&future, 0, 10)
            .await
            .unwrap()
            .jobs
            .is_empty(),
        "filters apply"
    );

    // Replay: fresh attempts, and this time it succeeds.
    fail.store(false, Ordering::SeqCst);
    assert!(engine.queue.replay_dead("flaky").await.unwrap());
    eventually(
        Duration::from_secs(10),
        "the replayed job completes",
        || async {
            let s = engine.queue.stats().await.unwrap();
            (s.dead == 0
                && s.pending + s.scheduled + s.running == 0
                && attempts.lock().unwrap().len() == 5)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        attempts.lock().unwrap()[4].0,
        1,
        "a replay starts again at attempt 1"
    );
    second.stop().await;

    // A permanent error is dead at once; delete removes it.
    let doomed = engine.worker(
        options(5, 5000),
        Duration::from_secs(5),
        |_: Value, _| async { Err(JobError::permanent("the number is not valid")) },
    );
    engine
        .queue
        .push("doomed", &json!({}), now_ms())
        .await
        .unwrap();
    let dead = eventually(
        Duration::from_secs(10),
        "the permanent failure is dead",
        || async { engine.queue.get_dead("doomed").await.unwrap() },
    )
    .await;
    assert_eq!(dead.attempts, 1);
    doomed.stop().await;
    assert!(engine.queue.delete_dead("doomed").await.unwrap());
    assert!(engine.queue.get_dead("doomed").await.unwrap().is_none());
    assert!(!engine.queue.delete_dead("doomed").await.unwrap());
    let keys = engine.keys().await;
    assert!(
        keys.iter()
            .all(|k| k.contains(":done:") || k.contains(":failed:")),
        "a deleted dead job leaves nothing: {keys:?}"
    );
}

#[tokio::test]
async fn a_long_job_keeps_its_lease_while_it_runs() {
    let engine = Engine::new(8, fast_policy()).await;
    let runs: Arc<Mutex<Vec<u32>>> = Arc::default();
    let finish = Arc::new(tokio::sync::Notify::new());
    let handler = {
        let (runs, finish) = (runs.clone(), finish.clone());
        move |_: Value, meta: herald_core::queue::JobMeta| {
            let (runs, finish) = (runs.clone(), finish.clone());
            async move {
                runs.lock().unwrap().push(meta.attempt);
                // Runs until the test has seen its lease carried past five lease lengths.
                finish.notified().await;
                Ok(())
            }
        }
    };
    let a = engine.worker(options(5, 300), Duration::from_secs(5), handler.clone());
    let b = engine.worker(options(5, 300), Duration::from_secs(5), handler);
    engine
        .queue
        .push("long", &json!({}), now_ms())
        .await
        .unwrap();
    // The lease's deadline, as the heartbeat moves it: only the heartbeat keeps the job here.
    let inflight = format!("{{{}:{}}}:inflight", engine.prefix, engine.name);
    let lease_until = || async {
        let mut conn = engine.redis.clone();
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&inflight)
            .arg("long")
            .query_async(&mut conn)
            .await
            .unwrap();
        score.map(|s| s as i64)
    };
    let first = eventually(Duration::from_secs(10), "the long job starts", lease_until).await;
    eventually(
        Duration::from_secs(10),
        "the heartbeat carries the lease past five lease lengths",
        || async {
            lease_until()
                .await
                .filter(|until| *until >= first + 5 * 300)
        },
    )
    .await;
    finish.notify_one();
    eventually(
        Duration::from_secs(10),
        "the long job completed",
        || async {
            let s = engine.queue.stats().await.unwrap();
            (s.completed_last_minute == 1).then_some(())
        },
    )
    .await;
    assert_eq!(
        *runs.lock().unwrap(),
        [1],
        "no other worker took the job while it ran"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_hands_unfinished_leases_back_at_once() {
    let engine = Engine::new(8, fast_policy()).await;
    type Starts = Arc<Mutex<Vec<(u32, Instant, &'static str)>>>;
    let starts: Starts = Arc::default();
    let make = |who: &'static str, hang: bool| {
        let starts = starts.clone();
        move |_: Value, meta: herald_core::queue::JobMeta| {
            let starts = starts.clone();
            async move {
                starts
                    .lock()
                    .unwrap()
                    .push((meta.attempt, Instant::now(), who));
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        }
    };
    // A lease of 30 s: without a hand-back, the job would wait that long.
    let a = engine.worker(
        options(5, 30_000),
        Duration::from_millis(200),
        make("a", true),
    );
    engine
        .queue
        .push("unfinished", &json!({}), now_ms())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "worker a started the job",
        || async { (!starts.lock().unwrap().is_empty()).then_some(()) },
    )
    .await;
    let stopping = Instant::now();
    a.stop().await;
    let b = engine.worker(options(5, 30_000), Duration::from_secs(5), make("b", false));
    let (attempt, at, who) = eventually(
        Duration::from_secs(10),
        "worker b took the job over",
        || async { starts.lock().unwrap().iter().find(|s| s.2 == "b").copied() },
    )
    .await;
    assert_eq!(who, "b");
    assert_eq!(attempt, 1, "a hand-back is not a failed attempt");
    assert!(
        at - stopping < Duration::from_secs(5),
        "taken over {:?} after shutdown began",
        at - stopping
    );
    b.stop().await;
}

#[tokio::test]
async fn stats_count_each_state() {
    let engine = Engine::new(8, fast_policy()).await;
    let later = now_ms() + 60_000;
    engine
        .queue
        .push("now", &json!({}), now_ms())
        .await
        .unwrap();
    engine
        .queue
        .push("later-1", &json!({}), later)
        .await
        .unwrap();
    engine
        .queue
        .push("later-2", &json!({}), later)
        .await
        .unwrap();
    assert!(
        !engine
            .queue
            .push("later-2", &json!({}), later)
            .await
            .unwrap(),
        "a duplicate push is a no-op"
    );
    let s = engine.queue.stats().await.unwrap();
    assert_eq!(
        (s.pending, s.scheduled, s.running, s.dead),
        (1, 2, 0, 0),
        "{s:?}"
    );
    assert!(engine.queue.remove_waiting("later-1").await.unwrap());
    let s = engine.queue.stats().await.unwrap();
    assert_eq!(s.scheduled, 1);
    assert_eq!(s.name, "jobs");
}

/// Start a `herald-bench worker` process on the engine's queue.
fn bench_worker(engine: &Engine, lease_ms: u64, max_attempts: u32) -> Proc {
    let args = [
        ("--redis", herald_tests::redis_url()),
        ("--prefix", engine.prefix.clone()),
        ("--queue", engine.name.clone()),
        ("--concurrency", "5".to_owned()),
        ("--lease-ms", lease_ms.to_string()),
        ("--max-attempts", max_attempts.to_string()),
    ];
    let mut cmd_args = vec!["worker".to_owned()];
    for (k, v) in args {
        cmd_args.push(k.to_owned());
        cmd_args.push(v);
    }
    Proc::start_args("herald-bench", &cmd_args, &[])
}

/// Probe events `(kind, attempt, pid)` that bench workers recorded.
async fn probe_events(engine: &Engine) -> Vec<(String, u32, u32)> {
    let mut conn = engine.redis.clone();
    let key = format!("{{{}}}:probe", engine.prefix);
    let entries: Vec<String> = redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    entries
        .iter()
        .map(|e| {
            let p: Vec<&str> = e.split(' ').collect();
            (
                p[0].to_owned(),
                p[2].parse().unwrap(),
                p[3].parse().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_killed_worker_process_job_runs_on_another_with_the_attempt_advanced() {
    let engine = Engine::new(8, fast_policy()).await;
    let lease = 1500;
    let a = bench_worker(&engine, lease, 8);
    let b = bench_worker(&engine, lease, 8);
    engine
        .queue
        .push(
            "victim",
            &json!({"sleep_ms": 2000, "probe": true}),
            now_ms(),
        )
        .await
        .unwrap();
    let (_, attempt, pid) = eventually(
        Duration::from_secs(20),
        "a worker started the job",
        || async {
            probe_events(&engine)
                .await
                .into_iter()
                .find(|e| e.0 == "start")
        },
    )
    .await;
    assert_eq!(attempt, 1);
    let (victim, survivor) = if pid == a.pid() { (a, b) } else { (b, a) };
    let killed = Instant::now();
    victim.signal("KILL").await;
    let (_, attempt, pid) = eventually(
        Duration::from_secs(20),
        "the other worker re-ran the job",
        || async {
            probe_events(&engine)
                .await
                .into_iter()
                .find(|e| e.0 == "start" && e.1 == 2)
        },
    )
    .await;
    let took = killed.elapsed();
    assert_eq!(pid, survivor.pid(), "the surviving process took the job");
    assert_eq!(attempt, 2, "the attempt advanced");
    assert!(
        took <= Duration::from_millis(lease + 2500),
        "re-run {took:?} after the kill, lease {lease} ms"
    );
    eventually(Duration::from_secs(20), "the re-run finished", || async {
        probe_events(&engine)
            .await
            .into_iter()
            .find(|e| e.0 == "done")
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "the job is acknowledged",
        || async { (engine.queue.stats().await.unwrap().completed_last_minute == 1).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_job_that_keeps_killing_its_worker_ends_dead() {
    let engine = Engine::new(2, fast_policy()).await;
    let lease = 800;
    engine
        .queue
        .push(
            "poison",
            &json!({"sleep_ms": 600_000, "probe": true}),
            now_ms(),
        )
        .await
        .unwrap();
    for attempt in 1..=2 {
        let w = bench_worker(&engine, lease, 2);
        eventually(
            Duration::from_secs(20),
            "a worker started the poison job",
            || async {
                probe_events(&engine)
                    .await
                    .into_iter()
                    .find(|e| e.0 == "start" && e.1 == attempt)
            },
        )
        .await;
        w.signal("KILL").await;
    }
    // A third worker finds the lease expired after the last attempt: dead, not looping.
    let _w = bench_worker(&engine, lease, 2);
    let dead = eventually(
        Duration::from_secs(20),
        "the poison job is dead",
        || async { engine.queue.get_dead("poison").await.unwrap() },
    )
    .await;
    assert_eq!(dead.attempts, 2);
    assert!(
        dead.errors
            .iter()
            .all(|e| e.error.contains("lease expired")),
        "{:?}",
        dead.errors
    );
    assert_eq!(
        probe_events(&engine)
            .await
            .iter()
            .filter(|e| e.0 == "start")
            .count(),
        2
    );
}

#[tokio::test]
async fn a_queue_in_four_partitions_answers_for_all_of_them() {
    let engine = Engine::with_partitions(Some(4), 1, fast_policy()).await;
    let q = &engine.queue;
    // Forty jobs due in an hour, routed by id: every partition holds some.
    let later = now_ms() + 3_600_000;
    let jobs: Vec<NewJob> = (0..40)
        .map(|i| NewJob::new(format!("later-{i}"), &json!({"i": i}), later).unwrap())
        .collect();
    assert_eq!(q.push_many(&jobs).await.unwrap(), 40);
    assert_eq!(
        q.push_many(&jobs).await.unwrap(),
        0,
        "pushes stay idempotent"
    );
    let keys = engine.keys().await;
    for part in 0..4 {
        let scheduled = format!("{}:scheduled", q.hash_tag(part));
        assert!(keys.contains(&scheduled), "{scheduled} in {keys:?}");
    }
    assert_eq!(q.stats().await.unwrap().scheduled, 40);
    assert!(q.remove_waiting("later-7").await.unwrap());
    assert!(!q.remove_waiting("later-7").await.unwrap());
    assert_eq!(q.stats().await.unwrap().scheduled, 39);
    let expected = q.expected(&["later-8", "nobody"]).await.unwrap();
    assert!(
        expected[0].is_some_and(|t| t >= later),
        "expected at its due time: {expected:?}"
    );
    assert_eq!(expected[1], None);

    // Twelve jobs die, spread over the partitions: the dead list pages through all of them,
    // newest first, each once.
    let worker = engine.worker(options(4, 5000), Duration::from_secs(5), |_, _| async {
        Err(JobError::permanent("refused"))
    });
    for i in 0..12 {
        q.push(&format!("doomed-{i}"), &json!({"i": i}), now_ms())
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(10), "twelve dead jobs", || async {
        (q.stats().await.unwrap().dead == 12).then_some(())
    })
    .await;
    let mut listed = Vec::new();
    let mut offset = Some(0);
    while let Some(o) = offset {
        let page = q.list_dead(&DeadFilter::default(), o, 5).await.unwrap();
        listed.extend(page.jobs.into_iter().map(|j| (j.id, j.dead_at)));
        offset = page.next_offset;
    }
    assert_eq!(listed.len(), 12, "{listed:?}");
    let ids: std::collections::HashSet<&String> = listed.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 12, "none twice: {listed:?}");
    assert!(
        listed.windows(2).all(|w| w[0].1 >= w[1].1),
        "newest first: {listed:?}"
    );
    // One in a partition other than the first is found, deleted and replayed by id.
    let (elsewhere, _) = listed
        .iter()
        .find(|(id, _)| q.partition_of(id) != 0)
        .unwrap()
        .clone();
    assert_eq!(q.get_dead(&elsewhere).await.unwrap().unwrap().attempts, 1);
    assert!(q.delete_dead(&elsewhere).await.unwrap());
    assert!(q.get_dead(&elsewhere).await.unwrap().is_none());
    worker.stop().await;
    let (again, _) = listed.iter().find(|(id, _)| *id != elsewhere).unwrap();
    assert!(q.replay_dead(again).await.unwrap());
    let s = q.stats().await.unwrap();
    assert_eq!((s.dead, s.pending), (10, 1), "{s:?}");
}

#[tokio::test]
async fn a_worker_configured_with_fewer_partitions_still_runs_every_job() {
    // The API (say) pushes into four partitions; a worker configured with one learns, at
    // start, that four are in use and fetches them all.
    let engine = Engine::with_partitions(Some(4), 3, fast_policy()).await;
    let pusher = engine.queue.clone().adopted().await;
    push_due_now(&engine, 40).await;
    for part in 1..4 {
        let key = format!("{}:data", pusher.hash_tag(part));
        assert!(engine.keys().await.contains(&key), "jobs in {key}");
    }
    let configured = herald_core::queue::Queue::new(
        engine.redis.clone(),
        &engine.prefix,
        &engine.name,
        1,
        3,
        fast_policy(),
    );
    assert_eq!(configured.partitions(), 1);
    let worker_queue = configured.adopted().await;
    assert_eq!(worker_queue.partitions(), 4, "it fetches all four");
    assert_eq!(
        worker_queue.partition_of("anything"),
        0,
        "and pushes into its one"
    );
    let done = Arc::new(AtomicU64::new(0));
    let count = done.clone();
    let worker = Engine::worker_on(
        worker_queue.clone(),
        options(10, 5000),
        Duration::from_secs(5),
        move |_, _| {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        },
    );
    eventually(Duration::from_secs(10), "every job ran", || async {
        (done.load(Ordering::SeqCst) == 40).then_some(())
    })
    .await;
    // The handler counts before its job's ack lands: wait for the acks too.
    wait_idle(&worker_queue, "every job acked").await;
    worker.stop().await;
}

#[tokio::test]
async fn a_push_that_meets_its_job_running_runs_it_once_more_after() {
    // A job reads state, the pusher changes that state and pushes the same id while the job
    // still runs (a redelivery meeting the reconcile's copy): the running attempt may have
    // read the state before the change, so the job must run again after it, once.
    let engine = Engine::new(4, fast_policy()).await;
    let gated = Gated::default();
    let worker = engine.worker(options(4, 5000), Duration::from_secs(5), gated.handler());
    let q = &engine.queue;
    assert!(q.push("job", &json!({"v": 1}), now_ms()).await.unwrap());
    gated.wait_runs(1, "the first run started").await;
    assert!(
        q.push("job", &json!({"v": 2}), now_ms()).await.unwrap(),
        "a push of a running job takes effect"
    );
    assert!(
        q.push("job", &json!({"v": 3}), now_ms()).await.unwrap(),
        "the last push while it runs is the one that counts"
    );
    gated.gate.add_permits(1);
    gated.wait_runs(2, "the second run started").await;
    assert_eq!(gated.runs()[1], json!({"v": 3}));
    gated.gate.add_permits(1);
    wait_idle(q, "the second run was acked").await;
    assert_eq!(gated.runs().len(), 2, "once more, not twice");
    assert!(
        !engine.keys().await.iter().any(|k| k.ends_with(":again")),
        "nothing is left behind"
    );
    worker.stop().await;

    // A job that dies while a push waits for it starts that push's run with fresh attempts.
    let dying = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let second = {
        let (dying, gate) = (dying.clone(), gate.clone());
        move |payload: Value, _: herald_core::queue::JobMeta| {
            let (dying, gate) = (dying.clone(), gate.clone());
            async move {
                dying.fetch_add(1, Ordering::SeqCst);
                if payload["v"] == 1 {
                    gate.acquire().await.unwrap().forget();
                    return Err(JobError::Permanent("cannot ever work".to_owned()));
                }
                Ok(())
            }
        }
    };
    let worker = engine.worker(options(4, 5000), Duration::from_secs(5), second);
    assert!(q.push("doomed", &json!({"v": 1}), now_ms()).await.unwrap());
    eventually(
        Duration::from_secs(10),
        "the doomed run started",
        || async { (dying.load(Ordering::SeqCst) == 1).then_some(()) },
    )
    .await;
    assert!(q.push("doomed", &json!({"v": 2}), now_ms()).await.unwrap());
    gate.add_permits(1);
    wait_idle(q, "the pushed run went").await;
    assert_eq!(dying.load(Ordering::SeqCst), 2);
    assert_eq!(q.stats().await.unwrap().dead, 0, "the push revived it");
    worker.stop().await;

    // A sweep that only makes sure a job exists (the reconcile, the outbox) leaves a running
    // one alone: no run after it.
    let gated = Gated::default();
    let worker = engine.worker(options(4, 5000), Duration::from_secs(5), gated.handler());
    assert!(q.push("held", &json!({"v": 1}), now_ms()).await.unwrap());
    gated.wait_runs(1, "the held job runs").await;
    let sweep = [NewJob::new("held", &json!({"v": 1}), now_ms()).unwrap()];
    assert_eq!(q.ensure_many(&sweep).await.unwrap(), 0, "nothing added");
    gated.gate.add_permits(1);
    wait_idle(q, "the held job was acked").await;
    assert_eq!(gated.runs().len(), 1, "it ran once");
    worker.stop().await;
}
