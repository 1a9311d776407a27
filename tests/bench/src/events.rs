//! Issue 17's figures: event fan-out beside delivery, and bulk contact import.
//!
//! - events: real `herald-worker` and `herald-scheduler` processes deliver N SMS to a loopback
//!   Twilio, for a tenant with no endpoint and for one whose endpoint asked for
//!   `message.sent` (each message makes an event, posted to a loopback receiver), alternately,
//!   so the machine's drift falls on both alike. The figures: delivery with and without the
//!   events, their ratio, and how fast the events drain;
//! - import: `POST /v1/contacts/import` of 100,000 contacts in 10 requests of 10,000 against a
//!   real `herald-api` process, as JSON and as CSV.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, http::StatusCode, routing::post};
use herald_core::{queue, services::events::create_endpoint, store::events::EndpointFields};
use tokio::sync::watch;

use crate::{
    Figures,
    delivery::{accept, all_sent, base_env},
    servers::{Stack, herald, wait_http},
};

/// A server that answers every POST with `status` and counts the calls.
async fn counting_server(
    path: &str,
    answer: fn(u64) -> axum::response::Response,
) -> anyhow::Result<(String, watch::Receiver<u64>)> {
    let (calls, counter) = watch::channel(0u64);
    let calls = Arc::new(calls);
    let app = Router::new().route(
        path,
        post(move || {
            let mut n = 0;
            calls.send_modify(|c| {
                *c += 1;
                n = *c;
            });
            async move { answer(n) }
        }),
    );
    Ok((crate::servers::serve(app).await?, counter))
}

pub(crate) async fn reach(
    calls: &mut watch::Receiver<u64>,
    at_least: u64,
    what: &str,
) -> anyhow::Result<Instant> {
    let within = Duration::from_secs(600);
    let reached = tokio::time::timeout(within, calls.wait_for(|n| *n >= at_least))
        .await
        .map(|r| r.is_ok());
    if reached == Ok(true) {
        Ok(Instant::now())
    } else {
        anyhow::bail!(
            "{what}: only {} of {at_least} within {within:?}",
            *calls.borrow()
        )
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn run(figures: &mut Figures, messages: usize, rounds: usize) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let (pg, redis, pool) = (&stack.pg, &stack.redis, &stack.pool);
    println!(
        "herald-bench: Postgres at {} (fsync and synchronous_commit on), Redis at {}",
        pg.url, redis.url
    );
    let (provider, mut sms) = counting_server("/2010-04-01/Accounts/{sid}/Messages.json", |n| {
        crate::servers::twilio_created(n as usize)
    })
    .await?;
    let (receiver, mut events) = counting_server("/events", |_| {
        use axum::response::IntoResponse;
        StatusCode::NO_CONTENT.into_response()
    })
    .await?;
    let plain = stack
        .tenant("No Endpoint Clinic", "+15005550006")
        .await?
        .tenant
        .id;
    let listening = stack
        .tenant("Endpoint Clinic", "+15005550007")
        .await?
        .tenant
        .id;
    create_endpoint(
        pool,
        &listening,
        EndpointFields {
            url: Some(format!("{receiver}/events")),
            events: Some(vec!["message.sent".to_owned()]),
            ..Default::default()
        },
        None,
    )
    .await?;

    let prefix = "events";
    let mut env = base_env(&pg.url, &redis.url, prefix);
    env.extend(crate::delivery::twilio_env(&provider));
    env.extend([
        ("HERALD_WORKER_CONCURRENCY", "50".to_owned()),
        ("HERALD_WEBHOOK_ALLOW_PRIVATE", "true".to_owned()),
        ("HERALD_WORKER_METRICS_LISTEN", "off".to_owned()),
        ("HERALD_SCHEDULER_METRICS_LISTEN", "off".to_owned()),
    ]);
    let worker = herald("herald-worker", &env)?;
    let scheduler = herald("herald-scheduler", &env)?;
    let pids = [
        ("worker", worker.id().unwrap_or(0)),
        ("scheduler", scheduler.id().unwrap_or(0)),
        ("postgres", pg.pid()),
        ("redis", redis.pid()),
    ];
    let cpu = || pids.map(|(_, pid)| crate::servers::tree_cpu_ticks(pid));
    let rconn = queue::connect(&redis.url)?;
    let mut config = herald_core::Config::for_urls(&pg.url, &redis.url);
    config.queue_prefix = prefix.to_owned();
    let deliveries = queue::deliveries(&config, rconn.clone());

    let (mut without, mut with, mut drained) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        for (tenant, listened) in [(&plain, false), (&listening, true)] {
            let tag = format!("r{round}{}", if listened { "e" } else { "p" });
            let (sms_before, events_before) = (*sms.borrow(), *events.borrow());
            let cpu_before = cpu();
            accept(pool, &deliveries, tenant, &tag, messages).await?;
            let first = reach(&mut sms, sms_before + 1, "provider calls").await?;
            reach(&mut sms, sms_before + messages as u64, "provider calls").await?;
            let last = all_sent(
                pool,
                &format!("msg_{tag}_%"),
                messages,
                Duration::from_secs(600),
            )
            .await?;
            let rate = messages as f64 / (last - first).as_secs_f64().max(0.001);
            if listened {
                with.push(rate);
                let done = reach(
                    &mut events,
                    events_before + messages as u64,
                    "events received",
                )
                .await?;
                drained.push(messages as f64 / (done - first).as_secs_f64().max(0.001));
            } else {
                without.push(rate);
            }
            // CPU per message by process (clock ticks are 10 ms), once its work is done.
            let spent: Vec<String> = cpu()
                .iter()
                .zip(cpu_before)
                .zip(pids)
                .map(|((after, before), (name, _))| {
                    let us = (after - before) as f64 * 10_000.0 / messages as f64;
                    format!("{name} {us:.0} µs")
                })
                .collect();
            let what = if listened {
                "with message.sent events"
            } else {
                "no endpoint"
            };
            println!(
                "  round {round}, {what}: {rate:.0} messages/s; CPU per message: {}",
                spent.join(", ")
            );
        }
    }
    // Nothing more than one event per message arrives.
    let extra = *events.borrow() - (rounds * messages) as u64;
    let ratios: Vec<f64> = with.iter().zip(&without).map(|(w, o)| w / o).collect();
    figures.add(
        &format!("delivery with a message.sent event per message to one endpoint ({messages} messages, concurrency 50, {rounds} alternating rounds, medians)"),
        format!(
            "{:.0} messages/s against {:.0} without an endpoint: {:.2}x (pairs {}); events delivered end to end at {:.0}/s, {extra} extra",
            median(with.clone()),
            median(without.clone()),
            median(ratios.clone()),
            ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", "),
            median(drained),
        ),
        "-",
        "delivery falls less than 20 %",
    );
    Ok(())
}

