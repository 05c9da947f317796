//! Calling an upstream: URL building with secret injection, budget, concurrency
//! cap, timeout, retries with exponential backoff and full jitter, `ok_when`.
//!
//! The upstream's origin (scheme, host, port) comes only from configuration. A
//! request contributes a canonical path suffix and canonical query parameters (the
//! gateway's canonical form, or a batch job's own); the finished URL is checked against the configured origin before
//! any byte is sent. Redirects are not followed, so an upstream cannot send sluice
//! elsewhere either.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Url;
use sluice_core::{Quota, QuotaExceeded, Scrubber, Secret};
use tokio::sync::Semaphore;

use crate::body::excerpt;
use crate::encode::encode_component;
use crate::error::{UpstreamError, UpstreamErrorKind as Kind};
use crate::metrics::UpstreamMetrics;
use crate::ok_when::OkWhen;
use crate::preset::Preset;
use crate::stats::{Caller, Recorder, UpstreamStats};

/// Longest hold-off an upstream's `Retry-After` can impose.
const MAX_HOLD: Duration = Duration::from_secs(3600);
/// Hold-off after a 429 without a usable `Retry-After`.
const DEFAULT_HOLD: Duration = Duration::from_secs(1);

/// Retry settings: `max` extra attempts, exponential backoff from `backoff` capped at
/// `max_backoff`, full jitter (each wait is uniform in `[0, cap]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max: u32,
    /// Base backoff.
    pub backoff: Duration,
    /// Longest single wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max: 2,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based), full jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        sluice_core::full_jitter(self.backoff, self.max_backoff, attempt)
    }
}

/// Installs the process-wide TLS crypto provider (ring) used for `https://`
/// upstreams, unless one is installed already. Called by [`Upstream::new`].
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Everything needed to build an [`Upstream`].
#[derive(Debug)]
pub struct UpstreamSpec {
    /// Name used in routes, metrics and errors.
    pub name: String,
    /// Base URL; route paths are appended to its path.
    pub base_url: Url,
    /// Query parameters injected into every call (e.g. `serviceKey`), raw values.
    pub secret_query: Vec<(String, Secret)>,
    /// Headers injected into every call.
    pub secret_headers: Vec<(HeaderName, Secret)>,
    /// Per-attempt timeout (connect, send and read the whole body).
    pub timeout: Duration,
    /// Retry policy.
    pub retries: RetryPolicy,
    /// Maximum concurrent calls.
    pub concurrency: usize,
    /// Call budget.
    pub quota: Arc<dyn Quota>,
    /// Success predicate over 2xx bodies.
    pub ok_when: Option<OkWhen>,
    /// Upstream error codes (found in a rejected body) worth retrying.
    pub retry_codes: Vec<String>,
    /// Upstream error codes meaning the upstream's own quota is spent.
    pub quota_codes: Vec<String>,
    /// Largest response body read; larger answers are an error.
    pub max_response_bytes: usize,
    /// The portal family's defaults this upstream was configured with, if any.
    pub preset: Option<Preset>,
    /// Normalise successful bodies the preset's way ([`Preset::normalize`]):
    /// XML to JSON, item lists made lists.
    pub normalize: bool,
    /// What each upstream error code means, added to the error of a rejected
    /// body that carries it.
    pub code_meanings: BTreeMap<String, String>,
}

/// A configured upstream, ready to call.
#[derive(Debug)]
pub struct Upstream {
    name: Arc<str>,
    base: Url,
    base_path: String,
    secret_query: Vec<(String, Secret)>,
    secret_headers: Vec<(HeaderName, Secret)>,
    timeout: Duration,
    retries: RetryPolicy,
    permits: Semaphore,
    quota: Arc<dyn Quota>,
    ok_when: Option<OkWhen>,
    retry_codes: Vec<String>,
    quota_codes: Vec<String>,
    max_response_bytes: usize,
    preset: Option<Preset>,
    normalize: bool,
    code_meanings: BTreeMap<String, String>,
    client: reqwest::Client,
    metrics: UpstreamMetrics,
    recorder: Recorder,
    scrubber: Scrubber,
    /// No call before this instant: the upstream answered 429.
    hold_until: std::sync::Mutex<Option<Instant>>,
}

