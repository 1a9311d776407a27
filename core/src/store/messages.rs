//! Messages, their events, and the idempotency keys that guard their creation.
//!
//! Every status change and the event recording it are written by one statement, so the
//! history never disagrees with the status.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    pub id: String,
    pub tenant_id: String,
    pub channel: String,
    pub direction: String,
    pub author: String,
    pub to_addr: String,
    pub from_addr: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    pub status: String,
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
    pub channel: String,
    pub to_addr: String,
    pub from_addr: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    pub status: String,
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
    /// An outbound message with the common defaults, due now.
    pub fn outbound(
        tenant_id: &str,
        channel: &str,
        to: &str,
        from: Option<&str>,
        body: &str,
        author: &str,
    ) -> Self {
        let now = Utc::now();
        Self {
            id: crate::domain::new_id("msg"),
            tenant_id: tenant_id.to_owned(),
            channel: channel.to_owned(),
            to_addr: to.to_owned(),
            from_addr: from.map(str::to_owned),
            subject: None,
            body: body.to_owned(),
            status: "queued".to_owned(),
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
    let inserted = sqlx::query_as::<_, MessageRow>(
        "WITH v AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                 $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::bool[],
                                 $12::text[], $13::jsonb[], $14::text[], $15::text[], $16::text[],
                                 $17::text[], $18::text[], $19::jsonb[], $20::bool[], $21::text[],
                                 $22::text[], $23::text[], $24::date[], $25::text[])
                AS v(id, tenant_id, channel, to_addr, from_addr, subject, body, status, send_at,
                     expires_at, respect_quiet_hours, contact_id, metadata, detail, direction, author,
                     in_reply_to, model, usage, needs_reply, appointment_id, reminder_before,
                     subscription_id, local_date, group_message_id)
         ), m AS (
            INSERT INTO messages (id, tenant_id, channel, to_addr, from_addr, subject, body, status,
                                  send_at, expires_at, respect_quiet_hours, contact_id, metadata,
                                  direction, author, in_reply_to, model, usage, needs_reply,
                                  appointment_id, reminder_before, subscription_id, local_date,
                                  group_message_id)
            SELECT v.id, v.tenant_id, v.channel, v.to_addr, v.from_addr, v.subject, v.body, v.status,
                   v.send_at, v.expires_at, v.respect_quiet_hours,
                   COALESCE(v.contact_id, CASE WHEN v.channel = 'sms' AND v.direction = 'outbound' THEN
                       (SELECT c.id FROM contacts c WHERE c.tenant_id = v.tenant_id AND c.phone = v.to_addr)
                   END),
                   v.metadata, v.direction, v.author, v.in_reply_to, v.model, v.usage, v.needs_reply,
                   v.appointment_id, v.reminder_before, v.subscription_id, v.local_date,
                   v.group_message_id
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
    .bind(col(rows, |r| r.channel.clone()))
    .bind(col(rows, |r| r.to_addr.clone()))
    .bind(col(rows, |r| r.from_addr.clone()))
    .bind(col(rows, |r| r.subject.clone()))
    .bind(col(rows, |r| r.body.clone()))
    .bind(col(rows, |r| r.status.clone()))
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
    sqlx::query_as::<_, EventRow>(
        "SELECT at, status, detail FROM message_events WHERE message_id = $1 ORDER BY id",
    )
    .bind(id)
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
        Some(row) if row.status == "canceled" => CancelOutcome::AlreadyCanceled(row),
        Some(row) => CancelOutcome::TooLate(row),
    })
}

/// A message the outbox sweep may have to push.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: String,
    pub tenant_id: String,
    pub channel: String,
    pub to_addr: String,
    pub send_at: DateTime<Utc>,
    /// The transaction that inserted it.
    pub created_xid: i64,
}

/// The inserting transactions an outbox sweep may go through now: `[from_xid, to_xid)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxRange {
    pub from_xid: i64,
    pub to_xid: i64,
}

