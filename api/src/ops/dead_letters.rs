//! Dead letters on the dashboard: the list with its filters, one dead letter with its error
//! history and payload, and the actions (replay, delete, bulk replay after a confirmation).

use axum::{
    Form,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use chrono::{DateTime, Utc};
use herald_core::{
    domain::{MessageStatus, is_id, truncate},
    services::dead_letters::{self, Replay},
    store::dead_letters::{DeadLetterFilter, DeadLetterRow},
};
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    layout::{page, unavailable, url_escape, when},
    session::{self, CsrfForm},
};
use crate::{auth::Origin, state::AppState, views::time};

/// Rows per page of the list.
const PAGE: i64 = 50;

/// Which dead letters: the list's query string, and the hidden fields of a bulk replay.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Filter {
    queue: Option<String>,
    tenant_id: Option<String>,
    reason: Option<String>,
    since: Option<String>,
    until: Option<String>,
    /// Present (any value): include those already replayed.
    replayed: Option<String>,
}

impl Filter {
    fn value(v: &Option<String>) -> Option<String> {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    fn time(v: &Option<String>) -> Option<DateTime<Utc>> {
        Self::value(v)
            .and_then(|v| DateTime::parse_from_rfc3339(&v).ok())
            .map(|t| t.with_timezone(&Utc))
    }

    /// The store's filter, and a description for people.
    fn to_filter(&self) -> (DeadLetterFilter, String) {
        let filter = DeadLetterFilter {
            tenant_id: Self::value(&self.tenant_id),
            ids: None,
            queue: Self::value(&self.queue),
            reason: Self::value(&self.reason).filter(|r| r == "exhausted" || r == "rejected"),
            since: Self::time(&self.since),
            until: Self::time(&self.until),
            unreplayed: self.replayed.is_none(),
        };
        let description = [
            filter.queue.as_ref().map(|v| format!("queue {v}")),
            filter.tenant_id.as_ref().map(|v| format!("tenant {v}")),
            filter.reason.as_ref().map(|v| format!("reason {v}")),
            filter.since.map(|v| format!("since {}", time(v))),
            filter.until.map(|v| format!("until {}", time(v))),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        (filter, description)
    }

    /// The filter as query parameters, for links.
    fn params(&self) -> Vec<(&'static str, String)> {
        [
            ("queue", &self.queue),
            ("tenant_id", &self.tenant_id),
            ("reason", &self.reason),
            ("since", &self.since),
            ("until", &self.until),
            ("replayed", &self.replayed),
        ]
        .into_iter()
        .filter_map(|(k, v)| Self::value(v).map(|v| (k, v)))
        .collect()
    }

    /// The filter as hidden fields, for the bulk replay form.
    fn hidden(&self) -> Markup {
        html! {
            @for (k, v) in self.params().into_iter().filter(|(k, _)| *k != "replayed") {
                input type="hidden" name=(k) value=(v);
            }
        }
    }
}

/// The list page's query: the filter, a cursor, and a notice after an action.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(flatten)]
    filter: Filter,
    cursor: Option<String>,
    notice: Option<String>,
    id: Option<String>,
    n: Option<u64>,
    status: Option<String>,
}

/// What the dashboard says after an action, by code. Only the dashboard's own sentences are
/// shown, with nothing from the query string but an id of the right shape, a count or a known
/// status, so a link cannot make the dashboard say anything else.
fn notice(q: &ListQuery) -> Option<String> {
    let id = q.id.as_deref().filter(|i| is_id("dl", i));
    let status = q
        .status
        .as_deref()
        .and_then(MessageStatus::parse)
        .map(MessageStatus::as_str);
    Some(match (q.notice.as_deref()?, id, q.n, status) {
        ("replayed", Some(id), _, _) => format!("Replayed {id}: its message is queued again."),
        ("expired", _, _, _) => "Not replayed: the message has expired.".to_owned(),
        ("not_replayable", _, _, Some(status)) => {
            format!("Not replayed: the message is {status} now.")
        }
        ("not_found", _, _, _) => "No such dead letter.".to_owned(),
        ("deleted", Some(id), _, _) => format!("Deleted {id}."),
        ("bulk_replayed", _, Some(n), _) => format!("Replayed {n} dead letters."),
        ("failed", _, _, _) => {
            "That could not be done: the database did not answer. Try again in a moment.".to_owned()
        }
        _ => return None,
    })
}

fn last_error(d: &DeadLetterRow) -> String {
    d.errors
        .as_array()
        .and_then(|e| e.last())
        .and_then(|e| e["error"].as_str())
        .map(|e| truncate(e, 90))
        .unwrap_or_default()
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
    let (filter, description) = q.filter.to_filter();
    let cursor = q.cursor.as_deref().filter(|c| is_id("dl", c));
    let (rows, next) = match dead_letters::list(&state.db, &filter, cursor, PAGE).await {
        Ok(page) => page,
        Err(e) => return unavailable(e),
    };
    let next = next.map(|cursor| {
        let mut params: Vec<String> = q
            .filter
            .params()
            .into_iter()
            .map(|(k, v)| format!("{k}={}", url_escape(&v)))
            .collect();
        params.push(format!("cursor={}", url_escape(&cursor)));
        format!("/ops/dead-letters?{}", params.join("&"))
    });
    let scope = if description.is_empty() {
        "every dead letter not yet replayed".to_owned()
    } else {
        format!("those matching {description}")
    };
    let f = &q.filter;
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let reason = f.reason.as_deref();
    let body = html! {
        h1 { "Dead letters" }
        @if let Some(text) = notice(&q) { div.notice #notice { (text) } }
        form.filters method="get" action="/ops/dead-letters" {
            label { "Queue" input name="queue" value=(value(&f.queue)) placeholder="deliveries"; }
            label { "Tenant" input name="tenant_id" value=(value(&f.tenant_id)) placeholder="ten_…"; }
            label { "Reason"
                select name="reason" {
                    option value="" { "any" }
                    option selected[reason == Some("exhausted")] { "exhausted" }
                    option selected[reason == Some("rejected")] { "rejected" }
                }
            }
            label { "Since" input name="since" value=(value(&f.since)) placeholder="2026-11-21T00:00:00Z"; }
            label { span { input type="checkbox" name="replayed" value="1" checked[f.replayed.is_some()]; " include replayed" } }
            button type="submit" { "Filter" }
        }
        table #dead-letters {
            thead { tr {
                th { "Id" } th { "Queue" } th { "Tenant" } th { "Message" } th { "Reason" }
                th { "Attempts" } th { "Dead at" } th { "Last error" }
            } }
            tbody {
                @for d in &rows {
                    tr data-id=(d.id) {
                        td { a href=(format!("/ops/dead-letters/{}", d.id)) { code { (d.id) } } }
                        td { (d.queue) }
                        td { code { (d.tenant_id) } }
                        td { code { (d.message_id.as_deref().unwrap_or("—")) } }
                        td { span.badge.bad { (d.reason) } }
                        td.num { (d.attempts) }
                        td { (when(Some(d.dead_at))) }
                        td.muted { (last_error(d)) }
                    }
                }
                @if rows.is_empty() {
                    tr { td.muted #empty colspan="8" { "No dead letters match." } }
                }
            }
        }
        @if let Some(next) = next { p { a href=(next) { "Next page →" } } }
        h2 { "Bulk replay" }
        form method="post" action="/ops/dead-letters/replay" {
            (f.hidden())
            input type="hidden" name="csrf" value=(s.csrf);
            p { "Replay " (scope) ". You will be asked to confirm." }
            button.secondary #bulk-replay type="submit" { "Replay these…" }
        }
    };
    page("Dead letters", Some(&s), body).into_response()
}

pub async fn detail(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let s = match session::required(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let d = match dead_letters::get(&state.db, &id, None).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            let body = html! { p { "No such dead letter." } };
            return (StatusCode::NOT_FOUND, page("Not found", Some(&s), body)).into_response();
        }
        Err(e) => return unavailable(e),
    };
    let errors: Vec<(String, String)> = d
        .errors
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        e["at"].as_str().unwrap_or_default().to_owned(),
                        e["error"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let body = html! {
        h1 { "Dead letter " code { (d.id) } }
        table { tbody {
            tr { th { "Queue" } td { (d.queue) } }
            tr { th { "Tenant" } td { code { (d.tenant_id) } } }
            tr { th { "Message" } td {
                @match &d.message_id {
                    Some(m) => { a href=(format!("/ops/messages?id={}", url_escape(m))) { code { (m) } } }
                    None => { "—" }
                }
            } }
            tr { th { "Reason" } td { span.badge.bad { (d.reason) } } }
            tr { th { "Attempts" } td { (d.attempts) } }
            tr { th { "Dead at" } td { (when(Some(d.dead_at))) } }
            tr { th { "Replayed at" } td #replayed-at { (when(d.replayed_at)) } }
        } }
        div.actions {
            form.inline method="post" action=(format!("/ops/dead-letters/{}/replay", d.id)) {
                input type="hidden" name="csrf" value=(s.csrf);
                button #replay type="submit" { "Replay" }
            }
            form.inline method="post" action=(format!("/ops/dead-letters/{}/delete", d.id)) {
                input type="hidden" name="csrf" value=(s.csrf);
                button.danger #delete type="submit" { "Delete" }
            }
        }
        h2 { "Errors, oldest first" }
        table {
            thead { tr { th { "At" } th { "Error" } } }
            tbody { @for (at, error) in &errors { tr { td { (at) } td { (error) } } } }
        }
        h2 { "Payload" }
        pre { (serde_json::to_string_pretty(&d.payload).unwrap_or_default()) }
    };
    page("Dead letter", Some(&s), body).into_response()
}

/// Back to the list with a notice (see [`notice`]).
fn back_to_list(code: &str, params: &[(&str, String)]) -> Response {
    let mut url = format!("/ops/dead-letters?notice={code}");
    for (k, v) in params {
        url.push_str(&format!("&{k}={}", url_escape(v)));
    }
    Redirect::to(&url).into_response()
}

pub async fn replay_one(
    State(state): State<AppState>,
    origin: Origin,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = session::guard(&state, &headers, form.csrf.as_deref()).await {
        return r;
    }
    match dead_letters::replay(&state.db, &state.queue, &id, None, Some(&origin.by_ops())).await {
        Ok(Replay::Replayed(_)) => back_to_list("replayed", &[("id", id)]),
        Ok(Replay::NotReplayable { expired: true, .. }) => back_to_list("expired", &[]),
        Ok(Replay::NotReplayable { status, .. }) => {
            back_to_list("not_replayable", &[("status", status.to_string())])
        }
        Ok(Replay::NotFound) => back_to_list("not_found", &[]),
        Err(e) => {
            tracing::warn!(error = %e, dead_letter = %id, "dashboard replay failed");
            back_to_list("failed", &[])
        }
    }
}

pub async fn delete_one(
    State(state): State<AppState>,
    origin: Origin,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(r) = session::guard(&state, &headers, form.csrf.as_deref()).await {
        return r;
    }
    match dead_letters::delete(&state.db, &id, None, &origin.by_ops()).await {
        Ok(true) => back_to_list("deleted", &[("id", id)]),
        Ok(false) => back_to_list("not_found", &[]),
        Err(e) => {
            tracing::warn!(error = %e, dead_letter = %id, "dashboard delete failed");
            back_to_list("failed", &[])
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct BulkReplayForm {
    csrf: Option<String>,
    #[serde(flatten)]
    filter: Filter,
    confirm: Option<String>,
}

/// A bulk replay: first a confirmation page saying how many it will replay, then the replay.
pub async fn bulk_replay(
    State(state): State<AppState>,
    origin: Origin,
    headers: HeaderMap,
    Form(form): Form<BulkReplayForm>,
) -> Response {
    let s = match session::guard(&state, &headers, form.csrf.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (filter, description) = form.filter.to_filter();
    if form.confirm.as_deref() == Some("yes") {
        return match dead_letters::replay_matching(
            &state.db,
            &state.queue,
            &filter,
            &origin.by_ops(),
        )
        .await
        {
            Ok(n) => back_to_list("bulk_replayed", &[("n", n.to_string())]),
            Err(e) => {
                tracing::warn!(error = %e, "dashboard bulk replay failed");
                back_to_list("failed", &[])
            }
        };
    }
    let mut counted = filter.clone();
    counted.unreplayed = true;
    let count = match dead_letters::count(&state.db, &counted).await {
        Ok(n) => n,
        Err(e) => return unavailable(e),
    };
    let scope = if description.is_empty() {
        "every dead letter not yet replayed".to_owned()
    } else {
        format!("the dead letters matching {description}")
    };
    let body = html! {
        h1 { "Replay dead letters?" }
        p { "This replays " strong #count { (count) } " of " (scope) ": each message starts a fresh run and is sent again." }
        div.actions {
            form method="post" action="/ops/dead-letters/replay" {
                (form.filter.hidden())
                input type="hidden" name="csrf" value=(s.csrf);
                input type="hidden" name="confirm" value="yes";
                button #confirm type="submit" { "Yes, replay them" }
            }
            a href="/ops/dead-letters" { "Cancel" }
        }
    };
    page("Confirm replay", Some(&s), body).into_response()
}
