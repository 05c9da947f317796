//! `kind = "cron"`: a cron pattern in a time zone (see the [module docs](super) for
//! the syntax and daylight saving time).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::Deserialize;

use super::{TriggerError, TriggerField, TriggerSpec};

/// A parsed cron pattern, kept inside [`TriggerSpec::Cron`] so that computing fire
/// times never parses the expression again. Cloning it is cheap (shared).
///
/// Obtain one through [`TriggerSpec::cron`] or [`CronSchedule::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule(Arc<Cron>);

impl CronSchedule {
    /// Parses a cron expression (see the [module docs](super) for the syntax).
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
    /// at daylight saving time transitions (see the [module docs](super)).
    pub fn is_fixed_time(&self) -> bool {
        self.0.determine_job_type() == croner::JobType::FixedTime
    }

    /// A human-readable English description of the pattern (from croner).
    pub fn explain(&self) -> String {
        self.0.describe()
    }

    /// The first fire strictly after `after`, evaluating the pattern in `tz`.
    pub(super) fn next_after(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // croner steps off `after`'s whole second, so the result is strictly later.
        // The zoned value carries its instant, which tells croner which pass of a
        // repeated (fall-back) hour the search is on.
        self.0
            .find_next_occurrence(&after.with_timezone(&tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last fire at or before `at`, evaluating the pattern in `tz`.
    pub(super) fn prev_at_or_before(
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

/// `kind = "cron"`: a cron pattern in a time zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCron {
    /// A cron pattern, 5 or 6 fields (seconds first), `L`, `W`, `#`, `@daily`…
    pub cron: String,
    /// IANA zone of `cron` (default `UTC`).
    pub timezone: Option<String>,
}

impl RawCron {
    /// The spec: the pattern parsed in its zone.
    ///
    /// # Errors
    ///
    /// A bad pattern ([`TriggerField::Cron`]) or zone ([`TriggerField::Timezone`]).
    pub fn into_spec(&self) -> Result<TriggerSpec, TriggerError> {
        TriggerSpec::cron(&self.cron, self.timezone.as_deref().unwrap_or("UTC"))
    }
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
}

/// Parses an IANA zone name.
fn parse_tz(name: &str) -> Result<Tz, TriggerError> {
    name.trim().parse::<Tz>().map_err(|_| {
        TriggerError::new(TriggerField::Timezone, format!(
            "unknown time zone \"{name}\": use an IANA zone name such as \"Asia/Seoul\", \"Europe/Berlin\", \"America/New_York\" or \"UTC\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triggers::test_util::*;
    use chrono::TimeDelta;
    use std::time::Duration;

    // ---- cron syntax -------------------------------------------------------------

    #[test]
    fn cron_syntax_fires_when_expected() {
        // (case, pattern in UTC, from, how many fires to ask for, the fires).
        // Each case checks `upcoming(from, n)` and that `next_after(from)` is the
        // first of them.
        let t0 = "2026-05-01T10:07:13Z"; // a Friday
        let every_ten = &[
            "2026-05-01T10:07:20Z",
            "2026-05-01T10:07:30Z",
            "2026-05-01T10:07:40Z",
        ];
        let twenty_past = &[
            "2026-05-01T10:20:00Z",
            "2026-05-01T11:20:00Z",
            "2026-05-01T12:20:00Z",
        ];
        let cases: &[(&str, &str, &str, usize, &[&str])] = &[
            ("five fields", "20 * * * *", t0, 3, twenty_past),
            (
                "six fields, seconds first",
                "0 20 * * * *",
                t0,
                3,
                twenty_past,
            ),
            (
                "a seconds value",
                "30 20 * * * *",
                t0,
                1,
                &["2026-05-01T10:20:30Z"],
            ),
            ("a seconds step", "*/10 * * * * *", t0, 3, every_ten),
            // Quartz's `0/10` is accepted and means every ten from 0.
            ("Quartz 0/10 is */10", "0/10 * * * * *", t0, 3, every_ten),
            // A seventh field is a year.
            (
                "a year field",
                "0 0 0 1 1 * 2030",
                t0,
                2,
                &["2030-01-01T00:00:00Z"],
            ),
            (
                "L: last day of the month",
                "0 0 L * *",
                "2026-01-15T00:00:00Z",
                4,
                &[
                    "2026-01-31T00:00:00Z",
                    "2026-02-28T00:00:00Z",
                    "2026-03-31T00:00:00Z",
                    "2026-04-30T00:00:00Z",
                ],
            ),
            (
                "L in a leap February",
                "0 0 L * *",
                "2028-02-01T00:00:00Z",
                1,
                &["2028-02-29T00:00:00Z"],
            ),
            // 2026-08-15 is a Saturday: Friday the 14th.
            (
                "15W on a Saturday",
                "0 0 15W * *",
                "2026-08-01T00:00:00Z",
                1,
                &["2026-08-14T00:00:00Z"],
            ),
            // 2026-11-15 is a Sunday: Monday the 16th.
            (
                "15W on a Sunday",
                "0 0 15W * *",
                "2026-11-01T00:00:00Z",
                1,
                &["2026-11-16T00:00:00Z"],
            ),
            // 2026-08-01 is a Saturday; W stays in its month: Monday the 3rd.
            (
                "1W stays in its month",
                "0 0 1W * *",
                "2026-07-15T00:00:00Z",
                1,
                &["2026-08-03T00:00:00Z"],
            ),
            // Quartz-looking syntax works: `?` is `*`, MON#2 the second Monday.
            (
                "? and MON#2",
                "0 0 12 ? * MON#2",
                "2026-01-01T00:00:00Z",
                3,
                &[
                    "2026-01-12T12:00:00Z",
                    "2026-02-09T12:00:00Z",
                    "2026-03-09T12:00:00Z",
                ],
            ),
            // 5#L: the last Friday of the month (weekdays are POSIX: 5 = Friday).
            (
                "5#L: last Friday",
                "0 18 * * 5#L",
                "2026-01-01T00:00:00Z",
                2,
                &["2026-01-30T18:00:00Z", "2026-02-27T18:00:00Z"],
            ),
            // `+` makes day of month AND day of week: Friday the 13th.
            (
                "+FRI: day of month and week",
                "0 0 13 * +FRI",
                "2026-01-01T00:00:00Z",
                1,
                &["2026-02-13T00:00:00Z"],
            ),
            // Friday 2026-05-01, then Monday.
            (
                "ranges and steps",
                "0 9-17/2 * * MON-FRI",
                "2026-05-01T00:00:00Z",
                6,
                &[
                    "2026-05-01T09:00:00Z",
                    "2026-05-01T11:00:00Z",
                    "2026-05-01T13:00:00Z",
                    "2026-05-01T15:00:00Z",
                    "2026-05-01T17:00:00Z",
                    "2026-05-04T09:00:00Z",
                ],
            ),
            (
                "a list",
                "0 0,30 8 * * *",
                "2026-05-01T00:00:00Z",
                3,
                &[
                    "2026-05-01T08:00:00Z",
                    "2026-05-01T08:30:00Z",
                    "2026-05-02T08:00:00Z",
                ],
            ),
        ];
        for &(case, expr, from, n, want) in cases {
            let s = cron(expr, "UTC");
            let want: Vec<_> = want.iter().map(|t| utc(t)).collect();
            let from = utc(from);
            assert_eq!(s.upcoming(from, n), want, "{case}: {expr}");
            assert_eq!(s.next_after(from), want.first().copied(), "{case}: {expr}");
        }
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
    fn dst_fixed_time_jobs_run_once_a_local_day() {
        // (case, pattern, zone, local day, its fires in UTC, the same shown locally).
        type Case<'a> = (
            &'a str,
            &'a str,
            Tz,
            (i32, u32, u32),
            &'a [&'a str],
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not
            // exist. croner (OCPS): the first instant after the gap, 03:00:00 EDT.
            (
                "New York gap",
                "0 30 2 * * *",
                NY,
                (2026, 3, 8),
                &["2026-03-08T07:00:00Z"],
                &["03-08 03:00:00 EDT"],
            ),
            // The days around it are ordinary.
            (
                "New York before the gap",
                "0 30 2 * * *",
                NY,
                (2026, 3, 7),
                &["2026-03-07T07:30:00Z"],
                &["03-07 02:30:00 EST"],
            ),
            (
                "New York after the gap",
                "0 30 2 * * *",
                NY,
                (2026, 3, 9),
                &["2026-03-09T06:30:00Z"],
                &["03-09 02:30:00 EDT"],
            ),
            // Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST.
            (
                "Berlin gap",
                "0 30 2 * * *",
                BERLIN,
                (2026, 3, 29),
                &["2026-03-29T01:00:00Z"],
                &["03-29 03:00:00 CEST"],
            ),
            // New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST, so 01:00-01:59
            // happens twice. A 01:30 job runs once, at the first 01:30 (EDT).
            (
                "New York overlap",
                "0 30 1 * * *",
                NY,
                (2026, 11, 1),
                &["2026-11-01T05:30:00Z"],
                &["11-01 01:30:00 EDT"],
            ),
            // 02:30 comes once (in New York it is past the repeated hour).
            (
                "New York past the overlap",
                "0 30 2 * * *",
                NY,
                (2026, 11, 1),
                &["2026-11-01T07:30:00Z"],
                &["11-01 02:30:00 EST"],
            ),
            // Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET, so 02:30 happens
            // twice; the job runs once, at 02:30 CEST (00:30Z), not again at 01:30Z.
            (
                "Berlin overlap",
                "0 30 2 * * *",
                BERLIN,
                (2026, 10, 25),
                &["2026-10-25T00:30:00Z"],
                &["10-25 02:30:00 CEST"],
            ),
        ];
        for &(case, expr, tz, (y, m, d), want, want_shown) in cases {
            let (a, b) = local_day(tz, y, m, d);
            let fires = cron(expr, tz.name()).between(a, b, 100);
            let want: Vec<_> = want.iter().map(|t| utc(t)).collect();
            assert_eq!(fires, want, "{case}: {expr}");
            assert_eq!(shown(tz, &fires), want_shown, "{case}: {expr}");
        }
    }

    #[test]
    fn dst_fixed_time_searches_step_over_the_transitions() {
        // Chained next_after from the day before the New York gap sees the same
        // three fires as the local days.
        assert_eq!(
            cron("0 30 2 * * *", "America/New_York").upcoming(utc("2026-03-07T00:00:00Z"), 3),
            vec![
                utc("2026-03-07T07:30:00Z"),
                utc("2026-03-08T07:00:00Z"),
                utc("2026-03-09T06:30:00Z"),
            ]
        );
        // Asking from inside the second pass of the New York overlap does not bring
        // the 01:30 EST back.
        assert_eq!(
            cron("0 30 1 * * *", "America/New_York").next_after(utc("2026-11-01T06:00:00Z")), // 01:00 EST
            Some(utc("2026-11-02T06:30:00Z"))
        );
    }

    #[test]
    fn dst_interval_jobs_skip_the_gap_and_repeat_in_the_overlap() {
        // Interval-style patterns (a wildcard or step in the second, minute or hour
        // field) follow the wall clock: croner (OCPS) gives no fires inside a gap and
        // fires in *both* passes of a repeated hour. So an hourly job runs 23 times on
        // the spring-forward day and 25 times on the fall-back day; every 15 minutes,
        // 92 and 100 times. Each is still a distinct instant, so claims keyed on the
        // instant stay unique.
        let hourly = "0 0 * * * *";
        let quarter = "0 */15 * * * *";
        let half_past = "0 30 * * * *"; // wildcard hour
        // (case, pattern, zone, local day, how many fires, which of them to show,
        // how they are shown).
        type Case<'a> = (
            &'a str,
            &'a str,
            Tz,
            (i32, u32, u32),
            usize,
            std::ops::Range<usize>,
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            (
                "New York hourly, gap",
                hourly,
                NY,
                (2026, 3, 8),
                23,
                1..3,
                &["03-08 01:00:00 EST", "03-08 03:00:00 EDT"],
            ),
            (
                "New York quarterly, gap",
                quarter,
                NY,
                (2026, 3, 8),
                92,
                0..0,
                &[],
            ),
            (
                "New York half past, gap",
                half_past,
                NY,
                (2026, 3, 8),
                23,
                1..3,
                &["03-08 01:30:00 EST", "03-08 03:30:00 EDT"],
            ),
            (
                "New York hourly, overlap",
                hourly,
                NY,
                (2026, 11, 1),
                25,
                1..4,
                &[
                    "11-01 01:00:00 EDT",
                    "11-01 01:00:00 EST",
                    "11-01 02:00:00 EST",
                ],
            ),
            (
                "New York quarterly, overlap",
                quarter,
                NY,
                (2026, 11, 1),
                100,
                4..12,
                &[
                    "11-01 01:00:00 EDT",
                    "11-01 01:15:00 EDT",
                    "11-01 01:30:00 EDT",
                    "11-01 01:45:00 EDT",
                    "11-01 01:00:00 EST",
                    "11-01 01:15:00 EST",
                    "11-01 01:30:00 EST",
                    "11-01 01:45:00 EST",
                ],
            ),
            // Berlin, the same shape.
            (
                "Berlin hourly, gap",
                hourly,
                BERLIN,
                (2026, 3, 29),
                23,
                0..0,
                &[],
            ),
            (
                "Berlin hourly, overlap",
                hourly,
                BERLIN,
                (2026, 10, 25),
                25,
                2..4,
                &["10-25 02:00:00 CEST", "10-25 02:00:00 CET"],
            ),
        ];
        for (case, expr, tz, (y, m, d), n, range, want_shown) in cases.iter().cloned() {
            let (a, b) = local_day(tz, y, m, d);
            let fires = cron(expr, tz.name()).between(a, b, 1000);
            assert_eq!(fires.len(), n, "{case}: {expr}");
            assert_eq!(shown(tz, &fires[range]), want_shown, "{case}: {expr}");
        }

        // The two New York 01:00 of the overlap are an hour apart in UTC, and the
        // quarterly fires stay 15 minutes apart through it.
        let (a, b) = local_day(NY, 2026, 11, 1);
        let ny_hourly = cron(hourly, "America/New_York");
        assert_eq!(
            &ny_hourly.between(a, b, 1000)[1..3],
            [utc("2026-11-01T05:00:00Z"), utc("2026-11-01T06:00:00Z")]
        );
        let q = cron(quarter, "America/New_York").between(a, b, 1000);
        assert!(q.windows(2).all(|w| w[1] - w[0] == TimeDelta::minutes(15)));
        // next_after from inside the first pass continues into the second one.
        assert_eq!(
            ny_hourly.next_after(utc("2026-11-01T05:00:00Z")), // 01:00 EDT
            Some(utc("2026-11-01T06:00:00Z"))                  // 01:00 EST
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
}
