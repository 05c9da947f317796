//! What an upstream has been doing, readable by the REST API, the dashboard and
//! the alert rules: calls by caller, errors, and a five-minute window of recent
//! calls with their latency.
//!
//! The Prometheus counters (`sluice_upstream_requests_total` …) carry the same
//! facts for scraping; these are kept beside them because a process cannot read
//! its own metrics back.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use sluice_core::QuotaSnapshot;

/// Who made an upstream call: the gateway (for a client's request) or a batch
/// job (a reader or a tasklet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    /// The gateway, on a cache miss or a revalidation.
    Gateway,
    /// A batch job's step.
    Job,
}

impl Caller {
    /// The `caller` label value: `gateway` or `job`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Job => "job",
        }
    }
}

/// One upstream's calls since the process started and over the last minutes.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamStats {
    /// Calls sent (attempts, retries included).
    pub calls: u64,
    /// Calls that failed: transport errors, timeouts, 5xx, answers `ok_when`
    /// rejected or that could not be read.
    pub errors: u64,
    /// Calls made for gateway clients.
    pub calls_by_gateway: u64,
    /// Calls made by batch jobs.
    pub calls_by_jobs: u64,
    /// The recent window.
    pub recent: RecentStats,
    /// The call budget.
    pub quota: QuotaSnapshot,
}

/// Calls over the last [`RecentStats::window_seconds`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RecentStats {
    /// The window's length.
    pub window_seconds: u64,
    /// Calls in the window.
    pub calls: u64,
    /// Failed calls in the window.
    pub errors: u64,
    /// `errors / calls`, `None` without calls.
    pub error_ratio: Option<f64>,
    /// Mean latency in milliseconds, `None` without calls.
    pub mean_latency_ms: Option<f64>,
    /// Slowest call in milliseconds, `None` without calls.
    pub max_latency_ms: Option<f64>,
}

/// Buckets of [`BUCKET_SECS`] seconds; [`BUCKETS`] of them make the window.
const BUCKET_SECS: u64 = 10;
const BUCKETS: usize = 30;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// `unix seconds / BUCKET_SECS` of the bucket's start.
    slot: u64,
    calls: u64,
    errors: u64,
    latency_us: u64,
    max_us: u64,
}

/// The counters of one upstream (see [`UpstreamStats`]).
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    calls: AtomicU64,
    errors: AtomicU64,
    by_gateway: AtomicU64,
    by_jobs: AtomicU64,
    window: Mutex<[Bucket; BUCKETS]>,
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Recorder {
    /// Records one call that was sent.
    pub(crate) fn record(&self, caller: Caller, ok: bool, elapsed: Duration) {
        self.record_at(unix_secs(), caller, ok, elapsed);
    }

    fn record_at(&self, now: u64, caller: Caller, ok: bool, elapsed: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match caller {
            Caller::Gateway => &self.by_gateway,
            Caller::Job => &self.by_jobs,
        }
        .fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let slot = now / BUCKET_SECS;
        let us = elapsed.as_micros() as u64;
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let b = &mut w[(slot % BUCKETS as u64) as usize];
        if b.slot != slot {
            *b = Bucket {
                slot,
                ..Bucket::default()
            };
        }
        b.calls += 1;
        b.errors += u64::from(!ok);
        b.latency_us += us;
        b.max_us = b.max_us.max(us);
    }

    /// The counters, with `quota` as the budget's state.
    pub(crate) fn stats(&self, quota: QuotaSnapshot) -> UpstreamStats {
        self.stats_at(unix_secs(), quota)
    }

    fn stats_at(&self, now: u64, quota: QuotaSnapshot) -> UpstreamStats {
        let oldest = (now / BUCKET_SECS).saturating_sub(BUCKETS as u64 - 1);
        let mut r = RecentStats {
            window_seconds: BUCKET_SECS * BUCKETS as u64,
            ..RecentStats::default()
        };
        let (mut sum, mut max) = (0u64, 0u64);
        for b in self
            .window
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|b| b.slot >= oldest && b.calls > 0)
        {
            r.calls += b.calls;
            r.errors += b.errors;
            sum += b.latency_us;
            max = max.max(b.max_us);
        }
        if r.calls > 0 {
            r.error_ratio = Some(r.errors as f64 / r.calls as f64);
            r.mean_latency_ms = Some(sum as f64 / r.calls as f64 / 1000.0);
            r.max_latency_ms = Some(max as f64 / 1000.0);
        }
        UpstreamStats {
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            calls_by_gateway: self.by_gateway.load(Ordering::Relaxed),
            calls_by_jobs: self.by_jobs.load(Ordering::Relaxed),
            recent: r,
            quota,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_counts_recent_calls_and_forgets_old_ones() {
        let r = Recorder::default();
        let t0 = 1_700_000_000;
        r.record_at(t0, Caller::Gateway, true, Duration::from_millis(10));
        r.record_at(t0 + 1, Caller::Job, false, Duration::from_millis(30));
        let s = r.stats_at(t0 + 2, QuotaSnapshot::default());
        assert_eq!(
            (s.calls, s.errors, s.calls_by_gateway, s.calls_by_jobs),
            (2, 1, 1, 1)
        );
        assert_eq!((s.recent.calls, s.recent.errors), (2, 1));
        assert_eq!(s.recent.error_ratio, Some(0.5));
        assert_eq!(s.recent.mean_latency_ms, Some(20.0));
        assert_eq!(s.recent.max_latency_ms, Some(30.0));
        // Six minutes later the window is empty; the totals stay.
        r.record_at(t0 + 360, Caller::Gateway, true, Duration::from_millis(4));
        let s = r.stats_at(t0 + 360, QuotaSnapshot::default());
        assert_eq!((s.calls, s.recent.calls, s.recent.errors), (3, 1, 0));
        assert_eq!(s.recent.max_latency_ms, Some(4.0));
    }
}
