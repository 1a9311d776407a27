//! What a handler and the engine say to each other about one job: its metadata, and the
//! verdict on a job that did not succeed.

use std::time::Duration;

/// A handler's verdict on a job that did not succeed. Any other error (a panic, a timeout,
/// an unexpected failure) is treated as [`JobError::Transient`].
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Try again after the queue's retry policy delay, or `retry_after` if that is longer.
    /// Past the queue's maximum attempts the job is dead.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Try again at exactly this time (milliseconds since the epoch). The handler has already
    /// applied its own limits, so the queue's maximum attempts does not apply.
    #[error("{message}")]
    RetryAt { message: String, at_ms: i64 },
    /// Not now, and this attempt does not count (an open circuit, a rate limit).
    #[error("deferred: {reason}")]
    Defer { reason: String, at_ms: i64 },
    /// It will never work: the job goes to the dead set at once.
    #[error("{0}")]
    Permanent(String),
    /// Its sender has no slot free now: the job waits behind the sender's pace, without
    /// spending an attempt, and comes back with [`JobMeta::paced`] set.
    #[error("waits for the pace of {}", .0.sender)]
    Park(super::Pace),
}

impl JobError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(message.into())
    }
}

/// What a handler knows about the job it runs; extract it with `Data<JobMeta>`.
#[derive(Debug, Clone)]
pub struct JobMeta {
    pub id: String,
    /// 1 on the first attempt of a run; includes attempts whose worker died.
    pub attempt: u32,
    pub queue: String,
    /// The job was released from its sender's pace: the slot it needs is already taken.
    pub paced: bool,
    /// The partition of its queue it lives in.
    pub partition: usize,
}
