//! The `fire_time` / `fire_date` of a run: one format for every origin.
//!
//! A scheduled fire, a run by hand (CLI or API) and a file arriving all give a
//! run these two values through [`fire_params`], so that a job's output named
//! after them looks the same however it was started: the instant in the given
//! zone, RFC 3339 to the second with its offset (`2026-12-03T20:00:00+09:00`),
//! and that zone's calendar date (`2026-12-03`).

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;

/// The name of the fire instant parameter.
pub const FIRE_TIME: &str = "fire_time";
/// The name of the fire date parameter.
pub const FIRE_DATE: &str = "fire_date";

/// `fire_time` and `fire_date` of a run at `at`, in zone `tz`.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// let at = Utc.with_ymd_and_hms(2026, 12, 3, 15, 30, 0).unwrap();
/// let [time, date] = sluice_schedule::fire_params(at, chrono_tz::Asia::Seoul);
/// assert_eq!(time, ("fire_time", "2026-12-04T00:30:00+09:00".to_owned()));
/// assert_eq!(date, ("fire_date", "2026-12-04".to_owned()));
/// ```
pub fn fire_params(at: DateTime<Utc>, tz: Tz) -> [(&'static str, String); 2] {
    let local = at.with_timezone(&tz);
    [
        (FIRE_TIME, local.to_rfc3339_opts(SecondsFormat::Secs, false)),
        (FIRE_DATE, local.format("%Y-%m-%d").to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn utc_keeps_its_offset_and_drops_subseconds() {
        let at = Utc.timestamp_millis_opt(1_796_159_325_401).unwrap();
        let [(_, time), (_, date)] = fire_params(at, Tz::UTC);
        assert_eq!(time, "2026-12-01T21:08:45+00:00");
        assert_eq!(date, "2026-12-01");
    }
}
