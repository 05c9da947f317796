//! The REST API under `/api/v1` (issue #15 points 1 and 8) against a real
//! `sluice serve` with a simulated upstream, a job that succeeds, one that
//! fails into the dead-letter queue and a trigger: the OpenAPI document lists
//! every route and each answers; every route refuses a missing, forged or
//! expired credential, a viewer's state change, an operator's admin action and
//! a cookie request without its CSRF token; no answer shows a secret; and
//! operators steer jobs, triggers, dead letters and the cache, each action in
//! the audit log.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::bin::{BIN, gateway_toml, shell_job_toml, sim};

const ADMIN: &str = "api-test-admin-token-0123";
const OPERATOR: &str = "api-test-operator-token-0123";
const VIEWER: &str = "api-test-viewer-token-0123";
const SIM_KEY: &str = "api-test-sim-key==";

/// Every operation the API serves: `(method, path template)`.
const OPERATIONS: &[(&str, &str)] = &[
    ("GET", "/alerts"),
    ("GET", "/audit"),
    ("GET", "/cache"),
    ("POST", "/cache/purge"),
    ("GET", "/cache/top"),
    ("GET", "/executions"),
    ("GET", "/executions/{id}"),
    ("POST", "/executions/{id}/restart"),
    ("POST", "/executions/{id}/stop"),
    ("GET", "/jobs"),
    ("GET", "/jobs/{name}"),
    ("POST", "/jobs/{name}/runs"),
    ("GET", "/overview"),
    ("GET", "/queues"),
    ("GET", "/queues/{name}"),
    ("GET", "/queues/{name}/dead"),
    ("POST", "/queues/{name}/dead/delete"),
    ("POST", "/queues/{name}/dead/retry"),
    ("POST", "/queues/{name}/pause"),
    ("POST", "/queues/{name}/resume"),
    ("GET", "/queues/{name}/tasks/{id}"),
    ("POST", "/queues/{name}/tasks/{id}/cancel"),
    ("GET", "/routes"),
    ("GET", "/routes/{name}"),
    ("GET", "/series"),
    ("GET", "/triggers"),
    ("POST", "/triggers/{id}/pause"),
    ("POST", "/triggers/{id}/resume"),
    ("GET", "/upstreams"),
    ("GET", "/upstreams/{name}"),
    ("GET", "/whoami"),
    ("GET", "/workers"),
];

/// The role each state-changing operation needs (the rest need a viewer).
fn needs(method: &str, path: &str) -> &'static str {
    match (method, path) {
        ("GET", _) => "viewer",
        (_, "/queues/{name}/dead/delete") => "admin",
        _ => "operator",
    }
}

