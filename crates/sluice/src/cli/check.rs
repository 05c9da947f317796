//! `sluice check`: validate a config file and exit (0 valid, 2 invalid).

use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, Env};

/// Loads the config at `path`, builds every job once, and prints every problem
/// found (each `FILE:LINE:COLUMN: KEY: what`), or a one-line summary.
pub fn run(path: &Path) -> ExitCode {
    let s = match config::load(path, &Env::process()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let problems = crate::runtime::check_all(&s);
    if !problems.is_empty() {
        for p in problems {
            eprintln!("{}: {p}", path.display());
        }
        return ExitCode::from(2);
    }
    println!(
        "{}: ok ({} routes, store {}, {} jobs)",
        path.display(),
        s.gateway.route_names().len(),
        s.gateway.store().kind(),
        s.jobs.jobs.len()
    );
    ExitCode::SUCCESS
}
