//! Alerts: the rules of `[alerts]`, evaluated by every `sluice serve` node over
//! the facts sluice keeps (job runs in the repository, the schedule's fires, the
//! queue, the upstreams), their state in the repository's database, and their
//! notifications as `alert.notify` tasks (see `docs/specs/alerts.md`).
//!
//! - [`store`]: the incidents table; a state change is one conditional
//!   statement, so an incident fires once and resolves once across nodes;
//! - [`eval`]: what each condition sees;
//! - [`notify`]: the task that delivers to webhooks and e-mail.
//!
//! [`active`] and [`recent`] are what the CLI, the API and the dashboard list.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use sluice_core::Clock;
use tokio::task::JoinHandle;

use crate::config::{RuleSettings, Settings};
use crate::runtime::Runtime;

pub mod eval;
pub mod notify;
pub mod store;

pub use notify::{ALERT_NOTIFY, ALERTS_QUEUE, NotifyInput, NotifyTask, SIGNATURE_HEADER};
pub use store::{AlertRecord, AlertStore, Firing};

/// How an SMTP receiver's connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text (`smtp://`).
    None,
    /// Plain, upgraded with STARTTLS, which is required (`smtp://…?tls=starttls`).
    StartTls,
    /// TLS from the start (`smtps://`).
    Tls,
}

/// Where an e-mail receiver sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpTarget {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Security.
    pub tls: SmtpTls,
}

/// Parses an `[[alerts.email]] smtp` URL.
///
/// # Errors
///
/// What is wrong with it, in words.
pub fn smtp_target(url: &str) -> Result<SmtpTarget, String> {
    let bad = |why: &str| {
        format!(
            "{:?} {why}; write smtp://host:port, smtp://host:port?tls=starttls or smtps://host:port",
            sluice_core::redact_url(url)
        )
    };
    let u = reqwest::Url::parse(url).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    let (mut tls, default_port) = match u.scheme() {
        "smtp" => (SmtpTls::None, 25),
        "smtps" => (SmtpTls::Tls, 465),
        _ => return Err(bad("is not smtp:// or smtps://")),
    };
    for (k, v) in u.query_pairs() {
        match (k.as_ref(), v.as_ref(), tls) {
            ("tls", "starttls", SmtpTls::None) => tls = SmtpTls::StartTls,
            _ => return Err(bad(&format!("has an unknown query parameter {k}={v}"))),
        }
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad(
            "carries credentials; write them as username and password = { env = … }",
        ));
    }
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("has no host"))?;
    Ok(SmtpTarget {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: u.port().unwrap_or(default_port),
        tls,
    })
}

/// The alert state in the repository of `settings`.
async fn store_for(rt: &Runtime) -> Result<Arc<AlertStore>, String> {
    rt.alert_store().await
}

/// The alerts firing now, oldest first (from the repository: the same on every
/// node).
///
/// # Errors
///
/// When the repository cannot be read.
pub async fn active(rt: &Runtime) -> Result<Vec<AlertRecord>, String> {
    store_for(rt).await?.active().await
}

/// Up to `limit` alerts resolved most recently, newest first.
///
/// # Errors
///
/// When the repository cannot be read.
pub async fn recent(rt: &Runtime, limit: u32) -> Result<Vec<AlertRecord>, String> {
    store_for(rt).await?.resolved(limit).await
}

/// The fingerprint of a label set: 16 hex digits of its SHA-256.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0xff]);
        h.update(v.as_bytes());
        h.update([0xff]);
    }
    hex::encode(&h.finalize()[..8])
}

/// Counts one delivery attempt to `receiver` (`sent`, `retry`, `failed`).
pub fn count_notification(receiver: &str, result: &'static str) {
    metrics::counter!(sluice_core::metrics::names::ALERT_NOTIFICATIONS,
        "receiver" => receiver.to_owned(), "result" => result)
    .increment(1);
}

/// Sets `sluice_alerts_firing{rule}` for every configured rule from `active`.
pub fn record_firing(rules: &[RuleSettings], active: &[AlertRecord]) {
    for r in rules {
        let n = active.iter().filter(|a| a.rule == r.name).count();
        metrics::gauge!(sluice_core::metrics::names::ALERTS_FIRING, "rule" => r.name.clone())
            .set(n as f64);
    }
}

