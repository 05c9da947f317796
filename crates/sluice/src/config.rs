//! Configuration in two stages.
//!
//! 1. [`RawConfig`] mirrors the TOML file one to one: plain serde types with
//!    `deny_unknown_fields` and a doc comment on every field (the config reference in
//!    `docs/config.md` follows these comments). Syntax errors, unknown keys and bad
//!    durations or sizes are reported here by the TOML parser with their location.
//! 2. [`RawConfig::resolve`] turns it into [`Settings`]: secrets read from the
//!    environment, jq predicates compiled, routes checked against upstreams, the
//!    gateway built. Every error found here points back into the file through the
//!    byte spans kept by `serde_spanned`.
//!
//! Every error renders as `FILE:LINE:COLUMN: KEY: what is wrong`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_spanned::Spanned;
use sluice_core::{Clock, LocalQuota, Quota, RedisQuota, Secret};

mod job;
mod queue;
mod store;
pub use job::{
    JobsConfig, RawJob, RawRepository, RawStep, RawStepRetry, RawTrigger, TriggerConfig,
    WatchConfig, placeholders, substitute, substitute_str,
};
pub use queue::{JOBS_QUEUE, QueueConfig, RawQueue};
use sluice_gateway::{Gateway, RouteSpec, Ttl};
use sluice_upstream::{OkWhen, RetryPolicy, Upstream, UpstreamSpec};
pub use store::{RawCluster, RawStore, StoreKind};

/// A duration written as text: `"200ms"`, `"5s"`, `"10m"`, `"6h"`, `"1d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

/// Parses `"5s"`-style durations.
///
/// # Errors
///
/// A message naming the bad text and the expected form.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration {s:?} ({e}); write a number and a unit, like \"200ms\", \"5s\", \"10m\", \"6h\"")
    })
}

/// A byte size written as text: `"512KiB"`, `"256MiB"`, `"1GiB"`, `"1000"`, `"10MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            N(u64),
            S(String),
        }
        match Either::deserialize(d)? {
            Either::N(n) => Ok(Size(n)),
            Either::S(s) => parse_size(&s).map(Size).map_err(de::Error::custom),
        }
    }
}

/// Parses sizes: a number with an optional unit `B`, `KB`, `MB`, `GB` (powers of
/// 1000) or `KiB`, `MiB`, `GiB` (powers of 1024).
///
/// # Errors
///
/// A message naming the bad text.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}; write a number and a unit, like \"256MiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {s:?}; use B, KB, MB, GB, KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// A secret read at start-up: `{ env = "NAME" }` or `{ file = "/run/secrets/key" }`.
/// Never written inline, so config files can be committed; an inline value is an
/// error that never repeats the value.
#[derive(Debug, Clone)]
pub struct RawSecret {
    /// Name of the environment variable holding the secret.
    pub env: Option<Spanned<String>>,
    /// Path of a file holding the secret (surrounding whitespace trimmed).
    pub file: Option<Spanned<String>>,
}

/// The table form of [`RawSecret`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretTable {
    env: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
}

