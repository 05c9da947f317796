//! `sluice job run` through the queue: enqueue a `job.run` task and follow it
//! until the job ends, telling the truth about what happened.
//!
//! - A broker or repository outage does not end the follower: it says once that
//!   the connection is lost, retries with backoff (the worker goes on meanwhile),
//!   says when it is back, and exits with the job's own outcome. After
//!   `--follow-timeout` without an answer it gives up with [`EXIT_GAVE_UP`] and
//!   prints how to follow the task later.
//! - A task the broker lost (a Redis restart without persistence) but a worker
//!   already ran is followed through its execution in the repository.
//! - Ctrl-C / SIGTERM cancels a task no worker has started, and leaves a running
//!   one going, saying which; either way the exit code is [`EXIT_INTERRUPTED`].

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_batch::model::{BatchStatus, JobExecution};
use sluice_batch::repository::Repository;
use sluice_queue::{Broker, CancelOutcome, TaskId, TaskState};

use crate::config::JOBS_QUEUE;
use crate::runtime::Runtime;
use crate::runtime::job_task::{JobRunInput, JobRunOutput, job_run_task};

/// Exit code of a follower that gave up waiting for the broker or the repository
/// (`EX_TEMPFAIL`): the task goes on, its outcome is unknown here.
pub const EXIT_GAVE_UP: u8 = 75;

/// Exit code of a follower stopped by Ctrl-C / SIGTERM (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

/// How often the follower asks.
const POLL: Duration = Duration::from_millis(300);

/// The longest wait between retries during an outage.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long one call to the broker or the repository may take before it counts
/// as failed (a pool waiting for a connection would otherwise hide an outage).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a best-effort progress read may take.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(2);

/// What a retried call came to.
enum Flow<T> {
    /// It answered.
    Ok(T),
    /// It did not answer within the follow timeout; the last error.
    GaveUp(String),
    /// Ctrl-C / SIGTERM meanwhile.
    Interrupted,
}

/// Unwraps a [`Flow`], or returns from the calling follower method.
macro_rules! flow {
    ($self:ident, $e:expr) => {
        match $e {
            Flow::Ok(v) => v,
            Flow::GaveUp(err) => return Ok($self.gave_up(&err)),
            Flow::Interrupted => return Ok($self.interrupted().await),
        }
    };
}

