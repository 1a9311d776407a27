//! Dashboard sessions: a random id in the cookie, its hash and a CSRF token in Postgres, so
//! every API process knows a session, logging out ends it for every copy of its cookie, and a
//! new ops token (a session remembers the hash of the one it began with) ends them all.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngExt;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::store::ops_sessions;

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

/// Starts a session for whoever holds `ops_token`; returns the id for the cookie.
pub async fn start(db: &PgPool, ops_token: &str) -> Result<String, sqlx::Error> {
    let id = random_token();
    ops_sessions::insert(
        db,
        &sha256(&id),
        &random_token(),
        &sha256(ops_token),
        SESSION_HOURS,
    )
    .await?;
    Ok(id)
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
