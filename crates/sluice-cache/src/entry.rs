//! Stored responses and their freshness.

use std::time::Duration;

use bytes::Bytes;

use sluice_core::UnixMillis;

/// A stored upstream response.
///
/// The three instants divide an entry's life:
///
/// ```text
/// stored_at ──── fresh ────▶ fresh_until ── stale (revalidate) ──▶ revalidate_until
///                                        └──────── stale (if error) ─────────▶ stale_until
/// ```
///
/// After `stale_until` the entry is expired and stores drop it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// HTTP status code of the stored response.
    pub status: u16,
    /// Response headers kept for replay (lower-case names).
    pub headers: Vec<(String, Bytes)>,
    /// The response body.
    pub body: Bytes,
    /// When the response was received.
    pub stored_at: UnixMillis,
    /// Served as is until this instant.
    pub fresh_until: UnixMillis,
    /// Served stale while a background refresh runs until this instant.
    pub revalidate_until: UnixMillis,
    /// Served stale when the upstream fails until this instant; removed after it.
    pub stale_until: UnixMillis,
}

/// Where an entry stands at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Serve as is; `ttl` is what remains of its freshness.
    Fresh {
        /// Remaining freshness.
        ttl: Duration,
    },
    /// Past `fresh_until` but inside the stale-while-revalidate window: serve it and
    /// refresh in the background.
    StaleRevalidate,
    /// Past the revalidate window, still usable if the upstream fails.
    StaleIfError,
    /// Past `stale_until`; as good as absent.
    Expired,
}

impl Entry {
    /// Builds an entry stored at `now` that is fresh for `ttl`, may be served while
    /// revalidating for `swr` after that, and may stand in for a failed upstream for
    /// `sie` after freshness ends.
    pub fn new(
        status: u16,
        headers: Vec<(String, Bytes)>,
        body: Bytes,
        now: UnixMillis,
        ttl: Duration,
        swr: Duration,
        sie: Duration,
    ) -> Self {
        let fresh_until = now.saturating_add(ms(ttl));
        let revalidate_until = fresh_until.saturating_add(ms(swr));
        let stale_until = revalidate_until.max(fresh_until.saturating_add(ms(sie)));
        Self {
            status,
            headers,
            body,
            stored_at: now,
            fresh_until,
            revalidate_until,
            stale_until,
        }
    }

    /// The entry's freshness at `now`.
    pub fn freshness(&self, now: UnixMillis) -> Freshness {
        if now < self.fresh_until {
            Freshness::Fresh {
                ttl: Duration::from_millis((self.fresh_until - now) as u64),
            }
        } else if now < self.revalidate_until {
            Freshness::StaleRevalidate
        } else if now < self.stale_until {
            Freshness::StaleIfError
        } else {
            Freshness::Expired
        }
    }

    /// Whole seconds since the entry was stored (the `Age` header).
    pub fn age_secs(&self, now: UnixMillis) -> u64 {
        ((now - self.stored_at).max(0) / 1000) as u64
    }

    /// Signed seconds of freshness left (negative once stale), as `Cache-Status`'s
    /// `ttl` parameter reports it.
    pub fn ttl_secs(&self, now: UnixMillis) -> i64 {
        (self.fresh_until - now).div_euclid(1000)
    }

    /// What the entry weighs stored under `key`: the key and [`Entry::weight`],
    /// the figure the stores bound (`max_bytes`, `max_body`).
    pub fn weight_under(&self, key: &str) -> usize {
        key.len() + self.weight()
    }

    /// Approximate memory weight in bytes: body, headers and fixed overhead.
    pub fn weight(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 16)
                .sum::<usize>()
            + 64
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let s = Duration::from_secs;
        crate::testing::json_entry(1_000, 1, s(10), s(5), s(60))
    }

    #[test]
    fn windows_follow_each_other() {
        let e = entry();
        assert_eq!(
            e.freshness(1_000),
            Freshness::Fresh {
                ttl: Duration::from_secs(10)
            }
        );
        assert_eq!(e.freshness(11_000), Freshness::StaleRevalidate);
        assert_eq!(e.freshness(16_000), Freshness::StaleIfError);
        assert_eq!(e.freshness(71_000), Freshness::Expired);
        assert_eq!(e.ttl_secs(12_500), -2);
        assert_eq!(e.age_secs(12_500), 11);
    }

    #[test]
    fn revalidate_window_longer_than_error_window_extends_life() {
        let e = Entry::new(
            200,
            vec![],
            Bytes::new(),
            0,
            Duration::from_secs(1),
            Duration::from_secs(100),
            Duration::ZERO,
        );
        assert_eq!(e.stale_until, 101_000);
    }
}
