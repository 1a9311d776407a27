//! Erasing a person: the statements of `DELETE /v1/contacts/{id}`, run in one transaction by
//! [`crate::services::privacy::erase`].

use sqlx::{PgConnection, PgExecutor};

use super::contacts::ContactRow;

/// The tenant's contact, locked until the erasure commits (a concurrent change waits).
pub async fn lock_contact(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    id: &str,
) -> Result<Option<ContactRow>, sqlx::Error> {
    sqlx::query_as::<_, ContactRow>(
        "SELECT * FROM contacts WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(db)
    .await
}

/// Keeps an opted-out contact's opt-out as the keyed hash of its number (see migration 0023).
pub async fn keep_opt_out(db: impl PgExecutor<'_>, c: &ContactRow) -> Result<(), sqlx::Error> {
    let (true, Some(phone)) = (c.opted_out, &c.phone) else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO erased_opt_outs (tenant_id, number_hash, opted_out_at, method)
         VALUES ($1, herald_number_hash(herald_number_key(), $1, $2), $3, $4)
         ON CONFLICT (tenant_id, number_hash) DO NOTHING",
    )
    .bind(&c.tenant_id)
    .bind(phone)
    .bind(
        c.opted_out_at
            .or(c.consent_at)
            .unwrap_or_else(chrono::Utc::now),
    )
    .bind(&c.consent_method)
    .execute(db)
    .await?;
    Ok(())
}

/// The messages an erasure redacted.
#[derive(Debug, Default)]
pub struct Redacted {
    pub ids: Vec<String>,
    /// Of those, entries of the contact's SMS conversation.
    pub conversation_entries: u64,
    /// Of those, the ones still waiting to be sent, now `canceled`.
    pub canceled: u64,
}

/// Every message about the person (`herald_about`: theirs by `contact_id`, or to or from
/// their number or email by address) loses its addresses, body, subject, metadata and error texts, and its
/// events their details; those still waiting are canceled, with an event saying why. A
/// message being sent right now keeps its status: its worker's next claim cancels it.
pub async fn redact_messages(
    db: &mut PgConnection,
    c: &ContactRow,
) -> Result<Redacted, sqlx::Error> {
    let rows = sqlx::query_as::<_, (String, bool, bool)>(
        "WITH about AS (
            SELECT m.id, m.channel = 'sms' AND m.contact_id IS NOT NULL AS in_conversation,
                   m.status IN ('scheduled', 'queued', 'retrying') AS waiting,
                   -- The row as locked (a claim that committed meanwhile included).
                   m AS was
            FROM messages m
            WHERE m.tenant_id = $1
              AND herald_about(m, $2, $3, $4)
            FOR UPDATE
         ), redacted AS (
            UPDATE messages m SET
                status = CASE WHEN a.waiting THEN 'canceled' ELSE m.status END,
                -- Their address: an outbound message's recipient, an inbound one's sender.
                to_addr = CASE WHEN m.direction = 'inbound' THEN m.to_addr ELSE '' END,
                from_addr = CASE WHEN m.direction = 'inbound' THEN '' ELSE m.from_addr END,
                body = '', subject = NULL, metadata = '{}'::jsonb, last_error = NULL,
                needs_reply = false, claimed_at = NULL, accepted_note = NULL,
                redacted_at = now(), updated_at = now()
            FROM about a
            WHERE m.id = a.id
            RETURNING m.id
         ), details AS (
            UPDATE message_events e SET detail = NULL
            FROM about a
            WHERE e.message_id = a.id AND e.detail IS NOT NULL
         ), canceled AS (
            -- The events kept on the row are written out, without their details like the rest.
            INSERT INTO message_events (message_id, at, status, detail)
            SELECT a.id, k.at, k.status, NULL
            FROM about a CROSS JOIN LATERAL herald_kept_events(a.was) k
            UNION ALL
            SELECT a.id, clock_timestamp(), 'canceled', 'its contact was erased'
            FROM about a WHERE a.waiting
         )
         SELECT a.id, a.in_conversation, a.waiting FROM about a JOIN redacted r ON r.id = a.id",
    )
    .bind(&c.tenant_id)
    .bind(&c.id)
    .bind(&c.phone)
    .bind(&c.email)
    .fetch_all(&mut *db)
    .await?;
    let mut out = Redacted::default();
    for (id, in_conversation, waiting) in rows {
        out.conversation_entries += u64::from(in_conversation);
        out.canceled += u64::from(waiting);
        out.ids.push(id);
    }
    Ok(out)
}

/// What else held the person's data, removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub dead_letters: u64,
    pub events: u64,
    pub appointments: u64,
    pub subscriptions: u64,
}

/// Removes the rest: the dead letters and `log` provider records of the redacted messages,
/// the webhook events about the person or those messages (with their deliveries and
/// attempts), their appointments and subscriptions, and at last the contact itself (its
/// consent history, memberships and conversation head go with it).
pub async fn remove_rest(
    db: &mut PgConnection,
    c: &ContactRow,
    message_ids: &[String],
) -> Result<Removed, sqlx::Error> {
    let (dead_letters, events, appointments, subscriptions) =
        sqlx::query_as::<_, (i64, i64, i64, i64)>(
            "WITH dl AS (
                DELETE FROM dead_letters WHERE message_id = ANY($3) RETURNING 1
             ), logs AS (
                DELETE FROM log_deliveries WHERE message_id = ANY($3)
             ), ev AS (
                DELETE FROM events
                WHERE tenant_id = $1
                  AND (data->>'contact_id' = $2 OR data->>'id' = $2 OR data->>'id' = ANY($3))
                RETURNING id
             ), attempts AS (
                DELETE FROM event_attempts WHERE event_id IN (SELECT id FROM ev)
             ), apt AS (
                DELETE FROM appointments WHERE contact_id = $2 RETURNING 1
             ), sub AS (
                DELETE FROM subscriptions WHERE contact_id = $2 RETURNING 1
             )
             SELECT (SELECT count(*) FROM dl), (SELECT count(*) FROM ev),
                    (SELECT count(*) FROM apt), (SELECT count(*) FROM sub)",
        )
        .bind(&c.tenant_id)
        .bind(&c.id)
        .bind(message_ids)
        .fetch_one(&mut *db)
        .await?;
    sqlx::query("DELETE FROM contacts WHERE id = $1")
        .bind(&c.id)
        .execute(&mut *db)
        .await?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(Removed {
        dead_letters: n(dead_letters),
        events: n(events),
        appointments: n(appointments),
        subscriptions: n(subscriptions),
    })
}
