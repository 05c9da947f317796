//! A request's cache outcome, and the `Cache-Status` header (RFC 9211) built from it.
//!
//! [`CacheOutcome`] is the only source of the `cache_status` label in metrics and
//! logs; its [`CacheOutcome::as_str`] values are the complete label set.

use std::fmt::Write as _;

/// Why a response was not served from or put into the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoCacheReason {
    /// The route caches nothing (`ttl = "0s"` with no stale windows).
    RouteDisabled,
    /// The body is larger than the store accepts.
    TooLarge,
    /// The upstream status is not cacheable (e.g. 400, 401, 403).
    Status,
    /// The upstream said `no-store` / `private` (with `ttl = "upstream"`).
    UpstreamNoStore,
    /// The store failed to take the entry.
    StoreError,
}

impl NoCacheReason {
    /// Stable lower-case name, used in `Cache-Status` `detail` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RouteDisabled => "route-disabled",
            Self::TooLarge => "too-large",
            Self::Status => "status-not-cacheable",
            Self::UpstreamNoStore => "upstream-no-store",
            Self::StoreError => "store-error",
        }
    }
}

/// Why a stale entry was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    /// Inside stale-while-revalidate; a background refresh was started.
    Revalidating,
    /// The upstream failed (error, timeout, `ok_when`), inside stale-if-error.
    UpstreamError,
    /// The upstream budget is spent.
    QuotaExceeded,
}

impl StaleReason {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revalidating => "stale-while-revalidate",
            Self::UpstreamError => "stale-if-error",
            Self::QuotaExceeded => "quota-exceeded",
        }
    }
}

/// What the cache did for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served a fresh entry.
    Hit,
    /// Served a stale entry.
    Stale(StaleReason),
    /// Went to the upstream (or waited for a coalesced call) and served its answer.
    Miss,
    /// The cache did not take part.
    Bypass(NoCacheReason),
    /// No response could be served; an error was returned.
    Error,
}

impl CacheOutcome {
    /// The `cache_status` label: one of `hit`, `stale`, `miss`, `bypass`, `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Stale(_) => "stale",
            Self::Miss => "miss",
            Self::Bypass(_) => "bypass",
            Self::Error => "error",
        }
    }

    /// Every label value, in a fixed order (for pre-registering metrics).
    pub const LABELS: [&'static str; 5] = ["hit", "stale", "miss", "bypass", "error"];

    /// Index of [`Self::as_str`] in [`Self::LABELS`].
    pub fn index(self) -> usize {
        match self {
            Self::Hit => 0,
            Self::Stale(_) => 1,
            Self::Miss => 2,
            Self::Bypass(_) => 3,
            Self::Error => 4,
        }
    }
}

/// Parameters of one `Cache-Status` member (RFC 9211 §2).
#[derive(Debug, Default, Clone)]
pub struct CacheStatus {
    /// `hit`: served from the cache without going forward.
    pub hit: bool,
    /// `fwd`: why the request went forward (`miss`, `stale`, `bypass`).
    pub fwd: Option<&'static str>,
    /// `fwd-status`: the status the upstream answered (or 504/502 for failures).
    pub fwd_status: Option<u16>,
    /// `ttl`: seconds of freshness left, negative when stale.
    pub ttl: Option<i64>,
    /// `stored`: the response was stored.
    pub stored: bool,
    /// `collapsed`: the request waited for another request's upstream call.
    pub collapsed: bool,
    /// `detail`: a token naming a sluice-specific reason.
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    /// The header value, e.g. `sluice; hit; ttl=42`.
    pub fn header_value(&self) -> String {
        let mut s = String::with_capacity(48);
        s.push_str("sluice");
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(f) = self.fwd {
            let _ = write!(s, "; fwd={f}");
        }
        if let Some(st) = self.fwd_status {
            let _ = write!(s, "; fwd-status={st}");
        }
        if let Some(t) = self.ttl {
            let _ = write!(s, "; ttl={t}");
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(d) = self.detail {
            let _ = write!(s, "; detail={d}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_follow_rfc_9211() {
        let hit = CacheStatus {
            hit: true,
            ttl: Some(42),
            ..Default::default()
        };
        assert_eq!(hit.header_value(), "sluice; hit; ttl=42");
        let miss = CacheStatus {
            fwd: Some("miss"),
            fwd_status: Some(200),
            stored: true,
            collapsed: true,
            ..Default::default()
        };
        assert_eq!(
            miss.header_value(),
            "sluice; fwd=miss; fwd-status=200; stored; collapsed"
        );
    }

    #[test]
    fn labels_line_up_with_indexes() {
        for o in [
            CacheOutcome::Hit,
            CacheOutcome::Stale(StaleReason::Revalidating),
            CacheOutcome::Miss,
            CacheOutcome::Bypass(NoCacheReason::TooLarge),
            CacheOutcome::Error,
        ] {
            assert_eq!(CacheOutcome::LABELS[o.index()], o.as_str());
        }
    }
}
