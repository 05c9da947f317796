//! The shared stores against real redis-server, Redis Cluster and memcached
//! processes: encoding, native expiry, purges, item-size limits, outages.

use std::sync::Arc;
use std::time::Duration;

use sluice_cache::testing::json_entry;
use sluice_cache::{
    Entry, MemcachedOptions, MemcachedStore, PutOutcome, RedisStore, Store, StoreError,
};
use sluice_core::{
    Clock, LocalQuota, Quota, QuotaExceeded, Redis, RedisOptions, RedisQuota, SystemClock,
};
use sluice_testkit::servers::{Memcached, RedisCluster, RedisServer};

fn entry(body: usize, ttl: Duration) -> Arc<Entry> {
    let now = SystemClock.now_millis();
    Arc::new(json_entry(now, body, ttl, Duration::ZERO, Duration::ZERO))
}

/// A namespace no other test uses.
fn ns(test: &str) -> String {
    use std::hash::{BuildHasher, RandomState};
    let r = RandomState::new().hash_one(std::time::SystemTime::now()) as u32;
    format!("t-{test}-{}-{r:x}", std::process::id())
}

fn redis_opts(urls: Vec<String>, cluster: bool, namespace: &str) -> RedisOptions {
    RedisOptions {
        urls,
        cluster,
        namespace: namespace.into(),
        timeout: Duration::from_millis(300),
        ..Default::default()
    }
}

