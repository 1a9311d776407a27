//! Appointments and their reminders: each `before` offset is a message due that long before
//! the appointment, rendered in the contact's time zone, expiring when the appointment
//! starts. Moving the appointment moves its unsent reminders (same ids); deleting it cancels
//! them.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;

use anyhow::Context;

use crate::{
    domain::{Channel, FieldError, MessageStatus, jobs::DeliveryJob, new_id},
    queue::Queue,
    schedule::render,
    store::{
        appointments::{self, AppointmentRow},
        contacts::{self, ContactRow},
        messages::{self, MessageRow, NewMessageRow},
        tenants::TenantRow,
    },
};

#[derive(Debug, Clone)]
pub struct NewAppointment {
    pub contact_id: String,
    pub starts_at: DateTime<Utc>,
    /// The offsets as given (`24h`) with their durations.
    pub reminders: Vec<(String, Duration)>,
    pub channel: Channel,
    pub body_template: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AppointmentError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("the appointment was deleted")]
    Deleted,
    /// Postgres or Redis failed (nothing changed), or a bug.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

fn zone(contact: &ContactRow, tenant: &TenantRow) -> Tz {
    contact
        .timezone
        .as_deref()
        .unwrap_or(&tenant.timezone)
        .parse()
        .unwrap_or(chrono_tz::UTC)
}

/// The recipient and sender for a channel, or what is missing.
fn addresses(
    channel: Channel,
    contact: &ContactRow,
    tenant: &TenantRow,
) -> Result<(String, Option<String>), AppointmentError> {
    let invalid = |field, code, message: &str| FieldError::new(field, code, message);
    match channel {
        Channel::Sms => Ok((
            contact.phone.clone().ok_or_else(|| {
                invalid(
                    "contact_id",
                    "invalid_value",
                    "the contact has no phone number",
                )
            })?,
            Some(tenant.sms_sender().ok_or_else(|| {
                invalid(
                    "channel",
                    "sms_from_not_configured",
                    "this tenant has no sms_from number",
                )
            })?),
        )),
        Channel::Email => Ok((
            contact.email.clone().ok_or_else(|| {
                invalid(
                    "contact_id",
                    "invalid_value",
                    "the contact has no email address",
                )
            })?,
            Some(tenant.email_from.clone().ok_or_else(|| {
                invalid(
                    "channel",
                    "email_from_not_configured",
                    "this tenant has no email_from address",
                )
            })?),
        )),
        Channel::Webhook => Err(AppointmentError::Invalid(invalid(
            "channel",
            "invalid_value",
            "reminders go by sms or email",
        ))),
    }
}

/// The reminder message for one offset, or `None` when its time has passed.
fn reminder(
    a: &AppointmentRow,
    contact: &ContactRow,
    tenant: &TenantRow,
    before: &str,
    offset: Duration,
    to: &str,
    from: Option<&str>,
) -> Option<NewMessageRow> {
    let send_at = a.starts_at - chrono::Duration::from_std(offset).ok()?;
    if send_at <= Utc::now() {
        return None;
    }
    let body = render(
        &a.body_template,
        contact.name.as_deref(),
        a.starts_at,
        zone(contact, tenant),
    );
    let mut row = NewMessageRow::outbound(&tenant.id, a.channel, to, from, &body, "api");
    if a.channel == Channel::Email {
        row.subject = Some(format!("Reminder: {}", crate::domain::truncate(&body, 60)));
    }
    row.status = MessageStatus::Scheduled;
    row.send_at = send_at;
    row.expires_at = a.starts_at;
    row.contact_id = Some(contact.id.clone());
    row.appointment_id = Some(a.id.clone());
    row.reminder_before = Some(before.to_owned());
    row.event_detail = format!("reminder {before} before the appointment");
    Some(row)
}

async fn contact_of(
    db: &PgPool,
    tenant: &TenantRow,
    id: &str,
) -> Result<ContactRow, AppointmentError> {
    Ok(contacts::get(db, &tenant.id, id)
        .await
        .context("reading the appointment's contact")?
        .ok_or_else(|| {
            FieldError::new(
                "contact_id",
                "unknown_contact",
                format!("there is no contact {id}"),
            )
        })?)
}

fn job(m: &MessageRow) -> DeliveryJob {
    DeliveryJob::for_message(m)
}

