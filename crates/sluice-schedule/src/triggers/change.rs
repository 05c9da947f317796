//! Database-change triggers, the parts both kinds share: the plan
//! ([`ChangeTrigger`]), what a fire asks of the binary ([`ChangeLauncher`],
//! [`ChangeFire`]), and the running watchers ([`start`], [`ChangeWatchers`]).
//!
//! * `pg_change` ([`super::pg_change`]): a row trigger on a PostgreSQL table logs
//!   each change in the same transaction; a node wakes up on `NOTIFY` (or polls),
//!   waits until the changes are quiet for the debounce time, and fires once for
//!   the range of changes it took, with the changed keys.
//! * `sql_change` ([`super::sql_change`]): a query is run every period on SQLite,
//!   MariaDB/MySQL or PostgreSQL; a result that differs from the last one seen
//!   fires once, with its first rows.
//!
//! Both keep their position in the watched database (the change cursor, the
//! last result's hash), so a restart neither loses a change nor fires again for
//! one already fired, and both take a fire in two steps: a cluster-wide claim in
//! the [`ClaimStore`] (who tries), then a compare-and-set of the position in the
//! database (what range is fired): two nodes never fire the same range.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::pg_change::PgChangeTrigger;
use super::sql_change::SqlChangeTrigger;
use super::{TriggerError, TriggerField};
use crate::claim::ClaimStore;
use crate::scheduler::LaunchError;

/// How long a claim won by a node that then did not take the range (it crashed,
/// or its launch failed) keeps other nodes from taking it themselves.
pub const TAKEOVER_AFTER: Duration = Duration::from_secs(30);

/// A database-change trigger, checked.
#[derive(Debug, Clone)]
pub enum ChangeTrigger {
    /// `kind = "pg_change"`.
    Pg(PgChangeTrigger),
    /// `kind = "sql_change"`.
    Sql(SqlChangeTrigger),
}

impl ChangeTrigger {
    /// The trigger's id (`JOB/NAME` or `JOB#N`).
    pub fn id(&self) -> &str {
        match self {
            ChangeTrigger::Pg(t) => &t.id,
            ChangeTrigger::Sql(t) => &t.id,
        }
    }

    /// The job it runs.
    pub fn job(&self) -> &str {
        match self {
            ChangeTrigger::Pg(t) => &t.job,
            ChangeTrigger::Sql(t) => &t.job,
        }
    }

    /// The database URL, `None` when the config left it to the repository's.
    pub fn database(&self) -> Option<&str> {
        match self {
            ChangeTrigger::Pg(t) => t.database.as_deref(),
            ChangeTrigger::Sql(t) => t.database.as_deref(),
        }
    }

    /// Sets the database URL (the repository's, when the config gave none).
    pub fn set_database(&mut self, url: String) {
        match self {
            ChangeTrigger::Pg(t) => t.database = Some(url),
            ChangeTrigger::Sql(t) => t.database = Some(url),
        }
    }

    /// The `kind` word.
    pub fn kind(&self) -> &'static str {
        match self {
            ChangeTrigger::Pg(_) => "pg_change",
            ChangeTrigger::Sql(_) => "sql_change",
        }
    }

    /// What `sluice schedule list` shows as its rule.
    pub fn rule(&self) -> String {
        match self {
            ChangeTrigger::Pg(t) => format!("pg_change {} (debounce {:?})", t.table, t.debounce),
            ChangeTrigger::Sql(t) => format!("sql_change every {:?}", t.every),
        }
    }
}

/// One fire of a change trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeFire {
    /// The trigger's id.
    pub trigger: String,
    /// The job to run.
    pub job: String,
    /// What the fire adds to the run's parameters (`changed_keys`,
    /// `changed_keys_count`, …).
    pub params: BTreeMap<String, String>,
    /// The position it fired up to (the last change id, or the result's
    /// sequence number): with the trigger, a fire's idempotency key.
    pub mark: i64,
}

/// Runs a job for a change fire.
#[async_trait]
pub trait ChangeLauncher: Send + Sync + 'static {
    /// Enqueues a run of `fire.job` with `fire.params`; returns the task id.
    ///
    /// # Errors
    ///
    /// A [`LaunchError`] saying why it could not (the range is fired again
    /// later).
    async fn launch_change(&self, fire: &ChangeFire) -> Result<String, LaunchError>;
}

