//! The Memcached store: the same semantics as the redis store within memcached's
//! limits.
//!
//! - **Keys.** Memcached keys are at most 250 bytes without spaces, so an entry
//!   lives under `{namespace}:e:{xxh3-128 of the key}`. The full key is stored inside
//!   the value and compared on read, so a hash collision is a miss, never a wrong
//!   answer.
//! - **Expiry.** Native, at the entry's `stale_until` (seconds; absolute Unix time
//!   beyond memcached's 30-day relative limit).
//! - **Item size.** Entries above the item size (`-I`, 1 MiB by default) are not
//!   stored; they are counted in `sluice_store_too_large_total` and passed through,
//!   not errors. The server's own "object too large" refusal is treated the same.
//! - **Purge by route.** Memcached cannot list keys. Each route (the key part before
//!   the first space) has a generation counter; every entry carries the generation
//!   it was stored under, and a read fetches entry and counter in one `get` (one
//!   round trip). Purging a route increments its counter, which turns all its
//!   entries into misses at once. Prefixes narrower than a route are refused.
//! - **Connections.** A small pool of connections; a broken one is replaced on its
//!   next use.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_memcached::{AsciiProtocol, Client};
use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_spanned::Spanned;
use sluice_core::config::{Dur, RawSecret, Size};
use tokio::sync::Mutex;

use crate::codec;
use crate::entry::Entry;
use crate::error::StoreError;
use crate::metrics;
use crate::store::{PutOutcome, Store, StoreStats};
use crate::tiered::RawTieredStore;
use sluice_core::Backend;
use sluice_core::{Clock, SystemClock};

/// Memcached's limit for relative expiry times, in seconds.
const RELATIVE_TTL_LIMIT: i64 = 30 * 24 * 3600;

/// Bytes memcached itself needs per item beyond key and value (item header, CAS,
/// suffix), counted against the item size.
const ITEM_OVERHEAD: usize = 64;

/// `kind = "memcached"`: entries in Memcached, shared by every node. Memcached
/// holds no locks, quotas or purge notices: give `[cluster] redis_url` for those.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemcachedStore {
    /// The server: `memcache://host:port`.
    pub url: Option<Spanned<String>>,
    /// Prefix of every key (`{namespace}:e:{hash}`), so deployments can share
    /// one server. Default `sluice`.
    pub namespace: Option<Spanned<String>>,
    /// Longest wait for one command; then it counts as down. Default `250ms`.
    pub timeout: Option<Dur>,
    /// The server's item size limit (`memcached -I`); larger entries pass
    /// through uncached, counted in `sluice_store_too_large_total`. Default
    /// `1MiB`.
    pub max_item_size: Option<Size>,
    /// Connections per node. Default 8.
    pub pool_size: Option<usize>,
    /// The password of `[cluster] redis_url`'s Redis, when not in its URL:
    /// `{ env = "REDIS_PASSWORD" }`.
    pub password: Option<RawSecret>,
    /// PEM file of the CA that signed the certificate of `[cluster]
    /// redis_url`'s Redis, for `rediss://` with a private CA.
    pub tls_ca_file: Option<Spanned<String>>,
}

impl RawMemcachedStore {
    /// This kind's keys among those of every shared kind.
    pub(crate) fn keys(&self) -> RawTieredStore {
        RawTieredStore {
            url: self.url.clone(),
            namespace: self.namespace.clone(),
            timeout: self.timeout,
            max_item_size: self.max_item_size,
            pool_size: self.pool_size,
            password: self.password.clone(),
            tls_ca_file: self.tls_ca_file.clone(),
            ..RawTieredStore::default()
        }
    }
}

/// How to reach Memcached.
#[derive(Debug, Clone)]
pub struct MemcachedOptions {
    /// `memcache://host:port`, `tcp://host:port` or `host:port`.
    pub url: String,
    /// Prefix of every key.
    pub namespace: String,
    /// The server's item size limit (`memcached -I`, default 1 MiB).
    pub max_item_bytes: usize,
    /// Connections kept open.
    pub pool_size: usize,
    /// Longest wait for one command.
    pub timeout: Duration,
}

