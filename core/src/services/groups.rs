//! Sends to a whole contact group: one message per member, each with its own status,
//! retries, dead letter, opt-out and quiet hours in that member's zone, all created in one
//! transaction so a group of 100,000 is accepted in seconds, and honouring an idempotency key
//! for the whole send.

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tracing::{info, warn};

use super::messages::Idempotency;
use crate::{
    domain::{
        Channel, FieldError, MessageStatus, Priority, Segments, id_floor, jobs::DeliveryJob, new_id,
    },
    queue::{NewJob, Queue},
    store::{
        groups::{self, GroupMessageRow, SendTemplate},
        tenants::TenantRow,
    },
};

#[derive(Debug, Clone)]
pub struct GroupSend {
    pub channel: Channel,
    /// `bulk` unless the request says otherwise.
    pub priority: Priority,
    pub subject: Option<String>,
    pub body: String,
    pub send_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub respect_quiet_hours: bool,
    pub metadata: serde_json::Value,
}

#[derive(Debug)]
pub enum Sent {
    /// A new group send (202).
    New(GroupMessageRow),
    /// The send this idempotency key made before (200).
    Existing(GroupMessageRow),
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("no such group")]
    NotFound,
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyConflict,
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

async fn existing(
    db: &PgPool,
    tenant: &TenantRow,
    idem: &Idempotency,
) -> Result<Option<GroupMessageRow>, GroupError> {
    match groups::send_by_key(db, &tenant.id, &idem.key)
        .await
        .context("looking up the send's Idempotency-Key")?
    {
        Some(g) if g.request_hash.as_deref() == Some(idem.request_hash.as_slice()) => Ok(Some(g)),
        Some(_) => Err(GroupError::IdempotencyConflict),
        None => Ok(None),
    }
}

pub async fn send(
    db: &PgPool,
    queue: &Queue,
    tenant: &TenantRow,
    group_id: &str,
    new: &GroupSend,
    idempotency: Option<&Idempotency>,
) -> Result<Sent, GroupError> {
    if let Some(idem) = idempotency
        && let Some(g) = existing(db, tenant, idem).await?
    {
        return Ok(Sent::Existing(g));
    }
    if groups::get(db, &tenant.id, group_id)
        .await
        .context("reading the group")?
        .is_none()
    {
        return Err(GroupError::NotFound);
    }
    let now = Utc::now();
    let send = GroupMessageRow {
        id: new_id("gms"),
        tenant_id: tenant.id.clone(),
        group_id: group_id.to_owned(),
        channel: new.channel,
        recipients: 0,
        idempotency_key: idempotency.map(|i| i.key.clone()),
        request_hash: idempotency.map(|i| i.request_hash.clone()),
        created_at: now,
        completed_at: None,
    };
    let template = template(tenant, new, &send.id, now)?;

    let mut tx = db
        .begin()
        .await
        .context("starting the send's transaction")?;
    let Some(mut send) = groups::insert_send(&mut tx, &send)
        .await
        .context("inserting the group send")?
    else {
        // A concurrent send with the same key won: answer with it.
        tx.rollback()
            .await
            .context("rolling back a lost key race")?;
        let idem = idempotency.ok_or(GroupError::IdempotencyConflict)?;
        return existing(db, tenant, idem)
            .await?
            .map(Sent::Existing)
            .ok_or(GroupError::IdempotencyConflict);
    };
    // The time part of a Herald id made now; the statement adds the random part.
    let prefix = id_floor("msg", now.timestamp_millis());
    let prefix = &prefix[..prefix.len() - 16];
    let created = groups::insert_send_messages(&mut tx, &template, group_id, prefix)
        .await
        .context("inserting a message for every member")?;
    send.recipients = i32::try_from(created.len()).unwrap_or(i32::MAX);
    groups::set_recipients(&mut tx, &send.id, send.recipients)
        .await
        .context("counting the recipients")?;
    tx.commit().await.context("committing the group send")?;

    queue_members(queue, &template, &send.id, &created).await?;
    info!(group_message_id = %send.id, tenant_id = %tenant.id, recipients = send.recipients, "group send accepted");
    Ok(Sent::New(send))
}

/// What every member's message shares: queued when due, else scheduled, from the tenant's
/// number or address (refused when it has none).
fn template(
    tenant: &TenantRow,
    new: &GroupSend,
    send_id: &str,
    now: DateTime<Utc>,
) -> Result<SendTemplate, GroupError> {
    let from = match new.channel {
        Channel::Sms => tenant.sms_sender(),
        Channel::Email => tenant.email_from.clone(),
        Channel::Webhook => None,
    };
    if from.is_none() {
        return Err(GroupError::Invalid(FieldError::new(
            "channel",
            if new.channel == Channel::Email {
                "email_from_not_configured"
            } else {
                "sms_from_not_configured"
            },
            format!("this tenant has nothing to send {} from", new.channel),
        )));
    }
    let due_now = new.send_at <= now;
    Ok(SendTemplate {
        tenant_id: tenant.id.clone(),
        group_message_id: send_id.to_owned(),
        channel: new.channel,
        priority: new.priority,
        from_addr: from,
        subject: new.subject.clone(),
        body: new.body.clone(),
        status: if due_now {
            MessageStatus::Queued
        } else {
            MessageStatus::Scheduled
        },
        send_at: if due_now { now } else { new.send_at },
        expires_at: new.expires_at,
        respect_quiet_hours: new.respect_quiet_hours,
        metadata: new.metadata.clone(),
    })
}

/// Pushes one delivery job per member, due at the send's time. The messages are committed:
/// when Redis refuses, the outbox sweep pushes them.
async fn queue_members(
    queue: &Queue,
    template: &SendTemplate,
    send_id: &str,
    created: &[(String, String)],
) -> Result<(), GroupError> {
    let due_ms = template.send_at.timestamp_millis();
    let segments = i16::try_from(Segments::of(&template.body).count).ok();
    let jobs = created
        .iter()
        .map(|(id, to)| {
            let job = DeliveryJob::new(id, &template.tenant_id, template.channel, to).paced(
                template.priority,
                template.from_addr.as_deref(),
                segments,
            );
            NewJob::new(id.clone(), &job, due_ms)
        })
        .collect::<Result<Vec<_>, _>>()
        .context("encoding the members' jobs")?;
    if let Err(e) = queue.push_many(&jobs).await {
        warn!(group_message_id = %send_id, error = %e, "could not queue the group send; the outbox sweep will");
    }
    Ok(())
}
