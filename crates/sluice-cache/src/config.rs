//! `[store]` and `[cluster]`: the registry of store kinds and what several nodes
//! share.
//!
//! [`RawStore`] is one `#[serde(tag = "kind")]` enum, a variant per kind, each
//! kind's keys a struct beside its implementation ([`RawMemoryStore`] in
//! `memory.rs`, [`RawRedisStore`] in `redis_store.rs`, [`RawMemcachedStore`] in
//! `memcached.rs`, [`RawTieredStore`] in `tiered.rs`), so a key of another kind
//! is an error naming it. A new kind is a file here plus one variant (and its
//! word in [`StoreKind`] and its arm in [`RawStore::deserialize_kind`] and
//! [`RawStore::build`]).
//!
//! `kind` may be left out (memory). serde's buffering of internally tagged
//! enums would lose every position, and cannot default the tag: a loader that
//! keeps positions (TOML with spans) reads `kind` as a [`StoreKind`] itself and
//! calls [`RawStore::deserialize_kind`] with the other keys, so every error
//! keeps its line and key (`unknown field \`pool_size\`` points at `pool_size`).
//!
//! [`RawCluster`] lives here too rather than in the binary: its Redis defaults
//! to the store's, is connected with the store's password, namespace and
//! timeout, carries a tiered store's purge notices when the L2 is Memcached, and
//! what it builds ([`SharedFlights`]) is the cache's. [`RawStore::build`] turns
//! both into a [`BuiltStore`], reporting every problem as a [`StoreConfigError`]
//! with its key and, when known, the span of the value in the config text.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::Deserializer;
use serde_spanned::Spanned;
use sluice_core::config::{Dur, Env};
use sluice_core::{Redis, RedisOptions};

use crate::flights::SharedFlights;
use crate::memcached::{MemcachedOptions, MemcachedStore, RawMemcachedStore};
use crate::memory::{MemoryStore, RawMemoryStore, max_body};
use crate::redis_store::{RawRedisStore, RedisStore};
use crate::store::Store;
use crate::tiered::{RawTieredStore, TieredStore};

/// The `kind` of a `[store]`.
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

impl StoreKind {
    /// The word written in `kind = …`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
            Self::Memcached => "memcached",
            Self::Tiered => "tiered",
        }
    }
}

/// `[store]`: where cache entries live. `kind` picks the store (default
/// `memory`); each kind has its own keys, and a key of another kind is an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RawStore {
    /// `kind = "memory"`: in this process (the default).
    Memory(RawMemoryStore),
    /// `kind = "redis"`: in Redis, shared by every node.
    Redis(RawRedisStore),
    /// `kind = "memcached"`: in Memcached, shared by every node.
    Memcached(RawMemcachedStore),
    /// `kind = "tiered"`: a memory L1 in front of Redis or Memcached.
    Tiered(RawTieredStore),
}

impl Default for RawStore {
    fn default() -> Self {
        Self::Memory(RawMemoryStore::default())
    }
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

/// A problem with `[store]` or `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
#[non_exhaustive]
pub struct StoreConfigError {
    /// The key, with its table: `store.url`, `cluster.lock_ttl`.
    pub key: &'static str,
    /// Where the wrong value is in the config text (a byte range), when known;
    /// else a loader locates `key`.
    pub span: Option<Range<usize>>,
    /// What is wrong; never a password.
    pub message: String,
}

/// What `[store]` and `[cluster]` build.
#[derive(Debug)]
pub struct BuiltStore {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The Redis for quotas, when shared quotas are on.
    pub quota_redis: Option<Arc<Redis>>,
    /// Cluster-wide coalescing, when a Redis is known and it is on.
    pub flights: Option<Arc<SharedFlights>>,
}

/// The problems found so far.
#[derive(Default)]
struct Errors(Vec<StoreConfigError>);

impl Errors {
    fn push(&mut self, span: Option<Range<usize>>, key: &'static str, message: impl Into<String>) {
        self.0.push(StoreConfigError {
            key,
            span,
            message: message.into(),
        });
    }
}

enum Shared {
    Redis(Arc<Redis>),
    Memcached(Arc<MemcachedStore>),
}

fn url_scheme(u: &str) -> &str {
    u.split_once("://").map_or("", |(s, _)| s)
}

impl RawStore {
    /// Reads kind `kind`'s keys (the table without `kind`) straight from `rest`,
    /// so the deserializer's positions survive.
    ///
    /// # Errors
    ///
    /// The kind's own errors (a key of another kind, a wrong type), as `D`
    /// reports them.
    pub fn deserialize_kind<'de, D: Deserializer<'de>>(
        kind: StoreKind,
        rest: D,
    ) -> Result<Self, D::Error> {
        Ok(match kind {
            StoreKind::Memory => Self::Memory(RawMemoryStore::deserialize(rest)?),
            StoreKind::Redis => Self::Redis(RawRedisStore::deserialize(rest)?),
            StoreKind::Memcached => Self::Memcached(RawMemcachedStore::deserialize(rest)?),
            StoreKind::Tiered => Self::Tiered(RawTieredStore::deserialize(rest)?),
        })
    }

