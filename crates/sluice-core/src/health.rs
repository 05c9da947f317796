//! The health of a shared backend (Redis, Memcached), as sluice sees it.
//!
//! A shared backend can go away at any time. Every caller reports each outcome
//! here; the tracker:
//!
//! - counts every failure in `sluice_store_errors_total{store, op}`;
//! - logs the outage **once** when it starts (not once per request) and once when
//!   the backend answers again;
//! - acts as a circuit breaker: while the backend is down, only one call per
//!   `probe_interval` goes through to find out whether it is back; the others fail at
//!   once, so that a paused server (whose calls would each wait for the command
//!   timeout) does not slow every client request.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::metrics;

/// A shared backend could not be reached, answered with an error, or is skipped
/// by the breaker while it is down. Stores turn it into their own error; the
/// queue and the claims into theirs.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{store} store unavailable: {message}")]
pub struct Unavailable {
    /// The backend's name (`redis`, `memcached`).
    pub store: &'static str,
    /// What went wrong, without secrets.
    pub message: String,
}

/// Tracks whether one shared backend answers.
#[derive(Debug)]
pub struct Backend {
    name: &'static str,
    down: AtomicBool,
    /// Milliseconds since `epoch` before which no call is tried while down.
    next_probe: AtomicU64,
    probe_interval: Duration,
    epoch: Instant,
    last_error: Mutex<Option<String>>,
}

impl Backend {
    /// A tracker for the backend `name` (`redis`, `memcached`), which is used as the
    /// `store` label and in log lines.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            down: AtomicBool::new(false),
            next_probe: AtomicU64::new(0),
            probe_interval: Duration::from_millis(250),
            epoch: Instant::now(),
            last_error: Mutex::new(None),
        }
    }

    /// The backend's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a call should be sent now: always while up; while down, one call per
    /// probe interval.
    pub fn should_try(&self) -> bool {
        if !self.down.load(Ordering::Relaxed) {
            return true;
        }
        let now = self.now_ms();
        let next = self.next_probe.load(Ordering::Relaxed);
        now >= next
            && self
                .next_probe
                .compare_exchange(
                    next,
                    now + self.probe_interval.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// The error returned when [`should_try`](Self::should_try) said no.
    pub fn skipped(&self, op: &'static str) -> Unavailable {
        metrics::store_error(self.name, op);
        Unavailable {
            store: self.name,
            message: self
                .last_error
                .lock()
                .map(|e| e.clone().unwrap_or_else(|| "unavailable".into()))
                .unwrap_or_default(),
        }
    }

    /// Reports a call that got an answer.
    pub fn ok(&self) {
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(
                store = self.name,
                "{} is answering again; shared behaviour resumes",
                self.name
            );
        }
    }

    /// Reports a failed call and returns the error to hand up.
    pub fn failed(&self, op: &'static str, message: impl Into<String>) -> Unavailable {
        let message = message.into();
        metrics::store_error(self.name, op);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(message.clone());
        }
        self.next_probe.store(
            self.now_ms() + self.probe_interval.as_millis() as u64,
            Ordering::Relaxed,
        );
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(store = self.name, op, error = %message,
                "{} unavailable; falling back to local caching, coalescing and rate limits until it answers again", self.name);
        }
        Unavailable {
            store: self.name,
            message,
        }
    }

    /// `None` while up, else what the last failure said.
    pub fn degraded(&self) -> Option<String> {
        if !self.down.load(Ordering::Relaxed) {
            return None;
        }
        let last = self.last_error.lock().ok().and_then(|e| e.clone());
        Some(format!(
            "{} unavailable: {}",
            self.name,
            last.unwrap_or_else(|| "no answer".into())
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_lets_one_probe_through_per_interval() {
        let b = Backend::new("redis");
        assert!(b.should_try());
        assert!(b.degraded().is_none());
        let _ = b.failed("get", "connection refused");
        assert!(b.degraded().unwrap().contains("connection refused"));
        assert!(!b.should_try(), "calls right after a failure are skipped");
        std::thread::sleep(Duration::from_millis(300));
        assert!(b.should_try(), "one probe after the interval");
        assert!(!b.should_try(), "only one");
        b.ok();
        assert!(b.should_try());
        assert!(b.degraded().is_none());
    }
}
