//! Circuit breakers that open on an outage, not on one recipient or one tenant.
//!
//! A call to the SMS or email provider goes through two circuits: the provider's, shared by
//! every tenant, and the tenant's own for that provider. A webhook goes through one: the
//! tenant's for the target's origin (scheme, host and port). A circuit opens on evidence that
//! what it covers is down: within a sliding window, at least [`BreakerSettings::min_calls`]
//! calls, a share of failures of at least [`BreakerSettings::failure_rate`], and failures from
//! at least [`BreakerSettings::min_recipients`] different recipients. The shared provider
//! circuit asks for more: failures from at least two tenants, and no tenant whose calls
//! mostly succeed (a healthy tenant proves the provider is up). So:
//! - one number (or one URL) that fails forever is never evidence of an outage: its message
//!   retries on its own schedule and ends `dead`;
//! - one tenant whose recipients all fail opens only its own circuit, and everyone else's
//!   calls go on;
//! - a provider outage opens each busy tenant's circuit, and the shared one as soon as two
//!   tenants see it, which also holds back the quiet tenants' messages.
//!
//! An open circuit puts off the jobs that would call it, without spending their attempts, for
//! its cool-down; then it is half open and lets a few calls through. One success closes it; as
//! many failed calls from different recipients as it takes to open it open it again, with a
//! cool-down twice as long (up to [`BreakerSettings::max_cooldown`]), so a long outage is
//! probed less and less often.
//!
//! The number of circuits is bounded ([`BreakerSettings::max_circuits`]): circuits with nothing
//! to remember are dropped first, then the least recently used. Metrics carry the provider
//! (`twilio`, `resend`, `webhook`, `log`), never a host a tenant chose.

use std::{
    collections::{HashMap, HashSet, VecDeque, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use rand::RngExt;
use tracing::{info, warn};

/// How circuits judge an outage. [`crate::Config`] fills it from `HERALD_CIRCUIT_*`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// How far back calls count.
    pub window: Duration,
    /// Fewer calls than this in the window never open a circuit.
    pub min_calls: u32,
    /// The share of the window's calls that must have failed (0..=1).
    pub failure_rate: f64,
    /// Failures must come from at least this many different recipients.
    pub min_recipients: u32,
    /// The first cool-down of an open circuit.
    pub cooldown: Duration,
    /// The longest cool-down, reached by doubling while the outage lasts.
    pub max_cooldown: Duration,
    /// The most circuits remembered at once.
    pub max_circuits: usize,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            min_calls: 10,
            failure_rate: 0.5,
            min_recipients: 3,
            cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(300),
            max_circuits: 10_000,
        }
    }
}

/// The most calls a window keeps; at high rates the window is the latest calls.
const WINDOW_CALLS: usize = 1_000;

/// How fast the jobs an open circuit put off come back, per circuit. A tenant with a backlog
/// of 100,000 messages behind its open circuit costs the workers at most this many fetches a
/// second, instead of 100,000 at the end of every cool-down that would crowd out every other
/// tenant's due work; when the circuit closes, the backlog drains at this pace or faster (a job
/// that finds it closed is sent at once).
pub const RELEASE_PER_SECOND: f64 = 1_000.0;

/// The key of one circuit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CircuitKey {
    /// A provider shared by every tenant (`twilio`, `resend`, `log`).
    Provider(&'static str),
    /// One tenant's calls to a shared provider.
    Tenant {
        provider: &'static str,
        tenant_id: String,
    },
    /// One tenant's webhooks to one origin (`https://host:port`).
    Webhook { tenant_id: String, origin: String },
    /// One event endpoint of a tenant.
    Endpoint {
        tenant_id: String,
        endpoint_id: String,
    },
}

impl CircuitKey {
    /// The provider label for metrics: bounded, whatever the tenants do.
    pub fn provider(&self) -> &'static str {
        match self {
            CircuitKey::Provider(name) | CircuitKey::Tenant { provider: name, .. } => name,
            CircuitKey::Webhook { .. } => "webhook",
            CircuitKey::Endpoint { .. } => "event",
        }
    }

    /// Whether calls of several tenants share it.
    fn shared(&self) -> bool {
        matches!(self, CircuitKey::Provider(_))
    }
}

