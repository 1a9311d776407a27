//! Usage on the dashboard: every tenant's last 30 days in one table (messages by outcome, SMS
//! segments, model calls and tokens, canned replies), and one tenant's day by day. It reads
//! through the same store as `GET /v1/admin/usage`.

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use chrono::{Duration, Utc};
use chrono_tz::Tz;
use herald_core::{
    domain::is_id,
    store::{
        tenants,
        usage::{self, UsageDay},
    },
};
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    layout::{given, page, unavailable, url_escape},
    session,
};
use crate::state::AppState;

/// The days shown, today included.
const DAYS: i64 = 30;

#[derive(Debug, Default, Deserialize)]
pub struct UsageQuery {
    tenant_id: Option<String>,
}

/// What a row of the page adds up: messages by outcome and what they used.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    accepted: i64,
    sent: i64,
    delivered: i64,
    failed: i64,
    segments: i64,
    model_calls: i64,
    tokens: i64,
    canned: i64,
}

impl Totals {
    fn of<'a>(days: impl IntoIterator<Item = &'a UsageDay>) -> Self {
        let mut t = Self::default();
        days.into_iter().for_each(|d| t.add(d));
        t
    }

    fn add(&mut self, day: &UsageDay) {
        for by_status in day.messages.values() {
            let n = |s: &str| by_status.get(s).copied().unwrap_or(0);
            self.accepted += by_status.values().sum::<i64>() - n("received");
            self.sent += n("sent") + n("delivered") + n("undelivered");
            self.delivered += n("delivered");
            self.failed += n("failed") + n("dead") + n("undelivered") + n("expired");
        }
        self.segments += day.sms_segments;
        self.model_calls += day.model_calls.iter().map(|m| m.calls).sum::<i64>();
        self.tokens += day.model_tokens();
        self.canned += day.canned_replies;
    }
}

fn header_cells(first: &str) -> Markup {
    html! {
        tr {
            th { (first) } th { "Accepted" } th { "Sent" } th { "Delivered" } th { "Failed" }
            th { "SMS segments" } th { "Model calls" } th { "Model tokens" } th { "Canned replies" }
        }
    }
}

fn cells(t: &Totals) -> Markup {
    html! {
        td.num { (t.accepted) } td.num { (t.sent) } td.num { (t.delivered) } td.num { (t.failed) }
        td.num { (t.segments) } td.num { (t.model_calls) } td.num { (t.tokens) } td.num { (t.canned) }
    }
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<UsageQuery>,
) -> Response {
    let s = match session::required(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let tenant = given(&q.tenant_id);
    if tenant.is_some_and(|t| !is_id("ten", t)) {
        let body = html! {
            h1 { "Usage" }
            p.error { "That is not a tenant id (ten_…)." }
        };
        return page("Usage", Some(&s), body).into_response();
    }
    let all = match tenant {
        Some(id) => tenants::get(&state.db, id)
            .await
            .map(|t| t.into_iter().collect()),
        None => tenants::all(&state.db).await,
    };
    let all = match all {
        Ok(all) => all,
        Err(e) => return unavailable(e),
    };
    let mut rows = Vec::with_capacity(all.len());
    for t in &all {
        let zone: Tz = t.timezone.parse().unwrap_or(chrono_tz::UTC);
        let to = usage::today(zone, Utc::now());
        let from = to - Duration::days(DAYS - 1);
        match usage::days(&state.db, &t.id, zone, from, to).await {
            Ok(days) => rows.push((t, days)),
            Err(e) => return unavailable(e),
        }
    }
    let body = html! {
        h1 { "Usage" }
        p.muted { "The last " (DAYS) " days, each tenant's days in its own zone. A message counts on the day it was accepted, with the status it has now." }
        form.filters method="get" action="/ops/usage" {
            label { "Tenant" input name="tenant_id" value=(tenant.unwrap_or_default()) placeholder="ten_…" size="34"; }
            button type="submit" { "Show" }
        }
        @if tenant.is_some() {
            @for (t, days) in &rows {
                h2 { (t.name) " " code { (t.id) } " (" (t.timezone) ")" }
                table #usage-days {
                    thead { (header_cells("Date")) }
                    tbody {
                        @for day in days.iter().rev() {
                            tr { td.nowrap { (day.date) } (cells(&Totals::of([day]))) }
                        }
                    }
                }
            }
            @if rows.is_empty() { p.muted #empty { "No such tenant." } }
        } @else {
            table #usage {
                thead { (header_cells("Tenant")) }
                tbody {
                    @for (t, days) in &rows {
                        tr data-tenant=(t.id) {
                            td { a href={ "/ops/usage?tenant_id=" (url_escape(&t.id)) } { (t.name) } }
                            (cells(&Totals::of(days)))
                        }
                    }
                    @if rows.is_empty() { tr { td.muted #empty colspan="9" { "No tenants." } } }
                }
            }
        }
    };
    page("Usage", Some(&s), body).into_response()
}
