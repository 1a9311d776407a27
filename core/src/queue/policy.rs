//! Retry delays: exponential backoff with full jitter, honouring a provider's `Retry-After`.
//! Herald computes the delay and stores the retry in Redis; nothing sleeps in process.

use std::time::Duration;

use rand::RngExt;

/// The longest `Retry-After` honoured; a provider asking for more is misbehaving.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The ceiling of the wait after attempt `attempt` (1-based) failed: `min(max, base * 2^n)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u64.saturating_pow(attempt.min(40));
        let ms = u64::try_from(self.base.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_mul(factor);
        Duration::from_millis(ms).min(self.max)
    }

    /// The wait after attempt `attempt` failed: a random time in `[0, ceiling]` (full jitter),
    /// or the provider's `Retry-After` when that is longer. A provider's word is honoured past
    /// `max` (it knows when it will take requests again), up to a day.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempt).as_millis()).unwrap_or(u64::MAX);
        let jittered = Duration::from_millis(rand::rng().random_range(0..=ceiling));
        match retry_after {
            Some(after) if after > jittered => after.min(MAX_RETRY_AFTER),
            _ => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(
            Duration::from_millis(2000),
            Duration::from_millis(3_600_000),
        )
    }

    #[test]
    fn the_ceiling_doubles_until_the_maximum() {
        let p = policy();
        assert_eq!(p.ceiling(1), Duration::from_millis(4000));
        assert_eq!(p.ceiling(2), Duration::from_millis(8000));
        assert_eq!(p.ceiling(10), Duration::from_millis(2_048_000));
        assert_eq!(p.ceiling(11), Duration::from_millis(3_600_000));
        assert_eq!(p.ceiling(200), Duration::from_millis(3_600_000));
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling() {
        let p = policy();
        let delays: Vec<Duration> = (0..200).map(|_| p.delay(3, None)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(16_000)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 50, "full jitter should spread the delays");
    }

    #[test]
    fn a_longer_retry_after_wins_even_past_the_maximum_up_to_a_day() {
        let p = policy();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(7200))),
            Duration::from_secs(7200)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(10 * 86_400))),
            MAX_RETRY_AFTER
        );
        assert!(p.delay(1, Some(Duration::from_millis(1))) <= Duration::from_millis(4000));
    }
}
