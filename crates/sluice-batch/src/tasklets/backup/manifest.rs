//! The manifest of one backup: a small JSON file beside its artifact, written
//! last, after the artifact is in place and its checksum known. A backup
//! without a manifest is not a backup (a crash left it half done); a manifest
//! is the promise that its artifact is complete, and [`verify`](super::Destination::verify)
//! checks that promise.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The manifest format written now.
pub const MANIFEST_FORMAT: u32 = 1;

/// What kind of database a backup is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// PostgreSQL, dumped by `pg_dump -Fc`.
    Postgres,
    /// MariaDB or MySQL, dumped by `mariadb-dump --single-transaction`.
    Mysql,
    /// SQLite, copied by `VACUUM INTO`.
    Sqlite,
}

impl SourceKind {
    /// The name in manifests and in `sluice backup list`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Mysql => "mysql",
            Self::Sqlite => "sqlite",
        }
    }

    /// The artifact's file extension, before `.zst`.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Postgres => "pgdump",
            Self::Mysql => "sql",
            Self::Sqlite => "sqlite",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backup, as its `ID.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`] when it was written.
    pub format: u32,
    /// The backup's id: its UTC time and a random suffix, `20261204T193000Z-3fa2`
    /// (ids sort in time order).
    pub id: String,
    /// The kind of database.
    pub source: SourceKind,
    /// Whether it is sluice's own repository.
    #[serde(default)]
    pub repository: bool,
    /// The database's name (a SQLite file's name); never a password or a URL.
    pub database: String,
    /// When the backup was taken.
    pub created_at: DateTime<Utc>,
    /// The program that took it (`pg_dump`, `mariadb-dump`, `sqlite VACUUM INTO`).
    pub tool: String,
    /// Its version line (`pg_dump (PostgreSQL) 15.20`, `sqlite 3.46.0`).
    pub tool_version: String,
    /// The artifact's file (object) name, beside the manifest.
    pub artifact: String,
    /// How the artifact is compressed (`zstd`).
    pub compression: String,
    /// Bytes of the dump before compression.
    pub raw_bytes: u64,
    /// Bytes of the stored artifact.
    pub compressed_bytes: u64,
    /// SHA-256 of the stored (compressed) artifact, lower-case hex.
    pub sha256: String,
}

impl Manifest {
    /// The manifest's own file (object) name: `ID.json`.
    pub fn file_name(&self) -> String {
        manifest_name(&self.id)
    }
}

/// The manifest file name of backup `id`.
pub fn manifest_name(id: &str) -> String {
    format!("{id}.json")
}

/// A new backup id for a backup taken at `at`.
pub fn new_id(at: DateTime<Utc>) -> String {
    format!(
        "{}-{:04x}",
        at.format("%Y%m%dT%H%M%S%.3fZ"),
        rand::random::<u16>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_round_trip_and_ids_sort_by_time() {
        let at = DateTime::parse_from_rfc3339("2026-12-04T19:30:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let id = new_id(at);
        assert!(id.starts_with("20261204T193000.500Z-"), "{id}");
        let later = new_id(at + chrono::Duration::seconds(1));
        assert!(later > id);
        let m = Manifest {
            format: MANIFEST_FORMAT,
            id: id.clone(),
            source: SourceKind::Postgres,
            repository: false,
            database: "air".into(),
            created_at: at,
            tool: "pg_dump".into(),
            tool_version: "pg_dump (PostgreSQL) 15.20".into(),
            artifact: format!("{id}.pgdump.zst"),
            compression: "zstd".into(),
            raw_bytes: 10,
            compressed_bytes: 5,
            sha256: "00".into(),
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"source\":\"postgres\""), "{text}");
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
    }
}
