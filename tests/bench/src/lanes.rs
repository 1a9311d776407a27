//! How late a message is when it falls due amid someone else's 100,000: a real
//! `herald-worker` drains a backlog of due SMS while single messages fall due beside it, one
//! every 50 ms, and the loopback Twilio notes when each arrives.
//!
//! - tenants: tenant A's 100,000 due SMS, and tenant B's messages (fairness across tenants);
//! - lanes: one tenant's 100,000 due bulk SMS, and its own transactional messages (priority).
//!
//! Each is run once without the single messages, so the backlog's own drain is known, and
//! once with them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Form, Router, routing::post};
use herald_core::{domain::Priority, queue};

use crate::{
    Figures,
    delivery::{Accepted, base_env},
    poll_until,
    servers::{Stack, herald},
};

/// Single messages go to numbers under this prefix; the provider notes when each arrives.
const WATCHED: &str = "+1777";
/// One single message falls due this often while the backlog drains.
const EVERY: Duration = Duration::from_millis(50);

/// What the loopback Twilio saw: calls per sender, and when each watched number was called.
#[derive(Default)]
struct Seen {
    from: HashMap<String, u64>,
    watched: HashMap<String, Instant>,
}

async fn start_provider() -> anyhow::Result<(String, Arc<Mutex<Seen>>)> {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let state = seen.clone();
    let app = Router::new().route(
        "/2010-04-01/Accounts/{sid}/Messages.json",
        post(move |Form(form): Form<HashMap<String, String>>| {
            let state = state.clone();
            async move {
                let n = {
                    let mut seen = state.lock().unwrap_or_else(|e| e.into_inner());
                    let from = form.get("From").cloned().unwrap_or_default();
                    *seen.from.entry(from).or_default() += 1;
                    if let Some(to) = form.get("To").filter(|to| to.starts_with(WATCHED)) {
                        seen.watched.insert(to.clone(), Instant::now());
                    }
                    seen.from.values().sum::<u64>()
                };
                crate::servers::twilio_created(n as usize)
            }
        }),
    );
    Ok((crate::servers::serve(app).await?, seen))
}

/// One run: `backlog` due SMS of `noisy`, and, with `single`, one message of `single` due
/// every [`EVERY`] until the backlog is sent. Returns the backlog's drain rate (messages/s)
/// and each single message's lateness (ms from due to the provider).
struct Run<'a> {
    stack: &'a Stack,
    provider: &'a str,
    seen: &'a Arc<Mutex<Seen>>,
    name: &'a str,
}

impl Run<'_> {
    async fn go(
        &self,
        noisy: &Accepted<'_>,
        backlog: usize,
        single: Option<&Accepted<'_>>,
    ) -> anyhow::Result<(f64, Vec<f64>)> {
        let (pg, redis, pool) = (&self.stack.pg, &self.stack.redis, &self.stack.pool);
        let prefix = format!("lanes-{}", self.name);
        let rconn = queue::connect(&redis.url)?;
        let mut config = herald_core::Config::for_urls(&pg.url, &redis.url);
        config.queue_prefix = prefix.clone();
        let q = queue::deliveries(&config, rconn.clone());
        noisy.accept(pool, &q, 1, backlog).await?;

        let mut env = base_env(&pg.url, &redis.url, &prefix);
        env.extend(crate::delivery::twilio_env(self.provider));
        env.extend([("HERALD_WORKER_CONCURRENCY", "100".to_owned())]);
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .watched
            .clear();
        let before = self.sent_from(noisy.from);
        let worker = herald("herald-worker", &env)?;
        let within = Duration::from_secs(600);
        poll_until(within, "the backlog starts", || async {
            Ok((self.sent_from(noisy.from) > before).then_some(()))
        })
        .await?;
        let first = Instant::now();

        let mut due: Vec<(String, Instant)> = Vec::new();
        let mut next = Instant::now();
        while self.sent_from(noisy.from) < before + backlog as u64 {
            if let Some(single) = single
                && Instant::now() >= next
            {
                let g = due.len() + 1;
                due.push((format!("{}{g:07}", single.to_prefix), Instant::now()));
                single.accept(pool, &q, g, 1).await?;
                next += EVERY;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let drained = first.elapsed();
        let lateness = self.lateness(&due, within).await?;
        drop(worker);
        Ok((backlog as f64 / drained.as_secs_f64(), lateness))
    }

    fn sent_from(&self, from: &str) -> u64 {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.from.get(from).copied().unwrap_or(0)
    }

    /// Waits for every single message; returns their lateness in ms, sorted.
    async fn lateness(
        &self,
        due: &[(String, Instant)],
        within: Duration,
    ) -> anyhow::Result<Vec<f64>> {
        poll_until(within, "every single message sent", || async {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            Ok(due
                .iter()
                .all(|(to, _)| seen.watched.contains_key(to))
                .then_some(()))
        })
        .await?;
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut late: Vec<f64> = due
            .iter()
            .map(|(to, at)| (seen.watched[to] - *at).as_secs_f64() * 1000.0)
            .collect();
        late.sort_by(f64::total_cmp);
        Ok(late)
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

/// A lateness figure: the single messages' percentiles, then how the backlog drained.
fn add_figure(figures: &mut Figures, figure: &str, late: &[f64], drains: String, target: &str) {
    figures.add(
        &format!("{figure} (one every 50 ms, {} of them)", late.len()),
        format!(
            "late p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {drains}",
            pct(late, 0.5),
            pct(late, 0.99),
            pct(late, 1.0)
        ),
        target,
        "-",
    );
}

pub async fn run(figures: &mut Figures, backlog: usize) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let (provider, seen) = start_provider().await?;
    let a = stack.tenant("Busy Shop", "+15005550010").await?;
    let b = stack.tenant("Quiet Clinic", "+15005550011").await?;
    let run = |name| Run {
        stack: &stack,
        provider: &provider,
        seen: &seen,
        name,
    };
    let a_backlog = |tag| Accepted {
        tenant: &a.tenant.id,
        from: "+15005550010",
        tag,
        to_prefix: "+1555",
        priority: Priority::Transactional,
    };
    let b_single = Accepted {
        tenant: &b.tenant.id,
        from: "+15005550011",
        tag: "tb",
        to_prefix: WATCHED,
        priority: Priority::Transactional,
    };
    let (alone, _) = run("t0").go(&a_backlog("ta0"), backlog, None).await?;
    let (beside, late) = run("t1")
        .go(&a_backlog("ta1"), backlog, Some(&b_single))
        .await?;
    add_figure(
        figures,
        &format!("tenant B's message due amid tenant A's {backlog} due"),
        &late,
        format!("A drains {beside:.0}/s beside them, {alone:.0}/s alone"),
        "p99 < 250 ms, A's drain unchanged",
    );

    let bulk = |tag| Accepted {
        tenant: &a.tenant.id,
        from: "+15005550010",
        tag,
        to_prefix: "+1555",
        priority: Priority::Bulk,
    };
    let urgent = Accepted {
        tenant: &a.tenant.id,
        from: "+15005550010",
        tag: "lu",
        to_prefix: WATCHED,
        priority: Priority::Transactional,
    };
    let (alone, _) = run("l0").go(&bulk("lb0"), backlog, None).await?;
    let (beside, late) = run("l1").go(&bulk("lb1"), backlog, Some(&urgent)).await?;
    add_figure(
        figures,
        &format!("a transactional message due amid its own tenant's {backlog} due bulk"),
        &late,
        format!("the bulk drains {beside:.0}/s beside them, {alone:.0}/s alone"),
        "p99 < 250 ms",
    );
    Ok(())
}
