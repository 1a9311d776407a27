//! Paused senders: what an operator must fix before a tenant's SMS (or every SMS) can go out.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// The scope of a pause that holds every tenant (the provider account itself is refused).
pub const ACCOUNT: &str = "*";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PauseRow {
    /// A tenant id, or [`ACCOUNT`].
    pub scope: String,
    pub provider: String,
    /// The number the refused send was from, if known.
    pub sender: Option<String>,
    pub code: i32,
    pub reason: String,
    pub since: DateTime<Utc>,
    /// Probes let through so far.
    pub probes: i32,
    /// When the next probe may go.
    pub probe_at: DateTime<Utc>,
}

/// Pauses `scope` (or, paused already, records the newer refusal); its first probe at
/// `probe_at`.
pub async fn pause(db: impl PgExecutor<'_>, row: &PauseRow) -> Result<PauseRow, sqlx::Error> {
    sqlx::query_as::<_, PauseRow>(
        "INSERT INTO sender_pauses (scope, provider, sender, code, reason, probe_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (scope) DO UPDATE SET code = $4, reason = $5, sender = $3,
             probe_at = GREATEST(sender_pauses.probe_at, $6)
         RETURNING *",
    )
    .bind(&row.scope)
    .bind(&row.provider)
    .bind(&row.sender)
    .bind(row.code)
    .bind(&row.reason)
    .bind(row.probe_at)
    .fetch_one(db)
    .await
}

/// Every pause, oldest first.
pub async fn all(db: impl PgExecutor<'_>) -> Result<Vec<PauseRow>, sqlx::Error> {
    sqlx::query_as::<_, PauseRow>("SELECT * FROM sender_pauses ORDER BY since, scope")
        .fetch_all(db)
        .await
}

/// Takes the probe of `scope` if it is due: true for exactly one caller, which moves the next
/// probe to `next`.
pub async fn take_probe(
    db: impl PgExecutor<'_>,
    scope: &str,
    next: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(
        "UPDATE sender_pauses SET probes = probes + 1, probe_at = $2
         WHERE scope = $1 AND probe_at <= now()",
    )
    .bind(scope)
    .bind(next)
    .execute(db)
    .await?;
    Ok(taken.rows_affected() == 1)
}

/// Lifts the pause of `scope`: a send through it succeeded.
pub async fn lift(db: impl PgExecutor<'_>, scope: &str) -> Result<bool, sqlx::Error> {
    let lifted = sqlx::query("DELETE FROM sender_pauses WHERE scope = $1")
        .bind(scope)
        .execute(db)
        .await?;
    Ok(lifted.rows_affected() == 1)
}
