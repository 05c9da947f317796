//! A hostile upstream: an HTTP/1.1 server that misbehaves on purpose, at the byte level.
//!
//! Why: [`SimUpstream`](crate::SimUpstream) is a well-behaved portal; the gateway must also
//! survive an upstream that is not. This one answers documents nested deeply enough to
//! blow a recursive parser, error bodies and headers that echo the request (and so the
//! service key) back, redirects, throttling, bodies and heads that trickle in a byte at
//! a time, connection resets, truncated bodies, oversize headers and plain garbage. It
//! is a raw [`tokio::net::TcpListener`] loop rather than axum, because an HTTP library
//! would refuse to send most of these.
//!
//! Every request is a single `GET` (a request body is ignored) answered on its own
//! connection: each answer carries `Connection: close` and the server closes after it,
//! except where a behaviour below says otherwise. The request head is read up to
//! 64 KiB (else `431`) within 10 s (else the connection is dropped unanswered).
//!
//! The behaviour is the first path segment; the second, where shown, is its number, and
//! any later segments are ignored (`/ok/B552584/x` is `/ok`). A missing, non-decimal or
//! out-of-range number answers `400`. In the table, RAW is the request-target exactly as
//! received (e.g. `/ok?a=1&serviceKey=ab%2Bc`), LOWER is RAW with the hex digits of
//! every `%XX` escape lower-cased, DECODED is RAW's query percent-decoded once (a `+`
//! stays a `+`), and OKBODY is [`OK_BODY`]. Text inserted in a body is escaped for the
//! body's format; bytes inserted in a header have control characters replaced by `?`
//! (the server echoes secrets, it does not split responses).
//!
//! | path | answer |
//! |---|---|
//! | `/ok` | 200 `application/json` OKBODY |
//! | `/deep-xml/{n}` | 200 `text/xml;charset=UTF-8` `<?xml version="1.0"?>` and `n` nested `<a>` around `x` |
//! | `/deep-json/{n}` | 200 JSON, `n` nested arrays around `1`: `[[[1]]]` |
//! | `/deep-json-obj/{n}` | 200 JSON, `n` nested objects around `1`: `{"a":{"a":1}}` |
//! | `/wide-xml/{n}` | 200 XML portal envelope with `n` × `<item><a>1</a></item>` |
//! | `/echo-headers` | 200 OKBODY with `ETag: "RAW"`, `Content-Disposition: attachment; filename="LOWER"`, `Content-Language: DECODED`, `X-Echo: RAW`, `Link: <RAW>; rel=self` |
//! | `/echo-error-xml` | 200 XML `OpenAPI_ServiceResponse` (code 30) quoting RAW and DECODED |
//! | `/echo-error-json` | 200 JSON envelope, `resultCode` 30, `resultMsg` `bad key LOWER (DECODED)` |
//! | `/echo-body` | 200 JSON envelope whose `body` is `{"requestUrl":RAW,"decoded":DECODED}` |
//! | `/redirect/{code}` | 301, 302, 303, 307 or 308 to `http://ADDR/moved?QUERY` (RAW's query, kept raw), body `moved` |
//! | `/throttle/{secs}` | 429, `Retry-After: {secs}`, `text/plain` `slow down` |
//! | `/unavailable/{secs}` | 503, `Retry-After: {secs}`, `text/plain` `unavailable` |
//! | `/gzip` | 200 JSON, `Content-Encoding: gzip`, a real gzip of OKBODY ([`GZIP_OK_BODY`]) |
//! | `/status/{code}` | that status (100–999), `text/plain` `status {code}` (no body for 1xx, 204, 304) |
//! | `/drip/{ms}` | 200 JSON, `Content-Length: 100000`, the body one byte every `ms` ms |
//! | `/drip-head/{ms}` | 200, the status line and headers (about 4 KiB) one byte every `ms` ms, then OKBODY |
//! | `/hang` | nothing; the connection stays open |
//! | `/reset` | nothing; the connection is reset (TCP RST) |
//! | `/reset-mid` | 200, `Content-Length: 10000`, 100 bytes of OKBODY, then a reset |
//! | `/short-body` | 200, `Content-Length: 1000`, 20 bytes of OKBODY, then a normal close |
//! | `/huge-header/{kib}` | 200 OKBODY with one `X-Big` header of `kib` KiB of `a` (up to 65 536) |
//! | `/many-headers/{n}` | 200 OKBODY with `n` headers `X-H1: v` … `X-Hn: v` |
//! | `/garbage` | the bytes `\x00\x01garbage\r\n\r\n`, then a close |
//! | `/bad-status` | `HTTP/1.1 abc Weird`, then headers and a 5-byte body |
//! | anything else | 404 `text/plain` `unknown behaviour` |
//!
//! Counts (`n`) are capped at 10 000 000. Nothing lasts longer than 10 minutes: a drip or
//! hang then closes the connection. Dropping the [`HostileUpstream`] stops it and cuts
//! every open connection at once.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::poll_fn;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use percent_encoding::percent_decode_str;
use sluice_sim::server::RequestLog;
use tokio::io::AsyncWrite;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::{Instant, sleep, timeout};

