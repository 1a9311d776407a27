//! What the scheduler reads to keep Redis in step with Postgres: the outbox sweep (messages
//! inserted by transactions that finished since its last step) and the reconcile (every
//! message that should have a job).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::domain::{Channel, MessageStatus, Priority};

/// A message the outbox sweep may have to push.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: String,
    pub tenant_id: String,
    pub channel: Channel,
    pub to_addr: String,
    pub send_at: DateTime<Utc>,
    pub priority: Priority,
    pub from_addr: Option<String>,
    pub segments: Option<i16>,
    /// The transaction that inserted it.
    pub created_xid: i64,
}

/// The inserting transactions an outbox sweep may go through now: `[from_xid, to_xid)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxRange {
    pub from_xid: i64,
    pub to_xid: i64,
}

/// Where the outbox `name` stands. Each step remembers the snapshot horizon (every
/// transaction below it has finished) and sweeps up to it once it is `grace_ms` old, so the
/// API's own pushes of what those transactions committed have had time to land. `None` while
/// the remembered horizon is younger than that.
pub async fn outbox_range(
    db: impl PgExecutor<'_>,
    name: &str,
    grace_ms: i64,
) -> Result<Option<OutboxRange>, sqlx::Error> {
    let (from_xid, to_xid, ready): (i64, i64, bool) = sqlx::query_as(
        "INSERT INTO outbox_watermarks (name, last_id, last_xid, next_xid, next_at)
         VALUES ($1, '', 0, pg_snapshot_xmin(pg_current_snapshot())::text::bigint, now())
         ON CONFLICT (name) DO UPDATE SET
            last_xid = COALESCE(outbox_watermarks.last_xid, 0),
            next_xid = COALESCE(outbox_watermarks.next_xid, EXCLUDED.next_xid),
            next_at = COALESCE(outbox_watermarks.next_at, EXCLUDED.next_at)
         RETURNING last_xid, next_xid, next_at <= now() - make_interval(secs => $2::float8 / 1000)",
    )
    .bind(name)
    .bind(grace_ms as f64)
    .fetch_one(db)
    .await?;
    Ok(ready.then_some(OutboxRange { from_xid, to_xid }))
}

/// Records that `range` was swept, and remembers the horizon now for the next step. Another
/// scheduler that swept it first wins; this one changes nothing.
pub async fn outbox_swept(
    db: impl PgExecutor<'_>,
    name: &str,
    range: OutboxRange,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox_watermarks SET last_xid = $2,
                next_xid = pg_snapshot_xmin(pg_current_snapshot())::text::bigint, next_at = now()
         WHERE name = $1 AND last_xid = $3",
    )
    .bind(name)
    .bind(range.to_xid)
    .bind(range.from_xid)
    .execute(db)
    .await?;
    Ok(())
}

/// Messages still waiting to go out that transactions in `range` inserted, after the
/// position `after` (xid, id), in that order.
pub async fn waiting_in(
    db: impl PgExecutor<'_>,
    range: OutboxRange,
    after: (i64, &str),
    limit: i64,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    sqlx::query_as::<_, OutboxRow>(
        "SELECT id, tenant_id, channel, to_addr, send_at, priority, from_addr, segments, created_xid
         FROM messages
         WHERE created_xid >= $1 AND created_xid < $2 AND (created_xid, id) > ($3, $4)
           AND status IN ('scheduled', 'queued', 'retrying')
         ORDER BY created_xid, id
         LIMIT $5",
    )
    .bind(range.from_xid)
    .bind(range.to_xid)
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Inbound texts that transactions in `range` inserted and that still want a reply job,
/// after the position `after` (xid, id), in that order.
pub async fn awaiting_reply_in(
    db: impl PgExecutor<'_>,
    range: OutboxRange,
    after: (i64, &str),
    limit: i64,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT created_xid, id FROM messages
         WHERE created_xid >= $1 AND created_xid < $2 AND (created_xid, id) > ($3, $4)
           AND needs_reply
         ORDER BY created_xid, id
         LIMIT $5",
    )
    .bind(range.from_xid)
    .bind(range.to_xid)
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A message Postgres still expects a delivery job for, as the reconcile sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnfinishedRow {
    pub id: String,
    pub tenant_id: String,
    pub channel: Channel,
    pub to_addr: String,
    pub status: MessageStatus,
    pub send_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub priority: Priority,
    pub from_addr: Option<String>,
    pub segments: Option<i16>,
}

/// Messages after `after` (by id) that are waiting to go out or hold a `sending` claim,
/// oldest first: what the queue must hold a job for.
pub async fn unfinished_after(
    db: impl PgExecutor<'_>,
    after: &str,
    limit: i64,
) -> Result<Vec<UnfinishedRow>, sqlx::Error> {
    sqlx::query_as::<_, UnfinishedRow>(
        "SELECT id, tenant_id, channel, to_addr, status, send_at, updated_at, priority, from_addr,
                segments
         FROM messages
         WHERE id > $1 AND status IN ('scheduled', 'queued', 'retrying', 'sending')
         ORDER BY id
         LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Inbound texts whose ids lie between two ids that still want a reply job (the reconcile).
pub async fn awaiting_reply_between(
    db: impl PgExecutor<'_>,
    after: &str,
    before: &str,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM messages WHERE id > $1 AND id < $2 AND needs_reply ORDER BY id LIMIT $3",
    )
    .bind(after)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}
