//! Database-change triggers against real servers: `pg_change` on a scratch
//! PostgreSQL database (debounced fires with the changed keys, changes made
//! while stopped, two nodes on one database and one claim store: SQL and
//! Redis), and `sql_change` on SQLite and MariaDB (a changed result fires, an
//! unchanged one does not, also across a restart and with two nodes).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sluice_core::{Redis, RedisOptions};
use sluice_schedule::triggers::change;
use sluice_schedule::{
    ChangeFire, ChangeLauncher, ChangeTrigger, ClaimStore, LaunchError, RawTrigger, RedisClaims,
    SqlChangeWatch, SqlClaims, TriggerPlan,
};
use sluice_testkit::db::{Server, ServerDb};
use sqlx::{Connection, Executor, MySqlConnection, PgConnection};

/// Every fire, with the node that made it.
#[derive(Default)]
struct Fires(Mutex<Vec<(usize, ChangeFire)>>);

impl Fires {
    fn all(&self) -> Vec<(usize, ChangeFire)> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (up to a minute) until `done` holds for the fires so far.
    async fn wait(&self, what: &str, done: impl Fn(&[(usize, ChangeFire)]) -> bool) {
        for _ in 0..600 {
            if done(&self.all()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}; fires: {:?}", self.all());
    }
}

struct Node(Arc<Fires>, usize);

#[async_trait]
impl ChangeLauncher for Node {
    async fn launch_change(&self, fire: &ChangeFire) -> Result<String, LaunchError> {
        let mut all = (self.0).0.lock().unwrap();
        all.push((self.1, fire.clone()));
        Ok(format!("task-{}", all.len()))
    }
}

/// The change trigger of `json` (a `[[job.trigger]]` table) of job `refresh`.
fn trigger(json: serde_json::Value) -> ChangeTrigger {
    let raw: RawTrigger = serde_json::from_value(json).unwrap();
    match raw.build("refresh", 0) {
        Ok(TriggerPlan::Change(t)) => t,
        other => panic!("not a change trigger: {other:?}"),
    }
}

fn pg_trigger(url: &str, debounce: &str) -> ChangeTrigger {
    trigger(serde_json::json!({
        "name": "items", "kind": "pg_change", "database": url, "table": "items",
        "debounce": debounce, "poll": "200ms",
    }))
}

async fn pg(url: &str, sql: &str) {
    let mut c = PgConnection::connect(url).await.unwrap();
    c.execute(sql).await.unwrap();
    c.close().await.unwrap();
}

async fn sql_claims(url: &str) -> Arc<dyn ClaimStore> {
    Arc::new(SqlClaims::connect(url).await.unwrap())
}

fn redis_claims(ns: &str) -> Arc<dyn ClaimStore> {
    let url =
        std::env::var("SLUICE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = Redis::connect(&RedisOptions {
        urls: vec![url],
        namespace: ns.to_owned(),
        ..RedisOptions::default()
    })
    .unwrap();
    Arc::new(RedisClaims::new(redis))
}

