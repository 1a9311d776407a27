//! Event endpoints, events, their deliveries and the attempts made. Events themselves are
//! made by the database (`herald_emit`, called by triggers on `messages` and `contacts` and
//! by [`complete_group_sends`]), in the transaction that makes the change they report.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use super::outbox::OutboxRange;
use crate::domain::events::EventType;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndpointRow {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub secret: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The columns of an [`EndpointRow`], pasted into its queries.
macro_rules! endpoint {
    () => {
        "id, tenant_id, url, events, description, secret, enabled, disabled_reason, created_at"
    };
}

/// A new endpoint, or the fields an update sets (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct EndpointFields {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `Some(None)` clears it.
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

pub async fn insert_endpoint(
    db: impl PgExecutor<'_>,
    id: &str,
    tenant_id: &str,
    secret: &str,
    fields: &EndpointFields,
) -> Result<EndpointRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO endpoints (id, tenant_id, url, events, description, secret)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
        endpoint!(),
        ""
    ))
    .bind(id)
    .bind(tenant_id)
    .bind(fields.url.as_deref().unwrap_or_default())
    .bind(fields.events.clone().unwrap_or_default())
    .bind(fields.description.clone().flatten())
    .bind(secret)
    .fetch_one(db)
    .await
}

/// The endpoint `id`: the tenant's, or any tenant's for `None` (ops).
pub async fn get_endpoint(
    db: impl PgExecutor<'_>,
    tenant_id: Option<&str>,
    id: &str,
) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        endpoint!(),
        " FROM endpoints WHERE ($1::text IS NULL OR tenant_id = $1) AND id = $2"
    ))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// A page of the tenant's endpoints (every tenant's for `None`: ops), newest first, before
/// the id `before`.
pub async fn list_endpoints(
    db: impl PgExecutor<'_>,
    tenant_id: Option<&str>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<EndpointRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        endpoint!(),
        " FROM endpoints
         WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3"
    ))
    .bind(tenant_id)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Updates what `fields` sets. Enabling an endpoint clears why it was disabled and starts
/// its failure window afresh.
pub async fn update_endpoint(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    id: &str,
    fields: &EndpointFields,
) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE endpoints SET
            url = COALESCE($3, url),
            events = COALESCE($4, events),
            description = CASE WHEN $5 THEN $6 ELSE description END,
            enabled = COALESCE($7, enabled),
            disabled_reason = CASE WHEN $7 THEN NULL ELSE disabled_reason END,
            failing_since = CASE WHEN $7 THEN NULL ELSE failing_since END,
            updated_at = now()
         WHERE tenant_id = $1 AND id = $2
         RETURNING ",
        endpoint!(),
        ""
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(fields.url.as_deref())
    .bind(fields.events.clone())
    .bind(fields.description.is_some())
    .bind(fields.description.clone().flatten())
    .bind(fields.enabled)
    .fetch_optional(db)
    .await
}

