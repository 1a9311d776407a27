//! End-to-end figures: messages delivered by a real `herald-worker` process to a loopback
//! Twilio-compatible provider with `sent` recorded in Postgres, and `POST /v1/messages`
//! accepted by a real `herald-api` process under 50 concurrent clients.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use axum::{Router, http::StatusCode, routing::post};
use herald_core::{
    domain::{Channel, Priority, jobs::DeliveryJob},
    queue::{self, NewJob},
};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::{
    Figures, poll_until,
    servers::{Stack, herald, wait_http},
};

/// A Twilio Messages API that accepts everything at once. The watch counts its calls.
pub(crate) async fn start_provider() -> anyhow::Result<(String, watch::Receiver<u64>)> {
    let (calls, counter) = watch::channel(0u64);
    let calls = Arc::new(calls);
    let app = Router::new().route(
        "/2010-04-01/Accounts/{sid}/Messages.json",
        post(move || {
            let mut n = 0;
            calls.send_modify(|c| {
                n = *c;
                *c += 1;
            });
            async move { crate::servers::twilio_created(n as usize) }
        }),
    );
    let url = crate::servers::serve(app).await?;
    Ok((url, counter))
}

/// Waits until the provider has been called at least `at_least` times.
async fn calls_reach(
    calls: &mut watch::Receiver<u64>,
    at_least: u64,
    within: Duration,
) -> anyhow::Result<()> {
    let reached = tokio::time::timeout(within, async {
        calls.wait_for(|n| *n >= at_least).await.map(|_| ())
    })
    .await;
    match reached {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => bail!("the provider stopped"),
        Err(_) => bail!(
            "only {} of {at_least} provider calls within {within:?}",
            *calls.borrow()
        ),
    }
}

/// Waits until `messages` messages whose id is `LIKE like` are recorded `sent`; returns when.
pub(crate) async fn all_sent(
    pool: &PgPool,
    like: &str,
    messages: usize,
    within: Duration,
) -> anyhow::Result<Instant> {
    poll_until(within, "every `sent` recorded", || async {
        let sent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM messages WHERE id LIKE $1 AND status = 'sent'",
        )
        .bind(like)
        .fetch_one(pool)
        .await?;
        Ok((sent as usize >= messages).then(Instant::now))
    })
    .await
}

pub(crate) fn base_env(pg: &str, redis: &str, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HERALD_DATABASE_URL", pg.to_owned()),
        ("HERALD_REDIS_URL", redis.to_owned()),
        ("HERALD_QUEUE_PREFIX", prefix.to_owned()),
        ("HERALD_LOG_FORMAT", "json".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
        ("HERALD_OPS_TOKEN", "bench-ops-token-0123456789".to_owned()),
        // One tenant sends everything here: the per-tenant limits would be the figure.
        ("HERALD_TENANT_SEND_RATE", "1000000".to_owned()),
        ("HERALD_API_RATE", "1000000".to_owned()),
    ]
}

/// A worker's settings for sending SMS to the loopback Twilio at `provider`.
pub(crate) fn twilio_env(provider: &str) -> [(&'static str, String); 4] {
    [
        ("HERALD_SMS_PROVIDER", "twilio".to_owned()),
        ("HERALD_TWILIO_ACCOUNT_SID", "ACbench".to_owned()),
        ("HERALD_TWILIO_AUTH_TOKEN", "bench-token".to_owned()),
        ("HERALD_TWILIO_BASE_URL", provider.to_owned()),
    ]
}

/// `n` accepted messages, committed and queued the way the API leaves them.
pub(crate) async fn accept(
    pool: &PgPool,
    queue: &queue::Queue,
    tenant: &str,
    tag: &str,
    n: usize,
) -> anyhow::Result<()> {
    accept_from(pool, queue, tenant, tag, n, 1).await
}

/// [`accept`], the messages spread evenly over `senders` senders (`+1500555000k`).
pub(crate) async fn accept_from(
    pool: &PgPool,
    queue: &queue::Queue,
    tenant: &str,
    tag: &str,
    n: usize,
    senders: usize,
) -> anyhow::Result<()> {
    let mut first = 1;
    for k in 0..senders {
        let count = n / senders + usize::from(k < n % senders);
        if count == 0 {
            continue;
        }
        let from = format!("+1500555{:04}", 6 + k);
        let batch = Accepted {
            tenant,
            from: &from,
            tag,
            to_prefix: "+1555",
            priority: Priority::Transactional,
        };
        batch.accept(pool, queue, first, count).await?;
        first += count;
    }
    Ok(())
}

/// SMS written and queued as the API and group sends leave them: `msg_<tag>_<g>` to
/// `<to_prefix><g, 7 digits>` from `from`, due now.
pub(crate) struct Accepted<'a> {
    pub tenant: &'a str,
    pub from: &'a str,
    pub tag: &'a str,
    pub to_prefix: &'a str,
    pub priority: Priority,
}