    /// The store's kind.
    pub fn kind(&self) -> StoreKind {
        match self {
            Self::Memory(_) => StoreKind::Memory,
            Self::Redis(_) => StoreKind::Redis,
            Self::Memcached(_) => StoreKind::Memcached,
            Self::Tiered(_) => StoreKind::Tiered,
        }
    }

    /// Builds the store and the cluster-wide parts (connections are lazy: no
    /// server is contacted), on `env`'s clock, with its secrets.
    ///
    /// # Errors
    ///
    /// Every problem found, not only the first.
    pub fn build(
        &self,
        cluster: &RawCluster,
        env: &Env<'_>,
    ) -> Result<BuiltStore, Vec<StoreConfigError>> {
        let mut errs = Errors::default();
        let built = self.build_into(cluster, env, &mut errs);
        match built {
            Some(b) if errs.0.is_empty() => Ok(b),
            _ => Err(errs.0),
        }
    }

    fn build_into(
        &self,
        cluster: &RawCluster,
        env: &Env<'_>,
        errs: &mut Errors,
    ) -> Option<BuiltStore> {
        let keys = match self {
            Self::Memory(m) => {
                let store = Arc::new(m.build(env.clock.clone()));
                return Some(cluster.build(store, None, errs));
            }
            Self::Redis(r) => r.keys(),
            Self::Memcached(m) => m.keys(),
            Self::Tiered(t) => t.clone(),
        };
        let kind = self.kind();
        let shared = keys.shared(kind, env, errs)?;
        let max_body = max_body(keys.max_body);
        let (l2, redis): (Arc<dyn Store>, Option<Arc<Redis>>) = match shared {
            Shared::Redis(r) => (
                Arc::new(RedisStore::new(r.clone(), max_body).with_clock(env.clock.clone())),
                Some(r),
            ),
            Shared::Memcached(m) => (m, None),
        };
        // Without a Redis of its own, the cluster's carries locks, quotas and
        // (for a tiered store) purge notices.
        let redis = match redis {
            Some(r) => Some(r),
            None => keys.cluster_redis(cluster, env, errs),
        };
        let store: Arc<dyn Store> = if kind == StoreKind::Tiered {
            let ttl = keys.l1_ttl.map_or(Duration::from_secs(5), |d| d.0);
            let l1 =
                MemoryStore::configured(keys.max_bytes, 64 << 20, keys.max_body, env.clock.clone())
                    .max_ttl(ttl)
                    .build();
            Arc::new(TieredStore::new(l1, l2, redis.clone()))
        } else {
            l2
        };
        Some(cluster.build(store, redis, errs))
    }
}

impl RawCluster {
    /// Flights and shared quotas on `redis`, around `store`.
    fn build(
        &self,
        store: Arc<dyn Store>,
        redis: Option<Arc<Redis>>,
        errs: &mut Errors,
    ) -> BuiltStore {
        if redis.is_none() {
            for (set, key) in [
                (self.coalesce == Some(true), "cluster.coalesce"),
                (self.shared_quota == Some(true), "cluster.shared_quota"),
            ] {
                if set {
                    errs.push(
                        None,
                        key,
                        "needs a Redis: a redis or tiered store, or [cluster] redis_url",
                    );
                }
            }
        }
        let flights = match &redis {
            Some(r) if self.coalesce != Some(false) => {
                let lock_ttl = self.lock_ttl.map_or(Duration::from_secs(5), |d| d.0);
                if lock_ttl < Duration::from_millis(100) {
                    errs.push(None, "cluster.lock_ttl", "lock_ttl must be at least 100ms");
                }
                let poll = self.poll.map_or(Duration::from_millis(100), |d| d.0);
                if poll.is_zero() {
                    errs.push(None, "cluster.poll", "poll must be greater than zero");
                }
                Some(Arc::new(SharedFlights::new(
                    r.clone(),
                    lock_ttl,
                    poll,
                    self.lock_wait.map_or(Duration::from_secs(30), |d| d.0),
                )))
            }
            _ => None,
        };
        BuiltStore {
            store,
            quota_redis: redis.filter(|_| self.shared_quota != Some(false)),
            flights,
        }
    }
}

/// Building a shared store from its keys: those of `tiered`, the kind that has
/// every one (the other shared kinds lend theirs through `keys()`).
impl RawTieredStore {
    fn namespace(&self, errs: &mut Errors) -> String {
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
            errs.push(
                Some(ns.span()),
                "store.namespace",
                format!("namespace {v:?} must be 1 to 64 letters, digits, '-', '_', '.' or ':'"),
            );
        }
        v.clone()
    }