/// Where the outbox `name` stands. Each step remembers the snapshot horizon (every
/// transaction below it has finished) and sweeps up to it once it is `grace_ms` old, so the
/// API's own pushes of what those transactions committed have had time to land. `None` while
/// the remembered horizon is younger than that.
pub async fn outbox_range(
    db: impl PgExecutor<'_>,
    name: &str,
    grace_ms: i64,
) -> Result<Option<OutboxRange>, sqlx::Error> {
    let (from_xid, to_xid, ready): (i64, i64, bool) = sqlx::query_as(
        "INSERT INTO outbox_watermarks (name, last_id, last_xid, next_xid, next_at)
         VALUES ($1, '', 0, pg_snapshot_xmin(pg_current_snapshot())::text::bigint, now())
         ON CONFLICT (name) DO UPDATE SET
            last_xid = COALESCE(outbox_watermarks.last_xid, 0),
            next_xid = COALESCE(outbox_watermarks.next_xid, EXCLUDED.next_xid),
            next_at = COALESCE(outbox_watermarks.next_at, EXCLUDED.next_at)
         RETURNING last_xid, next_xid, next_at <= now() - make_interval(secs => $2::float8 / 1000)",
    )
    .bind(name)
    .bind(grace_ms as f64)
    .fetch_one(db)
    .await?;
    Ok(ready.then_some(OutboxRange { from_xid, to_xid }))
}

/// Records that `range` was swept, and remembers the horizon now for the next step. Another
/// scheduler that swept it first wins; this one changes nothing.
pub async fn outbox_swept(
    db: impl PgExecutor<'_>,
    name: &str,
    range: OutboxRange,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox_watermarks SET last_xid = $2,
                next_xid = pg_snapshot_xmin(pg_current_snapshot())::text::bigint, next_at = now()
         WHERE name = $1 AND last_xid = $3",
    )
    .bind(name)
    .bind(range.to_xid)
    .bind(range.from_xid)
    .execute(db)
    .await?;
    Ok(())
}

