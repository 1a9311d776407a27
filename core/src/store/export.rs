//! The messages a contact's export finds that no other query does: every message of the
//! tenant about one person, whether or not it names the contact.
//!
//! There is no index on `to_addr` or `from_addr`, so the tenant's messages are walked newest
//! first along `messages_tenant_id (tenant_id, id DESC)` in windows of a bounded number of
//! ids: each statement then reads at most one window, however sparse the person's messages
//! are among the tenant's, and none runs for the whole tenant at once.

use sqlx::PgExecutor;

use super::messages::MessageRow;

/// Whom the messages are about: the contact, and the addresses that reach them.
#[derive(Debug, Clone, Copy)]
pub struct Person<'a> {
    pub contact_id: &'a str,
    pub phone: Option<&'a str>,
    pub email: Option<&'a str>,
}

/// A window of the tenant's messages: the ids from `floor` to `ceiling`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Window {
    pub floor: String,
    pub ceiling: String,
    /// No message of the tenant is older than the window.
    pub last: bool,
}

/// The window of the newest `size` of the tenant's messages older than `before` (of all of
/// them when `None`); `None` when there is none left. Reads only the index. (Two statements
/// rather than `$2 IS NULL OR id < $2`, which a generic plan cannot bound in the index.)
pub async fn window(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    before: Option<&str>,
    size: i64,
) -> Result<Option<Window>, sqlx::Error> {
    let query = |sql| sqlx::query_as::<_, Window>(sql).bind(tenant_id).bind(size);
    match before {
        None => query(
            "SELECT min(id) AS floor, max(id) AS ceiling, count(*) < $2 AS last FROM (
                SELECT id FROM messages WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2
             ) w
             HAVING count(*) > 0",
        ),
        Some(before) => query(
            "SELECT min(id) AS floor, max(id) AS ceiling, count(*) < $2 AS last FROM (
                SELECT id FROM messages WHERE tenant_id = $1 AND id < $3 ORDER BY id DESC LIMIT $2
             ) w
             HAVING count(*) > 0",
        )
        .bind(before),
    }
    .fetch_optional(db)
    .await
}

/// The messages about `person` in the window, newest first, up to `limit + 1`. About the
/// person (`herald_about`, migration 0023, shared with erasure): naming the contact, an SMS
/// sent to their phone or an email sent to their address (any case), or a text from their
/// phone.
pub async fn messages_about(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    person: &Person<'_>,
    window: &Window,
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as::<_, MessageRow>(
        "SELECT * FROM messages
         WHERE tenant_id = $1 AND id >= $2 AND id <= $3
           AND herald_about(messages, $4, $5, $6)
         ORDER BY id DESC
         LIMIT $7",
    )
    .bind(tenant_id)
    .bind(&window.floor)
    .bind(&window.ceiling)
    .bind(person.contact_id)
    .bind(person.phone)
    .bind(person.email)
    .bind(limit + 1)
    .fetch_all(db)
    .await
}
