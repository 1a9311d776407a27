//! Tenants and API keys: creation, key rotation and revocation, and authentication.

use std::{collections::HashMap, sync::Arc};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::NaiveTime;
use rand::RngExt;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio_util::task::TaskTracker;

use crate::{
    batch::Batcher,
    domain::{
        PhoneNumber, TimeZone,
        audit::{AuditAction, AuditOrigin},
        new_id,
    },
    services::audit,
    store::tenants::{self, NewTenantRow, TenantRow},
};

#[derive(Debug, Clone)]
pub struct NewTenant {
    pub name: String,
    pub timezone: TimeZone,
    pub sms_from: Option<PhoneNumber>,
    pub email_from: Option<String>,
    /// `None`: no quiet hours.
    pub quiet_hours: Option<(NaiveTime, NaiveTime)>,
    /// The answer to HELP or INFO.
    pub help_text: Option<String>,
    /// The AI's instructions (a safe default otherwise).
    pub system_prompt: Option<String>,
    /// Sent when no model answers.
    pub canned_reply: Option<String>,
    /// Texted to a caller whose call was missed.
    pub missed_call_text: Option<String>,
    /// One text-back per caller within this many minutes.
    pub missed_call_cooldown_minutes: i32,
    /// A bulk SMS needs the contact's consent (`opted_in`).
    pub require_consent_for_bulk: bool,
    /// At most this many bulk messages per contact within this span.
    pub frequency_cap: Option<(i32, std::time::Duration)>,
    /// A Twilio Messaging Service (`MG` + 32 hex) to send SMS through instead of `sms_from`.
    pub messaging_service_sid: Option<String>,
    /// SMS segments per second, over the pace of the sender's class.
    pub sms_mps: Option<f64>,
    /// Days bodies and texts are kept.
    pub retention_days: i32,
}

/// What a new tenant gets for a setting its request leaves out.
pub const DEFAULT_RETENTION_DAYS: i32 = 90;
pub const DEFAULT_MISSED_CALL_COOLDOWN_MINUTES: i32 = 10;

/// Settings as one request gives them, checked already. `None` is a field the request left
/// out; for a setting that may be unset, `Some(None)` is an explicit `null`. A new tenant
/// ([`TenantChanges::into_new`]) takes the defaults for what is left out; an existing one
/// ([`TenantChanges::apply`]) keeps it.
#[derive(Debug, Clone, Default)]
pub struct TenantChanges {
    pub name: Option<String>,
    pub timezone: Option<TimeZone>,
    pub sms_from: Option<Option<PhoneNumber>>,
    pub email_from: Option<Option<String>>,
    /// `Some(None)`: no quiet hours.
    pub quiet_hours: Option<Option<(NaiveTime, NaiveTime)>>,
    pub help_text: Option<Option<String>>,
    pub system_prompt: Option<Option<String>>,
    pub canned_reply: Option<Option<String>>,
    pub missed_call_text: Option<Option<String>>,
    pub missed_call_cooldown_minutes: Option<i32>,
    pub require_consent_for_bulk: Option<bool>,
    pub frequency_cap: Option<Option<(i32, std::time::Duration)>>,
    pub messaging_service_sid: Option<Option<String>>,
    pub sms_mps: Option<Option<f64>>,
    pub retention_days: Option<i32>,
    /// Only the operator sets it.
    pub suspended: Option<bool>,
}

