//! The usage gauges the alert rules read: per tenant, today's SMS segments and model tokens
//! so far (in the tenant's zone) and the mean of its 7 days before (of its whole days, for a
//! tenant younger than that), so that a tenant whose day runs above twice its usual is noticed
//! while the day is still going.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;

use crate::store::{
    tenants::{self, TenantRow},
    usage::{self, UsageDay},
};

/// The days before today the average is taken over.
const BASELINE_DAYS: i64 = 7;

/// What is watched: `sms_segments` and `model_tokens`.
const KINDS: [&str; 2] = ["sms_segments", "model_tokens"];

fn figures(day: &UsageDay) -> [f64; 2] {
    [day.sms_segments as f64, day.model_tokens() as f64]
}

/// The gauges' state between passes: each tenant's baseline, read once per local day (the days
/// before today hardly change), and the tenants that have gauges.
#[derive(Default)]
pub struct UsageWatch {
    baselines: HashMap<String, (NaiveDate, [f64; 2])>,
    exported: HashSet<String>,
}

impl UsageWatch {
    /// Sets `herald_usage_today{tenant_id,kind}` and `herald_usage_daily_average{tenant_id,kind}`
    /// for every tenant with usage in the last 8 days; a tenant that had gauges and has no usage
    /// left in them is set to zero. One tenant's failure is logged and the others go on.
    pub async fn record(&mut self, db: &PgPool, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
        let tenants = tenants::all(db).await?;
        let (mut failures, mut last_error) = (0, None);
        for t in &tenants {
            if let Err(e) = self.record_one(db, t, now).await {
                tracing::warn!(tenant_id = %t.id, error = %e, "could not read a tenant's usage");
                failures += 1;
                last_error = Some(e);
            }
        }
        let known: HashSet<&str> = tenants.iter().map(|t| t.id.as_str()).collect();
        self.baselines.retain(|id, _| known.contains(id.as_str()));
        match last_error {
            // Not one tenant could be read: the pass failed (Postgres is down, say).
            Some(e) if failures == tenants.len() => Err(e),
            _ => Ok(()),
        }
    }

    async fn record_one(
        &mut self,
        db: &PgPool,
        tenant: &TenantRow,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let tenant_id = tenant.id.as_str();
        let zone: Tz = tenant.timezone.parse().unwrap_or(chrono_tz::UTC);
        let today = usage::today(zone, now);
        let baseline = match self.baselines.get(tenant_id) {
            Some((date, figures)) if *date == today => *figures,
            _ => {
                // The whole days the tenant has had, at most 7: a tenant in its first day has
                // no average yet (its first busy day is no jump), one in its third has two.
                let first_whole = usage::today(zone, tenant.created_at) + Duration::days(1);
                let days = (today - first_whole).num_days().clamp(0, BASELINE_DAYS);
                let mut sum = [0.0; 2];
                if days > 0 {
                    let first = today - Duration::days(days);
                    let yesterday = today - Duration::days(1);
                    for day in usage::days(db, tenant_id, zone, first, yesterday).await? {
                        let f = figures(&day);
                        sum[0] += f[0];
                        sum[1] += f[1];
                    }
                }
                let mean = sum.map(|s| if days > 0 { s / days as f64 } else { 0.0 });
                self.baselines.insert(tenant_id.to_owned(), (today, mean));
                mean
            }
        };
        let now_figures = usage::days(db, tenant_id, zone, today, today)
            .await?
            .first()
            .map(figures)
            .unwrap_or_default();
        let any = baseline.iter().chain(&now_figures).any(|f| *f > 0.0);
        if !any && !self.exported.contains(tenant_id) {
            return Ok(());
        }
        for (i, kind) in KINDS.into_iter().enumerate() {
            let labels = [
                ("tenant_id", tenant_id.to_owned()),
                ("kind", kind.to_owned()),
            ];
            ::metrics::gauge!("herald_usage_today", &labels).set(now_figures[i]);
            ::metrics::gauge!("herald_usage_daily_average", &labels).set(baseline[i]);
        }
        if any {
            self.exported.insert(tenant_id.to_owned());
        } else {
            self.exported.remove(tenant_id);
        }
        Ok(())
    }
}
