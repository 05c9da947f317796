//! Triggers: what fires a job, one file per kind (`cron.rs`, `every.rs`, `at.rs`,
//! `watch.rs`, `pg_change.rs`, `sql_change.rs`; `change.rs` holds what the two
//! database-change kinds share), each with its config type beside it, and the shared parts: the
//! config enum that is the registry of kinds (`config.rs`), [`TriggerSpec`] and
//! its fire computations (`spec.rs`), the misfire and overlap policies
//! (`policy.rs`) and the error type (`error.rs`). A new kind is a file here plus
//! one variant of [`RawTriggerKind`] (with its word in [`RawTriggerKind::KINDS`] and
//! its arm in [`RawTriggerKind::deserialize_kind`] and [`RawTrigger::build`]).
//!
//! # Scheduled triggers
//!
//! A [`TriggerSpec`] says *when* a job fires: a cron pattern in a time zone, a fixed
//! rate or fixed delay interval, or one instant. It computes fire instants in UTC
//! ([`TriggerSpec::next_after`], [`TriggerSpec::upcoming`], [`TriggerSpec::between`],
//! [`TriggerSpec::latest_between`]); the scheduler keys its cluster-wide claims on
//! these instants, so every node must compute the same ones: they depend only on the
//! spec and the instant asked about, never on the node's clock or local zone.
//!
//! [`Misfire`] says what to do about fires missed while no scheduler ran, and
//! [`Overlap`] what to do when a fire comes while the previous run still goes.
//!
//! # Cron patterns and daylight saving time
//!
//! Cron patterns are parsed and evaluated by [`croner`], which follows the Open Cron
//! Pattern Specification (OCPS): 5 fields, or 6 with seconds first (or 7 with a year
//! last); `L`, `W`, `#`, `+`, ranges, steps, names (`MON`, `JAN`) and the aliases
//! `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@hourly`. Weekdays are
//! POSIX-numbered: 0 and 7 are Sunday, 1 is Monday (Quartz's `1` = Sunday does
//! **not** apply; use names to be safe). `?` is the same as `*`, and Quartz's `0/10`
//! step the same as `*/10`. `L` is the last day of the month, `15W` the weekday
//! nearest the 15th (within the month), `MON#2` the second Monday, `5#L` the last
//! Friday, and `+FRI` makes day of month AND day of week (`0 0 13 * +FRI`).
//!
//! In a zone with daylight saving time:
//!
//! * **gap** (spring forward, e.g. 02:00 → 03:00): a *fixed-time* pattern (single
//!   values in the second, minute and hour fields, such as `0 30 2 * * *`) whose time
//!   falls in the gap fires once, at the first instant after the gap (03:00:00 local);
//!   an *interval* pattern (a wildcard, step, range or list in one of those fields,
//!   such as `0 */15 * * * *` or `0 30 * * * *`) simply has no fires in the gap.
//! * **overlap** (fall back, e.g. 02:00 → 01:00, so 01:00–01:59 happens twice): a
//!   fixed-time pattern fires once, in the first pass; an interval pattern fires in
//!   both passes (an hourly `0 0 * * * *` fires 25 times that day).

mod at;
pub mod change;
mod config;
mod cron;
mod error;
mod every;
pub mod pg_change;
mod policy;
mod spec;
pub mod sql_change;
pub mod watch;

pub use at::RawAt;
pub use change::{ChangeFire, ChangeLauncher, ChangeTrigger, ChangeWatchers};
pub use config::{RawTrigger, RawTriggerKind, RawTriggerShared, TriggerPlan};
pub use cron::{CronSchedule, RawCron};
pub use error::{TriggerError, TriggerField};
pub use every::{EveryMode, MIN_EVERY_PERIOD, RawEvery};
pub use pg_change::{PgChangeTrigger, RawPgChange};
pub use policy::{DEFAULT_CATCH_UP_MAX, Misfire, Overlap};
pub use spec::TriggerSpec;
pub use sql_change::{RawSqlChange, SqlChangeTrigger, SqlChangeWatch};
pub use watch::{FileLauncher, FileTrigger, RawWatch, Watchers};

/// Shared helpers of the kinds' tests.
#[cfg(test)]
mod test_util {
    use chrono::{DateTime, Datelike, TimeDelta, TimeZone, Utc};
    use chrono_tz::Tz;

    use super::TriggerSpec;

    pub(super) fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// A wall clock time in `tz` that exists once.
    pub(super) fn local(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    /// The local calendar day `y-mo-d` in `tz` as `(start, end)` instants, for
    /// `between(start, end)`. The start is one second before local midnight, so a
    /// fire at 00:00:00 belongs to its own day.
    pub(super) fn local_day(tz: Tz, y: i32, mo: u32, d: u32) -> (DateTime<Utc>, DateTime<Utc>) {
        let start = local(tz, y, mo, d, 0, 0) - TimeDelta::seconds(1);
        let next = chrono::NaiveDate::from_ymd_opt(y, mo, d).unwrap() + TimeDelta::days(1);
        let end = local(tz, next.year(), next.month(), next.day(), 0, 0) - TimeDelta::seconds(1);
        (start, end)
    }

    /// Fire instants shown as local wall clock times with their abbreviation.
    pub(super) fn shown(tz: Tz, ts: &[DateTime<Utc>]) -> Vec<String> {
        ts.iter()
            .map(|t| t.with_timezone(&tz).format("%m-%d %H:%M:%S %Z").to_string())
            .collect()
    }

    pub(super) fn cron(expr: &str, tz: &str) -> TriggerSpec {
        TriggerSpec::cron(expr, tz).unwrap()
    }
}
