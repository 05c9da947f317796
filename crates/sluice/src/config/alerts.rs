//! `[alerts]`: rules over the facts sluice already keeps (job runs, the
//! schedule, the queue, the upstreams) and where their notifications go.
//!
//! ```toml
//! [alerts]
//! interval = "15s"                      # how often every node evaluates the rules
//! external_url = "https://sluice.example.org"
//!
//! [[alerts.rule]]
//! name = "load-failed"
//! when = "job_failed"                   # see `RULE_KINDS`
//! job = "load"
//! severity = "critical"
//! send_to = ["ops", "mail"]
//!
//! [[alerts.webhook]]
//! name = "ops"
//! url = "https://alertmanager.example.org/api/v2/alerts"
//! secret = { env = "SLUICE_ALERT_HMAC" }
//!
//! [[alerts.email]]
//! name = "mail"
//! smtp = "smtp://127.0.0.1:25"
//! from = "sluice@example.org"
//! to = ["ops@example.org"]
//! ```
//!
//! Which keys a rule takes depends on its `when` (see `docs/specs/alerts.md`); a
//! key that does not apply to it, a threshold it lacks, a receiver or job or
//! upstream that is not defined are errors at their place in the file.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;
use sluice_core::Secret;

use super::values::{Dur, RawSecret, read_secret};
use super::{ConfigError, Env, Source, span};

/// The conditions a rule can watch, as written in `when`.
pub const RULE_KINDS: [&str; 8] = [
    "job_failed",
    "job_late",
    "no_success",
    "quota_low",
    "upstream_errors",
    "dead_letters",
    "worker_gone",
    "query",
];

/// `[alerts]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// How often each node evaluates the rules. Default `15s`.
    pub interval: Option<Spanned<Dur>>,
    /// Base URL of this sluice as operators reach it, sent as the
    /// Alertmanager `externalURL` and in each alert's `generatorURL`.
    /// Default `http://` + `[server] listen`.
    pub external_url: Option<Spanned<String>>,
    /// The rules (`[[alerts.rule]]`).
    #[serde(default)]
    pub rule: Vec<RawRule>,
    /// Webhook receivers (`[[alerts.webhook]]`), sent the Alertmanager webhook
    /// format (version 4).
    #[serde(default)]
    pub webhook: Vec<RawWebhook>,
    /// E-mail receivers (`[[alerts.email]]`), sent over SMTP.
    #[serde(default)]
    pub email: Vec<RawEmail>,
    /// Where the elements that parsed are in the file, and the names of the
    /// receivers that did not (see [`AlertsPartial`]).
    #[serde(skip)]
    pub(crate) partial: AlertsPartial,
}

/// What [`super::Source::parse`] could not parse of `[alerts]`: the position in
/// the file of each rule and receiver that did parse (so `rule[2]` stays
/// `rule[2]` when `rule[1]` is broken), and the names of the receivers that did
/// not (rules sending to them report nothing more).
#[derive(Debug, Clone, Default)]
pub(crate) struct AlertsPartial {
    pub(crate) rule_at: Vec<usize>,
    pub(crate) webhook_at: Vec<usize>,
    pub(crate) email_at: Vec<usize>,
    pub(crate) broken_receivers: Vec<String>,
}

/// The position in the file of the `n`-th element that parsed.
fn at_index(positions: &[usize], n: usize) -> usize {
    positions.get(n).copied().unwrap_or(n)
}