struct Node {
    port: u16,
    client: Client,
    child: std::process::Child,
    _dir: tempfile::TempDir,
    _sim: sluice_testkit::SimUpstream,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    async fn start() -> Node {
        let up = sim(Duration::from_millis(1), SIM_KEY).await;
        let dir = tempfile::tempdir().unwrap();
        let port = sluice_testkit::free_port();
        let tokens = "admin_token = { env = \"T_ADMIN\" }\n\
             tokens = [{ name = \"op\", role = \"operator\", token = { env = \"T_OP\" } }, \
             { name = \"ro\", role = \"viewer\", token = { env = \"T_RO\" } }]";
        let cfg = dir.path().join("sluice.toml");
        let text = format!(
            "{}\n[repository]\nurl = \"sqlite://{}\"\nseries_interval = \"1s\"\n\n{}\n\
             [[job.trigger]]\nkind = \"every\"\nevery = \"1h\"\n\n{}",
            gateway_toml(port, &up.base_url(), "T_SIM", tokens),
            dir.path().join("repo.db").display(),
            shell_job_toml("ok", "say", "echo hi"),
            shell_job_toml("broken", "fail", "exit 3"),
        );
        std::fs::write(&cfg, text).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "-c"])
            .arg(&cfg)
            .envs([
                ("T_ADMIN", ADMIN),
                ("T_OP", OPERATOR),
                ("T_RO", VIEWER),
                ("T_SIM", SIM_KEY),
                ("RUST_LOG", "warn"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        sluice::init_tls();
        let node = Node {
            port,
            client: Client::builder().no_proxy().build().unwrap(),
            child,
            _dir: dir,
            _sim: up,
        };
        node.until("never ready", || async {
            node.client
                .get(node.url("/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        node
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `method /api/v1{path}` with `token` (none when empty) and `body`.
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(m, self.url(&format!("/api/v1{path}")));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call("GET", path, VIEWER, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    async fn until<F, Fut>(&self, what: &str, mut ok: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let end = Instant::now() + Duration::from_secs(30);
        while !ok().await {
            assert!(Instant::now() < end, "{what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `job` and waits for its execution to end; the execution.
    async fn run(&self, job: &str) -> Value {
        let (s, v) = self
            .call("POST", &format!("/jobs/{job}/runs"), OPERATOR, None)
            .await;
        assert_eq!(s, 202, "{v}");
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.get(&format!("/executions?job={job}&limit=1")).await;
            if v["items"][0]["ended_at"].is_string() {
                return v["items"][0].clone();
            }
            assert!(Instant::now() < end, "{job} never ended: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A dead task's id on the `jobs` queue (of the broken job).
    async fn dead_task(&self) -> String {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.get("/queues/jobs/dead").await;
            if let Some(id) = v["items"][0]["id"].as_str() {
                return id.to_owned();
            }
            assert!(Instant::now() < end, "no dead letter: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The path of `template` with every parameter filled.
fn fill(template: &str, exec: i64, task: &str) -> String {
    let queue_or_name = if template.starts_with("/queues") {
        "jobs"
    } else if template.starts_with("/upstreams") {
        "airkorea"
    } else if template.starts_with("/routes") {
        "air"
    } else {
        "ok"
    };
    template
        .replace("{name}", queue_or_name)
        .replace("/triggers/{id}", "/triggers/ok%230")
        .replace("/tasks/{id}", &format!("/tasks/{task}"))
        .replace("{id}", &exec.to_string())
}

/// A session cookie of the token `secret` named `name` ending at `expires`,
/// signed the way the server signs them (see `http::api::auth`), or with a
/// wrong signature when `forge`.
fn session(name: &str, secret: &str, expires: i64, forge: bool) -> (String, String) {
    let mac = |parts: &[&str]| {
        let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        for p in parts {
            m.update(p.as_bytes());
            m.update(b"\n");
        }
        m.finalize().into_bytes().to_vec()
    };
    let exp = expires.to_string();
    let mut sig = mac(&["session", name, &exp]);
    if forge {
        sig[0] ^= 1;
    }
    let cookie = format!("v1.{name}.{exp}.{}", B64.encode(sig));
    let csrf = B64.encode(mac(&["csrf", &cookie]));
    (cookie, csrf)
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_each_answers() {
    let node = Node::start().await;
    let r = node
        .client
        .get(node.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), p.clone()))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = OPERATIONS
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(documented, expected, "the document and the routes differ");
    // Each documented operation is routed: none answers "no such route".
    let exec = node.run("ok").await["id"].as_i64().unwrap();
    let task = node.get("/queues/jobs/dead").await["items"][0]["id"]
        .as_str()
        .map_or_else(
            || "01a23c79-d016-7219-99ff-63ef8a1057bc".to_owned(),
            str::to_owned,
        );
    for (m, p) in OPERATIONS {
        let path = fill(p, exec, &task);
        let body = (*m == "POST").then(|| json!({}));
        let (s, v) = node.call(m, &path, ADMIN, body).await;
        assert!(
            s != StatusCode::METHOD_NOT_ALLOWED && v["error"] != "no_route",
            "{m} {path} is documented but not routed: {s} {v}"
        );
        assert!(v.is_object() || v.is_array(), "{m} {path}: not JSON: {v}");
        assert!(s.as_u16() < 500, "{m} {path}: {s} {v}");
    }
    // An unknown path under /api/v1 is a problem too.
    let (s, v) = node.call("GET", "/nothing-here", ADMIN, None).await;
    assert_eq!(
        (s.as_u16(), v["error"].as_str()),
        (404, Some("no_route")),
        "{v}"
    );
}

#[tokio::test]
async fn every_route_refuses_what_its_caller_may_not_do_and_no_answer_shows_a_secret() {
    let node = Node::start().await;
    let exec = node.run("ok").await["id"].as_i64().unwrap();
    let task = "01a23c79-d016-7219-99ff-63ef8a1057bc";
    let now = chrono::Utc::now().timestamp();
    let (good, csrf) = session("op", OPERATOR, now + 600, false);
    let (forged, _) = session("op", OPERATOR, now + 600, true);
    let (expired, expired_csrf) = session("op", OPERATOR, now - 1, false);
    let (viewer_cookie, viewer_csrf) = session("ro", VIEWER, now + 600, false);
    let raw = |m: &str, path: &str, headers: Vec<(&str, String)>| {
        let m = Method::from_bytes(m.as_bytes()).unwrap();
        let mut req = node
            .client
            .request(m, node.url(&format!("/api/v1{path}")))
            .header("content-type", "application/json")
            .body("{}");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let cookie = |c: &str| ("cookie", format!("sluice_session={c}"));
    for (m, p) in OPERATIONS {
        let path = fill(p, exec, task);
        let what = format!("{m} {path}");
        assert_eq!(raw(m, &path, vec![]).await, 401, "{what} without a token");
        let bad = (
            "authorization",
            "Bearer not-a-real-token-0123456789".to_owned(),
        );
        assert_eq!(
            raw(m, &path, vec![bad]).await,
            401,
            "{what} with a bad token"
        );
        let forged_csrf = ("x-csrf-token", csrf.clone());
        assert_eq!(
            raw(m, &path, vec![cookie(&forged), forged_csrf]).await,
            401,
            "{what} with a forged cookie"
        );
        let ex = ("x-csrf-token", expired_csrf.clone());
        assert_eq!(
            raw(m, &path, vec![cookie(&expired), ex]).await,
            401,
            "{what} with an expired cookie"
        );
        let role = needs(m, p);
        let viewer = raw(
            m,
            &path,
            vec![("authorization", format!("Bearer {VIEWER}"))],
        )
        .await;
        let viewer_by_cookie = raw(
            m,
            &path,
            vec![
                cookie(&viewer_cookie),
                ("x-csrf-token", viewer_csrf.clone()),
            ],
        )
        .await;
        if role == "viewer" {
            assert!(
                ![401, 403].contains(&viewer),
                "{what} refused a viewer: {viewer}"
            );
            assert!(
                ![401, 403].contains(&viewer_by_cookie),
                "{what}: {viewer_by_cookie}"
            );
            continue;
        }
        assert_eq!(viewer, 403, "{what} let a viewer through");
        assert_eq!(
            viewer_by_cookie, 403,
            "{what} let a viewer's session through"
        );
        // A session without its CSRF token, or with another session's, changes nothing.
        assert_eq!(
            raw(m, &path, vec![cookie(&good)]).await,
            403,
            "{what} without CSRF"
        );
        let other = ("x-csrf-token", viewer_csrf.clone());
        assert_eq!(
            raw(m, &path, vec![cookie(&good), other]).await,
            403,
            "{what} with another CSRF"
        );
        let op = raw(
            m,
            &path,
            vec![("authorization", format!("Bearer {OPERATOR}"))],
        )
        .await;
        if role == "admin" {
            assert_eq!(op, 403, "{what} let an operator through");
        } else {
            assert!(
                ![401, 403].contains(&op),
                "{what} refused an operator: {op}"
            );
        }
    }
    // Bulk cache purges are admin's; a key is an operator's.
    let purge =
        |token: &'static str, body: Value| node.call("POST", "/cache/purge", token, Some(body));
    assert_eq!(purge(OPERATOR, json!({"route": "air"})).await.0, 403);
    assert_eq!(purge(OPERATOR, json!({"prefix": "air:"})).await.0, 403);
    assert_eq!(purge(ADMIN, json!({"route": "air"})).await.0, 200);
    assert_eq!(purge(OPERATOR, json!({"key": "air:/x"})).await.0, 200);
    // A valid session with its CSRF token works.
    let ok = raw(
        "POST",
        "/triggers/ok%230/resume",
        vec![cookie(&good), ("x-csrf-token", csrf.clone())],
    )
    .await;
    assert_eq!(ok, 200);

    // No answer shows a token or the upstream's key.
    let gw = node
        .client
        .get(node.url("/air/getCtprvnRltmMesureDnsty?sidoName=x&returnType=json"))
        .send()
        .await
        .unwrap();
    assert_eq!(gw.status(), 200);
    let mut pages = vec![
        node.client
            .get(node.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        node.client
            .get(node.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    ];
    for (m, p) in OPERATIONS.iter().filter(|(m, _)| *m == "GET") {
        let (_, v) = node.call(m, &fill(p, exec, task), ADMIN, None).await;
        pages.push(v.to_string());
    }
    let encoded_key = sluice_upstream::encode_component(SIM_KEY);
    for page in &pages {
        for secret in [ADMIN, OPERATOR, VIEWER, SIM_KEY, encoded_key.as_str()] {
            assert!(!page.contains(secret), "a secret shows in {page}");
        }
    }
}

#[tokio::test]
async fn operators_steer_jobs_triggers_dead_letters_and_the_cache() {
    let node = Node::start().await;
    assert_eq!(
        node.get("/whoami").await,
        json!({"name": "ro", "role": "viewer"})
    );

    // Runs, their pages, filters and cursors.
    let first = node.run("ok").await;
    assert_eq!(first["status"], "COMPLETED", "{first}");
    let second = node.run("ok").await;
    let broken = node.run("broken").await;
    assert_eq!(broken["status"], "FAILED", "{broken}");
    let page1 = node.get("/executions?limit=1").await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 1);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let page2 = node
        .get(&format!("/executions?limit=1&cursor={cursor}"))
        .await;
    assert!(page2["items"][0]["id"].as_i64() < page1["items"][0]["id"].as_i64());
    let failed = node.get("/executions?status=FAILED").await;
    assert!(
        failed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["job_name"] == "broken")
    );
    let (s, v) = node
        .call("GET", "/executions?status=SOMETIMES", VIEWER, None)
        .await;
    assert_eq!(
        (s.as_u16(), v["error"].as_str()),
        (400, Some("bad_status")),
        "{v}"
    );
    let (s, _) = node.call("GET", "/executions?limit=0", VIEWER, None).await;
    assert_eq!(s, 400);
    let detail = node.get(&format!("/executions/{}", broken["id"])).await;
    assert_eq!(detail["steps"][0]["step_name"], "fail");
    assert!(
        detail["steps"][0]["exit_message"]
            .as_str()
            .unwrap()
            .contains("exit"),
        "{detail}"
    );
    let log = detail["log"].to_string();
    assert!(
        log.contains("step fail FAILED") && log.contains("execution FAILED"),
        "{log}"
    );
    assert_eq!(detail["progress"]["steps_total"], 1);
    let jobs = node.get("/jobs?status=COMPLETED").await;
    assert_eq!(jobs["items"][0]["name"], "ok", "{jobs}");
    assert_eq!(node.get("/jobs?q=brok").await["items"][0]["name"], "broken");
    let job = node.get("/jobs/ok").await;
    assert_eq!(job["triggers"][0]["id"], "ok#0", "{job}");
    // Stop and restart know what they may do.
    let id = second["id"].as_i64().unwrap();
    let (s, v) = node
        .call("POST", &format!("/executions/{id}/stop"), OPERATOR, None)
        .await;
    assert_eq!(
        (s.as_u16(), v["error"].as_str()),
        (409, Some("not_running")),
        "{v}"
    );
    let (s, _) = node
        .call("POST", &format!("/executions/{id}/restart"), OPERATOR, None)
        .await;
    assert_eq!(s, 409);
    let (s, v) = node
        .call(
            "POST",
            &format!("/executions/{}/restart", broken["id"]),
            OPERATOR,
            None,
        )
        .await;
    assert_eq!(s, 202, "{v}");
    let (s, v) = node.call("POST", "/jobs/nope/runs", OPERATOR, None).await;
    assert_eq!(
        (s.as_u16(), v["error"].as_str()),
        (404, Some("no_job")),
        "{v}"
    );

    // A trigger paused until a time, then resumed.
    let (s, v) = node
        .call(
            "POST",
            "/triggers/ok%230/pause",
            OPERATOR,
            Some(json!({"until": "2099-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let t = node.get("/triggers?paused=true").await;
    assert_eq!(t["items"][0]["id"], "ok#0", "{t}");
    assert_eq!(t["items"][0]["paused_until"], "2099-01-01T00:00:00.000Z");
    let (s, _) = node
        .call(
            "POST",
            "/triggers/ok%230/pause",
            OPERATOR,
            Some(json!({"until": "yesterday"})),
        )
        .await;
    assert_eq!(s, 400);
    node.call("POST", "/triggers/ok%230/resume", OPERATOR, None)
        .await;
    assert_eq!(node.get("/triggers?paused=true").await["items"], json!([]));

    // Dead letters: preview, filter, retry, delete (admin).
    node.dead_task().await;
    let dead = node.get("/queues/jobs/dead?task=job.run").await;
    let n = dead["items"].as_array().unwrap().len() as u64;
    assert!(n >= 1, "{dead}");
    let retry = |body: Value| node.call("POST", "/queues/jobs/dead/retry", OPERATOR, Some(body));
    let (_, v) = retry(json!({"dry_run": true})).await;
    assert_eq!(v, json!({"matched": n, "affected": 0, "dry_run": true}));
    let (_, v) = retry(json!({"filter": {"error": "no such error text"}})).await;
    assert_eq!(v["matched"], 0);
    let (_, v) = retry(json!({"filter": {"error": "exit code 3"}})).await;
    assert_eq!(v["affected"], n, "{v}");
    let id = node.dead_task().await;
    let (s, _) = node
        .call(
            "POST",
            "/queues/jobs/dead/delete",
            OPERATOR,
            Some(json!({"ids": [id]})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, v) = node
        .call(
            "POST",
            "/queues/jobs/dead/delete",
            ADMIN,
            Some(json!({"ids": [id, "not-an-id"]})),
        )
        .await;
    assert_eq!(
        (s.as_u16(), v["error"].as_str()),
        (400, Some("bad_task_id")),
        "{v}"
    );
    let q = node.get("/queues/jobs").await;
    assert!(q["dead"].as_u64().unwrap() >= 1 && q["workers"] == 1, "{q}");
    let w = node.get("/workers").await;
    assert!(
        w["items"][0]["heartbeat_age_seconds"].as_f64().unwrap() < 60.0,
        "{w}"
    );

    // A paused queue keeps its tasks until resumed.
    let (s, v) = node
        .call("POST", "/queues/jobs/pause", OPERATOR, None)
        .await;
    assert_eq!((s.as_u16(), &v["paused"]), (200, &json!(true)), "{v}");
    assert_eq!(node.get("/queues/jobs").await["paused"], true);
    // Workers read the pauses at most once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = node.get("/executions?job=ok").await["items"]
        .as_array()
        .unwrap()
        .len();
    let (s, _) = node
        .call(
            "POST",
            "/jobs/ok/runs",
            OPERATOR,
            Some(json!({"rerun": true})),
        )
        .await;
    assert_eq!(s, 202);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let q = node.get("/queues/jobs").await;
    assert_eq!(q["ready"], 1, "a paused queue's task ran: {q}");
    assert!(
        q["oldest_ready_age_seconds"].as_f64().unwrap() >= 1.0,
        "{q}"
    );
    assert_eq!(
        node.get("/executions?job=ok").await["items"]
            .as_array()
            .unwrap()
            .len(),
        before
    );
    node.call("POST", "/queues/jobs/resume", OPERATOR, None)
        .await;
    node.until("the resumed queue's task never ran", || async {
        node.get("/executions?job=ok").await["items"]
            .as_array()
            .unwrap()
            .len()
            > before
    })
    .await;

    // The cache: a miss then a hit, seen per route, per upstream and as top keys.
    let path = "/air/getCtprvnRltmMesureDnsty?sidoName=x&returnType=json";
    for _ in 0..2 {
        let r = node.client.get(node.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let route = node.get("/routes/air").await;
    assert_eq!(
        (route["total"].as_u64(), route["upstream_calls"].as_u64()),
        (Some(2), Some(1)),
        "{route}"
    );
    assert_eq!(route["hit_ratio"], 0.5);
    assert_eq!(route["calls_saved"], 1);
    let up = node.get("/upstreams/airkorea").await;
    assert_eq!(up["calls_by_gateway"], 1, "{up}");
    assert_eq!(up["calls_by_jobs"], 0, "{up}");
    let top = node.get("/cache/top").await;
    assert_eq!(top[0]["requests"], 2, "{top}");
    assert_eq!(top[0]["hits"], 1, "{top}");
    let (s, v) = node
        .call("POST", "/cache/purge", OPERATOR, Some(json!({"url": path})))
        .await;
    assert_eq!((s.as_u16(), v["purged"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(node.get("/cache").await["entries"], 0);

    // Every action is in the audit log, with who did it; filters and pages.
    let audit = node.get("/audit?actor=op").await;
    let actions: BTreeSet<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "job.run",
        "execution.restart",
        "trigger.pause",
        "trigger.resume",
        "dead.retry",
        "cache.purge",
        "queue.pause",
        "queue.resume",
    ] {
        assert!(actions.contains(a), "{a} not audited: {audit}");
    }
    assert_eq!(
        node.get("/audit?action=dead.retry&limit=1").await["items"][0]["actor"],
        "op"
    );
    // The chart series are sampled into the repository.
    node.until("no series sampled", || async {
        let v = node.get("/series?name=hit_ratio&window=1h").await;
        v[0]["points"].as_array().is_some_and(|p| !p.is_empty())
    })
    .await;
    let o = node.get("/overview").await;
    assert_eq!(o["jobs"]["configured"], 2, "{o}");
    assert!(o["jobs"]["failed_24h"].as_u64().unwrap() >= 1, "{o}");
    assert_eq!(o["upstreams"][0]["name"], "airkorea");
}

/// `sluice top --once` prints the overview from the API; without a token it
/// says which variable to set.
#[tokio::test]
async fn sluice_top_shows_the_overview_from_the_api() {
    let node = Node::start().await;
    node.run("ok").await;
    let url = node.url("");
    let out = Command::new(BIN)
        .args(["top", "--once", "--url", &url])
        .env("SLUICE_TOKEN", VIEWER)
        .output()
        .unwrap();
    let text = crate::bin::text(&out);
    assert!(out.status.success(), "{text}");
    for want in [
        "GATEWAY",
        "hit ratio",
        "UPSTREAM",
        "airkorea",
        "JOBS     2 configured",
        "QUEUE",
        "jobs",
        "workers alive: 1",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    assert!(!text.contains(VIEWER), "{text}");
    let out = Command::new(BIN)
        .args(["top", "--once", "--url", &url])
        .env_remove("SLUICE_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", crate::bin::text(&out));
    assert!(crate::bin::text(&out).contains("set SLUICE_TOKEN"));
    let out = Command::new(BIN)
        .args(["top", "--once", "--url", &url])
        .env("SLUICE_TOKEN", "wrong-token-0123456789")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        crate::bin::text(&out).contains("401"),
        "{}",
        crate::bin::text(&out)
    );
}

/// Bad `[[server.tokens]]` are config errors naming the key.
#[test]
fn bad_tokens_are_config_errors_naming_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("t.toml");
    let cases = [
        (
            "[{ name = \"a\", role = \"boss\", token = { env = \"T1\" } }]",
            "server.tokens[0].role",
            "unknown role",
        ),
        (
            "[{ name = \"a b\", role = \"viewer\", token = { env = \"T1\" } }]",
            "server.tokens[0].name",
            "not a token name",
        ),
        (
            "[{ name = \"admin\", role = \"viewer\", token = { env = \"T1\" } }]",
            "server.tokens[0].name",
            "already defined",
        ),
        (
            "[{ name = \"a\", role = \"viewer\", token = { env = \"SHORT\" } }]",
            "server.tokens[0].token",
            "at least 16",
        ),
        (
            "[{ name = \"a\", role = \"viewer\", token = { env = \"T1\" } }, { name = \"b\", role = \"admin\", token = { env = \"T1\" } }]",
            "server.tokens[1].token",
            "same value",
        ),
        (
            "[{ name = \"a\", role = \"viewer\", token = \"inline-0123456789abc\" }]",
            "token",
            "never written inline",
        ),
    ];
    for (tokens, key, what) in cases {
        std::fs::write(
            &cfg,
            format!("[server]\nadmin_token = {{ env = \"T0\" }}\ntokens = {tokens}\n"),
        )
        .unwrap();
        let out = crate::bin::check(
            &cfg,
            &[
                ("T0", "admin-token-0123456789"),
                ("T1", "token-one-0123456789"),
                ("SHORT", "short"),
            ],
        );
        let text = crate::bin::text(&out);
        assert_eq!(out.status.code(), Some(2), "{tokens}: {text}");
        assert!(
            text.contains(key) && text.contains(what),
            "{tokens}: want {key} / {what}: {text}"
        );
        assert!(
            !text.contains("token-one-0123456789"),
            "a token shows: {text}"
        );
    }
}

/// `sluice demo` tours the gateway, then the whole node: a scheduled paged
/// load into SQLite with its progress, a failing run, its alert firing and
/// resolving through a signed webhook (issue #15 point 10).
#[test]
fn the_demo_tours_the_gateway_then_a_scheduled_load_and_its_alert() {
    let out = Command::new(BIN).arg("demo").output().unwrap();
    let text = crate::bin::text(&out);
    assert!(out.status.success(), "{text}");
    for want in [
        "100 concurrent cold requests",
        "Batch: job air-load",
        "COMPLETED  read 1000  written 1000",
        "1000 rows upserted",
        "trigger air-load/every-5s paused",
        "execution 2 FAILED",
        "error code 30",
        "webhook   air-load-failed FIRING",
        "HMAC-signed",
        "alert     air-load-failed firing since",
        "webhook   air-load-failed RESOLVED",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    assert!(!text.contains("demo+Key"), "the service key shows:\n{text}");
}
