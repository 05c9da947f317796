//! Tests of the built-in file readers: parsing, bad rows, and exact checkpoints.

use std::path::{Path, PathBuf};

use futures_util::FutureExt;
use serde_json::{Value, json};
use sluice_batch::readers::{CsvReader, JsonArrayReader, JsonLinesReader};
use sluice_batch::{ReadError, Reader};

/// What one `read` gave: an item or a bad row, with its position.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Item(u64, Value),
    Bad(u64, String),
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A scratch directory holding one file `name` with `bytes`, and the file's path.
fn scratch(name: &str, bytes: impl AsRef<[u8]>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, name, bytes);
    (dir, path)
}

/// `assert_resumes` over a scratch file `name` holding `bytes`, read by
/// `open(path)`.
async fn resumes_over<R: Reader>(
    name: &str,
    bytes: impl AsRef<[u8]>,
    open: impl Fn(&Path) -> R,
) -> Vec<Out> {
    let (_dir, path) = scratch(name, bytes);
    assert_resumes(|| open(&path), None).await
}

/// Reads up to `limit` outcomes (all when `None`); panics on a fatal or transient
/// error.
async fn collect(reader: &mut impl Reader, limit: Option<usize>) -> Vec<Out> {
    let mut out = Vec::new();
    while limit.is_none_or(|l| out.len() < l) {
        match reader.read().await {
            Ok(Some(r)) => out.push(Out::Item(r.position, r.item)),
            Ok(None) => break,
            Err(ReadError::Bad {
                position, reason, ..
            }) => out.push(Out::Bad(position, reason)),
            Err(e) => panic!("reader failed: {e}"),
        }
    }
    out
}

async fn read_all(mut reader: impl Reader) -> Vec<Out> {
    reader.open(None).await.unwrap();
    let out = collect(&mut reader, None).await;
    assert_eq!(reader.read().await.unwrap(), None, "stays at the end");
    out
}

/// A JSON array of `n` objects `{"<key>":0}`, `{"<key>":1}`, …, joined by `sep`.
fn json_array(n: usize, key: &str, sep: &str) -> String {
    let items: Vec<String> = (0..n).map(|i| format!("{{\"{key}\":{i}}}")).collect();
    format!("[{}]", items.join(sep))
}

fn items(outs: &[Out]) -> Vec<Value> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Item(_, v) => Some(v.clone()),
            Out::Bad(..) => None,
        })
        .collect()
}

/// For each `k`: read `k` outcomes, take the checkpoint (through its JSON text,
/// as stored), open a new reader at it and read the rest; the two parts must
/// make the full read. Also checks that a checkpoint taken at the end resumes to
/// nothing, and that resuming twice in a row works.
async fn assert_resumes<R: Reader>(make: impl Fn() -> R, ks: Option<Vec<usize>>) -> Vec<Out> {
    let full = read_all(make()).await;
    let n = full.len();
    let ks = ks.unwrap_or_else(|| (0..=n).collect());
    for k in ks {
        let k = k.min(n);
        let mut a = make();
        a.open(None).await.unwrap();
        let mut got = collect(&mut a, Some(k)).await;
        assert_eq!(got.len(), k);
        let cp: Value = serde_json::from_str(&a.checkpoint().to_string()).unwrap();

        let mut b = make();
        b.open(Some(&cp)).await.unwrap();
        assert_eq!(
            b.checkpoint(),
            cp,
            "a reopened reader stands at its checkpoint"
        );
        // Resume once more half-way through the rest.
        let half = (n - k) / 2;
        got.extend(collect(&mut b, Some(half)).await);
        let cp2 = b.checkpoint();
        let mut c = make();
        c.open(Some(&cp2)).await.unwrap();
        got.extend(collect(&mut c, None).await);
        assert_eq!(got, full, "resuming after {k} items at {cp} then at {cp2}");
    }
    full
}

// ---------------------------------------------------------------- CSV

