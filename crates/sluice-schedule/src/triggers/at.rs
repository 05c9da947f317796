//! `kind = "at"`: once, at an RFC 3339 instant.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{TriggerError, TriggerField, TriggerSpec};

/// `kind = "at"`: once, at an instant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAt {
    /// Once, at this RFC 3339 instant.
    pub at: String,
}

impl RawAt {
    /// The spec: the instant parsed.
    ///
    /// # Errors
    ///
    /// A bad instant ([`TriggerField::At`]).
    pub fn into_spec(&self) -> Result<TriggerSpec, TriggerError> {
        TriggerSpec::at(&self.at)
    }
}

impl TriggerSpec {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triggers::test_util::*;
    use chrono::TimeDelta;
    use chrono_tz::Tz;

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
}
