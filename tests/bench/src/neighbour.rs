//! The noisy neighbour: tenant B's delivery throughput and lateness, first with tenant A idle,
//! then while every one of A's recipients answers 503 and A's API requests are all rejected.
//! One real `herald-worker` process and one real `herald-api` process, a Twilio-compatible
//! loopback provider, everything on this machine.
//!
//! B's figures, each phase on a fresh queue prefix:
//! - throughput: a backlog of `messages` SMS due at once, from the first provider call to the
//!   last `sent` recorded;
//! - lateness: `paced` SMS due evenly over 10 s, from each one's `send_at` to its provider call
//!   (p50, p99).
//!
//! With A noisy, A has a backlog of `messages` SMS to recipients that all answer 503 (queued
//! just before B's) and a load generator posting A's requests at a fixed rate: bodies holding
//! U+0000 (422) and unknown keys (401, then 429 once the address is over its budget).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use axum::{Router, body::Bytes, http::StatusCode, response::IntoResponse, routing::post};
use herald_core::{
    domain::jobs::DeliveryJob,
    queue::{self, NewJob},
    services::tenants::CreatedTenant,
};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::{
    Figures,
    servers::{Stack, herald, wait_http},
};

/// A's recipients start with this; the provider fails every one of them.
const NOISY: &str = "+1666";
/// B's recipients: `+1777` and the message's index.
const QUIET: &str = "+1777";

/// B's provider calls: (index, wall-clock ms of the call), and a counter to wait on.
struct Calls {
    b: Mutex<Vec<(usize, i64)>>,
    count: watch::Sender<u64>,
    a: AtomicU64,
}

/// Twilio's Messages API: 503 (a Twilio error body) for A's recipients, 201 for B's.
async fn start_provider() -> anyhow::Result<(String, Arc<Calls>, watch::Receiver<u64>)> {
    let (count, counter) = watch::channel(0u64);
    let calls = Arc::new(Calls {
        b: Mutex::new(Vec::new()),
        count,
        a: AtomicU64::new(0),
    });
    let state = calls.clone();
    let app = Router::new().route(
        "/2010-04-01/Accounts/{sid}/Messages.json",
        post(move |body: Bytes| {
            let calls = state.clone();
            async move {
                let at = chrono::Utc::now().timestamp_millis();
                let form: Vec<(String, String)> =
                    serde_urlencoded::from_bytes(&body).unwrap_or_default();
                let to = form
                    .iter()
                    .find(|(k, _)| k == "To")
                    .map(|(_, v)| v.as_str())
                    .unwrap_or_default();
                if to.starts_with(NOISY) {
                    calls.a.fetch_add(1, Ordering::Relaxed);
                    let body = r#"{"code":20500,"message":"Service Unavailable","status":503}"#;
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [("content-type", "application/json")],
                        body.to_owned(),
                    )
                        .into_response();
                }
                let index: usize = to
                    .strip_prefix(QUIET)
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(usize::MAX);
                let n = {
                    let mut b = calls.b.lock().unwrap();
                    b.push((index, at));
                    b.len()
                };
                calls.count.send_replace(n as u64);
                crate::servers::twilio_created(n as usize)
            }
        }),
    );
    let url = crate::servers::serve(app).await?;
    Ok((url, calls, counter))
}

/// Commits `due.len()` SMS of `tenant` to `{prefix}{index}` and queues their jobs, each due at
/// its time (ms), as the API leaves them.
async fn accept(
    pool: &PgPool,
    q: &queue::Queue,
    tenant: &str,
    tag: &str,
    prefix: &str,
    due: &[i64],
) -> anyhow::Result<()> {
    let ids: Vec<String> = (0..due.len()).map(|i| format!("msg_{tag}_{i}")).collect();
    let tos: Vec<String> = (0..due.len()).map(|i| format!("{prefix}{i:07}")).collect();
    let at: Vec<chrono::DateTime<chrono::Utc>> = due
        .iter()
        .map(|ms| chrono::DateTime::from_timestamp_millis(*ms).unwrap_or_default())
        .collect();
    for ((ids, tos), at) in ids.chunks(5000).zip(tos.chunks(5000)).zip(at.chunks(5000)) {
        sqlx::query(
            "INSERT INTO messages (id, tenant_id, channel, to_addr, from_addr, body, status, send_at, expires_at)
             SELECT id, $2, 'sms', to_addr, '+15005550006', 'Your appointment is tomorrow at 3:30 PM',
                    CASE WHEN send_at <= now() THEN 'queued' ELSE 'scheduled' END, send_at, send_at + interval '1 day'
             FROM unnest($1::text[], $3::text[], $4::timestamptz[]) AS v(id, to_addr, send_at)",
        )
        .bind(ids)
        .bind(tenant)
        .bind(tos)
        .bind(at)
        .execute(pool)
        .await?;
    }
    let jobs: Vec<NewJob> = ids
        .iter()
        .zip(&tos)
        .zip(due)
        .map(|((id, to), ms)| {
            NewJob::new(
                id.clone(),
                &DeliveryJob::new(id, tenant, herald_core::domain::Channel::Sms, to),
                *ms,
            )
        })
        .collect::<Result<_, _>>()?;
    for chunk in jobs.chunks(1000) {
        q.push_many(chunk).await?;
    }
    Ok(())
}

