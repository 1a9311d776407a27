//! One cancellation token per process, cancelled by SIGTERM or SIGINT and passed down to
//! everything that must stop cleanly; and the draining of background work before exit.

use std::time::Duration;

use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

/// A token cancelled on the first SIGTERM or SIGINT (Ctrl-C).
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let name = wait_for_signal().await;
        info!(signal = name, "shutting down");
        t.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}

/// Waits, up to `within`, for the background work started on `tasks` (batched inserts,
/// outcomes, job pushes) to finish once its handles are dropped. Whatever is cut off at the
/// deadline is left to the outbox sweep and to lease expiry, as after a crash.
pub async fn drain(tasks: &TaskTracker, within: Duration) {
    tasks.close();
    if tasks.is_empty() {
        return;
    }
    info!(
        tasks = tasks.len(),
        "finishing batched writes and job pushes"
    );
    if tokio::time::timeout(within, tasks.wait()).await.is_err() {
        warn!(
            tasks = tasks.len(),
            "background work did not finish in time; the outbox sweep and lease expiry cover it"
        );
    }
}
