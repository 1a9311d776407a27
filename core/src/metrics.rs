//! Prometheus metrics: one recorder per process, rendered at `/metrics` (the API on its own
//! listener, the worker and the scheduler on `HERALD_*_METRICS_LISTEN`).
//!
//! - `herald_http_requests_total{route,method,status}`, `herald_http_request_duration_seconds`
//! - `herald_jobs_total{queue,outcome}`, `herald_job_duration_seconds{queue}`
//! - `herald_queue_depth{queue,state}`, `herald_queue_paced{queue}` (of the pending, SMS waiting
//!   for their sender's pace)
//! - `herald_provider_calls_total{provider,outcome}`, `herald_provider_call_duration_seconds`
//! - `herald_dead_letters_total{reason}`, `herald_messages_accepted_total{channel}`
//! - `herald_circuits_open{provider}` (circuits open or half open: the SMS or email provider's,
//!   and the tenants' webhook origins'), `herald_circuit_transitions_total{provider,to}`
//! - `herald_batch_splits_total`: batched statements that failed and were split so that only
//!   the item at fault failed
//! - `herald_queue_oldest_due_seconds{queue}`: how long the oldest due job has waited for a
//!   worker (jobs waiting for their sender's pace are not counted)
//! - `herald_worker_heartbeat_timestamp_seconds{queue}`: each worker process's last fetch
//!   (at least every second while it runs and has room)
//! - `herald_scheduler_last_run_timestamp_seconds{task}`, `herald_scheduler_failures_total{task}`:
//!   the scheduler's ticks (`outbox`, `events`, `reconcile`, `daily`, `retention`, `usage`)
//! - `herald_messages_finished_total{channel,status}`: messages reaching an outcome (the
//!   worker's `sent`, `delivered`, `failed`, `dead`, `expired`, `suppressed`, `canceled`, and the
//!   status callbacks' `delivered`, `undelivered`, `failed`)
//! - `herald_delivery_lateness_seconds{channel}`: from a message's due time to its first
//!   provider call
//! - `herald_model_calls_total{role,outcome}`, `herald_canned_replies_total{reason}`
//! - `herald_usage_today{tenant_id,kind}`, `herald_usage_daily_average{tenant_id,kind}`
//!   (`sms_segments`, `model_tokens`: today so far in the tenant's zone, and the mean of its 7
//!   days before), from the scheduler, for the tenants with usage in those 8 days
//!
//! Every label's values are bounded: routes by their pattern, providers by name, never a
//! host or anything else a client chooses. Only the usage gauges name a tenant (tenants are
//! made by the operator), and only the tenants with usage in the last 8 days.

use std::{net::SocketAddr, sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::queue::Queue;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder (once) and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            const LATENESS: &[f64] = &[
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
            ];
            const DURATION: &[f64] = &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("herald_delivery_lateness_seconds".to_owned()),
                    LATENESS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Suffix("duration_seconds".to_owned()),
                        DURATION,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (a test harness): render an empty one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Records the counts of these queues as gauges.
pub async fn record_queue_depths(queues: &[Queue]) {
    for q in queues {
        if let Ok(s) = q.stats().await {
            let name = q.name().to_owned();
            for (state, value) in [
                ("pending", s.pending),
                ("scheduled", s.scheduled),
                ("running", s.running),
                ("dead", s.dead),
            ] {
                ::metrics::gauge!("herald_queue_depth", "queue" => name.clone(), "state" => state)
                    .set(value as f64);
            }
            ::metrics::gauge!("herald_queue_paced", "queue" => name.clone()).set(s.paced as f64);
            ::metrics::gauge!("herald_queue_oldest_due_seconds", "queue" => name)
                .set(s.oldest_due_seconds);
        }
    }
}

/// Serves `/metrics` on `addr` until `shutdown`, refreshing the queue gauges every 5 s. A
/// port already in use is logged, not fatal: metrics must never stop the work.
pub async fn serve(addr: SocketAddr, queues: Vec<Queue>, shutdown: CancellationToken) {
    let handle = install();
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%addr, error = %e, "could not listen for /metrics; running without it");
            return;
        }
    };
    info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics at /metrics");
    let refresh = {
        let shutdown = shutdown.clone();
        async move {
            loop {
                record_queue_depths(&queues).await;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    tokio::join!(refresh, respond(listener, handle, shutdown));
}

/// A minimal HTTP/1 responder for `GET /metrics`, so the worker and the scheduler need no web
/// framework.
async fn respond(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    shutdown: CancellationToken,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if request.starts_with("GET /metrics") {
                ("200 OK", handle.render())
            } else {
                ("404 Not Found", "not found\n".to_owned())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
