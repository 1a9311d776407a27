//! The inbox: a tenant's conversations, newest activity first, each with its newest entry;
//! what `GET /v1/conversations`, its ops twin and the dashboard show.

use std::collections::HashMap;

use sqlx::PgPool;

use super::audit;
use crate::{
    domain::audit::{AuditAction, AuditOrigin},
    store::{
        contacts::{self, ContactRow},
        conversations::{self as store, InboxFilter, InboxRow},
        messages::MessageRow,
    },
};

/// A person takes the contact's conversation over (`human`: no AI replies) or hands it back
/// (`ai`), recorded (`conversation.taken_over` or `conversation.released`) in the same
/// transaction. `None`: no such contact.
pub async fn set_mode(
    db: &PgPool,
    tenant_id: &str,
    contact_id: &str,
    human: bool,
    origin: &AuditOrigin,
) -> Result<Option<ContactRow>, sqlx::Error> {
    let (mode, action) = if human {
        ("human", AuditAction::ConversationTakenOver)
    } else {
        ("ai", AuditAction::ConversationReleased)
    };
    let mut tx = db.begin().await?;
    let Some(contact) = contacts::set_mode(&mut *tx, tenant_id, contact_id, mode).await? else {
        return Ok(None);
    };
    let detail = serde_json::json!({ "mode": mode });
    audit::record(
        &mut *tx,
        origin,
        action,
        contact_id,
        Some(tenant_id),
        detail,
    )
    .await?;
    tx.commit().await?;
    Ok(Some(contact))
}

/// One conversation of the inbox and its newest entry (`None` only if that entry was
/// removed between the two reads).
#[derive(Debug, Clone)]
pub struct InboxItem {
    pub row: InboxRow,
    pub last_entry: Option<MessageRow>,
}

/// Up to `limit + 1` conversations of the tenant's inbox (one more than a page, so the
/// caller can tell whether another follows), each with its newest entry.
pub async fn inbox(
    db: &PgPool,
    tenant_id: &str,
    filter: &InboxFilter<'_>,
    limit: i64,
) -> Result<Vec<InboxItem>, sqlx::Error> {
    let rows = store::inbox(db, tenant_id, filter, limit).await?;
    let ids: Vec<String> = rows.iter().map(|r| r.last_entry_id.clone()).collect();
    let mut last: HashMap<String, MessageRow> = store::entries(db, tenant_id, &ids)
        .await?
        .into_iter()
        .map(|m| (m.id.clone(), m))
        .collect();
    Ok(rows
        .into_iter()
        .map(|row| InboxItem {
            last_entry: last.remove(&row.last_entry_id),
            row,
        })
        .collect())
}
