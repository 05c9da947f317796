//! Config mistakes are refused with what is wrong; the table's SQL.

use serde_json::{Value, json};

use super::*;
use crate::config::{ConfigError, Kind, NoContext};
use crate::readers::RawReader;
use crate::writers::RawWriter;

fn writer(extra: Value) -> Result<Box<dyn Writer>, ConfigError> {
    let mut v = json!({"kind": "log_stats", "url": "sqlite://x.db", "table": "s", "window": "1m"});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let raw: RawWriter = serde_json::from_value(v).map_err(|e| ConfigError::Log(e.to_string()))?;
    raw.build(&NoContext)
}

fn err(extra: Value) -> String {
    match writer(extra.clone()) {
        Ok(_) => panic!("accepted: {extra}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_good_config_builds() {
    writer(
        json!({"window": "5m", "group_by": ["route"], "value": "latency_ms",
        "count_when": {"hit": "cache == \"hit\""}, "top": {"field": "path", "n": 5}}),
    )
    .unwrap();
}

#[test]
fn mistakes_say_what_is_wrong() {
    for (extra, says) in [
        (json!({"window": "soon"}), "invalid duration"),
        (json!({"window": "100ms"}), "at least 1s"),
        (json!({"error_when": "status >>> 5"}), "error_when"),
        (json!({"group_by": ["requests"]}), "requests"),
        (json!({"group_by": ["a b"]}), "letters, digits"),
        (json!({"count_when": {"x": "a =="}}), "count_when.x"),
        (json!({"url": "redis://x"}), "unsupported database URL"),
        (json!({"windows": "1m"}), "unknown field"),
    ] {
        let e = err(extra.clone());
        assert!(e.contains(says), "{extra}: {e}");
    }
}

#[test]
fn the_log_reader_takes_format_or_pattern() {
    let build = |v: Value| {
        let raw: RawReader = serde_json::from_value(v).unwrap();
        raw.build(&NoContext).map(drop)
    };
    build(json!({"kind": "log", "path": "a.log"})).unwrap();
    build(json!({"kind": "log", "path": "a.log", "format": "sluice", "rotated": "/old/a-*.log"}))
        .unwrap();
    let e = build(json!({"kind": "log", "path": "a.log", "format": "json", "pattern": "(?P<a>x)"}))
        .unwrap_err();
    assert!(e.to_string().contains("format or pattern"), "{e}");
    let e = build(json!({"kind": "log", "path": "a.log", "format": "apache"})).unwrap_err();
    assert!(e.to_string().contains("unknown log format"), "{e}");
}

#[test]
fn the_table_has_the_group_and_rule_columns() {
    let w = LogStatsWriter::new(
        "mysql://root@127.0.0.1/x",
        LogStatsSpec {
            table: "logs.stats".into(),
            window: Duration::from_secs(60),
            group_by: vec!["route".into()],
            value: None,
            error_when: Rule::server_errors(),
            count_when: vec![("hit".into(), Rule::parse("cache == \"hit\"").unwrap())],
            top: None,
            time_field: "time_ms".into(),
        },
    )
    .unwrap();
    let sql = w.create_sql();
    assert!(
        sql.starts_with("CREATE TABLE IF NOT EXISTS `logs`.`stats`"),
        "{sql}"
    );
    for col in [
        "`route` VARCHAR(255)",
        "`hit_count` BIGINT",
        "`hit_ratio` DOUBLE",
        "`state` MEDIUMTEXT",
    ] {
        assert!(sql.contains(col), "{col}: {sql}");
    }
    assert_eq!(group_key(&[Some("air".into()), None]), "[\"air\",null]");
    assert!(group_key(&[Some("x".repeat(400))]).chars().count() <= KEY_CHARS);
}