/// The portal's empty success envelope, the body of `/ok` and most other answers.
pub const OK_BODY: &str = r#"{"response":{"header":{"resultCode":"00","resultMsg":"NORMAL_SERVICE"},"body":{"items":[],"totalCount":0}}}"#;

/// [`OK_BODY`] gzip-compressed (`gzip -n`), the body of `/gzip`.
pub const GZIP_OK_BODY: &[u8] = &[
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xab, 0x56, 0x2a, 0x4a, 0x2d, 0x2e,
    0xc8, 0xcf, 0x2b, 0x4e, 0x55, 0xb2, 0xaa, 0x56, 0xca, 0x48, 0x4d, 0x4c, 0x49, 0x2d, 0x02, 0xb1,
    0x80, 0xa2, 0xa5, 0x39, 0x25, 0xce, 0xf9, 0x29, 0x40, 0x71, 0x25, 0x03, 0x03, 0x25, 0x1d, 0xa8,
    0x88, 0x6f, 0x71, 0x3a, 0x50, 0xc0, 0xcf, 0x3f, 0xc8, 0xd7, 0xd1, 0x27, 0x3e, 0xd8, 0x35, 0x28,
    0xcc, 0xd3, 0xd9, 0x55, 0xa9, 0x56, 0x47, 0x29, 0x29, 0x3f, 0xa5, 0x12, 0xa4, 0x2f, 0xb3, 0x24,
    0x35, 0xb7, 0x58, 0xc9, 0x2a, 0x3a, 0x56, 0x47, 0xa9, 0x24, 0xbf, 0x24, 0x31, 0xc7, 0x39, 0xbf,
    0x34, 0xaf, 0x44, 0xc9, 0xca, 0xa0, 0xb6, 0xb6, 0x16, 0x00, 0x90, 0x9c, 0x23, 0x49, 0x6b, 0x00,
    0x00, 0x00,
];

/// Largest request head read.
const MAX_HEAD: usize = 64 * 1024;
/// How long the request head may take to arrive.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest any connection is kept (drips, hangs).
const LONGEST: Duration = Duration::from_secs(600);
/// How long a normal close waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(2);
/// How many recorded requests are kept.
const LOG_CAP: usize = 1000;
/// Largest count accepted by the `{n}` behaviours.
const MAX_COUNT: u64 = 10_000_000;
/// Largest `X-Big` header, in KiB.
const MAX_KIB: u64 = 65_536;
/// The declared body length of `/drip`.
const DRIP_LEN: usize = 100_000;
/// Bytes of padding header that make `/drip-head` slow.
const DRIP_HEAD_PAD: usize = 4096;
/// How long `/reset-mid` waits between sending its bytes and the reset, so the client
/// has read them before the RST arrives.
const RESET_PAUSE: Duration = Duration::from_millis(100);

const JSON_CT: &str = "application/json";
const XML_CT: &str = "text/xml;charset=UTF-8";
const TEXT_CT: &str = "text/plain";

/// One request as the hostile upstream received it (its head was read completely).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostileRequest {
    /// The method, e.g. `"GET"`.
    pub method: String,
    /// The request-target exactly as received, e.g. `"/ok?a=1&serviceKey=ab%2Bc"`.
    pub target: String,
    /// The part of `target` before the first `?`, e.g. `"/ok"`.
    pub path: String,
    /// The raw part of `target` after the first `?` (still percent-encoded); `""` if none.
    pub query: String,
    /// The headers in received order, names lowercase, values trimmed and lossily made
    /// UTF-8.
    pub headers: Vec<(String, String)>,
}

impl HostileRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        sluice_sim::server::header(&self.headers, name)
    }
}

/// A running hostile upstream (see the [module docs](self) for its behaviours).
///
/// Dropping it stops the server and cuts every open connection, so hung and dripping
/// requests end at once.
pub struct HostileUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for HostileUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        sluice_sim::server::fmt_handle(f, "HostileUpstream", self.addr, self.calls())
    }
}

