//! The policies every scheduled trigger kind shares: [`Misfire`] (what to do about
//! fires missed while no scheduler ran) and [`Overlap`] (what to do when a fire
//! comes while the previous run still goes).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::{TriggerError, TriggerField};

/// The default maximum number of missed fires `catch_up` runs.
pub const DEFAULT_CATCH_UP_MAX: usize = 100;

/// Normalizes a policy word: trimmed, lower case, `-` read as `_`.
fn policy_word(s: &str) -> String {
    s.trim().to_ascii_lowercase().replace('-', "_")
}

/// What to do about fires missed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Misfire {
    /// One run for all the missed fires (the newest of them). The default.
    #[default]
    FireOnce,
    /// No run for missed fires; wait for the next one.
    Skip,
    /// A run for each of the newest `max` missed fires, oldest first.
    CatchUp {
        /// At most this many runs.
        max: usize,
    },
}

impl Misfire {
    /// Parses the config value (`"fire_once"`, `"skip"` or `"catch_up"`; case and
    /// `-` for `_` are forgiven); `catch_up_max` is used for `catch_up` (default
    /// [`DEFAULT_CATCH_UP_MAX`], must be at least 1) and ignored otherwise.
    pub fn parse(s: &str, catch_up_max: Option<usize>) -> Result<Self, TriggerError> {
        match policy_word(s).as_str() {
            "fire_once" => Ok(Misfire::FireOnce),
            "skip" => Ok(Misfire::Skip),
            "catch_up" => match catch_up_max.unwrap_or(DEFAULT_CATCH_UP_MAX) {
                0 => Err(TriggerError::new(TriggerField::Misfire,
                    "invalid catch_up_max 0: must be at least 1 (use misfire = \"skip\" to run none)"
                        .to_string(),
                )),
                max => Ok(Misfire::CatchUp { max }),
            },
            _ => Err(TriggerError::new(TriggerField::Misfire, format!(
                "invalid misfire \"{s}\": expected \"fire_once\", \"skip\" or \"catch_up\""
            ))),
        }
    }

    /// The config word: `"fire_once"`, `"skip"` or `"catch_up"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Misfire::FireOnce => "fire_once",
            Misfire::Skip => "skip",
            Misfire::CatchUp { .. } => "catch_up",
        }
    }

    /// How many of the newest missed fires [`Misfire::select`] can pick: the `limit`
    /// to pass to [`TriggerSpec::latest_between`](super::TriggerSpec::latest_between).
    pub fn lookback(&self) -> usize {
        match self {
            Misfire::FireOnce => 1,
            Misfire::Skip => 0,
            Misfire::CatchUp { max } => *max,
        }
    }

    /// Given the instants missed (oldest first, all at or before now), which to fire
    /// now, oldest first: `FireOnce` → the newest only (one run for all missed fires);
    /// `Skip` → none; `CatchUp { max }` → the newest `max`. The input is sorted and
    /// deduplicated first, so an instant is never selected twice.
    pub fn select(&self, missed: &[DateTime<Utc>]) -> Vec<DateTime<Utc>> {
        let mut all = missed.to_vec();
        all.sort_unstable();
        all.dedup();
        let keep = self.lookback().min(all.len());
        all.split_off(all.len() - keep)
    }
}

impl fmt::Display for Misfire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misfire::CatchUp { max } => write!(f, "catch_up (max {max})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// What to do when the previous run of the same job is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Overlap {
    /// Do not run; record the fire as skipped.
    Skip,
    /// Run after the previous run ends.
    Queue,
    /// Run now, alongside.
    Allow,
}

impl Overlap {
    /// Parses the config value: `"skip"`, `"queue"` or `"allow"` (case forgiven).
    pub fn parse(s: &str) -> Result<Self, TriggerError> {
        match policy_word(s).as_str() {
            "skip" => Ok(Overlap::Skip),
            "queue" => Ok(Overlap::Queue),
            "allow" => Ok(Overlap::Allow),
            _ => Err(TriggerError::new(
                TriggerField::Overlap,
                format!("invalid overlap \"{s}\": expected \"skip\", \"queue\" or \"allow\""),
            )),
        }
    }

    /// The config word: `"skip"`, `"queue"` or `"allow"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
            Overlap::Allow => "allow",
        }
    }
}

