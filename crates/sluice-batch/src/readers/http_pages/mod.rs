//! Reading the items of a paged HTTP API through an [`Upstream`].
//!
//! Every page is one [`Upstream::fetch`], so a batch job spends the same budget,
//! uses the same injected secrets, retries and `ok_when` as the gateway's clients.
//! Optionally ([`HttpPagesReader::cache`]) a page the gateway holds fresh is taken
//! from its cache instead of the upstream.
//!
//! ```text
//! open(cp) ─▶ fetch page cp.page, skip cp.index items
//! read ─▶ next item of the page ─▶ page exhausted: 0 items, total reached or
//!                                  no next cursor ─▶ end; else fetch the next page
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use sluice_cache::{CacheTarget, Entry, Freshness};
use sluice_upstream::{
    Caller, Jq, Upstream, UpstreamError, UpstreamErrorKind, encode_component, parse_json_or_xml,
};

use crate::api::{ReadError, ReadItem, Reader};

mod config;

pub use config::RawHttpPagesReader;

/// How pages are addressed.
#[derive(Debug)]
pub enum Pagination {
    /// Numbered pages: `param=start, start+1, …` and `size_param=size`.
    Page {
        /// The page number parameter (`pageNo`).
        param: String,
        /// The first page's number (usually 1).
        start: u64,
        /// The page size parameter (`numOfRows`).
        size_param: String,
        /// Items asked for per page.
        size: u64,
    },
    /// Item offsets: `param=0, n, 2n, …` (advancing by the items each page
    /// returned) and `size_param=size`.
    Offset {
        /// The offset parameter (`offset`, `start`).
        param: String,
        /// The page size parameter (`limit`).
        size_param: String,
        /// Items asked for per page.
        size: u64,
    },
    /// Opaque cursors: the first page is requested without `param`; each next one
    /// with `param=` what `next` yields on the page before. `null`, `""` or no
    /// output from `next` ends the reading.
    Cursor {
        /// The cursor parameter.
        param: String,
        /// jq yielding the next cursor from a page (`.next_cursor`).
        next: Jq,
    },
}

impl Pagination {
    /// Numbered pages from 1: `Page { param, start: 1, size_param, size }`.
    pub fn page(param: impl Into<String>, size_param: impl Into<String>, size: u64) -> Self {
        Self::Page {
            param: param.into(),
            start: 1,
            size_param: size_param.into(),
            size,
        }
    }

    /// The first page's position.
    fn first(&self) -> Value {
        match self {
            Self::Page { start, .. } => json!(start),
            Self::Offset { .. } => json!(0),
            Self::Cursor { .. } => Value::Null,
        }
    }
}

/// How the `items` filter is applied.
#[derive(Debug)]
enum Items {
    /// The filter ended in `[]`: it runs without it and each output (the
    /// container) is flattened, so that the portal's shapes all work.
    Container(Jq),
    /// Each output is an item.
    Each(Jq),
}

/// Reading through the gateway's cache.
#[derive(Debug)]
struct CacheThrough {
    gateway: Arc<dyn CacheTarget>,
    prefix: String,
    store_ttl: Option<Duration>,
}

/// The page being read.
#[derive(Debug)]
struct Loaded {
    items: Vec<Value>,
    /// The next page's position; `None` on the last page.
    next: Option<Value>,
}

