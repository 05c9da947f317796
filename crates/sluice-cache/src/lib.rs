//! Stores, entries and the machinery that keeps an upstream's budget intact.
//!
//! This crate knows nothing about HTTP routing. It holds what every part of sluice
//! that *remembers* upstream data shares:
//!
//! - [`Entry`]: one stored response with its three instants (`stored_at`,
//!   `fresh_until`, `stale_until`) and [`Freshness`], the single place where those
//!   instants are compared with the current time.
//! - [`Store`]: where entries live. [`MemoryStore`] (moka, bounded by bytes) is the
//!   embedded default; shared stores implement the same trait.
//! - [`Coalescer`]: single-flight per key, so that many concurrent misses cost one
//!   upstream call.
//! - Shared stores: [`RedisStore`], [`MemcachedStore`], and [`TieredStore`] (a memory
//!   L1 in front of either), over `sluice_core::Redis`, the one handle to a shared
//!   Redis (connections, outage tracking, the event channel that carries purges).
//! - [`RawStore`]: the `[store]` config, one tagged enum of kinds whose keys live
//!   beside each store, and [`RawCluster`]; [`RawStore::build`] turns them into the
//!   store, the cluster-wide flights and the quota Redis.
//! - [`CacheTarget`]: what a writer outside the gateway (the batch cache writer,
//!   the HTTP reader's cache-through) needs of a gateway's cache: the key a
//!   client's request has, and the store.
//!
//! All time goes through `sluice_core::Clock`, so TTL and stale windows are tested
//! without sleeping. The Redis handle and the quotas live in `sluice-core`: the
//! queue and the scheduler use them without caching anything.

#![forbid(unsafe_code)]

mod coalesce;
pub mod codec;
mod config;
mod entry;
mod error;
mod flights;
mod memcached;
mod memory;
pub mod metrics;
mod redis_store;
mod store;
mod target;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod tiered;

pub use coalesce::{Coalescer, FlightError, Role};
pub use config::{BuiltStore, RawCluster, RawStore, StoreConfigError, StoreKind};
pub use entry::{Entry, Freshness};
pub use error::StoreError;
pub use flights::{Acquire, FlightLease, SharedFlights};
pub use memcached::{MemcachedOptions, MemcachedStore, RawMemcachedStore};
pub use memory::{MemoryStore, MemoryStoreBuilder, RawMemoryStore};
pub use redis_store::{RawRedisStore, RedisStore};
pub use store::{PutOutcome, Store, StoreStats};
pub use target::{CacheTarget, KeyError, KeyErrorKind};
pub use tiered::{RawTieredStore, TieredStore};
