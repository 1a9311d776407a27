//! Micro-batching of Postgres work: concurrent callers each hand in one item and await its
//! result, and one statement serves everything that arrived while the previous statement
//! ran. Under load a round trip and a commit are shared by hundreds of messages; when idle a
//! lone item goes at once, with no timer to wait for.

use std::{future::Future, sync::Arc};

use tokio::sync::{Semaphore, mpsc, oneshot};

type Reply<O> = oneshot::Sender<Result<O, Arc<sqlx::Error>>>;

/// Hands items to a background task that runs them in batches.
pub struct Batcher<I, O> {
    tx: mpsc::UnboundedSender<(I, Reply<O>)>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<I, O> std::fmt::Debug for Batcher<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish()
    }
}

/// The batcher's task is gone (the runtime is shutting down).
fn gone() -> Arc<sqlx::Error> {
    Arc::new(sqlx::Error::PoolClosed)
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// `run` gets up to `max` items and returns one output per item, in order. Up to
    /// `parallel` batches run at once.
    pub fn spawn<F, Fut>(max: usize, parallel: usize, run: F) -> Self
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, sqlx::Error>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(I, Reply<O>)>();
        let run = Arc::new(run);
        let slots = Arc::new(Semaphore::new(parallel.max(1)));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                // Whatever queued up while we waited for a slot joins this batch.
                let mut items = vec![first];
                while items.len() < max {
                    match rx.try_recv() {
                        Ok(item) => items.push(item),
                        Err(_) => break,
                    }
                }
                let (inputs, replies): (Vec<I>, Vec<Reply<O>>) = items.into_iter().unzip();
                let run = run.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match run(inputs).await {
                        Ok(outputs) => {
                            let mut outputs = outputs.into_iter();
                            for reply in replies {
                                let _ = reply.send(outputs.next().ok_or_else(gone));
                            }
                        }
                        Err(e) => {
                            let e = Arc::new(e);
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                });
            }
        });
        Self { tx }
    }

    pub async fn call(&self, item: I) -> Result<O, Arc<sqlx::Error>> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((item, reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}
