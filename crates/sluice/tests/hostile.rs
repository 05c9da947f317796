//! The gateway against a hostile upstream (issue #12): deep documents, echoed
//! secrets, redirects, throttling, unasked compression, drips, resets, oversize
//! headers and garbage. Nothing crashes, nothing leaks, nothing hangs.

use std::time::Duration;

use sluice_testkit::{Fault, HostileUpstream};

use crate::support::*;

/// `hostile` checks bodies with `ok_when`; `plain` (same server) does not.
fn hostile_config() -> String {
    let key = "secret_query = { serviceKey = { env = \"AIRKOREA_KEY\" } }\n";
    let header = "secret_headers = { \"X-Api-Key\" = { env = \"HEADER_KEY\" } }\n";
    let ok_when = "ok_when = '.response.header.resultCode == \"00\"'\n";
    [
        upstream_toml("hostile", "{SIM}", "1s", &format!("{key}{header}{ok_when}")),
        upstream_toml("plain", "{SIM}", "1s", key),
        route_toml("h", "/h/{*rest}", "hostile", "10m", ""),
        route_toml("p", "/p/{*rest}", "plain", "10m", ""),
        route_toml(
            "pr",
            "/pr/{*rest}",
            "plain",
            "10m",
            "cache_redirects = true\n",
        ),
    ]
    .concat()
}

struct Hostile {
    up: HostileUpstream,
    node: Node,
}

async fn hostile() -> Hostile {
    let up = HostileUpstream::start().await.unwrap();
    let node = Node::start_for(&up.base_url(), &up.base_url(), &hostile_config()).await;
    Hostile { up, node }
}

/// Every form a secret may take in text the client or a log sees.
fn assert_no_secret_anywhere(what: &str, text: &str) {
    assert_no_secret(what, text);
    let lower = KEY_ENCODED.to_ascii_lowercase();
    for form in [
        lower.as_str(),
        "tEsT%2bsEcReT",
        HEADER_KEY,
        "hdr%2FSecret",
        "hdr/Secret",
        "Value==0123",
    ] {
        assert!(
            !text.contains(form),
            "{what} contains a secret form ({form}):\n{text}"
        );
    }
}

#[tokio::test]
async fn deep_documents_are_ordinary_errors_and_the_gateway_keeps_serving() {
    let h = hostile().await;
    for path in [
        "/h/deep-xml/8000",
        "/h/deep-xml/129",
        "/h/deep-xml/200000",
        "/h/deep-json/8000",
        "/h/deep-json/1000000",
        "/h/deep-json-obj/50000",
    ] {
        let r = h.node.get(path).await;
        assert_eq!(r.status, 502, "{path}: {}", r.body);
        let j = r.json();
        assert_eq!(j["error"], "upstream_rejected", "{path}: {}", r.body);
        let msg = j["message"].as_str().unwrap();
        assert!(msg.contains("deeper than 128"), "{path}: {msg}");
        assert!(r.cache_status().contains("detail=upstream_rejected"));
    }
    // The plain route passes deep bodies through untouched: nothing parses them.
    let r = h.node.get("/p/deep-xml/8000").await;
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 50_000);
    // Within the limit, and wide documents, are fine.
    let r = h.node.get("/h/wide-xml/20000").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = h.node.get("/h/ok").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn echoed_secrets_are_scrubbed_from_headers_bodies_errors_and_logs() {
    let h = hostile().await;
    let first = h.node.get("/h/echo-headers?x=1").await;
    assert_eq!(first.status, 200, "{}", first.body);
    // The upstream really received the secrets, and echoed them.
    let sent = h.up.last_request().unwrap();
    assert!(sent.target.contains(KEY_ENCODED), "{}", sent.target);
    assert_eq!(sent.header("x-api-key"), Some(HEADER_KEY));
    for name in ["etag", "content-disposition", "content-language"] {
        let v = first.header(name);
        assert!(v.contains("[redacted]"), "{name}: {v}");
    }
    assert_no_secret_anywhere("echoed headers", &first.everything());
    // What was stored is scrubbed too: the hit replays the same headers.
    let hit = h.node.get("/h/echo-headers?x=1").await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert_eq!(hit.header("etag"), first.header("etag"));
    assert_no_secret_anywhere("cached headers", &hit.everything());

    for path in [
        "/h/echo-error-xml",
        "/h/echo-error-json",
        "/p/echo-error-json",
    ] {
        let r = h.node.get(path).await;
        assert_no_secret_anywhere(path, &r.everything());
        if path.starts_with("/h/") {
            assert_eq!(r.status, 502, "{path}");
            let j = r.json();
            assert_eq!(j["error"], "upstream_rejected");
            assert_eq!(j["upstream_code"], "30");
            assert!(
                j["message"].as_str().unwrap().contains("[redacted]"),
                "{path}: {}",
                r.body
            );
        }
    }
    let body = h.node.get("/h/echo-body").await;
    assert_eq!(body.status, 200);
    assert!(body.body.contains("[redacted]"), "{}", body.body);
    assert_no_secret_anywhere("echoed body", &body.everything());
    assert_no_secret_anywhere("the logs", &logs());
}