#[tokio::test]
async fn csv_header_mapping_and_custom_delimiter() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "a.csv", "id;name;city\n1;Kim;Seoul\n2;;Busan\n");

    let out = read_all(CsvReader::new(&path).delimiter(b';')).await;
    assert_eq!(
        out,
        vec![
            Out::Item(1, json!({"id": "1", "name": "Kim", "city": "Seoul"})),
            Out::Item(2, json!({"id": "2", "name": null, "city": "Busan"})),
        ]
    );

    // Renaming single columns.
    let out = read_all(
        CsvReader::new(&path)
            .delimiter(b';')
            .rename("name", "이름")
            .rename("city", "도시"),
    )
    .await;
    assert_eq!(
        out[0],
        Out::Item(1, json!({"id": "1", "이름": "Kim", "도시": "Seoul"}))
    );

    // Keys by position replace the header; empty fields kept as "".
    let out = read_all(
        CsvReader::new(&path)
            .delimiter(b';')
            .columns(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
            .empty_as_null(false),
    )
    .await;
    assert_eq!(
        out[1],
        Out::Item(2, json!({"a": "2", "b": "", "c": "Busan"}))
    );

    // No header: c1..cN, and the header line is data.
    let out = read_all(CsvReader::new(&path).delimiter(b';').has_header(false)).await;
    assert_eq!(out.len(), 3);
    assert_eq!(
        out[0],
        Out::Item(1, json!({"c1": "id", "c2": "name", "c3": "city"}))
    );

    // Tab-delimited, trimmed.
    let tsv = write(&dir, "a.tsv", " x \t y\n 1\t2 \n");
    let out = read_all(CsvReader::new(&tsv).delimiter(b'\t').trim(true)).await;
    assert_eq!(out, vec![Out::Item(1, json!({"x": "1", "y": "2"}))]);
}

#[tokio::test]
async fn csv_configuration_errors_are_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "a.csv", "a,b,a\n1,2,3\n");
    let mut r = CsvReader::new(&path);
    assert!(matches!(r.open(None).await, Err(ReadError::Fatal(m)) if m.contains("duplicate")));
    // Renaming fixes it.
    let out = read_all(CsvReader::new(&path).columns(["a", "b", "a2"])).await;
    assert_eq!(
        out,
        vec![Out::Item(1, json!({"a": "1", "b": "2", "a2": "3"}))]
    );

    let mut r = CsvReader::new(&path).rename("nope", "x");
    assert!(matches!(r.open(None).await, Err(ReadError::Fatal(m)) if m.contains("nope")));
    let mut r = CsvReader::new(&path).columns(["x", "y"]);
    assert!(matches!(r.open(None).await, Err(ReadError::Fatal(_))));
    let mut r = CsvReader::new(dir.path().join("missing.csv"));
    assert!(matches!(r.open(None).await, Err(ReadError::Fatal(_))));
    let mut r = CsvReader::new(&path);
    assert!(
        matches!(r.read().await, Err(ReadError::Fatal(_))),
        "read before open"
    );

    let utf16 = write(&dir, "u16.csv", b"\xFF\xFEa\x00,\x00b\x00");
    let mut r = CsvReader::new(&utf16);
    assert!(matches!(r.open(None).await, Err(ReadError::Fatal(m)) if m.contains("UTF-16")));
}

#[tokio::test]
async fn csv_euc_kr_reads_back_as_utf8() {
    let dir = tempfile::tempdir().unwrap();
    // "똠" is only in CP949 (UHC), whose trail bytes can be ASCII letters.
    let text =
        "시도,측정소명,비고\r\n서울,종로구,\"쉼표, 그리고 줄\n바꿈\"\r\n부산,광복동,똠방각하\r\n";
    let (bytes, _, unmappable) = encoding_rs::EUC_KR.encode(text);
    assert!(!unmappable);
    assert_ne!(&bytes[..], text.as_bytes());
    let path = write(&dir, "kr.csv", &bytes);

    let make = || CsvReader::new(&path).encoding(encoding_rs::EUC_KR);
    let out = assert_resumes(make, None).await;
    assert_eq!(
        out,
        vec![
            Out::Item(
                1,
                json!({"시도": "서울", "측정소명": "종로구", "비고": "쉼표, 그리고 줄\n바꿈"})
            ),
            Out::Item(
                2,
                json!({"시도": "부산", "측정소명": "광복동", "비고": "똠방각하"})
            ),
        ]
    );

    // Read as UTF-8, the same bytes are bad rows (and the header is refused).
    let mut r = CsvReader::new(&path);
    assert!(matches!(r.open(None).await, Err(ReadError::Fatal(_))));
    let out = read_all(
        CsvReader::new(&path)
            .has_header(false)
            .columns(["a", "b", "c"]),
    )
    .await;
    assert!(out.iter().all(|o| matches!(o, Out::Bad(..))), "{out:?}");

    // A byte invalid in EUC-KR is a bad row; reading goes on.
    let mut bytes = encoding_rs::EUC_KR.encode("이름,값\n가,1\n").0.into_owned();
    bytes.extend_from_slice(b"\xFF\xFF,2\n");
    bytes.extend_from_slice(&encoding_rs::EUC_KR.encode("다,3\n").0);
    let path = write(&dir, "bad-kr.csv", &bytes);
    let out = read_all(CsvReader::new(&path).encoding(encoding_rs::EUC_KR)).await;
    assert_eq!(out.len(), 3);
    assert_eq!(out[0], Out::Item(1, json!({"이름": "가", "값": "1"})));
    assert!(
        matches!(&out[1], Out::Bad(2, reason) if reason.contains("EUC-KR")),
        "{out:?}"
    );
    assert_eq!(out[2], Out::Item(3, json!({"이름": "다", "값": "3"})));
}

