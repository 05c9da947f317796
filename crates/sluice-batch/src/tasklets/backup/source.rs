//! What is backed up and how it is loaded back: the database a URL names, its
//! dump tool and its restore tool.
//!
//! - PostgreSQL: `pg_dump -Fc` (one consistent snapshot; the custom format
//!   compresses nothing itself here, `-Z 0`, zstd does it), restored with
//!   `pg_restore --clean --if-exists --no-owner`;
//! - MariaDB/MySQL: `mariadb-dump --single-transaction` (a consistent snapshot of
//!   InnoDB tables without locking them), loaded with `mariadb`; `mysqldump` /
//!   `mysql` when the MariaDB names are not installed;
//! - SQLite: `VACUUM INTO` over a sqlx connection. sqlx does not expose SQLite's
//!   online backup API and this workspace forbids `unsafe`, and `VACUUM INTO`
//!   serves as well: it runs in a read transaction, so the copy is one
//!   consistent snapshot even while other connections keep writing (in WAL
//!   mode they are not even blocked), and it is compacted on the way.
//!
//! Passwords reach the tools through their environment (`PGPASSWORD`,
//! `MYSQL_PWD`), never through their arguments (visible in `ps`), and never
//! appear in an error: a tool's stderr is scrubbed of it.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use sluice_core::Secret;
use sluice_core::config::{Env, RawSecret};
use sluice_sql::{ConnectSettings, Db, DbUrl, Statement};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::BackupError;
use super::manifest::SourceKind;
use super::pipe::Compressor;

/// How much of a failed tool's stderr the error keeps.
const STDERR_TAIL: usize = 4096;

/// A database to back up, or to restore into.
#[derive(Clone)]
pub struct BackupSource {
    /// Which database.
    pub kind: SourceKind,
    /// Whether it is sluice's own repository.
    pub repository: bool,
    url: String,
    password: Option<RawSecret>,
}

impl std::fmt::Debug for BackupSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupSource")
            .field("kind", &self.kind)
            .field("url", &sluice_core::redact_url(&self.url))
            .finish_non_exhaustive()
    }
}

/// What a dump produced, beside the bytes.
#[derive(Debug, Clone)]
pub(crate) struct Dumped {
    pub(crate) tool: String,
    pub(crate) tool_version: String,
}