/// Messages still waiting to go out that transactions in `range` inserted, after the
/// position `after` (xid, id), in that order.
pub async fn waiting_in(
    db: impl PgExecutor<'_>,
    range: OutboxRange,
    after: (i64, &str),
    limit: i64,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    sqlx::query_as::<_, OutboxRow>(
        "SELECT id, tenant_id, channel, to_addr, send_at, created_xid FROM messages
         WHERE created_xid >= $1 AND created_xid < $2 AND (created_xid, id) > ($3, $4)
           AND status IN ('scheduled', 'queued', 'retrying')
         ORDER BY created_xid, id
         LIMIT $5",
    )
    .bind(range.from_xid)
    .bind(range.to_xid)
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Inbound texts that transactions in `range` inserted and that still want a reply job,
/// after the position `after` (xid, id), in that order.
pub async fn awaiting_reply_in(
    db: impl PgExecutor<'_>,
    range: OutboxRange,
    after: (i64, &str),
    limit: i64,
) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT created_xid, id FROM messages
         WHERE created_xid >= $1 AND created_xid < $2 AND (created_xid, id) > ($3, $4)
           AND needs_reply
         ORDER BY created_xid, id
         LIMIT $5",
    )
    .bind(range.from_xid)
    .bind(range.to_xid)
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A message Postgres still expects a delivery job for, as the reconcile sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnfinishedRow {
    pub id: String,
    pub tenant_id: String,
    pub channel: String,
    pub to_addr: String,
    pub status: String,
    pub send_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Messages after `after` (by id) that are waiting to go out or hold a `sending` claim,
/// oldest first: what the queue must hold a job for.
pub async fn unfinished_after(
    db: impl PgExecutor<'_>,
    after: &str,
    limit: i64,
) -> Result<Vec<UnfinishedRow>, sqlx::Error> {
    sqlx::query_as::<_, UnfinishedRow>(
        "SELECT id, tenant_id, channel, to_addr, status, send_at, updated_at FROM messages
         WHERE id > $1 AND status IN ('scheduled', 'queued', 'retrying', 'sending')
         ORDER BY id
         LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Gives up a `sending` claim that can no longer report back (see
/// [`crate::Config::stale_claim_after`]): the message goes back to `retrying`, with an event
/// saying why, so the job that found it can try again. `claimed_at` is the claim's
/// `updated_at` as the caller saw it, so a claim renewed meanwhile is left alone.
pub async fn release_stale_claim(
    db: impl PgExecutor<'_>,
    id: &str,
    claimed_at: DateTime<Utc>,
    detail: &str,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "WITH m AS (
            UPDATE messages SET status = 'retrying', updated_at = now(),
                   unsettled_since = COALESCE(unsettled_since, updated_at)
            WHERE id = $1 AND status = 'sending' AND updated_at = $2
            RETURNING id
         )
         INSERT INTO message_events (message_id, status, detail) SELECT id, 'retrying', $3 FROM m",
    )
    .bind(id)
    .bind(claimed_at)
    .bind(detail)
    .execute(db)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// A claimed message, with what sending it needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    #[sqlx(flatten)]
    pub message: MessageRow,
    /// The tenant's `whsec_` secret, for webhooks.
    pub webhook_secret: String,
    /// Not claimed: it is quiet hours where the recipient is. `zone` and the window come
    /// with it, so the caller can work out when they end.
    pub quiet: bool,
    pub zone: Option<String>,
    pub quiet_start: Option<chrono::NaiveTime>,
    pub quiet_end: Option<chrono::NaiveTime>,
}

/// Claims messages for a send attempt, one statement for the whole batch. A message is
/// claimed only if it is due and waiting to go out, or is `sending` under an earlier queue
/// attempt of its job (its worker died mid-send); never by a duplicate job with the same
/// attempt.
///
/// The claim also applies what is decided before any provider call: a message past its
/// `expires_at` becomes `expired`, an SMS to an opted-out number becomes `suppressed`; only
/// a message that moves to `sending` counts an attempt. An SMS due inside its recipient's
/// quiet hours is returned unclaimed, marked `quiet`, for the caller to put off. Returns the
/// rows; the status says which way each went.
///
/// Every row is locked first and only then judged: a row a concurrent transaction is
/// changing (a replay putting a dead message back to `queued`, whose job may be taken before
/// the replay commits) is waited for and judged as it is after that commit, not as it was
/// when the statement began.
pub async fn claim_many(
    db: impl PgExecutor<'_>,
    ids: &[String],
    job_attempts: &[i32],
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as::<_, Claimed>(
        "WITH target AS (
            SELECT m.id, j.attempt, z.zone,
                   (m.status IN ('scheduled', 'queued', 'retrying')
                    OR (m.status = 'sending' AND m.claim_attempt < j.attempt))
                   AND m.send_at <= now() + interval '1 second' AS eligible,
                   CASE WHEN m.expires_at <= now() THEN 'expired'
                        WHEN m.channel = 'sms' AND EXISTS (
                            SELECT 1 FROM contacts o
                            WHERE o.tenant_id = m.tenant_id AND o.phone = m.to_addr AND o.opted_out)
                        THEN 'suppressed'
                        WHEN m.channel = 'sms' AND m.respect_quiet_hours AND tn.quiet_start IS NOT NULL
                             AND CASE WHEN tn.quiet_start <= tn.quiet_end
                                      THEN (now() AT TIME ZONE z.zone)::time >= tn.quiet_start
                                           AND (now() AT TIME ZONE z.zone)::time < tn.quiet_end
                                      ELSE (now() AT TIME ZONE z.zone)::time >= tn.quiet_start
                                           OR (now() AT TIME ZONE z.zone)::time < tn.quiet_end END
                        THEN 'quiet'
                        ELSE 'sending' END AS next
            FROM unnest($1::text[], $2::int[]) AS j(id, attempt)
            JOIN messages m ON m.id = j.id
            JOIN tenants tn ON tn.id = m.tenant_id
            LEFT JOIN contacts c ON c.id = m.contact_id
            CROSS JOIN LATERAL (SELECT COALESCE(c.timezone, tn.timezone) AS zone) z
            ORDER BY m.id
            FOR UPDATE OF m
         ), claimed AS (
            UPDATE messages m SET
                status = t.next,
                attempts = m.attempts + CASE WHEN t.next = 'sending' THEN 1 ELSE 0 END,
                claim_attempt = t.attempt,
                -- Taking over a claim whose worker died: that attempt's outcome is unknown.
                unsettled_since = CASE WHEN m.status = 'sending'
                                       THEN COALESCE(m.unsettled_since, m.updated_at)
                                       ELSE m.unsettled_since END,
                updated_at = now()
            FROM target t
            WHERE m.id = t.id AND t.eligible AND t.next <> 'quiet'
            RETURNING m.*
         ), events AS (
            INSERT INTO message_events (message_id, status, detail)
            SELECT id, status, CASE status
                WHEN 'sending' THEN 'attempt ' || attempts
                WHEN 'suppressed' THEN 'the recipient has opted out; not sent'
                ELSE 'expires_at passed before it could be sent' END
            FROM claimed
         )
         SELECT claimed.*, tn.webhook_secret, false AS quiet, NULL::text AS zone,
                NULL::time AS quiet_start, NULL::time AS quiet_end
         FROM claimed JOIN tenants tn ON tn.id = claimed.tenant_id
         UNION ALL
         SELECT m.*, tn.webhook_secret, true, t.zone, tn.quiet_start, tn.quiet_end
         FROM target t JOIN messages m ON m.id = t.id JOIN tenants tn ON tn.id = m.tenant_id
         WHERE t.eligible AND t.next = 'quiet'",
    )
    .bind(ids)
    .bind(job_attempts)
    .fetch_all(db)
    .await
}

/// Puts a waiting message off to `until` (quiet hours), with an event saying why.
pub async fn defer_waiting(
    db: impl PgExecutor<'_>,
    id: &str,
    until: DateTime<Utc>,
    detail: &str,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "WITH m AS (
            UPDATE messages SET status = 'scheduled', send_at = $2, updated_at = now()
            WHERE id = $1 AND status IN ('scheduled', 'queued', 'retrying')
            RETURNING id
         )
         INSERT INTO message_events (message_id, status, detail) SELECT id, 'scheduled', $3 FROM m",
    )
    .bind(id)
    .bind(until)
    .bind(detail)
    .execute(db)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// Expires a waiting message that cannot go out before its `expires_at`.
