//! Group commit for writes that contend on the same rows: a request that
//! finds another batch being written queues its work, and whichever request
//! next gets to write takes every queued one with it, in one transaction.
//! Under load a batch holds what arrived while the previous one was being
//! written, so the cost of a transaction (its round trips, its commit, the
//! hot row's lock) is shared; alone, a request is written at once.
//!
//! There is no background task: the writing is done by the requests
//! themselves, one batch at a time per shard (a key, e.g. the tenant, picks
//! the shard, so unrelated writes go side by side).

use std::collections::VecDeque;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::error::{ApiError, ApiResult, Code};

const SHARDS: usize = 8;

struct Shard<R, T> {
    queue: Mutex<VecDeque<(R, oneshot::Sender<T>)>>,
    writer: tokio::sync::Mutex<()>,
}

/// Combines concurrent requests of type `R`, each answered with a `T`.
pub struct Combiner<R, T> {
    shards: Vec<Shard<R, T>>,
    /// The most requests one batch takes.
    max: usize,
}

impl<R: Clone, T> Combiner<R, T> {
    pub fn new(max: usize) -> Self {
        let shards = (0..SHARDS)
            .map(|_| Shard { queue: Mutex::default(), writer: tokio::sync::Mutex::new(()) })
            .collect();
        Self { shards, max: max.max(1) }
    }

    /// Answer `request`, written by `write` together with whatever else is
    /// queued in the shard of `key`. `write` gets a batch (in arrival order)
    /// and returns one answer per request, in the same order.
    pub async fn run<K, W, F>(&self, key: &K, request: R, write: W) -> T
    where
        K: Hash,
        W: Fn(Vec<R>) -> F,
        F: Future<Output = Vec<T>>,
    {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let shard = &self.shards[(hasher.finish() as usize) % SHARDS];
        let (tx, mut rx) = oneshot::channel();
        lock(&shard.queue).push_back((request.clone(), tx));
        let _writing = shard.writer.lock().await;
        loop {
            match rx.try_recv() {
                Ok(answer) => return answer,
                // The batch that took it was dropped unwritten (its writer's
                // request was cancelled): queue it again, first in line.
                Err(oneshot::error::TryRecvError::Closed) => {
                    let (tx, again) = oneshot::channel();
                    rx = again;
                    lock(&shard.queue).push_front((request.clone(), tx));
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch: Vec<_> = {
                let mut queue = lock(&shard.queue);
                let n = queue.len().min(self.max);
                queue.drain(..n).collect()
            };
            let (requests, senders): (Vec<R>, Vec<_>) = batch.into_iter().unzip();
            let answers = write(requests).await;
            debug_assert_eq!(answers.len(), senders.len());
            for (sender, answer) in senders.into_iter().zip(answers) {
                let _ = sender.send(answer);
            }
        }
    }
}

/// Write `batch` with `write`, all of it in one go; should that fail as a
/// whole (a deadlock, an error no single request explains), each request
/// is written alone, so that a failure is only its own. A database that is
/// down fails them all at once. `failed` makes an answer of an error.
pub async fn each_alone_on_failure<R, T, W, F>(
    batch: Vec<R>,
    write: W,
    failed: impl Fn(ApiError) -> T,
) -> Vec<T>
where
    R: Clone,
    W: Fn(Vec<R>) -> F,
    F: Future<Output = ApiResult<Vec<T>>>,
{
    let size = batch.len();
    match write(batch.clone()).await {
        Ok(answers) => answers,
        Err(err) if size == 1 || err.code == Code::DatabaseUnavailable => {
            let mut answers = vec![failed(err)];
            let unwritten =
                || ApiError::database_unavailable(anyhow::anyhow!("its batch could not be written"));
            answers.extend((1..size).map(|_| failed(unwritten())));
            answers
        }
        Err(_) => {
            let mut answers = Vec::with_capacity(size);
            for request in batch {
                let alone = write(vec![request]).await.and_then(|mut answers| {
                    answers
                        .pop()
                        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("a request got no answer")))
                });
                answers.push(alone.unwrap_or_else(&failed));
            }
            answers
        }
    }
}

