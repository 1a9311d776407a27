//! The reconcile: Redis holds the jobs, but Postgres says which must exist. When Redis
//! restarts (losing up to a second of writes with `appendfsync everysec`), fails over to a
//! replica that lagged, or comes back empty, jobs can be gone while their messages still wait.
//! The outbox sweep only looks at recent messages, so after any such event this pushes a job
//! for every message that should have one:
//!
//! - a waiting message (`scheduled`, `queued`, `retrying`) gets a job due at its `send_at`;
//! - a `sending` message gets a job due when its claim goes stale; if the attempt that holds
//!   the claim never reports back, that job takes the claim over and tries again.
//!
//! Pushes are idempotent by message id (a job still alive is left alone), so the reconcile
//! costs one pass over the unfinished messages and changes nothing when nothing was lost.
//! AI replies still wanted for texts of the last hour get their jobs again the same way.
//!
//! An event is noticed per partition, through the `run_id` of the server holding it and a
//! marker key that goes with the data (see [`Queue::needs_reconcile`]): on a cluster, a
//! failover of one master is noticed by the partitions it served. A first start reconciles
//! once too.

use std::time::Duration;

use chrono::Utc;
use herald_core::{
    domain::id_floor,
    domain::{
        MessageStatus,
        events::EventJob,
        jobs::{AiJob, DeliveryJob},
    },
    queue::{NewJob, Queue, now_ms},
    store::{events as event_store, outbox as pending},
};
use sqlx::PgPool;
use tracing::{info, warn};

const BATCH: i64 = 1_000;

/// Reconciles the `deliveries` queue with Postgres if Redis lost or may have lost data since
/// the last time (on any of its partitions). Returns how many jobs it had to add back
/// (`None`: nothing to check).
pub async fn deliveries(
    db: &PgPool,
    queue: &Queue,
    stale_claim: Duration,
) -> anyhow::Result<Option<usize>> {
    let Some(runs) = queue.needs_reconcile().await? else {
        return Ok(None);
    };
    let started = std::time::Instant::now();
    let stale = chrono::Duration::from_std(stale_claim)?;
    let (mut after, mut checked, mut added) = (String::new(), 0, 0);
    loop {
        let rows = pending::unfinished_after(db, &after, BATCH).await?;
        let jobs = rows
            .iter()
            .map(|m| {
                let due = if m.status == MessageStatus::Sending {
                    (m.updated_at + stale).max(Utc::now())
                } else {
                    m.send_at
                };
                let job = DeliveryJob::new(&m.id, &m.tenant_id, m.channel, &m.to_addr).paced(
                    m.priority,
                    m.from_addr.as_deref(),
                    m.segments,
                );
                NewJob::new(m.id.clone(), &job, due.timestamp_millis())
            })
            .collect::<Result<Vec<_>, _>>()?;
        added += queue.ensure_many(&jobs).await?;
        checked += rows.len();
        match rows.last() {
            Some(last) if rows.len() as i64 == BATCH => after = last.id.clone(),
            _ => break,
        }
    }
    queue.mark_reconciled(&runs).await?;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if added > 0 {
        warn!(
            checked,
            added,
            elapsed_ms,
            "Redis had lost delivery jobs (a restart or failover); they are queued again"
        );
    } else {
        info!(
            checked,
            elapsed_ms, "delivery queue reconciled with Postgres: nothing was missing"
        );
    }
    Ok(Some(added))
}

/// How far back the reconcile answers inbound texts: an automatic reply hours after the text
/// confuses more than it helps, and the text stays in its conversation for a person to answer.
const REPLY_HORIZON_MS: i64 = 60 * 60 * 1000;

/// The same for the `ai-replies` queue: every inbound text of the last hour still wanting a
/// reply has a job.
pub async fn replies(db: &PgPool, queue: &Queue) -> anyhow::Result<Option<usize>> {
    let Some(runs) = queue.needs_reconcile().await? else {
        return Ok(None);
    };
    let before = id_floor("msg", now_ms() + 1);
    let (mut after, mut added) = (id_floor("msg", now_ms() - REPLY_HORIZON_MS), 0);
    loop {
        let ids = pending::awaiting_reply_between(db, &after, &before, BATCH).await?;
        let jobs = ids
            .iter()
            .map(|id| {
                let job = AiJob::Reply {
                    inbound_id: id.clone(),
                };
                NewJob::new(id.clone(), &job, now_ms())
            })
            .collect::<Result<Vec<_>, _>>()?;
        added += queue.ensure_many(&jobs).await?;
        match ids.last() {
            Some(last) if ids.len() as i64 == BATCH => after = last.clone(),
            _ => break,
        }
    }
    queue.mark_reconciled(&runs).await?;
    if added > 0 {
        warn!(
            added,
            "Redis had lost AI reply jobs (a restart or failover); they are queued again"
        );
    }
    Ok(Some(added))
}

/// The same for the `events` queue: every pending event delivery has a job (one waiting for
/// a retry keeps its time; a lost one goes now).
pub async fn events(db: &PgPool, queue: &Queue) -> anyhow::Result<Option<usize>> {
    let Some(runs) = queue.needs_reconcile().await? else {
        return Ok(None);
    };
    let (mut after, mut added) = ((String::new(), String::new()), 0);
    loop {
        let rows = event_store::pending_after(db, (&after.0, &after.1), BATCH).await?;
        let jobs = rows
            .iter()
            .map(|d| {
                let job = EventJob {
                    event_id: d.event_id.clone(),
                    endpoint_id: d.endpoint_id.clone(),
                    tenant_id: d.tenant_id.clone(),
                };
                NewJob::new(job.id(), &job, now_ms())
            })
            .collect::<Result<Vec<_>, _>>()?;
        added += queue.ensure_many(&jobs).await?;
        match rows.last() {
            Some(last) if rows.len() as i64 == BATCH => {
                after = (last.event_id.clone(), last.endpoint_id.clone());
            }
            _ => break,
        }
    }
    queue.mark_reconciled(&runs).await?;
    if added > 0 {
        warn!(
            added,
            "Redis had lost event deliveries (a restart or failover); they are queued again"
        );
    }
    Ok(Some(added))
}
