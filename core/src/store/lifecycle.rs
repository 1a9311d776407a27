//! A message's life while it is sent: claimed for an attempt, put off, expired, its outcome
//! recorded, a stale claim released, a replay restarted, a provider's report applied, and the
//! provider ids that tie reports to messages.
//!
//! Every status change and the event recording it are written by one statement, so the
//! history never disagrees with the status. Two steps of the happy path write no event row:
//! a claim keeps its `sending` event on the message (`claimed_at`) and an accepted send its
//! `sent` event (`accepted_note`, at `sent_at`), read back by `herald_history`; whatever would
//! make them untrue (the next claim, a replay, a redelivery, an erasure) writes them out first
//! (`herald_kept_events`; the statement's other parts see the row as it was before it).

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

use super::messages::MessageRow;
use crate::domain::MessageStatus;

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
    /// Not claimed: its tenant is suspended.
    pub held: bool,
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
/// `expires_at` becomes `expired`; an SMS to an opted-out number or to one a carrier reported
/// unreachable, a bulk SMS without the consent its tenant requires, and a bulk message past
/// its tenant's frequency cap become `suppressed`; only a message that moves to `sending`
/// counts an attempt. An SMS due inside its recipient's
/// quiet hours is returned unclaimed, marked `quiet`, and a message of a suspended tenant
/// marked `held`, for the caller to put off. A message moving to `sending` takes its tenant's
/// current sender (`sms_from` or Messaging Service, `email_from`) as `from_addr`. Returns the
/// rows; the status says which way each went.
///
/// Every row is locked first and only then judged: a row a concurrent transaction is
/// changing (a replay putting a dead message back to `queued`, whose job may be taken before
/// the replay commits) is waited for and judged as it is after that commit, not as it was
/// when the statement began.
///
/// A batch with bulk messages first takes, in one transaction, a lock per recipient of a
/// capped tenant's bulk message, so claims racing to one recipient are judged one after the
/// other, each counting what the one before claimed.
pub async fn claim_many(
    db: &PgPool,
    ids: &[String],
    job_attempts: &[i32],
    any_bulk: bool,
) -> Result<Vec<Claimed>, sqlx::Error> {
    if !any_bulk {
        return claim_statement(db, ids, job_attempts).await;
    }
    let mut tx = db.begin().await?;
    sqlx::query(
        "SELECT pg_advisory_xact_lock(k) FROM (
            SELECT DISTINCT hashtextextended('herald.cap:' || m.tenant_id || ':' || m.to_addr, 0) AS k
            FROM messages m JOIN tenants tn ON tn.id = m.tenant_id
            WHERE m.id = ANY($1) AND m.priority = 'bulk' AND tn.frequency_cap_max IS NOT NULL
            ORDER BY k
         ) locks",
    )
    .bind(ids)
    .execute(&mut *tx)
    .await?;
    let claimed = claim_statement(&mut *tx, ids, job_attempts).await?;
    tx.commit().await?;
    Ok(claimed)
}