impl Default for MemcachedOptions {
    fn default() -> Self {
        Self {
            url: "memcache://127.0.0.1:11211".into(),
            namespace: "sluice".into(),
            max_item_bytes: 1 << 20,
            pool_size: 8,
            timeout: Duration::from_millis(500),
        }
    }
}

/// Entries in Memcached.
pub struct MemcachedStore {
    dsn: String,
    namespace: String,
    max_item_bytes: usize,
    timeout: Duration,
    pool: Vec<Mutex<Option<Client>>>,
    next: AtomicUsize,
    health: Backend,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedStore")
            .field("dsn", &self.dsn)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// One operation on a pooled connection.
type Op<'c, T> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<T, async_memcached::Error>> + Send + 'c>,
>;

/// What one pooled call failed with.
enum CallError {
    /// The server refused the item for its size.
    TooLarge,
    /// Anything else.
    Other(String),
}

impl MemcachedStore {
    /// A store on `opts.url`; connects lazily.
    ///
    /// # Errors
    ///
    /// [`StoreError::Invalid`] when the URL is not `memcache://host:port`,
    /// `tcp://host:port` or `host:port`, or the namespace is empty, too long or
    /// holds spaces or control characters.
    pub fn new(opts: &MemcachedOptions) -> Result<Self, StoreError> {
        let invalid = |message: String| StoreError::Invalid {
            store: "memcached",
            message,
        };
        let rest = opts
            .url
            .strip_prefix("memcache://")
            .or_else(|| opts.url.strip_prefix("memcached://"))
            .or_else(|| opts.url.strip_prefix("tcp://"))
            .unwrap_or(&opts.url);
        let rest = rest.trim_end_matches('/');
        let valid = rest
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !valid || rest.contains('/') || rest.contains('@') {
            return Err(invalid(format!(
                "Memcached URL {:?} must be memcache://host:port",
                opts.url
            )));
        }
        if opts.namespace.is_empty()
            || opts.namespace.len() > 64
            || opts.namespace.bytes().any(|b| b <= b' ' || b == 0x7f)
        {
            return Err(invalid(format!(
                "namespace {:?} must be 1 to 64 characters without spaces or control characters",
                opts.namespace
            )));
        }
        Ok(Self {
            dsn: format!("tcp://{rest}"),
            namespace: opts.namespace.clone(),
            max_item_bytes: opts.max_item_bytes,
            timeout: opts.timeout,
            pool: (0..opts.pool_size.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            health: Backend::new("memcached"),
            clock: Arc::new(SystemClock),
        })
    }

    /// The clock that turns `stale_until` into an expiry (default: system).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn entry_key(&self, key: &str) -> String {
        format!(
            "{}:e:{:032x}",
            self.namespace,
            xxhash_rust::xxh3::xxh3_128(key.as_bytes())
        )
    }

    fn gen_key(&self, key: &str) -> String {
        let route = key.split(' ').next().unwrap_or(key);
        format!(
            "{}:g:{:032x}",
            self.namespace,
            xxhash_rust::xxh3::xxh3_128(route.as_bytes())
        )
    }

    /// Runs `f` on a pooled connection, connecting when needed, with the timeout,
    /// breaker and health reporting.
    async fn call<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c mut Client) -> Op<'c, T>,
    {
        match self.call_raw(op, f).await {
            Ok(v) => Ok(v),
            Err(CallError::TooLarge) => Err(StoreError::Unavailable {
                store: "memcached",
                message: "object too large".into(),
            }),
            Err(CallError::Other(m)) => Err(StoreError::Unavailable {
                store: "memcached",
                message: m,
            }),
        }
    }

