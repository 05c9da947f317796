//! `kind = "every"`: a fixed rate (aligned to an anchor, the epoch by default) or
//! fixed delay interval, and the integer arithmetic that keeps fixed rate fires
//! the same on every node.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

use super::{TriggerError, TriggerField, TriggerSpec};

/// The shortest period an `every` trigger accepts.
pub const MIN_EVERY_PERIOD: Duration = Duration::from_millis(100);

/// How an [`TriggerSpec::Every`] trigger counts its period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EveryMode {
    /// Fires at `anchor + k·period`, whatever the runs take.
    FixedRate,
    /// Fires `period` after the previous run ended.
    FixedDelay,
}

impl EveryMode {
    /// `"fixed rate"` or `"fixed delay"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            EveryMode::FixedRate => "fixed rate",
            EveryMode::FixedDelay => "fixed delay",
        }
    }
}

/// `kind = "every"`: a fixed rate or fixed delay interval.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvery {
    /// A period, `"15m"`: fixed rate (aligned to the epoch), or fixed delay.
    pub every: String,
    /// The next run starts `every` after the previous one ends. Default `false`.
    pub fixed_delay: Option<bool>,
}

impl RawEvery {
    /// The spec: the period parsed, anchored at the epoch.
    ///
    /// # Errors
    ///
    /// A bad period ([`TriggerField::Every`]).
    pub fn into_spec(&self) -> Result<TriggerSpec, TriggerError> {
        TriggerSpec::every(&self.every, self.fixed_delay.unwrap_or(false))
    }
}

impl TriggerSpec {
    /// Parses a period such as `"15m"`, `"10s"`, `"1h30m"` or `"500ms"` (humantime
    /// syntax); `fixed_delay` picks the mode. The period must be at least
    /// [`MIN_EVERY_PERIOD`] (100 ms). The anchor is the Unix epoch (see
    /// [`TriggerSpec::with_anchor`]).
    pub fn every(period: &str, fixed_delay: bool) -> Result<Self, TriggerError> {
        let d = humantime::parse_duration(period.trim()).map_err(|e| {
            TriggerError::new(TriggerField::Every, format!(
                "invalid every \"{period}\": {e} (expected a duration such as \"15m\", \"10s\" or \"1h30m\")"
            ))
        })?;
        if d < MIN_EVERY_PERIOD {
            return Err(TriggerError::new(
                TriggerField::Every,
                format!("invalid every \"{period}\": the period must be at least 100ms"),
            ));
        }
        // The period must fit chrono's arithmetic.
        if TimeDelta::from_std(d).is_err() {
            return Err(TriggerError::new(
                TriggerField::Every,
                format!("invalid every \"{period}\": the period is too long"),
            ));
        }
        Ok(TriggerSpec::Every {
            period: d,
            mode: if fixed_delay {
                EveryMode::FixedDelay
            } else {
                EveryMode::FixedRate
            },
            anchor: DateTime::UNIX_EPOCH,
        })
    }

    /// Sets the alignment anchor of a fixed rate [`TriggerSpec::Every`]; other specs
    /// are returned unchanged.
    pub fn with_anchor(self, new_anchor: DateTime<Utc>) -> Self {
        match self {
            TriggerSpec::Every { period, mode, .. } => TriggerSpec::Every {
                period,
                mode,
                anchor: new_anchor,
            },
            other => other,
        }
    }
}

/// Nanoseconds since the Unix epoch, in a width that cannot overflow.
pub(super) fn nanos(t: DateTime<Utc>) -> i128 {
    i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos())
}

pub(super) fn from_nanos(n: i128) -> Option<DateTime<Utc>> {
    let secs = i64::try_from(n.div_euclid(1_000_000_000)).ok()?;
    let sub = u32::try_from(n.rem_euclid(1_000_000_000)).ok()?;
    DateTime::from_timestamp(secs, sub)
}