/// `[[alerts.rule]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique name; the `alertname` label.
    pub name: Spanned<String>,
    /// The condition: `job_failed` (the job's last finished run failed),
    /// `job_late` (a scheduled fire has not started a run within `for`),
    /// `no_success` (no completed run for `for`), `quota_low` (an upstream's
    /// daily quota below `below_percent`, or running out before its reset at
    /// the current rate), `upstream_errors` (an upstream's error ratio above
    /// `above` for `for`), `dead_letters` (more than `above` dead tasks on a
    /// queue), `worker_gone` (fewer than `min_workers` live workers serve
    /// `queue`), `query` (each row `query` returns from `database` is an
    /// active alert; see `docs/specs/alerts.md`).
    pub when: Spanned<String>,
    /// `job_failed`, `job_late`, `no_success`: the job watched. Default every job.
    pub job: Option<Spanned<String>>,
    /// `quota_low`, `upstream_errors`: the upstream watched. Default every
    /// upstream (with a daily quota, for `quota_low`).
    pub upstream: Option<Spanned<String>>,
    /// `dead_letters`: the queue watched (default every queue);
    /// `worker_gone`: the queue whose workers are counted (default `jobs`).
    pub queue: Option<Spanned<String>>,
    /// `quota_low` (required): fires below this share of the daily quota left,
    /// 0 to 100.
    pub below_percent: Option<Spanned<f64>>,
    /// `upstream_errors` (required): the error ratio, 0 to 1, above which it
    /// fires; `dead_letters`: the dead task count above which it fires
    /// (default 0: any dead letter).
    pub above: Option<Spanned<f64>>,
    /// `no_success` (required): how long without a completed run;
    /// `job_late`: grace after a due fire (default `1m`); `upstream_errors`:
    /// how long the ratio must stay above (default `5m`); `worker_gone`: how
    /// long the workers must be missing (default `1m`, so that a node starting
    /// or restarting is not taken for gone).
    #[serde(rename = "for")]
    pub for_: Option<Spanned<Dur>>,
    /// `worker_gone`: fewer live workers than this fire it. Default 1.
    pub min_workers: Option<Spanned<u32>>,
    /// `query` (required): the database the query runs on: `sqlite://…`,
    /// `postgres://…` or `mysql://…` (a password in it is never shown).
    pub database: Option<Spanned<String>>,
    /// `query` (required): SQL returning one row per alert that should be
    /// firing, run read-only (in a transaction that is rolled back). Each
    /// column becomes a label (NULL: none), except `summary` and
    /// `description`, which become annotations; `for` is how long a row must
    /// keep coming back before it fires (default `0s`).
    pub query: Option<Spanned<String>>,
    /// The `severity` label. Default `warning`.
    pub severity: Option<Spanned<String>>,
    /// More labels sent with every alert of the rule, e.g. `{ team = "data" }`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Receiver names (`[[alerts.webhook]]` or `[[alerts.email]]`); none: the
    /// alert is only listed (`sluice alerts list`, the dashboard).
    #[serde(default)]
    pub send_to: Vec<Spanned<String>>,
}

/// `[[alerts.webhook]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Receiver name, used in `send_to`; unique among all receivers.
    pub name: Spanned<String>,
    /// Where the Alertmanager-format JSON is POSTed (`http` or `https`).
    pub url: Spanned<String>,
    /// Key of the HMAC-SHA256 signature of the body, sent as
    /// `X-Sluice-Signature: sha256=<hex>`. Default: unsigned.
    pub secret: Option<RawSecret>,
    /// Timeout of one delivery attempt. Default `10s`.
    pub timeout: Option<Dur>,
    /// Delivery attempts before the notification is dead-lettered on the
    /// `alerts` queue (5xx, timeouts and refused connections are retried with
    /// backoff; a 4xx is dead-lettered at once). Default 8.
    pub attempts: Option<Spanned<u32>>,
}

/// `[[alerts.email]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    /// Receiver name, used in `send_to`; unique among all receivers.
    pub name: Spanned<String>,
    /// The SMTP server: `smtp://host:port` (plain, or `?tls=starttls` to
    /// require STARTTLS) or `smtps://host:port` (TLS from the start). Default
    /// ports 25 and 465.
    pub smtp: Spanned<String>,
    /// The sender address.
    pub from: Spanned<String>,
    /// The recipients.
    pub to: Vec<Spanned<String>>,
    /// SMTP user name (with `password`).
    pub username: Option<String>,
    /// SMTP password.
    pub password: Option<RawSecret>,
    /// Timeout of one delivery attempt. Default `10s`.
    pub timeout: Option<Dur>,
    /// Delivery attempts before the notification is dead-lettered. Default 8.
    pub attempts: Option<Spanned<u32>>,
}

