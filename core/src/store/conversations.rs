//! A contact's SMS conversation: its entries, the turns a model sees, and the inbound texts
//! still waiting for a reply job.

use sqlx::PgExecutor;

use super::messages::MessageRow;

/// A contact's SMS conversation, oldest first, after the message `after_id` (a cursor).
pub async fn conversation(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    contact_id: &str,
    after_id: Option<&str>,
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as::<_, MessageRow>(
        "SELECT * FROM messages
         WHERE tenant_id = $1 AND contact_id = $2 AND channel = 'sms' AND ($3::text IS NULL OR id > $3)
         ORDER BY id
         LIMIT $4",
    )
    .bind(tenant_id)
    .bind(contact_id)
    .bind(after_id)
    .bind(limit + 1)
    .fetch_all(db)
    .await
}

/// The latest turns of a contact's conversation before a message, newest first: what the
/// contact has really seen, which is their own texts and the tenant's messages that went out
/// (`sent` or `delivered`), never one scheduled, queued, canceled or failed.
pub async fn turns_before(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    contact_id: &str,
    before_id: &str,
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as::<_, MessageRow>(
        "SELECT * FROM messages
         WHERE tenant_id = $1 AND contact_id = $2 AND channel = 'sms' AND id < $3
           AND ((direction = 'inbound' AND author = 'contact')
             OR (direction = 'outbound' AND status IN ('sent', 'delivered')))
         ORDER BY id DESC
         LIMIT $4",
    )
    .bind(tenant_id)
    .bind(contact_id)
    .bind(before_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The inbound text no longer needs a reply job (answered, or a person has the conversation).
pub async fn reply_handled(db: impl PgExecutor<'_>, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE messages SET needs_reply = false WHERE id = $1 AND needs_reply")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}
