//! Replaying dead letters: the message starts a fresh run (attempts from zero) and goes back
//! on the queue. A message that was meanwhile sent, canceled or replayed is not sent again.

use sqlx::PgPool;

use super::enqueue::Enqueuer;
use crate::store::{
    dead_letters::{self, DeadLetterFilter},
    messages::{self, MessageRow},
};

#[derive(Debug)]
pub enum Replay {
    /// Back on the queue.
    Replayed(Box<MessageRow>),
    /// Its message is no longer `failed` or `dead` (sent, canceled, already replayed), or
    /// its `expires_at` has passed.
    NotReplayable {
        status: String,
        expired: bool,
    },
    NotFound,
}

/// Replays one dead letter, as `tenant_id` when a tenant asks.
pub async fn replay(
    db: &PgPool,
    enqueuer: &Enqueuer,
    id: &str,
    tenant_id: Option<&str>,
) -> Result<Replay, sqlx::Error> {
    let mut tx = db.begin().await?;
    let Some(letter) = dead_letters::get_for_update(&mut tx, id, tenant_id).await? else {
        return Ok(Replay::NotFound);
    };
    let Some(message_id) = &letter.message_id else {
        return Ok(Replay::NotFound);
    };
    let detail = format!("replayed from dead letter {id}");
    match messages::restart(&mut *tx, message_id, &detail).await? {
        Some(message) => {
            dead_letters::mark_replayed(&mut *tx, id).await?;
            tx.commit().await?;
            enqueuer.submit(&message);
            Ok(Replay::Replayed(Box::new(message)))
        }
        None => {
            let current = messages::get_any(&mut *tx, message_id).await?;
            Ok(match current {
                None => Replay::NotFound,
                Some(m) => Replay::NotReplayable {
                    expired: m.expires_at <= chrono::Utc::now(),
                    status: m.status,
                },
            })
        }
    }
}

/// Replays every dead letter the filter selects that was not replayed yet; returns how
/// many went back on the queue.
pub async fn replay_matching(
    db: &PgPool,
    enqueuer: &Enqueuer,
    filter: &DeadLetterFilter,
) -> Result<u64, sqlx::Error> {
    let mut filter = filter.clone();
    filter.unreplayed = true;
    let mut replayed = 0;
    let mut before: Option<String> = None;
    loop {
        let page = dead_letters::list(db, &filter, before.as_deref(), 500).await?;
        if page.is_empty() {
            return Ok(replayed);
        }
        for letter in page.iter().take(500) {
            if let Replay::Replayed(_) =
                replay(db, enqueuer, &letter.id, filter.tenant_id.as_deref()).await?
            {
                replayed += 1;
            }
        }
        if page.len() <= 500 {
            return Ok(replayed);
        }
        before = page.get(499).map(|l| l.id.clone());
    }
}
