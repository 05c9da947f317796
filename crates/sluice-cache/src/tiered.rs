//! The tiered store: a bounded memory L1 in front of a shared L2.
//!
//! - A hit in L1 costs no network round trip; a miss there reads L2 and keeps the
//!   entry in L1 for at most the L1 TTL.
//! - Writes go to both. When L2 cannot be reached, L1 still keeps the entry, so a
//!   node keeps serving what it holds through an outage of the shared store.
//! - Purges and new entries are announced on the Redis event channel: every node
//!   drops its L1 copy when a key is purged anywhere, or stored by another node.
//!   When the subscription breaks and comes back, L1 is cleared, because notices
//!   sent in between were missed.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_spanned::Spanned;
use sluice_core::config::{Dur, RawSecret, Size};

use crate::coalesce::Coalescer;
use crate::entry::Entry;
use crate::error::StoreError;
use crate::memory::MemoryStore;
use crate::metrics;
use crate::store::{PutOutcome, Store, StoreStats};
use sluice_core::redis::{Event, Redis};

/// `kind = "tiered"`: a memory L1 on each node in front of Redis or Memcached
/// (picked by `url`'s scheme), with that kind's keys. The store is built from
/// this set of keys for every shared kind: it holds all of them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTieredStore {
    /// Byte bound of each node's L1, weighted by body + headers + key. Default
    /// `64MiB`.
    pub max_bytes: Option<Size>,
    /// Longest an entry stays in a node's L1 (purges evict it at once anyway).
    /// Default `5s`.
    pub l1_ttl: Option<Dur>,
    /// Largest response stored; larger ones are passed through uncached
    /// (`detail=too-large`). Default `8MiB`.
    pub max_body: Option<Size>,
    /// The L2: `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS) or
    /// `memcache://host:port`.
    pub url: Option<Spanned<String>>,
    /// Seed nodes of a Redis Cluster (with `cluster = true`), instead of `url`.
    pub urls: Option<Vec<Spanned<String>>>,
    /// The Redis URLs are a Redis Cluster. Default `false`.
    #[serde(default)]
    pub cluster: bool,
    /// Prefix of every key and channel, so deployments can share one server.
    /// Default `sluice`.
    pub namespace: Option<Spanned<String>>,
    /// Longest wait for one command to the L2; then it counts as down. Default
    /// `250ms`.
    pub timeout: Option<Dur>,
    /// Redis password, when not in the URL: `{ env = "REDIS_PASSWORD" }` (over
    /// Memcached: that of `[cluster] redis_url`).
    pub password: Option<RawSecret>,
    /// PEM file of the CA that signed the Redis server's certificate, for
    /// `rediss://` with a private CA (default: the system's roots).
    pub tls_ca_file: Option<Spanned<String>>,
    /// Over Memcached: the server's item size limit (`memcached -I`). Default
    /// `1MiB`.
    pub max_item_size: Option<Size>,
    /// Over Memcached: connections per node. Default 8.
    pub pool_size: Option<usize>,
}

/// Memory in front of a shared store.
#[derive(Debug, Clone)]
pub struct TieredStore {
    l1: MemoryStore,
    l2: Arc<dyn Store>,
    bus: Option<Arc<Redis>>,
    /// Concurrent L1 misses of one key share one L2 read (an L1 expiry under load
    /// would otherwise send every request in flight to L2 at once).
    reads: Coalescer<Result<Option<Arc<Entry>>, String>>,
}

