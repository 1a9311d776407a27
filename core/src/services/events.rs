//! Event webhooks: a tenant's endpoints, and the delivery of each event to each of them as a
//! Standard Webhooks call, on the `events` queue.
//!
//! Events are made by the database in the transaction that makes the change they report (see
//! `herald_emit` in the migrations), so none is lost and none reports a change that rolled
//! back. The scheduler's [`sweep`] pushes the jobs of deliveries that transactions which
//! finished since its last step inserted. The worker's [`deliver`] posts one event to one
//! endpoint, records the attempt, and retries on the contract's schedule; an endpoint with no
//! success for `HERALD_ENDPOINT_DISABLE_AFTER` is disabled, and says why.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::{
    audit,
    breaker::{Admit, Breakers, CallResult, CircuitKey},
    delivery::db_error,
};
use crate::{
    Config,
    batch::Batcher,
    domain::{
        FieldError, WebhookUrl,
        audit::{AuditAction, AuditOrigin},
        events::{EventJob, EventType, retry_wait},
        new_id,
    },
    providers::webhook::{Posted, WebhookSender},
    queue::{JobError, NewJob, Queue, QueueError, now_ms},
    store::{
        events::{
            self as store, Attempt, DeliveryRow, EndpointFields, EndpointRow, QueuedDelivery,
            Recorded,
        },
        outbox,
    },
};

/// The outbox watermark of the event sweep.
const SWEEP: &str = "events";
const SWEEP_BATCH: i64 = 1_000;
/// How long the old secret keeps signing after a rotation.
pub const SECRET_OVERLAP: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// An endpoint to create or the fields to change, as a client gave them.
#[derive(Debug, Clone, Default)]
pub struct EndpointInput {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
}

/// The longest description kept.
const MAX_DESCRIPTION: usize = 500;

impl EndpointInput {
    /// Checks every field given; the URL by the webhook channel's rules.
    pub fn validate(self, allow_private: bool) -> Result<EndpointFields, FieldError> {
        let url = match self.url {
            Some(raw) => Some(
                WebhookUrl::parse(&raw, allow_private)
                    .map_err(|e| FieldError::new("url", "invalid_url", e.0))?
                    .as_str()
                    .to_owned(),
            ),
            None => None,
        };
        let events = match self.events {
            Some(list) if list.is_empty() => {
                return Err(FieldError::new(
                    "events",
                    "invalid_value",
                    "`events` names at least one event type (leave it out for every type)",
                ));
            }
            Some(list) => {
                let mut types = Vec::with_capacity(list.len());
                for raw in list {
                    let t: EventType = raw.parse().map_err(|e: crate::domain::Invalid| {
                        FieldError::new("events", "invalid_value", e.0)
                    })?;
                    if !types.contains(&t) {
                        types.push(t);
                    }
                }
                Some(types.iter().map(|t| t.as_str().to_owned()).collect())
            }
            None => None,
        };
        if let Some(Some(d)) = &self.description
            && d.chars().count() > MAX_DESCRIPTION
        {
            return Err(FieldError::new(
                "description",
                "too_long",
                format!("`description` is at most {MAX_DESCRIPTION} characters"),
            ));
        }
        Ok(EndpointFields {
            url,
            events,
            description: self.description,
            enabled: self.enabled,
        })
    }
}

