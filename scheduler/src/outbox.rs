//! The outbox sweep: Postgres is the source of truth, Redis the execution queue. A message
//! whose job never reached Redis is pushed here within seconds; pushes are idempotent by
//! message id, so racing the API's own push does no harm.

use herald_core::{
    queue::{NewJob, Queue},
    services::DeliveryJob,
    store::messages,
};
use sqlx::PgPool;

/// Leaves the API a moment to push its own messages before the sweep does.
const GRACE_MS: i64 = 2_000;
const BATCH: i64 = 1_000;

/// Pushes every message left out of Redis; returns how many it pushed.
pub async fn sweep(db: &PgPool, queue: &Queue) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let due = messages::outbox(db, GRACE_MS, BATCH).await?;
        if due.is_empty() {
            return Ok(total);
        }
        let jobs = due
            .iter()
            .map(|m| {
                let job = DeliveryJob::new(&m.id, &m.tenant_id, &m.channel, &m.to_addr);
                NewJob::new(m.id.clone(), &job, m.send_at.timestamp_millis())
            })
            .collect::<Result<Vec<_>, _>>()?;
        queue.push_many(&jobs).await?;
        let ids: Vec<String> = due.into_iter().map(|m| m.id).collect();
        messages::mark_enqueued(db, &ids).await?;
        total += ids.len();
        if (ids.len() as i64) < BATCH {
            return Ok(total);
        }
    }
}
