//! `sluice backup …`: the backups a `kind = "backup"` step made: list them,
//! verify them (SHA-256 and zstd integrity), restore one.
//!
//! Where they are comes from the config (`--job NAME [--step STEP]`: that
//! step's `destination`, and its `source` as the default restore target) or
//! from the command line (`--from DIR` or `--from s3://BUCKET/PREFIX`, with
//! the endpoint and keys in the `AWS_*` environment variables; a restore then
//! needs `--to`).
//!
//! Exit codes: 0 done (every backup checked is good), 1 an error or a corrupt
//! backup, 2 bad input (no such job, step or backup; an invalid config).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Deserialize;
use sluice_batch::tasklets::RawTasklet;
use sluice_batch::tasklets::backup::{
    BackupSource, BackupTasklet, Destination, DestinationSpec, Listed, Manifest, human_bytes,
};

use super::out::invalid_input;
use crate::config::{self, Env, Settings, substitute};

/// Where the backups are.
#[derive(Debug, Clone, Args)]
pub struct Location {
    /// The job whose backup step's destination (and source) to use.
    #[arg(long, conflicts_with = "from")]
    pub job: Option<String>,
    /// The backup step of `--job`, when it has more than one.
    #[arg(long, requires = "job")]
    pub step: Option<String>,
    /// A directory, or `s3://BUCKET/PREFIX` (endpoint, region and keys from
    /// `AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_ALLOW_HTTP`).
    #[arg(long)]
    pub from: Option<String>,
}

/// `sluice backup …`
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Every backup, oldest first: id, time, source, database, sizes and
    /// whether its artifact is there with the manifest's size (`--verify`:
    /// re-read and checked).
    List {
        /// Where.
        #[command(flatten)]
        at: Location,
        /// Re-read every artifact and check its SHA-256 and zstd stream.
        #[arg(long)]
        verify: bool,
        /// One JSON document: `{"backups": [manifest + "status"], "broken": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// Re-reads backups and checks them against their manifests: SHA-256,
    /// size, and a whole zstd stream of the recorded raw size. Exit 1 when
    /// one is corrupt.
    Verify {
        /// The backup's id (`latest`: the newest); default: every one.
        id: Option<String>,
        /// Where.
        #[command(flatten)]
        at: Location,
    },
    /// Checks a backup, decompresses it and loads it: PostgreSQL with
    /// `pg_restore --clean --if-exists --no-owner`, MariaDB with `mariadb`,
    /// SQLite by replacing the file (stop what writes to it first).
    Restore {
        /// The backup's id, or `latest`.
        id: String,
        /// Where.
        #[command(flatten)]
        at: Location,
        /// The database to load into: a URL (`postgres://…`, `mysql://…`,
        /// `sqlite://…`) or a SQLite file's path. Default: the step's source.
        #[arg(long)]
        to: Option<String>,
    },
}

impl BackupCommand {
    fn location(&self) -> &Location {
        match self {
            Self::List { at, .. } | Self::Verify { at, .. } | Self::Restore { at, .. } => at,
        }
    }
}

/// What a location resolved to: the destination, and the step's source.
struct Resolved {
    dest: Destination,
    /// With `--job`: only this source's backups are shown and restored (others
    /// may share the destination); with `--from`: every backup there.
    source: Option<BackupSource>,
}

impl Resolved {
    /// Whether `m` is a backup of the step's source (always, without one).
    fn owns(&self, m: &Manifest) -> bool {
        self.source.as_ref().is_none_or(|s| {
            m.source == s.kind && m.repository == s.repository && m.database == s.database()
        })
    }
}

/// Why a command could not start: bad input (exit 2) or an error (exit 1).
enum Stop {
    Input(String),
    Fail(String),
}

/// Runs a `backup` command with config file `config` (read only for `--job`).
pub async fn run(config: &std::path::Path, cmd: BackupCommand) -> ExitCode {
    let resolved = match resolve(config, cmd.location()) {
        Ok(r) => r,
        Err(Stop::Input(m)) => return invalid_input(m),
        Err(Stop::Fail(m)) => return super::fail(m),
    };
    let res = match cmd {
        BackupCommand::List { verify, json, .. } => list(&resolved, verify, json).await,
        BackupCommand::Verify { id, .. } => verify(&resolved, id.as_deref()).await,
        BackupCommand::Restore { id, to, .. } => restore(&resolved, &id, to.as_deref()).await,
    };
    res.unwrap_or_else(|e| match e {
        Stop::Input(m) => invalid_input(m),
        Stop::Fail(m) => super::fail(m),
    })
}