/// Starts the evaluation loop of `rt`'s rules, every `[alerts] interval`;
/// `None` when there are no rules. It ends when the handle is aborted.
pub fn start(rt: &Arc<Runtime>) -> Option<JoinHandle<()>> {
    let settings = rt.settings().clone();
    if settings.alerts.rules.is_empty() {
        return None;
    }
    let rt = rt.clone();
    Some(tokio::spawn(async move {
        let mut ev = eval::Evaluator::new(rt.clone());
        let mut tick = tokio::time::interval(settings.alerts.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(rules = settings.alerts.rules.len(),
            receivers = settings.alerts.receivers.len(),
            interval = ?settings.alerts.interval, "alerts evaluating");
        loop {
            tick.tick().await;
            if let Err(e) = evaluate(&rt, &mut ev).await {
                tracing::warn!(error = %e, "alert evaluation failed");
            }
        }
    }))
}

/// The base URL notifications link to.
fn external_url(settings: &Settings) -> String {
    settings
        .alerts
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", settings.listen))
}

/// One evaluation of every rule: state changes recorded, their notifications
/// (and any left unsent) enqueued, the gauge set.
///
/// # Errors
///
/// When the alert state cannot be read or written.
pub async fn evaluate(rt: &Arc<Runtime>, ev: &mut eval::Evaluator) -> Result<(), String> {
    let settings = rt.settings().clone();
    let store = store_for(rt).await?;
    let now = sluice_core::SystemClock.now_millis();
    let firing = store.active().await?;
    let configured: BTreeSet<&str> = settings
        .alerts
        .rules
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    for a in firing
        .iter()
        .filter(|a| !configured.contains(a.rule.as_str()))
    {
        // A rule taken out of the config: its incidents end without a word.
        store.resolve(a, now, false).await?;
    }
    for rule in &settings.alerts.rules {
        let seen = match ev.observe(rule, now).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(rule = %rule.name, error = %e, "alert rule not evaluated");
                continue;
            }
        };
        let mut observed = BTreeSet::new();
        for o in seen {
            let mut labels = rule.labels.clone();
            labels.extend(o.entity);
            labels.insert("alertname".into(), rule.name.clone());
            labels.insert("severity".into(), rule.severity.clone());
            let fp = fingerprint(&labels);
            observed.insert(fp.clone());
            let current = firing
                .iter()
                .find(|a| a.rule == rule.name && a.fingerprint == fp);
            match o.state {
                eval::State::Firing {
                    summary,
                    description,
                } => {
                    let mut annotations = BTreeMap::from([("summary".to_owned(), summary)]);
                    if let Some(d) = description {
                        annotations.insert("description".into(), d);
                    }
                    let f = Firing {
                        rule: rule.name.clone(),
                        fingerprint: fp,
                        labels,
                        annotations,
                        severity: rule.severity.clone(),
                    };
                    if let Some(new) = store.fire(&f, now).await? {
                        tracing::warn!(rule = %rule.name, labels = ?new.labels,
                            summary = %new.annotations.get("summary").map_or("", String::as_str),
                            "alert firing");
                        send(rt, &store, rule, &new).await;
                    }
                }
                eval::State::Clear => {
                    if let Some(a) = current {
                        resolve(rt, &store, rule, a, now).await?;
                    }
                }
                eval::State::Unknown => {}
            }
        }
        // What the rule no longer watches (a job or queue gone) is resolved.
        for a in firing
            .iter()
            .filter(|a| a.rule == rule.name && !observed.contains(&a.fingerprint))
        {
            resolve(rt, &store, rule, a, now).await?;
        }
    }
    for a in store.unsent().await? {
        if let Some(rule) = settings.alerts.rules.iter().find(|r| r.name == a.rule) {
            send(rt, &store, rule, &a).await;
        }
    }
    record_firing(&settings.alerts.rules, &store.active().await?);
    Ok(())
}

async fn resolve(
    rt: &Runtime,
    store: &AlertStore,
    rule: &RuleSettings,
    a: &AlertRecord,
    now: i64,
) -> Result<(), String> {
    if let Some(done) = store.resolve(a, now, true).await? {
        tracing::info!(rule = %rule.name, labels = ?done.labels, "alert resolved");
        send(rt, store, rule, &done).await;
    }
    Ok(())
}

/// Enqueues the notifications of `a` in its status to every receiver of
/// `rule`, then marks them sent; on a queue error they stay unsent and the
/// next evaluation tries again.
async fn send(rt: &Runtime, store: &AlertStore, rule: &RuleSettings, a: &AlertRecord) {
    let settings = rt.settings();
    let base = external_url(settings);
    let mut tasks = Vec::new();
    if a.status == "resolved" && !a.firing_sent {
        // Resolved before its firing went out: the firing first.
        let firing = AlertRecord {
            status: "firing".into(),
            ends_at: None,
            ..a.clone()
        };
        tasks.extend(tasks_for(settings, rule, &firing, &base));
    }
    tasks.extend(tasks_for(settings, rule, a, &base));
    if !tasks.is_empty() {
        let enqueued = match rt.broker().await {
            Ok(b) => b.enqueue_many(tasks).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let Err(e) = enqueued {
            tracing::warn!(rule = %rule.name, error = %e,
                "alert notifications not enqueued; the next evaluation tries again");
            return;
        }
    }
    let mut marks = vec![a.status.as_str()];
    if a.status == "resolved" && !a.firing_sent {
        marks.push("firing");
    }
    for status in marks {
        if let Err(e) = store.mark_sent(a.id, status).await {
            tracing::warn!(rule = %rule.name, error = %e, "alert notification not marked sent");
        }
    }
}

fn tasks_for(
    settings: &Settings,
    rule: &RuleSettings,
    a: &AlertRecord,
    base: &str,
) -> Vec<sluice_queue::NewTask> {
    rule.send_to
        .iter()
        .filter_map(|name| {
            let r = settings.alerts.receivers.get(name)?;
            let input = NotifyInput {
                receiver: name.clone(),
                message: notify::message(a, name, base),
            };
            let key = format!("alert:{}:{}:{}", a.id, a.status, name);
            Some(notify::notify_task(&input, r.attempts(), key))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls() {
        let t = smtp_target("smtp://127.0.0.1:2525").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tls),
            ("127.0.0.1", 2525, SmtpTls::None)
        );
        let t = smtp_target("smtp://mail.example.org?tls=starttls").unwrap();
        assert_eq!((t.port, t.tls), (25, SmtpTls::StartTls));
        assert_eq!(smtp_target("smtps://mail.example.org").unwrap().port, 465);
        assert!(smtp_target("http://x").unwrap_err().contains("smtp://"));
        assert!(
            smtp_target("smtp://u:p@x")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(
            smtp_target("smtp://x?tls=yes")
                .unwrap_err()
                .contains("tls=yes")
        );
    }

    #[test]
    fn fingerprints_depend_on_every_label() {
        let a = BTreeMap::from([("alertname".to_owned(), "x".to_owned())]);
        let mut b = a.clone();
        b.insert("job".into(), "load".into());
        assert_eq!(fingerprint(&a).len(), 16);
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&b), fingerprint(&b.clone()));
    }
}
