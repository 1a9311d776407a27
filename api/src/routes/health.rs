//! Liveness and readiness.

use std::time::Duration;

use axum::{Json, extract::State, http::StatusCode};

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
    let (postgres, redis) = tokio::join!(pg, redis);
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
            checks: views::ReadinessChecks { postgres, redis },
        }),
    )
}
