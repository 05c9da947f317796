//! [`TriggerSpec`]: when a trigger fires, and the fire computations every kind
//! answers the same way (next, upcoming, between, latest between). The arms of
//! each kind call into that kind's file (`cron.rs`, `every.rs`, `at.rs`).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::cron::CronSchedule;
use super::every::{EveryMode, from_nanos, nanos, period_nanos};

/// When a trigger fires.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerSpec {
    /// A cron pattern (5 fields, or 6 with seconds first; aliases like `@daily`,
    /// `@hourly`) evaluated in `tz`. Build it with [`TriggerSpec::cron`].
    Cron {
        /// The expression as written in the config (trimmed).
        expr: String,
        /// The zone the pattern's wall clock times are in.
        tz: Tz,
        /// The parsed pattern.
        schedule: CronSchedule,
    },
    /// Every `period`. With [`EveryMode::FixedRate`] it fires at `anchor + k·period`
    /// for every integer `k` (the anchor sets the alignment, not a start: with the
    /// default anchor, the Unix epoch, every node computes the same instants and a
    /// `1h` trigger fires on the hour). With [`EveryMode::FixedDelay`] the next fire
    /// is the previous run's end + `period` (the scheduler passes the end as `after`)
    /// and `anchor` is unused.
    Every {
        /// The period (at least [`MIN_EVERY_PERIOD`](super::MIN_EVERY_PERIOD) when parsed).
        period: Duration,
        /// Fixed rate or fixed delay.
        mode: EveryMode,
        /// The alignment instant of a fixed rate trigger.
        anchor: DateTime<Utc>,
    },
    /// Once, at this instant.
    At {
        /// The instant.
        at: DateTime<Utc>,
    },
}

