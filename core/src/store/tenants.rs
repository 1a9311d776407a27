//! Tenants and their API keys.

use chrono::{DateTime, NaiveTime, Utc};
use sqlx::{PgConnection, PgExecutor};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantRow {
    pub id: String,
    pub name: String,
    pub timezone: String,
    pub sms_from: Option<String>,
    pub email_from: Option<String>,
    pub quiet_start: Option<NaiveTime>,
    pub quiet_end: Option<NaiveTime>,
    pub webhook_secret: String,
    pub help_text: Option<String>,
    pub system_prompt: Option<String>,
    pub created_at: DateTime<Utc>,
    pub canned_reply: Option<String>,
    pub missed_call_text: Option<String>,
    pub missed_call_cooldown_minutes: i32,
    /// A bulk SMS to a contact whose consent is not `opted_in` is suppressed.
    pub require_consent_for_bulk: bool,
    /// At most `max` bulk messages per contact within `per` (both or neither).
    pub frequency_cap_max: Option<i32>,
    pub frequency_cap_per: Option<sqlx::postgres::types::PgInterval>,
    /// A Twilio Messaging Service (`MG...`) SMS go through instead of `sms_from`.
    pub messaging_service_sid: Option<String>,
    /// SMS segments per second, over the pace of the sender's class.
    pub sms_mps: Option<f64>,
    /// Days bodies and texts are kept.
    pub retention_days: i32,
    /// Its keys are refused and its messages wait (the operator's call).
    pub suspended: bool,
}

impl TenantRow {
    /// What this tenant's SMS are sent from: its Messaging Service, else its number.
    pub fn sms_sender(&self) -> Option<String> {
        self.messaging_service_sid
            .clone()
            .or_else(|| self.sms_from.clone())
    }
}

#[derive(Debug, Clone)]
pub struct NewTenantRow<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub timezone: &'a str,
    pub sms_from: Option<&'a str>,
    pub email_from: Option<&'a str>,
    pub quiet_hours: Option<(NaiveTime, NaiveTime)>,
    pub webhook_secret: &'a str,
    pub help_text: Option<&'a str>,
    pub system_prompt: Option<&'a str>,
    pub canned_reply: Option<&'a str>,
    pub missed_call_text: Option<&'a str>,
    pub missed_call_cooldown_minutes: i32,
    pub require_consent_for_bulk: bool,
    /// `(max, per)`.
    pub frequency_cap: Option<(i32, std::time::Duration)>,
    pub messaging_service_sid: Option<&'a str>,
    pub sms_mps: Option<f64>,
    pub retention_days: i32,
}

/// Inserts a tenant; `Ok(None)` when its `sms_from` belongs to another tenant already.
pub async fn insert(
    conn: &mut PgConnection,
    t: &NewTenantRow<'_>,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as::<_, TenantRow>(
        "INSERT INTO tenants (id, name, timezone, sms_from, email_from, quiet_start, quiet_end, webhook_secret,
                              help_text, system_prompt, canned_reply, missed_call_text, missed_call_cooldown_minutes,
                              require_consent_for_bulk, frequency_cap_max, frequency_cap_per,
                              messaging_service_sid, sms_mps, retention_days)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                 make_interval(secs => $16::float8), $17, $18, $19)
         ON CONFLICT (sms_from) DO NOTHING
         RETURNING *",
    )
    .bind(t.id)
    .bind(t.name)
    .bind(t.timezone)
    .bind(t.sms_from)
    .bind(t.email_from)
    .bind(t.quiet_hours.map(|q| q.0))
    .bind(t.quiet_hours.map(|q| q.1))
    .bind(t.webhook_secret)
    .bind(t.help_text)
    .bind(t.system_prompt)
    .bind(t.canned_reply)
    .bind(t.missed_call_text)
    .bind(t.missed_call_cooldown_minutes)
    .bind(t.require_consent_for_bulk)
    .bind(t.frequency_cap.map(|c| c.0))
    .bind(t.frequency_cap.map(|c| c.1.as_secs_f64()))
    .bind(t.messaging_service_sid)
    .bind(t.sms_mps)
    .bind(t.retention_days)
    .fetch_optional(conn)
    .await
}

