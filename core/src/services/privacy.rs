//! Privacy: erasing a person on request, and removing what is older than a tenant keeps.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    domain::{audit::AuditOrigin, id_floor},
    services::audit,
    store::{erasure, retention},
};

/// What an erasure removed, as `DELETE /v1/contacts/{id}` answers it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Erased {
    /// Messages to or from the person whose addresses, texts and error texts were removed
    /// (the rows stay, for the tenant's figures).
    pub messages: u64,
    /// Of those, entries of the person's SMS conversation.
    pub conversation_entries: u64,
    pub appointments: u64,
    pub subscriptions: u64,
    /// Messages still waiting to be sent, now canceled.
    pub canceled: u64,
    /// Dead letters of those messages, removed (they could not be replayed to anyone).
    pub dead_letters: u64,
    /// Event webhook events about the person or those messages, removed with their
    /// deliveries.
    pub events: u64,
}

/// Erases the tenant's contact, all of it or nothing, with its audit entry; `None` when the
/// tenant has no such contact (or it was erased already).
pub async fn erase(
    db: &PgPool,
    tenant_id: &str,
    contact_id: &str,
    origin: &AuditOrigin,
) -> anyhow::Result<Option<Erased>> {
    let mut tx = db.begin().await.context("starting the erasure")?;
    let Some(contact) = erasure::lock_contact(&mut *tx, tenant_id, contact_id)
        .await
        .context("locking the contact")?
    else {
        return Ok(None);
    };
    erasure::keep_opt_out(&mut *tx, &contact)
        .await
        .context("keeping the opt-out")?;
    let redacted = erasure::redact_messages(&mut tx, &contact)
        .await
        .context("redacting the messages")?;
    let removed = erasure::remove_rest(&mut tx, &contact, &redacted.ids)
        .await
        .context("removing the rest")?;
    let erased = Erased {
        messages: redacted.ids.len() as u64,
        conversation_entries: redacted.conversation_entries,
        appointments: removed.appointments,
        subscriptions: removed.subscriptions,
        canceled: redacted.canceled,
        dead_letters: removed.dead_letters,
        events: removed.events,
    };
    let detail = serde_json::to_value(erased).context("the erasure's counts")?;
    audit::contact_erased(&mut *tx, origin, tenant_id, contact_id, detail)
        .await
        .context("recording the erasure")?;
    tx.commit().await.context("committing the erasure")?;
    Ok(Some(erased))
}

/// How hard a retention pass works: rows per statement, and how long it rests after each
/// statement, as a share of the time the statement took (3.0, the default: busy a quarter of
/// the time), so sending keeps the database it shares (docs/BENCHMARKS.md).
#[derive(Debug, Clone, Copy)]
pub struct RetentionPace {
    pub batch: i64,
    pub rest: f64,
}

impl Default for RetentionPace {
    fn default() -> Self {
        Self {
            batch: 1_000,
            rest: 3.0,
        }
    }
}

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retained {
    /// Messages whose body, subject and error texts were removed.
    pub messages_redacted: u64,
    /// Webhook events removed (with their deliveries), and endpoint attempts removed.
    pub events_removed: u64,
    pub attempts_removed: u64,
    /// Statements it took.
    pub batches: u64,
    /// False when another scheduler's pass was running, and this one did nothing.
    pub ran: bool,
    /// Tenants whose messages' retention failed in this pass (logged; the others went on).
    pub failed_tenants: u64,
}

/// The advisory lock that lets one retention pass run at a time, however many schedulers.
const RETENTION_LOCK: i64 = 0x6865_7261_6c64_7265; // "heraldre"

/// One pass of retention as of `now`: the texts of each tenant's messages older than its
/// `retention_days` are removed (see [`retention::redact_batch`]), tenants taking turns of
/// [`TURN`] statements, and webhook events and endpoint attempts older than that are
/// deleted; in bounded statements with rests between them. Once `stop` is cancelled it ends after the statement under way (the
/// next pass goes on from there).
pub async fn retention_pass(
    db: &PgPool,
    now: DateTime<Utc>,
    pace: RetentionPace,
    stop: &CancellationToken,
) -> anyhow::Result<Retained> {
    let mut conn = db.acquire().await.context("a connection for retention")?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(RETENTION_LOCK)
        .fetch_one(&mut *conn)
        .await
        .context("taking the retention lock")?;
    if !locked {
        return Ok(Retained::default());
    }
    let result = retain(&mut conn, now, pace, stop).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(RETENTION_LOCK)
        .execute(&mut *conn)
        .await;
    if unlocked.is_err() {
        // A connection that may still hold the lock must not go back to the pool.
        conn.detach();
    }
    result
}

/// Statements a tenant's messages get in a row before the next tenant's turn: a tenant with
/// millions of old messages does not hold up another's retention for the whole pass.
const TURN: usize = 10;

