//! Alert state in the job repository's database: one row per incident.
//!
//! An incident is a row of `sluice_alerts`; at most one row per rule and
//! fingerprint is `firing` (a partial unique index says so), so two nodes that
//! see the same condition at once insert one row between them, and the one
//! whose statement inserted it is the one that enqueues the notifications. A
//! resolve is the conditional `UPDATE … WHERE status = 'firing'`: one node
//! changes the row, that node sends the resolve.
//!
//! Each row also records whether its firing and its resolve notifications have
//! been enqueued. A node that dies between the state change and the enqueue
//! leaves them unsent; every evaluation enqueues what is unsent, under an
//! idempotency key per incident, status and receiver, so the queue keeps one
//! task however many nodes do so.

use std::collections::BTreeMap;

use serde::Serialize;
use sluice_sql::{ConnectSettings, Db, DbKind, Journal, Migration, Migrator, Row, Statement};

/// The schema of the alert state.
const MIGRATIONS: &[Migration] = &[Migration::new(
    1,
    "CREATE TABLE IF NOT EXISTS sluice_alerts (
        id {identity},
        rule TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        severity TEXT NOT NULL,
        status TEXT NOT NULL,
        starts_at BIGINT NOT NULL,
        ends_at BIGINT,
        last_eval BIGINT NOT NULL,
        firing_sent BIGINT NOT NULL DEFAULT 0,
        resolved_sent BIGINT NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX IF NOT EXISTS sluice_alerts_one_firing
        ON sluice_alerts (rule, fingerprint) WHERE status = 'firing';
    CREATE INDEX IF NOT EXISTS sluice_alerts_by_end ON sluice_alerts (ends_at);",
)];

/// Migrations of the alert state, recorded in their own table (lock key: "sluiceAL").
const MIGRATOR: Migrator = Migrator::new(
    "sluice_alerts_migrations",
    0x736C_7569_6365_414C,
    MIGRATIONS,
);

/// The columns of an [`AlertRecord`], in `SELECT` order.
const COLUMNS: &str = "id, rule, fingerprint, labels, annotations, severity, status, \
     starts_at, ends_at, last_eval, firing_sent, resolved_sent";

/// One incident of a rule: what `sluice alerts list`, the API and the
/// dashboard show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertRecord {
    /// Row id.
    pub id: i64,
    /// The rule (`alertname`).
    pub rule: String,
    /// Hash of its labels (16 hex digits), as Alertmanager's.
    pub fingerprint: String,
    /// Its labels: `alertname`, `severity`, what it is about (`job`,
    /// `upstream`, `queue`) and the rule's own.
    pub labels: BTreeMap<String, String>,
    /// `summary` and `description`, as when it fired.
    pub annotations: BTreeMap<String, String>,
    /// The `severity` label.
    pub severity: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// When it fired (Unix ms).
    pub starts_at: i64,
    /// When it resolved (Unix ms).
    pub ends_at: Option<i64>,
    /// When a node last evaluated it (Unix ms).
    pub last_eval: i64,
    /// Whether its firing notifications were enqueued.
    #[serde(skip)]
    pub firing_sent: bool,
    /// Whether its resolve notifications were enqueued.
    #[serde(skip)]
    pub resolved_sent: bool,
}

/// What an evaluation saw of one alert: firing with these labels and
/// annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    /// The rule.
    pub rule: String,
    /// Hash of `labels`.
    pub fingerprint: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// Its severity.
    pub severity: String,
}

/// The alert state, on the repository's database.
#[derive(Debug)]
pub struct AlertStore {
    db: Db,
}

fn decode(r: &Row) -> Result<AlertRecord, String> {
    let e = |e: sluice_sql::sqlx::Error| format!("alert state: {e}");
    let json = |s: String| -> Result<BTreeMap<String, String>, String> {
        serde_json::from_str(&s).map_err(|e| format!("alert state: not a JSON object: {e}"))
    };
    Ok(AlertRecord {
        id: r.get("id").map_err(e)?,
        rule: r.get("rule").map_err(e)?,
        fingerprint: r.get("fingerprint").map_err(e)?,
        labels: json(r.get("labels").map_err(e)?)?,
        annotations: json(r.get("annotations").map_err(e)?)?,
        severity: r.get("severity").map_err(e)?,
        status: r.get("status").map_err(e)?,
        starts_at: r.get("starts_at").map_err(e)?,
        ends_at: r.get("ends_at").map_err(e)?,
        last_eval: r.get("last_eval").map_err(e)?,
        firing_sent: r.get::<i64>("firing_sent").map_err(e)? != 0,
        resolved_sent: r.get::<i64>("resolved_sent").map_err(e)? != 0,
    })
}

fn db_err(e: impl std::fmt::Display) -> String {
    format!("alert state: {e}")
}

