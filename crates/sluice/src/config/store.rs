//! `[store]` and `[cluster]`: where entries live and how nodes share work.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;
use sluice_cache::{
    MemcachedOptions, MemcachedStore, MemoryStore, RedisStore, SharedFlights, Store, TieredStore,
};
use sluice_core::{Redis, RedisOptions};

use super::{ConfigError, Dur, Env, RawSecret, Size, Source, read_secret, span};

/// Store kinds.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In-process memory (moka), bounded by bytes.
    #[default]
    Memory,
    /// Redis (a server, or a cluster with `cluster = true`).
    Redis,
    /// Memcached.
    Memcached,
    /// A memory L1 in front of Redis or Memcached (picked by `url`'s scheme).
    Tiered,
}

/// `[store]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `memory` (default: in-process, moka TinyLFU), `redis`, `memcached`, or
    /// `tiered` (a memory L1 in front of Redis or Memcached).
    #[serde(default)]
    pub kind: StoreKind,
    /// Byte bound of the memory store, and of each node's L1 with `tiered`.
    /// Weighted by body + headers + key. Default `256MiB` (memory), `64MiB` (L1).
    pub max_bytes: Option<Size>,
    /// Largest response stored; larger ones are passed through uncached
    /// (`detail=too-large`). Default `8MiB`.
    pub max_body: Option<Size>,
    /// The shared store: `redis://[user:password@]host:port[/db]`, `rediss://…`
    /// (TLS) or `memcache://host:port`. With `tiered` the scheme picks the L2.
    pub url: Option<Spanned<String>>,
    /// Seed nodes of a Redis Cluster (with `cluster = true`), instead of `url`.
    pub urls: Option<Vec<Spanned<String>>>,
    /// The Redis URLs are a Redis Cluster. Default `false`.
    #[serde(default)]
    pub cluster: bool,
    /// Redis password, when not in the URL: `{ env = "REDIS_PASSWORD" }`.
    pub password: Option<RawSecret>,
    /// PEM file of the CA that signed the Redis server's certificate, for
    /// `rediss://` with a private CA (default: the system's roots).
    pub tls_ca_file: Option<Spanned<String>>,
    /// Prefix of every key and channel (`{namespace}:e:{key}`), so deployments
    /// can share one server.
    /// Default `sluice`.
    pub namespace: Option<Spanned<String>>,
    /// Longest wait for one command to the shared store; then it counts as down.
    /// Default `250ms`.
    pub timeout: Option<Dur>,
    /// `tiered`: longest an entry stays in a node's L1 (purges evict it at once
    /// anyway). Default `5s`.
    pub l1_ttl: Option<Dur>,
    /// `memcached`: the server's item size limit (`memcached -I`); larger entries
    /// pass through uncached, counted in `sluice_store_too_large_total`. Default
    /// `1MiB`.
    pub max_item_size: Option<Size>,
    /// `memcached`: connections per node. Default 8.
    pub pool_size: Option<usize>,
}

/// `[cluster]`: what several nodes share through Redis.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// Redis for locks, quotas and purge notices. Default: the store's Redis, if
    /// the store is `redis` or `tiered` over Redis. Required for these with a
    /// Memcached store.
    pub redis_url: Option<Spanned<String>>,
    /// One upstream call per cold key across all nodes (a `SET NX PX` lock,
    /// token-checked release, waiters woken by pub/sub with a polling fallback).
    /// Default `true` when a Redis is known.
    pub coalesce: Option<bool>,
    /// Rate limits (GCRA) and daily quotas counted in Redis by one Lua script,
    /// across all nodes. Default `true` when a Redis is known.
    pub shared_quota: Option<bool>,
    /// How long a flight lock lives unless its holder extends it (every third of
    /// it while the call runs); a crashed
    /// holder's lock is free after this. Default `5s`.
    pub lock_ttl: Option<Dur>,
    /// How long a node waits for another node's flight before calling the
    /// upstream itself. Default `30s`.
    pub lock_wait: Option<Dur>,
    /// How often a waiting node checks for the entry if no notice arrives.
    /// Default `100ms`.
    pub poll: Option<Dur>,
}

/// What `[store]` and `[cluster]` resolve to.
pub(super) struct Built {
    pub(super) store: Arc<dyn Store>,
    /// The Redis for quotas, when shared quotas are on.
    pub(super) quota_redis: Option<Arc<Redis>>,
    pub(super) flights: Option<Arc<SharedFlights>>,
}

enum Shared {
    Redis(Arc<Redis>),
    Memcached(Arc<MemcachedStore>),
}

fn url_scheme(u: &str) -> &str {
    u.split_once("://").map_or("", |(s, _)| s)
}