    /// The configured URLs, located; an error when none is given.
    fn urls(&self, kind: StoreKind, errs: &mut Errors) -> Vec<Spanned<String>> {
        match (&self.url, &self.urls) {
            (Some(u), None) => vec![u.clone()],
            (None, Some(us)) if !us.is_empty() => us.clone(),
            (Some(_), Some(_)) => {
                errs.push(None, "store.urls", "give either url or urls, not both");
                Vec::new()
            }
            _ => {
                errs.push(
                    None,
                    "store.url",
                    format!(
                        "store kind {:?} needs url = \"redis://host:port\" or \"memcache://host:port\"",
                        kind.as_str()
                    ),
                );
                Vec::new()
            }
        }
    }

    /// The shared store (the L2 of a tiered one), connected.
    fn shared(&self, kind: StoreKind, env: &Env<'_>, errs: &mut Errors) -> Option<Shared> {
        let urls = self.urls(kind, errs);
        let first = urls.first()?.clone();
        let memcached = matches!(url_scheme(first.get_ref()), "memcache" | "memcached");
        let want_memcached = match kind {
            StoreKind::Memcached => true,
            StoreKind::Redis => false,
            _ => memcached,
        };
        if want_memcached {
            if !memcached {
                errs.push(
                    Some(first.span()),
                    "store.url",
                    "a memcached store needs url = \"memcache://host:port\"",
                );
                return None;
            }
            if urls.len() > 1 || self.cluster {
                errs.push(
                    Some(first.span()),
                    "store.urls",
                    "a memcached store takes one url (and no cluster = true)",
                );
                return None;
            }
            let opts = MemcachedOptions {
                url: first.get_ref().clone(),
                namespace: self.namespace(errs),
                max_item_bytes: self.max_item_size.map_or(1 << 20, |s| s.0 as usize),
                pool_size: self.pool_size.unwrap_or(8),
                timeout: self.timeout.map_or(Duration::from_millis(250), |d| d.0),
            };
            if opts.pool_size == 0 {
                errs.push(None, "store.pool_size", "pool_size must be at least 1");
            }
            return match MemcachedStore::new(&opts) {
                Ok(s) => Some(Shared::Memcached(Arc::new(s.with_clock(env.clock.clone())))),
                Err(e) => {
                    errs.push(Some(first.span()), "store.url", e.to_string());
                    None
                }
            };
        }
        if urls.len() > 1 && !self.cluster {
            errs.push(
                Some(urls[1].span()),
                "store.urls",
                "several Redis URLs need cluster = true",
            );
            return None;
        }
        self.connect(urls, env, errs, "store.url")
            .map(Shared::Redis)
    }

    /// `[cluster] redis_url`, connected with this store's Redis keys.
    fn cluster_redis(
        &self,
        cluster: &RawCluster,
        env: &Env<'_>,
        errs: &mut Errors,
    ) -> Option<Arc<Redis>> {
        let url = cluster.redis_url.as_ref()?;
        let keys = Self {
            cluster: false,
            ..self.clone()
        };
        keys.connect(vec![url.clone()], env, errs, "cluster.redis_url")
    }