/// What a rule watches, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The job's last finished run failed.
    JobFailed {
        /// One job, or every job.
        job: Option<String>,
    },
    /// A scheduled fire of the job has started no run within `grace`.
    JobLate {
        /// One job, or every scheduled job.
        job: Option<String>,
        /// Grace after the due instant.
        grace: Duration,
    },
    /// No completed run of the job for `age`.
    NoSuccess {
        /// One job, or every job.
        job: Option<String>,
        /// Longest time without a completed run.
        age: Duration,
    },
    /// An upstream's daily quota is low or runs out before its reset.
    QuotaLow {
        /// One upstream, or every upstream with a daily quota.
        upstream: Option<String>,
        /// Percent of the daily quota left below which it fires.
        below_percent: f64,
    },
    /// An upstream's error ratio stays above `above` for `hold`.
    UpstreamErrors {
        /// One upstream, or every upstream.
        upstream: Option<String>,
        /// Error ratio, 0 to 1.
        above: f64,
        /// How long it must stay above.
        hold: Duration,
    },
    /// More than `above` dead tasks on a queue.
    DeadLetters {
        /// One queue, or every queue.
        queue: Option<String>,
        /// Dead task count above which it fires.
        above: u64,
    },
    /// Each row of `query` on `database` is an alert, firing once it has come
    /// back for `hold`.
    Query {
        /// The database URL.
        database: Secret,
        /// The SQL.
        query: String,
        /// How long a row must keep coming back.
        hold: Duration,
    },
    /// Fewer than `min` live workers serve `queue` for `hold`.
    WorkerGone {
        /// The queue whose workers are counted.
        queue: String,
        /// Fewest live workers that is fine.
        min: u32,
        /// How long they must be missing.
        hold: Duration,
    },
}

impl Condition {
    /// Its name as written in `when`.
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::JobFailed { .. } => "job_failed",
            Condition::JobLate { .. } => "job_late",
            Condition::NoSuccess { .. } => "no_success",
            Condition::QuotaLow { .. } => "quota_low",
            Condition::UpstreamErrors { .. } => "upstream_errors",
            Condition::DeadLetters { .. } => "dead_letters",
            Condition::WorkerGone { .. } => "worker_gone",
            Condition::Query { .. } => "query",
        }
    }
}

/// `[[alerts.rule]]`, checked.
#[derive(Debug, Clone)]
pub struct RuleSettings {
    /// Unique name.
    pub name: String,
    /// What it watches.
    pub condition: Condition,
    /// The `severity` label.
    pub severity: String,
    /// More labels.
    pub labels: BTreeMap<String, String>,
    /// Receiver names, each defined.
    pub send_to: Vec<String>,
}

/// A receiver, checked.
#[derive(Clone)]
pub enum ReceiverSettings {
    /// A webhook.
    Webhook {
        /// Where to POST.
        url: String,
        /// HMAC key, if the body is signed.
        secret: Option<Secret>,
        /// Per-attempt timeout.
        timeout: Duration,
        /// Delivery attempts.
        attempts: u32,
    },
    /// SMTP e-mail.
    Email {
        /// `smtp://…` or `smtps://…`.
        smtp: String,
        /// Sender.
        from: String,
        /// Recipients.
        to: Vec<String>,
        /// SMTP user and password.
        credentials: Option<(String, Secret)>,
        /// Per-attempt timeout.
        timeout: Duration,
        /// Delivery attempts.
        attempts: u32,
    },
}

impl ReceiverSettings {
    /// Delivery attempts before dead-lettering.
    pub fn attempts(&self) -> u32 {
        match self {
            ReceiverSettings::Webhook { attempts, .. }
            | ReceiverSettings::Email { attempts, .. } => *attempts,
        }
    }

    /// `webhook` or `email`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReceiverSettings::Webhook { .. } => "webhook",
            ReceiverSettings::Email { .. } => "email",
        }
    }
}

impl std::fmt::Debug for ReceiverSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReceiverSettings::Webhook { url, secret, .. } => f
                .debug_struct("Webhook")
                // Only the host: a webhook's path often is its secret.
                .field(
                    "host",
                    &reqwest::Url::parse(url)
                        .ok()
                        .and_then(|u| u.host_str().map(str::to_owned)),
                )
                .field("signed", &secret.is_some())
                .finish_non_exhaustive(),
            ReceiverSettings::Email { smtp, to, .. } => f
                .debug_struct("Email")
                .field("smtp", &sluice_core::redact_url(smtp))
                .field("to", to)
                .finish_non_exhaustive(),
        }
    }
}

/// `[alerts]`, checked.
#[derive(Debug, Clone, Default)]
pub struct AlertsSettings {
    /// Evaluation period.
    pub interval: Duration,
    /// `externalURL` of notifications, without a trailing slash; `None`: from
    /// the listen address.
    pub external_url: Option<String>,
    /// The rules, in file order.
    pub rules: Vec<RuleSettings>,
    /// Receivers by name.
    pub receivers: BTreeMap<String, ReceiverSettings>,
}

/// What the rules may name, for checking them.
pub(super) struct Known<'a> {
    /// Configured job names.
    pub jobs: Vec<&'a str>,
    /// Configured upstream names.
    pub upstreams: Vec<&'a str>,
}

