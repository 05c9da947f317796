//! [`BackupTasklet`]: a consistent, compressed, checksummed copy of a database,
//! kept in a directory or an S3-compatible bucket with restic-style retention;
//! `tasklet = { kind = "backup", … }`.
//!
//! ```text
//! execute
//!   destination.open (secrets read) ─ prepare (mkdir, remove .*.tmp of a crashed run)
//!   dump ─▶ zstd (streaming, own thread) ─▶ .ID.EXT.zst.tmp   SHA-256 of what is stored
//!     PostgreSQL  pg_dump -Fc            (PGPASSWORD in its environment)
//!     MariaDB     mariadb-dump --single-transaction   (MYSQL_PWD)
//!     SQLite      VACUUM INTO over sqlx: one read transaction, a consistent snapshot
//!   move into place (rename, or one put / multipart upload) as ID.EXT.zst
//!   write ID.json (the manifest) last: only now does `list` see the backup
//!   retention: keep_last / keep_daily / keep_weekly / keep_monthly over the
//!     backups of the same database here; the others lose manifest, then artifact
//! ```
//!
//! The source is a database URL or sluice's own repository (`source =
//! "repository"`, whatever database `[repository] url` names). `sluice backup
//! list | verify | restore` read the same destination.
//!
//! Modules: `config` (the `Raw*` tables), `source` (dump and load per
//! database), `dest` (directory and S3), `manifest`, `retention`, `pipe`
//! (compression and checking).

mod config;
mod dest;
mod manifest;
mod pipe;
mod retention;
mod source;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sluice_core::{Clock, SystemClock};
use thiserror::Error;

pub use config::{
    RawBackupTasklet, RawDestination, RawDirDestination, RawRetention, RawS3Destination,
};
pub use dest::{Destination, DestinationSpec, Listed, S3Spec, Verified};
pub use manifest::{MANIFEST_FORMAT, Manifest, SourceKind, manifest_name, new_id};
pub use retention::Retention;
pub use source::BackupSource;

use crate::job::{Tasklet, TaskletError};
use crate::model::StepCounts;
use pipe::Compressor;

/// The zstd level used when none is configured.
pub const DEFAULT_LEVEL: i32 = 3;

/// Why a backup, a check or a restore failed. Never carries a password.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Reading or writing a local file.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A dump or restore program is not installed.
    #[error("{tool} is not installed (or not on PATH); install {package}")]
    ToolMissing {
        /// The program.
        tool: String,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// A dump or restore program failed; the tail of its stderr, scrubbed.
    #[error("{tool} failed ({status}){stderr}")]
    Tool {
        /// The program.
        tool: String,
        /// How it ended.
        status: String,
        /// `:\n` and the tail of its stderr, or nothing.
        stderr: String,
    },
    /// The SQLite copy failed.
    #[error("SQLite VACUUM INTO failed: {0}")]
    Sqlite(String),
    /// The database could not be opened.
    #[error("connecting to the database: {0}")]
    Connect(#[source] sluice_sql::SqlError),
    /// A secret that cannot be read.
    #[error("{key}: {message}")]
    Secret {
        /// Its key (`password`, `secret_access_key`).
        key: String,
        /// Why; never the value.
        message: String,
    },
    /// The object store refused or failed.
    #[error("object store: {0}")]
    Store(String),
    /// An artifact that does not match its manifest.
    #[error("backup {id} is corrupt: {message}")]
    Corrupt {
        /// The backup.
        id: String,
        /// What does not match.
        message: String,
    },
    /// No backup with that id.
    #[error("no backup {id:?} in {at}")]
    NotFound {
        /// The id asked for.
        id: String,
        /// The destination.
        at: String,
    },
    /// A source, target or location that is not usable.
    #[error("{0}")]
    Invalid(String),
}

/// What one backup did.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// Its manifest.
    pub manifest: Manifest,
    /// Ids of the older backups retention deleted.
    pub deleted: Vec<String>,
}

/// Backs up one database to one destination; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct BackupTasklet {
    /// What is backed up.
    pub source: BackupSource,
    /// Where backups go.
    pub destination: DestinationSpec,
    /// Which backups are kept.
    pub retention: Retention,
    /// The zstd level (1–19).
    pub level: i32,
    /// Where `created_at` (and so retention's days) comes from.
    pub clock: Arc<dyn Clock>,
    last: Option<BackupReport>,
}

