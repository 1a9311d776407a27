//! A tenant's inbox on the dashboard: its conversations, newest activity first, each with
//! who it waits for and its newest entry (linked to the message lookup).

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use herald_core::{
    domain::{is_id, truncate},
    services::inbox::{self, InboxItem},
    store::conversations::InboxFilter,
};
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    layout::{given, page, unavailable, url_escape, when},
    session,
};
use crate::state::AppState;

/// Conversations per page.
const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct InboxQuery {
    tenant_id: Option<String>,
    /// `ai` or `human`.
    mode: Option<String>,
    /// Present (any value): only conversations waiting for a reply.
    needs_reply: Option<String>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<InboxQuery>,
) -> Response {
    let s = match session::required(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let tenant = given(&q.tenant_id);
    let mode = given(&q.mode).filter(|m| ["ai", "human"].contains(m));
    let needs_reply = q.needs_reply.is_some();
    let filter = InboxFilter {
        mode,
        needs_reply: needs_reply.then_some(true),
        before_entry: given(&q.cursor).filter(|c| is_id("msg", c)),
    };
    let items = match tenant.filter(|t| is_id("ten", t)) {
        Some(t) => match inbox::inbox(&state.db, t, &filter, PAGE).await {
            Ok(items) => Some(items),
            Err(e) => return unavailable(e),
        },
        None => None,
    };
    let body = html! {
        h1 { "Inbox" }
        form.filters method="get" action="/ops/inbox" {
            label { "Tenant" input name="tenant_id" value=(tenant.unwrap_or_default()) placeholder="ten_…" size="34"; }
            label { "Mode"
                select name="mode" {
                    option value="" { "any" }
                    option selected[mode == Some("ai")] { "ai" }
                    option selected[mode == Some("human")] { "human" }
                }
            }
            label { span { input type="checkbox" name="needs_reply" value="1" checked[needs_reply]; " needs a reply" } }
            button type="submit" { "Show" }
        }
        @match (tenant, items) {
            (None, _) => { p.muted { "Give a tenant id to see its conversations." } }
            (Some(_), None) => { p.error { "That is not a tenant id (ten_…)." } }
            (Some(t), Some(items)) => { (conversations(t, &q, items)) }
        }
    };
    page("Inbox", Some(&s), body).into_response()
}

/// The table of one page of `items` (fetched with one more than a page) and the link to
/// the next page.
fn conversations(tenant: &str, q: &InboxQuery, mut items: Vec<InboxItem>) -> Markup {
    let more = items.len() > PAGE as usize;
    items.truncate(PAGE as usize);
    let next = items.last().filter(|_| more).map(|last| {
        let mut url = format!(
            "/ops/inbox?tenant_id={}&cursor={}",
            url_escape(tenant),
            url_escape(&last.row.last_entry_id)
        );
        if let Some(m) = given(&q.mode) {
            url.push_str(&format!("&mode={}", url_escape(m)));
        }
        if q.needs_reply.is_some() {
            url.push_str("&needs_reply=1");
        }
        url
    });
    html! {
        table #inbox {
            thead { tr {
                th { "Contact" } th { "Name" } th { "Phone" } th { "Mode" } th { "Needs reply" }
                th { "Last entry" } th { "At" }
            } }
            tbody {
                @for i in &items {
                    tr data-contact=(i.row.contact_id) {
                        td { code { (i.row.contact_id) } }
                        td { (i.row.name.as_deref().unwrap_or("—")) }
                        td.nowrap { (i.row.phone.as_deref().unwrap_or("—")) }
                        td.nowrap { span.badge { (i.row.mode) } }
                        td.nowrap {
                            @if i.row.last_inbound { span.badge.bad { "yes" } } @else { "no" }
                        }
                        @match &i.last_entry {
                            Some(m) => {
                                td.last {
                                    span.muted { (m.author) ": " }
                                    a href=(format!("/ops/messages?id={}", url_escape(&m.id))) { (truncate(&m.body, 160)) }
                                }
                                td.nowrap { (when(Some(m.created_at))) }
                            }
                            None => { td.muted { "—" } td {} }
                        }
                    }
                }
                @if items.is_empty() {
                    tr { td.muted #empty colspan="7" { "No conversations." } }
                }
            }
        }
        @if let Some(next) = next { p { a href=(next) { "Next page →" } } }
    }
}
