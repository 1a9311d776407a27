//! Senders paused until the operator fixes something Twilio refused for a reason no retry can
//! mend (bad credentials, a region not enabled, a sender that cannot send). While paused, a
//! tenant's SMS (every SMS, for bad credentials) wait without spending attempts; one probe goes
//! through now and then (after the circuit cool-down, doubling to its maximum), and the first
//! send that succeeds lifts the pause. Pauses live in Postgres, shared by every worker; each
//! worker reads them at most once a second.

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tracing::{debug, info, warn};

use crate::{
    services::breaker::BreakerSettings,
    store::sender_pauses::{self, ACCOUNT, PauseRow},
};

/// How often a worker reads the pauses again.
const REFRESH: Duration = Duration::from_secs(1);

/// Whether a tenant's SMS may go now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Paused, but this send is the probe that may show it fixed.
    Probe,
    /// Paused: try again at `until`.
    Wait {
        until: DateTime<Utc>,
        why: String,
    },
}

pub struct SenderPauses {
    db: PgPool,
    first_wait: Duration,
    max_wait: Duration,
    snapshot: RwLock<(Option<Instant>, HashMap<String, PauseRow>)>,
    refreshing: tokio::sync::Mutex<()>,
}

impl SenderPauses {
    pub fn new(db: PgPool, circuit: &BreakerSettings) -> Self {
        Self {
            db,
            first_wait: circuit.cooldown,
            max_wait: circuit.max_cooldown,
            snapshot: RwLock::new((None, HashMap::new())),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The wait before the probe after `probes` probes.
    fn wait(&self, probes: i32) -> Duration {
        let doublings = u32::try_from(probes.clamp(0, 20)).unwrap_or(20);
        self.first_wait
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.max_wait)
    }

    fn after(&self, wait: Duration) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(1))
    }

    /// The pause holding `tenant`'s SMS, if any (the account's first).
    fn holding(&self, tenant: &str) -> Option<PauseRow> {
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        snapshot
            .1
            .get(ACCOUNT)
            .or_else(|| snapshot.1.get(tenant))
            .cloned()
    }

    /// Reads the pauses again when the last read is older than a second; one caller reads,
    /// the others go on with what was read before.
    async fn refresh(&self) {
        let stale = {
            let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
            snapshot.0.is_none_or(|at| at.elapsed() >= REFRESH)
        };
        if !stale {
            return;
        }
        let Ok(_one) = self.refreshing.try_lock() else {
            return;
        };
        match sender_pauses::all(&self.db).await {
            Ok(rows) => {
                ::metrics::gauge!("herald_senders_paused").set(rows.len() as f64);
                let rows = rows.into_iter().map(|r| (r.scope.clone(), r)).collect();
                *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) =
                    (Some(Instant::now()), rows);
            }
            // Unreadable pauses hold nothing back: the claim will find Postgres down anyway.
            Err(e) => debug!(error = %e, "sender pauses could not be read"),
        }
    }

    /// Whether `tenant`'s next SMS may go.
    pub async fn gate(&self, tenant: &str) -> Gate {
        self.refresh().await;
        let Some(pause) = self.holding(tenant) else {
            return Gate::Open;
        };
        let why = format!(
            "SMS from {} are paused until the operator fixes this: {}",
            if pause.scope == ACCOUNT {
                "every tenant".to_owned()
            } else {
                pause
                    .sender
                    .clone()
                    .unwrap_or_else(|| "this tenant's sender".to_owned())
            },
            pause.reason
        );
        if pause.probe_at <= Utc::now() {
            let next = self.after(self.wait(pause.probes + 1));
            match sender_pauses::take_probe(&self.db, &pause.scope, next).await {
                Ok(true) => {
                    self.remember(PauseRow {
                        probe_at: next,
                        probes: pause.probes + 1,
                        ..pause
                    });
                    return Gate::Probe;
                }
                // Another worker took it: wait for what it finds.
                Ok(false) => {
                    return Gate::Wait {
                        until: self.after(REFRESH),
                        why,
                    };
                }
                Err(e) => debug!(error = %e, "a sender probe could not be taken"),
            }
        }
        Gate::Wait {
            until: pause.probe_at.max(self.after(REFRESH)),
            why,
        }
    }

    fn remember(&self, row: PauseRow) {
        let mut snapshot = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        snapshot.1.insert(row.scope.clone(), row);
    }

    /// Pauses `scope` (a tenant, or [`ACCOUNT`]) after Twilio refused a send from `sender`
    /// with `code`; returns when its first probe may go.
    pub async fn pause(
        &self,
        scope: &str,
        sender: Option<&str>,
        code: u32,
        reason: &str,
    ) -> Result<DateTime<Utc>, sqlx::Error> {
        let held = self.holding(scope);
        let probe_at = self.after(self.wait(held.as_ref().map_or(0, |p| p.probes)));
        let row = sender_pauses::pause(
            &self.db,
            &PauseRow {
                scope: scope.to_owned(),
                provider: "twilio".to_owned(),
                sender: sender.map(str::to_owned),
                code: i32::try_from(code).unwrap_or(i32::MAX),
                reason: reason.to_owned(),
                since: Utc::now(),
                probes: 0,
                probe_at,
            },
        )
        .await?;
        if held.is_none() {
            warn!(
                scope,
                code, reason, "SMS sender paused until the operator fixes it"
            );
            ::metrics::counter!("herald_sender_pauses_total", "code" => code.to_string())
                .increment(1);
        }
        let probe_at = row.probe_at;
        self.remember(row);
        Ok(probe_at)
    }

    /// A send for `tenant` went through: whatever paused it is fixed.
    pub async fn resumed(&self, tenant: &str) -> Result<(), sqlx::Error> {
        for scope in [tenant, ACCOUNT] {
            let held = {
                let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
                snapshot.1.contains_key(scope)
            };
            if held && sender_pauses::lift(&self.db, scope).await? {
                info!(scope, "SMS sender resumed: a send went through");
            }
            if held {
                let mut snapshot = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
                snapshot.1.remove(scope);
            }
        }
        Ok(())
    }
}