#[tokio::test]
async fn csv_bom_overrides_the_encoding() {
    let (_dir, path) = scratch("bom.csv", "\u{feff}이름,값\n가,1\n");
    let out = read_all(CsvReader::new(&path).encoding(encoding_rs::EUC_KR)).await;
    assert_eq!(out, vec![Out::Item(1, json!({"이름": "가", "값": "1"}))]);
}

#[tokio::test]
async fn csv_bad_row_is_reported_and_reading_goes_on() {
    let (_dir, path) = scratch("bad.csv", "a,b\n1,2\n3\n\n4,5,6\n7,8\n");
    let mut r = CsvReader::new(&path);
    r.open(None).await.unwrap();
    assert_eq!(r.read().await.unwrap().unwrap().position, 1);
    match r.read().await {
        Err(ReadError::Bad {
            position,
            reason,
            raw,
        }) => {
            assert_eq!(position, 2);
            assert!(reason.contains("expected 2 fields, found 1"), "{reason}");
            assert_eq!(raw.as_deref(), Some("3"));
        }
        other => panic!("expected a bad row, got {other:?}"),
    }
    match r.read().await {
        Err(ReadError::Bad { position, raw, .. }) => {
            assert_eq!(position, 3, "blank lines are not rows");
            assert_eq!(raw.as_deref(), Some("4,5,6"));
        }
        other => panic!("expected a bad row, got {other:?}"),
    }
    let last = r.read().await.unwrap().unwrap();
    assert_eq!((last.position, last.item), (4, json!({"a": "7", "b": "8"})));
    assert_eq!(r.read().await.unwrap(), None);
    assert_eq!(r.checkpoint()["row"], 4);
}

#[tokio::test]
async fn csv_quoted_fields_with_newlines_and_delimiters() {
    let out = resumes_over(
        "q.csv",
        "name,note\n\"Kim, Y\",\"line 1\nline 2\"\n\"say \"\"hi\"\"\",\"a,\r\nb\"\nplain,\"\"\n",
        |p| CsvReader::new(p),
    )
    .await;
    assert_eq!(
        items(&out),
        vec![
            json!({"name": "Kim, Y", "note": "line 1\nline 2"}),
            json!({"name": "say \"hi\"", "note": "a,\r\nb"}),
            json!({"name": "plain", "note": null}),
        ]
    );
}