fn resolve(config: &std::path::Path, at: &Location) -> Result<Resolved, Stop> {
    let fail = |e: sluice_batch::tasklets::backup::BackupError| Stop::Fail(e.to_string());
    if let Some(from) = &at.from {
        let spec = DestinationSpec::parse_location(from).map_err(|e| Stop::Input(e.to_string()))?;
        return Ok(Resolved {
            dest: spec.open().map_err(fail)?,
            source: None,
        });
    }
    let Some(job) = &at.job else {
        return Err(Stop::Input(
            "say where the backups are: --job NAME [--step STEP] or --from DIR|s3://BUCKET/PREFIX"
                .into(),
        ));
    };
    // Upstream secrets are not needed here; the step's own are read when the
    // destination opens.
    let settings = config::load(config, &Env::inspect()).map_err(|e| Stop::Input(e.to_string()))?;
    let tasklet = backup_step(&settings, job, at.step.as_deref()).map_err(Stop::Input)?;
    Ok(Resolved {
        dest: tasklet.destination.open().map_err(fail)?,
        source: Some(tasklet.source),
    })
}

/// The backup step of job `job` (named `step`, or its only one), built with the
/// job's default parameters.
fn backup_step(
    settings: &Settings,
    job: &str,
    step: Option<&str>,
) -> Result<BackupTasklet, String> {
    let raw = settings.jobs.job(job)?;
    let params = raw.params.clone().into_iter().collect();
    let mut found = Vec::new();
    for s in &raw.steps {
        let Some(t) = &s.tasklet else { continue };
        if t.get("kind").and_then(toml::Value::as_str) != Some("backup") {
            continue;
        }
        found.push((s.name.get_ref().clone(), t));
    }
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    let chosen = match step {
        Some(want) => found.iter().find(|(n, _)| n == want).ok_or_else(|| {
            format!(
                "job {job:?} has no backup step {want:?}; its backup steps: {}",
                config::none_or_list(&names)
            )
        })?,
        None => match found.as_slice() {
            [one] => one,
            [] => return Err(format!("job {job:?} has no backup step")),
            _ => {
                return Err(format!(
                    "job {job:?} has several backup steps ({}); pick one with --step",
                    names.join(", ")
                ));
            }
        },
    };
    let at = |m: String| format!("job {job:?} step {:?} tasklet: {m}", chosen.0);
    let v = substitute(chosen.1, &params).map_err(|e| at(e.to_string()))?;
    let RawTasklet::Backup(b) =
        RawTasklet::deserialize(v).map_err(|e| at(e.message().to_owned()))?
    else {
        return Err(at("not a backup tasklet".into()));
    };
    b.build(settings).map_err(|e| at(e.to_string()))
}

/// The good manifests (of the step's source), oldest first, and the broken
/// ones (name, error).
async fn manifests(r: &Resolved) -> Result<(Vec<Manifest>, Vec<(String, String)>), Stop> {
    let mut good = Vec::new();
    let mut broken = Vec::new();
    for l in r.dest.list().await.map_err(|e| Stop::Fail(e.to_string()))? {
        match l {
            Listed::Ok(m) if r.owns(&m) => good.push(m),
            Listed::Ok(_) => {}
            Listed::Broken { name, error } => broken.push((name, error)),
        }
    }
    Ok((good, broken))
}

/// A backup's checksum status: `ok` (or `verified`) or what is wrong.
async fn status(dest: &Destination, m: &Manifest, verify: bool) -> (bool, String) {
    if verify {
        return match dest.verify(m).await {
            Ok(_) => (true, "verified".into()),
            Err(e) => (false, format!("CORRUPT: {e}")),
        };
    }
    match dest.artifact_size(m).await {
        Ok(Some(n)) if n == m.compressed_bytes => (true, "present (not re-read)".into()),
        Ok(Some(n)) => (
            false,
            format!(
                "SIZE MISMATCH: {n} bytes, manifest says {}",
                m.compressed_bytes
            ),
        ),
        Ok(None) => (false, "MISSING artifact".into()),
        Err(e) => (false, format!("cannot check: {e}")),
    }
}