#[tokio::test]
async fn redirects_pass_through_scrubbed_and_are_stored_only_when_asked() {
    let h = hostile().await;
    for code in [301u16, 302, 307, 308] {
        let path = format!("/p/redirect/{code}?x=1");
        let before = h.up.calls();
        let a = h.node.get(&path).await;
        let b = h.node.get(&path).await;
        assert_eq!(a.status, code);
        let loc = a.header("location");
        assert!(
            loc.contains("/moved?") && loc.contains("[redacted]"),
            "{code}: {loc}"
        );
        assert_no_secret_anywhere("Location", &a.everything());
        assert_eq!(h.up.calls() - before, 2, "{code} was stored by default");
        assert!(
            b.cache_status().contains("detail=status"),
            "{}",
            b.cache_status()
        );
    }
    let path = "/pr/redirect/302?x=1";
    let a = h.node.get(path).await;
    let b = h.node.get(path).await;
    assert_eq!((a.status, b.status), (302, 302));
    assert!(b.cache_status().contains("hit"), "{}", b.cache_status());
    assert_eq!(b.header("location"), a.header("location"));
    assert_no_secret_anywhere("cached Location", &b.everything());
}

#[tokio::test]
async fn a_429_keeps_retry_after_and_holds_calls_off() {
    let h = hostile().await;
    let r = h.node.get("/p/throttle/7").await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"], "upstream_throttled");
    assert_eq!(r.header("retry-after"), "7");
    let calls = h.up.calls();
    // The upstream asked for 7 s: other keys of that upstream wait too, no call made.
    let r = h.node.get("/p/ok?other=1").await;
    assert_eq!(r.status, 429, "{}", r.body);
    let left: u64 = r.header("retry-after").parse().unwrap();
    assert!((1..=7).contains(&left), "{left}");
    assert_eq!(h.up.calls(), calls);
    // Another upstream is not held.
    assert_eq!(h.node.get("/h/ok").await.status, 200);
}

#[tokio::test]
async fn a_429_within_stale_if_error_serves_the_held_entry() {
    let h = Harness::default_with("").await;
    assert_eq!(h.get(&air("서울")).await.status, 200);
    h.clock.advance(Duration::from_secs(11 * 60));
    h.sim.set_fault(Fault::Status(429));
    let r = h.get(&air("서울")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let cs = r.cache_status();
    assert!(
        cs.contains("fwd=stale") && cs.contains("fwd-status=429"),
        "{cs}"
    );
    // Beyond stale_if_error (6 h): the 429 reaches the client.
    h.clock.advance(Duration::from_secs(7 * 3600));
    tokio::time::sleep(Duration::from_millis(1100)).await; // the default 1 s hold-off
    let r = h.get(&air("서울")).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"], "upstream_throttled");
}

#[tokio::test]
async fn unasked_compression_is_refused_with_a_clear_error() {
    let h = hostile().await;
    for path in ["/h/gzip", "/p/gzip"] {
        let r = h.node.get(path).await;
        assert_eq!(r.status, 502, "{path}: {}", r.body);
        let j = r.json();
        assert_eq!(j["error"], "upstream_bad_body");
        assert!(
            j["message"]
                .as_str()
                .unwrap()
                .contains("Content-Encoding: gzip, which was not asked for"),
            "{}",
            r.body
        );
    }
}

#[tokio::test]
async fn broken_transports_are_errors_and_nothing_hangs() {
    let h = hostile().await;
    let cases = [
        ("/p/drip/50", 504),
        ("/p/drip-head/20", 504),
        ("/p/hang", 504),
        ("/p/reset", 502),
        ("/p/reset-mid", 502),
        ("/p/short-body", 502),
        ("/p/huge-header/1024", 502),
        ("/p/many-headers/2000", 502),
        ("/p/garbage", 502),
        ("/p/bad-status", 502),
        ("/p/unavailable/5", 502),
    ];
    for (path, want) in cases {
        let started = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(20), h.node.get(path))
            .await
            .unwrap_or_else(|_| panic!("{path} hung the gateway"));
        assert_eq!(r.status, want, "{path}: {}", r.body);
        let j = r.json();
        assert!(
            j["error"].as_str().unwrap().starts_with("upstream_"),
            "{path}: {}",
            r.body
        );
        assert!(!j["message"].as_str().unwrap().is_empty());
        assert_no_secret_anywhere(path, &r.everything());
        // Bounded by the 1 s upstream timeout, with a wide margin for a loaded machine.
        assert!(started.elapsed() < Duration::from_secs(15), "{path}");
    }
    assert_eq!(h.node.get("/p/ok").await.status, 200);
    assert_no_secret_anywhere("the logs", &logs());
}

#[tokio::test]
async fn clients_cannot_set_secret_parameters_in_any_case() {
    let h = hostile().await;
    let r = h
        .node
        .get("/p/ok?SERVICEKEY=evil&servicekey=evil2&ServiceKey=x&service%4Bey=y&a=1")
        .await;
    assert_eq!(r.status, 200);
    let q = h.up.last_request().unwrap().query;
    let keys: Vec<&str> = q
        .split('&')
        .filter(|p| {
            p.split('=')
                .next()
                .unwrap()
                .eq_ignore_ascii_case("servicekey")
        })
        .collect();
    assert_eq!(keys, vec![format!("serviceKey={KEY_ENCODED}")], "{q}");
    assert!(!q.contains("evil"), "{q}");
    assert!(q.contains("a=1"), "{q}");
}
