//! Accepting, reading, listing and canceling messages.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use anyhow::Context;

use super::enqueue::Enqueuer;
use crate::{
    batch::Batcher,
    domain::{Channel, FieldError, MessageStatus, Priority},
    queue::Queue,
    store::{
        contacts, idempotency,
        messages::{self, CancelOutcome, EventRow, ListFilter, MessageRow, NewMessageRow},
        tenants::TenantRow,
    },
};

/// A message request whose every field has been checked.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub channel: Channel,
    pub priority: Priority,
    /// The recipient, already parsed for its channel; `None` when `contact_id` gives it.
    pub to: Option<String>,
    pub subject: Option<String>,
    /// The text (sms, email) or the serialized JSON document (webhook).
    pub body: String,
    pub send_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub respect_quiet_hours: bool,
    pub contact_id: Option<String>,
    pub metadata: serde_json::Value,
}

/// An `Idempotency-Key` and the hash of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: Vec<u8>,
}

impl Idempotency {
    /// Hashes the request's JSON in canonical form (object keys sorted), so two bodies that
    /// are equal as JSON hash alike however they were spaced or ordered.
    pub fn new(key: String, body: &serde_json::Value) -> Self {
        let canonical = serde_json::to_string(body).unwrap_or_default();
        Self {
            key,
            request_hash: Sha256::digest(canonical.as_bytes()).to_vec(),
        }
    }
}

#[derive(Debug)]
pub enum Created {
    /// A new message (202).
    New(MessageRow),
    /// The message this idempotency key created earlier, as it is now (200).
    Existing(MessageRow),
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyConflict,
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Accepts messages: validates what needs the database, inserts (concurrent requests share
/// one statement), and hands the jobs to the pusher.
pub struct Intake {
    db: PgPool,
    enqueuer: Enqueuer,
    inserts: Batcher<NewMessageRow, Option<MessageRow>>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").finish()
    }
}

impl Intake {
    /// Its batcher and pusher run on `tasks`: after the last handle is dropped, waiting on
    /// `tasks` waits until every accepted message is inserted and its job pushed.
    pub fn start(db: PgPool, queue: Queue, tasks: &TaskTracker) -> Self {
        let inserts = {
            let db = db.clone();
            Batcher::spawn(tasks, 256, 2, move |rows: Arc<[NewMessageRow]>| {
                let db = db.clone();
                async move { messages::insert_many(&db, &rows).await }
            })
        };
        Self {
            db,
            enqueuer: Enqueuer::start(queue, tasks),
            inserts,
        }
    }

    /// Accepts a message from the API; `request_id` follows it into its job's logs.
    pub async fn create(
        &self,
        tenant: &TenantRow,
        new: &NewMessage,
        idempotency: Option<&Idempotency>,
        request_id: Option<&str>,
    ) -> Result<Created, CreateError> {
        create(self, tenant, new, idempotency, request_id).await
    }

    /// Inserts a message Herald itself sends (a reply, a help text) and queues it; `None`
    /// when it was already there (an AI reply whose job ran twice).
    pub async fn send(&self, row: NewMessageRow) -> Result<Option<MessageRow>, Arc<sqlx::Error>> {
        let message = self.inserts.call(row).await?;
        if let Some(m) = &message {
            self.enqueuer.submit(m);
        }
        Ok(message)
    }

    /// Queues a committed message's delivery job (the outbox sweep covers a failed push).
    pub fn submit(&self, message: &MessageRow) {
        self.enqueuer.submit(message);
    }