impl std::fmt::Display for CircuitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CircuitKey::Provider(name) => write!(f, "{name} (every tenant)"),
            CircuitKey::Tenant {
                provider,
                tenant_id,
            } => write!(f, "{provider} (tenant {tenant_id})"),
            CircuitKey::Webhook { tenant_id, origin } => {
                write!(f, "webhook {origin} (tenant {tenant_id})")
            }
            CircuitKey::Endpoint {
                tenant_id,
                endpoint_id,
            } => write!(f, "event endpoint {endpoint_id} (tenant {tenant_id})"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Call {
    at: Instant,
    failed: bool,
    recipient: u64,
    tenant: u64,
}

#[derive(Debug)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// Cooled down: up to `min_recipients` calls at once find out whether it is back.
    HalfOpen {
        in_flight: u32,
        failed: HashSet<u64>,
    },
}

#[derive(Debug)]
struct Circuit {
    state: State,
    calls: VecDeque<Call>,
    /// The cool-down the circuit opens with next; doubles while the outage lasts.
    cooldown: Duration,
    /// When it last opened (or opened again): names the episode a job was put off in.
    opened: Instant,
    /// Jobs put off in this episode, each given its own slot after the cool-down (see
    /// [`RELEASE_PER_SECOND`]).
    parked: u64,
    used: Instant,
}

impl Circuit {
    fn new(cooldown: Duration) -> Self {
        let now = Instant::now();
        Self {
            state: State::Closed,
            calls: VecDeque::new(),
            cooldown,
            opened: now,
            parked: 0,
            used: now,
        }
    }

    /// How long the next job put off in this episode waits past `base`: jobs come back one
    /// slot after another, not all at once.
    fn slot(&mut self, base: Duration) -> Duration {
        let slot = Duration::from_secs_f64(self.parked as f64 / RELEASE_PER_SECOND);
        self.parked += 1;
        base + slot + jitter()
    }

    /// Opens (or opens again) for the current cool-down, which then doubles.
    fn open(&mut self, now: Instant, max: Duration) -> Duration {
        let cooldown = self.cooldown;
        self.cooldown = (cooldown * 2).min(max);
        self.state = State::Open {
            until: now + cooldown,
        };
        self.opened = now;
        self.parked = 0;
        cooldown
    }

    fn forget_before(&mut self, since: Instant) {
        while self.calls.front().is_some_and(|c| c.at < since) {
            self.calls.pop_front();
        }
    }

    /// Whether nothing would be lost by dropping it.
    fn idle(&self, window: Duration) -> bool {
        matches!(self.state, State::Closed)
            && self.calls.back().is_none_or(|c| c.at.elapsed() > window)
    }
}

/// Whether a call may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// One of the calls of a half-open circuit; report it with `record(.., probe: true)`, or
    /// `release_probe` when no call was made.
    Probe,
    /// Not now: put the job off for `wait`. `episode` names this opening of the circuit
    /// (it changes each time the circuit opens again), so a job put off many times in one
    /// episode need be told about only once.
    No {
        wait: Duration,
        episode: Instant,
    },
}

/// What one call came to, as far as circuits care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    /// The provider answered (accepted, rejected, or asked to slow down): it is up.
    Up,
    /// No answer, a timeout or a 5xx: perhaps down.
    Failed,
}

#[derive(Debug)]
pub struct Breakers {
    settings: BreakerSettings,
    circuits: Mutex<HashMap<CircuitKey, Circuit>>,
}

fn recipient_hash(recipient: &str) -> u64 {
    let mut h = DefaultHasher::new();
    recipient.hash(&mut h);
    h.finish()
}

/// Spread put-off jobs within their slot.
fn jitter() -> Duration {
    Duration::from_millis(rand::rng().random_range(0..1000))
}

impl Breakers {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings: BreakerSettings {
                min_calls: settings.min_calls.max(1),
                min_recipients: settings.min_recipients.max(1),
                max_circuits: settings.max_circuits.max(1),
                ..settings
            },
            circuits: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    fn circuits(&self) -> std::sync::MutexGuard<'_, HashMap<CircuitKey, Circuit>> {
        self.circuits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a call on `key` may go ahead now. Never creates a circuit: one is made by the
    /// first call's result, so a key nobody calls costs nothing.
    pub fn admit(&self, key: &CircuitKey) -> Admit {
        let mut circuits = self.circuits();
        let Some(circuit) = circuits.get_mut(key) else {
            return Admit::Yes;
        };
        let limit = self.settings.min_recipients;
        let episode = circuit.opened;
        match &mut circuit.state {
            State::Closed => Admit::Yes,
            State::Open { until } => {
                let now = Instant::now();
                if now < *until {
                    let until = *until;
                    return Admit::No {
                        wait: circuit.slot(until - now),
                        episode,
                    };
                }
                circuit.state = State::HalfOpen {
                    in_flight: 1,
                    failed: HashSet::new(),
                };
                Admit::Probe
            }
            State::HalfOpen { in_flight, .. } if *in_flight < limit => {
                *in_flight += 1;
                Admit::Probe
            }
            // The probes decide within a call's time; meanwhile the others wait a little
            // longer than a fetch would, so a big backlog does not spin.
            State::HalfOpen { .. } => Admit::No {
                wait: circuit.slot(Duration::from_secs(2)),
                episode,
            },
        }
    }

