//! The first page: each queue's depth now, and what it processed and failed minute by minute
//! over the last hour, drawn as a chart.

use axum::{
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use herald_core::{
    queue::{MinuteCounts, Queue, QueueStats},
    services::dead_letters,
    store::dead_letters::DeadLetterFilter,
};
use maud::{Markup, html};

use super::{layout::page, session};
use crate::state::AppState;

/// Minutes of history in each chart.
const MINUTES: usize = 60;

pub async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let s = match session::required(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut queues = Vec::new();
    for q in [&state.queue, &state.replies] {
        queues.push((q.name().to_owned(), read(q).await));
    }
    let waiting = dead_letters::count(
        &state.db,
        &DeadLetterFilter {
            unreplayed: true,
            ..Default::default()
        },
    )
    .await;
    let body = html! {
        h1 { "Queues" }
        table #queues {
            thead { tr {
                th { "Queue" } th { "Pending" } th { "Scheduled" } th { "Running" } th { "Dead" }
                th { "Completed / min" } th { "Failed / min" }
            } }
            tbody {
                @for (name, read) in &queues {
                    tr {
                        td { code { (name) } }
                        @match read {
                            Some((st, _)) => {
                                td.num { (st.pending) } td.num { (st.scheduled) } td.num { (st.running) }
                                td.num { (st.dead) } td.num { (st.completed_last_minute) } td.num { (st.failed_last_minute) }
                            }
                            None => { td.error colspan="6" { "Redis is not answering; the counts are unknown right now." } }
                        }
                    }
                }
            }
        }
        h2 { "The last hour" }
        div.charts {
            @for (name, read) in &queues {
                @if let Some((_, history)) = read { (chart(name, history)) }
            }
        }
        h2 { "Dead letters" }
        p {
            @match waiting {
                Ok(n) => { a href="/ops/dead-letters" { (n) " waiting for a decision" } " (replay or delete)." }
                Err(_) => { "The database is not answering; the count is unknown right now." }
            }
        }
    };
    page("Queues", Some(&s), body).into_response()
}

/// A queue's counts now and its last hour, or `None` when Redis does not answer.
async fn read(q: &Queue) -> Option<(QueueStats, Vec<MinuteCounts>)> {
    match tokio::try_join!(q.stats(), q.history(MINUTES)) {
        Ok(read) => Some(read),
        Err(e) => {
            tracing::warn!(queue = q.name(), error = %e, "the dashboard could not read a queue");
            None
        }
    }
}

/// Completed (green) and failed (red) jobs per minute, stacked, oldest on the left.
fn chart(name: &str, history: &[MinuteCounts]) -> Markup {
    const W: u64 = 600;
    const H: u64 = 120;
    let bar = W / MINUTES as u64;
    let peak = history
        .iter()
        .map(|m| m.completed + m.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let height = |n: u64| (n * H).div_ceil(peak).min(H);
    let completed: u64 = history.iter().map(|m| m.completed).sum();
    let failed: u64 = history.iter().map(|m| m.failed).sum();
    html! {
        div.chart data-queue=(name) {
            h3 { code { (name) } }
            svg viewBox=(format!("0 0 {W} {}", H + 16)) role="img"
                aria-label=(format!("{name}: {completed} jobs completed and {failed} failed in the last hour, per minute")) {
                line x1="0" y1=(H) x2=(W) y2=(H) stroke="#e4e7ec" {}
                @for (i, m) in history.iter().enumerate() {
                    @let x = i as u64 * bar;
                    @let done = height(m.completed);
                    @let bad = height(m.failed);
                    @if done > 0 {
                        rect.done x=(x) y=(H - done) width=(bar - 1) height=(done) fill="#1f8a4c" {
                            title { (m.completed) " completed" }
                        }
                    }
                    @if bad > 0 {
                        rect.failed x=(x) y=(H - done - bad.min(H - done)) width=(bar - 1) height=(bad.min(H - done)) fill="#c0362c" {
                            title { (m.failed) " failed" }
                        }
                    }
                }
                text x="0" y=(H + 13) font-size="11" fill="#667085" { "60 min ago" }
                text x=(W) y=(H + 13) font-size="11" fill="#667085" text-anchor="end" { "now" }
                text x="2" y="11" font-size="11" fill="#667085" { (peak) " / min" }
            }
            p.legend {
                span.done { "■ " (completed) " completed" } " · "
                span.failed { "■ " (failed) " failed" } " in the last hour"
            }
        }
    }
}
