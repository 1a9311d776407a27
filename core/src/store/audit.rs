//! The audit log's rows: appended, and read a page at a time. Postgres refuses every UPDATE,
//! DELETE and TRUNCATE of them (migration 0022), so there is no function here for either.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub tenant_id: Option<String>,
    pub client_ip: Option<String>,
    pub request_id: Option<String>,
    pub detail: serde_json::Value,
}

/// One entry to append.
#[derive(Debug, Clone)]
pub struct NewAuditRow<'a> {
    pub id: &'a str,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub tenant_id: Option<&'a str>,
    pub client_ip: Option<String>,
    pub request_id: Option<&'a str>,
    pub detail: &'a serde_json::Value,
}

pub async fn insert(db: impl PgExecutor<'_>, row: &NewAuditRow<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (id, actor, action, target, tenant_id, client_ip, request_id, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(row.id)
    .bind(row.actor)
    .bind(row.action)
    .bind(row.target)
    .bind(row.tenant_id)
    .bind(&row.client_ip)
    .bind(row.request_id)
    .bind(row.detail)
    .execute(db)
    .await?;
    Ok(())
}

/// Which entries; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// A tenant key sees only its own tenant's: set this for tenant callers.
    pub tenant_id: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// Up to `limit` entries, newest first, older than the entry `before` when given.
pub async fn list(
    db: impl PgExecutor<'_>,
    filter: &AuditFilter,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query_as::<_, AuditRow>(
        "SELECT * FROM audit_log
         WHERE ($1::text IS NULL OR tenant_id = $1)
           AND ($2::text IS NULL OR action = $2)
           AND ($3::text IS NULL OR actor = $3)
           AND ($4::timestamptz IS NULL OR at >= $4)
           AND ($5::timestamptz IS NULL OR at < $5)
           AND ($6::text IS NULL OR id < $6)
         ORDER BY id DESC LIMIT $7",
    )
    .bind(&filter.tenant_id)
    .bind(&filter.action)
    .bind(&filter.actor)
    .bind(filter.since)
    .bind(filter.until)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}
