//! `sluice job run`'s progress bar: one per step, drawn on stderr when it is a
//! terminal (indicatif hides it otherwise).
//!
//! What the bar measures is what the step's reader knows
//! ([`Reader::extent`](sluice_batch::Reader::extent)): bytes of a CSV, JSONL
//! or JSON file (of its share), items of an `http_pages` source with a `total`,
//! or, for readers that know neither, a spinner with the items read. The item
//! rate counts this run's items only (a resumed step does not start at a
//! million items a second), in `k`/`M` units. Log lines go through
//! [`suspended`], so they print above the bar instead of tearing it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use sluice_batch::model::{StepCounts, StepExecution};
use sluice_batch::step::Progress;
use sluice_batch::{Extent, ExtentUnit};

/// The bar being drawn, if any: log lines suspend it while they print.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Runs `f` (which writes to stderr) with the active progress bar, if any,
/// cleared for the while, and drawn again after it.
pub fn suspended<R>(f: impl FnOnce() -> R) -> R {
    let bar = ACTIVE.lock().ok().and_then(|b| b.clone());
    match bar {
        Some(bar) => bar.suspend(f),
        None => f(),
    }
}

/// A rate as people read it: `950/s`, `12.3k/s`, `4.56M/s`.
pub fn human_rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec < 0.0 {
        return "-".into();
    }
    if per_sec < 10.0 {
        format!("{per_sec:.1}/s")
    } else if per_sec < 1_000.0 {
        format!("{per_sec:.0}/s")
    } else if per_sec < 1_000_000.0 {
        format!("{:.1}k/s", per_sec / 1e3)
    } else {
        format!("{:.2}M/s", per_sec / 1e6)
    }
}

/// The current step's bar and what its rate counts from.
struct Current {
    bar: ProgressBar,
    /// What the bar measures now.
    unit: Option<ExtentUnit>,
    /// Items read in this step (resumed ones included), for the message.
    items: Arc<AtomicU64>,
}

/// The progress bars of one `job run`, one per step.
#[derive(Default)]
pub struct Bars {
    current: Mutex<Option<Current>>,
}

impl Bars {
    /// Clears the bar of the step running, if any.
    pub fn finish(&self) {
        if let Ok(mut c) = self.current.lock()
            && let Some(c) = c.take()
        {
            c.bar.finish_and_clear();
        }
        if let Ok(mut a) = ACTIVE.lock() {
            *a = None;
        }
    }
}

/// The style of a bar measuring `unit` (`None`: a spinner with the item
/// count); `items` and `since` give the item rate of this run.
fn style(unit: Option<ExtentUnit>, items: &Arc<AtomicU64>, since: (u64, Instant)) -> ProgressStyle {
    let template = match unit {
        Some(ExtentUnit::Bytes) => {
            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}), {items} items ({rate}), ETA {eta}"
        }
        Some(ExtentUnit::Items) => {
            "{msg} [{bar:30}] {human_pos}/{human_len} items ({rate}), ETA {eta}"
        }
        None => "{spinner} {msg} {items} items ({rate})",
    };
    let counted = items.clone();
    let rated = items.clone();
    let (start_items, start) = since;
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "items",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", counted.load(Ordering::Relaxed));
            },
        )
        .with_key(
            "rate",
            move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
                let done = rated.load(Ordering::Relaxed).saturating_sub(start_items);
                let secs = start.elapsed().as_secs_f64();
                let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
                let _ = write!(w, "{}", human_rate(rate));
            },
        )
        .progress_chars("=> ")
}

impl Progress for Bars {
    fn step_started(&self, step: &str, total: Option<u64>, resumed: &StepCounts) {
        let items = Arc::new(AtomicU64::new(resumed.read));
        let since = (resumed.read, Instant::now());
        let (bar, unit) = match total {
            Some(t) => (ProgressBar::new(t), Some(ExtentUnit::Items)),
            None => (ProgressBar::new_spinner(), None),
        };
        bar.set_style(style(unit, &items, since));
        bar.set_message(step.to_owned());
        if unit.is_some() {
            bar.set_position(resumed.read);
        }
        bar.reset_eta();
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut c) = self.current.lock() {
            if let Some(old) = c.take() {
                old.bar.finish_and_clear();
            }
            *c = Some(Current {
                bar: bar.clone(),
                unit,
                items,
            });
        }
        if let Ok(mut a) = ACTIVE.lock() {
            *a = Some(bar);
        }
    }

    fn extent(&self, _step: &str, extent: Extent) {
        let Ok(mut c) = self.current.lock() else {
            return;
        };
        let Some(c) = c.as_mut() else {
            return;
        };
        if c.unit != Some(extent.unit) {
            // The first extent (or a new measure): from here the bar measures
            // it, its rate counted from now.
            let since = (c.items.load(Ordering::Relaxed), Instant::now());
            c.unit = Some(extent.unit);
            c.bar.set_style(style(c.unit, &c.items, since));
            c.bar.set_length(extent.total);
            c.bar.set_position(extent.done);
            c.bar.reset_eta();
            return;
        }
        c.bar.set_length(extent.total);
        c.bar.set_position(extent.done);
    }

    fn chunk_committed(&self, _step: &str, counts: &StepCounts) {
        if let Ok(c) = self.current.lock()
            && let Some(c) = c.as_ref()
        {
            c.items.store(counts.read, Ordering::Relaxed);
            if c.unit == Some(ExtentUnit::Items) && c.bar.length().is_some() {
                // An items bar without extents (a SQL reader's count) moves with
                // the counts; one with extents moves with them.
                if c.bar.position() < counts.read {
                    c.bar.set_position(counts.read);
                }
            }
            c.bar.tick();
        }
    }

    fn step_finished(&self, _step: &StepExecution) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::human_rate;

    #[test]
    fn rates_read_like_rates() {
        for (r, s) in [
            (0.0, "0.0/s"),
            (2.54, "2.5/s"),
            (950.4, "950/s"),
            (12_345.0, "12.3k/s"),
            (4_560_000.0, "4.56M/s"),
            (f64::NAN, "-"),
            (-1.0, "-"),
        ] {
            assert_eq!(human_rate(r), s, "{r}");
        }
    }
}