impl TriggerSpec {
    /// The first fire instant strictly after `after` (UTC), or `None` when there is
    /// no more (an `at` in the past, a cron pattern that never matches again).
    ///
    /// For a fixed delay trigger `after` is the end of the previous run, and the
    /// answer is `after + period`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            TriggerSpec::Cron { tz, schedule, .. } => schedule.next_after(*tz, after),
            TriggerSpec::Every {
                period,
                mode: EveryMode::FixedRate,
                anchor,
            } => {
                let p = period_nanos(*period)?;
                let a = nanos(*anchor);
                let k = (nanos(after) - a).div_euclid(p) + 1;
                from_nanos(a.checked_add(k.checked_mul(p)?)?)
            }
            TriggerSpec::Every {
                period,
                mode: EveryMode::FixedDelay,
                ..
            } => {
                if period.is_zero() {
                    return None;
                }
                after.checked_add_signed(TimeDelta::from_std(*period).ok()?)
            }
            TriggerSpec::At { at } => (*at > after).then_some(*at),
        }
    }

    /// Up to `n` fire instants strictly after `after`, oldest first.
    ///
    /// For a fixed delay trigger these are estimates that assume instant runs
    /// (`after + period`, `after + 2·period`, ...), which is what a listing wants.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n.min(64));
        let mut cur = after;
        while out.len() < n {
            match self.next_after(cur) {
                Some(t) => {
                    out.push(t);
                    cur = t;
                }
                None => break,
            }
        }
        out
    }

    /// Fire instants in `(from, to]` (exclusive `from`, inclusive `to`), oldest
    /// first, at most `limit` of them: the *oldest* `limit`. For misfire handling,
    /// where the newest ones matter, see [`TriggerSpec::latest_between`].
    ///
    /// A fixed delay trigger has at most one fire here, `from + period`: its later
    /// fires depend on when runs end, and no run has happened yet.
    pub fn between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        if to <= from || limit == 0 {
            return out;
        }
        if let TriggerSpec::Every {
            period,
            mode: EveryMode::FixedRate,
            ..
        } = self
        {
            // Arithmetic instead of repeated searches.
            let (Some(first), Some(p)) = (self.next_after(from), period_nanos(*period)) else {
                return out;
            };
            let (mut t, end) = (nanos(first), nanos(to));
            while t <= end && out.len() < limit {
                match from_nanos(t) {
                    Some(x) => out.push(x),
                    None => break,
                }
                t += p;
            }
            return out;
        }
        let single = matches!(
            self,
            TriggerSpec::Every {
                mode: EveryMode::FixedDelay,
                ..
            } | TriggerSpec::At { .. }
        );
        let mut cur = from;
        while out.len() < limit {
            match self.next_after(cur) {
                Some(t) if t <= to => {
                    out.push(t);
                    cur = t;
                }
                _ => break,
            }
            if single {
                break;
            }
        }
        out
    }

    /// The *newest* fire instants in `(from, to]`, at most `limit` of them, oldest
    /// first. After downtime the scheduler calls this with the last fire it handled,
    /// now and [`Misfire::lookback`](super::Misfire::lookback), then
    /// [`Misfire::select`](super::Misfire::select): the work is bounded by
    /// the policy, not by the length of the downtime.
    pub fn latest_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        if to <= from || limit == 0 {
            return out;
        }
        match self {
            TriggerSpec::Cron { tz, schedule, .. } => {
                let mut cur = schedule.prev_at_or_before(*tz, to, true);
                while let Some(t) = cur {
                    if t <= from || out.len() >= limit {
                        break;
                    }
                    out.push(t);
                    cur = schedule.prev_at_or_before(*tz, t, false);
                }
                out.reverse();
                out
            }
            TriggerSpec::Every {
                period,
                mode: EveryMode::FixedRate,
                anchor,
            } => {
                let Some(p) = period_nanos(*period) else {
                    return out;
                };
                let a = nanos(*anchor);
                let (lo, hi) = (nanos(from), nanos(to));
                let mut t = a + (hi - a).div_euclid(p) * p;
                while t > lo && out.len() < limit {
                    match from_nanos(t) {
                        Some(x) => out.push(x),
                        None => break,
                    }
                    t -= p;
                }
                out.reverse();
                out
            }
            TriggerSpec::Every { .. } | TriggerSpec::At { .. } => self.between(from, to, limit),
        }
    }

    /// The zone fire times are shown in: the cron zone, UTC for `every` and `at`.
    pub fn tz(&self) -> Tz {
        match self {
            TriggerSpec::Cron { tz, .. } => *tz,
            _ => Tz::UTC,
        }
    }

    /// A short description for `sluice schedule list`: `cron "0 20 * * * *"
    /// Asia/Seoul`, `every 15m (fixed rate)`, `every 1h (fixed rate, anchored at
    /// 2026-01-01T00:05:00Z)`, `at 2026-11-30T15:00:00Z` (an `at` keeps only the
    /// instant, so it is shown in UTC).
    pub fn describe(&self) -> String {
        match self {
            TriggerSpec::Cron { expr, tz, .. } => format!("cron \"{expr}\" {}", tz.name()),
            TriggerSpec::Every {
                period,
                mode,
                anchor,
            } => {
                let p = humantime::format_duration(*period)
                    .to_string()
                    .replace(' ', "");
                if *mode == EveryMode::FixedRate && *anchor != DateTime::UNIX_EPOCH {
                    format!(
                        "every {p} ({}, anchored at {})",
                        mode.as_str(),
                        rfc3339(*anchor)
                    )
                } else {
                    format!("every {p} ({})", mode.as_str())
                }
            }
            TriggerSpec::At { at } => format!("at {}", rfc3339(*at)),
        }
    }
}

impl fmt::Display for TriggerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// An instant as RFC 3339 in UTC (`Z`), with as many fraction digits as it needs.
pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triggers::test_util::*;

    // ---- describe ------------------------------------------------------------------

    #[test]
    fn describe_and_tz() {
        let c = cron(" 0 20 * * * * ", "Asia/Seoul");
        assert_eq!(c.describe(), "cron \"0 20 * * * *\" Asia/Seoul");
        assert_eq!(c.to_string(), c.describe());
        assert_eq!(c.tz(), chrono_tz::Asia::Seoul);
        let e = TriggerSpec::every("15m", false).unwrap();
        assert_eq!(e.describe(), "every 15m (fixed rate)");
        assert_eq!(e.tz(), Tz::UTC);
        assert_eq!(
            TriggerSpec::every("1h30m", true).unwrap().describe(),
            "every 1h30m (fixed delay)"
        );
        assert_eq!(
            TriggerSpec::at("2026-12-01T00:00:00+09:00")
                .unwrap()
                .describe(),
            "at 2026-11-30T15:00:00Z"
        );
        if let TriggerSpec::Cron { schedule, .. } = &c {
            assert!(!schedule.is_fixed_time());
            assert!(!schedule.explain().is_empty());
        }
        let TriggerSpec::Cron { schedule, .. } = cron("0 30 2 * * *", "UTC") else {
            unreachable!()
        };
        assert!(schedule.is_fixed_time());
    }
}
