//! One shared Redis (a server or a cluster), as every Redis-backed part of sluice
//! uses it: the redis store, cluster-wide coalescing, the shared quota and the
//! purge bus.
//!
//! - Connections are made lazily and re-made by redis-rs itself
//!   (`ConnectionManager` for one server, `ClusterConnection` for a cluster), so a
//!   node starts while Redis is down and recovers when it comes back.
//! - Every command has a timeout and goes through [`Backend`], which logs an outage
//!   once and stops sending commands to a dead server for a moment.
//! - One subscriber task per process listens on the namespace's event channel and
//!   fans notices out to [`Redis::on_event`] listeners and [`Redis::wait_event`]
//!   waiters. After a reconnect, listeners get [`Event::Resubscribed`], because
//!   notices sent meanwhile were missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Value};
use tokio::sync::Notify;

use thiserror::Error;

use crate::health::{Backend, Unavailable};
use crate::redact_url;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…`; several with
    /// `cluster`.
    pub urls: Vec<String>,
    /// The URLs are seed nodes of a Redis Cluster.
    pub cluster: bool,
    /// Prefix of every key and channel, so several deployments share one Redis.
    pub namespace: String,
    /// Password, when not in the URL (kept out of logs).
    pub password: Option<String>,
    /// Longest wait for one command's answer.
    pub timeout: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// PEM root certificate(s) trusted for `rediss://` instead of the system's
    /// (a private CA).
    pub tls_ca_pem: Option<Vec<u8>>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            urls: vec!["redis://127.0.0.1:6379".into()],
            cluster: false,
            namespace: "sluice".into(),
            password: None,
            timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(1),
            tls_ca_pem: None,
        }
    }
}

/// A Redis configuration that cannot work (the message never holds a password).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{message}")]
pub struct ConfigError {
    /// What is wrong and what to do about it.
    pub message: String,
}

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// A connection to a server or a cluster; cheap to clone (multiplexed).
#[derive(Clone)]
pub enum RedisConn {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A notice on the namespace's event channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// One key was purged.
    Purged(String),
    /// Every key with this prefix was purged.
    PurgedPrefix(String),
    /// A new entry was stored under this key; near-caches drop their older copy.
    Stored(String),
    /// A cluster-wide flight for this key ended (entry stored or lock released).
    FlightDone(String),
    /// The subscription was re-established after a break; notices may be lost.
    Resubscribed,
}

impl Event {
    fn encode(&self, origin: &str) -> String {
        let (kind, payload) = match self {
            Self::Purged(k) => ("p", k.as_str()),
            Self::PurgedPrefix(p) => ("x", p.as_str()),
            Self::Stored(k) => ("s", k.as_str()),
            Self::FlightDone(k) => ("f", k.as_str()),
            Self::Resubscribed => ("r", ""),
        };
        format!("{kind}\n{origin}\n{payload}")
    }

    /// The event and the node it came from.
    fn decode(s: &str) -> Option<(Self, &str)> {
        let (kind, rest) = s.split_once('\n')?;
        let (origin, payload) = rest.split_once('\n')?;
        let ev = match kind {
            "p" => Self::Purged(payload.into()),
            "x" => Self::PurgedPrefix(payload.into()),
            "s" => Self::Stored(payload.into()),
            "f" => Self::FlightDone(payload.into()),
            _ => return None,
        };
        Some((ev, origin))
    }
}

/// `(event, sent by this process)`.
type Listener = Box<dyn Fn(&Event, bool) + Send + Sync>;

#[derive(Default)]
struct Bus {
    listeners: Mutex<Vec<Listener>>,
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
}

/// A shared Redis. Cheap to share through `Arc`.
pub struct Redis {
    conn: RedisConn,
    /// One client per configured node; the subscriber moves to the next one when
    /// its node fails (any node of a cluster receives every `PUBLISH`).
    sub_clients: Vec<redis::Client>,
    namespace: String,
    node_id: String,
    timeout: Duration,
    health: Backend,
    bus: Bus,
    subscriber: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("namespace", &self.namespace)
            .field("cluster", &matches!(self.conn, RedisConn::Cluster(_)))
            .finish()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Ok(mut s) = self.subscriber.lock()
            && let Some(h) = s.take()
        {
            h.abort();
        }
    }
}