impl BackupTasklet {
    /// Backs up `source` to `destination`, keeping everything, at zstd level
    /// [`DEFAULT_LEVEL`].
    pub fn new(source: BackupSource, destination: DestinationSpec) -> Self {
        Self {
            source,
            destination,
            retention: Retention::default(),
            level: DEFAULT_LEVEL,
            clock: Arc::new(SystemClock),
            last: None,
        }
    }

    setters! {
        /// Sets the retention rules.
        #[must_use]
        retention(retention: Retention);
        /// Sets the zstd level.
        #[must_use]
        level(level: i32);
        /// Sets the clock.
        #[must_use]
        clock(clock: Arc<dyn Clock>);
    }

    /// Takes one backup, then applies retention.
    ///
    /// # Errors
    ///
    /// What failed; a half-made backup is removed (or left under a temporary
    /// name that `list` ignores and the next backup removes).
    pub async fn run(&mut self) -> Result<BackupReport, BackupError> {
        let dest = self.destination.open()?;
        dest.prepare().await?;
        let created_at = DateTime::<Utc>::from_timestamp_millis(self.clock.now_millis())
            .unwrap_or_else(Utc::now);
        let id = manifest::new_id(created_at);
        let artifact = format!("{id}.{}.zst", self.source.kind.extension());
        let staging = dest.staging();
        let tmp = staging.join(format!(".{artifact}.tmp"));
        let mut out = Compressor::start(tmp.clone(), self.level);
        let dumped = self.source.dump(&staging, &mut out).await;
        let written = out.finish().await;
        let (dumped, written) = match (dumped, written) {
            (Ok(d), Ok(w)) => (d, w),
            (Err(e), _) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
            (Ok(_), Err(e)) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(source::io_err("compressing the dump", e));
            }
        };
        if let Err(e) = dest.store(&tmp, &artifact).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            id,
            source: self.source.kind,
            repository: self.source.repository,
            database: self.source.database(),
            created_at,
            tool: dumped.tool,
            tool_version: dumped.tool_version,
            artifact,
            compression: "zstd".into(),
            raw_bytes: written.raw,
            compressed_bytes: written.compressed,
            sha256: written.sha256,
        };
        dest.put_manifest(&manifest).await?;
        let deleted = apply_retention(&dest, &self.retention, &manifest).await?;
        Ok(BackupReport { manifest, deleted })
    }
}

/// Deletes the backups of `newest`'s database in `dest` that `retention` does
/// not keep (never `newest` itself). Returns their ids.
///
/// # Errors
///
/// The listing or a deletion failed (those deleted before stay deleted).
pub async fn apply_retention(
    dest: &Destination,
    retention: &Retention,
    newest: &Manifest,
) -> Result<Vec<String>, BackupError> {
    if !retention.is_set() {
        return Ok(Vec::new());
    }
    let same: Vec<Manifest> = dest
        .list()
        .await?
        .into_iter()
        .filter_map(|l| match l {
            Listed::Ok(m)
                if m.source == newest.source
                    && m.database == newest.database
                    && m.repository == newest.repository =>
            {
                Some(m)
            }
            _ => None,
        })
        .collect();
    let times: Vec<(String, DateTime<Utc>)> =
        same.iter().map(|m| (m.id.clone(), m.created_at)).collect();
    let kept = retention.kept(&times);
    let mut deleted = Vec::new();
    for m in same {
        if m.id != newest.id && !kept.contains(&m.id) {
            dest.delete(&m).await?;
            tracing::info!(backup = %m.id, "retention deleted a backup");
            deleted.push(m.id);
        }
    }
    Ok(deleted)
}

/// `1.2 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[async_trait]
impl Tasklet for BackupTasklet {
    async fn execute(&mut self) -> Result<String, TaskletError> {
        self.last = None;
        let report = self
            .run()
            .await
            .map_err(|e| TaskletError::Failed(format!("backup failed: {e}")))?;
        let m = &report.manifest;
        let dest = self
            .destination
            .open()
            .map_or_else(|_| String::new(), |d| d.to_string());
        let mut msg = format!(
            "backup {} of {} {:?}: {} raw, {} stored ({} bytes), sha256 {} in {dest}",
            m.id,
            m.source,
            m.database,
            human_bytes(m.raw_bytes),
            human_bytes(m.compressed_bytes),
            m.compressed_bytes,
            m.sha256,
        );
        if !report.deleted.is_empty() {
            msg.push_str(&format!(
                "; retention deleted {}",
                report.deleted.join(", ")
            ));
        }
        self.last = Some(report);
        Ok(msg)
    }

    fn counts(&self) -> Option<StepCounts> {
        let written = u64::from(self.last.is_some());
        Some(StepCounts {
            written,
            commits: written,
            ..StepCounts::default()
        })
    }
}
