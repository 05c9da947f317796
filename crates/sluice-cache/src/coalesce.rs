//! Single-flight per key.
//!
//! When many requests miss the same key at once, exactly one of them (the
//! *leader*) runs the fetch; the others (*followers*) wait for its result. The fetch
//! runs in its own task, so a leader whose client disconnects does not cancel the
//! work the followers wait for.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use thiserror::Error;

/// Whether a caller ran the fetch or joined one already in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This call started the fetch.
    Leader,
    /// This call waited for a fetch started by another call.
    Follower,
}

/// The fetch task ended without producing a value.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("the in-flight fetch for this key {0}")]
pub struct FlightError(&'static str);

type Flight<T> = Shared<BoxFuture<'static, Result<T, FlightError>>>;

/// Runs at most one fetch per key at a time and shares its result.
///
/// # Concurrent calls on the same key
///
/// The first call of [`Coalescer::run`] for a key spawns the fetch; every call for
/// the same key made before that fetch completes receives a clone of the same
/// result, with [`Role::Follower`]. Once it completes the key is free again, so the
/// fetch should store its result *before* returning: a caller that arrives after
/// completion then finds it in the store instead of starting a second fetch.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use sluice_cache::{Coalescer, Role};
/// let flights: Coalescer<u32> = Coalescer::new();
/// let calls = Arc::new(AtomicU32::new(0));
/// let run = |c: Arc<AtomicU32>| flights.run("k", move || async move {
///     c.fetch_add(1, Ordering::SeqCst);
///     tokio::time::sleep(std::time::Duration::from_millis(20)).await;
///     7
/// });
/// let (a, b) = tokio::join!(run(calls.clone()), run(calls.clone()));
/// assert_eq!(a.0, Ok(7));
/// assert_eq!(b.0, Ok(7));
/// assert_eq!(calls.load(Ordering::SeqCst), 1);
/// assert_eq!(a.1, Role::Leader);
/// assert_eq!(b.1, Role::Follower);
/// # });
/// ```
///
/// # Errors
///
/// [`FlightError`] when the fetch task panicked or the runtime shut down.
pub struct Coalescer<T: Clone + Send + Sync + 'static> {
    inflight: Arc<Mutex<HashMap<String, Flight<T>>>>,
}

/// Clones share the flights.
impl<T: Clone + Send + Sync + 'static> Clone for Coalescer<T> {
    fn clone(&self) -> Self {
        Self {
            inflight: self.inflight.clone(),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Default for Coalescer<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone + Send + Sync + 'static> std::fmt::Debug for Coalescer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

impl<T: Clone + Send + Sync + 'static> Coalescer<T> {
    /// An empty coalescer.
    pub fn new() -> Self {
        Self {
            inflight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Number of keys with a fetch in flight.
    pub fn in_flight(&self) -> usize {
        self.inflight.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether a fetch for `key` is in flight.
    pub fn is_in_flight(&self, key: &str) -> bool {
        self.inflight
            .lock()
            .map(|m| m.contains_key(key))
            .unwrap_or(false)
    }

    /// Runs `fetch` for `key` unless a fetch for it is already in flight, and returns
    /// the shared result with this caller's role.
    pub async fn run<F, Fut>(&self, key: &str, fetch: F) -> (Result<T, FlightError>, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (flight, role) = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(f) = map.get(key) {
                (f.clone(), Role::Follower)
            } else {
                let fut = fetch();
                let guard = Release {
                    map: self.inflight.clone(),
                    key: key.to_owned(),
                };
                let handle = tokio::spawn(async move {
                    let out = fut.await;
                    drop(guard);
                    out
                });
                let flight: Flight<T> = handle
                    .map(|r| {
                        r.map_err(|e| {
                            if e.is_panic() {
                                FlightError("panicked")
                            } else {
                                FlightError("was cancelled")
                            }
                        })
                    })
                    .boxed()
                    .shared();
                map.insert(key.to_owned(), flight.clone());
                (flight, Role::Leader)
            }
        };
        (flight.await, role)
    }
}

/// Removes the key from the in-flight map when the fetch task ends, even by panic.
struct Release<T: Clone + Send + Sync + 'static> {
    map: Arc<Mutex<HashMap<String, Flight<T>>>>,
    key: String,
}

impl<T: Clone + Send + Sync + 'static> Drop for Release<T> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_callers_one_fetch() {
        let c: Arc<Coalescer<u32>> = Arc::new(Coalescer::new());
        let calls = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let c = c.clone();
            let calls = calls.clone();
            tasks.push(tokio::spawn(async move {
                c.run("k", move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    42
                })
                .await
            }));
        }
        let mut leaders = 0;
        for t in tasks {
            let (v, role) = t.await.unwrap();
            assert_eq!(v, Ok(42));
            if role == Role::Leader {
                leaders += 1;
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        assert_eq!(c.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_panicking_fetch_is_an_error_and_frees_the_key() {
        let c: Coalescer<u32> = Coalescer::new();
        let (r, _) = c.run("k", || async { panic!("boom") }).await;
        assert_eq!(r, Err(FlightError("panicked")));
        assert!(!c.is_in_flight("k"));
        let (r, role) = c.run("k", || async { 1 }).await;
        assert_eq!((r, role), (Ok(1), Role::Leader));
    }
}
