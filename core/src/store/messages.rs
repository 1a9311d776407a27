//! Messages and their events: inserting, reading, listing and canceling them. How a message
//! moves while it is sent is in [`super::lifecycle`]; what the outbox and the reconcile read,
//! in [`super::outbox`].
//!
//! Every status change and the event recording it are written by one statement, so the
//! history never disagrees with the status.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use crate::domain::{Channel, MessageStatus, Priority, Segments, SmsEncoding};

#[derive(Debug, Clone, sqlx::FromRow, serde::Deserialize)]
pub struct MessageRow {
    pub id: String,
    pub tenant_id: String,
    pub channel: Channel,
    pub direction: String,
    pub author: String,
    pub to_addr: String,
    pub from_addr: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    pub status: MessageStatus,
    pub send_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub respect_quiet_hours: bool,
    pub contact_id: Option<String>,
    pub metadata: serde_json::Value,
    pub attempts: i32,
    pub run: i32,
    pub claim_attempt: i32,
    pub last_error: Option<String>,
    pub provider_message_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// For an AI reply: the inbound text it answers.
    pub in_reply_to: Option<String>,
    /// For an AI reply: the model that wrote it and its token usage.
    pub model: Option<String>,
    pub usage: Option<serde_json::Value>,
    /// An inbound text whose AI reply job is not queued yet.
    pub needs_reply: bool,
    /// A reminder: its appointment and offset (`2h`).
    pub appointment_id: Option<String>,
    pub reminder_before: Option<String>,
    /// A daily delivery: its subscription and the contact's local date.
    pub subscription_id: Option<String>,
    pub local_date: Option<chrono::NaiveDate>,
    /// A message to a group member: the group send it belongs to.
    pub group_message_id: Option<String>,
    /// When an attempt whose outcome was never recorded began; until the provider has said
    /// whether it arrived, the message is not sent again.
    pub unsettled_since: Option<DateTime<Utc>>,
    /// An SMS: how its text travels and how many segments it costs (see [`Segments`]).
    pub encoding: Option<SmsEncoding>,
    pub segments: Option<i16>,
    /// When an `undelivered` SMS was scheduled to be sent once more (at most once).
    pub redelivered_at: Option<DateTime<Utc>>,
    pub priority: Priority,
    /// When its body and error texts were removed (erasure or retention).
    #[sqlx(default)]
    #[serde(default)]
    pub redacted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub at: DateTime<Utc>,
    pub status: String,
    pub detail: Option<String>,
}

/// A message to insert, with the detail of its first event.
#[derive(Debug, Clone)]
pub struct NewMessageRow {
    pub id: String,
    pub tenant_id: String,
    pub channel: Channel,
    pub priority: Priority,
    pub to_addr: String,
    pub from_addr: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    pub status: MessageStatus,
    pub send_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub respect_quiet_hours: bool,
    pub contact_id: Option<String>,
    pub metadata: serde_json::Value,
    pub event_detail: String,
    /// `outbound` or `inbound`.
    pub direction: String,
    /// `api`, `contact`, `ai`, `human` or `system`.
    pub author: String,
    pub in_reply_to: Option<String>,
    pub model: Option<String>,
    pub usage: Option<serde_json::Value>,
    pub needs_reply: bool,
    pub appointment_id: Option<String>,
    pub reminder_before: Option<String>,
    pub subscription_id: Option<String>,
    pub local_date: Option<chrono::NaiveDate>,
    pub group_message_id: Option<String>,
}

impl NewMessageRow {
    /// An SMS's encoding and segments; `None` for other channels.
    pub fn segments(&self) -> Option<Segments> {
        (self.channel == Channel::Sms).then(|| Segments::of(&self.body))
    }

    /// An outbound message with the common defaults, due now.
    pub fn outbound(
        tenant_id: &str,
        channel: Channel,
        to: &str,
        from: Option<&str>,
        body: &str,
        author: &str,
    ) -> Self {
        let now = Utc::now();
        Self {
            id: crate::domain::new_id("msg"),
            tenant_id: tenant_id.to_owned(),
            channel,
            priority: Priority::Transactional,
            to_addr: to.to_owned(),
            from_addr: from.map(str::to_owned),
            subject: None,
            body: body.to_owned(),
            status: MessageStatus::Queued,
            send_at: now,
            expires_at: now + chrono::Duration::hours(24),
            respect_quiet_hours: true,
            contact_id: None,
            metadata: serde_json::json!({}),
            event_detail: "accepted".to_owned(),
            direction: "outbound".to_owned(),
            author: author.to_owned(),
            in_reply_to: None,
            model: None,
            usage: None,
            needs_reply: false,
            appointment_id: None,
            reminder_before: None,
            subscription_id: None,
            local_date: None,
            group_message_id: None,
        }
    }
}