    pub fn db(&self) -> &PgPool {
        &self.db
    }
}

async fn create(
    intake: &Intake,
    tenant: &TenantRow,
    new: &NewMessage,
    idempotency: Option<&Idempotency>,
    request_id: Option<&str>,
) -> Result<Created, CreateError> {
    let db = &intake.db;
    // Up to three rounds: a concurrent request with the same key can win the insert, and
    // then this one answers with its message.
    for _ in 0..3 {
        if let Some(idem) = idempotency
            && let Some(found) = existing_for_key(db, tenant, idem).await?
        {
            return Ok(Created::Existing(found));
        }
        let to = recipient(db, tenant, new).await?;
        let row = api_row(tenant, new, to, sender(tenant, new.channel)?);
        let message = match idempotency {
            None => {
                let insert = intake.inserts.call(row);
                let inserted = if crate::traces::enabled() {
                    let span = tracing::info_span!("postgres.commit", table = "messages");
                    tracing::Instrument::instrument(insert, span).await
                } else {
                    insert.await
                };
                inserted
                    .context("inserting the message")?
                    .context("the new message was already there")?
            }
            Some(idem) => match insert_with_key(db, tenant, &row, idem).await? {
                Some(message) => message,
                None => continue,
            },
        };
        intake.enqueuer.submit_for(&message, request_id);
        ::metrics::counter!("herald_messages_accepted_total", "channel" => message.channel.as_str())
            .increment(1);
        return Ok(Created::New(message));
    }
    Err(CreateError::IdempotencyConflict)
}

/// The tenant's sending number or address for the channel; refused when it has none.
fn sender(tenant: &TenantRow, channel: Channel) -> Result<Option<String>, CreateError> {
    let missing = |code: &'static str, what: &str| {
        FieldError::new(
            "channel",
            code,
            format!("this tenant has no {what}; set one before sending {channel}"),
        )
    };
    Ok(match channel {
        Channel::Sms => Some(
            tenant
                .sms_sender()
                .ok_or_else(|| missing("sms_from_not_configured", "sms_from number"))?,
        ),
        Channel::Email => Some(
            tenant
                .email_from
                .clone()
                .ok_or_else(|| missing("email_from_not_configured", "email_from address"))?,
        ),
        Channel::Webhook => None,
    })
}

/// The row of a message an API client asked for: queued when due, else scheduled.
fn api_row(
    tenant: &TenantRow,
    new: &NewMessage,
    to: String,
    from: Option<String>,
) -> NewMessageRow {
    let now = Utc::now();
    let due_now = new.send_at <= now;
    let (status, detail) = if due_now {
        (MessageStatus::Queued, "accepted".to_owned())
    } else {
        let due = new
            .send_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        (MessageStatus::Scheduled, format!("accepted; due at {due}"))
    };
    let mut row = NewMessageRow::outbound(
        &tenant.id,
        new.channel,
        &to,
        from.as_deref(),
        &new.body,
        "api",
    );
    row.subject = new.subject.clone();
    row.priority = new.priority;
    row.status = status;
    row.send_at = if due_now { now } else { new.send_at };
    row.expires_at = new.expires_at;
    row.respect_quiet_hours = new.respect_quiet_hours;
    row.contact_id = new.contact_id.clone();
    row.metadata = new.metadata.clone();
    row.event_detail = detail;
    row
}

/// Inserts the message and its Idempotency-Key in one transaction; `None` when a
/// concurrent request took the key first (nothing is kept).
async fn insert_with_key(
    db: &PgPool,
    tenant: &TenantRow,
    row: &NewMessageRow,
    idem: &Idempotency,
) -> Result<Option<MessageRow>, CreateError> {
    let mut tx = db
        .begin()
        .await
        .context("starting the message's transaction")?;
    let message = messages::insert(&mut *tx, row)
        .await
        .context("inserting the message")?
        .context("the new message was already there")?;
    let stored = idempotency::insert_idempotency_key(
        &mut *tx,
        &tenant.id,
        &idem.key,
        &idem.request_hash,
        &row.id,
    )
    .await
    .context("storing the Idempotency-Key")?;
    if !stored {
        tx.rollback()
            .await
            .context("rolling back a lost key race")?;
        return Ok(None);
    }
    tx.commit().await.context("committing the message")?;
    Ok(Some(message))
}

async fn existing_for_key(
    db: &PgPool,
    tenant: &TenantRow,
    idem: &Idempotency,
) -> Result<Option<MessageRow>, CreateError> {
    let Some((hash, message_id)) = idempotency::find_idempotency_key(db, &tenant.id, &idem.key)
        .await
        .context("looking up the Idempotency-Key")?
    else {
        return Ok(None);
    };
    if hash != idem.request_hash {
        return Err(CreateError::IdempotencyConflict);
    }
    Ok(messages::get(db, &tenant.id, &message_id)
        .await
        .context("reading the message the Idempotency-Key made")?)
}