impl BackupSource {
    /// The database at `url` (`postgres://…`, `mysql://…` / `mariadb://…`,
    /// `sqlite://…`), or a SQLite file's path.
    ///
    /// # Errors
    ///
    /// [`BackupError::Invalid`] for a URL of another database, or one that does
    /// not parse (named with its password redacted).
    pub fn from_url(url: &str) -> Result<Self, BackupError> {
        let url = if url.contains("://") || url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            format!("sqlite://{url}")
        };
        let parsed = DbUrl::parse(&url).map_err(|e| BackupError::Invalid(e.to_string()))?;
        let kind = match parsed {
            DbUrl::Sqlite(_) => SourceKind::Sqlite,
            DbUrl::Postgres(_) => SourceKind::Postgres,
            DbUrl::MySql(_) => SourceKind::Mysql,
        };
        if kind == SourceKind::Sqlite && sluice_sql::is_memory_url(&url) {
            return Err(BackupError::Invalid(
                "an in-memory SQLite database cannot be backed up".into(),
            ));
        }
        Ok(Self {
            kind,
            repository: false,
            url,
            password: None,
        })
    }

    /// Marks it as sluice's own repository.
    #[must_use]
    pub fn repository(mut self) -> Self {
        self.repository = true;
        self
    }

    /// The password, when the URL has none.
    #[must_use]
    pub fn password(mut self, secret: RawSecret) -> Self {
        self.password = Some(secret);
        self
    }

    /// The URL with its password redacted.
    pub fn redacted_url(&self) -> String {
        sluice_core::redact_url(&self.url)
    }

    /// The database's name (a SQLite file's name), for the manifest.
    pub fn database(&self) -> String {
        match DbUrl::parse(&self.url) {
            Ok(DbUrl::Sqlite(o)) => o
                .get_filename()
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            Ok(DbUrl::Postgres(o)) => o
                .get_database()
                .unwrap_or_else(|| o.get_username())
                .to_owned(),
            Ok(DbUrl::MySql(o)) => o.get_database().unwrap_or_default().to_owned(),
            Err(_) => String::new(),
        }
    }

    /// A SQLite source's file.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match DbUrl::parse(&self.url) {
            Ok(DbUrl::Sqlite(o)) => Some(o.get_filename().to_path_buf()),
            _ => None,
        }
    }

    /// The URL without its password, and the password (from the URL or from
    /// the `password` secret).
    fn credentials(&self) -> Result<(String, Option<Secret>), BackupError> {
        let (url, in_url) = split_password(&self.url);
        let secret = match (&self.password, in_url) {
            (Some(s), _) => Some(s.read(&Env::process()).map_err(|e| BackupError::Secret {
                key: "password".into(),
                message: e.message,
            })?),
            (None, p) => p.map(Secret::new),
        };
        Ok((url, secret))
    }

    /// Dumps the database into `out`, with temporary files (SQLite's copy) in
    /// `staging`.
    pub(crate) async fn dump(
        &self,
        staging: &Path,
        out: &mut Compressor,
    ) -> Result<Dumped, BackupError> {
        match self.kind {
            SourceKind::Postgres => {
                let (url, password) = self.credentials()?;
                let tool = "pg_dump";
                let version = tool_version(tool, "postgresql-client").await?;
                let mut cmd = tokio::process::Command::new(tool);
                cmd.args(["--format=custom", "--compress=0", "--no-password"])
                    .arg(format!("--dbname={url}"));
                if let Some(p) = &password {
                    cmd.env("PGPASSWORD", p.expose());
                }
                run(tool, cmd, None, Some(out), password.as_ref()).await?;
                Ok(Dumped {
                    tool: tool.into(),
                    tool_version: version,
                })
            }
            SourceKind::Mysql => {
                let tool = pick(&["mariadb-dump", "mysqldump"]);
                let version = tool_version(tool, "mariadb-client").await?;
                let (mut cmd, password) = self.mysql_command(tool)?;
                cmd.args(["--single-transaction", "--routines", "--hex-blob"]);
                cmd.arg(self.database());
                run(tool, cmd, None, Some(out), password.as_ref()).await?;
                Ok(Dumped {
                    tool: tool.into(),
                    tool_version: version,
                })
            }
            SourceKind::Sqlite => {
                let copy = staging.join(format!(".sqlite-copy-{:016x}.tmp", rand::random::<u64>()));
                let res = self.vacuum_into(&copy, out).await;
                let _ = tokio::fs::remove_file(&copy).await;
                res
            }
        }
    }

    async fn vacuum_into(&self, copy: &Path, out: &mut Compressor) -> Result<Dumped, BackupError> {
        let path = self.sqlite_path().unwrap_or_default();
        if !path.exists() {
            return Err(BackupError::Invalid(format!(
                "SQLite database {} does not exist",
                path.display()
            )));
        }
        let db = Db::connect(&self.url, &ConnectSettings::new().quiet())
            .await
            .map_err(BackupError::Connect)?;
        let ran = async {
            let rows = db
                .fetch_all(&Statement::new("SELECT sqlite_version() AS v"))
                .await?;
            let version = match rows.first() {
                Some(r) => r.get::<String>("v")?,
                None => String::new(),
            };
            db.execute(&Statement::new("VACUUM INTO ?").bind(copy.to_string_lossy().into_owned()))
                .await?;
            Ok::<_, sqlx::Error>(version)
        }
        .await;
        db.close().await;
        let version = ran.map_err(|e| BackupError::Sqlite(sluice_sql::describe(&e)))?;
        let file = tokio::fs::File::open(copy)
            .await
            .map_err(|e| io_err("reading the SQLite copy", e))?;
        out.read_from(file)
            .await
            .map_err(|e| io_err("compressing the SQLite copy", e))?;
        Ok(Dumped {
            tool: "sqlite VACUUM INTO".into(),
            tool_version: format!("sqlite {version}"),
        })
    }

    /// `tool` with the connection arguments of a MySQL/MariaDB URL (its
    /// password in `MYSQL_PWD`).
    fn mysql_command(
        &self,
        tool: &str,
    ) -> Result<(tokio::process::Command, Option<Secret>), BackupError> {
        let Ok(DbUrl::MySql(o)) = DbUrl::parse(&self.url) else {
            return Err(BackupError::Invalid("not a MySQL/MariaDB URL".into()));
        };
        let (_, password) = self.credentials()?;
        let mut cmd = tokio::process::Command::new(tool);
        cmd.arg(format!("--user={}", o.get_username()));
        match o.get_socket() {
            Some(s) => {
                cmd.arg(format!("--socket={}", s.display()));
            }
            None => {
                cmd.args([
                    "--protocol=TCP".to_owned(),
                    format!("--host={}", o.get_host()),
                    format!("--port={}", o.get_port()),
                ]);
            }
        }
        cmd.arg("--default-character-set=utf8mb4");
        if let Some(p) = &password {
            cmd.env("MYSQL_PWD", p.expose());
        }
        Ok((cmd, password))
    }

    /// Loads the dump in file `dump` (decompressed) into this database.
    pub(crate) async fn load(&self, dump: &Path) -> Result<(), BackupError> {
        match self.kind {
            SourceKind::Postgres => {
                let (url, password) = self.credentials()?;
                let tool = "pg_restore";
                let mut cmd = tokio::process::Command::new(tool);
                cmd.args([
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    "--no-password",
                    "--exit-on-error",
                ])
                .arg(format!("--dbname={url}"))
                .arg(dump);
                if let Some(p) = &password {
                    cmd.env("PGPASSWORD", p.expose());
                }
                run(tool, cmd, None, None, password.as_ref()).await
            }
            SourceKind::Mysql => {
                let tool = pick(&["mariadb", "mysql"]);
                let (mut cmd, password) = self.mysql_command(tool)?;
                cmd.arg(self.database());
                run(tool, cmd, Some(dump), None, password.as_ref()).await
            }
            SourceKind::Sqlite => {
                let target = self.sqlite_path().unwrap_or_default();
                replace_sqlite(dump, &target).await
            }
        }
    }
}

