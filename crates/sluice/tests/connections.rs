//! Bounded client connections and reserved paths (issue #12 points 3 and 4):
//! header-read and idle timeouts, the connection cap, the request-head limit,
//! paths that never reach a gateway route, `/readyz` and graceful draining, all
//! against real sockets.
//!
//! No assertion is about speed: "closed" means "closed within a generous
//! timeout", and the only time bounds checked are lower ones that a timer cannot
//! undercut.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice::config::{ConnectionSettings, Env, Source};
use sluice_testkit::SimConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::support::*;

/// How long a "the server closes it eventually" wait may take.
const EVENTUALLY: Duration = Duration::from_secs(15);

/// A sim answering in `latency_ms` behind `UPSTREAM` (with a timeout long enough
/// for it) and `ROUTE`, with `server` lines first.
async fn slow_upstream(latency_ms: u64, server: &str) -> Harness {
    let sim = SimConfig {
        latency: Duration::from_millis(latency_ms),
        ..Default::default()
    };
    let upstream = UPSTREAM.replace("timeout = \"2s\"", "timeout = \"20s\"");
    Harness::start(sim, &format!("{server}\n{upstream}{ROUTE}")).await
}

/// Asserts that what a closing server sent is nothing or an answer with `status`.
#[track_caller]
fn assert_nothing_or(sent: &[u8], status: &str) {
    let text = String::from_utf8_lossy(sent);
    assert!(
        text.is_empty() || text.starts_with(&format!("HTTP/1.1 {status}")),
        "answered {text:?}"
    );
}

/// A complete keep-alive `GET`.
fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: sluice\r\n\r\n")
}

/// Reads one response (head, then a `Content-Length` body) from `s`: its status
/// and text, or `None` when the connection closed (EOF or reset) first.
async fn read_response(s: &mut TcpStream) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some((status, String::from_utf8_lossy(&buf).into_owned()))
}

/// Sends `request` on `s` and reads the answer, failing the test on a close.
async fn exchange(s: &mut TcpStream, request: &str) -> (u16, String) {
    s.write_all(request.as_bytes()).await.unwrap();
    timeout(EVENTUALLY, read_response(s))
        .await
        .expect("no answer in time")
        .expect("the connection closed instead of answering")
}

/// Waits up to `within` for the server to close `s`; returns what it sent
/// before closing, or `None` if it is still open.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = timeout(within, async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| got)
}

#[tokio::test]
async fn half_a_header_is_cut_off_after_header_read_timeout() {
    let h = Harness::with_server("header_read_timeout = \"500ms\"").await;
    let mut s = TcpStream::connect(h.gw.addr).await.unwrap();
    let started = Instant::now();
    s.write_all(format!("GET {} HTTP/1.1\r\nHost: sluice\r\n", air("서울")).as_bytes())
        .await
        .unwrap();
    let sent = closed_within(&mut s, EVENTUALLY)
        .await
        .expect("a half-sent header was not cut off");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed before header_read_timeout"
    );
    assert_nothing_or(&sent, "408");
    assert_eq!(h.sim.calls(), 0);
}

