//! `sluice demo`: a simulated slow upstream, the gateway in front of it, and a
//! short scripted tour that prints what caching changed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sluice_sim::{Fault, SimConfig, SimUpstream};

use crate::config::{Env, Source};
use crate::serve;

const KEY: &str = "demo+Key/abc==";

/// The demo's config, with the simulator at `sim_base`.
fn demo_config(sim_base: &str) -> String {
    include_str!("demo.toml").replace("{SIM}", sim_base)
}

struct Row {
    step: &'static str,
    requests: usize,
    upstream_calls: u64,
    latency: String,
    cache_status: String,
}

async fn get(client: &reqwest::Client, url: &str) -> Result<(u16, String, Duration)> {
    let t = Instant::now();
    let r = client
        .get(url)
        .send()
        .await
        .context("request to the gateway")?;
    let status = r.status().as_u16();
    let cs = r
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let _ = r.bytes().await?;
    Ok((status, cs, t.elapsed()))
}

/// One request, as a row of the tour's table, with its HTTP status and latency.
async fn one(
    client: &reqwest::Client,
    sim: &SimUpstream,
    url: &str,
    step: &'static str,
) -> Result<(u16, Duration, Row)> {
    let c0 = sim.calls();
    let (status, cache_status, took) = get(client, url).await?;
    let row = Row {
        step,
        requests: 1,
        upstream_calls: sim.calls() - c0,
        latency: ms(took),
        cache_status,
    };
    Ok((status, took, row))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Runs the demo; with `keep_running`, leaves both servers up until Ctrl-C.
///
/// # Errors
///
/// When a server cannot start or a step does not behave as the demo expects.
pub async fn run(keep_running: bool) -> Result<()> {
    let sim = SimUpstream::start(SimConfig {
        latency: Duration::from_millis(300),
        service_key: KEY.into(),
        // Ten pages of 100 for the batch tour's load.
        rows_per_sido: 1000,
        ..Default::default()
    })
    .await
    .context("starting the simulated upstream")?;
    let src = Source {
        file: PathBuf::from("<demo>"),
        text: demo_config(&sim.base_url()),
    };
    let env = Env {
        var: &|n| (n == "AIRKOREA_KEY").then(|| KEY.to_owned()),
        clock: Arc::new(sluice_core::SystemClock),
        secrets_optional: false,
    };
    let settings = src.parse()?.resolve(&src, &env)?;
    let running = serve::start(settings).await?;
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = |sido: &str| {
        format!(
            "{base}/air/getCtprvnRltmMesureDnsty?sidoName={sido}&returnType=json&numOfRows=10&pageNo=1"
        )
    };
    outln!(
        "sluice demo: a simulated public-data API answering in ~300 ms, the gateway in front of it\n"
    );
    outln!("  upstream  {}", sim.base_url());
    outln!("  gateway   {base}/air/…\n");

    let mut rows = Vec::new();
    let mut served = 0usize;

    let (st, cold, row) = one(&client, &sim, &url("서울"), "cold request (miss)").await?;
    if st != 200 {
        bail!("cold request answered HTTP {st}");
    }
    served += 1;
    rows.push(row);

    let (_, warm, row) = one(&client, &sim, &url("서울"), "same request again (hit)").await?;
    served += 1;
    rows.push(row);

    let c0 = sim.calls();
    let t = Instant::now();
    for _ in 0..200 {
        get(&client, &url("서울")).await?;
    }
    served += 200;
    rows.push(Row {
        step: "200 warm requests, one by one",
        requests: 200,
        upstream_calls: sim.calls() - c0,
        latency: format!("{} avg", ms(t.elapsed() / 200)),
        cache_status: "hit".into(),
    });

    let c0 = sim.calls();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let c = client.clone();
        let u = url("부산");
        tasks.push(tokio::spawn(async move { get(&c, &u).await }));
    }
    let mut collapsed = 0;
    for task in tasks {
        let (st, cs, _) = task.await??;
        if st != 200 {
            bail!("a coalesced request answered HTTP {st}");
        }
        if cs.contains("collapsed") {
            collapsed += 1;
        }
    }
    served += 100;
    rows.push(Row {
        step: "100 concurrent cold requests",
        requests: 100,
        upstream_calls: sim.calls() - c0,
        latency: format!("{} for all", ms(t.elapsed())),
        cache_status: format!("1 miss, {collapsed} collapsed"),
    });

    // Let the entry go stale (ttl 2 s), then take the upstream down.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    sim.set_fault(Fault::Status(503));
    let (st, _, row) = one(
        &client,
        &sim,
        &url("서울"),
        "upstream down (503), entry stale",
    )
    .await?;
    served += 1;
    if st != 200 {
        bail!("stale-if-error did not serve the stored entry (HTTP {st})");
    }
    rows.push(row);

    sim.set_fault(Fault::GatewayError(30));
    let step = "HTTP 200 with error code 30, nothing stored";
    let (st, _, mut row) = one(&client, &sim, &url("대구"), step).await?;
    served += 1;
    row.latency = format!("{} → HTTP {st}", row.latency);
    rows.push(row);
    sim.set_fault(Fault::None);

    let w = [44, 8, 8, 22];
    outln!(
        "{:<w0$} {:>w1$} {:>w2$} {:>w3$}  cache-status",
        "step",
        "requests",
        "upstream",
        "latency",
        w0 = w[0],
        w1 = w[1],
        w2 = w[2],
        w3 = w[3]
    );
    outln!("{}", "-".repeat(w.iter().sum::<usize>() + 40));
    for r in &rows {
        outln!(
            "{:<w0$} {:>w1$} {:>w2$} {:>w3$}  {}",
            r.step,
            r.requests,
            r.upstream_calls,
            r.latency,
            r.cache_status,
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        );
    }
    outln!("{}", "-".repeat(w.iter().sum::<usize>() + 40));
    outln!(
        "{served} requests served with {} upstream calls; cold {} vs warm {} ({:.0}× faster).",
        sim.calls(),
        ms(cold),
        ms(warm),
        cold.as_secs_f64() / warm.as_secs_f64().max(1e-6)
    );
    outln!(
        "The service key never left the gateway: clients sent none, upstream calls carried it encoded once."
    );

    running.shutdown().await?;
    let r = batch_tour(&sim, keep_running).await;
    sim.shutdown().await;
    r
}

