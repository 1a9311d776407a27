//! The audit log on the dashboard: who changed what, from where, newest first, filtered by
//! tenant, action, actor and time. It reads through the same service as `GET /v1/admin/audit`.

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use herald_core::{
    domain::{audit::AuditAction, is_id},
    services::audit,
    store::audit::AuditFilter,
};
use maud::html;
use serde::Deserialize;

use super::{
    layout::{given, page, unavailable, url_escape, when},
    session,
};
use crate::{body::rfc3339, routes::audit::is_actor, state::AppState};

/// Entries per page.
const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    tenant_id: Option<String>,
    action: Option<String>,
    actor: Option<String>,
    /// RFC 3339.
    since: Option<String>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AuditQuery>,
) -> Response {
    let s = match session::required(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let tenant = given(&q.tenant_id);
    let action = given(&q.action);
    let actor = given(&q.actor);
    let since = given(&q.since);
    // Each filter that cannot be right says so, and nothing is listed (rather than every
    // entry, which a mistyped filter would otherwise seem to select).
    let mut mistakes = Vec::new();
    if tenant.is_some_and(|t| !is_id("ten", t)) {
        mistakes.push("That is not a tenant id (ten_…).");
    }
    if action.is_some_and(|a| AuditAction::parse(a).is_none()) {
        mistakes.push("That is not an audit action.");
    }
    if actor.is_some_and(|a| !is_actor(a)) {
        mistakes.push("The actor is `ops` or a key prefix (hk_ and 9 characters).");
    }
    let since_at = since.and_then(rfc3339);
    if since.is_some() && since_at.is_none() {
        mistakes.push("Since is an RFC 3339 time with an offset (2026-03-01T09:00:00Z).");
    }
    let (rows, next) = if mistakes.is_empty() {
        let filter = AuditFilter {
            tenant_id: tenant.map(str::to_owned),
            action: action.map(str::to_owned),
            actor: actor.map(str::to_owned),
            since: since_at,
            until: None,
        };
        let cursor = given(&q.cursor).filter(|c| is_id("aud", c));
        match audit::list(&state.db, &filter, cursor, PAGE).await {
            Ok(page) => page,
            Err(e) => return unavailable(e),
        }
    } else {
        (Vec::new(), None)
    };
    let next = next.map(|cursor| {
        let mut url = format!("/ops/audit?cursor={}", url_escape(&cursor));
        for (name, value) in [
            ("tenant_id", tenant),
            ("action", action),
            ("actor", actor),
            ("since", since),
        ] {
            if let Some(v) = value {
                url.push_str(&format!("&{name}={}", url_escape(v)));
            }
        }
        url
    });
    let body = html! {
        h1 { "Audit log" }
        form.filters method="get" action="/ops/audit" {
            label { "Tenant" input name="tenant_id" value=(tenant.unwrap_or_default()) placeholder="ten_…" size="34"; }
            label { "Action"
                select name="action" {
                    option value="" { "any" }
                    @for a in AuditAction::ALL {
                        option selected[action == Some(a.as_str())] { (a.as_str()) }
                    }
                }
            }
            label { "Actor" input name="actor" value=(actor.unwrap_or_default()) placeholder="ops or hk_…" size="14"; }
            label { "Since" input name="since" value=(since.unwrap_or_default()) placeholder="2026-03-01T09:00:00Z" size="22"; }
            button type="submit" { "Filter" }
        }
        @for m in &mistakes { p.error { (m) } }
        table #audit {
            thead { tr {
                th { "At" } th { "Actor" } th { "Action" } th { "Target" } th { "Tenant" }
                th { "Client address" } th { "Request id" } th { "Detail" }
            } }
            tbody {
                @for r in &rows {
                    tr data-id=(r.id) {
                        td.nowrap { (when(Some(r.at))) }
                        td.nowrap { code { (r.actor) } }
                        td.nowrap { span.badge { (r.action) } }
                        td { code { (r.target) } }
                        td { code { (r.tenant_id.as_deref().unwrap_or("—")) } }
                        td.nowrap { (r.client_ip.as_deref().unwrap_or("—")) }
                        td { code { (r.request_id.as_deref().unwrap_or("—")) } }
                        td.detail { code { (r.detail.to_string()) } }
                    }
                }
                @if rows.is_empty() {
                    tr { td.muted #empty colspan="8" { "No audit entries." } }
                }
            }
        }
        @if let Some(next) = next { p { a href=(next) { "Next page →" } } }
    };
    page("Audit log", Some(&s), body).into_response()
}
