//! The simulated AirKorea upstream: configuration, faults, the server and its handle.
//!
//! One axum server per [`SimUpstream`], spawned on the caller's tokio runtime. All
//! mutable state (call counter, quota, fault, latency, request log) lives in one shared
//! struct behind atomics and short-held `std::sync::Mutex`es, so the handle's methods are
//! synchronous and can be called from anywhere, and hundreds of concurrent requests only
//! contend for microseconds. The handlers never hold a lock across an `.await`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use chrono::NaiveDate;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::conn::{Conns, TrackedListener};
use crate::data::{self, Format, Page};
use crate::server::RequestLog;

/// The operation the simulator serves: real-time readings per province (`sidoName`).
pub const AIR_OPERATION: &str = "getCtprvnRltmMesureDnsty";

/// Provider and service path prefix of the simulated service.
const SERVICE_PATH: &str = "/B552584/ArpltnInforInqireSvc";
/// Largest `numOfRows` honoured; larger values are capped.
const MAX_ROWS: u64 = 1000;
/// How many recorded requests are kept.
const LOG_CAP: usize = 10_000;
/// How long [`Fault::Hang`] keeps a request unanswered.
const HANG: Duration = Duration::from_secs(3600);

const JSON_CT: &str = "application/json;charset=UTF-8";
const XML_CT: &str = "text/xml;charset=UTF-8";

/// Where the item list sits in a JSON success body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ItemsShape {
    /// `body.items.item`: a list, or a lone object when the page holds one row (the
    /// common data.go.kr shape, an artifact of XML-to-JSON conversion).
    #[default]
    Item,
    /// `body.items` is the list itself (AirKorea's JSON style).
    Flat,
}

/// How the simulator behaves; see [`SimConfig::default`] for the defaults.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Base latency added to every data-path call (default 300 ms).
    pub latency: Duration,
    /// Uniform jitter of ± this much around `latency` (default 0).
    pub jitter: Duration,
    /// The raw ("Decoding") service key that is accepted after one percent-decoding
    /// (default `"sim+Key/with=="`, which contains the troublesome `+`, `/` and `=`).
    pub service_key: String,
    /// Calls allowed per KST (UTC+9) day with the valid key; `None` = unlimited.
    pub daily_quota: Option<u64>,
    /// Rows in the dataset of each `sidoName` value, i.e. `totalCount` (default 40).
    pub rows_per_sido: usize,
    /// If set, sent as the `Cache-Control` header on `"00"` successes.
    pub cache_control: Option<String>,
    /// Where the JSON item list sits (default [`ItemsShape::Item`]).
    pub items_shape: ItemsShape,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(300),
            jitter: Duration::ZERO,
            service_key: "sim+Key/with==".to_owned(),
            daily_quota: None,
            rows_per_sido: 40,
            cache_control: None,
            items_shape: ItemsShape::Item,
        }
    }
}

/// A failure injected in place of normal handling (after the latency).
///
/// A faulted call counts in [`SimUpstream::calls`] but not against the quota.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Normal behaviour.
    #[default]
    None,
    /// Answer this HTTP status with a small `text/plain` body (invalid codes give 500).
    Status(u16),
    /// Keep the connection open and never answer (about an hour), so clients time out.
    Hang,
    /// HTTP 200, the normal envelope with this `resultCode` and its standard message,
    /// in the format asked for.
    ResultCode(String),
    /// HTTP 200, the XML `OpenAPI_ServiceResponse` with this `returnReasonCode`
    /// (two digits, e.g. `22` → `"22"`) and its `returnAuthMsg`.
    GatewayError(u16),
    /// HTTP 200, `Content-Type: application/json`, a body that is not JSON.
    Garbage,
    /// HTTP 200, `Content-Type: application/json`, a success body cut in half.
    Truncated,
}

/// One request as the simulator received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The HTTP method, e.g. `"GET"`.
    pub method: String,
    /// The path, e.g. `"/B552584/ArpltnInforInqireSvc/getCtprvnRltmMesureDnsty"`.
    pub path: String,
    /// The raw query string exactly as received (still percent-encoded); `""` if none.
    pub query: String,
    /// The headers in received order, names lowercase, values lossily made UTF-8.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::server::header(&self.headers, name)
    }

    /// The first value of query parameter `name`, decoded once the way the portal
    /// decodes it (so a correctly sent key comes back raw).
    pub fn param(&self, name: &str) -> Option<String> {
        param(&form_pairs(&self.query), name).map(str::to_owned)
    }
}