/// Creates an appointment and the reminders whose time is still ahead.
pub async fn create(
    db: &PgPool,
    queue: &Queue,
    tenant: &TenantRow,
    new: &NewAppointment,
) -> Result<(AppointmentRow, Vec<MessageRow>), AppointmentError> {
    let contact = contact_of(db, tenant, &new.contact_id).await?;
    let (to, from) = addresses(new.channel, &contact, tenant)?;
    let a = AppointmentRow {
        id: new_id("apt"),
        tenant_id: tenant.id.clone(),
        contact_id: contact.id.clone(),
        starts_at: new.starts_at,
        channel: new.channel,
        body_template: new.body_template.clone(),
        reminders: new.reminders.iter().map(|(raw, _)| raw.clone()).collect(),
        created_at: Utc::now(),
        canceled_at: None,
    };
    let rows: Vec<NewMessageRow> = new
        .reminders
        .iter()
        .filter_map(|(before, offset)| {
            reminder(&a, &contact, tenant, before, *offset, &to, from.as_deref())
        })
        .collect();
    let mut tx = db
        .begin()
        .await
        .context("starting the appointment's transaction")?;
    let a = appointments::insert(&mut *tx, &a)
        .await
        .context("inserting the appointment")?;
    let created: Vec<MessageRow> = messages::insert_many(&mut *tx, &rows)
        .await
        .context("inserting its reminders")?
        .into_iter()
        .flatten()
        .collect();
    // Pushed inside the transaction: either the reminders exist with their jobs, or nothing.
    queue_reminders(queue, &created).await?;
    tx.commit().await.context("committing the appointment")?;
    Ok((a, created))
}

pub async fn get(
    db: &PgPool,
    tenant: &TenantRow,
    id: &str,
) -> Result<Option<(AppointmentRow, Vec<MessageRow>)>, sqlx::Error> {
    let Some(a) = appointments::get(db, &tenant.id, id).await? else {
        return Ok(None);
    };
    let reminders = appointments::reminders(db, id).await?;
    Ok(Some((a, reminders)))
}

/// Appointments with their reminders (each one's earliest due first), read in one statement
/// for all of them; in the order given.
pub async fn with_reminders(
    db: &PgPool,
    rows: Vec<AppointmentRow>,
) -> Result<Vec<(AppointmentRow, Vec<MessageRow>)>, sqlx::Error> {
    let ids: Vec<String> = rows.iter().map(|a| a.id.clone()).collect();
    let mut reminders: HashMap<String, Vec<MessageRow>> = HashMap::new();
    for m in appointments::reminders_of(db, &ids).await? {
        if let Some(a) = m.appointment_id.clone() {
            reminders.entry(a).or_default().push(m);
        }
    }
    Ok(rows
        .into_iter()
        .map(|a| {
            let own = reminders.remove(&a.id).unwrap_or_default();
            (a, own)
        })
        .collect())
}

