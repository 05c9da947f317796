//! Several gateway nodes on one Redis behave like one cache: one upstream call per
//! cold key, one quota, purges seen everywhere, and no client failure when Redis
//! goes away.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_core::{Redis, RedisOptions};
use sluice_testkit::servers::{Memcached, RedisServer};
use sluice_testkit::{SimConfig, SimUpstream};

use crate::support::{ADMIN, KEY, Node, ROUTE, UPSTREAM, air, init_logs, logs};

fn redis_url() -> String {
    std::env::var("SLUICE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A namespace no other test uses.
fn namespace(test: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    let r = RandomState::new().hash_one(Instant::now()) as u32;
    format!("t-{test}-{}-{r:x}", std::process::id())
}

async fn sim(latency: Duration) -> SimUpstream {
    SimUpstream::start(SimConfig {
        latency,
        service_key: KEY.into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// `n` nodes sharing `sim`, each configured by `config`.
async fn nodes(sim: &SimUpstream, n: usize, config: &str) -> Vec<Node> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(Node::start(sim, config).await);
    }
    v
}

/// `n` concurrent GETs, request `i` for `path(i)` on node `i % nodes.len()`; their
/// statuses in order.
async fn spread_gets(nodes: &[Node], n: usize, path: impl Fn(usize) -> String) -> Vec<u16> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let node = &nodes[i % nodes.len()];
            let (c, url) = (node.client.clone(), format!("{}{}", node.base, path(i)));
            tokio::spawn(async move { c.get(url).send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn store_config(kind: &str, url: &str, ns: &str, extra: &str) -> String {
    // `l1_ttl` is a key of the tiered store only.
    let l1 = if kind == "tiered" {
        "l1_ttl = \"60s\"\n"
    } else {
        ""
    };
    format!(
        "admin_token = {{ env = \"ADMIN_TOKEN\" }}\n{UPSTREAM}{ROUTE}\n[store]\nkind = \"{kind}\"\nurl = \"{url}\"\nnamespace = \"{ns}\"\n{l1}\n[cluster]\nlock_ttl = \"1s\"\npoll = \"50ms\"\n{extra}"
    )
}

async fn purge(node: &Node, body: serde_json::Value) -> serde_json::Value {
    let r = node.purge(&body.to_string(), Some(ADMIN)).await;
    assert_eq!(r.status, 200);
    serde_json::from_str(&r.body).unwrap()
}

async fn wait_for<F, Fut>(max: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < max {
        if f().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_make_one_upstream_call_for_300_concurrent_cold_requests() {
    init_logs();
    let sim = sim(Duration::from_millis(300)).await;
    let ns = namespace("coalesce");
    let nodes = nodes(&sim, 3, &store_config("redis", &redis_url(), &ns, "")).await;
    let path = air("cold");
    let mut tasks = Vec::new();
    for i in 0..300 {
        let c = nodes[i % 3].client.clone();
        let url = format!("{}{path}", nodes[i % 3].base);
        tasks.push(tokio::spawn(async move {
            let r = c.get(url).send().await.unwrap();
            let status = r.status().as_u16();
            let cs = r
                .headers()
                .get("cache-status")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, cs, r.text().await.unwrap())
        }));
    }
    let mut bodies = std::collections::HashSet::new();
    let mut collapsed = 0;
    for t in tasks {
        let (status, cs, body) = t.await.unwrap();
        assert_eq!(status, 200, "{cs} {body}");
        collapsed += usize::from(cs.contains("collapsed"));
        bodies.insert(body);
    }
    assert_eq!(sim.calls(), 1, "one upstream call across three nodes");
    assert_eq!(bodies.len(), 1, "every client got the same answer");
    assert_eq!(collapsed, 299, "every request but the holder's waited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_node_evicts_the_key_from_every_l1() {
    init_logs();
    let memcached = Memcached::start();
    let ns = namespace("purge");
    for (l2, url, extra) in [
        ("redis", redis_url(), String::new()),
        (
            "memcached",
            memcached.url(),
            format!("redis_url = \"{}\"\n", redis_url()),
        ),
    ] {
        let sim = sim(Duration::from_millis(5)).await;
        let nodes = nodes(
            &sim,
            3,
            &store_config("tiered", &url, &format!("{ns}-{l2}"), &extra),
        )
        .await;
        let path = air("purged");
        let key = nodes[0].gateway.key_for(&path).unwrap();
        for n in &nodes {
            assert_eq!(n.get(&path).await.status, 200);
        }
        assert_eq!(sim.calls(), 1, "{l2}: the other nodes read the shared tier");
        for n in &nodes {
            assert!(n.gateway.store().get(&key).await.unwrap().is_some());
        }

        // The L1 TTL is 60 s: only the purge notice can evict the other nodes' copies.
        let v = purge(&nodes[0], serde_json::json!({ "url": path })).await;
        assert_eq!(v["purged"], 1, "{l2}: {v}");
        for (i, n) in nodes.iter().enumerate().skip(1) {
            let took = wait_for(Duration::from_secs(10), || async {
                n.gateway.store().get(&key).await.unwrap().is_none()
            })
            .await
            .unwrap_or_else(|| panic!("{l2}: node {i} still holds the purged key"));
            eprintln!("{l2}: node {i} dropped the purged key after {took:?}");
        }
        assert_eq!(nodes[2].get(&path).await.status, 200);
        assert_eq!(sim.calls(), 2, "{l2}: fetched again after the purge");

        // A route purge reaches every L1 as well.
        for n in &nodes {
            assert_eq!(n.get(&path).await.status, 200);
        }
        let v = purge(&nodes[1], serde_json::json!({ "route": "air" })).await;
        assert_eq!(v["target"]["route"], "air", "{l2}: {v}");
        for (i, n) in nodes.iter().enumerate() {
            let gone = wait_for(Duration::from_secs(10), || async {
                n.gateway.store().get(&key).await.unwrap().is_none()
            })
            .await;
            assert!(
                gone.is_some(),
                "{l2}: node {i} kept a key of a purged route"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_quota_of_100_holds_across_three_nodes() {
    init_logs();
    let sim = sim(Duration::from_millis(5)).await;
    let ns = namespace("quota");
    let upstream = UPSTREAM.replace(
        "concurrency = 64",
        "concurrency = 64\nrate_limit = { per_day = 100, timezone = \"Asia/Seoul\" }",
    );
    let config = store_config("tiered", &redis_url(), &ns, "").replace(UPSTREAM, &upstream);
    let nodes = nodes(&sim, 3, &config).await;
    let mut ok = 0;
    let mut refused = 0;
    for status in spread_gets(&nodes, 150, |i| air(&format!("p{i}"))).await {
        match status {
            200 => ok += 1,
            429 => refused += 1,
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(sim.calls(), 100, "exactly the daily quota, cluster-wide");
    assert_eq!((ok, refused), (100, 50));
    // What was fetched is still served, from any node, without an upstream call.
    for i in 0..150 {
        let r = nodes[(i + 1) % 3].get(&air(&format!("p{i}"))).await;
        assert!(matches!(r.status, 200 | 429), "{}", r.status);
    }
    assert_eq!(sim.calls(), 100);
}

/// Waits up to 15 s for every node's `/healthz` to say `ok`; else fails with
/// "node I WHAT".
async fn all_healthy(nodes: &[Node], what: &str) {
    for (i, n) in nodes.iter().enumerate() {
        let back = wait_for(Duration::from_secs(15), || async {
            n.get("/healthz").await.json()["status"] == "ok"
        })
        .await;
        assert!(back.is_some(), "node {i} {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_costs_no_client_a_5xx_and_shared_behaviour_resumes() {
    init_logs();
    let mut redis = RedisServer::start();
    let sim = sim(Duration::from_millis(100)).await;
    let nodes = nodes(&sim, 2, &store_config("tiered", &redis.url(), "outage", "")).await;
    let warm: Vec<String> = (0..5).map(|i| air(&format!("w{i}"))).collect();
    for p in &warm {
        for n in &nodes {
            assert_eq!(n.get(p).await.status, 200);
        }
    }
    assert_eq!(sim.calls(), 5);

    redis.kill();
    // Keys an L1 holds: hits, no upstream call.
    for p in &warm {
        for n in &nodes {
            let r = n.get(p).await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert!(r.cache_status().contains("hit"), "{}", r.cache_status());
        }
    }
    assert_eq!(sim.calls(), 5);
    // A new key: the upstream answers; local coalescing still holds on each node.
    let fresh = air("during-outage");
    let statuses = spread_gets(&nodes, 100, |_| fresh.clone()).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        sim.calls(),
        7,
        "one call per node: coalescing falls back to local"
    );
    for n in &nodes {
        let h: serde_json::Value = n.get("/healthz").await.json();
        assert_eq!(h["status"], "degraded", "{h}");
        assert!(
            h["reason"].as_str().unwrap().contains("redis unavailable"),
            "{h}"
        );
    }
    let metrics = nodes[0].get("/metrics").await.body;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_store_errors_total") && l.contains("store=\"redis\"")),
        "{metrics}"
    );
    let outage_lines = logs().matches("redis unavailable; falling back").count();
    assert!(
        (1..=2).contains(&outage_lines),
        "the outage is logged once per node, not per request: {outage_lines} lines"
    );

    redis.restart();
    all_healthy(&nodes, "did not reconnect").await;
    // Shared again: what node 0 fetches, node 1 reads from Redis.
    let after = air("after-outage");
    assert_eq!(nodes[0].get(&after).await.status, 200);
    let calls = sim.calls();
    let r = nodes[1].get(&after).await;
    assert_eq!(r.status, 200);
    assert_eq!(sim.calls(), calls, "node 1 read node 0's entry from Redis");
    assert!(logs().contains("redis is answering again"));

    // A paused (hung) Redis: commands time out instead of failing at once; clients
    // still get answers, from L1 or the upstream.
    redis.pause();
    let statuses = spread_gets(&nodes, 40, |i| {
        if i % 4 < 2 {
            after.clone()
        } else {
            air("while-paused")
        }
    })
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let mut degraded = 0;
    for n in &nodes {
        degraded += usize::from(n.get("/healthz").await.json()["status"] == "degraded");
    }
    assert!(degraded >= 1, "a hung Redis is noticed");
    redis.resume();
    all_healthy(&nodes, "did not recover from the pause").await;
}

/// A `sluice serve` process, killed when dropped.
struct Proc {
    child: Child,
    base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_node(config_text: &str, dir: &std::path::Path, i: usize) -> Proc {
    let port = sluice_testkit::free_port();
    let path = dir.join(format!("node{i}.toml"));
    let mut f = std::fs::File::create(&path).unwrap();
    write!(f, "[server]\nlisten = \"127.0.0.1:{port}\"\n{config_text}").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--log-format", "json", "serve", "-c"])
        .arg(&path)
        .env("AIRKOREA_KEY", KEY)
        .env("ADMIN_TOKEN", ADMIN)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("listening"), "node {i}: {first}");
    // Keep draining its log so the pipe never fills.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Proc {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lock_holder_costs_one_more_call_and_every_client_is_answered() {
    init_logs();
    let sim = sim(Duration::from_millis(1500)).await;
    let ns = namespace("kill");
    let dir = tempfile::tempdir().unwrap();
    let config = store_config("redis", &redis_url(), &ns, "").replace("{SIM}", &sim.base_url());
    let procs: Vec<Proc> = (0..3).map(|i| spawn_node(&config, dir.path(), i)).collect();
    let bases: Vec<String> = procs.iter().map(|p| p.base.clone()).collect();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let path = air("holder-killed");
    let mut tasks = Vec::new();
    for i in 0..300 {
        let (client, bases, path) = (client.clone(), bases.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            // A load balancer's retry: a node that drops the connection is skipped.
            for attempt in 0..6 {
                let base = &bases[(i + attempt) % bases.len()];
                if let Ok(r) = client.get(format!("{base}{path}")).send().await {
                    let status = r.status().as_u16();
                    if let Ok(body) = r.text().await {
                        return (status, body);
                    }
                }
            }
            (0, String::from("no node answered"))
        }));
    }
    // The first upstream call is the lock holder's; find it through its token.
    let holder_seen = wait_for(Duration::from_secs(10), || async { sim.calls() >= 1 }).await;
    assert!(holder_seen.is_some(), "no upstream call started");
    let redis = Redis::connect(&RedisOptions {
        urls: vec![redis_url()],
        namespace: ns.clone(),
        ..Default::default()
    })
    .unwrap();
    let locks: Vec<String> = redis
        .query("test", redis::cmd("KEYS").arg(format!("{ns}:l:*")))
        .await
        .unwrap();
    assert_eq!(locks.len(), 1, "{locks:?}");
    let token: String = redis
        .query("test", redis::cmd("GET").arg(&locks[0]))
        .await
        .unwrap();
    // token = "{hostname}-{pid}-{random}:{random}"
    let pid: u32 = token
        .split(':')
        .next()
        .and_then(|node| node.rsplit('-').nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in token {token:?}"));
    let mut procs = procs;
    let holder = procs
        .iter()
        .position(|p| p.child.id() == pid)
        .unwrap_or_else(|| panic!("lock {token:?} held by no node of ours"));
    let mut dead = procs.remove(holder);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();

    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        sim.calls(),
        2,
        "the dead holder's call, and one by the node that took the lock over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_a_redis_cluster_coalesce_share_and_purge() {
    init_logs();
    let cluster = sluice_testkit::servers::RedisCluster::start(3);
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let config = store_config("tiered", "", "rc", "").replace(
        "url = \"\"",
        &format!("urls = [{}]\ncluster = true", urls.join(", ")),
    );
    let sim = sim(Duration::from_millis(300)).await;
    let nodes = nodes(&sim, 3, &config).await;
    let path = air("on-cluster");
    let statuses = spread_gets(&nodes, 90, |_| path.clone()).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(sim.calls(), 1, "one call across three nodes on a cluster");
    let key = nodes[0].gateway.key_for(&path).unwrap();
    let v = purge(&nodes[0], serde_json::json!({ "route": "air" })).await;
    assert!(v["purged"].as_u64().unwrap() >= 1, "{v}");
    for (i, n) in nodes.iter().enumerate() {
        let gone = wait_for(Duration::from_secs(10), || async {
            n.gateway.store().get(&key).await.unwrap().is_none()
        })
        .await;
        assert!(gone.is_some(), "node {i} kept a purged key");
    }
}
