//! The gateway access log: one line per request the gateway answers, in the
//! format of `docs/specs/access-log.md` (its fields and their order are a
//! contract: tools read the log back).
//!
//! The request path only formats: a line is written into a recycled buffer and
//! handed to a writer thread through a bounded queue of [`QUEUE_LINES`] lines.
//! When the queue is full the line is dropped and counted in
//! `sluice_access_log_dropped_total`; a request never waits for the disk. The
//! writer writes whatever has queued up, then flushes, so a line reaches the file
//! as soon as the writer gets to it.
//!
//! A line never holds the path, the query, the key or a header: a query (and a
//! path) may carry client values, and secrets are added upstream-side. The key
//! appears as [`key_hash`], enough to tell that two requests used one entry.

use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::HttpBody;
use axum::response::Response;
use chrono::{TimeZone, Utc};
use http::{Method, Version};
use metrics::Counter;

use crate::outcome::CacheOutcome;

/// The metric counting dropped lines (declared in the workspace catalogue).
pub use sluice_core::metrics::names::ACCESS_LOG_DROPPED;

/// Lines the queue between the request path and the writer holds.
pub const QUEUE_LINES: usize = 8192;

/// How a line is written: `server.access_log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// NCSA common log style with sluice's fields appended.
    Common,
}

impl FromStr for AccessLogFormat {
    type Err = String;

    /// `"json"` or `"common"` (`"off"` is the absence of an access log).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "common" => Ok(Self::Common),
            _ => Err(format!(
                "invalid access log format {s:?}: expected \"off\", \"json\" or \"common\""
            )),
        }
    }
}

/// Where lines go: `server.access_log_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output (`"-"`).
    Stdout,
    /// A file, appended to (created when missing) and reopened on request.
    File(PathBuf),
}

impl AccessLogTarget {
    /// `"-"` is standard output; anything else a file path.
    pub fn parse(s: &str) -> Self {
        if s == "-" {
            Self::Stdout
        } else {
            Self::File(PathBuf::from(s))
        }
    }
}

impl fmt::Display for AccessLogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout => f.write_str("-"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A configured access log: its format and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSpec {
    /// The line format.
    pub format: AccessLogFormat,
    /// Standard output or a file.
    pub target: AccessLogTarget,
}

/// The first 16 hex digits (64 bits) of the key's XXH3 hash: stable across
/// processes, versions and nodes, and not the key.
pub fn key_hash(key: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
}

/// What the gateway knows about one answered request, for its line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answered<'a> {
    /// The request method.
    pub(crate) method: &'a Method,
    /// The request's HTTP version.
    pub(crate) version: Version,
    /// The route that served it; `None` when refused before one was chosen.
    pub(crate) route: Option<&'a str>,
    /// The cache key; `None` when refused before one was built.
    pub(crate) key: Option<&'a str>,
    /// What the cache did; `None` when it took no part.
    pub(crate) cache: Option<CacheOutcome>,
    /// From the request's arrival to its response.
    pub(crate) latency: Duration,
    /// Now, by the gateway's clock (Unix milliseconds).
    pub(crate) now_ms: i64,
}

impl<'a> Answered<'a> {
    /// `req`, `served` by a route with a key and an outcome (`None` when
    /// refused), `started` at that instant, answered at `now_ms`.
    pub(crate) fn new(
        req: &'a http::Request<axum::body::Body>,
        served: Option<(&'a str, &'a str, CacheOutcome)>,
        started: std::time::Instant,
        now_ms: i64,
    ) -> Self {
        Self {
            method: req.method(),
            version: req.version(),
            route: served.map(|s| s.0),
            key: served.map(|s| s.1),
            cache: served.map(|s| s.2),
            latency: started.elapsed(),
            now_ms,
        }
    }
}

/// The writer thread's queue, started by [`AccessLog::open`].
struct Writer {
    tx: SyncSender<Vec<u8>>,
}

/// A gateway's access log: formats on the request path, writes on its own thread.
pub struct AccessLog {
    spec: AccessLogSpec,
    writer: OnceLock<Writer>,
    /// Serializes [`AccessLog::open`]; holds whether opening failed already.
    opening: Mutex<bool>,
    /// Empty buffers for lines, handed back by the writer.
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
    reopen: Arc<AtomicBool>,
    dropped: Counter,
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog")
            .field("spec", &self.spec)
            .field("open", &self.writer.get().is_some())
            .finish()
    }
}

