//! The outbox sweep: Postgres is the source of truth, Redis the execution queue. A message
//! whose job never reached Redis (Redis down when it was accepted, or a crash between the
//! commit and the push) is pushed here within seconds.
//!
//! Message ids sort by creation time, so the sweep keeps a watermark: every waiting message
//! with an id below it has been pushed at least once. Each tick pushes the waiting messages
//! created since, up to a few seconds ago (the API pushes its own at once; the grace keeps
//! the sweep from racing it, and from missing a transaction still committing), then moves
//! the watermark. Pushes are idempotent by message id, so racing the API or another
//! scheduler does no harm.

use herald_core::{
    domain::id_floor,
    queue::{NewJob, Queue, now_ms},
    services::{DeliveryJob, conversations::AiJob},
    store::messages,
};
use sqlx::PgPool;

/// How far behind now the sweep stays.
const GRACE_MS: i64 = 5_000;
const BATCH: i64 = 1_000;

/// Pushes every waiting message created since the watermark; returns how many it pushed.
pub async fn sweep(db: &PgPool, queue: &Queue) -> anyhow::Result<usize> {
    let name = queue.name();
    let before = id_floor("msg", now_ms() - GRACE_MS);
    let mut after = messages::watermark(db, name).await?.unwrap_or_default();
    let mut total = 0;
    loop {
        let due = messages::waiting_between(db, &after, &before, BATCH).await?;
        let jobs = due
            .iter()
            .map(|m| {
                let job = DeliveryJob::new(&m.id, &m.tenant_id, &m.channel, &m.to_addr);
                NewJob::new(m.id.clone(), &job, m.send_at.timestamp_millis())
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Redis down: the watermark stays, and the next tick tries again.
        total += queue.push_many(&jobs).await?;
        match due.last() {
            Some(last) if due.len() as i64 == BATCH => {
                after = last.id.clone();
                messages::advance_watermark(db, name, &after).await?;
            }
            _ => {
                messages::advance_watermark(db, name, &before).await?;
                return Ok(total);
            }
        }
    }
}

/// The reply outbox: inbound texts created since the watermark that still want an AI reply
/// job (Redis was down when they came in) get one. Returns how many it queued.
pub async fn sweep_replies(db: &PgPool, queue: &Queue) -> anyhow::Result<usize> {
    let name = queue.name();
    let before = id_floor("msg", now_ms() - GRACE_MS);
    let mut after = messages::watermark(db, name).await?.unwrap_or_default();
    let mut total = 0;
    loop {
        let ids = messages::awaiting_reply_between(db, &after, &before, BATCH).await?;
        let jobs = ids
            .iter()
            .map(|id| {
                NewJob::new(
                    id.clone(),
                    &AiJob::Reply {
                        inbound_id: id.clone(),
                    },
                    now_ms(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        total += queue.push_many(&jobs).await?;
        match ids.last() {
            Some(last) if ids.len() as i64 == BATCH => {
                after = last.clone();
                messages::advance_watermark(db, name, &after).await?;
            }
            _ => {
                messages::advance_watermark(db, name, &before).await?;
                return Ok(total);
            }
        }
    }
}
