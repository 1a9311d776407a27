//! Retention: what Herald removes once it is of no more use (the scheduler runs it hourly).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::domain::id_floor;

/// How many rows of each kind one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// `Idempotency-Key`s past their 24 hours.
    pub idempotency_keys: u64,
    /// Daily-run records older than 35 days (a local date is never run again by then).
    pub daily_runs: u64,
    /// What the `log` providers recorded, after 30 days.
    pub log_deliveries: u64,
    /// AI reply budget decisions older than a day (the budget looks back one hour).
    pub ai_reply_spends: u64,
}

impl Removed {
    pub fn total(&self) -> u64 {
        self.idempotency_keys + self.daily_runs + self.log_deliveries + self.ai_reply_spends
    }
}

/// One pass of retention.
pub async fn remove_expired<'c, E>(db: E) -> Result<Removed, sqlx::Error>
where
    E: PgExecutor<'c> + Copy,
{
    let run = |sql: &'static str| async move {
        Ok::<u64, sqlx::Error>(sqlx::query(sql).execute(db).await?.rows_affected())
    };
    Ok(Removed {
        idempotency_keys: run("DELETE FROM idempotency_keys WHERE expires_at < now()").await?,
        daily_runs: run("DELETE FROM daily_runs WHERE created_at < now() - interval '35 days'")
            .await?,
        // After 30 days, or sooner when the tenant keeps texts for less.
        log_deliveries: run("DELETE FROM log_deliveries l USING tenants t
                             WHERE t.id = l.tenant_id
                               AND l.at < now() - make_interval(days => LEAST(30, t.retention_days))")
        .await?,
        ai_reply_spends: run("DELETE FROM ai_reply_spends WHERE at < now() - interval '1 day'")
            .await?,
    })
}

/// What one batch of a tenant's message retention did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Messages the walk passed (the batch size unless it reached the cutoff).
    pub walked: u64,
    /// Where the walk stands now.
    pub last_id: Option<String>,
    /// Deferred messages looked at again.
    pub due: u64,
    /// Messages whose texts were removed.
    pub redacted: u64,
}

/// One batch of a tenant's message retention, in one statement (so its row locks last only
/// as long as it does, and only ever on messages that are done: nothing being sent waits).
///
/// It takes the next `limit` messages after `after_id` made `keep_days` before `now` (ids
/// sort by creation), and up to `limit` deferred ones now due. A message made and due by
/// then and done (not waiting or being sent) loses its body, subject and error texts, its
/// events their error details, and its dead letter its payload and error texts; statuses,
/// times, counts and addresses stay. Any other is deferred to when it could be (its send
/// time plus `keep`), and looked at again from then, at most hourly.
pub async fn redact_batch(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    after_id: &str,
    now: DateTime<Utc>,
    keep_days: i32,
    limit: i64,
) -> Result<Batch, sqlx::Error> {
    let cutoff = now - chrono::Duration::days(i64::from(keep_days));
    let cutoff_id = id_floor("msg", cutoff.timestamp_millis());
    let (walked, last_id, due, redacted) = sqlx::query_as::<_, (i64, Option<String>, i64, i64)>(
        "WITH walk AS (
            SELECT m.id FROM messages m
            WHERE m.tenant_id = $1 AND m.id > $2 AND m.id < $3
            ORDER BY m.id LIMIT $6
         ), due AS (
            SELECT d.message_id AS id FROM retention_deferred d
            WHERE d.tenant_id = $1 AND d.due_at <= $7
            ORDER BY d.due_at LIMIT $6
         ), look AS (
            SELECT m.id, m.redacted_at IS NOT NULL AS done,
                   m.status NOT IN ('scheduled', 'queued', 'sending', 'retrying')
                   AND m.created_at < $4 AND m.send_at < $4 AS ripe,
                   GREATEST(m.created_at, m.send_at) AS since
            FROM messages m
            WHERE m.id IN (SELECT id FROM walk UNION SELECT id FROM due)
         ), redacted AS (
            UPDATE messages m SET body = '', subject = NULL, last_error = NULL, redacted_at = now()
            FROM look l
            WHERE m.id = l.id AND l.ripe AND NOT l.done
              AND m.status NOT IN ('scheduled', 'queued', 'sending', 'retrying')
            RETURNING m.id
         ), details AS (
            UPDATE message_events e SET detail = NULL
            FROM redacted r
            -- The statuses whose details carry a provider's or carrier's error text.
            WHERE e.message_id = r.id AND e.detail IS NOT NULL
              AND e.status IN ('retrying', 'failed', 'dead', 'undelivered', 'expired')
         ), letters AS (
            UPDATE dead_letters d SET payload = '{}'::jsonb,
                errors = (SELECT COALESCE(jsonb_agg(jsonb_build_object('at', x->'at', 'error', NULL)),
                                          '[]'::jsonb)
                          FROM jsonb_array_elements(d.errors) x)
            FROM redacted r
            WHERE d.message_id = r.id
         ), later AS (
            INSERT INTO retention_deferred (message_id, tenant_id, due_at)
            SELECT l.id, $1, GREATEST(l.since + make_interval(days => $5), $7 + interval '1 hour')
            FROM look l
            WHERE NOT l.done AND l.id NOT IN (SELECT id FROM redacted)
            ON CONFLICT (message_id) DO UPDATE SET due_at = EXCLUDED.due_at
         ), cleared AS (
            DELETE FROM retention_deferred d
            USING look l
            WHERE d.message_id = l.id AND (l.done OR l.id IN (SELECT id FROM redacted))
         ), mark AS (
            INSERT INTO retention_marks (tenant_id, last_id)
            SELECT $1, max(id) FROM walk HAVING count(*) > 0
            ON CONFLICT (tenant_id) DO UPDATE SET last_id = EXCLUDED.last_id
         )
         SELECT (SELECT count(*) FROM walk), (SELECT max(id) FROM walk),
                (SELECT count(*) FROM due), (SELECT count(*) FROM redacted)",
    )
    .bind(tenant_id)
    .bind(after_id)
    .bind(&cutoff_id)
    .bind(cutoff)
    .bind(keep_days)
    .bind(limit)
    .bind(now)
    .fetch_one(db)
    .await?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(Batch {
        walked: n(walked),
        last_id,
        due: n(due),
        redacted: n(redacted),
    })
}

