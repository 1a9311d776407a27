//! Delivering one message: claim it, check it may still go out, hand it to its channel's
//! provider, and record what came of it. The worker's `deliveries` handler calls [`deliver`].

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use sqlx::PgPool;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::breaker::{Admit, Breakers, CallResult, CircuitKey};
use crate::{
    batch::Batcher,
    config::{Config, EmailProviderKind, SmsProviderKind},
    domain::{
        Channel, MAX_ERROR_TEXT, MessageStatus, clean_text,
        jobs::{DeliveryJob, webhook_origin},
        new_id,
    },
    providers::{
        Lookup, Outbound, Provider, Refusal, SendOutcome, http_client, log::LogProvider,
        resend::Resend, twilio::Twilio, webhook::WebhookSender,
    },
    queue::{DELIVERIES, JobError, JobMeta, Pace, Queue, RetryPolicy},
    ratelimit::RateLimiter,
    services::{
        pacing::{Pacer, SenderRates},
        pauses::{Gate, SenderPauses},
        suspensions::Suspensions,
    },
    store::{
        self, contacts,
        lifecycle::{Claimed, Outcome, PutOff},
        messages::{self, MessageRow},
        sender_pauses::ACCOUNT,
    },
};

/// How long to put a job off while Postgres is unreachable; it does not count as an attempt.
const DB_DOWN_DEFER: Duration = Duration::from_secs(5);
/// How long a worker keeps trying to record an outcome while Postgres is unreachable. With
/// the provider call it stays within the job's timeout (`Config::delivery_job_timeout`).
const RECORD_PATIENCE: Duration = Duration::from_secs(20);
/// The most claims (or outcomes) one statement carries.
const BATCH: usize = 256;
/// How many claim statements, outcome statements and put-off statements may be under way at
/// once; together, the connections of the pool they share ([`crate::db::batch_pool`]).
const CLAIMS_AT_ONCE: usize = 2;
const OUTCOMES_AT_ONCE: usize = 2;
const PUT_OFFS_AT_ONCE: usize = 1;
pub const BATCH_CONNECTIONS: u32 = (CLAIMS_AT_ONCE + OUTCOMES_AT_ONCE + PUT_OFFS_AT_ONCE) as u32;
/// A job put off for at least this long gets an event saying why and until when; shorter
/// waits (a send rate's next token) would only add noise to the history.
const PUT_OFF_EVENT_AFTER: Duration = Duration::from_secs(1);
/// The most bytes of an event's detail built around outside text.
const MAX_DETAIL: usize = 2 * crate::domain::MAX_ERROR_TEXT;
/// The most put-off messages remembered (see `Deliverer::told`).
const MAX_TOLD: usize = 100_000;
/// How often a suspended tenant's waiting job looks again: with the suspensions' one-second
/// snapshot, its messages leave within about three seconds of the suspension being lifted.
const SUSPENDED_RECHECK: Duration = Duration::from_secs(2);

