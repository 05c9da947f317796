//! `[[upstream]]`: the APIs sluice calls, checked into [`Upstream`] clients.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;
use sluice_core::{LocalQuota, Quota, Redis, RedisQuota, Secret};
use sluice_upstream::preset::PRESET_NAMES;
use sluice_upstream::{CodeAction, CodeRule, OkWhen, Preset, RetryPolicy, Upstream, UpstreamSpec};

use super::values::{Dur, RawRetry, RawSecret, Size, read_secret};
use super::{ConfigError, Env, Source, span};

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
    /// Base URL (`http` or `https`); route paths are appended to its path. No
    /// query, no credentials.
    pub base_url: Spanned<String>,
    /// Query parameters injected into every call, e.g.
    /// `{ serviceKey = { env = "AIRKOREA_KEY" } }`. Store the raw ("Decoding") key:
    /// sluice percent-encodes it exactly once (`+`→`%2B`, `/`→`%2F`, `=`→`%3D`).
    /// Clients cannot set or override these parameters.
    #[serde(default)]
    pub secret_query: BTreeMap<String, RawSecret>,
    /// Headers injected into every call, e.g. `{ "X-Api-Key" = { env = "K" } }`.
    #[serde(default)]
    pub secret_headers: BTreeMap<String, RawSecret>,
    /// Per-attempt timeout (connect, send, whole body). Default `5s`.
    pub timeout: Option<Dur>,
    /// Retries of a GET on connect errors, timeouts, 5xx and `retry_codes`.
    /// Default `{ max = 2, backoff = "200ms", max_backoff = "5s" }`.
    pub retries: Option<RawRetry>,
    /// Maximum concurrent calls. Default 8.
    pub concurrency: Option<usize>,
    /// Rate limit and daily quota: the daily quota resets at midnight in its
    /// `timezone`; callers wait up to `timeout` for a per-second slot, then get
    /// `429`.
    pub rate_limit: Option<RawRateLimit>,
    /// jq predicate over the body (JSON, or XML converted to JSON); a 2xx answer
    /// that fails it (its first output is not truthy) is an upstream error and is
    /// not cached.
    pub ok_when: Option<Spanned<String>>,
    /// Upstream error codes (found in a rejected body) that are retried, e.g.
    /// `["01", "02", "04", "05", "99"]` for the data portal.
    #[serde(default)]
    pub retry_codes: Vec<String>,
    /// Upstream error codes that mean the upstream's own daily quota is spent
    /// (`["22"]` for the data portal): the local budget is then spent until reset.
    #[serde(default)]
    pub quota_codes: Vec<String>,
    /// Largest upstream body read; a larger one is a `502`. Default `32MiB`.
    pub max_response: Option<Size>,
    /// A portal family's defaults: `"data.go.kr"` sets the result-code table
    /// (`00` ok, `03` empty, `01 02 04 05 99` retried, `22` the daily quota
    /// spent, the rest failures named with their meaning), the `ok_when` derived
    /// from it, the quota's zone `Asia/Seoul`, body normalisation (XML → JSON,
    /// `response.body.items` always a list, `numOfRows`/`pageNo`/`totalCount`
    /// numbers) and the `http_pages` reader's paging (`pageNo`, `numOfRows`,
    /// items and total). Keys written beside it (`ok_when`, `retry_codes`,
    /// `quota_codes`, `rate_limit.timezone`) win over the preset's.
    pub preset: Option<Spanned<String>>,
    /// With a `preset`: changes to its result-code table, code → `ok`, `empty`,
    /// `retry`, `quota` or `fail`, e.g. `{ "03" = "fail" }`.
    #[serde(default)]
    pub codes: BTreeMap<String, Spanned<String>>,
    /// With a `preset`: normalise successful bodies (see `preset`). Default
    /// `true`; `false` passes bodies as the upstream sent them.
    pub normalize: Option<bool>,
}

/// Secret query parameters, read: name and value.
type SecretQuery = Vec<(String, Secret)>;
/// Secret headers, read: name and value.
type SecretHeaders = Vec<(http::HeaderName, Secret)>;

