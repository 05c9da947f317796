//! Which backups are kept: restic's `forget` rules. Backups are taken newest
//! first; `keep_last = N` keeps the N newest; `keep_daily = N` keeps the newest
//! backup of each of the N most recent days that have one (UTC), `keep_weekly`
//! of ISO weeks, `keep_monthly` of months. A backup is kept when any rule keeps
//! it; with no rule at all, every backup is kept.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Utc};

/// The calendar bucket (day, ISO week or month) a time falls in.
type Bucket = fn(&DateTime<Utc>) -> (i32, u32);

/// The retention rules of a backup step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep the newest N.
    pub keep_last: Option<u32>,
    /// Keep the newest of each of the last N days.
    pub keep_daily: Option<u32>,
    /// Keep the newest of each of the last N ISO weeks.
    pub keep_weekly: Option<u32>,
    /// Keep the newest of each of the last N months.
    pub keep_monthly: Option<u32>,
}

impl Retention {
    /// Whether any rule is set (else nothing is ever deleted).
    pub fn is_set(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
    }

    /// The ids of `backups` (id, time; in any order) that the rules keep.
    pub fn kept(&self, backups: &[(String, DateTime<Utc>)]) -> BTreeSet<String> {
        let mut sorted: Vec<&(String, DateTime<Utc>)> = backups.iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        if !self.is_set() {
            return sorted.iter().map(|b| b.0.clone()).collect();
        }
        let mut kept = BTreeSet::new();
        if let Some(n) = self.keep_last {
            kept.extend(sorted.iter().take(n as usize).map(|b| b.0.clone()));
        }
        let day: Bucket = |t| (t.year(), t.ordinal());
        let week: Bucket = |t| {
            let w = t.iso_week();
            (w.year(), w.week())
        };
        let month: Bucket = |t| (t.year(), t.month());
        let rules = [
            (self.keep_daily, day),
            (self.keep_weekly, week),
            (self.keep_monthly, month),
        ];
        for (n, bucket) in rules {
            let Some(n) = n else { continue };
            let mut last = None;
            let mut count = 0;
            for b in &sorted {
                if count >= n {
                    break;
                }
                let k = bucket(&b.1);
                if last != Some(k) {
                    last = Some(k);
                    count += 1;
                    kept.insert(b.0.clone());
                }
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ids(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn any_rule_keeps_a_backup() {
        // Two backups a day, 1st to 20th of November 2026, at 01:00 and 13:00.
        let mut all = Vec::new();
        for d in 1..=20 {
            for h in [1, 13] {
                all.push((
                    format!("d{d:02}h{h:02}"),
                    at(&format!("2026-11-{d:02}T{h:02}:00:00Z")),
                ));
            }
        }
        let r = Retention {
            keep_last: Some(3),
            ..Retention::default()
        };
        assert_eq!(r.kept(&all), ids(&["d20h13", "d20h01", "d19h13"]));
        let r = Retention {
            keep_daily: Some(3),
            ..Retention::default()
        };
        assert_eq!(r.kept(&all), ids(&["d20h13", "d19h13", "d18h13"]));
        // ISO weeks: Mon 16 – Fri 20, Mon 9 – Sun 15, Mon 2 – Sun 8.
        let r = Retention {
            keep_weekly: Some(3),
            ..Retention::default()
        };
        assert_eq!(r.kept(&all), ids(&["d20h13", "d15h13", "d08h13"]));
        let r = Retention {
            keep_last: Some(1),
            keep_daily: Some(2),
            keep_monthly: Some(5),
            ..Retention::default()
        };
        // Only one month has backups: its newest is kept once.
        assert_eq!(r.kept(&all), ids(&["d20h13", "d19h13"]));
        assert_eq!(Retention::default().kept(&all).len(), 40);
        let r = Retention {
            keep_last: Some(0),
            ..Retention::default()
        };
        assert!(r.kept(&all).is_empty());
    }
}
