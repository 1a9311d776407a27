//! Issue 18's figure: the retention pass over 1,000,000 messages, alone and beside delivery.
//!
//! A tenant keeping 90 days has `old` messages made about 200 days ago (three events each;
//! one in a hundred refused, with its error texts and a dead letter). The figures: how long
//! the scheduler's pass (its default pace: batches of 1,000, resting three times as long as
//! each took) takes to remove their texts; then, over `old` more such messages, end-to-end
//! delivery of `messages` SMS by a real worker process with the pass running and without it,
//! alternately, so the machine's drift falls on both alike.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use herald_core::{
    domain::id_floor,
    queue,
    services::privacy::{self, RetentionPace},
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    Figures,
    delivery::{accept, base_env},
    events::{median, reach},
    servers::{Stack, herald},
};

/// `n` delivered (or, one in a hundred, refused) messages of `tenant`, made one a second
/// apart from `from`, each with its events, and a dead letter per refused one.
async fn old_messages(
    pool: &PgPool,
    tenant: &str,
    from: DateTime<Utc>,
    n: usize,
) -> anyhow::Result<()> {
    for first in (0..n).step_by(10_000) {
        let (ids, times): (Vec<String>, Vec<DateTime<Utc>>) = (first..n.min(first + 10_000))
            .map(|i| {
                let at = from + chrono::Duration::seconds(i as i64);
                (id_floor("msg", at.timestamp_millis()), at)
            })
            .unzip();
        sqlx::query(
            "WITH m AS (
                INSERT INTO messages (id, tenant_id, channel, to_addr, from_addr, body, status,
                                      send_at, expires_at, created_at, updated_at, sent_at,
                                      last_error, attempts, encoding, segments)
                SELECT x.id, $1, 'sms', '+1555' || lpad((x.n % 10000000)::text, 7, '0'),
                       '+15005550006',
                       'Hi Patient ' || x.n || ', your cleaning is on Tuesday at 3:30 PM.',
                       CASE WHEN x.n % 100 = 0 THEN 'failed' ELSE 'delivered' END,
                       x.at, x.at + interval '1 day', x.at, x.at, x.at,
                       CASE WHEN x.n % 100 = 0
                            THEN 'twilio 21617 (HTTP 400): the message to +1555' || x.n || ' is too long' END,
                       1, 'GSM-7', 1
                FROM unnest($2::text[], $3::timestamptz[]) WITH ORDINALITY AS x(id, at, n)
                RETURNING id, status, created_at, last_error
             ), e AS (
                INSERT INTO message_events (message_id, at, status, detail)
                SELECT m.id, m.created_at, s.status, COALESCE(s.detail, m.last_error)
                FROM m CROSS JOIN LATERAL (VALUES ('queued', 'accepted'), ('sending', 'attempt 1'),
                                                  (m.status, NULL)) AS s(status, detail)
             )
             INSERT INTO dead_letters (id, queue, tenant_id, message_id, reason, payload, attempts,
                                       errors, dead_at)
             SELECT 'dl_' || substr(m.id, 5), 'deliveries', $1, m.id, 'rejected',
                    jsonb_build_object('message_id', m.id), 1,
                    jsonb_build_array(jsonb_build_object('at', m.created_at, 'error', m.last_error)),
                    m.created_at
             FROM m WHERE m.status = 'failed'",
        )
        .bind(tenant)
        .bind(&ids)
        .bind(&times)
        .execute(pool)
        .await?;
    }
    sqlx::query("VACUUM ANALYZE messages").execute(pool).await?;
    sqlx::query("VACUUM ANALYZE message_events")
        .execute(pool)
        .await?;
    Ok(())
}