/// A's requests at a fixed rate until `stop`: bodies holding U+0000, and unknown keys.
fn reject_load(
    base: String,
    key: String,
    per_second: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, [u64; 4])> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        // The guesses come from another loopback address, as a stranger's would: their
        // budget of failed authentications is not A's.
        let stranger = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
            .build()
            .unwrap_or_else(|_| http.clone());
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_second.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let sent = Arc::new(AtomicU64::new(0));
        // 2xx, 401, 422, 429
        let answers: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            n += 1;
            let (http, stranger, base, key, sent, answers) = (
                http.clone(),
                stranger.clone(),
                base.clone(),
                key.clone(),
                sent.clone(),
                answers.clone(),
            );
            tokio::spawn(async move {
                let request = if n.is_multiple_of(3) {
                    stranger
                        .get(format!("{base}/v1/messages"))
                        .bearer_auth(format!("hk_unknown{n:032}"))
                } else {
                    http.post(format!("{base}/v1/messages"))
                        .bearer_auth(&key)
                        .json(&serde_json::json!({"channel": "sms", "to": "+15551234567", "body": "bad\u{0}text"}))
                };
                sent.fetch_add(1, Ordering::Relaxed);
                if let Ok(r) = request.send().await {
                    let slot = match r.status().as_u16() {
                        401 => 1,
                        422 => 2,
                        429 => 3,
                        _ => 0,
                    };
                    answers[slot].fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let counts = [0, 1, 2, 3].map(|i| answers[i].load(Ordering::Relaxed));
        (sent.load(Ordering::Relaxed), counts)
    })
}

struct Phase {
    throughput: f64,
    p50_ms: i64,
    p99_ms: i64,
}