type Signal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One followed task.
struct Follower {
    id: TaskId,
    name: String,
    params: sluice_batch::model::Params,
    broker: Arc<dyn Broker>,
    repo: Arc<dyn Repository>,
    give_up: Duration,
    /// When the current outage began, and what was lost.
    outage: Option<(Instant, &'static str)>,
    /// The execution the task runs, once seen.
    exec: Option<i64>,
    /// When the task was enqueued (Unix ms, this node's clock).
    enqueued_at: i64,
    started: Instant,
    signal: Signal,
}

/// Enqueues a `job.run` task and follows it until the job ends; `give_up` bounds
/// how long an outage of the broker or the repository is ridden out.
///
/// # Errors
///
/// An unknown job, a broker that refuses the task, a task lost before any worker
/// ran it.
pub(super) async fn enqueue_and_follow(
    rt: &Arc<Runtime>,
    input: JobRunInput,
    give_up: Duration,
) -> Result<ExitCode, String> {
    let name = input.job.clone();
    // A typo fails here, before anything is enqueued.
    rt.job(&name, &input.params)?;
    let broker = rt.broker().await?;
    let repo = rt.repository().await?;
    let enqueued_at = sluice_core::Clock::now_millis(&sluice_core::SystemClock);
    let id = broker
        .enqueue(job_run_task(&input))
        .await
        .map_err(|e| e.to_string())?
        .id;
    outln!("enqueued job {name} as task {id} on queue {JOBS_QUEUE}");
    if let Ok(live) = broker.workers().await
        && !live.iter().any(|w| w.serves(JOBS_QUEUE))
    {
        outln!(
            "no live worker serves queue {JOBS_QUEUE} yet: the task waits for one (Ctrl-C cancels it)"
        );
    }
    let mut f = Follower {
        id,
        name,
        params: input.params,
        broker,
        repo,
        give_up,
        outage: None,
        exec: None,
        enqueued_at,
        started: Instant::now(),
        signal: Box::pin(crate::serve::shutdown_signal()),
    };
    f.follow().await
}

impl Follower {
    /// Calls `call` until it answers, the follow timeout passes or a signal comes;
    /// the first failure and the recovery are each said once.
    async fn retry<T, E: Display>(
        &mut self,
        what: &'static str,
        mut call: impl AsyncFnMut() -> Result<T, E>,
    ) -> Flow<T> {
        let mut wait = Duration::from_millis(250);
        loop {
            let answer = match tokio::time::timeout(CALL_TIMEOUT, call()).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {}", humantime(CALL_TIMEOUT))),
            };
            match answer {
                Ok(v) => {
                    if let Some((since, lost)) = self.outage.take() {
                        eprintln!(
                            "{lost} back after {:.1?}; following task {} again",
                            since.elapsed(),
                            self.id
                        );
                    }
                    return Flow::Ok(v);
                }
                Err(e) => {
                    let since = match self.outage {
                        Some((since, _)) => since,
                        None => {
                            eprintln!(
                                "lost the {what} ({e}); retrying for up to {} while the worker goes on",
                                humantime(self.give_up)
                            );
                            let now = Instant::now();
                            self.outage = Some((now, what));
                            now
                        }
                    };
                    if since.elapsed() >= self.give_up {
                        return Flow::GaveUp(e);
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut self.signal => return Flow::Interrupted,
            }
            wait = (wait * 2).min(MAX_BACKOFF);
        }
    }

    /// Sleeps one poll interval; false on a signal.
    async fn pause(&mut self) -> bool {
        tokio::select! {
            () = tokio::time::sleep(POLL) => true,
            () = &mut self.signal => false,
        }
    }

    async fn follow(&mut self) -> Result<ExitCode, String> {
        let (id, broker) = (self.id, self.broker.clone());
        let mut last_state = None;
        let mut last_line = String::new();
        let mut hinted = false;
        let (mut polls, mut warned_gone) = (0_u32, false);
        loop {
            let st = flow!(
                self,
                self.retry("broker", async || broker.status(JOBS_QUEUE, id).await)
                    .await
            );
            let Some(st) = st else {
                // The broker lost the task (purged, or Redis restarted without
                // persistence): a worker that had started it goes on, and its
                // execution in the repository tells the outcome.
                if let Some(exec) = self.exec.or(self.find_execution().await) {
                    eprintln!(
                        "task {id} is no longer on the queue; following its execution #{exec} in the repository"
                    );
                    return self.follow_execution(exec).await;
                }
                return Err(format!(
                    "task {id} disappeared from the queue before any worker ran it (purged, or the broker lost its data); run the job again"
                ));
            };
            if last_state != Some(st.state) {
                let attempt = if st.task.attempt > 0 {
                    format!(" (attempt {}/{})", st.task.attempt, st.task.max_attempts)
                } else {
                    String::new()
                };
                outln!("task {id}: {}{attempt}", st.state);
                if let (Some(e), TaskState::Delayed) = (&st.task.last_error, st.state) {
                    outln!("  last error: {e}");
                }
                last_state = Some(st.state);
            }
            match st.state {
                TaskState::Completed => {
                    let out: Option<JobRunOutput> =
                        st.result.and_then(|r| serde_json::from_value(r).ok());
                    let Some(out) = out else {
                        return Err(format!("task {id} completed without a readable result"));
                    };
                    if out.status == "ALREADY_COMPLETED" {
                        eprintln!(
                            "job {}: this instance COMPLETED as execution {}; run with --rerun to run it again",
                            self.name, out.execution
                        );
                        return Ok(ExitCode::from(3));
                    }
                    let repo = self.repo.clone();
                    let (e, steps) = flow!(
                        self,
                        self.retry("repository", async || repo.execution(out.execution).await)
                            .await
                    );
                    super::job::print_execution(&e);
                    super::job::print_steps(&steps);
                    if let Some(prev) = out.resumed_from {
                        outln!("resumed execution {prev}");
                    }
                    outln!("took {:.1?}", self.started.elapsed());
                    return Ok(if out.status == "COMPLETED" {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(4)
                    });
                }
                TaskState::Dead => {
                    eprintln!(
                        "job {} failed: {}",
                        self.name,
                        st.task.last_error.unwrap_or_default()
                    );
                    eprintln!("(retry it with `sluice queue dlq retry {id}`)");
                    return Ok(ExitCode::from(1));
                }
                TaskState::Running => {
                    // Progress is best effort: a repository hiccup only skips a line.
                    if let Ok(Ok(list)) = tokio::time::timeout(
                        PROGRESS_TIMEOUT,
                        self.repo.executions(Some(&self.name), 1),
                    )
                    .await
                        && let Some(e) = list.first()
                    {
                        if self.is_ours(e) {
                            self.exec = Some(e.id);
                            polls += 1;
                            if !warned_gone && polls % 10 == 1 {
                                warned_gone = self.say_if_owner_gone(e).await;
                            }
                        }
                        let steps =
                            tokio::time::timeout(PROGRESS_TIMEOUT, self.repo.execution(e.id))
                                .await
                                .ok()
                                .and_then(Result::ok)
                                .map(|x| x.1)
                                .unwrap_or_default();
                        let line = steps
                            .iter()
                            .map(|s| {
                                format!(
                                    "{} {} read {} written {}",
                                    s.step_name, s.status, s.counts.read, s.counts.written
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ");
                        let line = format!("  execution #{} {}: {line}", e.id, e.status);
                        if line != last_line {
                            outln!("{line}");
                            last_line = line;
                        }
                    }
                }
                TaskState::Ready | TaskState::Delayed => {
                    if !hinted
                        && st.state == TaskState::Ready
                        && self.started.elapsed() > Duration::from_secs(5)
                    {
                        eprintln!(
                            "waiting for a worker: none has taken the task yet \
                             (Ctrl-C cancels it; `sluice job run {} --local` runs it here)",
                            self.name
                        );
                        hinted = true;
                    }
                }
            }
            if !self.pause().await {
                return Ok(self.interrupted().await);
            }
        }
    }

    /// Whether `e` is the execution this task runs: this job's parameters,
    /// created after the task was enqueued (a resumed one is a new execution).
    fn is_ours(&self, e: &JobExecution) -> bool {
        e.job_name == self.name
            && e.params == self.params
            && e.created_at >= self.enqueued_at - 1_000
    }

    /// Says once that the worker running `e` announces itself nowhere any more
    /// (killed): its lease runs out, then another worker takes the task. True
    /// when it said so.
    async fn say_if_owner_gone(&self, e: &JobExecution) -> bool {
        if e.owner.is_empty() || !e.status.is_running() {
            return false;
        }
        let Ok(Ok(live)) = tokio::time::timeout(PROGRESS_TIMEOUT, self.broker.workers()).await
        else {
            return false;
        };
        if live.iter().any(|w| w.node == e.owner) {
            return false;
        }
        eprintln!(
            "worker {} running execution #{} is gone: its lease ends at {}, then another \
             worker takes task {} (following on)",
            e.owner,
            e.id,
            super::job::time(e.lease_until),
            self.id
        );
        true
    }

    /// The execution this task runs, when the repository has one.
    async fn find_execution(&self) -> Option<i64> {
        let list = tokio::time::timeout(CALL_TIMEOUT, self.repo.executions(Some(&self.name), 1))
            .await
            .ok()?
            .ok()?;
        list.first().filter(|e| self.is_ours(e)).map(|e| e.id)
    }

    /// Follows execution `exec` in the repository until it ends.
    async fn follow_execution(&mut self, exec: i64) -> Result<ExitCode, String> {
        let repo = self.repo.clone();
        loop {
            let (e, steps) = flow!(
                self,
                self.retry("repository", async || repo.execution(exec).await)
                    .await
            );
            if !e.status.is_running() {
                super::job::print_execution(&e);
                super::job::print_steps(&steps);
                outln!("took {:.1?}", self.started.elapsed());
                return Ok(ExitCode::from(match e.status {
                    BatchStatus::Completed => 0,
                    BatchStatus::Stopped => 4,
                    _ => 1,
                }));
            }
            if !self.pause().await {
                return Ok(self.interrupted().await);
            }
        }
    }

    /// The follower gave up: the task goes on; how to follow it.
    fn gave_up(&self, err: &str) -> ExitCode {
        let lost = self.outage.map_or("broker", |(_, w)| w);
        eprintln!(
            "gave up following task {} after {} without the {lost} ({err})",
            self.id,
            humantime(self.give_up)
        );
        eprintln!(
            "the task goes on: follow it with `sluice task status {}` or `sluice job history {}`",
            self.id, self.name
        );
        ExitCode::from(EXIT_GAVE_UP)
    }

    /// Ctrl-C / SIGTERM: cancel the task if no worker started it, else leave it
    /// running and say where.
    async fn interrupted(&mut self) -> ExitCode {
        let id = self.id;
        match self.broker.cancel(JOBS_QUEUE, id).await {
            Ok(CancelOutcome::Cancelled) => {
                eprintln!("cancelled task {id} (no worker had started it)");
            }
            Ok(CancelOutcome::Running) => {
                let exec = match self.exec {
                    Some(x) => self.repo.execution(x).await.ok().map(|r| r.0),
                    None => self
                        .repo
                        .executions(Some(&self.name), 1)
                        .await
                        .ok()
                        .and_then(|l| l.into_iter().find(|e| self.is_ours(e))),
                };
                let live = self.broker.workers().await.unwrap_or_default();
                match exec {
                    Some(e) if !e.owner.is_empty() && !live.iter().any(|w| w.node == e.owner) => {
                        eprintln!(
                            "task {id} stays with worker {}, which is gone: its lease ends at {}, \
                             then another worker takes the task; follow it with \
                             `sluice task status {id}` or `sluice job status {}`",
                            e.owner,
                            super::job::time(e.lease_until),
                            e.id
                        );
                    }
                    Some(e) => eprintln!(
                        "task {id} keeps running on worker {} (execution #{}); follow it with \
                         `sluice task status {id}` or `sluice job status {}`",
                        e.owner, e.id, e.id
                    ),
                    None => eprintln!(
                        "task {id} keeps running on a worker; follow it with `sluice task status {id}`"
                    ),
                }
            }
            Ok(CancelOutcome::Finished(st)) => {
                eprintln!("task {id} already ended ({st}); see `sluice task status {id}`");
            }
            Ok(_) => eprintln!(
                "task {id} is no longer on the queue; see `sluice job history {}`",
                self.name
            ),
            Err(e) => eprintln!(
                "could not cancel task {id} ({e}); it may still run: follow it with `sluice task status {id}`"
            ),
        }
        ExitCode::from(EXIT_INTERRUPTED)
    }
}

/// `3m`, `90s`, `1.5s`: a duration as the CLI takes it.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() == 0 && s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else if d.subsec_millis() == 0 {
        format!("{s}s")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