    /// Records the result of a call by `tenant` to `recipient` on `key`; `probe` when
    /// [`Self::admit`] answered [`Admit::Probe`] for it.
    pub fn record(
        &self,
        key: &CircuitKey,
        tenant: &str,
        recipient: &str,
        result: CallResult,
        probe: bool,
    ) {
        let now = Instant::now();
        let s = self.settings;
        let mut circuits = self.circuits();
        if !circuits.contains_key(key) {
            if result == CallResult::Up {
                // A healthy call on a circuit nobody remembers: nothing to remember.
                return;
            }
            if circuits.len() >= s.max_circuits {
                evict(&mut circuits, s.window);
            }
            circuits.insert(key.clone(), Circuit::new(s.cooldown));
        }
        let Some(circuit) = circuits.get_mut(key) else {
            return;
        };
        circuit.used = now;
        let recipient = recipient_hash(recipient);
        let failed = result == CallResult::Failed;
        if circuit.calls.len() == WINDOW_CALLS {
            circuit.calls.pop_front();
        }
        circuit.calls.push_back(Call {
            at: now,
            failed,
            recipient,
            tenant: recipient_hash(tenant),
        });
        if let Some(since) = now.checked_sub(s.window) {
            circuit.forget_before(since);
        }
        match &mut circuit.state {
            State::HalfOpen {
                in_flight,
                failed: failures,
            } => {
                if probe {
                    *in_flight = in_flight.saturating_sub(1);
                }
                if !failed {
                    info!(circuit = %key, provider = key.provider(), "circuit closed: calls succeed again");
                    circuit.state = State::Closed;
                    circuit.cooldown = s.cooldown;
                    circuit.calls.clear();
                    gauge(key.provider(), -1.0);
                    transition(key.provider(), "closed");
                    return;
                }
                failures.insert(recipient);
                if failures.len() as u32 >= s.min_recipients {
                    let cooldown = circuit.open(now, s.max_cooldown);
                    warn!(circuit = %key, provider = key.provider(), cooldown_ms = cooldown.as_millis() as u64,
                        "circuit still failing after its cool-down; open again for longer");
                    transition(key.provider(), "reopened");
                }
            }
            State::Open { .. } => {}
            State::Closed => {
                if failed && outage(&circuit.calls, &s, key.shared()) {
                    let cooldown = circuit.open(now, s.max_cooldown);
                    let failures = circuit.calls.iter().filter(|c| c.failed).count();
                    warn!(circuit = %key, provider = key.provider(), failures, calls = circuit.calls.len(),
                        cooldown_ms = cooldown.as_millis() as u64,
                        "circuit opened: calls from several recipients are failing; putting its jobs off");
                    gauge(key.provider(), 1.0);
                    transition(key.provider(), "opened");
                }
            }
        }
    }

