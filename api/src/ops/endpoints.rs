//! Event endpoints on the dashboard: every tenant's (or one's), one endpoint with the calls
//! made to it, newest first, and sending an event again from there.

use axum::{
    Form,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use herald_core::{
    domain::{events::EventType, is_id, truncate},
    services::events::{self as service, RedeliverError},
    store::events::{self as store, EndpointRow},
};
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    layout::{given, page, unavailable, url_escape, when},
    session,
};
use crate::state::AppState;

/// Rows per page of each list.
const PAGE: i64 = 50;

/// What the dashboard says after a redelivery, by code: only its own sentences, with nothing
/// from the query string but an event id of the right shape and a count, so a link cannot make
/// the dashboard say anything else.
#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    notice: Option<String>,
    id: Option<String>,
    /// A count, read as text: serde cannot read numbers in a flattened query.
    n: Option<String>,
}

impl Notice {
    fn text(&self) -> Option<String> {
        let id = self.id.as_deref().filter(|i| is_id("evt", i));
        let n = self.n.as_deref().and_then(|n| n.parse::<u64>().ok());
        Some(match (self.notice.as_deref()?, id, n) {
            ("redelivered", Some(id), Some(n)) => {
                format!("Redelivered {id}: queued again for {n} endpoint(s).")
            }
            ("not_found", _, _) => "No such event.".to_owned(),
            ("failed", _, _) => {
                "That could not be done: the database or Redis did not answer. Try again in a moment."
                    .to_owned()
            }
            _ => return None,
        })
    }