/// A running simulator. Dropping it (or [`SimUpstream::shutdown`]) stops the server and
/// cuts every open connection, so clients see the upstream go away at once.
pub struct SimUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    conns: Arc<Conns>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SimUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::server::fmt_handle(f, "SimUpstream", self.addr, self.calls())
    }
}

impl SimUpstream {
    /// Starts a simulator on an ephemeral port of 127.0.0.1, on the current runtime.
    pub async fn start(cfg: SimConfig) -> std::io::Result<SimUpstream> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await
    }

    /// Starts a simulator on `addr`, on the current runtime. To restart on the same
    /// address, await [`SimUpstream::shutdown`] of the previous one first (a plain drop
    /// releases the port only when the runtime next runs the aborted server task).
    pub async fn start_on(addr: SocketAddr, cfg: SimConfig) -> std::io::Result<SimUpstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let conns = Arc::new(Conns::default());
        let shared = Arc::new(Shared::new(cfg));
        let app = Router::new()
            .route("/__sim/stats", get(stats))
            .route("/__sim/reset", post(reset))
            .route("/__sim/fault", post(set_fault))
            .route("/__sim/latency", post(set_latency))
            .fallback(data_call)
            .with_state(Arc::clone(&shared));
        let listener = TrackedListener {
            listener,
            conns: Arc::clone(&conns),
        };
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!("sim: server stopped: {e}");
            }
        });
        tracing::debug!("sim: listening on {addr}");
        Ok(SimUpstream {
            addr,
            shared,
            conns,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The service base URL, `http://127.0.0.1:PORT/B552584/ArpltnInforInqireSvc`;
    /// append `/` and [`AIR_OPERATION`].
    pub fn base_url(&self) -> String {
        format!("http://{}{SERVICE_PATH}", self.addr)
    }

    /// Requests received outside `/__sim/`, failed and faulted ones included (counted on
    /// arrival, before the latency).
    pub fn calls(&self) -> u64 {
        self.shared.log.calls()
    }

    /// Sets [`calls`](Self::calls) to zero and clears the request log.
    pub fn reset_calls(&self) {
        self.shared.log.reset();
    }

    /// Injects `f` into every call from now on ([`Fault::None`] to stop).
    pub fn set_fault(&self, f: Fault) {
        *self.shared.fault.lock().unwrap() = (f, None);
    }

    /// Injects `f` into the next `n` calls only, then goes back to [`Fault::None`].
    pub fn set_fault_for(&self, f: Fault, n: u64) {
        *self.shared.fault.lock().unwrap() = (f, Some(n));
    }

    /// Changes the base latency of later calls.
    pub fn set_latency(&self, d: Duration) {
        self.shared.latency_ns.store(nanos(d), Ordering::SeqCst);
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.log.last()
    }

    /// All recorded requests, oldest first (the last 10 000 at most).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log.requests()
    }

    /// Moves the simulated date `days` ahead: the daily quota resets as at a KST
    /// midnight (for tests that drive a load across days with a manual clock).
    pub fn advance_days(&self, days: u64) {
        self.shared.day_offset.fetch_add(days, Ordering::Relaxed);
    }

    /// Calls charged against today's quota (KST day), whether or not a quota is set.
    pub fn quota_used(&self) -> u64 {
        self.shared.quota_used()
    }

    /// Stops the server, cuts open connections, and waits until the listener is closed.
    pub async fn shutdown(mut self) {
        self.stop();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn stop(&mut self) {
        self.shared.stop.send_replace(true);
        self.conns.close_all();
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Drop for SimUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// State shared by the handle and the handlers.
struct Shared {
    cfg: SimConfig,
    latency_ns: AtomicU64,
    jitter_ns: AtomicU64,
    /// The calls and the request log.
    log: RequestLog<RecordedRequest>,
    /// The fault and how many more calls it applies to (`None` = until changed).
    fault: Mutex<(Fault, Option<u64>)>,
    /// The KST day the count is for, and the calls charged on it.
    quota: Mutex<(NaiveDate, u64)>,
    /// Days added to the real date ([`SimUpstream::advance_days`]).
    day_offset: AtomicU64,
    /// Flips to `true` on shutdown, releasing hung requests.
    stop: watch::Sender<bool>,
}

impl Shared {
    fn new(cfg: SimConfig) -> Self {
        Self {
            latency_ns: AtomicU64::new(nanos(cfg.latency)),
            jitter_ns: AtomicU64::new(nanos(cfg.jitter)),
            fault: Mutex::new((Fault::None, None)),
            quota: Mutex::new((kst_today(), 0)),
            day_offset: AtomicU64::new(0),
            log: RequestLog::new(LOG_CAP),
            stop: watch::Sender::new(false),
            cfg,
        }
    }

    fn record(&self, req: &Request) {
        let rec = RecordedRequest {
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().unwrap_or("").to_owned(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (k.as_str().to_owned(), v)
                })
                .collect(),
        };
        self.log.record(rec);
    }

    /// The fault for one call, consuming one use of a counted fault.
    fn take_fault(&self) -> Fault {
        let mut slot = self.fault.lock().unwrap();
        match slot.1 {
            None => slot.0.clone(),
            Some(0) => {
                *slot = (Fault::None, None);
                Fault::None
            }
            Some(n) => {
                let f = slot.0.clone();
                *slot = if n == 1 {
                    (Fault::None, None)
                } else {
                    (f.clone(), Some(n - 1))
                };
                f
            }
        }
    }

    /// The latency for one call: base ± uniform jitter.
    fn latency(&self) -> Duration {
        let base = self.latency_ns.load(Ordering::Relaxed);
        let jitter = self.jitter_ns.load(Ordering::Relaxed);
        if jitter == 0 {
            return Duration::from_nanos(base);
        }
        let offset = rand::random_range(0..=jitter.saturating_mul(2));
        Duration::from_nanos(base.saturating_add(offset).saturating_sub(jitter))
    }

    /// Charges one call to today's quota; `false` if it is spent.
    fn charge_quota(&self) -> bool {
        let today = self.today();
        let mut q = self.quota.lock().unwrap();
        if q.0 != today {
            *q = (today, 0);
        }
        if self.cfg.daily_quota.is_some_and(|limit| q.1 >= limit) {
            return false;
        }
        q.1 += 1;
        true
    }

    fn quota_used(&self) -> u64 {
        let q = self.quota.lock().unwrap();
        if q.0 == self.today() { q.1 } else { 0 }
    }

    /// The simulated KST date: the real one plus the days advanced.
    fn today(&self) -> NaiveDate {
        let offset = self.day_offset.load(Ordering::Relaxed);
        kst_today() + chrono::Days::new(offset)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Today's date in Korea, where the portal's daily quotas reset.
fn kst_today() -> NaiveDate {
    chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Seoul)
        .date_naive()
}

/// Splits a query string and percent-decodes each part once with form semantics (a raw
/// `+` is a space), as the portal does.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body.into()).into_response()
}

fn envelope_error(format: Format, code: &str) -> Response {
    let ct = if format == Format::Json {
        JSON_CT
    } else {
        XML_CT
    };
    reply(StatusCode::OK, ct, data::envelope_error(format, code))
}

fn gateway_error(code: &str) -> Response {
    reply(StatusCode::OK, XML_CT, data::gateway_error_xml(code))
}

/// Every request outside the `/__sim/` routes.
async fn data_call(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    if req.uri().path().starts_with("/__sim/") {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "no such control endpoint",
        );
    }
    sh.record(&req);
    let fault = sh.take_fault();
    tokio::time::sleep(sh.latency()).await;

    let pairs = form_pairs(req.uri().query().unwrap_or(""));
    let format = match param(&pairs, "returnType") {
        Some(t) if t.eq_ignore_ascii_case("json") => Format::Json,
        _ => Format::Xml,
    };
    match fault {
        Fault::None => {}
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return reply(status, "text/plain", format!("{status} (simulated)"));
        }
        Fault::Hang => {
            let mut stop = sh.stop.subscribe();
            tokio::select! {
                _ = tokio::time::sleep(HANG) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            return reply(
                StatusCode::GATEWAY_TIMEOUT,
                "text/plain",
                "hung (simulated)",
            );
        }
        Fault::ResultCode(code) => return envelope_error(format, &code),
        Fault::GatewayError(code) => return gateway_error(&format!("{code:02}")),
        Fault::Garbage => {
            return reply(
                StatusCode::OK,
                JSON_CT,
                "<html><body><h1>Service Temporarily Unavailable</h1></body></html>",
            );
        }
        Fault::Truncated => {
            let items = data::page("서울", sh.cfg.rows_per_sido, 1, 10);
            let page = Page {
                items: &items,
                num_of_rows: 10,
                page_no: 1,
                total_count: sh.cfg.rows_per_sido as u64,
            };
            let body = data::success_body(Format::Json, sh.cfg.items_shape, &page);
            let cut = body.floor_char_boundary(body.len() / 2);
            return reply(StatusCode::OK, JSON_CT, body[..cut].to_owned());
        }
    }

    let Some(operation) = req
        .uri()
        .path()
        .strip_prefix(SERVICE_PATH)
        .and_then(|rest| rest.strip_prefix('/'))
    else {
        return reply(StatusCode::NOT_FOUND, "text/plain", "404 Not Found");
    };
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "405 Method Not Allowed",
        );
    }
    if param(&pairs, "serviceKey") != Some(sh.cfg.service_key.as_str()) {
        return gateway_error("30");
    }
    if !sh.charge_quota() {
        return gateway_error("22");
    }
    if operation != AIR_OPERATION {
        return envelope_error(format, "12");
    }
    let Some(sido) = param(&pairs, "sidoName").filter(|s| !s.is_empty()) else {
        return envelope_error(format, "11");
    };
    let number = |name: &str, default: u64| match param(&pairs, name) {
        None | Some("") => Some(default),
        Some(v) => v.trim().parse::<u64>().ok().filter(|&n| n > 0),
    };
    let (Some(page_no), Some(num_of_rows)) = (number("pageNo", 1), number("numOfRows", 10)) else {
        return envelope_error(format, "10");
    };
    let num_of_rows = num_of_rows.min(MAX_ROWS);

    let items = data::page(sido, sh.cfg.rows_per_sido, page_no, num_of_rows);
    let page = Page {
        items: &items,
        num_of_rows,
        page_no,
        total_count: sh.cfg.rows_per_sido as u64,
    };
    let ct = if format == Format::Json {
        JSON_CT
    } else {
        XML_CT
    };
    let mut resp = reply(
        StatusCode::OK,
        ct,
        data::success_body(format, sh.cfg.items_shape, &page),
    );
    if let Some(cc) = sh
        .cfg
        .cache_control
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        resp.headers_mut().insert(header::CACHE_CONTROL, cc);
    }
    resp
}

