//! Daily delivery: each subscription's message at the contact's own local time, exactly once
//! per (subscription, local date) however many schedulers tick, caught up after downtime
//! until local midnight.

use std::collections::HashSet;

use chrono::{NaiveDate, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;
use tracing::{info, warn};

use crate::domain::{
    Channel, Priority,
    jobs::{AiJob, DeliveryJob},
};
use crate::{
    queue::{NewJob, Queue, now_ms},
    schedule::{end_of_local_day, render},
    store::{
        messages::{self, NewMessageRow},
        subscriptions::{self, Due},
    },
};

/// Subscriptions handled per statement.
const BATCH: i64 = 20_000;
/// Subscriptions per transaction, and how many transactions run at once.
const CHUNK: usize = 2_500;
const PARALLEL: usize = 2;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    /// Static messages created.
    pub created: usize,
    /// AI deliveries handed to the AI queue.
    pub ai: usize,
}

/// The AI queue's job id for a daily AI delivery.
pub fn daily_job_id(subscription_id: &str, date: NaiveDate) -> String {
    format!("daily:{subscription_id}:{date}")
}

fn message_for(d: &Due, now: chrono::DateTime<Utc>) -> Option<NewMessageRow> {
    let zone: Tz = d.zone.parse().unwrap_or(chrono_tz::UTC);
    let (to, from) = match d.channel {
        Channel::Email => (d.email.clone()?, d.email_from.clone()),
        _ => (d.phone.clone()?, d.sms_from.clone()),
    };
    let body = render(&d.content, d.name.as_deref(), now, zone);
    let mut row = NewMessageRow::outbound(
        &d.tenant_id,
        d.channel,
        &to,
        from.as_deref(),
        &body,
        "system",
    );
    row.priority = Priority::Bulk;
    if d.channel == Channel::Email {
        row.subject = Some(crate::domain::truncate(&body, 60));
    }
    row.contact_id = Some(d.contact_id.clone());
    row.subscription_id = Some(d.id.clone());
    row.local_date = Some(d.local_date);
    row.expires_at = end_of_local_day(zone, d.local_date);
    row.event_detail = format!("daily delivery for {}", d.local_date);
    Some(row)
}

/// One scheduler tick: creates every due delivery. Safe to run in several schedulers at once.
pub async fn tick(db: &PgPool, deliveries: &Queue, ai: &Queue) -> anyhow::Result<TickReport> {
    let mut report = TickReport::default();
    loop {
        let due = subscriptions::due(db, BATCH).await?;
        if due.is_empty() {
            break;
        }
        // Chunks in their own transactions, two at a time, so Postgres works on both cores.
        let mut chunks = tokio::task::JoinSet::new();
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(PARALLEL));
        for chunk in due.chunks(CHUNK) {
            let (chunk, db, deliveries, ai) =
                (chunk.to_vec(), db.clone(), deliveries.clone(), ai.clone());
            let permit = limit.clone().acquire_owned().await?;
            chunks.spawn(async move {
                let _permit = permit;
                run_chunk(&db, &deliveries, &ai, &chunk).await
            });
        }
        while let Some(done) = chunks.join_next().await {
            let r = done??;
            report.created += r.created;
            report.ai += r.ai;
        }
    }

    // AI runs whose job never reached Redis (pushes are idempotent by job id).
    let pending = subscriptions::pending_ai_runs(db).await?;
    if !pending.is_empty() {
        let jobs = pending
            .iter()
            .map(|(id, date)| {
                let job = AiJob::Daily {
                    subscription_id: id.clone(),
                    local_date: *date,
                };
                NewJob::new(daily_job_id(id, *date), &job, now_ms())
            })
            .collect::<Result<Vec<_>, _>>()?;
        ai.push_many(&jobs).await?;
    }
    if report.created + report.ai > 0 {
        info!(
            created = report.created,
            ai = report.ai,
            "daily deliveries created"
        );
    }
    Ok(report)
}

/// Claims, creates and queues one chunk of due subscriptions.
async fn run_chunk(
    db: &PgPool,
    deliveries: &Queue,
    ai: &Queue,
    due: &[Due],
) -> anyhow::Result<TickReport> {
    let ids: Vec<String> = due.iter().map(|d| d.id.clone()).collect();
    let dates: Vec<NaiveDate> = due.iter().map(|d| d.local_date).collect();
    let now = Utc::now();
    let mut tx = db.begin().await?;
    let won: HashSet<String> = subscriptions::claim_runs(&mut tx, &ids, &dates)
        .await?
        .into_iter()
        .collect();
    let rows: Vec<NewMessageRow> = due
        .iter()
        .filter(|d| d.content_kind == "static" && won.contains(&d.id))
        .filter_map(|d| message_for(d, now))
        .collect();
    let created: Vec<_> = messages::insert_many(&mut *tx, &rows)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let mut run_ids = Vec::with_capacity(created.len());
    let mut run_dates = Vec::with_capacity(created.len());
    let mut run_messages = Vec::with_capacity(created.len());
    for m in &created {
        if let (Some(s), Some(d)) = (&m.subscription_id, m.local_date) {
            run_ids.push(s.clone());
            run_dates.push(d);
            run_messages.push(m.id.clone());
        }
    }
    subscriptions::set_run_messages(&mut *tx, &run_ids, &run_dates, &run_messages).await?;
    subscriptions::set_last_dates(&mut tx, &ids, &dates).await?;
    tx.commit().await?;

    let jobs = created
        .iter()
        .map(|m| {
            let job = DeliveryJob::for_message(m);
            NewJob::new(m.id.clone(), &job, m.send_at.timestamp_millis())
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Err(e) = deliveries.push_many(&jobs).await {
        // New messages: the outbox sweep pushes them.
        warn!(error = %e, count = jobs.len(), "could not queue daily deliveries; the outbox sweep will");
    }
    let ai_jobs = due
        .iter()
        .filter(|d| d.content_kind == "ai" && won.contains(&d.id))
        .map(|d| {
            let job = AiJob::Daily {
                subscription_id: d.id.clone(),
                local_date: d.local_date,
            };
            NewJob::new(daily_job_id(&d.id, d.local_date), &job, now_ms())
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Err(e) = ai.push_many(&ai_jobs).await {
        warn!(error = %e, count = ai_jobs.len(), "could not queue daily AI deliveries; the next tick will");
    }
    Ok(TickReport {
        created: created.len(),
        ai: ai_jobs.len(),
    })
}