fn shared_redis_url() -> String {
    std::env::var("SLUICE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn raw(redis: &Redis, cmd: &redis::Cmd) -> redis::Value {
    redis.query::<redis::Value>("test", cmd).await.unwrap()
}

async fn wait_until<F, Fut>(max: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + max;
    while std::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn redis_store_round_trips_with_native_expiry_and_a_version_byte() {
    let namespace = ns("redis-rt");
    let redis = Redis::connect(&redis_opts(vec![shared_redis_url()], false, &namespace)).unwrap();
    let store = RedisStore::new(redis.clone(), 1 << 20);
    let e = entry(100, Duration::from_secs(30));
    assert_eq!(
        store.put("air GET /x?a=1", e.clone()).await.unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(
        store.get("air GET /x?a=1").await.unwrap().as_deref(),
        Some(&*e)
    );
    assert!(store.get("air GET /x?a=2").await.unwrap().is_none());

    // One Redis string per entry, version byte first, expiring at stale_until.
    let key = format!("{namespace}:e:air GET /x?a=1");
    let redis::Value::BulkString(bytes) = raw(&redis, redis::cmd("GET").arg(&key)).await else {
        panic!("entry is not a string")
    };
    assert_eq!(bytes[0], sluice_cache::codec::VERSION);
    let redis::Value::Int(pttl) = raw(&redis, redis::cmd("PTTL").arg(&key)).await else {
        panic!("no PTTL")
    };
    assert!((25_000..=30_000).contains(&pttl), "PTTL {pttl}");

    // Too large: refused, not an error.
    assert_eq!(
        store
            .put("big", entry(2 << 20, Duration::from_secs(30)))
            .await
            .unwrap(),
        PutOutcome::TooLarge
    );

    // A value that is not an entry is a Corrupt error (the gateway treats it as a miss).
    raw(
        &redis,
        redis::cmd("SET")
            .arg(format!("{namespace}:e:bad"))
            .arg("garbage"),
    )
    .await;
    assert!(matches!(
        store.get("bad").await,
        Err(StoreError::Corrupt { .. })
    ));

    // Purges: by key, and by prefix through SCAN (glob characters are literal).
    for k in ["air GET /y", "air GET /z*", "bus GET /y"] {
        store
            .put(k, entry(10, Duration::from_secs(30)))
            .await
            .unwrap();
    }
    assert!(store.purge("bus GET /y").await.unwrap());
    assert!(!store.purge("bus GET /y").await.unwrap());
    assert_eq!(store.purge_prefix("air GET /z*").await.unwrap(), 1);
    assert_eq!(store.purge_prefix("air ").await.unwrap(), 2);
    assert!(store.get("air GET /y").await.unwrap().is_none());

    // Short lives expire natively.
    store
        .put("short", entry(10, Duration::from_millis(200)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let exists: i64 = redis
        .query(
            "test",
            redis::cmd("EXISTS").arg(format!("{namespace}:e:short")),
        )
        .await
        .unwrap();
    assert_eq!(exists, 0);
}

#[tokio::test]
async fn redis_cluster_store_spreads_keys_and_purges_on_every_master() {
    let cluster = RedisCluster::start(3);
    let redis = Redis::connect(&redis_opts(cluster.urls(), true, "c")).unwrap();
    let store = RedisStore::new(redis.clone(), 1 << 20);
    for i in 0..60 {
        store
            .put(
                &format!("air GET /k{i}"),
                entry(10, Duration::from_secs(60)),
            )
            .await
            .unwrap();
    }
    for i in 0..60 {
        assert!(
            store
                .get(&format!("air GET /k{i}"))
                .await
                .unwrap()
                .is_some(),
            "k{i}"
        );
    }
    let masters = redis.masters().await.unwrap();
    assert_eq!(masters.len(), 3);
    let mut holding = 0;
    for (h, p) in &masters {
        let n: u64 = redis
            .query_node("test", h, *p, redis::cmd("DBSIZE"))
            .await
            .unwrap();
        holding += usize::from(n > 0);
    }
    assert!(
        holding >= 2,
        "keys should spread over masters, {holding} hold any"
    );
    assert_eq!(store.stats().await.unwrap().entries, 60);
    assert_eq!(
        store.purge_prefix("air GET /k1").await.unwrap(),
        11,
        "k1, k10..k19"
    );
    assert_eq!(store.purge_prefix("air ").await.unwrap(), 49);
    assert!(store.get("air GET /k5").await.unwrap().is_none());

    // The shared quota's two keys share a hash slot, so its script runs on a cluster.
    let quota = RedisQuota::new(
        redis.clone(),
        "portal",
        LocalQuota::new(None, Some(3), chrono_tz::Asia::Seoul, Arc::new(SystemClock)),
    );
    for _ in 0..3 {
        quota.acquire(Duration::ZERO).await.unwrap();
    }
    assert!(matches!(
        quota.acquire(Duration::ZERO).await,
        Err(QuotaExceeded::Daily { limit: 3, .. })
    ));
    assert_eq!(quota.remaining_today(), Some(0));
}

/// Three "nodes" of quota `portal` (`per_second`, `per_day` in `tz`) on the shared
/// Redis in a fresh namespace `test…`, each with its own connection.
fn three_nodes(
    test: &str,
    per_second: Option<std::num::NonZeroU32>,
    per_day: Option<u64>,
    tz: chrono_tz::Tz,
) -> Vec<RedisQuota> {
    let namespace = ns(test);
    (0..3)
        .map(|_| {
            let redis =
                Redis::connect(&redis_opts(vec![shared_redis_url()], false, &namespace)).unwrap();
            let local = LocalQuota::new(per_second, per_day, tz, Arc::new(SystemClock));
            RedisQuota::new(redis, "portal", local)
        })
        .collect()
}

#[tokio::test]
async fn redis_quota_is_shared_and_atomic() {
    // Three "nodes": separate connections, one budget.
    let quotas: Vec<Arc<RedisQuota>> =
        three_nodes("quota", None, Some(100), chrono_tz::Asia::Seoul)
            .into_iter()
            .map(Arc::new)
            .collect();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let q = quotas[i % 3].clone();
        tasks.push(tokio::spawn(async move { q.acquire(Duration::ZERO).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(QuotaExceeded::Daily { limit, retry_after }) => {
                assert_eq!(limit, 100);
                assert!(retry_after > Duration::ZERO);
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 100, "exactly the daily quota across three nodes");
    for q in &quotas {
        assert_eq!(q.remaining_today(), Some(0));
    }

    // Per second: 5/s with no waiting allowed lets about 5 through at once, not 15.
    let rated = three_nodes("rate", std::num::NonZeroU32::new(5), None, chrono_tz::UTC);
    let mut passed = 0;
    for i in 0..15 {
        if rated[i % 3].acquire(Duration::ZERO).await.is_ok() {
            passed += 1;
        }
    }
    assert!(
        (5..=7).contains(&passed),
        "{passed} of 15 passed a shared 5/s limit"
    );
}

#[tokio::test]
async fn redis_outage_fails_fast_and_recovers_by_itself() {
    let mut server = RedisServer::start();
    let redis = Redis::connect(&redis_opts(vec![server.url()], false, "o")).unwrap();
    let store = RedisStore::new(redis.clone(), 1 << 20);
    store
        .put("k", entry(10, Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(store.degraded().is_none());

    server.kill();
    let err = store.get("k").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable { store: "redis", .. }),
        "{err}"
    );
    let degraded = store.degraded().expect("degraded while down");
    assert!(degraded.starts_with("redis unavailable"), "{degraded}");
    // While down, calls fail at once instead of each waiting for the timeout.
    let t = std::time::Instant::now();
    for _ in 0..100 {
        assert!(store.get("k").await.is_err());
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "100 failed gets took {:?}",
        t.elapsed()
    );

    server.restart();
    let back = wait_until(Duration::from_secs(10), || async {
        store.get("k").await.is_ok()
    })
    .await;
    assert!(back, "the store reconnects by itself");
    assert!(store.degraded().is_none());
    // The restarted server kept nothing (no persistence): a miss, not an error.
    assert!(store.get("k").await.unwrap().is_none());

    // Paused: answers stop; the command timeout bounds the wait.
    server.pause();
    let t = std::time::Instant::now();
    assert!(store.get("k").await.is_err());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "a paused server is given up on after the timeout"
    );
    server.resume();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            store.get("k").await.is_ok()
        })
        .await
    );
}

#[tokio::test]
async fn memcached_store_keeps_semantics_within_its_limits() {
    let mut server = Memcached::start_with_item_size("64k");
    let opts = |max_item_bytes| MemcachedOptions {
        url: server.url(),
        namespace: "m".into(),
        max_item_bytes,
        pool_size: 2,
        timeout: Duration::from_millis(300),
    };
    let store = MemcachedStore::new(&opts(64 * 1024)).unwrap();
    let long_key = format!("air GET /x?q={}", "a".repeat(1000));
    let e = entry(1000, Duration::from_secs(60));
    assert_eq!(
        store.put(&long_key, e.clone()).await.unwrap(),
        PutOutcome::Stored
    );
    assert_eq!(store.get(&long_key).await.unwrap().as_deref(), Some(&*e));
    assert!(store.get("air GET /other").await.unwrap().is_none());

    // Above the item size: passed through, not an error; nothing stored.
    assert_eq!(
        store
            .put("air GET /big", entry(100_000, Duration::from_secs(60)))
            .await
            .unwrap(),
        PutOutcome::TooLarge
    );
    assert!(store.get("air GET /big").await.unwrap().is_none());
    // With our limit set too high, the server's own refusal is TooLarge too.
    let lax = MemcachedStore::new(&opts(1 << 20)).unwrap();
    assert_eq!(
        lax.put("air GET /big", entry(100_000, Duration::from_secs(60)))
            .await
            .unwrap(),
        PutOutcome::TooLarge
    );
    assert_eq!(
        lax.put("air GET /small", entry(10, Duration::from_secs(60)))
            .await
            .unwrap(),
        PutOutcome::Stored,
        "the connection is still usable"
    );

    // Purge by key and by route (generation); narrower prefixes are refused clearly.
    assert!(store.purge(&long_key).await.unwrap());
    assert!(!store.purge(&long_key).await.unwrap());
    for k in ["air GET /a", "air GET /b", "bus GET /a"] {
        store
            .put(k, entry(10, Duration::from_secs(60)))
            .await
            .unwrap();
    }
    store.purge_prefix("air ").await.unwrap();
    assert!(store.get("air GET /a").await.unwrap().is_none());
    assert!(store.get("air GET /b").await.unwrap().is_none());
    assert!(
        store.get("bus GET /a").await.unwrap().is_some(),
        "other routes untouched"
    );
    store
        .put("air GET /a", entry(10, Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(
        store.get("air GET /a").await.unwrap().is_some(),
        "stored again after the purge"
    );
    let err = store.purge_prefix("air GET /a").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unsupported { .. })
            && err.to_string().contains("purge a whole route or one key"),
        "{err}"
    );

    // Expiry is native (whole seconds).
    store
        .put("air GET /short", entry(10, Duration::from_millis(900)))
        .await
        .unwrap();
    assert!(store.get("air GET /short").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(store.get("air GET /short").await.unwrap().is_none());

    // Outage and recovery.
    server.kill();
    assert!(matches!(
        store.get("bus GET /a").await,
        Err(StoreError::Unavailable {
            store: "memcached",
            ..
        })
    ));
    assert!(store.degraded().is_some());
    server.restart();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            store.get("bus GET /a").await.is_ok()
        })
        .await
    );
    assert!(store.degraded().is_none());
}

#[tokio::test]
async fn redis_credentials_from_the_url_or_the_password_option_and_never_in_errors() {
    let server = RedisServer::start();
    let admin = Redis::connect(&redis_opts(vec![server.url()], false, "auth")).unwrap();
    let _: () = admin
        .query(
            "test",
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("requirepass")
                .arg("s3cret-pw"),
        )
        .await
        .unwrap();
    let port = server.port();
    let entry = entry(10, Duration::from_secs(60));

    let in_url = Redis::connect(&redis_opts(
        vec![format!("redis://default:s3cret-pw@127.0.0.1:{port}")],
        false,
        "auth",
    ))
    .unwrap();
    let store = RedisStore::new(in_url, 1 << 20);
    assert_eq!(
        store.put("k", entry.clone()).await.unwrap(),
        PutOutcome::Stored
    );

    let mut opts = redis_opts(vec![format!("redis://127.0.0.1:{port}")], false, "auth");
    opts.password = Some("s3cret-pw".into());
    let store = RedisStore::new(Redis::connect(&opts).unwrap(), 1 << 20);
    assert!(store.get("k").await.unwrap().is_some());

    let wrong = Redis::connect(&redis_opts(
        vec![format!("redis://default:wrong-pw@127.0.0.1:{port}")],
        false,
        "auth",
    ))
    .unwrap();
    let err = RedisStore::new(wrong.clone(), 1 << 20)
        .get("k")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains("wrong-pw") && !err.contains("s3cret"),
        "{err}"
    );
    let degraded = wrong.health().degraded().unwrap();
    assert!(!degraded.contains("wrong-pw"), "{degraded}");
}

/// A TLS-only redis-server with a certificate from a CA made here; killed on drop.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
    ca_pem: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tls_redis() -> TlsRedis {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=sluice test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
    let port = sluice_testkit::free_port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "no"])
        .args(["--save", "", "--appendonly", "no"])
        .current_dir(d)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "TLS redis-server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    TlsRedis {
        child,
        port,
        ca_pem: std::fs::read(d.join("ca.crt")).unwrap(),
        _dir: dir,
    }
}

