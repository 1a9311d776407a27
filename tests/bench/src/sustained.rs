//! Issue 19, item 5: sustained load, not only burn-down. Messages are offered through a real
//! `herald-api` at a fixed rate, due now, while a real `herald-worker` (concurrency 50)
//! sends them to a loopback Twilio that notes when each arrives. The figures: the latency
//! from acceptance (the API's 202) to the provider call, p50, p99 and max, at 25 %, 50 % and
//! 80 % of the maximum, each for `seconds`. The maximum is the highest rate whose p99 stays
//! under a second, found by shorter trials stepping up by a quarter (and one between the last
//! that held and the first that did not): what the whole pipeline (API, worker, Postgres,
//! Redis and this load generator, all on this machine) sustains, not what it burns down.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::Form, routing::post};
use reqwest::StatusCode;
use tokio::sync::Semaphore;

use crate::{
    Figures,
    delivery::base_env,
    servers::{Stack, herald, wait_http},
};

/// When each message (numbered in its body) was accepted and when the provider got it.
#[derive(Default)]
struct Clock {
    accepted: Vec<Option<Instant>>,
    called: Vec<Option<Instant>>,
}

struct Load {
    clock: Arc<Mutex<Clock>>,
    http: reqwest::Client,
    base: String,
    key: String,
    next: AtomicU64,
}

impl Load {
    /// Offers `rate` messages a second for `span` (as many as the API takes, when `rate` is
    /// beyond it: 200 requests in flight at most); returns the numbers offered.
    async fn offer(self: &Arc<Self>, rate: f64, span: Duration) -> std::ops::Range<u64> {
        let first = self.next.load(Ordering::Relaxed);
        let in_flight = Arc::new(Semaphore::new(200));
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut offered = 0u64;
        while started.elapsed() < span {
            tick.tick().await;
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            while offered < due {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                offered += 1;
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                let load = self.clone();
                tokio::spawn(async move {
                    load.post(n).await;
                    drop(permit);
                });
            }
        }
        // Every request answered.
        let _ = in_flight.acquire_many(200).await;
        first..self.next.load(Ordering::Relaxed)
    }

