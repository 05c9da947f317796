//! Mass e-mail (issue #16, part 3): the `email` writer through the binary,
//! against the test kit's SMTP sink.
//!
//! - killed with SIGKILL mid-run (twice, at random moments) and run again:
//!   every recipient received exactly once, but the keys the send log reports
//!   as uncertain (at most one per kill), which are not received twice;
//! - 5xx recipients skipped with the server's reply, a 4xx one sent after a
//!   retry, an item missing a template field skipped naming it;
//! - a key left `sending` skipped with the reason, or resent (`on_uncertain`);
//! - a dry run's `.eml` files, the same name per key;
//! - a rate limit shared by two processes on one real `redis-server`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::bin::{BIN, text};
use sluice_testkit::SmtpSink;
use sluice_testkit::servers::RedisServer;

/// `sluice job run --local JOB -c CFG`.
fn run_cmd(cfg: &Path, job: &str) -> Command {
    let mut c = Command::new(BIN);
    c.args(["job", "run", "--local", job, "-c"])
        .arg(cfg)
        .env("RUST_LOG", "warn");
    c
}

/// Runs the job to its end off the runtime's threads (the sink keeps serving),
/// waiting out a killed run's lease.
async fn run_to_end(cfg: &Path, job: &str) -> Output {
    let (cfg, job) = (cfg.to_owned(), job.to_owned());
    tokio::task::spawn_blocking(move || {
        crate::bin::after_lease(|| run_cmd(&cfg, &job).output().unwrap())
    })
    .await
    .unwrap()
}

fn write_csv(path: &Path, n: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "id,email,name").unwrap();
    for i in 1..=n {
        writeln!(f, "{i},user{i}@example.org,User {i}").unwrap();
    }
    f.flush().unwrap();
}

fn address(i: usize) -> String {
    format!("user{i}@example.org")
}

/// A config in `dir`: the repository there, job `newsletter` of one step
/// reading `reader` and sending with `writer_extra` keys.
fn config(dir: &Path, reader: &str, writer_extra: &str, extra: &str) -> PathBuf {
    let repo = format!("sqlite://{}", dir.join("repo.db").display());
    crate::bin::jobs_config(
        dir,
        &repo,
        &format!(
            r#"lease = "2s"
{extra}
[[job]]
name = "newsletter"

[[job.step]]
name = "send"
chunk = 50
skip_limit = 20
retry = {{ max = 4, backoff = "100ms", max_backoff = "500ms" }}
reader = {reader}

[job.step.writer]
kind = "email"
to_field = "email"
{writer_extra}

[job.step.writer.template]
from = "Newsletter <news@example.org>"
subject = "Hello {{{{ name }}}}"
text = "Dear {{{{ name }}}},\nthis is issue 1.\n"
list_unsubscribe = "https://example.org/unsubscribe?u={{{{ email|urlencode }}}}"
list_unsubscribe_mailto = "unsubscribe@example.org"
"#
        ),
    )
}

