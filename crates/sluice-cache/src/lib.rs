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
//! - [`LocalQuota`]: the per-second rate limit and the daily budget of an upstream.
//! - Shared stores: [`RedisStore`], [`MemcachedStore`], and [`TieredStore`] (a memory
//!   L1 in front of either), with [`Redis`] as the one handle to a shared Redis
//!   (connections, outage tracking, the event channel that carries purges).
//! - [`Clock`]: all time goes through it, so TTL, stale windows and quota resets are
//!   tested without sleeping.

#![forbid(unsafe_code)]

mod coalesce;
pub mod codec;
mod entry;
mod error;
mod flights;
mod health;
mod memcached;
mod memory;
pub mod metrics;
mod quota;
pub mod redis;
mod redis_store;
mod store;
mod tiered;

pub use coalesce::{Coalescer, FlightError, Role};
pub use entry::{Entry, Freshness};
pub use error::StoreError;
pub use flights::{Acquire, FlightLease, SharedFlights};
pub use health::Backend;
pub use memcached::{MemcachedOptions, MemcachedStore};
pub use memory::{MemoryStore, MemoryStoreBuilder};
pub use quota::{LocalQuota, Quota, QuotaExceeded, RedisQuota};
pub use redis::{Redis, RedisOptions};
pub use redis_store::RedisStore;
pub use sluice_core::{Clock, ManualClock, SystemClock, UnixMillis, host_name};
pub use store::{PutOutcome, Store, StoreStats};
pub use tiered::TieredStore;
