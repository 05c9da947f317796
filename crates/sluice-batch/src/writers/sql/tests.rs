//! Unit tests of the SQL writer's planning, encoding and statement sizing.

use super::copy::{copy_escape, copy_text_row, needs_copy_escape};
use super::*;

fn plan(cols: &[(&str, &str)], key: Vec<usize>) -> Plan {
    Plan {
        cols: cols
            .iter()
            .map(|(n, t)| PlanCol {
                name: n.to_string(),
                quoted: format!("\"{n}\""),
                cast: t.to_string(),
                json: t.starts_with("json"),
                int_affinity: false,
            })
            .collect(),
        upsert_key: key,
        inserts: HashMap::new(),
        unnest: Mutex::new(HashMap::new()),
    }
}

fn maps(items: &[Value]) -> Vec<&Map<String, Value>> {
    items.iter().map(|i| i.as_object().unwrap()).collect()
}

/// Every row of `src` in `COPY`'s text format.
fn copy_text(p: &Plan, src: Src<'_>) -> String {
    let cells = Cells::new(p, src);
    let mut buf = Vec::new();
    for r in 0..cells.rows() {
        copy_text_row(&mut buf, p, cells.row(r));
    }
    String::from_utf8(buf).unwrap()
}

#[test]
fn copy_escaping() {
    let p = plan(
        &[
            ("a", "text"),
            ("b", "text"),
            ("c", "text"),
            ("d", "jsonb"),
            ("e", "bigint"),
        ],
        vec![],
    );
    let items = [serde_json::json!({
        "a": "a\tb\nc\\d\re \"q\" 측정", "b": null, "c": "\\N", "d": {"k": "x\ty"}, "e": 7
    })];
    let rows = maps(&items);
    assert_eq!(
        copy_text(&p, Src::Items(&rows)),
        "a\\tb\\nc\\\\d\\re \"q\" 측정\t\\N\t\\\\N\t{\"k\":\"x\\\\ty\"}\t7\n"
    );
}

#[test]
fn dedupe_keeps_last() {
    let p = plan(&[("k", "bigint"), ("v", "text")], vec![0]);
    let notes = |cells: &Cells<'_>| -> Vec<String> {
        (0..cells.rows())
            .map(|r| cells.row(r)[1].unwrap().as_str().unwrap().to_owned())
            .collect()
    };
    // Integer keys (the fast path).
    let items = [
        serde_json::json!({"k": 1, "v": "a"}),
        serde_json::json!({"k": 2, "v": "b"}),
        serde_json::json!({"k": 1, "v": "c"}),
    ];
    let rows = maps(&items);
    let cells = Cells::new(&p, Src::Items(&rows)).dedupe_last(&p);
    assert_eq!(notes(&cells), ["c", "b"]);
    // Mixed: `1` and `"1"` are the same key; NULL keys are each their own.
    let items = [
        serde_json::json!({"k": 1, "v": "a"}),
        serde_json::json!({"k": 2, "v": "b"}),
        serde_json::json!({"k": "1", "v": "c"}),
        serde_json::json!({"v": "no key"}),
        serde_json::json!({"k": null, "v": "null key"}),
    ];
    let rows = maps(&items);
    let cells = Cells::new(&p, Src::Items(&rows)).dedupe_last(&p);
    assert_eq!(notes(&cells), ["c", "b", "no key", "null key"]);
    // No duplicates: unchanged.
    let rows = maps(&items[..2]);
    let cells = Cells::new(&p, Src::Items(&rows)).dedupe_last(&p);
    assert_eq!(notes(&cells), ["a", "b"]);
    // Text keys from rows: integers in canonical form (increasing, or not),
    // and other text.
    let keys: Arc<[String]> = vec!["k".to_owned(), "v".to_owned()].into();
    let mut rows = Rows::new(keys);
    for (k, v) in [("1", "a"), ("2", "b"), ("3", "c")] {
        rows.push_row([Some(k), Some(v)]);
    }
    let cells = Cells::new(&p, Src::Rows(&rows)).dedupe_last(&p);
    assert_eq!(notes(&cells), ["a", "b", "c"]);
    rows.push_row([Some("2"), Some("d")]);
    let cells = Cells::new(&p, Src::Rows(&rows)).dedupe_last(&p);
    assert_eq!(notes(&cells), ["a", "d", "c"]);
    rows.push_row([Some("02"), Some("e")]);
    rows.push_row([None, Some("f")]);
    rows.push_row([Some("x"), Some("g")]);
    rows.push_row([Some("x"), Some("h")]);
    let cells = Cells::new(&p, Src::Rows(&rows)).dedupe_last(&p);
    assert_eq!(notes(&cells), ["a", "d", "c", "e", "f", "h"]);
}

