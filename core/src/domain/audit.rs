//! What the audit log records: the actions (a closed set, so a filter naming another is
//! refused), and who did them.

use std::net::IpAddr;

/// `actor` of an entry made with the ops token or a dashboard session.
pub const OPS_ACTOR: &str = "ops";

/// Every action the audit log knows, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    TenantCreated,
    TenantUpdated,
    TenantSuspended,
    KeyCreated,
    KeyRevoked,
    EndpointCreated,
    EndpointUpdated,
    EndpointDeleted,
    EndpointRecovered,
    EventRedelivered,
    DeadLetterReplayed,
    DeadLettersReplayed,
    DeadLetterDeleted,
    ContactExported,
    ContactErased,
    ConversationTakenOver,
    ConversationReleased,
    OpsLogin,
    OpsLoginFailed,
}

impl AuditAction {
    pub const ALL: [AuditAction; 19] = [
        Self::TenantCreated,
        Self::TenantUpdated,
        Self::TenantSuspended,
        Self::KeyCreated,
        Self::KeyRevoked,
        Self::EndpointCreated,
        Self::EndpointUpdated,
        Self::EndpointDeleted,
        Self::EndpointRecovered,
        Self::EventRedelivered,
        Self::DeadLetterReplayed,
        Self::DeadLettersReplayed,
        Self::DeadLetterDeleted,
        Self::ContactExported,
        Self::ContactErased,
        Self::ConversationTakenOver,
        Self::ConversationReleased,
        Self::OpsLogin,
        Self::OpsLoginFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TenantCreated => "tenant.created",
            Self::TenantUpdated => "tenant.updated",
            Self::TenantSuspended => "tenant.suspended",
            Self::KeyCreated => "key.created",
            Self::KeyRevoked => "key.revoked",
            Self::EndpointCreated => "endpoint.created",
            Self::EndpointUpdated => "endpoint.updated",
            Self::EndpointDeleted => "endpoint.deleted",
            Self::EndpointRecovered => "endpoint.recovered",
            Self::EventRedelivered => "event.redelivered",
            Self::DeadLetterReplayed => "dead_letter.replayed",
            Self::DeadLettersReplayed => "dead_letters.replayed",
            Self::DeadLetterDeleted => "dead_letter.deleted",
            Self::ContactExported => "contact.exported",
            Self::ContactErased => "contact.erased",
            Self::ConversationTakenOver => "conversation.taken_over",
            Self::ConversationReleased => "conversation.released",
            Self::OpsLogin => "ops.login",
            Self::OpsLoginFailed => "ops.login_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// Who made a change and through which request: stamped on every entry it causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOrigin {
    /// A tenant key's prefix, or [`OPS_ACTOR`].
    pub actor: String,
    pub client_ip: Option<IpAddr>,
    pub request_id: Option<String>,
}

impl AuditOrigin {
    /// The operator (ops token or dashboard session).
    pub fn ops(client_ip: Option<IpAddr>, request_id: Option<String>) -> Self {
        Self {
            actor: OPS_ACTOR.to_owned(),
            client_ip,
            request_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_reads_back_from_its_name() {
        for a in AuditAction::ALL {
            assert_eq!(AuditAction::parse(a.as_str()), Some(a));
        }
        assert_eq!(AuditAction::parse("tenant.deleted"), None);
    }
}