async fn claim_statement(
    db: impl PgExecutor<'_>,
    ids: &[String],
    job_attempts: &[i32],
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as::<_, Claimed>(
        "WITH ahead AS (
            -- Bulk messages of this batch to one recipient: each counts those before it.
            SELECT m.id, count(*) OVER (PARTITION BY m.tenant_id, m.to_addr ORDER BY m.id) - 1 AS n
            FROM messages m
            WHERE m.id = ANY($1) AND m.priority = 'bulk'
              AND m.status IN ('scheduled', 'queued', 'retrying')
         ), target AS (
            SELECT m.id, j.attempt, z.zone, s.why, m.claimed_at AS kept_claim,
                   m.attempts AS kept_attempt,
                   -- What the tenant sends this channel from now: a changed sender is used
                   -- by the next attempt, whenever the message was created.
                   CASE m.channel WHEN 'sms' THEN COALESCE(tn.messaging_service_sid, tn.sms_from)
                                  WHEN 'email' THEN tn.email_from END AS sender,
                   (m.status IN ('scheduled', 'queued', 'retrying')
                    OR (m.status = 'sending' AND m.claim_attempt < j.attempt))
                   AND m.send_at <= now() + interval '1 second' AS eligible,
                   -- Its contact was erased while an attempt was under way.
                   CASE WHEN m.redacted_at IS NOT NULL THEN 'canceled'
                        WHEN m.expires_at <= now() THEN 'expired'
                        WHEN tn.suspended THEN 'held'
                        WHEN s.why IS NOT NULL THEN 'suppressed'
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
            -- Why a message must not go out: its number opted out (or did before its contact
            -- was erased), a carrier called it unreachable, or (bulk only) the tenant requires
            -- consent it lacks, or the recipient had the tenant's cap of bulk messages already.
            CROSS JOIN LATERAL (
                SELECT CASE
                    WHEN o.opted_out THEN 'opted out'
                    -- A number whose contact was erased while opted out, texted by number.
                    WHEN m.channel = 'sms' AND o.id IS NULL AND EXISTS (
                        SELECT 1 FROM erased_opt_outs e
                        WHERE e.tenant_id = m.tenant_id
                          AND e.number_hash = herald_number_hash((SELECT herald_number_key()),
                                                                 m.tenant_id, m.to_addr)
                    ) THEN 'opted out'
                    WHEN o.phone_status = 'unreachable' THEN 'unreachable'
                    WHEN m.priority = 'bulk' AND m.channel = 'sms' AND tn.require_consent_for_bulk
                         AND COALESCE(o.consent_status, 'unknown') <> 'opted_in' THEN 'no consent'
                    WHEN m.priority = 'bulk' AND tn.frequency_cap_max IS NOT NULL AND (
                        SELECT count(*) FROM messages x
                        WHERE x.tenant_id = m.tenant_id AND x.priority = 'bulk' AND x.id <> m.id
                          AND x.sent_at > now() - tn.frequency_cap_per
                          AND (x.to_addr = m.to_addr OR x.contact_id = m.contact_id)
                    ) + (
                        -- Claimed by another batch and still on its way.
                        SELECT count(*) FROM messages x
                        WHERE x.tenant_id = m.tenant_id AND x.priority = 'bulk' AND x.id <> m.id
                          AND x.status = 'sending' AND x.to_addr = m.to_addr
                    ) + COALESCE((SELECT a.n FROM ahead a WHERE a.id = m.id), 0)
                      >= tn.frequency_cap_max THEN 'frequency cap'
                END AS why
                FROM (SELECT 1) one
                LEFT JOIN contacts o ON m.channel = 'sms' AND o.tenant_id = m.tenant_id
                                    AND o.phone = m.to_addr) s
            ORDER BY m.id
            FOR UPDATE OF m
         ), claimed AS (
            UPDATE messages m SET
                status = t.next,
                attempts = m.attempts + CASE WHEN t.next = 'sending' THEN 1 ELSE 0 END,
                -- An attempt whose outcome is unknown is looked up (and repeated) as it was.
                from_addr = CASE WHEN t.next = 'sending' AND m.status <> 'sending'
                                      AND m.unsettled_since IS NULL
                                 THEN COALESCE(t.sender, m.from_addr) ELSE m.from_addr END,
                claim_attempt = t.attempt,
                -- The new attempt's `sending` event, kept on the row.
                claimed_at = CASE WHEN t.next = 'sending' THEN clock_timestamp()
                                  ELSE m.claimed_at END,
                -- Taking over a claim whose worker died: that attempt's outcome is unknown.
                unsettled_since = CASE WHEN m.status = 'sending'
                                       THEN COALESCE(m.unsettled_since, m.updated_at)
                                       ELSE m.unsettled_since END,
                updated_at = now()
            FROM target t
            WHERE m.id = t.id AND t.eligible AND t.next NOT IN ('quiet', 'held')
            RETURNING m.*
         ), events AS (
            INSERT INTO message_events (message_id, at, status, detail)
            SELECT c.id, clock_timestamp(), c.status, CASE c.status
                WHEN 'suppressed' THEN CASE t.why WHEN 'opted out'
                                       THEN 'the recipient has opted out; not sent' ELSE t.why END
                WHEN 'canceled' THEN 'its contact was erased'
                ELSE 'expires_at passed before it could be sent' END
            FROM claimed c JOIN target t ON t.id = c.id
            WHERE c.status <> 'sending'
            UNION ALL
            -- A new attempt: the previous one's `sending`, kept on the row until now.
            SELECT c.id, t.kept_claim, 'sending', 'attempt ' || t.kept_attempt
            FROM claimed c JOIN target t ON t.id = c.id
            WHERE c.status = 'sending' AND t.kept_claim IS NOT NULL
         )
         SELECT claimed.*, tn.webhook_secret, false AS quiet, false AS held, NULL::text AS zone,
                NULL::time AS quiet_start, NULL::time AS quiet_end
         FROM claimed JOIN tenants tn ON tn.id = claimed.tenant_id
         UNION ALL
         SELECT m.*, tn.webhook_secret, t.next = 'quiet', t.next = 'held', t.zone,
                tn.quiet_start, tn.quiet_end
         FROM target t JOIN messages m ON m.id = t.id JOIN tenants tn ON tn.id = m.tenant_id
         WHERE t.eligible AND t.next IN ('quiet', 'held')",
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
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: String,
    pub status: MessageStatus,
    pub last_error: Option<String>,
    pub provider_message_id: Option<String>,
    pub detail: Option<String>,
    /// For `retrying`: when the next attempt is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The earlier attempt whose outcome is unknown is still unknown (the provider could not
    /// be asked): keep `unsettled_since`. Otherwise recording an outcome settles it.
    pub still_unsettled: bool,
}

