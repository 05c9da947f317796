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
        let s = src.parse()?.resolve(&src, &Env::process())?;
        Ok((src, s))
    });
    let (src, s) = match loaded {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let problems = crate::runtime::check_all(&s);
    if !problems.is_empty() {
        let located: Vec<ConfigError> = problems.iter().map(|p| locate(&src, &s, p)).collect();
        eprintln!("{}", ConfigErrors(located));
        return ExitCode::from(2);
    }
    outln!(
        "{}: ok ({} routes, store {}, {} jobs)",
        path.display(),
        s.gateway.route_names().len(),
        s.gateway.store().kind(),
        s.jobs.jobs.len()
    );
    ExitCode::SUCCESS
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