/// `(key, state, reason)` of every row of the send log in the repository.
async fn send_log(dir: &Path) -> Vec<(String, String, Option<String>)> {
    let url = format!("sqlite://{}?mode=ro", dir.join("repo.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows =
        sqlx::query_as("SELECT msg_key, state, reason FROM sluice_email_log ORDER BY msg_key")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows
}

/// `(position, reason)` of the skip records in the repository.
async fn skips(dir: &Path) -> Vec<(i64, String)> {
    let url = format!("sqlite://{}?mode=ro", dir.join("repo.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows = sqlx::query_as("SELECT position, reason FROM batch_skip ORDER BY position")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}

/// A moment between `lo` and `hi` messages, varying from run to run.
fn random_between(lo: usize, hi: usize) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    lo + nanos % (hi - lo)
}

/// The headline: 2,000 recipients, SIGKILL twice at random moments, then run
/// to the end; every recipient once, but uncertain keys (at most one per
/// kill), never twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_twice_mid_run_sends_each_message_once() {
    const N: usize = 2000;
    let sink = SmtpSink::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("subscribers.csv");
    write_csv(&csv, N);
    let cfg = config(
        dir.path(),
        &format!(r#"{{ kind = "csv", path = "{}" }}"#, csv.display()),
        &format!(r#"smtp = "{}""#, sink.url()),
        "",
    );
    let mut kills = 0;
    for (lo, hi) in [(150, 700), (900, 1600)] {
        let at = random_between(lo, hi);
        let mut child = tokio::task::spawn_blocking({
            let cfg = cfg.clone();
            move || {
                // A killed run's lease must run out before the next one starts.
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let mut c = run_cmd(&cfg, "newsletter")
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .unwrap();
                    std::thread::sleep(Duration::from_millis(300));
                    match c.try_wait().unwrap() {
                        Some(s) if s.code() == Some(3) => {
                            assert!(Instant::now() < deadline, "the lease never expired");
                        }
                        Some(s) => panic!("the run ended early: {s}"),
                        None => return c,
                    }
                }
            }
        })
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while sink.messages().len() < at {
            assert!(Instant::now() < deadline, "never got to {at} messages");
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before {at} messages"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    let out = run_to_end(&cfg, "newsletter").await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("resumed execution 2"), "{}", text(&out));

    let log = send_log(dir.path()).await;
    let uncertain: Vec<&String> = log
        .iter()
        .filter(|(_, s, _)| s == "sending")
        .map(|(k, _, _)| k)
        .collect();
    let by_rcpt = sink.count_by_recipient();
    let delivered: Vec<usize> = uncertain
        .iter()
        .map(|k| by_rcpt.get(k.as_str()).copied().unwrap_or(0))
        .collect();
    eprintln!(
        "uncertain keys after {kills} kills: {} {uncertain:?}, received {delivered:?} times",
        uncertain.len()
    );
    assert!(uncertain.len() <= kills, "{uncertain:?}");
    for i in 1..=N {
        let a = address(i);
        let got = by_rcpt.get(&a).copied().unwrap_or(0);
        if uncertain.contains(&&a) {
            assert!(got <= 1, "uncertain {a} received {got} times");
        } else {
            assert_eq!(got, 1, "{a} received {got} times");
        }
    }
    assert!(by_rcpt.len() + uncertain.len() >= N);
    // Each message has its own Message-ID, never seen twice.
    let ids = sink.count_by_message_id();
    assert!(ids.values().all(|&n| n == 1), "a Message-ID arrived twice");
    assert_eq!(ids.len(), sink.messages().len());
    // The uncertain keys are skipped with the reason.
    let skipped = skips(dir.path()).await;
    assert_eq!(skipped.len(), uncertain.len(), "{skipped:?}");
    for (_, reason) in &skipped {
        assert!(
            reason.ends_with("interrupted while sending; may have been delivered"),
            "{reason}"
        );
    }
}

/// 5xx recipients skipped with the server's reply, a 4xx one sent after
/// retries, an item without a field the template needs skipped naming it;
/// every other message sent once, with its unsubscribe headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_deferred_and_incomplete_recipients() {
    let sink = SmtpSink::start().await.unwrap();
    sink.refuse(&address(5));
    sink.refuse(&address(12));
    sink.defer(&address(7), 2);
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("subscribers.jsonl");
    let mut lines = String::new();
    for i in 1..=20 {
        if i == 9 {
            lines.push_str(&format!("{{\"email\": \"{}\"}}\n", address(i)));
        } else {
            lines.push_str(&format!(
                "{{\"email\": \"{}\", \"name\": \"User {i}\"}}\n",
                address(i)
            ));
        }
    }
    std::fs::write(&jsonl, lines).unwrap();
    let cfg = config(
        dir.path(),
        &format!(r#"{{ kind = "jsonl", path = "{}" }}"#, jsonl.display()),
        &format!(r#"smtp = "{}""#, sink.url()),
        "",
    );
    let out = run_to_end(&cfg, "newsletter").await;
    assert!(out.status.success(), "{}", text(&out));
    let by_rcpt = sink.count_by_recipient();
    for i in 1..=20 {
        let want = usize::from(![5, 9, 12].contains(&i));
        assert_eq!(by_rcpt.get(&address(i)).copied().unwrap_or(0), want, "{i}");
    }
    let skipped: BTreeMap<i64, String> = skips(dir.path()).await.into_iter().collect();
    assert_eq!(skipped.keys().copied().collect::<Vec<_>>(), [5, 9, 12]);
    assert!(
        skipped[&5].starts_with("user5@example.org: the server refused RCPT TO"),
        "{}",
        skipped[&5]
    );
    assert!(skipped[&5].contains("550"), "{}", skipped[&5]);
    assert!(skipped[&12].contains("550"), "{}", skipped[&12]);
    assert!(skipped[&9].contains("\"name\""), "{}", skipped[&9]);
    let log = send_log(dir.path()).await;
    let failed: Vec<&String> = log
        .iter()
        .filter(|r| r.1 == "failed")
        .map(|r| &r.0)
        .collect();
    assert_eq!(failed, [&address(12), &address(5)]);

    let m = sink
        .messages()
        .into_iter()
        .find(|m| m.to == [address(3)])
        .unwrap();
    assert_eq!(m.header("subject").as_deref(), Some("Hello User 3"));
    // (The sink unfolds the header without the folding space.)
    assert_eq!(
        m.header("list-unsubscribe").unwrap().replace(' ', ""),
        "<https://example.org/unsubscribe?u=user3%40example.org>,<mailto:unsubscribe@example.org>"
    );
    assert_eq!(
        m.header("list-unsubscribe-post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(m.data.contains("Dear User 3,"), "{}", m.data);
    assert!(
        m.header("message-id")
            .unwrap()
            .ends_with(".sluice@example.org>")
    );

    // Run again (a new run of the completed instance): nothing is sent twice.
    let before = sink.messages().len();
    let out =
        crate::bin::after_lease(|| run_cmd(&cfg, "newsletter").arg("--rerun").output().unwrap());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sink.messages().len(), before);
}

/// A dry run writes one `.eml` per key, the same file on a second run, and
/// sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_writes_the_rendered_messages() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("subscribers.csv");
    write_csv(&csv, 5);
    let out_dir = dir.path().join("out");
    let cfg = config(
        dir.path(),
        &format!(r#"{{ kind = "csv", path = "{}" }}"#, csv.display()),
        &format!(r#"dry_run = "{}""#, out_dir.display()),
        "",
    );
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let out = run_to_end(&cfg, "newsletter").await;
    assert!(out.status.success(), "{}", text(&out));
    let first = files();
    assert_eq!(first.len(), 5, "{first:?}");
    let out =
        crate::bin::after_lease(|| run_cmd(&cfg, "newsletter").arg("--rerun").output().unwrap());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(files(), first, "the same file per key");
    let name = first
        .iter()
        .find(|n| n.starts_with("user2@example.org-"))
        .unwrap();
    let eml = std::fs::read_to_string(out_dir.join(name)).unwrap();
    assert!(eml.contains("Subject: Hello User 2\r\n"), "{eml}");
    assert!(eml.contains("To: user2@example.org\r\n"), "{eml}");
    assert!(
        eml.contains("From: Newsletter <news@example.org>\r\n"),
        "{eml}"
    );
    assert!(
        eml.contains("Dear User 2,\r\nthis is issue 1.\r\n"),
        "{eml}"
    );
    assert!(
        eml.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
        "{eml}"
    );
}

/// Two processes, one Redis, one limit of 10 a second: together they never
/// send faster (counted, with a generous allowance for the burst).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_rate_limit_through_redis() {
    const RATE: f64 = 10.0;
    const EACH: usize = 40;
    let redis = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let sink = SmtpSink::start().await.unwrap();
    let mut cfgs = Vec::new();
    let mut dirs = Vec::new();
    for p in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("subscribers.csv");
        let mut f = std::fs::File::create(&csv).unwrap();
        writeln!(f, "id,email,name").unwrap();
        for i in 1..=EACH {
            writeln!(f, "{i},p{p}-user{i}@example.org,User {i}").unwrap();
        }
        let store = format!(
            "[store]\nkind = \"redis\"\nurl = \"{}\"\nnamespace = \"email-rate\"\n",
            redis.url()
        );
        cfgs.push(config(
            dir.path(),
            &format!(r#"{{ kind = "csv", path = "{}" }}"#, csv.display()),
            &format!(
                r#"smtp = "{}"
rate = "10/s"
rate_name = "newsletter""#,
                sink.url()
            ),
            &store,
        ));
        dirs.push(dir);
    }
    let outs = tokio::task::spawn_blocking(move || {
        let children: Vec<_> = cfgs
            .iter()
            .map(|cfg| {
                run_cmd(cfg, "newsletter")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for out in &outs {
        assert!(out.status.success(), "{}", text(out));
    }
    let mut at: Vec<Instant> = sink.messages().iter().map(|m| m.received_at).collect();
    assert_eq!(at.len(), 2 * EACH);
    at.sort();
    let elapsed = (at[at.len() - 1] - at[0]).as_secs_f64();
    // GCRA: a burst of RATE, then RATE a second; allow one more second's worth.
    let allowed = RATE * elapsed + 2.0 * RATE;
    eprintln!(
        "{} messages in {elapsed:.2}s (allowed {allowed:.0})",
        at.len()
    );
    assert!(
        (at.len() as f64) <= allowed,
        "{} messages in {elapsed:.2}s exceed {RATE}/s",
        at.len()
    );
}

/// A key a crashed run left `sending` (written into the send log by hand, as
/// the crash would have): skipped with the reason by default, sent again
/// (with the Message-ID derived from the key) with `on_uncertain = "resend"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_left_sending_is_skipped_or_resent() {
    for resend in [false, true] {
        let sink = SmtpSink::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("subscribers.csv");
        write_csv(&csv, 3);
        let on = if resend { "resend" } else { "skip" };
        let cfg = config(
            dir.path(),
            &format!(r#"{{ kind = "csv", path = "{}" }}"#, csv.display()),
            &format!("smtp = \"{}\"\non_uncertain = \"{on}\"", sink.url()),
            "",
        );
        // The first instance of a fresh repository is instance 1.
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("repo.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query(
            "CREATE TABLE sluice_email_log (job_name VARCHAR(200) NOT NULL, \
             job_instance_id BIGINT NOT NULL, step_name VARCHAR(200) NOT NULL, \
             msg_key VARCHAR(255) NOT NULL, state VARCHAR(16) NOT NULL, recipient TEXT NOT NULL, \
             message_id VARCHAR(255) NOT NULL, reason TEXT, updated_at BIGINT NOT NULL, \
             PRIMARY KEY (job_name, job_instance_id, step_name, msg_key))",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO sluice_email_log VALUES ('newsletter', 1, 'send', ?, 'sending', ?, '', NULL, 0)",
        )
        .bind(address(2))
        .bind(address(2))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let out = run_to_end(&cfg, "newsletter").await;
        assert!(out.status.success(), "{}", text(&out));
        let by_rcpt = sink.count_by_recipient();
        assert_eq!(by_rcpt.get(&address(1)), Some(&1));
        assert_eq!(by_rcpt.get(&address(3)), Some(&1));
        let skipped = skips(dir.path()).await;
        if resend {
            assert_eq!(by_rcpt.get(&address(2)), Some(&1));
            assert!(skipped.is_empty(), "{skipped:?}");
        } else {
            assert_eq!(by_rcpt.get(&address(2)), None);
            assert_eq!(
                skipped,
                [(
                    2,
                    "user2@example.org: interrupted while sending; may have been delivered"
                        .to_owned()
                )]
            );
        }
    }
}