/// Everything a delivery needs, built once per worker process.
pub struct Deliverer {
    pub db: PgPool,
    pub sms: Arc<dyn Provider>,
    pub email: Arc<dyn Provider>,
    pub webhook: Arc<dyn Provider>,
    pub max_attempts: u32,
    pub policy: RetryPolicy,
    pub breakers: Breakers,
    /// Per tenant and channel, shared by every worker through Redis.
    pub limiter: Option<RateLimiter>,
    pub send_rate: u32,
    /// A `sending` claim older than this is taken over ([`Config::stale_claim_after`]).
    pub stale_claim: Duration,
    /// How long a fetched job is held (`HERALD_LEASE_MS`), for its span.
    pub lease: Duration,
    /// Claims and outcomes of concurrent jobs share statements (see [`crate::batch`]).
    /// (message, queue attempt, bulk).
    claims: Batcher<(String, i32, bool), Option<Claimed>>,
    outcomes: Batcher<Outcome, bool>,
    put_offs: Batcher<PutOff, ()>,
    /// Senders paused until the operator fixes what Twilio refused.
    pub pauses: SenderPauses,
    /// Tenants the operator suspended: their jobs wait.
    suspensions: Suspensions,
    /// Takes SMS senders' slots from the queue (none: SMS are not paced).
    pacer: Option<Pacer>,
    rates: SenderRates,
    /// The circuit episode each put-off message was last told about, so a backlog put off
    /// again and again by one outage writes its events once per opening, not per deferral.
    told: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("sms", &self.sms.name())
            .field("email", &self.email.name())
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl Deliverer {
    /// The providers configuration names. Its batchers (claims, outcomes, put-offs) run on
    /// `tasks`, so a shutdown can wait until every outcome is recorded, and their statements
    /// on `batch_db` ([`crate::db::batch_pool`], [`BATCH_CONNECTIONS`] connections).
    pub fn from_config(
        config: &Config,
        db: PgPool,
        batch_db: PgPool,
        limiter: Option<RateLimiter>,
        tasks: &TaskTracker,
    ) -> Self {
        let client = http_client(config.provider_timeout);
        let sms: Arc<dyn Provider> = match (
            config.sms_provider,
            &config.twilio.account_sid,
            &config.twilio.auth_token,
        ) {
            (SmsProviderKind::Twilio, Some(sid), Some(token)) => Arc::new(Twilio::new(
                client.clone(),
                &config.twilio.base_url,
                sid,
                token.clone(),
                &config.public_url,
            )),
            _ => Arc::new(LogProvider::new(db.clone(), "sms")),
        };
        let email: Arc<dyn Provider> = match (config.email_provider, &config.resend.api_key) {
            (EmailProviderKind::Resend, Some(key)) => {
                Arc::new(Resend::new(client, &config.resend.base_url, key.clone()))
            }
            _ => Arc::new(LogProvider::new(db.clone(), "email")),
        };
        let webhook: Arc<dyn Provider> = Arc::new(WebhookSender::new(
            config.provider_timeout,
            config.webhook_allow_private,
        ));
        let claims = {
            let db = batch_db.clone();
            Batcher::spawn(
                tasks,
                BATCH,
                CLAIMS_AT_ONCE,
                move |items: Arc<[(String, i32, bool)]>| {
                    let db = db.clone();
                    async move {
                        let ids: Vec<String> = items.iter().map(|(id, ..)| id.clone()).collect();
                        let attempts: Vec<i32> = items.iter().map(|(_, a, _)| *a).collect();
                        let any_bulk = items.iter().any(|(.., bulk)| *bulk);
                        let mut claimed: HashMap<String, Claimed> =
                            store::lifecycle::claim_many(&db, &ids, &attempts, any_bulk)
                                .await?
                                .into_iter()
                                .map(|c| (c.message.id.clone(), c))
                                .collect();
                        // A duplicate job in the same batch finds its message taken.
                        Ok(ids.iter().map(|id| claimed.remove(id)).collect())
                    }
                },
            )
        };
        let outcomes = {
            let db = batch_db.clone();
            Batcher::spawn(
                tasks,
                BATCH,
                OUTCOMES_AT_ONCE,
                move |items: Arc<[Outcome]>| {
                    let db = db.clone();
                    async move {
                        let moved: HashSet<String> = store::lifecycle::finish_many(&db, &items)
                            .await?
                            .into_iter()
                            .collect();
                        Ok(items.iter().map(|o| moved.contains(&o.id)).collect())
                    }
                },
            )
        };
        let put_offs = {
            let db = batch_db;
            Batcher::spawn(
                tasks,
                BATCH,
                PUT_OFFS_AT_ONCE,
                move |items: Arc<[PutOff]>| {
                    let db = db.clone();
                    async move {
                        store::lifecycle::note_put_offs(&db, &items).await?;
                        Ok(vec![(); items.len()])
                    }
                },
            )
        };
        Self {
            pauses: SenderPauses::new(db.clone(), &config.circuit),
            suspensions: Suspensions::new(db.clone()),
            pacer: None,
            rates: SenderRates::new(db.clone()),
            db,
            sms,
            email,
            webhook,
            max_attempts: config.max_attempts,
            policy: RetryPolicy::new(config.retry_base, config.retry_max),
            breakers: Breakers::new(config.circuit),
            limiter,
            send_rate: config.tenant_send_rate,
            stale_claim: config.stale_claim_after(),
            lease: config.lease,
            claims,
            outcomes,
            put_offs,
            told: Mutex::default(),
        }
    }

    /// Whether `job` is an SMS its sender's pace governs.
    fn paces(&self, job: &DeliveryJob) -> bool {
        self.pacer.is_some()
            && job.channel == Some(Channel::Sms)
            && job.sender.is_some()
            && job.tenant_id.is_some()
    }

    /// Paces SMS by their senders' slots in `queue` (the queue their jobs are on).
    pub fn with_pacing(mut self, queue: Queue) -> Self {
        self.pacer = Some(Pacer::new(queue));
        self
    }

    /// The circuits a message's provider call goes through: the SMS or email provider's
    /// (shared) and the tenant's own for it, or the tenant's for the webhook's origin.
    pub fn circuits(
        &self,
        channel: Channel,
        tenant_id: &str,
        origin: Option<&str>,
    ) -> Vec<CircuitKey> {
        let provider = |name: &'static str| {
            vec![
                CircuitKey::Provider(name),
                CircuitKey::Tenant {
                    provider: name,
                    tenant_id: tenant_id.to_owned(),
                },
            ]
        };
        match channel {
            Channel::Sms => provider(self.sms.name()),
            Channel::Email => provider(self.email.name()),
            Channel::Webhook => vec![CircuitKey::Webhook {
                tenant_id: tenant_id.to_owned(),
                origin: origin.unwrap_or_default().to_owned(),
            }],
        }
    }