impl AccessLog {
    /// An access log of `spec`, not open yet; registers the dropped-lines counter.
    pub fn new(spec: AccessLogSpec) -> Self {
        Self {
            spec,
            writer: OnceLock::new(),
            opening: Mutex::new(false),
            pool: Arc::new(Mutex::new(Vec::new())),
            reopen: Arc::new(AtomicBool::new(false)),
            dropped: metrics::counter!(ACCESS_LOG_DROPPED),
        }
    }

    /// Its format and target.
    pub fn spec(&self) -> &AccessLogSpec {
        &self.spec
    }

    /// Opens the target and starts the writer thread; does nothing when open.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened for appending.
    pub fn open(&self) -> io::Result<()> {
        let mut failed = self.opening.lock().unwrap_or_else(|e| e.into_inner());
        if self.writer.get().is_some() {
            return Ok(());
        }
        let sink = match Sink::open(&self.spec.target) {
            Ok(s) => s,
            Err(e) => {
                *failed = true;
                return Err(e);
            }
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_LINES);
        let pool = self.pool.clone();
        let reopen = self.reopen.clone();
        let target = self.spec.target.clone();
        std::thread::Builder::new()
            .name("sluice-access-log".into())
            .spawn(move || write_lines(&rx, sink, &target, &pool, &reopen))?;
        let _ = self.writer.set(Writer { tx });
        Ok(())
    }

    /// Asks the writer to reopen its file before the next line (after a log
    /// rotation moved it away). Standard output is never reopened.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::SeqCst);
    }

    /// Formats the line of one answered request and queues it (dropping it when
    /// the queue is full). Opens the log first if nobody did; when that fails
    /// (once, logged) lines are dropped.
    pub(crate) fn record(&self, a: &Answered<'_>, resp: &Response) {
        let writer = match self.writer.get() {
            Some(w) => w,
            None => {
                if *self.opening.lock().unwrap_or_else(|e| e.into_inner()) {
                    self.dropped.increment(1);
                    return;
                }
                if let Err(e) = self.open() {
                    tracing::error!(target = %self.spec.target, error = %e,
                        "cannot open the access log; its lines are dropped");
                }
                match self.writer.get() {
                    Some(w) => w,
                    None => {
                        self.dropped.increment(1);
                        return;
                    }
                }
            }
        };
        let mut buf = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(256));
        let line = Line::new(a, resp);
        match self.spec.format {
            AccessLogFormat::Json => line.json(&mut buf),
            AccessLogFormat::Common => line.common(&mut buf),
        }
        match writer.tx.try_send(buf) {
            Ok(()) => {}
            Err(TrySendError::Full(mut buf) | TrySendError::Disconnected(mut buf)) => {
                self.dropped.increment(1);
                buf.clear();
                recycle(&self.pool, buf);
            }
        }
    }
}

/// Keeps `buf` for a later line, unless enough are kept already.
fn recycle(pool: &Mutex<Vec<Vec<u8>>>, buf: Vec<u8>) {
    let mut p = pool.lock().unwrap_or_else(|e| e.into_inner());
    if p.len() < QUEUE_LINES && buf.capacity() <= 4096 {
        p.push(buf);
    }
}

/// The fields of one line, in their order.
struct Line<'a> {
    now_ms: i64,
    method: &'a str,
    route: &'a str,
    version: &'static str,
    status: u16,
    bytes: u64,
    cache: &'static str,
    key_hash: Option<u64>,
    latency_ms: f64,
}

impl<'a> Line<'a> {
    fn new(a: &Answered<'a>, resp: &Response) -> Self {
        let hint = resp.body().size_hint();
        Self {
            now_ms: a.now_ms,
            method: a.method.as_str(),
            route: a.route.unwrap_or("-"),
            version: version(a.version),
            status: resp.status().as_u16(),
            bytes: hint.exact().unwrap_or(hint.lower()),
            cache: a.cache.map_or("-", CacheOutcome::as_str),
            key_hash: a.key.map(|k| xxhash_rust::xxh3::xxh3_64(k.as_bytes())),
            latency_ms: a.latency.as_secs_f64() * 1000.0,
        }
    }

    /// `{"time":…,"method":…,"route":…,"protocol":…,"status":…,"bytes":…,"cache":…,"key_hash":…,"latency_ms":…}`
    fn json(&self, buf: &mut Vec<u8>) {
        let mut s = Text(buf);
        let _ = write!(s, "{{\"time\":\"");
        time(&mut s, self.now_ms);
        let _ = write!(s, "\",\"method\":");
        json_str(&mut s, self.method);
        let _ = write!(s, ",\"route\":");
        json_str(&mut s, self.route);
        let _ = write!(
            s,
            ",\"protocol\":\"{}\",\"status\":{},\"bytes\":{},\"cache\":",
            self.version, self.status, self.bytes
        );
        match self.cache {
            "-" => s.0.extend_from_slice(b"null"),
            c => {
                let _ = write!(s, "\"{c}\"");
            }
        }
        match self.key_hash {
            Some(h) => {
                let _ = write!(s, ",\"key_hash\":\"{h:016x}\"");
            }
            None => s.0.extend_from_slice(b",\"key_hash\":null"),
        }
        let _ = writeln!(s, ",\"latency_ms\":{:.3}}}", self.latency_ms);
    }

