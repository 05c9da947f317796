//! The `tasklet = { kind = "backup", … }` table.
//!
//! ```toml
//! [[job.step]]
//! name = "backup"
//! tasklet = { kind = "backup", source = "repository", destination = { kind = "dir", path = "/var/backups/sluice" }, retention = { keep_daily = 7, keep_weekly = 4 } }
//! ```

use serde::Deserialize;
use serde_spanned::Spanned;
use sluice_core::config::RawSecret;

use super::dest::{DestinationSpec, S3Spec};
use super::retention::Retention;
use super::source::BackupSource;
use super::{BackupTasklet, DEFAULT_LEVEL};
use crate::config::{BuildContext, ConfigError};

/// `kind = "backup"`: a consistent, zstd-compressed, SHA-256-checksummed copy
/// of a database (`pg_dump -Fc`, `mariadb-dump --single-transaction`, SQLite's
/// `VACUUM INTO`, which is a snapshot taken in one read transaction while
/// writers go on), with a JSON manifest beside it, kept in a directory or an
/// S3 bucket; `sluice backup list | verify | restore` read it back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackupTasklet {
    /// What to back up: a database URL (`postgres://…`, `mysql://…` or
    /// `mariadb://…`, `sqlite://…`), or `"repository"`: sluice's own repository,
    /// whatever database `[repository] url` names. Give this or `repository`.
    pub source: Option<String>,
    /// `true`: back up sluice's own repository (as `source = "repository"`).
    #[serde(default)]
    pub repository: bool,
    /// The database password, when the URL has none. It reaches `pg_dump` /
    /// `mariadb-dump` through their environment, never their arguments.
    #[serde(default, deserialize_with = "secret")]
    pub password: Option<RawSecret>,
    /// Where backups go (`kind = "dir" | "s3"`).
    pub destination: RawDestination,
    /// Which backups are kept, applied after each successful one. Default: all.
    #[serde(default)]
    pub retention: RawRetention,
    /// zstd level, 1 (fast) to 19 (small). Default 3.
    pub level: Option<u32>,
}

/// `destination = { kind = …, … }`: where a backup step keeps its backups.
#[allow(clippy::large_enum_variant, reason = "built once per run")]
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RawDestination {
    /// `kind = "dir"`: a local directory.
    Dir(RawDirDestination),
    /// `kind = "s3"`: an S3-compatible bucket (AWS, MinIO, …).
    S3(RawS3Destination),
}

/// `kind = "dir"`: a local directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirDestination {
    /// The directory (created when missing).
    pub path: String,
}

/// `kind = "s3"`: an S3-compatible bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3Destination {
    /// The bucket.
    pub bucket: String,
    /// Key prefix (a "folder") of the backups. Default: none.
    pub prefix: Option<String>,
    /// The endpoint of an S3-compatible store (`http://127.0.0.1:9000`); plain
    /// `http://` is allowed only when written so. Default: AWS.
    pub endpoint: Option<String>,
    /// The region. Default `us-east-1`.
    pub region: Option<String>,
    /// The access key id.
    #[serde(default, deserialize_with = "secret")]
    pub access_key_id: Option<RawSecret>,
    /// The secret access key.
    #[serde(default, deserialize_with = "secret")]
    pub secret_access_key: Option<RawSecret>,
}

/// `retention = { … }`: like restic's `forget`, a backup is kept when any rule
/// keeps it; days, weeks (ISO) and months are UTC. Only backups of the same
/// database in the same destination count. No rule: every backup is kept.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// Keep the newest N backups.
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N days that have one.
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the last N weeks that have one.
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the last N months that have one.
    pub keep_monthly: Option<u32>,
}

