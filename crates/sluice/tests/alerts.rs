//! Alerts end to end (issue #15 point 4): real `sluice serve` processes evaluate
//! the rules of `[alerts]` over a SQLite repository and queue, and deliver to a
//! local webhook receiver and SMTP sink through the `alerts` queue.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use sluice_testkit::{SmtpSink, WebhookReceiver, WebhookRequest};

use crate::bin::{BIN, KillOnDrop, check, terminate, text, wait_until};

const HMAC_KEY: &str = "alert-signing-key-0123";
const AIR_KEY: &str = "alerts-air-key";
const WAIT: Duration = Duration::from_secs(60);

/// `sluice ARGS -c CONFIG`, with the HMAC key in the environment.
fn sluice(cfg: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("-c")
        .arg(cfg)
        .env("RUST_LOG", "warn")
        .env("SLUICE_TEST_ALERT_HMAC", HMAC_KEY)
        .output()
        .unwrap()
}

/// `sluice serve` on a free port; killed when the guard drops.
fn serve(cfg: &Path) -> (Child, KillOnDrop) {
    serve_on(cfg, sluice_testkit::free_port())
}

/// `sluice serve` on `port`; killed when the guard drops.
fn serve_on(cfg: &Path, port: u16) -> (Child, KillOnDrop) {
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "-c"])
        .arg(cfg)
        .env("RUST_LOG", "warn")
        .env("SLUICE_TEST_ALERT_HMAC", HMAC_KEY)
        .env("SLUICE_TEST_AIR_KEY", AIR_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = KillOnDrop(child.id());
    (child, guard)
}

/// A config in `dir`: SQLite repository (and queue), job `load` whose shell
/// step succeeds only once `dir/ok` exists, alerts evaluated every second, and
/// `alerts` (rules and receivers).
fn config(dir: &Path, alerts: &str) -> PathBuf {
    let repo = format!("sqlite://{}", dir.join("repo.db").display());
    config_with(dir, &repo, "", alerts)
}

/// As [`config`], on the repository (and queue) at `repo_url`, with `extra`
/// (more sections, or keys of job `load`) before `[alerts]`.
fn config_with(dir: &Path, repo_url: &str, extra: &str, alerts: &str) -> PathBuf {
    let cfg = dir.join("sluice.toml");
    let ok = dir.join("ok");
    std::fs::write(
        &cfg,
        format!(
            "[repository]\nurl = \"{repo_url}\"\n\n{}{extra}\n[alerts]\ninterval = \"1s\"\n\
             external_url = \"https://sluice.example.org\"\n{alerts}",
            crate::bin::shell_job_toml("load", "check", &format!("test -f {}", ok.display())),
        ),
    )
    .unwrap();
    cfg
}

fn webhook(name: &str, url: &str) -> String {
    format!(
        "[[alerts.webhook]]\nname = \"{name}\"\nurl = \"{url}\"\n\
         secret = {{ env = \"SLUICE_TEST_ALERT_HMAC\" }}\n"
    )
}

/// `sluice job run load --local --rerun` (a fresh run each time, even after a
/// completed one): its exit code.
fn run_load(cfg: &Path) -> Option<i32> {
    sluice(cfg, &["job", "run", "load", "--local", "--rerun"])
        .status
        .code()
}

/// `sluice alerts list --json [--all]`, parsed.
fn alerts_list(cfg: &Path, all: bool) -> Value {
    let args: &[&str] = if all {
        &["alerts", "list", "--json", "--all"]
    } else {
        &["alerts", "list", "--json"]
    };
    let out = sluice(cfg, args);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits until the first active alert was evaluated more than `ms` after now
/// (so at least one evaluation started after this call).
fn evaluated_since_now(cfg: &Path, ms: i64) {
    let after = sluice_core::Clock::now_millis(&sluice_core::SystemClock) + ms;
    wait_until(
        60,
        || alerts_list(cfg, false)["active"][0]["last_eval"].as_i64() > Some(after),
        || format!("no evaluation after {after}: {}", alerts_list(cfg, false)),
    );
}

/// The webhook's requests with `status` in their body.
fn with_status<'a>(r: &'a [WebhookRequest], status: &str) -> Vec<&'a WebhookRequest> {
    r.iter().filter(|r| r.json()["status"] == status).collect()
}

