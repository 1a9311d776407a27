//! The audit log: every change an operator or a tenant administrator makes is appended here.
//! A change that is one transaction appends its entry inside it ([`record`] with the
//! transaction); one that is not (a replay that also pushes to Redis) appends right after it
//! succeeded ([`record_after`]).

use serde_json::Value;
use sqlx::{PgExecutor, PgPool};

use crate::{
    domain::{
        audit::{AuditAction, AuditOrigin},
        new_id,
    },
    store::audit::{self, AuditFilter, AuditRow, NewAuditRow},
};

/// Appends one entry, on `db` (a transaction, to commit with the change it records).
pub async fn record(
    db: impl PgExecutor<'_>,
    origin: &AuditOrigin,
    action: AuditAction,
    target: &str,
    tenant_id: Option<&str>,
    detail: Value,
) -> Result<(), sqlx::Error> {
    let id = new_id("aud");
    audit::insert(
        db,
        &NewAuditRow {
            id: &id,
            actor: &origin.actor,
            action: action.as_str(),
            target,
            tenant_id,
            client_ip: origin.client_ip.map(|ip| ip.to_string()),
            request_id: origin.request_id.as_deref(),
            detail: &detail,
        },
    )
    .await
}

/// Appends one entry for a change that already succeeded. The change stands even when the
/// entry cannot be written (answering 500 would tell the caller it did not happen), so a
/// failure is logged loudly rather than returned.
pub async fn record_after(
    db: &PgPool,
    origin: &AuditOrigin,
    action: AuditAction,
    target: &str,
    tenant_id: Option<&str>,
    detail: Value,
) {
    if let Err(e) = record(db, origin, action, target, tenant_id, detail).await {
        tracing::error!(
            error = %e,
            action = action.as_str(),
            target,
            actor = %origin.actor,
            "could not write an audit entry for a change that was made"
        );
    }
}

/// `contact.exported`, written before the export is sent.
pub async fn contact_exported(
    db: impl PgExecutor<'_>,
    origin: &AuditOrigin,
    tenant_id: &str,
    contact_id: &str,
) -> Result<(), sqlx::Error> {
    let detail = Value::Object(serde_json::Map::new());
    record(
        db,
        origin,
        AuditAction::ContactExported,
        contact_id,
        Some(tenant_id),
        detail,
    )
    .await
}

/// `contact.erased`, in the erasure's transaction; `erased` holds the counts it
/// answers with (never the person's data).
pub async fn contact_erased(
    db: impl PgExecutor<'_>,
    origin: &AuditOrigin,
    tenant_id: &str,
    contact_id: &str,
    erased: Value,
) -> Result<(), sqlx::Error> {
    let detail = serde_json::json!({ "erased": erased });
    record(
        db,
        origin,
        AuditAction::ContactErased,
        contact_id,
        Some(tenant_id),
        detail,
    )
    .await
}

/// A page of entries, newest first, and the cursor of the next page.
pub async fn list(
    db: &PgPool,
    filter: &AuditFilter,
    before: Option<&str>,
    limit: i64,
) -> Result<(Vec<AuditRow>, Option<String>), sqlx::Error> {
    let mut rows = audit::list(db, filter, before, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next = more.then(|| rows.last().map(|r| r.id.clone())).flatten();
    Ok((rows, next))
}
