//! `/openapi.json`, generated from the handlers' annotations.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::{error, routes, views};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald",
        description = "Durable messaging for businesses: SMS, email and signed webhooks, scheduled to the millisecond, retried, and never sent twice.",
    ),
    paths(
        routes::health::healthz,
        routes::health::readyz,
        routes::admin::create_tenant,
        routes::admin::create_key,
        routes::admin::revoke_key,
        routes::admin::queues,
        routes::messages::create_message,
        routes::messages::list_messages,
        routes::messages::get_message,
        routes::messages::cancel_message,
    ),
    components(schemas(
        error::ErrorBody, error::ErrorDetail,
        views::Message, views::Event, views::MessageWithEvents, views::MessagePage,
        views::CreatedTenant, views::CreatedKey, views::QuietHours,
        views::Health, views::Readiness, views::ReadinessChecks, views::QueueStats,
    )),
    modifiers(&Security),
    tags(
        (name = "messages", description = "send, read, list and cancel messages (tenant API key)"),
        (name = "admin", description = "tenants and keys (ops token)"),
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

pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
