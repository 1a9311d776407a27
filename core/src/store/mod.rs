//! The store: sqlx functions over Postgres, each taking an executor (a pool, a connection or
//! a transaction) so services decide what runs in one transaction.

pub mod appointments;
pub mod audit;
pub mod contacts;
pub mod conversations;
pub mod dead_letters;
pub mod erasure;
pub mod events;
pub mod export;
pub mod groups;
pub mod idempotency;
pub mod lifecycle;
pub mod messages;
pub mod ops_sessions;
pub mod outbox;
pub mod retention;
pub mod sender_pauses;
pub mod subscriptions;
pub mod tenants;
pub mod types;
pub mod usage;

/// A page of `rows` read with one row more than `limit` (as the list queries here return
/// them, to tell whether another page follows), and the cursor of the next page
/// (`cursor_of` its last row) when one does.
pub fn cut<T, C>(mut rows: Vec<T>, limit: i64, cursor_of: impl Fn(&T) -> C) -> (Vec<T>, Option<C>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more {
        rows.last().map(cursor_of)
    } else {
        None
    };
    (rows, next)
}

/// A read-only transaction that sees one snapshot in all its statements (a message and its
/// events read apart would otherwise let an event run ahead of the status).
pub async fn snapshot(
    db: &sqlx::PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Whether an error means Postgres is unreachable or overloaded (answer 503 and retry later),
/// rather than a bug.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    // Protocol: a connection accepted and then dropped (a proxy or pooler in front of a dead
    // Postgres) fails in the handshake rather than in the connect.
    let connection = matches!(
        e,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
    );
    connection
        || matches!(e, sqlx::Error::Database(db)
            if db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08") || c == "53300"))
}