/// Puts the restored SQLite file `restored` (in the same directory) in place of
/// `target`: the old file's `-wal`, `-shm` and `-journal` go first, since a
/// stale WAL would be replayed over the restored pages.
async fn replace_sqlite(restored: &Path, target: &Path) -> Result<(), BackupError> {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    for ext in ["-wal", "-shm", "-journal"] {
        let side = target.with_file_name(format!("{name}{ext}"));
        match tokio::fs::remove_file(&side).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&format!("removing {}", side.display()), e)),
        }
    }
    tokio::fs::rename(restored, target).await.map_err(|e| {
        io_err(
            &format!("moving the restored file to {}", target.display()),
            e,
        )
    })
}

/// The first of `names` on `PATH` (the last one when none is).
fn pick<'a>(names: &[&'a str]) -> &'a str {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for n in names {
        if std::env::split_paths(&path).any(|d| d.join(n).is_file()) {
            return n;
        }
    }
    names.last().copied().unwrap_or_default()
}

/// `tool --version`, its first line.
async fn tool_version(tool: &str, package: &'static str) -> Result<String, BackupError> {
    let out = tokio::process::Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| spawn_err(tool, package, e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

fn spawn_err(tool: &str, package: &'static str, e: io::Error) -> BackupError {
    if e.kind() == io::ErrorKind::NotFound {
        BackupError::ToolMissing {
            tool: tool.to_owned(),
            package,
        }
    } else {
        io_err(&format!("starting {tool}"), e)
    }
}

pub(crate) fn io_err(what: &str, source: io::Error) -> BackupError {
    BackupError::Io {
        what: what.to_owned(),
        source,
    }
}

/// Runs `tool`: stdin from `stdin` (or nothing), stdout into `out` (or
/// dropped), stderr's tail kept for the error, scrubbed of `secret`.
async fn run(
    tool: &str,
    mut cmd: tokio::process::Command,
    stdin: Option<&Path>,
    out: Option<&mut Compressor>,
    secret: Option<&Secret>,
) -> Result<(), BackupError> {
    let package = if tool.starts_with("pg_") {
        "postgresql-client"
    } else {
        "mariadb-client"
    };
    let input = match stdin {
        Some(p) => Stdio::from(
            std::fs::File::open(p).map_err(|e| io_err(&format!("opening {}", p.display()), e))?,
        ),
        None => Stdio::null(),
    };
    cmd.stdin(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| spawn_err(tool, package, e))?;
    let stderr = child.stderr.take().map(|s| tokio::spawn(tail(s)));
    let stdout = child.stdout.take();
    let copied = match (stdout, out) {
        (Some(s), Some(out)) => out.read_from(s).await,
        (Some(s), None) => tail(s).await.map(drop),
        _ => Ok(()),
    };
    let status = child
        .wait()
        .await
        .map_err(|e| io_err(&format!("waiting for {tool}"), e))?;
    let err_tail = match stderr {
        Some(h) => h.await.ok().and_then(Result::ok).unwrap_or_default(),
        None => String::new(),
    };
    let scrubbed = match secret {
        Some(s) if !s.expose().is_empty() => err_tail.replace(s.expose(), sluice_core::REDACTED),
        _ => err_tail,
    };
    if !status.success() {
        let status = match status.code() {
            Some(c) => format!("exit code {c}"),
            None => "killed by a signal".to_owned(),
        };
        let stderr = if scrubbed.is_empty() {
            String::new()
        } else {
            format!(":\n{scrubbed}")
        };
        return Err(BackupError::Tool {
            tool: tool.to_owned(),
            status,
            stderr,
        });
    }
    copied.map_err(|e| io_err(&format!("reading {tool}'s output"), e))
}

/// The last [`STDERR_TAIL`] bytes of `r`, as text.
async fn tail<R: AsyncRead + Unpin>(mut r: R) -> io::Result<String> {
    let mut kept = VecDeque::new();
    let mut buf = vec![0u8; 8192];
    let mut cut = false;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        kept.extend(&buf[..n]);
        if kept.len() > STDERR_TAIL {
            kept.drain(..kept.len() - STDERR_TAIL);
            cut = true;
        }
    }
    let bytes: Vec<u8> = kept.into_iter().collect();
    let text = String::from_utf8_lossy(&bytes).trim_end().to_owned();
    Ok(if cut { format!("…{text}") } else { text })
}

/// `url` without the password of its user info, and that password
/// (percent-decoded).
pub(crate) fn split_password(url: &str) -> (String, Option<String>) {
    let Some(scheme_end) = url.find("://") else {
        return (url.to_owned(), None);
    };
    let auth_start = scheme_end + 3;
    let auth_end = url[auth_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| auth_start + i);
    let authority = &url[auth_start..auth_end];
    let Some(at) = authority.rfind('@') else {
        return (url.to_owned(), None);
    };
    let Some((user, password)) = authority[..at].split_once(':') else {
        return (url.to_owned(), None);
    };
    let decoded = percent_encoding::percent_decode_str(password)
        .decode_utf8_lossy()
        .into_owned();
    let stripped = format!(
        "{}{user}{}{}",
        &url[..auth_start],
        &authority[at..],
        &url[auth_end..]
    );
    (stripped, Some(decoded).filter(|p| !p.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_the_url() {
        assert_eq!(
            split_password("postgres://u:p%40ss@h:5432/db?sslmode=require"),
            (
                "postgres://u@h:5432/db?sslmode=require".to_owned(),
                Some("p@ss".to_owned())
            )
        );
        assert_eq!(
            split_password("mysql://root@127.0.0.1/test"),
            ("mysql://root@127.0.0.1/test".to_owned(), None)
        );
        assert_eq!(
            BackupSource::from_url("data/x.db").unwrap().kind,
            SourceKind::Sqlite
        );
        assert_eq!(
            BackupSource::from_url("sqlite://data/x.db")
                .unwrap()
                .database(),
            "x.db"
        );
        assert_eq!(
            BackupSource::from_url("mariadb://r:s@h:3306/shop")
                .unwrap()
                .database(),
            "shop"
        );
        let e = BackupSource::from_url("redis://u:secret@h")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
