//! Writing a command's output (see the `outln!` macro): lines, one JSON
//! document (`--json`), and invalid input (exit 2).

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;

/// Writes `args` and a newline to stdout. A closed pipe ends the process with
/// exit 0; another write error ends it with exit 1, saying why on stderr.
pub fn line(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        gone(&e);
    }
}

/// Ends the process after stdout failed with `e`.
fn gone(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    // stderr may be closed too: never panic over it.
    let _ = writeln!(io::stderr(), "error: cannot write the output: {e}");
    std::process::exit(1);
}

/// Writes `value` as one line of JSON to stdout (as [`line()`] does).
pub fn json<T: serde::Serialize + ?Sized>(value: &T) {
    match serde_json::to_string(value) {
        Ok(text) => line(format_args!("{text}")),
        Err(e) => {
            let _ = writeln!(io::stderr(), "error: cannot write the output as JSON: {e}");
            std::process::exit(1);
        }
    }
}

pub use crate::views::rfc3339;

/// Invalid input (an unknown job, execution, trigger or task): `error: …` on
/// stderr, exit 2, as for bad arguments.
pub fn invalid_input(message: impl fmt::Display) -> ExitCode {
    let _ = writeln!(io::stderr(), "error: {message}");
    ExitCode::from(2)
}
