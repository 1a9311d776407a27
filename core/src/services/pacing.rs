//! Each SMS leaves at the pace of the number it is sent from, as carriers take it: a US long
//! code 1 segment per second, toll-free 3, a short code 100, a Messaging Service as configured
//! (10 unless the tenant says). The slots themselves live in the queue (see
//! [`crate::queue::Queue::take_slots`]), shared by every worker; this module knows the rates,
//! and lets a worker take a fast sender's slots a few at a time.
//!
//! A sender of 20 segments a second or more is asked for a twentieth of its rate at once (at
//! most 200 segments), which its burst allows; the worker spends them on its next SMS from that
//! sender within 100 ms and lets the rest lapse. One caller per sender goes to Redis at a time
//! and the others wait for its slots, so concurrent jobs do not each take a handful. A slower
//! sender is asked one SMS at a time.

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use sqlx::PgPool;

use crate::{
    providers::twilio::is_messaging_service,
    queue::{Pace, Queue, QueueError},
    store::tenants,
};

/// How long slots a worker took stay spendable.
const HOLD: Duration = Duration::from_millis(100);
/// The most segments a worker takes at once.
const MOST_AT_ONCE: u32 = 200;
/// Past this many senders remembered, expired holdings are dropped.
const MAX_SENDERS: usize = 10_000;

/// Slots a worker took and has not spent yet.
#[derive(Debug, Default)]
struct Held {
    segments: u32,
    until: Option<Instant>,
}

/// One sender's slots in this worker: spent under a plain lock; one caller at a time goes to
/// Redis for more (`refill`), the others wait for what it brings back.
#[derive(Debug, Default)]
struct SenderSlots {
    held: std::sync::Mutex<Held>,
    refill: tokio::sync::Mutex<()>,
}

impl SenderSlots {
    fn spend(&self, cost: u32) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.until.is_some_and(|t| t > Instant::now()) && held.segments >= cost {
            held.segments -= cost;
            return true;
        }
        false
    }
}

type Slot = std::sync::Arc<SenderSlots>;

/// Takes senders' slots from the queue for this worker.
pub struct Pacer {
    queue: Queue,
    senders: std::sync::Mutex<HashMap<String, Slot>>,
}

impl Pacer {
    pub fn new(queue: Queue) -> Self {
        Self {
            queue,
            senders: std::sync::Mutex::default(),
        }
    }

    /// Takes `pace.cost` segments of the sender's pace; `false` when it has none free now, or
    /// jobs of the same or a higher lane wait for it.
    pub async fn take(&self, pace: &Pace) -> Result<bool, QueueError> {
        let slot = self.slot(&pace.sender);
        if slot.spend(pace.cost) {
            return Ok(true);
        }
        let _refill = slot.refill.lock().await;
        // Another caller may have brought slots back while this one waited.
        if slot.spend(pace.cost) {
            return Ok(true);
        }
        let want = ((pace.rate / 20.0).floor() as u32)
            .clamp(1, MOST_AT_ONCE)
            .max(pace.cost);
        let taken = self.queue.take_slots(pace, want).await?;
        let mut held = slot.held.lock().unwrap_or_else(|e| e.into_inner());
        held.segments = taken.saturating_sub(pace.cost);
        held.until = Some(Instant::now() + HOLD);
        Ok(taken > 0)
    }

    fn slot(&self, sender: &str) -> Slot {
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = senders.get(sender) {
            return slot.clone();
        }
        if senders.len() >= MAX_SENDERS {
            senders.retain(|_, s| std::sync::Arc::strong_count(s) > 1);
        }
        senders.entry(sender.to_owned()).or_default().clone()
    }
}

/// How long a worker trusts a tenant's `sms_mps` before reading it again: a changed pace
/// holds within a second (one primary-key read per busy tenant and second).
const FRESH: Duration = Duration::from_secs(1);
/// Past this many tenants remembered, the memory starts over.
const MAX_REMEMBERED: usize = 10_000;

/// Segments per second a sender's class allows.
pub fn class_rate(sender: &str) -> f64 {
    if is_messaging_service(sender) {
        return 10.0;
    }
    let digits = sender.trim_start_matches('+');
    if !sender.starts_with('+') && (5..=6).contains(&digits.len()) {
        return 100.0;
    }
    const TOLL_FREE: [&str; 7] = ["800", "833", "844", "855", "866", "877", "888"];
    if let Some(national) = sender.strip_prefix("+1")
        && TOLL_FREE.iter().any(|p| national.starts_with(p))
    {
        return 3.0;
    }
    1.0
}

/// Each tenant's pace override, read from Postgres at most once a second per worker.
pub struct SenderRates {
    db: PgPool,
    known: RwLock<HashMap<String, (Option<f64>, Instant)>>,
}

impl SenderRates {
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            known: RwLock::default(),
        }
    }

    /// Segments per second for `tenant`'s SMS from `sender`. While Postgres cannot be read,
    /// the last rate known, else the class's.
    pub async fn rate(&self, tenant: &str, sender: &str) -> f64 {
        let remembered = self
            .known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .copied();
        let over = match remembered {
            Some((over, at)) if at.elapsed() < FRESH => over,
            _ => match tenants::sms_mps(&self.db, tenant).await {
                Ok(over) => {
                    let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
                    if known.len() >= MAX_REMEMBERED {
                        known.clear();
                    }
                    known.insert(tenant.to_owned(), (over, Instant::now()));
                    over
                }
                Err(e) => {
                    tracing::debug!(error = %e, "could not read the tenant's sms_mps");
                    remembered.and_then(|(over, _)| over)
                }
            },
        };
        over.unwrap_or_else(|| class_rate(sender))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_by_the_look_of_the_sender() {
        assert_eq!(class_rate("+15551234567"), 1.0);
        assert_eq!(class_rate("+18005550100"), 3.0);
        assert_eq!(class_rate("+18885550100"), 3.0);
        assert_eq!(class_rate("+18015550100"), 1.0);
        assert_eq!(class_rate("12345"), 100.0);
        assert_eq!(class_rate("123456"), 100.0);
        assert_eq!(class_rate("+447700900123"), 1.0);
        assert_eq!(class_rate("MG0123456789abcdef0123456789abcdef"), 10.0);
    }
}