/// A successful (non-5xx, `ok_when`-approved) upstream answer.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// Whole body.
    pub body: Bytes,
}

impl Upstream {
    /// Builds the upstream and its HTTP client.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built (TLS setup).
    pub fn new(spec: UpstreamSpec) -> Result<Self, UpstreamError> {
        init_tls();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(spec.timeout)
            .connect_timeout(spec.timeout)
            .pool_max_idle_per_host(spec.concurrency.max(1))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| {
                UpstreamError::new(Kind::Internal, format!("building HTTP client: {e}"))
            })?;
        let base_path = spec.base_url.path().trim_end_matches('/').to_owned();
        let scrubber = Scrubber::new(
            spec.secret_query
                .iter()
                .map(|(_, s)| s.expose())
                .chain(spec.secret_headers.iter().map(|(_, s)| s.expose())),
        );
        let name: Arc<str> = Arc::from(spec.name.as_str());
        Ok(Self {
            metrics: UpstreamMetrics::new(&name),
            recorder: Recorder::default(),
            name,
            base: spec.base_url,
            base_path,
            secret_query: spec.secret_query,
            secret_headers: spec.secret_headers,
            timeout: spec.timeout,
            retries: spec.retries,
            permits: Semaphore::new(spec.concurrency.max(1)),
            quota: spec.quota,
            ok_when: spec.ok_when,
            retry_codes: spec.retry_codes,
            quota_codes: spec.quota_codes,
            max_response_bytes: spec.max_response_bytes,
            preset: spec.preset,
            normalize: spec.normalize && spec.preset.is_some(),
            code_meanings: spec.code_meanings,
            client,
            scrubber,
            hold_until: std::sync::Mutex::new(None),
        })
    }

    /// The preset it was configured with, if any.
    pub fn preset(&self) -> Option<Preset> {
        self.preset
    }

    /// The upstream's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The budget this upstream spends from.
    pub fn quota(&self) -> &Arc<dyn Quota> {
        &self.quota
    }

    /// Calls, errors and recent latency, with the budget's state.
    pub fn stats(&self) -> UpstreamStats {
        self.recorder.stats(self.quota.snapshot())
    }

    /// Refreshes the `quota_remaining` gauge.
    pub fn report_quota(&self) {
        if let Some(r) = self.quota.remaining_today() {
            self.metrics.quota_remaining.set(r as f64);
        }
    }

    /// Builds the upstream URL for a canonical path suffix and canonical query.
    /// The result never leaves the configured origin.
    ///
    /// # Errors
    ///
    /// A client error if the URL would leave the origin (defence in depth; canonical
    /// input cannot cause it).
    pub fn url_for(&self, suffix: &str, query: &str) -> Result<Url, UpstreamError> {
        let mut url = self.base.clone();
        let mut path = String::with_capacity(self.base_path.len() + suffix.len() + 1);
        path.push_str(&self.base_path);
        if !suffix.is_empty() {
            if !suffix.starts_with('/') {
                path.push('/');
            }
            path.push_str(suffix);
        }
        if path.is_empty() {
            path.push('/');
        }
        url.set_path(&path);
        let mut q = String::from(query);
        for (name, value) in &self.secret_query {
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str(&encode_component(name));
            q.push('=');
            q.push_str(&encode_component(value.expose()));
        }
        url.set_query(if q.is_empty() { None } else { Some(&q) });
        if url.scheme() != self.base.scheme()
            || url.host_str() != self.base.host_str()
            || url.port_or_known_default() != self.base.port_or_known_default()
            || !url.username().is_empty()
        {
            return Err(UpstreamError::new(
                Kind::LeavesOrigin,
                "the request would leave the route's upstream",
            ));
        }
        Ok(url)
    }

    /// Calls the upstream with GET, retrying transient failures, and checks the
    /// answer with `ok_when`.
    ///
    /// # Errors
    ///
    /// The last attempt's error; quota refusals are not retried.
    pub async fn fetch(
        &self,
        caller: Caller,
        suffix: &str,
        query: &str,
        forward_headers: &HeaderMap,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let url = self.url_for(suffix, query)?;
        let mut attempt = 0;
        loop {
            let res = self.attempt(caller, &url, forward_headers).await;
            match res {
                Ok(r) => return Ok(r),
                Err(e) if e.retryable && attempt < self.retries.max => {
                    let wait = self.retries.delay(attempt);
                    tracing::info!(
                        upstream = %self.name, attempt = attempt + 1, error = %e,
                        wait_ms = wait.as_millis() as u64, "retrying upstream call"
                    );
                    self.metrics.retries.increment(1);
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn quota_error(&self, q: QuotaExceeded) -> UpstreamError {
        self.metrics.quota_exceeded.increment(1);
        UpstreamError::new(
            Kind::QuotaExceeded {
                retry_after: q.retry_after(),
            },
            q.to_string(),
        )
        .upstream(&self.name)
        .retryable(false)
    }

    /// The rest of a 429 hold-off, if one is running.
    fn held(&self) -> Option<Duration> {
        let mut h = self.hold_until.lock().unwrap_or_else(|e| e.into_inner());
        match *h {
            Some(until) => {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    *h = None;
                    None
                } else {
                    Some(left)
                }
            }
            None => None,
        }
    }

    fn hold(&self, d: Duration) {
        let until = Instant::now() + d.min(MAX_HOLD);
        let mut h = self.hold_until.lock().unwrap_or_else(|e| e.into_inner());
        if h.is_none_or(|t| t < until) {
            *h = Some(until);
        }
    }

    async fn attempt(
        &self,
        caller: Caller,
        url: &Url,
        forward_headers: &HeaderMap,
    ) -> Result<UpstreamResponse, UpstreamError> {
        if let Some(left) = self.held() {
            // The upstream asked us to wait: no call, no budget spent.
            return Err(UpstreamError::new(
                Kind::Throttled {
                    retry_after: Some(left),
                },
                format!(
                    "upstream {} asked to wait after a 429; {} ms left",
                    self.name,
                    left.as_millis()
                ),
            )
            .upstream(&self.name));
        }
        self.quota
            .acquire(self.timeout)
            .await
            .map_err(|q| self.quota_error(q))?;
        self.report_quota();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| UpstreamError::new(Kind::Internal, "upstream closed"))?;
        let started = Instant::now();
        // Everything built from the upstream's answer is scrubbed here, before it
        // is logged, cached or shown.
        let out = self
            .send(url, forward_headers)
            .await
            .map_err(|e| e.scrub(&self.scrubber));
        let result = match &out {
            Ok(_) => "ok",
            Err(e) => match e.kind {
                Kind::Timeout => "timeout",
                Kind::Connect => "connect_error",
                Kind::Status(_) => "http_error",
                Kind::Rejected { .. } => "rejected",
                Kind::Throttled { .. } => "throttled",
                Kind::QuotaExceeded { .. } => "quota_exceeded",
                _ => "bad_body",
            },
        };
        self.metrics.record(caller, result, started.elapsed());
        self.recorder
            .record(caller, result == "ok", started.elapsed());
        match &out {
            Ok(r) => tracing::debug!(upstream = %self.name, status = r.status,
                elapsed_ms = started.elapsed().as_millis() as u64, "upstream answered"),
            Err(e) => tracing::warn!(upstream = %self.name, error = %e,
                elapsed_ms = started.elapsed().as_millis() as u64, "upstream call failed"),
        }
        out
    }

    async fn send(
        &self,
        url: &Url,
        forward_headers: &HeaderMap,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let mut req = self.client.get(url.clone());
        for (k, v) in forward_headers {
            req = req.header(k, v);
        }
        for (k, v) in &self.secret_headers {
            if let Ok(hv) = HeaderValue::from_str(v.expose()) {
                let mut hv = hv;
                hv.set_sensitive(true);
                req = req.header(k, hv);
            }
        }
        let mut resp = req.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let mut headers = std::mem::take(resp.headers_mut());
        if let Some(len) = resp.content_length()
            && len as usize > self.max_response_bytes
        {
            return Err(self.body_too_large());
        }
        let encoded = self.check_encoding(&headers, forward_headers)?;
        let mut body = BytesMut::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if body.len() + c.len() > self.max_response_bytes {
                        return Err(self.body_too_large());
                    }
                    body.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => return Err(self.transport_error(e)),
            }
        }
        let mut body = body.freeze();
        self.scrub_headers(&mut headers);
        if !encoded && let std::borrow::Cow::Owned(b) = self.scrubber.scrub_bytes(&body) {
            body = Bytes::from(b);
        }
        if status == 429 {
            let retry_after = headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| parse_retry_after(v.as_bytes()));
            self.hold(retry_after.unwrap_or(DEFAULT_HOLD));
            return Err(UpstreamError::new(
                Kind::Throttled {
                    retry_after: retry_after.map(|d| d.min(MAX_HOLD)),
                },
                format!("upstream {} answered HTTP 429", self.name),
            )
            .upstream(&self.name));
        }
        if status >= 500 {
            return Err(UpstreamError::new(
                Kind::Status(status),
                format!("upstream {} answered HTTP {status}", self.name),
            )
            .upstream(&self.name));
        }
        if (200..300).contains(&status)
            && let Some(ok) = &self.ok_when
            && let Err(rej) = ok.check_typed(
                &body,
                headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| v.as_bytes()),
            )
        {
            let retryable = rej
                .code
                .as_ref()
                .is_some_and(|c| self.retry_codes.contains(c));
            if rej
                .code
                .as_ref()
                .is_some_and(|c| self.quota_codes.contains(c))
            {
                self.quota.exhaust_today();
                self.report_quota();
            }
            let ctx = match rej.code.as_ref().and_then(|c| self.code_meanings.get(c)) {
                Some(m) => format!("ok_when rejected the body: {} ({m})", rej.reason),
                None => format!("ok_when rejected the body: {}", rej.reason),
            };
            return Err(UpstreamError::new(
                Kind::Rejected {
                    code: rej.code,
                    message: rej.message,
                    reason: rej.reason,
                },
                ctx,
            )
            .upstream(&self.name)
            .retryable(retryable));
        }
        if self.normalize
            && (200..300).contains(&status)
            && let Some(preset) = self.preset
        {
            return self.normalized(preset, status, headers, &body);
        }
        Ok(UpstreamResponse {
            status,
            headers,
            body,
        })
    }

    /// A successful answer normalised the preset's way: JSON, one shape.
    fn normalized(
        &self,
        preset: Preset,
        status: u16,
        mut headers: HeaderMap,
        body: &Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let ct = headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes());
        let mut json = crate::parse_json_or_xml(body, ct).map_err(|e| {
            UpstreamError::new(
                Kind::Rejected {
                    code: None,
                    message: None,
                    reason: e.to_string(),
                },
                format!("normalising the body ({preset} preset): {e}"),
            )
            .upstream(&self.name)
        })?;
        preset.normalize(&mut json);
        let body = Bytes::from(serde_json::to_vec(&json).unwrap_or_default());
        headers.remove(http::header::CONTENT_LENGTH);
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json;charset=UTF-8"),
        );
        Ok(UpstreamResponse {
            status,
            headers,
            body,
        })
    }

    /// Whether the body is content-encoded. sluice sends no `Accept-Encoding` of
    /// its own, so an encoding is legitimate only when the route forwarded the
    /// client's `Accept-Encoding` naming it, and even then `ok_when` cannot read it.
    fn check_encoding(
        &self,
        headers: &HeaderMap,
        forward: &HeaderMap,
    ) -> Result<bool, UpstreamError> {
        let mut encodings = Vec::new();
        for v in headers.get_all(http::header::CONTENT_ENCODING) {
            let text = String::from_utf8_lossy(v.as_bytes()).to_ascii_lowercase();
            encodings.extend(
                text.split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty() && *e != "identity")
                    .map(str::to_owned),
            );
        }
        if encodings.is_empty() {
            return Ok(false);
        }
        let accepted = |enc: &str| {
            forward
                .get_all(http::header::ACCEPT_ENCODING)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|t| {
                    let mut parts = t.split(';');
                    let name = parts.next()?.trim().to_ascii_lowercase();
                    let q_zero = parts.any(|p| {
                        p.trim()
                            .strip_prefix("q=")
                            .and_then(|q| q.trim().parse::<f32>().ok())
                            == Some(0.0)
                    });
                    (!q_zero).then_some(name)
                })
                .any(|n| n == enc || n == "*")
        };
        let shown = excerpt(&encodings.join(", "), 40);
        let fail = |msg: String| {
            Err(UpstreamError::new(Kind::Body, msg)
                .upstream(&self.name)
                .retryable(false))
        };
        if !encodings.iter().all(|e| accepted(e)) {
            return fail(format!(
                "upstream {} answered Content-Encoding: {shown}, which was not asked for \
                 (sluice sends no Accept-Encoding unless a route varies on it and the client sent one); \
                 the body is refused rather than passed on or judged",
                self.name
            ));
        }
        if self.ok_when.is_some() {
            return fail(format!(
                "upstream {} answered Content-Encoding: {shown}; ok_when cannot judge an encoded body \
                 (remove accept-encoding from the route's vary)",
                self.name
            ));
        }
        Ok(true)
    }

    /// Replaces every secret form in every response header; a header that no
    /// longer parses is dropped.
    fn scrub_headers(&self, headers: &mut HeaderMap) {
        if self.scrubber.is_empty()
            || !headers
                .values()
                .any(|v| self.scrubber.contains(v.as_bytes()))
        {
            return;
        }
        let old = std::mem::take(headers);
        let mut name = None;
        for (n, v) in old {
            if let Some(n) = n {
                name = Some(n);
            }
            let Some(n) = name.clone() else { continue };
            match self.scrubber.scrub_bytes(v.as_bytes()) {
                std::borrow::Cow::Borrowed(_) => {
                    headers.append(n, v);
                }
                std::borrow::Cow::Owned(b) => {
                    if let Ok(v) = HeaderValue::from_bytes(&b) {
                        headers.append(n, v);
                    }
                }
            }
        }
    }

    fn body_too_large(&self) -> UpstreamError {
        UpstreamError::new(
            Kind::Body,
            format!(
                "upstream {} answered more than {} bytes",
                self.name, self.max_response_bytes
            ),
        )
        .upstream(&self.name)
        .retryable(false)
    }

    fn transport_error(&self, e: reqwest::Error) -> UpstreamError {
        // `without_url`: the URL carries the injected secret.
        let e = e.without_url();
        let kind = if e.is_timeout() {
            Kind::Timeout
        } else if e.is_connect() {
            Kind::Connect
        } else {
            Kind::Body
        };
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        self.scrubber.scrub_string(&mut msg);
        UpstreamError::new(kind, format!("upstream {}: {msg}", self.name)).upstream(&self.name)
    }
}

impl Upstream {
    /// Names of the injected query parameters (clients may not set them).
    pub fn secret_query_names(&self) -> impl Iterator<Item = &str> {
        self.secret_query.iter().map(|(n, _)| n.as_str())
    }

    /// Names of the injected headers (routes may not vary on them).
    pub fn secret_header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.secret_headers.iter().map(|(n, _)| n)
    }

    /// The scrubber for this upstream's secrets.
    pub fn scrubber(&self) -> &Scrubber {
        &self.scrubber
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
fn parse_retry_after(v: &[u8]) -> Option<Duration> {
    let s = std::str::from_utf8(v).ok()?.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after(b" 7 "), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(httpdate::fmt_http_date(later).as_bytes()).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after(b"Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(b"soon"), None);
    }
}