impl TenantChanges {
    /// A new tenant named `name`, with the defaults for every setting left out (quiet hours
    /// are the caller's: their default is a window, not "none").
    pub fn into_new(self, name: String, default_quiet: (NaiveTime, NaiveTime)) -> NewTenant {
        NewTenant {
            name,
            timezone: self.timezone.unwrap_or(TimeZone(chrono_tz::UTC)),
            sms_from: self.sms_from.flatten(),
            email_from: self.email_from.flatten(),
            quiet_hours: self.quiet_hours.unwrap_or(Some(default_quiet)),
            help_text: self.help_text.flatten(),
            system_prompt: self.system_prompt.flatten(),
            canned_reply: self.canned_reply.flatten(),
            missed_call_text: self.missed_call_text.flatten(),
            missed_call_cooldown_minutes: self
                .missed_call_cooldown_minutes
                .unwrap_or(DEFAULT_MISSED_CALL_COOLDOWN_MINUTES),
            require_consent_for_bulk: self.require_consent_for_bulk.unwrap_or(false),
            frequency_cap: self.frequency_cap.flatten(),
            messaging_service_sid: self.messaging_service_sid.flatten(),
            sms_mps: self.sms_mps.flatten(),
            retention_days: self.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS),
        }
    }

    /// The names (as the API spells them) of the settings this request changes, for the
    /// audit log: which, never their values.
    pub fn field_names(&self) -> Vec<&'static str> {
        let given = [
            ("name", self.name.is_some()),
            ("timezone", self.timezone.is_some()),
            ("sms_from", self.sms_from.is_some()),
            ("email_from", self.email_from.is_some()),
            ("quiet_hours", self.quiet_hours.is_some()),
            ("help_text", self.help_text.is_some()),
            ("ai_system_prompt", self.system_prompt.is_some()),
            ("canned_reply", self.canned_reply.is_some()),
            ("missed_call_text", self.missed_call_text.is_some()),
            (
                "missed_call_cooldown_minutes",
                self.missed_call_cooldown_minutes.is_some(),
            ),
            (
                "require_consent_for_bulk",
                self.require_consent_for_bulk.is_some(),
            ),
            ("frequency_cap", self.frequency_cap.is_some()),
            (
                "messaging_service_sid",
                self.messaging_service_sid.is_some(),
            ),
            ("sms_mps", self.sms_mps.is_some()),
            ("retention_days", self.retention_days.is_some()),
            ("suspended", self.suspended.is_some()),
        ];
        given
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect()
    }

    /// Sets what the request gave on `t`; the rest stays.
    pub fn apply(self, t: &mut TenantRow) {
        fn set<T>(field: &mut T, change: Option<T>) {
            if let Some(v) = change {
                *field = v;
            }
        }
        set(&mut t.name, self.name);
        set(&mut t.timezone, self.timezone.map(|z| z.name().to_owned()));
        set(
            &mut t.sms_from,
            self.sms_from.map(|p| p.map(|p| p.as_str().to_owned())),
        );
        set(&mut t.email_from, self.email_from);
        if let Some(quiet) = self.quiet_hours {
            t.quiet_start = quiet.map(|q| q.0);
            t.quiet_end = quiet.map(|q| q.1);
        }
        set(&mut t.help_text, self.help_text);
        set(&mut t.system_prompt, self.system_prompt);
        set(&mut t.canned_reply, self.canned_reply);
        set(&mut t.missed_call_text, self.missed_call_text);
        set(
            &mut t.missed_call_cooldown_minutes,
            self.missed_call_cooldown_minutes,
        );
        set(
            &mut t.require_consent_for_bulk,
            self.require_consent_for_bulk,
        );
        if let Some(cap) = self.frequency_cap {
            t.frequency_cap_max = cap.map(|c| c.0);
            t.frequency_cap_per = cap.map(|c| interval(c.1));
        }
        set(&mut t.messaging_service_sid, self.messaging_service_sid);
        set(&mut t.sms_mps, self.sms_mps);
        set(&mut t.retention_days, self.retention_days);
        set(&mut t.suspended, self.suspended);
    }
}

/// A span as Postgres keeps it (whole microseconds; the caps are minutes to days).
fn interval(span: std::time::Duration) -> sqlx::postgres::types::PgInterval {
    sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: i64::try_from(span.as_micros()).unwrap_or(i64::MAX),
    }
}

#[derive(Debug)]
pub struct CreatedTenant {
    pub tenant: TenantRow,
    pub api_key: String,
    pub key_prefix: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error("another tenant already sends from this number")]
    SmsFromTaken,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Length of the public prefix of a key, safe to show and log.
pub const KEY_PREFIX_LEN: usize = 12;

