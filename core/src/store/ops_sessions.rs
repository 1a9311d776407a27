//! Dashboard sessions: only the hash of each session's id is kept.

use sqlx::{PgConnection, PgExecutor};

/// Starts a session that lasts `hours`, dropping sessions that expired.
pub async fn insert(
    db: &mut PgConnection,
    id_hash: &[u8],
    csrf: &str,
    token_hash: &[u8],
    hours: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM ops_sessions WHERE expires_at < now()")
        .execute(&mut *db)
        .await?;
    sqlx::query(
        "INSERT INTO ops_sessions (id_hash, csrf, token_hash, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(hours => $4))",
    )
    .bind(id_hash)
    .bind(csrf)
    .bind(token_hash)
    .bind(hours)
    .execute(db)
    .await?;
    Ok(())
}

/// The CSRF token of a live session started with this ops token.
pub async fn find(
    db: impl PgExecutor<'_>,
    id_hash: &[u8],
    token_hash: &[u8],
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT csrf FROM ops_sessions WHERE id_hash = $1 AND token_hash = $2 AND expires_at > now()",
    )
    .bind(id_hash)
    .bind(token_hash)
    .fetch_optional(db)
    .await
}

/// Ends a session.
pub async fn delete(db: impl PgExecutor<'_>, id_hash: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM ops_sessions WHERE id_hash = $1")
        .bind(id_hash)
        .execute(db)
        .await?;
    Ok(())
}