/// A segment count as stored (`smallint`); an SMS is at most 1600 characters, 25 segments.
pub fn segment_count(s: Segments) -> i16 {
    i16::try_from(s.count).unwrap_or(i16::MAX)
}

/// Inserts messages, each with its first event, in one statement; an SMS without a contact is
/// linked to the tenant's contact for its number, so it shows in the conversation. Returns the
/// rows in the order given; `None` for one that was already there (an AI reply to the same
/// inbound text).
pub async fn insert_many(
    db: impl PgExecutor<'_>,
    rows: &[NewMessageRow],
) -> Result<Vec<Option<MessageRow>>, sqlx::Error> {
    fn col<T>(rows: &[NewMessageRow], f: impl Fn(&NewMessageRow) -> T) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    let measured = col(rows, NewMessageRow::segments);
    let inserted = sqlx::query_as::<_, MessageRow>(
        "WITH v AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                 $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::bool[],
                                 $12::text[], $13::jsonb[], $14::text[], $15::text[], $16::text[],
                                 $17::text[], $18::text[], $19::jsonb[], $20::bool[], $21::text[],
                                 $22::text[], $23::text[], $24::date[], $25::text[], $26::text[],
                                 $27::int2[], $28::text[])
                AS v(id, tenant_id, channel, to_addr, from_addr, subject, body, status, send_at,
                     expires_at, respect_quiet_hours, contact_id, metadata, detail, direction, author,
                     in_reply_to, model, usage, needs_reply, appointment_id, reminder_before,
                     subscription_id, local_date, group_message_id, encoding, segments, priority)
         ), m AS (
            INSERT INTO messages (id, tenant_id, channel, to_addr, from_addr, subject, body, status,
                                  send_at, expires_at, respect_quiet_hours, contact_id, metadata,
                                  direction, author, in_reply_to, model, usage, needs_reply,
                                  appointment_id, reminder_before, subscription_id, local_date,
                                  group_message_id, encoding, segments, priority)
            SELECT v.id, v.tenant_id, v.channel, v.to_addr, v.from_addr, v.subject, v.body, v.status,
                   v.send_at, v.expires_at, v.respect_quiet_hours,
                   COALESCE(v.contact_id, CASE WHEN v.channel = 'sms' AND v.direction = 'outbound' THEN
                       (SELECT c.id FROM contacts c WHERE c.tenant_id = v.tenant_id AND c.phone = v.to_addr)
                   END),
                   v.metadata, v.direction, v.author, v.in_reply_to, v.model, v.usage, v.needs_reply,
                   v.appointment_id, v.reminder_before, v.subscription_id, v.local_date,
                   v.group_message_id, v.encoding, v.segments, v.priority
            FROM v
            ON CONFLICT DO NOTHING
            RETURNING *
         ), e AS (
            INSERT INTO message_events (message_id, status, detail)
            SELECT m.id, m.status, v.detail FROM m JOIN v ON v.id = m.id
         )
         SELECT * FROM m",
    )
    .bind(col(rows, |r| r.id.clone()))
    .bind(col(rows, |r| r.tenant_id.clone()))
    .bind(col(rows, |r| r.channel.as_str()))
    .bind(col(rows, |r| r.to_addr.clone()))
    .bind(col(rows, |r| r.from_addr.clone()))
    .bind(col(rows, |r| r.subject.clone()))
    .bind(col(rows, |r| r.body.clone()))
    .bind(col(rows, |r| r.status.as_str()))
    .bind(col(rows, |r| r.send_at))
    .bind(col(rows, |r| r.expires_at))
    .bind(col(rows, |r| r.respect_quiet_hours))
    .bind(col(rows, |r| r.contact_id.clone()))
    .bind(col(rows, |r| r.metadata.clone()))
    .bind(col(rows, |r| r.event_detail.clone()))
    .bind(col(rows, |r| r.direction.clone()))
    .bind(col(rows, |r| r.author.clone()))
    .bind(col(rows, |r| r.in_reply_to.clone()))
    .bind(col(rows, |r| r.model.clone()))
    .bind(col(rows, |r| r.usage.clone()))
    .bind(col(rows, |r| r.needs_reply))
    .bind(col(rows, |r| r.appointment_id.clone()))
    .bind(col(rows, |r| r.reminder_before.clone()))
    .bind(col(rows, |r| r.subscription_id.clone()))
    .bind(col(rows, |r| r.local_date))
    .bind(col(rows, |r| r.group_message_id.clone()))
    .bind(measured.iter().map(|s| s.map(|s| s.encoding.as_str())).collect::<Vec<_>>())
    .bind(measured.iter().map(|s| s.map(segment_count)).collect::<Vec<_>>())
    .bind(col(rows, |r| r.priority.as_str()))
    .fetch_all(db)
    .await?;
    let mut by_id: std::collections::HashMap<String, MessageRow> =
        inserted.into_iter().map(|m| (m.id.clone(), m)).collect();
    Ok(rows.iter().map(|r| by_id.remove(&r.id)).collect())
}

