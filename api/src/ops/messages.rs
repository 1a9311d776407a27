//! Looking a message up by id, whatever its tenant, with its events.

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use herald_core::{domain::truncate, services::messages};
use maud::html;
use serde::Deserialize;

use super::{
    layout::{page, status_badge, unavailable, when},
    session,
};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct Lookup {
    id: Option<String>,
}

pub async fn lookup(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Lookup>,
) -> Response {
    let s = match session::required(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let id = q.id.as_deref().map(str::trim).unwrap_or_default();
    let found = if id.is_empty() {
        None
    } else {
        match messages::get_any(&state.db, id).await {
            Ok(found) => Some(found),
            Err(e) => return unavailable(e),
        }
    };
    let body = html! {
        h1 { "Messages" }
        form.filters method="get" action="/ops/messages" {
            label { "Message id" input name="id" value=(id) placeholder="msg_…" size="34"; }
            button type="submit" { "Look up" }
        }
        @match found {
            Some(Some((m, events))) => {
                table #message { tbody {
                    tr { th { "Status" } td #status { (status_badge(m.status.as_str())) } }
                    tr { th { "Tenant" } td { code { (m.tenant_id) } } }
                    tr { th { "Channel" } td { (m.channel) } }
                    tr { th { "To" } td { (m.to_addr) } }
                    tr { th { "Attempts" } td { (m.attempts) } }
                    tr { th { "Last error" } td { (m.last_error.as_deref().unwrap_or("—")) } }
                    tr { th { "Provider id" } td { code { (m.provider_message_id.as_deref().unwrap_or("—")) } } }
                    tr { th { "Body" } td { (truncate(&m.body, 500)) } }
                } }
                h2 { "Events, oldest first" }
                table #events {
                    thead { tr { th { "At" } th { "Status" } th { "Detail" } } }
                    tbody {
                        @for e in &events {
                            tr { td { (when(Some(e.at))) } td { (status_badge(&e.status)) } td { (e.detail.as_deref().unwrap_or_default()) } }
                        }
                    }
                }
            }
            Some(None) => { p.muted { "No message with that id." } }
            None => {}
        }
    };
    page("Messages", Some(&s), body).into_response()
}