const INLINE_SECRET: &str = "a secret is never written inline (the value is not repeated here); \
     write { env = \"NAME\" } or { file = \"PATH\" }";

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RawSecret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{ env = \"NAME\" } or { file = \"PATH\" }")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawSecret, A::Error> {
                let t = RawSecretTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawSecret {
                    env: t.env,
                    file: t.file,
                })
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<RawSecret, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawSecret, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawSecret, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawSecret, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawSecret, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<RawSecret, A::Error> {
                Err(de::Error::custom(INLINE_SECRET))
            }
        }
        d.deserialize_any(V)
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The HTTP server.
    #[serde(default)]
    pub server: RawServer,
    /// Where cache entries live.
    #[serde(default)]
    pub store: RawStore,
    /// What several nodes share through Redis.
    #[serde(default)]
    pub cluster: RawCluster,
    /// Upstream APIs (`[[upstream]]`).
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<RawUpstream>,
    /// Gateway routes (`[[route]]`).
    #[serde(default, rename = "route")]
    pub routes: Vec<RawRoute>,
    /// Where batch runs are recorded.
    #[serde(default)]
    pub repository: RawRepository,
    /// Batch jobs (`[[job]]`).
    #[serde(default, rename = "job")]
    pub jobs: Vec<RawJob>,
    /// The task queue.
    #[serde(default)]
    pub queue: RawQueue,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: Option<Spanned<String>>,
    /// Bearer token for `/admin/*`. Without it the admin API is disabled.
    pub admin_token: Option<RawSecret>,
    /// How long shutdown waits for in-flight requests. Default `30s`.
    pub shutdown_grace: Option<Dur>,
    /// Longest wait for a complete request header, counted from the connection's
    /// accept for its first request and from the first byte of each later one;
    /// bytes trickling in do not extend it. Then the connection is closed. Default
    /// `10s`.
    pub header_read_timeout: Option<Spanned<Dur>>,
    /// A keep-alive connection with no request in flight and no bytes moving for
    /// this long is closed. A slow request in flight is never cut by it (the
    /// upstream `timeout` bounds those). Default `60s`.
    pub idle_timeout: Option<Spanned<Dur>>,
    /// A client that takes none of a response's bytes for this long (it stopped
    /// reading) is cut off, as nginx's `send_timeout`. Default `60s`.
    pub send_timeout: Option<Spanned<Dur>>,
    /// Most client connections open at once. When reached, sluice stops accepting
    /// (new clients wait in the kernel's listen backlog) until one closes. Default
    /// `1024`.
    pub max_connections: Option<Spanned<u32>>,
    /// Largest request head (request line and headers); a larger one is answered
    /// 431 and the connection closed. At least `1KiB`. Default `64KiB`.
    pub max_header_bytes: Option<Spanned<Size>>,
}

impl RawServer {
    /// Checks the connection limits: every one must be greater than zero.
    fn connections(&self, src: &Source, errs: &mut Vec<ConfigError>) -> ConnectionSettings {
        let d = ConnectionSettings::default();
        let mut dur = |v: &Option<Spanned<Dur>>, key: &str, default: Duration| match v {
            Some(s) if s.get_ref().0.is_zero() => {
                errs.push(src.err(
                    span(s),
                    format!("server.{key}"),
                    format!("{key} must be greater than zero"),
                ));
                default
            }
            Some(s) => s.get_ref().0,
            None => default,
        };
        let header_read_timeout = dur(
            &self.header_read_timeout,
            "header_read_timeout",
            d.header_read_timeout,
        );
        let idle_timeout = dur(&self.idle_timeout, "idle_timeout", d.idle_timeout);
        let send_timeout = dur(&self.send_timeout, "send_timeout", d.send_timeout);
        let max_connections = match &self.max_connections {
            Some(n) if *n.get_ref() == 0 => {
                errs.push(src.err(
                    span(n),
                    "server.max_connections",
                    "max_connections must be at least 1",
                ));
                d.max_connections
            }
            Some(n) => *n.get_ref() as usize,
            None => d.max_connections,
        };
        let max_header_bytes = match &self.max_header_bytes {
            Some(n) if n.get_ref().0 < 1024 => {
                errs.push(src.err(
                    span(n),
                    "server.max_header_bytes",
                    format!(
                        "max_header_bytes must be at least 1KiB (got {} bytes): an ordinary browser request is larger",
                        n.get_ref().0
                    ),
                ));
                d.max_header_bytes
            }
            Some(n) => usize::try_from(n.get_ref().0).unwrap_or(usize::MAX),
            None => d.max_header_bytes,
        };
        ConnectionSettings {
            header_read_timeout,
            idle_timeout,
            send_timeout,
            max_connections,
            max_header_bytes,
        }
    }
}

/// The checked client-connection limits of `[server]`; see [`RawServer`] for what
/// each one means. [`Default`] gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Longest wait for a complete request head.
    pub header_read_timeout: Duration,
    /// Longest quiet time of a connection with no request in flight.
    pub idle_timeout: Duration,
    /// Longest a response may wait for a client that stopped reading.
    pub send_timeout: Duration,
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
}

impl Default for ConnectionSettings {
    /// `10s`, `60s`, `60s`, `1024` and `64KiB`.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_header_bytes: 64 << 10,
        }
    }
}

/// `retries = { max = 2, backoff = "200ms" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    /// Retries after the first attempt (GET only, on connect errors, timeouts, 5xx
    /// and `retry_codes`). Default 2.
    pub max: Option<u32>,
    /// Base of the exponential backoff; each wait is uniform in
    /// `[0, min(max_backoff, backoff × 2^attempt)]`. Default `200ms`.
    pub backoff: Option<Dur>,
    /// Longest single wait. Default `5s`.
    pub max_backoff: Option<Dur>,
}