    /// An admitted probe made no call after all (the message was no longer waiting).
    pub fn release_probe(&self, key: &CircuitKey) {
        let mut circuits = self.circuits();
        if let Some(Circuit {
            state: State::HalfOpen { in_flight, .. },
            ..
        }) = circuits.get_mut(key)
        {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// `closed`, `open` or `half_open`, for ops and tests.
    pub fn state(&self, key: &CircuitKey) -> &'static str {
        match self.circuits().get(key).map(|c| &c.state) {
            None | Some(State::Closed) => "closed",
            Some(State::Open { until }) if Instant::now() < *until => "open",
            Some(_) => "half_open",
        }
    }

    /// How many circuits are remembered (bounded by `max_circuits`).
    pub fn len(&self) -> usize {
        self.circuits().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether the window's calls show an outage rather than a few bad recipients (and, for a
/// `shared` circuit, rather than one tenant's bad luck).
fn outage(calls: &VecDeque<Call>, s: &BreakerSettings, shared: bool) -> bool {
    let total = calls.len() as u32;
    if total < s.min_calls {
        return false;
    }
    let failures = calls.iter().filter(|c| c.failed).count() as f64;
    if failures < s.failure_rate * f64::from(total) {
        return false;
    }
    let recipients: HashSet<u64> = calls
        .iter()
        .filter(|c| c.failed)
        .map(|c| c.recipient)
        .collect();
    if (recipients.len() as u32) < s.min_recipients {
        return false;
    }
    if !shared {
        return true;
    }
    // Per tenant: (calls, failures).
    let mut tenants: HashMap<u64, (u32, u32)> = HashMap::new();
    for c in calls {
        let t = tenants.entry(c.tenant).or_default();
        t.0 += 1;
        t.1 += u32::from(c.failed);
    }
    let failing =
        |(calls, failures): &(u32, u32)| f64::from(*failures) >= s.failure_rate * f64::from(*calls);
    let failing_tenants = tenants.values().filter(|t| failing(t)).count();
    let healthy_tenants = tenants
        .values()
        .filter(|t| t.0 >= HEALTHY_CALLS && !failing(t))
        .count();
    failing_tenants >= 2 && healthy_tenants == 0
}

/// A tenant with at least this many calls in the window, most of them answered, shows that a
/// shared provider is up.
const HEALTHY_CALLS: u32 = 3;

/// Makes room for one more circuit: drops every idle one, else the least recently used.
fn evict(circuits: &mut HashMap<CircuitKey, Circuit>, window: Duration) {
    let before = circuits.len();
    circuits.retain(|_, c| !c.idle(window));
    if circuits.len() < before {
        return;
    }
    if let Some(oldest) = circuits
        .iter()
        .min_by_key(|(_, c)| c.used)
        .map(|(k, _)| k.clone())
        && let Some(c) = circuits.remove(&oldest)
        && !matches!(c.state, State::Closed)
    {
        gauge(oldest.provider(), -1.0);
    }
}

/// `herald_circuits_open{provider}`: circuits open or half open, per provider.
fn gauge(provider: &'static str, delta: f64) {
    ::metrics::gauge!("herald_circuits_open", "provider" => provider).increment(delta);
}

/// `herald_circuit_transitions_total{provider, to}`.
fn transition(provider: &'static str, to: &'static str) {
    ::metrics::counter!("herald_circuit_transitions_total", "provider" => provider, "to" => to)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            window: Duration::from_secs(30),
            min_calls: 4,
            failure_rate: 0.5,
            min_recipients: 3,
            cooldown: Duration::from_millis(30),
            max_cooldown: Duration::from_millis(100),
            max_circuits: 4,
        }
    }

    const TWILIO: CircuitKey = CircuitKey::Provider("twilio");

    fn tenant(id: &str) -> CircuitKey {
        CircuitKey::Tenant {
            provider: "twilio",
            tenant_id: id.to_owned(),
        }
    }

    fn fail(b: &Breakers, key: &CircuitKey, to: &str) {
        b.record(key, "ten_a", to, CallResult::Failed, false);
    }

    fn is_no(a: Admit) -> bool {
        matches!(a, Admit::No { .. })
    }

    #[test]
    fn one_recipient_failing_forever_never_opens_the_circuit() {
        let b = Breakers::new(settings());
        let a = tenant("ten_a");
        for _ in 0..100 {
            fail(&b, &a, "+15550000001");
        }
        assert_eq!(b.state(&a), "closed");
        // Two bad numbers are not an outage either.
        for _ in 0..100 {
            fail(&b, &a, "+15550000002");
        }
        assert_eq!(b.state(&a), "closed");
        assert_eq!(b.admit(&a), Admit::Yes);
    }

    #[test]
    fn failures_from_several_recipients_open_it_and_a_success_closes_it() {
        let b = Breakers::new(settings());
        let a = tenant("ten_a");
        fail(&b, &a, "+1");
        fail(&b, &a, "+2");
        fail(&b, &a, "+3");
        assert_eq!(b.state(&a), "closed", "fewer calls than the minimum");
        fail(&b, &a, "+4");
        assert_eq!(b.state(&a), "open");
        assert!(is_no(b.admit(&a)));
        assert_eq!(
            b.admit(&tenant("ten_b")),
            Admit::Yes,
            "circuits are per tenant"
        );

        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.admit(&a), Admit::Probe);
        assert_eq!(b.admit(&a), Admit::Probe, "a few probes at once");
        assert_eq!(b.admit(&a), Admit::Probe);
        assert!(is_no(b.admit(&a)), "but no more");
        b.record(&a, "ten_a", "+9", CallResult::Up, true);
        assert_eq!(b.state(&a), "closed");
        assert_eq!(b.admit(&a), Admit::Yes);
    }