fn tls_certs(ca: Option<&[u8]>) -> Option<redis::TlsCertificates> {
    ca.map(|pem| redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    })
}

fn open_client(
    url: &str,
    password: Option<&str>,
    ca: Option<&[u8]>,
) -> Result<redis::Client, ConfigError> {
    let mut info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| ConfigError::new(format!("invalid Redis URL {}: {e}", redact_url(url))))?;
    if let Some(p) = password {
        let redis_info = info.redis_settings().clone().set_password(p);
        info = info.set_redis_settings(redis_info);
    }
    match tls_certs(ca) {
        Some(certs) => redis::Client::build_with_tls(info, certs),
        None => redis::Client::open(info),
    }
    .map_err(|e| ConfigError::new(format!("Redis URL {}: {e}", redact_url(url))))
}

impl Redis {
    /// Prepares connections without connecting (the first command connects), and
    /// starts the event subscriber. Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// An invalid URL (the message never contains the password).
    pub fn connect(opts: &RedisOptions) -> Result<Arc<Self>, ConfigError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ConfigError::new("connecting to Redis needs a running tokio runtime"))?;
        let first = opts
            .urls
            .first()
            .ok_or_else(|| ConfigError::new("no Redis URL given"))?;
        let ca = opts.tls_ca_pem.as_deref();
        let sub_client = open_client(first, opts.password.as_deref(), ca)?;
        let mut sub_clients = vec![sub_client.clone()];
        let conn = if opts.cluster {
            for u in &opts.urls[1..] {
                sub_clients.push(open_client(u, opts.password.as_deref(), ca)?);
            }
            let mut b = ClusterClientBuilder::new(opts.urls.clone())
                .connection_timeout(opts.connect_timeout)
                .response_timeout(opts.timeout)
                .retries(2);
            if let Some(p) = &opts.password {
                b = b.password(p);
            }
            if let Some(certs) = tls_certs(ca) {
                b = b.certs(certs);
            }
            let client = b
                .build()
                .map_err(|e| ConfigError::new(format!("Redis Cluster configuration: {e}")))?;
            let cfg = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(opts.connect_timeout)
                .set_response_timeout(opts.timeout);
            RedisConn::Cluster(client.get_pending_async_connection_with_config(cfg))
        } else {
            if opts.urls.len() > 1 {
                return Err(ConfigError::new(format!(
                    "{} Redis URLs given without `cluster = true`; give one URL, or mark them as a cluster",
                    opts.urls.len()
                )));
            }
            let cfg = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(opts.connect_timeout))
                .set_response_timeout(Some(opts.timeout))
                .set_number_of_retries(2)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_millis(500));
            let mgr = ConnectionManager::new_lazy_with_config(sub_client.clone(), cfg)
                .map_err(|e| ConfigError::new(format!("Redis {}: {e}", redact_url(first))))?;
            RedisConn::Single(mgr)
        };
        let this = Arc::new(Self {
            conn,
            sub_clients,
            namespace: opts.namespace.clone(),
            node_id: format!(
                "{}-{}-{:08x}",
                crate::host_name().unwrap_or_else(|| "node".into()),
                std::process::id(),
                rand::random::<u32>()
            ),
            timeout: opts.timeout,
            health: Backend::new("redis"),
            bus: Bus::default(),
            subscriber: Mutex::new(None),
        });
        let weak = Arc::downgrade(&this);
        let handle = runtime.spawn(async move {
            // Subscriber, and a prober that finds out when a down Redis is back
            // even when no request needs it.
            tokio::join!(subscribe_loop(weak.clone()), probe_loop(weak));
        });
        *this
            .subscriber
            .lock()
            .map_err(|e| ConfigError::new(e.to_string()))? = Some(handle);
        Ok(this)
    }

    /// This process's id on the event channel and in lock tokens:
    /// `{hostname}-{pid}-{random}`.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The deployment's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `"{namespace}:{kind}:{rest}"`.
    pub fn key(&self, kind: &str, rest: &str) -> String {
        let mut k = String::with_capacity(self.namespace.len() + kind.len() + rest.len() + 2);
        k.push_str(&self.namespace);
        k.push(':');
        k.push_str(kind);
        k.push(':');
        k.push_str(rest);
        k
    }

    fn channel(&self) -> String {
        self.key("events", "all")
    }

    /// The outage tracker shared by everything that uses this Redis.
    pub fn health(&self) -> &Backend {
        &self.health
    }

    /// A connection handle (multiplexed; clones share it).
    pub fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, RedisConn::Cluster(_))
    }

    /// Runs `cmd`, with the breaker, the timeout and health reporting.
    ///
    /// # Errors
    ///
    /// [`Unavailable`] when Redis is down, slow or refuses.
    pub async fn query<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &Cmd,
    ) -> Result<T, Unavailable> {
        let mut c = self.conn.clone();
        self.guarded(op, async move { cmd.query_async::<T>(&mut c).await })
            .await
    }

    /// Runs `call` through the breaker, with the timeout, reporting the outcome.
    async fn guarded<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unavailable> {
        if !self.health.should_try() {
            return Err(self.health.skipped(op));
        }
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => {
                self.health.ok();
                Ok(v)
            }
            Ok(Err(e)) => Err(self.health.failed(op, e.to_string())),
            Err(_) => Err(self
                .health
                .failed(op, format!("no answer within {:?}", self.timeout))),
        }
    }

    /// Runs a Lua script, like [`query`](Self::query).
    ///
    /// # Errors
    ///
    /// As [`query`](Self::query).
    pub async fn eval<T: FromRedisValue>(
        &self,
        op: &'static str,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, Unavailable> {
        let mut c = self.conn.clone();
        self.guarded(op, async move { inv.invoke_async::<T>(&mut c).await })
            .await
    }

    /// Publishes `event` to every node (best effort; a failure is counted).
    pub async fn publish(&self, event: &Event) {
        let cmd = redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg(event.encode(&self.node_id))
            .to_owned();
        let _ = self.query::<i64>("publish", &cmd).await;
    }

    /// Calls `f(event, from_this_process)` for every event received from any node,
    /// this one included.
    pub fn on_event(&self, f: impl Fn(&Event, bool) + Send + Sync + 'static) {
        if let Ok(mut l) = self.bus.listeners.lock() {
            l.push(Box::new(f));
        }
    }

    /// Waits until a [`Event::FlightDone`] for `key` arrives or `max` passes.
    pub async fn wait_event(&self, key: &str, max: Duration) {
        let notify = {
            let Ok(mut w) = self.bus.waiters.lock() else {
                return;
            };
            w.entry(key.to_owned()).or_default().clone()
        };
        let _ = tokio::time::timeout(max, notify.notified()).await;
        if let Ok(mut w) = self.bus.waiters.lock()
            && let Some(n) = w.get(key)
            && Arc::strong_count(n) == 1
        {
            w.remove(key);
        }
    }

    fn dispatch(&self, event: &Event, own: bool) {
        if let Event::FlightDone(k) = event
            && let Ok(w) = self.bus.waiters.lock()
            && let Some(n) = w.get(k)
        {
            n.notify_waiters();
        }
        if let Ok(l) = self.bus.listeners.lock() {
            for f in l.iter() {
                f(event, own);
            }
        }
    }

    /// Every master's address, for commands that must visit each (SCAN).
    ///
    /// # Errors
    ///
    /// When Redis cannot be asked.
    pub async fn masters(&self) -> Result<Vec<(String, u16)>, Unavailable> {
        let RedisConn::Cluster(c) = &self.conn else {
            return Ok(Vec::new());
        };
        let mut c = c.clone();
        let cmd = redis::cmd("CLUSTER").arg("SLOTS").to_owned();
        let slots: Vec<Value> = self
            .guarded(
                "cluster_slots",
                async move { cmd.query_async(&mut c).await },
            )
            .await?;
        let mut out: Vec<(String, u16)> = Vec::new();
        for s in slots {
            // [start, end, [host, port, id], replicas…]
            if let Value::Array(parts) = s
                && let Some(Value::Array(master)) = parts.get(2)
                && let (Some(h), Some(Value::Int(p))) = (master.first(), master.get(1))
            {
                let host = match h {
                    Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    Value::SimpleString(s) => s.clone(),
                    _ => continue,
                };
                let addr = (host, *p as u16);
                if !out.contains(&addr) {
                    out.push(addr);
                }
            }
        }
        Ok(out)
    }

    /// Runs `cmd` on one cluster node given by address.
    ///
    /// # Errors
    ///
    /// When the node fails or this is not a cluster.
    pub async fn query_node<T: FromRedisValue>(
        &self,
        op: &'static str,
        host: &str,
        port: u16,
        cmd: Cmd,
    ) -> Result<T, Unavailable> {
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        let RedisConn::Cluster(c) = &self.conn else {
            return Err(self.health.failed(op, "not a cluster"));
        };
        let mut c = c.clone();
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port,
        });
        let v = self
            .guarded(op, async move { c.route_command(cmd, routing).await })
            .await?;
        T::from_redis_value(v).map_err(|e| self.health.failed(op, e.to_string()))
    }
}

