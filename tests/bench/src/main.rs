//! herald-bench: measures Herald's queue engine on this machine and prints the figures beside
//! DESIGN.md's targets.
//!
//! ```sh
//! cargo run --release -p herald-bench            # everything, about two minutes
//! cargo run --release -p herald-bench -- --jobs 20000   # a smaller backlog
//! cargo run --release -p herald-bench -- --only neighbour  # tenant B beside a failing tenant A
//! cargo run --release -p herald-bench -- --only crash      # kill -9 with sends in flight
//! cargo run --release -p herald-bench -- --only lanes      # lateness amid a 100,000 backlog
//! cargo run --release -p herald-bench -- --only events     # delivery with an event per message
//! cargo run --release -p herald-bench -- --only import     # 100,000 contacts in 10 requests
//! cargo run --release -p herald-bench -- --only retention  # the retention pass over 1,000,000 messages
//! cargo run --release -p herald-bench -- --only sustained  # latency at a fixed offered rate
//! ```
//!
//! It starts its own `redis-server` on a free loopback port (AOF on, fsync every second, as in
//! production) and runs the worker as a separate process (`herald-bench worker ...`, the same
//! binary) so the worker's memory is measured alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crash;
mod delivery;
mod events;
mod fanout;
mod lanes;
mod neighbour;
mod retention;
mod servers;
mod sustained;
mod worker;

