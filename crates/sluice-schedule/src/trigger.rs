//! Trigger specifications and their fire times.
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

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// The shortest period an `every` trigger accepts.
pub const MIN_EVERY_PERIOD: Duration = Duration::from_millis(100);

/// The default maximum number of missed fires `catch_up` runs.
pub const DEFAULT_CATCH_UP_MAX: usize = 100;

/// A parse/validation error: which field of a trigger is wrong, and a message
/// naming the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TriggerError {
    /// The field at fault.
    pub field: TriggerField,
    /// What is wrong, naming the value.
    pub message: String,
}

/// The field of a trigger an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TriggerField {
    /// The cron pattern.
    Cron,
    /// The IANA time zone.
    Timezone,
    /// The `every` period.
    Every,
    /// The `at` instant.
    At,
    /// The misfire policy (or its `catch_up_max`).
    Misfire,
    /// The overlap policy.
    Overlap,
}

impl TriggerError {
    fn new(field: TriggerField, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A parsed cron pattern, kept inside [`TriggerSpec::Cron`] so that computing fire
/// times never parses the expression again. Cloning it is cheap (shared).
///
/// Obtain one through [`TriggerSpec::cron`] or [`CronSchedule::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule(Arc<Cron>);

impl CronSchedule {
    /// Parses a cron expression (see the [module docs](self) for the syntax).
    ///
    /// Quartz's `0/10` step syntax is accepted (the same as `*/10` here).
    pub fn parse(expr: &str) -> Result<Self, TriggerError> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .sloppy_ranges(true)
            .build()
            .parse(expr)
            .map_err(|e| {
                TriggerError::new(
                    TriggerField::Cron,
                    format!("invalid cron expression \"{expr}\": {e}"),
                )
            })?;
        Ok(Self(Arc::new(cron)))
    }

    /// Whether croner treats the pattern as a fixed-time job (single values in the
    /// second, minute and hour fields) rather than an interval job; the two differ
    /// at daylight saving time transitions (see the [module docs](self)).
    pub fn is_fixed_time(&self) -> bool {
        self.0.determine_job_type() == croner::JobType::FixedTime
    }

    /// A human-readable English description of the pattern (from croner).
    pub fn explain(&self) -> String {
        self.0.describe()
    }

    /// The first fire strictly after `after`, evaluating the pattern in `tz`.
    fn next_after(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // croner steps off `after`'s whole second, so the result is strictly later.
        // The zoned value carries its instant, which tells croner which pass of a
        // repeated (fall-back) hour the search is on.
        self.0
            .find_next_occurrence(&after.with_timezone(&tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last fire at or before `at`, evaluating the pattern in `tz`.
    fn prev_at_or_before(
        &self,
        tz: Tz,
        at: DateTime<Utc>,
        inclusive: bool,
    ) -> Option<DateTime<Utc>> {
        self.0
            .find_previous_occurrence(&at.with_timezone(&tz), inclusive)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

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
        /// The period (at least [`MIN_EVERY_PERIOD`] when parsed).
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
    /// Parses a cron expression in a time zone name (IANA, e.g. `"Asia/Seoul"`; the
    /// caller supplies the default, `"UTC"`).
    pub fn cron(expr: &str, tz: &str) -> Result<Self, TriggerError> {
        let tz = parse_tz(tz)?;
        let expr = expr.trim();
        let schedule = CronSchedule::parse(expr)?;
        // A pattern that matches no date at all (`0 0 30 2 *`) is a mistake; say so
        // now rather than never firing. One search from a fixed instant keeps the
        // check deterministic (a pattern with a year field may still have no fire
        // left after today: `next_after` then answers `None`).
        if schedule.next_after(tz, DateTime::UNIX_EPOCH).is_none() {
            return Err(TriggerError::new(
                TriggerField::Cron,
                format!("invalid cron expression \"{expr}\": it never fires (no date matches it)"),
            ));
        }
        Ok(TriggerSpec::Cron {
            expr: expr.to_string(),
            tz,
            schedule,
        })
    }

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

    /// Parses an RFC 3339 instant with its offset (`"2026-12-01T00:00:00+09:00"`).
    pub fn at(at: &str) -> Result<Self, TriggerError> {
        let t = DateTime::parse_from_rfc3339(at.trim()).map_err(|e| {
            TriggerError::new(TriggerField::At, format!(
                "invalid at \"{at}\": {e} (expected RFC 3339 with an offset, such as \"2026-12-01T00:00:00+09:00\")"
            ))
        })?;
        Ok(TriggerSpec::At {
            at: t.with_timezone(&Utc),
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
    /// now and [`Misfire::lookback`], then [`Misfire::select`]: the work is bounded by
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

/// Parses an IANA zone name.
fn parse_tz(name: &str) -> Result<Tz, TriggerError> {
    name.trim().parse::<Tz>().map_err(|_| {
        TriggerError::new(TriggerField::Timezone, format!(
            "unknown time zone \"{name}\": use an IANA zone name such as \"Asia/Seoul\", \"Europe/Berlin\", \"America/New_York\" or \"UTC\""
        ))
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Nanoseconds since the Unix epoch, in a width that cannot overflow.
fn nanos(t: DateTime<Utc>) -> i128 {
    i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos())
}

fn from_nanos(n: i128) -> Option<DateTime<Utc>> {
    let secs = i64::try_from(n.div_euclid(1_000_000_000)).ok()?;
    let sub = u32::try_from(n.rem_euclid(1_000_000_000)).ok()?;
    DateTime::from_timestamp(secs, sub)
}

/// A period in nanoseconds; `None` for a zero period (which never fires).
fn period_nanos(d: Duration) -> Option<i128> {
    let p = i128::try_from(d.as_nanos()).ok()?;
    (p > 0).then_some(p)
}

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
    /// to pass to [`TriggerSpec::latest_between`].
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
    use chrono::{Datelike, TimeZone};

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// A wall clock time in `tz` that exists once.
    fn local(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    /// The local calendar day `y-mo-d` in `tz` as `(start, end)` instants, for
    /// `between(start, end)`. The start is one second before local midnight, so a
    /// fire at 00:00:00 belongs to its own day.
    fn local_day(tz: Tz, y: i32, mo: u32, d: u32) -> (DateTime<Utc>, DateTime<Utc>) {
        let start = local(tz, y, mo, d, 0, 0) - TimeDelta::seconds(1);
        let next = chrono::NaiveDate::from_ymd_opt(y, mo, d).unwrap() + TimeDelta::days(1);
        let end = local(tz, next.year(), next.month(), next.day(), 0, 0) - TimeDelta::seconds(1);
        (start, end)
    }

    /// Fire instants shown as local wall clock times with their abbreviation.
    fn shown(tz: Tz, ts: &[DateTime<Utc>]) -> Vec<String> {
        ts.iter()
            .map(|t| t.with_timezone(&tz).format("%m-%d %H:%M:%S %Z").to_string())
            .collect()
    }

    fn cron(expr: &str, tz: &str) -> TriggerSpec {
        TriggerSpec::cron(expr, tz).unwrap()
    }

    // ---- cron syntax -------------------------------------------------------------

    #[test]
    fn cron_five_fields_and_six_with_seconds() {
        let t0 = utc("2026-05-01T10:07:13Z");
        let five = cron("20 * * * *", "UTC");
        let six = cron("0 20 * * * *", "UTC");
        let want = vec![
            utc("2026-05-01T10:20:00Z"),
            utc("2026-05-01T11:20:00Z"),
            utc("2026-05-01T12:20:00Z"),
        ];
        assert_eq!(five.upcoming(t0, 3), want);
        assert_eq!(six.upcoming(t0, 3), want);
        assert_eq!(
            cron("30 20 * * * *", "UTC").next_after(t0),
            Some(utc("2026-05-01T10:20:30Z"))
        );
        assert_eq!(
            cron("*/10 * * * * *", "UTC").upcoming(t0, 3),
            vec![
                utc("2026-05-01T10:07:20Z"),
                utc("2026-05-01T10:07:30Z"),
                utc("2026-05-01T10:07:40Z"),
            ]
        );
        // A seventh field is a year.
        assert_eq!(
            cron("0 0 0 1 1 * 2030", "UTC").upcoming(t0, 2),
            vec![utc("2030-01-01T00:00:00Z")]
        );
    }

    #[test]
    fn cron_last_day_of_month() {
        let l = cron("0 0 L * *", "UTC");
        assert_eq!(
            l.upcoming(utc("2026-01-15T00:00:00Z"), 4),
            vec![
                utc("2026-01-31T00:00:00Z"),
                utc("2026-02-28T00:00:00Z"),
                utc("2026-03-31T00:00:00Z"),
                utc("2026-04-30T00:00:00Z"),
            ]
        );
        assert_eq!(
            l.next_after(utc("2028-02-01T00:00:00Z")),
            Some(utc("2028-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn cron_closest_weekday() {
        let w = cron("0 0 15W * *", "UTC");
        // 2026-08-15 is a Saturday: Friday the 14th.
        assert_eq!(
            w.next_after(utc("2026-08-01T00:00:00Z")),
            Some(utc("2026-08-14T00:00:00Z"))
        );
        // 2026-11-15 is a Sunday: Monday the 16th.
        assert_eq!(
            w.next_after(utc("2026-11-01T00:00:00Z")),
            Some(utc("2026-11-16T00:00:00Z"))
        );
        // 2026-08-01 is a Saturday; W stays in its month: Monday the 3rd.
        assert_eq!(
            cron("0 0 1W * *", "UTC").next_after(utc("2026-07-15T00:00:00Z")),
            Some(utc("2026-08-03T00:00:00Z"))
        );
    }

    #[test]
    fn cron_nth_and_last_weekday() {
        // Quartz-looking syntax works: `?` is `*`, MON#2 the second Monday.
        let second_monday = cron("0 0 12 ? * MON#2", "UTC");
        assert_eq!(
            second_monday.upcoming(utc("2026-01-01T00:00:00Z"), 3),
            vec![
                utc("2026-01-12T12:00:00Z"),
                utc("2026-02-09T12:00:00Z"),
                utc("2026-03-09T12:00:00Z"),
            ]
        );
        // 5#L: the last Friday of the month (weekdays are POSIX: 5 = Friday).
        assert_eq!(
            cron("0 18 * * 5#L", "UTC").upcoming(utc("2026-01-01T00:00:00Z"), 2),
            vec![utc("2026-01-30T18:00:00Z"), utc("2026-02-27T18:00:00Z")]
        );
        // `+` makes day of month AND day of week: Friday the 13th.
        assert_eq!(
            cron("0 0 13 * +FRI", "UTC").next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2026-02-13T00:00:00Z"))
        );
    }

    #[test]
    fn cron_ranges_lists_and_steps() {
        // Friday 2026-05-01, then Monday.
        let s = cron("0 9-17/2 * * MON-FRI", "UTC");
        assert_eq!(
            s.upcoming(utc("2026-05-01T00:00:00Z"), 6),
            vec![
                utc("2026-05-01T09:00:00Z"),
                utc("2026-05-01T11:00:00Z"),
                utc("2026-05-01T13:00:00Z"),
                utc("2026-05-01T15:00:00Z"),
                utc("2026-05-01T17:00:00Z"),
                utc("2026-05-04T09:00:00Z"),
            ]
        );
        assert_eq!(
            cron("0 0,30 8 * * *", "UTC").upcoming(utc("2026-05-01T00:00:00Z"), 3),
            vec![
                utc("2026-05-01T08:00:00Z"),
                utc("2026-05-01T08:30:00Z"),
                utc("2026-05-02T08:00:00Z"),
            ]
        );
        // Quartz's `0/10` is accepted and means every ten from 0.
        let t0 = utc("2026-05-01T10:07:13Z");
        assert_eq!(
            cron("0/10 * * * * *", "UTC").upcoming(t0, 3),
            cron("*/10 * * * * *", "UTC").upcoming(t0, 3)
        );
    }

    #[test]
    fn cron_aliases() {
        let t0 = utc("2026-05-01T10:07:13Z"); // a Friday
        let cases = [
            ("@hourly", "0 * * * *", "2026-05-01T11:00:00Z"),
            ("@daily", "0 0 * * *", "2026-05-02T00:00:00Z"),
            ("@weekly", "0 0 * * SUN", "2026-05-03T00:00:00Z"),
            ("@monthly", "0 0 1 * *", "2026-06-01T00:00:00Z"),
            ("@yearly", "0 0 1 1 *", "2027-01-01T00:00:00Z"),
            ("@annually", "0 0 1 1 *", "2027-01-01T00:00:00Z"),
            ("@DAILY", "0 0 * * *", "2026-05-02T00:00:00Z"),
        ];
        for (alias, expanded, first) in cases {
            let a = cron(alias, "UTC");
            assert_eq!(a.next_after(t0), Some(utc(first)), "{alias}");
            assert_eq!(
                a.upcoming(t0, 5),
                cron(expanded, "UTC").upcoming(t0, 5),
                "{alias}"
            );
        }
        // Aliases are evaluated in the zone too.
        assert_eq!(
            cron("@daily", "Asia/Seoul").next_after(t0),
            Some(utc("2026-05-01T15:00:00Z"))
        );
    }

    #[test]
    fn cron_bad_expressions_name_the_expression_and_the_reason() {
        let cases = [
            ("bogus", "between 5 and 7 fields"),
            ("60 * * * *", "out of bounds"),
            ("*/0 * * * *", "Step cannot be zero"),
            ("0 0 * * * * * *", "between 5 and 7 fields"),
            ("0 0 30 2 *", "never fires"),
            ("@reboot", "invalid cron expression"),
            ("", "empty"),
        ];
        for (expr, reason) in cases {
            let e = TriggerSpec::cron(expr, "UTC").unwrap_err().message;
            assert!(e.contains(&format!("\"{expr}\"")), "{e}");
            assert!(e.contains(reason), "{expr}: {e}");
        }
    }

    #[test]
    fn unknown_time_zone_is_named_with_a_hint() {
        for name in ["Asia/Seol", "KST+9", "", "Mars/Olympus"] {
            let err = TriggerSpec::cron("0 0 * * *", name).unwrap_err();
            assert_eq!(err.field, TriggerField::Timezone);
            let e = err.message;
            assert!(e.contains(&format!("unknown time zone \"{name}\"")), "{e}");
            assert!(e.contains("IANA") && e.contains("Asia/Seoul"), "{e}");
        }
        assert_eq!(
            cron("0 0 * * *", " Asia/Seoul ").tz(),
            chrono_tz::Asia::Seoul
        );
        assert_eq!(cron("0 0 * * *", "UTC").tz(), Tz::UTC);
    }

    // ---- time zones ----------------------------------------------------------------

    #[test]
    fn seoul_fires_at_twenty_past_each_hour_nine_hours_ahead_of_utc() {
        let seoul = chrono_tz::Asia::Seoul;
        let s = cron("0 20 * * * *", "Asia/Seoul");
        // 2026-05-01T00:00Z is 09:00 KST.
        let next = s.upcoming(utc("2026-05-01T00:00:00Z"), 3);
        assert_eq!(
            next,
            vec![
                utc("2026-05-01T00:20:00Z"),
                utc("2026-05-01T01:20:00Z"),
                utc("2026-05-01T02:20:00Z"),
            ]
        );
        assert_eq!(
            shown(seoul, &next),
            [
                "05-01 09:20:00 KST",
                "05-01 10:20:00 KST",
                "05-01 11:20:00 KST"
            ]
        );
        // A whole local day has 24 fires.
        let (a, b) = local_day(seoul, 2026, 5, 1);
        assert_eq!(s.between(a, b, 1000).len(), 24);
        // The hour matters in a fixed-time pattern: 09:00 KST is 00:00Z.
        assert_eq!(
            cron("0 0 9 * * *", "Asia/Seoul").next_after(utc("2026-05-01T00:00:00Z")),
            Some(utc("2026-05-02T00:00:00Z"))
        );
        assert_eq!(
            cron("0 0 9 * * *", "Asia/Seoul").next_after(utc("2026-04-30T23:59:59Z")),
            Some(utc("2026-05-01T00:00:00Z"))
        );
        // And so do half-hour offsets: :20 in Kolkata (+05:30) is :50 in UTC.
        assert_eq!(
            cron("0 20 * * * *", "Asia/Kolkata").next_after(utc("2026-05-01T00:00:00Z")),
            Some(utc("2026-05-01T00:50:00Z"))
        );
    }

    #[test]
    fn next_after_is_strictly_after_even_within_a_second() {
        let s = cron("0 20 * * * *", "Asia/Seoul");
        let fire = utc("2026-05-01T01:20:00Z");
        assert_eq!(
            s.next_after(fire - TimeDelta::milliseconds(500)),
            Some(fire)
        );
        assert_eq!(s.next_after(fire), Some(fire + TimeDelta::hours(1)));
        assert_eq!(
            s.next_after(fire + TimeDelta::milliseconds(500)),
            Some(fire + TimeDelta::hours(1))
        );
        // (from, to]: `from` excluded, `to` included.
        assert_eq!(
            s.between(fire, fire + TimeDelta::hours(2), 10),
            vec![fire + TimeDelta::hours(1), fire + TimeDelta::hours(2)]
        );
    }

    // ---- daylight saving time ------------------------------------------------------

    const NY: Tz = chrono_tz::America::New_York;
    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    #[test]
    fn dst_gap_fixed_time_job_runs_once_right_after_the_gap() {
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist.
        let s = cron("0 30 2 * * *", "America/New_York");
        let (a, b) = local_day(NY, 2026, 3, 8);
        let fires = s.between(a, b, 100);
        // croner (OCPS): the first instant after the gap, 03:00:00 EDT = 07:00Z.
        assert_eq!(fires, vec![utc("2026-03-08T07:00:00Z")]);
        assert_eq!(shown(NY, &fires), ["03-08 03:00:00 EDT"]);
        // The days around it are ordinary.
        let (a, b) = local_day(NY, 2026, 3, 7);
        assert_eq!(shown(NY, &s.between(a, b, 100)), ["03-07 02:30:00 EST"]);
        let (a, b) = local_day(NY, 2026, 3, 9);
        assert_eq!(shown(NY, &s.between(a, b, 100)), ["03-09 02:30:00 EDT"]);
        // Chained next_after from the day before sees the same three fires.
        assert_eq!(
            s.upcoming(utc("2026-03-07T00:00:00Z"), 3),
            vec![
                utc("2026-03-07T07:30:00Z"),
                utc("2026-03-08T07:00:00Z"),
                utc("2026-03-09T06:30:00Z"),
            ]
        );

        // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST.
        let s = cron("0 30 2 * * *", "Europe/Berlin");
        let (a, b) = local_day(BERLIN, 2026, 3, 29);
        let fires = s.between(a, b, 100);
        assert_eq!(fires, vec![utc("2026-03-29T01:00:00Z")]);
        assert_eq!(shown(BERLIN, &fires), ["03-29 03:00:00 CEST"]);
    }

    #[test]
    fn dst_overlap_fixed_time_job_runs_once_in_the_first_pass() {
        // New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST, so 01:00-01:59
        // happens twice. A 01:30 job runs once, at the first 01:30 (EDT).
        let s = cron("0 30 1 * * *", "America/New_York");
        let (a, b) = local_day(NY, 2026, 11, 1);
        let fires = s.between(a, b, 100);
        assert_eq!(fires, vec![utc("2026-11-01T05:30:00Z")]);
        assert_eq!(shown(NY, &fires), ["11-01 01:30:00 EDT"]);
        // Asking from inside the second pass does not bring the 01:30 EST back.
        assert_eq!(
            s.next_after(utc("2026-11-01T06:00:00Z")), // 01:00 EST
            Some(utc("2026-11-02T06:30:00Z"))
        );
        // 02:30 comes once (in New York it is past the repeated hour).
        let s = cron("0 30 2 * * *", "America/New_York");
        assert_eq!(shown(NY, &s.between(a, b, 100)), ["11-01 02:30:00 EST"]);

        // Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET, so 02:30 happens
        // twice; the job runs once, at 02:30 CEST (00:30Z), not again at 01:30Z.
        let (a, b) = local_day(BERLIN, 2026, 10, 25);
        let s = cron("0 30 2 * * *", "Europe/Berlin");
        let fires = s.between(a, b, 100);
        assert_eq!(fires, vec![utc("2026-10-25T00:30:00Z")]);
        assert_eq!(shown(BERLIN, &fires), ["10-25 02:30:00 CEST"]);
    }

    #[test]
    fn dst_interval_jobs_skip_the_gap_and_repeat_in_the_overlap() {
        // Interval-style patterns (a wildcard or step in the second, minute or hour
        // field) follow the wall clock: croner (OCPS) gives no fires inside a gap and
        // fires in *both* passes of a repeated hour. So an hourly job runs 23 times on
        // the spring-forward day and 25 times on the fall-back day; every 15 minutes,
        // 92 and 100 times. Each is still a distinct instant, so claims keyed on the
        // instant stay unique.
        let hourly = cron("0 0 * * * *", "America/New_York");
        let quarter = cron("0 */15 * * * *", "America/New_York");
        let half_past = cron("0 30 * * * *", "America/New_York"); // wildcard hour

        let (a, b) = local_day(NY, 2026, 3, 8);
        let h = hourly.between(a, b, 1000);
        assert_eq!(h.len(), 23);
        assert_eq!(
            shown(NY, &h[1..3]),
            ["03-08 01:00:00 EST", "03-08 03:00:00 EDT"]
        );
        assert_eq!(quarter.between(a, b, 1000).len(), 92);
        let hp = half_past.between(a, b, 1000);
        assert_eq!(hp.len(), 23);
        assert_eq!(
            shown(NY, &hp[1..3]),
            ["03-08 01:30:00 EST", "03-08 03:30:00 EDT"]
        );

        let (a, b) = local_day(NY, 2026, 11, 1);
        let h = hourly.between(a, b, 1000);
        assert_eq!(h.len(), 25);
        assert_eq!(
            shown(NY, &h[1..4]),
            [
                "11-01 01:00:00 EDT",
                "11-01 01:00:00 EST",
                "11-01 02:00:00 EST"
            ]
        );
        assert_eq!(
            &h[1..3],
            [utc("2026-11-01T05:00:00Z"), utc("2026-11-01T06:00:00Z")]
        );
        let q = quarter.between(a, b, 1000);
        assert_eq!(q.len(), 100);
        assert_eq!(
            shown(NY, &q[4..12]),
            [
                "11-01 01:00:00 EDT",
                "11-01 01:15:00 EDT",
                "11-01 01:30:00 EDT",
                "11-01 01:45:00 EDT",
                "11-01 01:00:00 EST",
                "11-01 01:15:00 EST",
                "11-01 01:30:00 EST",
                "11-01 01:45:00 EST",
            ]
        );
        assert!(q.windows(2).all(|w| w[1] - w[0] == TimeDelta::minutes(15)));
        // next_after from inside the first pass continues into the second one.
        assert_eq!(
            hourly.next_after(utc("2026-11-01T05:00:00Z")), // 01:00 EDT
            Some(utc("2026-11-01T06:00:00Z"))               // 01:00 EST
        );

        // Berlin, the same shape.
        let hourly = cron("0 0 * * * *", "Europe/Berlin");
        let (a, b) = local_day(BERLIN, 2026, 3, 29);
        assert_eq!(hourly.between(a, b, 1000).len(), 23);
        let (a, b) = local_day(BERLIN, 2026, 10, 25);
        let h = hourly.between(a, b, 1000);
        assert_eq!(h.len(), 25);
        assert_eq!(
            shown(BERLIN, &h[2..4]),
            ["10-25 02:00:00 CEST", "10-25 02:00:00 CET"]
        );
    }

    #[test]
    fn latest_between_agrees_with_between_across_dst() {
        let specs = [
            cron("0 30 2 * * *", "America/New_York"),
            cron("0 30 1 * * *", "America/New_York"),
            cron("0 0 * * * *", "America/New_York"),
            cron("0 */15 * * * *", "America/New_York"),
            cron("0 30 2 * * *", "Europe/Berlin"),
            cron("0 0 * * * *", "Europe/Berlin"),
            cron("0 20 * * * *", "Asia/Seoul"),
        ];
        let windows = [
            (utc("2026-03-07T00:00:00Z"), utc("2026-03-10T00:00:00Z")),
            (utc("2026-03-28T00:00:00Z"), utc("2026-03-30T12:00:00Z")),
            (utc("2026-10-24T00:00:00Z"), utc("2026-10-26T00:00:00Z")),
            (utc("2026-10-31T00:00:00Z"), utc("2026-11-03T00:00:00Z")),
        ];
        for s in &specs {
            for (from, to) in windows {
                let all = s.between(from, to, 10_000);
                for n in [1, 2, 5, 30, 10_000] {
                    let tail = &all[all.len().saturating_sub(n)..];
                    assert_eq!(s.latest_between(from, to, n), tail, "{s} n={n}");
                }
            }
        }
    }

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

    // ---- at ------------------------------------------------------------------------

    #[test]
    fn at_fires_once() {
        let s = TriggerSpec::at("2026-12-01T00:00:00+09:00").unwrap();
        let at = utc("2026-11-30T15:00:00Z");
        assert_eq!(s, TriggerSpec::At { at });
        assert_eq!(s.next_after(at - TimeDelta::days(30)), Some(at));
        assert_eq!(s.next_after(at - TimeDelta::nanoseconds(1)), Some(at));
        assert_eq!(s.next_after(at), None);
        assert_eq!(s.next_after(at + TimeDelta::seconds(1)), None);
        assert_eq!(s.upcoming(at - TimeDelta::days(1), 3), vec![at]);
        assert_eq!(s.between(at - TimeDelta::hours(1), at, 5), vec![at]);
        assert!(s.between(at, at + TimeDelta::hours(1), 5).is_empty());
        assert_eq!(s.latest_between(at - TimeDelta::hours(1), at, 5), vec![at]);
        assert_eq!(s.tz(), Tz::UTC);
    }

    #[test]
    fn at_bad_instants_are_named() {
        for v in ["2026-12-01 00:00", "2026-12-01T00:00:00", "tomorrow", ""] {
            let e = TriggerSpec::at(v).unwrap_err().message;
            assert!(e.contains(&format!("invalid at \"{v}\"")), "{e}");
            assert!(e.contains("RFC 3339"), "{e}");
        }
    }

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

    // ---- cost ----------------------------------------------------------------------

    #[test]
    fn cron_specs_share_their_parsed_pattern_and_answer_quickly() {
        let s = cron("0 20 * * * *", "Asia/Seoul");
        let c = s.clone();
        let (TriggerSpec::Cron { schedule: a, .. }, TriggerSpec::Cron { schedule: b, .. }) =
            (&s, &c)
        else {
            unreachable!()
        };
        assert!(Arc::ptr_eq(&a.0, &b.0));

        // The scheduler asks 10,000 triggers for their next fire. Generous bound:
        // this is a debug build; a release build does it in a few milliseconds.
        let specs: Vec<TriggerSpec> = (0..10_000)
            .map(|i| match i % 3 {
                0 => s.clone(),
                1 => cron("*/10 * * * * *", "America/New_York"),
                _ => TriggerSpec::every("10s", false).unwrap(),
            })
            .collect();
        let t = utc("2026-05-01T10:07:13Z");
        let started = std::time::Instant::now();
        let n = specs.iter().filter_map(|s| s.next_after(t)).count();
        assert_eq!(n, 10_000);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

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