/// Records the outcomes of many attempts in one statement, each with its event (an accepted
/// send's, `sent` or `delivered`, kept on the row). Returns the ids that moved (a message no
/// longer `sending`, canceled say, is left as it is).
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
                accepted_note = CASE WHEN v.status IN ('sent', 'delivered')
                                     THEN COALESCE(v.detail, '') ELSE m.accepted_note END,
                updated_at = now()
            FROM v
            WHERE m.id = v.id AND m.status = 'sending'
            RETURNING m.id, v.status, v.detail
         ), refs AS (
            INSERT INTO provider_refs (provider_message_id, message_id)
            SELECT v.provider_message_id, v.id FROM v JOIN moved ON moved.id = v.id
            WHERE v.provider_message_id IS NOT NULL
            ON CONFLICT DO NOTHING
         ), events AS (
            INSERT INTO message_events (message_id, status, detail)
            SELECT id, status, detail FROM moved WHERE status NOT IN ('sent', 'delivered')
         )
         SELECT id FROM moved",
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
                   claim_attempt = 0, last_error = NULL, claimed_at = NULL, accepted_note = NULL,
                   updated_at = now()
            WHERE id = $1 AND status IN ('failed', 'dead') AND expires_at > now()
              AND redacted_at IS NULL
            RETURNING *
         ), e AS (
            -- The events the row kept (`x` is the row before this statement) go first.
            INSERT INTO message_events (message_id, at, status, detail)
            SELECT x.id, k.at, k.status, k.detail
            FROM messages x CROSS JOIN LATERAL herald_kept_events(x) k
            WHERE x.id IN (SELECT id FROM m)
            UNION ALL
            SELECT id, clock_timestamp(), 'queued', $2 || ' (run ' || run || ')' FROM m
         )
         SELECT * FROM m",
    )
    .bind(id)
    .bind(detail)
    .fetch_optional(db)
    .await
}

/// Schedules an `undelivered` SMS to be sent once more at `at`, in a fresh run: only once per
/// message, and only when it will not have expired by then. `None` otherwise.
pub async fn redeliver(
    db: impl PgExecutor<'_>,
    id: &str,
    at: DateTime<Utc>,
    detail: &str,
) -> Result<Option<MessageRow>, sqlx::Error> {
    sqlx::query_as::<_, MessageRow>(
        "WITH m AS (
            UPDATE messages SET status = 'scheduled', send_at = $2, run = run + 1, attempts = 0,
                   claim_attempt = 0, redelivered_at = now(), claimed_at = NULL,
                   accepted_note = NULL, updated_at = now()
            WHERE id = $1 AND status = 'undelivered' AND channel = 'sms'
              AND redelivered_at IS NULL AND expires_at > $2
            RETURNING *
         ), e AS (
            INSERT INTO message_events (message_id, at, status, detail)
            SELECT x.id, k.at, k.status, k.detail
            FROM messages x CROSS JOIN LATERAL herald_kept_events(x) k
            WHERE x.id IN (SELECT id FROM m)
            UNION ALL
            SELECT id, clock_timestamp(), 'scheduled', $3 FROM m
         )
         SELECT * FROM m",
    )
    .bind(id)
    .bind(at)
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
    status: MessageStatus,
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
    .bind(status.as_str())
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

/// Why a waiting message was put off, for its history.
#[derive(Debug, Clone)]
pub struct PutOff {
    pub id: String,
    /// `circuit`, `send_rate`, `sender_paused` or `suspended`: one event per episode of each.
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