/// A secret written `{ env = "NAME" }` or `{ file = "PATH" }` in a step table.
/// Step tables are typed from a `toml::Value`, which keeps no spans, so the
/// secret is read without them (an error names its key instead).
fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<RawSecret>, D::Error> {
    use serde::de::{self, MapAccess, Visitor};
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Table {
        env: Option<String>,
        file: Option<String>,
    }
    const INLINE: &str =
        "a secret is never written inline; write { env = \"NAME\" } or { file = \"PATH\" }";
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = RawSecret;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("{ env = \"NAME\" } or { file = \"PATH\" }")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawSecret, A::Error> {
            let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
            Ok(RawSecret {
                env: t.env.map(|v| Spanned::new(0..0, v)),
                file: t.file.map(|v| Spanned::new(0..0, v)),
            })
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<RawSecret, E> {
            Err(E::custom(INLINE))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawSecret, E> {
            Err(E::custom(INLINE))
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawSecret, E> {
            Err(E::custom(INLINE))
        }
    }
    d.deserialize_any(V).map(Some)
}

kind!(RawBackupTasklet => dyn crate::job::Tasklet, |c, ctx| c.build(ctx)?);

impl From<RawRetention> for Retention {
    fn from(r: RawRetention) -> Self {
        Retention {
            keep_last: r.keep_last,
            keep_daily: r.keep_daily,
            keep_weekly: r.keep_weekly,
            keep_monthly: r.keep_monthly,
        }
    }
}

impl RawDestination {
    /// The destination, not opened yet.
    pub fn spec(&self) -> DestinationSpec {
        match self {
            Self::Dir(d) => DestinationSpec::Dir(d.path.clone().into()),
            Self::S3(s) => DestinationSpec::S3(S3Spec {
                bucket: s.bucket.clone(),
                prefix: s
                    .prefix
                    .as_deref()
                    .unwrap_or_default()
                    .trim_matches('/')
                    .to_owned(),
                endpoint: s.endpoint.clone(),
                region: s.region.clone(),
                access_key_id: s.access_key_id.clone(),
                secret_access_key: s.secret_access_key.clone(),
                from_env: false,
            }),
        }
    }
}

impl RawBackupTasklet {
    /// The source: its URL, or the repository's from `ctx`.
    ///
    /// # Errors
    ///
    /// Neither or both of `source` and `repository`, the repository without a
    /// URL in `ctx`, or a URL of no supported database.
    pub fn source(&self, ctx: &dyn BuildContext) -> Result<BackupSource, ConfigError> {
        let repository = self.repository || self.source.as_deref() == Some("repository");
        let given = self.source.as_deref().filter(|s| *s != "repository");
        let source = match (repository, given) {
            (true, None) => {
                let url = ctx.repository_url().ok_or(ConfigError::Needs {
                    what: "a backup of the repository",
                    needs: "the [repository] url of sluice's config",
                })?;
                BackupSource::from_url(&url)
                    .map_err(|e| ConfigError::Backup(format!("repository: {e}")))?
                    .repository()
            }
            (false, Some(url)) => BackupSource::from_url(url)
                .map_err(|e| ConfigError::Backup(format!("source: {e}")))?,
            _ => return Err(ConfigError::OneOf(&["source", "repository = true"])),
        };
        Ok(match &self.password {
            Some(p) => source.password(p.clone()),
            None => source,
        })
    }

    /// The tasklet.
    ///
    /// # Errors
    ///
    /// As [`source`](Self::source), an empty bucket or directory, or a level
    /// outside 1–19.
    pub fn build(self, ctx: &dyn BuildContext) -> Result<BackupTasklet, ConfigError> {
        let source = self.source(ctx)?;
        match &self.destination {
            RawDestination::Dir(d) if d.path.trim().is_empty() => {
                return Err(ConfigError::Backup(
                    "destination: path must name a directory".into(),
                ));
            }
            RawDestination::S3(s) if s.bucket.trim().is_empty() => {
                return Err(ConfigError::Backup(
                    "destination: bucket must not be empty".into(),
                ));
            }
            _ => {}
        }
        let level = match self.level {
            None => DEFAULT_LEVEL,
            Some(l @ 1..=19) => l as i32,
            Some(l) => {
                return Err(ConfigError::Backup(format!(
                    "level {l} is not a zstd level from 1 to 19"
                )));
            }
        };
        Ok(BackupTasklet::new(source, self.destination.spec())
            .retention(self.retention.into())
            .level(level))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NoContext;

    fn raw(v: serde_json::Value) -> RawBackupTasklet {
        RawBackupTasklet::deserialize(v).unwrap()
    }

    #[test]
    fn sources_and_destinations_are_checked() {
        let dest = serde_json::json!({ "kind": "dir", "path": "/tmp/b" });
        let e = raw(serde_json::json!({ "destination": dest }))
            .build(&NoContext)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "give exactly one of source or repository = true"
        );
        let e = raw(serde_json::json!({ "source": "repository", "destination": dest }))
            .build(&NoContext)
            .unwrap_err();
        assert!(e.to_string().contains("[repository] url"), "{e}");
        let e = raw(serde_json::json!({
            "source": "redis://u:hunter2@h", "destination": dest
        }))
        .build(&NoContext)
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("source: ") && !e.contains("hunter2"), "{e}");
        let e = raw(serde_json::json!({
            "source": "sqlite://a.db", "destination": dest, "level": 30
        }))
        .build(&NoContext)
        .unwrap_err();
        assert!(e.to_string().contains("level 30"), "{e}");
        let t = raw(serde_json::json!({
            "source": "postgres://u@h/air",
            "destination": { "kind": "s3", "bucket": "b", "prefix": "/x/y/" },
            "retention": { "keep_last": 2 }
        }))
        .build(&NoContext)
        .unwrap();
        assert_eq!(t.source.kind, super::super::SourceKind::Postgres);
        assert_eq!(t.retention.keep_last, Some(2));
        let DestinationSpec::S3(s) = t.destination else {
            panic!("not s3");
        };
        assert_eq!(s.prefix, "x/y");
        let e = RawBackupTasklet::deserialize(serde_json::json!({
            "source": "sqlite://a.db", "destination": { "kind": "tape" }
        }))
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown variant `tape`"), "{e}");
        let t = raw(serde_json::json!({
            "source": "postgres://u@h/air", "password": { "env": "PW" },
            "destination": { "kind": "dir", "path": "b" }
        }));
        assert_eq!(t.password.unwrap().env.unwrap().into_inner(), "PW");
        for bad in [
            serde_json::json!("inline"),
            serde_json::json!({ "envv": "PW" }),
        ] {
            let e = RawBackupTasklet::deserialize(serde_json::json!({
                "source": "postgres://u@h/air", "password": bad,
                "destination": { "kind": "dir", "path": "b" }
            }))
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("inline") || e.contains("unknown field `envv`"),
                "{e}"
            );
        }
    }
}
