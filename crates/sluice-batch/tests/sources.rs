//! The HTTP and SQL readers, the tasklets and the cache writer against real
//! servers: the simulated data portal, SQLite, PostgreSQL and MySQL/MariaDB.
//!
//! PostgreSQL: `SLUICE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). MySQL: `SLUICE_TEST_MYSQL_URL`
//! (default `mysql://root@127.0.0.1:3306/test`; skipped when unset and not
//! reachable). Each test creates its own database `sluice_s_<random>` and drops it.

mod common;
use common::{Server, ServerDb, WriteItems};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use serde_json::{Value, json};
use sluice_batch::readers::{HttpPagesReader, Pagination, SqlReader};
use sluice_batch::tasklets::{BatchLoop, HttpTasklet, ShellTasklet, SqlTasklet};
use sluice_batch::writers::CacheWriter;
use sluice_batch::{ReadError, Reader, Tasklet, WriteError, Writer};
use sluice_cache::{Entry, MemoryStore, PutOutcome, Store, StoreError, StoreStats};
use sluice_core::{LocalQuota, Secret};
use sluice_gateway::{Gateway, RouteSpec, Ttl};
use sluice_testkit::{Fault, SimConfig, SimUpstream};
use sluice_upstream::{Jq, OkWhen, RetryPolicy, Upstream, UpstreamSpec, encode_component};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OP: &str = "/getCtprvnRltmMesureDnsty";
const SIDO: &str = "서울";

// ---------------------------------------------------------------------------
// Simulated portal and upstream