pub async fn expire_waiting(
    db: impl PgExecutor<'_>,
    id: &str,
    detail: &str,
) -> Result<bool, sqlx::Error> {
    let moved = sqlx::query(
        "WITH m AS (
            UPDATE messages SET status = 'expired', updated_at = now()
            WHERE id = $1 AND status IN ('scheduled', 'queued', 'retrying')
            RETURNING id
         )
         INSERT INTO message_events (message_id, status, detail) SELECT id, 'expired', $2 FROM m",
    )
    .bind(id)
    .bind(detail)
    .execute(db)
    .await?;
    Ok(moved.rows_affected() == 1)
}

/// The outcome of a `sending` message's attempt.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub id: String,
    pub status: String,
    pub last_error: Option<String>,
    pub provider_message_id: Option<String>,
    pub detail: Option<String>,
    /// For `retrying`: when the next attempt is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The earlier attempt whose outcome is unknown is still unknown (the provider could not
    /// be asked): keep `unsettled_since`. Otherwise recording an outcome settles it.
    pub still_unsettled: bool,
}

/// Records the outcomes of many attempts in one statement, each with its event. Returns the
/// ids that moved (a message no longer `sending`, canceled say, is left as it is).
pub async fn finish_many(
    db: impl PgExecutor<'_>,
    outcomes: &[Outcome],
) -> Result<Vec<String>, sqlx::Error> {
    let ids: Vec<&str> = outcomes.iter().map(|o| o.id.as_str()).collect();
    let statuses: Vec<&str> = outcomes.iter().map(|o| o.status.as_str()).collect();
    let errors: Vec<Option<&str>> = outcomes.iter().map(|o| o.last_error.as_deref()).collect();
    let provider_ids: Vec<Option<&str>> = outcomes
        .iter()
        .map(|o| o.provider_message_id.as_deref())
        .collect();
    let details: Vec<Option<&str>> = outcomes.iter().map(|o| o.detail.as_deref()).collect();
    let next: Vec<Option<DateTime<Utc>>> = outcomes.iter().map(|o| o.next_attempt_at).collect();
    let unsettled: Vec<bool> = outcomes.iter().map(|o| o.still_unsettled).collect();
    sqlx::query_scalar::<_, String>(
        "WITH v AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::bool[])
                AS v(id, status, last_error, provider_message_id, detail, next_at, still_unsettled)
         ), moved AS (
            UPDATE messages m SET
                status = v.status,
                last_error = COALESCE(v.last_error, m.last_error),
                provider_message_id = COALESCE(v.provider_message_id, m.provider_message_id),
                sent_at = CASE WHEN v.status IN ('sent', 'delivered') THEN now() ELSE m.sent_at END,
                delivered_at = CASE WHEN v.status = 'delivered' THEN now() ELSE m.delivered_at END,
                send_at = COALESCE(v.next_at, m.send_at),
                unsettled_since = CASE WHEN v.still_unsettled THEN m.unsettled_since END,
                updated_at = now()
            FROM v
            WHERE m.id = v.id AND m.status = 'sending'
            RETURNING m.id, v.status, v.detail
         ), refs AS (
            INSERT INTO provider_refs (provider_message_id, message_id)
            SELECT v.provider_message_id, v.id FROM v JOIN moved ON moved.id = v.id
            WHERE v.provider_message_id IS NOT NULL
            ON CONFLICT DO NOTHING
         )
         INSERT INTO message_events (message_id, status, detail)
         SELECT id, status, detail FROM moved
         RETURNING message_id",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&errors)
    .bind(&provider_ids)
    .bind(&details)
    .bind(&next)
    .bind(&unsettled)
    .fetch_all(db)
    .await
}

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