#[tokio::test]
async fn csv_checkpoints_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::from("id,name,note\n");
    for i in 1..=20 {
        if i == 7 {
            body.push_str("bad row\n");
        } else if i == 11 {
            body.push_str(&format!("{i},\"multi\nline {i}\",\"x,y\"\n\n"));
        } else {
            body.push_str(&format!("{i},name {i},\n"));
        }
    }
    let lf = write(&dir, "lf.csv", &body);
    let crlf_bom = write(
        &dir,
        "crlf.csv",
        format!("\u{feff}{}", body.replace('\n', "\r\n")),
    );
    let no_final_newline = write(&dir, "nofinal.csv", body.trim_end());
    let no_header = write(&dir, "nohead.csv", body.replace("bad row\n", ""));

    let full_lf = assert_resumes(|| CsvReader::new(&lf), None).await;
    assert_eq!(full_lf.len(), 20);
    assert!(matches!(full_lf[6], Out::Bad(7, _)));
    let full_crlf = assert_resumes(|| CsvReader::new(&crlf_bom), None).await;
    assert_eq!(full_crlf.len(), 20);
    assert_eq!(
        items(&full_crlf)[0],
        json!({"id": "1", "name": "name 1", "note": null})
    );
    // CRLF inside the quoted field stays CRLF; everything else is equal.
    assert_eq!(
        items(&full_crlf)[9]["name"],
        json!("multi\r\nline 11"),
        "{full_crlf:?}"
    );
    assert_eq!(
        assert_resumes(|| CsvReader::new(&no_final_newline), None).await,
        full_lf
    );
    let nh = assert_resumes(|| CsvReader::new(&no_header).has_header(false), None).await;
    assert_eq!(nh.len(), 20);

    // The checkpoint holds the raw byte offset and the row.
    let mut r = CsvReader::new(&lf);
    assert_eq!(r.checkpoint(), json!({"offset": 0, "row": 0}));
    r.open(None).await.unwrap();
    assert_eq!(r.checkpoint(), json!({"offset": 13, "row": 0}));
    r.read().await.unwrap();
    assert_eq!(r.checkpoint(), json!({"offset": 13 + 10, "row": 1}));
    // The initial checkpoint (before open) resumes from the start.
    let mut r = CsvReader::new(&lf);
    r.open(Some(&json!({"offset": 0, "row": 0}))).await.unwrap();
    assert_eq!(collect(&mut r, None).await, full_lf);
    let mut r = CsvReader::new(&lf);
    r.open(Some(&Value::Null)).await.unwrap();
    assert_eq!(collect(&mut r, None).await.len(), 20);
}

#[tokio::test]
async fn csv_checkpoint_that_does_not_fit_is_refused() {
    let (_dir, path) = scratch("a.csv", "a,b\n1,2\n3,4\n");
    let mut r = CsvReader::new(&path);
    for cp in [
        json!({"offset": 6, "row": 1}),
        json!({"offset": 100, "row": 1}),
        json!({"row": 1}),
        json!("x"),
    ] {
        assert!(
            matches!(r.open(Some(&cp)).await, Err(ReadError::Fatal(_))),
            "{cp}"
        );
    }
    r.open(Some(&json!({"offset": 8, "row": 1}))).await.unwrap();
    assert_eq!(
        collect(&mut r, None).await,
        vec![Out::Item(2, json!({"a": "3", "b": "4"}))]
    );
}

#[tokio::test]
async fn csv_resumes_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::from("n,sq\n");
    for i in 1..=3000u64 {
        body.push_str(&format!("{i},{}\r\n", i * i));
    }
    let path = write(&dir, "big.csv", &body);
    let out = assert_resumes(
        || CsvReader::new(&path),
        Some(vec![0, 1, 1023, 1024, 1025, 2047, 2048, 2049, 2999, 3000]),
    )
    .await;
    assert_eq!(out.len(), 3000);
    for (i, o) in out.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(
            *o,
            Out::Item(n, json!({"n": n.to_string(), "sq": (n * n).to_string()}))
        );
    }
}

#[tokio::test]
async fn a_dropped_read_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::from("n\n");
    for i in 1..=2500 {
        body.push_str(&format!("{i}\n"));
    }
    let path = write(&dir, "n.csv", &body);
    let mut r = CsvReader::new(&path);
    r.open(None).await.unwrap();
    let mut got = Vec::new();
    loop {
        // Poll once and drop the future, then read for real.
        if let Some(result) = r.read().now_or_never() {
            match result.unwrap() {
                Some(item) => got.push(item.position),
                None => break,
            }
        }
        match r.read().await.unwrap() {
            Some(item) => got.push(item.position),
            None => break,
        }
    }
    assert_eq!(got, (1..=2500).collect::<Vec<u64>>());
}

// ---------------------------------------------------------------- JSON Lines

