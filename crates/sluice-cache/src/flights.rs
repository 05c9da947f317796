//! Cluster-wide coalescing: one upstream call per cold key across all nodes.
//!
//! On a miss (after local coalescing, so one request per node gets here), a node
//! tries to take a short lock in Redis: `SET {ns}:l:{key} {token} NX PX {lock_ttl}`.
//!
//! - The **holder** calls the upstream, stores the entry, then releases the lock
//!   (a Lua compare-and-delete on its token, so it never frees a lock that expired
//!   and was taken by another node) and publishes [`Event::FlightDone`]. While
//!   the call runs, a watchdog extends the lock every third of its TTL, so a slow
//!   upstream call keeps it, and a dead holder loses it after at most `lock_ttl`.
//! - **Waiters** wait for the notice (or poll, in case a notice is lost), then read
//!   the store. When the lock is gone without a fresh entry (the holder died or its
//!   answer was not cacheable), a waiter takes the lock over.
//! - When Redis does not answer, the caller falls back to local coalescing only.

use std::sync::Arc;
use std::time::Duration;

use crate::error::StoreError;
use sluice_core::redis::{Event, Redis};

const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

const EXTEND_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0";

/// The outcome of [`SharedFlights::try_acquire`].
#[derive(Debug)]
pub enum Acquire {
    /// This node holds the lock: call the upstream, then [`FlightLease::release`].
    Held(FlightLease),
    /// Another node holds it: wait for its entry.
    Busy,
}

/// Locks and notices for cluster-wide coalescing.
#[derive(Debug)]
pub struct SharedFlights {
    redis: Arc<Redis>,
    lock_ttl: Duration,
    poll: Duration,
    max_wait: Duration,
    release: Arc<redis::Script>,
    extend: Arc<redis::Script>,
}

impl SharedFlights {
    /// Flights on `redis`: locks live `lock_ttl` unless extended; waiters check the
    /// store at least every `poll` and give up waiting after `max_wait`.
    pub fn new(redis: Arc<Redis>, lock_ttl: Duration, poll: Duration, max_wait: Duration) -> Self {
        Self {
            redis,
            lock_ttl: lock_ttl.max(Duration::from_millis(100)),
            poll,
            max_wait,
            release: Arc::new(redis::Script::new(RELEASE_LUA)),
            extend: Arc::new(redis::Script::new(EXTEND_LUA)),
        }
    }

    /// The Redis key of `key`'s lock (tests read the holder from it).
    pub fn lock_key(&self, key: &str) -> String {
        self.redis.key("l", key)
    }

    /// How often a waiter checks at the latest.
    pub fn poll_interval(&self) -> Duration {
        self.poll
    }

    /// How long a waiter waits in all before calling the upstream itself.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// Tries to take `key`'s lock.
    ///
    /// # Errors
    ///
    /// When Redis does not answer; the caller then coalesces locally only.
    pub async fn try_acquire(&self, key: &str) -> Result<Acquire, StoreError> {
        let token = format!("{}:{:016x}", self.redis.node_id(), rand::random::<u64>());
        let lock_key = self.lock_key(key);
        let cmd = redis::cmd("SET")
            .arg(&lock_key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(self.lock_ttl.as_millis() as u64)
            .to_owned();
        let set: Option<String> = self.redis.query("lock", &cmd).await?;
        if set.is_none() {
            return Ok(Acquire::Busy);
        }
        let watchdog = {
            let redis = self.redis.clone();
            let script = self.extend.clone();
            let (lock_key, token) = (lock_key.clone(), token.clone());
            let ttl = self.lock_ttl;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(ttl / 3);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let mut inv = script.key(&lock_key);
                    inv.arg(&token).arg(ttl.as_millis() as u64);
                    if let Ok(0) = redis.eval::<i64>("lock", inv).await {
                        return; // lost it (expired and taken over)
                    }
                }
            })
        };
        Ok(Acquire::Held(FlightLease {
            redis: self.redis.clone(),
            release: self.release.clone(),
            key: key.to_owned(),
            lock_key,
            token,
            watchdog,
        }))
    }

    /// Waits for a notice that `key`'s flight ended, at most one poll interval.
    pub async fn wait(&self, key: &str) {
        self.redis.wait_event(key, self.poll).await;
    }

    /// `None` while Redis answers.
    pub fn degraded(&self) -> Option<String> {
        self.redis.health().degraded()
    }
}

/// A held flight lock. Release it when the entry is stored; dropping it without
/// releasing leaves the lock to expire.
#[derive(Debug)]
pub struct FlightLease {
    redis: Arc<Redis>,
    release: Arc<redis::Script>,
    key: String,
    lock_key: String,
    token: String,
    watchdog: tokio::task::JoinHandle<()>,
}

impl FlightLease {
    /// The lock's token: `{node_id}:{random}`.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Frees the lock (only if still ours) and tells the waiters.
    pub async fn release(self) {
        self.watchdog.abort();
        let mut inv = self.release.key(&self.lock_key);
        inv.arg(&self.token);
        let _ = self.redis.eval::<i64>("unlock", inv).await;
        self.redis
            .publish(&Event::FlightDone(self.key.clone()))
            .await;
    }
}

impl Drop for FlightLease {
    fn drop(&mut self) {
        self.watchdog.abort();
    }
}