/// Records what the `log` provider "sent".
pub async fn insert_log_delivery(
    db: impl PgExecutor<'_>,
    m: &MessageRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO log_deliveries (message_id, tenant_id, channel, to_addr, from_addr, subject, body)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&m.id)
    .bind(&m.tenant_id)
    .bind(&m.channel)
    .bind(&m.to_addr)
    .bind(&m.from_addr)
    .bind(&m.subject)
    .bind(&m.body)
    .execute(db)
    .await?;
    Ok(())
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

/// Starts a fresh run of a `failed` or `dead` message that has not expired: queued now, with
/// attempts from zero. `None` when the message is in any other state.
pub async fn restart(
    db: impl PgExecutor<'_>,
    id: &str,
    detail: &str,
) -> Result<Option<MessageRow>, sqlx::Error> {
    sqlx::query_as::<_, MessageRow>(
        "WITH m AS (
            UPDATE messages SET status = 'queued', send_at = now(), run = run + 1, attempts = 0,
                   claim_attempt = 0, last_error = NULL, updated_at = now()
            WHERE id = $1 AND status IN ('failed', 'dead') AND expires_at > now()
            RETURNING *
         ), e AS (
            INSERT INTO message_events (message_id, status, detail)
            SELECT id, 'queued', $2 || ' (run ' || run || ')' FROM m
         )
         SELECT * FROM m",
    )
    .bind(id)
    .bind(detail)
    .fetch_optional(db)
    .await
}

/// Applies a provider's delivery report to the message it sent as `provider_message_id`,
/// never moving it backwards: `sent` only from `sending`; `delivered`, `undelivered` and
/// `failed` only from `sending` or `sent`. Returns the message when it moved.
pub async fn apply_delivery_report(
    db: impl PgExecutor<'_>,
    provider_message_id: &str,
    status: &str,
    error: Option<&str>,
    detail: &str,
) -> Result<Option<MessageRow>, sqlx::Error> {
    sqlx::query_as::<_, MessageRow>(
        "WITH m AS (
            UPDATE messages SET
                status = $2,
                last_error = COALESCE($3, last_error),
                sent_at = CASE WHEN sent_at IS NULL THEN now() ELSE sent_at END,
                delivered_at = CASE WHEN $2 = 'delivered' THEN now() ELSE delivered_at END,
                provider_message_id = COALESCE(provider_message_id, $1),
                unsettled_since = NULL,
                updated_at = now()
            WHERE id = (SELECT message_id FROM provider_refs WHERE provider_message_id = $1)
              -- A message waiting to learn whether an attempt arrived counts as sending: the
              -- report says it did.
              AND ((status = 'sending' OR (status = 'retrying' AND unsettled_since IS NOT NULL))
                   AND $2 IN ('sent', 'delivered', 'undelivered', 'failed')
                OR (status = 'sent' AND $2 IN ('delivered', 'undelivered', 'failed')))
            RETURNING *
         ), e AS (
            INSERT INTO message_events (message_id, status, detail) SELECT id, $2, $4 FROM m
         )
         SELECT * FROM m",
    )
    .bind(provider_message_id)
    .bind(status)
    .bind(error)
    .bind(detail)
    .fetch_optional(db)
    .await
}