/// The keys of a fire (its `changed_keys`, a JSON array).
fn keys(f: &ChangeFire) -> Vec<serde_json::Value> {
    serde_json::from_str(&f.params["changed_keys"]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_change_fires_once_with_the_changed_keys() {
    let db = ServerDb::new(Server::Postgres, "pgchange").await;
    pg(
        &db.url,
        "CREATE TABLE items (id INT PRIMARY KEY, name TEXT)",
    )
    .await;
    let fires = Arc::new(Fires::default());
    let claims = sql_claims(&db.url).await;
    let w = change::start(
        vec![pg_trigger(&db.url, "300ms")],
        claims.clone(),
        Arc::new(Node(fires.clone(), 0)),
    )
    .await
    .unwrap();
    // Inserts, an update and a delete in one transaction, and a change
    // rolled back (never seen).
    pg(
        &db.url,
        "BEGIN; INSERT INTO items VALUES (1, 'a'), (2, 'b'), (3, 'c'); \
         UPDATE items SET name = 'B' WHERE id = 2; DELETE FROM items WHERE id = 3; COMMIT; \
         BEGIN; INSERT INTO items VALUES (99, 'x'); ROLLBACK;",
    )
    .await;
    fires.wait("the first fire", |f| !f.is_empty()).await;
    // Then one more update: a fire of its own, with only that key.
    pg(&db.url, "UPDATE items SET name = 'A' WHERE id = 1").await;
    fires.wait("the second fire", |f| f.len() >= 2).await;
    // An update of the key itself: the new key and the old one.
    pg(&db.url, "UPDATE items SET id = 10 WHERE id = 1").await;
    fires.wait("the third fire", |f| f.len() >= 3).await;
    let all = fires.all();
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(keys(&all[2].1), [10, 1]);
    assert_eq!(keys(&all[0].1), [1, 2, 3]);
    assert_eq!(all[0].1.params["changed_keys_count"], "3");
    assert_eq!(all[0].1.job, "refresh");
    assert_eq!(all[0].1.trigger, "refresh/items");
    assert_eq!(keys(&all[1].1), [1]);
    // Stopping lets the last fire finish; the claim store saw the fires.
    w.shutdown().await;
    let last = claims.last_fires().await.unwrap();
    assert!(
        last["refresh/items"].outcome.starts_with("fired task"),
        "{last:?}"
    );
    // Fired changes are pruned (the only consumer passed them).
    let mut c = PgConnection::connect(&db.url).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sluice_changes")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(left, 0);
    c.close().await.unwrap();
    // Uninstalling removes the trigger, the log and the function.
    sluice_schedule::triggers::pg_change::uninstall(&db.url, "items")
        .await
        .unwrap();
    let mut c = PgConnection::connect(&db.url).await.unwrap();
    let left: Option<String> = sqlx::query_scalar("SELECT to_regclass('sluice_changes')::text")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(left, None);
    c.execute("INSERT INTO items VALUES (5, 'e')")
        .await
        .unwrap();
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_changes_within_the_debounce_fire_once_and_beyond_max_keys_say_many() {
    let db = ServerDb::new(Server::Postgres, "pgchange").await;
    pg(
        &db.url,
        "CREATE TABLE items (id INT PRIMARY KEY, name TEXT)",
    )
    .await;
    let fires = Arc::new(Fires::default());
    let t = trigger(serde_json::json!({
        "kind": "pg_change", "database": db.url, "table": "public.items",
        "key": "name", "ops": ["insert", "update"], "debounce": "3s", "max_keys": 50,
        "format": "list", "param": "names",
    }));
    let w = change::start(
        vec![t],
        sql_claims(&db.url).await,
        Arc::new(Node(fires.clone(), 0)),
    )
    .await
    .unwrap();
    // 120 statements, each its own transaction, well inside the debounce.
    let mut c = PgConnection::connect(&db.url).await.unwrap();
    for i in 0..120 {
        c.execute(format!("INSERT INTO items VALUES ({i}, 'n{}')", i % 60).as_str())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    fires.wait("the fire", |f| !f.is_empty()).await;
    let all = fires.all();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].1.params["names"], "many");
    assert_eq!(all[0].1.params["names_count"], "60");
    // A delete is not among the ops: it does not fire; an update does, as a list.
    c.execute("DELETE FROM items WHERE id = 0").await.unwrap();
    c.execute("UPDATE items SET name = 'z' WHERE id = 1")
        .await
        .unwrap();
    fires.wait("the update's fire", |f| f.len() >= 2).await;
    let all = fires.all();
    // The key column changed: the new key and the old one.
    assert_eq!(all[1].1.params["names"], "z,n1");
    assert_eq!(all[1].1.params["names_count"], "2");
    c.close().await.unwrap();
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_stopped_fire_on_start() {
    let db = ServerDb::new(Server::Postgres, "pgchange").await;
    pg(
        &db.url,
        "CREATE TABLE items (id INT PRIMARY KEY, name TEXT)",
    )
    .await;
    let fires = Arc::new(Fires::default());
    let claims = sql_claims(&db.url).await;
    let launcher = Arc::new(Node(fires.clone(), 0));
    // The first start installs the trigger; then no sluice runs.
    let w = change::start(
        vec![pg_trigger(&db.url, "100ms")],
        claims.clone(),
        launcher.clone(),
    )
    .await
    .unwrap();
    w.shutdown().await;
    pg(&db.url, "INSERT INTO items VALUES (7, 'a'), (8, 'b')").await;
    let w = change::start(
        vec![pg_trigger(&db.url, "100ms")],
        claims.clone(),
        launcher.clone(),
    )
    .await
    .unwrap();
    fires
        .wait("the fire of changes made while stopped", |f| !f.is_empty())
        .await;
    w.shutdown().await;
    // Started again with nothing new: no fire; a new change fires alone.
    let w = change::start(vec![pg_trigger(&db.url, "100ms")], claims, launcher)
        .await
        .unwrap();
    pg(&db.url, "DELETE FROM items WHERE id = 8").await;
    fires.wait("the delete's fire", |f| f.len() >= 2).await;
    let all = fires.all();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(keys(&all[0].1), [7, 8]);
    assert_eq!(keys(&all[1].1), [8]);
    w.shutdown().await;
}

/// Two nodes on one database and one claim store (each its own connection to
/// it, from `claims`) while a writer keeps changing rows, with a long
/// transaction that commits a low change id late: every key fires exactly once.
async fn two_nodes_fire_each_change_once(claims: impl Fn() -> Arc<dyn ClaimStore>) {
    let db = ServerDb::new(Server::Postgres, "pgchange").await;
    pg(
        &db.url,
        "CREATE TABLE items (id INT PRIMARY KEY, name TEXT)",
    )
    .await;
    let fires = Arc::new(Fires::default());
    let mut nodes = Vec::new();
    for n in 0..2 {
        nodes.push(
            change::start(
                vec![pg_trigger(&db.url, "50ms")],
                claims(),
                Arc::new(Node(fires.clone(), n)),
            )
            .await
            .unwrap(),
        );
    }
    // A transaction that starts first and commits last.
    let mut long = PgConnection::connect(&db.url).await.unwrap();
    long.execute("BEGIN").await.unwrap();
    long.execute("INSERT INTO items VALUES (100000, 'late')")
        .await
        .unwrap();
    let mut c = PgConnection::connect(&db.url).await.unwrap();
    for i in 0..200 {
        c.execute(format!("INSERT INTO items VALUES ({i}, 'x')").as_str())
            .await
            .unwrap();
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(120)).await;
        }
        if i == 100 {
            long.execute("COMMIT").await.unwrap();
        }
    }
    let fired = |f: &[(usize, ChangeFire)]| -> Vec<i64> {
        f.iter()
            .flat_map(|(_, f)| keys(f))
            .map(|k| k.as_i64().unwrap())
            .collect()
    };
    fires
        .wait("every key fired", |f| fired(f).len() >= 201)
        .await;
    // A last change after all: fired once more, so no node was still about
    // to fire an old range.
    c.execute("UPDATE items SET name = 'y' WHERE id = 0")
        .await
        .unwrap();
    fires
        .wait("the last change", |f| fired(f).len() >= 202)
        .await;
    let mut all = fired(&fires.all());
    assert_eq!(all.len(), 202, "{:?}", fires.all());
    assert_eq!(all.pop(), Some(0));
    all.sort_unstable();
    let mut want: Vec<i64> = (0..200).collect();
    want.push(100_000);
    assert_eq!(all, want);
    for n in nodes {
        n.shutdown().await;
    }
    c.close().await.unwrap();
    long.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_sql_claims_fire_each_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("claims.db").display());
    // Both nodes' stores open the same claim database.
    let first = sql_claims(&url).await;
    let second = sql_claims(&url).await;
    let stores = Mutex::new(vec![first, second]);
    two_nodes_fire_each_change_once(|| stores.lock().unwrap().pop().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_redis_claims_fire_each_change_once() {
    let ns = format!("dbc-{:016x}", rand::random::<u64>());
    two_nodes_fire_each_change_once(|| redis_claims(&ns)).await;
}

fn sql_trigger(url: &str) -> sluice_schedule::SqlChangeTrigger {
    match trigger(serde_json::json!({
        "name": "prices", "kind": "sql_change", "database": url,
        "query": "SELECT id, price FROM prices ORDER BY id", "every": "1s", "max_rows": 2,
    })) {
        ChangeTrigger::Sql(t) => t,
        ChangeTrigger::Pg(_) => unreachable!(),
    }
}

/// `sql_change` on `url`, with `exec` running SQL there: the first look
/// records, an unchanged result does not fire (also after a restart), a
/// changed one fires once (also one made while stopped), and of two nodes
/// only one fires a change.
async fn sql_change_fires_on_a_changed_result<F, Fut>(url: &str, exec: F)
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    exec("CREATE TABLE prices (id INT PRIMARY KEY, price INT)").await;
    exec("INSERT INTO prices VALUES (1, 10)").await;
    let fires = Arc::new(Fires::default());
    let claims = sql_claims(&format!(
        "sqlite://{}",
        std::env::temp_dir()
            .join(format!("sluice-sqlc-{:016x}.db", rand::random::<u64>()))
            .display()
    ))
    .await;
    let node = |n| Arc::new(Node(fires.clone(), n));
    let mut w = SqlChangeWatch::connect(sql_trigger(url), claims.clone(), node(0))
        .await
        .unwrap();
    assert_eq!(w.check().await.unwrap(), None, "the first look records");
    assert_eq!(w.check().await.unwrap(), None, "unchanged");
    exec("INSERT INTO prices VALUES (2, 20), (3, 30)").await;
    assert!(w.check().await.unwrap().is_some(), "changed");
    assert_eq!(w.check().await.unwrap(), None, "unchanged since the fire");
    // A restart does not fire for an unchanged result.
    drop(w);
    let mut w = SqlChangeWatch::connect(sql_trigger(url), claims.clone(), node(0))
        .await
        .unwrap();
    assert_eq!(w.check().await.unwrap(), None, "unchanged across a restart");
    // A change while stopped fires once on start.
    drop(w);
    exec("UPDATE prices SET price = 11 WHERE id = 1").await;
    let mut a = SqlChangeWatch::connect(sql_trigger(url), claims.clone(), node(0))
        .await
        .unwrap();
    let mut b = SqlChangeWatch::connect(sql_trigger(url), claims.clone(), node(1))
        .await
        .unwrap();
    let fired_a = a.check().await.unwrap();
    let fired_b = b.check().await.unwrap();
    assert!(
        fired_a.is_some() && fired_b.is_none(),
        "{fired_a:?} {fired_b:?}"
    );
    assert_eq!(b.check().await.unwrap(), None);
    // Two nodes, one change: one fire.
    exec("DELETE FROM prices WHERE id = 3").await;
    let fired_b = b.check().await.unwrap();
    let fired_a = a.check().await.unwrap();
    assert!(
        fired_b.is_some() && fired_a.is_none(),
        "{fired_a:?} {fired_b:?}"
    );
    let all = fires.all();
    assert_eq!(all.len(), 3, "{all:?}");
    let rows = |i: usize| -> serde_json::Value {
        serde_json::from_str(&all[i].1.params["changed_rows"]).unwrap()
    };
    // The first rows (max_rows = 2) and the count.
    assert_eq!(
        rows(0),
        serde_json::json!([{"id": 1, "price": 10}, {"id": 2, "price": 20}])
    );
    assert_eq!(all[0].1.params["changed_rows_count"], "3");
    assert_eq!(rows(1)[0]["price"], 11);
    assert_eq!(all[2].1.params["changed_rows_count"], "2");
    assert_eq!(all.iter().map(|f| f.0).collect::<Vec<_>>(), [0, 0, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_change_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("data.db").display());
    let exec = |sql: &'static str| {
        let url = url.clone();
        async move {
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            c.execute(sql).await.unwrap();
            c.close().await.unwrap();
        }
    };
    sql_change_fires_on_a_changed_result(&url, exec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_change_on_mariadb() {
    let db = ServerDb::new(Server::MySql, "sqlchange").await;
    let exec = |sql: &'static str| {
        let url = db.url.clone();
        async move {
            let mut c = MySqlConnection::connect(&url).await.unwrap();
            c.execute(sql).await.unwrap();
            c.close().await.unwrap();
        }
    };
    sql_change_fires_on_a_changed_result(&db.url, exec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_change_on_postgres_and_bad_starts_are_named() {
    let db = ServerDb::new(Server::Postgres, "sqlchange").await;
    let url = db.url.clone();
    let exec = |sql: &'static str| {
        let url = url.clone();
        async move { pg(&url, sql).await }
    };
    sql_change_fires_on_a_changed_result(&db.url, exec).await;
    // A table that does not exist, a key column that does not, a query that fails.
    let claims = sql_claims(&db.url).await;
    let fires = Arc::new(Fires::default());
    let start =
        |t: ChangeTrigger| change::start(vec![t], claims.clone(), Arc::new(Node(fires.clone(), 0)));
    let e = start(trigger(serde_json::json!({
        "kind": "pg_change", "database": db.url, "table": "nope"})))
    .await
    .unwrap_err();
    assert!(
        e.contains("no such table") && e.contains("refresh#0"),
        "{e}"
    );
    let e = start(trigger(serde_json::json!({
        "kind": "pg_change", "database": db.url, "table": "prices", "key": "sku"})))
    .await
    .unwrap_err();
    assert!(e.contains("no column \"sku\""), "{e}");
    let e = start(trigger(serde_json::json!({
        "kind": "sql_change", "database": db.url, "query": "SELECT * FROM nope"})))
    .await
    .unwrap_err();
    assert!(e.contains("the query fails"), "{e}");
}

/// Fails its first `fail` launches, then records like [`Node`].
struct Flaky(Arc<Fires>, std::sync::atomic::AtomicUsize);

#[async_trait]
impl ChangeLauncher for Flaky {
    async fn launch_change(&self, fire: &ChangeFire) -> Result<String, LaunchError> {
        if self
            .1
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            return Err(LaunchError::Enqueue("queue down".into()));
        }
        Node(self.0.clone(), 0).launch_change(fire).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_enqueue_fires_the_changes_again() {
    let db = ServerDb::new(Server::Postgres, "pgchange").await;
    pg(
        &db.url,
        "CREATE TABLE items (id INT PRIMARY KEY, name TEXT)",
    )
    .await;
    pg(
        &db.url,
        "CREATE TABLE prices (id INT PRIMARY KEY, price INT)",
    )
    .await;
    let fires = Arc::new(Fires::default());
    let claims = sql_claims(&db.url).await;
    let flaky = Arc::new(Flaky(fires.clone(), 2.into()));
    let w = change::start(vec![pg_trigger(&db.url, "50ms")], claims.clone(), flaky)
        .await
        .unwrap();
    pg(&db.url, "INSERT INTO items VALUES (1, 'a'), (2, 'b')").await;
    fires
        .wait("the fire after two failures", |f| !f.is_empty())
        .await;
    // Stopping lets the fire finish (its record and its cursor).
    w.shutdown().await;
    let last = claims.last_fires().await.unwrap();
    assert!(
        last["refresh/items"].outcome.starts_with("fired"),
        "{last:?}"
    );
    assert_eq!(keys(&fires.all()[0].1), [1, 2]);
    // sql_change: the failed launch leaves the change to fire on the next look.
    let flaky = Arc::new(Flaky(fires.clone(), 1.into()));
    let mut s = SqlChangeWatch::connect(sql_trigger(&db.url), claims, flaky)
        .await
        .unwrap();
    assert_eq!(s.check().await.unwrap(), None);
    pg(&db.url, "INSERT INTO prices VALUES (1, 5)").await;
    assert_eq!(s.check().await.unwrap(), None, "the launch failed");
    assert!(s.check().await.unwrap().is_some(), "fired on the next look");
    assert_eq!(s.check().await.unwrap(), None);
    assert_eq!(fires.all().len(), 2);
}
