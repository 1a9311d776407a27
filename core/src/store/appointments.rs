//! Appointments; their reminders are messages that name them.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

use super::messages::MessageRow;
use crate::domain::Channel;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AppointmentRow {
    pub id: String,
    pub tenant_id: String,
    pub contact_id: String,
    pub starts_at: DateTime<Utc>,
    pub channel: Channel,
    pub body_template: String,
    pub reminders: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub canceled_at: Option<DateTime<Utc>>,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    a: &AppointmentRow,
) -> Result<AppointmentRow, sqlx::Error> {
    sqlx::query_as::<_, AppointmentRow>(
        "INSERT INTO appointments (id, tenant_id, contact_id, starts_at, channel, body_template, reminders)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
    )
    .bind(&a.id)
    .bind(&a.tenant_id)
    .bind(&a.contact_id)
    .bind(a.starts_at)
    .bind(a.channel)
    .bind(&a.body_template)
    .bind(&a.reminders)
    .fetch_one(db)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    id: &str,
) -> Result<Option<AppointmentRow>, sqlx::Error> {
    sqlx::query_as::<_, AppointmentRow>(
        "SELECT * FROM appointments WHERE id = $1 AND tenant_id = $2",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(db)
    .await
}

pub async fn get_for_update(
    conn: &mut PgConnection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<AppointmentRow>, sqlx::Error> {
    sqlx::query_as::<_, AppointmentRow>(
        "SELECT * FROM appointments WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(conn)
    .await
}

pub async fn set_starts_at(
    db: impl PgExecutor<'_>,
    id: &str,
    starts_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE appointments SET starts_at = $2 WHERE id = $1")
        .bind(id)
        .bind(starts_at)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn mark_canceled(db: impl PgExecutor<'_>, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE appointments SET canceled_at = now() WHERE id = $1 AND canceled_at IS NULL",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// An appointment's reminders, earliest due first.
pub async fn reminders(
    db: impl PgExecutor<'_>,
    appointment_id: &str,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as::<_, MessageRow>(
        "SELECT * FROM messages WHERE appointment_id = $1 ORDER BY send_at, id",
    )
    .bind(appointment_id)
    .fetch_all(db)
    .await
}

/// Moves a waiting reminder to its new time and text, keeping its id.
pub async fn move_reminder(
    db: impl PgExecutor<'_>,
    id: &str,
    send_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    body: &str,
    detail: &str,
) -> Result<Option<MessageRow>, sqlx::Error> {
    // Kept only for an SMS (the statement checks the row's channel).
    let segments = crate::domain::Segments::of(body);
    sqlx::query_as::<_, MessageRow>(
        "WITH m AS (
            UPDATE messages SET send_at = $2, expires_at = $3, body = $4, status = 'scheduled',
                                encoding = CASE WHEN channel = 'sms' THEN $6 END,
                                segments = CASE WHEN channel = 'sms' THEN $7 END, updated_at = now()
            WHERE id = $1 AND status IN ('scheduled', 'queued', 'retrying')
            RETURNING *
         ), e AS (
            INSERT INTO message_events (message_id, status, detail) SELECT id, 'scheduled', $5 FROM m
         )
         SELECT * FROM m",
    )
    .bind(id)
    .bind(send_at)
    .bind(expires_at)
    .bind(body)
    .bind(detail)
    .bind(segments.encoding)
    .bind(super::messages::segment_count(segments))
    .fetch_optional(db)
    .await
}

/// Cancels a waiting reminder.
pub async fn cancel_reminder(
    db: impl PgExecutor<'_>,
    id: &str,
    detail: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "WITH m AS (
            UPDATE messages SET status = 'canceled', updated_at = now()
            WHERE id = $1 AND status IN ('scheduled', 'queued', 'retrying')
            RETURNING id
         )
         INSERT INTO message_events (message_id, status, detail) SELECT id, 'canceled', $2 FROM m",
    )
    .bind(id)
    .bind(detail)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// What `GET /v1/appointments` filters by; `None` does not filter.
#[derive(Debug, Clone, Default)]
pub struct AppointmentFilter<'a> {
    pub contact_id: Option<&'a str>,
    /// Starting at or after this.
    pub from: Option<DateTime<Utc>>,
    /// Starting before this.
    pub to: Option<DateTime<Utc>>,
    /// Only those after this `(starts_at, id)` (the cursor).
    pub after: Option<(DateTime<Utc>, &'a str)>,
}

/// A tenant's appointments, soonest first (canceled ones too, as `GET` shows them); up to
/// `limit + 1` so the caller knows whether another page follows.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    filter: &AppointmentFilter<'_>,
    limit: i64,
) -> Result<Vec<AppointmentRow>, sqlx::Error> {
    sqlx::query_as::<_, AppointmentRow>(
        "SELECT * FROM appointments
         WHERE tenant_id = $1
           AND ($2::text IS NULL OR contact_id = $2)
           AND ($3::timestamptz IS NULL OR starts_at >= $3)
           AND ($4::timestamptz IS NULL OR starts_at < $4)
           AND ($5::timestamptz IS NULL OR (starts_at, id) > ($5, $6))
         ORDER BY starts_at, id
         LIMIT $7",
    )
    .bind(tenant_id)
    .bind(filter.contact_id)
    .bind(filter.from)
    .bind(filter.to)
    .bind(filter.after.map(|(t, _)| t))
    .bind(filter.after.map(|(_, id)| id))
    .bind(limit + 1)
    .fetch_all(db)
    .await
}

/// The reminders of several appointments, each one's earliest due first.
pub async fn reminders_of(
    db: impl PgExecutor<'_>,
    appointment_ids: &[String],
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as::<_, MessageRow>(
        "SELECT * FROM messages WHERE appointment_id = ANY($1) ORDER BY appointment_id, send_at, id",
    )
    .bind(appointment_ids)
    .fetch_all(db)
    .await
}
