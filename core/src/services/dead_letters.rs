//! Dead letters: listing, reading, counting and deleting them, and replaying them: the
//! message starts a fresh run (attempts from zero) and goes back on the queue. A message that
//! was meanwhile sent, canceled or replayed is not sent again.

use anyhow::Context;
use sqlx::PgPool;

use serde_json::{Value, json};

use super::audit;
use crate::{
    domain::{
        MessageStatus,
        audit::{AuditAction, AuditOrigin},
        jobs::DeliveryJob,
    },
    queue::Queue,
    store::{
        dead_letters::{self, DeadLetterFilter, DeadLetterRow},
        lifecycle,
        messages::{self, MessageRow},
    },
};

#[derive(Debug)]
pub enum Replay {
    /// Back on the queue.
    Replayed(Box<MessageRow>),
    /// Its message is no longer `failed` or `dead` (sent, canceled, already replayed), or
    /// its `expires_at` has passed.
    NotReplayable {
        status: MessageStatus,
        expired: bool,
        /// Its text was removed (retention or erasure): there is nothing to send.
        redacted: bool,
    },
    NotFound,
}

/// A replay could not be done: Postgres or Redis failed (nothing was replayed), or a bug.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Replays one dead letter, as `tenant_id` when a tenant asks. The job is pushed before the
/// transaction commits (a worker that takes it at once waits on the message's row lock and
/// then sees it queued), so a replay happens whole or not at all. `origin`, when given, is
/// recorded (`dead_letter.replayed`) in the same transaction; a bulk replay records itself
/// once instead.
pub async fn replay(
    db: &PgPool,
    queue: &Queue,
    id: &str,
    tenant_id: Option<&str>,
    origin: Option<&AuditOrigin>,
) -> Result<Replay, ReplayError> {
    let mut tx = db
        .begin()
        .await
        .context("starting the replay's transaction")?;
    let Some(letter) = dead_letters::get_for_update(&mut tx, id, tenant_id)
        .await
        .context("locking the dead letter")?
    else {
        return Ok(Replay::NotFound);
    };
    let Some(message_id) = &letter.message_id else {
        return Ok(Replay::NotFound);
    };
    let detail = format!("replayed from dead letter {id}");
    match lifecycle::restart(&mut *tx, message_id, &detail)
        .await
        .context("restarting the message")?
    {
        Some(message) => {
            dead_letters::mark_replayed(&mut *tx, id)
                .await
                .context("marking the dead letter replayed")?;
            if let Some(origin) = origin {
                let detail = json!({ "message_id": message.id, "queue": letter.queue });
                audit::record(
                    &mut *tx,
                    origin,
                    AuditAction::DeadLetterReplayed,
                    id,
                    Some(&letter.tenant_id),
                    detail,
                )
                .await
                .context("recording the replay")?;
            }
            let job = DeliveryJob::for_message(&message);
            queue
                .push(&message.id, &job, message.send_at.timestamp_millis())
                .await
                .context("queueing the replayed message")?;
            tx.commit().await.context("committing the replay")?;
            Ok(Replay::Replayed(Box::new(message)))
        }
        None => {
            let current = messages::get_any(&mut *tx, message_id)
                .await
                .context("reading the message that was not replayed")?;
            Ok(match current {
                None => Replay::NotFound,
                Some(m) => Replay::NotReplayable {
                    expired: m.expires_at <= chrono::Utc::now(),
                    redacted: m.redacted_at.is_some(),
                    status: m.status,
                },
            })
        }
    }
}

/// Replays every dead letter the filter selects that was not replayed yet; returns how
/// many went back on the queue. Each letter is its own transaction, so the bulk replay is
/// recorded once (`dead_letters.replayed`, with the filter and the count) right after.
pub async fn replay_matching(
    db: &PgPool,
    queue: &Queue,
    filter: &DeadLetterFilter,
    origin: &AuditOrigin,
) -> Result<u64, ReplayError> {
    let replayed = replay_all(db, queue, filter).await?;
    let detail = json!({ "filter": filter_detail(filter), "replayed": replayed });
    audit::record_after(
        db,
        origin,
        AuditAction::DeadLettersReplayed,
        "dead_letters",
        filter.tenant_id.as_deref(),
        detail,
    )
    .await;
    Ok(replayed)
}

/// The filter of a bulk replay as the audit log shows it: the fields given, and `all` when
/// none narrowed it.
fn filter_detail(filter: &DeadLetterFilter) -> Value {
    let mut d = serde_json::Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            d.insert(k.to_owned(), v);
        }
    };
    put("ids", filter.ids.as_ref().map(|i| json!(i)));
    put("queue", filter.queue.as_ref().map(|q| json!(q)));
    put("tenant_id", filter.tenant_id.as_ref().map(|t| json!(t)));
    put("reason", filter.reason.as_ref().map(|r| json!(r)));
    put("since", filter.since.map(|t| json!(t)));
    put("until", filter.until.map(|t| json!(t)));
    if d.is_empty() {
        d.insert("all".to_owned(), Value::Bool(true));
    }
    Value::Object(d)
}

async fn replay_all(
    db: &PgPool,
    queue: &Queue,
    filter: &DeadLetterFilter,
) -> Result<u64, ReplayError> {
    let mut filter = filter.clone();
    filter.unreplayed = true;
    let mut replayed = 0;
    let mut before: Option<String> = None;
    loop {
        let page = dead_letters::list(db, &filter, before.as_deref(), 500)
            .await
            .context("listing the dead letters to replay")?;
        if page.is_empty() {
            return Ok(replayed);
        }
        for letter in page.iter().take(500) {
            let outcome = replay(db, queue, &letter.id, filter.tenant_id.as_deref(), None).await?;
            if let Replay::Replayed(_) = outcome {
                replayed += 1;
            }
        }
        if page.len() <= 500 {
            return Ok(replayed);
        }
        before = page.get(499).map(|l| l.id.clone());
    }
}

/// A page of dead letters, newest first, and the cursor of the next page.
pub async fn list(
    db: &PgPool,
    filter: &DeadLetterFilter,
    cursor: Option<&str>,
    limit: i64,
) -> Result<(Vec<DeadLetterRow>, Option<String>), sqlx::Error> {
    let mut rows = dead_letters::list(db, filter, cursor, limit).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next = more.then(|| rows.last().map(|r| r.id.clone())).flatten();
    Ok((rows, next))
}

/// How many dead letters the filter selects.
pub async fn count(db: &PgPool, filter: &DeadLetterFilter) -> Result<i64, sqlx::Error> {
    dead_letters::count(db, filter).await
}

/// One dead letter, if `scope` (a tenant, when given) owns it.
pub async fn get(
    db: &PgPool,
    id: &str,
    scope: Option<&str>,
) -> Result<Option<DeadLetterRow>, sqlx::Error> {
    dead_letters::get(db, id, scope).await
}

/// Deletes a dead letter `scope` (a tenant, when given) owns, recorded
/// (`dead_letter.deleted`) in the same transaction; whether there was one.
pub async fn delete(
    db: &PgPool,
    id: &str,
    scope: Option<&str>,
    origin: &AuditOrigin,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let Some(tenant_id) = dead_letters::delete(&mut *tx, id, scope).await? else {
        return Ok(false);
    };
    audit::record(
        &mut *tx,
        origin,
        AuditAction::DeadLetterDeleted,
        id,
        Some(&tenant_id),
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}