async fn retain(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    pace: RetentionPace,
    stop: &CancellationToken,
) -> anyhow::Result<Retained> {
    let mut done = Retained {
        ran: true,
        ..Retained::default()
    };
    let tenants = retention::tenants(&mut *conn)
        .await
        .context("reading the tenants")?;
    let shortest = tenants.iter().map(|(_, days)| *days).min();
    let mut turns: VecDeque<Turn> = tenants
        .into_iter()
        .map(|(tenant_id, keep_days)| Turn {
            tenant_id,
            keep_days,
            after: None,
        })
        .collect();
    while let Some(mut turn) = turns.pop_front() {
        if stop.is_cancelled() {
            return Ok(done);
        }
        match tenant_turn(conn, &mut turn, now, pace, stop, &mut done).await {
            Ok(true) => turns.push_back(turn),
            Ok(false) => {}
            // One tenant's failure stays its own: the others' texts are still removed.
            Err(e) => {
                done.failed_tenants += 1;
                warn!(tenant_id = %turn.tenant_id, error = format!("{e:#}"), "retention failed for a tenant");
            }
        }
    }
    if stop.is_cancelled() {
        return Ok(done);
    }
    let (events, attempts, batches) = remove_old_events(conn, shortest, now, pace, stop).await?;
    done.events_removed = events;
    done.attempts_removed = attempts;
    done.batches += batches;
    Ok(done)
}

/// A tenant's place in a pass: how long it keeps texts, and where its walk stands (`None`
/// before its first turn: its stored mark).
struct Turn {
    tenant_id: String,
    keep_days: i32,
    after: Option<String>,
}

/// Up to [`TURN`] statements of a tenant's message retention; true when it has more to do.
async fn tenant_turn(
    conn: &mut PgConnection,
    turn: &mut Turn,
    now: DateTime<Utc>,
    pace: RetentionPace,
    stop: &CancellationToken,
    done: &mut Retained,
) -> anyhow::Result<bool> {
    let tenant_id = turn.tenant_id.as_str();
    let mut after = match turn.after.take() {
        Some(after) => after,
        None => retention::mark(&mut *conn, tenant_id)
            .await
            .context("reading where retention stands")?,
    };
    for _ in 0..TURN {
        let started = Instant::now();
        let batch = retention::redact_batch(
            &mut *conn,
            tenant_id,
            &after,
            now,
            turn.keep_days,
            pace.batch,
        )
        .await
        .with_context(|| format!("redacting tenant {tenant_id}'s old messages"))?;
        done.batches += 1;
        done.messages_redacted += batch.redacted;
        if let Some(last) = batch.last_id {
            after = last;
        }
        let more = batch.walked as i64 >= pace.batch || batch.due as i64 >= pace.batch;
        if !more || rested(stop, started.elapsed(), pace).await {
            return Ok(false);
        }
    }
    turn.after = Some(after);
    Ok(true)
}

/// Webhook events and endpoint attempts older than their tenant keeps them (`shortest`: the
/// fewest days any tenant keeps them).
async fn remove_old_events(
    conn: &mut PgConnection,
    shortest: Option<i32>,
    now: DateTime<Utc>,
    pace: RetentionPace,
    stop: &CancellationToken,
) -> anyhow::Result<(u64, u64, u64)> {
    let (mut events, mut attempts, mut batches) = (0, 0, 0);
    let endpoints = retention::endpoints(&mut *conn)
        .await
        .context("reading the endpoints")?;
    // Events walk once over every tenant's, up to the shortest time any tenant keeps them.
    if let Some(shortest) = shortest {
        let before = event_id_floor(now - chrono::Duration::days(i64::from(shortest)));
        let mut after = String::new();
        loop {
            let started = Instant::now();
            let (last, walked, removed) =
                retention::remove_events(&mut *conn, &after, &before, now, pace.batch)
                    .await
                    .context("removing old events")?;
            batches += 1;
            events += removed;
            match last {
                Some(last) if walked as i64 >= pace.batch => after = last,
                _ => break,
            }
            if rested(stop, started.elapsed(), pace).await {
                break;
            }
        }
    }
    for (endpoint_id, keep_days) in endpoints {
        let before = id_floor(
            "att",
            (now - chrono::Duration::days(i64::from(keep_days))).timestamp_millis(),
        );
        loop {
            let started = Instant::now();
            let removed = retention::remove_attempts(&mut *conn, &endpoint_id, &before, pace.batch)
                .await
                .context("removing old endpoint attempts")?;
            batches += 1;
            attempts += removed;
            if (removed as i64) < pace.batch || rested(stop, started.elapsed(), pace).await {
                break;
            }
        }
    }
    Ok((events, attempts, batches))
}

/// Rests after a statement that took `took`; true when the pass is to stop.
async fn rested(stop: &CancellationToken, took: Duration, pace: RetentionPace) -> bool {
    tokio::select! {
        () = tokio::time::sleep(took.mul_f64(pace.rest)) => stop.is_cancelled(),
        () = stop.cancelled() => true,
    }
}

/// The smallest event id `herald_emit` (migration 0019) could make at `t`.
fn event_id_floor(t: DateTime<Utc>) -> String {
    format!("evt_{:012X}", t.timestamp_millis().max(0))
}