impl HostileUpstream {
    /// Starts a hostile upstream on an ephemeral port of 127.0.0.1, on the current runtime.
    pub async fn start() -> io::Result<HostileUpstream> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared), addr));
        tracing::debug!("hostile: listening on {addr}");
        Ok(HostileUpstream {
            addr,
            shared,
            accept,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash; append `/{behaviour}/...`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests whose head was read completely and parsed, whatever the behaviour.
    pub fn calls(&self) -> u64 {
        self.shared.log.calls()
    }

    /// The recorded requests, oldest first (the last 1000 at most).
    pub fn requests(&self) -> Vec<HostileRequest> {
        self.shared.log.requests()
    }

    /// The most recent request, if any.
    pub fn last_request(&self) -> Option<HostileRequest> {
        self.shared.log.last()
    }
}

impl Drop for HostileUpstream {
    fn drop(&mut self) {
        self.accept.abort();
        let open = {
            let mut conns = self.shared.conns.lock().unwrap();
            conns.closed = true;
            std::mem::take(&mut conns.open)
        };
        for (socket, task) in open.into_values() {
            let _ = socket.shutdown(Shutdown::Both);
            task.abort();
        }
    }
}

/// State shared by the handle, the accept loop and the connection tasks.
struct Shared {
    log: RequestLog<HostileRequest>,
    conns: Mutex<Conns>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            log: RequestLog::new(LOG_CAP),
            conns: Mutex::default(),
        }
    }
}

/// The open connections: a duplicate of each socket (to shut it down from `Drop`, which
/// cannot wait for an aborted task to be dropped) and its task.
#[derive(Default)]
struct Conns {
    closed: bool,
    next_id: u64,
    open: HashMap<u64, (std::net::TcpStream, AbortHandle)>,
}

impl Shared {
    /// Registers `stream` and serves it in its own task.
    fn spawn_conn(self: &Arc<Self>, stream: TcpStream, addr: SocketAddr) -> io::Result<()> {
        let std = stream.into_std()?;
        let dup = std.try_clone()?;
        let stream = TcpStream::from_std(std)?;
        let _ = stream.set_nodelay(true);
        // Held across the spawn, so the task cannot deregister before it is registered.
        let mut conns = self.conns.lock().unwrap();
        if conns.closed {
            let _ = dup.shutdown(Shutdown::Both);
            return Ok(());
        }
        let id = conns.next_id;
        conns.next_id += 1;
        let guard = Deregister {
            id,
            shared: Arc::clone(self),
        };
        let task = tokio::spawn(async move {
            serve(stream, &guard.shared, addr).await;
            drop(guard);
        });
        conns.open.insert(id, (dup, task.abort_handle()));
        Ok(())
    }
}

/// Removes a connection from the registry when its task ends or is aborted.
struct Deregister {
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        self.shared.conns.lock().unwrap().open.remove(&self.id);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, addr: SocketAddr) {
    loop {
        let (stream, peer) = sluice_sim::server::accept(&listener, "hostile").await;
        if let Err(e) = shared.spawn_conn(stream, addr) {
            tracing::debug!("hostile: dropping connection from {peer}: {e}");
        }
    }
}

/// What to do with a connection once its request has been read.
enum Action {
    /// Send these bytes, then close normally.
    Send(Vec<u8>),
    /// Send `head`, then `body` one byte every `every`.
    Drip {
        head: Vec<u8>,
        body: Vec<u8>,
        every: Duration,
    },
    /// Send `head` one byte every `every`, then `body` at once.
    DripHead {
        head: Vec<u8>,
        body: Vec<u8>,
        every: Duration,
    },
    /// Send nothing and keep the connection open.
    Hang,
    /// Send these bytes (possibly none), then reset the connection.
    Reset(Vec<u8>),
}

/// Serves one connection: one request, one (mis)behaviour.
async fn serve(stream: TcpStream, shared: &Shared, addr: SocketAddr) {
    let head = match timeout(HEAD_TIMEOUT, read_head(&stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            let resp = full(431, &[], TEXT_CT, b"request head too large");
            let _ = send_and_close(stream, &resp).await;
            return;
        }
        Ok(Err(_)) | Err(_) => return,
    };
    let Some(req) = parse_head(&head) else {
        let _ = send_and_close(stream, &full(400, &[], TEXT_CT, b"bad request")).await;
        return;
    };
    let action = behave(&req, addr);
    shared.log.record(req);
    let _ = act(stream, action).await;
}