#[tokio::test]
async fn rediss_with_a_private_ca() {
    sluice_testkit_tls_init();
    let server = tls_redis();
    let mut opts = redis_opts(
        vec![format!("rediss://127.0.0.1:{}", server.port)],
        false,
        "tls",
    );
    opts.tls_ca_pem = Some(server.ca_pem.clone());
    let store = RedisStore::new(Redis::connect(&opts).unwrap(), 1 << 20);
    let e = entry(10, Duration::from_secs(60));
    assert_eq!(store.put("k", e.clone()).await.unwrap(), PutOutcome::Stored);
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&*e));

    // Without the CA the server's certificate is not trusted: an error, not a hang.
    opts.tls_ca_pem = None;
    let untrusted = RedisStore::new(Redis::connect(&opts).unwrap(), 1 << 20);
    let err = untrusted.get("k").await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
}

/// rustls needs a process-wide crypto provider; sluice installs ring at start-up.
fn sluice_testkit_tls_init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_l1_misses_share_one_l2_read() {
    let server = RedisServer::start();
    let redis = Redis::connect(&redis_opts(vec![server.url()], false, "tier")).unwrap();
    let l2 = Arc::new(RedisStore::new(redis.clone(), 1 << 20));
    l2.put("air GET /x", entry(100, Duration::from_secs(60)))
        .await
        .unwrap();
    let tiered = Arc::new(sluice_cache::TieredStore::new(
        sluice_cache::MemoryStore::builder().build(),
        l2,
        None,
    ));
    let _: () = redis
        .query("test", redis::cmd("CONFIG").arg("RESETSTAT"))
        .await
        .unwrap();
    let gets: Vec<_> = (0..64)
        .map(|_| {
            let t = tiered.clone();
            tokio::spawn(async move { t.get("air GET /x").await.unwrap().is_some() })
        })
        .collect();
    for g in gets {
        assert!(g.await.unwrap());
    }
    let stats: String = redis
        .query("test", redis::cmd("INFO").arg("commandstats"))
        .await
        .unwrap();
    let get_calls: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        (1..=2).contains(&get_calls),
        "64 concurrent L1 misses made {get_calls} Redis GETs"
    );
    // Later reads are L1 hits.
    assert!(tiered.get("air GET /x").await.unwrap().is_some());
}
