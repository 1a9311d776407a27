//! Contact groups, and sends to a whole group.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use super::contacts::ContactRow;
use super::messages::segment_count;
use crate::domain::{Channel, MessageStatus, Priority, Segments};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GroupRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    id: &str,
    tenant_id: &str,
    name: &str,
) -> Result<GroupRow, sqlx::Error> {
    sqlx::query_as::<_, GroupRow>(
        "INSERT INTO groups (id, tenant_id, name) VALUES ($1, $2, $3) RETURNING *",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(name)
    .fetch_one(db)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    id: &str,
) -> Result<Option<GroupRow>, sqlx::Error> {
    sqlx::query_as::<_, GroupRow>(
        "SELECT * FROM groups WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(db)
    .await
}

pub async fn delete(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE groups SET deleted_at = now() WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL")
        .bind(id)
        .bind(tenant_id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn member_count(db: impl PgExecutor<'_>, group_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM group_members WHERE group_id = $1")
        .bind(group_id)
        .fetch_one(db)
        .await
}

/// Adds a member; false when it was one already.
pub async fn add_member(
    db: impl PgExecutor<'_>,
    group_id: &str,
    contact_id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO group_members (group_id, contact_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(group_id)
    .bind(contact_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn remove_member(
    db: impl PgExecutor<'_>,
    group_id: &str,
    contact_id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND contact_id = $2")
        .bind(group_id)
        .bind(contact_id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Members, newest contact first, older than `before` (a cursor); up to `limit + 1`.
pub async fn members(
    db: impl PgExecutor<'_>,
    group_id: &str,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<ContactRow>, sqlx::Error> {
    sqlx::query_as::<_, ContactRow>(
        "SELECT c.* FROM group_members gm JOIN contacts c ON c.id = gm.contact_id
         WHERE gm.group_id = $1 AND ($2::text IS NULL OR gm.contact_id < $2)
         ORDER BY gm.contact_id DESC LIMIT $3",
    )
    .bind(group_id)
    .bind(before)
    .bind(limit + 1)
    .fetch_all(db)
    .await
}

/// A group with its member count.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GroupWithCount {
    #[sqlx(flatten)]
    pub group: GroupRow,
    pub members: i64,
}

/// A tenant's groups, newest first, older than `before` (a cursor), with their member
/// counts; up to `limit + 1`.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<GroupWithCount>, sqlx::Error> {
    sqlx::query_as::<_, GroupWithCount>(
        "SELECT g.*, (SELECT count(*) FROM group_members gm WHERE gm.group_id = g.id) AS members
         FROM groups g
         WHERE g.tenant_id = $1 AND g.deleted_at IS NULL AND ($2::text IS NULL OR g.id < $2)
         ORDER BY g.id DESC
         LIMIT $3",
    )
    .bind(tenant_id)
    .bind(before)
    .bind(limit + 1)
    .fetch_all(db)
    .await
}

/// A group a contact is a member of, and since when.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Membership {
    #[sqlx(flatten)]
    pub group: GroupWithCount,
    pub added_at: DateTime<Utc>,
}

/// The tenant's groups the contact is a member of, newest group first, older than `before`
/// (a cursor), with their member counts; up to `limit + 1`. Each of the tenant's groups is
/// looked up by the primary key `(group_id, contact_id)`: `group_members` has no index by
/// contact.
pub async fn memberships(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    contact_id: &str,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<Membership>, sqlx::Error> {
    sqlx::query_as::<_, Membership>(
        "SELECT g.*, (SELECT count(*) FROM group_members gm WHERE gm.group_id = g.id) AS members,
                m.added_at
         FROM groups g
         JOIN LATERAL (SELECT added_at FROM group_members
                       WHERE group_id = g.id AND contact_id = $2) m ON true
         WHERE g.tenant_id = $1 AND g.deleted_at IS NULL AND ($3::text IS NULL OR g.id < $3)
         ORDER BY g.id DESC
         LIMIT $4",
    )
    .bind(tenant_id)
    .bind(contact_id)
    .bind(before)
    .bind(limit + 1)
    .fetch_all(db)
    .await
}

/// Renames a group; `None` when the tenant has no such group.
pub async fn rename(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    id: &str,
    name: &str,
) -> Result<Option<GroupRow>, sqlx::Error> {
    sqlx::query_as::<_, GroupRow>(
        "UPDATE groups SET name = $3 WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL
         RETURNING *",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(name)
    .fetch_optional(db)
    .await
}

/// What adding many contacts to a group did.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MembersAdded {
    /// Contacts that became members.
    pub added: i64,
    /// Contacts that were members already.
    pub already: i64,
    /// Ids that are not the tenant's contacts, in the order first given.
    pub unknown: Vec<String>,
}

/// Adds the tenant's contacts among `contact_ids` (repeats counted once) to a group, in one
/// statement. Members are inserted in id order, so concurrent adds lock alike and cannot
/// deadlock.
pub async fn add_members(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    group_id: &str,
    contact_ids: &[String],
) -> Result<MembersAdded, sqlx::Error> {
    sqlx::query_as::<_, MembersAdded>(
        "WITH given AS (
            SELECT id, min(n) AS n FROM unnest($3::text[]) WITH ORDINALITY AS u(id, n) GROUP BY id
         ), known AS (
            SELECT c.id FROM contacts c JOIN given ON given.id = c.id WHERE c.tenant_id = $1
         ), added AS (
            INSERT INTO group_members (group_id, contact_id)
            SELECT $2, id FROM known ORDER BY id
            ON CONFLICT DO NOTHING
            RETURNING contact_id
         )
         SELECT (SELECT count(*) FROM added) AS added,
                (SELECT count(*) FROM known) - (SELECT count(*) FROM added) AS already,
                ARRAY(SELECT given.id FROM given WHERE given.id NOT IN (SELECT id FROM known)
                      ORDER BY given.n) AS unknown",
    )
    .bind(tenant_id)
    .bind(group_id)
    .bind(contact_ids)
    .fetch_one(db)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GroupMessageRow {
    pub id: String,
    pub tenant_id: String,
    pub group_id: String,
    pub channel: Channel,
    pub recipients: i32,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    /// When none of its messages was still on its way (the scheduler notices within seconds).
    pub completed_at: Option<DateTime<Utc>>,
}

/// Records a group send; `Ok(None)` when its idempotency key is taken (a concurrent send).
pub async fn insert_send(
    conn: &mut PgConnection,
    g: &GroupMessageRow,
) -> Result<Option<GroupMessageRow>, sqlx::Error> {
    sqlx::query_as::<_, GroupMessageRow>(
        "INSERT INTO group_messages (id, tenant_id, group_id, channel, recipients, idempotency_key, request_hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING *",
    )
    .bind(&g.id)
    .bind(&g.tenant_id)
    .bind(&g.group_id)
    .bind(g.channel)
    .bind(g.recipients)
    .bind(&g.idempotency_key)
    .bind(&g.request_hash)
    .fetch_optional(conn)
    .await
}

pub async fn send_by_key(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    key: &str,
) -> Result<Option<GroupMessageRow>, sqlx::Error> {
    sqlx::query_as::<_, GroupMessageRow>(
        "SELECT * FROM group_messages WHERE tenant_id = $1 AND idempotency_key = $2",
    )
    .bind(tenant_id)
    .bind(key)
    .fetch_optional(db)
    .await
}

pub async fn get_send(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    id: &str,
) -> Result<Option<GroupMessageRow>, sqlx::Error> {
    sqlx::query_as::<_, GroupMessageRow>(
        "SELECT * FROM group_messages WHERE id = $1 AND tenant_id = $2",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(db)
    .await
}

/// The group send's messages, counted by status.
pub async fn send_counts(
    db: impl PgExecutor<'_>,
    id: &str,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT status, count(*) FROM messages WHERE group_message_id = $1 GROUP BY status ORDER BY status")
        .bind(id)
        .fetch_all(db)
        .await
}

/// What every message of a group send shares.
#[derive(Debug, Clone)]
pub struct SendTemplate {
    pub tenant_id: String,
    pub group_message_id: String,
    pub channel: Channel,
    pub priority: Priority,
    pub from_addr: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    pub status: MessageStatus,
    pub send_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub respect_quiet_hours: bool,
    pub metadata: serde_json::Value,
}

/// Inserts one message (and its first event) per member with an address for the channel,
/// in one statement that reads the members itself: nothing per member crosses the wire but
/// the answer. Ids are `id_prefix` (the time part of a Herald id) and 16 random hex digits,
/// so they sort with other messages of the moment. Returns `(id, to)` of each.
pub async fn insert_send_messages(
    conn: &mut PgConnection,
    t: &SendTemplate,
    group_id: &str,
    id_prefix: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let measured = (t.channel == Channel::Sms).then(|| Segments::of(&t.body));
    sqlx::query_as(
        "WITH r AS (
            SELECT c.id AS contact_id, CASE WHEN $3 = 'email' THEN c.email ELSE c.phone END AS address
            FROM group_members gm JOIN contacts c ON c.id = gm.contact_id
            WHERE gm.group_id = $1
         ), m AS (
            INSERT INTO messages (id, tenant_id, channel, to_addr, from_addr, subject, body, status, send_at,
                                  expires_at, respect_quiet_hours, contact_id, metadata, group_message_id,
                                  encoding, segments, priority)
            SELECT $2 || upper(substr(md5(random()::text || r.contact_id), 1, 16)), $4, $3, r.address, $5, $6,
                   $7, $8, $9, $10, $11, r.contact_id, $12, $13, $14, $15, $16
            FROM r WHERE r.address IS NOT NULL
            RETURNING id, to_addr, status
         ), e AS (
            INSERT INTO message_events (message_id, status, detail)
            SELECT id, status, 'accepted for group send ' || $13 FROM m
         )
         SELECT id, to_addr FROM m",
    )
    .bind(group_id)
    .bind(id_prefix)
    .bind(t.channel)
    .bind(&t.tenant_id)
    .bind(&t.from_addr)
    .bind(&t.subject)
    .bind(&t.body)
    .bind(t.status)
    .bind(t.send_at)
    .bind(t.expires_at)
    .bind(t.respect_quiet_hours)
    .bind(&t.metadata)
    .bind(&t.group_message_id)
    .bind(measured.map(|s| s.encoding))
    .bind(measured.map(segment_count))
    .bind(t.priority)
    .fetch_all(conn)
    .await
}

/// Sets how many messages a group send made.
pub async fn set_recipients(
    conn: &mut PgConnection,
    id: &str,
    recipients: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE group_messages SET recipients = $2 WHERE id = $1")
        .bind(id)
        .bind(recipients)
        .execute(conn)
        .await?;
    Ok(())
}

/// Adds contacts to a group, however many, in one statement; returns how many were not
/// members before.
pub async fn add_members_bulk(
    db: impl PgExecutor<'_>,
    group_id: &str,
    contact_ids: &[&str],
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO group_members (group_id, contact_id)
         SELECT $1, c FROM unnest($2::text[]) AS c ORDER BY c
         ON CONFLICT DO NOTHING",
    )
    .bind(group_id)
    .bind(contact_ids)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