async fn sim(rows: usize) -> SimUpstream {
    SimUpstream::start(SimConfig {
        latency: Duration::from_millis(2),
        rows_per_sido: rows,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

struct Up {
    timeout: Duration,
    per_day: Option<u64>,
    ok_when: bool,
}

impl Default for Up {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            per_day: None,
            ok_when: true,
        }
    }
}

impl Up {
    /// The defaults with a daily quota of `n` calls.
    fn per_day(n: u64) -> Up {
        Up {
            per_day: Some(n),
            ..Up::default()
        }
    }
}

fn upstream(sim: &SimUpstream, o: Up) -> Arc<Upstream> {
    upstream_at(&sim.base_url(), o)
}

fn upstream_at(base_url: &str, o: Up) -> Arc<Upstream> {
    let quota = LocalQuota::new(
        None,
        o.per_day,
        "Asia/Seoul".parse().unwrap(),
        Arc::new(sluice_core::SystemClock),
    );
    Arc::new(
        Upstream::new(UpstreamSpec {
            name: "airkorea".into(),
            base_url: base_url.parse().unwrap(),
            secret_query: vec![(
                "serviceKey".into(),
                Secret::new(SimConfig::default().service_key),
            )],
            secret_headers: Vec::new(),
            timeout: o.timeout,
            retries: RetryPolicy {
                max: 0,
                backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(10),
            },
            concurrency: 8,
            quota: Arc::new(quota),
            ok_when: o
                .ok_when
                .then(|| OkWhen::compile(r#".response.header.resultCode == "00""#).unwrap()),
            retry_codes: Vec::new(),
            quota_codes: vec!["22".into()],
            max_response_bytes: 8 << 20,
            preset: None,
            normalize: false,
            code_meanings: Default::default(),
        })
        .unwrap(),
    )
}

fn pages_reader(up: Arc<Upstream>, size: u64, json: bool) -> HttpPagesReader {
    let r = HttpPagesReader::new(
        up,
        OP,
        Jq::compile(".response.body.items[]").unwrap(),
        Pagination::page("pageNo", "numOfRows", size),
    )
    .query("sidoName", SIDO)
    .total_count(Jq::compile(".response.body.totalCount").unwrap());
    if json {
        r.query("returnType", "json")
    } else {
        r
    }
}

async fn read_n(r: &mut dyn Reader, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        match r.read().await.unwrap() {
            Some(it) => out.push(it.item),
            None => break,
        }
    }
    out
}

async fn read_all(r: &mut dyn Reader) -> Vec<Value> {
    read_n(r, usize::MAX).await
}

fn stations(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["stationName"].as_str().unwrap().to_owned())
        .collect()
}

/// `r`, opened without a checkpoint.
async fn opened<R: Reader>(mut r: R) -> R {
    r.open(None).await.unwrap();
    r
}

/// The first error of a new pages reader on `up` (10 a page, JSON) when the next
/// answer of `sim` is `fault`.
async fn error_on(sim: &SimUpstream, fault: Fault, up: &Arc<Upstream>) -> ReadError {
    sim.set_fault_for(fault, 1);
    error_of(up).await
}

/// The first error of a new pages reader on `up` (10 a page, JSON).
async fn error_of(up: &Arc<Upstream>) -> ReadError {
    first_error(&mut opened(pages_reader(up.clone(), 10, true)).await).await
}

/// The `pageNo` of every request `sim` received, in order.
fn pages_asked(sim: &SimUpstream) -> Vec<String> {
    sim.requests()
        .iter()
        .map(|q| q.param("pageNo").unwrap())
        .collect()
}

/// Asserts that `e` is transient (or, with `transient` false, fatal) and that its
/// message contains each of `needles`.
#[track_caller]
fn expect_error(e: &ReadError, transient: bool, needles: &[&str]) {
    let (kind_ok, message) = match e {
        ReadError::Transient(m) => (transient, m.as_str()),
        ReadError::Fatal(m) => (!transient, m.as_str()),
        _ => (false, ""),
    };
    assert!(
        kind_ok && needles.iter().all(|n| message.contains(n)),
        "{e:?}"
    );
}

async fn first_error(r: &mut dyn Reader) -> ReadError {
    loop {
        match r.read().await {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the reader ended without an error"),
            Err(e) => return e,
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP reader

#[tokio::test]
async fn http_reader_hostile_pages_are_errors_not_crashes_or_leaks() {
    let h = sluice_testkit::HostileUpstream::start().await.unwrap();
    let key = SimConfig::default().service_key;
    for ok_when in [true, false] {
        for (path, want) in [
            ("/deep-xml/8000", "deeper than 128"),
            ("/deep-xml/300000", "deeper than 128"),
            ("/deep-json/100000", "deeper than 128"),
            ("/deep-json-obj/20000", "deeper than 128"),
            ("/garbage", "invalid HTTP"),
            ("/echo-error-json", "error code 30"),
            ("/gzip", "Content-Encoding: gzip"),
        ] {
            if path == "/echo-error-json" && !ok_when {
                continue; // a valid body with no items: only ok_when knows it failed
            }
            let up = upstream_at(
                &h.base_url(),
                Up {
                    ok_when,
                    ..Up::default()
                },
            );
            let mut r = HttpPagesReader::new(
                up,
                path,
                Jq::compile(".response.body.items[]?").unwrap(),
                Pagination::page("pageNo", "numOfRows", 10),
            );
            r.open(None).await.unwrap();
            let e = first_error(&mut r).await.to_string();
            assert!(e.contains(want), "{path} (ok_when {ok_when}): {e}");
            for form in [key.as_str(), "sim+Key", "sim%2BKey", "sim%2bKey"] {
                assert!(!e.contains(form), "{path}: the key leaked: {e}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reader_reads_every_page_once() {
    // 91 rows in pages of 10: the last page holds one row, which the portal sends
    // as a lone object instead of a list.
    let sim = sim(91).await;
    let mut r = opened(pages_reader(upstream(&sim, Up::default()), 10, true)).await;
    let items = read_all(&mut r).await;
    assert_eq!(items.len(), 91);
    assert_eq!(r.total(), Some(91));
    let names = stations(&items);
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), 91, "{names:?}");
    assert!(names[90].ends_with("91"), "{}", names[90]);
    assert!(items.iter().all(|i| i["sidoName"] == SIDO));
    // The total stops the reading after the last page: no empty page is asked for.
    assert_eq!(sim.calls(), 10);
    let pages = pages_asked(&sim);
    assert_eq!(pages, (1..=10).map(|p| p.to_string()).collect::<Vec<_>>());
    assert_eq!(r.checkpoint()["page"], json!(10));
    assert_eq!(r.checkpoint()["index"], json!(1));
    assert!(r.read().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reader_reads_xml_pages_too() {
    let sim = sim(25).await;
    let up = upstream(&sim, Up::default());
    let mut xml = opened(pages_reader(up.clone(), 10, false)).await;
    let from_xml = read_all(&mut xml).await;
    let mut js = opened(pages_reader(up, 10, true)).await;
    let from_json = read_all(&mut js).await;
    assert_eq!(from_xml.len(), 25);
    assert_eq!(xml.total(), Some(25));
    assert_eq!(stations(&from_xml), stations(&from_json));
    assert!(
        sim.requests()
            .iter()
            .any(|q| q.param("returnType").is_none())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reader_checkpoint_resumes_exactly_mid_page() {
    let sim = sim(91).await;
    let up = upstream(&sim, Up::default());
    let mut all = opened(pages_reader(up.clone(), 10, true)).await;
    let full = stations(&read_all(&mut all).await);

    for cut in [23usize, 30, 1, 90] {
        let mut a = pages_reader(up.clone(), 10, true);
        a.open(None).await.unwrap();
        let head = stations(&read_n(&mut a, cut).await);
        let cp = a.checkpoint();
        // A page read to its end is the next page's start (91 rows: page 10 is
        // not the last), so that resuming fetches no page twice.
        let cut_u = cut as u64;
        let (page, index) = (cut_u / 10 + 1, cut_u % 10);
        assert_eq!(cp["page"], json!(page), "{cp}");
        assert_eq!(cp["index"], json!(index), "{cp}");
        assert_eq!(cp["position"], json!(cut), "{cp}");
        // Through the JSON the repository would store.
        let cp: Value = serde_json::from_str(&cp.to_string()).unwrap();
        let mut b = pages_reader(up.clone(), 10, true);
        b.open(Some(&cp)).await.unwrap();
        let first = b.read().await.unwrap().unwrap();
        assert_eq!(first.position, cut as u64 + 1);
        let mut tail = stations(&[first.item]);
        tail.extend(stations(&read_all(&mut b).await));
        let mut joined = head.clone();
        joined.extend(tail);
        assert_eq!(joined, full, "cut at {cut}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reader_failures_are_transient_or_fatal() {
    let sim = sim(40).await;

    // A 5xx after the upstream's retries: transient, and reopening at the
    // checkpoint carries on.
    let up = upstream(&sim, Up::default());
    let mut r = opened(pages_reader(up.clone(), 10, true)).await;
    let head = read_n(&mut r, 20).await;
    sim.set_fault_for(Fault::Status(503), 1);
    let e = first_error(&mut r).await;
    expect_error(&e, true, &["503", "page 3"]);
    let cp = r.checkpoint();
    r.open(Some(&cp)).await.unwrap();
    let rest = read_all(&mut r).await;
    assert_eq!(head.len() + rest.len(), 40);

    // A timeout: transient.
    let slow = upstream(
        &sim,
        Up {
            timeout: Duration::from_millis(300),
            ..Up::default()
        },
    );
    let e = error_on(&sim, Fault::Hang, &slow).await;
    expect_error(&e, true, &["timeout"]);

    // A result code in an HTTP 200: fatal, naming the code.
    let e = error_on(&sim, Fault::ResultCode("01".into()), &up).await;
    expect_error(&e, false, &["error code 01", "page 1"]);

    // The portal's gateway error (XML whatever was asked for): fatal, with its code.
    let e = error_on(&sim, Fault::GatewayError(30), &up).await;
    expect_error(&e, false, &["30"]);

    // Another status: fatal.
    let e = error_on(&sim, Fault::Status(404), &up).await;
    expect_error(&e, false, &["HTTP 404"]);

    // A body that is neither JSON nor XML (no ok_when to catch it): fatal, naming
    // the page.
    let lax = upstream(
        &sim,
        Up {
            ok_when: false,
            ..Up::default()
        },
    );
    let mut r = opened(pages_reader(lax, 10, true)).await;
    read_n(&mut r, 10).await;
    sim.set_fault_for(Fault::Garbage, 1);
    let e = first_error(&mut r).await;
    expect_error(&e, false, &["page 2", "the body is not valid JSON"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reader_spent_quota_suspends_until_the_reset() {
    let suspended = |e: &ReadError, needles: &[&str]| match e {
        ReadError::Suspended {
            reason,
            resume_at_ms: Some(at),
        } => {
            assert!(needles.iter().all(|n| reason.contains(n)), "{reason}");
            assert!(*at > chrono::Utc::now().timestamp_millis(), "{at}");
        }
        other => panic!("not suspended: {other:?}"),
    };
    let sim = sim(40).await;
    let e = error_of(&upstream(&sim, Up::per_day(2))).await;
    suspended(&e, &["page 3", "has no calls left today", "it resets at"]);
    assert_eq!(sim.calls(), 2, "no call past the budget");

    // The upstream's own quota code (22) spends the local budget too.
    let sim2 = self::sim(40).await;
    let up = upstream(&sim2, Up::per_day(1000));
    let e = error_on(&sim2, Fault::GatewayError(22), &up).await;
    suspended(&e, &["reports its daily quota spent", "22"]);

    // A reserve: with 3 calls a day and 2 kept, one page is read.
    let sim3 = self::sim(40).await;
    let mut r = pages_reader(upstream(&sim3, Up::per_day(3)), 10, true).quota_reserve(2);
    r.open(None).await.unwrap();
    let e = first_error(&mut r).await;
    suspended(
        &e,
        &["page 2", "has 2 calls left today, within the reserve of 2"],
    );
    assert_eq!(sim3.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reader_follows_cursors() {
    // The sim has no cursors; the next page number, computed by jq, stands in for
    // one (and the first page is asked for without it).
    let sim = sim(45).await;
    let up = upstream(&sim, Up::default());
    let reader = || {
        HttpPagesReader::new(
            up.clone(),
            OP,
            Jq::compile(".response.body.items[]").unwrap(),
            Pagination::Cursor {
                param: "pageNo".into(),
                next: Jq::compile(
                    ".response.body | if .pageNo * .numOfRows < .totalCount then .pageNo + 1 else null end",
                )
                .unwrap(),
            },
        )
        .query("sidoName", SIDO)
        .query("returnType", "json")
        .query("numOfRows", "10")
    };
    let mut r = reader();
    r.open(None).await.unwrap();
    let full = stations(&read_all(&mut r).await);
    assert_eq!(full.len(), 45);
    assert_eq!(sim.calls(), 5);
    assert_eq!(sim.requests()[0].param("pageNo"), None);

    let mut a = reader();
    a.open(None).await.unwrap();
    let mut got = stations(&read_n(&mut a, 27).await);
    let cp = a.checkpoint();
    assert_eq!(cp, json!({"page": 3, "index": 7, "position": 27}));
    let mut b = reader();
    b.open(Some(&cp)).await.unwrap();
    got.extend(stations(&read_all(&mut b).await));
    assert_eq!(got, full);
}

/// A tiny HTTP server with offset/limit paging over 25 items `{"id": n}`.
async fn offset_server() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let target = head.split(' ').nth(1).unwrap_or("/").to_owned();
                seen.lock().unwrap().push(target.clone());
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let get = |name: &str| {
                    query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                        .and_then(|v| v.parse::<usize>().ok())
                };
                let (offset, limit) = (get("offset").unwrap_or(0), get("limit").unwrap_or(10));
                let data: Vec<Value> = (offset..(offset + limit).min(25))
                    .map(|i| json!({"id": i}))
                    .collect();
                let body = json!({"data": data, "meta": {"total": 25}}).to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/api"), log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reader_pages_by_offset() {
    let (base, log) = offset_server().await;
    let up = Arc::new(
        Upstream::new(UpstreamSpec {
            name: "offsets".into(),
            base_url: base.parse().unwrap(),
            secret_query: Vec::new(),
            secret_headers: Vec::new(),
            timeout: Duration::from_secs(5),
            retries: RetryPolicy::default(),
            concurrency: 2,
            quota: Arc::new(LocalQuota::new(
                None,
                None,
                "UTC".parse().unwrap(),
                Arc::new(sluice_core::SystemClock),
            )),
            ok_when: None,
            retry_codes: Vec::new(),
            quota_codes: Vec::new(),
            max_response_bytes: 1 << 20,
            preset: None,
            normalize: false,
            code_meanings: Default::default(),
        })
        .unwrap(),
    );
    let reader = || {
        HttpPagesReader::new(
            up.clone(),
            "/items",
            Jq::compile(".data[]").unwrap(),
            Pagination::Offset {
                param: "offset".into(),
                size_param: "limit".into(),
                size: 10,
            },
        )
        .total_count(Jq::compile(".meta.total").unwrap())
    };
    let mut r = reader();
    r.open(None).await.unwrap();
    let ids: Vec<Value> = read_all(&mut r)
        .await
        .into_iter()
        .map(|i| i["id"].clone())
        .collect();
    assert_eq!(ids, (0..25).map(|i| json!(i)).collect::<Vec<_>>());
    assert_eq!(
        *log.lock().unwrap(),
        [
            "/api/items?offset=0&limit=10",
            "/api/items?offset=10&limit=10",
            "/api/items?offset=20&limit=10"
        ]
    );

    let mut a = reader();
    a.open(None).await.unwrap();
    read_n(&mut a, 13).await;
    let cp = a.checkpoint();
    assert_eq!(cp, json!({"page": 10, "index": 3, "position": 13}));
    let mut b = reader();
    b.open(Some(&cp)).await.unwrap();
    let first = b.read().await.unwrap().unwrap();
    assert_eq!((first.item["id"].clone(), first.position), (json!(13), 14));
}

fn air_route(up: Arc<Upstream>) -> RouteSpec {
    RouteSpec {
        name: "air".into(),
        path: "/air/{*rest}".into(),
        upstream: up,
        upstream_path: None,
        query: Vec::new(),
        ttl: Ttl::Fixed(Duration::from_secs(600)),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        negative_ttl: Duration::ZERO,
        key_query: None,
        vary: Vec::new(),
        cache_redirects: false,
    }
}

fn gateway(up: Arc<Upstream>) -> Gateway {
    Gateway::builder()
        .route(air_route(up))
        .store(Arc::new(MemoryStore::builder().build()))
        .build()
        .unwrap()
}

/// The default value of `f`'s argument: a way to get an `http::Request` for
/// `Gateway::handle` without naming its type.
fn arg_of<A: Default, R>(_f: impl FnOnce(A) -> R) -> A {
    A::default()
}

/// `GET path_and_query` through the gateway: status, `Cache-Status`, body.
async fn gw_get(gw: &Gateway, path_and_query: &str) -> (u16, String, Vec<u8>) {
    let mut req = arg_of(|r| gw.handle(r));
    *req.uri_mut() = path_and_query.parse().unwrap();
    let resp = gw.handle(req).await;
    let status = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut body = Vec::new();
    let mut stream = resp.into_body().into_data_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
    }
    (status, cache, body)
}

/// `GET` of the air route with `query` through the gateway; asserts a 200 whose
/// `Cache-Status` contains `cache_has`, and returns the body.
async fn gw_air_ok(gw: &Gateway, query: &str, cache_has: &str) -> Vec<u8> {
    let (status, cache, body) = gw_get(gw, &format!("/air{OP}?{query}")).await;
    assert_eq!(status, 200);
    assert!(cache.contains(cache_has), "{cache}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_reader_takes_fresh_pages_from_the_gateway_cache() {
    let sim = sim(45).await;
    let up = upstream(&sim, Up::default());
    let gw = gateway(up.clone());
    let sido = encode_component(SIDO);
    for page in [1, 2] {
        let query = format!("returnType=json&numOfRows=10&pageNo={page}&sidoName={sido}");
        gw_air_ok(&gw, &query, "fwd=miss").await;
    }
    sim.reset_calls();
    let mut r = opened(pages_reader(up, 10, true).cache(gw.clone(), "air")).await;
    assert_eq!(read_all(&mut r).await.len(), 45);
    // Pages 1 and 2 came from the cache.
    assert_eq!(sim.calls(), 3);
    let pages = pages_asked(&sim);
    assert_eq!(pages, ["3", "4", "5"]);

    // With a TTL, pages fetched are stored for the gateway's clients.
    let mut r = opened(
        pages_reader(gw.upstreams()[0].clone(), 15, true)
            .cache(gw.clone(), "air")
            .cache_ttl(Duration::from_secs(60)),
    )
    .await;
    assert_eq!(read_all(&mut r).await.len(), 45);
    let query = format!("sidoName={sido}&returnType=json&pageNo=2&numOfRows=15");
    let body = gw_air_ok(&gw, &query, "hit").await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["response"]["body"]["pageNo"], json!(2));
}

// ---------------------------------------------------------------------------
// Databases

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display())
}

/// Runs `statements` on `url`, one by one.
async fn exec(url: &str, statements: &[String]) {
    let mut t = SqlTasklet::new(url, "");
    for s in statements {
        t.sql = s.clone();
        t.execute().await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

/// Multi-row INSERTs of `rows` value tuples, 500 a statement.
fn inserts(table: &str, cols: &str, rows: impl Iterator<Item = String>) -> Vec<String> {
    let rows: Vec<String> = rows.collect();
    rows.chunks(500)
        .map(|c| format!("INSERT INTO {table} ({cols}) VALUES {}", c.join(", ")))
        .collect()
}

const N: usize = 10_000;

/// `readings`: 10,000 rows keyed by (site, seq), inserted out of order.
async fn make_readings(url: &str) {
    let mut stmts = vec![
        "CREATE TABLE readings (site INTEGER NOT NULL, seq VARCHAR(20) NOT NULL, \
         value DOUBLE PRECISION, ok BOOLEAN, note VARCHAR(50), amount NUMERIC(10,2), \
         PRIMARY KEY (site, seq))"
            .to_owned(),
    ];
    stmts.extend(inserts(
        "readings",
        "site, seq, value, ok, note, amount",
        (0..N).map(|j| {
            let i = (j * 7919) % N;
            let note = if i.is_multiple_of(5) {
                "NULL".to_owned()
            } else {
                format!("'n{i}'")
            };
            format!(
                "({}, 's{:03}', {}.5, {}, {note}, {}.25)",
                i / 100,
                i % 100,
                i,
                if i.is_multiple_of(3) { "TRUE" } else { "FALSE" },
                i % 1000
            )
        }),
    ));
    exec(url, &stmts).await;
}

fn expected_key(i: usize) -> (i64, String) {
    ((i / 100) as i64, format!("s{:03}", i % 100))
}

async fn sql_reader_suite(url: &str) {
    make_readings(url).await;
    let reader = || SqlReader::table(url, "readings", ["site", "seq"]).page_size(333);

    let mut r = reader().count_total(true);
    r.open(None).await.unwrap();
    assert_eq!(r.total(), Some(N as u64));
    let all = read_all(&mut r).await;
    assert_eq!(all.len(), N);
    for (i, item) in all.iter().enumerate() {
        let (site, seq) = expected_key(i);
        assert_eq!(item["site"], json!(site), "{item}");
        assert_eq!(item["seq"], json!(seq), "{item}");
    }
    let first = &all[0];
    assert_eq!(first["value"], json!(0.5), "{first}");
    assert_eq!(first["ok"], json!(true), "{first}");
    assert_eq!(first["note"], Value::Null, "{first}");
    assert_eq!(all[1]["ok"], json!(false));
    assert_eq!(all[1]["note"], json!("n1"));
    assert!(!first["amount"].is_null(), "{first}");

    // Resume mid-page: 4100 = 12 pages of 333 + 104.
    let mut a = reader();
    a.open(None).await.unwrap();
    let head = read_n(&mut a, 4100).await;
    let cp = a.checkpoint();
    assert_eq!(cp["after"], json!([40, "s099"]), "{cp}");
    let cp: Value = serde_json::from_str(&cp.to_string()).unwrap();
    let mut b = reader();
    b.open(Some(&cp)).await.unwrap();
    let first_b = b.read().await.unwrap().unwrap();
    assert_eq!(first_b.position, 4101);
    let mut joined = head;
    joined.push(first_b.item);
    joined.extend(read_all(&mut b).await);
    assert_eq!(joined, all);

    // A query fragment with its own WHERE, some columns.
    let mut q = SqlReader::query(url, "FROM readings WHERE site >= 50", ["site", "seq"])
        .columns(["seq", "value"])
        .page_size(1000);
    q.open(None).await.unwrap();
    let half = read_all(&mut q).await;
    assert_eq!(half.len(), N / 2);
    assert_eq!(half[0], json!({"seq": "s000", "value": 5000.5}));

    // SQL errors are fatal, with the database's message.
    let mut bad = SqlReader::table(url, "no_such_table", ["id"]);
    let e = bad.open(None).await.unwrap_err();
    expect_error(&e, false, &["no_such_table"]);
    let mut bad = reader().columns(["nope"]);
    let e = bad.open(None).await.unwrap_err();
    expect_error(&e, false, &["nope"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_reader_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    sql_reader_suite(&sqlite_url(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_reader_postgres() {
    let db = ServerDb::new(Server::Postgres, "sluice_s").await;
    sql_reader_suite(&db.url).await;
    // Keys of a type bound as text (a timestamp) compare as that type.
    exec(
        &db.url,
        &[
            "CREATE TABLE ev (at TIMESTAMPTZ PRIMARY KEY, n NUMERIC, doc JSONB)".into(),
            "INSERT INTO ev SELECT TIMESTAMPTZ '2024-01-01 00:00:00+00' + g * INTERVAL '1 minute', \
             g / 4.0, jsonb_build_object('g', g) FROM generate_series(1, 50) g"
                .into(),
        ],
    )
    .await;
    let reader = || SqlReader::table(&db.url, "ev", ["at"]).page_size(7);
    let mut r = reader();
    r.open(None).await.unwrap();
    let all = read_all(&mut r).await;
    assert_eq!(all.len(), 50);
    assert_eq!(all[0]["n"], json!("0.25000000000000000000"));
    assert_eq!(all[0]["doc"], json!(r#"{"g": 1}"#));
    let mut a = reader();
    a.open(None).await.unwrap();
    let mut got = read_n(&mut a, 20).await;
    let cp = a.checkpoint();
    let mut b = reader();
    b.open(Some(&cp)).await.unwrap();
    got.extend(read_all(&mut b).await);
    assert_eq!(got, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_reader_mysql() {
    let db = ServerDb::new(Server::MySql, "sluice_s").await;
    sql_reader_suite(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_reader_lost_database_is_transient() {
    let port = sluice_testkit::free_port();
    let mut r = SqlReader::table(
        format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        "t",
        ["id"],
    )
    .connect_timeout(Duration::from_millis(500));
    let e = r.open(None).await.unwrap_err();
    assert!(matches!(e, ReadError::Transient(_)), "{e:?}");
}

// ---------------------------------------------------------------------------
// SQL tasklet

async fn batch_delete_suite(url: &str, delete: &str) {
    let mut stmts = vec!["CREATE TABLE t (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL)".to_owned()];
    stmts.extend(inserts(
        "t",
        "id, ts",
        (0..10_700).map(|i| format!("({i}, {})", if i < 10_500 { i % 100 } else { 500 })),
    ));
    exec(url, &stmts).await;
    let mut t = SqlTasklet::new(url, delete).batch(BatchLoop::default());
    let msg = t.execute().await.unwrap();
    assert_eq!(msg, "10500 rows affected in 11 batches");
    let mut once = SqlTasklet::new(url, "UPDATE t SET ts = ts + 1");
    assert_eq!(once.execute().await.unwrap(), "200 rows affected");
    let mut bad = SqlTasklet::new(url, "DELETE FROM no_such_table");
    let e = bad.execute().await.unwrap_err().to_string();
    assert!(e.contains("no_such_table"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_tasklet_batch_loop_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    batch_delete_suite(
        &sqlite_url(&dir),
        "DELETE FROM t WHERE id IN (SELECT id FROM t WHERE ts < 100 LIMIT 1000)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_tasklet_batch_loop_postgres() {
    let db = ServerDb::new(Server::Postgres, "sluice_s").await;
    batch_delete_suite(
        &db.url,
        "DELETE FROM t WHERE id IN (SELECT id FROM t WHERE ts < 100 LIMIT 1000)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_tasklet_batch_loop_mysql() {
    let db = ServerDb::new(Server::MySql, "sluice_s").await;
    batch_delete_suite(&db.url, "DELETE FROM t WHERE ts < 100 LIMIT 1000").await;
}

// ---------------------------------------------------------------------------
// Shell tasklet

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_tasklet_captures_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = ShellTasklet::new(
        "echo \"hello $WHO\"; pwd; echo careful >&2",
        Duration::from_secs(10),
    )
    .env("WHO", "sluice")
    .cwd(dir.path());
    let msg = t.execute().await.unwrap();
    assert!(msg.starts_with("exit 0"), "{msg}");
    assert!(msg.contains("hello sluice"), "{msg}");
    assert!(
        msg.contains(&dir.path().canonicalize().unwrap().display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("careful"), "{msg}");

    // Only the tail is kept.
    let mut t = ShellTasklet::new("seq 1 100000", Duration::from_secs(10));
    t.tail_bytes = 100;
    let msg = t.execute().await.unwrap();
    assert!(msg.contains("100000") && !msg.contains("\n1\n"), "{msg}");
    assert!(msg.len() < 200, "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_tasklet_failure_carries_code_and_stderr() {
    let mut t = ShellTasklet::new(
        "echo working; echo 'disk full' >&2; exit 3",
        Duration::from_secs(10),
    );
    let e = t.execute().await.unwrap_err().to_string();
    assert!(e.starts_with("exit code 3"), "{e}");
    assert!(e.contains("disk full"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_tasklet_timeout_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let started = Instant::now();
    let mut t = ShellTasklet::new(
        format!(
            "echo before; sleep 30 & echo $! > {}; sleep 30",
            pidfile.display()
        ),
        Duration::from_millis(300),
    );
    let e = t.execute().await.unwrap_err().to_string();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(e.starts_with("timed out after 300ms"), "{e}");
    assert!(e.contains("before"), "{e}");
    // The background child died with the group (it may linger as a zombie until
    // init reaps it).
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    let mut alive = true;
    for _ in 0..100 {
        let state = std::fs::read_to_string(&stat)
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.chars().next()))
            .flatten();
        if matches!(state, None | Some('Z' | 'X')) {
            alive = false;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive, "the background sleep {pid} survived");
}

// ---------------------------------------------------------------------------
// HTTP tasklet

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_tasklet_goes_through_the_upstream() {
    let sim = sim(40).await;
    let up = upstream(&sim, Up::default());
    let mut t = HttpTasklet::new(up.clone(), OP)
        .query("sidoName", SIDO)
        .query("returnType", "json");
    let msg = t.execute().await.unwrap();
    assert!(
        msg.starts_with("HTTP 200, ") && msg.ends_with(" bytes"),
        "{msg}"
    );
    let req = sim.last_request().unwrap();
    assert_eq!(
        req.param("serviceKey").unwrap(),
        SimConfig::default().service_key
    );
    sim.set_fault_for(Fault::ResultCode("12".into()), 1);
    let e = t.execute().await.unwrap_err().to_string();
    assert!(e.contains("error code 12"), "{e}");
}

// ---------------------------------------------------------------------------
// Cache writer

#[derive(Debug)]
struct DownStore;

#[async_trait]
impl Store for DownStore {
    fn kind(&self) -> &'static str {
        "redis"
    }
    fn max_entry_bytes(&self) -> usize {
        1 << 20
    }
    async fn get(&self, _key: &str) -> Result<Option<Arc<Entry>>, StoreError> {
        Err(down())
    }
    async fn put(&self, _key: &str, _entry: Arc<Entry>) -> Result<PutOutcome, StoreError> {
        Err(down())
    }
    async fn purge(&self, _key: &str) -> Result<bool, StoreError> {
        Err(down())
    }
    async fn purge_prefix(&self, _prefix: &str) -> Result<u64, StoreError> {
        Err(down())
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        Err(down())
    }
}

fn down() -> StoreError {
    StoreError::Unavailable {
        store: "redis",
        message: "connection refused".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_writer_warms_the_gateway() {
    let sim = sim(40).await;
    let gw = gateway(upstream(&sim, Up::default()));
    let template = "/air/getCtprvnRltmMesureDnsty?sidoName={sido}&returnType=json";
    let mut w = CacheWriter::new(gw.clone(), template, Duration::from_secs(600)).unwrap();
    w.open(None).await.unwrap();
    let items = vec![
        json!({"sido": "서울", "pm10": "33"}),
        json!({"sido": "부산", "pm10": "12"}),
    ];
    w.write_items(&items).await.unwrap();

    // Another parameter order and encoding: the same key.
    let (status, cache, body) = gw_get(
        &gw,
        &format!(
            "/air/getCtprvnRltmMesureDnsty?returnType=json&sidoName={}",
            encode_component("부산")
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert!(cache.starts_with("sluice; hit"), "{cache}");
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), items[1]);
    assert_eq!(sim.calls(), 0);

    // A missing field is the item's fault; a template no route serves is fatal.
    let e = w.write_items(&[json!({"pm10": "1"})]).await.unwrap_err();
    assert!(
        matches!(&e, WriteError::Item(m) if m.contains("sido")),
        "{e:?}"
    );
    let e = w.write_items(&[json!({"sido": null})]).await.unwrap_err();
    assert!(matches!(e, WriteError::Item(_)), "{e:?}");
    let mut nowhere = CacheWriter::new(gw.clone(), "/nope/{sido}", Duration::from_secs(1)).unwrap();
    let e = nowhere.write_items(&items).await.unwrap_err();
    assert!(matches!(e, WriteError::Fatal(_)), "{e:?}");
    // A store that does not answer: transient.
    let mut down = CacheWriter::new(gw.clone(), template, Duration::from_secs(1))
        .unwrap()
        .store(Arc::new(DownStore));
    let e = down.write_items(&items).await.unwrap_err();
    assert!(matches!(e, WriteError::Transient(_)), "{e:?}");
    assert!(CacheWriter::new(gw, "/air/{unclosed", Duration::from_secs(1)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_writer_stamps_entries_on_the_gateways_clock() {
    use sluice_cache::CacheTarget;
    use sluice_core::ManualClock;
    // Far from the system time, so that a system-clock stamp cannot pass.
    const T0: i64 = 1_000_000_000_000;
    let sim = sim(40).await;
    let clock = ManualClock::new(T0);
    let gw = Gateway::builder()
        .route(air_route(upstream(&sim, Up::default())))
        .clock(Arc::new(clock.clone()))
        .store(Arc::new(
            MemoryStore::builder()
                .clock(Arc::new(clock.clone()))
                .build(),
        ))
        .build()
        .unwrap();
    let path = "/air/getCtprvnRltmMesureDnsty?sidoName={sido}&returnType=json";
    let mut w = CacheWriter::new(gw.clone(), path, Duration::from_secs(60)).unwrap();
    w.open(None).await.unwrap();
    w.write_items(&[json!({"sido": "서울"})]).await.unwrap();
    let key =
        CacheTarget::key_for(&gw, &path.replace("{sido}", &encode_component("서울"))).unwrap();
    let entry = gw.store().get(&key).await.unwrap().expect("written");
    assert_eq!(entry.stored_at, T0);
    assert_eq!(entry.fresh_until, T0 + 60_000);
    assert_eq!(CacheTarget::now_millis(&gw), T0);
    // The entry is fresh on that clock, then not, without any sleeping.
    let get = format!(
        "/air/getCtprvnRltmMesureDnsty?sidoName={}&returnType=json",
        encode_component("서울")
    );
    let (_, cache, _) = gw_get(&gw, &get).await;
    assert!(cache.starts_with("sluice; hit"), "{cache}");
    clock.advance(Duration::from_secs(61));
    let (_, cache, _) = gw_get(&gw, &get).await;
    assert!(!cache.starts_with("sluice; hit"), "{cache}");
}

/// An `http_pages` reader with a `total` reports its extent in items of that
/// total (for `job run`'s bar): unknown before the first page, then
/// `position / totalCount`, at the total when read to the end (issue #14
/// point 8).
#[tokio::test]
async fn http_pages_report_their_extent_in_items_of_the_total() {
    let sim = sim(45).await;
    let mut r = opened(pages_reader(upstream(&sim, Up::default()), 10, true)).await;
    assert_eq!(r.extent(), None, "no total before the first page");
    let first = read_n(&mut r, 3).await;
    assert_eq!(first.len(), 3);
    let e = r.extent().expect("the total is known after a page");
    assert_eq!(
        (e.done, e.total, e.unit),
        (3, 45, sluice_batch::ExtentUnit::Items)
    );
    read_all(&mut r).await;
    let e = r.extent().unwrap();
    assert_eq!((e.done, e.total), (45, 45));
    // Without a total, no extent at all.
    let mut r = opened(
        HttpPagesReader::new(
            upstream(&sim, Up::default()),
            OP,
            Jq::compile(".response.body.items[]").unwrap(),
            Pagination::page("pageNo", "numOfRows", 10),
        )
        .query("sidoName", SIDO)
        .query("returnType", "json"),
    )
    .await;
    read_n(&mut r, 12).await;
    assert_eq!(r.extent(), None);
}