    async fn call_raw<T, F>(&self, op: &'static str, f: F) -> Result<T, CallError>
    where
        F: for<'c> FnOnce(&'c mut Client) -> Op<'c, T>,
    {
        if !self.health.should_try() {
            return Err(CallError::Other(self.health.skipped(op).to_string()));
        }
        let slot = &self.pool[self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len()];
        let mut guard = slot.lock().await;
        let work = async {
            if guard.as_ref().is_none_or(Client::is_closed) {
                *guard = Some(Client::new(&self.dsn).await?);
            }
            let client = guard
                .as_mut()
                .ok_or(async_memcached::Error::ConnectionClosed)?;
            f(client).await
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(v)) => {
                self.health.ok();
                Ok(v)
            }
            Ok(Err(async_memcached::Error::Protocol(async_memcached::Status::Error(
                async_memcached::ErrorKind::Server(m),
            )))) if m.contains("too large") => {
                self.health.ok();
                Err(CallError::TooLarge)
            }
            Ok(Err(e)) => {
                *guard = None;
                Err(CallError::Other(
                    self.health.failed(op, e.to_string()).to_string(),
                ))
            }
            Err(_) => {
                *guard = None;
                Err(CallError::Other(
                    self.health
                        .failed(op, format!("no answer within {:?}", self.timeout))
                        .to_string(),
                ))
            }
        }
    }

    /// Reads a route's generation.
    async fn generation(&self, gen_key: &str) -> Result<u64, StoreError> {
        let gk = gen_key.to_owned();
        let v = self
            .call("get", move |c| Box::pin(async move { c.get(&gk).await }))
            .await?;
        Ok(v.and_then(|v| v.data)
            .and_then(|d| String::from_utf8(d).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0))
    }

    fn ttl_secs(&self, e: &Entry) -> Option<i64> {
        let left_ms = e.stale_until - self.clock.now_millis();
        if left_ms <= 0 {
            return None;
        }
        let secs = (left_ms + 999) / 1000;
        Some(if secs > RELATIVE_TTL_LIMIT {
            e.stale_until / 1000 + 1
        } else {
            secs
        })
    }
}

