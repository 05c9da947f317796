//! Builds [`sluice_batch::Job`]s from `[[job]]` config for one run.
//!
//! A step's `reader`, `processor`, `writer` and `tasklet` tables are typed here,
//! after `{{params.NAME}}` substitution, so their errors name the job, the step
//! and the table: `job "air" step "load" writer: unknown field `tabel``.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_batch::model::Params;
use sluice_batch::partition::{
    PartitionError, PartitionHandler, PartitionRequest, PartitionedStep,
};
use sluice_batch::step::Retry;
use sluice_batch::{ChunkStep, Job, JqProcessor, Processor, Reader, Step, Writer};

use crate::config::{
    RawProcessor, RawReader, RawStep, RawTasklet, RawWriter, Settings, none_or_list,
    parse_duration, placeholders, substitute,
};

fn typed<T: serde::de::DeserializeOwned>(v: &toml::Value, params: &Params) -> Result<T, String> {
    let v = substitute(v, params).map_err(|e| e.to_string())?;
    T::deserialize(v).map_err(|e| e.message().to_owned())
}

fn one_byte(s: Option<&str>) -> Result<Option<u8>, String> {
    match s {
        None => Ok(None),
        Some(d) if d.len() == 1 => Ok(Some(d.as_bytes()[0])),
        Some("\\t") => Ok(Some(b'\t')),
        Some(d) => Err(format!(
            "delimiter {d:?} must be one ASCII character (or \"\\t\")"
        )),
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
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
        let tasklet = typed(t, params).and_then(|cfg| build_tasklet(settings, cfg));
        return Ok(Step::Tasklet {
            name: sname.clone(),
            tasklet: tasklet.map_err(at("tasklet"))?,
        });
    }
    let (Some(r), Some(w)) = (&s.reader, &s.writer) else {
        return Err(at("")("a chunk step needs a reader and a writer".into()));
    };
    let reader = typed(r, params)
        .and_then(|cfg| build_reader(settings, cfg, partition))
        .map_err(at("reader"))?;
    let writer = typed(w, params)
        .and_then(|cfg| build_writer(settings, cfg))
        .map_err(at("writer"))?;
    let processor: Option<Arc<dyn Processor>> = match &s.processor {
        None => None,
        Some(p) => match typed::<RawProcessor>(p, params).map_err(at("processor"))? {
            RawProcessor::Jq { expr } => Some(Arc::new(
                JqProcessor::new(&expr).map_err(|e| at("processor")(e.to_string()))?,
            )),
        },
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

fn upstream(settings: &Settings, name: &str) -> Result<Arc<sluice_upstream::Upstream>, String> {
    settings.upstreams.get(name).cloned().ok_or_else(|| {
        let known: Vec<&str> = settings.upstreams.keys().map(String::as_str).collect();
        format!(
            "unknown upstream {name:?}; upstreams: {}",
            none_or_list(&known)
        )
    })
}

fn build_reader(
    settings: &Settings,
    cfg: RawReader,
    partition: Option<(usize, usize)>,
) -> Result<Box<dyn Reader>, String> {
    use sluice_batch::readers::{CsvReader, JsonArrayReader, JsonLinesReader};
    Ok(match cfg {
        RawReader::Csv {
            path,
            delimiter,
            encoding,
            header,
            columns,
        } => {
            let mut r = CsvReader::new(path);
            if let Some(d) = one_byte(delimiter.as_deref())? {
                r = r.delimiter(d);
            }
            if let Some(label) = encoding {
                let label = label.trim();
                // CP949 is what Windows calls EUC-KR's superset; WHATWG's euc-kr is it.
                let enc = if label.eq_ignore_ascii_case("cp949") {
                    Some(encoding_rs::EUC_KR)
                } else {
                    encoding_rs::Encoding::for_label(label.as_bytes())
                };
                let enc = enc.ok_or_else(|| {
                    format!("unknown encoding {label:?}; use utf-8, euc-kr (also cp949) or another WHATWG label")
                })?;
                r = r.encoding(enc);
            }
            if let Some(h) = header {
                r = r.has_header(h);
            }
            if let Some(c) = columns {
                r = r.columns(c);
            }
            if let Some((i, n)) = partition {
                r = r.partition(i, n);
            }
            Box::new(r)
        }
        RawReader::Jsonl { path } => {
            let mut r = JsonLinesReader::new(path);
            if let Some((i, n)) = partition {
                r = r.partition(i, n);
            }
            Box::new(r)
        }
        RawReader::Json { path, pointer } => {
            let mut r = JsonArrayReader::new(path).object_as_single_item(true);
            if let Some(p) = pointer {
                r = r.pointer(p);
            }
            Box::new(r)
        }
        RawReader::HttpPages {
            upstream: up,
            path,
            query,
            page_param,
            start,
            offset_param,
            cursor_param,
            next,
            size_param,
            size,
            items,
            total,
        } => {
            use sluice_batch::readers::{HttpPagesReader, Pagination};
            let jq = |src: &str, key: &str| {
                sluice_upstream::Jq::compile(src).map_err(|e| format!("{key}: {e}"))
            };
            let sized = |kind: &str| -> Result<(String, u64), String> {
                Ok((
                    size_param
                        .clone()
                        .ok_or_else(|| format!("{kind} pagination needs size_param"))?,
                    size.unwrap_or(100).max(1),
                ))
            };
            let pagination = match (page_param, offset_param, cursor_param) {
                (Some(param), None, None) => {
                    let (size_param, size) = sized("page")?;
                    Pagination::Page {
                        param,
                        start: start.unwrap_or(1),
                        size_param,
                        size,
                    }
                }
                (None, Some(param), None) => {
                    let (size_param, size) = sized("offset")?;
                    Pagination::Offset {
                        param,
                        size_param,
                        size,
                    }
                }
                (None, None, Some(param)) => Pagination::Cursor {
                    param,
                    next: jq(
                        next.as_deref()
                            .ok_or_else(|| "cursor pagination needs next = \"<jq>\"".to_owned())?,
                        "next",
                    )?,
                },
                _ => {
                    return Err(
                        "give exactly one of page_param, offset_param or cursor_param".to_owned(),
                    );
                }
            };
            let mut r = HttpPagesReader::new(
                upstream(settings, &up)?,
                path,
                jq(&items, "items")?,
                pagination,
            );
            for (k, v) in query {
                r = r.query(k, v);
            }
            if let Some(t) = total {
                r = r.total_count(jq(&t, "total")?);
            }
            Box::new(r)
        }
        RawReader::Sql {
            url,
            table,
            query,
            key,
            columns,
            page,
        } => {
            use sluice_batch::readers::SqlReader;
            if key.is_empty() {
                return Err("key must name the unique, ordered column(s)".to_owned());
            }
            let mut r = match (table, query) {
                (Some(t), None) => SqlReader::table(url, t, key),
                (None, Some(q)) => SqlReader::query(url, q, key),
                _ => return Err("give exactly one of table or query".to_owned()),
            };
            if let Some(c) = columns {
                r = r.columns(c);
            }
            if let Some(p) = page {
                r = r.page_size(p.max(1));
            }
            if let Some((i, n)) = partition {
                r = r.partition(i, n).map_err(|e| e.to_string())?;
            }
            Box::new(r.count_total(true))
        }
    })
}

/// `"name TYPE [NOT NULL]"` → a column.
fn column(spec: &str) -> Result<sluice_batch::writers::Column, String> {
    let spec = spec.trim();
    let (name, ty) = spec.split_once(char::is_whitespace).ok_or_else(|| {
        format!("column {spec:?} must be written \"name TYPE\", like \"pm10 DOUBLE PRECISION\"")
    })?;
    let ty = ty.trim();
    let upper = ty.to_ascii_uppercase();
    Ok(match upper.strip_suffix("NOT NULL") {
        Some(_) => {
            sluice_batch::writers::Column::new(name, ty[..ty.len() - 8].trim_end()).not_null()
        }
        None => sluice_batch::writers::Column::new(name, ty),
    })
}

#[allow(clippy::too_many_arguments)]
fn sql_writer(
    url: &str,
    table: String,
    key: Vec<String>,
    columns: Option<Vec<String>>,
    create: bool,
    indexes: Vec<Vec<String>>,
    mode: sluice_batch::writers::WriteMode,
) -> Result<Box<dyn Writer>, String> {
    use sluice_batch::writers::{SqlWriter, SqlWriterOptions};
    let mut o = SqlWriterOptions::new(table)
        .key(key)
        .create(create)
        .mode(mode);
    if let Some(cols) = columns {
        o = o.columns(
            cols.iter()
                .map(|c| column(c))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    for ix in indexes {
        o = o.index(ix);
    }
    Ok(Box::new(SqlWriter::new(url, o).map_err(|e| e.to_string())?))
}

fn build_writer(settings: &Settings, cfg: RawWriter) -> Result<Box<dyn Writer>, String> {
    use sluice_batch::writers::{FileWriter, WriteMode};
    Ok(match cfg {
        RawWriter::SqlUpsert {
            url,
            table,
            key,
            columns,
            create,
            indexes,
        } => {
            if key.is_empty() {
                return Err(
                    "sql_upsert needs key = [\"column\", …]; use sql_append for plain inserts"
                        .to_owned(),
                );
            }
            sql_writer(
                &url,
                table,
                key,
                columns,
                create,
                indexes,
                WriteMode::Upsert,
            )?
        }
        RawWriter::SqlAppend {
            url,
            table,
            columns,
            create,
            indexes,
        } => sql_writer(
            &url,
            table,
            Vec::new(),
            columns,
            create,
            indexes,
            WriteMode::Append,
        )?,
        RawWriter::Csv {
            path,
            delimiter,
            columns,
        } => {
            let mut w = FileWriter::csv(path);
            if let Some(d) = one_byte(delimiter.as_deref())? {
                w = w.delimiter(d);
            }
            if let Some(c) = columns {
                w = w.columns(c);
            }
            Box::new(w)
        }
        RawWriter::Jsonl { path } => Box::new(FileWriter::json_lines(path)),
        RawWriter::Cache { path, ttl } => Box::new(
            sluice_batch::writers::CacheWriter::new(
                settings.gateway.clone(),
                &path,
                duration(&ttl)?,
            )
            .map_err(|e| e.to_string())?,
        ),
    })
}

fn build_tasklet(
    settings: &Settings,
    cfg: RawTasklet,
) -> Result<Box<dyn sluice_batch::Tasklet>, String> {
    use sluice_batch::tasklets::{BatchLoop, HttpTasklet, ShellTasklet, SqlTasklet};
    Ok(match cfg {
        RawTasklet::Sql { url, sql, repeat } => {
            let t = SqlTasklet::new(url, sql);
            Box::new(if repeat {
                t.batch(BatchLoop::default())
            } else {
                t
            })
        }
        RawTasklet::Shell {
            command,
            env,
            timeout,
            cwd,
        } => {
            let timeout = match timeout {
                Some(t) => duration(&t)?,
                None => Duration::from_secs(3600),
            };
            let mut t = ShellTasklet::new(command, timeout);
            for (k, v) in env {
                t = t.env(k, v);
            }
            if let Some(c) = cwd {
                t = t.cwd(c);
            }
            Box::new(t)
        }
        RawTasklet::Http {
            upstream: up,
            path,
            query,
        } => {
            let mut t = HttpTasklet::new(upstream(settings, &up)?, path);
            for (k, v) in query {
                t = t.query(k, v);
            }
            Box::new(t)
        }
    })
}
