//! What each condition sees: for every thing a rule watches (a job, a trigger,
//! an upstream, a queue), whether it is firing, clear, or not known yet.
//!
//! Facts kept in the repository and the broker (job runs, fires, dead letters,
//! live workers) read the same on every node. The upstream counters are this
//! node's own, so `upstream_errors` alerts carry a `node` label.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sluice_batch::model::{BatchStatus, JobExecution};

use crate::config::{Condition, RuleSettings};
use crate::runtime::Runtime;

/// Where one watched thing stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The condition holds.
    Firing {
        /// One line: what is wrong.
        summary: String,
        /// More detail, if any.
        description: Option<String>,
    },
    /// It does not.
    Clear,
    /// Not known yet (a run in progress, a grace period running): the state
    /// stays as it is.
    Unknown,
}

/// One watched thing: its labels and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The labels naming it (`job`, `trigger`, `upstream`, `queue`, `node`).
    pub entity: BTreeMap<String, String>,
    /// Where it stands.
    pub state: State,
}

fn entity(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn firing(summary: String, description: Option<String>) -> State {
    State::Firing {
        summary,
        description,
    }
}

/// Unix ms as RFC 3339, for messages.
fn when(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// Executions read per job to find its last finished or completed run.
const HISTORY: u32 = 200;

/// Samples of an upstream's counters, for `upstream_errors` and `quota_low`.
#[derive(Debug, Default)]
struct Counters {
    /// The previous evaluation's (calls, errors).
    last: Option<(u64, u64)>,
    /// Since when the error ratio has stayed above the threshold (Unix ms).
    above_since: Option<i64>,
    /// (time, remaining) of the daily quota, oldest first, at most an hour.
    remaining: Vec<(i64, u64)>,
}

/// The evaluation state one node keeps between rounds: when it started
/// (no `no_success` before that counts) and the samples of the conditions
/// that need more than one look.
#[derive(Debug)]
pub struct Evaluator {
    rt: Arc<Runtime>,
    started: i64,
    below_since: HashMap<String, i64>,
    counters: HashMap<(String, String), Counters>,
    /// `query` rules: a pool per database URL.
    dbs: HashMap<String, sluice_sql::Db>,
    /// `query` rules: since when each row (rule and labels) has come back.
    rows_since: HashMap<(String, BTreeMap<String, String>), i64>,
}

impl Evaluator {
    /// An evaluator for `rt`'s rules, started now.
    pub fn new(rt: Arc<Runtime>) -> Self {
        Self {
            rt,
            started: sluice_core::Clock::now_millis(&sluice_core::SystemClock),
            below_since: HashMap::new(),
            counters: HashMap::new(),
            dbs: HashMap::new(),
            rows_since: HashMap::new(),
        }
    }

    /// The jobs `job` names: that one, or every configured job.
    fn jobs(&self, job: &Option<String>) -> Vec<String> {
        match job {
            Some(j) => vec![j.clone()],
            None => self.rt.settings().jobs.jobs.keys().cloned().collect(),
        }
    }

    async fn history(&self, job: &str) -> Result<Vec<JobExecution>, String> {
        let repo = self.rt.repository().await?;
        repo.executions(Some(job), HISTORY)
            .await
            .map_err(|e| e.to_string())
    }

    /// What `rule` sees at `now`.
    ///
    /// # Errors
    ///
    /// When what it reads cannot be reached; the rule's state then stays.
    pub async fn observe(
        &mut self,
        rule: &RuleSettings,
        now: i64,
    ) -> Result<Vec<Observation>, String> {
        match &rule.condition {
            Condition::JobFailed { job } => self.job_failed(job).await,
            Condition::NoSuccess { job, age } => self.no_success(job, *age, now).await,
            Condition::JobLate { job, grace } => self.job_late(job, *grace, now).await,
            Condition::DeadLetters { queue, above } => self.dead_letters(queue, *above).await,
            Condition::WorkerGone { queue, min, hold } => {
                self.worker_gone(&rule.name, queue, *min, *hold, now).await
            }
            Condition::UpstreamErrors {
                upstream,
                above,
                hold,
            } => Ok(self.upstream_errors(&rule.name, upstream, *above, *hold, now)),
            Condition::QuotaLow {
                upstream,
                below_percent,
            } => Ok(self.quota_low(&rule.name, upstream, *below_percent, now)),
            Condition::Query {
                database,
                query,
                hold,
            } => self.query(&rule.name, database, query, *hold, now).await,
        }
    }

    /// A `query` rule: each row is an alert (its columns its labels, `summary`
    /// and `description` its annotations), firing once it has come back for
    /// `hold`; a row that no longer comes back is resolved.
    async fn query(
        &mut self,
        rule: &str,
        database: &sluice_core::Secret,
        query: &str,
        hold: Duration,
        now: i64,
    ) -> Result<Vec<Observation>, String> {
        let url = database.expose();
        if !self.dbs.contains_key(url) {
            let settings = sluice_sql::ConnectSettings::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(10))
                .quiet();
            let db = sluice_sql::Db::connect(url, &settings)
                .await
                .map_err(|e| e.to_string())?;
            self.dbs.insert(url.to_owned(), db);
        }
        let db = &self.dbs[url];
        let fail = |e: sqlx::Error| format!("query of rule {rule}: {}", sluice_sql::describe(&e));
        // Read-only: the transaction is rolled back.
        let mut tx = db.begin().await.map_err(fail)?;
        let rows = tx
            .fetch_all(&sluice_sql::Statement::new(query))
            .await
            .map_err(fail)?;
        drop(tx);
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for row in &rows {
            let mut labels = BTreeMap::new();
            let (mut summary, mut description) = (None, None);
            for (name, value) in query_cells(row) {
                let Some(value) = value else { continue };
                match name.as_str() {
                    "summary" => summary = Some(value),
                    "description" => description = Some(value),
                    "alertname" | "severity" => {}
                    _ => {
                        labels.insert(label_name(&name), value);
                    }
                }
            }
            let key = (rule.to_owned(), labels.clone());
            seen.insert(key.clone());
            let since = *self.rows_since.entry(key).or_insert(now);
            let state = if now - since >= hold.as_millis() as i64 {
                let listed = labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                firing(
                    summary.unwrap_or_else(|| format!("rule {rule}: {listed}")),
                    description,
                )
            } else {
                State::Unknown
            };
            out.push(Observation {
                entity: labels,
                state,
            });
        }
        self.rows_since
            .retain(|(r, labels), _| r != rule || seen.contains(&(r.clone(), labels.clone())));
        Ok(out)
    }

    /// An observation per job of `job`, each from `state` over its recent runs.
    async fn per_job(
        &self,
        job: &Option<String>,
        state: impl Fn(&str, &[JobExecution]) -> State,
    ) -> Result<Vec<Observation>, String> {
        let mut out = Vec::new();
        for j in self.jobs(job) {
            let runs = self.history(&j).await?;
            out.push(Observation {
                state: state(&j, &runs),
                entity: entity(&[("job", &j)]),
            });
        }
        Ok(out)
    }

    async fn job_failed(&self, job: &Option<String>) -> Result<Vec<Observation>, String> {
        self.per_job(job, |j, runs| {
            let last = runs.iter().find(|e| {
                matches!(
                    e.status,
                    BatchStatus::Completed | BatchStatus::Failed | BatchStatus::Stopped
                )
            });
            match last {
                Some(e) if e.status == BatchStatus::Failed => firing(
                    format!("job {j} failed (execution {})", e.id),
                    Some(format!(
                        "execution {} of job {j} ended FAILED at {}: {}",
                        e.id,
                        when(e.ended_at.unwrap_or(e.created_at)),
                        e.exit_message
                    )),
                ),
                Some(e) if e.status == BatchStatus::Completed => State::Clear,
                Some(_) => State::Unknown,
                None => State::Clear,
            }
        })
        .await
    }

    async fn no_success(
        &self,
        job: &Option<String>,
        age: Duration,
        now: i64,
    ) -> Result<Vec<Observation>, String> {
        let started = self.started;
        self.per_job(job, |j, runs| {
            let last = runs
                .iter()
                .filter(|e| e.status == BatchStatus::Completed)
                .find_map(|e| e.ended_at);
            let since = last.unwrap_or(started);
            if now.saturating_sub(since) <= age.as_millis() as i64 {
                return State::Clear;
            }
            firing(
                format!("job {j} has not completed for {}", human(age)),
                Some(match last {
                    Some(t) => format!("its last completed run ended at {}", when(t)),
                    None => format!(
                        "no completed run recorded (watched since {})",
                        when(started)
                    ),
                }),
            )
        })
        .await
    }

    async fn job_late(
        &self,
        job: &Option<String>,
        grace: Duration,
        now: i64,
    ) -> Result<Vec<Observation>, String> {
        let settings = self.rt.settings().clone();
        let last_fires = self
            .rt
            .claims()
            .await?
            .last_fires()
            .await
            .map_err(|e| e.to_string())?;
        let week = 7 * 24 * 3600 * 1000;
        let mut out = Vec::new();
        for t in &settings.jobs.triggers {
            if job.as_ref().is_some_and(|j| *j != t.def.job) {
                continue;
            }
            let last = last_fires.get(&t.def.id);
            // Fires due since this node watches, or since the last fire the
            // scheduler recorded, whichever is earlier (a week at most).
            let from = last
                .map_or(self.started, |l| l.at.min(self.started))
                .max(now - week);
            let to = now - grace.as_millis() as i64;
            let due = match (
                DateTime::<Utc>::from_timestamp_millis(from),
                DateTime::<Utc>::from_timestamp_millis(to),
            ) {
                (Some(a), Some(b)) => t.def.spec.latest_between(a, b, 1).pop(),
                _ => None,
            };
            let mut state = State::Clear;
            if let Some(due) = due {
                let due = due.timestamp_millis();
                let started = self
                    .rt
                    .repository()
                    .await?
                    .executions(Some(&t.def.job), 1)
                    .await
                    .map_err(|e| e.to_string())?
                    .first()
                    .is_some_and(|e| e.created_at >= due);
                if !started {
                    state = firing(
                        format!(
                            "job {} is late: the fire due at {} started no run within {}",
                            t.def.job,
                            when(due),
                            human(grace)
                        ),
                        Some(match last {
                            Some(l) => format!(
                                "trigger {} last fired for {}: {}",
                                t.def.id,
                                when(l.at),
                                l.outcome
                            ),
                            None => format!("trigger {} has no recorded fire", t.def.id),
                        }),
                    );
                }
            }
            out.push(Observation {
                entity: entity(&[("job", &t.def.job), ("trigger", &t.def.id)]),
                state,
            });
        }
        Ok(out)
    }

    async fn dead_letters(
        &self,
        queue: &Option<String>,
        above: u64,
    ) -> Result<Vec<Observation>, String> {
        let broker = self.rt.broker().await?;
        let queues = match queue {
            Some(q) => vec![q.clone()],
            None => broker.queues().await.map_err(|e| e.to_string())?,
        };
        let mut out = Vec::new();
        for q in queues {
            let dead = broker.stats(&q).await.map_err(|e| e.to_string())?.dead;
            let state = if dead > above {
                let last = broker
                    .dead(&q, 1)
                    .await
                    .ok()
                    .and_then(|d| d.into_iter().next());
                firing(
                    format!("{dead} dead tasks on queue {q} (more than {above})"),
                    last.map(|e| {
                        format!(
                            "oldest: task {} ({}): {}",
                            e.id,
                            e.name,
                            e.last_error.unwrap_or_default()
                        )
                    }),
                )
            } else {
                State::Clear
            };
            out.push(Observation {
                entity: entity(&[("queue", &q)]),
                state,
            });
        }
        Ok(out)
    }

    async fn worker_gone(
        &mut self,
        rule: &str,
        queue: &str,
        min: u32,
        hold: Duration,
        now: i64,
    ) -> Result<Vec<Observation>, String> {
        let broker = self.rt.broker().await?;
        let live = broker.workers().await.map_err(|e| e.to_string())?;
        let serving: Vec<&str> = live
            .iter()
            .filter(|w| w.serves(queue))
            .map(|w| w.node.as_str())
            .collect();
        let key = format!("{rule}\u{0}{queue}");
        let state = if serving.len() >= min as usize {
            self.below_since.remove(&key);
            State::Clear
        } else {
            let since = *self.below_since.entry(key).or_insert(now);
            if now - since >= hold.as_millis() as i64 {
                firing(
                    format!(
                        "{} live workers serve queue {queue} (fewer than {min})",
                        serving.len()
                    ),
                    Some(if serving.is_empty() {
                        format!("no worker has announced itself for queue {queue}")
                    } else {
                        format!("live: {}", serving.join(", "))
                    }),
                )
            } else {
                State::Unknown
            }
        };
        Ok(vec![Observation {
            entity: entity(&[("queue", queue)]),
            state,
        }])
    }

    /// The upstreams `upstream` names: that one, or every configured upstream.
    fn upstreams(
        &self,
        upstream: &Option<String>,
    ) -> Vec<(String, Arc<sluice_upstream::Upstream>)> {
        self.rt
            .settings()
            .upstreams
            .iter()
            .filter(|(n, _)| upstream.as_ref().is_none_or(|u| u == *n))
            .map(|(n, u)| (n.clone(), u.clone()))
            .collect()
    }

    fn upstream_errors(
        &mut self,
        rule: &str,
        upstream: &Option<String>,
        above: f64,
        hold: Duration,
        now: i64,
    ) -> Vec<Observation> {
        let node = node_name();
        let mut out = Vec::new();
        for (name, u) in self.upstreams(upstream) {
            let (calls, errors) = upstream_counts(&u);
            let c = self
                .counters
                .entry((rule.to_owned(), name.clone()))
                .or_default();
            let state = match c.last.replace((calls, errors)) {
                None => State::Unknown,
                // No calls this round: the state stands as it was.
                Some((c0, _)) if calls <= c0 => State::Unknown,
                Some((c0, e0)) => {
                    let ratio = errors.saturating_sub(e0) as f64 / (calls - c0) as f64;
                    if ratio > above {
                        let since = *c.above_since.get_or_insert(now);
                        if now - since >= hold.as_millis() as i64 {
                            firing(
                                format!(
                                    "upstream {name}: {:.0} % of calls fail (above {:.0} % for {})",
                                    ratio * 100.0,
                                    above * 100.0,
                                    human(hold)
                                ),
                                Some(format!(
                                    "{} of {} calls failed since the last evaluation on node {node}",
                                    errors.saturating_sub(e0),
                                    calls - c0
                                )),
                            )
                        } else {
                            State::Unknown
                        }
                    } else {
                        c.above_since = None;
                        State::Clear
                    }
                }
            };
            out.push(Observation {
                entity: entity(&[("upstream", &name), ("node", &node)]),
                state,
            });
        }
        out
    }

    fn quota_low(
        &mut self,
        rule: &str,
        upstream: &Option<String>,
        below_percent: f64,
        now: i64,
    ) -> Vec<Observation> {
        let mut out = Vec::new();
        for (name, u) in self.upstreams(upstream) {
            let Some(q) = upstream_quota(&u) else {
                continue;
            };
            let c = self
                .counters
                .entry((rule.to_owned(), name.clone()))
                .or_default();
            // A new day (more left than before) starts the samples afresh.
            if c.remaining.last().is_some_and(|(_, r)| *r < q.remaining) {
                c.remaining.clear();
            }
            c.remaining.push((now, q.remaining));
            c.remaining.retain(|(t, _)| now - t <= 3600 * 1000);
            let percent = q.remaining as f64 * 100.0 / q.per_day.max(1) as f64;
            // The burn rate over the samples kept (calls per ms).
            let rate = match c.remaining.first() {
                Some((t0, r0)) if now > *t0 && *r0 > q.remaining => {
                    (*r0 - q.remaining) as f64 / (now - t0) as f64
                }
                _ => 0.0,
            };
            let runs_out = q.resets_at.and_then(|reset| {
                let left = reset - now;
                let need = rate * left as f64;
                (left > 0 && rate > 0.0 && need > q.remaining as f64)
                    .then(|| now + (q.remaining as f64 / rate) as i64)
            });
            let state = if percent < below_percent {
                firing(
                    format!(
                        "upstream {name}: {:.1} % of the daily quota left ({} of {})",
                        percent, q.remaining, q.per_day
                    ),
                    q.resets_at.map(|r| format!("it resets at {}", when(r))),
                )
            } else if let Some(out_at) = runs_out {
                firing(
                    format!(
                        "upstream {name}: the daily quota runs out at {} at the current rate, before its reset",
                        when(out_at)
                    ),
                    Some(format!(
                        "{} of {} left; {:.1} calls a minute over the last {}",
                        q.remaining,
                        q.per_day,
                        rate * 60_000.0,
                        human(Duration::from_millis(
                            (now - c.remaining.first().map_or(now, |s| s.0)) as u64
                        ))
                    )),
                )
            } else {
                State::Clear
            };
            out.push(Observation {
                entity: entity(&[("upstream", &name)]),
                state,
            });
        }
        out
    }
}

/// A column name as a label name: `[a-zA-Z0-9_]`, not starting with a digit.
fn label_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// Each column of a row with its value as text (`None` for NULL or a type
/// read as none of text, integer, float, boolean).
fn query_cells(row: &sluice_sql::Row) -> Vec<(String, Option<String>)> {
    use sqlx::{Column, Row};
    fn text<R>(r: &R) -> Vec<(String, Option<String>)>
    where
        R: Row,
        usize: sqlx::ColumnIndex<R>,
        for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        for<'a> Option<i32>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        for<'a> Option<f64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        for<'a> Option<f32>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        for<'a> Option<bool>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    {
        r.columns()
            .iter()
            .map(|c| {
                let i = c.ordinal();
                let v = r
                    .try_get::<Option<String>, _>(i)
                    .or_else(|_| {
                        r.try_get::<Option<i64>, _>(i)
                            .map(|v| v.map(|x| x.to_string()))
                    })
                    .or_else(|_| {
                        r.try_get::<Option<i32>, _>(i)
                            .map(|v| v.map(|x| x.to_string()))
                    })
                    .or_else(|_| {
                        r.try_get::<Option<f64>, _>(i)
                            .map(|v| v.map(|x| x.to_string()))
                    })
                    .or_else(|_| {
                        r.try_get::<Option<f32>, _>(i)
                            .map(|v| v.map(|x| x.to_string()))
                    })
                    .or_else(|_| {
                        r.try_get::<Option<bool>, _>(i)
                            .map(|v| v.map(|x| x.to_string()))
                    })
                    .unwrap_or(None);
                (c.name().to_owned(), v)
            })
            .collect()
    }
    match row {
        sluice_sql::Row::Sqlite(r) => text(r),
        sluice_sql::Row::Postgres(r) => text(r),
        sluice_sql::Row::MySql(r) => text(r),
    }
}

/// This node's name, as its workers announce it.
fn node_name() -> String {
    format!(
        "{}-{}",
        sluice_core::host_name().unwrap_or_else(|| "localhost".into()),
        std::process::id()
    )
}

/// An upstream's daily quota as the alerts see it.
#[derive(Debug, Clone, Copy)]
struct QuotaView {
    per_day: u64,
    remaining: u64,
    resets_at: Option<i64>,
}

/// (calls, errors) of an upstream on this node since it started.
fn upstream_counts(u: &sluice_upstream::Upstream) -> (u64, u64) {
    let s = u.stats();
    (s.calls, s.errors)
}

/// The daily quota of an upstream, if it has one.
fn upstream_quota(u: &sluice_upstream::Upstream) -> Option<QuotaView> {
    let q = u.stats().quota;
    Some(QuotaView {
        per_day: q.per_day?,
        remaining: q.remaining?,
        resets_at: q.resets_at_ms,
    })
}
