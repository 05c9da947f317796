//! Fire claims: each scheduled instant of a trigger fires once, cluster-wide.
//!
//! A claim is keyed by trigger and instant, and kept as a high-water mark: a
//! trigger's *last claimed instant*. Claiming instant `t` succeeds only when `t` is
//! later than the mark, and moves the mark to `t`, atomically (a Lua script on
//! Redis; a conditional `UPDATE` on SQLite and PostgreSQL). So two nodes racing
//! for the same instant fire it once, and a node whose clock is a second or two
//! behind, or steps backwards, never fires an instant already claimed: it is not
//! later than the mark. One mark per trigger, not one key per fire, keeps the
//! store small at 1,000 fires a second.
//!
//! The store also keeps what `sluice schedule list` shows and what overlap checks
//! need: the paused triggers, and per trigger the last fire's task and outcome.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use sluice_core::{Redis, UnixMillis};
use sluice_sql::{ConnectSettings, Db, DbKind, Journal, Statement};

/// A claim store failed.
#[derive(Debug, thiserror::Error)]
#[error("schedule store ({store}) unavailable: {message}")]
pub struct ClaimError {
    /// `redis`, `sqlite` or `postgres`.
    pub store: &'static str,
    /// What happened (never a password).
    pub message: String,
}

/// The last fire of a trigger, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastFire {
    /// The scheduled instant (ms).
    pub at: UnixMillis,
    /// `fired <task id>`, `skipped: <reason>`, …
    pub outcome: String,
    /// The task it enqueued, if any.
    pub task: Option<String>,
}

/// Where claims, pauses and last fires live.
#[async_trait]
pub trait ClaimStore: Send + Sync + fmt::Debug + 'static {
    /// Claims instant `at` of `trigger`: true when this caller won it.
    ///
    /// # Errors
    ///
    /// [`ClaimError`] when the store does not answer (the fire is not made).
    async fn claim(&self, trigger: &str, at: UnixMillis) -> Result<bool, ClaimError>;

    /// The last claimed instant of every trigger.
    ///
    /// # Errors
    ///
    /// [`ClaimError`].
    async fn marks(&self) -> Result<HashMap<String, UnixMillis>, ClaimError>;

    /// Records what the fire at `at` did.
    ///
    /// # Errors
    ///
    /// [`ClaimError`].
    async fn record(&self, trigger: &str, fire: &LastFire) -> Result<(), ClaimError>;

    /// The recorded last fire of every trigger.
    ///
    /// # Errors
    ///
    /// [`ClaimError`].
    async fn last_fires(&self) -> Result<HashMap<String, LastFire>, ClaimError>;

    /// Pauses or resumes `trigger`.
    ///
    /// # Errors
    ///
    /// [`ClaimError`].
    async fn set_paused(&self, trigger: &str, paused: bool) -> Result<(), ClaimError>;

    /// Pauses `trigger` until `until` (Unix ms): from then on it fires again
    /// by itself. [`ClaimStore::set_paused`] with `false` resumes it sooner.
    ///
    /// # Errors
    ///
    /// [`ClaimError`].
    async fn pause_until(&self, trigger: &str, until: UnixMillis) -> Result<(), ClaimError>;

    /// Every paused trigger with when its pause ends (`None`: until resumed).
    /// Pauses that have ended are not listed.
    ///
    /// # Errors
    ///
    /// [`ClaimError`].
    async fn pauses(&self) -> Result<HashMap<String, Option<UnixMillis>>, ClaimError>;

    /// The paused triggers (those of [`ClaimStore::pauses`]).
    ///
    /// # Errors
    ///
    /// [`ClaimError`].
    async fn paused(&self) -> Result<HashSet<String>, ClaimError> {
        Ok(self.pauses().await?.into_keys().collect())
    }
}

fn now_ms() -> UnixMillis {
    chrono::Utc::now().timestamp_millis()
}

const CLAIM_LUA: &str = r"
local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
local at = tonumber(ARGV[2])
if at <= last then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// Claims in Redis (several nodes on one Redis).
pub struct RedisClaims {
    redis: Arc<Redis>,
    script: redis::Script,
}

impl fmt::Debug for RedisClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisClaims")
            .field("namespace", &self.redis.namespace())
            .finish()
    }
}

/// A failure of the shared Redis handle is the Redis claim store's.
impl From<sluice_core::Unavailable> for ClaimError {
    fn from(e: sluice_core::Unavailable) -> Self {
        ClaimError {
            store: "redis",
            message: e.to_string(),
        }
    }
}

impl RedisClaims {
    /// Claims in `redis` (under its namespace).
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            script: redis::Script::new(CLAIM_LUA),
        }
    }

    fn key(&self, what: &str) -> String {
        // One hash tag: every schedule key in one cluster slot.
        self.redis.key("sched", &format!("{{schedule}}:{what}"))
    }
}

#[async_trait]
impl ClaimStore for RedisClaims {
    async fn claim(&self, trigger: &str, at: UnixMillis) -> Result<bool, ClaimError> {
        let key = self.key("marks");
        let mut inv = self.script.key(&key);
        inv.arg(trigger).arg(at);
        let won: i64 = self.redis.eval("schedule.claim", inv).await?;
        Ok(won == 1)
    }

