//! What operations keep beside the job repository, in its database: the audit
//! log of every state-changing API and dashboard action (who, what, when), and
//! the sampled series the dashboard's charts draw (requests, hit ratio, upstream
//! calls, quota left, queue depths), so that both survive restarts. Samples
//! older than `[repository] series_retention` are pruned as new ones land.

use serde::Serialize;
use sluice_sql::{ConnectSettings, Db, DbKind, Journal, Migration, Migrator, Statement};

/// The schema's history, oldest first (append only). The advisory lock key is
/// `"sluiceOP"` as big-endian bytes.
const MIGRATOR: Migrator = Migrator::new(
    "sluice_ops_migrations",
    0x736C_7569_6365_4F50,
    &[Migration::new(
        1,
        "CREATE TABLE sluice_audit (
            id {identity},
            at BIGINT NOT NULL,
            actor TEXT NOT NULL,
            role TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            detail TEXT NOT NULL
        );
        CREATE INDEX sluice_audit_at ON sluice_audit (at);
        CREATE TABLE sluice_series (
            at BIGINT NOT NULL,
            name TEXT NOT NULL,
            milli BIGINT NOT NULL,
            PRIMARY KEY (name, at)
        );
        CREATE INDEX sluice_series_at ON sluice_series (at);",
    )],
);

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Its id; newer entries have larger ids.
    pub id: i64,
    /// When, RFC 3339.
    pub at: String,
    /// The token's name.
    pub actor: String,
    /// The token's role.
    pub role: String,
    /// What was done, e.g. `job.run`, `trigger.pause`, `dead.retry`.
    pub action: String,
    /// On what: a job, trigger, queue, task or cache key.
    pub target: String,
    /// The request's particulars (parameters, counts), never a secret.
    pub detail: String,
}

/// The audit log and the chart series, in the repository's database.
#[derive(Debug)]
pub struct OpsStore {
    db: Db,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An RFC 3339 time of Unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl OpsStore {
    /// Connects to the repository database `url` and migrates the schema.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached or is not SQLite or PostgreSQL.
    pub async fn connect(url: &str) -> Result<Self, String> {
        let settings = match DbKind::from_url(url) {
            Some(DbKind::Sqlite) => ConnectSettings::new()
                .max_connections(4)
                .create(Journal::Wal),
            Some(DbKind::Postgres) => ConnectSettings::new().max_connections(4),
            _ => {
                return Err(format!(
                    "the audit log needs an SQLite or PostgreSQL repository, not {}",
                    sluice_core::redact_url(url)
                ));
            }
        };
        let db = Db::connect(url, &settings)
            .await
            .map_err(|e| e.to_string())?;
        MIGRATOR
            .run(&db, now_ms())
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self { db })
    }

    /// Records an action.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn audit(
        &self,
        actor: &str,
        role: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), String> {
        let st = Statement::new(
            "INSERT INTO sluice_audit (at, actor, role, action, target, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(now_ms())
        .bind(actor)
        .bind(role)
        .bind(action)
        .bind(target)
        .bind(detail);
        self.db
            .execute(&st)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Audit entries, newest first, with an id below `before` (a page's cursor),
    /// of `actor` and with an action starting with `action` when given.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn audit_log(
        &self,
        before: Option<i64>,
        actor: Option<&str>,
        action: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, String> {
        let mut sql = String::from(
            "SELECT id, at, actor, role, action, target, detail FROM sluice_audit WHERE id < $1",
        );
        let mut st_args: Vec<String> = Vec::new();
        if let Some(a) = actor {
            st_args.push(a.to_owned());
            sql.push_str(&format!(" AND actor = ${}", st_args.len() + 1));
        }
        if let Some(a) = action {
            st_args.push(format!("{}%", a.replace(['%', '_'], "")));
            sql.push_str(&format!(" AND action LIKE ${}", st_args.len() + 1));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", limit.min(1000)));
        let mut st = Statement::new(sql).bind(before.unwrap_or(i64::MAX));
        for a in st_args {
            st = st.bind(a);
        }
        let rows = self.db.fetch_all(&st).await.map_err(|e| e.to_string())?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.get_at(0)?,
                    at: rfc3339(r.get_at(1)?),
                    actor: r.get_at(2)?,
                    role: r.get_at(3)?,
                    action: r.get_at(4)?,
                    target: r.get_at(5)?,
                    detail: r.get_at(6)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| e.to_string())
    }

    /// Records one sample of each series at `at_ms` and drops samples older
    /// than `keep_since_ms`.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn record_samples(
        &self,
        at_ms: i64,
        samples: &[(String, f64)],
        keep_since_ms: i64,
    ) -> Result<(), String> {
        for (name, value) in samples.iter().filter(|(_, v)| v.is_finite()) {
            let st = Statement::new(
                "INSERT INTO sluice_series (at, name, milli) VALUES ($1, $2, $3) \
                 ON CONFLICT (name, at) DO UPDATE SET milli = excluded.milli",
            )
            .bind(at_ms)
            .bind(name.as_str())
            // Values are kept in thousandths: every database stores a BIGINT alike.
            .bind((*value * 1000.0).round() as i64);
            self.db.execute(&st).await.map_err(|e| e.to_string())?;
        }
        let st = Statement::new("DELETE FROM sluice_series WHERE at < $1").bind(keep_since_ms);
        self.db
            .execute(&st)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// The samples of series `name` since `since_ms`, oldest first:
    /// `(Unix ms, value)`.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn series(&self, name: &str, since_ms: i64) -> Result<Vec<(i64, f64)>, String> {
        let st = Statement::new(
            "SELECT at, milli FROM sluice_series WHERE name = $1 AND at >= $2 ORDER BY at LIMIT 5000",
        )
        .bind(name)
        .bind(since_ms);
        let rows = self.db.fetch_all(&st).await.map_err(|e| e.to_string())?;
        rows.iter()
            .map(|r| Ok((r.get_at(0)?, r.get_at::<i64>(1)? as f64 / 1000.0)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| e.to_string())
    }

    /// The names of every recorded series.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub async fn series_names(&self) -> Result<Vec<String>, String> {
        let rows = self
            .db
            .fetch_all(&Statement::new(
                "SELECT DISTINCT name FROM sluice_series ORDER BY name",
            ))
            .await
            .map_err(|e| e.to_string())?;
        rows.iter()
            .map(|r| r.get_at(0))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(|e| e.to_string())
    }
}
