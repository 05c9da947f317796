//! The gateway end to end (issue #3 acceptance points 1–9).

use std::time::Duration;

use sluice_testkit::{Fault, SimConfig};

use crate::support::*;

#[tokio::test]
async fn unmatched_paths_get_a_json_404() {
    let h = Harness::default_with("").await;
    let r = h.get("/nowhere/x").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no_route");
    assert_eq!(h.sim.calls(), 0);
}

#[tokio::test]
async fn no_open_proxy_tricks_reach_another_host() {
    // A second server stands in for "somewhere else": it must never be called.
    let canary = sluice_testkit::SimUpstream::start(fast_sim())
        .await
        .unwrap();
    let h = Harness::default_with("").await;
    let c = canary.addr();
    let gw = h.gw.addr;
    // Absolute-form target naming the canary.
    let abs = format!("GET http://{c}/air/x HTTP/1.1\r\nHost: {c}\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_status(gw, &abs).await, 400);
    for path in [
        "/air/../../B552584/x".to_owned(),
        "/air/%2e%2e/%2e%2e/other".to_owned(),
        "/air/a%2Fb".to_owned(),
        "/air/a%5Cb".to_owned(),
        format!("/air/x@{c}/y"),
        format!("/air//{c}/y"),
        format!("/air/%2F%2F{c}"),
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {gw}\r\nConnection: close\r\n\r\n");
        let st = raw_status(gw, &req).await;
        assert!(st == 400 || st == 404, "{path} answered {st}");
    }
    // A Host header naming another server changes nothing: the route's upstream is called.
    let r = h.get_with(&air("서울"), &[("host", &c.to_string())]).await;
    assert_eq!(r.status, 200);
    assert_eq!(canary.calls(), 0, "the canary host was contacted");
    // Everything that did reach the upstream stayed under its base path.
    for req in h.sim.requests() {
        assert!(
            req.path.starts_with("/B552584/ArpltnInforInqireSvc/"),
            "{}",
            req.path
        );
    }
}

#[tokio::test]
async fn keys_are_normalized_and_only_keyed_params_are_forwarded() {
    let h = Harness::default_with("").await;
    let a = h.get("/air/getCtprvnRltmMesureDnsty?sidoName=%EC%84%9C%EC%9A%B8&returnType=json&numOfRows=10&pageNo=1&utm=1").await;
    assert_eq!(a.status, 200);
    a.expect_cache_status("fwd=miss", "");
    // Other order, lower-case escapes, '+'-free, an unkeyed param: same key.
    let b = h.get("/air/getCtprvnRltmMesureDnsty?pageNo=1&numOfRows=10&returnType=json&sidoName=%ec%84%9c%ec%9a%b8&other=2").await;
    assert!(b.cache_status().contains("hit"), "{}", b.cache_status());
    assert_eq!(h.sim.calls(), 1);
    let q = h.sim.last_request().unwrap().query;
    assert!(
        !q.contains("utm") && !q.contains("other"),
        "unkeyed params forwarded: {q}"
    );
    // A client cannot set the secret parameter.
    let c = h.get(&format!("{}&serviceKey=wrong", air("서울"))).await;
    assert!(c.cache_status().contains("hit"));
}

#[tokio::test]
async fn vary_headers_split_keys() {
    let h = Harness::start(
        fast_sim(),
        &format!(
            "{UPSTREAM}{}",
            ROUTE.replace("key_query", "vary = [\"Accept-Language\"]\nkey_query")
        ),
    )
    .await;
    h.get_with(&air("서울"), &[("accept-language", "ko")]).await;
    h.get_with(&air("서울"), &[("accept-language", "en")]).await;
    let r = h.get_with(&air("서울"), &[("accept-language", "ko")]).await;
    assert!(r.cache_status().contains("hit"));
    assert_eq!(h.sim.calls(), 2);
    assert_eq!(
        h.sim.last_request().unwrap().header("accept-language"),
        Some("en")
    );
}

fn with_admin(cfg: &str) -> String {
    cfg.replacen(
        "[[upstream]]",
        "admin_token = { env = \"ADMIN_TOKEN\" }\n\n[[upstream]]",
        1,
    )
}

#[tokio::test]
async fn secrets_never_leak() {
    let h = Harness::start(fast_sim(), &with_admin(&format!("{UPSTREAM}{ROUTE}"))).await;
    let ok = h.get(&air("서울")).await;
    assert_eq!(ok.status, 200);
    // The upstream received the raw key encoded exactly once, and accepted it.
    let sent = h.sim.last_request().unwrap();
    assert!(
        sent.query.contains(&format!("serviceKey={KEY_ENCODED}")),
        "{}",
        sent.query
    );
    assert_eq!(sent.param("serviceKey").as_deref(), Some(KEY));
    let mut seen = vec![ok];
    h.sim.set_fault(Fault::GatewayError(30));
    seen.push(h.get(&air("부산")).await);
    h.sim.set_fault(Fault::Status(500));
    seen.push(h.get(&air("대구")).await);
    h.sim.set_fault(Fault::Garbage);
    seen.push(h.get(&air("인천")).await);
    h.sim.set_fault(Fault::None);
    seen.push(h.get("/nowhere").await);
    seen.push(h.get("/metrics").await);
    seen.push(
        h.get_with(
            "/admin/cache/stats",
            &[("authorization", &format!("Bearer {ADMIN}"))],
        )
        .await,
    );
    let purge = h
        .purge(&format!("{{\"url\":\"{}\"}}", air("서울")), Some(ADMIN))
        .await;
    assert_eq!(purge.json()["purged"], 1);
    seen.push(purge);
    for r in &seen {
        assert_no_secret("a response", &r.everything());
    }
    assert_no_secret("the logs", &logs());
}

#[tokio::test]
async fn freshness_windows_age_and_cache_status() {
    let h = Harness::default_with("").await;
    let p = air("서울");
    let miss = h.get(&p).await;
    assert_eq!(
        miss.cache_status(),
        "sluice; fwd=miss; fwd-status=200; ttl=600; stored"
    );
    assert_eq!(miss.header("age"), "0");
    h.clock.advance(Duration::from_secs(30));
    let hit = h.get(&p).await;
    assert_eq!(hit.cache_status(), "sluice; hit; ttl=570");
    assert_eq!(hit.header("age"), "30");
    assert_eq!(hit.body, miss.body);
    // Past ttl, inside stale-while-revalidate: stale now, one refresh in the background.
    h.clock.advance(Duration::from_secs(600));
    let stale = h.get(&p).await;
    assert!(
        stale
            .cache_status()
            .contains("hit; ttl=-30; detail=stale-while-revalidate"),
        "{}",
        stale.cache_status()
    );
    for _ in 0..100 {
        if h.sim.calls() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.sim.calls(), 2, "exactly one background refresh");
    // The refreshed entry lands in the store once the background call returns.
    let mut fresh = h.get(&p).await;
    for _ in 0..100 {
        if !fresh.cache_status().contains("stale-while-revalidate") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        fresh = h.get(&p).await;
    }
    assert!(
        fresh.cache_status().starts_with("sluice; hit; ttl=600"),
        "{}",
        fresh.cache_status()
    );
    // Past the revalidate window, upstream failing: stale-if-error.
    h.clock.advance(Duration::from_secs(700));
    h.sim.set_fault(Fault::Status(503));
    let sie = h.get(&p).await;
    assert_eq!(sie.status, 200);
    assert_eq!(
        sie.cache_status(),
        "sluice; fwd=stale; fwd-status=503; ttl=-100; detail=stale-if-error"
    );
    // ok_when failures and timeouts also fall back to stale.
    h.sim.set_fault(Fault::ResultCode("01".into()));
    assert!(
        h.get(&p)
            .await
            .cache_status()
            .contains("detail=stale-if-error")
    );
    // Past stale_if_error: the error shows.
    h.clock.advance(Duration::from_secs(6 * 3600));
    let gone = h.get(&p).await;
    assert_eq!(gone.status, 502);
    assert_eq!(gone.json()["upstream_code"], "01");
}

#[tokio::test]
async fn ttl_upstream_follows_cache_control() {
    let sim = SimConfig {
        cache_control: Some("public, max-age=60".into()),
        ..fast_sim()
    };
    let route = ROUTE.replace("ttl = \"10m\"", "ttl = \"upstream\"");
    let h = Harness::start(sim, &format!("{UPSTREAM}{route}")).await;
    let p = air("서울");
    assert!(h.get(&p).await.cache_status().contains("ttl=60; stored"));
    h.clock.advance(Duration::from_secs(59));
    assert!(h.get(&p).await.cache_status().contains("hit; ttl=1"));
    // Without freshness information nothing is stored.
    let h2 = Harness::start(fast_sim(), &format!("{UPSTREAM}{route}")).await;
    let r = h2.get(&p).await;
    assert_eq!(r.status, 200);
    r.expect_cache_status("detail=upstream-no-store", "");
}

#[tokio::test]
async fn not_found_is_cached_negatively_and_5xx_never() {
    let raw = route_toml(
        "raw",
        "/raw/{*rest}",
        "root",
        "10m",
        "negative_ttl = \"30s\"\n",
    ) + &upstream_toml("root", "{ORIGIN}/", "2s", "");
    let h = Harness::default_with(&raw).await;
    let a = h.get("/raw/nothing/here").await;
    assert_eq!(a.status, 404);
    a.expect_cache_status("ttl=30; stored", "");
    let b = h.get("/raw/nothing/here").await;
    assert_eq!(b.status, 404);
    assert!(b.cache_status().contains("hit"));
    assert_eq!(h.sim.calls(), 1);
    h.clock.advance(Duration::from_secs(31));
    h.get("/raw/nothing/here").await;
    assert_eq!(h.sim.calls(), 2);

    h.sim.set_fault(Fault::Status(500));
    let e = h.get(&air("광주")).await;
    assert_eq!(e.status, 502);
    assert_eq!(e.json()["upstream_status"], 500);
    h.sim.set_fault(Fault::None);
    let ok = h.get(&air("광주")).await;
    assert_eq!(ok.status, 200);
    ok.expect_cache_status("fwd=miss", "5xx was cached: ");
}

#[tokio::test]
async fn ok_when_rejections_are_errors_naming_the_upstream_code() {
    let h = Harness::default_with("").await;
    h.sim.set_fault(Fault::GatewayError(30));
    let r = h.get(&air("서울")).await;
    assert_eq!(r.status, 502);
    let j = r.json();
    assert_eq!(j["error"], "upstream_rejected");
    assert_eq!(j["upstream_code"], "30");
    assert!(
        j["message"]
            .as_str()
            .unwrap()
            .contains("SERVICE_KEY_IS_NOT_REGISTERED_ERROR")
    );
    // Not cached: the next request goes upstream again.
    h.sim.set_fault(Fault::None);
    assert_eq!(h.get(&air("서울")).await.status, 200);
    assert_eq!(h.sim.calls(), 2);
    // Garbage and truncated bodies with HTTP 200.
    for f in [Fault::Garbage, Fault::Truncated] {
        h.sim.set_fault(f);
        let r = h.get(&air("울산")).await;
        assert_eq!(r.status, 502, "{}", r.body);
        assert_eq!(r.json()["error"], "upstream_rejected");
    }
    // The XML format passes the same predicate.
    h.sim.set_fault(Fault::None);
    let xml = h
        .get("/air/getCtprvnRltmMesureDnsty?sidoName=세종&numOfRows=5&pageNo=1")
        .await;
    assert_eq!(xml.status, 200);
    assert!(xml.body.starts_with("<?xml"));
    h.expect_metric(
        r#"sluice_upstream_requests_total{upstream="airkorea",result="rejected",caller="gateway"}"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_cold_requests_make_one_upstream_call() {
    let sim = SimConfig {
        latency: Duration::from_millis(300),
        ..Default::default()
    };
    let h = Harness::start(sim, &format!("{UPSTREAM}{ROUTE}")).await;
    let tasks = h.spawn_gets((0..200).map(|_| air("경기")));
    let mut bodies = std::collections::HashSet::new();
    let mut collapsed = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        collapsed += usize::from(r.cache_status().contains("collapsed"));
        bodies.insert(r.body);
    }
    assert_eq!(h.sim.calls(), 1);
    assert_eq!(bodies.len(), 1);
    assert!(collapsed > 0);
    // Errors are shared the same way.
    h.sim.set_fault(Fault::Status(503));
    for t in h.spawn_gets((0..200).map(|_| air("강원"))) {
        assert_eq!(t.await.unwrap().status, 502);
    }
    assert_eq!(h.sim.calls(), 2);
    h.expect_metric("sluice_gateway_coalesced_waiters_total{route=\"air\"}")
        .await;
}

#[tokio::test]
async fn retries_timeouts_and_backoff() {
    let up = UPSTREAM
        .replace(
            "retries = { max = 0, backoff = \"10ms\" }",
            "retries = { max = 2, backoff = \"10ms\" }",
        )
        .replace("timeout = \"2s\"", "timeout = \"300ms\"");
    let h = Harness::start(fast_sim(), &format!("{up}{ROUTE}")).await;
    // Two 503s, then success: three calls, client sees 200.
    h.sim.set_fault_for(Fault::Status(503), 2);
    let r = h.get(&air("서울")).await;
    assert_eq!(r.status, 200);
    assert_eq!(h.sim.calls(), 3);
    // A hanging upstream: three timed-out attempts, then 504.
    h.sim.reset_calls();
    h.sim.set_fault(Fault::Hang);
    let r = h.get(&air("부산")).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert_eq!(h.sim.calls(), 3);
    // Non-retryable: a 200 with code 30 is tried once.
    h.sim.reset_calls();
    h.sim.set_fault(Fault::GatewayError(30));
    assert_eq!(h.get(&air("대전")).await.status, 502);
    assert_eq!(h.sim.calls(), 1);
}

#[tokio::test]
async fn concurrency_is_capped_per_upstream() {
    let up = UPSTREAM.replace("concurrency = 64", "concurrency = 2");
    let h = Harness::start(fast_sim(), &format!("{up}{ROUTE}")).await;
    h.sim.set_fault(Fault::Hang);
    let tasks = h.spawn_gets(["a", "b", "c", "d"].map(air));
    // Wait until two calls hang at the upstream, give the others time to pile on.
    for _ in 0..250 {
        if h.sim.calls() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.sim.calls(), 2, "more than 2 calls in flight");
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 504);
    }
}

