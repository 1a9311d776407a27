//! Liveness and readiness.

use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode};
use herald_core::store::sender_pauses::{self, PauseRow};

use crate::{state::AppState, views};

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = views::Health)))]
pub async fn healthz() -> Json<views::Health> {
    Json(views::Health { status: "ok" })
}

/// 200 when Postgres and Redis both answer, else 503 with what failed.
#[utoipa::path(
    get, path = "/readyz", tag = "ops",
    responses((status = 200, body = views::Readiness), (status = 503, body = views::Readiness))
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<views::Readiness>) {
    let limit = Duration::from_secs(2);
    // Plain words for whoever reads it (a load balancer's page, a person); the driver's
    // error, which can name hosts and users, goes to the log only.
    let pg = async {
        match tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(&state.db)).await {
            Ok(Ok(_)) => "ok".to_owned(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: Postgres is down");
                "down: Postgres is not answering queries".to_owned()
            }
            Err(_) => "down: Postgres gave no answer within 2 s".to_owned(),
        }
    };
    let redis = async {
        match tokio::time::timeout(limit, state.queue.ping()).await {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: Redis is down");
                "down: Redis is not answering".to_owned()
            }
            Err(_) => "down: Redis gave no answer within 2 s".to_owned(),
        }
    };
    let senders = async {
        match tokio::time::timeout(limit, sender_pauses::all(&state.db)).await {
            Ok(Ok(paused)) => paused_senders(&paused),
            // Postgres's own check says why.
            Ok(Err(_)) | Err(_) => "unknown: Postgres is not answering".to_owned(),
        }
    };
    let (postgres, redis, senders) = tokio::join!(pg, redis, senders);
    let ready = postgres == "ok" && redis == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(views::Readiness {
            status: if ready { "ready" } else { "unready" },
            checks: views::ReadinessChecks {
                postgres,
                redis,
                senders,
            },
        }),
    )
}

/// The paused senders in plain words, by code only: readiness is public, so no tenant or
/// number is named (the worker's log names them).
fn paused_senders(paused: &[PauseRow]) -> String {
    if paused.is_empty() {
        return "ok".to_owned();
    }
    let mut codes: Vec<(i32, usize)> = Vec::new();
    for p in paused {
        match codes.iter_mut().find(|(c, _)| *c == p.code) {
            Some((_, n)) => *n += 1,
            None => codes.push((p.code, 1)),
        }
    }
    let codes: Vec<String> = codes
        .iter()
        .map(|(code, n)| format!("twilio {code} x{n}"))
        .collect();
    format!(
        "paused: {} SMS sender{} refused by Twilio until the operator fixes it ({}); see the worker's log",
        paused.len(),
        if paused.len() == 1 { "" } else { "s" },
        codes.join(", ")
    )
}
