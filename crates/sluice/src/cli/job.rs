//! `sluice job …`: run batch jobs and look into their repository.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_batch::model::{BatchStatus, JobExecution, StepCounts, StepExecution};
use sluice_batch::repository::RepoError;
use sluice_batch::step::Progress;
use sluice_batch::{JobRunner, RunOptions};

use crate::config::{JOBS_QUEUE, PARTITIONS_QUEUE};
use crate::runtime::Runtime;
use crate::runtime::job_task::{JobRunInput, JobRunOutput, job_run_task};
use crate::runtime::params::{self, Origin};

/// `sluice job …`
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// The configured jobs, their steps and their last execution.
    List,
    /// Runs a job (or restarts its failed, stopped or dead last execution): enqueues
    /// a `job.run` task for a worker (`sluice serve`) and follows it; `--local` runs
    /// it in this process.
    Run {
        /// The job's name.
        name: String,
        /// A parameter, `name=value` (repeatable); overrides the job's defaults.
        #[arg(short = 'p', long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Run a COMPLETED instance again from the start.
        #[arg(long)]
        rerun: bool,
        /// Run in this process instead of through the queue.
        #[arg(long)]
        local: bool,
    },
    /// One execution with its steps, or the running and recent executions.
    Status {
        /// Execution id.
        exec: Option<i64>,
    },
    /// The executions of a job, newest first.
    History {
        /// The job's name.
        name: String,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
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

/// Enqueues a `job.run` task and follows it until it completes or dies.
async fn enqueue_and_follow(rt: &Arc<Runtime>, input: JobRunInput) -> Result<ExitCode, String> {
    use sluice_queue::TaskState;
    let name = input.job.as_str();
    // A typo fails here, before anything is enqueued.
    rt.job(name, &input.params)?;
    let broker = rt.broker().await?;
    let repo = rt.repository().await?;
    let task = job_run_task(&input);
    let id = broker.enqueue(task).await.map_err(|e| e.to_string())?.id;
    outln!("enqueued job {name} as task {id} on queue {JOBS_QUEUE}");
    let started = Instant::now();
    let mut last_state = None;
    let mut last_line = String::new();
    let mut hinted = false;
    let signal = crate::serve::shutdown_signal();
    tokio::pin!(signal);
    loop {
        let Some(st) = broker
            .status(JOBS_QUEUE, id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Err(format!("task {id} disappeared from the queue (purged?)"));
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
                        "job {name}: this instance COMPLETED as execution {}; run with --rerun to run it again",
                        out.execution
                    );
                    return Ok(ExitCode::from(3));
                }
                if let Ok((e, steps)) = repo.execution(out.execution).await {
                    print_execution(&e);
                    print_steps(&steps);
                }
                if let Some(prev) = out.resumed_from {
                    outln!("resumed execution {prev}");
                }
                outln!("took {:.1?}", started.elapsed());
                return Ok(if out.status == "COMPLETED" {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(4)
                });
            }
            TaskState::Dead => {
                eprintln!(
                    "job {name} failed: {}",
                    st.task.last_error.unwrap_or_default()
                );
                eprintln!("(retry it with `sluice queue dlq retry {id}`)");
                return Ok(ExitCode::from(1));
            }
            TaskState::Running => {
                if let Ok(list) = repo.executions(Some(name), 1).await
                    && let Some(e) = list.first()
                {
                    let steps = repo.execution(e.id).await.map(|x| x.1).unwrap_or_default();
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
                    && started.elapsed() > Duration::from_secs(5)
                {
                    eprintln!(
                        "waiting for a worker: no `sluice serve` with workers has taken the task yet \
                         (or run it here with `sluice job run {name} --local`)"
                    );
                    hinted = true;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
            () = &mut signal => {
                eprintln!("stopped following; the task goes on: `sluice task status {id}`");
                return Ok(ExitCode::from(1));
            }
        }
    }
}

/// Runs `sluice job …`.
///
/// # Errors
///
/// What went wrong, for `error: …`.
pub async fn run(cmd: JobCommand, rt: &Arc<Runtime>) -> Result<ExitCode, String> {
    let settings = rt.settings();
    match cmd {
        JobCommand::List => {
            let repo = rt.repository().await?;
            if settings.jobs.jobs.is_empty() {
                outln!("no jobs configured ([[job]] in the config)");
            }
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
        } => {
            let given = params.into_iter().collect();
            let p = params::resolve(settings, &name, Origin::Manual(&given))?;
            let input = JobRunInput::new(name, p, rerun);
            if local {
                run_job(rt, input).await
            } else {
                enqueue_and_follow(rt, input).await
            }
        }
        JobCommand::Restart { exec } => {
            let repo = rt.repository().await?;
            let (e, _) = repo.execution(exec).await.map_err(|e| e.to_string())?;
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
        JobCommand::Status { exec: Some(id) } => {
            let repo = rt.repository().await?;
            let (e, steps) = repo.execution(id).await.map_err(|e| e.to_string())?;
            print_execution(&e);
            print_steps(&steps);
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Status { exec: None } => {
            let repo = rt.repository().await?;
            let list = repo.executions(None, 20).await.map_err(|e| e.to_string())?;
            print_executions(&list);
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::History { name, limit } => {
            let repo = rt.repository().await?;
            let list = repo
                .executions(Some(&name), limit)
                .await
                .map_err(|e| e.to_string())?;
            print_executions(&list);
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Stop { exec } => {
            let repo = rt.repository().await?;
            if repo.request_stop(exec).await.map_err(|e| e.to_string())? {
                outln!("execution {exec}: stop requested; it stops at its next chunk boundary");
                Ok(ExitCode::SUCCESS)
            } else {
                Err(format!("execution {exec} is not running"))
            }
        }
        JobCommand::Skips { exec } => {
            let repo = rt.repository().await?;
            let skips = repo.skips(exec).await.map_err(|e| e.to_string())?;
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
            eprintln!("stopping at the next chunk boundary…");
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
    let report = match result {
        Ok(r) => r,
        Err(e @ (RepoError::AlreadyRunning { .. } | RepoError::AlreadyCompleted { .. })) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(3));
        }
        Err(e) => return Err(e.to_string()),
    };
    bars.finish();
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

/// indicatif progress bars, one per step.
#[derive(Default)]
struct Bars {
    bar: Mutex<Option<(ProgressBar, u64)>>,
}

impl Bars {
    fn finish(&self) {
        if let Ok(mut b) = self.bar.lock()
            && let Some((bar, _)) = b.take()
        {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Bars {
    fn step_started(&self, step: &str, total: Option<u64>, resumed: &StepCounts) {
        let bar = match total {
            Some(t) => ProgressBar::new(t).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {human_pos}/{human_len} items, {per_sec}, ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg} {human_pos} items, {per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(step.to_owned());
        bar.set_position(resumed.read);
        bar.reset_eta();
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut b) = self.bar.lock() {
            if let Some((old, _)) = b.take() {
                old.finish_and_clear();
            }
            *b = Some((bar, resumed.read));
        }
    }

    fn chunk_committed(&self, _step: &str, counts: &StepCounts) {
        if let Ok(b) = self.bar.lock()
            && let Some((bar, _)) = b.as_ref()
        {
            bar.set_position(counts.read);
        }
    }

    fn step_finished(&self, _step: &StepExecution) {
        self.finish();
    }
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

fn print_execution(e: &JobExecution) {
    let params: Vec<String> = e.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    outln!(
        "execution {}  job {}  [{}]  {}  started {}  ended {}{}",
        e.id,
        e.job_name,
        params.join(" "),
        e.status,
        time(e.started_at),
        time(e.ended_at),
        if e.exit_message.is_empty() {
            String::new()
        } else {
            format!("\n  {}", e.exit_message)
        }
    );
}

fn print_steps(steps: &[StepExecution]) {
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
        if !s.exit_message.is_empty() && s.status != BatchStatus::Completed {
            outln!("  {}", s.exit_message);
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