    /// A Redis on `urls`, with these keys' password, namespace, timeout and CA;
    /// none when a problem was found already (the options are then not to be
    /// trusted). A URL that is not Redis's, or a connection error, is at `key`.
    fn connect(
        &self,
        urls: Vec<Spanned<String>>,
        env: &Env<'_>,
        errs: &mut Errors,
        key: &'static str,
    ) -> Option<Arc<Redis>> {
        let first = urls.first()?.span();
        for u in &urls {
            if !matches!(url_scheme(u.get_ref()), "redis" | "rediss") {
                errs.push(
                    Some(u.span()),
                    key,
                    format!(
                        "{} is not a Redis URL; write redis://host:port or rediss://host:port",
                        sluice_core::redact_url(u.get_ref())
                    ),
                );
            }
        }
        let urls_are_tls = urls.iter().all(|u| url_scheme(u.get_ref()) == "rediss");
        let opts = RedisOptions {
            urls: urls.into_iter().map(Spanned::into_inner).collect(),
            cluster: self.cluster,
            namespace: self.namespace(errs),
            password: self.password.as_ref().and_then(|p| {
                p.read(env)
                    .map_err(|e| errs.push(e.span, "store.password", e.message))
                    .ok()
                    .map(|s| s.expose().to_owned())
            }),
            timeout: self
                .timeout
                .map_or(Duration::from_millis(250), |d| d.0)
                .max(Duration::from_millis(1)),
            connect_timeout: Duration::from_secs(1),
            tls_ca_pem: self.tls_ca_file.as_ref().and_then(|f| {
                if !urls_are_tls {
                    errs.push(
                        Some(f.span()),
                        "store.tls_ca_file",
                        "tls_ca_file is for rediss:// URLs; these are redis:// (no TLS)",
                    );
                }
                std::fs::read(f.get_ref())
                    .map_err(|e| {
                        errs.push(
                            Some(f.span()),
                            "store.tls_ca_file",
                            format!("cannot read {}: {e}", f.get_ref()),
                        );
                    })
                    .ok()
            }),
        };
        if !errs.0.is_empty() {
            return None;
        }
        Redis::connect(&opts)
            .map_err(|e| errs.push(Some(first), key, e.to_string()))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env() -> Env<'static> {
        Env {
            var: &|_| None,
            clock: Arc::new(sluice_core::SystemClock),
            secrets_optional: false,
        }
    }

    #[test]
    fn each_kind_takes_its_own_keys_only() {
        let e =
            RawStore::deserialize_kind(StoreKind::Redis, json!({ "pool_size": 4 })).unwrap_err();
        assert!(e.to_string().contains("unknown field `pool_size`"), "{e}");
        let e =
            RawStore::deserialize_kind(StoreKind::Memory, json!({ "l1_ttl": "5s" })).unwrap_err();
        assert!(e.to_string().contains("unknown field `l1_ttl`"), "{e}");
        let s =
            RawStore::deserialize_kind(StoreKind::Memcached, json!({ "pool_size": 4 })).unwrap();
        assert_eq!(s.kind(), StoreKind::Memcached);
        let s: RawStore =
            serde_json::from_value(json!({ "kind": "tiered", "l1_ttl": "1s" })).unwrap();
        assert_eq!(s.kind(), StoreKind::Tiered);
        assert_eq!(RawStore::default().kind(), StoreKind::Memory);
    }

    #[tokio::test]
    async fn problems_carry_their_key_and_the_span_of_their_value() {
        let url = |at: Range<usize>, u: &str| Spanned::new(at, u.to_owned());
        let store = RawStore::Redis(RawRedisStore {
            urls: Some(vec![url(0..11, "redis://a:1"), url(20..31, "redis://b:2")]),
            ..RawRedisStore::default()
        });
        let errs = store.build(&RawCluster::default(), &env()).unwrap_err();
        assert_eq!(
            errs,
            [StoreConfigError {
                key: "store.urls",
                span: Some(20..31),
                message: "several Redis URLs need cluster = true".into(),
            }]
        );
        let cluster = RawCluster {
            coalesce: Some(true),
            ..RawCluster::default()
        };
        let errs = RawStore::default().build(&cluster, &env()).unwrap_err();
        assert_eq!(errs[0].key, "cluster.coalesce");
        let built = RawStore::default()
            .build(&RawCluster::default(), &env())
            .unwrap();
        assert_eq!(built.store.kind(), "memory");
        assert!(built.flights.is_none() && built.quota_redis.is_none());
    }
}
