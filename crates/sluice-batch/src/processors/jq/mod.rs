//! The jq processor.

use sluice_upstream::{Jq, JqError};

use crate::api::{ProcessError, Processor};
use crate::model::Item;

mod config;

pub use config::RawJqProcessor;

/// A jq expression as a processor: its output replaces the item; `null` or no
/// output filters the item; an error makes it a skip candidate.
#[derive(Debug)]
pub struct JqProcessor {
    jq: Jq,
}

impl JqProcessor {
    /// Compiles `expr`.
    ///
    /// # Errors
    ///
    /// A [`JqError`]: `invalid jq expression: …`.
    pub fn new(expr: &str) -> Result<Self, JqError> {
        Ok(Self {
            jq: Jq::compile(expr)?,
        })
    }
}

impl Processor for JqProcessor {
    fn process(&self, item: &Item) -> Result<Option<Item>, ProcessError> {
        let mut out = self.jq.run_json(item)?;
        match out.len() {
            0 => Ok(None),
            1 => Ok(Some(out.remove(0)).filter(|v| !v.is_null())),
            n => Err(ProcessError::item(format!(
                "jq expression {:?} produced {n} outputs for one item; a processor returns one (collect them with [...])",
                self.jq.source()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_filters_and_fails() {
        let p = JqProcessor::new(
            "select(.keep) | {station: .stationName, pm10: (.pm10Value | tonumber? // null)}",
        )
        .unwrap();
        assert_eq!(
            p.process(&json!({"keep": true, "stationName": "중구", "pm10Value": "42"}))
                .unwrap(),
            Some(json!({"station": "중구", "pm10": 42}))
        );
        assert_eq!(
            p.process(&json!({"keep": true, "stationName": "x", "pm10Value": "-"}))
                .unwrap(),
            Some(json!({"station": "x", "pm10": null}))
        );
        assert_eq!(p.process(&json!({"keep": false})).unwrap(), None);
        let nulls = JqProcessor::new("null").unwrap();
        assert_eq!(nulls.process(&json!(1)).unwrap(), None);
        let failing = JqProcessor::new(".a + 1").unwrap();
        assert!(failing.process(&json!({"a": "text"})).is_err());
        let many = JqProcessor::new(".[]").unwrap();
        assert!(
            many.process(&json!([1, 2]))
                .unwrap_err()
                .to_string()
                .contains("2 outputs")
        );
        assert!(
            JqProcessor::new(".a |")
                .unwrap_err()
                .to_string()
                .contains("invalid jq")
        );
    }

    /// The bench's processor: an object of fields, run without jaq where it can,
    /// with the same outputs and errors.
    #[test]
    fn an_object_of_fields_converts_and_fails_as_jq_does() {
        let p = JqProcessor::new(
            "{id: (.id | tonumber), station, ts, pm10: (.pm10 | tonumber), pm25: (.pm25 | tonumber), note}",
        )
        .unwrap();
        assert_eq!(
            p.process(&json!({"id": "7", "station": "중구", "ts": "t", "pm10": "149", "pm25": "67.9", "note": null}))
                .unwrap(),
            Some(json!({"id": 7, "station": "중구", "ts": "t", "pm10": 149, "pm25": 67.9, "note": null}))
        );
        let e = p
            .process(&json!({"id": "x7", "pm10": "1", "pm25": "1"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x7"), "{e}");
        let e = p
            .process(&json!({"id": "1 2", "pm10": "1", "pm25": "1"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 outputs"), "{e}");
        assert!(p.process(&json!({"pm10": "1", "pm25": "1"})).is_err());
    }
}