#[test]
fn array_types_follow_the_values() {
    let p = plan(
        &[
            ("i", "bigint"),
            ("f", "double precision"),
            ("b", "boolean"),
            ("t", "text"),
        ],
        vec![],
    );
    let sig = |items: &[Value]| -> Vec<ArrayType> {
        let rows = maps(items);
        let cells = Cells::new(&p, Src::Items(&rows));
        (0..p.cols.len())
            .map(|c| ArrayType::of(&p.cols[c], cells.column(c)))
            .collect()
    };
    let a = serde_json::json!({"i": 1, "f": 2, "b": true, "t": "x"});
    let b = serde_json::json!({"i": null, "f": 2.5});
    let c = serde_json::json!({"i": "3", "f": "2.5", "b": "yes"});
    use ArrayType::*;
    assert_eq!(sig(&[a.clone(), b]), [Int8, Float8, Bool, Text]);
    assert_eq!(sig(&[a, c]), [Text, Text, Text, Text]);
}

#[test]
fn canonical_integers() {
    for (s, v) in [("0", Some(0)), ("7", Some(7)), ("-12", Some(-12))] {
        assert_eq!(canonical_int(s), v, "{s}");
    }
    assert_eq!(canonical_int("-9223372036854775808"), Some(i64::MIN));
    for s in [
        "",
        "-",
        "-0",
        "01",
        "+1",
        " 1",
        "1 ",
        "1.0",
        "1e3",
        "x",
        "9223372036854775808",
        "99999999999999999999",
    ] {
        assert_eq!(canonical_int(s), None, "{s:?}");
    }
}

#[test]
fn copy_escape_check() {
    assert!(!needs_copy_escape(b""));
    assert!(!needs_copy_escape(
        "plain text, 측정소 and more than eight".as_bytes()
    ));
    for i in 0..20 {
        for bad in [b'\t', b'\n', b'\r', b'\\'] {
            let mut v = vec![b'a'; i + 1];
            v[i] = bad;
            assert!(needs_copy_escape(&v), "{v:?}");
        }
    }
    let mut buf = Vec::new();
    copy_escape(&mut buf, "0123456789abcdef\\x");
    assert_eq!(buf, b"0123456789abcdef\\\\x");
}

#[test]
fn rows_as_cells() {
    let p = plan(
        &[("b", "text"), ("missing", "text"), ("a", "bigint")],
        vec![],
    );
    let keys: Arc<[String]> = vec!["a".to_owned(), "b".to_owned()].into();
    let mut rows = Rows::new(keys);
    rows.push_row([Some("1"), Some("x\ty")]);
    rows.push_row([None, Some("")]);
    assert_eq!(
        copy_text(&p, Src::Rows(&rows)),
        "x\\ty\t\\N\t1\n\t\\N\t\\N\n"
    );
}

#[test]
fn statements_fit_the_limits() {
    let opts = SqlWriterOptions::new("t")
        .key(["id"])
        .columns(vec![Column::new("id", "BIGINT"), Column::new("v", "TEXT")]);
    let mut w = SqlWriter::new("sqlite::memory:", opts.clone().max_params(10)).unwrap();
    w.plan = Some(plan(&[("id", "BIGINT"), ("v", "TEXT")], vec![0]));
    let item = serde_json::json!({"id": 1, "v": "x"});
    let map = item.as_object().unwrap();
    let rows = vec![map; 12];
    let p2 = plan(&[("id", "BIGINT"), ("v", "TEXT")], vec![0]);
    let cells = Cells::new(&p2, Src::Items(&rows));
    assert_eq!(w.batches(&cells), vec![0..5, 5..10, 10..12]);
    assert_eq!(
        &*w.insert_sql(2),
        "INSERT INTO \"t\" (\"id\", \"v\") VALUES (?,?),(?,?) ON CONFLICT (\"id\") DO UPDATE SET \"v\" = excluded.\"v\""
    );
    let mut p = SqlWriter::new("postgres://u@h/db", opts).unwrap();
    p.plan = Some(plan(&[("id", "BIGINT"), ("v", "TEXT")], vec![0]));
    assert_eq!(
        &*p.insert_sql(1),
        "INSERT INTO \"t\" (\"id\", \"v\") VALUES ($1::BIGINT,$2::TEXT) ON CONFLICT (\"id\") DO UPDATE SET \"v\" = excluded.\"v\""
    );
}
