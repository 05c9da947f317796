//! Config mistakes are refused with what is wrong; the table's SQL.

use serde_json::{Value, json};

use super::*;
use crate::api::Chunk;
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

#[tokio::test]
async fn items_without_a_time_are_left_out_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let mut w = LogStatsWriter::new(
        &url,
        LogStatsSpec {
            table: "s".into(),
            window: Duration::from_secs(60),
            group_by: vec![],
            value: Some("request_time".into()),
            error_when: Rule::server_errors(),
            count_when: vec![],
            top: Some(("path".into(), 2, 10)),
            time_field: "time_ms".into(),
        },
    )
    .unwrap();
    w.open(None).await.unwrap();
    let items = [
        json!({"time_ms": 120_000, "status": 503, "request_time": 0.5, "path": "/a"}),
        json!({"status": 200}),
        json!({"time_ms": "1970-01-01T00:02:30Z", "status": 200, "request_time": "1.5", "path": "/a"}),
    ];
    w.write(Chunk::Items(&items), &[]).await.unwrap();
    w.write(Chunk::Items(&items[..1]), &[]).await.unwrap();
    w.complete().await.unwrap();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let row: (i64, String, i64, i64, f64, f64, String) = sqlx::query_as(
        "SELECT window_start, window_time, requests, errors, value_max, p50, top FROM s",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (row.0, row.1.as_str(), row.2, row.3, row.4),
        (120_000, "1970-01-01T00:02:00Z", 3, 2, 1.5)
    );
    assert!((row.5 - 0.5).abs() <= 0.005, "{}", row.5);
    assert_eq!(row.6, r#"[["/a",3]]"#);
}
