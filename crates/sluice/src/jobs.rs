//! Builds [`sluice_batch::Job`]s from `[[job]]` config for one run.
//!
//! A step's `reader`, `processor`, `writer` and `tasklet` tables are typed here,
//! after `{{params.NAME}}` substitution, so their errors name the job, the step
//! and the table: `job "air" step "load" writer: unknown field `tabel``.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sluice_batch::model::Params;
use sluice_batch::step::Retry;
use sluice_batch::{ChunkStep, Job, JqProcessor, Processor, Reader, Step, Writer};

use crate::config::{RawStep, Settings, parse_duration, placeholders, substitute};

/// `reader = { kind = …, … }`
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ReaderCfg {
    /// A CSV file.
    Csv {
        path: String,
        delimiter: Option<String>,
        /// `utf-8` (default), `euc-kr` / `cp949`, or any WHATWG label.
        encoding: Option<String>,
        header: Option<bool>,
        /// Keys of the fields, in order (renames the header, or names the fields
        /// of a file without one).
        columns: Option<Vec<String>>,
    },
    /// JSON Lines.
    Jsonl { path: String },
    /// One JSON array (optionally inside an object, at `pointer`).
    Json {
        path: String,
        pointer: Option<String>,
    },
    /// Pages of an upstream API.
    HttpPages {
        upstream: String,
        path: String,
        #[serde(default)]
        query: BTreeMap<String, String>,
        /// Page-number pagination: the page parameter.
        page_param: Option<String>,
        /// First page number. Default 1.
        start: Option<u64>,
        /// Offset pagination: the offset parameter.
        offset_param: Option<String>,
        /// Cursor pagination: the cursor parameter…
        cursor_param: Option<String>,
        /// …and the jq expression yielding the next cursor (null at the end).
        next: Option<String>,
        /// The page-size parameter.
        size_param: Option<String>,
        /// Items per page.
        size: Option<u64>,
        /// jq: the items of a page (each output is one item).
        items: String,
        /// jq: the total number of items.
        total: Option<String>,
    },
    /// Rows of a table or query, by keyset pagination.
    Sql {
        url: String,
        table: Option<String>,
        query: Option<String>,
        key: Vec<String>,
        columns: Option<Vec<String>>,
        page: Option<usize>,
    },
}

/// `processor = { kind = "jq", expr = "…" }`
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ProcessorCfg {
    Jq { expr: String },
}

/// `writer = { kind = …, … }`
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum WriterCfg {
    /// Multi-row upserts (insert or update on `key`).
    SqlUpsert {
        url: String,
        table: String,
        key: Vec<String>,
        /// `"name TYPE [NOT NULL]"`, in order (for `create`, and typed binds).
        columns: Option<Vec<String>>,
        #[serde(default)]
        create: bool,
        #[serde(default)]
        indexes: Vec<Vec<String>>,
    },
    /// Plain inserts (PostgreSQL: COPY).
    SqlAppend {
        url: String,
        table: String,
        columns: Option<Vec<String>>,
        #[serde(default)]
        create: bool,
        #[serde(default)]
        indexes: Vec<Vec<String>>,
    },
    /// A CSV file (written under a temp name, renamed when the step completes).
    Csv {
        path: String,
        delimiter: Option<String>,
        columns: Option<Vec<String>>,
    },
    /// A JSON Lines file (same).
    Jsonl { path: String },
    /// Entries in the gateway's store, under the key a client request for `path`
    /// (with `{field}` placeholders) would use.
    Cache { path: String, ttl: String },
}

/// `tasklet = { kind = …, … }`
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum TaskletCfg {
    /// One SQL statement; with `repeat = true`, run until it affects no row.
    Sql {
        url: String,
        sql: String,
        #[serde(default)]
        repeat: bool,
    },
    /// A shell command (`sh -c`).
    Shell {
        command: String,
        #[serde(default)]
        env: BTreeMap<String, String>,
        timeout: Option<String>,
        cwd: Option<String>,
    },
    /// One GET through an upstream.
    Http {
        upstream: String,
        path: String,
        #[serde(default)]
        query: BTreeMap<String, String>,
    },
}