pub async fn delete_endpoint(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM endpoints WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives the endpoint a new secret; the one it had signs too until `overlap_until`.
pub async fn rotate_secret(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    id: &str,
    secret: &str,
    overlap_until: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE endpoints SET previous_secret = secret, previous_secret_until = $4,
                secret = $3, updated_at = now()
         WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(secret)
    .bind(overlap_until)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Makes a `kind` event about message `message_id` as it stands in this transaction (for the
/// endpoints that asked for it).
pub async fn emit_for_message(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    kind: EventType,
    message_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT herald_emit($1, $2, (SELECT to_jsonb(m) FROM messages m WHERE m.id = $3))")
        .bind(tenant_id)
        .bind(kind.as_str())
        .bind(message_id)
        .execute(db)
        .await?;
    Ok(())
}

/// One event for one endpoint, with all its delivery needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub event_id: String,
    pub endpoint_id: String,
    pub tenant_id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub data: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub status: String,
    pub attempts: i32,
    pub url: String,
    pub secret: String,
    /// The secret before the last rotation, while it still signs.
    pub previous_secret: Option<String>,
    pub enabled: bool,
}

/// The deliveries `keys` (event, endpoint) name, in that order (`None`: gone, with its
/// endpoint). One statement for all.
pub async fn deliveries(
    db: impl PgExecutor<'_>,
    keys: &[(String, String)],
) -> Result<Vec<Option<DeliveryRow>>, sqlx::Error> {
    let events: Vec<&str> = keys.iter().map(|(e, _)| e.as_str()).collect();
    let endpoints: Vec<&str> = keys.iter().map(|(_, p)| p.as_str()).collect();
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT d.event_id, d.endpoint_id, d.tenant_id, e.type, e.data, e.created_at, d.status,
                d.attempts, p.url, p.secret,
                CASE WHEN p.previous_secret_until > now() THEN p.previous_secret END AS previous_secret,
                p.enabled
         FROM unnest($1::text[], $2::text[]) AS k(event_id, endpoint_id)
         -- One key at a time through the primary keys.
         CROSS JOIN LATERAL (SELECT * FROM event_deliveries d
                             WHERE d.event_id = k.event_id AND d.endpoint_id = k.endpoint_id) d
         CROSS JOIN LATERAL (SELECT * FROM events e WHERE e.id = d.event_id) e
         CROSS JOIN LATERAL (SELECT * FROM endpoints p WHERE p.id = d.endpoint_id) p",
    )
    // Planned at each call: a plan kept from when the tables were small would scan them.
    .persistent(false)
    .bind(&events)
    .bind(&endpoints)
    .fetch_all(db)
    .await?;
    let mut found: std::collections::HashMap<(String, String), DeliveryRow> = rows
        .into_iter()
        .map(|r| ((r.event_id.clone(), r.endpoint_id.clone()), r))
        .collect();
    Ok(keys.iter().map(|k| found.remove(k)).collect())
}

/// One call to an endpoint, as recorded.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub kind: &'static str,
    pub succeeded: bool,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i32,
    /// Whether a failed attempt was the last the schedule allows.
    pub last: bool,
}

/// What recording an attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The delivery was still pending (not settled by a racing attempt or a deletion).
    pub counted: bool,
    /// Its endpoint is disabled now: it failed for longer than `disable_after`.
    pub disabled: bool,
}

/// Records attempts, settles or counts their deliveries, and keeps their endpoints' health:
/// a success clears an endpoint's failure window; a failure opens one, and one older than
/// `disable_after` disables the endpoint. One statement for all, one answer per attempt.
pub async fn record_attempts(
    db: impl PgExecutor<'_>,
    attempts: &[Attempt],
    disable_after: std::time::Duration,
) -> Result<Vec<Recorded>, sqlx::Error> {
    let col = |f: fn(&Attempt) -> &str| attempts.iter().map(f).collect::<Vec<_>>();
    let rows: Vec<(bool, bool)> = sqlx::query_as(
        "WITH input AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[],
                                 $6::int[], $7::text[], $8::int[], $9::bool[])
                   WITH ORDINALITY AS i(id, event_id, endpoint_id, type, succeeded, status_code,
                                        error, duration_ms, last, n)
         ), attempt AS (
            INSERT INTO event_attempts (id, event_id, endpoint_id, type, status, status_code, error, duration_ms)
            SELECT id, event_id, endpoint_id, type,
                   CASE WHEN succeeded THEN 'succeeded' ELSE 'failed' END, status_code, error, duration_ms
            FROM input
         ), delivery AS (
            UPDATE event_deliveries d SET attempts = d.attempts + 1,
                   status = CASE WHEN i.succeeded THEN 'delivered' WHEN i.last THEN 'failed' ELSE 'pending' END
            FROM input i
            WHERE d.event_id = i.event_id AND d.endpoint_id = i.endpoint_id AND d.status = 'pending'
            RETURNING d.event_id, d.endpoint_id
         ), health AS (
            UPDATE endpoints p SET
                failing_since = CASE WHEN h.ok THEN NULL ELSE COALESCE(p.failing_since, now()) END,
                enabled = p.enabled AND (h.ok OR p.failing_since IS NULL
                          OR p.failing_since > now() - make_interval(secs => $10)),
                disabled_reason = CASE
                    WHEN p.enabled AND NOT h.ok AND p.failing_since <= now() - make_interval(secs => $10)
                    THEN 'no successful delivery since '
                         || to_char(p.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                         || ': disabled after ' || $11
                    ELSE p.disabled_reason END
            FROM (SELECT endpoint_id, bool_or(succeeded) AS ok FROM input GROUP BY endpoint_id) h
            WHERE p.id = h.endpoint_id AND (NOT h.ok OR p.failing_since IS NOT NULL)
            RETURNING p.id, NOT p.enabled AS off
         )
         SELECT EXISTS (SELECT 1 FROM delivery x WHERE x.event_id = i.event_id AND x.endpoint_id = i.endpoint_id),
                COALESCE((SELECT off FROM health WHERE health.id = i.endpoint_id), false)
         FROM input i ORDER BY i.n",
    )
    .persistent(false)
    .bind(col(|a| &a.id))
    .bind(col(|a| &a.event_id))
    .bind(col(|a| &a.endpoint_id))
    .bind(col(|a| a.kind))
    .bind(attempts.iter().map(|a| a.succeeded).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.status_code.map(i32::from)).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.error.as_deref()).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.duration_ms).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.last).collect::<Vec<_>>())
    .bind(disable_after.as_secs_f64())
    .bind(humanize(disable_after))
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(counted, disabled)| Recorded { counted, disabled })
        .collect())
}

