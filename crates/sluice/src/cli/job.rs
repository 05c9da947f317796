//! `sluice job …`: run batch jobs and look into their repository.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Subcommand;
use sluice_batch::model::{BatchStatus, JobExecution, StepCounts, StepExecution};
use sluice_batch::repository::{RepoError, Repository};
use sluice_batch::{JobRunner, RunOptions};
use sluice_queue::LiveWorker;

use super::progress::Bars;
use crate::config::{JOBS_QUEUE, PARTITIONS_QUEUE};
use crate::runtime::Runtime;
use crate::runtime::job_task::JobRunInput;
use crate::runtime::params::{self, Origin};
use crate::views::{ExecutionDetail, ExecutionView, JobView, StepView};

/// `sluice job …`
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// The configured jobs, their steps and their last execution.
    List {
        /// One JSON document: an array of `{name, description, steps, last}`.
        #[arg(long)]
        json: bool,
    },
    /// Runs a job (or restarts its failed, stopped or dead last execution). When a
    /// live worker (`sluice serve`) serves the `jobs` queue, enqueues a `job.run`
    /// task and follows it; else runs it in this process. `--local` and `--queue`
    /// force either.
    ///
    /// Exit codes: 0 COMPLETED, 1 FAILED (or another error), 2 no such job, 3 already running or
    /// already completed, 4 STOPPED, 75 the follower gave up waiting for the broker
    /// or the repository (the task goes on), 130 interrupted (Ctrl-C: a task no
    /// worker had started is cancelled, a running one keeps running).
    Run {
        /// The job's name.
        name: String,
        /// A parameter, `name=value` (repeatable); overrides the job's defaults.
        #[arg(short = 'p', long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Run a COMPLETED instance again from the start.
        #[arg(long)]
        rerun: bool,
        /// Run in this process, even when a worker is live.
        #[arg(long, conflicts_with = "queue")]
        local: bool,
        /// Enqueue it for a worker, even when none is live (it waits for one).
        #[arg(long)]
        queue: bool,
        /// How long the follower rides out a broker or repository outage before
        /// it gives up (exit 75; the task goes on).
        #[arg(long, default_value = "3m", value_parser = crate::config::parse_duration)]
        follow_timeout: Duration,
    },
    /// One execution with its steps, or the running and recent executions.
    Status {
        /// Execution id.
        exec: Option<i64>,
        /// One JSON document: `{"execution": {...}, "steps": [...]}` for one
        /// execution, else an array of executions.
        #[arg(long)]
        json: bool,
    },
    /// The executions of a job, newest first.
    History {
        /// The job's name.
        name: String,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// One JSON document: an array of executions.
        #[arg(long)]
        json: bool,
    },
    /// Restarts an execution from its last committed chunk.
    Restart {
        /// Execution id.
        exec: i64,
    },
    /// Asks a running execution to stop at its next chunk boundary.
    Stop {
        /// Execution id.
        exec: i64,
    },
    /// The items an execution skipped, with their positions and reasons.
    Skips {
        /// Execution id.
        exec: i64,
        /// One JSON document: an array of `{step_execution_id, step_name,
        /// position, phase, reason, item}`.
        #[arg(long)]
        json: bool,
    },
}