async fn list(r: &Resolved, verify: bool, json: bool) -> Result<ExitCode, Stop> {
    let dest = &r.dest;
    let (good, broken) = manifests(r).await?;
    let mut all_ok = broken.is_empty();
    let mut rows = Vec::new();
    for m in &good {
        let (ok, st) = status(dest, m, verify).await;
        all_ok &= ok;
        rows.push((m, ok, st));
    }
    if json {
        let backups: Vec<serde_json::Value> = rows
            .iter()
            .map(|(m, ok, st)| {
                let mut v = serde_json::to_value(m).unwrap_or_default();
                v["ok"] = serde_json::json!(ok);
                v["status"] = serde_json::json!(st);
                v
            })
            .collect();
        let broken: Vec<serde_json::Value> = broken
            .iter()
            .map(|(n, e)| serde_json::json!({ "name": n, "error": e }))
            .collect();
        super::out::json(&serde_json::json!({ "backups": backups, "broken": broken }));
    } else {
        if rows.is_empty() && broken.is_empty() {
            outln!("no backups in {dest}");
        }
        for (m, _, st) in &rows {
            outln!(
                "{}  {}  {}{} {:?}  {} ({} raw)  sha256 {}…  {}",
                m.id,
                m.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                m.source,
                if m.repository { " (repository)" } else { "" },
                m.database,
                human_bytes(m.compressed_bytes),
                human_bytes(m.raw_bytes),
                m.sha256.get(..12).unwrap_or(&m.sha256),
                st
            );
        }
        for (n, e) in &broken {
            outln!("BROKEN manifest {n}: {e}");
        }
    }
    Ok(if all_ok || !verify {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn verify(r: &Resolved, id: Option<&str>) -> Result<ExitCode, Stop> {
    let dest = &r.dest;
    let chosen = match id {
        Some(id) => vec![find(r, id).await?],
        None => {
            let (good, broken) = manifests(r).await?;
            for (n, e) in &broken {
                outln!("BROKEN manifest {n}: {e}");
            }
            if good.is_empty() && broken.is_empty() {
                outln!("no backups in {dest}");
            }
            if !broken.is_empty() {
                verify_all(dest, &good).await;
                return Ok(ExitCode::from(1));
            }
            good
        }
    };
    Ok(if verify_all(dest, &chosen).await {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Verifies each, one line each; whether all are good.
async fn verify_all(dest: &Destination, ms: &[Manifest]) -> bool {
    let mut ok = true;
    for m in ms {
        match dest.verify(m).await {
            Ok(v) => outln!(
                "{}  ok  sha256 {}  {} stored, {} raw",
                m.id,
                m.sha256,
                human_bytes(v.compressed),
                human_bytes(v.raw)
            ),
            Err(e) => {
                ok = false;
                outln!("{}  CORRUPT  {e}", m.id);
            }
        }
    }
    ok
}

/// Backup `id` (`latest`: the newest) of the step's source.
async fn find(r: &Resolved, id: &str) -> Result<Manifest, Stop> {
    let (good, _) = manifests(r).await?;
    let found = if id == "latest" {
        good.into_iter().last()
    } else {
        good.into_iter().find(|m| m.id == id)
    };
    found.ok_or_else(|| {
        let of = match &r.source {
            Some(s) => format!(" of {} {:?}", s.kind, s.database()),
            None => String::new(),
        };
        Stop::Input(format!("no backup {id:?}{of} in {}", r.dest))
    })
}

async fn restore(r: &Resolved, id: &str, to: Option<&str>) -> Result<ExitCode, Stop> {
    let target = match (to, &r.source) {
        (Some(t), _) => BackupSource::from_url(t).map_err(|e| Stop::Input(format!("--to: {e}")))?,
        (None, Some(s)) => s.clone(),
        (None, None) => {
            return Err(Stop::Input(
                "--from has no source to restore into: give --to URL|PATH".into(),
            ));
        }
    };
    let m = find(r, id).await?;
    let bytes = r
        .dest
        .restore(&m, &target)
        .await
        .map_err(|e| Stop::Fail(e.to_string()))?;
    outln!(
        "restored backup {} ({} {:?}, {}) into {}",
        m.id,
        m.source,
        m.database,
        human_bytes(bytes),
        match target.sqlite_path() {
            Some(p) => p.display().to_string(),
            None => target.redacted_url(),
        }
    );
    Ok(ExitCode::SUCCESS)
}
