//! The in-process memory store (the embedded default).
//!
//! Built on moka's TinyLFU cache, bounded by **bytes** through a weigher rather than
//! by entry count, because upstream bodies range from a few hundred bytes to
//! megabytes. Each entry expires at its own `stale_until` through moka's per-entry
//! expiry, so stale-if-error windows are kept exactly as long as configured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;
use serde::Deserialize;
use sluice_core::config::Size;

use crate::entry::Entry;
use crate::error::StoreError;
use crate::store::{PutOutcome, Store, StoreStats};
use sluice_core::{Clock, SystemClock};

/// `kind = "memory"` (the default, also when `[store]` is absent): entries in
/// this process, in moka's TinyLFU cache bounded by bytes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemoryStore {
    /// Byte bound of the store, weighted by body + headers + key. Default
    /// `256MiB`.
    pub max_bytes: Option<Size>,
    /// Largest response stored; larger ones are passed through uncached
    /// (`detail=too-large`). Default `8MiB`.
    pub max_body: Option<Size>,
}

/// The default of `max_body`, for every kind that has it.
pub(crate) const DEFAULT_MAX_BODY: u64 = 8 << 20;

/// The largest entry a store takes, from `max_body` (default 8 MiB).
pub(crate) fn max_body(given: Option<Size>) -> usize {
    given.map_or(DEFAULT_MAX_BODY, |s| s.0) as usize
}

impl RawMemoryStore {
    /// The memory store this config describes, on `clock`.
    pub(crate) fn build(&self, clock: Arc<dyn Clock>) -> MemoryStore {
        MemoryStore::configured(self.max_bytes, 256 << 20, self.max_body, clock).build()
    }
}

/// Builder for [`MemoryStore`].
#[derive(Debug)]
pub struct MemoryStoreBuilder {
    max_bytes: u64,
    max_entry_bytes: usize,
    max_ttl: Option<Duration>,
    clock: Arc<dyn Clock>,
}

impl MemoryStoreBuilder {
    /// Keeps no entry longer than `ttl` after it is put, however long its own life
    /// (default: until its `stale_until`). The tiered store's L1 uses this so a node
    /// never serves another node's superseded entry for long.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = Some(ttl);
        self
    }

    /// Total byte bound (default 256 MiB).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Largest single entry accepted (default 8 MiB); larger ones are passed
    /// through uncached.
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// The clock that decides expiry (default: system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        let cache = Cache::builder()
            .max_capacity(self.max_bytes)
            .weigher(|k: &Arc<str>, v: &Arc<Entry>| {
                u32::try_from(v.weight_under(k)).unwrap_or(u32::MAX)
            })
            .expire_after(StaleLimit {
                clock: self.clock.clone(),
                max_ttl: self.max_ttl,
            })
            .build();
        MemoryStore {
            cache,
            max_bytes: self.max_bytes,
            max_entry_bytes: self.max_entry_bytes,
        }
    }
}

/// Bounded in-process store. Cheap to clone; clones share the cache.
///
/// ```
/// # tokio_test_shim::block_on(async {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use bytes::Bytes;
/// use sluice_cache::{Entry, MemoryStore, Store};
/// use sluice_core::{Clock, SystemClock};
/// let store = MemoryStore::builder().max_bytes(1 << 20).build();
/// let now = SystemClock.now_millis();
/// let e = Entry::new(200, vec![], Bytes::from_static(b"{}"), now,
///                    Duration::from_secs(60), Duration::ZERO, Duration::ZERO);
/// store.put("k", Arc::new(e)).await.unwrap();
/// assert!(store.get("k").await.unwrap().is_some());
/// # });
/// # mod tokio_test_shim { pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #   tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f) } }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<Arc<str>, Arc<Entry>>,
    max_bytes: u64,
    max_entry_bytes: usize,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_bytes", &self.max_bytes)
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl MemoryStore {
    /// A builder with defaults (256 MiB, 8 MiB per entry, system clock).
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_bytes: 256 << 20,
            max_entry_bytes: DEFAULT_MAX_BODY as usize,
            max_ttl: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl MemoryStore {
    /// A builder from config values: `max_bytes` (else `default_bytes`) and
    /// `max_body`, on `clock`. The memory store and the tiered store's L1 start
    /// from it.
    pub(crate) fn configured(
        max_bytes: Option<Size>,
        default_bytes: u64,
        max_body: Option<Size>,
        clock: Arc<dyn Clock>,
    ) -> MemoryStoreBuilder {
        Self::builder()
            .max_bytes(max_bytes.map_or(default_bytes, |s| s.0))
            .max_entry_bytes(self::max_body(max_body))
            .clock(clock)
    }

    /// Drops every entry at once.
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }
}

