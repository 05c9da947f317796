//! The dashboard (`/ui`): its security rules over plain HTTP, and a real
//! browser (Debian's chromium, headless, through chromedriver) driving it
//! against a real `sluice serve` with jobs, a trigger and a gateway route.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::bin::{BIN, KillOnDrop, gateway_toml, shell_job_toml, terminate};

const ADMIN: &str = "ui-admin-token-0123456789";
const OPS: &str = "ui-operator-token-0123456789";
const RO: &str = "ui-viewer-token-0123456789";
const SIM_KEY: &str = "ui-sim-key";
/// A gateway request the tests cache.
const CACHED: &str = "/air/getCtprvnRltmMesureDnsty?sidoName=ui&returnType=json";

/// A `sluice serve` with the three tokens, route `air` to a simulated
/// upstream, job `hello` (waits for the file `gate`, then a second step) with
/// trigger `hello/hourly`, and job `boom` whose run fails.
struct Server {
    child: Option<Child>,
    _guard: KillOnDrop,
    base: String,
    gate: PathBuf,
    http: reqwest::Client,
    _sim: sluice_testkit::SimUpstream,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        sluice::init_tls();
        let sim = crate::bin::sim(Duration::ZERO, SIM_KEY).await;
        let dir = tempfile::tempdir().unwrap();
        let port = sluice_testkit::free_port();
        let gate = dir.path().join("gate");
        let tokens = "admin_token = { env = \"UI_ADM\" }\n\
             tokens = [{ name = \"ops\", role = \"operator\", token = { env = \"UI_OPS\" } }, \
             { name = \"ro\", role = \"viewer\", token = { env = \"UI_RO\" } }]\n";
        let mut cfg = gateway_toml(port, &sim.base_url(), "UI_SIM_KEY", tokens);
        cfg.push_str(&format!(
            "\n[repository]\nurl = \"sqlite://{}\"\n\n",
            dir.path().join("repo.db").display()
        ));
        cfg.push_str(&format!(
            "[[job]]\nname = \"hello\"\nparams = {{ who = \"world\" }}\n\n\
             [[job.step]]\nname = \"wait\"\n\
             tasklet = {{ kind = \"shell\", command = \"while [ ! -e {} ]; do sleep 0.2; done; echo released\" }}\n\n\
             [[job.step]]\nname = \"after\"\n\
             tasklet = {{ kind = \"shell\", command = \"echo done\" }}\n\n\
             [[job.trigger]]\nname = \"hourly\"\nkind = \"every\"\nevery = \"1h\"\n\n",
            gate.display()
        ));
        cfg.push_str(&shell_job_toml("boom", "fail", "echo no luck; exit 3"));
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, cfg).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "-c"])
            .arg(&path)
            .envs([
                ("UI_ADM", ADMIN),
                ("UI_OPS", OPS),
                ("UI_RO", RO),
                ("UI_SIM_KEY", SIM_KEY),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap())
            .spawn()
            .unwrap();
        let guard = KillOnDrop(child.id());
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let up = http.get(format!("{base}/readyz")).send().await;
            if up.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(
                Instant::now() < end,
                "sluice serve did not get ready:\n{}",
                std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Self {
            child: Some(child),
            _guard: guard,
            base,
            gate,
            http,
            _sim: sim,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /api/v1{path}` with `token`.
    async fn api(&self, token: &str, path: &str) -> Value {
        let r = self
            .http
            .get(self.url(&format!("/api/v1{path}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "GET /api/v1{path}");
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }

    /// `POST /api/v1{path}` with `token` and `body`.
    async fn api_post(&self, token: &str, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(self.url(&format!("/api/v1{path}")))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "POST /api/v1{path}: {}",
            r.status()
        );
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }

    /// Logs in with `token`: the session cookie (`name=value`).
    async fn session(&self, token: &str) -> String {
        let r = self
            .http
            .post(self.url("/ui/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("token", token)]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "login");
        assert_eq!(r.headers()["location"], "/ui");
        let c = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
        c.split(';').next().unwrap().to_owned()
    }

    /// Waits until the dead-letter queue `jobs` holds `n` tasks.
    async fn wait_dead(&self, n: usize) {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let d = self.api(OPS, "/queues/jobs/dead").await;
            if d["items"].as_array().unwrap().len() == n {
                return;
            }
            assert!(Instant::now() < end, "never {n} dead tasks: {d}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn stop(mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
    }
}

/// A form body of `fields`.
fn form(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// The pages the tests visit.
const PAGES: &[&str] = &[
    "/ui",
    "/ui/jobs",
    "/ui/jobs/hello",
    "/ui/executions/1",
    "/ui/schedule",
    "/ui/queues",
    "/ui/queues/jobs",
    "/ui/cache",
    "/ui/audit",
    "/ui/events?page=/ui",
    "/ui/fragments?page=/ui",
];

/// The actions, with a body that would do something.
const ACTIONS: &[(&str, &str)] = &[
    ("/ui/act/run", "job=hello"),
    ("/ui/act/stop", "id=1"),
    ("/ui/act/restart", "id=1"),
    ("/ui/act/pause", "trigger=hello/hourly"),
    ("/ui/act/resume", "trigger=hello/hourly"),
    ("/ui/act/retry", "queue=jobs&all=1"),
    ("/ui/act/delete", "queue=jobs&all=1"),
    ("/ui/act/preview", "queue=jobs&kind=retry"),
    ("/ui/act/purge", "url=/air/x"),
    ("/ui/logout", ""),
];

/// Without a session every page goes to the login page and every action is
/// refused; a forged cookie likewise; a session without the CSRF token is
/// refused (403), a viewer's too; wrong tokens do not log in; no token is ever
/// in a page; the assets are served with their types and long caching.
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_pages_and_actions_need_a_session_csrf_and_the_role() {
    let s = Server::start().await;
    let forged = "sluice_session=v1.ops.9999999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for p in PAGES {
        for cookie in ["", forged] {
            let r = s
                .http
                .get(s.url(p))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 303, "GET {p} with cookie {cookie:?}");
            assert_eq!(r.headers()["location"], "/ui/login", "GET {p}");
        }
    }
    let ops = s.session(OPS).await;
    let ro = s.session(RO).await;
    let page = s
        .http
        .get(s.url("/ui/jobs"))
        .header("cookie", &ops)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|x| x.split('"').next())
        .unwrap()
        .to_owned();
    let ro_page = s
        .http
        .get(s.url("/ui/jobs"))
        .header("cookie", &ro)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ro_csrf = ro_page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|x| x.split('"').next())
        .unwrap()
        .to_owned();
    for (a, body) in ACTIONS {
        let post = |cookie: &str, body: String| {
            s.http
                .post(s.url(a))
                .header("cookie", cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
        };
        let none = post("", body.to_string()).await.unwrap().status();
        assert_eq!(none, 401, "POST {a} without a session");
        let bad = post(forged, format!("{body}&csrf={csrf}"))
            .await
            .unwrap()
            .status();
        assert_eq!(bad, 401, "POST {a} with a forged session");
        let no_csrf = post(&ops, body.to_string()).await.unwrap().status();
        assert_eq!(no_csrf, 403, "POST {a} without the CSRF token");
        let wrong_csrf = post(&ops, format!("{body}&csrf={ro_csrf}"))
            .await
            .unwrap()
            .status();
        assert_eq!(
            wrong_csrf, 403,
            "POST {a} with another session's CSRF token"
        );
        if *a != "/ui/logout" {
            let viewer = post(&ro, format!("{body}&csrf={ro_csrf}"))
                .await
                .unwrap()
                .status();
            assert_eq!(viewer, 403, "POST {a} as a viewer");
        }
    }
    // The header works as well as the field; an operator may not delete.
    let r = s
        .http
        .post(s.url("/ui/act/delete"))
        .header("cookie", &ops)
        .header("x-csrf-token", &csrf)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("queue", "jobs"), ("all", "1")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "an operator deletes no dead task");
    let r = s
        .http
        .post(s.url("/ui/act/pause"))
        .header("cookie", &ops)
        .header("x-csrf-token", &csrf)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("trigger", "hello/hourly"),
            ("back", "https://evil.example/"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        "/ui",
        "back never leaves the dashboard"
    );
    let t = s.api(OPS, "/triggers?paused=true").await;
    assert_eq!(t["items"][0]["id"], "hello/hourly", "{t}");

    // Wrong tokens: the form again, 401; no token echoed anywhere.
    let r = s
        .http
        .post(s.url("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("token", "ui-operator-token-012345678")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("not valid") && body.contains("name=\"token\""),
        "{body}"
    );
    assert!(!body.contains("ui-operator-token-012345678"), "{body}");
    let admin = s.session(ADMIN).await;
    for p in &PAGES[..9] {
        for c in [&ops, &ro, &admin] {
            let r = s
                .http
                .get(s.url(p))
                .header("cookie", c)
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                if *p == "/ui/executions/1" { 404 } else { 200 },
                "GET {p}"
            );
            let h = r.text().await.unwrap();
            for secret in [ADMIN, OPS, RO, SIM_KEY] {
                assert!(!h.contains(secret), "{p} shows a secret");
            }
        }
    }
    for (file, ty) in [
        ("htmx.min.js", "text/javascript"),
        ("uPlot.iife.min.js", "text/javascript"),
        ("uPlot.min.css", "text/css"),
        ("sluice.css", "text/css"),
        ("sluice.js", "text/javascript"),
    ] {
        let r = s
            .http
            .get(s.url(&format!("/ui/assets/{file}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{file}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(ty)
        );
        assert!(
            r.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        assert!(r.bytes().await.unwrap().len() > 500, "{file}");
    }
    s.stop();
}

/// A chromedriver on a free port, ended when dropped.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn browser() -> (Client, Driver) {
    for cmd in ["chromium", "chromedriver"] {
        assert!(
            on_path(cmd),
            "{cmd} is not installed: run scripts/test (it installs Debian's chromium and chromium-driver), \
             or apt-get install -y chromium chromium-driver"
        );
    }
    let port = sluice_testkit::free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver {
        child,
        port,
        _profile: tempfile::tempdir().unwrap(),
    };
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("http://127.0.0.1:{}/status", driver.port))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < end, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1000",
                format!("--user-data-dir={}", driver._profile.path().display()),
            ],
        }),
    );
    let c = ClientBuilder::rustls()
        .unwrap()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap();
    (c, driver)
}

/// Where the screenshots go: `$CARGO_TARGET_DIR/ui-screenshots` (or
/// `target/ui-screenshots`).
fn shots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    let d = target.join("ui-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Distinct colours of a PNG.
fn colours(png_bytes: &[u8]) -> usize {
    let mut dec = png::Decoder::new(std::io::Cursor::new(png_bytes));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let mut seen = std::collections::HashSet::new();
    for p in buf[..info.buffer_size()].chunks(px) {
        seen.insert(p.to_vec());
        if seen.len() > 1000 {
            break;
        }
    }
    seen.len()
}

/// The page's text (empty while a navigation replaces the page).
async fn text(c: &Client) -> String {
    match c.find(Locator::Css("body")).await {
        Ok(b) => b.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Saves the screenshot `NAME.png`, checks it is a rendered page (not tiny,
/// not one colour) and that the page's text holds `words`.
async fn shot(c: &Client, dir: &Path, name: &str, words: &[&str]) {
    let png = c.screenshot().await.unwrap();
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, &png).unwrap();
    assert!(png.len() > 5_000, "{}: {} bytes", path.display(), png.len());
    let n = colours(&png);
    assert!(n > 50, "{}: only {n} colours", path.display());
    let t = text(c).await;
    for w in words {
        assert!(t.contains(w), "{name}: no {w:?} in the page:\n{t}");
    }
}

/// Waits until the page's text holds `want`.
async fn wait_text(c: &Client, want: &str, what: &str) -> String {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let t = text(c).await;
        if t.contains(want) {
            return t;
        }
        assert!(Instant::now() < end, "{what}: no {want:?} in\n{t}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Clicks the first element matching `css`, finding it again when a live
/// update replaced it between the finding and the click.
async fn click(c: &Client, css: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let r = match c.find(Locator::Css(css)).await {
            Ok(el) => el.click().await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => return,
            Err(e) => assert!(Instant::now() < end, "cannot click {css}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn login(c: &Client, s: &Server, token: &str) {
    c.goto(&s.url("/ui/login")).await.unwrap();
    c.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    click(c, "button[data-action=login]").await;
    wait_text(c, "Requests/s", "the overview after login").await;
}

/// An operator logs in, runs a job and watches its execution page reach
/// COMPLETED without a reload, pauses a trigger, retries a dead task, purges
/// a cache key; a viewer sees no action button. Every page is screenshot.
#[tokio::test(flavor = "multi_thread")]
async fn an_operator_drives_the_dashboard_in_a_browser_and_a_viewer_only_reads() {
    let s = Server::start().await;
    let dir = shots_dir();
    // A dead task.
    s.api_post(OPS, "/jobs/boom/runs", json!({})).await;
    s.wait_dead(1).await;

    let (c, _driver) = browser().await;
    login(&c, &s, OPS).await;
    shot(
        &c,
        &dir,
        "overview",
        &[
            "Requests/s",
            "Hit ratio",
            "Upstream calls saved",
            "airkorea",
            "Quota left",
            "Alerts firing",
        ],
    )
    .await;

    c.goto(&s.url("/ui/jobs")).await.unwrap();
    shot(&c, &dir, "jobs", &["hello", "boom", "wait → after", "Run"]).await;

    // Run hello from its page; its execution appears in the live list.
    c.goto(&s.url("/ui/jobs/hello")).await.unwrap();
    click(&c, "form.run button[data-action=run]").await;
    wait_text(&c, "run of hello enqueued as task", "the run's message").await;
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if c.find(Locator::Css("#job-recent a.exec")).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < end,
            "the execution never showed on the job page"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shot(
        &c,
        &dir,
        "job",
        &["Recent executions", "Triggers", "hello/hourly"],
    )
    .await;
    click(&c, "#job-recent a.exec").await;
    let t = wait_text(&c, "STARTED", "the execution runs (waiting for its gate)").await;
    assert!(!t.contains("COMPLETED"), "{t}");
    c.execute("window.__noReload = 42;", vec![]).await.unwrap();
    std::fs::write(&s.gate, "go").unwrap();
    let t = wait_text(&c, "execution COMPLETED", "the live execution page").await;
    let still = c
        .execute("return window.__noReload;", vec![])
        .await
        .unwrap();
    assert_eq!(still, json!(42), "the page was reloaded");
    assert!(t.contains("Steps 2 of 2") && t.contains("released"), "{t}");
    shot(
        &c,
        &dir,
        "execution",
        &["COMPLETED", "wait", "after", "Log", "Skipped items"],
    )
    .await;

    // Pause the trigger.
    c.goto(&s.url("/ui/schedule")).await.unwrap();
    click(&c, "button[data-action=pause]").await;
    wait_text(&c, "trigger hello/hourly paused", "the pause's message").await;
    let t = s.api(OPS, "/triggers?paused=true").await;
    assert_eq!(t["items"][0]["id"], "hello/hourly", "{t}");
    shot(&c, &dir, "schedule", &["hello/hourly", "paused", "Resume"]).await;

    // The dead task: the preview counts it, Retry sends it back.
    c.goto(&s.url("/ui/queues")).await.unwrap();
    shot(
        &c,
        &dir,
        "queues",
        &["jobs", "Dead", "Workers", "Depth of jobs"],
    )
    .await;
    c.goto(&s.url("/ui/queues/jobs")).await.unwrap();
    click(&c, "summary[data-action=retry-all-open]").await;
    wait_text(&c, "1 task(s) match.", "the retry preview").await;
    shot(
        &c,
        &dir,
        "dead-letters",
        &["Dead letters", "job.run", "exit code 3", "Retry"],
    )
    .await;
    click(&c, "#q-dead button[data-action=retry]").await;
    wait_text(
        &c,
        "1 dead task(s) of jobs back in the queue",
        "the retry's message",
    )
    .await;

    // A cached key (a miss, then a hit; the route's TTL is a minute), purged.
    for _ in 0..2 {
        let r = s.http.get(s.url(CACHED)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(s.api(OPS, "/cache").await["entries"], 1);
    c.goto(&s.url("/ui/cache")).await.unwrap();
    c.find(Locator::Css("input[name=url]"))
        .await
        .unwrap()
        .send_keys(CACHED)
        .await
        .unwrap();
    click(&c, "button[data-action=purge-url]").await;
    wait_text(&c, "purged 1 entry", "the purge's message").await;
    assert_eq!(s.api(OPS, "/cache").await["entries"], 0);
    shot(
        &c,
        &dir,
        "cache",
        &["Store", "memory", "Routes", "air", "Purge"],
    )
    .await;

    c.goto(&s.url("/ui/audit")).await.unwrap();
    shot(
        &c,
        &dir,
        "audit",
        &[
            "job.run",
            "trigger.pause",
            "dead.retry",
            "cache.purge",
            "ops (operator)",
        ],
    )
    .await;

    // The viewer: the same pages, no action.
    click(&c, "button[data-action=logout]").await;
    c.find(Locator::Css("input[name=token]")).await.unwrap();
    login(&c, &s, RO).await;
    let id = exec_id(&s).await;
    for p in [
        "/ui".to_owned(),
        "/ui/jobs".into(),
        "/ui/jobs/hello".into(),
        format!("/ui/executions/{id}"),
        "/ui/schedule".into(),
        "/ui/queues/jobs".into(),
        "/ui/cache".into(),
    ] {
        c.goto(&s.url(&p)).await.unwrap();
        let actions = c
            .find_all(Locator::Css(
                "[data-action]:not([data-action=logout]), form[method=post]:not([action='/ui/logout'])",
            ))
            .await
            .unwrap();
        assert!(
            actions.is_empty(),
            "{p}: a viewer sees {} action(s)",
            actions.len()
        );
    }
    c.goto(&s.url("/ui/jobs")).await.unwrap();
    shot(
        &c,
        &dir,
        "viewer-jobs",
        &["ro (viewer)", "hello", "COMPLETED"],
    )
    .await;
    c.close().await.unwrap();
    s.stop();
}

/// The id of `hello`'s execution.
async fn exec_id(s: &Server) -> i64 {
    let e = s.api(OPS, "/executions?job=hello").await;
    e["items"][0]["id"].as_i64().unwrap()
}