impl AlertStore {
    /// Opens the alert state in the database at `url` (the repository's) and
    /// migrates it.
    ///
    /// # Errors
    ///
    /// When it cannot be opened or migrated.
    pub async fn open(url: &str) -> Result<Self, String> {
        // As the repository opens it: a SQLite file is created (WAL), so a
        // listing before the first `serve` finds no alert rather than an error.
        let settings = match DbKind::from_url(url) {
            Some(DbKind::Sqlite) => ConnectSettings::new()
                .max_connections(4)
                .create(Journal::Wal),
            _ => ConnectSettings::new().max_connections(4),
        };
        let db = Db::connect(url, &settings).await.map_err(db_err)?;
        MIGRATOR
            .run(
                &db,
                sluice_core::Clock::now_millis(&sluice_core::SystemClock),
            )
            .await
            .map_err(db_err)?;
        Ok(Self { db })
    }

    async fn select(&self, st: Statement<'_>) -> Result<Vec<AlertRecord>, String> {
        let rows = self.db.fetch_all(&st).await.map_err(db_err)?;
        rows.iter().map(decode).collect()
    }

    /// Every firing alert, oldest first.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn active(&self) -> Result<Vec<AlertRecord>, String> {
        self.select(Statement::new(format!(
            "SELECT {COLUMNS} FROM sluice_alerts WHERE status = 'firing' ORDER BY starts_at, id"
        )))
        .await
    }

    /// Up to `limit` alerts resolved most recently, newest first.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn resolved(&self, limit: u32) -> Result<Vec<AlertRecord>, String> {
        self.select(
            Statement::new(format!(
                "SELECT {COLUMNS} FROM sluice_alerts WHERE status = 'resolved' \
                 ORDER BY ends_at DESC, id DESC LIMIT $1"
            ))
            .bind(i64::from(limit)),
        )
        .await
    }

    /// Records `f` as firing at `now`: the new incident when this call opened
    /// it, `None` when it was firing already (its `last_eval` moves on).
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn fire(&self, f: &Firing, now: i64) -> Result<Option<AlertRecord>, String> {
        let labels = serde_json::to_string(&f.labels).map_err(db_err)?;
        let annotations = serde_json::to_string(&f.annotations).map_err(db_err)?;
        let inserted = self
            .db
            .execute(
                &Statement::new(
                    "INSERT INTO sluice_alerts (rule, fingerprint, labels, annotations, severity, \
                     status, starts_at, last_eval) VALUES ($1, $2, $3, $4, $5, 'firing', $6, $6) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(f.rule.as_str())
                .bind(f.fingerprint.as_str())
                .bind(labels)
                .bind(annotations)
                .bind(f.severity.as_str())
                .bind(now),
            )
            .await
            .map_err(db_err)?;
        if inserted == 0 {
            self.db
                .execute(
                    &Statement::new(
                        "UPDATE sluice_alerts SET last_eval = $1 \
                         WHERE rule = $2 AND fingerprint = $3 AND status = 'firing'",
                    )
                    .bind(now)
                    .bind(f.rule.as_str())
                    .bind(f.fingerprint.as_str()),
                )
                .await
                .map_err(db_err)?;
            return Ok(None);
        }
        self.firing(&f.rule, &f.fingerprint).await
    }

    /// The firing incident of `rule` and `fingerprint`, if any.
    async fn firing(&self, rule: &str, fingerprint: &str) -> Result<Option<AlertRecord>, String> {
        Ok(self
            .select(
                Statement::new(format!(
                    "SELECT {COLUMNS} FROM sluice_alerts \
                     WHERE rule = $1 AND fingerprint = $2 AND status = 'firing'"
                ))
                .bind(rule)
                .bind(fingerprint),
            )
            .await?
            .pop())
    }

    /// Resolves incident `a` at `now`: the resolved incident when this call
    /// resolved it, `None` when another node did first.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn resolve(
        &self,
        a: &AlertRecord,
        now: i64,
        notify: bool,
    ) -> Result<Option<AlertRecord>, String> {
        let changed = self
            .db
            .execute(
                &Statement::new(format!(
                    "UPDATE sluice_alerts SET status = 'resolved', ends_at = $1, last_eval = $1, \
                     resolved_sent = {} WHERE id = $2 AND status = 'firing'",
                    i64::from(!notify)
                ))
                .bind(now)
                .bind(a.id),
            )
            .await
            .map_err(db_err)?;
        Ok((changed == 1).then(|| AlertRecord {
            status: "resolved".into(),
            ends_at: Some(now),
            last_eval: now,
            resolved_sent: !notify,
            ..a.clone()
        }))
    }

    /// Incidents whose notifications are not all enqueued yet.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn unsent(&self) -> Result<Vec<AlertRecord>, String> {
        self.select(Statement::new(format!(
            "SELECT {COLUMNS} FROM sluice_alerts WHERE firing_sent = 0 \
             OR (status = 'resolved' AND resolved_sent = 0) ORDER BY id"
        )))
        .await
    }

    /// Marks the notifications of incident `id` for `status` as enqueued.
    ///
    /// # Errors
    ///
    /// The database's.
    pub async fn mark_sent(&self, id: i64, status: &str) -> Result<(), String> {
        let column = if status == "firing" {
            "firing_sent"
        } else {
            "resolved_sent"
        };
        self.db
            .execute(
                &Statement::new(format!(
                    "UPDATE sluice_alerts SET {column} = 1 WHERE id = $1"
                ))
                .bind(id),
            )
            .await
            .map_err(db_err)?;
        Ok(())
    }
}