impl RawStore {
    fn namespace(&self, src: &Source, errs: &mut Vec<ConfigError>) -> String {
        let Some(ns) = &self.namespace else {
            return "sluice".into();
        };
        let v = ns.get_ref();
        if v.is_empty()
            || v.len() > 64
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            errs.push(src.err(
                span(ns),
                "store.namespace",
                format!("namespace {v:?} must be 1 to 64 letters, digits, '-', '_', '.' or ':'"),
            ));
        }
        v.clone()
    }

    fn redis_options(
        &self,
        urls: Vec<Spanned<String>>,
        src: &Source,
        env: &Env<'_>,
        errs: &mut Vec<ConfigError>,
        key: &str,
    ) -> RedisOptions {
        for u in &urls {
            if !matches!(url_scheme(u.get_ref()), "redis" | "rediss") {
                errs.push(src.err(
                    span(u),
                    key,
                    format!(
                        "{} is not a Redis URL; write redis://host:port or rediss://host:port",
                        sluice_core::redact_url(u.get_ref())
                    ),
                ));
            }
        }
        let urls_are_tls = urls.iter().all(|u| url_scheme(u.get_ref()) == "rediss");
        RedisOptions {
            urls: urls.into_iter().map(Spanned::into_inner).collect(),
            cluster: self.cluster,
            namespace: self.namespace(src, errs),
            password: self
                .password
                .as_ref()
                .and_then(|p| read_secret(p, src, env, "store.password", errs))
                .map(|s| s.expose().to_owned()),
            timeout: self
                .timeout
                .map_or(Duration::from_millis(250), |d| d.0)
                .max(Duration::from_millis(1)),
            connect_timeout: Duration::from_secs(1),
            tls_ca_pem: self.tls_ca_file.as_ref().and_then(|f| {
                if !urls_are_tls {
                    errs.push(src.err(
                        span(f),
                        "store.tls_ca_file",
                        "tls_ca_file is for rediss:// URLs; these are redis:// (no TLS)",
                    ));
                }
                std::fs::read(f.get_ref())
                    .map_err(|e| {
                        errs.push(src.err(
                            span(f),
                            "store.tls_ca_file",
                            format!("cannot read {}: {e}", f.get_ref()),
                        ));
                    })
                    .ok()
            }),
        }
    }

    /// The configured URLs, located; an error when none is given.
    fn urls(&self, src: &Source, errs: &mut Vec<ConfigError>) -> Vec<Spanned<String>> {
        match (&self.url, &self.urls) {
            (Some(u), None) => vec![u.clone()],
            (None, Some(us)) if !us.is_empty() => us.clone(),
            (Some(_), Some(_)) => {
                errs.push(src.err(None, "store.urls", "give either url or urls, not both"));
                Vec::new()
            }
            _ => {
                errs.push(src.err(
                    None,
                    "store.url",
                    format!(
                        "store kind {:?} needs url = \"redis://host:port\" or \"memcache://host:port\"",
                        format!("{:?}", self.kind).to_lowercase()
                    ),
                ));
                Vec::new()
            }
        }
    }

    fn shared(&self, src: &Source, env: &Env<'_>, errs: &mut Vec<ConfigError>) -> Option<Shared> {
        let urls = self.urls(src, errs);
        let first = urls.first()?.clone();
        let memcached = matches!(url_scheme(first.get_ref()), "memcache" | "memcached");
        let want_memcached = match self.kind {
            StoreKind::Memcached => true,
            StoreKind::Redis => false,
            _ => memcached,
        };
        if want_memcached {
            if !memcached {
                errs.push(src.err(
                    span(&first),
                    "store.url",
                    "a memcached store needs url = \"memcache://host:port\"",
                ));
                return None;
            }
            if urls.len() > 1 || self.cluster {
                errs.push(src.err(
                    span(&first),
                    "store.urls",
                    "a memcached store takes one url (and no cluster = true)",
                ));
                return None;
            }
            let opts = MemcachedOptions {
                url: first.get_ref().clone(),
                namespace: self.namespace(src, errs),
                max_item_bytes: self.max_item_size.map_or(1 << 20, |s| s.0 as usize),
                pool_size: self.pool_size.unwrap_or(8),
                timeout: self.timeout.map_or(Duration::from_millis(250), |d| d.0),
            };
            if opts.pool_size == 0 {
                errs.push(src.err(None, "store.pool_size", "pool_size must be at least 1"));
            }
            return match MemcachedStore::new(&opts) {
                Ok(s) => Some(Shared::Memcached(Arc::new(s.with_clock(env.clock.clone())))),
                Err(e) => {
                    errs.push(src.err(span(&first), "store.url", e.to_string()));
                    None
                }
            };
        }
        if urls.len() > 1 && !self.cluster {
            errs.push(src.err(
                span(&urls[1]),
                "store.urls",
                "several Redis URLs need cluster = true",
            ));
            return None;
        }
        let opts = self.redis_options(urls, src, env, errs, "store.url");
        if !errs.is_empty() {
            return None;
        }
        match Redis::connect(&opts) {
            Ok(r) => Some(Shared::Redis(r)),
            Err(e) => {
                errs.push(src.err(span(&first), "store.url", e.to_string()));
                None
            }
        }
    }

    /// Builds the store and the cluster-wide parts.
    pub(super) fn build(
        &self,
        cluster: &RawCluster,
        src: &Source,
        env: &Env<'_>,
        errs: &mut Vec<ConfigError>,
    ) -> Option<Built> {
        let max_body = self.max_body.map_or(8 << 20, |s| s.0) as usize;
        let memory = |default_bytes: u64| {
            MemoryStore::builder()
                .max_bytes(self.max_bytes.map_or(default_bytes, |s| s.0))
                .max_entry_bytes(max_body)
                .clock(env.clock.clone())
        };
        if self.kind == StoreKind::Memory {
            for (set, key) in [
                (self.url.is_some(), "store.url"),
                (self.urls.is_some(), "store.urls"),
                (self.l1_ttl.is_some(), "store.l1_ttl"),
                (self.max_item_size.is_some(), "store.max_item_size"),
            ] {
                if set {
                    errs.push(src.err(
                        None,
                        key,
                        "only for kind = \"redis\", \"memcached\" or \"tiered\"; the memory store is in-process",
                    ));
                }
            }
        }
        let (store, redis): (Arc<dyn Store>, Option<Arc<Redis>>) = match self.kind {
            StoreKind::Memory => (Arc::new(memory(256 << 20).build()), None),
            StoreKind::Redis | StoreKind::Memcached | StoreKind::Tiered => {
                let shared = self.shared(src, env, errs)?;
                let (l2, redis): (Arc<dyn Store>, Option<Arc<Redis>>) = match shared {
                    Shared::Redis(r) => (
                        Arc::new(
                            RedisStore::new(r.clone(), max_body).with_clock(env.clock.clone()),
                        ),
                        Some(r),
                    ),
                    Shared::Memcached(m) => (m, None),
                };
                if self.kind == StoreKind::Tiered {
                    let ttl = self.l1_ttl.map_or(Duration::from_secs(5), |d| d.0);
                    let l1 = memory(64 << 20).max_ttl(ttl).build();
                    // Purge notices travel over the cluster Redis (the store's own,
                    // or [cluster].redis_url for Memcached).
                    let bus = match &redis {
                        Some(r) => Some(r.clone()),
                        None => cluster_redis(self, cluster, src, env, errs),
                    };
                    let redis = redis.or(bus.clone());
                    (Arc::new(TieredStore::new(l1, l2, bus)), redis)
                } else {
                    let redis = match redis {
                        Some(r) => Some(r),
                        None => cluster_redis(self, cluster, src, env, errs),
                    };
                    (l2, redis)
                }
            }
        };
        if redis.is_none() {
            for (set, key) in [
                (cluster.coalesce == Some(true), "cluster.coalesce"),
                (cluster.shared_quota == Some(true), "cluster.shared_quota"),
            ] {
                if set {
                    errs.push(src.err(
                        None,
                        key,
                        "needs a Redis: a redis or tiered store, or [cluster] redis_url",
                    ));
                }
            }
        }
        let flights = match &redis {
            Some(r) if cluster.coalesce != Some(false) => {
                let lock_ttl = cluster.lock_ttl.map_or(Duration::from_secs(5), |d| d.0);
                if lock_ttl < Duration::from_millis(100) {
                    errs.push(src.err(None, "cluster.lock_ttl", "lock_ttl must be at least 100ms"));
                }
                let poll = cluster.poll.map_or(Duration::from_millis(100), |d| d.0);
                if poll.is_zero() {
                    errs.push(src.err(None, "cluster.poll", "poll must be greater than zero"));
                }
                Some(Arc::new(SharedFlights::new(
                    r.clone(),
                    lock_ttl,
                    poll,
                    cluster.lock_wait.map_or(Duration::from_secs(30), |d| d.0),
                )))
            }
            _ => None,
        };
        let quota_redis = redis.filter(|_| cluster.shared_quota != Some(false));
        Some(Built {
            store,
            quota_redis,
            flights,
        })
    }
}

/// `[cluster] redis_url`, connected.
fn cluster_redis(
    store: &RawStore,
    cluster: &RawCluster,
    src: &Source,
    env: &Env<'_>,
    errs: &mut Vec<ConfigError>,
) -> Option<Arc<Redis>> {
    let url = cluster.redis_url.as_ref()?;
    let mut opts = store.redis_options(vec![url.clone()], src, env, errs, "cluster.redis_url");
    opts.cluster = false;
    if !errs.is_empty() {
        return None;
    }
    match Redis::connect(&opts) {
        Ok(r) => Some(r),
        Err(e) => {
            errs.push(src.err(span(url), "cluster.redis_url", e.to_string()));
            None
        }
    }
}
