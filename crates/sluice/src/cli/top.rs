//! `sluice top`: the overview of a running `sluice serve`, read from its REST
//! API (`GET /api/v1/overview`) and redrawn every interval, like `vector top`.
//! Plain text, so it works in any terminal, over ssh and in a pipe (`--once`).

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

/// What `sluice top` needs.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The environment variable holding an API token (any role); a token is
    /// never given on the command line, where `ps` would show it.
    #[arg(long, default_value = "SLUICE_TOKEN")]
    pub token_env: String,
    /// Time between redraws.
    #[arg(long, default_value = "2s", value_parser = crate::config::parse_duration)]
    pub interval: Duration,
    /// Print the overview once, without clearing the screen, and exit.
    #[arg(long)]
    pub once: bool,
}

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => format!("{f:.2}"),
        None => "-".into(),
    }
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |f| format!("{:.1}%", f * 100.0))
}

/// The overview as text lines.
pub fn render(o: &Value, url: &str) -> String {
    let mut s = String::new();
    let c = &o["cache"];
    s.push_str(&format!(
        "sluice top — {url}   {}\n\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
    ));
    s.push_str(&format!(
        "GATEWAY  {} req/s  hit ratio {}  calls saved {}  upstream calls {} /s\n",
        num(&o["requests_per_second"]),
        pct(&c["hit_ratio"]),
        num(&c["calls_saved"]),
        num(&o["upstream_calls_per_second"]),
    ));
    s.push_str(&format!(
        "CACHE    {} store  {} entries  {} bytes{}\n\n",
        c["store"].as_str().unwrap_or("-"),
        num(&c["entries"]),
        num(&c["bytes"]),
        c["degraded"]
            .as_str()
            .map(|d| format!("  DEGRADED: {d}"))
            .unwrap_or_default(),
    ));
    s.push_str(&format!(
        "{:<20} {:>8} {:>8} {:>10} {:>10}  {:<20} {}\n",
        "UPSTREAM", "CALLS", "ERRORS", "QUOTA LEFT", "LEFT %", "RESETS", "RUNS OUT"
    ));
    for u in o["upstreams"].as_array().into_iter().flatten() {
        let q = &u["quota"];
        let out = match (
            q["exhausted_before_reset"].as_bool(),
            q["projected_exhaustion"].as_str(),
        ) {
            (Some(true), Some(t)) => format!("before reset, at {t}"),
            (Some(false), _) => "lasts until reset".into(),
            _ => "-".into(),
        };
        s.push_str(&format!(
            "{:<20} {:>8} {:>8} {:>10} {:>10}  {:<20} {out}\n",
            u["name"].as_str().unwrap_or("-"),
            num(&u["calls"]),
            num(&u["errors"]),
            num(&q["remaining_today"]),
            pct(&q["remaining_ratio"]),
            q["resets_at"].as_str().unwrap_or("-"),
        ));
    }
    let j = &o["jobs"];
    s.push_str(&format!(
        "\nJOBS     {} configured  {} running  {} failed (24h)  {} completed (24h)  alerts firing {}\n",
        num(&j["configured"]),
        num(&j["running"]),
        num(&j["failed_24h"]),
        num(&j["completed_24h"]),
        num(&o["alerts_firing"]),
    ));
    s.push_str(&format!(
        "\n{:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}  {}\n",
        "QUEUE", "READY", "DELAYED", "RUNNING", "DEAD", "WORKERS", "OLDEST (s)", "STATE"
    ));
    for q in o["queues"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "{:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}  {}\n",
            q["name"].as_str().unwrap_or("-"),
            num(&q["ready"]),
            num(&q["delayed"]),
            num(&q["running"]),
            num(&q["dead"]),
            num(&q["workers"]),
            num(&q["oldest_ready_age_seconds"]),
            if q["paused"] == true { "PAUSED" } else { "" },
        ));
    }
    s.push_str(&format!("\nworkers alive: {}\n", num(&o["workers"])));
    s
}

async fn fetch(client: &reqwest::Client, url: &str, token: &str) -> Result<Value, String> {
    let r = client
        .get(format!("{}/api/v1/overview", url.trim_end_matches('/')))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = r.status();
    let text = r.text().await.map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|_| format!("{url} answered {status} with something that is not JSON"))?;
    if !status.is_success() {
        return Err(format!(
            "{url} answered {status}: {}",
            v["detail"].as_str().unwrap_or("")
        ));
    }
    Ok(v)
}

/// Runs `sluice top`.
pub async fn run(args: TopArgs) -> ExitCode {
    let Some(token) = std::env::var(&args.token_env)
        .ok()
        .filter(|t| !t.is_empty())
    else {
        return super::out::invalid_input(format!(
            "set {} to an API token ([server] admin_token or a [[server.tokens]] entry)",
            args.token_env
        ));
    };
    crate::init_tls();
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => return super::fail(e),
    };
    loop {
        match fetch(&client, &args.url, &token).await {
            Ok(o) if args.once => {
                outln!("{}", render(&o, &args.url));
                return ExitCode::SUCCESS;
            }
            Ok(o) => outln!("\x1b[2J\x1b[H{}", render(&o, &args.url)),
            Err(e) if args.once => return super::fail(e),
            Err(e) => outln!("\x1b[2J\x1b[Hsluice top — {}\n\n{e}\n(retrying)", args.url),
        }
        tokio::select! {
            () = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
        }
    }
}