pub async fn get(db: impl PgExecutor<'_>, id: &str) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as::<_, TenantRow>("SELECT * FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// A tenant, locked until the transaction ends (its settings are about to change).
pub async fn get_for_update(
    conn: &mut PgConnection,
    id: &str,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as::<_, TenantRow>("SELECT * FROM tenants WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Every tenant, oldest first.
pub async fn all(db: impl PgExecutor<'_>) -> Result<Vec<TenantRow>, sqlx::Error> {
    sqlx::query_as::<_, TenantRow>("SELECT * FROM tenants ORDER BY id")
        .fetch_all(db)
        .await
}

/// Every tenant, newest first, older than the tenant `before` (the cursor); up to `limit + 1`
/// so the caller knows whether another page follows.
pub async fn list(
    db: impl PgExecutor<'_>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<TenantRow>, sqlx::Error> {
    sqlx::query_as::<_, TenantRow>(
        "SELECT * FROM tenants WHERE ($1::text IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(before)
    .bind(limit + 1)
    .fetch_all(db)
    .await
}

/// Writes every setting of `t` (all but its id, secret and creation time). Another tenant's
/// `sms_from` is a unique violation (the caller answers 409).
pub async fn write_settings(
    conn: &mut PgConnection,
    t: &TenantRow,
) -> Result<TenantRow, sqlx::Error> {
    sqlx::query_as::<_, TenantRow>(
        "UPDATE tenants SET name = $2, timezone = $3, sms_from = $4, email_from = $5,
                quiet_start = $6, quiet_end = $7, help_text = $8, system_prompt = $9,
                canned_reply = $10, missed_call_text = $11, missed_call_cooldown_minutes = $12,
                require_consent_for_bulk = $13, frequency_cap_max = $14, frequency_cap_per = $15,
                messaging_service_sid = $16, sms_mps = $17, retention_days = $18, suspended = $19
         WHERE id = $1
         RETURNING *",
    )
    .bind(&t.id)
    .bind(&t.name)
    .bind(&t.timezone)
    .bind(&t.sms_from)
    .bind(&t.email_from)
    .bind(t.quiet_start)
    .bind(t.quiet_end)
    .bind(&t.help_text)
    .bind(&t.system_prompt)
    .bind(&t.canned_reply)
    .bind(&t.missed_call_text)
    .bind(t.missed_call_cooldown_minutes)
    .bind(t.require_consent_for_bulk)
    .bind(t.frequency_cap_max)
    .bind(t.frequency_cap_per)
    .bind(&t.messaging_service_sid)
    .bind(t.sms_mps)
    .bind(t.retention_days)
    .bind(t.suspended)
    .fetch_one(conn)
    .await
}

/// The ids of every suspended tenant.
pub async fn suspended_ids(db: impl PgExecutor<'_>) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM tenants WHERE suspended")
        .fetch_all(db)
        .await
}

pub async fn insert_key(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    key_prefix: &str,
    key_hash: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO api_keys (key_prefix, tenant_id, key_hash) VALUES ($1, $2, $3)")
        .bind(key_prefix)
        .bind(tenant_id)
        .bind(key_hash)
        .execute(db)
        .await?;
    Ok(())
}

/// The tenants owning live keys with these hashes: `(tenant, key_prefix, key_hash)`.
pub async fn find_by_key_hashes(
    db: impl PgExecutor<'_>,
    key_hashes: &[Vec<u8>],
) -> Result<Vec<(TenantRow, String, Vec<u8>)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        tenant: TenantRow,
        key_prefix: String,
        key_hash: Vec<u8>,
    }
    let rows = sqlx::query_as::<_, Row>(
        "SELECT t.*, k.key_prefix, k.key_hash FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
         WHERE k.key_hash = ANY($1) AND k.revoked_at IS NULL",
    )
    .bind(key_hashes)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.tenant, r.key_prefix, r.key_hash))
        .collect())
}

/// Revokes a key; the tenant it belonged to, or `None` when no live key has that prefix.
pub async fn revoke_key(
    db: impl PgExecutor<'_>,
    key_prefix: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE api_keys SET revoked_at = now() WHERE key_prefix = $1 AND revoked_at IS NULL
         RETURNING tenant_id",
    )
    .bind(key_prefix)
    .fetch_optional(db)
    .await
}

/// The tenant whose `sms_from` is this number (inbound texts name their tenant by `To`).
pub async fn by_sms_from(
    db: impl PgExecutor<'_>,
    number: &str,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as::<_, TenantRow>("SELECT * FROM tenants WHERE sms_from = $1")
        .bind(number)
        .fetch_optional(db)
        .await
}

/// A tenant's SMS pace over its sender's class, if it set one.
pub async fn sms_mps(db: impl PgExecutor<'_>, id: &str) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar::<_, Option<f64>>("SELECT sms_mps FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
        .map(Option::flatten)
}