/// A span as people write it: `5 days`, `90 seconds`.
fn humanize(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = match secs {
        s if s >= 86_400 && s % 86_400 == 0 => (s / 86_400, "day"),
        s if s >= 3_600 && s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Settles a pending delivery without a call (its endpoint was disabled meanwhile).
pub async fn fail_delivery(
    db: impl PgExecutor<'_>,
    event_id: &str,
    endpoint_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE event_deliveries SET status = 'failed'
         WHERE event_id = $1 AND endpoint_id = $2 AND status = 'pending'",
    )
    .bind(event_id)
    .bind(endpoint_id)
    .execute(db)
    .await?;
    Ok(())
}

/// A delivery to queue: its event, endpoint and tenant.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueuedDelivery {
    pub event_id: String,
    pub endpoint_id: String,
    pub tenant_id: String,
    pub created_xid: i64,
}

/// Pending deliveries that transactions in `range` inserted, after `after` (xid, event,
/// endpoint), in that order.
pub async fn pending_in(
    db: impl PgExecutor<'_>,
    range: OutboxRange,
    after: (i64, &str, &str),
    limit: i64,
) -> Result<Vec<QueuedDelivery>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event_id, endpoint_id, tenant_id, created_xid FROM event_deliveries
         WHERE created_xid >= $1 AND created_xid < $2
           AND (created_xid, event_id, endpoint_id) > ($3, $4, $5)
           AND status = 'pending'
         ORDER BY created_xid, event_id, endpoint_id
         LIMIT $6",
    )
    .persistent(false)
    .bind(range.from_xid)
    .bind(range.to_xid)
    .bind(after.0)
    .bind(after.1)
    .bind(after.2)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Pending deliveries after `after` (event, endpoint), in that order: what the reconcile
/// queues again when Redis lost its data.
pub async fn pending_after(
    db: impl PgExecutor<'_>,
    after: (&str, &str),
    limit: i64,
) -> Result<Vec<QueuedDelivery>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event_id, endpoint_id, tenant_id, created_xid FROM event_deliveries
         WHERE status = 'pending' AND (event_id, endpoint_id) > ($1, $2)
         ORDER BY event_id, endpoint_id LIMIT $3",
    )
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Every delivery of the tenant's event `event_id` (any tenant's for `None`: ops) to an
/// endpoint still enabled, set to go again from its first attempt. Empty when there is no
/// such event.
pub async fn redeliver_event(
    db: impl PgExecutor<'_>,
    tenant_id: Option<&str>,
    event_id: &str,
) -> Result<Vec<QueuedDelivery>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE event_deliveries d SET status = 'pending', attempts = 0
         FROM endpoints p
         WHERE d.event_id = $2 AND ($1::text IS NULL OR d.tenant_id = $1)
           AND p.id = d.endpoint_id AND p.enabled
         RETURNING d.event_id, d.endpoint_id, d.tenant_id, d.created_xid",
    )
    .bind(tenant_id)
    .bind(event_id)
    .fetch_all(db)
    .await
}