/// Where the walk of a tenant's messages stands ("" before its first pass).
pub async fn mark(db: impl PgExecutor<'_>, tenant_id: &str) -> Result<String, sqlx::Error> {
    Ok(
        sqlx::query_scalar::<_, String>("SELECT last_id FROM retention_marks WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_optional(db)
            .await?
            .unwrap_or_default(),
    )
}

/// Removes up to `limit` webhook events (their deliveries go with them) among the next
/// `limit` after `after_id` made before `before_id`, each when its tenant keeps events for
/// less than its age at `now`. Returns where the walk stands and how many it walked and removed.
pub async fn remove_events(
    db: impl PgExecutor<'_>,
    after_id: &str,
    before_id: &str,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<(Option<String>, u64, u64), sqlx::Error> {
    let (last, walked, removed) = sqlx::query_as::<_, (Option<String>, i64, i64)>(
        "WITH walk AS (
            SELECT e.id, e.tenant_id, e.created_at FROM events e
            WHERE e.id > $1 AND e.id < $2 ORDER BY e.id LIMIT $3
         ), gone AS (
            DELETE FROM events e
            USING walk w JOIN tenants t ON t.id = w.tenant_id
            WHERE e.id = w.id AND w.created_at < $4 - make_interval(days => t.retention_days)
            RETURNING e.id
         )
         SELECT (SELECT max(id) FROM walk), (SELECT count(*) FROM walk), (SELECT count(*) FROM gone)",
    )
    .bind(after_id)
    .bind(before_id)
    .bind(limit)
    .bind(now)
    .fetch_one(db)
    .await?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok((last, n(walked), n(removed)))
}

/// Removes up to `limit` of an endpoint's delivery attempts made before `before_id`.
pub async fn remove_attempts(
    db: impl PgExecutor<'_>,
    endpoint_id: &str,
    before_id: &str,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM event_attempts WHERE id IN (
            SELECT id FROM event_attempts WHERE endpoint_id = $1 AND id < $2 ORDER BY id LIMIT $3)",
    )
    .bind(endpoint_id)
    .bind(before_id)
    .bind(limit)
    .execute(db)
    .await?
    .rows_affected())
}

/// Each tenant's id and how many days it keeps texts.
pub async fn tenants(db: impl PgExecutor<'_>) -> Result<Vec<(String, i32)>, sqlx::Error> {
    sqlx::query_as("SELECT id, retention_days FROM tenants ORDER BY id")
        .fetch_all(db)
        .await
}

/// Each endpoint's id and the days its tenant keeps texts.
pub async fn endpoints(db: impl PgExecutor<'_>) -> Result<Vec<(String, i32)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.id, t.retention_days FROM endpoints p JOIN tenants t ON t.id = p.tenant_id
         ORDER BY p.id",
    )
    .fetch_all(db)
    .await
}