    /// Whether `message_id` was already told it is put off in this episode of a circuit, and
    /// remembers that it now has been.
    fn told(&self, message_id: &str, episode: Instant) -> bool {
        let mut told = self.told.lock().unwrap_or_else(PoisonError::into_inner);
        if told.get(message_id) == Some(&episode) {
            return true;
        }
        if told.len() >= MAX_TOLD {
            told.clear();
        }
        told.insert(message_id.to_owned(), episode);
        false
    }

    fn provider(&self, channel: Channel) -> &dyn Provider {
        match channel {
            Channel::Sms => self.sms.as_ref(),
            Channel::Email => self.email.as_ref(),
            Channel::Webhook => self.webhook.as_ref(),
        }
    }
}

/// A Postgres failure: put the job off (without spending an attempt) while Postgres is down,
/// otherwise let the queue retry it.
pub(crate) fn db_error(e: impl std::borrow::Borrow<sqlx::Error>) -> JobError {
    let e = e.borrow();
    if store::is_unavailable(e) {
        JobError::Defer {
            reason: format!("postgres unavailable: {e}"),
            at_ms: Utc::now().timestamp_millis() + DB_DOWN_DEFER.as_millis() as i64,
        }
    } else {
        JobError::transient(format!("postgres: {e}"))
    }
}

/// Releases half-open circuits' probe slots unless the probe made its call.
struct ProbeGuard<'a> {
    breakers: &'a Breakers,
    circuits: Vec<CircuitKey>,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        for c in &self.circuits {
            self.breakers.release_probe(c);
        }
    }
}

fn defer(reason: String, wait: Duration) -> JobError {
    JobError::Defer {
        reason,
        at_ms: Utc::now().timestamp_millis() + wait.as_millis() as i64,
    }
}

/// Sends one message: admit it (its circuit, its tenant's send rate), claim it, call its
/// provider, record what came of it. `Ok` means its fate is recorded in Postgres (sent,
/// failed, dead, expired, suppressed, or nothing to do); an error asks the queue to run the
/// job again.
pub async fn deliver(d: &Deliverer, job: &DeliveryJob, meta: &JobMeta) -> Result<(), JobError> {
    let mut probe = ProbeGuard {
        breakers: &d.breakers,
        circuits: Vec::new(),
    };
    admit(d, job, &mut probe).await?;
    if !meta.paced {
        pace(d, job).await?;
    }

    let attempt = i32::try_from(meta.attempt).unwrap_or(i32::MAX);
    let claimed = d
        .claims
        .call((
            job.message_id.clone(),
            attempt,
            job.priority() == crate::domain::Priority::Bulk,
        ))
        .await
        .map_err(db_error)?;
    let Some(claimed) = claimed else {
        return not_claimed(d, &job.message_id).await;
    };
    if claimed.held {
        // Suspended after this worker last looked: held like the rest of its tenant's.
        return Err(suspended(d, &job.message_id, Instant::now()));
    }
    if claimed.quiet {
        return quiet_hours(d, &claimed).await;
    }
    let Claimed {
        message: m,
        webhook_secret,
        ..
    } = claimed;
    if m.status != MessageStatus::Sending {
        // Expired or suppressed by the claim itself; recorded with its event.
        info!(message_id = %m.id, tenant_id = %m.tenant_id, status = %m.status, "message not sent");
        return Ok(());
    }
    // `attempts` already counts this one; more than the maximum means earlier attempts died
    // with their worker, and the message must not loop forever.
    if m.attempts > d.max_attempts as i32 {
        let why = format!(
            "{} attempts started without a result; giving up",
            m.attempts - 1
        );
        finish(d, &m, MessageStatus::Dead, None, Some(&why), &why, None).await?;
        dead_letter(d, &m, "exhausted").await;
        return Ok(());
    }
    if let Some(since) = m.unsettled_since
        && resolve(d, &m, &webhook_secret, since).await?
    {
        return Ok(());
    }
    let (outcome, elapsed_ms) = call(d, &m, &webhook_secret, &mut probe).await;
    record(d, &m, outcome, elapsed_ms).await
}