struct StaleLimit {
    clock: Arc<dyn Clock>,
    max_ttl: Option<Duration>,
}

impl StaleLimit {
    fn remaining(&self, e: &Entry) -> Option<Duration> {
        let left = e.stale_until - self.clock.now_millis();
        let left = Duration::from_millis(left.max(0) as u64);
        Some(self.max_ttl.map_or(left, |m| m.min(left)))
    }
}

impl Expiry<Arc<str>, Arc<Entry>> for StaleLimit {
    fn expire_after_create(&self, _k: &Arc<str>, v: &Arc<Entry>, _at: Instant) -> Option<Duration> {
        self.remaining(v)
    }

    fn expire_after_update(
        &self,
        _k: &Arc<str>,
        v: &Arc<Entry>,
        _at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        self.remaining(v)
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn max_entry_bytes(&self) -> usize {
        self.max_entry_bytes
    }

    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, StoreError> {
        Ok(self.cache.get(key).await)
    }

    async fn put(&self, key: &str, entry: Arc<Entry>) -> Result<PutOutcome, StoreError> {
        if entry.weight_under(key) > self.max_entry_bytes {
            return Ok(PutOutcome::TooLarge);
        }
        self.cache.insert(Arc::from(key), entry).await;
        Ok(PutOutcome::Stored)
    }

    async fn purge(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.cache.remove(key).await.is_some())
    }

    async fn purge_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let keys: Vec<Arc<str>> = self
            .cache
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| Arc::clone(&*k))
            .collect();
        let mut n = 0;
        for k in keys {
            if self.cache.remove(&*k).await.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.cache.run_pending_tasks().await;
        Ok(StoreStats {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
            max_bytes: Some(self.max_bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::json_entry;
    use sluice_core::ManualClock;

    fn entry(now: i64, body: usize, ttl: u64) -> Arc<Entry> {
        let ttl = Duration::from_secs(ttl);
        Arc::new(json_entry(now, body, ttl, Duration::ZERO, Duration::ZERO))
    }

    #[tokio::test]
    async fn bounded_by_bytes() {
        let store = MemoryStore::builder()
            .max_bytes(100_000)
            .max_entry_bytes(50_000)
            .build();
        let now = SystemClock.now_millis();
        for i in 0..100 {
            store
                .put(&format!("k{i}"), entry(now, 10_000, 60))
                .await
                .unwrap();
        }
        let stats = store.stats().await.unwrap();
        assert!(stats.bytes <= 100_000, "bytes {} over bound", stats.bytes);
        assert!(stats.entries <= 10, "entries {}", stats.entries);
        assert!(stats.entries >= 1);
    }

    #[tokio::test]
    async fn oversized_entries_are_refused() {
        let store = MemoryStore::builder().max_entry_bytes(1_000).build();
        let now = SystemClock.now_millis();
        assert_eq!(
            store.put("big", entry(now, 2_000, 60)).await.unwrap(),
            PutOutcome::TooLarge
        );
        assert!(store.get("big").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn purge_by_key_and_prefix() {
        let store = MemoryStore::builder().build();
        let now = SystemClock.now_millis();
        for k in ["a GET /x", "a GET /y", "b GET /x"] {
            store.put(k, entry(now, 10, 60)).await.unwrap();
        }
        assert!(store.purge("b GET /x").await.unwrap());
        assert!(!store.purge("b GET /x").await.unwrap());
        assert_eq!(store.purge_prefix("a ").await.unwrap(), 2);
        assert_eq!(store.stats().await.unwrap().entries, 0);
    }

    #[tokio::test]
    async fn entries_expire_at_their_stale_limit() {
        let clock = ManualClock::starting_now();
        let store = MemoryStore::builder()
            .clock(Arc::new(clock.clone()))
            .build();
        // Stored as if 59.95 s ago with a 60 s life: moka drops it within 50 ms.
        let e = entry(clock.now_millis() - 59_950, 10, 60);
        store.put("k", e).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(store.get("k").await.unwrap().is_none());
    }
}