async fn act(stream: TcpStream, action: Action) -> io::Result<()> {
    let deadline = Instant::now() + LONGEST;
    match action {
        Action::Send(bytes) => send_and_close(stream, &bytes).await,
        Action::Drip { head, body, every } => {
            write_all(&stream, &head).await?;
            if every.is_zero() {
                return send_and_close(stream, &body).await;
            }
            let drip = async {
                for b in &body {
                    write_all(&stream, std::slice::from_ref(b)).await?;
                    sleep(every).await;
                }
                io::Result::Ok(())
            };
            match tokio::time::timeout_at(deadline, drip).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
        Action::DripHead { head, body, every } => {
            let drip = async {
                for b in &head {
                    write_all(&stream, std::slice::from_ref(b)).await?;
                    sleep(every).await;
                }
                write_all(&stream, &body).await
            };
            match tokio::time::timeout_at(deadline, drip).await {
                Ok(r) => r,
                Err(_) => Ok(()),
            }
        }
        Action::Hang => {
            tokio::time::sleep_until(deadline).await;
            Ok(())
        }
        Action::Reset(bytes) => {
            if !bytes.is_empty() {
                write_all(&stream, &bytes).await?;
                sleep(RESET_PAUSE).await;
            }
            // SO_LINGER 0: closing sends RST instead of FIN.
            stream.set_zero_linger()?;
            drop(stream);
            Ok(())
        }
    }
}

/// Picks the behaviour for `req` and builds the bytes it sends.
fn behave(req: &HostileRequest, addr: SocketAddr) -> Action {
    let rest = req.path.strip_prefix('/').unwrap_or(&req.path);
    let mut segments = rest.split('/');
    let name = segments.next().unwrap_or("");
    let arg = segments.next();
    let bad_number = || Action::Send(full(400, &[], TEXT_CT, b"bad number"));
    let raw = req.target.as_str();
    match name {
        "ok" => Action::Send(ok()),
        "deep-xml" => {
            let Some(n) = number(arg, 0, MAX_COUNT) else {
                return bad_number();
            };
            let n = n as usize;
            let mut body = String::with_capacity(21 + 7 * n + 1);
            body.push_str(r#"<?xml version="1.0"?>"#);
            body.push_str(&"<a>".repeat(n));
            body.push('x');
            body.push_str(&"</a>".repeat(n));
            Action::Send(full(200, &[], XML_CT, body.as_bytes()))
        }
        "deep-json" | "deep-json-obj" => {
            let Some(n) = number(arg, 0, MAX_COUNT) else {
                return bad_number();
            };
            let (open, close) = if name == "deep-json" {
                ("[", "]")
            } else {
                (r#"{"a":"#, "}")
            };
            let n = n as usize;
            let body = format!("{}1{}", open.repeat(n), close.repeat(n));
            Action::Send(full(200, &[], JSON_CT, body.as_bytes()))
        }
        "wide-xml" => {
            let Some(n) = number(arg, 0, MAX_COUNT) else {
                return bad_number();
            };
            let body = format!(
                "<response><header><resultCode>00</resultCode></header><body><items>{}\
                 </items></body></response>",
                "<item><a>1</a></item>".repeat(n as usize)
            );
            Action::Send(full(200, &[], XML_CT, body.as_bytes()))
        }
        "echo-headers" => {
            let (lower, decoded) = (lower_escapes(raw), decode_query(&req.query));
            let etag = format!("\"{raw}\"");
            let disposition = format!("attachment; filename=\"{lower}\"");
            let link = format!("<{raw}>; rel=self");
            let headers: [(&str, &[u8]); 5] = [
                ("ETag", etag.as_bytes()),
                ("Content-Disposition", disposition.as_bytes()),
                ("Content-Language", &decoded),
                ("X-Echo", raw.as_bytes()),
                ("Link", link.as_bytes()),
            ];
            Action::Send(full(200, &headers, JSON_CT, OK_BODY.as_bytes()))
        }
        "echo-error-xml" => {
            let decoded = String::from_utf8_lossy(&decode_query(&req.query)).into_owned();
            let body = format!(
                "<OpenAPI_ServiceResponse><cmmMsgHeader><errMsg>SERVICE ERROR for {}</errMsg>\
                 <returnAuthMsg>SERVICE_KEY_IS_NOT_REGISTERED_ERROR key={}</returnAuthMsg>\
                 <returnReasonCode>30</returnReasonCode></cmmMsgHeader>\
                 </OpenAPI_ServiceResponse>",
                xml_escape(raw),
                xml_escape(&decoded)
            );
            Action::Send(full(200, &[], XML_CT, body.as_bytes()))
        }
        "echo-error-json" => {
            let decoded = String::from_utf8_lossy(&decode_query(&req.query)).into_owned();
            let msg = format!("bad key {} ({decoded})", lower_escapes(raw));
            let body = format!(
                r#"{{"response":{{"header":{{"resultCode":"30","resultMsg":{}}}}}}}"#,
                json_str(&msg)
            );
            Action::Send(full(200, &[], JSON_CT, body.as_bytes()))
        }
        "echo-body" => {
            let decoded = String::from_utf8_lossy(&decode_query(&req.query)).into_owned();
            let body = format!(
                r#"{{"response":{{"header":{{"resultCode":"00","resultMsg":"NORMAL_SERVICE"}},"body":{{"requestUrl":{},"decoded":{}}}}}}}"#,
                json_str(raw),
                json_str(&decoded)
            );
            Action::Send(full(200, &[], JSON_CT, body.as_bytes()))
        }
        "redirect" => {
            let Some(code) = number(arg, 301, 308).filter(|c| matches!(c, 301..=303 | 307 | 308))
            else {
                return bad_number();
            };
            let mut location = format!("http://{addr}/moved");
            if raw.contains('?') {
                location.push('?');
                location.push_str(&req.query);
            }
            let headers: [(&str, &[u8]); 1] = [("Location", location.as_bytes())];
            Action::Send(full(code as u16, &headers, TEXT_CT, b"moved"))
        }
        "throttle" | "unavailable" => {
            let Some(secs) = number(arg, 0, u64::MAX) else {
                return bad_number();
            };
            let secs = secs.to_string();
            let headers: [(&str, &[u8]); 1] = [("Retry-After", secs.as_bytes())];
            let (code, body): (u16, &[u8]) = if name == "throttle" {
                (429, b"slow down")
            } else {
                (503, b"unavailable")
            };
            Action::Send(full(code, &headers, TEXT_CT, body))
        }
        "gzip" => {
            let headers: [(&str, &[u8]); 1] = [("Content-Encoding", b"gzip")];
            Action::Send(full(200, &headers, JSON_CT, GZIP_OK_BODY))
        }
        "status" => {
            let Some(code) = number(arg, 100, 999) else {
                return bad_number();
            };
            let code = code as u16;
            if code < 200 || code == 204 || code == 304 {
                let mut bytes = status_line(code);
                bytes.extend_from_slice(b"Connection: close\r\n\r\n");
                Action::Send(bytes)
            } else {
                let body = format!("status {code}");
                Action::Send(full(code, &[], TEXT_CT, body.as_bytes()))
            }
        }
        "drip" => {
            let Some(ms) = number(arg, 0, u64::MAX) else {
                return bad_number();
            };
            let mut body = OK_BODY.as_bytes().to_vec();
            body.resize(DRIP_LEN, b' ');
            Action::Drip {
                head: head(200, &[], Some(JSON_CT), DRIP_LEN),
                body,
                every: Duration::from_millis(ms),
            }
        }
        "drip-head" => {
            let Some(ms) = number(arg, 0, u64::MAX) else {
                return bad_number();
            };
            let pad = vec![b'a'; DRIP_HEAD_PAD];
            let headers: [(&str, &[u8]); 1] = [("X-Drip", &pad)];
            Action::DripHead {
                head: head(200, &headers, Some(JSON_CT), OK_BODY.len()),
                body: OK_BODY.as_bytes().to_vec(),
                every: Duration::from_millis(ms),
            }
        }
        "hang" => Action::Hang,
        "reset" => Action::Reset(Vec::new()),
        "reset-mid" => {
            let mut bytes = head(200, &[], Some(JSON_CT), 10_000);
            bytes.extend_from_slice(&OK_BODY.as_bytes()[..100]);
            Action::Reset(bytes)
        }
        "short-body" => {
            let mut bytes = head(200, &[], Some(JSON_CT), 1000);
            bytes.extend_from_slice(&OK_BODY.as_bytes()[..20]);
            Action::Send(bytes)
        }
        "huge-header" => {
            let Some(kib) = number(arg, 0, MAX_KIB) else {
                return bad_number();
            };
            let big = vec![b'a'; kib as usize * 1024];
            let headers: [(&str, &[u8]); 1] = [("X-Big", &big)];
            Action::Send(full(200, &headers, JSON_CT, OK_BODY.as_bytes()))
        }
        "many-headers" => {
            let Some(n) = number(arg, 0, MAX_COUNT) else {
                return bad_number();
            };
            let mut bytes = status_line(200);
            for i in 1..=n {
                let _ = write!(ByteWriter(&mut bytes), "X-H{i}: v\r\n");
            }
            bytes.extend_from_slice(&head_tail(Some(JSON_CT), OK_BODY.len()));
            bytes.extend_from_slice(OK_BODY.as_bytes());
            Action::Send(bytes)
        }
        "garbage" => Action::Send(b"\x00\x01garbage\r\n\r\n".to_vec()),
        "bad-status" => Action::Send(
            b"HTTP/1.1 abc Weird\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\
              Connection: close\r\n\r\nweird"
                .to_vec(),
        ),
        _ => Action::Send(full(404, &[], TEXT_CT, b"unknown behaviour")),
    }
}

/// The `/ok` answer.
fn ok() -> Vec<u8> {
    full(200, &[], JSON_CT, OK_BODY.as_bytes())
}

/// A decimal number in `min..=max` from a path segment; `None` if missing or bad.
fn number(arg: Option<&str>, min: u64, max: u64) -> Option<u64> {
    let s = arg?;
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|n| (min..=max).contains(n))
}

/// `HTTP/1.1 {code} {reason}\r\n`.
fn status_line(code: u16) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Hostile",
    };
    format!("HTTP/1.1 {code} {reason}\r\n").into_bytes()
}