    #[test]
    fn a_healthy_majority_keeps_it_closed() {
        let b = Breakers::new(settings());
        let a = tenant("ten_a");
        for i in 0..10 {
            fail(&b, &a, &format!("+{i}"));
            b.record(&a, "ten_a", "+100", CallResult::Up, false);
            b.record(&a, "ten_a", "+101", CallResult::Up, false);
        }
        assert_eq!(b.state(&a), "closed", "a third failing is not an outage");
    }

    #[test]
    fn the_shared_circuit_opens_only_when_several_tenants_fail_and_none_succeeds() {
        let b = Breakers::new(settings());
        // One tenant whose every recipient fails: its own business.
        for i in 0..20 {
            b.record(
                &TWILIO,
                "ten_a",
                &format!("+1{i}"),
                CallResult::Failed,
                false,
            );
        }
        assert_eq!(b.state(&TWILIO), "closed");
        // A second failing tenant, while a third succeeds: the provider is up.
        for i in 0..5 {
            b.record(&TWILIO, "ten_c", &format!("+3{i}"), CallResult::Up, false);
        }
        for i in 0..20 {
            b.record(
                &TWILIO,
                "ten_b",
                &format!("+2{i}"),
                CallResult::Failed,
                false,
            );
        }
        assert_eq!(
            b.state(&TWILIO),
            "closed",
            "a healthy tenant proves it is up"
        );

        let b = Breakers::new(settings());
        for i in 0..3 {
            b.record(
                &TWILIO,
                "ten_a",
                &format!("+1{i}"),
                CallResult::Failed,
                false,
            );
        }
        assert_eq!(b.state(&TWILIO), "closed");
        b.record(&TWILIO, "ten_b", "+20", CallResult::Failed, false);
        assert_eq!(b.state(&TWILIO), "open", "two tenants see it fail");
    }

    #[test]
    fn the_cooldown_grows_while_the_outage_lasts() {
        let b = Breakers::new(BreakerSettings {
            cooldown: Duration::from_millis(200),
            max_cooldown: Duration::from_secs(1),
            ..settings()
        });
        let a = tenant("ten_a");
        for i in 0..4 {
            fail(&b, &a, &format!("+{i}"));
        }
        let Admit::No { episode: first, .. } = b.admit(&a) else {
            panic!("open")
        };
        std::thread::sleep(Duration::from_millis(250));
        for i in 0..3 {
            assert_eq!(b.admit(&a), Admit::Probe);
            b.record(&a, "ten_a", &format!("+{i}"), CallResult::Failed, true);
        }
        assert_eq!(b.state(&a), "open");
        let Admit::No {
            episode: second, ..
        } = b.admit(&a)
        else {
            panic!("open again")
        };
        assert_ne!(first, second, "opening again is a new episode");
        // Open again, for 400 ms this time.
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(b.state(&a), "open", "the second cool-down is longer");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(b.admit(&a), Admit::Probe);
        b.release_probe(&a);
        assert_eq!(b.admit(&a), Admit::Probe, "a released probe frees its slot");
    }

    #[test]
    fn webhook_circuits_are_per_tenant_and_origin_and_bounded_in_number() {
        let b = Breakers::new(settings());
        let a = CircuitKey::Webhook {
            tenant_id: "ten_a".into(),
            origin: "https://hooks.example.com:443".into(),
        };
        let other = CircuitKey::Webhook {
            tenant_id: "ten_b".into(),
            origin: "https://hooks.example.com:443".into(),
        };
        for i in 0..4 {
            fail(&b, &a, &format!("https://hooks.example.com/{i}"));
        }
        assert_eq!(b.state(&a), "open");
        assert_eq!(
            b.admit(&other),
            Admit::Yes,
            "another tenant on the same host"
        );

        for i in 0..50 {
            let key = CircuitKey::Webhook {
                tenant_id: format!("ten_{i}"),
                origin: "https://x.example".into(),
            };
            fail(&b, &key, "https://x.example/a");
        }
        assert!(b.len() <= 4, "{} circuits", b.len());
        // Healthy calls remember nothing.
        let b = Breakers::new(settings());
        b.record(&TWILIO, "ten_a", "+1", CallResult::Up, false);
        assert!(b.is_empty());
    }
}