/// Inserts one message with its first event; `None` if it was already there.
pub async fn insert(
    db: impl PgExecutor<'_>,
    row: &NewMessageRow,
) -> Result<Option<MessageRow>, sqlx::Error> {
    Ok(insert_many(db, std::slice::from_ref(row))
        .await?
        .pop()
        .flatten())
}

pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    id: &str,
) -> Result<Option<MessageRow>, sqlx::Error> {
    sqlx::query_as::<_, MessageRow>("SELECT * FROM messages WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(db)
        .await
}

/// A message whatever its tenant (ops tools and workers).
pub async fn get_any(db: impl PgExecutor<'_>, id: &str) -> Result<Option<MessageRow>, sqlx::Error> {
    sqlx::query_as::<_, MessageRow>("SELECT * FROM messages WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn events(db: impl PgExecutor<'_>, id: &str) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as::<_, EventRow>("SELECT at, status, detail FROM herald_history(ARRAY[$1::text])")
        .bind(id)
        .fetch_all(db)
        .await
}

/// An event and the message it belongs to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageEventRow {
    pub message_id: String,
    #[sqlx(flatten)]
    pub event: EventRow,
}

/// The events of several messages in one statement, each message's oldest first.
pub async fn events_of(
    db: impl PgExecutor<'_>,
    ids: &[String],
) -> Result<Vec<MessageEventRow>, sqlx::Error> {
    sqlx::query_as::<_, MessageEventRow>(
        "SELECT message_id, at, status, detail FROM herald_history($1)",
    )
    .bind(ids)
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter<'a> {
    pub status: Option<&'a str>,
    pub contact_id: Option<&'a str>,
    /// Only ids older than this one (the cursor).
    pub before_id: Option<&'a str>,
}

/// A tenant's messages, newest first; returns up to `limit + 1` so the caller knows whether
/// another page follows.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    filter: &ListFilter<'_>,
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as::<_, MessageRow>(
        "SELECT * FROM messages
         WHERE tenant_id = $1
           AND ($2::text IS NULL OR status = $2)
           AND ($3::text IS NULL OR contact_id = $3)
           AND ($4::text IS NULL OR id < $4)
         ORDER BY id DESC
         LIMIT $5",
    )
    .bind(tenant_id)
    .bind(filter.status)
    .bind(filter.contact_id)
    .bind(filter.before_id)
    .bind(limit + 1)
    .fetch_all(db)
    .await
}

/// What a cancel found.
#[derive(Debug)]
pub enum CancelOutcome {
    Canceled(MessageRow),
    AlreadyCanceled(MessageRow),
    TooLate(MessageRow),
    NotFound,
}

pub async fn cancel(
    conn: &mut PgConnection,
    tenant_id: &str,
    id: &str,
) -> Result<CancelOutcome, sqlx::Error> {
    let canceled = sqlx::query_as::<_, MessageRow>(
        "WITH m AS (
            UPDATE messages SET status = 'canceled', updated_at = now()
            WHERE id = $1 AND tenant_id = $2 AND status IN ('scheduled', 'queued', 'retrying')
            RETURNING *
         ), e AS (
            INSERT INTO message_events (message_id, status, detail) SELECT id, 'canceled', 'canceled by the API' FROM m
         )
         SELECT * FROM m",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = canceled {
        return Ok(CancelOutcome::Canceled(row));
    }
    Ok(match get(&mut *conn, tenant_id, id).await? {
        None => CancelOutcome::NotFound,
        Some(row) if row.status == MessageStatus::Canceled => CancelOutcome::AlreadyCanceled(row),
        Some(row) => CancelOutcome::TooLate(row),
    })
}

/// Adds an event to a message's history without changing its status.
pub async fn note(db: impl PgExecutor<'_>, id: &str, detail: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO message_events (message_id, status, detail)
         SELECT id, status, $2 FROM messages WHERE id = $1",
    )
    .bind(id)
    .bind(detail)
    .execute(db)
    .await?;
    Ok(())
}
