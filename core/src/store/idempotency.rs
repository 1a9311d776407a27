//! `Idempotency-Key`s of `POST /v1/messages`: per tenant, kept 24 hours.

use sqlx::PgExecutor;

/// Looks up a live idempotency key: the request hash and message id it answered with.
pub async fn find_idempotency_key(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    key: &str,
) -> Result<Option<(Vec<u8>, String)>, sqlx::Error> {
    sqlx::query_as::<_, (Vec<u8>, String)>(
        "SELECT request_hash, message_id FROM idempotency_keys
         WHERE tenant_id = $1 AND key = $2 AND expires_at > now()",
    )
    .bind(tenant_id)
    .bind(key)
    .fetch_optional(db)
    .await
}

/// Stores an idempotency key for 24 hours; false when a live one exists already (a
/// concurrent request with the same key won the race). An expired key is taken over.
pub async fn insert_idempotency_key(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    key: &str,
    request_hash: &[u8],
    message_id: &str,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, key, request_hash, message_id, expires_at)
         VALUES ($1, $2, $3, $4, now() + interval '24 hours')
         ON CONFLICT (tenant_id, key) DO UPDATE
            SET request_hash = EXCLUDED.request_hash, message_id = EXCLUDED.message_id,
                created_at = now(), expires_at = EXCLUDED.expires_at
            WHERE idempotency_keys.expires_at <= now()
         RETURNING 1",
    )
    .bind(tenant_id)
    .bind(key)
    .bind(request_hash)
    .bind(message_id)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}