/// When every message of `tenant` is recorded `sent`.
async fn all_sent(pool: &PgPool, tenant: &str, n: usize) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let sent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM messages WHERE tenant_id = $1 AND status = 'sent'",
        )
        .bind(tenant)
        .fetch_one(pool)
        .await?;
        if sent as usize >= n {
            return Ok(Instant::now());
        }
        anyhow::ensure!(Instant::now() < deadline, "only {sent} of {n} sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn run(
    figures: &mut Figures,
    old: usize,
    messages: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let (pg, redis, pool) = (&stack.pg, &stack.redis, &stack.pool);
    let keeper = stack.tenant("Old Clinic", "+15005550005").await?.tenant.id;
    let now = Utc::now();

    let started = Instant::now();
    old_messages(pool, &keeper, now - chrono::Duration::days(200), old).await?;
    println!(
        "  {old} old messages written in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let go = CancellationToken::new();
    let started = Instant::now();
    let alone = privacy::retention_pass(pool, Utc::now(), RetentionPace::default(), &go).await?;
    let took = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        alone.messages_redacted == old as u64,
        "the pass redacted {} of {old}",
        alone.messages_redacted
    );
    figures.add(
        &format!("retention pass over {old} messages older than their tenant's 90 days, alone (default pace: batches of 1,000, resting three times as long as each took)"),
        format!(
            "{took:.0} s ({:.0} messages/s, {} statements)",
            old as f64 / took,
            alone.batches
        ),
        "-",
        "-",
    );

    // Delivery beside the pass, over as many more old messages.
    old_messages(pool, &keeper, now - chrono::Duration::days(180), old).await?;
    let (provider, mut calls) = crate::delivery::start_provider().await?;
    let prefix = "retention";
    let mut env = base_env(&pg.url, &redis.url, prefix);
    env.extend(crate::delivery::twilio_env(&provider));
    env.extend([
        ("HERALD_WORKER_CONCURRENCY", "50".to_owned()),
        ("HERALD_WORKER_METRICS_LISTEN", "off".to_owned()),
    ]);
    let _worker = herald("herald-worker", &env)?;
    let rconn = queue::connect(&redis.url)?;
    let mut config = herald_core::Config::for_urls(&pg.url, &redis.url);
    config.queue_prefix = prefix.to_owned();
    let deliveries = queue::deliveries(&config, rconn.clone());

    let (mut without, mut beside, mut redacted) = (Vec::new(), Vec::new(), 0);
    for round in 0..rounds {
        for with_pass in [false, true] {
            let tenant = stack
                .tenant(
                    &format!("Clinic {round} {with_pass}"),
                    &format!("+150055{round:03}{}", u8::from(with_pass)),
                )
                .await?
                .tenant
                .id;
            let stop = CancellationToken::new();
            let pass = with_pass.then(|| {
                let (pool, stop) = (pool.clone(), stop.clone());
                tokio::spawn(async move {
                    privacy::retention_pass(&pool, Utc::now(), RetentionPace::default(), &stop)
                        .await
                })
            });
            let before = *calls.borrow();
            let tag = format!("r{round}{}", u8::from(with_pass));
            accept(pool, &deliveries, &tenant, &tag, messages).await?;
            let first = reach(&mut calls, before + 1, "provider calls").await?;
            reach(&mut calls, before + messages as u64, "provider calls").await?;
            let last = all_sent(pool, &tenant, messages).await?;
            let rate = messages as f64 / (last - first).as_secs_f64().max(0.001);
            if let Some(pass) = pass {
                stop.cancel();
                let done = pass.await??;
                anyhow::ensure!(
                    done.messages_redacted > 0,
                    "the pass had nothing left to do: give it more messages"
                );
                redacted += done.messages_redacted;
                beside.push(rate);
            } else {
                without.push(rate);
            }
            let what = if with_pass {
                "beside the pass"
            } else {
                "alone"
            };
            println!("  round {round}, delivery {what}: {rate:.0} messages/s");
        }
    }
    let ratios: Vec<f64> = beside.iter().zip(&without).map(|(b, w)| b / w).collect();
    figures.add(
        &format!("delivery while the retention pass runs ({messages} messages, concurrency 50, {rounds} alternating rounds, medians)"),
        format!(
            "{:.0} messages/s against {:.0} without it: {:.2}x (pairs {}); the pass redacted {redacted} meanwhile",
            median(beside),
            median(without),
            median(ratios.clone()),
            ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", "),
        ),
        "-",
        "at most 10 % lower",
    );
    Ok(())
}