#[tokio::test]
async fn bytes_trickling_in_do_not_extend_header_read_timeout() {
    let h = Harness::with_server("header_read_timeout = \"1s\"").await;
    let mut s = TcpStream::connect(h.gw.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        .await
        .unwrap();
    // One byte every 100 ms: a slowloris client. It must be cut off anyway.
    let cut = timeout(EVENTUALLY, async {
        let mut chunk = [0u8; 64];
        loop {
            if s.write_all(b"a").await.is_err() {
                return;
            }
            let read = timeout(Duration::from_millis(100), s.read(&mut chunk)).await;
            if let Ok(Ok(0) | Err(_)) = read {
                return;
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "a trickling header was never cut off");
}

#[tokio::test]
async fn slow_clients_do_not_hold_up_a_normal_request() {
    let h = Harness::with_server("header_read_timeout = \"5s\"").await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(h.gw.addr).await.unwrap();
        s.write_all(b"GET /air/x HTTP/1.1\r\nHost: sl")
            .await
            .unwrap();
        slow.push(s);
    }
    let r = h.get(&air("서울")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(h.get("/healthz").await.status, 200);
    for s in &mut slow {
        assert!(
            closed_within(s, EVENTUALLY).await.is_some(),
            "a slow client was never cut off"
        );
    }
    assert_eq!(h.sim.calls(), 1);
}

#[tokio::test]
async fn idle_keep_alive_connections_close_after_idle_timeout_only() {
    // header_read_timeout is much shorter than idle_timeout: it must not cut the
    // wait between two requests of a keep-alive connection.
    let h = Harness::with_server("header_read_timeout = \"500ms\"\nidle_timeout = \"3s\"").await;
    let mut s = TcpStream::connect(h.gw.addr).await.unwrap();
    assert_eq!(exchange(&mut s, &get("/healthz")).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        exchange(&mut s, &get("/healthz")).await.0,
        200,
        "the keep-alive connection was closed by header_read_timeout"
    );
    let idle_from = Instant::now();
    let sent = closed_within(&mut s, EVENTUALLY)
        .await
        .expect("an idle keep-alive connection was never closed");
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
    assert!(
        idle_from.elapsed() >= Duration::from_secs(2),
        "closed before idle_timeout"
    );
}

#[tokio::test]
async fn a_slow_request_in_flight_outlives_idle_timeout() {
    let h = slow_upstream(
        2500,
        "header_read_timeout = \"500ms\"\nidle_timeout = \"1s\"",
    )
    .await;
    let mut s = TcpStream::connect(h.gw.addr).await.unwrap();
    let (status, text) = exchange(&mut s, &get(&air("서울"))).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(h.sim.calls(), 1);
    // And the connection is still good for another request.
    assert_eq!(exchange(&mut s, &get("/healthz")).await.0, 200);
}

#[tokio::test]
async fn max_connections_holds_back_the_next_connection_until_one_closes() {
    let h = Harness::with_server(
        "max_connections = 4\nheader_read_timeout = \"30s\"\nidle_timeout = \"30s\"",
    )
    .await;
    // Four keep-alive connections, each proven accepted by one answered request.
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(h.gw.addr).await.unwrap();
        assert_eq!(exchange(&mut s, &get("/healthz")).await.0, 200);
        open.push(s);
    }
    // A fifth one connects (the kernel's backlog) but is not served.
    let mut fifth = TcpStream::connect(h.gw.addr).await.unwrap();
    fifth.write_all(get("/healthz").as_bytes()).await.unwrap();
    assert!(
        timeout(Duration::from_secs(1), read_response(&mut fifth))
            .await
            .is_err(),
        "a fifth connection was served over max_connections = 4"
    );
    assert!(
        logs().contains("max_connections reached"),
        "no warning about the cap"
    );
    drop(open.pop());
    let answer = timeout(EVENTUALLY, read_response(&mut fifth))
        .await
        .expect("the fifth connection was not served after one closed");
    assert_eq!(answer.map(|a| a.0), Some(200));
    // The four still open ones keep working.
    for s in &mut open {
        assert_eq!(exchange(s, &get("/healthz")).await.0, 200);
    }
}

#[tokio::test]
async fn oversize_request_heads_get_431_or_a_close() {
    let h = Harness::with_server("max_header_bytes = \"8KiB\"").await;
    let mut s = TcpStream::connect(h.gw.addr).await.unwrap();
    let fits = format!(
        "GET /healthz HTTP/1.1\r\nHost: sluice\r\nX-Big: {}\r\n\r\n",
        "a".repeat(4 << 10)
    );
    assert_eq!(exchange(&mut s, &fits).await.0, 200);

    let mut s = TcpStream::connect(h.gw.addr).await.unwrap();
    let too_big = format!(
        "GET {} HTTP/1.1\r\nHost: sluice\r\nX-Big: {}\r\n\r\n",
        air("서울"),
        "a".repeat(20 << 10)
    );
    // The server may close before reading all of it: a failed write is fine.
    let _ = s.write_all(too_big.as_bytes()).await;
    let sent = closed_within(&mut s, EVENTUALLY)
        .await
        .expect("an oversize request head neither answered nor closed");
    assert_nothing_or(&sent, "431");
    assert_eq!(h.sim.calls(), 0);
}

#[tokio::test]
async fn reserved_paths_never_reach_a_catch_all_route() {
    let catch_all = route_toml("everything", "/{*rest}", "airkorea", "1m", "");
    let h = Harness::start(fast_sim(), &format!("{UPSTREAM}{catch_all}")).await;
    for path in [
        "/admin",
        "/admin/",
        "/admin/x",
        "/admin/purge",
        "/admin/cache/stats",
        "/%61dmin/x",
        "/api",
        "/api/x",
        "/api/v1/jobs",
        "/api/jobs/nightly/run",
        "/api/schedule",
        "/ui",
        "/ui/",
        "/ui/index.html",
        "/metrics/x",
        "/healthz/x",
        "/readyz/",
        "/readyz/x",
    ] {
        let r = h.get(path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        assert_eq!(r.json()["error"], "no_route", "{path}");
    }
    let post = h.purge("{\"route\":\"everything\"}", None).await;
    assert_eq!(post.status, 404);
    let ready = h.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(h.get("/healthz").await.status, 200);
    assert_eq!(h.get("/metrics").await.status, 200);
    assert_eq!(h.sim.calls(), 0, "a reserved path reached the upstream");

    // The catch-all does proxy everything else, reserved-looking names included.
    let r = h
        .get("/getCtprvnRltmMesureDnsty?sidoName=서울&returnType=json")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(h.sim.calls(), 1);
    h.get("/administrator").await;
    assert_eq!(h.sim.calls(), 2, "/administrator is not reserved");
}

#[tokio::test]
async fn shutdown_turns_readyz_503_closes_idle_connections_and_drains_in_flight_requests() {
    let Harness { sim, node } = slow_upstream(
        1500,
        "header_read_timeout = \"20s\"\nshutdown_grace = \"20s\"",
    )
    .await;
    let addr = node.gw.addr;
    let gw = node.gw;
    // An idle keep-alive connection.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert_eq!(exchange(&mut idle, &get("/healthz")).await.0, 200);
    // A fresh connection with half a /readyz request head.
    let mut probe = TcpStream::connect(addr).await.unwrap();
    probe
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: sluice\r\n")
        .await
        .unwrap();
    // A slow request in flight (connected after the probe, so once the upstream
    // sees it, the probe was accepted too).
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(get(&air("서울")).as_bytes()).await.unwrap();
    let seen = timeout(EVENTUALLY, async {
        while sim.calls() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(seen.is_ok(), "the slow request never reached the upstream");

    let stopping = tokio::spawn(gw.shutdown());
    // Shutdown has begun once new connections are refused.
    let refused = timeout(EVENTUALLY, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "the listener stayed open after shutdown");
    assert!(
        closed_within(&mut idle, Duration::from_secs(5))
            .await
            .is_some(),
        "an idle keep-alive connection stayed open during shutdown"
    );
    let (status, text) = exchange(&mut probe, "\r\n").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("\"draining\""), "{text}");
    let (status, text) = exchange(&mut slow, "").await;
    assert_eq!(status, 200, "the in-flight request was not drained: {text}");
    timeout(EVENTUALLY, stopping)
        .await
        .expect("shutdown did not finish")
        .unwrap()
        .unwrap();
}

/// Parses and resolves `[server]` lines plus a minimal upstream and route.
fn resolve(server: &str) -> Result<ConnectionSettings, String> {
    init_logs();
    let text = format!("[server]\nlisten = \"127.0.0.1:0\"\n{server}\n{UPSTREAM}{ROUTE}")
        .replace("{SIM}", "http://127.0.0.1:9/x");
    let src = Source {
        file: PathBuf::from("test.toml"),
        text,
    };
    let env = Env {
        var: &|n| (n == "AIRKOREA_KEY").then(|| KEY.to_owned()),
        clock: Arc::new(sluice_core::SystemClock),
        secrets_optional: false,
    };
    let raw = src.parse().map_err(|e| e.to_string())?;
    raw.resolve(&src, &env)
        .map(|s| s.connections)
        .map_err(|e| e.to_string())
}

#[test]
fn connection_limits_have_documented_defaults() {
    let d = resolve("").unwrap();
    assert_eq!(d, ConnectionSettings::default());
    assert_eq!(d.header_read_timeout, Duration::from_secs(10));
    assert_eq!(d.idle_timeout, Duration::from_secs(60));
    assert_eq!(d.send_timeout, Duration::from_secs(60));
    assert_eq!(d.max_connections, 1024);
    assert_eq!(d.max_header_bytes, 64 << 10);
    let set = resolve(
        "header_read_timeout = \"2s\"\nidle_timeout = \"5m\"\nmax_connections = 10\nmax_header_bytes = \"16KiB\"",
    )
    .unwrap();
    assert_eq!(
        set,
        ConnectionSettings {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(300),
            send_timeout: Duration::from_secs(60),
            max_connections: 10,
            max_header_bytes: 16 << 10,
        }
    );
}

#[test]
fn zero_connection_limits_are_refused_with_located_errors() {
    let e = resolve(
        "header_read_timeout = \"0s\"\nidle_timeout = \"0ms\"\nmax_connections = 0\nmax_header_bytes = 0",
    )
    .unwrap_err();
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(
        lines,
        [
            "test.toml:3:23: server.header_read_timeout: header_read_timeout must be greater than zero",
            "test.toml:4:16: server.idle_timeout: idle_timeout must be greater than zero",
            "test.toml:5:19: server.max_connections: max_connections must be at least 1",
            "test.toml:6:20: server.max_header_bytes: max_header_bytes must be at least 1KiB (got 0 bytes): an ordinary browser request is larger",
        ],
        "{e}"
    );
    let e = resolve("max_header_bytes = \"512B\"").unwrap_err();
    assert!(
        e.starts_with(
            "test.toml:3:20: server.max_header_bytes: max_header_bytes must be at least 1KiB"
        ),
        "{e}"
    );
    let e = resolve("idle_timeout = \"soon\"").unwrap_err();
    assert!(
        e.starts_with("test.toml:3:16: server.idle_timeout: invalid duration \"soon\""),
        "{e}"
    );
    let e = resolve("max_connections = -1").unwrap_err();
    assert!(
        e.starts_with("test.toml:3:19: server.max_connections:"),
        "{e}"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_after_send_timeout() {
    let up = sluice_testkit::HostileUpstream::start().await.unwrap();
    let config = "header_read_timeout = \"5s\"\nidle_timeout = \"1h\"\nsend_timeout = \"1s\"\n"
        .to_owned()
        + &upstream_toml("plain", "{SIM}", "20s", "")
        + &route_toml("p", "/p/{*rest}", "plain", "10m", "");
    let node = Node::start_for(&up.base_url(), &up.base_url(), &config).await;
    // About 22 MB: far more than the socket buffers of both ends hold.
    let path = "/p/wide-xml/1000000";
    let mut s = TcpStream::connect(node.gw.addr).await.unwrap();
    s.write_all(get(path).as_bytes()).await.unwrap();
    let mut first = vec![0u8; 1024];
    let n = timeout(Duration::from_secs(30), s.read(&mut first))
        .await
        .expect("the answer starts")
        .unwrap();
    assert!(n > 0);
    // Stop reading long enough for send_timeout (1 s) and a watchdog round.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut total = n;
    let mut buf = vec![0u8; 1 << 16];
    let ended = timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(k) => total += k,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection was not closed");
    let full = node.get(path).await.body.len();
    assert!(full > 20_000_000, "{full}");
    assert!(
        total < full,
        "the stalled client still got all {full} bytes"
    );
    // The server goes on serving.
    assert_eq!(node.get("/p/ok").await.status, 200);
}
