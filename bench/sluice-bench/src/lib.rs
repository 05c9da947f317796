//! What the bench processes share: reading `--flag value` command lines, and one
//! `main` (logs on stderr, a multi-threaded runtime, an error printed with the
//! program's name and exit status 1).
//!
//! The processes live in this crate rather than in `sluice-queue` and
//! `sluice-schedule` so that those library crates carry no log subscriber or
//! metrics exporter for them.

#![forbid(unsafe_code)]

use std::future::Future;

/// The value of one `--flag`.
#[derive(Debug)]
pub struct Value<'a> {
    flag: &'a str,
    text: String,
    usage: fn(&str) -> !,
}

impl Value<'_> {
    /// The value as given.
    pub fn text(self) -> String {
        self.text
    }

    /// The value as a number; anything else ends the process through `usage`.
    pub fn num(&self) -> u64 {
        self.text.parse().unwrap_or_else(|_| {
            (self.usage)(&format!(
                "{} takes a number, not '{}'",
                self.flag, self.text
            ))
        })
    }
}

/// Calls `each(flag, value)` for every option of `args`: `value` is `None` for
/// the flags in `switches` (which take none) and the next argument otherwise; a
/// flag missing its value ends the process through `usage`.
pub fn flags(
    args: impl IntoIterator<Item = String>,
    switches: &[&str],
    usage: fn(&str) -> !,
    mut each: impl FnMut(&str, Option<Value<'_>>),
) {
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        if switches.contains(&flag.as_str()) {
            each(&flag, None);
            continue;
        }
        let text = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        each(
            &flag,
            Some(Value {
                flag: &flag,
                text,
                usage,
            }),
        );
    }
}

/// Installs the log subscriber (stderr, `RUST_LOG`, else `warn`), runs `run` on
/// a multi-threaded runtime and returns its value; an error is printed as
/// `{program}: {error}` and ends the process with status 1.
pub fn run_main<T>(program: &str, run: impl Future<Output = Result<T, String>>) -> T {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{program}: {e}");
            std::process::exit(1);
        }
    }
}