    async fn marks(&self) -> Result<HashMap<String, UnixMillis>, ClaimError> {
        let cmd = redis::cmd("HGETALL").arg(self.key("marks")).to_owned();
        Ok(self.redis.query("schedule.marks", &cmd).await?)
    }

    async fn record(&self, trigger: &str, fire: &LastFire) -> Result<(), ClaimError> {
        let v = serde_json::json!({"at": fire.at, "outcome": fire.outcome, "task": fire.task});
        let cmd = redis::cmd("HSET")
            .arg(self.key("last"))
            .arg(trigger)
            .arg(v.to_string())
            .to_owned();
        self.redis.query::<i64>("schedule.record", &cmd).await?;
        Ok(())
    }

    async fn last_fires(&self) -> Result<HashMap<String, LastFire>, ClaimError> {
        let cmd = redis::cmd("HGETALL").arg(self.key("last")).to_owned();
        let raw: HashMap<String, String> = self.redis.query("schedule.last", &cmd).await?;
        Ok(raw
            .into_iter()
            .filter_map(|(k, v)| parse_last(&v).map(|l| (k, l)))
            .collect())
    }

    async fn set_paused(&self, trigger: &str, paused: bool) -> Result<(), ClaimError> {
        let cmd = redis::cmd(if paused { "SADD" } else { "SREM" })
            .arg(self.key("paused"))
            .arg(trigger)
            .to_owned();
        self.redis.query::<i64>("schedule.pause", &cmd).await?;
        let cmd = redis::cmd("HDEL")
            .arg(self.key("paused_until"))
            .arg(trigger)
            .to_owned();
        self.redis.query::<i64>("schedule.pause", &cmd).await?;
        Ok(())
    }

    async fn pause_until(&self, trigger: &str, until: UnixMillis) -> Result<(), ClaimError> {
        self.set_paused(trigger, false).await?;
        let cmd = redis::cmd("HSET")
            .arg(self.key("paused_until"))
            .arg(trigger)
            .arg(until)
            .to_owned();
        self.redis.query::<i64>("schedule.pause", &cmd).await?;
        Ok(())
    }

    async fn pauses(&self) -> Result<HashMap<String, Option<UnixMillis>>, ClaimError> {
        let cmd = redis::cmd("SMEMBERS").arg(self.key("paused")).to_owned();
        let forever: HashSet<String> = self.redis.query("schedule.paused", &cmd).await?;
        let cmd = redis::cmd("HGETALL")
            .arg(self.key("paused_until"))
            .to_owned();
        let until: HashMap<String, i64> = self.redis.query("schedule.paused", &cmd).await?;
        let now = now_ms();
        Ok(until
            .into_iter()
            .filter(|(_, u)| *u > now)
            .map(|(k, u)| (k, Some(u)))
            .chain(forever.into_iter().map(|k| (k, None)))
            .collect())
    }
}

fn parse_last(v: &str) -> Option<LastFire> {
    let j: serde_json::Value = serde_json::from_str(v).ok()?;
    Some(LastFire {
        at: j["at"].as_i64()?,
        outcome: j["outcome"].as_str().unwrap_or_default().to_owned(),
        task: j["task"].as_str().map(str::to_owned),
    })
}

/// Claims in SQLite (embedded) or PostgreSQL.
pub struct SqlClaims {
    pool: Db,
    kind: &'static str,
    /// Triggers whose row is known to exist: claims skip the insert for them.
    ensured: sluice_core::SeenOnce,
}

impl fmt::Debug for SqlClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlClaims")
            .field("kind", &self.kind)
            .finish()
    }
}