#[tokio::test]
async fn jsonl_reads_values_skips_blanks_and_reports_bad_lines() {
    let (_dir, path) = scratch(
        "a.jsonl",
        "{\"a\":1}\n\n  \n[1,2]\r\n{not json}\n\"s\"\n  {\"b\": null}  ",
    );
    let out = assert_resumes(|| JsonLinesReader::new(&path), None).await;
    assert_eq!(out.len(), 5);
    assert_eq!(out[0], Out::Item(1, json!({"a": 1})));
    assert_eq!(out[1], Out::Item(4, json!([1, 2])));
    assert!(matches!(&out[2], Out::Bad(5, r) if r.contains("not JSON")));
    assert_eq!(out[3], Out::Item(6, json!("s")));
    assert_eq!(out[4], Out::Item(7, json!({"b": null})));

    let mut r = JsonLinesReader::new(&path);
    r.open(None).await.unwrap();
    r.read().await.unwrap();
    r.read().await.unwrap();
    assert_eq!(r.checkpoint(), json!({"offset": 19, "line": 4}));
    match r.read().await {
        Err(ReadError::Bad { raw, .. }) => assert_eq!(raw.as_deref(), Some("{not json}")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn jsonl_checkpoints_are_exact_with_bom_and_crlf() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::from("\u{feff}");
    for i in 0..50 {
        body.push_str(&format!("{{\"i\":{i},\"s\":\"줄 {i}\"}}\r\n"));
        if i % 7 == 0 {
            body.push_str("\r\n");
        }
        if i == 30 {
            body.push_str("oops\r\n");
        }
    }
    let path = write(&dir, "bom.jsonl", &body);
    let out = assert_resumes(|| JsonLinesReader::new(&path), None).await;
    assert_eq!(out.len(), 51);
    assert_eq!(items(&out)[0], json!({"i": 0, "s": "줄 0"}));
    assert_eq!(out[0], Out::Item(1, json!({"i": 0, "s": "줄 0"})));

    let big: String = (0..3000).map(|i| format!("{i}\n")).collect();
    let path = write(&dir, "big.jsonl", big);
    let out = assert_resumes(
        || JsonLinesReader::new(&path),
        Some(vec![0, 1023, 1024, 1025, 2048, 3000]),
    )
    .await;
    assert_eq!(out.len(), 3000);

    // Not at the start of a line.
    let mut r = JsonLinesReader::new(&path);
    assert!(matches!(
        r.open(Some(&json!({"offset": 1, "line": 1}))).await,
        Err(ReadError::Fatal(_))
    ));
}

// ---------------------------------------------------------------- JSON array

#[tokio::test]
async fn json_array_streams_items_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let text = "\u{feff}[\r\n  {\"a\": \"x]}\\\"[{\", \"b\": [1, {\"c\": []}]},\r\n  2 ,\"s,]\" ,\r\n  null,\r\n  {\"bad\" 1},\r\n  [[]],true\r\n]\r\n";
    let path = write(&dir, "a.json", text);
    let out = assert_resumes(|| JsonArrayReader::new(&path), None).await;
    assert_eq!(
        out[..4],
        [
            Out::Item(1, json!({"a": "x]}\"[{", "b": [1, {"c": []}]})),
            Out::Item(2, json!(2)),
            Out::Item(3, json!("s,]")),
            Out::Item(4, Value::Null),
        ]
    );
    assert!(matches!(&out[4], Out::Bad(5, r) if r.contains("not JSON")));
    assert_eq!(
        out[5..],
        [Out::Item(6, json!([[]])), Out::Item(7, json!(true))]
    );

    // An index-only checkpoint skips that many items.
    let mut r = JsonArrayReader::new(&path);
    r.open(Some(&json!({"index": 5}))).await.unwrap();
    assert_eq!(collect(&mut r, None).await, out[5..]);
    let mut r = JsonArrayReader::new(&path);
    assert!(matches!(
        r.open(Some(&json!({"index": 8}))).await,
        Err(ReadError::Fatal(_))
    ));

    // Empty arrays, and across batch boundaries.
    let empty = write(&dir, "empty.json", " [ ] ");
    assert_eq!(read_all(JsonArrayReader::new(&empty)).await, vec![]);
    let big = json_array(3000, "i", ",\n");
    let big = write(&dir, "big.json", big);
    let out = assert_resumes(
        || JsonArrayReader::new(&big),
        Some(vec![0, 1, 1023, 1024, 1025, 2048, 2999, 3000]),
    )
    .await;
    assert_eq!(out.len(), 3000);
    assert_eq!(out[2999], Out::Item(3000, json!({"i": 2999})));
}

#[tokio::test]
async fn json_array_structure_errors_are_fatal() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("unclosed.json", "[1, 2"),
        ("missing-comma.json", "[1, 2 3]"),
        ("mismatch.json", "[1, {\"a\": [}]"),
        ("trailing.json", "[1] x"),
    ] {
        let path = write(&dir, name, text);
        let mut r = JsonArrayReader::new(&path);
        r.open(None).await.unwrap();
        let mut n = 0;
        let err = loop {
            match r.read().await {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("{name}: no error"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, ReadError::Fatal(_)), "{name}: {err:?}");
        assert_eq!(n, 1, "{name}: the item before the error");
        assert!(
            matches!(r.read().await, Err(ReadError::Fatal(_))),
            "{name}: stays failed"
        );
    }
    let obj = write(&dir, "obj.json", "{\"a\": 1}");
    let mut r = JsonArrayReader::new(&obj);
    assert!(matches!(r.open(None).await, Err(ReadError::Fatal(m)) if m.contains("array")));
    let out = read_all(JsonArrayReader::new(&obj).object_as_single_item(true)).await;
    assert_eq!(out, vec![Out::Item(1, json!({"a": 1}))]);
}