/// Reads the items of a paged HTTP API through an [`Upstream`].
///
/// ```no_run
/// # use std::sync::Arc;
/// # use sluice_batch::readers::{HttpPagesReader, Pagination};
/// # use sluice_upstream::Jq;
/// # fn f(upstream: Arc<sluice_upstream::Upstream>) -> Result<(), sluice_upstream::JqError> {
/// let reader = HttpPagesReader::new(
///     upstream,
///     "/getCtprvnRltmMesureDnsty",
///     Jq::compile(".response.body.items[]")?,
///     Pagination::page("pageNo", "numOfRows", 100),
/// )
/// .query("sidoName", "서울")
/// .query("returnType", "json")
/// .total_count(Jq::compile(".response.body.totalCount")?);
/// # Ok(()) }
/// ```
///
/// **Items.** A filter ending in `[]` (`.response.body.items[]`) is run without the
/// `[]` and its output flattened: a list gives its elements, `""` and `null` give
/// none, an object whose only key is `item` is replaced by that key's value (the
/// data.go.kr shape `{"item": [...]}` or `{"item": {...}}` for a lone row), and any
/// other object is one item. Other filters yield one item per output (`null`s
/// dropped). XML bodies are converted to JSON first (`<items><item>…` becomes
/// `.items.item`).
///
/// **End.** After a page with no items, after the page that reaches `total`, or
/// when a cursor page yields no next cursor.
///
/// **Checkpoint.** `{"page": p, "index": i, "position": n}`: the page number,
/// offset or cursor of the current page, how many of its items were returned, and
/// how many items were returned in all. Opening at it fetches page `p` again and
/// skips `i` items. A page read to its end checkpoints as the start of the next
/// (`index` 0), so that a resume fetches no page twice.
///
/// **Errors.** Timeouts, 5xx and connection failures (after the upstream's own
/// retries) and a spent quota are [`ReadError::Transient`]; an `ok_when`
/// rejection (with the upstream's error code), another HTTP status, and a body
/// that is neither JSON nor XML are [`ReadError::Fatal`], naming the page.
#[derive(Debug)]
pub struct HttpPagesReader {
    upstream: Arc<Upstream>,
    path: String,
    query: Vec<(String, String)>,
    pagination: Pagination,
    items: Items,
    total_jq: Option<Jq>,
    cache: Option<CacheThrough>,
    pos: Value,
    index: usize,
    loaded: Option<Loaded>,
    done: bool,
    position: u64,
    total: Option<u64>,
    quota_reserve: u64,
}

impl HttpPagesReader {
    /// Reads the pages of `path` (appended to the upstream's base URL), taking
    /// items with `items` and pages with `pagination`.
    pub fn new(
        upstream: Arc<Upstream>,
        path: impl Into<String>,
        items: Jq,
        pagination: Pagination,
    ) -> Self {
        let items = match items.source().trim().strip_suffix("[]") {
            Some(container) if !container.trim().is_empty() => match Jq::compile(container) {
                Ok(jq) => Items::Container(jq),
                Err(_) => Items::Each(items),
            },
            _ => Items::Each(items),
        };
        let pos = pagination.first();
        Self {
            upstream,
            path: path.into(),
            query: Vec::new(),
            pagination,
            items,
            total_jq: None,
            cache: None,
            pos,
            index: 0,
            loaded: None,
            done: false,
            position: 0,
            total: None,
            quota_reserve: 0,
        }
    }

    /// Leaves `calls` of the upstream's daily quota to others (the gateway's
    /// clients): before a page is fetched from the upstream, when no more than
    /// `calls` are left today, reading suspends ([`ReadError::Suspended`]) until
    /// the quota's reset. A spent quota suspends it whatever the reserve.
    #[must_use]
    pub fn quota_reserve(mut self, calls: u64) -> Self {
        self.quota_reserve = calls;
        self
    }

