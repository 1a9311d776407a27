//! `/openapi.json`, generated from the handlers' annotations.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::{error, views};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Durable messaging for businesses: SMS, email and signed webhooks, scheduled to the millisecond, retried, and never sent twice.",
    ),
    components(schemas(
        error::ErrorBody, error::ErrorDetail,
        views::Message, views::Event, views::MessageWithEvents, views::MessagePage,
        views::CreatedTenant, views::CreatedKey, views::QuietHours,
        views::Health, views::Readiness, views::ReadinessChecks, views::QueueStats,
        views::Appointment, views::Group, views::ContactPage, views::GroupSendAccepted, views::GroupSendStatus, views::Subscription, views::SubscriptionContent, views::Contact, views::Conversation, views::ConversationEntry, views::ConversationMode,
        views::DeadLetter, views::DeadLetterPage, views::AttemptError, views::Replayed, views::ReplayedCount,
        views::AuditEntry, views::AuditPage,
        crate::routes::usage::Usage, crate::routes::usage::AdminUsage, crate::routes::usage::TenantUsage,
        herald_core::store::usage::UsageDay, herald_core::store::usage::ModelUsage,
        views::Endpoint, views::EndpointPage, views::AdminEndpoint, views::AdminEndpointPage, views::EndpointSecret, views::EventAttempt, views::EventAttemptPage, views::Redelivered,
    )),
    modifiers(&Security),
    tags(
        (name = "messages", description = "send, read, list and cancel messages (tenant API key)"),
        (name = "admin", description = "tenants, keys and queues, and every tenant's messages, event endpoints and inboxes (ops token)"),
        (name = "dead letters", description = "what could not be delivered: inspect, replay, delete (ops token: every tenant; tenant key: its own)"),
        (name = "contacts", description = "the people a tenant messages, and their bulk import"),
        (name = "tenant", description = "a tenant's own settings (tenant API key)"),
        (name = "appointments", description = "appointments and their reminders"),
        (name = "groups", description = "contact groups and messages to a whole group"),
        (name = "subscriptions", description = "daily delivery at each contact's local hour"),
        (name = "conversations", description = "a contact's texts, AI replies and human takeover"),
        (name = "endpoints", description = "event webhooks: where a tenant's events go (Standard Webhooks, signed with each endpoint's secret), what was attempted, and sending events again"),
        (name = "inbound", description = "what providers send Herald, signed"),
        (name = "audit", description = "who changed what: the append-only audit log (tenant key: its own tenant's; ops token: everything)"),
        (name = "usage", description = "what a tenant's messages and AI replies used, per day in its zone (tenant API key; every tenant's with the ops token)"),
        (name = "ops", description = "health and readiness"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer =
            || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        components.add_security_scheme("api_key", bearer());
        components.add_security_scheme("ops_token", bearer());
    }
}

/// Everything but the paths, which the router adds as it registers each route (the whole
/// document is `routes::document`).
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
