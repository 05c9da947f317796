//! The `Store` trait every cache backend implements.

use std::sync::Arc;

use async_trait::async_trait;

use crate::entry::Entry;
use crate::error::StoreError;

/// What happened to a `put`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The entry is stored.
    Stored,
    /// The entry is larger than the store accepts; it was not stored.
    TooLarge,
}

/// Size figures of a store, as `/admin/cache/stats` and metrics report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Number of entries currently held (approximate for shared stores).
    pub entries: u64,
    /// Bytes currently held (weighted size).
    pub bytes: u64,
    /// Configured byte bound, if any.
    pub max_bytes: Option<u64>,
}

/// Where entries live.
///
/// Implementations must be cheap to call concurrently; the gateway calls `get` on
/// every request. Keys are opaque strings built by the gateway and never contain a
/// secret.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The store's kind, a bounded label: `memory`, `redis`, `memcached`, `tiered`.
    fn kind(&self) -> &'static str;

    /// The largest entry weight this store accepts.
    fn max_entry_bytes(&self) -> usize;

    /// Looks up `key`. Entries past their `stale_until` may still be returned; callers
    /// check [`Entry::freshness`].
    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, StoreError>;

    /// Stores `entry` under `key` until its `stale_until`.
    async fn put(&self, key: &str, entry: Arc<Entry>) -> Result<PutOutcome, StoreError>;

    /// Removes `key`; returns whether it was present.
    async fn purge(&self, key: &str) -> Result<bool, StoreError>;

    /// Removes every key that starts with `prefix`; returns how many.
    async fn purge_prefix(&self, prefix: &str) -> Result<u64, StoreError>;

    /// Current size figures.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// `None` while the store works fully; else why it is degraded (a shared backend
    /// that does not answer). `/healthz` reports this.
    fn degraded(&self) -> Option<String> {
        None
    }
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.kind())
    }
}