#[tokio::test]
async fn per_second_rate_limit_answers_429_with_retry_after() {
    let up = UPSTREAM
        .replace("timeout = \"2s\"", "timeout = \"300ms\"")
        .replace(
            "concurrency = 64",
            "concurrency = 64\nrate_limit = { per_second = 1 }",
        );
    let h = Harness::start(fast_sim(), &format!("{up}{ROUTE}")).await;
    let tasks = h.spawn_gets(["a", "b", "c", "d", "e"].map(air));
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert!(!r.header("retry-after").is_empty());
                assert_eq!(r.json()["error"], "quota_exceeded");
            }
            s => panic!("unexpected {s}"),
        }
    }
    // One slot a second, waits bounded by the 300 ms timeout: one call, four 429s.
    assert_eq!((ok, limited), (1, 4));
    assert_eq!(h.sim.calls(), 1);
}

#[tokio::test]
async fn daily_quota_serves_stale_then_429_and_resets_at_midnight() {
    let up = UPSTREAM.replace(
        "concurrency = 64",
        "concurrency = 64\nrate_limit = { per_day = 3, timezone = \"Asia/Seoul\" }",
    );
    let h = Harness::start(fast_sim(), &format!("{up}{ROUTE}")).await;
    // Noon in Seoul, so the day does not roll over during the test.
    let noon_kst = chrono::NaiveDate::from_ymd_opt(2026, 11, 25)
        .unwrap()
        .and_hms_opt(3, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis();
    h.clock.set(noon_kst);
    for s in ["a", "b", "c"] {
        assert_eq!(h.get(&air(s)).await.status, 200);
    }
    h.expect_metric("sluice_upstream_quota_remaining_calls{upstream=\"airkorea\"} 0")
        .await;
    let r = h.get(&air("d")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), (12 * 3600).to_string());
    // An expired-but-held entry is served when the budget is spent.
    h.clock.advance(Duration::from_secs(11 * 60));
    let st = h.get(&air("a")).await;
    assert_eq!(st.status, 200);
    st.expect_cache_status("detail=quota-exceeded", "");
    assert_eq!(h.sim.calls(), 3);
    // Midnight in Seoul: a new budget.
    h.clock.set(noon_kst + 12 * 3600 * 1000);
    assert_eq!(h.get(&air("d")).await.status, 200);
    assert_eq!(h.sim.calls(), 4);
}