    fn show(&self) -> Markup {
        html! { @if let Some(text) = self.text() { div.notice #notice { (text) } } }
    }
}

/// An endpoint's event types, in short when it takes every one.
fn events(e: &EndpointRow) -> String {
    if e.events.len() == EventType::ALL.len() {
        "every type".to_owned()
    } else {
        e.events.join(", ")
    }
}

/// Enabled, or disabled and why.
fn state_of(e: &EndpointRow) -> Markup {
    html! {
        @if e.enabled {
            span.badge.good { "enabled" }
        } @else {
            span.badge.bad { "disabled" }
            @if let Some(reason) = &e.disabled_reason { div.muted.reason { (reason) } }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    tenant_id: Option<String>,
    cursor: Option<String>,
    #[serde(flatten)]
    notice: Notice,
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let s = match session::required(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let tenant = given(&q.tenant_id);
    let bad_tenant = tenant.is_some_and(|t| !is_id("ten", t));
    let rows = if bad_tenant {
        Vec::new()
    } else {
        let cursor = given(&q.cursor).filter(|c| is_id("ep", c));
        match store::list_endpoints(&state.db, tenant, cursor, PAGE + 1).await {
            Ok(rows) => rows,
            Err(e) => return unavailable(e),
        }
    };
    let (rows, next) = cut(rows, |e| e.id.clone());
    let next = next.map(|cursor| {
        let mut url = format!("/ops/endpoints?cursor={}", url_escape(&cursor));
        if let Some(t) = tenant {
            url.push_str(&format!("&tenant_id={}", url_escape(t)));
        }
        url
    });
    let body = html! {
        h1 { "Endpoints" }
        (q.notice.show())
        form.filters method="get" action="/ops/endpoints" {
            label { "Tenant" input name="tenant_id" value=(tenant.unwrap_or_default()) placeholder="ten_…" size="34"; }
            button type="submit" { "Filter" }
        }
        @if bad_tenant { p.error { "That is not a tenant id (ten_…)." } }
        table #endpoints {
            thead { tr { th { "Id" } th { "Tenant" } th { "URL" } th { "Events" } th { "State" } } }
            tbody {
                @for e in &rows {
                    tr data-id=(e.id) {
                        td { a href=(format!("/ops/endpoints/{}", e.id)) { code { (e.id) } } }
                        td { code { (e.tenant_id) } }
                        td { code { (e.url) } }
                        td { (events(e)) }
                        td { (state_of(e)) }
                    }
                }
                @if rows.is_empty() {
                    tr { td.muted #empty colspan="5" { "No endpoints." } }
                }
            }
        }
        @if let Some(next) = next { p { a href=(next) { "Next page →" } } }
    };
    page("Endpoints", Some(&s), body).into_response()
}

/// The first `PAGE` of `rows` (fetched with one more) and the cursor of the next page.
fn cut<T>(mut rows: Vec<T>, cursor: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    let page = PAGE as usize;
    if rows.len() > page {
        rows.truncate(page);
        let next = rows.last().map(cursor);
        (rows, next)
    } else {
        (rows, None)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct DetailQuery {
    /// `succeeded` or `failed`.
    status: Option<String>,
    cursor: Option<String>,
    #[serde(flatten)]
    notice: Notice,
}

pub async fn detail(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Response {
    let s = match session::required(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let found = if is_id("ep", &id) {
        store::get_endpoint(&state.db, None, &id).await
    } else {
        Ok(None)
    };
    let e = match found {
        Ok(Some(e)) => e,
        Ok(None) => {
            let body = html! { p { "No such endpoint." } };
            return (StatusCode::NOT_FOUND, page("Not found", Some(&s), body)).into_response();
        }
        Err(e) => return unavailable(e),
    };
    let status = given(&q.status).filter(|st| ["succeeded", "failed"].contains(st));
    let cursor = given(&q.cursor).filter(|c| is_id("att", c));
    let attempts =
        match store::list_attempts(&state.db, &e.id, status, None, cursor, PAGE + 1).await {
            Ok(rows) => rows,
            Err(e) => return unavailable(e),
        };
    let (attempts, next) = cut(attempts, |a| a.id.clone());
    let next = next.map(|cursor| {
        let mut url = format!("/ops/endpoints/{}?cursor={}", e.id, url_escape(&cursor));
        if let Some(st) = status {
            url.push_str(&format!("&status={st}"));
        }
        url
    });
    let body = html! {
        h1 { "Endpoint " code { (e.id) } }
        (q.notice.show())
        table #endpoint { tbody {
            tr { th { "Tenant" } td { code { (e.tenant_id) } } }
            tr { th { "URL" } td { code { (e.url) } } }
            tr { th { "Events" } td { (events(&e)) } }
            tr { th { "Description" } td { (e.description.as_deref().unwrap_or("—")) } }
            tr { th { "State" } td #state { (state_of(&e)) } }
            tr { th { "Created" } td { (when(Some(e.created_at))) } }
        } }
        h2 { "Attempts, newest first" }
        form.filters method="get" action=(format!("/ops/endpoints/{}", e.id)) {
            label { "Status"
                select name="status" {
                    option value="" { "any" }
                    option selected[status == Some("succeeded")] { "succeeded" }
                    option selected[status == Some("failed")] { "failed" }
                }
            }
            button type="submit" { "Filter" }
        }
        table #attempts {
            thead { tr {
                th { "At" } th { "Event" } th { "Type" } th { "Status" } th { "Code" }
                th { "Duration" } th { "Error" } th {}
            } }
            tbody {
                @for a in &attempts {
                    tr data-event=(a.event_id) {
                        td { (when(Some(a.at))) }
                        td { code { (a.event_id) } }
                        td { (a.kind) }
                        td {
                            @if a.status == "succeeded" { span.badge.good { (a.status) } }
                            @else { span.badge.bad { (a.status) } }
                        }
                        td.num { (a.status_code.map(|c| c.to_string()).unwrap_or_else(|| "—".to_owned())) }
                        td.num { (a.duration_ms) " ms" }
                        td.muted { (a.error.as_deref().map(|e| truncate(e, 120)).unwrap_or_default()) }
                        td {
                            form.inline method="post" action=(format!("/ops/events/{}/redeliver", a.event_id)) {
                                input type="hidden" name="csrf" value=(s.csrf);
                                input type="hidden" name="endpoint_id" value=(e.id);
                                button.secondary type="submit" { "Redeliver" }
                            }
                        }
                    }
                }
                @if attempts.is_empty() {
                    tr { td.muted #empty colspan="8" { "No attempts." } }
                }
            }
        }
        @if let Some(next) = next { p { a href=(next) { "Next page →" } } }
    };
    page("Endpoint", Some(&s), body).into_response()
}

#[derive(Debug, Deserialize)]
pub struct RedeliverForm {
    csrf: Option<String>,
    /// The endpoint page the button was on, to go back to.
    endpoint_id: Option<String>,
}

/// Sends an event again to each enabled endpoint of its tenant that had it, then goes back
/// to the endpoint's page with a notice.
pub async fn redeliver(
    State(state): State<AppState>,
    origin: crate::auth::Origin,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<RedeliverForm>,
) -> Response {
    if let Err(r) = session::guard(&state, &headers, form.csrf.as_deref()).await {
        return r;
    }
    let back = match form.endpoint_id.as_deref().filter(|e| is_id("ep", e)) {
        Some(ep) => format!("/ops/endpoints/{ep}"),
        None => "/ops/endpoints".to_owned(),
    };
    let redelivered = if is_id("evt", &id) {
        service::redeliver(&state.db, &state.events, None, &id).await
    } else {
        Err(RedeliverError::NotFound)
    };
    if let Ok(n) = redelivered {
        service::record_redelivery(&state.db, &origin.by_ops(), &id, None, n).await;
    }
    let notice = match redelivered {
        Ok(n) => format!("notice=redelivered&id={}&n={n}", url_escape(&id)),
        Err(RedeliverError::NotFound) => "notice=not_found".to_owned(),
        Err(e) => {
            tracing::warn!(error = %e, event_id = %id, "dashboard redelivery failed");
            "notice=failed".to_owned()
        }
    };
    Redirect::to(&format!("{back}?{notice}")).into_response()
}