fn typed<T: serde::de::DeserializeOwned>(
    v: &toml::Value,
    params: &Params,
    what: &str,
) -> Result<T, String> {
    let v = substitute(v, params).map_err(|e| format!("{what}: {e}"))?;
    T::deserialize(v).map_err(|e| format!("{what}: {}", e.message()))
}

fn one_byte(s: Option<&str>, what: &str) -> Result<Option<u8>, String> {
    match s {
        None => Ok(None),
        Some(d) if d.len() == 1 => Ok(Some(d.as_bytes()[0])),
        Some("\\t") => Ok(Some(b'\t')),
        Some(d) => Err(format!(
            "{what}: delimiter {d:?} must be one ASCII character (or \"\\t\")"
        )),
    }
}

fn duration(s: &str, what: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| format!("{what}: {e}"))
}

/// Builds every job once, as `sluice check` does: with its default parameters,
/// and a stand-in value for each parameter it uses without a default (those come
/// from `-p` at run time). Returns every problem found.
pub fn check_all(settings: &Settings) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, raw) in &settings.jobs.jobs {
        let mut used = std::collections::BTreeSet::new();
        for step in &raw.steps {
            for table in [&step.reader, &step.processor, &step.writer, &step.tasklet]
                .into_iter()
                .flatten()
            {
                placeholders(table, &mut used);
            }
        }
        let mut params: Params = raw.params.clone().into_iter().collect();
        for p in used {
            params.entry(p.clone()).or_insert_with(|| format!("<{p}>"));
        }
        if let Err(e) = build(settings, name, &params) {
            problems.push(e);
        }
    }
    problems
}

