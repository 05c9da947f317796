//! Readers narrowed to partitions: the shares of a CSV, a JSON Lines file and an
//! SQL table together hold every item exactly once, and a partition resumes from
//! its checkpoint inside its own share.

use std::collections::BTreeSet;
use std::io::Write;

use sluice_batch::Reader;
use sluice_batch::readers::SqlReader;
use sluice_batch::readers::{CsvReader, JsonLinesReader};

async fn ids(r: &mut dyn Reader, cp: Option<&serde_json::Value>) -> Vec<i64> {
    r.open(cp).await.unwrap();
    let mut out = Vec::new();
    while let Some(item) = r.read().await.unwrap() {
        let id = &item.item["id"];
        out.push(
            id.as_i64()
                .unwrap_or_else(|| id.as_str().unwrap().parse().unwrap()),
        );
    }
    out
}

fn check_cover(parts: &[Vec<i64>], n: i64) {
    let all: Vec<i64> = parts.iter().flatten().copied().collect();
    let set: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), set.len(), "no item in two partitions");
    assert_eq!(set, (1..=n).collect(), "every item in a partition");
    assert!(
        parts.iter().all(|p| !p.is_empty()),
        "each share holds items"
    );
}

#[tokio::test]
async fn csv_and_jsonl_shares_cover_the_file_once_and_resume_inside_their_share() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("a.csv");
    let jsonl = dir.path().join("a.jsonl");
    let (mut c, mut j) = (
        std::fs::File::create(&csv).unwrap(),
        std::fs::File::create(&jsonl).unwrap(),
    );
    writeln!(c, "id,name").unwrap();
    for i in 1..=1000 {
        writeln!(c, "{i},\"name, {}\"", "x".repeat(i as usize % 17)).unwrap();
        writeln!(
            j,
            "{{\"id\": {i}, \"pad\": \"{}\"}}",
            "y".repeat(i as usize % 23)
        )
        .unwrap();
    }
    drop((c, j));
    for of in [1usize, 3, 7] {
        let mut parts = Vec::new();
        let mut jparts = Vec::new();
        for i in 0..of {
            parts.push(ids(&mut CsvReader::new(&csv).partition(i, of), None).await);
            jparts.push(ids(&mut JsonLinesReader::new(&jsonl).partition(i, of), None).await);
        }
        check_cover(&parts, 1000);
        check_cover(&jparts, 1000);
    }
    // Resume partition 1 of 3 after 10 items: the rest of its share, no more.
    let whole = ids(&mut CsvReader::new(&csv).partition(1, 3), None).await;
    let mut r = CsvReader::new(&csv).partition(1, 3);
    r.open(None).await.unwrap();
    for _ in 0..10 {
        r.read().await.unwrap().unwrap();
    }
    let cp = r.checkpoint();
    let rest = ids(&mut CsvReader::new(&csv).partition(1, 3), Some(&cp)).await;
    assert_eq!(rest, whole[10..].to_vec());
}

#[tokio::test]
async fn sql_shares_split_the_key_range() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    for i in 1..=500 {
        sqlx::query("INSERT INTO t VALUES (?, ?)")
            .bind(i)
            .bind(format!("v{i}"))
            .execute(&pool)
            .await
            .unwrap();
    }
    let mut parts = Vec::new();
    for i in 0..4 {
        let mut r = SqlReader::table(&url, "t", ["id"])
            .page_size(37)
            .partition(i, 4)
            .unwrap();
        parts.push(ids(&mut r, None).await);
    }
    check_cover(&parts, 500);
    // The range is kept in the checkpoint: rows added later beyond it stay out.
    let mut r = SqlReader::table(&url, "t", ["id"]).partition(3, 4).unwrap();
    r.open(None).await.unwrap();
    r.read().await.unwrap().unwrap();
    let cp = r.checkpoint();
    sqlx::query("INSERT INTO t VALUES (9999, 'late')")
        .execute(&pool)
        .await
        .unwrap();
    let mut again = SqlReader::table(&url, "t", ["id"]).partition(3, 4).unwrap();
    let rest = ids(&mut again, Some(&cp)).await;
    assert!(!rest.contains(&9999), "{rest:?}");
    assert_eq!(rest.len(), parts[3].len() - 1);
    assert!(SqlReader::table(&url, "t", ["id"]).partition(4, 4).is_err());
}
