//! Single flight for the caches in front of the request path: when a cached
//! value of a key runs out, the requests that miss it at the same moment
//! wait for the first of them to read it again, instead of each reading it
//! from the database. Without this, every request in flight when a client's
//! principal aged out (each second) made the three queries of resolving it,
//! at once, and the pool queued them: that burst was most of the product
//! read's p99 under load (docs/performance.md).

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{Arc, Mutex},
};

use tokio::sync::OwnedMutexGuard;

/// The keys being read now, each with the lock its readers queue on.
pub struct Flights<K> {
    keys: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for Flights<K> {
    fn default() -> Self {
        Self { keys: Mutex::default() }
    }
}

impl<K: Eq + Hash + Clone> Flights<K> {
    /// The value of `key` from `cached`, or else from `read`, which also
    /// caches it. A caller that misses waits for the read of `key` in
    /// flight, if any, then looks in the cache again (that read filled it)
    /// and reads only if it is still missing; a failed read is not shared,
    /// the next waiter reads.
    pub async fn get_or_read<V, E, F>(
        &self,
        key: &K,
        cached: impl Fn() -> Option<V>,
        read: impl FnOnce() -> F,
    ) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
    {
        if let Some(value) = cached() {
            return Ok(value);
        }
        // Boxed: a read is a few queries whose futures are kilobytes; inline,
        // they would make every request's future that large, hits included,
        // and a hit would copy them whenever that future moves.
        Box::pin(async {
            let _flight = self.join(key).await;
            if let Some(value) = cached() {
                return Ok(value);
            }
            read().await
        })
        .await
    }

    /// Wait for the read of `key` in flight, if any, then hold it until the
    /// returned value is dropped.
    async fn join(&self, key: &K) -> Flight<'_, K> {
        let lock = match self.keys.lock() {
            Ok(mut keys) => keys.entry(key.clone()).or_default().clone(),
            // A panic elsewhere poisoned the map: fly alone.
            Err(_) => Arc::default(),
        };
        let guard = lock.clone().lock_owned().await;
        Flight { flights: self, key: key.clone(), lock, guard: Some(guard) }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.lock().map(|keys| keys.len()).unwrap_or_default()
    }
}

/// A read of one key in flight; the next caller of the key goes on when it
/// is dropped, and the key is forgotten once nobody waits for it.
pub struct Flight<'a, K: Eq + Hash> {
    flights: &'a Flights<K>,
    key: K,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash> Drop for Flight<'_, K> {
    fn drop(&mut self) {
        self.guard.take();
        if let Ok(mut keys) = self.flights.keys.lock()
            // Nobody else holds the lock: the map's clone and this one. A
            // waiter takes its clone under the map's lock, so it cannot
            // appear between this check and the removal.
            && Arc::strong_count(&self.lock) == 2
            && keys.get(&self.key).is_some_and(|lock| Arc::ptr_eq(lock, &self.lock))
        {
            keys.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Twenty concurrent misses of one key make one read; another key is
    /// read beside it; nothing is left behind.
    #[tokio::test]
    async fn concurrent_misses_of_a_key_make_one_read() {
        let flights = Arc::new(Flights::<u32>::default());
        let cache = Arc::new(Mutex::new(HashMap::<u32, u32>::new()));
        let reads = Arc::new(AtomicUsize::new(0));
        let get = |key: u32| {
            let (flights, cache, reads) = (flights.clone(), cache.clone(), reads.clone());
            tokio::spawn(async move {
                let cached = || cache.lock().unwrap().get(&key).copied();
                let read = || async {
                    reads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    cache.lock().unwrap().insert(key, key * 10);
                    Ok::<_, ()>(key * 10)
                };
                flights.get_or_read(&key, cached, read).await.unwrap()
            })
        };
        let tasks: Vec<_> = (0..20).map(|_| get(1)).chain([get(2)]).collect();
        let mut values = Vec::new();
        for task in tasks {
            values.push(task.await.unwrap());
        }
        assert_eq!(values.iter().filter(|v| **v == 10).count(), 20);
        assert_eq!(values.last(), Some(&20));
        assert_eq!(reads.load(Ordering::SeqCst), 2, "one read of each key");
        assert_eq!(flights.len(), 0, "the keys are forgotten once read");
    }
}
