//! Dead letters: every `failed` or `dead` message keeps one, for inspection and replay.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use super::messages::MessageRow;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetterRow {
    pub id: String,
    pub queue: String,
    pub tenant_id: String,
    pub message_id: Option<String>,
    pub reason: String,
    pub payload: serde_json::Value,
    pub attempts: i32,
    pub errors: serde_json::Value,
    pub dead_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
}

/// Which dead letters; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// A tenant key sees only its own: set this to the tenant for tenant callers.
    pub tenant_id: Option<String>,
    pub ids: Option<Vec<String>>,
    pub queue: Option<String>,
    pub reason: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Only those not replayed yet (bulk replay).
    pub unreplayed: bool,
}

impl DeadLetterFilter {
    /// Whether anything narrows the selection (bulk replay refuses an empty filter).
    pub fn is_empty(&self) -> bool {
        self.ids.is_none()
            && self.queue.is_none()
            && self.reason.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }
}

/// Newest first, ids older than `before_id`; up to `limit + 1` rows.
pub async fn list(
    db: impl PgExecutor<'_>,
    f: &DeadLetterFilter,
    before_id: Option<&str>,
    limit: i64,
) -> Result<Vec<DeadLetterRow>, sqlx::Error> {
    sqlx::query_as::<_, DeadLetterRow>(
        "SELECT * FROM dead_letters
         WHERE ($1::text IS NULL OR tenant_id = $1)
           AND ($2::text[] IS NULL OR id = ANY($2))
           AND ($3::text IS NULL OR queue = $3)
           AND ($4::text IS NULL OR reason = $4)
           AND ($5::timestamptz IS NULL OR dead_at >= $5)
           AND ($6::timestamptz IS NULL OR dead_at < $6)
           AND (NOT $7 OR replayed_at IS NULL)
           AND ($8::text IS NULL OR id < $8)
         ORDER BY id DESC
         LIMIT $9",
    )
    .bind(&f.tenant_id)
    .bind(&f.ids)
    .bind(&f.queue)
    .bind(&f.reason)
    .bind(f.since)
    .bind(f.until)
    .bind(f.unreplayed)
    .bind(before_id)
    .bind(limit + 1)
    .fetch_all(db)
    .await
}

/// How many dead letters the filter selects.
pub async fn count(db: impl PgExecutor<'_>, f: &DeadLetterFilter) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters
         WHERE ($1::text IS NULL OR tenant_id = $1)
           AND ($2::text[] IS NULL OR id = ANY($2))
           AND ($3::text IS NULL OR queue = $3)
           AND ($4::text IS NULL OR reason = $4)
           AND ($5::timestamptz IS NULL OR dead_at >= $5)
           AND ($6::timestamptz IS NULL OR dead_at < $6)
           AND (NOT $7 OR replayed_at IS NULL)",
    )
    .bind(&f.tenant_id)
    .bind(&f.ids)
    .bind(&f.queue)
    .bind(&f.reason)
    .bind(f.since)
    .bind(f.until)
    .bind(f.unreplayed)
    .fetch_one(db)
    .await
}

/// One dead letter, if `tenant_id` (when given) owns it.
pub async fn get(
    db: impl PgExecutor<'_>,
    id: &str,
    tenant_id: Option<&str>,
) -> Result<Option<DeadLetterRow>, sqlx::Error> {
    sqlx::query_as::<_, DeadLetterRow>(
        "SELECT * FROM dead_letters WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(db)
    .await
}

/// Locks a dead letter for a replay.
pub async fn get_for_update(
    conn: &mut PgConnection,
    id: &str,
    tenant_id: Option<&str>,
) -> Result<Option<DeadLetterRow>, sqlx::Error> {
    sqlx::query_as::<_, DeadLetterRow>(
        "SELECT * FROM dead_letters WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2) FOR UPDATE",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(conn)
    .await
}

pub async fn mark_replayed(db: impl PgExecutor<'_>, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE dead_letters SET replayed_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes a dead letter; the tenant it belonged to, or `None` when there was none.
pub async fn delete(
    db: impl PgExecutor<'_>,
    id: &str,
    tenant_id: Option<&str>,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "DELETE FROM dead_letters WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)
         RETURNING tenant_id",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(db)
    .await
}

/// Writes a dead letter for a message that ended `failed` (`rejected`) or `dead` (`exhausted`).
pub async fn insert_dead_letter(
    db: impl PgExecutor<'_>,
    id: &str,
    queue: &str,
    m: &MessageRow,
    reason: &str,
    errors: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dead_letters (id, queue, tenant_id, message_id, reason, payload, attempts, errors)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(queue)
    .bind(&m.tenant_id)
    .bind(&m.id)
    .bind(reason)
    .bind(serde_json::json!({ "message_id": m.id }))
    .bind(m.attempts)
    .bind(errors)
    .execute(db)
    .await?;
    Ok(())
}

/// The errors of a message's attempts in its current run, from its events.
pub async fn attempt_errors(
    db: impl PgExecutor<'_>,
    id: &str,
) -> Result<serde_json::Value, sqlx::Error> {
    let rows = sqlx::query_as::<_, (DateTime<Utc>, Option<String>)>(
        "SELECT at, detail FROM message_events
         WHERE message_id = $1 AND status IN ('retrying', 'failed', 'dead') ORDER BY id",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    Ok(serde_json::Value::Array(
        rows.into_iter()
            .map(
                |(at, detail)| serde_json::json!({ "at": at, "error": detail.unwrap_or_default() }),
            )
            .collect(),
    ))
}
