//! `job run`'s progress bar on a terminal (issue #14 point 8): a CSV step
//! measures bytes of the file, rates read as rates, and log lines print whole,
//! above the bar. The terminal is a pseudo-terminal from util-linux `script`.

use crate::bin::BIN;
use std::process::Command;

#[test]
fn a_csv_step_shows_a_bar_in_bytes_and_log_lines_do_not_tear_it() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    let mut text = String::from("id,name,value\n");
    for i in 0..300_000 {
        text.push_str(&format!("{i},name-{i},{}\n", i * 7));
    }
    std::fs::write(&csv, &text).unwrap();
    let repo = format!("sqlite://{}/repo.db", dir.path().display());
    let cfg = crate::bin::jobs_config(
        dir.path(),
        &repo,
        &format!(
            r#"
[[job]]
name = "load"

[[job.step]]
name = "rows"
chunk = 2000
reader = {{ kind = "csv", path = "{d}/in.csv", header = true }}
writer = {{ kind = "sql_append", url = "sqlite://{d}/data.db", table = "t", create = true, columns = ["id TEXT", "name TEXT", "value TEXT"] }}
"#,
            d = dir.path().display()
        ),
    );
    let log = dir.path().join("tty.log");
    let cmd = format!(
        "COLUMNS=160 RUST_LOG=debug {BIN} job run load --local -c {}",
        cfg.display()
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &cmd])
        .arg(&log)
        .env("TERM", "xterm")
        .output()
        .expect("script (util-linux) runs");
    let tty = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(out.status.success(), "{tty}");
    // The bar measures the file in bytes, with a byte rate and an item rate.
    let data_len = text.len() - "id,name,value\n".len();
    assert!(tty.contains("MiB"), "no byte bar: {tty}");
    assert!(tty.contains("/s"), "no rate: {tty}");
    assert!(tty.contains(" items ("), "no item count: {tty}");
    assert!(data_len > 4 << 20, "the file is big enough to show MiB");
    // Every log line is whole: a line holding a log record holds no bar.
    let mut logged = 0;
    for line in tty.split(['\n', '\r']) {
        if line.contains("DEBUG") || line.contains("INFO") {
            logged += 1;
            assert!(
                !line.contains("MiB") && !line.contains("] "),
                "a log line torn by the bar: {line:?}"
            );
        }
    }
    assert!(logged > 0, "no log line to check: {tty}");
}