#[tokio::test]
async fn json_array_at_a_nested_pointer() {
    let dir = tempfile::tempdir().unwrap();
    // Keys in document order: what precedes the array is skipped, brackets in
    // strings included.
    let text = r#"{
  "response": {
    "header": {"resultCode": "00", "resultMsg": "NORMAL SERVICE.", "noise": [1, {"items": "]"}], "s": "\"{["},
    "body": {
      "items": "decoy, not in body",
      "pageNo": 1
    },
    "body": {"wrong": "a later duplicate key is ignored"}
  },
  "tail": [1, 2, 3]
}"#;
    let path0 = write(&dir, "dup.json", text);
    let mut r = JsonArrayReader::new(&path0).pointer("/response/body/items");
    assert!(
        matches!(r.open(None).await, Err(ReadError::Fatal(m)) if m.contains("expected an array"))
    );

    let text = r#"{
  "response": {
    "header": {"resultCode": "00", "resultMsg": "NORMAL SERVICE.", "noise": [1, {"items": "]"}], "s": "\"{["},
    "body": {
      "pageNo": 1,
      "items": [
        {"stationName": "종로구", "pm10Value": "31"},
        {"stationName": "중구", "pm10Value": "-"},
        {"stationName": "용산구", "pm10Value": null}
      ],
      "totalCount": 3
    }
  },
  "tail": [1, 2, 3]
}"#;
    let doc: Value = serde_json::from_str(text).unwrap();
    let path = write(&dir, "api.json", text);
    let make = || JsonArrayReader::new(&path).pointer("/response/body/items");
    let out = assert_resumes(make, None).await;
    assert_eq!(
        items(&out),
        doc["response"]["body"]["items"].as_array().unwrap().clone()
    );

    // Array indexes and escaped keys in the pointer.
    let doc2 = json!({"a/b": [{"x": []}, {"x": [10, 20]}]});
    let path2 = write(&dir, "esc.json", doc2.to_string());
    let out = assert_resumes(|| JsonArrayReader::new(&path2).pointer("/a~1b/1/x"), None).await;
    assert_eq!(out, vec![Out::Item(1, json!(10)), Out::Item(2, json!(20))]);

    // A lone object where the array should be (data portals do this).
    let single = json!({"response": {"body": {"items": {"item": {"stationName": "종로구"}}}}});
    let path3 = write(&dir, "single.json", single.to_string());
    let make = || {
        JsonArrayReader::new(&path3)
            .pointer("/response/body/items/item")
            .object_as_single_item(true)
    };
    let out = assert_resumes(make, None).await;
    assert_eq!(out, vec![Out::Item(1, json!({"stationName": "종로구"}))]);

    for pointer in [
        "/response/body/nope",
        "/response/body/items/5",
        "response",
        "/tail/x",
    ] {
        let mut r = JsonArrayReader::new(&path).pointer(pointer);
        assert!(
            matches!(r.open(None).await, Err(ReadError::Fatal(_))),
            "{pointer}"
        );
    }
}

/// The readers work on the default (`current_thread`) test runtime above; this
/// checks a multi-thread one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_work_on_a_multi_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path: &Path = &write(&dir, "m.jsonl", "1\n2\n3\n");
    let out = read_all(JsonLinesReader::new(path)).await;
    assert_eq!(out.len(), 3);
}