    /// The suspension for a spent (or reserved) daily quota, naming the reset.
    fn suspended(&self, label: &str, why: String) -> ReadError {
        let snap = self.upstream.quota().snapshot();
        let at = snap.resets_at_ms;
        let when = at
            .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
            .map(|t| {
                format!(
                    "; it resets at {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            })
            .unwrap_or_default();
        ReadError::Suspended {
            reason: format!(
                "{label}: upstream {} {why}{when}; the load resumes from here then",
                self.upstream.name()
            ),
            resume_at_ms: at,
        }
    }

    /// Adds a fixed query parameter (raw value; encoded when sent).
    #[must_use]
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }

    /// jq yielding the number of items in the whole source (`.response.body.totalCount`,
    /// a number or a numeric string): reported by [`total`](Reader::total) and used
    /// to stop after the last page.
    #[must_use]
    pub fn total_count(mut self, total: Jq) -> Self {
        self.total_jq = Some(total);
        self
    }

    /// Reads through `gateway`'s cache: before calling the upstream for a page, the
    /// reader looks up the key a client's `GET /{route_prefix}{path}?{query}`
    /// would have (see [`CacheTarget::key_for`]; the gateway is one) and uses a
    /// fresh entry found there.
    /// `route_prefix` is what the route's pattern puts before the upstream path
    /// (`air` for `/air/{*rest}`).
    #[must_use]
    pub fn cache(mut self, gateway: impl CacheTarget, route_prefix: &str) -> Self {
        self.cache = Some(CacheThrough {
            gateway: Arc::new(gateway),
            prefix: route_prefix.trim_matches('/').to_owned(),
            store_ttl: None,
        });
        self
    }

    /// With [`cache`](Self::cache): also stores the pages fetched from the
    /// upstream under their keys, fresh for `ttl`, so that clients get them as
    /// hits. Only right when the reader sends exactly what the route would
    /// forward for that key: the route's fixed query parameters, and no parameter
    /// its `key_query` leaves out.
    #[must_use]
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        if let Some(c) = &mut self.cache {
            c.store_ttl = Some(ttl);
        }
        self
    }

    /// The query string of the page at `pos`.
    fn query_for(&self, pos: &Value) -> String {
        let mut params: Vec<(&str, String)> = self
            .query
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        match &self.pagination {
            Pagination::Page {
                param,
                size_param,
                size,
                ..
            }
            | Pagination::Offset {
                param,
                size_param,
                size,
            } => {
                params.push((param, scalar(pos)));
                params.push((size_param, size.to_string()));
            }
            Pagination::Cursor { param, .. } => {
                if !pos.is_null() {
                    params.push((param, scalar(pos)));
                }
            }
        }
        params
            .iter()
            .map(|(n, v)| format!("{}={}", encode_component(n), encode_component(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// How the page at `pos` is named in errors.
    fn label(&self, pos: &Value) -> String {
        match (&self.pagination, pos) {
            (Pagination::Page { .. }, p) => format!("page {p}"),
            (Pagination::Offset { .. }, p) => format!("page at offset {p}"),
            (Pagination::Cursor { .. }, Value::Null) => "first page".to_owned(),
            (Pagination::Cursor { .. }, p) => format!("page at cursor {}", scalar(p)),
        }
    }

    /// The path a client of the gateway would request for `query`.
    fn gateway_path(&self, prefix: &str, query: &str) -> String {
        let path = self.path.trim_start_matches('/');
        let mut p = format!("/{prefix}");
        if !path.is_empty() {
            if !prefix.is_empty() {
                p.push('/');
            }
            p.push_str(path);
        }
        if !query.is_empty() {
            p.push('?');
            p.push_str(query);
        }
        p
    }

    /// Fetches and parses the page at `pos`.
    async fn fetch(&self, pos: &Value) -> Result<Value, ReadError> {
        let label = self.label(pos);
        let query = self.query_for(pos);
        let key = match &self.cache {
            Some(c) => c
                .gateway
                .key_for(&self.gateway_path(&c.prefix, &query))
                .map_err(|e| ReadError::Fatal(format!("{label}: no gateway cache key for it: {e}")))
                .map(Some)?,
            None => None,
        };
        if let (Some(c), Some(key)) = (&self.cache, &key) {
            // A store failure is a miss, as in the gateway.
            if let Ok(Some(e)) = c.gateway.store().get(key).await
                && matches!(e.freshness(c.gateway.now_millis()), Freshness::Fresh { .. })
                && (200..300).contains(&e.status)
            {
                tracing::debug!(key = %key, "page read from the gateway's cache");
                let ct = e
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                    .map(|(_, v)| v.as_ref());
                return parse_json_or_xml(&e.body, ct)
                    .map_err(|e| ReadError::Fatal(format!("{label}: the cached page: {e}")));
            }
        }
        if let Some(left) = self.upstream.quota().remaining_today()
            && left <= self.quota_reserve
        {
            let why = if self.quota_reserve == 0 {
                "has no calls left today".to_owned()
            } else {
                format!(
                    "has {left} calls left today, within the reserve of {} kept for others",
                    self.quota_reserve
                )
            };
            return Err(self.suspended(&label, why));
        }
        let resp = self
            .upstream
            .fetch(Caller::Job, &self.path, &query, &Default::default())
            .await
            .map_err(|e| self.map_error(&label, &e))?;
        if !(200..300).contains(&resp.status) {
            return Err(ReadError::Fatal(format!(
                "{label}: upstream {} answered HTTP {}",
                self.upstream.name(),
                resp.status
            )));
        }
        let ct = resp.headers.get("content-type").map(|v| v.as_bytes());
        let json = parse_json_or_xml(&resp.body, ct).map_err(|e| {
            let ct = ct.map(String::from_utf8_lossy).unwrap_or_default();
            ReadError::Fatal(format!(
                "{label}: {e} (content-type {ct:?}, {} bytes)",
                resp.body.len()
            ))
        })?;
        if let (Some(c), Some(key)) = (&self.cache, &key)
            && let Some(ttl) = c.store_ttl
        {
            let headers = resp
                .headers
                .get("content-type")
                .map(|v| {
                    vec![(
                        "content-type".to_owned(),
                        bytes::Bytes::copy_from_slice(v.as_bytes()),
                    )]
                })
                .unwrap_or_default();
            let entry = Entry::new(
                resp.status,
                headers,
                resp.body.clone(),
                c.gateway.now_millis(),
                ttl,
                Duration::ZERO,
                Duration::ZERO,
            );
            if let Err(e) = c.gateway.store().put(key, Arc::new(entry)).await {
                tracing::warn!(key = %key, error = %e, "could not store a page in the gateway's cache");
            }
        }
        Ok(json)
    }

    fn map_error(&self, label: &str, e: &UpstreamError) -> ReadError {
        let spent = self.upstream.quota().remaining_today() == Some(0);
        if matches!(e.kind, UpstreamErrorKind::QuotaExceeded { .. }) {
            if spent {
                return self.suspended(label, "has spent its daily quota".into());
            }
            // No per-second slot in time: worth another try soon.
            return ReadError::Transient(format!("{label}: quota exceeded: {e}"));
        }
        if e.retryable {
            return ReadError::Transient(format!("{label}: {e}"));
        }
        if matches!(e.kind, UpstreamErrorKind::Rejected { .. }) && spent {
            // The upstream said its own quota is spent (one of its quota codes).
            return self.suspended(label, format!("reports its daily quota spent ({e})"));
        }
        ReadError::Fatal(format!("{label}: {e}"))
    }

    /// Fetches the page at `self.pos` and works out the next one.
    async fn load(&mut self) -> Result<(), ReadError> {
        let pos = self.pos.clone();
        let label = self.label(&pos);
        let json = self.fetch(&pos).await?;
        let mut items = Vec::new();
        let outputs = match &self.items {
            Items::Container(jq) | Items::Each(jq) => jq.run_json(&json),
        }
        .map_err(|e| ReadError::Fatal(format!("{label}: the items filter failed: {e}")))?;
        for v in outputs {
            match &self.items {
                Items::Container(_) => flatten(v, &mut items, true),
                Items::Each(_) if v.is_null() => {}
                Items::Each(_) => items.push(v),
            }
        }
        if let Some(jq) = &self.total_jq {
            let out = jq
                .run_json(&json)
                .map_err(|e| ReadError::Fatal(format!("{label}: the total filter failed: {e}")))?;
            let total = out.first().and_then(|v| match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            });
            // A page without it keeps the one known.
            self.total = total.or(self.total);
        }
        let n = items.len() as u64;
        let next = if n == 0 {
            None
        } else {
            match &self.pagination {
                Pagination::Page { start, size, .. } => {
                    let p = pos.as_u64().unwrap_or(*start);
                    let seen = p.saturating_sub(*start).saturating_mul(*size) + n;
                    self.total.is_none_or(|t| seen < t).then(|| json!(p + 1))
                }
                Pagination::Offset { .. } => {
                    let seen = pos.as_u64().unwrap_or(0) + n;
                    self.total.is_none_or(|t| seen < t).then(|| json!(seen))
                }
                Pagination::Cursor { next, .. } => {
                    let out = next.run_json(&json).map_err(|e| {
                        ReadError::Fatal(format!("{label}: the next-cursor filter failed: {e}"))
                    })?;
                    out.into_iter()
                        .next()
                        .filter(|v| !v.is_null() && v.as_str() != Some(""))
                }
            }
        };
        self.loaded = Some(Loaded { items, next });
        Ok(())
    }
}

/// A query value from a JSON scalar.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Adds the items of a container to `out` (see [`HttpPagesReader`]).
fn flatten(v: Value, out: &mut Vec<Value>, top: bool) {
    match v {
        Value::Array(a) => out.extend(a),
        Value::Null => {}
        Value::String(s) if s.is_empty() => {}
        Value::Object(mut m) if top && m.len() == 1 && m.contains_key("item") => {
            if let Some(inner) = m.remove("item") {
                flatten(inner, out, false);
            }
        }
        other => out.push(other),
    }
}

#[async_trait]
impl Reader for HttpPagesReader {
    async fn open(&mut self, checkpoint: Option<&Value>) -> Result<(), ReadError> {
        self.loaded = None;
        self.done = false;
        let Some(cp) = checkpoint.filter(|c| !c.is_null()) else {
            self.pos = self.pagination.first();
            self.index = 0;
            self.position = 0;
            return Ok(());
        };
        let bad = || ReadError::Fatal(format!("checkpoint {cp} does not fit this HTTP reader"));
        let page = cp.get("page").ok_or_else(bad)?;
        let index = cp
            .get("index")
            .and_then(Value::as_u64)
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(bad)?;
        let computed = match &self.pagination {
            Pagination::Page { start, size, .. } => {
                let p = page.as_u64().filter(|p| p >= start).ok_or_else(bad)?;
                Some((p - start) * size + index as u64)
            }
            Pagination::Offset { .. } => Some(page.as_u64().ok_or_else(bad)? + index as u64),
            Pagination::Cursor { .. } => None,
        };
        self.pos = page.clone();
        self.index = index;
        self.position = cp
            .get("position")
            .and_then(Value::as_u64)
            .or(computed)
            .unwrap_or(0);
        Ok(())
    }

    async fn read(&mut self) -> Result<Option<ReadItem>, ReadError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let Some(loaded) = &mut self.loaded else {
                self.load().await?;
                continue;
            };
            if let Some(slot) = loaded.items.get_mut(self.index) {
                let item = std::mem::take(slot);
                self.index += 1;
                self.position += 1;
                return Ok(Some(ReadItem {
                    item,
                    position: self.position,
                }));
            }
            match loaded.next.take() {
                None => {
                    // Keep the index within the page (a resumed page may have shrunk).
                    self.index = self.index.min(loaded.items.len());
                    self.done = true;
                }
                Some(next) => {
                    self.pos = next;
                    self.index = 0;
                    self.loaded = None;
                }
            }
        }
    }

    fn checkpoint(&self) -> Value {
        // A page read to its end checkpoints as the next page's start, so that
        // resuming there (after a suspension for quota, say) fetches no page twice.
        if let Some(Loaded {
            items,
            next: Some(next),
        }) = &self.loaded
            && self.index >= items.len()
        {
            return json!({"page": next, "index": 0, "position": self.position});
        }
        json!({"page": self.pos, "index": self.index, "position": self.position})
    }

    fn total(&self) -> Option<u64> {
        self.total
    }

    fn extent(&self) -> Option<crate::api::Extent> {
        self.total.map(|total| crate::api::Extent {
            done: self.position.min(total),
            total,
            unit: crate::api::ExtentUnit::Items,
        })
    }
}