/// `rate_limit = { per_second = 10, per_day = 10000, timezone = "Asia/Seoul" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Calls per second (burst of the same size). Callers wait up to the upstream
    /// timeout for a slot.
    pub per_second: Option<u32>,
    /// Calls per day; when spent, stale entries are served, else 429 with
    /// `Retry-After` until the reset.
    pub per_day: Option<u64>,
    /// IANA zone whose midnight resets the daily quota. Default `UTC`.
    pub timezone: Option<Spanned<String>>,
}

/// `[[upstream]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Name used by routes, metrics and errors.
    pub name: Spanned<String>,
    /// Base URL (`http` or `https`); route paths are appended to its path.
    pub base_url: Spanned<String>,
    /// Query parameters injected into every call, e.g.
    /// `{ serviceKey = { env = "AIRKOREA_KEY" } }`. Store the raw ("Decoding") key:
    /// sluice percent-encodes it exactly once. Clients cannot set these parameters.
    #[serde(default)]
    pub secret_query: BTreeMap<String, RawSecret>,
    /// Headers injected into every call, e.g. `{ "X-Api-Key" = { env = "K" } }`.
    #[serde(default)]
    pub secret_headers: BTreeMap<String, RawSecret>,
    /// Per-attempt timeout (connect, send, whole body). Default `5s`.
    pub timeout: Option<Dur>,
    /// Retry policy.
    pub retries: Option<RawRetries>,
    /// Maximum concurrent calls. Default 8.
    pub concurrency: Option<usize>,
    /// Rate limit and daily quota.
    pub rate_limit: Option<RawRateLimit>,
    /// jq predicate over the body (JSON, or XML converted to JSON); a 2xx answer
    /// that fails it is an upstream error and is not cached.
    pub ok_when: Option<Spanned<String>>,
    /// Upstream error codes (found in a rejected body) that are retried, e.g.
    /// `["01", "02", "04", "05", "99"]` for the data portal.
    #[serde(default)]
    pub retry_codes: Vec<String>,
    /// Upstream error codes that mean the upstream's own daily quota is spent
    /// (`["22"]` for the data portal): the local budget is then spent until reset.
    #[serde(default)]
    pub quota_codes: Vec<String>,
    /// Largest upstream body read. Default `32MiB`.
    pub max_response: Option<Size>,
}

/// `ttl = "10m"` or `ttl = "upstream"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawTtl(pub Ttl);

impl<'de> Deserialize<'de> for RawTtl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim() == "upstream" {
            return Ok(RawTtl(Ttl::Upstream));
        }
        parse_duration(&s)
            .map(|d| RawTtl(Ttl::Fixed(d)))
            .map_err(|e| de::Error::custom(format!("{e}, or \"upstream\"")))
    }
}

/// `[[route]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Unique name, the first part of the route's keys. Default: the path.
    pub name: Option<Spanned<String>>,
    /// Path pattern: `/air/{*rest}` (catch-all), `/station/{id}` (one segment).
    pub path: Spanned<String>,
    /// Name of the upstream.
    pub upstream: Spanned<String>,
    /// Path appended to the upstream's base URL, with `{param}` placeholders.
    /// Default: the catch-all parameter's value. Every placeholder must be a
    /// parameter of `path`; no `.` or `..` segments.
    pub upstream_path: Option<Spanned<String>>,
    /// Fixed query parameters added to every upstream call.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Freshness: a duration, or `"upstream"` to follow Cache-Control / Expires.
    pub ttl: RawTtl,
    /// Serve stale this long after freshness ends while one background call
    /// refreshes. Default `0s`.
    pub stale_while_revalidate: Option<Dur>,
    /// Serve stale this long after freshness ends when the upstream fails, times
    /// out or fails `ok_when`. Default `0s`.
    pub stale_if_error: Option<Dur>,
    /// Freshness of 404 and 410 answers. Default `30s`; `"0s"` disables.
    pub negative_ttl: Option<Dur>,
    /// Query parameters that form the key and are forwarded (the others are
    /// dropped). Default: all of them.
    pub key_query: Option<Vec<String>>,
    /// Request headers that form the key and are forwarded. Not a secret header
    /// of the upstream, nor a hop-by-hop or framing header (`Host`, `Connection`,
    /// `Content-Length`, `Transfer-Encoding`, `TE`, `Trailer`, `Upgrade`,
    /// `Keep-Alive`, `Expect`, `Proxy-*`).
    #[serde(default)]
    pub vary: Vec<Spanned<String>>,
    /// Store 3xx answers (except 304) with the route's TTL. Default `false`:
    /// redirects are passed through with their `Location` and not stored.
    #[serde(default)]
    pub cache_redirects: bool,
}

