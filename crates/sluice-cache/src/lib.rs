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
//! - [`Clock`]: all time goes through it, so TTL, stale windows and quota resets are
//!   tested without sleeping.

#![forbid(unsafe_code)]

mod clock;
mod coalesce;
mod entry;
mod error;
mod memory;
mod quota;
mod store;

pub use clock::{Clock, ManualClock, SystemClock, UnixMillis};
pub use coalesce::{Coalescer, FlightError, Role};
pub use entry::{Entry, Freshness};
pub use error::StoreError;
pub use memory::{MemoryStore, MemoryStoreBuilder};
pub use quota::{LocalQuota, Quota, QuotaExceeded};
pub use store::{PutOutcome, Store, StoreStats};