/// A random token for the demo's dashboard login (128 bits from the standard
/// library's per-process random hash keys).
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::from("demo-");
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// The demo's webhook receiver: prints each Alertmanager-format notification.
async fn start_hook() -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let signed = headers.contains_key("x-sluice-signature");
                for a in v["alerts"].as_array().into_iter().flatten() {
                    outln!(
                        "  webhook   {} {} ({}){}",
                        a["labels"]["alertname"].as_str().unwrap_or("?"),
                        a["status"].as_str().unwrap_or("?").to_uppercase(),
                        a["annotations"]["summary"].as_str().unwrap_or(""),
                        if signed { ", HMAC-signed" } else { "" }
                    );
                }
                axum::http::StatusCode::OK
            },
        ),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}/hook"), task))
}

/// The REST API as the demo calls it.
struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let mut req = self
            .client
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().await.with_context(|| format!("API {path}"))?;
        let status = r.status();
        let v: serde_json::Value = serde_json::from_str(&r.text().await?).unwrap_or_default();
        if !status.is_success() {
            bail!("API {path} answered {status}: {}", v["detail"]);
        }
        Ok(v)
    }

    async fn get(&self, path: &str) -> Result<serde_json::Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    /// Waits for the newest execution of `job` newer than `after` to end,
    /// printing its progress; that execution.
    async fn follow(&self, job: &str, after: i64) -> Result<serde_json::Value> {
        let end = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        loop {
            let v = self.get(&format!("/executions?job={job}&limit=1")).await?;
            let e = &v["items"][0];
            if e["id"].as_i64().unwrap_or(0) > after {
                let id = e["id"].as_i64().unwrap_or(0);
                let d = self.get(&format!("/executions/{id}")).await?;
                let p = &d["progress"];
                let line = format!(
                    "  execution {id} {:<10} read {:>5}  written {:>5}  skipped {}",
                    d["execution"]["status"].as_str().unwrap_or("?"),
                    p["read"],
                    p["written"],
                    p["skipped"]
                );
                if line != last {
                    outln!("{line}");
                    last = line;
                }
                if e["ended_at"].is_string() {
                    return Ok(d);
                }
            }
            if Instant::now() > end {
                bail!("job {job} did not finish within a minute");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until an alert of `rule` is in `status` (`firing`, `resolved`).
    async fn alert(&self, rule: &str, status: &str) -> Result<serde_json::Value> {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.get("/alerts?all=true").await?;
            if let Some(a) = v["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["rule"] == rule && a["status"] == status)
            {
                return Ok(a.clone());
            }
            if Instant::now() > end {
                bail!("alert {rule} never became {status}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The second part: the whole node on the embedded default, a scheduled
/// paged load into SQLite, a failing run and its alert, the dashboard.
async fn batch_tour(sim: &SimUpstream, keep_running: bool) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (hook, hook_task) = start_hook().await?;
    let token = random_token();
    let text = include_str!("demo_jobs.toml")
        .replace("{SIM}", &sim.base_url())
        .replace("{DIR}", &dir.display().to_string())
        .replace("{HOOK}", &hook);
    let src = Source {
        file: PathBuf::from("<demo>"),
        text,
    };
    let tok = token.clone();
    let var = move |n: &str| match n {
        "AIRKOREA_KEY" => Some(KEY.to_owned()),
        "SLUICE_DEMO_TOKEN" => Some(tok.clone()),
        "SLUICE_DEMO_HMAC" => Some("demo-webhook-signing-key".to_owned()),
        _ => None,
    };
    let env = Env {
        var: &var,
        clock: Arc::new(sluice_core::SystemClock),
        secrets_optional: false,
    };
    let settings = src.parse()?.resolve(&src, &env)?;
    let listener = serve::bind(settings.listen).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(serve::run_on(listener, settings, async move {
        let _ = stopped.await;
    }));
    let api = Api {
        client: reqwest::Client::builder().no_proxy().build()?,
        base: base.clone(),
        token: token.clone(),
    };
    let ready = Instant::now() + Duration::from_secs(20);
    while api.get("/whoami").await.is_err() {
        if Instant::now() > ready {
            bail!("the demo node did not start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    outln!(
        "\nBatch: job air-load reads the simulated portal page by page into SQLite, fired every 5 s\n"
    );
    let done = api.follow("air-load", 0).await?;
    let trigger = "air-load%2Fevery-5s";
    api.post(&format!("/triggers/{trigger}/pause"), serde_json::json!({}))
        .await?;
    let up = api.get("/upstreams/airkorea").await?;
    let step = &done["steps"][0];
    outln!(
        "  {} rows upserted into {} in {} commits; {} upstream calls by the job, {} of today's quota left (resets {})",
        step["counts"]["written"],
        dir.join("data.db").display(),
        step["counts"]["commits"],
        up["calls_by_jobs"],
        up["quota"]["remaining_today"],
        up["quota"]["resets_at"].as_str().unwrap_or("-")
    );
    outln!("  trigger air-load/every-5s paused through the API (POST /api/v1/triggers/…/pause)");

    outln!(
        "\nA failing run: the portal answers resultCode 30 (an unregistered key) with HTTP 200\n"
    );
    sim.set_fault(Fault::ResultCode("30".into()));
    let last = done["execution"]["id"].as_i64().unwrap_or(0);
    api.post("/jobs/air-load/runs", serde_json::json!({"rerun": true}))
        .await?;
    let failed = api.follow("air-load", last).await?;
    outln!(
        "  {}",
        failed["execution"]["exit_message"]
            .as_str()
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("")
    );
    let alert = api.alert("air-load-failed", "firing").await?;
    outln!(
        "  alert     {} firing since {} (`sluice alerts list`, the dashboard, the webhook)",
        alert["rule"].as_str().unwrap_or("?"),
        crate::views::rfc3339(alert["starts_at"].as_i64()).unwrap_or_default()
    );
    sim.set_fault(Fault::None);
    let last = failed["execution"]["id"].as_i64().unwrap_or(0);
    api.post("/jobs/air-load/runs", serde_json::json!({"rerun": true}))
        .await?;
    api.follow("air-load", last).await?;
    api.alert("air-load-failed", "resolved").await?;
    outln!("  the next run completed: the alert resolved, and the webhook was told once");
    // The webhook's notifications are queue tasks: give them a moment to land.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    if keep_running {
        outln!("\nStill running (Ctrl-C to stop):");
        outln!("  dashboard {base}/ui  (log in with the token {token})");
        outln!("  API       {base}/api/v1/openapi.json  (Authorization: Bearer <token>)");
        outln!("  gateway   {base}/air/getCtprvnRltmMesureDnsty?sidoName=서울&returnType=json");
        outln!("  top       SLUICE_TOKEN=<token> sluice top --url {base}");
        outln!("  data      {}", dir.display());
        serve::shutdown_signal().await;
    }
    let _ = stop.send(());
    node.await.context("the demo node")??;
    hook_task.abort();
    if !keep_running {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