/// A configuration error with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub at: Option<(usize, usize)>,
    /// The key path, e.g. `route[0].upstream`.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((l, c)) = self.at {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": ")?;
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Errors found while resolving; all of them are reported, not just the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Source text and name, for locating errors.
#[derive(Debug, Clone)]
pub struct Source {
    /// File path as given.
    pub file: PathBuf,
    /// File contents.
    pub text: String,
}

impl Source {
    /// Reads a config file.
    ///
    /// # Errors
    ///
    /// When the file cannot be read.
    pub fn read(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                at: None,
                key: None,
                message: format!("cannot read the config file: {e}"),
            }])
        })?;
        Ok(Self {
            file: path.to_owned(),
            text,
        })
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(0)
            + 1;
        (line, col)
    }

    fn err(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            at: span.map(|s| self.line_col(s.start)),
            key: Some(key.into()),
            message: msg.into(),
        }
    }

    /// Parses the text into a [`RawConfig`].
    ///
    /// # Errors
    ///
    /// The TOML parser's error, located, with the key on that line.
    pub fn parse(&self) -> Result<RawConfig, ConfigErrors> {
        toml::from_str::<RawConfig>(&self.text).map_err(|e| {
            let at = e.span().map(|s| self.line_col(s.start));
            let key = e.span().and_then(|s| self.key_at(s.start));
            ConfigErrors(vec![ConfigError {
                file: self.file.clone(),
                at,
                key,
                message: e.message().trim().to_owned(),
            }])
        })
    }

    /// The key written on the line of `offset`, with its table header
    /// (`route[1].ttl`); the table itself when the line is its header.
    fn key_at(&self, offset: usize) -> Option<String> {
        let offset = offset.min(self.text.len());
        let start = self.text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let line = self.text[start..].lines().next().unwrap_or("");
        let end = start + line.len();
        // The header this line is under (or is), with its index for arrays of tables.
        let mut table = None;
        let mut counts: std::collections::HashMap<String, usize> = Default::default();
        for l in self.text[..end].lines() {
            let t = l.trim();
            if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
                let name = name.trim().to_owned();
                let n = counts.entry(name.clone()).or_insert(0);
                table = Some(format!("{name}[{n}]"));
                *n += 1;
            } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
                table = Some(name.trim().to_owned());
            }
        }
        let header = line.trim_start().starts_with('[');
        let key = line.split_once('=').map(|(k, _)| k.trim().to_owned());
        match (table, key) {
            (Some(t), Some(k)) if !header => Some(format!("{t}.{k}")),
            (Some(t), _) => Some(t),
            (None, Some(k)) => Some(k),
            (None, None) => None,
        }
    }
}

/// Settings ready to serve.
#[derive(Clone)]
pub struct Settings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Admin bearer token; admin API disabled when `None`.
    pub admin_token: Option<Secret>,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Client-connection limits: header and idle timeouts, connection cap,
    /// request head size.
    pub connections: ConnectionSettings,
    /// The gateway.
    pub gateway: Gateway,
    /// Batch jobs and their repository.
    pub jobs: JobsConfig,
    /// The task queue.
    pub queue: QueueConfig,
    /// Every configured upstream, by name (jobs may use ones no route uses).
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("admin", &self.admin_token.is_some())
            .field("connections", &self.connections)
            .field("gateway", &self.gateway)
            .finish()
    }
}

/// Where secrets and time come from while resolving.
pub struct Env<'a> {
    /// Reads an environment variable.
    pub var: &'a dyn Fn(&str) -> Option<String>,
    /// The clock for TTLs and quotas.
    pub clock: Arc<dyn Clock>,
    /// For commands that never call an upstream or take admin requests (`queue
    /// stats`, `job status`, `schedule list`, …): a secret whose variable or file
    /// is missing is not an error; it resolves to a placeholder that is never sent.
    pub secrets_optional: bool,
}