/// Creates an endpoint (every event type when none is named) with a fresh secret; `origin`,
/// when given, is recorded (`endpoint.created`) in the same transaction.
pub async fn create_endpoint(
    db: &PgPool,
    tenant_id: &str,
    mut fields: EndpointFields,
    origin: Option<&AuditOrigin>,
) -> Result<EndpointRow, sqlx::Error> {
    if fields.events.is_none() {
        fields.events = Some(EventType::ALL.map(|t| t.as_str().to_owned()).to_vec());
    }
    let secret = super::tenants::generate_webhook_secret();
    let mut tx = db.begin().await?;
    let row = store::insert_endpoint(&mut *tx, &new_id("ep"), tenant_id, &secret, &fields).await?;
    if let Some(origin) = origin {
        // Not the URL: it may carry a token of the receiver's.
        let detail = serde_json::json!({ "events": row.events });
        audit::record(
            &mut *tx,
            origin,
            AuditAction::EndpointCreated,
            &row.id,
            Some(tenant_id),
            detail,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(row)
}

/// Changes what `fields` sets, recorded (`endpoint.updated`, with the names of the fields) in
/// the same transaction. `None`: no such endpoint.
pub async fn update_endpoint(
    db: &PgPool,
    tenant_id: &str,
    id: &str,
    fields: &EndpointFields,
    origin: &AuditOrigin,
) -> Result<Option<EndpointRow>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let Some(row) = store::update_endpoint(&mut *tx, tenant_id, id, fields).await? else {
        return Ok(None);
    };
    let given = [
        ("url", fields.url.is_some()),
        ("events", fields.events.is_some()),
        ("description", fields.description.is_some()),
        ("enabled", fields.enabled.is_some()),
    ];
    let names: Vec<&str> = given
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
    audit::record(
        &mut *tx,
        origin,
        AuditAction::EndpointUpdated,
        id,
        Some(tenant_id),
        serde_json::json!({ "fields": names }),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(row))
}

/// Deletes an endpoint, recorded (`endpoint.deleted`) in the same transaction; false when
/// there is no such endpoint.
pub async fn delete_endpoint(
    db: &PgPool,
    tenant_id: &str,
    id: &str,
    origin: &AuditOrigin,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    if !store::delete_endpoint(&mut *tx, tenant_id, id).await? {
        return Ok(false);
    }
    audit::record(
        &mut *tx,
        origin,
        AuditAction::EndpointDeleted,
        id,
        Some(tenant_id),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Gives the endpoint a new secret; the old one signs too for [`SECRET_OVERLAP`]. Recorded as
/// `endpoint.updated` saying the secret was rotated (never the secret), in the same
/// transaction. `None`: no such endpoint.
pub async fn rotate_secret(
    db: &PgPool,
    tenant_id: &str,
    id: &str,
    origin: &AuditOrigin,
) -> Result<Option<String>, sqlx::Error> {
    let secret = super::tenants::generate_webhook_secret();
    let mut tx = db.begin().await?;
    let rotated = store::rotate_secret(
        &mut *tx,
        tenant_id,
        id,
        &secret,
        Utc::now() + SECRET_OVERLAP,
    )
    .await?;
    if !rotated {
        return Ok(None);
    }
    audit::record(
        &mut *tx,
        origin,
        AuditAction::EndpointUpdated,
        id,
        Some(tenant_id),
        serde_json::json!({ "fields": ["secret"], "secret_rotated": true }),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(secret))
}

/// Queues deliveries now, taking back any job of theirs that waits for a later retry.
pub async fn push_now(queue: &Queue, deliveries: &[QueuedDelivery]) -> Result<usize, QueueError> {
    let mut jobs = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        let job = EventJob {
            event_id: d.event_id.clone(),
            endpoint_id: d.endpoint_id.clone(),
            tenant_id: d.tenant_id.clone(),
        };
        queue.remove_waiting(&job.id()).await?;
        jobs.push(NewJob::new(job.id(), &job, now_ms())?);
    }
    let mut pushed = 0;
    for chunk in jobs.chunks(SWEEP_BATCH as usize) {
        pushed += queue.push_many(chunk).await?;
    }
    Ok(pushed)
}

/// Why an event could not be redelivered.
#[derive(Debug, thiserror::Error)]
pub enum RedeliverError {
    #[error("no such event")]
    NotFound,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Sends the tenant's event (any tenant's for `None`: ops) again to each of its endpoints
/// still enabled, from a first attempt. Returns how many deliveries were queued.
pub async fn redeliver(
    db: &PgPool,
    queue: &Queue,
    tenant_id: Option<&str>,
    event_id: &str,
) -> Result<usize, RedeliverError> {
    if !store::event_exists(db, tenant_id, event_id).await? {
        return Err(RedeliverError::NotFound);
    }
    let again = store::redeliver_event(db, tenant_id, event_id).await?;
    push_now(queue, &again).await?;
    Ok(again.len())
}

/// Records a redelivery (`event.redelivered`) right after it was queued (it pushes to Redis,
/// so it is not one transaction); an operator's names the event's tenant too.
pub async fn record_redelivery(
    db: &PgPool,
    origin: &AuditOrigin,
    event_id: &str,
    tenant_id: Option<&str>,
    redelivered: usize,
) {
    let tenant_id = match tenant_id {
        Some(t) => Some(t.to_owned()),
        None => store::event_tenant(db, event_id).await.unwrap_or(None),
    };
    audit::record_after(
        db,
        origin,
        AuditAction::EventRedelivered,
        event_id,
        tenant_id.as_deref(),
        serde_json::json!({ "redelivered": redelivered }),
    )
    .await;
}

/// Sends the endpoint every event since `since` that it has not had, from a first attempt.
pub async fn recover(
    db: &PgPool,
    queue: &Queue,
    endpoint_id: &str,
    since: DateTime<Utc>,
) -> Result<usize, RedeliverError> {
    let again = store::recover(db, endpoint_id, since).await?;
    push_now(queue, &again).await?;
    Ok(again.len())
}

/// Pushes the jobs of event deliveries that transactions finished since the last step
/// inserted; returns how many. Events need no grace: nothing else pushes them.
pub async fn sweep(db: &PgPool, queue: &Queue) -> anyhow::Result<usize> {
    let Some(range) = outbox::outbox_range(db, SWEEP, 0).await? else {
        return Ok(0);
    };
    let mut after = (i64::MIN, String::new(), String::new());
    let mut total = 0;
    loop {
        let due = store::pending_in(db, range, (after.0, &after.1, &after.2), SWEEP_BATCH).await?;
        let jobs = due
            .iter()
            .map(|d| {
                let job = EventJob {
                    event_id: d.event_id.clone(),
                    endpoint_id: d.endpoint_id.clone(),
                    tenant_id: d.tenant_id.clone(),
                };
                NewJob::new(job.id(), &job, now_ms())
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Redis down: the step is not recorded, and the next one sweeps it again.
        total += queue.ensure_many(&jobs).await?;
        match due.last() {
            Some(last) if due.len() as i64 == SWEEP_BATCH => {
                after = (
                    last.created_xid,
                    last.event_id.clone(),
                    last.endpoint_id.clone(),
                );
            }
            _ => break,
        }
    }
    outbox::outbox_swept(db, SWEEP, range).await?;
    Ok(total)
}

/// Marks complete the group sends with nothing left on its way, each with its event.
pub async fn complete_group_sends(db: &PgPool) -> Result<u64, sqlx::Error> {
    store::complete_group_sends(db, 100).await
}

/// The most deliveries one statement reads or records.
const BATCH: usize = 200;

/// What the `events` worker needs to deliver events.
pub struct EventSender {
    pub db: PgPool,
    webhooks: WebhookSender,
    pub breakers: Breakers,
    schedule: Vec<Duration>,
    /// Concurrent jobs share the statements that read their deliveries and record their
    /// attempts (see [`crate::batch`]): a commit per event would cost more than the event.
    lookups: Batcher<(String, String), Option<DeliveryRow>>,
    attempts: Batcher<Attempt, Recorded>,
}

impl EventSender {
    /// Its batchers run on `tasks`, so what they hold is written before the worker exits.
    pub fn from_config(config: &Config, db: PgPool, tasks: &TaskTracker) -> Arc<Self> {
        let lookups = {
            let db = db.clone();
            Batcher::spawn(tasks, BATCH, 2, move |keys: Arc<[(String, String)]>| {
                let db = db.clone();
                async move { store::deliveries(&db, &keys).await }
            })
        };
        let attempts = {
            let db = db.clone();
            let disable_after = config.endpoint_disable_after;
            Batcher::spawn(tasks, BATCH, 2, move |items: Arc<[Attempt]>| {
                let db = db.clone();
                async move { store::record_attempts(&db, &items, disable_after).await }
            })
        };
        Arc::new(Self {
            db,
            webhooks: WebhookSender::new(config.provider_timeout, config.webhook_allow_private),
            breakers: Breakers::new(config.circuit),
            schedule: config.event_retry_schedule.clone(),
            lookups,
            attempts,
        })
    }
}

/// The longest error text kept with an attempt.
const MAX_ATTEMPT_ERROR: usize = 1_000;

/// Delivers one event to one endpoint: the `events` queue's handler.
pub async fn deliver(s: &EventSender, job: &EventJob) -> Result<(), JobError> {
    let Some(d) = s
        .lookups
        .call((job.event_id.clone(), job.endpoint_id.clone()))
        .await
        .map_err(db_error)?
    else {
        // The endpoint was deleted (and its deliveries with it).
        return Ok(());
    };
    if d.status != "pending" {
        return Ok(());
    }
    if !d.enabled {
        store::fail_delivery(&s.db, &d.event_id, &d.endpoint_id)
            .await
            .map_err(db_error)?;
        return Ok(());
    }
    let kind: EventType = d
        .kind
        .parse()
        .map_err(|e: crate::domain::Invalid| JobError::permanent(e.0))?;
    let circuit = CircuitKey::Endpoint {
        tenant_id: d.tenant_id.clone(),
        endpoint_id: d.endpoint_id.clone(),
    };
    let probe = match s.breakers.admit(&circuit) {
        Admit::No { wait, .. } => {
            return Err(JobError::Defer {
                reason: format!("the circuit of {circuit} is open"),
                at_ms: now_ms() + wait.as_millis() as i64,
            });
        }
        Admit::Probe => true,
        Admit::Yes => false,
    };
    let body = match crate::views::event_body(&d.event_id, kind, d.created_at, d.data) {
        Ok(body) => body,
        Err(e) => {
            s.breakers.release_probe(&circuit);
            return Err(JobError::permanent(format!(
                "event {} cannot be rendered: {e}",
                d.event_id
            )));
        }
    };
    let mut secrets = vec![d.secret.as_str()];
    secrets.extend(d.previous_secret.as_deref());
    let started = Instant::now();
    let posted = s
        .webhooks
        .post_signed(&d.url, &d.event_id, &body, &secrets)
        .await;
    let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
    let (code, error, call) = match posted {
        Posted::Answered { status, .. } if status.is_success() => {
            (Some(status.as_u16()), None, CallResult::Up)
        }
        Posted::Answered { status, text, .. } => {
            let down = status.is_server_error() || status.as_u16() == 408;
            (
                Some(status.as_u16()),
                Some(format!("HTTP {}: {text}", status.as_u16())),
                if down {
                    CallResult::Failed
                } else {
                    CallResult::Up
                },
            )
        }
        Posted::Private(why) => (None, Some(why.to_owned()), CallResult::Up),
        Posted::NoAnswer(e) => (None, Some(describe(&e)), CallResult::Failed),
    };
    s.breakers
        .record(&circuit, &d.tenant_id, &d.event_id, call, probe);
    let error = error.map(|e| crate::domain::clean_text(&e, MAX_ATTEMPT_ERROR));
    let succeeded = error.is_none();
    let failed = u32::try_from(d.attempts).unwrap_or(0) + 1;
    let wait = (!succeeded)
        .then(|| retry_wait(&s.schedule, failed))
        .flatten();
    let recorded = s
        .attempts
        .call(Attempt {
            id: new_id("att"),
            event_id: d.event_id.clone(),
            endpoint_id: d.endpoint_id.clone(),
            kind: kind.as_str(),
            succeeded,
            status_code: code,
            error: error.clone(),
            duration_ms,
            last: !succeeded && wait.is_none(),
        })
        .await
        .map_err(db_error)?;
    let outcome = match (&error, wait) {
        (None, _) => "delivered",
        (Some(_), Some(_)) => "retrying",
        (Some(_), None) => "failed",
    };
    metrics::counter!("herald_event_deliveries_total", "outcome" => outcome).increment(1);
    if recorded.disabled {
        warn!(endpoint_id = %d.endpoint_id, tenant_id = %d.tenant_id, "event endpoint disabled: no successful delivery within the window");
    }
    match (error, wait) {
        (None, _) => Ok(()),
        (Some(error), Some(wait)) if recorded.counted && !recorded.disabled => {
            Err(JobError::RetryAt {
                message: error,
                at_ms: now_ms() + wait.as_millis() as i64,
            })
        }
        (Some(error), _) => {
            info!(event_id = %d.event_id, endpoint_id = %d.endpoint_id, error = %error, "event delivery failed for good");
            if recorded.disabled {
                store::fail_delivery(&s.db, &d.event_id, &d.endpoint_id)
                    .await
                    .map_err(db_error)?;
            }
            Ok(())
        }
    }
}

/// A transport error in words, without the URL (a tenant's URL is theirs; the attempt list
/// shows it already).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".to_owned()
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "the connection failed".to_owned()
    }
}
