//! Contacts: the people a tenant messages.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ContactRow {
    pub id: String,
    pub tenant_id: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub timezone: Option<String>,
    pub opted_out: bool,
    pub opted_out_at: Option<DateTime<Utc>>,
    pub mode: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    id: &str,
) -> Result<Option<ContactRow>, sqlx::Error> {
    sqlx::query_as::<_, ContactRow>("SELECT * FROM contacts WHERE id = $1 AND tenant_id = $2")
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(db)
        .await
}

/// Whether this phone number has opted out of the tenant's texts.
pub async fn phone_opted_out(
    db: impl PgExecutor<'_>,
    tenant_id: &str,
    phone: &str,
) -> Result<bool, sqlx::Error> {
    let row: Option<bool> =
        sqlx::query_scalar("SELECT opted_out FROM contacts WHERE tenant_id = $1 AND phone = $2")
            .bind(tenant_id)
            .bind(phone)
            .fetch_optional(db)
            .await?;
    Ok(row.unwrap_or(false))
}

/// Opts a phone number out (creating its contact if needed), as Twilio error 21610 or a STOP
/// text asks.
pub async fn opt_out_phone(
    db: impl PgExecutor<'_>,
    id_if_new: &str,
    tenant_id: &str,
    phone: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO contacts (id, tenant_id, phone, opted_out, opted_out_at) VALUES ($1, $2, $3, true, now())
         ON CONFLICT (tenant_id, phone) WHERE phone IS NOT NULL
         DO UPDATE SET opted_out = true, opted_out_at = now(), updated_at = now()",
    )
    .bind(id_if_new)
    .bind(tenant_id)
    .bind(phone)
    .execute(db)
    .await?;
    Ok(())
}
