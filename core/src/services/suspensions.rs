//! Tenants the operator suspended, as a worker sees them: their messages wait without
//! spending attempts until the suspension is lifted. Suspensions live in Postgres; each worker
//! reads the suspended tenants (one indexed query) at most once a second, so a change holds or
//! frees a tenant's jobs within about a second. The claim checks the row itself as well, so
//! nothing goes out in that second either.

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tracing::debug;

use crate::store::tenants;

/// How often a worker reads the suspended tenants again.
const REFRESH: Duration = Duration::from_secs(1);

pub struct Suspensions {
    db: PgPool,
    /// When it was read, and each suspended tenant with when this worker first saw it so (one
    /// suspension's episode: a waiting message is told once per episode, not per deferral).
    snapshot: RwLock<(Option<Instant>, HashMap<String, Instant>)>,
    refreshing: tokio::sync::Mutex<()>,
}

impl Suspensions {
    pub fn new(db: PgPool) -> Self {
        Self {
            db,
            snapshot: RwLock::new((None, HashMap::new())),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// When this worker first saw `tenant` suspended, if it is.
    pub async fn since(&self, tenant: &str) -> Option<Instant> {
        self.refresh().await;
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        snapshot.1.get(tenant).copied()
    }

    /// Reads the suspended tenants again when the last read is older than a second; one
    /// caller reads, the others go on with what was read before.
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
        match tenants::suspended_ids(&self.db).await {
            Ok(ids) => {
                let now = Instant::now();
                let mut snapshot = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
                let known = std::mem::take(&mut snapshot.1);
                snapshot.1 = ids
                    .into_iter()
                    .map(|id| {
                        let since = known.get(&id).copied().unwrap_or(now);
                        (id, since)
                    })
                    .collect();
                snapshot.0 = Some(now);
            }
            // Unreadable, the last snapshot stands; the claim reads the tenant anyway.
            Err(e) => debug!(error = %e, "suspended tenants could not be read"),
        }
    }
}
