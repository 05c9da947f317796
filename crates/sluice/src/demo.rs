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

    if keep_running {
        outln!("\nStill running (Ctrl-C to stop):");
        outln!("  gateway   {}", url("서울"));
        outln!("  metrics   {base}/metrics");
        outln!(
            "  upstream  {} (control: {}/__sim/stats)",
            sim.base_url(),
            format_args!("http://{}", sim.addr())
        );
        serve::shutdown_signal().await;
    }
    running.shutdown().await?;
    sim.shutdown().await;
    Ok(())
}