/// A new API key: `hk_` and 40 random base62 characters (about 238 bits).
pub fn generate_key() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let mut key = String::from("hk_");
    key.extend((0..40).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char));
    key
}

/// Keys carry enough entropy that a fast hash is safe; only the hash is stored.
pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// `whsec_` and the base64 of 32 random bytes, as Standard Webhooks secrets look.
pub fn generate_webhook_secret() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// Creates a tenant and its first key; `origin`, when given, is recorded in the same
/// transaction as `tenant.created` (the benchmark's set-up passes none).
pub async fn create(
    db: &PgPool,
    new: &NewTenant,
    origin: Option<&AuditOrigin>,
) -> Result<CreatedTenant, TenantError> {
    let id = new_id("ten");
    let secret = generate_webhook_secret();
    let api_key = generate_key();
    let key_prefix = api_key[..KEY_PREFIX_LEN].to_owned();
    let mut tx = db
        .begin()
        .await
        .context("starting the tenant's transaction")?;
    let row = NewTenantRow {
        id: &id,
        name: &new.name,
        timezone: new.timezone.name(),
        sms_from: new.sms_from.as_ref().map(PhoneNumber::as_str),
        email_from: new.email_from.as_deref(),
        quiet_hours: new.quiet_hours,
        webhook_secret: &secret,
        help_text: new.help_text.as_deref(),
        system_prompt: new.system_prompt.as_deref(),
        canned_reply: new.canned_reply.as_deref(),
        missed_call_text: new.missed_call_text.as_deref(),
        missed_call_cooldown_minutes: new.missed_call_cooldown_minutes,
        require_consent_for_bulk: new.require_consent_for_bulk,
        frequency_cap: new.frequency_cap,
        messaging_service_sid: new.messaging_service_sid.as_deref(),
        sms_mps: new.sms_mps,
        retention_days: new.retention_days,
    };
    let Some(tenant) = tenants::insert(&mut tx, &row)
        .await
        .context("inserting the tenant")?
    else {
        return Err(TenantError::SmsFromTaken);
    };
    tenants::insert_key(&mut *tx, &id, &key_prefix, &hash_key(&api_key))
        .await
        .context("storing its first key")?;
    if let Some(origin) = origin {
        let detail = serde_json::json!({ "name": new.name, "key_prefix": key_prefix });
        audit::record(
            &mut *tx,
            origin,
            AuditAction::TenantCreated,
            &id,
            Some(&id),
            detail,
        )
        .await
        .context("recording the creation")?;
    }
    tx.commit().await.context("committing the tenant")?;
    Ok(CreatedTenant {
        tenant,
        api_key,
        key_prefix,
    })
}

/// Changes a tenant's settings (and, for the operator, whether it is suspended); `None` when
/// there is no such tenant. An `sms_from` another tenant has is refused: inbound texts are
/// routed by it. Every process reads settings from Postgres when it uses them (the API per
/// request, the worker's claim per message) except the worker's `sms_mps` and suspension
/// snapshots, which are at most a second old.
///
/// The change is recorded in the same transaction: `tenant.suspended` when it suspends the
/// tenant, `tenant.updated` otherwise, with the names of the fields given.
pub async fn update(
    db: &PgPool,
    id: &str,
    changes: TenantChanges,
    origin: &AuditOrigin,
) -> Result<Option<TenantRow>, TenantError> {
    let mut tx = db
        .begin()
        .await
        .context("starting the settings' transaction")?;
    let Some(mut tenant) = tenants::get_for_update(&mut tx, id)
        .await
        .context("reading the tenant")?
    else {
        return Ok(None);
    };
    let suspending = changes.suspended.filter(|s| *s != tenant.suspended);
    let fields = changes.field_names();
    changes.apply(&mut tenant);
    let tenant = match tenants::write_settings(&mut tx, &tenant).await {
        Ok(t) => t,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            return Err(TenantError::SmsFromTaken);
        }
        Err(e) => return Err(anyhow::Error::new(e).context("writing the settings").into()),
    };
    let action = if suspending == Some(true) {
        AuditAction::TenantSuspended
    } else {
        AuditAction::TenantUpdated
    };
    let mut detail = serde_json::json!({ "fields": fields });
    if let Some(suspended) = suspending {
        detail["suspended"] = suspended.into();
    }
    audit::record(&mut *tx, origin, action, id, Some(id), detail)
        .await
        .context("recording the change")?;
    tx.commit().await.context("committing the settings")?;
    if let Some(suspended) = suspending {
        tracing::info!(tenant_id = %tenant.id, suspended, "tenant suspension changed");
    }
    Ok(Some(tenant))
}