impl RawUpstream {
    /// Checks upstream number `i` and builds its client; `taken` when an
    /// earlier upstream has its name. Quotas are counted in `quota_redis` when
    /// given (shared quotas), else in this process.
    pub(super) fn check(
        &self,
        i: usize,
        taken: bool,
        quota_redis: Option<Arc<Redis>>,
        src: &Source,
        env: &Env<'_>,
        errs: &mut Vec<ConfigError>,
    ) -> Option<Arc<Upstream>> {
        let at = |k: &str| format!("upstream[{i}].{k}");
        let u = self;
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
        if taken {
            errs.push(src.err(
                span(&u.name),
                at("name"),
                format!("upstream {name:?} is defined twice"),
            ));
        }
        let base_url = self.base_url(&at, src, errs);
        let (secret_query, secret_headers) = self.secrets(&at, src, env, errs);
        let preset = self.preset(&at, src, errs);
        let ok_when = match (&u.ok_when, &preset) {
            (Some(p), _) => match OkWhen::compile(p.get_ref()) {
                Ok(o) => Some(o),
                Err(e) => {
                    errs.push(src.err(span(p), at("ok_when"), e.to_string()));
                    None
                }
            },
            (None, Some(p)) => match OkWhen::compile(&p.ok_when) {
                Ok(o) => Some(o),
                Err(e) => {
                    errs.push(src.err(span(&u.name), at("preset"), e.to_string()));
                    None
                }
            },
            (None, None) => None,
        };
        let (per_second, per_day, mut tz) = match &u.rate_limit {
            Some(r) => r.check(&at, src, errs),
            None => (None, None, chrono_tz::UTC),
        };
        let own_tz = u.rate_limit.as_ref().is_some_and(|r| r.timezone.is_some());
        if let Some(p) = &preset
            && !own_tz
        {
            tz = p.preset.timezone().parse().unwrap_or(chrono_tz::UTC);
        }
        let pick = |own: &Vec<String>, derived: Option<&Vec<String>>| match derived {
            Some(d) if own.is_empty() => d.clone(),
            _ => own.clone(),
        };
        let retry_codes = pick(&u.retry_codes, preset.as_ref().map(|p| &p.retry));
        let quota_codes = pick(&u.quota_codes, preset.as_ref().map(|p| &p.quota));
        let retries = u
            .retries
            .as_ref()
            .map(|r| {
                let (max, backoff, max_backoff) =
                    r.or((2, Duration::from_millis(200), Duration::from_secs(5)));
                RetryPolicy {
                    max,
                    backoff,
                    max_backoff,
                }
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
                    match quota_redis {
                        Some(r) => Arc::new(RedisQuota::new(r, &name, local)) as Arc<dyn Quota>,
                        None => Arc::new(local),
                    }
                },
                ok_when,
                retry_codes,
                quota_codes,
                max_response_bytes: u.max_response.map(|s| s.0 as usize).unwrap_or(32 << 20),
                normalize: u.normalize.unwrap_or(true),
                code_meanings: preset
                    .as_ref()
                    .map(|p| {
                        p.codes
                            .iter()
                            .map(|(c, r)| (c.clone(), r.meaning.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
                preset: preset.map(|p| p.preset),
            };
            match Upstream::new(spec) {
                Ok(up) => return Some(Arc::new(up)),
                Err(e) => errs.push(src.err(span(&u.name), at("name"), e.to_string())),
            }
        }
        None
    }
    /// The base URL, when it is an `http(s)://` URL with a host.
    fn base_url(
        &self,
        at: &dyn Fn(&str) -> String,
        src: &Source,
        errs: &mut Vec<ConfigError>,
    ) -> Option<reqwest::Url> {
        match reqwest::Url::parse(self.base_url.get_ref()) {
            Ok(url)
                if (url.scheme() == "http" || url.scheme() == "https")
                    && url.host_str().is_some() =>
            {
                if url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
                    errs.push(src.err(span(&self.base_url), at("base_url"), "base_url must not carry a query or credentials; use secret_query / secret_headers"));
                }
                Some(url)
            }
            Ok(_) => {
                errs.push(src.err(
                    span(&self.base_url),
                    at("base_url"),
                    "base_url must be an http:// or https:// URL with a host",
                ));
                None
            }
            Err(e) => {
                errs.push(src.err(
                    span(&self.base_url),
                    at("base_url"),
                    format!("invalid URL: {e}"),
                ));
                None
            }
        }
    }

    /// The secret query parameters and headers, read.
    fn secrets(
        &self,
        at: &dyn Fn(&str) -> String,
        src: &Source,
        env: &Env<'_>,
        errs: &mut Vec<ConfigError>,
    ) -> (SecretQuery, SecretHeaders) {
        let mut secret_query = Vec::new();
        for (k, s) in &self.secret_query {
            if let Some(v) = read_secret(s, src, env, &at(&format!("secret_query.{k}")), errs) {
                secret_query.push((k.clone(), v));
            }
        }
        let mut secret_headers = Vec::new();
        for (k, s) in &self.secret_headers {
            match http::HeaderName::from_bytes(k.as_bytes()) {
                Ok(h) => {
                    if let Some(v) =
                        read_secret(s, src, env, &at(&format!("secret_headers.{k}")), errs)
                    {
                        secret_headers.push((h, v));
                    }
                }
                Err(_) => errs.push(src.err(
                    None,
                    at(&format!("secret_headers.{k}")),
                    format!("{k:?} is not a valid header name"),
                )),
            }
        }
        (secret_query, secret_headers)
    }
}

/// A preset with its code table as changed by `codes`, and what follows from it.
struct CheckedPreset {
    preset: Preset,
    codes: BTreeMap<String, CodeRule>,
    ok_when: String,
    retry: Vec<String>,
    quota: Vec<String>,
}

impl RawUpstream {
    /// The `preset`, its code table changed by `codes`.
    fn preset(
        &self,
        at: &dyn Fn(&str) -> String,
        src: &Source,
        errs: &mut Vec<ConfigError>,
    ) -> Option<CheckedPreset> {
        let Some(name) = &self.preset else {
            if let Some((code, v)) = self.codes.iter().next() {
                errs.push(src.err(
                    span(v),
                    at(&format!("codes.{code}")),
                    "`codes` changes a preset's code table: set `preset` too, or use \
                     `ok_when`, `retry_codes` and `quota_codes`",
                ));
            }
            if self.normalize.is_some() {
                errs.push(src.err(
                    None,
                    at("normalize"),
                    "`normalize` is the preset's body normalisation: set `preset` too",
                ));
            }
            return None;
        };
        let Some(preset) = Preset::parse(name.get_ref()) else {
            errs.push(src.err(
                span(name),
                at("preset"),
                format!(
                    "unknown preset {:?}; known: {}",
                    name.get_ref(),
                    PRESET_NAMES.join(", ")
                ),
            ));
            return None;
        };
        let mut codes = preset.codes();
        for (code, v) in &self.codes {
            match CodeAction::parse(v.get_ref()) {
                Some(action) => {
                    codes
                        .entry(code.clone())
                        .and_modify(|r| r.action = action)
                        .or_insert_with(|| CodeRule {
                            action,
                            meaning: format!("code {code}"),
                        });
                }
                None => errs.push(src.err(
                    span(v),
                    at(&format!("codes.{code}")),
                    format!(
                        "unknown action {:?}; use ok, empty, retry, quota or fail",
                        v.get_ref()
                    ),
                )),
            }
        }
        let with = |a: CodeAction| -> Vec<String> {
            codes
                .iter()
                .filter(|(_, r)| r.action == a)
                .map(|(c, _)| c.clone())
                .collect()
        };
        Some(CheckedPreset {
            preset,
            ok_when: preset.ok_when(&codes),
            retry: with(CodeAction::Retry),
            quota: with(CodeAction::Quota),
            codes,
        })
    }
}

impl RawRateLimit {
    /// Per-second and daily limits (`None`: unlimited) and the quota's zone.
    fn check(
        &self,
        at: &dyn Fn(&str) -> String,
        src: &Source,
        errs: &mut Vec<ConfigError>,
    ) -> (Option<NonZeroU32>, Option<u64>, chrono_tz::Tz) {
        let tz = match &self.timezone {
            Some(t) => t.get_ref().parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
                errs.push(src.err(
                    span(t),
                    at("rate_limit.timezone"),
                    format!(
                        "unknown time zone {:?}; use an IANA name like \"Asia/Seoul\" or \"UTC\"",
                        t.get_ref()
                    ),
                ));
                chrono_tz::UTC
            }),
            None => chrono_tz::UTC,
        };
        if self.per_second == Some(0) || self.per_day == Some(0) {
            errs.push(src.err(
                None,
                at("rate_limit"),
                "limits must be greater than zero (leave a limit out to disable it)",
            ));
        }
        (
            self.per_second.and_then(NonZeroU32::new),
            self.per_day.filter(|d| *d > 0),
            tz,
        )
    }
}

/// Checks every upstream, `at[n]` being the position in the file of the `n`th
/// (the ones that did not parse are left out), and builds their clients by name.
pub(super) fn check_upstreams(
    upstreams: &[RawUpstream],
    at: &[usize],
    quota_redis: Option<&Arc<Redis>>,
    src: &Source,
    env: &Env<'_>,
    errs: &mut Vec<ConfigError>,
) -> BTreeMap<String, Arc<Upstream>> {
    let mut out = BTreeMap::new();
    for (n, u) in upstreams.iter().enumerate() {
        let i = at.get(n).copied().unwrap_or(n);
        let taken = out.contains_key(u.name.get_ref());
        if let Some(up) = u.check(i, taken, quota_redis.cloned(), src, env, errs) {
            out.insert(u.name.get_ref().clone(), up);
        }
    }
    out
}
