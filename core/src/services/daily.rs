//! Daily delivery: each subscription's message at the contact's own local time, exactly once
//! per (subscription, local date) however many schedulers tick, caught up after downtime
//! until local midnight.

use std::collections::HashSet;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;
use tracing::{info, warn};

use crate::domain::{
    Channel, Priority,
    jobs::{AiJob, DeliveryJob},
};
use crate::{
    queue::{NewJob, Queue, now_ms},
    schedule::{end_of_local_day, first_daily_date, render},
    store::{
        messages::{self, NewMessageRow},
        subscriptions::{self, Due, SubscriptionRow},
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

/// What `PATCH /v1/subscriptions/{id}` changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionChanges {
    pub send_at_local: Option<NaiveTime>,
    /// `static` or `ai`, and the body or the prompt.
    pub content: Option<(&'static str, String)>,
    pub paused: Option<bool>,
}

/// Changes a subscription; `None` when the tenant has no such (live) subscription.
///
/// A new `send_at_local`, or a resume, takes effect like a new subscription would: from the
/// first local date whose message does not exist yet and whose new time is still ahead. So a
/// day that already has its message never gets a second one (`daily_runs` holds one run per
/// subscription and local date either way), and a resume after the day's time has passed
/// sends nothing late that day.
pub async fn change(
    db: &PgPool,
    tenant_id: &str,
    id: &str,
    changes: &SubscriptionChanges,
) -> anyhow::Result<Option<SubscriptionRow>> {
    let mut tx = db.begin().await.context("starting the change")?;
    let Some((mut row, zone)) = subscriptions::get_for_update(&mut tx, tenant_id, id)
        .await
        .context("locking the subscription")?
    else {
        return Ok(None);
    };
    let zone: Tz = zone.parse().unwrap_or(chrono_tz::UTC);
    let retimed = changes
        .send_at_local
        .is_some_and(|t| t != row.send_at_local);
    let resumed = row.paused && changes.paused == Some(false);
    if let Some(t) = changes.send_at_local {
        row.send_at_local = t;
    }
    if let Some((kind, text)) = &changes.content {
        (*kind).clone_into(&mut row.content_kind);
        row.content.clone_from(text);
    }
    if let Some(paused) = changes.paused {
        row.paused = paused;
    }
    if retimed || resumed {
        row.first_date = next_first_date(&row, zone, Utc::now());
    }
    let row = subscriptions::update(&mut tx, &row)
        .await
        .context("writing the subscription")?;
    tx.commit().await.context("committing the change")?;
    Ok(Some(row))
}

/// The first local date a changed subscription delivers on: after the last date it has
/// delivered for, and not before its time next comes round.
fn next_first_date(row: &SubscriptionRow, zone: Tz, now: DateTime<Utc>) -> NaiveDate {
    let next_time = first_daily_date(now, zone, row.send_at_local);
    match row.last_date.and_then(|d| d.succ_opt()) {
        Some(after_last) => after_last.max(next_time),
        None => next_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(send_at_local: NaiveTime, last_date: Option<NaiveDate>) -> SubscriptionRow {
        SubscriptionRow {
            id: "sub_x".to_owned(),
            tenant_id: "ten_x".to_owned(),
            contact_id: "ct_x".to_owned(),
            send_at_local,
            channel: Channel::Sms,
            content_kind: "static".to_owned(),
            content: "hi".to_owned(),
            first_date: NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
            last_date,
            created_at: Utc::now(),
            deleted_at: None,
            paused: false,
        }
    }

    fn at(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn a_changed_time_starts_on_the_first_day_without_a_message_whose_time_is_ahead() {
        let zone = chrono_tz::America::New_York;
        // 08:00 in New York on 3 March.
        let now = "2026-03-03T13:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 3, 3).unwrap();
        let tomorrow = today.succ_opt().unwrap();
        // Today has no message yet: a time still ahead is today, one passed is tomorrow.
        assert_eq!(next_first_date(&row(at(9, 0), None), zone, now), today);
        assert_eq!(next_first_date(&row(at(7, 30), None), zone, now), tomorrow);
        let yesterday = today.pred_opt().unwrap();
        assert_eq!(
            next_first_date(&row(at(9, 0), Some(yesterday)), zone, now),
            today
        );
        // Today's message exists: never a second one today, whatever the new time.
        assert_eq!(
            next_first_date(&row(at(9, 0), Some(today)), zone, now),
            tomorrow
        );
        assert_eq!(
            next_first_date(&row(at(7, 0), Some(today)), zone, now),
            tomorrow
        );
    }
}
