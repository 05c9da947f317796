//! Logs and metrics set-up.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Whether output to stderr may be coloured: only on a terminal, and never
/// when `NO_COLOR` is set to anything but the empty string (<https://no-color.org>).
pub fn colour(no_color: Option<&std::ffi::OsStr>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The log filter without `RUST_LOG`: `level` for everything, but the database
/// driver (sqlx) at most at `warn`, so that PostgreSQL notices such as
/// `relation "…" already exists, skipping` (sqlx logs them at info) stay below
/// the default level; `RUST_LOG=sqlx=info` shows them. A `debug` or `trace`
/// level shows everything.
pub fn default_filter(level: &str) -> String {
    use tracing_subscriber::filter::LevelFilter;
    match level.parse::<LevelFilter>() {
        Ok(l) if l <= LevelFilter::INFO => {
            format!("{l},sqlx={}", l.min(LevelFilter::WARN)).to_lowercase()
        }
        _ => level.to_owned(),
    }
}

/// Installs the tracing subscriber (stderr; `RUST_LOG` overrides
/// [`default_filter`]`(default_level)`). Colour only on a terminal without
/// `NO_COLOR` (see [`colour`]). Safe to call more than once: later calls do
/// nothing.
pub fn init_logs(format: LogFormat, default_level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter(default_level)));
    let ansi = colour(
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::stderr().is_terminal(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(|| BarAware);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Stderr for log lines: each line is written with `job run`'s progress bar
/// cleared and drawn again after it (see [`crate::cli::progress::suspended`]),
/// so lines never tear the bar. The formatter writes one event at once.
struct BarAware;

impl std::io::Write for BarAware {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        crate::cli::progress::suspended(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("duration_seconds".into()),
                &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ],
            )
            .expect("static bucket list is not empty")
            .set_buckets_for_metric(
                Matcher::Suffix("lateness_seconds".into()),
                &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0],
            )
            .expect("static bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Descriptions go to this recorder itself, before any metric is recorded,
        // so every family gets its `# HELP` line from the first scrape on.
        metrics::with_local_recorder(&recorder, sluice_core::metrics::describe);
        // Another recorder may already be installed (e.g. by an embedding
        // application); then our handle renders an empty page but nothing breaks.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Drains recorded histogram samples into their buckets every 5 s, so memory
/// stays flat between scrapes (or without any). Call once, on a tokio runtime.
pub fn spawn_upkeep() {
    let handle = prometheus().clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    });
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::{colour, default_filter};

    #[test]
    fn the_database_driver_logs_at_most_warnings_by_default() {
        assert_eq!(default_filter("info"), "info,sqlx=warn");
        assert_eq!(default_filter("error"), "error,sqlx=error");
        assert_eq!(default_filter("debug"), "debug");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(None, true));
        assert!(colour(Some(OsStr::new("")), true));
        assert!(!colour(Some(OsStr::new("1")), true));
        assert!(!colour(None, false));
        assert!(!colour(Some(OsStr::new("")), false));
    }
}