#[allow(clippy::too_many_arguments)]
async fn phase(
    noisy: bool,
    pool: &PgPool,
    pg_url: &str,
    redis_url: &str,
    provider: &str,
    calls: &Arc<Calls>,
    counter: &watch::Receiver<u64>,
    a: &CreatedTenant,
    b: &CreatedTenant,
    messages: usize,
    paced: usize,
    run: usize,
    noise: Noise,
) -> anyhow::Result<Phase> {
    let name = match (noisy, run) {
        (true, _) => "noisy".to_owned(),
        (false, run) => format!("idle{run}"),
    };
    let prefix = format!("neighbour-{name}");
    let rconn = queue::connect(redis_url)?;
    let mut config = herald_core::Config::for_urls(pg_url, redis_url);
    config.queue_prefix = prefix.clone();
    let q = queue::deliveries(&config, rconn.clone());

    // The API, for A's rejected requests (started in both phases, so only the load differs).
    let port = crate::servers::free_port()?;
    let mut api_env = crate::delivery::base_env(pg_url, redis_url, &prefix);
    api_env.push(("HERALD_LISTEN", format!("127.0.0.1:{port}")));
    let api = herald("herald-api", &api_env)?;
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{base}/readyz"), Duration::from_secs(30)).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let load = (noisy && noise.requests_per_second > 0).then(|| {
        reject_load(
            base,
            a.api_key.clone(),
            noise.requests_per_second,
            stop.clone(),
        )
    });

    let now = queue::now_ms();
    if noisy {
        let due = vec![now; noise.backlog];
        accept(pool, &q, &a.tenant.id, &format!("{name}a"), NOISY, &due).await?;
    }
    calls.b.lock().unwrap().clear();
    calls.count.send_replace(0);
    let backlog = vec![now; messages];
    accept(pool, &q, &b.tenant.id, &format!("{name}b"), QUIET, &backlog).await?;

    let mut env = crate::delivery::base_env(pg_url, redis_url, &prefix);
    env.extend(crate::delivery::twilio_env(provider));
    env.extend([("HERALD_WORKER_CONCURRENCY", "50".to_owned())]);
    let worker = herald("herald-worker", &env)?;
    let within = Duration::from_secs(600);
    let reached = |n: u64| {
        let mut counter = counter.clone();
        async move {
            tokio::time::timeout(within, counter.wait_for(|c| *c >= n))
                .await
                .map(|_| ())
        }
    };
    if reached(1).await.is_err() {
        bail!("no provider call within {within:?}");
    }
    let first = Instant::now();
    if reached(messages as u64).await.is_err() {
        bail!("B's backlog was not handed over within {within:?}");
    }
    let like = format!("msg_{name}b_%");
    let last = crate::delivery::all_sent(pool, &like, messages, within).await?;
    let throughput = messages as f64 / (last - first).as_secs_f64().max(0.001);

    // Lateness: `paced` messages due evenly over 10 s, starting 2 s from now.
    calls.b.lock().unwrap().clear();
    calls.count.send_replace(0);
    let start = queue::now_ms() + 2_000;
    let due: Vec<i64> = (0..paced)
        .map(|i| start + (i as i64 * 10_000) / paced.max(1) as i64)
        .collect();
    accept(pool, &q, &b.tenant.id, &format!("{name}p"), QUIET, &due).await?;
    if reached(paced as u64).await.is_err() {
        bail!("B's paced messages were not handed over within {within:?}");
    }
    let mut lateness: Vec<i64> = calls
        .b
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(i, at)| due.get(*i).map(|d| at - d))
        .collect();
    lateness.sort_unstable();
    let pct = |p: f64| {
        lateness
            .get(((lateness.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    stop.store(true, Ordering::Relaxed);
    if let Some(load) = load {
        let (sent, [ok, unauthorized, invalid, limited]) = load.await?;
        println!(
            "herald-bench: A's requests while B was measured: {sent} sent; {invalid} answered 422, {unauthorized} 401, {limited} 429, {ok} other; A's provider calls: {}",
            calls.a.load(Ordering::Relaxed)
        );
    }
    drop(worker);
    drop(api);
    Ok(Phase {
        throughput,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}

/// What tenant A does in the noisy phase.
#[derive(Debug, Clone, Copy)]
pub struct Noise {
    /// A's messages to recipients that all fail, queued as B's backlog is.
    pub backlog: usize,
    /// A's rejected requests per second.
    pub requests_per_second: u64,
}

pub async fn run(
    figures: &mut Figures,
    messages: usize,
    paced: usize,
    noise: Noise,
) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let (pg, redis, pool) = (&stack.pg, &stack.redis, &stack.pool);
    println!(
        "herald-bench: noisy neighbour, Postgres at {}, Redis at {}",
        pg.url, redis.url
    );
    let a = stack.tenant("Noisy Shop", "+15005550001").await?;
    let b = stack.tenant("Quiet Clinic", "+15005550002").await?;
    let (provider, calls, counter) = start_provider().await?;

    // Idle, noisy, idle: the machine's speed drifts, so the noisy phase is compared with the
    // mean of the idle phases around it.
    let mut results = Vec::new();
    for (run, noisy) in [false, true, false].into_iter().enumerate() {
        let p = phase(
            noisy, pool, &pg.url, &redis.url, &provider, &calls, &counter, &a, &b, messages, paced,
            run, noise,
        )
        .await?;
        results.push(p);
    }
    let noisy = &results[1];
    let idle = Phase {
        throughput: (results[0].throughput + results[2].throughput) / 2.0,
        p50_ms: (results[0].p50_ms + results[2].p50_ms) / 2,
        p99_ms: (results[0].p99_ms + results[2].p99_ms) / 2,
    };
    for (label, p) in [
        ("A idle (before)", &results[0]),
        ("A noisy", noisy),
        ("A idle (after)", &results[2]),
    ] {
        figures.add(
            &format!(
                "noisy neighbour, {label}: B's delivery ({messages} messages, concurrency 50)"
            ),
            format!(
                "{:.0} messages/s; {paced} paced: lateness p50 {} ms, p99 {} ms",
                p.throughput, p.p50_ms, p.p99_ms
            ),
            "A changes B by < 10 %",
            "-",
        );
    }
    figures.add(
        "noisy neighbour: B with A noisy / B with A idle (mean of before and after)",
        format!(
            "throughput {:.2}x, p99 lateness {:+} ms",
            noisy.throughput / idle.throughput.max(0.001),
            noisy.p99_ms - idle.p99_ms
        ),
        "throughput > 0.90x",
        "-",
    );
    Ok(())
}
