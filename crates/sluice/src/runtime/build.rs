//! Builds [`sluice_batch::Job`]s from `[[job]]` config for one run.
//!
//! A step's `reader`, `processor`, `writer` and `tasklet` tables are typed here,
//! after `{{params.NAME}}` substitution, as their family's enum from
//! `sluice-batch`, and built by it in the [`BuildContext`] of the [`Settings`]
//! (upstreams, the gateway's cache); their errors name the job, the step and the
//! table: `job "air" step "load" writer: unknown field `tabel``.

use std::sync::Arc;

use async_trait::async_trait;
use sluice_batch::config::{BuildContext, Kind, Shared};
use sluice_batch::model::Params;
use sluice_batch::partition::{
    PartitionError, PartitionHandler, PartitionRequest, PartitionedStep,
};
use sluice_batch::step::Retry;
use sluice_batch::{ChunkStep, Job, Processor, Step};

use crate::config::{
    RawProcessor, RawReader, RawStep, RawTasklet, RawWriter, Settings, placeholders, substitute,
};

/// A step table (`reader`, …) typed as its family's enum, after `{{params.NAME}}`
/// substitution.
fn typed<T: serde::de::DeserializeOwned>(v: &toml::Value, params: &Params) -> Result<T, String> {
    let v = substitute(v, params).map_err(|e| e.to_string())?;
    T::deserialize(v).map_err(|e| e.message().to_owned())
}

/// Types a step table, then builds it with `build`.
fn built<R: serde::de::DeserializeOwned + Kind<T>, T: ?Sized>(
    v: &toml::Value,
    params: &Params,
    ctx: &dyn BuildContext,
) -> Result<Box<T>, String> {
    typed::<R>(v, params)?.build(ctx).map_err(|e| e.to_string())
}

/// What the batch components are built in: the configured upstreams, the
/// gateway's cache.
impl BuildContext for Settings {
    fn upstream(&self, name: &str) -> Option<Arc<sluice_upstream::Upstream>> {
        self.upstreams.get(name).cloned()
    }

    fn upstream_names(&self) -> Vec<String> {
        self.upstreams.keys().cloned().collect()
    }

    fn cache_target(&self) -> Option<Arc<dyn sluice_cache::CacheTarget>> {
        Some(Arc::new(self.gateway.clone()))
    }

    /// Shared through Redis (as upstream quotas are) when the store has it.
    fn rate_limiter(
        &self,
        name: &str,
        per_second: Option<std::num::NonZeroU32>,
        per_day: Option<u64>,
    ) -> Arc<dyn sluice_core::Quota> {
        let clock = Arc::new(sluice_core::SystemClock);
        let local = sluice_core::LocalQuota::new(per_second, per_day, chrono_tz::UTC, clock);
        match &self.quota_redis {
            Some(r) => Arc::new(sluice_core::RedisQuota::new(r.clone(), name, local)),
            None => Arc::new(local),
        }
    }

    fn repository_url(&self) -> Option<String> {
        Some(self.jobs.repository_url.clone())
    }
}

/// The child job name of `job`'s step `step` (the job its partitions run as).
pub fn child_job(job: &str, step: &str) -> String {
    format!("{job}:{step}")
}

/// The partition handler of jobs that are built to be checked, never run.
struct NotRunning;

#[async_trait]
impl PartitionHandler for NotRunning {
    async fn run_partitions(&self, _: &PartitionRequest) -> Result<String, PartitionError> {
        Err(PartitionError::Dispatch(
            "this job was built to be checked, not run".into(),
        ))
    }
}