#[tokio::test]
async fn large_bodies_pass_through_uncached() {
    let h = Harness::default_with(
        "\n[store]\nkind = \"memory\"\nmax_bytes = \"1MiB\"\nmax_body = \"2KiB\"\n",
    )
    .await;
    let p = "/air/getCtprvnRltmMesureDnsty?sidoName=서울&returnType=json&numOfRows=40&pageNo=1";
    let a = h.get(p).await;
    assert_eq!(a.status, 200);
    assert!(a.body.len() > 2048);
    a.expect_cache_status("detail=too-large", "");
    h.get(p).await;
    assert_eq!(h.sim.calls(), 2);
    // Small ones are cached.
    h.get(&air("x").replace("numOfRows=10", "numOfRows=1"))
        .await;
    assert!(
        h.get(&air("x").replace("numOfRows=10", "numOfRows=1"))
            .await
            .cache_status()
            .contains("hit")
    );
    h.expect_metric("sluice_gateway_requests_total{route=\"air\",cache_status=\"bypass\"}")
        .await;
}

#[tokio::test]
async fn head_is_served_from_the_get_entry() {
    let h = Harness::default_with("").await;
    h.get(&air("서울")).await;
    let r = h
        .admin(reqwest::Method::HEAD, &air("서울"), None, None)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.headers["cache-status"].to_str().unwrap().contains("hit"));
    assert_eq!(h.sim.calls(), 1);
    let post = h
        .admin(reqwest::Method::POST, &air("서울"), None, None)
        .await;
    assert_eq!(post.status, 405);
}