    /// `- - - [TIME] "METHOD ROUTE PROTOCOL" STATUS BYTES CACHE KEY_HASH LATENCY_MS`
    fn common(&self, buf: &mut Vec<u8>) {
        let mut s = Text(buf);
        s.0.extend_from_slice(b"- - - [");
        time(&mut s, self.now_ms);
        s.0.extend_from_slice(b"] \"");
        common_token(&mut s, self.method);
        s.0.push(b' ');
        common_token(&mut s, self.route);
        let _ = write!(
            s,
            " {}\" {} {} {} ",
            self.version, self.status, self.bytes, self.cache
        );
        match self.key_hash {
            Some(h) => {
                let _ = write!(s, "{h:016x}");
            }
            None => s.0.push(b'-'),
        }
        let _ = writeln!(s, " {:.3}", self.latency_ms);
    }
}

/// A `fmt::Write` over a byte buffer.
struct Text<'a>(&'a mut Vec<u8>);

impl fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// RFC 3339 in UTC with milliseconds: `2026-12-03T14:37:12.123Z`.
fn time(s: &mut Text<'_>, ms: i64) {
    let t = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    let _ = write!(s, "{}", t.format("%Y-%m-%dT%H:%M:%S%.3fZ"));
}

/// A JSON string literal.
fn json_str(s: &mut Text<'_>, v: &str) {
    let _ = serde_json::to_writer(&mut *s.0, v);
}

/// A token inside the quoted request field: `"` and `\` escaped with `\`, other
/// control characters as `\xNN` (as Apache does).
fn common_token(s: &mut Text<'_>, v: &str) {
    for c in v.chars() {
        match c {
            '"' | '\\' => {
                let _ = write!(s, "\\{c}");
            }
            c if c.is_control() => {
                let _ = write!(s, "\\x{:02x}", u32::from(c));
            }
            c => {
                let _ = s.write_char(c);
            }
        }
    }
}

fn version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Where the writer thread writes.
enum Sink {
    Stdout(io::BufWriter<io::Stdout>),
    File(io::BufWriter<File>),
}

impl Sink {
    fn open(target: &AccessLogTarget) -> io::Result<Self> {
        Ok(match target {
            AccessLogTarget::Stdout => Self::Stdout(io::BufWriter::new(io::stdout())),
            AccessLogTarget::File(p) => Self::File(io::BufWriter::new(append(p)?)),
        })
    }