impl JobCommand {
    /// Whether the command runs a job (and so calls upstreams with their secrets).
    pub fn needs_secrets(&self) -> bool {
        matches!(self, JobCommand::Run { .. } | JobCommand::Restart { .. })
    }
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("parameter {s:?} must be written name=value"))?;
    if k.is_empty() {
        return Err(format!("parameter {s:?} has an empty name"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// Runs `sluice job …`.
///
/// # Errors
///
/// What went wrong, for `error: …`.
pub async fn run(cmd: JobCommand, rt: &Arc<Runtime>) -> Result<ExitCode, String> {
    let settings = rt.settings();
    match cmd {
        JobCommand::List { json } => {
            let repo = rt.repository().await?;
            let mut jobs = Vec::new();
            for (name, job) in &settings.jobs.jobs {
                let last = repo
                    .executions(Some(name), 1)
                    .await
                    .map_err(|e| e.to_string())?;
                let steps: Vec<&str> = job
                    .steps
                    .iter()
                    .map(|s| s.name.get_ref().as_str())
                    .collect();
                jobs.push((name, job, steps, last));
            }
            if json {
                let list: Vec<JobView<'_>> = jobs
                    .iter()
                    .map(|(name, job, steps, last)| JobView {
                        name,
                        description: job.description.as_deref(),
                        steps: steps.clone(),
                        last: last.first().map(ExecutionView::of),
                    })
                    .collect();
                super::out::json(&list);
                return Ok(ExitCode::SUCCESS);
            }
            if jobs.is_empty() {
                outln!("no jobs configured ([[job]] in the config)");
            }
            for (name, job, steps, last) in &jobs {
                outln!(
                    "{name}  steps: {}  last: {}{}",
                    steps.join(" → "),
                    last.first()
                        .map(|e| format!("#{} {}", e.id, e.status))
                        .unwrap_or_else(|| "never run".into()),
                    job.description
                        .as_ref()
                        .map(|d| format!("  — {d}"))
                        .unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Run {
            name,
            params,
            rerun,
            local,
            queue,
            follow_timeout,
        } => {
            if let Err(e) = settings.jobs.job(&name) {
                return Ok(super::out::invalid_input(e));
            }
            let given = params.into_iter().collect();
            let p = params::resolve(settings, &name, Origin::Manual(&given))?;
            let input = JobRunInput::new(name, p, rerun);
            let enqueue = if local {
                false
            } else if queue {
                true
            } else {
                // A typo fails here, before the broker is asked.
                rt.job(&input.job, &input.params)?;
                a_worker_serves_jobs(rt).await
            };
            if enqueue {
                super::follow::enqueue_and_follow(rt, input, follow_timeout).await
            } else {
                run_job(rt, input).await
            }
        }
        JobCommand::Restart { exec } => {
            let repo = rt.repository().await?;
            let (e, _) = match execution(&*repo, exec).await? {
                Ok(found) => found,
                Err(code) => return Ok(code),
            };
            if e.status == BatchStatus::Completed {
                return Err(format!(
                    "execution {exec} COMPLETED; run `sluice job run {} --rerun` to run it again",
                    e.job_name
                ));
            }
            let input = JobRunInput {
                job: e.job_name,
                params: e.params,
                non_identifying: e.non_identifying,
                rerun: false,
            };
            run_job(rt, input).await
        }
        JobCommand::Status {
            exec: Some(id),
            json,
        } => {
            let repo = rt.repository().await?;
            let (e, steps) = match execution(&*repo, id).await? {
                Ok(found) => found,
                Err(code) => return Ok(code),
            };
            let gone = live_workers(rt, &[&e])
                .await
                .and_then(|live| owner_gone(&e, &live));
            if json {
                let mut execution = ExecutionView::of(&e);
                execution.owner_gone = gone;
                super::out::json(&ExecutionDetail {
                    execution,
                    steps: steps.iter().map(StepView::of).collect(),
                });
                return Ok(ExitCode::SUCCESS);
            }
            print_execution(&e);
            if let Some(line) = gone {
                outln!("  {line}");
            }
            print_steps(&steps);
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Status { exec: None, json } => {
            let repo = rt.repository().await?;
            let list = repo.executions(None, 20).await.map_err(|e| e.to_string())?;
            let live = live_workers(rt, &list.iter().collect::<Vec<_>>()).await;
            let gone = |e: &JobExecution| live.as_deref().and_then(|l| owner_gone(e, l));
            if json {
                let views: Vec<ExecutionView<'_>> = list
                    .iter()
                    .map(|e| ExecutionView {
                        owner_gone: gone(e),
                        ..ExecutionView::of(e)
                    })
                    .collect();
                super::out::json(&views);
                return Ok(ExitCode::SUCCESS);
            }
            print_executions(&list);
            for e in &list {
                if let Some(line) = gone(e) {
                    outln!("  #{}: {line}", e.id);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::History { name, limit, json } => {
            let repo = rt.repository().await?;
            let list = repo
                .executions(Some(&name), limit)
                .await
                .map_err(|e| e.to_string())?;
            // A job no longer configured keeps its history; a name known
            // nowhere is a typo.
            if list.is_empty()
                && let Err(e) = settings.jobs.job(&name)
            {
                return Ok(super::out::invalid_input(e));
            }
            if json {
                let views: Vec<ExecutionView<'_>> = list.iter().map(ExecutionView::of).collect();
                super::out::json(&views);
                return Ok(ExitCode::SUCCESS);
            }
            print_executions(&list);
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Stop { exec } => {
            let repo = rt.repository().await?;
            if let Err(code) = execution(&*repo, exec).await? {
                return Ok(code);
            }
            if repo.request_stop(exec).await.map_err(|e| e.to_string())? {
                outln!("execution {exec}: stop requested; it stops at its next chunk boundary");
                Ok(ExitCode::SUCCESS)
            } else {
                Err(format!("execution {exec} is not running"))
            }
        }
        JobCommand::Skips { exec, json } => {
            let repo = rt.repository().await?;
            if let Err(code) = execution(&*repo, exec).await? {
                return Ok(code);
            }
            let skips = repo.skips(exec).await.map_err(|e| e.to_string())?;
            if json {
                super::out::json(&skips);
                return Ok(ExitCode::SUCCESS);
            }
            super::print_lines(skips, &format!("execution {exec} skipped nothing"), |s| {
                format!(
                    "{}\t{}\t#{}\t{}{}",
                    s.step_name,
                    s.phase,
                    s.position,
                    s.reason,
                    s.item.map(|i| format!("\t{i}")).unwrap_or_default()
                )
            });
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs a job in this process, with progress bars.
async fn run_job(rt: &Arc<Runtime>, input: JobRunInput) -> Result<ExitCode, String> {
    let JobRunInput {
        job: name,
        params,
        non_identifying,
        rerun,
    } = input;
    let name = name.as_str();
    let settings = rt.settings();
    let job = rt.job(name, &params)?;
    let repo = rt.repository().await?;
    // Partitioned steps fan out as tasks: run a worker for them here too.
    let partitioned = settings.jobs.jobs.get(name).is_some_and(|j| {
        j.steps
            .iter()
            .any(|s| s.partitions.as_ref().is_some_and(|p| *p.get_ref() > 1))
    });
    let partition_worker = if partitioned {
        Some(rt.start_workers(Some(PARTITIONS_QUEUE)).await?)
    } else {
        None
    };
    // Announce this process (serving no queue) so that `job status` elsewhere
    // sees the execution's owner alive; the partition worker announces it when
    // there is one. Best effort: a run needs no broker.
    let presence = match (&partition_worker, rt.broker().await) {
        (None, Ok(b)) => Some(sluice_queue::Presence::start(
            b,
            sluice_queue::default_node(),
            Vec::new(),
            Duration::from_secs(3),
        )),
        _ => None,
    };
    let runner = JobRunner::new(repo).lease(settings.jobs.lease);
    let bars = Bars::default();
    let started = Instant::now();
    // Ctrl-C or SIGTERM: stop at the next chunk boundary, so the run ends STOPPED
    // (restartable at once) instead of leaving a lease to expire.
    let stop = Arc::new(AtomicBool::new(false));
    let signals = {
        let stop = stop.clone();
        tokio::spawn(async move {
            crate::serve::shutdown_signal().await;
            super::progress::suspended(|| eprintln!("stopping at the next chunk boundary…"));
            stop.store(true, Ordering::Relaxed);
        })
    };
    let opts = RunOptions {
        rerun,
        stop: Some(stop),
        non_identifying,
    };
    let result = runner.run(job, &params, opts, &bars).await;
    signals.abort();
    if let Some(w) = partition_worker {
        w.shutdown().await;
    }
    if let Some(p) = presence {
        p.leave().await;
    }
    let report = match result {
        Ok(r) => r,
        Err(e @ (RepoError::AlreadyRunning { .. } | RepoError::AlreadyCompleted { .. })) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(3));
        }
        Err(e) => return Err(e.to_string()),
    };
    bars.finish();
    crate::runtime::job_task::log_finished(&report);
    if let Some(prev) = report.resumed_from {
        outln!("resumed execution {prev}");
    }
    print_execution(&report.execution);
    print_steps(&report.steps);
    outln!("took {:.1?}", started.elapsed());
    Ok(match report.execution.status {
        BatchStatus::Completed => ExitCode::SUCCESS,
        BatchStatus::Stopped => ExitCode::from(4),
        _ => ExitCode::from(1),
    })
}

/// Execution `id` with its steps; an unknown one is invalid input (exit 2,
/// the inner `Err`).
///
/// # Errors
///
/// The repository's other errors.
async fn execution(
    repo: &dyn Repository,
    id: i64,
) -> Result<Result<(JobExecution, Vec<StepExecution>), ExitCode>, String> {
    match repo.execution(id).await {
        Ok(found) => Ok(Ok(found)),
        Err(e @ RepoError::NoSuchExecution(_)) => Ok(Err(super::out::invalid_input(format!(
            "{e} (see `sluice job status` for the recent ones)"
        )))),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether a live worker serves the `jobs` queue; says what `job run` does
/// about it.
async fn a_worker_serves_jobs(rt: &Arc<Runtime>) -> bool {
    let workers = match rt.broker().await {
        Ok(b) => b.workers().await.map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    match workers {
        Ok(list) => match list.iter().find(|w| w.serves(JOBS_QUEUE)) {
            Some(w) => {
                outln!(
                    "worker {} serves queue {JOBS_QUEUE}: enqueueing the job for it (`--local` runs it here)",
                    w.node
                );
                true
            }
            None => {
                outln!(
                    "no live worker serves queue {JOBS_QUEUE}: running the job in this process (`--queue` enqueues it instead)"
                );
                false
            }
        },
        Err(e) => {
            outln!("cannot ask the broker for live workers ({e}): running the job in this process");
            false
        }
    }
}

/// The live workers, when any of `list` is running (`None` when none is, or the
/// broker cannot tell).
async fn live_workers(rt: &Runtime, list: &[&JobExecution]) -> Option<Vec<LiveWorker>> {
    if !list.iter().any(|e| e.status.is_running()) {
        return None;
    }
    rt.broker().await.ok()?.workers().await.ok()
}

/// The owner line of a running execution whose owner announces itself nowhere
/// among `live`: `owner gone, lease ends at …` (the next run marks it ABANDONED
/// once the lease ended). `None` when it is not running or its owner is live.
fn owner_gone(e: &JobExecution, live: &[LiveWorker]) -> Option<String> {
    if !e.status.is_running() || e.owner.is_empty() || live.iter().any(|w| w.node == e.owner) {
        return None;
    }
    Some(lease_line(&e.owner, e.lease_until))
}

/// `owner gone, lease ends at …` (or `ended at`, when it is past).
pub(super) fn lease_line(owner: &str, lease_until: Option<i64>) -> String {
    let now = sluice_core::Clock::now_millis(&sluice_core::SystemClock);
    let ended = lease_until.is_some_and(|t| t <= now);
    format!(
        "owner gone{}, lease {} at {}{}",
        if owner.is_empty() {
            String::new()
        } else {
            format!(" ({owner})")
        },
        if ended { "ended" } else { "ends" },
        time(lease_until),
        if ended {
            "; the next run marks it ABANDONED and resumes it"
        } else {
            ""
        }
    )
}

pub(super) fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

pub(super) fn print_execution(e: &JobExecution) {
    let params: Vec<String> = e.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    outln!(
        "execution {}  job {}  [{}]  {}  started {}  ended {}{}",
        e.id,
        e.job_name,
        params.join(" "),
        e.status,
        time(e.started_at),
        time(e.ended_at),
        // Its first line: the steps below show the whole of it (a shell
        // step's output).
        match e.exit_message.lines().next() {
            Some(first) if !first.is_empty() => format!("\n  {first}"),
            _ => String::new(),
        }
    );
}

pub(super) fn print_steps(steps: &[StepExecution]) {
    /// The width of each count's column, in [`StepCounts::NAMES`] order.
    const WIDTHS: [usize; 7] = [10, 10, 9, 10, 8, 8, 9];
    let row = |step: &str, status: &str, counts: [String; 7]| {
        let counts: String = counts
            .iter()
            .zip(WIDTHS)
            .map(|(c, w)| format!(" {c:>w$}"))
            .collect();
        outln!("{step:<20} {status:<10}{counts}");
    };
    row("step", "status", StepCounts::NAMES.map(str::to_owned));
    for s in steps {
        let counts = s.counts.values().map(|n| n.to_string());
        row(&s.step_name, s.status.as_str(), counts);
        // Why it ended: an error, or a tasklet's exit and the tail of its
        // output (a shell step's stdout and stderr), indented under the step.
        for line in s.exit_message.lines() {
            outln!("    {line}");
        }
    }
}

fn print_executions(list: &[JobExecution]) {
    if list.is_empty() {
        outln!("no executions");
    }
    for e in list {
        let params: Vec<String> = e.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        outln!(
            "{:>6}  {:<24} {:<10} {}  [{}]",
            e.id,
            e.job_name,
            e.status.as_str(),
            time(e.started_at),
            params.join(" ")
        );
    }
}