/// Whether the tenant (any tenant, for `None`) has an event `event_id`.
pub async fn event_exists(
    db: impl PgExecutor<'_>,
    tenant_id: Option<&str>,
    event_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events WHERE id = $2 AND ($1::text IS NULL OR tenant_id = $1))",
    )
        .bind(tenant_id)
        .bind(event_id)
        .fetch_one(db)
        .await
}

/// The tenant an event belongs to (for the audit log of an operator's redelivery).
pub async fn event_tenant(
    db: impl PgExecutor<'_>,
    event_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT tenant_id FROM events WHERE id = $1")
        .bind(event_id)
        .fetch_optional(db)
        .await
}

/// Every event since `since` not delivered to the endpoint, set to go again from its first
/// attempt.
pub async fn recover(
    db: impl PgExecutor<'_>,
    endpoint_id: &str,
    since: DateTime<Utc>,
) -> Result<Vec<QueuedDelivery>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE event_deliveries SET status = 'pending', attempts = 0
         WHERE endpoint_id = $1 AND created_at >= $2 AND status <> 'delivered'
         RETURNING event_id, endpoint_id, tenant_id, created_xid",
    )
    .bind(endpoint_id)
    .bind(since)
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub id: String,
    pub event_id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub at: DateTime<Utc>,
    pub status: String,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
}

/// A page of the attempts made to an endpoint, newest first.
pub async fn list_attempts(
    db: impl PgExecutor<'_>,
    endpoint_id: &str,
    status: Option<&str>,
    since: Option<DateTime<Utc>>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_id, type, at, status, status_code, error, duration_ms
         FROM event_attempts
         WHERE endpoint_id = $1 AND ($2::text IS NULL OR status = $2)
           AND ($3::timestamptz IS NULL OR at >= $3) AND ($4::text IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5",
    )
    .bind(endpoint_id)
    .bind(status)
    .bind(since)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Marks complete the group sends (of the oldest `limit` still open) none of whose messages
/// is still on its way, each with its `group_send.completed` event, in one transaction.
/// Returns how many completed.
pub async fn complete_group_sends(db: impl PgExecutor<'_>, limit: i64) -> Result<u64, sqlx::Error> {
    sqlx::query_scalar(
        "WITH open AS (
            SELECT g.id FROM group_messages g
            WHERE g.completed_at IS NULL
              AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.group_message_id = g.id
                              AND m.status IN ('scheduled', 'queued', 'sending', 'retrying'))
            ORDER BY g.created_at LIMIT $1
            FOR UPDATE SKIP LOCKED
         ), done AS (
            UPDATE group_messages g SET completed_at = now()
            FROM open WHERE g.id = open.id
            RETURNING g.id, g.tenant_id, g.group_id, g.channel, g.recipients, g.created_at, g.completed_at
         ), emitted AS (
            SELECT herald_emit(done.tenant_id, 'group_send.completed', jsonb_build_object(
                'id', done.id, 'group_id', done.group_id, 'channel', done.channel,
                'recipients', done.recipients, 'created_at', done.created_at,
                'completed_at', done.completed_at,
                'counts', COALESCE((SELECT jsonb_object_agg(status, n) FROM (
                    SELECT status, count(*) AS n FROM messages
                    WHERE group_message_id = done.id GROUP BY status) c), '{}'::jsonb)))
            FROM done
         )
         SELECT count(*) FROM emitted",
    )
    .bind(limit)
    .fetch_one(db)
    .await
    .map(|n: i64| u64::try_from(n).unwrap_or(0))
}