#[tokio::test]
async fn admin_is_disabled_without_a_token() {
    let h = Harness::default_with("").await;
    let r = h.purge("{\"route\":\"air\"}", None).await;
    assert_eq!(r.status, 404);
    let r = h.get("/admin/cache/stats").await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn admin_purges_by_key_route_prefix_and_url() {
    let cfg = with_admin(&format!("{UPSTREAM}{ROUTE}"));
    let h = Harness::start(fast_sim(), &cfg).await;
    let purge = async |body: &str| h.purge(body, Some(ADMIN)).await;
    let stats = async |token: &str| {
        h.admin(
            reqwest::Method::GET,
            "/admin/cache/stats",
            Some(token),
            None,
        )
        .await
    };
    // Auth.
    let r = h.purge("{\"route\":\"air\"}", None).await;
    assert_eq!(r.status, 401);
    let r = stats("wrong-token-000000000").await;
    assert_eq!(r.status, 401);

    for s in ["a", "b", "c"] {
        h.get(&air(s)).await;
    }
    let stats = stats(ADMIN).await.json();
    assert_eq!(stats["entries"], 3);
    assert_eq!(stats["store"], "memory");

    // By URL (the key a GET of it uses), then by exact key.
    let r = purge(&format!("{{\"url\":\"{}\"}}", air("a"))).await.json();
    assert_eq!(r["purged"], 1);
    let key = r["target"]["key"].as_str().unwrap().to_owned();
    assert!(
        key.starts_with("air GET /air/getCtprvnRltmMesureDnsty?"),
        "{key}"
    );
    assert_no_secret("a key", &key);
    assert!(h.get(&air("a")).await.cache_status().contains("fwd=miss"));
    let r = purge(&serde_json::json!({"key": key}).to_string())
        .await
        .json();
    assert_eq!(r["purged"], 1);
    // By prefix.
    let r = purge("{\"prefix\":\"air GET /air/getCtprvnRltmMesureDnsty?numOfRows=10&pageNo=1&returnType=json&sidoName=b\"}").await.json();
    assert_eq!(r["purged"], 1);
    // By route.
    let r = purge("{\"route\":\"air\"}").await.json();
    assert_eq!(r["purged"], 1);
    assert!(h.get(&air("c")).await.cache_status().contains("fwd=miss"));
    // Bad requests.
    assert_eq!(purge("{\"route\":\"nope\"}").await.status, 404);
    assert_eq!(purge("{}").await.status, 400);
    assert_eq!(purge("{\"colour\":1}").await.status, 400);
}

#[tokio::test]
async fn metrics_cover_requests_upstreams_and_store() {
    let h = Harness::default_with("").await;
    h.get(&air("서울")).await;
    h.get(&air("서울")).await;
    h.get("/nowhere").await;
    let r = h.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/plain"));
    let m = r.body;
    for needle in [
        "sluice_gateway_requests_total{route=\"air\",cache_status=\"hit\"}",
        "sluice_gateway_requests_total{route=\"air\",cache_status=\"miss\"}",
        "sluice_upstream_requests_total{upstream=\"airkorea\",result=\"ok\",caller=\"gateway\"}",
        "sluice_upstream_request_duration_seconds_bucket{upstream=\"airkorea\",result=\"ok\",le=\"0.025\"}",
        "sluice_store_entries{store=\"memory\"}",
        "sluice_store_bytes{store=\"memory\"}",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    let health = h.get("/healthz").await;
    assert_eq!(health.json()["status"], "ok");
}