impl Env<'_> {
    /// The process environment and the system clock.
    pub fn process() -> Env<'static> {
        Env {
            var: &|n| std::env::var(n).ok(),
            clock: Arc::new(sluice_core::SystemClock),
            secrets_optional: false,
        }
    }

    /// The process environment for a command that only inspects state: missing
    /// secrets are not errors (see [`Env::secrets_optional`]).
    pub fn inspect() -> Env<'static> {
        Env {
            secrets_optional: true,
            ..Env::process()
        }
    }
}

fn span<T>(s: &Spanned<T>) -> Option<Range<usize>> {
    Some(s.span())
}

impl RawConfig {
    /// Resolves into [`Settings`], collecting every error.
    ///
    /// # Errors
    ///
    /// All problems found, each with file, line, column and key.
    pub fn resolve(self, src: &Source, env: &Env<'_>) -> Result<Settings, ConfigErrors> {
        // Metric handles are registered while the gateway is built: the recorder
        // must exist first.
        let _ = crate::telemetry::prometheus();
        let mut errs = Vec::new();
        let listen = match &self.server.listen {
            Some(l) => l.get_ref().parse::<SocketAddr>().unwrap_or_else(|e| {
                errs.push(src.err(
                    span(l),
                    "server.listen",
                    format!(
                        "invalid address {:?}: {e}; write host:port like \"127.0.0.1:8080\"",
                        l.get_ref()
                    ),
                ));
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }),
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let admin_token = self
            .server
            .admin_token
            .as_ref()
            .and_then(|s| read_secret(s, src, env, "server.admin_token", &mut errs));
        if admin_token.as_ref().is_some_and(|t| t.expose().len() < 16) {
            errs.push(src.err(
                None,
                "server.admin_token",
                "the admin token must be at least 16 characters",
            ));
        }
        let connections = self.server.connections(src, &mut errs);
        let built = self.store.build(&self.cluster, src, env, &mut errs);
        let mut upstreams: BTreeMap<String, Arc<Upstream>> = BTreeMap::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let at = |k: &str| format!("upstream[{i}].{k}");
            let name = u.name.get_ref().clone();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                errs.push(src.err(
                    span(&u.name),
                    at("name"),
                    format!("upstream name {name:?} must be letters, digits, '-', '_' or '.'"),
                ));
            }
            if upstreams.contains_key(&name) {
                errs.push(src.err(
                    span(&u.name),
                    at("name"),
                    format!("upstream {name:?} is defined twice"),
                ));
            }
            let base_url = match reqwest::Url::parse(u.base_url.get_ref()) {
                Ok(url)
                    if (url.scheme() == "http" || url.scheme() == "https")
                        && url.host_str().is_some() =>
                {
                    if url.query().is_some()
                        || !url.username().is_empty()
                        || url.password().is_some()
                    {
                        errs.push(src.err(span(&u.base_url), at("base_url"), "base_url must not carry a query or credentials; use secret_query / secret_headers"));
                    }
                    Some(url)
                }
                Ok(_) => {
                    errs.push(src.err(
                        span(&u.base_url),
                        at("base_url"),
                        "base_url must be an http:// or https:// URL with a host",
                    ));
                    None
                }
                Err(e) => {
                    errs.push(src.err(
                        span(&u.base_url),
                        at("base_url"),
                        format!("invalid URL: {e}"),
                    ));
                    None
                }
            };
            let mut secret_query = Vec::new();
            for (k, s) in &u.secret_query {
                if let Some(v) =
                    read_secret(s, src, env, &at(&format!("secret_query.{k}")), &mut errs)
                {
                    secret_query.push((k.clone(), v));
                }
            }
            let mut secret_headers = Vec::new();
            for (k, s) in &u.secret_headers {
                match http::HeaderName::from_bytes(k.as_bytes()) {
                    Ok(h) => {
                        if let Some(v) =
                            read_secret(s, src, env, &at(&format!("secret_headers.{k}")), &mut errs)
                        {
                            secret_headers.push((h, v));
                        }
                    }
                    Err(_) => errs.push(src.err(
                        None,
                        at("secret_headers"),
                        format!("{k:?} is not a valid header name"),
                    )),
                }
            }
            let ok_when = u
                .ok_when
                .as_ref()
                .and_then(|p| match OkWhen::compile(p.get_ref()) {
                    Ok(o) => Some(o),
                    Err(e) => {
                        errs.push(src.err(span(p), at("ok_when"), e.to_string()));
                        None
                    }
                });
            let (per_second, per_day, tz) = match &u.rate_limit {
                Some(r) => {
                    let tz = match &r.timezone {
                        Some(t) => t.get_ref().parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
                            errs.push(src.err(span(t), at("rate_limit.timezone"), format!("unknown time zone {:?}; use an IANA name like \"Asia/Seoul\" or \"UTC\"", t.get_ref())));
                            chrono_tz::UTC
                        }),
                        None => chrono_tz::UTC,
                    };
                    if r.per_second == Some(0) || r.per_day == Some(0) {
                        errs.push(src.err(
                            None,
                            at("rate_limit"),
                            "limits must be greater than zero (leave a limit out to disable it)",
                        ));
                    }
                    (
                        r.per_second.and_then(NonZeroU32::new),
                        r.per_day.filter(|d| *d > 0),
                        tz,
                    )
                }
                None => (None, None, chrono_tz::UTC),
            };
            let retries = u
                .retries
                .as_ref()
                .map(|r| RetryPolicy {
                    max: r.max.unwrap_or(2),
                    backoff: r.backoff.map(|d| d.0).unwrap_or(Duration::from_millis(200)),
                    max_backoff: r.max_backoff.map(|d| d.0).unwrap_or(Duration::from_secs(5)),
                })
                .unwrap_or_default();
            let concurrency = u.concurrency.unwrap_or(8);
            if concurrency == 0 {
                errs.push(src.err(None, at("concurrency"), "concurrency must be at least 1"));
            }
            let timeout = u.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(5));
            if timeout.is_zero() {
                errs.push(src.err(None, at("timeout"), "timeout must be greater than zero"));
            }
            if let Some(url) = base_url {
                let spec = UpstreamSpec {
                    name: name.clone(),
                    base_url: url,
                    secret_query,
                    secret_headers,
                    timeout,
                    retries,
                    concurrency,
                    quota: {
                        let local = LocalQuota::new(per_second, per_day, tz, env.clock.clone());
                        match built.as_ref().and_then(|b| b.quota_redis.clone()) {
                            Some(r) => Arc::new(RedisQuota::new(r, &name, local)) as Arc<dyn Quota>,
                            None => Arc::new(local),
                        }
                    },
                    ok_when,
                    retry_codes: u.retry_codes.clone(),
                    quota_codes: u.quota_codes.clone(),
                    max_response_bytes: u.max_response.map(|s| s.0 as usize).unwrap_or(32 << 20),
                };
                match Upstream::new(spec) {
                    Ok(up) => {
                        upstreams.insert(name, Arc::new(up));
                    }
                    Err(e) => errs.push(src.err(span(&u.name), at("name"), e.to_string())),
                }
            }
        }

        let mut builder = Gateway::builder().clock(env.clock.clone());
        if let Some(b) = &built {
            builder = builder.store(b.store.clone());
            if let Some(f) = &b.flights {
                builder = builder.shared_flights(f.clone());
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let at = |k: &str| format!("route[{i}].{k}");
            let Some(upstream) = upstreams.get(r.upstream.get_ref()).cloned() else {
                if self
                    .upstreams
                    .iter()
                    .any(|u| u.name.get_ref() == r.upstream.get_ref())
                {
                    // Defined, but its own errors are reported already: no cascade.
                    continue;
                }
                let known: Vec<&str> = self
                    .upstreams
                    .iter()
                    .map(|u| u.name.get_ref().as_str())
                    .collect();
                errs.push(src.err(
                    span(&r.upstream),
                    at("upstream"),
                    format!(
                        "unknown upstream {:?}; defined upstreams: {}",
                        r.upstream.get_ref(),
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
                continue;
            };
            let path = r.path.get_ref();
            if !path.starts_with('/') {
                errs.push(src.err(
                    span(&r.path),
                    at("path"),
                    "a route path must start with '/'",
                ));
                continue;
            }
            let mut vary = Vec::new();
            for v in &r.vary {
                match http::HeaderName::from_bytes(v.get_ref().to_ascii_lowercase().as_bytes()) {
                    Ok(h) => vary.push(h),
                    Err(_) => errs.push(src.err(
                        span(v),
                        at("vary"),
                        format!("{:?} is not a valid header name", v.get_ref()),
                    )),
                }
            }
            let spec = RouteSpec {
                name: r
                    .name
                    .as_ref()
                    .map(|n| n.get_ref().clone())
                    .unwrap_or_else(|| path.clone()),
                path: path.clone(),
                upstream,
                upstream_path: r.upstream_path.as_ref().map(|p| p.get_ref().clone()),
                query: r
                    .query
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                ttl: r.ttl.0,
                stale_while_revalidate: r.stale_while_revalidate.map(|d| d.0).unwrap_or_default(),
                stale_if_error: r.stale_if_error.map(|d| d.0).unwrap_or_default(),
                negative_ttl: r
                    .negative_ttl
                    .map(|d| d.0)
                    .unwrap_or(Duration::from_secs(30)),
                key_query: r.key_query.clone(),
                vary,
                cache_redirects: r.cache_redirects,
            };
            let problems = sluice_gateway::route::check_route(&spec);
            for p in &problems {
                let at_span = match p.field {
                    "path" => span(&r.path),
                    "vary" => r
                        .vary
                        .iter()
                        .find(|v| {
                            p.message
                                .contains(&format!("{:?}", v.get_ref().to_ascii_lowercase()))
                        })
                        .and_then(span),
                    "upstream_path" => r.upstream_path.as_ref().and_then(span),
                    _ => r.name.as_ref().and_then(span).or_else(|| span(&r.path)),
                };
                errs.push(src.err(at_span, at(p.field), p.message.clone()));
            }
            if problems.is_empty() {
                builder = builder.route(spec);
            }
        }
        let jobs = job::check_jobs(&self.repository, &self.jobs, src, &mut errs);
        let queue = queue::check_queue(&self.queue, &jobs.repository_url, src, &mut errs);
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        let gateway = builder.build().map_err(|e| {
            let first = self.routes.first().map(|r| r.path.span());
            ConfigErrors(vec![src.err(first, "route", e.to_string())])
        })?;
        Ok(Settings {
            jobs,
            queue,
            upstreams,
            listen,
            admin_token,
            shutdown_grace: self
                .server
                .shutdown_grace
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(30)),
            connections,
            gateway,
        })
    }
}

fn read_secret(
    s: &RawSecret,
    src: &Source,
    env: &Env<'_>,
    key: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Secret> {
    if !env.secrets_optional {
        return read_secret_strict(s, src, env, key, errs);
    }
    let mut missing = Vec::new();
    let found = read_secret_strict(s, src, env, key, &mut missing);
    if s.env.is_some() == s.file.is_some() {
        // Written wrongly, not merely absent: still an error.
        errs.append(&mut missing);
        return found;
    }
    // Never used by the commands that ask for this: they call no upstream.
    found.or_else(|| Some(Secret::new("sluice-secret-not-loaded")))
}

fn read_secret_strict(
    s: &RawSecret,
    src: &Source,
    env: &Env<'_>,
    key: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Secret> {
    match (&s.env, &s.file) {
        (Some(name), None) => match (env.var)(name.get_ref()) {
            Some(v) if !v.is_empty() => Some(Secret::new(v)),
            Some(_) => {
                errs.push(src.err(
                    span(name),
                    key,
                    format!("environment variable {} is empty", name.get_ref()),
                ));
                None
            }
            None => {
                errs.push(src.err(
                    span(name),
                    key,
                    format!("environment variable {} is not set", name.get_ref()),
                ));
                None
            }
        },
        (None, Some(path)) => match std::fs::read_to_string(path.get_ref()) {
            Ok(v) if !v.trim().is_empty() => Some(Secret::new(v.trim().to_owned())),
            Ok(_) => {
                errs.push(src.err(
                    span(path),
                    key,
                    format!("secret file {} is empty", path.get_ref()),
                ));
                None
            }
            Err(e) => {
                errs.push(src.err(
                    span(path),
                    key,
                    format!("cannot read secret file {}: {e}", path.get_ref()),
                ));
                None
            }
        },
        _ => {
            errs.push(src.err(None, key, "a secret is written { env = \"NAME\" } or { file = \"PATH\" }, exactly one of them"));
            None
        }
    }
}

/// Reads, parses and resolves a config file.
///
/// # Errors
///
/// Every problem found, located.
pub fn load(path: &Path, env: &Env<'_>) -> Result<Settings, ConfigErrors> {
    let src = Source::read(path)?;
    src.parse()?.resolve(&src, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("12XB").unwrap_err().contains("unit"));
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert!(parse_duration("5x").unwrap_err().contains("\"5x\""));
    }

    #[test]
    fn line_and_column() {
        let s = Source {
            file: "f.toml".into(),
            text: "a = 1\nbb = 2\n".into(),
        };
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(8), (2, 3));
    }
}