/// A page of tenants, newest first, and the cursor of the next page.
pub async fn list(
    db: &PgPool,
    before: Option<&str>,
    limit: i64,
) -> Result<(Vec<TenantRow>, Option<String>), sqlx::Error> {
    let mut rows = tenants::list(db, before, limit).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = more.then(|| rows.last().map(|t| t.id.clone())).flatten();
    Ok((rows, next))
}

/// A new key for a tenant, recorded (`key.created`) in the same transaction; `None` when
/// there is no such tenant.
pub async fn create_key(
    db: &PgPool,
    tenant_id: &str,
    origin: &AuditOrigin,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let mut tx = db.begin().await?;
    if tenants::get(&mut *tx, tenant_id).await?.is_none() {
        return Ok(None);
    }
    let api_key = generate_key();
    let key_prefix = api_key[..KEY_PREFIX_LEN].to_owned();
    tenants::insert_key(&mut *tx, tenant_id, &key_prefix, &hash_key(&api_key)).await?;
    audit::record(
        &mut *tx,
        origin,
        AuditAction::KeyCreated,
        &key_prefix,
        Some(tenant_id),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(Some((api_key, key_prefix)))
}

/// Revokes a key, recorded (`key.revoked`) in the same transaction; false when no live key
/// has that prefix.
pub async fn revoke_key(
    db: &PgPool,
    key_prefix: &str,
    origin: &AuditOrigin,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let Some(tenant_id) = tenants::revoke_key(&mut *tx, key_prefix).await? else {
        return Ok(false);
    };
    audit::record(
        &mut *tx,
        origin,
        AuditAction::KeyRevoked,
        key_prefix,
        Some(&tenant_id),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Looks keys up for the API: concurrent requests share one query, and every lookup reads
/// the database, so a revoked key stops working at once.
#[derive(Clone, Debug)]
pub struct KeyLookup {
    batcher: Batcher<Vec<u8>, Option<(TenantRow, String)>>,
}

impl KeyLookup {
    pub fn start(db: PgPool, tasks: &TaskTracker) -> Self {
        let batcher = Batcher::spawn(tasks, 256, 2, move |hashes: Arc<[Vec<u8>]>| {
            let db = db.clone();
            async move {
                let found: HashMap<Vec<u8>, (TenantRow, String)> =
                    tenants::find_by_key_hashes(&db, &hashes)
                        .await?
                        .into_iter()
                        .map(|(t, prefix, hash)| (hash, (t, prefix)))
                        .collect();
                // The same key often comes several times in one batch.
                Ok(hashes.iter().map(|h| found.get(h).cloned()).collect())
            }
        });
        Self { batcher }
    }

    /// The tenant a presented key belongs to, with the key's prefix; `None` for an unknown or
    /// revoked key.
    pub async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<Option<(TenantRow, String)>, Arc<sqlx::Error>> {
        if !presented.starts_with("hk_") || presented.len() > 128 {
            return Ok(None);
        }
        self.batcher.call(hash_key(presented)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_prefixed() {
        let a = generate_key();
        let b = generate_key();
        assert!(a.starts_with("hk_"));
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert_eq!(hash_key(&a).len(), 32);
    }

    #[test]
    fn webhook_secrets_hold_32_bytes() {
        let s = generate_webhook_secret();
        let raw = STANDARD.decode(s.strip_prefix("whsec_").unwrap()).unwrap();
        assert_eq!(raw.len(), 32);
    }
}
