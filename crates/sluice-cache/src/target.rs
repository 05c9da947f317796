//! [`CacheTarget`]: what a writer outside the gateway needs of a gateway's cache.
//!
//! The batch engine warms the gateway's cache (the cache writer) and reads
//! through it (the HTTP reader). It must put entries under exactly the key a
//! client's request would have, and only the gateway knows how keys are built
//! (routes, canonical paths, key parameters, vary headers). This trait is that
//! one question plus the store, so that the batch crate depends on the cache
//! crate alone, not on the gateway; the gateway implements it.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

use crate::store::Store;

/// Why a path has no cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyErrorKind {
    /// No route matches the path: every item of a template would fail alike.
    NoRoute,
    /// The route refuses this path or query (bad encoding, reserved path, …).
    Refused,
}

/// A path that has no cache key, with the gateway's own message.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{message}")]
pub struct KeyError {
    /// What kind of refusal.
    pub kind: KeyErrorKind,
    /// The message the gateway gives a client for it.
    pub message: String,
}

/// A cache that entries can be written into under the keys clients' requests
/// have (a gateway's).
pub trait CacheTarget: Send + Sync + fmt::Debug + 'static {
    /// The key a client's `GET` of `path_and_query` has.
    ///
    /// # Errors
    ///
    /// [`KeyError`] when no route matches or the route refuses the path.
    fn key_for(&self, path_and_query: &str) -> Result<String, KeyError>;

    /// The store that holds the entries.
    fn store(&self) -> &Arc<dyn Store>;

    /// Now, in Unix milliseconds, on the clock the target judges freshness by:
    /// entries written into it are stamped with this time, and entries read from
    /// it are fresh or not by it. The default is the system clock.
    fn now_millis(&self) -> sluice_core::UnixMillis {
        sluice_core::Clock::now_millis(&sluice_core::SystemClock)
    }
}