/// `n` contacts as an import's JSON body, phones from `first`.
fn json_import(first: usize, n: usize) -> String {
    let contacts: Vec<serde_json::Value> = (first..first + n)
        .map(|i| serde_json::json!({"phone": format!("+1666{i:07}"), "name": format!("Patient {i}"), "email": format!("p{i}@example.com")}))
        .collect();
    serde_json::json!({"contacts": contacts}).to_string()
}

/// The same as CSV, with a name that needs quoting.
fn csv_import(first: usize, n: usize) -> String {
    let mut csv = String::from("phone,name,email\r\n");
    for i in first..first + n {
        csv.push_str(&format!(
            "+1666{i:07},\"Patient, {i}\",p{i}@example.com\r\n"
        ));
    }
    csv
}

pub async fn import(figures: &mut Figures, contacts: usize, requests: usize) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let tenant = stack.tenant("Import Clinic", "+15005550006").await?;
    let port = crate::servers::free_port()?;
    let mut env = base_env(&stack.pg.url, &stack.redis.url, "import");
    env.push(("HERALD_LISTEN", format!("127.0.0.1:{port}")));
    let _api = herald("herald-api", &env)?;
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&format!("{base}/readyz"), Duration::from_secs(30)).await?;
    let http = reqwest::Client::new();
    let per = contacts.div_ceil(requests);
    for (format, content_type, offset) in [
        ("JSON", "application/json", 0),
        ("CSV", "text/csv", contacts),
    ] {
        let bodies: Vec<String> = (0..requests)
            .map(|r| {
                let first = offset + r * per;
                if format == "JSON" {
                    json_import(first, per)
                } else {
                    csv_import(first, per)
                }
            })
            .collect();
        let started = Instant::now();
        let mut created = 0;
        for body in bodies {
            let r = http
                .post(format!("{base}/v1/contacts/import"))
                .bearer_auth(&tenant.api_key)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await?;
            let status = r.status();
            let answer: serde_json::Value = r.json().await?;
            if status != StatusCode::OK {
                anyhow::bail!("import answered {status}: {answer}");
            }
            created += answer["created"].as_u64().unwrap_or(0);
        }
        let elapsed = started.elapsed();
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts WHERE tenant_id = $1")
            .bind(&tenant.tenant.id)
            .fetch_one(&stack.pool)
            .await?;
        figures.add(
            &format!(
                "contact import, {format}: {} contacts in {requests} requests",
                per * requests
            ),
            format!(
                "{:.2} s ({:.0} contacts/s; {created} created, {rows} contacts in the tenant now)",
                elapsed.as_secs_f64(),
                (per * requests) as f64 / elapsed.as_secs_f64()
            ),
            "-",
            "under 10 s",
        );
    }
    Ok(())
}
