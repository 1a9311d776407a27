//! Micro-batching of Postgres work: concurrent callers each hand in one item and await its
//! result, and one statement serves everything that arrived while the previous statement
//! ran. Under load a round trip and a commit are shared by hundreds of messages; when idle a
//! lone item goes at once, with no timer to wait for.
//!
//! A batch answers each item on its own. The items of one statement usually belong to many
//! tenants, so when the statement fails for a reason other than Postgres being unreachable
//! (a value it cannot store, a constraint), the batch is split in halves and each half tried
//! again, down to single items: only the item at fault fails, and everyone else's work is
//! done as if it had gone alone. An unreachable Postgres fails every item at once, since no
//! split could help.

use std::{future::Future, sync::Arc};

use futures_util::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::task::TaskTracker;
use tracing::warn;

type Answer<O> = Result<O, Arc<sqlx::Error>>;
type Reply<O> = oneshot::Sender<Answer<O>>;

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

/// Runs `items` as one statement; if that fails for a reason a smaller batch could avoid,
/// runs each half on its own. One answer per item, in order.
fn answer_each<I, O, F, Fut>(run: Arc<F>, items: Arc<[I]>) -> BoxFuture<'static, Vec<Answer<O>>>
where
    I: Clone + Send + Sync + 'static,
    O: Send + 'static,
    F: Fn(Arc<[I]>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<O>, sqlx::Error>> + Send + 'static,
{
    Box::pin(async move {
        let n = items.len();
        match run(items.clone()).await {
            Ok(outputs) => {
                let mut outputs = outputs.into_iter();
                (0..n).map(|_| outputs.next().ok_or_else(gone)).collect()
            }
            Err(e) if n == 1 || crate::store::is_unavailable(&e) => {
                let e = Arc::new(e);
                (0..n).map(|_| Err(e.clone())).collect()
            }
            Err(e) => {
                warn!(items = n, error = %e, "a batched statement failed; trying its halves apart so only the item at fault fails");
                ::metrics::counter!("herald_batch_splits_total").increment(1);
                let (left, right) = items.split_at(n / 2);
                let (left, right): (Arc<[I]>, Arc<[I]>) = (left.into(), right.into());
                let mut answers = answer_each(run.clone(), left).await;
                answers.extend(answer_each(run, right).await);
                answers
            }
        }
    })
}

impl<I: Clone + Send + Sync + 'static, O: Send + 'static> Batcher<I, O> {
    /// `run` gets up to `max` items and returns one output per item, in order. Up to
    /// `parallel` batches run at once. The batcher's tasks are `tasks`'s: once every handle
    /// is dropped, what was handed in still runs, and `tasks.wait()` returns after it has.
    pub fn spawn<F, Fut>(tasks: &TaskTracker, max: usize, parallel: usize, run: F) -> Self
    where
        F: Fn(Arc<[I]>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<O>, sqlx::Error>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(I, Reply<O>)>();
        let run = Arc::new(run);
        let slots = Arc::new(Semaphore::new(parallel.max(1)));
        let batches = tasks.clone();
        tasks.spawn(async move {
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
                batches.spawn(async move {
                    let _slot = slot;
                    let answers = answer_each(run, inputs.into()).await;
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                });
            }
        });
        Self { tx }
    }

    /// Hands in an item without waiting for its answer (work whose outcome nobody acts on,
    /// so the caller's slot is not held while the batch runs).
    pub fn submit(&self, item: I) {
        let (reply, _) = oneshot::channel();
        let _ = self.tx.send((item, reply));
    }

    pub async fn call(&self, item: I) -> Answer<O> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((item, reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A statement over numbers that fails as a whole when any of them is 13, the way
    /// Postgres fails a multi-row insert when one row holds a value it cannot store (or, with
    /// `unavailable`, the way every statement fails while Postgres is unreachable).
    fn statement(
        statements: Arc<AtomicUsize>,
        unavailable: bool,
    ) -> impl Fn(Arc<[u32]>) -> BoxFuture<'static, Result<Vec<u32>, sqlx::Error>> + Send + Sync + 'static
    {
        move |items: Arc<[u32]>| {
            let statements = statements.clone();
            Box::pin(async move {
                statements.fetch_add(1, Ordering::SeqCst);
                if items.contains(&13) {
                    return Err(if unavailable {
                        sqlx::Error::PoolTimedOut
                    } else {
                        sqlx::Error::RowNotFound
                    });
                }
                Ok(items.iter().map(|i| i * 2).collect())
            })
        }
    }

    #[tokio::test]
    async fn one_bad_item_fails_alone_and_the_rest_of_its_batch_succeeds() {
        let statements = Arc::new(AtomicUsize::new(0));
        let run = Arc::new(statement(statements.clone(), false));
        let answers = answer_each(run, (0..200u32).collect()).await;
        assert_eq!(answers.len(), 200);
        for (i, answer) in answers.iter().enumerate() {
            match (i, answer) {
                (13, Err(_)) => {}
                (13, Ok(v)) => panic!("the bad item succeeded: {v}"),
                (i, Ok(v)) => assert_eq!(*v, i as u32 * 2),
                (i, Err(e)) => panic!("item {i} failed with the bad one: {e}"),
            }
        }
        // Bisection: a couple of statements per level, not one per item.
        let n = statements.load(Ordering::SeqCst);
        assert!(n <= 2 * 8 + 1, "{n} statements for 200 items");
    }

    #[tokio::test]
    async fn an_unreachable_database_fails_the_batch_without_splitting_it() {
        let statements = Arc::new(AtomicUsize::new(0));
        let run = Arc::new(statement(statements.clone(), true));
        let answers = answer_each(run, (10..20u32).collect()).await;
        assert!(
            answers.iter().all(Result::is_err),
            "no split can help an outage"
        );
        assert_eq!(statements.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_callers_get_their_own_answers_through_the_batcher() {
        let statements = Arc::new(AtomicUsize::new(0));
        let b = Batcher::spawn(
            &TaskTracker::new(),
            256,
            1,
            statement(statements.clone(), false),
        );
        let answers = futures_util::future::join_all((0..100u32).map(|i| b.call(i))).await;
        for (i, answer) in answers.into_iter().enumerate() {
            if i == 13 {
                assert!(answer.is_err());
            } else {
                assert_eq!(answer.unwrap(), i as u32 * 2);
            }
        }
        assert!(
            statements.load(Ordering::SeqCst) < 100,
            "items were batched"
        );
    }

    #[tokio::test]
    async fn work_handed_in_is_done_before_the_tracker_is_idle() {
        let tasks = TaskTracker::new();
        let done = Arc::new(AtomicUsize::new(0));
        let counted = done.clone();
        let b = Batcher::spawn(&tasks, 8, 1, move |items: Arc<[u32]>| {
            let counted = counted.clone();
            async move {
                // Slow enough that the items are still queued when the handle is dropped.
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                counted.fetch_add(items.len(), Ordering::SeqCst);
                Ok(vec![(); items.len()])
            }
        });
        for i in 0..100 {
            b.submit(i);
        }
        drop(b);
        tasks.close();
        tokio::time::timeout(std::time::Duration::from_secs(10), tasks.wait())
            .await
            .expect("the batcher drains and stops");
        assert_eq!(
            done.load(Ordering::SeqCst),
            100,
            "nothing submitted is lost"
        );
    }
}
