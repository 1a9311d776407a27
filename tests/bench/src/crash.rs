//! The crash figure: a real `herald-worker` killed with `kill -9` while N SMS are in flight at a
//! Twilio-compatible provider that takes each message at once and answers only after 2 s; a new
//! worker started at once. Reported: how long until every message is recorded `sent`, and how
//! many texts the provider holds beyond one per message (duplicates; the target is 0).
//!
//! The provider keeps what it created and serves Twilio's Message list resource, which is what
//! the new worker asks before it sends an attempt whose outcome was never recorded.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::bail;
use axum::{
    Router, body::Bytes, extract::Query, http::StatusCode, response::IntoResponse, routing::post,
};
use herald_core::queue;
use tokio::sync::watch;

use crate::{
    Figures, poll_until,
    servers::{Stack, herald},
};

/// One message the provider holds.
#[derive(Clone)]
struct Held {
    sid: String,
    to: String,
    from: String,
    body: String,
    created: chrono::DateTime<chrono::Utc>,
}

struct Provider {
    held: Mutex<Vec<Held>>,
    posts: watch::Sender<u64>,
}

async fn start_provider(hang: Duration) -> anyhow::Result<(String, Arc<Provider>)> {
    let provider = Arc::new(Provider {
        held: Mutex::new(Vec::new()),
        posts: watch::channel(0).0,
    });
    let (create, list) = (provider.clone(), provider.clone());
    let app = Router::new().route(
        "/2010-04-01/Accounts/{sid}/Messages.json",
        post(move |body: Bytes| {
            let p = create.clone();
            async move {
                let form: HashMap<String, String> = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
                    .unwrap_or_default()
                    .into_iter()
                    .collect();
                let sid = {
                    let mut held = p.held.lock().unwrap();
                    let sid = format!("SM{:032x}", held.len());
                    held.push(Held {
                        sid: sid.clone(),
                        to: form.get("To").cloned().unwrap_or_default(),
                        from: form.get("From").cloned().unwrap_or_default(),
                        body: form.get("Body").cloned().unwrap_or_default(),
                        created: chrono::Utc::now(),
                    });
                    sid
                };
                p.posts.send_modify(|n| *n += 1);
                // Taken at once, answered late: a crash in between loses only the answer.
                tokio::time::sleep(hang).await;
                let body = format!(r#"{{"sid":"{sid}","status":"queued"}}"#);
                (StatusCode::CREATED, [("content-type", "application/json")], body).into_response()
            }
        })
        .get(move |Query(q): Query<HashMap<String, String>>| {
            let p = list.clone();
            async move {
                let held = p.held.lock().unwrap().clone();
                let messages: Vec<serde_json::Value> = held
                    .iter()
                    .rev()
                    .filter(|m| q.get("To") == Some(&m.to) && q.get("From") == Some(&m.from))
                    .map(|m| {
                        serde_json::json!({"sid": m.sid, "to": m.to, "from": m.from, "body": m.body,
                            "status": "queued", "direction": "outbound-api",
                            "date_created": m.created.to_rfc2822()})
                    })
                    .collect();
                let body = serde_json::json!({"messages": messages, "next_page_uri": null, "page": 0,
                    "page_size": 50});
                (StatusCode::OK, axum::Json(body)).into_response()
            }
        }),
    );
    let url = crate::servers::serve(app).await?;
    Ok((url, provider))
}

pub async fn run(figures: &mut Figures, in_flight: usize) -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let (pg, redis, pool) = (&stack.pg, &stack.redis, &stack.pool);
    let tenant = stack.tenant("Crash Clinic", "+15005550006").await?.tenant;
    let (provider_url, provider) = start_provider(Duration::from_secs(2)).await?;
    let prefix = "crash";
    let rconn = queue::connect(&redis.url)?;
    let mut config = herald_core::Config::for_urls(&pg.url, &redis.url);
    config.queue_prefix = prefix.to_owned();
    let q = queue::deliveries(&config, rconn.clone());
    crate::delivery::accept(pool, &q, &tenant.id, "crash", in_flight).await?;

    let mut env = crate::delivery::base_env(&pg.url, &redis.url, prefix);
    env.extend(crate::delivery::twilio_env(&provider_url));
    env.push(("HERALD_WORKER_CONCURRENCY", (in_flight + 50).to_string()));
    let mut victim = herald("herald-worker", &env)?;
    let mut posts = provider.posts.subscribe();
    if tokio::time::timeout(
        Duration::from_secs(60),
        posts.wait_for(|n| *n >= in_flight as u64),
    )
    .await
    .is_err()
    {
        bail!("{in_flight} sends were not in flight within 60 s");
    }
    victim.kill().await?;
    let killed = Instant::now();
    let _worker = herald("herald-worker", &env)?;
    let recovered = poll_until(
        Duration::from_secs(300),
        "every message recorded sent",
        || async {
            let sent: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM messages WHERE id LIKE 'msg_crash_%' AND status = 'sent'",
            )
            .fetch_one(pool)
            .await?;
            Ok((sent as usize >= in_flight).then(Instant::now))
        },
    )
    .await?;
    let held = provider.held.lock().unwrap().len();
    let duplicates = held.saturating_sub(in_flight);
    let reconciled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM herald_history(ARRAY(SELECT id FROM messages WHERE id LIKE 'msg_crash_%'))
         WHERE detail LIKE 'reconciled: twilio already had%'",
    )
    .fetch_one(pool)
    .await?;
    figures.add(
        &format!("a worker killed with {in_flight} SMS in flight (lease 10 s), a new one started at once"),
        format!(
            "recovered in {:.1} s, {duplicates} duplicates ({reconciled} attempts found at Twilio and recorded, not sent again)",
            (recovered - killed).as_secs_f64()
        ),
        "0 duplicates",
        "-",
    );
    Ok(())
}
