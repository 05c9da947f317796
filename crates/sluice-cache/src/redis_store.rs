//! The Redis store: entries shared by every node of a deployment.
//!
//! An entry is one Redis string under `{namespace}:e:{key}`, in the versioned binary
//! encoding of [`crate::codec`], with native expiry (`PX`) at the entry's
//! `stale_until`. A cache hit is exactly one command (`GET`).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde_spanned::Spanned;
use sluice_core::config::{Dur, RawSecret, Size};

use crate::codec;
use crate::entry::Entry;
use crate::error::StoreError;
use crate::store::{PutOutcome, Store, StoreStats};
use crate::tiered::RawTieredStore;
use sluice_core::Redis;
use sluice_core::{Clock, SystemClock};

/// `kind = "redis"`: entries in Redis (a server, or a cluster with `cluster =
/// true`), shared by every node; its locks, quotas and purge notices go there
/// too unless `[cluster]` says otherwise.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisStore {
    /// Largest response stored; larger ones are passed through uncached
    /// (`detail=too-large`). Default `8MiB`.
    pub max_body: Option<Size>,
    /// The Redis: `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS).
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
    /// can share one server. Default `sluice`.
    pub namespace: Option<Spanned<String>>,
    /// Longest wait for one command to Redis; then it counts as down. Default
    /// `250ms`.
    pub timeout: Option<Dur>,
}

impl RawRedisStore {
    /// This kind's keys among those of every shared kind.
    pub(crate) fn keys(&self) -> RawTieredStore {
        RawTieredStore {
            max_body: self.max_body,
            url: self.url.clone(),
            urls: self.urls.clone(),
            cluster: self.cluster,
            password: self.password.clone(),
            tls_ca_file: self.tls_ca_file.clone(),
            namespace: self.namespace.clone(),
            timeout: self.timeout,
            ..RawTieredStore::default()
        }
    }
}

/// Entries in Redis (a server or a cluster).
#[derive(Debug, Clone)]
pub struct RedisStore {
    redis: Arc<Redis>,
    max_entry_bytes: usize,
    clock: Arc<dyn Clock>,
}

impl RedisStore {
    /// A store on `redis`, refusing entries heavier than `max_entry_bytes`.
    pub fn new(redis: Arc<Redis>, max_entry_bytes: usize) -> Self {
        Self {
            redis,
            max_entry_bytes,
            clock: Arc::new(SystemClock),
        }
    }

    /// The clock that turns `stale_until` into a Redis expiry (default: system).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The Redis this store uses.
    pub fn redis(&self) -> &Arc<Redis> {
        &self.redis
    }

    fn entry_key(&self, key: &str) -> String {
        self.redis.key("e", key)
    }

    /// Deletes every Redis key matching `pattern` (SCAN + UNLINK, on every master of
    /// a cluster).
    async fn delete_matching(&self, pattern: &str) -> Result<u64, StoreError> {
        let mut n = 0u64;
        if self.redis.is_cluster() {
            for (host, port) in self.redis.masters().await? {
                let mut cursor = 0u64;
                loop {
                    let cmd = scan_cmd(cursor, pattern);
                    let (next, keys): (u64, Vec<String>) =
                        self.redis.query_node("scan", &host, port, cmd).await?;
                    for k in keys {
                        // One key at a time: keys of one SCAN page sit in different slots.
                        let del = redis::cmd("UNLINK").arg(&k).to_owned();
                        n += self.redis.query::<u64>("purge", &del).await?;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        } else {
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) =
                    self.redis.query("scan", &scan_cmd(cursor, pattern)).await?;
                if !keys.is_empty() {
                    let del = redis::cmd("UNLINK").arg(&keys).to_owned();
                    n += self.redis.query::<u64>("purge", &del).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(n)
    }
}

fn scan_cmd(cursor: u64, pattern: &str) -> redis::Cmd {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(1000)
        .to_owned()
}

/// Escapes the glob characters of `s` for a `SCAN MATCH` pattern.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn max_entry_bytes(&self) -> usize {
        self.max_entry_bytes
    }

    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, StoreError> {
        let cmd = redis::cmd("GET").arg(self.entry_key(key)).to_owned();
        let raw: Option<Vec<u8>> = self.redis.query("get", &cmd).await?;
        let Some(raw) = raw else { return Ok(None) };
        match codec::decode(Bytes::from(raw)) {
            Ok((k, e)) if k == key => Ok(Some(Arc::new(e))),
            Ok((k, _)) => Err(StoreError::Corrupt {
                store: "redis",
                key: key.to_owned(),
                message: format!("holds the entry of another key {k:?}"),
            }),
            Err(e) => Err(StoreError::Corrupt {
                store: "redis",
                key: key.to_owned(),
                message: e.message,
            }),
        }
    }

    async fn put(&self, key: &str, entry: Arc<Entry>) -> Result<PutOutcome, StoreError> {
        if entry.weight_under(key) > self.max_entry_bytes {
            crate::metrics::too_large("redis");
            return Ok(PutOutcome::TooLarge);
        }
        let ttl_ms = entry.stale_until - self.clock.now_millis();
        if ttl_ms <= 0 {
            return Ok(PutOutcome::Stored);
        }
        let cmd = redis::cmd("SET")
            .arg(self.entry_key(key))
            .arg(codec::encode(key, &entry).as_ref())
            .arg("PX")
            .arg(ttl_ms)
            .to_owned();
        self.redis.query::<()>("put", &cmd).await?;
        Ok(PutOutcome::Stored)
    }

    async fn purge(&self, key: &str) -> Result<bool, StoreError> {
        let cmd = redis::cmd("UNLINK").arg(self.entry_key(key)).to_owned();
        Ok(self.redis.query::<u64>("purge", &cmd).await? > 0)
    }

    async fn purge_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let pattern = format!("{}*", glob_escape(&self.entry_key(prefix)));
        self.delete_matching(&pattern).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        // Counting a namespace's keys means a SCAN of the whole keyspace; report the
        // server's own figures instead (the whole database, all namespaces).
        let mut entries = 0u64;
        let mut bytes = 0u64;
        let targets = if self.redis.is_cluster() {
            self.redis.masters().await?
        } else {
            Vec::new()
        };
        let infos: Vec<String> = if targets.is_empty() {
            vec![
                self.redis
                    .query("stats", &redis::cmd("INFO").arg("memory").to_owned())
                    .await?,
            ]
        } else {
            let mut v = Vec::new();
            for (h, p) in &targets {
                v.push(
                    self.redis
                        .query_node("stats", h, *p, redis::cmd("INFO").arg("memory").to_owned())
                        .await?,
                );
            }
            v
        };
        for info in &infos {
            bytes += info_field(info, "used_memory").unwrap_or(0);
        }
        if targets.is_empty() {
            entries = self.redis.query("stats", &redis::cmd("DBSIZE")).await?;
        } else {
            for (h, p) in &targets {
                entries += self
                    .redis
                    .query_node::<u64>("stats", h, *p, redis::cmd("DBSIZE"))
                    .await?;
            }
        }
        Ok(StoreStats {
            entries,
            bytes,
            max_bytes: None,
        })
    }

    fn degraded(&self) -> Option<String> {
        self.redis.health().degraded()
    }
}

fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn info_fields_are_read() {
        let info = "# Memory\r\nused_memory:1024\r\nused_memory_human:1K\r\n";
        assert_eq!(info_field(info, "used_memory"), Some(1024));
    }
}
