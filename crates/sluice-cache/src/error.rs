//! Store errors.

use thiserror::Error;

/// A store operation failed. The gateway treats every store error as a miss (and
/// counts it), so a broken store never breaks a client request on its own.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be reached or answered with an error.
    #[error("{store} store unavailable: {message}")]
    Unavailable {
        /// Store kind (`memory`, `redis`, …).
        store: &'static str,
        /// What went wrong, without secrets.
        message: String,
    },
    /// The store cannot do what was asked (memcached cannot purge by any prefix).
    #[error("{message}")]
    Unsupported {
        /// Store kind.
        store: &'static str,
        /// What cannot be done, and what can.
        message: String,
    },
    /// The store's own settings are unusable (a malformed URL, a bad namespace).
    #[error("{message}")]
    Invalid {
        /// Store kind.
        store: &'static str,
        /// What is wrong and how it should look.
        message: String,
    },
    /// A stored value could not be decoded.
    #[error("{store} store holds an undecodable entry under {key:?}: {message}")]
    Corrupt {
        /// Store kind.
        store: &'static str,
        /// The key of the entry.
        key: String,
        /// Why decoding failed.
        message: String,
    },
}

impl From<sluice_core::Unavailable> for StoreError {
    fn from(e: sluice_core::Unavailable) -> Self {
        Self::Unavailable {
            store: e.store,
            message: e.message,
        }
    }
}
