//! Contacts in bulk: an import upserts up to 10,000 rows by phone in a handful of statements.

use std::collections::HashSet;

use anyhow::Context;
use sqlx::PgPool;

use crate::store::{
    contacts::{self, ImportRow},
    groups,
};

/// The most rows one import takes.
pub const MAX_IMPORT_ROWS: usize = 10_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    pub created: u64,
    pub updated: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the tenant has no such group")]
    UnknownGroup,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Upserts checked rows (one per phone) into the tenant's contacts by phone, keeps each
/// consent given as a consent event, and adds every contact imported to `group_id`: all of it
/// or, on any failure or an unknown group, nothing. Five statements, whatever the row count.
pub async fn import(
    db: &PgPool,
    tenant_id: &str,
    default_timezone: &str,
    rows: &[ImportRow],
    group_id: Option<&str>,
) -> Result<Imported, ImportError> {
    let mut tx = db.begin().await.context("starting the import")?;
    if let Some(group) = group_id
        && groups::get(&mut *tx, tenant_id, group)
            .await
            .context("reading the group")?
            .is_none()
    {
        return Err(ImportError::UnknownGroup);
    }
    let all: Vec<&ImportRow> = rows.iter().collect();
    let inserted = contacts::import_insert(&mut tx, tenant_id, default_timezone, &all)
        .await
        .context("inserting the new contacts")?;
    let new_phones: HashSet<&str> = inserted.iter().map(|(_, p)| p.as_str()).collect();
    // The rest have a contact already (or one a concurrent request created meanwhile, which
    // this statement, reading afresh, sees).
    let rest: Vec<&ImportRow> = all
        .iter()
        .copied()
        .filter(|r| !new_phones.contains(r.phone.as_str()))
        .collect();
    let updated = if rest.is_empty() {
        Vec::new()
    } else {
        contacts::import_update(&mut tx, tenant_id, &rest)
            .await
            .context("updating the existing contacts")?
    };
    let ids: std::collections::HashMap<&str, &str> = inserted
        .iter()
        .chain(&updated)
        .map(|(id, phone)| (phone.as_str(), id.as_str()))
        .collect();
    let consents: Vec<(&str, &contacts::Consent)> = rows
        .iter()
        .filter_map(|r| Some((*ids.get(r.phone.as_str())?, r.consent.as_ref()?)))
        .collect();
    contacts::insert_consent_events(&mut tx, tenant_id, &consents)
        .await
        .context("recording the consents")?;
    if let Some(group) = group_id {
        let members: Vec<&str> = ids.values().copied().collect();
        groups::add_members_bulk(&mut *tx, group, &members)
            .await
            .context("adding the contacts to the group")?;
    }
    tx.commit().await.context("committing the import")?;
    Ok(Imported {
        created: inserted.len() as u64,
        updated: updated.len() as u64,
    })
}