/// The recipient: `to` when given, else the contact's phone (sms) or email (email).
async fn recipient(
    db: &PgPool,
    tenant: &TenantRow,
    new: &NewMessage,
) -> Result<String, CreateError> {
    let contact = match &new.contact_id {
        Some(id) => Some(
            contacts::get(db, &tenant.id, id)
                .await
                .context("reading the message's contact")?
                .ok_or_else(|| {
                    FieldError::new(
                        "contact_id",
                        "unknown_contact",
                        format!("there is no contact {id}"),
                    )
                })?,
        ),
        None => None,
    };
    if let Some(to) = &new.to {
        return Ok(to.clone());
    }
    let from_contact = contact.as_ref().and_then(|c| match new.channel {
        Channel::Sms => c.phone.clone(),
        Channel::Email => c.email.clone(),
        Channel::Webhook => None,
    });
    from_contact.ok_or_else(|| {
        CreateError::Invalid(FieldError::new(
            "to",
            "missing_field",
            match (new.channel, contact.is_some()) {
                (Channel::Webhook, _) => "`to` is required for webhooks".to_owned(),
                (_, true) => format!(
                    "the contact has no {} to send to; give `to`",
                    if new.channel == Channel::Sms {
                        "phone"
                    } else {
                        "email"
                    }
                ),
                (_, false) => "`to` is required unless `contact_id` gives the recipient".to_owned(),
            },
        ))
    })
}

/// A message and its events, oldest first.
pub async fn get(
    db: &PgPool,
    tenant_id: &str,
    id: &str,
) -> Result<Option<(MessageRow, Vec<EventRow>)>, sqlx::Error> {
    with_events(db, Some(tenant_id), id).await
}

/// Any tenant's message and its events, oldest first (ops).
pub async fn get_any(
    db: &PgPool,
    id: &str,
) -> Result<Option<(MessageRow, Vec<EventRow>)>, sqlx::Error> {
    with_events(db, None, id).await
}

/// A message (of `tenant_id`, when given) with its events, read in one snapshot so the events
/// never run ahead of the status.
async fn with_events(
    db: &PgPool,
    tenant_id: Option<&str>,
    id: &str,
) -> Result<Option<(MessageRow, Vec<EventRow>)>, sqlx::Error> {
    let mut tx = crate::store::snapshot(db).await?;
    let message = match tenant_id {
        Some(tenant_id) => messages::get(&mut *tx, tenant_id, id).await?,
        None => messages::get_any(&mut *tx, id).await?,
    };
    let Some(message) = message else {
        return Ok(None);
    };
    let events = messages::events(&mut *tx, id).await?;
    tx.commit().await?;
    Ok(Some((message, events)))
}

/// A page of a tenant's messages, newest first, and the cursor of the next page.
pub async fn list(
    db: &PgPool,
    tenant_id: &str,
    filter: &ListFilter<'_>,
    limit: i64,
) -> Result<(Vec<MessageRow>, Option<String>), sqlx::Error> {
    let mut rows = messages::list(db, tenant_id, filter, limit).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|m| m.id.clone())
    } else {
        None
    };
    Ok((rows, next))
}

/// Cancels a message that has not started sending, and removes its waiting job.
pub async fn cancel(
    db: &PgPool,
    queue: &Queue,
    tenant_id: &str,
    id: &str,
) -> Result<CancelOutcome, sqlx::Error> {
    let mut conn = db.acquire().await?;
    let outcome = messages::cancel(&mut conn, tenant_id, id).await?;
    if let CancelOutcome::Canceled(m) = &outcome {
        // Best effort: a job left behind finds the message canceled and does nothing.
        if let Err(e) = queue.remove_waiting(&m.id).await {
            tracing::debug!(message_id = %m.id, error = %e, "could not remove a canceled message's job");
        }
    }
    Ok(outcome)
}