/// `Content-Type` (if any), `Content-Length`, `Connection: close` and the blank line.
fn head_tail(content_type: Option<&str>, len: usize) -> Vec<u8> {
    let mut out = String::new();
    if let Some(ct) = content_type {
        let _ = write!(out, "Content-Type: {ct}\r\n");
    }
    let _ = write!(out, "Content-Length: {len}\r\nConnection: close\r\n\r\n");
    out.into_bytes()
}

/// A complete response head; header values have control characters replaced by `?`.
fn head(code: u16, headers: &[(&str, &[u8])], content_type: Option<&str>, len: usize) -> Vec<u8> {
    let mut out = status_line(code);
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend(value.iter().map(|&b| {
            if (b < 0x20 && b != b'\t') || b == 0x7f {
                b'?'
            } else {
                b
            }
        }));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&head_tail(content_type, len));
    out
}

/// A complete response: head and body.
fn full(code: u16, headers: &[(&str, &[u8])], content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = head(code, headers, Some(content_type), body.len());
    out.extend_from_slice(body);
    out
}

/// Lets `write!` append to a byte buffer.
struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// `s` with the hex digits of every `%XX` escape lower-cased.
fn lower_escapes(s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    let mut i = 0;
    while i + 2 < b.len() {
        if b[i] == b'%' && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit() {
            b[i + 1] = b[i + 1].to_ascii_lowercase();
            b[i + 2] = b[i + 2].to_ascii_lowercase();
            i += 3;
        } else {
            i += 1;
        }
    }
    // Only ASCII bytes changed, so this is still UTF-8.
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The query percent-decoded once (a `+` stays a `+`; bad escapes stay as they are).
fn decode_query(query: &str) -> Vec<u8> {
    percent_decode_str(query).collect()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `s` as a quoted JSON string.
fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Parses a request head (request line and headers, ending in the blank line).
fn parse_head(head: &[u8]) -> Option<HostileRequest> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = std::str::from_utf8(lines.next()?).ok()?;
    let mut parts = request_line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_graphic())
        || target.is_empty()
        || target.bytes().any(|b| b.is_ascii_control())
        || !version.starts_with("HTTP/")
    {
        return None;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let colon = l.iter().position(|&b| b == b':')?;
            let name = String::from_utf8_lossy(&l[..colon]).to_ascii_lowercase();
            let value = String::from_utf8_lossy(&l[colon + 1..]);
            Some((name, value.trim_matches([' ', '\t']).to_owned()))
        })
        .collect();
    Some(HostileRequest {
        method: method.to_owned(),
        target: target.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
    })
}