/// Remembers a provider's id for a message; false when that id is known already (a
/// provider retrying its webhook).
pub async fn insert_provider_ref(
    db: impl PgExecutor<'_>,
    provider_message_id: &str,
    message_id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO provider_refs (provider_message_id, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(provider_message_id)
    .bind(message_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

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

/// Why a waiting message was put off, for its history.
#[derive(Debug, Clone)]
pub struct PutOff {
    pub id: String,
    /// `circuit` or `send_rate`: one event per episode of each.
    pub kind: &'static str,
    pub detail: String,
}

/// Records why waiting messages were put off: an event, unless the message's latest event
/// already says it was put off for the same reason, whose detail (until when) is then brought
/// up to date instead. A message that is no longer waiting is left alone.
pub async fn note_put_offs(db: impl PgExecutor<'_>, items: &[PutOff]) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = items.iter().map(|p| p.id.as_str()).collect();
    let kinds: Vec<&str> = items.iter().map(|p| p.kind).collect();
    let details: Vec<&str> = items.iter().map(|p| p.detail.as_str()).collect();
    sqlx::query(
        "WITH v AS (
            SELECT DISTINCT ON (id) * FROM unnest($1::text[], $2::text[], $3::text[]) AS v(id, kind, detail)
         ), last AS (
            SELECT v.id, e.event_id, e.put_off FROM v
            CROSS JOIN LATERAL (
                SELECT id AS event_id, put_off FROM message_events
                WHERE message_id = v.id ORDER BY id DESC LIMIT 1
            ) e
         ), updated AS (
            UPDATE message_events e SET detail = v.detail
            FROM v JOIN last ON last.id = v.id
            WHERE e.id = last.event_id AND last.put_off = v.kind
            RETURNING e.message_id
         )
         INSERT INTO message_events (message_id, status, detail, put_off)
         SELECT m.id, m.status, v.detail, v.kind
         FROM v JOIN messages m ON m.id = v.id
         WHERE m.status IN ('scheduled', 'queued', 'retrying')
           AND NOT EXISTS (SELECT 1 FROM last WHERE last.id = v.id AND last.put_off = v.kind)",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&details)
    .execute(db)
    .await?;
    Ok(())
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

/// Inbound texts whose ids lie between two ids that still want a reply job (the reconcile).
pub async fn awaiting_reply_between(
    db: impl PgExecutor<'_>,
    after: &str,
    before: &str,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM messages WHERE id > $1 AND id < $2 AND needs_reply ORDER BY id LIMIT $3",
    )
    .bind(after)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Takes a provider's id for `message_id`, when nobody holds it yet or this message does
/// already: a provider's record that could be an unresolved attempt of two messages with the
/// same text is given to one of them only. Returns whether it is this message's now.
pub async fn take_provider_ref(
    db: impl PgExecutor<'_>,
    provider_message_id: &str,
    message_id: &str,
) -> Result<bool, sqlx::Error> {
    let owner: Option<String> = sqlx::query_scalar(
        "WITH ins AS (
            INSERT INTO provider_refs (provider_message_id, message_id) VALUES ($1, $2)
            ON CONFLICT DO NOTHING RETURNING message_id
         )
         SELECT message_id FROM ins
         UNION ALL
         SELECT message_id FROM provider_refs WHERE provider_message_id = $1
         LIMIT 1",
    )
    .bind(provider_message_id)
    .bind(message_id)
    .fetch_optional(db)
    .await?;
    Ok(owner.as_deref() == Some(message_id))
}

/// A status report names a message and run that Herald does not know the provider id of (the
/// attempt's answer never came back): the id becomes that message's if the message is still
/// waiting to learn how that attempt went. Returns whether it did.
pub async fn adopt_provider_ref(
    db: impl PgExecutor<'_>,
    provider_message_id: &str,
    message_id: &str,
    run: i32,
) -> Result<bool, sqlx::Error> {
    let adopted = sqlx::query(
        "INSERT INTO provider_refs (provider_message_id, message_id)
         SELECT $1, id FROM messages
         WHERE id = $2 AND run = $3
           AND (status = 'sending' OR (status = 'retrying' AND unsettled_since IS NOT NULL))
         ON CONFLICT DO NOTHING",
    )
    .bind(provider_message_id)
    .bind(message_id)
    .bind(run)
    .execute(db)
    .await?;
    Ok(adopted.rows_affected() == 1)
}
