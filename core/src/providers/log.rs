//! The `log` providers, Herald's embedded default: each send is recorded in Postgres and the
//! log instead of leaving the building, so the whole system runs with no provider account.

use futures_util::{FutureExt, future::BoxFuture};
use sqlx::PgPool;
use tracing::info;

use super::{Candidate, Lookup, Outbound, Provider, SendOutcome};

pub struct LogProvider {
    db: PgPool,
    channel: &'static str,
}

impl LogProvider {
    pub fn new(db: PgPool, channel: &'static str) -> Self {
        Self { db, channel }
    }
}

/// `+15551234567` → `+1555***4567`: enough to recognise, not enough to harvest from logs.
pub fn mask(to: &str) -> String {
    let chars: Vec<char> = to.chars().collect();
    if chars.len() <= 6 {
        return "***".to_owned();
    }
    let head: String = chars[..chars.len().min(5).min(chars.len() - 4)]
        .iter()
        .collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}***{tail}")
}

impl Provider for LogProvider {
    fn name(&self) -> &'static str {
        "log"
    }

    fn send<'a>(&'a self, m: &'a Outbound<'a>) -> BoxFuture<'a, SendOutcome> {
        async move {
            let recorded = sqlx::query(
                "INSERT INTO log_deliveries (message_id, tenant_id, channel, to_addr, from_addr, subject, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(m.message_id)
            .bind(m.tenant_id)
            .bind(self.channel)
            .bind(m.to)
            .bind(m.from)
            .bind(m.subject)
            .bind(m.body)
            .execute(&self.db)
            .await;
            match recorded {
                Ok(_) => {
                    info!(
                        message_id = m.message_id,
                        tenant_id = m.tenant_id,
                        channel = self.channel,
                        to = %mask(m.to),
                        chars = m.body.chars().count(),
                        "log provider: message recorded instead of sent"
                    );
                    SendOutcome::Accepted {
                        provider_message_id: Some(format!("log_{}", m.message_id)),
                    }
                }
                Err(e) => SendOutcome::Transient {
                    error: format!("log provider could not record the send: {e}"),
                    retry_after: None,
                    throttled: false,
                },
            }
        }
        .boxed()
    }

    /// Its own record of the send, as Twilio's list would show Twilio's.
    fn lookup<'a>(
        &'a self,
        m: &'a Outbound<'a>,
        since: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Lookup> {
        async move {
            let found: Result<Option<i64>, sqlx::Error> = sqlx::query_scalar(
                "SELECT id FROM log_deliveries WHERE message_id = $1 AND at >= $2 ORDER BY id LIMIT 1",
            )
            .bind(m.message_id)
            .bind(since - chrono::Duration::seconds(1))
            .fetch_optional(&self.db)
            .await;
            match found {
                Ok(Some(_)) => Lookup::Candidates(vec![Candidate {
                    provider_message_id: format!("log_{}", m.message_id),
                    status: "sent".to_owned(),
                }]),
                Ok(None) => Lookup::Candidates(vec![]),
                Err(e) => Lookup::Unavailable(format!("log provider could not read its records: {e}")),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::mask;

    #[test]
    fn recipients_are_masked() {
        assert_eq!(mask("+15551234567"), "+1555***4567");
        assert_eq!(mask("a@example.com"), "a@exa***.com");
        assert_eq!(mask("+1555"), "***");
    }
}