fn lock<Q>(queue: &Mutex<Q>) -> std::sync::MutexGuard<'_, Q> {
    queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_requests_are_written_together_and_each_gets_its_own_answer() {
        let combiner = Arc::new(Combiner::<u32, u32>::new(64));
        let batches = Arc::new(AtomicUsize::new(0));
        let largest = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let (combiner, batches, largest) = (combiner.clone(), batches.clone(), largest.clone());
                tokio::spawn(async move {
                    combiner
                        .run(&"tenant", i, |batch: Vec<u32>| {
                            let (batches, largest) = (batches.clone(), largest.clone());
                            async move {
                                batches.fetch_add(1, Ordering::SeqCst);
                                largest.fetch_max(batch.len(), Ordering::SeqCst);
                                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                                batch.into_iter().map(|r| r * 10).collect()
                            }
                        })
                        .await
                })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), i as u32 * 10, "request {i} got another's answer");
        }
        let (batches, largest) = (batches.load(Ordering::SeqCst), largest.load(Ordering::SeqCst));
        assert!(batches < 200, "200 requests were written in {batches} batches: none was combined");
        assert!(largest <= 64, "a batch took {largest} requests, more than its maximum of 64");
    }

    #[tokio::test]
    async fn a_batch_that_fails_is_written_one_by_one_unless_the_database_is_down() {
        // 13 cannot be written; 0 is a database that went away.
        let write = |batch: Vec<u32>| async move {
            match batch.iter().find(|r| **r == 13 || **r == 0) {
                Some(13) => Err(ApiError::new(Code::Conflict, "13 is taken")),
                Some(_) => Err(ApiError::database_unavailable(anyhow::anyhow!("gone"))),
                None => Ok(batch.iter().map(|r| Ok(r * 10)).collect()),
            }
        };
        let answers = each_alone_on_failure(vec![1, 13, 2], write, Err).await;
        let codes: Vec<_> = answers.iter().map(|a| a.as_ref().map_err(|e| e.code)).collect();
        assert_eq!(codes, [Ok(&10), Err(Code::Conflict), Ok(&20)]);
        let answers = each_alone_on_failure(vec![1, 0, 2], write, Err).await;
        assert!(answers.iter().all(|a| matches!(a, Err(e) if e.code == Code::DatabaseUnavailable)));
    }

    #[tokio::test]
    async fn a_request_taken_by_a_cancelled_batch_is_written_again() {
        use std::time::Duration;
        let combiner = Arc::new(Combiner::<u32, u32>::new(64));
        let (writing, release) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
        // 1's batch waits to be released; a batch with 2 in it never ends.
        let spawn = |request: u32| {
            let (combiner, writing, release) = (combiner.clone(), writing.clone(), release.clone());
            tokio::spawn(async move {
                combiner
                    .run(&"k", request, |batch: Vec<u32>| {
                        let (writing, release) = (writing.clone(), release.clone());
                        async move {
                            if batch.contains(&1) {
                                writing.notify_one();
                                release.notified().await;
                            } else if batch.contains(&2) {
                                std::future::pending::<()>().await;
                            }
                            batch
                        }
                    })
                    .await
            })
        };
        let first = spawn(1);
        writing.notified().await;
        let second = spawn(2);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let third = spawn(3);
        tokio::time::sleep(Duration::from_millis(20)).await;
        release.notify_one();
        assert_eq!(first.await.unwrap(), 1);
        // 2 now writes the batch [2, 3], which never ends: its request is cancelled.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!third.is_finished(), "3 was answered while its batch was still being written");
        second.abort();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), third).await.unwrap().unwrap(), 3);
    }
}