impl TieredStore {
    /// `l1` in front of `l2`; purges travel over `bus` (Redis pub/sub) when given.
    /// Without a bus, a purge reaches only this node's L1 (and L2).
    pub fn new(l1: MemoryStore, l2: Arc<dyn Store>, bus: Option<Arc<Redis>>) -> Self {
        if let Some(bus) = &bus {
            let l1 = l1.clone();
            bus.on_event(move |ev, own| {
                let l1 = l1.clone();
                match ev {
                    Event::Purged(k) => {
                        metrics::purge_notice("key");
                        let k = k.clone();
                        tokio::spawn(async move { l1.purge(&k).await });
                    }
                    Event::Stored(k) if !own => {
                        let k = k.clone();
                        tokio::spawn(async move { l1.purge(&k).await });
                    }
                    Event::PurgedPrefix(p) => {
                        metrics::purge_notice("prefix");
                        let p = p.clone();
                        tokio::spawn(async move {
                            let _ = l1.purge_prefix(&p).await;
                        });
                    }
                    Event::Resubscribed => {
                        metrics::purge_notice("all");
                        l1.clear();
                    }
                    Event::Stored(_) | Event::FlightDone(_) => {}
                }
            });
        }
        Self {
            l1,
            l2,
            bus,
            reads: Coalescer::new(),
        }
    }

    /// The memory tier.
    pub fn l1(&self) -> &MemoryStore {
        &self.l1
    }

    /// The shared tier.
    pub fn l2(&self) -> &Arc<dyn Store> {
        &self.l2
    }
}

#[async_trait]
impl Store for TieredStore {
    fn kind(&self) -> &'static str {
        "tiered"
    }

    fn max_entry_bytes(&self) -> usize {
        self.l1.max_entry_bytes().max(self.l2.max_entry_bytes())
    }

    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, StoreError> {
        if let Some(e) = self.l1.get(key).await? {
            return Ok(Some(e));
        }
        let (l2, l1, owned) = (self.l2.clone(), self.l1.clone(), key.to_owned());
        let (res, _) = self
            .reads
            .run(key, move || async move {
                let found = l2.get(&owned).await.map_err(|e| e.to_string())?;
                if let Some(e) = &found {
                    let _ = l1.put(&owned, e.clone()).await;
                }
                Ok(found)
            })
            .await;
        let unavailable = |message: String| StoreError::Unavailable {
            store: self.l2.kind(),
            message,
        };
        res.map_err(|e| unavailable(e.to_string()))?
            .map_err(unavailable)
    }

    async fn put(&self, key: &str, entry: Arc<Entry>) -> Result<PutOutcome, StoreError> {
        let in_l1 = self.l1.put(key, entry.clone()).await?;
        match self.l2.put(key, entry).await {
            Ok(PutOutcome::Stored) => {
                if let Some(bus) = &self.bus {
                    bus.publish(&Event::Stored(key.to_owned())).await;
                }
                Ok(PutOutcome::Stored)
            }
            // Too large for L2 (memcached's item size) or L2 down: L1 still serves it.
            Ok(PutOutcome::TooLarge) => Ok(in_l1),
            Err(e) if in_l1 == PutOutcome::Stored => {
                tracing::debug!(error = %e, "L2 put failed; entry kept in L1 only");
                Ok(PutOutcome::Stored)
            }
            Err(e) => Err(e),
        }
    }

    async fn purge(&self, key: &str) -> Result<bool, StoreError> {
        let local = self.l1.purge(key).await?;
        let shared = self.l2.purge(key).await?;
        if let Some(bus) = &self.bus {
            bus.publish(&Event::Purged(key.to_owned())).await;
        }
        Ok(local || shared)
    }

    async fn purge_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let local = self.l1.purge_prefix(prefix).await?;
        let shared = self.l2.purge_prefix(prefix).await?;
        if let Some(bus) = &self.bus {
            bus.publish(&Event::PurgedPrefix(prefix.to_owned())).await;
        }
        Ok(shared.max(local))
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        // The shared tier's figures; when it does not answer, this node's L1.
        match self.l2.stats().await {
            Ok(s) => Ok(s),
            Err(_) => self.l1.stats().await,
        }
    }

    fn degraded(&self) -> Option<String> {
        self.l2
            .degraded()
            .or_else(|| self.bus.as_ref().and_then(|b| b.health().degraded()))
    }
}