/// Checks the HMAC-SHA256 signature of a request against [`HMAC_KEY`].
fn assert_signed(r: &WebhookRequest) {
    let mut mac = Hmac::<Sha256>::new_from_slice(HMAC_KEY.as_bytes()).unwrap();
    mac.update(&r.body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(r.header("x-sluice-signature"), Some(want.as_str()));
    assert_eq!(r.header("content-type"), Some("application/json"));
}

// "A failing job fires `job_failed` → one firing with a valid HMAC; the next
// successful run → one resolved; the same by e-mail; `alerts list` shows it."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_fires_once_by_webhook_and_mail_and_a_success_resolves_it() {
    let hook = WebhookReceiver::start().await.unwrap();
    let smtp = SmtpSink::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "[[alerts.rule]]\nname = \"load-failed\"\nwhen = \"job_failed\"\njob = \"load\"\n\
             severity = \"critical\"\nlabels = {{ team = \"data\" }}\nsend_to = [\"ops\", \"mail\"]\n\
             {}[[alerts.email]]\nname = \"mail\"\nsmtp = \"{}\"\nfrom = \"sluice@example.org\"\n\
             to = [\"ops@example.org\", \"oncall@example.org\"]\n",
            webhook("ops", &hook.url()),
            smtp.url()
        ),
    );
    let (server, _guard) = serve(&cfg);

    assert_eq!(run_load(&cfg), Some(1), "the first run fails");
    let got = hook
        .wait_until(WAIT, |r| !with_status(r, "firing").is_empty())
        .await;
    let firing = with_status(&got, "firing")[0];
    assert_signed(firing);
    let m = firing.json();
    assert_eq!(m["version"], "4");
    assert_eq!(m["receiver"], "ops");
    assert_eq!(m["externalURL"], "https://sluice.example.org");
    assert_eq!(m["groupLabels"]["alertname"], "load-failed");
    let a = &m["alerts"][0];
    assert_eq!(a["status"], "firing");
    assert_eq!(a["labels"]["alertname"], "load-failed");
    assert_eq!(a["labels"]["job"], "load");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["team"], "data");
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(a["fingerprint"].as_str().unwrap().len(), 16);
    assert!(
        a["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("job load failed"),
        "{m}"
    );
    assert!(
        a["generatorURL"]
            .as_str()
            .unwrap()
            .starts_with("https://sluice.example.org/"),
        "{m}"
    );

    // Listed as active, with its labels.
    let list = alerts_list(&cfg, false);
    let active = list["active"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{list}");
    assert_eq!(active[0]["rule"], "load-failed");
    assert_eq!(active[0]["status"], "firing");
    assert_eq!(active[0]["labels"]["job"], "load");
    let human = sluice(&cfg, &["alerts", "list"]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("FIRING load-failed [critical]") && human.contains("job=load"),
        "{human}"
    );

    // A second failure is the same incident: once an evaluation after it has
    // run (its last_eval moved past the run), nothing more was sent.
    assert_eq!(run_load(&cfg), Some(1));
    evaluated_since_now(&cfg, 1000);

    // The next successful run resolves it: one resolve to each receiver.
    std::fs::write(dir.path().join("ok"), "").unwrap();
    assert_eq!(run_load(&cfg), Some(0), "the run with the marker completes");
    let got = hook
        .wait_until(WAIT, |r| !with_status(r, "resolved").is_empty())
        .await;
    assert_eq!(
        with_status(&got, "firing").len(),
        1,
        "one firing per incident"
    );
    assert_eq!(with_status(&got, "resolved").len(), 1, "one resolve");
    let resolved = with_status(&got, "resolved")[0];
    assert_signed(resolved);
    let r = resolved.json();
    assert_eq!(r["alerts"][0]["fingerprint"], a["fingerprint"]);
    assert_eq!(r["alerts"][0]["startsAt"], a["startsAt"]);
    assert_ne!(r["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");

    let mails = smtp.wait_for(2, WAIT).await;
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let subjects: Vec<String> = mails
        .iter()
        .map(|m| m.header("subject").unwrap_or_default())
        .collect();
    assert!(
        subjects[0].starts_with("[FIRING] load-failed"),
        "{subjects:?}"
    );
    assert!(
        subjects[1].starts_with("[RESOLVED] load-failed"),
        "{subjects:?}"
    );
    for m in &mails {
        assert_eq!(m.from, "sluice@example.org");
        assert_eq!(m.to, ["ops@example.org", "oncall@example.org"]);
        // The body is quoted-printable: undo soft breaks and `=3D`.
        let body = m.data.replace("=\r\n", "").replace("=3D", "=");
        assert!(body.contains("job = load"), "{body}");
        assert!(body.contains("https://sluice.example.org/"), "{body}");
    }

    // No longer active; listed among the resolved.
    let list = alerts_list(&cfg, true);
    assert_eq!(list["active"].as_array().unwrap().len(), 0, "{list}");
    assert_eq!(list["resolved"][0]["rule"], "load-failed", "{list}");
    assert!(list["resolved"][0]["ends_at"].as_i64().is_some(), "{list}");
    terminate(server);
}

// "A webhook answering 500 twice then 200 gets the alert on the third attempt
// (retries through the queue)"; the `dead_letters` rule fires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_fires_and_a_failing_webhook_is_retried_through_the_queue() {
    let hook = WebhookReceiver::answering(&[500, 500]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "[[alerts.rule]]\nname = \"dead-jobs\"\nwhen = \"dead_letters\"\nqueue = \"jobs\"\n\
             send_to = [\"ops\"]\n{}",
            webhook("ops", &hook.url())
        ),
    );
    let (server, _guard) = serve(&cfg);
    // Through the queue: the failed run is dead-lettered on `jobs`.
    let out = sluice(&cfg, &["job", "run", "load", "--queue"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    let got = hook
        .wait_until(WAIT, |r| r.iter().any(|r| r.answered == 200))
        .await;
    let answers: Vec<u16> = got.iter().map(|r| r.answered).collect();
    assert_eq!(answers, [500, 500, 200], "the third attempt delivers it");
    for r in &got {
        assert_signed(r);
        let m = r.json();
        assert_eq!(m["status"], "firing");
        assert_eq!(m["alerts"][0]["labels"]["alertname"], "dead-jobs");
        assert_eq!(m["alerts"][0]["labels"]["queue"], "jobs");
        assert_eq!(m["alerts"][0]["labels"]["severity"], "warning");
        assert!(
            m["alerts"][0]["annotations"]["summary"]
                .as_str()
                .unwrap()
                .contains("1 dead tasks on queue jobs"),
            "{m}"
        );
    }
    assert_eq!(
        got[0].body, got[2].body,
        "each attempt sends the same message"
    );

    // Purging the dead-letter queue resolves the alert.
    let out = sluice(&cfg, &["queue", "dlq", "purge", "--queue", "jobs"]);
    assert!(out.status.success(), "{}", text(&out));
    let got = hook
        .wait_until(WAIT, |r| !with_status(r, "resolved").is_empty())
        .await;
    assert_eq!(with_status(&got, "resolved").len(), 1);
    terminate(server);
}

// `no_success` fires for a job that has not completed; a webhook answering 4xx
// dead-letters the notification at once, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_success_fires_and_a_4xx_webhook_dead_letters_the_notification() {
    let hook = WebhookReceiver::answering(&[404]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "[[alerts.rule]]\nname = \"load-stale\"\nwhen = \"no_success\"\njob = \"load\"\n\
             for = \"1s\"\nsend_to = [\"ops\"]\n{}",
            webhook("ops", &hook.url())
        ),
    );
    let (server, _guard) = serve(&cfg);
    let got = hook.wait_until(WAIT, |r| !r.is_empty()).await;
    let m = got[0].json();
    assert_eq!(m["alerts"][0]["labels"]["alertname"], "load-stale");
    assert!(
        m["alerts"][0]["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("job load has not completed for 1s"),
        "{m}"
    );
    let dlq_list = || {
        let out = sluice(&cfg, &["queue", "dlq", "list", "--queue", "alerts"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_until(
        60,
        || dlq_list().contains("alert.notify"),
        || format!("the notification was not dead-lettered: {}", dlq_list()),
    );
    let dlq = dlq_list();
    assert!(dlq.contains("answered 404"), "{dlq}");
    assert!(!dlq.contains(HMAC_KEY), "{dlq}");
    assert_eq!(hook.requests().len(), 1, "a 4xx is not retried");
    let list = alerts_list(&cfg, false);
    assert_eq!(list["active"][0]["rule"], "load-stale", "{list}");
    terminate(server);
}

// Bad alert config is rejected, each mistake located and naming its key.
#[test]
fn bad_alert_rules_and_receivers_are_rejected_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        "[[alerts.rule]]\nname = \"a\"\nwhen = \"job_failed\"\nsend_to = [\"nobody\"]\n\
         [[alerts.rule]]\nname = \"b\"\nwhen = \"job_exploded\"\n\
         [[alerts.rule]]\nname = \"c\"\nwhen = \"quota_low\"\n\
         [[alerts.rule]]\nname = \"d\"\nwhen = \"no_success\"\njob = \"lode\"\nqueue = \"jobs\"\n\
         [[alerts.rule]]\nname = \"e\"\nwhen = \"upstream_errors\"\nabove = 2.0\n\
         [[alerts.email]]\nname = \"mail\"\nsmtp = \"http://x\"\nfrom = \"not an address\"\nto = []\n",
    );
    let out = check(&cfg, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = cfg.display().to_string();
    for want in [
        "alerts.rule[0].send_to[0]: no receiver named \"nobody\"; defined: mail",
        "alerts.rule[1].when: unknown condition \"job_exploded\"; one of job_failed, job_late",
        "alerts.rule[2].below_percent: quota_low needs `below_percent`",
        "alerts.rule[3].for: no_success needs `for`",
        "alerts.rule[3].job: no job named \"lode\"; jobs: load",
        "alerts.rule[3].queue: `queue` does not apply to no_success",
        "alerts.rule[4].above: the error ratio must be at least 0 and below 1",
        "alerts.email[0].smtp:",
        "alerts.email[0].from: \"not an address\" is not an e-mail address",
        "alerts.email[0].to: an e-mail receiver needs `to`",
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with(&format!("{file}:")) && l.contains(want)),
            "no `{want}` in:\n{err}"
        );
    }
    // Each is located: FILE:LINE:COL.
    let line = err
        .lines()
        .find(|l| l.contains("job_exploded"))
        .unwrap()
        .to_owned();
    let rest = line.strip_prefix(&format!("{file}:")).unwrap();
    let mut parts = rest.splitn(3, ':');
    let (l, c) = (parts.next().unwrap(), parts.next().unwrap());
    assert!(
        l.parse::<usize>().is_ok() && c.parse::<usize>().is_ok(),
        "{line}"
    );

    // Each broken rule or receiver is reported on its own, and the others keep
    // their place: an unknown key in rule[0], a bad receiver in rule[1], a
    // broken webhook whose rule says nothing more.
    let cfg = config(
        dir.path(),
        "[[alerts.rule]]\nname = \"a\"\nwhen = \"dead_letters\"\nthreshold = 3\n\
         [[alerts.rule]]\nname = \"b\"\nwhen = \"dead_letters\"\nsend_to = [\"pager\"]\n\
         [[alerts.rule]]\nname = \"c\"\nwhen = \"dead_letters\"\nsend_to = [\"ops\"]\n\
         [[alerts.webhook]]\nname = \"ops\"\nurl = \"http://127.0.0.1:1/\"\nmethod = \"PUT\"\n",
    );
    let out = check(&cfg, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 3, "{err}");
    for want in [
        "alerts.rule[0].threshold: unknown field `threshold`",
        "alerts.rule[1].send_to[0]: no receiver named \"pager\"",
        "alerts.webhook[0].method: unknown field `method`",
    ] {
        assert!(err.contains(want), "no `{want}` in:\n{err}");
    }
}

// `job_late` and `worker_gone`: with no worker on the node, a scheduled fire
// starts no run and nobody serves `jobs`; both show in `alerts list`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_worker_a_scheduled_job_is_late_and_worker_gone_fires() {
    let dir = tempfile::tempdir().unwrap();
    let repo = format!("sqlite://{}", dir.path().join("repo.db").display());
    let cfg = config_with(
        dir.path(),
        &repo,
        "\n[[job.trigger]]\nkind = \"every\"\nevery = \"2s\"\n\n[queue]\nworkers = false\n",
        "[[alerts.rule]]\nname = \"load-late\"\nwhen = \"job_late\"\nfor = \"1s\"\n\
         [[alerts.rule]]\nname = \"no-workers\"\nwhen = \"worker_gone\"\nfor = \"1s\"\n",
    );
    let (server, _guard) = serve(&cfg);
    let mut list = Value::Null;
    wait_until(
        60,
        || {
            list = alerts_list(&cfg, false);
            list["active"].as_array().is_some_and(|a| a.len() == 2)
        },
        || "both alerts did not fire".into(),
    );
    let active = list["active"].as_array().unwrap();
    let late = active.iter().find(|a| a["rule"] == "load-late").unwrap();
    assert_eq!(late["labels"]["job"], "load", "{list}");
    assert_eq!(late["labels"]["trigger"], "load#0", "{list}");
    assert!(
        late["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("job load is late"),
        "{list}"
    );
    let gone = active.iter().find(|a| a["rule"] == "no-workers").unwrap();
    assert_eq!(gone["labels"]["queue"], "jobs", "{list}");
    assert!(
        gone["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("0 live workers serve queue jobs (fewer than 1)"),
        "{list}"
    );
    terminate(server);
}

// Two nodes on one PostgreSQL repository and queue evaluate the same rule every
// second: each incident is sent once, and resolved once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_send_one_notification_per_incident() {
    let db =
        sluice_testkit::db::ServerDb::new(sluice_testkit::db::Server::Postgres, "sluice_al").await;
    let hook = WebhookReceiver::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_with(
        dir.path(),
        &db.url,
        "",
        &format!(
            "[[alerts.rule]]\nname = \"load-failed\"\nwhen = \"job_failed\"\n\
             send_to = [\"ops\"]\n{}",
            webhook("ops", &hook.url())
        ),
    );
    let (a, _ga) = serve(&cfg);
    let (b, _gb) = serve(&cfg);
    // Both nodes are up (their workers announced) before the run fails.
    wait_until(
        60,
        || {
            let out = sluice(&cfg, &["queue", "list", "--json"]);
            serde_json::from_slice::<Value>(&out.stdout)
                .ok()
                .and_then(|v| v["workers"].as_array().map(Vec::len))
                == Some(2)
        },
        || "the two nodes did not start".into(),
    );
    for round in 0..2 {
        let _ = std::fs::remove_file(dir.path().join("ok"));
        assert_eq!(run_load(&cfg), Some(1), "round {round}: the run fails");
        let firing_before = with_status(&hook.requests(), "firing").len();
        hook.wait_until(WAIT, |r| with_status(r, "firing").len() > firing_before)
            .await;
        // Several evaluations on both nodes while it fires.
        evaluated_since_now(&cfg, 2500);
        std::fs::write(dir.path().join("ok"), "").unwrap();
        assert_eq!(run_load(&cfg), Some(0), "round {round}: the run completes");
        hook.wait_until(WAIT, |r| with_status(r, "resolved").len() > round)
            .await;
    }
    // Let both nodes evaluate a few more times with it resolved.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = hook.requests();
    assert_eq!(
        with_status(&got, "firing").len(),
        2,
        "one firing per incident"
    );
    assert_eq!(
        with_status(&got, "resolved").len(),
        2,
        "one resolve per incident"
    );
    let list = alerts_list(&cfg, true);
    assert_eq!(
        list["resolved"].as_array().unwrap().len(),
        2,
        "two incidents: {list}"
    );
    terminate(a);
    terminate(b);
}

/// A plain `GET path` to `127.0.0.1:port`: the status, 0 when it cannot connect.
fn get(port: u16, path: &str) -> u16 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

// `upstream_errors` and `quota_low` over the gateway's own calls: an upstream
// answering 500 fails every call, and each spends the daily quota.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_fires_upstream_errors_and_quota_low() {
    let upstream = crate::bin::sim(Duration::ZERO, AIR_KEY).await;
    upstream.set_fault(sluice_testkit::Fault::Status(500));
    let dir = tempfile::tempdir().unwrap();
    let port = sluice_testkit::free_port();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [[upstream]]\nname = \"airkorea\"\nbase_url = \"{}\"\n\
             secret_query = {{ serviceKey = {{ env = \"SLUICE_TEST_AIR_KEY\" }} }}\n\
             retries = {{ max = 0 }}\nrate_limit = {{ per_day = 20 }}\n\n\
             [[route]]\nname = \"air\"\npath = \"/air/{{*rest}}\"\nupstream = \"airkorea\"\n\
             ttl = \"1m\"\nkey_query = [\"pageNo\"]\n\n\
             [repository]\nurl = \"sqlite://{}\"\n\n\
             [alerts]\ninterval = \"1s\"\n\
             [[alerts.rule]]\nname = \"portal-errors\"\nwhen = \"upstream_errors\"\n\
             upstream = \"airkorea\"\nabove = 0.5\nfor = \"0s\"\n\
             [[alerts.rule]]\nname = \"portal-quota\"\nwhen = \"quota_low\"\nbelow_percent = 50\n",
            upstream.base_url(),
            dir.path().join("repo.db").display(),
        ),
    )
    .unwrap();
    let (server, _guard) = serve_on(&cfg, port);
    let mut page = 0;
    let mut list = Value::Null;
    wait_until(
        60,
        || {
            page += 1;
            get(
                port,
                &format!("/air/getCtprvnRltmMesureDnsty?returnType=json&pageNo={page}"),
            );
            list = alerts_list(&cfg, false);
            list["active"].as_array().is_some_and(|a| a.len() == 2)
        },
        || {
            format!(
                "both upstream alerts did not fire: {}",
                alerts_list(&cfg, false)
            )
        },
    );
    let active = list["active"].as_array().unwrap();
    let errors = active
        .iter()
        .find(|a| a["rule"] == "portal-errors")
        .unwrap();
    assert_eq!(errors["labels"]["upstream"], "airkorea", "{list}");
    assert!(errors["labels"]["node"].as_str().is_some(), "{list}");
    assert!(
        errors["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("upstream airkorea: 100 % of calls fail"),
        "{list}"
    );
    let quota = active.iter().find(|a| a["rule"] == "portal-quota").unwrap();
    assert_eq!(quota["labels"]["upstream"], "airkorea", "{list}");
    let summary = quota["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("of the daily quota left") || summary.contains("runs out"),
        "{list}"
    );
    terminate(server);
}
