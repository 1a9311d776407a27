//! The store: sqlx functions over Postgres, each taking an executor (a pool, a connection or
//! a transaction) so services decide what runs in one transaction.

pub mod appointments;
pub mod audit;
pub mod contacts;
pub mod conversations;
pub mod dead_letters;
pub mod erasure;
pub mod events;
pub mod groups;
pub mod idempotency;
pub mod lifecycle;
pub mod messages;
pub mod ops_sessions;
pub mod outbox;
pub mod retention;
pub mod sender_pauses;
pub mod subscriptions;
pub mod tenants;
pub mod types;

/// Whether an error means Postgres is unreachable or overloaded (answer 503 and retry later),
/// rather than a bug.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    // Protocol: a connection accepted and then dropped (a proxy or pooler in front of a dead
    // Postgres) fails in the handshake rather than in the connect.
    let connection = matches!(
        e,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
    );
    connection
        || matches!(e, sqlx::Error::Database(db)
            if db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08") || c == "53300"))
}
