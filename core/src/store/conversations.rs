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

/// One row of the inbox: a contact and where its conversation stands.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxRow {
    pub contact_id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    /// `ai` or `human`.
    pub mode: String,
    /// The conversation's newest entry (a message id).
    pub last_entry_id: String,
    /// Whether that entry is an inbound text.
    pub last_inbound: bool,
}

/// What `GET /v1/conversations` filters by; `None` does not filter.
#[derive(Debug, Clone, Default)]
pub struct InboxFilter<'a> {
    pub mode: Option<&'a str>,
    pub needs_reply: Option<bool>,
    /// Only conversations whose newest entry is older than this message (the cursor).
    pub before_entry: Option<&'a str>,
}

/// A tenant's conversations, newest activity first, read from `conversation_heads` (one
/// row per contact with an entry) so a page costs the page, not the tenant's messages; up
/// to `limit + 1`.
pub async fn inbox(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    filter: &InboxFilter<'_>,
    limit: i64,
) -> Result<Vec<InboxRow>, sqlx::Error> {
    sqlx::query_as::<_, InboxRow>(
        "SELECT c.id AS contact_id, c.name, c.phone, c.mode, h.last_entry_id, h.last_inbound
         FROM conversation_heads h JOIN contacts c ON c.id = h.contact_id
         WHERE h.tenant_id = $1
           AND ($2::text IS NULL OR c.mode = $2)
           AND ($3::bool IS NULL OR h.last_inbound = $3)
           AND ($4::text IS NULL OR h.last_entry_id < $4)
         ORDER BY h.last_entry_id DESC
         LIMIT $5",
    )
    .bind(tenant_id)
    .bind(filter.mode)
    .bind(filter.needs_reply)
    .bind(filter.before_entry)
    .bind(limit + 1)
    .fetch_all(db)
    .await
}

/// Messages by id, in no particular order (the inbox's last entries).
pub async fn entries(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    ids: &[String],
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as::<_, MessageRow>("SELECT * FROM messages WHERE id = ANY($1) AND tenant_id = $2")
        .bind(ids)
        .bind(tenant_id)
        .fetch_all(db)
        .await
}