/// Moves an appointment: every unsent reminder keeps its id and gets its new time and text;
/// one whose new time has passed is canceled; an offset that had no reminder (its time had
/// passed) gets one if its time is now ahead. `None` when there is no such appointment.
pub async fn reschedule(
    db: &PgPool,
    queue: &Queue,
    tenant: &TenantRow,
    id: &str,
    starts_at: DateTime<Utc>,
) -> Result<Option<(AppointmentRow, Vec<MessageRow>)>, AppointmentError> {
    let mut tx = db
        .begin()
        .await
        .context("starting the move's transaction")?;
    let Some(mut a) = appointments::get_for_update(&mut tx, &tenant.id, id)
        .await
        .context("locking the appointment")?
    else {
        return Ok(None);
    };
    if a.canceled_at.is_some() {
        return Err(AppointmentError::Deleted);
    }
    let contact = contacts::get(&mut *tx, &tenant.id, &a.contact_id)
        .await
        .context("reading the appointment's contact")?
        .ok_or(AppointmentError::Deleted)?;
    let (to, from) = addresses(a.channel, &contact, tenant)?;
    appointments::set_starts_at(&mut *tx, id, starts_at)
        .await
        .context("moving the appointment")?;
    let moved_from = a.starts_at;
    a.starts_at = starts_at;
    let detail = format!(
        "the appointment moved from {} to {}",
        moved_from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        starts_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let Moved { to_push, to_remove } = move_reminders(
        &mut tx,
        &a,
        &contact,
        tenant,
        (&to, from.as_deref()),
        &detail,
    )
    .await?;
    // The old jobs go and the new ones come inside the transaction: a moved reminder is never
    // left without a job, and a job firing at the old time finds it due later and waits.
    for id in &to_remove {
        queue
            .remove_waiting(id)
            .await
            .context("removing a moved reminder's old job")?;
    }
    queue_reminders(queue, &to_push).await?;
    tx.commit().await.context("committing the move")?;
    let reminders = appointments::reminders(db, id)
        .await
        .context("reading the moved reminders")?;
    Ok(Some((a, reminders)))
}

/// Queues each reminder's job for its time.
async fn queue_reminders(queue: &Queue, reminders: &[MessageRow]) -> anyhow::Result<()> {
    let jobs = reminders
        .iter()
        .map(|m| crate::queue::NewJob::new(m.id.clone(), &job(m), m.send_at.timestamp_millis()))
        .collect::<Result<Vec<_>, _>>()
        .context("encoding the reminders' jobs")?;
    queue
        .push_many(&jobs)
        .await
        .context("queueing the reminders")?;
    Ok(())
}

/// What moving an appointment did to its reminders: the ones to queue at their new time, and
/// the ones whose old job must go.
struct Moved {
    to_push: Vec<MessageRow>,
    to_remove: Vec<String>,
}

/// Moves each reminder of the appointment `a` (already at its new time) inside `tx`: a reminder
/// still ahead moves, one whose time has now passed is canceled, one whose time is ahead again
/// is inserted afresh. `detail` is the event each moved or canceled reminder gets.
async fn move_reminders(
    tx: &mut sqlx::PgConnection,
    a: &AppointmentRow,
    contact: &ContactRow,
    tenant: &TenantRow,
    (to, from): (&str, Option<&str>),
    detail: &str,
) -> anyhow::Result<Moved> {
    let existing = appointments::reminders(&mut *tx, &a.id)
        .await
        .context("reading its reminders")?;
    let mut to_push = Vec::new();
    let mut to_remove = Vec::new();
    let mut new_rows = Vec::new();
    for before in &a.reminders {
        let Ok(offset) = crate::schedule::parse_offset(before) else {
            continue;
        };
        let current = existing
            .iter()
            .find(|m| m.reminder_before.as_deref() == Some(before.as_str()));
        let fresh = reminder(a, contact, tenant, before, offset, to, from);
        match (current, fresh) {
            (Some(m), Some(row)) => {
                if let Some(moved) = appointments::move_reminder(
                    &mut *tx,
                    &m.id,
                    row.send_at,
                    row.expires_at,
                    &row.body,
                    detail,
                )
                .await
                .context("moving a reminder")?
                {
                    to_remove.push(moved.id.clone());
                    to_push.push(moved);
                }
            }
            (Some(m), None) => {
                let why = format!("{detail}; this reminder's time has passed");
                if appointments::cancel_reminder(&mut *tx, &m.id, &why)
                    .await
                    .context("canceling a reminder whose time has passed")?
                {
                    to_remove.push(m.id.clone());
                }
            }
            (None, Some(row)) => new_rows.push(row),
            (None, None) => {}
        }
    }
    to_push.extend(
        messages::insert_many(&mut *tx, &new_rows)
            .await
            .context("inserting reminders whose time is ahead again")?
            .into_iter()
            .flatten(),
    );
    Ok(Moved { to_push, to_remove })
}

/// Deletes an appointment: its unsent reminders are canceled. Returns false when there is no
/// such appointment.
pub async fn cancel(
    db: &PgPool,
    queue: &Queue,
    tenant: &TenantRow,
    id: &str,
) -> Result<bool, AppointmentError> {
    let mut tx = db
        .begin()
        .await
        .context("starting the delete's transaction")?;
    let Some(a) = appointments::get_for_update(&mut tx, &tenant.id, id)
        .await
        .context("locking the appointment")?
    else {
        return Ok(false);
    };
    appointments::mark_canceled(&mut *tx, id)
        .await
        .context("marking the appointment deleted")?;
    let mut canceled = Vec::new();
    let reminders = appointments::reminders(&mut *tx, &a.id)
        .await
        .context("reading its reminders")?;
    for m in reminders {
        if appointments::cancel_reminder(&mut *tx, &m.id, "the appointment was deleted")
            .await
            .context("canceling a reminder")?
        {
            canceled.push(m.id);
        }
    }
    tx.commit().await.context("committing the delete")?;
    for id in canceled {
        // Best effort: a job left behind finds its reminder canceled and does nothing.
        let _ = queue.remove_waiting(&id).await;
    }
    Ok(true)
}
