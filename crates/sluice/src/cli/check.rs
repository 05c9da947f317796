//! `sluice check`: validate a config file and exit (0 valid, 2 invalid).
//!
//! Beyond what loading checks, every step of every job is built once (with
//! stand-ins for parameters given at run time), and each table that does not
//! build is reported at its place in the file, like every other config error.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{ConfigError, ConfigErrors, Env, Settings, Source};
use crate::runtime::BuildError;

/// Loads the config at `path`, builds every job step once, and prints every
/// problem found (each `FILE:LINE:COLUMN: KEY: what`), or a one-line summary.
pub fn run(path: &Path) -> ExitCode {
    let loaded = Source::read(path).and_then(|src| {
        let raw = src.parse()?;
        let missing = missing_watch_dirs(&src, &raw);
        let s = raw.resolve(&src, &Env::process())?;
        Ok((src, s, missing))
    });
    let (src, s, missing) = match loaded {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let problems = crate::runtime::check_all(&s);
    if !problems.is_empty() || !missing.is_empty() {
        let mut located: Vec<ConfigError> = problems.iter().map(|p| locate(&src, &s, p)).collect();
        located.extend(missing);
        eprintln!("{}", ConfigErrors(located));
        return ExitCode::from(2);
    }
    outln!(
        "{}: ok ({} routes, store {}, {} jobs, {} alert rules)",
        path.display(),
        s.gateway.route_names().len(),
        s.gateway.store().kind(),
        s.jobs.jobs.len(),
        s.alerts.rules.len()
    );
    ExitCode::SUCCESS
}

/// Watched directories that do not exist (what `serve` would fail on at start),
/// each at its trigger's `watch` key. Only `check` and `serve` look: the other
/// commands do not need the directory.
fn missing_watch_dirs(src: &Source, raw: &crate::config::RawConfig) -> Vec<ConfigError> {
    let mut out = Vec::new();
    for (i, job) in raw.jobs.iter().enumerate() {
        for (k, t) in job.triggers.iter().enumerate() {
            if let Ok(sluice_schedule::TriggerPlan::Watch { trigger, .. }) =
                t.build(job.name.get_ref(), k)
                && !trigger.dir.is_dir()
            {
                out.push(src.err(
                    None,
                    format!("job[{i}].trigger[{k}].watch"),
                    format!(
                        "trigger {}: watched directory {} does not exist",
                        trigger.id,
                        trigger.dir.display()
                    ),
                ));
            }
        }
    }
    out
}

/// A build problem as a config error: at the step's table (`job[1].step[0].writer`).
fn locate(src: &Source, settings: &Settings, p: &BuildError) -> ConfigError {
    let BuildError::Step {
        job,
        step,
        part,
        message,
    } = p
    else {
        return src.err(None, "job", p.to_string());
    };
    let step_name = settings
        .jobs
        .jobs
        .get(job)
        .and_then(|j| j.steps.iter().find(|s| s.name.get_ref() == step))
        .map(|s| s.name.span());
    // The step's name is written inside the step's table: its key names the step.
    let key = step_name
        .and_then(|span| src.key_at(span.start))
        .and_then(|k| k.strip_suffix(".name").map(str::to_owned))
        .map(|k| format!("{k}.{part}"))
        .unwrap_or_else(|| format!("job {job:?} step {step:?} {part}"));
    src.err(None, key, message.clone())
}