    async fn post(&self, n: u64) {
        let body = serde_json::json!({"channel": "sms", "to": format!("+1555{:07}", n % 10_000_000), "body": format!("load {n}")});
        let r = self
            .http
            .post(format!("{}/v1/messages", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await;
        if matches!(r, Ok(ref r) if r.status() == StatusCode::ACCEPTED) {
            let mut clock = self.clock.lock().unwrap();
            let i = n as usize;
            if clock.accepted.len() <= i {
                clock.accepted.resize(i + 1, None);
            }
            clock.accepted[i] = Some(Instant::now());
        }
    }

    /// Waits until the provider has every accepted message of `range` (or two minutes).
    async fn drained(&self, range: &std::ops::Range<u64>) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let missing = {
                let clock = self.clock.lock().unwrap();
                range.clone().any(|n| {
                    let i = n as usize;
                    clock.accepted.get(i).copied().flatten().is_some()
                        && clock.called.get(i).copied().flatten().is_none()
                })
            };
            if !missing {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Offers `rate` for `span`, waits for it to drain, and answers its p99 (a message that
    /// never reached the provider counts as a minute late).
    async fn p99_at(self: &Arc<Self>, rate: f64, span: Duration) -> Duration {
        let range = self.offer(rate, span).await;
        self.drained(&range).await;
        let (mut lat, accepted) = self.latencies(&range);
        lat.extend(std::iter::repeat_n(
            Duration::from_secs(60),
            accepted - lat.len(),
        ));
        lat.sort();
        pct(&lat, 0.99)
    }

    /// The latencies of `range`, acceptance to provider call, sorted (a call that came before
    /// the 202 reached the client counts 0), and how many were accepted.
    fn latencies(&self, range: &std::ops::Range<u64>) -> (Vec<Duration>, usize) {
        let clock = self.clock.lock().unwrap();
        let mut accepted = 0;
        let mut out: Vec<Duration> = range
            .clone()
            .filter_map(|n| {
                let i = n as usize;
                let a = clock.accepted.get(i).copied().flatten()?;
                accepted += 1;
                let c = clock.called.get(i).copied().flatten()?;
                Some(c.saturating_duration_since(a))
            })
            .collect();
        out.sort();
        (out, accepted)
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

pub async fn run(figures: &mut Figures, seconds: u64) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let created = stack.tenant("Steady Clinic", "+15005550006").await?;
    let clock = Arc::new(Mutex::new(Clock::default()));
    let calls = Arc::new(AtomicU64::new(0));
    let provider = {
        let clock = clock.clone();
        let app = Router::new().route(
            "/2010-04-01/Accounts/{sid}/Messages.json",
            post(move |Form(form): Form<Vec<(String, String)>>| {
                let at = Instant::now();
                let n = form
                    .iter()
                    .find(|(k, _)| k == "Body")
                    .and_then(|(_, b)| b.strip_prefix("load ")?.parse::<usize>().ok());
                if let Some(n) = n {
                    let mut clock = clock.lock().unwrap();
                    if clock.called.len() <= n {
                        clock.called.resize(n + 1, None);
                    }
                    clock.called[n].get_or_insert(at);
                }
                let call = calls.fetch_add(1, Ordering::Relaxed);
                async move { crate::servers::twilio_created(call as usize) }
            }),
        );
        crate::servers::serve(app).await?
    };
    let port = crate::servers::free_port()?;
    let mut env = base_env(&stack.pg.url, &stack.redis.url, "steady");
    env.extend(crate::delivery::twilio_env(&provider));
    env.extend([
        ("HERALD_LISTEN", format!("127.0.0.1:{port}")),
        ("HERALD_WORKER_CONCURRENCY", "50".to_owned()),
        ("HERALD_WORKER_METRICS_LISTEN", "off".to_owned()),
    ]);
    let _api = herald("herald-api", &env)?;
    let _worker = herald("herald-worker", &env)?;
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{base}/readyz"), Duration::from_secs(30)).await?;
    let load = Arc::new(Load {
        clock,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?,
        base,
        key: created.api_key.clone(),
        next: AtomicU64::new(0),
    });

    // The maximum: the highest rate whose p99 stays under a second, found by trials that
    // step up by a quarter, then one between the last that held and the first that did not.
    let trial = Duration::from_secs((seconds / 4).max(10));
    let mut held: Option<(f64, Duration)> = None;
    let mut failed: Option<(f64, Duration)> = None;
    let mut rate = 500.0;
    while rate < 50_000.0 {
        let p99 = load.p99_at(rate, trial).await;
        println!("  trial at {rate:.0}/s: p99 {}", ms(p99));
        if p99 >= Duration::from_secs(1) {
            failed = Some((rate, p99));
            break;
        }
        held = Some((rate, p99));
        rate *= 1.25;
    }
    if let (Some((low, _)), Some((high, _))) = (held, failed) {
        let mid = (low + high) / 2.0;
        let p99 = load.p99_at(mid, trial).await;
        println!("  trial at {mid:.0}/s: p99 {}", ms(p99));
        if p99 < Duration::from_secs(1) {
            held = Some((mid, p99));
        } else {
            failed = Some((mid, p99));
        }
    }
    let Some((max, max_p99)) = held else {
        anyhow::bail!("not even 500 messages/s held a p99 under a second");
    };

    let mut rows = Vec::new();
    for share in [0.25, 0.5, 0.8] {
        let rate = max * share;
        let range = load.offer(rate, Duration::from_secs(seconds)).await;
        load.drained(&range).await;
        let (lat, accepted) = load.latencies(&range);
        let line = format!(
            "{:.0} % ({rate:.0}/s): p50 {}, p99 {}, max {} ({} of {accepted} accepted reached the provider)",
            share * 100.0,
            ms(pct(&lat, 0.5)),
            ms(pct(&lat, 0.99)),
            ms(lat.last().copied().unwrap_or_default()),
            lat.len(),
        );
        println!("  {line}");
        rows.push(line);
    }
    figures.add(
        &format!("sustained load through the API, acceptance to provider call ({seconds} s at each share of the maximum; trials of {} s; one API and one worker process at concurrency 50)", trial.as_secs()),
        format!(
            "maximum (highest rate with p99 under 1 s) {max:.0}/s (p99 {}{}); {}",
            ms(max_p99),
            failed.map_or(String::new(), |(r, p)| format!("; at {r:.0}/s p99 {}", ms(p))),
            rows.join("; "),
        ),
        "-",
        "-",
    );
    Ok(())
}