    fn out(&mut self) -> &mut dyn Write {
        match self {
            Self::Stdout(w) => w,
            Self::File(w) => w,
        }
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The writer thread: waits for a line, writes it and every line queued behind
/// it, flushes; ends when the gateway is gone.
fn write_lines(
    rx: &Receiver<Vec<u8>>,
    mut sink: Sink,
    target: &AccessLogTarget,
    pool: &Mutex<Vec<Vec<u8>>>,
    reopen: &AtomicBool,
) {
    let mut failing = false;
    while let Ok(first) = rx.recv() {
        if reopen.swap(false, Ordering::SeqCst)
            && let AccessLogTarget::File(p) = target
        {
            match append(p) {
                Ok(f) => {
                    let _ = sink.out().flush();
                    sink = Sink::File(io::BufWriter::new(f));
                    tracing::info!(path = %p.display(), "access log reopened");
                }
                Err(e) => {
                    tracing::error!(path = %p.display(), error = %e,
                        "cannot reopen the access log; writing to the old file")
                }
            }
        }
        let mut result = Ok(());
        let mut next = Some(first);
        while let Some(mut line) = next {
            if result.is_ok() {
                result = sink.out().write_all(&line);
            }
            line.clear();
            recycle(pool, line);
            next = rx.try_recv().ok();
        }
        let result = result.and_then(|()| sink.out().flush());
        match result {
            Err(e) if !failing => {
                failing = true;
                tracing::error!(%target, error = %e, "cannot write the access log");
            }
            Ok(()) if failing => {
                failing = false;
                tracing::info!(%target, "writing the access log again");
            }
            _ => {}
        }
    }
    let _ = sink.out().flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn line(
        route: Option<&'static str>,
        key: Option<&'static str>,
        cache: Option<CacheOutcome>,
    ) -> Line<'static> {
        let resp = Response::builder()
            .status(200)
            .body(Body::from("0123456789"))
            .unwrap();
        let a = Answered {
            method: &Method::GET,
            version: Version::HTTP_11,
            route,
            key,
            cache,
            latency: Duration::from_micros(12_345),
            now_ms: 1_796_308_632_123,
        };
        Line::new(&a, &resp)
    }

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut buf = Vec::new();
        f(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn json_lines_have_every_field_in_order() {
        let l = line(Some("air"), Some("air GET /x a=1"), Some(CacheOutcome::Hit));
        let s = text(|b| l.json(b));
        let h = key_hash("air GET /x a=1");
        assert_eq!(
            s,
            format!(
                "{{\"time\":\"2026-12-03T14:37:12.123Z\",\"method\":\"GET\",\"route\":\"air\",\"protocol\":\"HTTP/1.1\",\"status\":200,\"bytes\":10,\"cache\":\"hit\",\"key_hash\":\"{h}\",\"latency_ms\":12.345}}\n"
            )
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["key_hash"].as_str().unwrap().len(), 16);
        let refused = text(|b| line(None, None, None).json(b));
        let v: serde_json::Value = serde_json::from_str(&refused).unwrap();
        assert_eq!(v["route"], "-");
        assert!(v["cache"].is_null() && v["key_hash"].is_null(), "{refused}");
    }

    #[test]
    fn common_lines_quote_the_request_and_append_sluice_fields() {
        let l = line(Some("air"), Some("k"), Some(CacheOutcome::Miss));
        assert_eq!(
            text(|b| l.common(b)),
            format!(
                "- - - [2026-12-03T14:37:12.123Z] \"GET air HTTP/1.1\" 200 10 miss {} 12.345\n",
                key_hash("k")
            )
        );
        assert_eq!(
            text(|b| line(None, None, None).common(b)),
            "- - - [2026-12-03T14:37:12.123Z] \"GET - HTTP/1.1\" 200 10 - - 12.345\n"
        );
        let odd = text(|b| common_token(&mut Text(b), "a\"b\\c\n"));
        assert_eq!(odd, "a\\\"b\\\\c\\x0a");
    }

    #[test]
    fn the_key_hash_is_stable_and_short() {
        assert_eq!(key_hash("air GET /x"), key_hash("air GET /x"));
        assert_ne!(key_hash("air GET /x"), key_hash("air GET /y"));
        // XXH3-64 of the empty input: fixed by the algorithm, so by the contract.
        assert_eq!(key_hash(""), "2d06800538d394c2");
    }

    #[test]
    fn formats_parse_and_refuse_with_the_choices() {
        assert_eq!("json".parse(), Ok(AccessLogFormat::Json));
        assert_eq!("common".parse(), Ok(AccessLogFormat::Common));
        let e = "xml".parse::<AccessLogFormat>().unwrap_err();
        assert!(e.contains("\"xml\"") && e.contains("\"common\""), "{e}");
        assert_eq!(AccessLogTarget::parse("-"), AccessLogTarget::Stdout);
        assert_eq!(
            AccessLogTarget::parse("/var/log/a.log"),
            AccessLogTarget::File("/var/log/a.log".into())
        );
    }

    #[test]
    fn lines_reach_the_file_and_a_reopen_follows_a_rotation() {
        let dir = std::env::temp_dir().join(format!("sluice-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let log = AccessLog::new(AccessLogSpec {
            format: AccessLogFormat::Common,
            target: AccessLogTarget::File(path.clone()),
        });
        log.open().unwrap();
        let resp = Response::new(Body::from("x"));
        let a = Answered {
            method: &Method::HEAD,
            version: Version::HTTP_10,
            route: Some("air"),
            key: Some("k"),
            cache: Some(CacheOutcome::Hit),
            latency: Duration::ZERO,
            now_ms: 0,
        };
        log.record(&a, &resp);
        let lines = |p: &Path| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let wait = |p: &Path, n: usize| {
            let end = std::time::Instant::now() + Duration::from_secs(10);
            while lines(p) < n {
                assert!(std::time::Instant::now() < end, "{} lines", lines(p));
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait(&path, 1);
        let rotated = dir.join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.record(&a, &resp);
        wait(&path, 1);
        assert_eq!(lines(&rotated), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("- - - [1970-01-01T00:00:00.000Z] \"HEAD air HTTP/1.0\" 200 1 hit "),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
