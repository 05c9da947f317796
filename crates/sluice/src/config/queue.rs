//! `[queue]`: where tasks wait (every job run is a task) and how this node's
//! workers take them.
//!
//! ```toml
//! [queue]
//! url = "redis://127.0.0.1:6379"   # default: the repository's URL (one SQLite file)
//! namespace = "sluice"             # Redis key prefix
//! visibility = "30s"               # a lease without heartbeat runs out after this
//! grace = "30s"                    # shutdown waits this long for running tasks
//! workers = true                   # `sluice serve` runs workers
//! concurrency = { jobs = 2 }       # tasks at once per queue on this node
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;

use super::{ConfigError, Dur, Source, span};

/// The queue job runs go on.
pub const JOBS_QUEUE: &str = "jobs";
/// The queue partitions of partitioned steps go on (apart from `jobs`, so a
/// waiting parent never holds the slot its partitions need).
pub const PARTITIONS_QUEUE: &str = "partitions";

/// `[queue]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    /// `sqlite://…`, `postgres://…` or `redis://…`. Default: `[repository] url`.
    pub url: Option<Spanned<String>>,
    /// Prefix of Redis keys. Default `sluice`.
    pub namespace: Option<Spanned<String>>,
    /// Lease length without a heartbeat. Default `30s`.
    pub visibility: Option<Dur>,
    /// How long shutdown waits for running tasks. Default `30s`.
    pub grace: Option<Dur>,
    /// Whether `sluice serve` runs workers. Default true.
    pub workers: Option<bool>,
    /// Tasks at once per queue. Default `{ jobs = 2, partitions = 2 }`.
    #[serde(default)]
    pub concurrency: BTreeMap<String, Spanned<usize>>,
}

/// `[queue]`, checked.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Broker URL.
    pub url: String,
    /// Redis key prefix.
    pub namespace: String,
    /// Lease length.
    pub visibility: Duration,
    /// Shutdown grace.
    pub grace: Duration,
    /// Whether `serve` runs workers.
    pub workers: bool,
    /// Concurrency per queue.
    pub concurrency: BTreeMap<String, usize>,
}

pub(super) fn check_queue(
    q: &RawQueue,
    repository_url: &str,
    src: &Source,
    errs: &mut Vec<ConfigError>,
) -> QueueSettings {
    let url = q
        .url
        .as_ref()
        .map_or_else(|| repository_url.to_owned(), |u| u.get_ref().clone());
    if let Some(u) = &q.url {
        let scheme = u.get_ref().split_once("://").map(|(s, _)| s);
        if !matches!(
            scheme,
            Some("sqlite" | "postgres" | "postgresql" | "redis" | "rediss")
        ) {
            errs.push(src.err(
                span(u),
                "queue.url",
                format!(
                    "queue url '{}' must start with sqlite://, postgres://, redis:// or rediss://",
                    sluice_core::redact_url(u.get_ref())
                ),
            ));
        }
    }
    let namespace = q
        .namespace
        .as_ref()
        .map_or_else(|| "sluice".to_owned(), |n| n.get_ref().clone());
    if let Some(n) = &q.namespace
        && (n.get_ref().is_empty() || n.get_ref().contains(['{', '}', ' ']))
    {
        errs.push(src.err(
            span(n),
            "queue.namespace",
            "namespace must be non-empty, without spaces or braces",
        ));
    }
    let visibility = q.visibility.map_or(Duration::from_secs(30), |d| d.0);
    if visibility < Duration::from_secs(1) {
        errs.push(src.err(None, "queue.visibility", "visibility must be at least 1s"));
    }
    let mut concurrency: BTreeMap<String, usize> = BTreeMap::new();
    concurrency.insert(JOBS_QUEUE.into(), 2);
    concurrency.insert(PARTITIONS_QUEUE.into(), 2);
    for (name, n) in &q.concurrency {
        if *n.get_ref() == 0 || *n.get_ref() > 10_000 {
            errs.push(src.err(
                span(n),
                format!("queue.concurrency.{name}"),
                "concurrency must be 1 to 10000",
            ));
        }
        concurrency.insert(name.clone(), *n.get_ref());
    }
    QueueSettings {
        url,
        namespace,
        visibility,
        grace: q.grace.map_or(Duration::from_secs(30), |d| d.0),
        workers: q.workers.unwrap_or(true),
        concurrency,
    }
}
