//! Circuit breakers, one per provider (and one per webhook host, so one broken receiver
//! does not stop every tenant's webhooks). After `threshold` transient failures in a row a
//! circuit opens: calls stop for the cool-down and jobs are put off without spending an
//! attempt. Then one probe is let through; its success closes the circuit, its failure opens
//! it again.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use rand::RngExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// Cooled down: one probe call decides.
    HalfOpen {
        probing: bool,
    },
}

/// Whether a call may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// This call is the probe of a half-open circuit.
    Probe,
    /// Not now: put the job off for this long.
    No(Duration),
}

/// `herald_circuit_state{circuit}`: 0 closed, 1 half open, 2 open.
fn gauge(circuit: &str, value: f64) {
    ::metrics::gauge!("herald_circuit_state", "circuit" => circuit.to_owned()).set(value);
}

#[derive(Debug)]
pub struct Breakers {
    threshold: u32,
    cooldown: Duration,
    circuits: Mutex<HashMap<String, State>>,
}

impl Breakers {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            circuits: Mutex::new(HashMap::new()),
        }
    }

    fn circuits(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        self.circuits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spread put-off jobs over a second so a closing circuit is not hit by all at once.
    fn jitter() -> Duration {
        Duration::from_millis(rand::rng().random_range(0..1000))
    }

    pub fn admit(&self, key: &str) -> Admit {
        let mut circuits = self.circuits();
        let state = circuits
            .entry(key.to_owned())
            .or_insert(State::Closed { failures: 0 });
        match *state {
            State::Closed { .. } => Admit::Yes,
            State::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *state = State::HalfOpen { probing: true };
                    gauge(key, 1.0);
                    Admit::Probe
                } else {
                    Admit::No(until - now + Self::jitter())
                }
            }
            State::HalfOpen { probing: false } => {
                *state = State::HalfOpen { probing: true };
                gauge(key, 1.0);
                Admit::Probe
            }
            State::HalfOpen { probing: true } => Admit::No(Duration::from_secs(1) + Self::jitter()),
        }
    }

    /// The provider answered (accepted or rejected): it is up.
    pub fn success(&self, key: &str) {
        self.circuits()
            .insert(key.to_owned(), State::Closed { failures: 0 });
    }

    /// A transient failure (timeout, 5xx, 429, connection error).
    pub fn failure(&self, key: &str) {
        let mut circuits = self.circuits();
        let state = circuits
            .entry(key.to_owned())
            .or_insert(State::Closed { failures: 0 });
        *state = match *state {
            State::Closed { failures } if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            _ => {
                tracing::warn!(
                    circuit = key,
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "circuit opened after repeated failures"
                );
                gauge(key, 2.0);
                State::Open {
                    until: Instant::now() + self.cooldown,
                }
            }
        };
    }

    /// An admitted probe made no call after all (the message was no longer waiting).
    pub fn release_probe(&self, key: &str) {
        let mut circuits = self.circuits();
        if let Some(state @ State::HalfOpen { probing: true }) = circuits.get_mut(key) {
            *state = State::HalfOpen { probing: false };
        }
    }

    /// `closed`, `open` or `half_open`, for metrics and ops.
    pub fn state(&self, key: &str) -> &'static str {
        match self.circuits().get(key) {
            None | Some(State::Closed { .. }) => "closed",
            Some(State::Open { until }) if Instant::now() < *until => "open",
            Some(_) => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failures_opens_the_circuit_and_one_probe_closes_it() {
        let b = Breakers::new(3, Duration::from_millis(30));
        assert_eq!(b.admit("twilio"), Admit::Yes);
        b.failure("twilio");
        b.failure("twilio");
        assert_eq!(b.state("twilio"), "closed");
        b.failure("twilio");
        assert_eq!(b.state("twilio"), "open");
        assert!(matches!(b.admit("twilio"), Admit::No(_)));
        assert_eq!(b.admit("resend"), Admit::Yes, "circuits are per provider");

        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit("twilio"), Admit::Probe);
        assert!(
            matches!(b.admit("twilio"), Admit::No(_)),
            "one probe at a time"
        );
        b.success("twilio");
        assert_eq!(b.state("twilio"), "closed");
        assert_eq!(b.admit("twilio"), Admit::Yes);
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_a_success_resets_the_count() {
        let b = Breakers::new(2, Duration::from_millis(20));
        b.failure("x");
        b.success("x");
        b.failure("x");
        assert_eq!(b.state("x"), "closed", "failures must be in a row");
        b.failure("x");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.admit("x"), Admit::Probe);
        b.failure("x");
        assert_eq!(b.state("x"), "open");
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(b.admit("x"), Admit::Probe);
        b.release_probe("x");
        assert_eq!(
            b.admit("x"),
            Admit::Probe,
            "a released probe lets the next call probe"
        );
    }
}