impl SqlClaims {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and creates the table.
    ///
    /// # Errors
    ///
    /// [`ClaimError`] naming the URL without its password.
    pub async fn connect(url: &str) -> Result<Self, ClaimError> {
        let db_kind = DbKind::from_url(url);
        let kind = db_kind.map_or("postgres", DbKind::as_str);
        let err = |message: String| ClaimError {
            store: kind,
            message,
        };
        let settings = match db_kind {
            Some(DbKind::Sqlite) => ConnectSettings::new().create(Journal::Wal),
            Some(DbKind::Postgres) => ConnectSettings::new().max_connections(8),
            _ => {
                return Err(err(format!(
                    "unsupported schedule store URL {}: use sqlite://path.db or postgres://user@host/db",
                    sluice_core::redact_url(url)
                )));
            }
        };
        let pool = Db::connect(url, &settings)
            .await
            .map_err(|e| err(e.to_string()))?;
        let ddl = "CREATE TABLE IF NOT EXISTS sluice_schedule (
                trigger_id TEXT PRIMARY KEY,
                last_claim BIGINT NOT NULL,
                paused INTEGER NOT NULL DEFAULT 0,
                last_fire TEXT
            );
            CREATE TABLE IF NOT EXISTS sluice_schedule_pauses (
                trigger_id TEXT PRIMARY KEY,
                until_ms BIGINT NOT NULL
            )";
        // Several nodes may start at once: CREATE TABLE IF NOT EXISTS can race on
        // PostgreSQL (a unique violation on its catalog); once the table exists
        // the lost race is harmless.
        match pool.execute_script(ddl).await {
            Ok(_) => {}
            Err(e) if pool.kind() == DbKind::Postgres && sluice_sql::is_already_exists(&e) => {}
            Err(e) => return Err(err(format!("{}: {e}", sluice_core::redact_url(url)))),
        }
        Ok(Self {
            pool,
            kind,
            ensured: sluice_core::SeenOnce::new(),
        })
    }

    fn err(&self, e: sqlx::Error) -> ClaimError {
        ClaimError {
            store: self.kind,
            message: e.to_string(),
        }
    }

    /// Runs `st`; rows affected.
    async fn exec(&self, st: Statement<'_>) -> Result<u64, ClaimError> {
        self.pool.execute(&st).await.map_err(|e| self.err(e))
    }

    /// The `(trigger, last claim, last fire)` of the rows matching `filter`.
    async fn rows(
        &self,
        filter: &str,
    ) -> Result<Vec<(String, Option<i64>, Option<String>)>, ClaimError> {
        let sql =
            format!("SELECT trigger_id, last_claim, last_fire FROM sluice_schedule WHERE {filter}");
        let rows = self
            .pool
            .fetch_all(&Statement::new(sql))
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| Ok((r.get_at(0)?, r.get_at(1)?, r.get_at(2)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))
    }

    /// Creates `trigger`'s row once per process (claims are on the hot path).
    async fn ensure(&self, trigger: &str) -> Result<(), ClaimError> {
        if self.ensured.seen(trigger) {
            return Ok(());
        }
        self.exec(
            Statement::new(
                "INSERT INTO sluice_schedule (trigger_id, last_claim) VALUES ($1, -1) \
                 ON CONFLICT (trigger_id) DO NOTHING",
            )
            .bind(trigger),
        )
        .await?;
        self.ensured.mark(trigger);
        Ok(())
    }
}

#[async_trait]
impl ClaimStore for SqlClaims {
    async fn claim(&self, trigger: &str, at: UnixMillis) -> Result<bool, ClaimError> {
        self.ensure(trigger).await?;
        let n = self.exec(Statement::new(
                "UPDATE sluice_schedule SET last_claim = $1 WHERE trigger_id = $2 AND last_claim < $1",
            )
            .bind(at)
            .bind(trigger)).await?;
        Ok(n == 1)
    }

    async fn marks(&self) -> Result<HashMap<String, UnixMillis>, ClaimError> {
        let rows = self.rows("last_claim >= 0").await?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, v, _)| Some((k, v?)))
            .collect())
    }

    async fn record(&self, trigger: &str, fire: &LastFire) -> Result<(), ClaimError> {
        self.ensure(trigger).await?;
        let v = serde_json::json!({"at": fire.at, "outcome": fire.outcome, "task": fire.task});
        let v = v.to_string();
        self.exec(
            Statement::new("UPDATE sluice_schedule SET last_fire = $1 WHERE trigger_id = $2")
                .bind(v)
                .bind(trigger),
        )
        .await?;
        Ok(())
    }

    async fn last_fires(&self) -> Result<HashMap<String, LastFire>, ClaimError> {
        let rows = self.rows("last_fire IS NOT NULL").await?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, _, v)| Some((k, parse_last(&v?)?)))
            .collect())
    }

    async fn set_paused(&self, trigger: &str, paused: bool) -> Result<(), ClaimError> {
        self.ensure(trigger).await?;
        self.exec(
            Statement::new("DELETE FROM sluice_schedule_pauses WHERE trigger_id = $1")
                .bind(trigger),
        )
        .await?;
        self.exec(
            Statement::new("UPDATE sluice_schedule SET paused = $1 WHERE trigger_id = $2")
                .bind(i64::from(paused))
                .bind(trigger),
        )
        .await?;
        Ok(())
    }

    async fn pause_until(&self, trigger: &str, until: UnixMillis) -> Result<(), ClaimError> {
        self.set_paused(trigger, false).await?;
        self.exec(
            Statement::new(
                "INSERT INTO sluice_schedule_pauses (trigger_id, until_ms) VALUES ($1, $2) \
                 ON CONFLICT (trigger_id) DO UPDATE SET until_ms = excluded.until_ms",
            )
            .bind(trigger)
            .bind(until),
        )
        .await?;
        Ok(())
    }

    async fn pauses(&self) -> Result<HashMap<String, Option<UnixMillis>>, ClaimError> {
        let rows = self
            .pool
            .fetch_all(
                &Statement::new(
                    "SELECT trigger_id, until_ms FROM sluice_schedule_pauses WHERE until_ms > $1",
                )
                .bind(now_ms()),
            )
            .await
            .map_err(|e| self.err(e))?;
        let mut out: HashMap<String, Option<UnixMillis>> = rows
            .iter()
            .map(|r| Ok((r.get_at(0)?, Some(r.get_at(1)?))))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| self.err(e))?;
        for (k, _, _) in self.rows("paused = 1").await? {
            out.insert(k, None);
        }
        Ok(out)
    }
}