/// Default delivery attempts of a receiver.
const ATTEMPTS: u32 = 8;
/// Default per-attempt timeout of a receiver.
const TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn check_alerts(
    raw: &RawAlerts,
    known: &Known<'_>,
    src: &Source,
    env: &Env<'_>,
    errs: &mut Vec<ConfigError>,
) -> AlertsSettings {
    let interval = raw
        .interval
        .as_ref()
        .map_or(Duration::from_secs(15), |d| d.get_ref().0);
    if let Some(d) = &raw.interval
        && d.get_ref().0 < Duration::from_secs(1)
    {
        errs.push(src.err(span(d), "alerts.interval", "interval must be at least 1s"));
    }
    let external_url = raw.external_url.as_ref().map(|u| {
        let s = u.get_ref().trim_end_matches('/').to_owned();
        if !(s.starts_with("http://") || s.starts_with("https://")) {
            errs.push(src.err(
                span(u),
                "alerts.external_url",
                format!("{s:?} must start with http:// or https://"),
            ));
        }
        s
    });
    let receivers = check_receivers(raw, src, env, errs);
    let mut names = BTreeSet::new();
    let rules = raw
        .rule
        .iter()
        .enumerate()
        .filter_map(|(n, r)| {
            let i = at_index(&raw.partial.rule_at, n);
            let name = r.name.get_ref();
            if name.is_empty() || !names.insert(name.clone()) {
                errs.push(src.err(
                    span(&r.name),
                    format!("alerts.rule[{i}].name"),
                    format!("rule name {name:?} must be non-empty and unique"),
                ));
            }
            check_rule(
                r,
                i,
                known,
                &receivers,
                &raw.partial.broken_receivers,
                src,
                errs,
            )
        })
        .collect();
    AlertsSettings {
        interval,
        external_url,
        rules,
        receivers,
    }
}

fn check_receivers(
    raw: &RawAlerts,
    src: &Source,
    env: &Env<'_>,
    errs: &mut Vec<ConfigError>,
) -> BTreeMap<String, ReceiverSettings> {
    let mut out = BTreeMap::new();
    let mut add = |name: &Spanned<String>, key: String, r: ReceiverSettings, errs: &mut Vec<_>| {
        let n = name.get_ref();
        if n.is_empty() || out.contains_key(n) {
            errs.push(src.err(
                span(name),
                key,
                format!(
                    "receiver name {n:?} must be non-empty and unique among webhooks and e-mails"
                ),
            ));
        }
        out.insert(n.clone(), r);
    };
    let attempts = |a: &Option<Spanned<u32>>, key: String, errs: &mut Vec<ConfigError>| match a {
        Some(a) if !(1..=100).contains(a.get_ref()) => {
            errs.push(src.err(span(a), key, "attempts must be 1 to 100"));
            ATTEMPTS
        }
        Some(a) => *a.get_ref(),
        None => ATTEMPTS,
    };
    for (n, w) in raw.webhook.iter().enumerate() {
        let i = at_index(&raw.partial.webhook_at, n);
        let at = |k: &str| format!("alerts.webhook[{i}].{k}");
        let url = w.url.get_ref();
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.password().is_none() => {}
            _ => errs.push(src.err(
                span(&w.url),
                at("url"),
                "not an http:// or https:// URL without a password (the value is not repeated here)",
            )),
        }
        let secret = w
            .secret
            .as_ref()
            .and_then(|s| read_secret(s, src, env, &at("secret"), errs));
        let r = ReceiverSettings::Webhook {
            url: url.clone(),
            secret,
            timeout: w.timeout.map_or(TIMEOUT, |d| d.0),
            attempts: attempts(&w.attempts, at("attempts"), errs),
        };
        add(&w.name, at("name"), r, errs);
    }
    for (n, e) in raw.email.iter().enumerate() {
        let i = at_index(&raw.partial.email_at, n);
        let at = |k: &str| format!("alerts.email[{i}].{k}");
        let smtp = e.smtp.get_ref();
        if let Err(m) = crate::alerts::smtp_target(smtp) {
            errs.push(src.err(span(&e.smtp), at("smtp"), m));
        }
        for (key, addr) in std::iter::once((at("from"), &e.from)).chain(
            e.to.iter()
                .enumerate()
                .map(|(k, t)| (at(&format!("to[{k}]")), t)),
        ) {
            if addr.get_ref().parse::<lettre::Address>().is_err() {
                errs.push(src.err(
                    span(addr),
                    key,
                    format!("{:?} is not an e-mail address", addr.get_ref()),
                ));
            }
        }
        if e.to.is_empty() {
            errs.push(src.err(span(&e.name), at("to"), "an e-mail receiver needs `to`"));
        }
        let credentials = match (&e.username, &e.password) {
            (Some(u), Some(p)) => {
                read_secret(p, src, env, &at("password"), errs).map(|p| (u.clone(), p))
            }
            (None, None) => None,
            _ => {
                errs.push(src.err(
                    span(&e.name),
                    at("username"),
                    "`username` and `password` go together",
                ));
                None
            }
        };
        let r = ReceiverSettings::Email {
            smtp: smtp.clone(),
            from: e.from.get_ref().clone(),
            to: e.to.iter().map(|t| t.get_ref().clone()).collect(),
            credentials,
            timeout: e.timeout.map_or(TIMEOUT, |d| d.0),
            attempts: attempts(&e.attempts, at("attempts"), errs),
        };
        add(&e.name, at("name"), r, errs);
    }
    out
}