/// Reads up to and including the blank line ending the request head; `None` if it is
/// longer than [`MAX_HEAD`]. Bytes after the head (a body) are read but ignored.
async fn read_head(s: &TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = read_some(s, &mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + pos + 4;
            if end > MAX_HEAD {
                return Ok(None);
            }
            buf.truncate(end);
            return Ok(Some(buf));
        }
        if buf.len() >= MAX_HEAD {
            return Ok(None);
        }
    }
}

async fn read_some(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        s.readable().await?;
        match s.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return r,
        }
    }
}

async fn write_all(s: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        s.writable().await?;
        match s.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends `bytes`, then closes normally: FIN, then wait (briefly) for the client to close
/// its side, so unread request bytes do not turn the close into a reset.
async fn send_and_close(mut s: TcpStream, bytes: &[u8]) -> io::Result<()> {
    write_all(&s, bytes).await?;
    poll_fn(|cx| Pin::new(&mut s).poll_shutdown(cx)).await?;
    let drain = async {
        let mut sink = [0u8; 4096];
        while read_some(&s, &mut sink).await? > 0 {}
        io::Result::Ok(())
    };
    let _ = timeout(LINGER, drain).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response as bytes on the wire, split at the end of the head.
    struct Wire {
        head: String,
        body: Vec<u8>,
    }

    impl Wire {
        fn status(&self) -> u16 {
            self.head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        }

        fn header(&self, name: &str) -> Option<&str> {
            self.head.split("\r\n").skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim())
            })
        }
    }

    /// Sends a GET for `target` and reads until EOF; the bytes read, and the error that
    /// ended the read if it was not EOF.
    async fn raw_get(addr: SocketAddr, target: &str) -> (Vec<u8>, Option<io::Error>) {
        let s = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: t\r\n\r\n");
        write_all(&s, req.as_bytes()).await.unwrap();
        let (mut raw, mut chunk) = (Vec::new(), [0u8; 8192]);
        let read = async {
            loop {
                match read_some(&s, &mut chunk).await {
                    Ok(0) => return None,
                    Ok(n) => raw.extend_from_slice(&chunk[..n]),
                    Err(e) => return Some(e),
                }
            }
        };
        let err = timeout(Duration::from_secs(10), read)
            .await
            .expect("response within 10 s");
        (raw, err)
    }

    /// A new hostile upstream and its answer to `GET target`.
    async fn start_and_get(target: &str) -> (HostileUpstream, Wire) {
        let up = HostileUpstream::start().await.unwrap();
        let r = get(up.addr(), target).await;
        (up, r)
    }

    async fn get(addr: SocketAddr, target: &str) -> Wire {
        let (raw, err) = raw_get(addr, target).await;
        assert!(err.is_none(), "{target}: {err:?}");
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("{target}: no head in {raw:?}"));
        Wire {
            head: String::from_utf8(raw[..end].to_vec()).unwrap(),
            body: raw[end + 4..].to_vec(),
        }
    }

    #[tokio::test]
    async fn ok_answers_the_empty_envelope_and_records_the_request() {
        let up = HostileUpstream::start().await.unwrap();
        assert_eq!(up.base_url(), format!("http://{}", up.addr()));
        let r = get(up.addr(), "/ok?a=1").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(r.body, OK_BODY.as_bytes());
        assert_eq!(up.calls(), 1);
        let req = up.last_request().unwrap();
        assert_eq!(
            (req.method.as_str(), req.target.as_str()),
            ("GET", "/ok?a=1")
        );
        assert_eq!((req.path.as_str(), req.query.as_str()), ("/ok", "a=1"));
        assert_eq!(req.header("User-Agent"), Some("t"));
        assert_eq!(up.requests().len(), 1);
    }

    #[tokio::test]
    async fn deep_documents_nest_exactly() {
        let (up, r) = start_and_get("/deep-xml/3").await;
        assert_eq!(r.header("content-type"), Some("text/xml;charset=UTF-8"));
        assert_eq!(r.body, br#"<?xml version="1.0"?><a><a><a>x</a></a></a>"#);
        assert_eq!(get(up.addr(), "/deep-json/3").await.body, b"[[[1]]]");
        assert_eq!(
            get(up.addr(), "/deep-json-obj/2").await.body,
            br#"{"a":{"a":1}}"#
        );
        let wide = get(up.addr(), "/wide-xml/2").await;
        assert_eq!(
            String::from_utf8(wide.body).unwrap(),
            "<response><header><resultCode>00</resultCode></header><body><items>\
             <item><a>1</a></item><item><a>1</a></item></items></body></response>"
        );
    }

    #[tokio::test]
    async fn echo_headers_carry_raw_lowered_and_decoded_forms() {
        let up = HostileUpstream::start().await.unwrap();
        let raw = "/echo-headers?a=1&serviceKey=ab%2Bc%2F+d";
        let r = get(up.addr(), raw).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.body, OK_BODY.as_bytes());
        assert_eq!(r.header("etag"), Some(format!("\"{raw}\"").as_str()));
        assert_eq!(r.header("x-echo"), Some(raw));
        assert_eq!(
            r.header("content-disposition"),
            Some("attachment; filename=\"/echo-headers?a=1&serviceKey=ab%2bc%2f+d\"")
        );
        assert_eq!(r.header("content-language"), Some("a=1&serviceKey=ab+c/+d"));
        assert_eq!(
            r.header("link"),
            Some(format!("<{raw}>; rel=self").as_str())
        );
        assert_eq!(r.header("last-modified"), None);
        assert_eq!(up.last_request().unwrap().target, raw);
    }

    #[tokio::test]
    async fn echo_bodies_escape_what_they_quote() {
        let (up, r) = start_and_get("/echo-error-xml?serviceKey=a%3Cb%26%2B").await;
        let body = String::from_utf8(r.body).unwrap();
        assert!(
            body.contains(
                "<errMsg>SERVICE ERROR for /echo-error-xml?serviceKey=a%3Cb%26%2B</errMsg>"
            ),
            "{body}"
        );
        assert!(
            body.contains("key=serviceKey=a&lt;b&amp;+</returnAuthMsg>"),
            "{body}"
        );

        let r = get(up.addr(), "/echo-error-json?k=%22x%2B").await;
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v["response"]["header"]["resultMsg"],
            "bad key /echo-error-json?k=%22x%2b (k=\"x+)"
        );

        let r = get(up.addr(), "/echo-body?k=%2B").await;
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["response"]["body"]["requestUrl"], "/echo-body?k=%2B");
        assert_eq!(v["response"]["body"]["decoded"], "k=+");
    }

    #[tokio::test]
    async fn redirect_throttle_and_status() {
        let (up, r) = start_and_get("/redirect/302?serviceKey=ab%2Bc&x=1").await;
        assert_eq!(r.status(), 302);
        let want = format!("http://{}/moved?serviceKey=ab%2Bc&x=1", up.addr());
        assert_eq!(r.header("location"), Some(want.as_str()));
        assert_eq!(r.body, b"moved");

        let r = get(up.addr(), "/throttle/7").await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.header("retry-after"), Some("7"));
        assert_eq!(r.body, b"slow down");

        let r = get(up.addr(), "/unavailable/3").await;
        assert_eq!((r.status(), r.header("retry-after")), (503, Some("3")));
        let r = get(up.addr(), "/status/418").await;
        assert_eq!((r.status(), r.body.as_slice()), (418, &b"status 418"[..]));

        for bad in ["/deep-xml/abc", "/deep-xml", "/redirect/305", "/status/+5"] {
            assert_eq!(get(up.addr(), bad).await.status(), 400, "{bad}");
        }
        assert_eq!(get(up.addr(), "/nope").await.status(), 404);
        assert_eq!(up.calls(), 9);
    }

    #[tokio::test]
    async fn gzip_is_a_real_gzip_of_ok_body() {
        let (_up, r) = start_and_get("/gzip").await;
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.body[..2], [0x1f, 0x8b]);
        // The gzip trailer: CRC-32 and length of the uncompressed data.
        let n = r.body.len();
        let trailer = |at: usize| u32::from_le_bytes(r.body[at..at + 4].try_into().unwrap());
        assert_eq!(trailer(n - 4) as usize, OK_BODY.len());
        assert_eq!(trailer(n - 8), crc32(OK_BODY.as_bytes()));
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[tokio::test]
    async fn reset_answers_nothing() {
        let up = HostileUpstream::start().await.unwrap();
        let (raw, err) = raw_get(up.addr(), "/reset").await;
        assert!(raw.is_empty(), "{raw:?}");
        if let Some(e) = err {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        }
        assert_eq!(up.calls(), 1);
    }

    #[tokio::test]
    async fn truncations_garbage_and_big_heads() {
        let (up, r) = start_and_get("/short-body").await;
        assert_eq!(r.header("content-length"), Some("1000"));
        assert_eq!(r.body, &OK_BODY.as_bytes()[..20]);

        let (raw, _) = raw_get(up.addr(), "/reset-mid").await;
        assert!(raw.starts_with(b"HTTP/1.1 200 OK\r\n"), "{raw:?}");

        let (raw, err) = raw_get(up.addr(), "/garbage").await;
        assert_eq!(
            (raw.as_slice(), err.is_none()),
            (&b"\x00\x01garbage\r\n\r\n"[..], true)
        );

        let (raw, _) = raw_get(up.addr(), "/bad-status").await;
        assert!(raw.starts_with(b"HTTP/1.1 abc Weird\r\n"));

        let r = get(up.addr(), "/huge-header/2").await;
        assert_eq!(r.header("x-big").map(str::len), Some(2048));
        let r = get(up.addr(), "/many-headers/3").await;
        assert_eq!(
            (r.header("x-h1"), r.header("x-h3"), r.header("x-h4")),
            (Some("v"), Some("v"), None)
        );
        assert_eq!(r.body, OK_BODY.as_bytes());
    }

    #[tokio::test]
    async fn drop_cuts_hung_and_dripping_connections() {
        let up = HostileUpstream::start().await.unwrap();
        let addr = up.addr();
        let hang = tokio::spawn(async move { raw_get(addr, "/hang").await });
        let drip = tokio::spawn(async move { raw_get(addr, "/drip/50").await });
        let start = Instant::now();
        while up.calls() < 2 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "requests not seen"
            );
            sleep(Duration::from_millis(10)).await;
        }
        sleep(Duration::from_millis(200)).await;
        drop(up);
        let (raw, _) = hang.await.unwrap();
        assert!(raw.is_empty());
        let (raw, _) = drip.await.unwrap();
        assert!(raw.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(raw.len() < 1000, "drip sent {} bytes", raw.len());
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