/// `GET /__sim/stats` → `{"calls":n,"quota_used":n}`.
async fn stats(State(sh): State<Arc<Shared>>) -> Response {
    let body = json!({"calls": sh.log.calls(), "quota_used": sh.quota_used()});
    reply(StatusCode::OK, JSON_CT, body.to_string())
}

/// `POST /__sim/reset`: zero the call counter and clear the request log.
async fn reset(State(sh): State<Arc<Shared>>) -> Response {
    sh.log.reset();
    reply(StatusCode::OK, JSON_CT, r#"{"ok":true}"#)
}

/// `POST /__sim/fault` with a JSON body (any content type, so `curl -d` works):
/// `{"fault":"none"|"hang"|"garbage"|"truncated"}`, `{"fault":"status","status":503}`,
/// `{"fault":"result_code","code":"01"}`, `{"fault":"gateway_error","code":30}`, each
/// with an optional `"count": n` limiting it to the next n calls.
async fn set_fault(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse_fault(&body) {
        Ok((fault, count)) => {
            *sh.fault.lock().unwrap() = (fault, count);
            reply(StatusCode::OK, JSON_CT, r#"{"ok":true}"#)
        }
        Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", e),
    }
}

fn parse_fault(body: &[u8]) -> Result<(Fault, Option<u64>), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("bad JSON: {e}"))?;
    // A code may be given as a string or a number.
    let code = |key: &str| match &v[key] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => n.as_u64().map(|n| format!("{n:02}")),
        _ => None,
    };
    let fault = match v["fault"].as_str().unwrap_or("") {
        "none" => Fault::None,
        "hang" => Fault::Hang,
        "garbage" => Fault::Garbage,
        "truncated" => Fault::Truncated,
        "status" => Fault::Status(
            code("status")
                .and_then(|s| s.parse().ok())
                .ok_or("\"status\" needs a numeric \"status\"")?,
        ),
        "result_code" => Fault::ResultCode(code("code").ok_or("\"result_code\" needs \"code\"")?),
        "gateway_error" => Fault::GatewayError(
            code("code")
                .and_then(|s| s.parse().ok())
                .ok_or("\"gateway_error\" needs a numeric \"code\"")?,
        ),
        other => return Err(format!("unknown fault {other:?}")),
    };
    let count = match &v["count"] {
        Value::Null => None,
        c => Some(
            c.as_u64()
                .ok_or("\"count\" must be a non-negative integer")?,
        ),
    };
    Ok((fault, count))
}

/// `POST /__sim/latency` with `{"ms": 300}` and optionally `"jitter_ms"`.
async fn set_latency(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(ms) = v["ms"].as_u64() else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "expected {\"ms\": n}",
        );
    };
    sh.latency_ns
        .store(ms.saturating_mul(1_000_000), Ordering::SeqCst);
    if let Some(j) = v["jitter_ms"].as_u64() {
        sh.jitter_ns
            .store(j.saturating_mul(1_000_000), Ordering::SeqCst);
    }
    reply(StatusCode::OK, JSON_CT, r#"{"ok":true}"#)
}
