//! Retention: what Herald removes once it is of no more use (the scheduler runs it hourly).

use sqlx::PgExecutor;

/// How many rows of each kind one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// `Idempotency-Key`s past their 24 hours.
    pub idempotency_keys: u64,
    /// Daily-run records older than 35 days (a local date is never run again by then).
    pub daily_runs: u64,
    /// What the `log` providers recorded, after 30 days.
    pub log_deliveries: u64,
    /// AI reply budget decisions older than a day (the budget looks back one hour).
    pub ai_reply_spends: u64,
}

impl Removed {
    pub fn total(&self) -> u64 {
        self.idempotency_keys + self.daily_runs + self.log_deliveries + self.ai_reply_spends
    }
}

/// One pass of retention.
pub async fn remove_expired<'c, E>(db: E) -> Result<Removed, sqlx::Error>
where
    E: PgExecutor<'c> + Copy,
{
    let run = |sql: &'static str| async move {
        Ok::<u64, sqlx::Error>(sqlx::query(sql).execute(db).await?.rows_affected())
    };
    Ok(Removed {
        idempotency_keys: run("DELETE FROM idempotency_keys WHERE expires_at < now()").await?,
        daily_runs: run("DELETE FROM daily_runs WHERE created_at < now() - interval '35 days'")
            .await?,
        log_deliveries: run("DELETE FROM log_deliveries WHERE at < now() - interval '30 days'")
            .await?,
        ai_reply_spends: run("DELETE FROM ai_reply_spends WHERE at < now() - interval '1 day'")
            .await?,
    })
}