/// A period in nanoseconds; `None` for a zero period (which never fires).
pub(super) fn period_nanos(d: Duration) -> Option<i128> {
    let p = i128::try_from(d.as_nanos()).ok()?;
    (p > 0).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triggers::test_util::*;

    // ---- every -----------------------------------------------------------------

    #[test]
    fn every_fixed_rate_is_aligned_to_the_epoch() {
        let s = TriggerSpec::every("15m", false).unwrap();
        assert!(matches!(
            s,
            TriggerSpec::Every { mode: EveryMode::FixedRate, anchor, period }
                if anchor == DateTime::UNIX_EPOCH && period == Duration::from_secs(900)
        ));
        let t = utc("2026-05-01T10:07:13Z");
        assert_eq!(s.next_after(t), Some(utc("2026-05-01T10:15:00Z")));
        // Strictly after: on a boundary, the next one.
        assert_eq!(
            s.next_after(utc("2026-05-01T10:15:00Z")),
            Some(utc("2026-05-01T10:30:00Z"))
        );
        assert_eq!(
            s.upcoming(t, 3),
            vec![
                utc("2026-05-01T10:15:00Z"),
                utc("2026-05-01T10:30:00Z"),
                utc("2026-05-01T10:45:00Z"),
            ]
        );
        let (from, to) = (utc("2026-05-01T10:00:00Z"), utc("2026-05-01T11:00:00Z"));
        let four = vec![
            utc("2026-05-01T10:15:00Z"),
            utc("2026-05-01T10:30:00Z"),
            utc("2026-05-01T10:45:00Z"),
            utc("2026-05-01T11:00:00Z"),
        ];
        assert_eq!(s.between(from, to, 100), four);
        assert_eq!(s.between(from, to, 2), four[..2]);
        assert_eq!(s.latest_between(from, to, 2), four[2..]);
        assert_eq!(s.latest_between(from, to, 100), four);
        assert!(s.between(to, from, 100).is_empty());
        assert!(
            s.between(from, from + TimeDelta::minutes(10), 100)
                .is_empty()
        );

        // Any period: a multiple of it since the epoch, the same on every node.
        let seven = TriggerSpec::every("7s", false).unwrap();
        for t in seven.upcoming(t, 5) {
            assert_eq!(t.timestamp() % 7, 0);
            assert_eq!(t.timestamp_subsec_nanos(), 0);
        }
        let odd = TriggerSpec::every("1h30m", false).unwrap();
        let n = odd.next_after(t).unwrap();
        assert_eq!(n.timestamp() % 5400, 0);
        assert!(n > t && n - t <= TimeDelta::minutes(90));
        // Sub-second periods.
        let quick = TriggerSpec::every("250ms", false).unwrap();
        assert_eq!(
            quick.upcoming(t + TimeDelta::milliseconds(600), 2),
            vec![
                t + TimeDelta::milliseconds(750),
                t + TimeDelta::milliseconds(1000)
            ]
        );
        // Before the anchor too (alignment, not a start).
        assert_eq!(
            s.next_after(utc("1969-12-31T23:50:00Z")),
            Some(DateTime::UNIX_EPOCH)
        );
    }

    #[test]
    fn every_fixed_rate_with_an_anchor() {
        let s = TriggerSpec::every("1h", false)
            .unwrap()
            .with_anchor(utc("2026-01-01T00:05:00Z"));
        assert_eq!(
            s.upcoming(utc("2026-05-01T10:07:13Z"), 2),
            vec![utc("2026-05-01T11:05:00Z"), utc("2026-05-01T12:05:00Z")]
        );
        assert_eq!(
            s.describe(),
            "every 1h (fixed rate, anchored at 2026-01-01T00:05:00Z)"
        );
        // Other specs ignore an anchor.
        let at = TriggerSpec::at("2026-12-01T00:00:00Z").unwrap();
        assert_eq!(at.clone().with_anchor(utc("2026-01-01T00:00:00Z")), at);
    }

    #[test]
    fn every_fixed_delay_counts_from_the_end_of_the_previous_run() {
        let s = TriggerSpec::every("10s", true).unwrap();
        assert!(matches!(
            s,
            TriggerSpec::Every {
                mode: EveryMode::FixedDelay,
                ..
            }
        ));
        let end = utc("2026-05-01T10:07:13.250Z");
        assert_eq!(s.next_after(end), Some(utc("2026-05-01T10:07:23.250Z")));
        // A listing shows the chain as if runs took no time.
        assert_eq!(
            s.upcoming(end, 2),
            vec![
                utc("2026-05-01T10:07:23.250Z"),
                utc("2026-05-01T10:07:33.250Z")
            ]
        );
        // Misses: one fire at most; later ones wait for a run to end.
        let long = end + TimeDelta::hours(1);
        assert_eq!(
            s.between(end, long, 100),
            vec![utc("2026-05-01T10:07:23.250Z")]
        );
        assert_eq!(
            s.latest_between(end, long, 100),
            vec![utc("2026-05-01T10:07:23.250Z")]
        );
        assert!(s.between(end, end + TimeDelta::seconds(5), 100).is_empty());
    }

    #[test]
    fn every_bad_periods_are_named() {
        for (p, why) in [
            ("0s", "at least 100ms"),
            ("50ms", "at least 100ms"),
            ("abc", "expected a duration"),
            ("", "expected a duration"),
            ("-5m", "expected a duration"),
            ("15", "expected a duration"),
        ] {
            let e = TriggerSpec::every(p, false).unwrap_err().message;
            assert!(e.contains(&format!("invalid every \"{p}\"")), "{e}");
            assert!(e.contains(why), "{p}: {e}");
        }
        assert!(TriggerSpec::every("100ms", true).is_ok());
    }

    #[test]
    fn every_with_a_zero_period_built_by_hand_never_fires() {
        for mode in [EveryMode::FixedRate, EveryMode::FixedDelay] {
            let s = TriggerSpec::Every {
                period: Duration::ZERO,
                mode,
                anchor: DateTime::UNIX_EPOCH,
            };
            let t = utc("2026-05-01T00:00:00Z");
            assert_eq!(s.next_after(t), None);
            assert!(s.between(t, t + TimeDelta::hours(1), 10).is_empty());
            assert!(s.latest_between(t, t + TimeDelta::hours(1), 10).is_empty());
        }
    }
}