#[tokio::test]
async fn oversize_and_deep_items_are_bad_items_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let huge = format!("\"{}\"", "x".repeat(17 << 20));
    let deep_arr = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000));
    let lines = format!("{{\"a\":1}}\n{huge}\n{deep_arr}\n{deep_obj}\n{{\"b\":2}}\n");
    let path = write(&dir, "h.jsonl", &lines);
    let out = assert_resumes(|| JsonLinesReader::new(&path), Some(vec![1, 2, 3])).await;
    assert_oversize_and_deep(&out, "longer than the 16 MiB limit");
    // A skip record keeps 4 KiB of the line, not all of it.
    let mut r = JsonLinesReader::new(&path);
    r.open(None).await.unwrap();
    r.read().await.unwrap();
    match r.read().await {
        Err(ReadError::Bad { raw: Some(raw), .. }) => assert!(raw.len() < 5000, "{}", raw.len()),
        other => panic!("{:?}", other.map(|_| ())),
    }

    let arr = format!("[{{\"a\":1}}, {huge}, {deep_arr}, {deep_obj}, {{\"b\":2}}]");
    let path = write(&dir, "h.json", &arr);
    let out = assert_resumes(|| JsonArrayReader::new(&path), Some(vec![1, 2, 3])).await;
    assert_oversize_and_deep(&out, "larger than the 16 MiB limit");
}

/// Item, oversize, deep array, deep object, item: the middle three are bad items.
fn assert_oversize_and_deep(out: &[Out], oversize: &str) {
    assert_eq!(out.len(), 5);
    assert_eq!(out[0], Out::Item(1, json!({"a": 1})));
    for (i, want) in [
        (1, oversize),
        (2, "recursion limit"),
        (3, "recursion limit"),
    ] {
        assert!(
            matches!(&out[i], Out::Bad(p, r) if *p == i as u64 + 1 && r.contains(want)),
            "{i}: {:?}",
            format!("{:?}", out[i])
                .chars()
                .take(200)
                .collect::<String>()
        );
    }
    assert_eq!(out[4], Out::Item(5, json!({"b": 2})));
}

/// Reads `r` to its end, recording its extent after open and after each item.
async fn extents(mut r: impl Reader) -> Vec<sluice_batch::Extent> {
    r.open(None).await.unwrap();
    let mut out = vec![r.extent().expect("a file reader knows its extent")];
    while r.read().await.unwrap().is_some() {
        out.push(r.extent().unwrap());
    }
    out
}

/// File readers report their progress in bytes of the file (or of their
/// share): from 0, never backwards, up to the share's length at the end; the
/// shares of a partitioned file add up to the file's data (issue #14 point 8).
#[tokio::test]
async fn file_readers_report_their_extent_in_bytes() {
    use sluice_batch::ExtentUnit;
    let mut csv = String::from("id,name\n");
    let mut jsonl = String::new();
    for i in 0..500 {
        csv.push_str(&format!("{i},name-{i}\n"));
        jsonl.push_str(&format!("{{\"id\":{i}}}\n"));
    }
    let json = json_array(500, "id", ",");
    let dir = tempfile::tempdir().unwrap();
    let (c, l, j) = (
        write(&dir, "a.csv", &csv),
        write(&dir, "a.jsonl", &jsonl),
        write(&dir, "a.json", &json),
    );
    // (extents, data bytes, bytes left after the last item: the JSON array's `]`)
    let runs = [
        (
            extents(CsvReader::new(&c)).await,
            csv.len() - "id,name\n".len(),
            0,
        ),
        (extents(JsonLinesReader::new(&l)).await, jsonl.len(), 0),
        (extents(JsonArrayReader::new(&j)).await, json.len(), 1),
    ];
    for (ext, len, tail) in runs {
        let (first, last) = (ext[0], ext[ext.len() - 1]);
        assert_eq!(first.unit, ExtentUnit::Bytes);
        assert!(first.done <= 1, "{first:?}");
        assert_eq!(last.total, len as u64, "{last:?}");
        assert_eq!(last.done + tail, last.total, "not at the end: {last:?}");
        assert!(ext.windows(2).all(|w| w[0].done <= w[1].done), "went back");
        assert!(ext.len() > 500, "one extent per item and one after open");
    }
    // Shares: each from 0 to its own length; together the whole data.
    let mut sum = 0;
    for i in 0..3 {
        let ext = extents(CsvReader::new(&c).partition(i, 3)).await;
        let last = ext[ext.len() - 1];
        assert_eq!(ext[0].done, 0);
        assert_eq!(last.done, last.total);
        sum += last.total;
    }
    assert_eq!(sum, (csv.len() - "id,name\n".len()) as u64);
}