use std::{
    collections::HashMap,
    process::{ExitCode, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use herald_core::queue::{self, NewJob, Queue, RetryPolicy, now_ms};
use tokio::process::{Child, Command};

pub use servers::RedisServer;
pub use worker::BenchJob;

const QUEUE: &str = "bench";

const USAGE: &str = "usage: herald-bench [--only FIGURES] [flags]

Measures Herald on this machine and prints the figures beside DESIGN.md's targets. Starts its
own Redis and Postgres on free loopback ports; build the release binaries first
(cargo build --release --workspace --bins).

  --only engine      the queue engine: drain, enqueue, lateness, recovery (--jobs 100000)
  --only fanout      daily fan-out, group send, reconcile (--subscriptions 100000)
  --only delivery    end-to-end delivery and POST /v1/messages (--messages 50000, --requests 50000)
  --only crash       kill -9 with SMS in flight: recovery and duplicates (--in-flight 50)
  --only lanes       lateness amid another tenant's and one's own bulk backlog (--backlog 100000)
  --only neighbour   tenant B beside a failing tenant A (--messages 20000, --paced 5000,
                     --a-backlog 20000, --a-requests 300)
  --only events      delivery with and without a message.sent event per message, alternately
                     (--messages 50000, --rounds 2)
  --only import      POST /v1/contacts/import, JSON and CSV (--contacts 100000, --import-requests 10)
  --only retention   the retention pass over old messages, alone and beside delivery
                     (--old 1000000, --messages 20000, --rounds 3)
  --only sustained   messages offered through the API at 25, 50 and 80 % of the maximum: latency
                     from acceptance to the provider, and the highest rate with p99 under 1 s
                     (--seconds 60)
  (no --only)        all of them, in that order

  --redis-cluster    run every figure on a Redis Cluster of three masters with a replica each
                     (16 partitions per queue) instead of one Redis
  --workers N        worker processes for the drain and delivery figures (default 1; each with
                     the figure's concurrency)
  --senders N        SMS senders the delivery figure's messages are spread over (default 1; on
                     a cluster a sender's texts share one partition)
";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .iter()
        .any(|a| matches!(a.as_str(), "-h" | "--help" | "help"))
    {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let result = if args.first().map(String::as_str) == Some("worker") {
        worker::main(parse_flags(&args[1..])).await
    } else {
        bench(parse_flags(&args)).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--key value` pairs; a `--key` followed by another flag (or nothing) is `true`.
pub fn parse_flags(args: &[String]) -> HashMap<String, String> {
    let mut flags = HashMap::new();
    let mut it = args.iter().peekable();
    while let Some(arg) = it.next() {
        if let Some(key) = arg.strip_prefix("--") {
            let value = match it.peek() {
                Some(next) if !next.starts_with("--") => it.next().cloned().unwrap_or_default(),
                _ => "true".to_owned(),
            };
            flags.insert(key.to_owned(), value);
        }
    }
    flags
}

pub fn flag<T: std::str::FromStr>(flags: &HashMap<String, String>, name: &str, default: T) -> T {
    flags
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn queue_for(redis: &queue::Redis, prefix: &str) -> Queue {
    Queue::new(
        redis.clone(),
        prefix,
        QUEUE,
        queue::default_partitions(redis),
        8,
        RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(10)),
    )
}

/// A worker process of this binary.
struct WorkerProc {
    child: Child,
}

impl WorkerProc {
    fn start(
        redis_url: &str,
        prefix: &str,
        concurrency: usize,
        lease_ms: u64,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let child = Command::new(exe)
            .args([
                "worker", "--redis", redis_url, "--prefix", prefix, "--queue", QUEUE,
            ])
            .args([
                "--concurrency",
                &concurrency.to_string(),
                "--lease-ms",
                &lease_ms.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self { child })
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Peak resident memory so far, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        servers::peak_rss_kib(self.pid())
    }

    /// SIGTERM, then the JSON summary the worker prints as it exits.
    async fn stop(self) -> anyhow::Result<serde_json::Value> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .await;
        let out = tokio::time::timeout(Duration::from_secs(30), self.child.wait_with_output())
            .await
            .context("the worker did not exit within 30 s of SIGTERM")??;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or("{}");
        Ok(serde_json::from_str(line)?)
    }
}

struct Figures {
    rows: Vec<(String, String, String, String)>,
}

impl Figures {
    fn add(&mut self, figure: &str, measured: String, target: &str, floor: &str) {
        println!("  {figure}: {measured}");
        self.rows.push((
            figure.to_owned(),
            measured,
            target.to_owned(),
            floor.to_owned(),
        ));
    }
}

async fn fill(queue: &Queue, n: usize, due_ms: impl Fn(usize) -> i64) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        let due = due_ms(i);
        batch.push(NewJob::new(
            format!("j{i}"),
            &BenchJob {
                due_ms: due,
                ..Default::default()
            },
            due,
        )?);
        if batch.len() == 1000 {
            queue.push_many(&batch).await?;
            batch.clear();
        }
    }
    queue.push_many(&batch).await?;
    Ok(())
}

/// How often [`poll_until`] looks again.
const POLL: Duration = Duration::from_millis(10);

/// Waits until `check` yields a value, looking again every [`POLL`]; fails after `within`.
/// For conditions nothing announces (queue counts, rows in Postgres).
pub async fn poll_until<T, F, Fut>(within: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check().await? {
            return Ok(found);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until nothing is pending, scheduled or running; returns when the first job was taken
/// and when the last finished.
async fn wait_drained(
    queue: &Queue,
    total: u64,
    within: Duration,
) -> anyhow::Result<(Instant, Instant)> {
    let first = std::cell::Cell::new(None);
    let last = poll_until(within, "the queue drains", || {
        let first = &first;
        async move {
            let s = queue.stats().await?;
            let left = s.pending + s.scheduled + s.running;
            if first.get().is_none() && left < total {
                first.set(Some(Instant::now()));
            }
            Ok((left == 0).then(Instant::now))
        }
    })
    .await?;
    Ok((first.get().unwrap_or(last), last))
}

async fn bench(flags: HashMap<String, String>) -> anyhow::Result<()> {
    servers::use_cluster(flag(&flags, "redis-cluster", false));
    let workers: usize = flag(&flags, "workers", 1usize).max(1);
    let jobs: usize = flag(&flags, "jobs", 100_000);
    let only: String = flag(&flags, "only", "all".to_owned());
    let mut figures = Figures { rows: Vec::new() };
    if only == "all" || only == "engine" {
        engine(&mut figures, jobs, workers).await?;
    }
    if only == "all" || only == "fanout" {
        let subscriptions: usize = flag(&flags, "subscriptions", 100_000);
        fanout::run(&mut figures, subscriptions).await?;
    }
    if only == "all" || only == "delivery" {
        let messages: usize = flag(&flags, "messages", 50_000);
        let requests: usize = flag(&flags, "requests", 50_000);
        let senders: usize = flag(&flags, "senders", 1usize).max(1);
        delivery::run(&mut figures, messages, requests, workers, senders).await?;
    }
    if only == "all" || only == "crash" {
        let in_flight: usize = flag(&flags, "in-flight", 50);
        crash::run(&mut figures, in_flight).await?;
    }
    if only == "all" || only == "lanes" {
        let backlog: usize = flag(&flags, "backlog", 100_000);
        lanes::run(&mut figures, backlog).await?;
    }
    if only == "all" || only == "neighbour" {
        let messages: usize = flag(&flags, "messages", 20_000);
        let paced: usize = flag(&flags, "paced", 5_000);
        let noise = neighbour::Noise {
            backlog: flag(&flags, "a-backlog", messages),
            requests_per_second: flag(&flags, "a-requests", 300),
        };
        neighbour::run(&mut figures, messages, paced, noise).await?;
    }
    if only == "all" || only == "events" {
        let messages: usize = flag(&flags, "messages", 50_000);
        events::run(&mut figures, messages, flag(&flags, "rounds", 2)).await?;
    }
    if only == "all" || only == "import" {
        let contacts: usize = flag(&flags, "contacts", 100_000);
        events::import(&mut figures, contacts, flag(&flags, "import-requests", 10)).await?;
    }
    if only == "all" || only == "retention" {
        retention::run(
            &mut figures,
            flag(&flags, "old", 1_000_000),
            flag(&flags, "messages", 20_000),
            flag(&flags, "rounds", 3),
        )
        .await?;
    }
    if only == "all" || only == "sustained" {
        sustained::run(&mut figures, flag(&flags, "seconds", 60)).await?;
    }
    println!();
    println!("| figure | measured | target | floor |");
    println!("|---|---|---|---|");
    for (figure, measured, target, floor) in &figures.rows {
        println!("| {figure} | {measured} | {target} | {floor} |");
    }
    Ok(())
}

async fn engine(figures: &mut Figures, jobs: usize, workers: usize) -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let redis = queue::connect(&server.url)?;
    println!(
        "herald-bench: Redis at {} (AOF everysec), {jobs} jobs per drain run",
        server.url
    );

    // Enqueue: one job per call from 50 concurrent clients, and in batches of 1,000.
    {
        let q = Arc::new(queue_for(&redis, "enq1"));
        let n = jobs;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..50 {
            let q = q.clone();
            tasks.push(tokio::spawn(async move {
                for i in (c..n).step_by(50) {
                    q.push(&format!("j{i}"), &BenchJob::default(), now_ms())
                        .await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let rate = n as f64 / started.elapsed().as_secs_f64();
        figures.add(
            "enqueue, one job per call, 50 concurrent clients",
            format!("{rate:.0} jobs/s"),
            "-",
            "-",
        );

        let q = queue_for(&redis, "enq2");
        let started = Instant::now();
        fill(&q, n, |_| now_ms()).await?;
        let rate = n as f64 / started.elapsed().as_secs_f64();
        figures.add(
            "enqueue, batches of 1,000",
            format!("{rate:.0} jobs/s"),
            "-",
            "-",
        );
    }

    // Drain a pre-filled backlog with `workers` worker processes.
    let mut peak_rss = 0;
    let procs = match workers {
        1 => "one worker process".to_owned(),
        n => format!("{n} worker processes"),
    };
    for concurrency in [1usize, 50, 200] {
        let prefix = format!("drain{concurrency}");
        let q = queue_for(&redis, &prefix);
        fill(&q, jobs, |_| 0).await?;
        let started: Vec<WorkerProc> = (0..workers)
            .map(|_| WorkerProc::start(&server.url, &prefix, concurrency, 10_000))
            .collect::<Result<_, _>>()?;
        let (first, last) = wait_drained(&q, jobs as u64, Duration::from_secs(600)).await?;
        let mut processed = 0;
        for worker in started {
            peak_rss = peak_rss.max(worker.peak_rss_kib());
            let summary = worker.stop().await?;
            processed += summary["processed"].as_u64().unwrap_or(0);
        }
        let rate = jobs as f64 / (last - first).as_secs_f64();
        let (target, floor) = if concurrency == 1 {
            ("-", "-")
        } else {
            ("40,000/s", "20,000/s")
        };
        figures.add(
            &format!("drain {jobs} no-op jobs, {procs}, concurrency {concurrency}"),
            format!("{rate:.0} jobs/s ({processed} processed)"),
            target,
            floor,
        );
    }
    figures.add(
        "worker peak RSS (VmHWM) over the drain runs",
        format!("{:.1} MiB", peak_rss as f64 / 1024.0),
        "40 MiB",
        "100 MiB",
    );

    // Scheduled precision: 10,000 jobs due over 10 s, one every millisecond.
    {
        let prefix = "late";
        let q = queue_for(&redis, prefix);
        let worker = WorkerProc::start(&server.url, prefix, 200, 10_000)?;
        // The worker is up once it has run a job; then it waits idle for the next.
        let ready = BenchJob {
            probe: true,
            ..Default::default()
        };
        q.push("ready", &ready, now_ms()).await?;
        let mut c = redis.clone();
        wait_probe(&mut c, &worker::probe_key(prefix), |e| e.kind == "done").await?;
        let start = now_ms() + 1_000;
        fill(&q, 10_000, |i| start + i as i64).await?;
        wait_drained(&q, 10_000, Duration::from_secs(60)).await?;
        let summary = worker.stop().await?;
        let l = &summary["lateness_ms"];
        figures.add(
            "scheduled lateness, 10,000 jobs due over 10 s (p50 / p99 / max)",
            format!("{} / {} / {} ms", l["p50"], l["p99"], l["max"]),
            "p99 < 50 ms",
            "p99 < 250 ms",
        );
        let early = l["early"].as_u64().unwrap_or(0);
        if early > 0 {
            println!("  WARNING: {early} jobs started before their due time");
        }
    }

    // Recovery: kill -9 the worker running a job; another process runs it again.
    {
        let prefix = "kill";
        let q = queue_for(&redis, prefix);
        let a = WorkerProc::start(&server.url, prefix, 10, 10_000)?;
        let b = WorkerProc::start(&server.url, prefix, 10, 10_000)?;
        let probe = worker::probe_key(prefix);
        q.push(
            "victim",
            &BenchJob {
                sleep_ms: 600_000,
                probe: true,
                ..Default::default()
            },
            now_ms(),
        )
        .await?;
        let mut c = redis.clone();
        let first = wait_probe(&mut c, &probe, |e| e.kind == "start").await?;
        let (victim, survivor) = if first.pid == a.pid() { (a, b) } else { (b, a) };
        let killed_at = Instant::now();
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(victim.pid().to_string())
            .status()
            .await;
        drop(victim);
        let rerun = wait_probe(&mut c, &probe, |e| e.kind == "start" && e.attempt == 2).await?;
        let took = killed_at.elapsed();
        assert_eq!(rerun.pid, survivor.pid());
        figures.add(
            "a killed worker's in-flight job runs again (lease 10 s)",
            format!("{:.1} s, attempt {}", took.as_secs_f64(), rerun.attempt),
            "10 s",
            "30 s",
        );
        drop(survivor);
    }
    Ok(())
}

struct ProbeEvent {
    kind: String,
    attempt: u32,
    pid: u32,
}

/// Waits for a probe event `want` accepts, taking events off the probe list as they come
/// (a blocking pop: nothing polls).
async fn wait_probe(
    conn: &mut queue::Redis,
    key: &str,
    want: impl Fn(&ProbeEvent) -> bool,
) -> anyhow::Result<ProbeEvent> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        // One second at most per pop, well inside the connection's response timeout.
        let popped: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(key)
            .arg(1)
            .query_async(conn)
            .await?;
        let Some((_, entry)) = popped else { continue };
        let parts: Vec<&str> = entry.split(' ').collect();
        if let [kind, _id, attempt, pid, _at] = parts.as_slice() {
            let ev = ProbeEvent {
                kind: (*kind).to_owned(),
                attempt: attempt.parse().unwrap_or(0),
                pid: pid.parse().unwrap_or(0),
            };
            if want(&ev) {
                return Ok(ev);
            }
        }
    }
    bail!("no matching probe event in {key} within 60 s")
}