/// Why a job could not be built for a run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No such job (or step of a partition).
    #[error("{0}")]
    Job(String),
    /// A table of a step is wrong.
    #[error("job {job:?} step {step:?} {part}: {message}")]
    Step {
        /// The job.
        job: String,
        /// The step.
        step: String,
        /// `reader`, `processor`, `writer` or `tasklet`.
        part: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Builds every step of every job once, as `sluice check` does: with the job's
/// default parameters, and a stand-in value for each parameter it uses without a
/// default (those come from `-p` at run time). Returns every problem found.
pub fn check_all(settings: &Settings) -> Vec<BuildError> {
    let handler: Arc<dyn PartitionHandler> = Arc::new(NotRunning);
    let mut problems = Vec::new();
    for (name, raw) in &settings.jobs.jobs {
        let mut used = std::collections::BTreeSet::new();
        for table in raw.steps.iter().flat_map(RawStep::tables) {
            placeholders(table, &mut used);
        }
        let mut params: Params = raw.params.clone().into_iter().collect();
        for p in used {
            params.entry(p.clone()).or_insert_with(|| format!("<{p}>"));
        }
        for step in &raw.steps {
            if let Err(e) = build_step(settings, &handler, name, step, &params) {
                problems.push(e);
            }
        }
    }
    problems
}

/// Builds job `name` for a run with `params`; its partitioned steps hand their
/// partitions to `partitions`.
///
/// # Errors
///
/// An unknown job, or what is wrong in one of its steps (naming job, step and
/// table).
pub fn build(
    settings: &Settings,
    partitions: &Arc<dyn PartitionHandler>,
    name: &str,
    params: &Params,
) -> Result<Job, BuildError> {
    let raw = settings.jobs.job(name).map_err(BuildError::Job)?;
    let mut job = Job::new(name);
    for s in &raw.steps {
        let step = build_step(settings, partitions, name, s, params)?;
        job = job.step(step);
    }
    Ok(job)
}

/// Builds partition `index` of `of` of step `step` of job `job`: a child job
/// (named `JOB:STEP`) with that one chunk step, its reader narrowed to the
/// partition's share.
///
/// # Errors
///
/// As [`build`], or when the step does not exist.
pub fn build_partition(
    settings: &Settings,
    job: &str,
    step: &str,
    params: &Params,
    index: usize,
    of: usize,
) -> Result<Job, BuildError> {
    let raw = settings
        .jobs
        .jobs
        .get(job)
        .ok_or_else(|| BuildError::Job(format!("no job named {job:?}")))?;
    let s = raw
        .steps
        .iter()
        .find(|s| s.name.get_ref() == step)
        .ok_or_else(|| BuildError::Job(format!("job {job:?} has no step {step:?}")))?;
    let built = build_chunk_step(settings, job, s, params, Some((index, of)))?;
    Ok(Job::new(child_job(job, step)).step(built))
}

fn build_step(
    settings: &Settings,
    partitions: &Arc<dyn PartitionHandler>,
    job: &str,
    s: &RawStep,
    params: &Params,
) -> Result<Step, BuildError> {
    let of = s.partitions.as_ref().map_or(1, |p| *p.get_ref());
    if of > 1 && s.tasklet.is_none() {
        // Built once here so that mistakes show before anything is enqueued.
        build_chunk_step(settings, job, s, params, Some((0, of)))?;
        return Ok(Step::Tasklet {
            name: s.name.get_ref().clone(),
            tasklet: Box::new(PartitionedStep::new(
                PartitionRequest {
                    job: job.to_owned(),
                    step: s.name.get_ref().clone(),
                    params: params.clone(),
                    of,
                },
                partitions.clone(),
            )),
        });
    }
    build_chunk_step(settings, job, s, params, None)
}

fn build_chunk_step(
    settings: &Settings,
    job: &str,
    s: &RawStep,
    params: &Params,
    partition: Option<(usize, usize)>,
) -> Result<Step, BuildError> {
    let sname = s.name.get_ref().clone();
    let at = |part: &'static str| {
        let (job, step) = (job.to_owned(), sname.clone());
        move |message: String| BuildError::Step {
            job,
            step,
            part,
            message,
        }
    };
    if let Some(t) = &s.tasklet {
        let tasklet = built::<RawTasklet, _>(t, params, settings);
        return Ok(Step::Tasklet {
            name: sname.clone(),
            tasklet: tasklet.map_err(at("tasklet"))?,
        });
    }
    let (Some(r), Some(w)) = (&s.reader, &s.writer) else {
        return Err(at("")("a chunk step needs a reader and a writer".into()));
    };
    let shared = Shared {
        inner: settings,
        share: partition,
    };
    let reader = built::<RawReader, _>(r, params, &shared).map_err(at("reader"))?;
    let writer = built::<RawWriter, _>(w, params, settings).map_err(at("writer"))?;
    let processor: Option<Arc<dyn Processor>> = match &s.processor {
        None => None,
        Some(p) => {
            let p = built::<RawProcessor, _>(p, params, settings).map_err(at("processor"))?;
            Some(Arc::from(p))
        }
    };
    let d = Retry::default();
    let (max, backoff, max_backoff) =
        s.retry
            .unwrap_or_default()
            .or((d.max, d.backoff, d.max_backoff));
    let retry = Retry {
        max,
        backoff,
        max_backoff,
    };
    Ok(Step::Chunk(ChunkStep {
        name: sname,
        chunk: s.chunk.unwrap_or(500),
        skip_limit: s.skip_limit.unwrap_or(0),
        retry,
        reader,
        processor,
        writer,
    }))
}
