//! The outbox sweep: Postgres is the source of truth, Redis the execution queue. A message
//! whose job never reached Redis (Redis down when it was accepted, or a crash between the
//! commit and the push) is pushed here within seconds.
//!
//! The sweep goes by the transaction that inserted each message, not by the message's id. An
//! id is minted before its transaction commits, long before for a whole group send, or by a
//! host whose clock is behind; a watermark on ids could pass a message that was not committed
//! yet and never come back for it. Transactions below Postgres's snapshot horizon have all
//! finished, whatever ids they minted, so each step of the sweep remembers the horizon and,
//! once that is a few seconds old (the API pushes its own messages at once; the grace keeps the
//! sweep from racing it), pushes the waiting messages those transactions inserted and moves on.
//! Pushes are idempotent by message id, so racing the API or another scheduler does no harm.

use herald_core::{
    domain::jobs::{AiJob, DeliveryJob},
    queue::{NewJob, Queue, now_ms},
    store::outbox as pending,
};
use sqlx::PgPool;

/// How long a remembered horizon waits before it is swept.
const GRACE_MS: i64 = 3_000;
const BATCH: i64 = 1_000;

/// Pushes every waiting message inserted by transactions that finished since the last step;
/// returns how many it pushed.
pub async fn sweep(db: &PgPool, queue: &Queue) -> anyhow::Result<usize> {
    let Some(range) = pending::outbox_range(db, queue.name(), GRACE_MS).await? else {
        return Ok(0);
    };
    let (mut after, mut total) = ((i64::MIN, String::new()), 0);
    loop {
        let due = pending::waiting_in(db, range, (after.0, &after.1), BATCH).await?;
        let jobs = due
            .iter()
            .map(|m| {
                let job = DeliveryJob::new(&m.id, &m.tenant_id, m.channel, &m.to_addr).paced(
                    m.priority,
                    m.from_addr.as_deref(),
                    m.segments,
                );
                NewJob::new(m.id.clone(), &job, m.send_at.timestamp_millis())
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Redis down: the step is not recorded, and the next tick sweeps it again.
        total += queue.ensure_many(&jobs).await?;
        match due.last() {
            Some(last) if due.len() as i64 == BATCH => after = (last.created_xid, last.id.clone()),
            _ => break,
        }
    }
    pending::outbox_swept(db, queue.name(), range).await?;
    Ok(total)
}

/// The reply outbox: inbound texts that still want an AI reply job (Redis was down when they
/// came in) get one, by the same steps. Returns how many it queued.
pub async fn sweep_replies(db: &PgPool, queue: &Queue) -> anyhow::Result<usize> {
    let Some(range) = pending::outbox_range(db, queue.name(), GRACE_MS).await? else {
        return Ok(0);
    };
    let (mut after, mut total) = ((i64::MIN, String::new()), 0);
    loop {
        let rows = pending::awaiting_reply_in(db, range, (after.0, &after.1), BATCH).await?;
        let jobs = rows
            .iter()
            .map(|(_, id)| {
                NewJob::new(
                    id.clone(),
                    &AiJob::Reply {
                        inbound_id: id.clone(),
                    },
                    now_ms(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        total += queue.ensure_many(&jobs).await?;
        match rows.last() {
            Some(last) if rows.len() as i64 == BATCH => after = last.clone(),
            _ => break,
        }
    }
    pending::outbox_swept(db, queue.name(), range).await?;
    Ok(total)
}
