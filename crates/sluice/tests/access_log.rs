//! The gateway access log of a real `sluice serve` (issue #15 point 5), in each
//! format, to a file: a miss then a hit give two lines with their outcome,
//! status, route and one key hash; a request no route matches is logged with
//! route `-`; sluice's own endpoints are not logged; no line holds the path, the
//! query or the upstream's secret; `common` lines match the regex of
//! `docs/specs/access-log.md`; after the file is moved away, SIGHUP makes later
//! lines go to a new file at the configured path. A bad `access_log` is a config error naming the
//! key, a file that cannot be opened fails the start naming its key.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::bin::{BIN, KillOnDrop, check, gateway_toml, kill, sim, terminate, text, wait_until};

/// The upstream's secret (a query parameter the gateway adds upstream-side).
const SECRET: &str = "acc+SeCrEt/lOg==";
/// A client value in the query: it must not reach the log either.
const CLIENT_VALUE: &str = "client-value-4711";

/// Runs `sluice serve` with `access_log = format` into `dir/access.log` in front
/// of a sim; sends a miss, a hit, a request no route matches and requests to
/// sluice's own endpoints; returns the log's lines once the three gateway lines
/// are there.
async fn serve_and_log(format: &str, dir: &Path) -> Vec<String> {
    crate::support::init_logs();
    let sim = sim(Duration::from_millis(5), SECRET).await;
    let port = sluice_testkit::free_port();
    let log = dir.join("access.log");
    let cfg = dir.join("sluice.toml");
    std::fs::write(
        &cfg,
        gateway_toml(
            port,
            &sim.base_url(),
            "ACCESS_TEST_KEY",
            &format!(
                "access_log = \"{format}\"\naccess_log_path = \"{}\"\n",
                log.display()
            ),
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&cfg)
        .env("ACCESS_TEST_KEY", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child.id());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let healthz = format!("{base}/healthz");
    let mut child = match wait_for_listening(&client, &healthz, child).await {
        Ok(c) => c,
        Err(out) => panic!("sluice serve did not start:\n{out}"),
    };
    let url = format!(
        "{base}/air/getCtprvnRltmMesureDnsty?sidoName=x&returnType=json&probe={CLIENT_VALUE}"
    );
    for want in ["fwd=miss", "hit"] {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let cs = r.headers()["cache-status"].to_str().unwrap().to_owned();
        assert!(cs.contains(want), "{cs}");
    }
    for own in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/admin/purge",
        "/api/v1/jobs",
    ] {
        client.get(format!("{base}{own}")).send().await.unwrap();
    }
    let r = client
        .get(format!("{base}/nowhere?probe={CLIENT_VALUE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(
        10,
        || read().lines().count() >= 3,
        || format!("three lines in the access log:\n{}", read()),
    );
    // Lines are written as they come: give a stray fourth one time to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines: Vec<String> = read().lines().map(str::to_owned).collect();
    // logrotate's `create`: the file is moved away, SIGHUP makes sluice reopen
    // its path, and later lines go to the new file.
    std::fs::rename(&log, dir.join("access.log.1")).unwrap();
    assert!(kill(child.id(), "HUP"));
    let mut tries = 0;
    while read().is_empty() {
        tries += 1;
        assert!(tries < 100, "no line in a new access log after SIGHUP");
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        read().lines().all(|l| l.contains("hit")),
        "the new file has the later hits:\n{}",
        read()
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended sluice serve"
    );
    terminate(child);
    lines
}

/// Polls `healthz` until it answers (the child is then handed back) or the
/// child exits (its output is then the error).
async fn wait_for_listening(
    client: &reqwest::Client,
    healthz: &str,
    mut child: Child,
) -> Result<Child, String> {
    for _ in 0..150 {
        if client.get(healthz).send().await.is_ok() {
            return Ok(child);
        }
        if child.try_wait().unwrap().is_some() {
            return Err(text(&child.wait_with_output().unwrap()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("no answer on /healthz within 15 s".into())
}

/// The three lines of [`serve_and_log`] in `format`, checked by [`assert_clean`].
async fn three_clean_lines(format: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let lines = serve_and_log(format, dir.path()).await;
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_clean(&lines);
    lines
}

/// Nothing a client sent in its query, no path and no form of the secret.
fn assert_clean(lines: &[String]) {
    let all = lines.join("\n");
    for banned in [
        CLIENT_VALUE,
        "probe",
        "sidoName",
        "getCtprvnRltmMesureDnsty",
        "nowhere",
        "healthz",
        "metrics",
        "?",
        SECRET,
        "acc%2BSeCrEt",
        "SeCrEt",
    ] {
        assert!(
            !all.contains(banned),
            "{banned:?} in the access log:\n{all}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_for_a_miss_a_hit_and_no_route() {
    let lines = three_clean_lines("json").await;
    let v: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // The fields, in the order of docs/specs/access-log.md, and no other.
    let order = [
        "time",
        "method",
        "route",
        "protocol",
        "status",
        "bytes",
        "cache",
        "key_hash",
        "latency_ms",
    ];
    assert_eq!(v[0].as_object().unwrap().len(), order.len(), "{}", lines[0]);
    let at: Vec<usize> = order
        .iter()
        .map(|k| {
            lines[0]
                .find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k}: {}", lines[0]))
        })
        .collect();
    assert!(at.is_sorted(), "fields out of order: {}", lines[0]);
    for (line, cache) in v.iter().zip(["miss", "hit"]) {
        assert_eq!(line["method"], "GET", "{line}");
        assert_eq!(line["route"], "air", "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["cache"], cache, "{line}");
        assert!(line["bytes"].as_u64().unwrap() > 0, "{line}");
        assert!(line["latency_ms"].as_f64().unwrap() >= 0.0, "{line}");
        let t = line["time"].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(t.len(), "2026-12-03T14:37:12.123Z".len(), "{t}");
    }
    let hash = v[0]["key_hash"].as_str().unwrap();
    assert_eq!(hash.len(), 16);
    assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{hash}");
    assert_eq!(v[1]["key_hash"], hash, "the hit used the miss's entry");
    let none = &v[2];
    assert_eq!(none["route"], "-", "{none}");
    assert_eq!(none["status"], 404, "{none}");
    assert!(
        none["cache"].is_null() && none["key_hash"].is_null(),
        "{none}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_lines_match_the_specified_regex() {
    let lines = three_clean_lines("common").await;
    let re = regex_bites::Regex::new(&spec_regex()).unwrap();
    let fields: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let c = re
                .captures(l)
                .unwrap_or_else(|| panic!("{l:?} does not match {re:?}"));
            (1..=9).map(|i| c[i].to_owned()).collect()
        })
        .collect();
    // time, method, route, protocol, status, bytes, cache, key_hash, latency_ms
    for (f, cache) in fields.iter().zip(["miss", "hit"]) {
        assert_eq!(
            (&*f[1], &*f[2], &*f[3], &*f[4], &*f[6]),
            ("GET", "air", "HTTP/1.1", "200", cache),
            "{f:?}"
        );
        chrono::DateTime::parse_from_rfc3339(&f[0]).unwrap();
        assert!(f[5].parse::<u64>().unwrap() > 0, "{f:?}");
        f[8].parse::<f64>().unwrap();
    }
    assert_eq!(
        fields[0][7], fields[1][7],
        "one key hash for the miss and the hit"
    );
    assert_ne!(fields[0][7], "-");
    let none = &fields[2];
    assert_eq!(
        (&*none[2], &*none[4], &*none[6], &*none[7]),
        ("-", "404", "-", "-"),
        "{none:?}"
    );
}

/// The regex a `common` line matches, as `docs/specs/access-log.md` gives it.
fn spec_regex() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/specs/access-log.md"
    );
    let doc = std::fs::read_to_string(path).unwrap();
    doc.lines()
        .find(|l| l.starts_with("^- - - "))
        .unwrap_or_else(|| panic!("no line regex in {path}"))
        .to_owned()
}

#[test]
fn a_bad_format_or_an_empty_path_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = \"127.0.0.1:0\"\naccess_log = \"xml\"\naccess_log_path = \"\"\n",
    )
    .unwrap();
    let out = check(&cfg, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3:14: server.access_log: invalid access log format \"xml\""),
        "{err}"
    );
    assert!(err.contains("\"off\", \"json\" or \"common\""), "{err}");
    assert!(
        err.contains("bad.toml:4:19: server.access_log_path: access_log_path is empty"),
        "{err}"
    );
    for ok in ["off", "json", "common"] {
        std::fs::write(
            &cfg,
            format!("[server]\nlisten = \"127.0.0.1:0\"\naccess_log = \"{ok}\"\n"),
        )
        .unwrap();
        let out = check(&cfg, &[]);
        assert_eq!(out.status.code(), Some(0), "{ok}: {}", text(&out));
    }
}

#[test]
fn an_access_log_that_cannot_be_opened_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.toml");
    let missing = dir.path().join("no-such-dir").join("access.log");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\naccess_log = \"json\"\naccess_log_path = \"{}\"\n",
            sluice_testkit::free_port(),
            missing.display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.access_log_path: cannot open the access log")
            && err.contains("no-such-dir"),
        "{}",
        text(&out)
    );
}