impl Accepted<'_> {
    /// Messages `first..first + n`.
    pub async fn accept(
        &self,
        pool: &PgPool,
        queue: &queue::Queue,
        first: usize,
        n: usize,
    ) -> anyhow::Result<()> {
        let last = first + n - 1;
        sqlx::query(
            "INSERT INTO messages (id, tenant_id, channel, to_addr, from_addr, body, status, send_at,
                                   expires_at, priority, encoding, segments)
             SELECT $1 || g, $2, 'sms', $6 || lpad(g::text, 7, '0'), $5,
                    'Your appointment is tomorrow at 3:30 PM', 'queued', now(),
                    now() + interval '1 day', $7, 'GSM-7', 1
             FROM generate_series($3, $4) AS g",
        )
        .bind(format!("msg_{}_", self.tag))
        .bind(self.tenant)
        .bind(first as i64)
        .bind(last as i64)
        .bind(self.from)
        .bind(self.to_prefix)
        .bind(self.priority.as_str())
        .execute(pool)
        .await?;
        let now = queue::now_ms();
        let jobs: Vec<NewJob> = (first..=last)
            .map(|g| {
                let id = format!("msg_{}_{g}", self.tag);
                let to = format!("{}{g:07}", self.to_prefix);
                let job = DeliveryJob::new(&id, self.tenant, Channel::Sms, &to).paced(
                    self.priority,
                    Some(self.from),
                    Some(1),
                );
                NewJob::new(id, &job, now)
            })
            .collect::<Result<_, _>>()?;
        for chunk in jobs.chunks(1000) {
            queue.push_many(chunk).await?;
        }
        Ok(())
    }
}