#[async_trait]
impl Store for MemcachedStore {
    fn kind(&self) -> &'static str {
        "memcached"
    }

    fn max_entry_bytes(&self) -> usize {
        self.max_item_bytes
    }

    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, StoreError> {
        let ek = self.entry_key(key);
        let gk = self.gen_key(key);
        let keys = [ek.clone(), gk.clone()];
        let values = self
            .call("get", move |c| {
                Box::pin(async move {
                    match c.get_multi(&keys).await {
                        Ok(v) => Ok(v),
                        Err(async_memcached::Error::Protocol(
                            async_memcached::Status::NotFound,
                        )) => Ok(Vec::new()),
                        Err(e) => Err(e),
                    }
                })
            })
            .await?;
        let mut generation = 0u64;
        let mut raw = None;
        for v in values {
            if v.key == gk.as_bytes() {
                generation = v
                    .data
                    .and_then(|d| String::from_utf8(d).ok())
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
            } else if v.key == ek.as_bytes() {
                raw = v.data;
            }
        }
        let Some(raw) = raw else { return Ok(None) };
        let mut buf = Bytes::from(raw);
        let corrupt = |message: String| StoreError::Corrupt {
            store: "memcached",
            key: key.to_owned(),
            message,
        };
        if buf.remaining() < 8 {
            return Err(corrupt("shorter than its generation".into()));
        }
        let stored_gen = buf.get_u64();
        if stored_gen != generation {
            return Ok(None);
        }
        match codec::decode(buf) {
            Ok((k, e)) if k == key => Ok(Some(Arc::new(e))),
            // Another key with the same hash: a miss.
            Ok(_) => Ok(None),
            Err(e) => Err(corrupt(e.message)),
        }
    }

    async fn put(&self, key: &str, entry: Arc<Entry>) -> Result<PutOutcome, StoreError> {
        let encoded = codec::encode(key, &entry);
        let ek = self.entry_key(key);
        if 8 + encoded.len() + ek.len() + ITEM_OVERHEAD > self.max_item_bytes {
            metrics::too_large("memcached");
            return Ok(PutOutcome::TooLarge);
        }
        let Some(ttl) = self.ttl_secs(&entry) else {
            return Ok(PutOutcome::Stored);
        };
        let generation = self.generation(&self.gen_key(key)).await?;
        let mut value = BytesMut::with_capacity(8 + encoded.len());
        value.put_u64(generation);
        value.put_slice(&encoded);
        let value = value.freeze();
        let res = self
            .call_raw("put", move |c| {
                Box::pin(async move { c.set(&ek, value.as_ref(), Some(ttl), None).await })
            })
            .await;
        match res {
            Ok(()) => Ok(PutOutcome::Stored),
            Err(CallError::TooLarge) => {
                metrics::too_large("memcached");
                Ok(PutOutcome::TooLarge)
            }
            Err(CallError::Other(message)) => Err(StoreError::Unavailable {
                store: "memcached",
                message,
            }),
        }
    }

    async fn purge(&self, key: &str) -> Result<bool, StoreError> {
        let ek = self.entry_key(key);
        self.call("purge", move |c| {
            Box::pin(async move {
                match c.delete(&ek).await {
                    Ok(()) => Ok(true),
                    Err(async_memcached::Error::Protocol(async_memcached::Status::NotFound)) => {
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            })
        })
        .await
    }

    async fn purge_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let Some(route) = prefix.strip_suffix(' ').filter(|r| !r.contains(' ')) else {
            return Err(StoreError::Unsupported {
                store: "memcached",
                message: format!(
                    "memcached cannot list keys: purge a whole route or one key, not the prefix {prefix:?}"
                ),
            });
        };
        let gk = self.gen_key(route);
        self.call("purge", move |c| {
            Box::pin(async move {
                match c.increment(&gk, 1).await {
                    Ok(_) => Ok(()),
                    Err(async_memcached::Error::Protocol(async_memcached::Status::NotFound)) => {
                        // First purge of this route: start at 1; if another node won
                        // the race, increment theirs.
                        match c.add(&gk, "1", None, None).await {
                            Ok(()) => Ok(()),
                            Err(_) => c.increment(&gk, 1).await.map(|_| ()),
                        }
                    }
                    Err(e) => Err(e),
                }
            })
        })
        .await?;
        // Memcached cannot count what a generation bump invalidated.
        Ok(0)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let s = self
            .call("stats", |c| Box::pin(async move { c.stats().await }))
            .await?;
        let num = |k: &str| s.get(k).and_then(|v| v.parse::<u64>().ok());
        Ok(StoreStats {
            entries: num("curr_items").unwrap_or(0),
            bytes: num("bytes").unwrap_or(0),
            max_bytes: num("limit_maxbytes"),
        })
    }

    fn degraded(&self) -> Option<String> {
        self.health.degraded()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        for ok in ["memcache://127.0.0.1:11211", "tcp://h:1", "h:11211"] {
            let o = MemcachedOptions {
                url: ok.into(),
                ..Default::default()
            };
            assert!(MemcachedStore::new(&o).is_ok(), "{ok}");
        }
        for bad in ["memcache://h", "redis://h:1/x", "h:port", ""] {
            let o = MemcachedOptions {
                url: bad.into(),
                ..Default::default()
            };
            let err = MemcachedStore::new(&o).unwrap_err();
            assert!(
                err.to_string().contains("memcache://host:port"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn keys_fit_memcached_and_group_by_route() {
        let s = MemcachedStore::new(&MemcachedOptions::default()).unwrap();
        let long = format!("air GET /x?{}", "a".repeat(2000));
        let k = s.entry_key(&long);
        assert!(k.len() <= 250 && !k.contains(' '), "{k}");
        assert_eq!(s.gen_key("air GET /x"), s.gen_key("air GET /y?b=1"));
        assert_eq!(s.gen_key("air GET /x"), s.gen_key("air"));
        assert_ne!(s.gen_key("air GET /x"), s.gen_key("bus GET /x"));
    }
}