/// Builds job `name` for a run with `params`.
///
/// # Errors
///
/// An unknown job, or what is wrong in one of its steps (naming job, step and
/// table).
pub fn build(settings: &Settings, name: &str, params: &Params) -> Result<Job, String> {
    let Some(raw) = settings.jobs.jobs.get(name) else {
        let known: Vec<&str> = settings.jobs.jobs.keys().map(String::as_str).collect();
        return Err(format!(
            "no job named {name:?}; jobs: {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ));
    };
    let mut job = Job::new(name);
    for s in &raw.steps {
        let step = build_step(settings, name, s, params)?;
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
) -> Result<Job, String> {
    let raw = settings
        .jobs
        .jobs
        .get(job)
        .ok_or_else(|| format!("no job named {job:?}"))?;
    let s = raw
        .steps
        .iter()
        .find(|s| s.name.get_ref() == step)
        .ok_or_else(|| format!("job {job:?} has no step {step:?}"))?;
    let built = build_chunk_step(settings, job, s, params, Some((index, of)))?;
    Ok(Job::new(crate::partition::child_job(job, step)).step(built))
}

fn build_step(
    settings: &Settings,
    job: &str,
    s: &RawStep,
    params: &Params,
) -> Result<Step, String> {
    let of = s.partitions.as_ref().map_or(1, |p| *p.get_ref());
    if of > 1 && s.tasklet.is_none() {
        // Built once here so that mistakes show before anything is enqueued.
        build_chunk_step(settings, job, s, params, Some((0, of)))?;
        return Ok(Step::Tasklet {
            name: s.name.get_ref().clone(),
            tasklet: Box::new(crate::partition::PartitionStep {
                job: job.to_owned(),
                step: s.name.get_ref().clone(),
                params: params.clone(),
                of,
                queue_url: settings.queue.url.clone(),
                namespace: settings.queue.namespace.clone(),
                repository_url: settings.jobs.repository_url.clone(),
            }),
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
) -> Result<Step, String> {
    let sname = s.name.get_ref().clone();
    let at = |part: &str| format!("job {job:?} step {sname:?} {part}");
    if let Some(t) = &s.tasklet {
        let cfg: TaskletCfg = typed(t, params, &at("tasklet"))?;
        return Ok(Step::Tasklet {
            name: sname.clone(),
            tasklet: build_tasklet(settings, cfg, &at("tasklet"))?,
        });
    }
    let (Some(r), Some(w)) = (&s.reader, &s.writer) else {
        return Err(format!(
            "{}: a chunk step needs a reader and a writer",
            at("")
        ));
    };
    let reader = build_reader(
        settings,
        typed(r, params, &at("reader"))?,
        &at("reader"),
        partition,
    )?;
    let writer = build_writer(settings, typed(w, params, &at("writer"))?, &at("writer"))?;
    let processor: Option<Arc<dyn Processor>> = match &s.processor {
        None => None,
        Some(p) => match typed::<ProcessorCfg>(p, params, &at("processor"))? {
            ProcessorCfg::Jq { expr } => Some(Arc::new(
                JqProcessor::new(&expr).map_err(|e| format!("{}: {e}", at("processor")))?,
            )),
        },
    };
    let retry = s.retry.as_ref().map_or(Retry::default(), |r| {
        let d = Retry::default();
        Retry {
            max: r.max.unwrap_or(d.max),
            backoff: r.backoff.map_or(d.backoff, |b| b.0),
            max_backoff: r.max_backoff.map_or(d.max_backoff, |b| b.0),
        }
    });
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

fn upstream(
    settings: &Settings,
    name: &str,
    what: &str,
) -> Result<Arc<sluice_gateway::Upstream>, String> {
    settings.upstreams.get(name).cloned().ok_or_else(|| {
        let known: Vec<&str> = settings.upstreams.keys().map(String::as_str).collect();
        format!(
            "{what}: unknown upstream {name:?}; upstreams: {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )
    })
}

fn build_reader(
    settings: &Settings,
    cfg: ReaderCfg,
    what: &str,
    partition: Option<(usize, usize)>,
) -> Result<Box<dyn Reader>, String> {
    use sluice_batch::readers::{CsvReader, JsonArrayReader, JsonLinesReader};
    Ok(match cfg {
        ReaderCfg::Csv {
            path,
            delimiter,
            encoding,
            header,
            columns,
        } => {
            let mut r = CsvReader::new(path);
            if let Some(d) = one_byte(delimiter.as_deref(), what)? {
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
                    format!("{what}: unknown encoding {label:?}; use utf-8, euc-kr (also cp949) or another WHATWG label")
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
        ReaderCfg::Jsonl { path } => {
            let mut r = JsonLinesReader::new(path);
            if let Some((i, n)) = partition {
                r = r.partition(i, n);
            }
            Box::new(r)
        }
        ReaderCfg::Json { path, pointer } => {
            let mut r = JsonArrayReader::new(path).object_as_single_item(true);
            if let Some(p) = pointer {
                r = r.pointer(p);
            }
            Box::new(r)
        }
        ReaderCfg::HttpPages {
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
            use sluice_batch::http_reader::{HttpPagesReader, Pagination};
            let jq = |src: &str, key: &str| {
                sluice_gateway::Jq::compile(src).map_err(|e| format!("{what}: {key}: {e}"))
            };
            let sized = |kind: &str| -> Result<(String, u64), String> {
                Ok((
                    size_param
                        .clone()
                        .ok_or_else(|| format!("{what}: {kind} pagination needs size_param"))?,
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
                        next.as_deref().ok_or_else(|| {
                            format!("{what}: cursor pagination needs next = \"<jq>\"")
                        })?,
                        "next",
                    )?,
                },
                _ => {
                    return Err(format!(
                        "{what}: give exactly one of page_param, offset_param or cursor_param"
                    ));
                }
            };
            let mut r = HttpPagesReader::new(
                upstream(settings, &up, what)?,
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
        ReaderCfg::Sql {
            url,
            table,
            query,
            key,
            columns,
            page,
        } => {
            use sluice_batch::readers::SqlReader;
            if key.is_empty() {
                return Err(format!(
                    "{what}: key must name the unique, ordered column(s)"
                ));
            }
            let mut r = match (table, query) {
                (Some(t), None) => SqlReader::table(url, t, key),
                (None, Some(q)) => SqlReader::query(url, q, key),
                _ => return Err(format!("{what}: give exactly one of table or query")),
            };
            if let Some(c) = columns {
                r = r.columns(c);
            }
            if let Some(p) = page {
                r = r.page_size(p.max(1));
            }
            if let Some((i, n)) = partition {
                r = r.partition(i, n).map_err(|e| format!("{what}: {e}"))?;
            }
            Box::new(r.count_total(true))
        }
    })
}

/// `"name TYPE [NOT NULL]"` → a column.
fn column(spec: &str, what: &str) -> Result<sluice_batch::writers::Column, String> {
    let spec = spec.trim();
    let (name, ty) = spec.split_once(char::is_whitespace).ok_or_else(|| {
        format!(
            "{what}: column {spec:?} must be written \"name TYPE\", like \"pm10 DOUBLE PRECISION\""
        )
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
    what: &str,
) -> Result<Box<dyn Writer>, String> {
    use sluice_batch::writers::{SqlWriter, SqlWriterOptions};
    let mut o = SqlWriterOptions::new(table)
        .key(key)
        .create(create)
        .mode(mode);
    if let Some(cols) = columns {
        o = o.columns(
            cols.iter()
                .map(|c| column(c, what))
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    for ix in indexes {
        o = o.index(ix);
    }
    Ok(Box::new(
        SqlWriter::new(url, o).map_err(|e| format!("{what}: {e}"))?,
    ))
}

fn build_writer(
    settings: &Settings,
    cfg: WriterCfg,
    what: &str,
) -> Result<Box<dyn Writer>, String> {
    use sluice_batch::writers::{FileWriter, WriteMode};
    Ok(match cfg {
        WriterCfg::SqlUpsert {
            url,
            table,
            key,
            columns,
            create,
            indexes,
        } => {
            if key.is_empty() {
                return Err(format!(
                    "{what}: sql_upsert needs key = [\"column\", …]; use sql_append for plain inserts"
                ));
            }
            sql_writer(
                &url,
                table,
                key,
                columns,
                create,
                indexes,
                WriteMode::Upsert,
                what,
            )?
        }
        WriterCfg::SqlAppend {
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
            what,
        )?,
        WriterCfg::Csv {
            path,
            delimiter,
            columns,
        } => {
            let mut w = FileWriter::csv(path);
            if let Some(d) = one_byte(delimiter.as_deref(), what)? {
                w = w.delimiter(d);
            }
            if let Some(c) = columns {
                w = w.columns(c);
            }
            Box::new(w)
        }
        WriterCfg::Jsonl { path } => Box::new(FileWriter::json_lines(path)),
        WriterCfg::Cache { path, ttl } => Box::new(
            sluice_batch::cache_writer::CacheWriter::new(
                settings.gateway.clone(),
                &path,
                duration(&ttl, what)?,
            )
            .map_err(|e| format!("{what}: {e}"))?,
        ),
    })
}

fn build_tasklet(
    settings: &Settings,
    cfg: TaskletCfg,
    what: &str,
) -> Result<Box<dyn sluice_batch::Tasklet>, String> {
    use sluice_batch::tasklets::{BatchLoop, HttpTasklet, ShellTasklet, SqlTasklet};
    Ok(match cfg {
        TaskletCfg::Sql { url, sql, repeat } => {
            let t = SqlTasklet::new(url, sql);
            Box::new(if repeat {
                t.batch(BatchLoop::default())
            } else {
                t
            })
        }
        TaskletCfg::Shell {
            command,
            env,
            timeout,
            cwd,
        } => {
            let timeout = match timeout {
                Some(t) => duration(&t, what)?,
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
        TaskletCfg::Http {
            upstream: up,
            path,
            query,
        } => {
            let mut t = HttpTasklet::new(upstream(settings, &up, what)?, path);
            for (k, v) in query {
                t = t.query(k, v);
            }
            Box::new(t)
        }
    })
}
