//! Pushing committed messages' delivery jobs to Redis without holding up the API.
//!
//! A request commits its message in Postgres and hands the job to the [`Enqueuer`]; a
//! background task pushes jobs in batches. Whatever does not make it (Redis down, a crash)
//! is pushed by the scheduler's outbox sweep, which walks every message created since its
//! watermark. Pushes are idempotent by message id, so a message pushed by both is still
//! one job.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tracing::{Span, debug, info_span, warn};

use crate::domain::jobs::DeliveryJob;
use crate::{
    queue::{NewJob, Queue},
    store::messages::MessageRow,
    traces,
};

/// Jobs waiting for the background pusher; past this the API leaves them to the sweep.
const BUFFER: usize = 50_000;
const BATCH: usize = 500;

/// The pusher's handle. Its task is the caller's tracker's: once every handle is dropped it
/// pushes what is buffered and ends.
pub struct Enqueuer {
    tx: mpsc::Sender<Pending>,
}

/// A job for the pusher, and with traces on, the span of its push (ended once its batch is
/// pushed): the job carries that span's context to its worker.
struct Pending {
    job: NewJob,
    span: Option<Span>,
}

impl std::fmt::Debug for Enqueuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enqueuer").finish()
    }
}

impl Enqueuer {
    pub fn start(queue: Queue, tasks: &TaskTracker) -> Self {
        let (tx, rx) = mpsc::channel(BUFFER);
        tasks.spawn(run(queue, rx));
        Self { tx }
    }

    /// Hands a committed message's job to the pusher. Never waits: when the buffer is full
    /// the outbox sweep pushes it instead.
    pub fn submit(&self, message: &MessageRow) {
        self.submit_for(message, None);
    }

    /// Like [`Enqueuer::submit`], naming the API request that caused the message.
    pub fn submit_for(&self, message: &MessageRow, request_id: Option<&str>) {
        let message_id = message.id.as_str();
        let mut job = DeliveryJob::for_message(message);
        job.request_id = request_id.map(str::to_owned);
        let span = traces::enabled().then(|| {
            info_span!(
                "redis.push",
                queue = "deliveries",
                message_id,
                otel.status_code = tracing::field::Empty
            )
        });
        job.traceparent = span.as_ref().and_then(traces::traceparent_of);
        let job = match NewJob::new(message_id, &job, message.send_at.timestamp_millis()) {
            Ok(job) => job,
            Err(e) => {
                warn!(message_id, error = %e, "could not encode a delivery job; the outbox sweep will push it");
                return;
            }
        };
        if self.tx.try_send(Pending { job, span }).is_err() {
            debug!(
                message_id,
                "enqueue buffer full; the outbox sweep will push this message"
            );
        }
    }
}

async fn run(queue: Queue, mut rx: mpsc::Receiver<Pending>) {
    let mut pending = Vec::with_capacity(BATCH);
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut pending, BATCH).await > 0 {
        let mut spans = Vec::new();
        for p in pending.drain(..) {
            batch.push(p.job);
            spans.extend(p.span);
        }
        let pushed = tokio::time::timeout(Duration::from_secs(3), queue.push_many(&batch)).await;
        let ok = match pushed {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                warn!(error = %e, count = batch.len(), "could not push delivery jobs; the outbox sweep will push them");
                false
            }
            Err(_) => {
                warn!(
                    count = batch.len(),
                    "Redis did not answer in time; the outbox sweep will push these jobs"
                );
                false
            }
        };
        for span in spans {
            if !ok {
                span.record("otel.status_code", "error");
            }
        }
        batch.clear();
    }
}
