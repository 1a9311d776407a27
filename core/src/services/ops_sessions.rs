//! Dashboard sessions: a random id in the cookie, its hash and a CSRF token in Postgres, so
//! every API process knows a session, logging out ends it for every copy of its cookie, and a
//! new ops token (a session remembers the hash of the one it began with) ends them all.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngExt;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::audit;
use crate::{
    domain::audit::{AuditAction, AuditOrigin},
    store::ops_sessions,
};

/// How long a session lasts.
pub const SESSION_HOURS: i32 = 12;

/// A logged-in caller.
#[derive(Debug, Clone)]
pub struct Session {
    /// The hash of the cookie's id, as stored.
    pub id_hash: Vec<u8>,
    /// What every form of this session carries.
    pub csrf: String,
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sha256(data: &str) -> Vec<u8> {
    Sha256::digest(data.as_bytes()).to_vec()
}

/// Starts a session for whoever holds `ops_token`, recorded (`ops.login`) in the same
/// transaction; returns the id for the cookie.
pub async fn start(
    db: &PgPool,
    ops_token: &str,
    origin: &AuditOrigin,
) -> Result<String, sqlx::Error> {
    let id = random_token();
    let mut tx = db.begin().await?;
    ops_sessions::insert(
        &mut tx,
        &sha256(&id),
        &random_token(),
        &sha256(ops_token),
        SESSION_HOURS,
    )
    .await?;
    audit::record(
        &mut *tx,
        origin,
        AuditAction::OpsLogin,
        "dashboard",
        None,
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// A login with a wrong token (or none): recorded (`ops.login_failed`) even though nothing
/// changed, so guessing shows in the log. What was typed is never recorded.
pub async fn login_failed(db: &PgPool, origin: &AuditOrigin, why: &str) {
    let detail = serde_json::json!({ "reason": why });
    audit::record_after(
        db,
        origin,
        AuditAction::OpsLoginFailed,
        "dashboard",
        None,
        detail,
    )
    .await;
}

/// The live session a cookie's id names, begun with the current `ops_token`.
pub async fn find(db: &PgPool, id: &str, ops_token: &str) -> Result<Option<Session>, sqlx::Error> {
    if id.is_empty() || id.len() > 128 {
        return Ok(None);
    }
    let id_hash = sha256(id);
    let csrf = ops_sessions::find(db, &id_hash, &sha256(ops_token)).await?;
    Ok(csrf.map(|csrf| Session { id_hash, csrf }))
}

/// Ends a session.
pub async fn end(db: &PgPool, session: &Session) -> Result<(), sqlx::Error> {
    ops_sessions::delete(db, &session.id_hash).await
}

/// Whether a form carries the session's CSRF token.
pub fn csrf_ok(session: &Session, given: Option<&str>) -> bool {
    given.is_some_and(|g| crate::domain::constant_time_eq(session.csrf.as_bytes(), g.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_passes_only_with_its_sessions_csrf_token() {
        let s = Session {
            id_hash: sha256("id"),
            csrf: random_token(),
        };
        assert!(csrf_ok(&s, Some(&s.csrf.clone())));
        assert!(!csrf_ok(&s, None));
        assert!(!csrf_ok(&s, Some("")));
        assert!(!csrf_ok(&s, Some(&random_token())));
        assert_eq!(s.csrf.len(), 43, "32 random bytes");
        assert_ne!(random_token(), random_token());
    }
}
