//! Daily deliveries: subscriptions, and the ledger that makes each (subscription, local date)
//! happen exactly once however many schedulers run.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use crate::domain::Channel;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubscriptionRow {
    pub id: String,
    pub tenant_id: String,
    pub contact_id: String,
    pub send_at_local: NaiveTime,
    pub channel: Channel,
    pub content_kind: String,
    pub content: String,
    pub first_date: NaiveDate,
    pub last_date: Option<NaiveDate>,
    pub created_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// A paused subscription creates no daily message.
    pub paused: bool,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    s: &SubscriptionRow,
) -> Result<SubscriptionRow, sqlx::Error> {
    sqlx::query_as::<_, SubscriptionRow>(
        "INSERT INTO subscriptions (id, tenant_id, contact_id, send_at_local, channel, content_kind, content, first_date)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
    )
    .bind(&s.id)
    .bind(&s.tenant_id)
    .bind(&s.contact_id)
    .bind(s.send_at_local)
    .bind(s.channel)
    .bind(&s.content_kind)
    .bind(&s.content)
    .bind(s.first_date)
    .fetch_one(db)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: Option<&str>,
    id: &str,
) -> Result<Option<SubscriptionRow>, sqlx::Error> {
    sqlx::query_as::<_, SubscriptionRow>(
        "SELECT * FROM subscriptions WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2) AND deleted_at IS NULL",
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
    let done = sqlx::query("UPDATE subscriptions SET deleted_at = now() WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL")
        .bind(id)
        .bind(tenant_id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// What `GET /v1/subscriptions` filters by; `None` does not filter.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionFilter<'a> {
    pub contact_id: Option<&'a str>,
    pub paused: Option<bool>,
    /// Only ids older than this one (the cursor).
    pub before_id: Option<&'a str>,
}

/// A tenant's live subscriptions, newest first; up to `limit + 1` so the caller knows
/// whether another page follows.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    filter: &SubscriptionFilter<'_>,
    limit: i64,
) -> Result<Vec<SubscriptionRow>, sqlx::Error> {
    sqlx::query_as::<_, SubscriptionRow>(
        "SELECT * FROM subscriptions
         WHERE tenant_id = $1 AND deleted_at IS NULL
           AND ($2::text IS NULL OR contact_id = $2)
           AND ($3::bool IS NULL OR paused = $3)
           AND ($4::text IS NULL OR id < $4)
         ORDER BY id DESC
         LIMIT $5",
    )
    .bind(tenant_id)
    .bind(filter.contact_id)
    .bind(filter.paused)
    .bind(filter.before_id)
    .bind(limit + 1)
    .fetch_all(db)
    .await
}

/// A live subscription locked for a change, with the time zone its local times are in
/// (the contact's, else the tenant's).
pub async fn get_for_update(
    conn: &mut PgConnection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<(SubscriptionRow, String)>, sqlx::Error> {
    let Some(row) = sqlx::query_as::<_, SubscriptionRow>(
        "SELECT * FROM subscriptions WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL
         FOR UPDATE",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let zone: String = sqlx::query_scalar(
        "SELECT COALESCE(c.timezone, t.timezone) FROM contacts c JOIN tenants t ON t.id = c.tenant_id
         WHERE c.id = $1",
    )
    .bind(&row.contact_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some((row, zone)))
}

/// Writes a subscription's changeable fields as `s` has them.
pub async fn update(
    conn: &mut PgConnection,
    s: &SubscriptionRow,
) -> Result<SubscriptionRow, sqlx::Error> {
    sqlx::query_as::<_, SubscriptionRow>(
        "UPDATE subscriptions SET send_at_local = $2, content_kind = $3, content = $4, paused = $5,
                first_date = $6
         WHERE id = $1
         RETURNING *",
    )
    .bind(&s.id)
    .bind(s.send_at_local)
    .bind(&s.content_kind)
    .bind(&s.content)
    .bind(s.paused)
    .bind(s.first_date)
    .fetch_one(conn)
    .await
}

/// A subscription due now, with what its message needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Due {
    pub id: String,
    pub tenant_id: String,
    pub contact_id: String,
    pub channel: Channel,
    pub content_kind: String,
    pub content: String,
    pub zone: String,
    pub local_date: NaiveDate,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub sms_from: Option<String>,
    pub email_from: Option<String>,
}

/// Subscriptions whose local time has come today and that have not delivered today; up to
/// `limit`. A scheduler that was down catches up until local midnight: the local date moves
/// on then, and yesterday's is no longer due.
pub async fn due(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<Due>, sqlx::Error> {
    sqlx::query_as::<_, Due>(
        "SELECT s.id, s.tenant_id, s.contact_id, s.channel, s.content_kind, s.content, z.zone,
                l.local_now::date AS local_date,
                c.phone, c.email, c.name, COALESCE(t.messaging_service_sid, t.sms_from) AS sms_from, t.email_from
         FROM subscriptions s
         JOIN contacts c ON c.id = s.contact_id
         JOIN tenants t ON t.id = s.tenant_id
         CROSS JOIN LATERAL (SELECT COALESCE(c.timezone, t.timezone) AS zone) z
         CROSS JOIN LATERAL (SELECT now() AT TIME ZONE z.zone AS local_now) l
         WHERE s.deleted_at IS NULL AND NOT s.paused
           AND l.local_now::time >= s.send_at_local
           AND l.local_now::date >= s.first_date
           AND (s.last_date IS NULL OR s.last_date < l.local_now::date)
         ORDER BY s.id
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Records runs; returns the subscription ids this caller won (the others ran elsewhere, or
/// the subscription was paused or deleted since it was found due).
pub async fn claim_runs(
    conn: &mut PgConnection,
    ids: &[String],
    dates: &[NaiveDate],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO daily_runs (subscription_id, local_date)
         SELECT v.id, v.d FROM unnest($1::text[], $2::date[]) AS v(id, d)
         JOIN subscriptions s ON s.id = v.id AND s.deleted_at IS NULL AND NOT s.paused
         ON CONFLICT DO NOTHING
         RETURNING subscription_id",
    )
    .bind(ids)
    .bind(dates)
    .fetch_all(conn)
    .await
}

/// Marks subscriptions done for their local dates, so the minute tick skips them.
pub async fn set_last_dates(
    conn: &mut PgConnection,
    ids: &[String],
    dates: &[NaiveDate],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE subscriptions s SET last_date = v.d
         FROM unnest($1::text[], $2::date[]) AS v(id, d)
         WHERE s.id = v.id AND (s.last_date IS NULL OR s.last_date < v.d)",
    )
    .bind(ids)
    .bind(dates)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records which message a run produced.
pub async fn set_run_messages(
    db: impl PgExecutor<'_>,
    ids: &[String],
    dates: &[NaiveDate],
    messages: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE daily_runs r SET message_id = v.m
         FROM unnest($1::text[], $2::date[], $3::text[]) AS v(id, d, m)
         WHERE r.subscription_id = v.id AND r.local_date = v.d",
    )
    .bind(ids)
    .bind(dates)
    .bind(messages)
    .execute(db)
    .await?;
    Ok(())
}

/// Runs of AI subscriptions from the last day whose message is not written yet (their job may
/// not have reached Redis).
pub async fn pending_ai_runs(
    db: impl PgExecutor<'_>,
) -> Result<Vec<(String, NaiveDate)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.subscription_id, r.local_date FROM daily_runs r
         JOIN subscriptions s ON s.id = r.subscription_id
         WHERE r.message_id IS NULL AND r.created_at > now() - interval '1 day' AND s.content_kind = 'ai'
         LIMIT 10000",
    )
    .fetch_all(db)
    .await
}

/// Whether a run still waits for its message.
pub async fn run_pending(
    db: impl PgExecutor<'_>,
    id: &str,
    date: NaiveDate,
) -> Result<bool, sqlx::Error> {
    let pending: Option<bool> = sqlx::query_scalar(
        "SELECT message_id IS NULL FROM daily_runs WHERE subscription_id = $1 AND local_date = $2",
    )
    .bind(id)
    .bind(date)
    .fetch_optional(db)
    .await?;
    Ok(pending.unwrap_or(false))
}