impl FromStr for Overlap {
    type Err = TriggerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Overlap::parse(s)
    }
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triggers::TriggerSpec;
    use crate::triggers::test_util::*;
    use chrono::TimeDelta;

    // ---- misfire and overlap ---------------------------------------------------------

    #[test]
    fn misfire_parse() {
        assert_eq!(Misfire::parse("fire_once", None), Ok(Misfire::FireOnce));
        assert_eq!(Misfire::parse("skip", Some(3)), Ok(Misfire::Skip));
        assert_eq!(
            Misfire::parse("catch_up", None),
            Ok(Misfire::CatchUp { max: 100 })
        );
        assert_eq!(
            Misfire::parse("catch_up", Some(5)),
            Ok(Misfire::CatchUp { max: 5 })
        );
        assert_eq!(
            Misfire::parse(" Catch-Up ", Some(2)),
            Ok(Misfire::CatchUp { max: 2 })
        );
        assert_eq!(Misfire::parse("FIRE_ONCE", None), Ok(Misfire::FireOnce));
        assert_eq!(Misfire::default(), Misfire::FireOnce);
        let e = Misfire::parse("run_all", None).unwrap_err().message;
        assert!(e.contains("invalid misfire \"run_all\""), "{e}");
        assert!(e.contains("fire_once") && e.contains("catch_up"), "{e}");
        let e = Misfire::parse("catch_up", Some(0)).unwrap_err().message;
        assert!(e.contains("catch_up_max 0"), "{e}");
        for m in [
            Misfire::FireOnce,
            Misfire::Skip,
            Misfire::CatchUp { max: 7 },
        ] {
            assert_eq!(Misfire::parse(m.as_str(), Some(7)), Ok(m));
        }
        assert_eq!(Misfire::CatchUp { max: 7 }.to_string(), "catch_up (max 7)");
    }

    #[test]
    fn misfire_select() {
        let missed: Vec<DateTime<Utc>> = (1..=5)
            .map(|h| utc("2026-05-01T00:00:00Z") + TimeDelta::hours(h))
            .collect();
        assert_eq!(Misfire::FireOnce.select(&missed), vec![missed[4]]);
        assert!(Misfire::Skip.select(&missed).is_empty());
        assert_eq!(Misfire::CatchUp { max: 3 }.select(&missed), missed[2..]);
        assert_eq!(Misfire::CatchUp { max: 10 }.select(&missed), missed);
        for m in [
            Misfire::FireOnce,
            Misfire::Skip,
            Misfire::CatchUp { max: 3 },
        ] {
            assert!(m.select(&[]).is_empty());
        }
        // Out of order or repeated input never selects an instant twice.
        let messy = [missed[3], missed[1], missed[3], missed[4], missed[0]];
        assert_eq!(
            Misfire::CatchUp { max: 3 }.select(&messy),
            vec![missed[1], missed[3], missed[4]]
        );
        assert_eq!(Misfire::FireOnce.select(&messy), vec![missed[4]]);
    }

    #[test]
    fn misfire_after_long_downtime_costs_the_policy_not_the_downtime() {
        // Every second, down for 30 days (2.6 million missed fires).
        let s = cron("* * * * * *", "Europe/Berlin");
        let last = utc("2026-04-01T00:00:00Z");
        let now = utc("2026-05-01T00:00:00.500Z");
        let pick = |m: Misfire| m.select(&s.latest_between(last, now, m.lookback()));
        assert_eq!(pick(Misfire::FireOnce), vec![utc("2026-05-01T00:00:00Z")]);
        assert!(pick(Misfire::Skip).is_empty());
        assert_eq!(
            pick(Misfire::CatchUp { max: 3 }),
            vec![
                utc("2026-04-30T23:59:58Z"),
                utc("2026-04-30T23:59:59Z"),
                utc("2026-05-01T00:00:00Z"),
            ]
        );
        // The same with a fixed rate trigger.
        let e = TriggerSpec::every("10s", false).unwrap();
        let pick = |m: Misfire| m.select(&e.latest_between(last, now, m.lookback()));
        assert_eq!(pick(Misfire::FireOnce), vec![utc("2026-05-01T00:00:00Z")]);
        assert_eq!(
            pick(Misfire::CatchUp { max: 2 }),
            vec![utc("2026-04-30T23:59:50Z"), utc("2026-05-01T00:00:00Z")]
        );
        // Nothing missed: nothing to do.
        let quiet = e.latest_between(now, now + TimeDelta::seconds(5), 1);
        assert!(Misfire::FireOnce.select(&quiet).is_empty());
    }

    #[test]
    fn overlap_parse() {
        for o in [Overlap::Skip, Overlap::Queue, Overlap::Allow] {
            assert_eq!(Overlap::parse(o.as_str()), Ok(o));
            assert_eq!(o.as_str().parse::<Overlap>(), Ok(o));
            assert_eq!(o.to_string(), o.as_str());
        }
        assert_eq!(Overlap::parse(" QUEUE "), Ok(Overlap::Queue));
        let e = Overlap::parse("parallel").unwrap_err().message;
        assert!(e.contains("invalid overlap \"parallel\""), "{e}");
        assert!(
            e.contains("skip") && e.contains("queue") && e.contains("allow"),
            "{e}"
        );
    }
}