pub async fn run(
    figures: &mut Figures,
    messages: usize,
    requests: usize,
    workers: usize,
    senders: usize,
) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let (pg, redis, pool) = (&stack.pg, &stack.redis, &stack.pool);
    println!(
        "herald-bench: Postgres at {} (fsync and synchronous_commit on), Redis at {}",
        pg.url, redis.url
    );
    let created = stack.tenant("Bench Clinic", "+15005550006").await?;
    let tenant = created.tenant.id.clone();
    let (provider, mut calls) = start_provider().await?;

    for concurrency in [50usize, 200] {
        let prefix = format!("deliver{concurrency}");
        let tag = format!("c{concurrency}");
        let rconn = queue::connect(&redis.url)?;
        let mut config = herald_core::Config::for_urls(&pg.url, &redis.url);
        config.queue_prefix = prefix.clone();
        let q = queue::deliveries(&config, rconn.clone());
        accept_from(pool, &q, &tenant, &tag, messages, senders).await?;
        let before = *calls.borrow();
        let mut env = base_env(&pg.url, &redis.url, &prefix);
        env.extend(crate::delivery::twilio_env(&provider));
        env.extend([("HERALD_WORKER_CONCURRENCY", concurrency.to_string())]);
        let started: Vec<_> = (0..workers)
            .map(|_| herald("herald-worker", &env))
            .collect::<Result<_, _>>()?;
        let like = format!("msg_{tag}_%");
        // The provider's counter says when the first and the last message were handed over
        // (nothing polls); then Postgres, until every `sent` is recorded.
        let within = Duration::from_secs(600);
        calls_reach(&mut calls, before + 1, within).await?;
        let first = Instant::now();
        calls_reach(&mut calls, before + messages as u64, within).await?;
        let last = all_sent(pool, &like, messages, within).await?;
        let rss = started
            .iter()
            .map(|w| crate::servers::peak_rss_kib(w.id().unwrap_or(0)))
            .max()
            .unwrap_or(0);
        drop(started);
        let rate = messages as f64 / (last - first).as_secs_f64().max(0.001);
        let provider_calls = *calls.borrow() - before;
        let procs = match workers {
            1 => "one worker process".to_owned(),
            n => format!("{n} worker processes"),
        };
        let from = match senders {
            1 => String::new(),
            n => format!(", {n} senders"),
        };
        figures.add(
            &format!("delivery end to end ({messages} messages{from}, {procs}, concurrency {concurrency})"),
            format!("{rate:.0} messages/s ({provider_calls} provider calls, worker peak RSS {:.1} MiB)", rss as f64 / 1024.0),
            "15,000/s",
            "8,000/s",
        );
    }

    // An update that changes no indexed column (nor one an index's predicate reads) is a
    // HOT update, leaving every index of `messages` alone; the claim and the outcome of each
    // message should be. Postgres reports its counters within a second or so.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (updates, hot): (i64, i64) = sqlx::query_as(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'messages'",
    )
    .fetch_one(pool)
    .await?;
    figures.add(
        "updates of `messages` while delivering that left its indexes alone (HOT)",
        format!(
            "{:.0} % of {updates}",
            hot as f64 * 100.0 / updates.max(1) as f64
        ),
        "-",
        "-",
    );

    if std::env::var_os("HERALD_BENCH_STATEMENTS").is_some() {
        // Started with HERALD_BENCH_PG_OPTS="-c shared_preload_libraries=pg_stat_statements":
        // where Postgres spent its time, statement by statement.
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(pool)
            .await?;
        // Planning is counted with `-c pg_stat_statements.track_planning=on`: a statement
        // planned at every call (custom plans) shows as many plans as calls.
        let top: Vec<(f64, i64, i64, f64, i64, String)> = sqlx::query_as(
            "SELECT total_exec_time, calls, rows, total_plan_time, plans,
                    left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
             FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12",
        )
        .fetch_all(pool)
        .await?;
        for (ms, calls, rows, plan_ms, plans, query) in top {
            println!(
                "  {ms:9.0} ms {calls:7} calls {rows:8} rows {plan_ms:7.0} ms in {plans} plans  {query}"
            );
        }
    }

    // POST /v1/messages from 50 concurrent clients against a real herald-api process.
    let port = crate::servers::free_port()?;
    let mut env = base_env(&pg.url, &redis.url, "api");
    env.push(("HERALD_LISTEN", format!("127.0.0.1:{port}")));
    let api = herald("herald-api", &env)?;
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{base}/readyz"), Duration::from_secs(30)).await?;
    let key = Arc::new(created.api_key.clone());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (http, key, next, base) = (http.clone(), key.clone(), next.clone(), base.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i as usize >= requests {
                    return (latencies, errors);
                }
                let body = serde_json::json!({"channel": "sms", "to": format!("+1555{:07}", i % 10_000_000), "body": "Your table is ready"});
                let t = Instant::now();
                let r = http.post(format!("{base}/v1/messages")).bearer_auth(key.as_str()).json(&body).send().await;
                match r {
                    Ok(r) if r.status() == StatusCode::ACCEPTED => latencies.push(t.elapsed()),
                    _ => errors += 1,
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    drop(api);
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    figures.add(
        &format!("POST /v1/messages accepted (row + job), 50 clients, {requests} requests"),
        format!(
            "{rate:.0}/s, p50 {:.1} ms, p99 {:.1} ms, {errors} errors",
            pct(0.5).as_secs_f64() * 1000.0,
            pct(0.99).as_secs_f64() * 1000.0
        ),
        "10,000/s",
        "5,000/s, p99 < 20 ms",
    );
    Ok(())
}