/// An earlier attempt of this message began at `since` and its outcome was never recorded (its
/// worker died mid-call, or the outcome could not be written). Before sending again, ask the
/// provider whether that attempt arrived. Returns `true` when it did, and the message's fate is
/// recorded from the provider's word; `false` when the provider has no such message (or a
/// repeat is harmless to it) and the message may be sent. While the provider cannot be asked,
/// the message waits like after a transient failure, and is not sent.
async fn resolve(
    d: &Deliverer,
    m: &MessageRow,
    webhook_secret: &str,
    since: chrono::DateTime<Utc>,
) -> Result<bool, JobError> {
    let channel = m.channel;
    let provider = d.provider(channel);
    let outbound = outbound(m, webhook_secret);
    let candidates = match provider.lookup(&outbound, since).await {
        Lookup::Unsupported => return Ok(false),
        Lookup::Candidates(c) => c,
        Lookup::Unavailable(error) => {
            unresolved(d, m, provider.name(), &error).await?;
            return Ok(true);
        }
    };
    for c in candidates {
        // Two messages with the same text to the same number: each record is one's only.
        if !store::lifecycle::take_provider_ref(&d.db, &c.provider_message_id, &m.id)
            .await
            .map_err(db_error)?
        {
            continue;
        }
        let status = reconciled_status(&c.status);
        let detail = format!(
            "reconciled: {} already had the attempt begun at {} ({}, {}); not sent again",
            provider.name(),
            since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            c.provider_message_id,
            c.status
        );
        let error = matches!(status, MessageStatus::Failed | MessageStatus::Undelivered)
            .then(|| format!("{} reported it {}", provider.name(), c.status));
        finish(
            d,
            m,
            status,
            Some(c.provider_message_id.clone()),
            error.as_deref(),
            &detail,
            None,
        )
        .await?;
        if status == MessageStatus::Failed {
            dead_letter(d, m, "rejected").await;
        }
        ::metrics::counter!("herald_attempts_reconciled_total", "provider" => provider.name(), "found" => "yes")
            .increment(1);
        info!(message_id = %m.id, tenant_id = %m.tenant_id, provider = provider.name(), provider_message_id = %c.provider_message_id, "an attempt whose answer was lost had arrived; recorded, not sent again");
        return Ok(true);
    }
    ::metrics::counter!("herald_attempts_reconciled_total", "provider" => provider.name(), "found" => "no")
        .increment(1);
    let detail = format!(
        "reconciled: {} has no message from the attempt begun at {}; sending it now",
        provider.name(),
        since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    if let Err(e) = messages::note(&d.db, &m.id, &detail).await {
        debug!(message_id = %m.id, error = %e, "could not note the reconciliation");
    }
    info!(message_id = %m.id, tenant_id = %m.tenant_id, provider = provider.name(), "an attempt whose answer was lost never arrived; sending");
    Ok(false)
}

/// The provider could not say whether an earlier attempt arrived: wait and ask again, like
/// after a transient failure, without sending; or give up when the attempts are spent.
async fn unresolved(
    d: &Deliverer,
    m: &MessageRow,
    provider: &str,
    error: &str,
) -> Result<(), JobError> {
    let error = format!(
        "could not ask {provider} whether an earlier attempt arrived, so it is not sent again yet: {error}"
    );
    if m.attempts >= d.max_attempts as i32 {
        let detail = format!("attempt {} of {}: {error}", m.attempts, d.max_attempts);
        finish(d, m, MessageStatus::Dead, None, Some(&error), &detail, None).await?;
        dead_letter(d, m, "exhausted").await;
        return Ok(());
    }
    let delay = d.policy.delay(m.attempts as u32, None);
    let next = Utc::now() + chrono::Duration::milliseconds(delay.as_millis() as i64);
    let detail = format!(
        "attempt {}: {error}; asking again at {}",
        m.attempts,
        next.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    let outcome = Outcome {
        id: m.id.clone(),
        status: MessageStatus::Retrying,
        last_error: Some(clean_text(&error, MAX_ERROR_TEXT)),
        provider_message_id: None,
        detail: Some(clean_text(&detail, MAX_DETAIL)),
        next_attempt_at: Some(next),
        still_unsettled: true,
    };
    record_outcome(d, m, outcome).await?;
    Err(JobError::RetryAt {
        message: error,
        at_ms: next.timestamp_millis(),
    })
}

/// What a provider's own status word for a found attempt means for Herald, as its status
/// callback would say it; a message it accepted and still holds is `sent`.
fn reconciled_status(provider_status: &str) -> MessageStatus {
    match provider_status {
        "delivered" | "read" => MessageStatus::Delivered,
        "undelivered" => MessageStatus::Undelivered,
        "failed" | "canceled" => MessageStatus::Failed,
        _ => MessageStatus::Sent,
    }
}

/// The message as its provider needs it.
fn outbound<'a>(m: &'a MessageRow, webhook_secret: &'a str) -> Outbound<'a> {
    Outbound {
        message_id: &m.id,
        tenant_id: &m.tenant_id,
        to: &m.to_addr,
        from: m.from_addr.as_deref(),
        subject: m.subject.as_deref(),
        body: &m.body,
        run: m.run,
        webhook_secret,
    }
}

/// Before claiming, so a job put off spends no attempt: the circuit its call would go
/// through, then the tenant's send rate.
async fn admit<'a>(
    d: &'a Deliverer,
    job: &DeliveryJob,
    probe: &mut ProbeGuard<'a>,
) -> Result<(), JobError> {
    let Some(channel) = job.channel else {
        return Ok(());
    };
    let tenant = job.tenant_id.as_deref().unwrap_or_default();
    if let Some(since) = d.suspensions.since(tenant).await {
        return Err(suspended(d, &job.message_id, since));
    }
    if channel == Channel::Sms
        && let Gate::Wait { until, why } = d.pauses.gate(tenant).await
    {
        let wait = (until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        return Err(put_off(
            d,
            &job.message_id,
            "sender_paused",
            why,
            wait,
            true,
        ));
    }
    for circuit in d.circuits(channel, tenant, job.host.as_deref()) {
        match d.breakers.admit(&circuit) {
            Admit::No { wait, episode } => {
                let why = match &circuit {
                    CircuitKey::Provider(name) => format!(
                        "the {name} circuit is open: calls to {name} are failing for several tenants"
                    ),
                    CircuitKey::Tenant { provider, .. } => format!(
                        "this tenant's {provider} circuit is open: its calls to several recipients are failing"
                    ),
                    CircuitKey::Webhook { origin, .. } => format!(
                        "the circuit for this tenant's webhooks to {origin} is open: its calls there are failing"
                    ),
                    // Messages never go through an event endpoint's circuit.
                    CircuitKey::Endpoint { .. } => circuit.to_string(),
                };
                let note = !d.told(&job.message_id, episode);
                return Err(put_off(d, &job.message_id, "circuit", why, wait, note));
            }
            Admit::Probe => probe.circuits.push(circuit),
            Admit::Yes => {}
        }
    }
    let (Some(limiter), Some(tenant)) = (&d.limiter, &job.tenant_id) else {
        return Ok(());
    };
    if d.paces(job) {
        // Its sender's pace, at most the send rate, limits it instead (see [`pace`]).
        return Ok(());
    }
    match limiter
        .take(&format!("send:{tenant}:{channel}"), d.send_rate)
        .await
    {
        Ok(None) => Ok(()),
        Ok(Some(wait)) => {
            let why = format!("the tenant's send rate of {}/s is reached", d.send_rate);
            let note = wait >= PUT_OFF_EVENT_AFTER;
            Err(put_off(d, &job.message_id, "send_rate", why, wait, note))
        }
        // The limit protects providers; an unreachable Redis must not stop sending.
        Err(e) => {
            debug!(error = %e, "send rate unavailable; sending anyway");
            Ok(())
        }
    }
}

/// A suspended tenant's message waits, without spending an attempt or calling anyone, and
/// looks again every [`SUSPENDED_RECHECK`]; it is told why once per suspension (`since`).
fn suspended(d: &Deliverer, message_id: &str, since: Instant) -> JobError {
    let note = !d.told(message_id, since);
    let why = "the tenant is suspended; its messages wait until the operator lifts it".to_owned();
    put_off(d, message_id, "suspended", why, SUSPENDED_RECHECK, note)
}

/// Last before the claim: an SMS takes a slot of its sender's pace (its class's, or the
/// tenant's `sms_mps`, at most `HERALD_TENANT_SEND_RATE`), or waits for one in the queue
/// (transactional before bulk) without spending an attempt.
async fn pace(d: &Deliverer, job: &DeliveryJob) -> Result<(), JobError> {
    let (Some(pacer), Some(sender), Some(tenant)) = (&d.pacer, &job.sender, &job.tenant_id) else {
        return Ok(());
    };
    if !d.paces(job) {
        return Ok(());
    }
    let rate = d
        .rates
        .rate(tenant, sender)
        .await
        .min(f64::from(d.send_rate));
    let pace = Pace {
        sender: sender.clone(),
        priority: job.priority(),
        cost: u32::from(job.segments.unwrap_or(1).max(1)),
        rate,
        tenant: tenant.clone(),
    };
    match pacer.take(&pace).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(JobError::Park(pace)),
        // The pace protects the sender's standing with carriers; Twilio queues what comes
        // too fast, so an unreachable Redis must not stop sending.
        Err(e) => {
            debug!(error = %e, "sender pace unavailable; sending anyway");
            Ok(())
        }
    }
}

/// Puts a job off for `wait` without spending an attempt; with `note`, the message gets one
/// event saying why and until when (kept current while it lasts), so it never looks stuck.
fn put_off(
    d: &Deliverer,
    message_id: &str,
    kind: &'static str,
    why: String,
    wait: Duration,
    note: bool,
) -> JobError {
    let until = Utc::now() + chrono::Duration::milliseconds(wait.as_millis() as i64);
    if note {
        let detail = format!(
            "put off until {}: {why}",
            until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        let note = PutOff {
            id: message_id.to_owned(),
            kind,
            detail,
        };
        // The history is a courtesy: the job is put off whether or not it is written, and
        // does not hold its worker slot while it is.
        d.put_offs.submit(note);
    }
    JobError::Defer {
        reason: why,
        at_ms: until.timestamp_millis(),
    }
}

/// Hands the claimed message to its provider; the circuit hears how it went.
async fn call(
    d: &Deliverer,
    m: &MessageRow,
    webhook_secret: &str,
    probe: &mut ProbeGuard<'_>,
) -> (SendOutcome, u64) {
    let channel = m.channel;
    if m.attempts <= 1 {
        // The first call of a run: how late after its due time the message reached its
        // provider (waiting for a worker, its sender's pace, a retry of the claim).
        let late = (Utc::now() - m.send_at).num_milliseconds().max(0);
        ::metrics::histogram!("herald_delivery_lateness_seconds", "channel" => channel.as_str())
            .record(late as f64 / 1000.0);
    }
    let outbound = outbound(m, webhook_secret);
    let provider = d.provider(channel);
    let origin = match channel {
        Channel::Webhook => webhook_origin(&m.to_addr),
        _ => None,
    };
    let circuits = d.circuits(channel, &m.tenant_id, origin.as_deref());
    let span = crate::traces::enabled().then(|| {
        tracing::info_span!(
            "provider call",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            provider = provider.name(),
            channel = channel.as_str(),
            attempt = m.attempts,
            outcome = tracing::field::Empty,
            error.type = tracing::field::Empty,
        )
    });
    let started = std::time::Instant::now();
    let outcome = match &span {
        Some(span) => tracing::Instrument::instrument(provider.send(&outbound), span.clone()).await,
        None => provider.send(&outbound).await,
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let (result, label) = match &outcome {
        SendOutcome::Transient {
            throttled: false, ..
        } => (CallResult::Failed, "transient"),
        SendOutcome::Transient {
            throttled: true, ..
        } => (CallResult::Up, "throttled"),
        SendOutcome::Accepted { .. } => (CallResult::Up, "accepted"),
        // Twilio is up; the operator has something to fix.
        SendOutcome::OperatorError { .. } => (CallResult::Up, "operator"),
        SendOutcome::Rejected { .. } => (CallResult::Up, "rejected"),
    };
    for circuit in &circuits {
        let probed = probe.circuits.contains(circuit);
        d.breakers
            .record(circuit, &m.tenant_id, &m.to_addr, result, probed);
    }
    // Probes of circuits this call did not go through (its job named another origin) are
    // released by the guard.
    probe.circuits.retain(|c| !circuits.contains(c));
    if let Some(span) = span {
        span.record("outcome", label);
        if label != "accepted" {
            span.record("otel.status_code", "error");
            span.record("error.type", label);
        }
    }
    ::metrics::counter!("herald_provider_calls_total", "provider" => provider.name(), "outcome" => label)
        .increment(1);
    ::metrics::histogram!("herald_provider_call_duration_seconds", "provider" => provider.name())
        .record(elapsed_ms as f64 / 1000.0);
    (outcome, elapsed_ms)
}

/// What a carrier's refusal of an SMS means for its recipient: opted out at the carrier, or a
/// phone that cannot receive texts (later SMS to it are suppressed until it is changed).
pub async fn contact_refused(
    db: &PgPool,
    m: &MessageRow,
    refusal: Refusal,
) -> Result<(), sqlx::Error> {
    match refusal {
        Refusal::OptedOut => {
            contacts::opt_out_phone(db, &new_id("ct"), &m.tenant_id, &m.to_addr).await
        }
        Refusal::Unreachable => {
            contacts::mark_phone_unreachable(db, &new_id("ct"), &m.tenant_id, &m.to_addr).await
        }
        Refusal::Refused | Refusal::Filtered => Ok(()),
    }
}

/// Records what the provider call came to: `sent`/`delivered`, `failed`, `retrying`, `dead`
/// or `expired`.
async fn record(
    d: &Deliverer,
    m: &MessageRow,
    outcome: SendOutcome,
    elapsed_ms: u64,
) -> Result<(), JobError> {
    let channel = m.channel;
    let provider = d.provider(channel).name();
    match outcome {
        SendOutcome::Accepted {
            provider_message_id,
        } => {
            if channel == Channel::Sms {
                d.pauses.resumed(&m.tenant_id).await.map_err(db_error)?;
            }
            // A webhook answered 2xx has arrived; SMS and email wait for the provider's callback.
            let status = if channel == Channel::Webhook {
                MessageStatus::Delivered
            } else {
                MessageStatus::Sent
            };
            let detail = format!("{provider} accepted it in {elapsed_ms} ms");
            finish(d, m, status, provider_message_id, None, &detail, None).await?;
            if let (Some(encoding), Some(segments)) = (m.encoding, m.segments) {
                // What the carriers bill, by encoding only: no label names a tenant.
                ::metrics::counter!("herald_sms_segments_sent_total", "encoding" => encoding.as_str())
                    .increment(u64::try_from(segments).unwrap_or(0));
            }
            debug!(message_id = %m.id, tenant_id = %m.tenant_id, provider, attempt = m.attempts, elapsed_ms, status = status.as_str(), "message sent");
            Ok(())
        }
        SendOutcome::Rejected { error, refusal } => {
            if channel == Channel::Sms {
                contact_refused(&d.db, m, refusal).await.map_err(db_error)?;
            }
            let error = match refusal {
                Refusal::Filtered => format!("filtered: {error}"),
                _ => error,
            };
            finish(
                d,
                m,
                MessageStatus::Failed,
                None,
                Some(&error),
                &error,
                None,
            )
            .await?;
            dead_letter(d, m, "rejected").await;
            warn!(message_id = %m.id, tenant_id = %m.tenant_id, provider, error = %error, "provider rejected the message");
            Ok(())
        }
        SendOutcome::OperatorError {
            error,
            code,
            account_wide,
        } => {
            let scope = if account_wide {
                ACCOUNT
            } else {
                m.tenant_id.as_str()
            };
            let probe_at = d
                .pauses
                .pause(scope, m.from_addr.as_deref(), code, &error)
                .await
                .map_err(db_error)?;
            // This message waits for the fix like the rest of its sender's.
            let wait = (probe_at - Utc::now()).to_std().ok();
            retry_or_give_up(d, m, format!("sender paused: {error}"), wait).await
        }
        SendOutcome::Transient {
            error, retry_after, ..
        } => retry_or_give_up(d, m, error, retry_after).await,
    }
}

/// A provider call that may succeed later: `retrying` at the policy's time (or `retry_after`,
/// if later), unless every attempt is spent (`dead`) or the next would come after
/// `expires_at` (`expired`).
async fn retry_or_give_up(
    d: &Deliverer,
    m: &MessageRow,
    error: String,
    retry_after: Option<Duration>,
) -> Result<(), JobError> {
    if m.attempts >= d.max_attempts as i32 {
        let detail = format!("attempt {} of {}: {error}", m.attempts, d.max_attempts);
        finish(d, m, MessageStatus::Dead, None, Some(&error), &detail, None).await?;
        dead_letter(d, m, "exhausted").await;
        warn!(message_id = %m.id, tenant_id = %m.tenant_id, attempts = m.attempts, error = %error, "message is dead: every attempt failed");
        return Ok(());
    }
    let delay = d.policy.delay(m.attempts as u32, retry_after);
    let next = Utc::now() + chrono::Duration::milliseconds(delay.as_millis() as i64);
    if next > m.expires_at {
        let detail = format!("{error}; the next attempt would come after expires_at");
        finish(
            d,
            m,
            MessageStatus::Expired,
            None,
            Some(&error),
            &detail,
            None,
        )
        .await?;
        return Ok(());
    }
    let detail = format!(
        "attempt {} failed: {error}; next attempt at {}",
        m.attempts,
        next.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    finish(
        d,
        m,
        MessageStatus::Retrying,
        None,
        Some(&error),
        &detail,
        Some(next),
    )
    .await?;
    Err(JobError::RetryAt {
        message: error,
        at_ms: next.timestamp_millis(),
    })
}

/// A job whose message could not be claimed: canceled, sent, claimed by another copy of the
/// job (nothing to do), or moved to a later time (an appointment moved, quiet hours), when the
/// job is put off to that time.
async fn not_claimed(d: &Deliverer, id: &str) -> Result<(), JobError> {
    let Some(m) = messages::get_any(&d.db, id).await.map_err(db_error)? else {
        return Ok(());
    };
    let waiting = matches!(
        m.status,
        MessageStatus::Scheduled | MessageStatus::Queued | MessageStatus::Retrying
    );
    if waiting && m.send_at > Utc::now() {
        return Err(JobError::Defer {
            reason: "the message is due later".to_owned(),
            at_ms: m.send_at.timestamp_millis(),
        });
    }
    if m.status == MessageStatus::Sending {
        // Normally another copy of this job is sending it. A claim older than any attempt can
        // run belongs to a job Redis lost (it restarted without its last writes, or failed
        // over): the reconcile pushed this job to pick the message up again.
        let age = (Utc::now() - m.updated_at).to_std().unwrap_or_default();
        if age > d.stale_claim {
            let why = format!(
                "attempt {} started {} s ago and never reported back (its worker, its queue job or its record of the outcome was lost); trying again",
                m.attempts,
                age.as_secs()
            );
            if store::lifecycle::release_stale_claim(&d.db, id, m.updated_at, &why)
                .await
                .map_err(db_error)?
            {
                warn!(message_id = %id, tenant_id = %m.tenant_id, attempts = m.attempts, "took over a stale claim");
                return Err(JobError::RetryAt {
                    message: why,
                    at_ms: Utc::now().timestamp_millis(),
                });
            }
        }
    }
    debug!(message_id = %id, status = %m.status, "message is not waiting to be sent; job done");
    Ok(())
}

/// An SMS due inside its recipient's quiet hours waits for them to end, or expires when that
/// would be after its `expires_at`.
async fn quiet_hours(d: &Deliverer, c: &Claimed) -> Result<(), JobError> {
    let m = &c.message;
    let zone = c
        .zone
        .as_deref()
        .and_then(|z| z.parse::<chrono_tz::Tz>().ok())
        .unwrap_or(chrono_tz::UTC);
    let (Some(start), Some(end)) = (c.quiet_start, c.quiet_end) else {
        return Err(defer("quiet hours".to_owned(), Duration::from_secs(1)));
    };
    // Postgres judged it quiet a moment ago; if the window has just closed, try again now.
    let Some(until) = crate::schedule::quiet_until(Utc::now(), zone, start, end) else {
        return Err(defer(
            "quiet hours just ended".to_owned(),
            Duration::from_millis(100),
        ));
    };
    let local = until.with_timezone(&zone).format("%H:%M %Z");
    if until > m.expires_at {
        let why = format!(
            "quiet hours in {} last until {local}, after expires_at",
            zone.name()
        );
        store::lifecycle::expire_waiting(&d.db, &m.id, &why)
            .await
            .map_err(db_error)?;
        info!(message_id = %m.id, tenant_id = %m.tenant_id, "message expired: quiet hours outlast it");
        return Ok(());
    }
    let why = format!("deferred by quiet hours in {} until {local}", zone.name());
    store::lifecycle::defer_waiting(&d.db, &m.id, until, &why)
        .await
        .map_err(db_error)?;
    info!(message_id = %m.id, tenant_id = %m.tenant_id, until = %until, "message deferred by quiet hours");
    Err(JobError::Defer {
        reason: why,
        at_ms: until.timestamp_millis(),
    })
}

/// Records the outcome of the claimed attempt (batched with other workers' outcomes). Text
/// from outside (a provider's error) is cleaned and capped first, so Postgres can store it.
async fn finish(
    d: &Deliverer,
    m: &MessageRow,
    status: MessageStatus,
    provider_message_id: Option<String>,
    last_error: Option<&str>,
    detail: &str,
    next_attempt_at: Option<chrono::DateTime<Utc>>,
) -> Result<(), JobError> {
    let outcome = Outcome {
        id: m.id.clone(),
        status,
        last_error: last_error.map(|e| clean_text(e, MAX_ERROR_TEXT)),
        provider_message_id: provider_message_id.map(|id| clean_text(&id, 256)),
        detail: Some(clean_text(detail, MAX_DETAIL)),
        next_attempt_at,
        still_unsettled: false,
    };
    record_outcome(d, m, outcome).await
}

/// Records an outcome (see [`finish`]).
async fn record_outcome(d: &Deliverer, m: &MessageRow, outcome: Outcome) -> Result<(), JobError> {
    let status = outcome.status.as_str();
    let finished = outcome.status.is_outcome();
    // Once the provider has been called, the outcome must be recorded: given up, the job
    // would run again and send a second time. A Postgres outage is waited out, with backoff,
    // for as long as the job may still run.
    let recorded = (|| d.outcomes.call(outcome.clone()))
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(2))
                .with_jitter()
                .without_max_times()
                .with_total_delay(Some(RECORD_PATIENCE)),
        )
        .when(|e: &Arc<sqlx::Error>| store::is_unavailable(e))
        .notify(|e, wait| {
            warn!(message_id = %m.id, status, error = %e, retry_in_ms = wait.as_millis() as u64, "could not record the outcome; trying again");
        })
        .await;
    let changed = match recorded {
        Ok(changed) => changed,
        Err(e) if store::is_unavailable(&e) => {
            // Still down. Whether the provider took the message is now unknown; this job
            // comes back when its claim is stale and takes it over (see `not_claimed`).
            let stale_at =
                m.updated_at + chrono::Duration::from_std(d.stale_claim).unwrap_or_default();
            return Err(JobError::Defer {
                reason: format!("could not record the outcome ({status}): {e}"),
                at_ms: stale_at.timestamp_millis() + 1,
            });
        }
        // Postgres refused this outcome itself (its batch was split, so no other message
        // paid for it). Retrying the job would find the message `sending` and, once the claim
        // went stale, call the provider again: record the status without the details instead.
        Err(e) => {
            error!(message_id = %m.id, status, error = %e, "Postgres refused an outcome; recording its status alone");
            let bare = Outcome {
                last_error: outcome
                    .last_error
                    .as_ref()
                    .map(|_| "(the provider's error text could not be stored)".to_owned()),
                provider_message_id: None,
                detail: Some(format!("{status} (the details could not be stored)")),
                ..outcome
            };
            d.outcomes.call(bare).await.map_err(db_error)?
        }
    };
    if !changed {
        debug!(message_id = %m.id, status, "message left `sending` meanwhile; outcome not recorded");
    } else if finished {
        ::metrics::counter!("herald_messages_finished_total", "channel" => m.channel.as_str(), "status" => status)
            .increment(1);
    }
    Ok(())
}

/// Keeps a dead letter for a `failed` or `dead` message. A failure here is logged, not
/// retried: the message's status and events already say what happened.
async fn dead_letter(d: &Deliverer, m: &MessageRow, reason: &str) {
    let errors = store::dead_letters::attempt_errors(&d.db, &m.id)
        .await
        .unwrap_or(serde_json::Value::Array(vec![]));
    let refreshed = messages::get_any(&d.db, &m.id).await.ok().flatten();
    let row = refreshed.as_ref().unwrap_or(m);
    ::metrics::counter!("herald_dead_letters_total", "reason" => reason.to_owned()).increment(1);
    if let Err(e) = store::dead_letters::insert_dead_letter(
        &d.db,
        &new_id("dl"),
        DELIVERIES,
        row,
        reason,
        &errors,
    )
    .await
    {
        warn!(message_id = %m.id, error = %e, "could not write the dead letter");
    }
}