/// While Redis is marked down, pings it twice a second.
async fn probe_loop(redis: Weak<Redis>) {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(r) = redis.upgrade() else { return };
        if r.health.degraded().is_some() {
            let _ = r.query::<String>("ping", &redis::cmd("PING")).await;
        }
    }
}

/// Keeps one subscription to the event channel alive for as long as `redis` lives.
async fn subscribe_loop(redis: Weak<Redis>) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    let mut attempt = 0usize;
    loop {
        let Some(r) = redis.upgrade() else { return };
        let client = r.sub_clients[attempt % r.sub_clients.len()].clone();
        attempt += 1;
        let channel = r.channel();
        let connect_timeout = r.timeout.max(Duration::from_secs(1));
        drop(r);
        let connected = tokio::time::timeout(connect_timeout, async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(ps)
        })
        .await;
        match connected {
            Ok(Ok(ps)) => {
                backoff = Duration::from_millis(100);
                let Some(r) = redis.upgrade() else { return };
                // Redis is back: make the command connection reconnect now (its
                // first command after an outage fails and triggers the reconnect),
                // so that client requests find it working.
                for _ in 0..30 {
                    if r.query::<String>("ping", &redis::cmd("PING")).await.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if !first {
                    tracing::info!("Redis event subscription re-established");
                    r.dispatch(&Event::Resubscribed, true);
                }
                drop(r);
                let mut stream = ps.into_on_message();
                while let Some(msg) = stream.next().await {
                    let Some(r) = redis.upgrade() else { return };
                    let payload: String = msg.get_payload().unwrap_or_default();
                    if let Some((ev, origin)) = Event::decode(&payload) {
                        r.dispatch(&ev, origin == r.node_id);
                    }
                }
                first = false;
                if let Some(r) = redis.upgrade() {
                    let _ = r.health.failed("subscribe", "event subscription lost");
                }
            }
            Ok(Err(e)) => {
                if let Some(r) = redis.upgrade() {
                    let _ = r.health.failed("subscribe", e.to_string());
                }
                first = false;
            }
            Err(_) => {
                if let Some(r) = redis.upgrade() {
                    let _ = r.health.failed("subscribe", "connect timed out");
                }
                first = false;
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        for e in [
            Event::Purged("air GET /x?a=1 b".into()),
            Event::PurgedPrefix("air ".into()),
            Event::Stored("k".into()),
            Event::FlightDone("k\nwith newline".into()),
        ] {
            assert_eq!(Event::decode(&e.encode("node-1")), Some((e, "node-1")));
        }
        assert_eq!(Event::decode("zz"), None);
    }
}