/// The keys each condition takes besides `name`, `when`, `severity`, `labels`
/// and `send_to`.
fn allowed(kind: &str) -> &'static [&'static str] {
    match kind {
        "job_failed" => &["job"],
        "job_late" | "no_success" => &["job", "for"],
        "quota_low" => &["upstream", "below_percent"],
        "upstream_errors" => &["upstream", "above", "for"],
        "dead_letters" => &["queue", "above"],
        "query" => &["database", "query", "for"],
        _ => &["queue", "min_workers", "for"],
    }
}

fn check_rule(
    r: &RawRule,
    i: usize,
    known: &Known<'_>,
    receivers: &BTreeMap<String, ReceiverSettings>,
    broken: &[String],
    src: &Source,
    errs: &mut Vec<ConfigError>,
) -> Option<RuleSettings> {
    let at = |k: &str| format!("alerts.rule[{i}].{k}");
    let before = errs.len();
    for (k, t) in r.send_to.iter().enumerate() {
        if !receivers.contains_key(t.get_ref()) && !broken.contains(t.get_ref()) {
            let defined: Vec<&str> = receivers.keys().map(String::as_str).collect();
            errs.push(src.err(
                span(t),
                at(&format!("send_to[{k}]")),
                format!(
                    "no receiver named {:?}; defined: {}",
                    t.get_ref(),
                    if defined.is_empty() {
                        "none (add [[alerts.webhook]] or [[alerts.email]])".to_owned()
                    } else {
                        defined.join(", ")
                    }
                ),
            ));
        }
    }
    let kind = r.when.get_ref().as_str();
    if !RULE_KINDS.contains(&kind) {
        errs.push(src.err(
            span(&r.when),
            at("when"),
            format!(
                "unknown condition {kind:?}; one of {}",
                RULE_KINDS.join(", ")
            ),
        ));
        return None;
    }
    // Keys written that this condition does not take.
    let given: [(&str, Option<std::ops::Range<usize>>); 6] = [
        ("job", r.job.as_ref().map(Spanned::span)),
        ("upstream", r.upstream.as_ref().map(Spanned::span)),
        ("queue", r.queue.as_ref().map(Spanned::span)),
        ("below_percent", r.below_percent.as_ref().map(Spanned::span)),
        ("above", r.above.as_ref().map(Spanned::span)),
        ("for", r.for_.as_ref().map(Spanned::span)),
    ];
    let given = given.into_iter().chain([
        ("min_workers", r.min_workers.as_ref().map(Spanned::span)),
        ("database", r.database.as_ref().map(Spanned::span)),
        ("query", r.query.as_ref().map(Spanned::span)),
    ]);
    for (key, at_span) in given {
        if let Some(s) = at_span
            && !allowed(kind).contains(&key)
        {
            errs.push(src.err(
                Some(s),
                at(key),
                format!(
                    "`{key}` does not apply to {kind}; it takes {}",
                    allowed(kind)
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    let need = |what: &str, errs: &mut Vec<ConfigError>| {
        errs.push(src.err(span(&r.when), at(what), format!("{kind} needs `{what}`")));
    };
    let job = r.job.as_ref().map(|j| {
        if !known.jobs.contains(&j.get_ref().as_str()) {
            errs.push(src.err(
                span(j),
                at("job"),
                format!(
                    "no job named {:?}; jobs: {}",
                    j.get_ref(),
                    list(&known.jobs)
                ),
            ));
        }
        j.get_ref().clone()
    });
    let upstream = r.upstream.as_ref().map(|u| {
        if !known.upstreams.contains(&u.get_ref().as_str()) {
            errs.push(src.err(
                span(u),
                at("upstream"),
                format!(
                    "no upstream named {:?}; upstreams: {}",
                    u.get_ref(),
                    list(&known.upstreams)
                ),
            ));
        }
        u.get_ref().clone()
    });
    let queue = r.queue.as_ref().map(|q| q.get_ref().clone());
    let hold = |default: Duration| r.for_.as_ref().map_or(default, |d| d.get_ref().0);
    let condition = match kind {
        "job_failed" => Condition::JobFailed { job },
        "job_late" => Condition::JobLate {
            job,
            grace: hold(Duration::from_secs(60)),
        },
        "no_success" => {
            if r.for_.is_none() {
                need("for", errs);
            }
            Condition::NoSuccess {
                job,
                age: hold(Duration::ZERO),
            }
        }
        "quota_low" => {
            let below_percent = match &r.below_percent {
                Some(p) if !(0.0..=100.0).contains(p.get_ref()) => {
                    errs.push(src.err(span(p), at("below_percent"), "must be 0 to 100"));
                    0.0
                }
                Some(p) => *p.get_ref(),
                None => {
                    need("below_percent", errs);
                    0.0
                }
            };
            Condition::QuotaLow {
                upstream,
                below_percent,
            }
        }
        "upstream_errors" => {
            let above = match &r.above {
                Some(a) if !(0.0..1.0).contains(a.get_ref()) => {
                    errs.push(src.err(
                        span(a),
                        at("above"),
                        "the error ratio must be at least 0 and below 1 (0.2 = 20 %)",
                    ));
                    0.0
                }
                Some(a) => *a.get_ref(),
                None => {
                    need("above", errs);
                    0.0
                }
            };
            Condition::UpstreamErrors {
                upstream,
                above,
                hold: hold(Duration::from_secs(300)),
            }
        }
        "dead_letters" => {
            let above = match &r.above {
                Some(a) if *a.get_ref() < 0.0 || a.get_ref().fract() != 0.0 => {
                    errs.push(src.err(
                        span(a),
                        at("above"),
                        "the dead task count must be a whole number, 0 or more",
                    ));
                    0
                }
                Some(a) => *a.get_ref() as u64,
                None => 0,
            };
            Condition::DeadLetters { queue, above }
        }
        "query" => {
            let database = match &r.database {
                Some(d) => {
                    if let Err(e) = sluice_sql::DbUrl::parse(d.get_ref()) {
                        errs.push(src.err(span(d), at("database"), e.to_string()));
                    }
                    Secret::new(d.get_ref().as_str())
                }
                None => {
                    need("database", errs);
                    Secret::new("")
                }
            };
            let query = match &r.query {
                Some(q) if q.get_ref().trim().is_empty() => {
                    errs.push(src.err(span(q), at("query"), "the query is empty"));
                    String::new()
                }
                Some(q) => q.get_ref().clone(),
                None => {
                    need("query", errs);
                    String::new()
                }
            };
            Condition::Query {
                database,
                query,
                hold: hold(Duration::ZERO),
            }
        }
        _ => Condition::WorkerGone {
            queue: queue.unwrap_or_else(|| super::JOBS_QUEUE.to_owned()),
            min: r.min_workers.as_ref().map_or(1, |m| *m.get_ref()),
            hold: hold(Duration::from_secs(60)),
        },
    };
    let severity = r
        .severity
        .as_ref()
        .map_or_else(|| "warning".to_owned(), |s| s.get_ref().clone());
    if severity.is_empty() {
        errs.push(src.err(
            span(r.severity.as_ref()?),
            at("severity"),
            "severity is empty",
        ));
    }
    for key in r.labels.keys() {
        let ok = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok || ["alertname", "severity"].contains(&key.as_str()) {
            errs.push(src.err(
                None,
                at("labels"),
                format!(
                    "label {key:?} must match [a-zA-Z_][a-zA-Z0-9_]* and not be alertname or severity"
                ),
            ));
        }
    }
    if errs.len() > before {
        return None;
    }
    Some(RuleSettings {
        name: r.name.get_ref().clone(),
        condition,
        severity,
        labels: r.labels.clone(),
        send_to: r.send_to.iter().map(|s| s.get_ref().clone()).collect(),
    })
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}