/// Running change watchers. [`ChangeWatchers::shutdown`] lets each finish the
/// look it is in (a fire enqueued is also committed); dropping them aborts
/// them.
#[derive(Debug)]
pub struct ChangeWatchers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// How long [`ChangeWatchers::shutdown`] waits for a watcher's look to end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl ChangeWatchers {
    /// Stops every watcher once its current look is done, and waits for them
    /// (those still busy after 10 s are aborted).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for mut t in std::mem::take(&mut self.tasks) {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut t).await.is_err() {
                t.abort();
                let _ = t.await;
            }
        }
    }
}

impl Drop for ChangeWatchers {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Sleeps `d`, or less when `stop` turns true; whether to stop.
pub(super) async fn pause(d: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Connects to every trigger's database, installs what `pg_change` needs there
/// (idempotently), and starts watching.
///
/// # Errors
///
/// A database that cannot be reached, a table or key column that does not
/// exist, a query that does not run: named, without the URL's password.
pub fn start(
    triggers: Vec<ChangeTrigger>,
    store: Arc<dyn ClaimStore>,
    launcher: Arc<dyn ChangeLauncher>,
) -> Pin<Box<dyn Future<Output = Result<ChangeWatchers, String>> + Send>> {
    // Boxed here, where its lifetimes are concrete: a caller's future that
    // awaits it stays `Send` (sqlx transactions trip the compiler otherwise).
    Box::pin(start_inner(triggers, store, launcher))
}

async fn start_inner(
    triggers: Vec<ChangeTrigger>,
    store: Arc<dyn ClaimStore>,
    launcher: Arc<dyn ChangeLauncher>,
) -> Result<ChangeWatchers, String> {
    // One row trigger per table: the triggers of one table must agree on its key.
    for (i, a) in triggers.iter().enumerate() {
        for b in &triggers[..i] {
            if let (ChangeTrigger::Pg(a), ChangeTrigger::Pg(b)) = (a, b)
                && a.database == b.database
                && a.table == b.table
                && a.key != b.key
            {
                return Err(format!(
                    "triggers {} and {}: pg_change triggers on table {} must name the same key columns (one row trigger logs them)",
                    b.id, a.id, a.table
                ));
            }
        }
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for t in triggers {
        let task = match t {
            ChangeTrigger::Pg(t) => {
                let w =
                    super::pg_change::PgWatch::connect(t, store.clone(), launcher.clone()).await?;
                tokio::spawn(w.run(stopped.clone()))
            }
            ChangeTrigger::Sql(t) => {
                let w =
                    super::sql_change::SqlChangeWatch::connect(t, store.clone(), launcher.clone())
                        .await?;
                tokio::spawn(w.run(stopped.clone()))
            }
        };
        tasks.push(task);
    }
    Ok(ChangeWatchers { tasks, stop })
}

/// A duration key (`debounce`, `every`) or its default.
pub(super) fn duration(
    given: Option<&str>,
    default: Duration,
    field: TriggerField,
    errs: &mut Vec<TriggerError>,
) -> Duration {
    match given {
        None => default,
        Some(s) => humantime::parse_duration(s.trim()).unwrap_or_else(|e| {
            errs.push(TriggerError::new(
                field,
                format!(
                    "invalid {} \"{s}\": {e} (expected a duration such as \"2s\" or \"500ms\")",
                    field.key()
                ),
            ));
            default
        }),
    }
}

/// The parameter name `given` (or `default`), checked to be a plain name.
pub(super) fn param_name(
    given: Option<&str>,
    default: &str,
    errs: &mut Vec<TriggerError>,
) -> String {
    let param = given.unwrap_or(default).to_owned();
    let plain = !param.is_empty()
        && param.len() <= 100
        && param
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !plain {
        errs.push(TriggerError::new(
            TriggerField::Param,
            format!("param {param:?} must be a plain name (letters, digits, '-', '_', '.')"),
        ));
    }
    param
}

/// A database URL for messages: without its password.
pub(super) fn shown(url: &str) -> String {
    sluice_core::redact_url(url)
}
