//! Backends for the conformance suite: one fresh broker per test.
//!
//! - Redis at `SLUICE_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`), keys under
//!   a namespace of the test's own, deleted at the end;
//! - SQLite in a temporary directory;
//! - PostgreSQL at `SLUICE_TEST_POSTGRES_URL` (default
//!   `postgres://postgres@127.0.0.1:5432/postgres`): a database of the test's own,
//!   dropped at the end even if the test panics.
//!
//! `scripts/test` starts both servers. A server that cannot be reached fails the
//! test with a message saying how to reach one; nothing is skipped.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_queue::{Broker, RedisBroker, SqlBroker};

const HOW: &str = "set SLUICE_TEST_REDIS_URL / SLUICE_TEST_POSTGRES_URL, or run scripts/test";

/// A broker for one test, and what keeps its storage alive until the test ends.
pub(crate) struct Backend {
    pub(crate) broker: Arc<dyn Broker>,
    _guard: Guard,
}

enum Guard {
    Redis(RedisNamespace),
    Redis8(sluice_testkit::servers::RedisServer),
    Sqlite(tempfile::TempDir),
    Postgres(PgDb),
}

/// A broker on Redis, in a namespace of its own.
pub(crate) async fn redis() -> Backend {
    let url =
        std::env::var("SLUICE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let namespace = format!("t-{:016x}", rand::random::<u64>());
    let broker = RedisBroker::connect(&url, &namespace)
        .unwrap_or_else(|e| panic!("Redis at {url} ({HOW}): {e}"));
    Backend {
        broker: Arc::new(broker),
        _guard: Guard::Redis(RedisNamespace { url, namespace }),
    }
}

/// A broker on a Redis 8 server started for this test alone.
pub(crate) async fn redis8() -> Backend {
    let server = sluice_testkit::servers::RedisServer::start_redis8();
    let broker = RedisBroker::connect(&server.url(), "t8")
        .unwrap_or_else(|e| panic!("Redis 8 at {}: {e}", server.url()));
    Backend {
        broker: Arc::new(broker),
        _guard: Guard::Redis8(server),
    }
}

/// A broker on a new SQLite file.
pub(crate) async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("queue.db").display());
    let broker = SqlBroker::connect(&url).await.unwrap();
    Backend {
        broker: Arc::new(broker),
        _guard: Guard::Sqlite(dir),
    }
}

/// A broker on a new PostgreSQL database.
pub(crate) async fn postgres() -> Backend {
    let db = pg_db("sluice_q").await;
    let broker = SqlBroker::connect(&db.url).await.unwrap();
    Backend {
        broker: Arc::new(broker),
        _guard: Guard::Postgres(db),
    }
}

/// Deletes a test's Redis keys when dropped.
struct RedisNamespace {
    url: String,
    namespace: String,
}

impl Drop for RedisNamespace {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let pattern = format!("{}:*", self.namespace);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query(&mut conn)
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
    }
}

/// A PostgreSQL database created for one test (the test kit's scratch database).
pub(crate) type PgDb = sluice_testkit::db::ServerDb;

/// A fresh PostgreSQL database named `{prefix}_{random}`.
pub(crate) async fn pg_db(prefix: &str) -> PgDb {
    sluice_testkit::db::ServerDb::new(sluice_testkit::db::Server::Postgres, prefix).await
}

/// Polls `f` until it holds, up to `max`.
pub(crate) async fn until(max: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let end = Instant::now() + max;
    while Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    f().await
}
