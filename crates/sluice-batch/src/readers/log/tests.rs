//! Rotation with a restart in between: every line once, none skipped.

use std::io::Write;
use std::path::Path;

use super::*;

fn line(i: u64) -> String {
    format!(
        "10.0.0.{} - - [04/Dec/2026:10:{:02}:{:02} +0000] \"GET /r{} HTTP/1.1\" 200 {i} \"-\" \"t\" 0.{:03}\n",
        i % 250,
        (i / 60) % 60,
        i % 60,
        i % 7,
        i % 1000
    )
}

fn append(path: &Path, from: u64, to: u64) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in from..to {
        f.write_all(line(i).as_bytes()).unwrap();
    }
}

/// The `bytes` of each item read from `cp` to the end, and the checkpoint after.
async fn read_all(path: &Path, cp: Option<&Value>, at_most: usize) -> (Vec<u64>, Value) {
    let mut r = LogReader::new(path, LogFormat::named("combined").unwrap());
    r.open(cp).await.unwrap();
    let mut out = Vec::new();
    while out.len() < at_most {
        match r.read().await.unwrap() {
            Some(ri) => out.push(ri.item["bytes"].as_u64().unwrap()),
            None => break,
        }
    }
    (out, r.checkpoint())
}

#[tokio::test]
async fn rename_and_create_with_a_restart_between() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, 0, 100);
    let (first, cp) = read_all(&log, None, 60).await;
    assert_eq!(first, (0..60).collect::<Vec<_>>());
    // More lines, then logrotate renames and the server creates a new file.
    append(&log, 100, 150);
    std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    append(&log, 150, 170);
    let (second, cp) = read_all(&log, Some(&cp), usize::MAX).await;
    assert_eq!(
        second,
        (60..170).collect::<Vec<_>>(),
        "no line skipped or repeated"
    );
    // Rotated again with the old copy moved to a dated name.
    append(&log, 170, 180);
    std::fs::rename(
        dir.path().join("access.log.1"),
        dir.path().join("access.log.2"),
    )
    .unwrap();
    std::fs::rename(&log, dir.path().join("access.log-20261204")).unwrap();
    append(&log, 180, 185);
    let (third, cp) = read_all(&log, Some(&cp), usize::MAX).await;
    assert_eq!(third, (170..185).collect::<Vec<_>>());
    let (none, _) = read_all(&log, Some(&cp), usize::MAX).await;
    assert!(none.is_empty());
}

#[tokio::test]
async fn copytruncate_finds_the_copy_then_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, 0, 50);
    let (first, cp) = read_all(&log, None, 20).await;
    assert_eq!(first.len(), 20);
    append(&log, 50, 60);
    // copytruncate: copy, then truncate in place (same inode).
    std::fs::copy(&log, dir.path().join("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, 60, 65);
    let (second, _) = read_all(&log, Some(&cp), usize::MAX).await;
    assert_eq!(second, (20..65).collect::<Vec<_>>());

    // Without a copy to find: the current file from its start.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, 0, 50);
    let (_, cp) = read_all(&log, None, usize::MAX).await;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, 50, 52);
    let (again, _) = read_all(&log, Some(&cp), usize::MAX).await;
    assert_eq!(again, vec![50, 51]);
}

#[tokio::test]
async fn a_rotated_copy_in_the_configured_glob() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    std::fs::create_dir(&old).unwrap();
    let log = dir.path().join("web.log");
    append(&log, 0, 10);
    let (_, cp) = read_all(&log, None, 5).await;
    std::fs::rename(&log, old.join("web-1.log")).unwrap();
    append(&log, 10, 12);
    let glob = format!("{}/web-*.log", old.display());
    let mut r = LogReader::new(&log, LogFormat::named("combined").unwrap()).rotated(glob);
    r.open(Some(&cp)).await.unwrap();
    let mut got = Vec::new();
    while let Some(ri) = r.read().await.unwrap() {
        got.push(ri.item["bytes"].as_u64().unwrap());
    }
    assert_eq!(got, (5..12).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_partial_last_line_waits_and_bad_lines_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    append(&log, 0, 2);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"not a log line\n\n10.0.0.1 - - [04/Dec")
        .unwrap();
    let mut r = LogReader::new(&log, LogFormat::named("combined").unwrap());
    r.open(None).await.unwrap();
    assert_eq!(r.read().await.unwrap().unwrap().position, 1);
    assert_eq!(r.read().await.unwrap().unwrap().position, 2);
    match r.read().await {
        Err(ReadError::Bad {
            position, reason, ..
        }) => {
            assert_eq!(position, 3);
            assert!(reason.contains("access.log line 3"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(r.read().await.unwrap().is_none(), "the partial line waits");
    let cp = r.checkpoint();
    assert_eq!(cp["line"], 4);
    // The writer finishes the line.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"/2026:10:00:00 +0000] \"GET /x HTTP/1.1\" 200 7\n")
        .unwrap();
    // combined wants referer and agent; the finished line is common.
    let mut r = LogReader::new(&log, LogFormat::named("common").unwrap());
    r.open(Some(&cp)).await.unwrap();
    let ri = r.read().await.unwrap().unwrap();
    assert_eq!((ri.position, ri.item["bytes"].as_u64()), (5, Some(7)));
    assert!(r.read().await.unwrap().is_none());
}

#[tokio::test]
async fn a_missing_file_is_fatal_and_names_it() {
    let mut r = LogReader::new("/nonexistent/access.log", LogFormat::Json);
    let e = r.open(None).await.unwrap_err();
    assert!(matches!(e, ReadError::Fatal(_)));
    assert!(e.to_string().contains("/nonexistent/access.log"), "{e}");
}
