//! The scheduler: one timer for every trigger, claims, misfires, overlap, pauses.
//!
//! All triggers of a node sit in one binary heap ordered by their next fire
//! instant; one task sleeps until the earliest and fires everything due. Many
//! triggers cost one timer and one heap entry each, not a task each.
//!
//! A fire goes: paused? → overlap check → **claim** (once cluster-wide, see
//! [`claim`](crate::claim)) → enqueue the job's `job.run` task → record the last
//! fire. Fires are handled concurrently, so a slow broker call for one trigger does
//! not make the others late.
//!
//! **Misfires.** On start, each trigger's missed instants (after its last claimed
//! instant, up to now) are handled by its [`Misfire`] policy: one run for all
//! (`fire_once`, the default), none (`skip`), or each of the last `max`
//! (`catch_up`). A trigger never claimed before starts from now: no misfires.
//! Each missed instant is counted in `sluice_schedule_misfires_total{trigger,action}`:
//! `fired` once this node's make-up fire of it was enqueued, `skipped` when the
//! policy drops it (at most [`MISFIRE_COUNT_LIMIT`] per trigger and start).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use sluice_core::{Clock, UnixMillis};
use tokio::sync::{Notify, watch};

use crate::claim::{ClaimStore, LastFire};
use crate::triggers::{Misfire, Overlap, TriggerSpec};

/// The scheduler's metric names (declared in the workspace catalogue,
/// `sluice_core::metrics`): claim lateness, fires by trigger and outcome, and
/// missed instants by trigger and action.
pub use sluice_core::metrics::names::{FIRES, LATENESS, MISFIRES};

/// Most missed instants of one trigger counted as `skipped` at one start: a long
/// downtime of a frequent trigger costs this many instants of search, not one per
/// missed fire.
pub const MISFIRE_COUNT_LIMIT: usize = 10_000;

/// A configured trigger of a job.
#[derive(Debug, Clone)]
pub struct TriggerDef {
    /// Unique id: `JOB#N` or `JOB/NAME`.
    pub id: String,
    /// The job it fires.
    pub job: String,
    /// When.
    pub spec: TriggerSpec,
    /// What to do about missed fires.
    pub misfire: Misfire,
    /// What to do while the previous run goes on.
    pub overlap: Overlap,
}

/// Why a fire (or an arrived file) could not start its job's run. The fire is
/// recorded as an error with this message.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LaunchError {
    /// The queue refused the run or did not answer.
    #[error("{0}")]
    Enqueue(String),
    /// What the fire asks for cannot be done (an unknown trigger or job, bad
    /// parameters).
    #[error("{0}")]
    Invalid(String),
}

/// What a fire asks of the outside world: enqueue a job run, and say whether an
/// earlier one is still going.
#[async_trait]
pub trait Launcher: Send + Sync + 'static {
    /// Enqueues a run of `job` for the fire at `at` of trigger `trigger`; returns
    /// the task id.
    ///
    /// # Errors
    ///
    /// A [`LaunchError`] saying why it could not (the fire is recorded as an
    /// error).
    async fn launch(&self, trigger: &TriggerDef, at: DateTime<Utc>) -> Result<String, LaunchError>;

    /// Whether the task `task` (an earlier fire's) is still queued or running.
    async fn running(&self, task: &str) -> bool;
}

/// The outcome of one fire, for tests and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired {
    /// Claimed and enqueued as this task.
    Fired(String),
    /// Another node claimed it first.
    Lost,
    /// The previous run still goes on (`overlap = "skip"`).
    SkippedOverlap(String),
    /// Held until the previous run ends (`overlap = "queue"`).
    Queued,
    /// The trigger is paused.
    Paused,
    /// The store or the broker failed.
    Error(String),
}

/// The missed instants of `spec` after `last` up to `now`, as `misfire` selects
/// them (oldest first). A pure function, tested with fixed instants.
pub fn misfires(
    spec: &TriggerSpec,
    misfire: Misfire,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    if misfire == Misfire::Skip {
        return Vec::new();
    }
    // Only the newest instants matter (one for fire_once, `max` for catch_up):
    // a long downtime costs the policy's lookback, not one search per missed fire.
    let missed = spec.latest_between(last, now, misfire.lookback());
    misfire.select(&missed)
}

/// What a misfire policy makes of the instants a trigger missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissedFires {
    /// The instants to fire now, oldest first (as [`misfires`] gives them).
    pub fire: Vec<DateTime<Utc>>,
    /// How many missed instants the policy drops, counting at most
    /// [`MISFIRE_COUNT_LIMIT`] missed instants in all.
    pub skipped: usize,
}

/// [`misfires`] with the number of missed instants the policy drops. A pure
/// function, tested with fixed instants.
pub fn missed_fires(
    spec: &TriggerSpec,
    misfire: Misfire,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
) -> MissedFires {
    let limit = misfire.lookback().max(MISFIRE_COUNT_LIMIT);
    let mut missed = spec.latest_between(last, now, limit);
    missed.sort_unstable();
    missed.dedup();
    let fire = misfire.select(&missed);
    MissedFires {
        skipped: missed.len() - fire.len(),
        fire,
    }
}

struct State {
    triggers: Vec<TriggerDef>,
    paused: Mutex<HashSet<String>>,
    /// Per trigger: the last task it enqueued (for overlap).
    last_task: Mutex<HashMap<String, String>>,
    /// Per trigger: a fire held back by `overlap = "queue"`.
    held: Mutex<HashMap<String, DateTime<Utc>>>,
    store: Arc<dyn ClaimStore>,
    launcher: Arc<dyn Launcher>,
    clock: Arc<dyn Clock>,
    wake: Notify,
}

/// A running scheduler.
pub struct Scheduler {
    state: Arc<State>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("triggers", &self.state.triggers.len())
            .finish()
    }
}

fn ms_to_dt(ms: UnixMillis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl Scheduler {
    /// Starts scheduling `triggers` on the current runtime.
    pub async fn start(
        triggers: Vec<TriggerDef>,
        store: Arc<dyn ClaimStore>,
        launcher: Arc<dyn Launcher>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let state = Arc::new(State {
            triggers,
            paused: Mutex::new(HashSet::new()),
            last_task: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            store,
            launcher,
            clock,
            wake: Notify::new(),
        });
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(run(state.clone(), rx));
        Self { state, stop, task }
    }

    /// Stops firing (fires under way finish).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.state.wake.notify_one();
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = task.await;
    }
}

impl Drop for Scheduler {
    /// Dropping a scheduler stops its timer at once, like a killed process.
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn refresh_paused(state: &State) {
    match state.store.paused().await {
        Ok(p) => *state.paused.lock().unwrap_or_else(|e| e.into_inner()) = p,
        Err(e) => tracing::warn!(error = %e, "could not read paused triggers"),
    }
}

async fn run(state: Arc<State>, mut stop: watch::Receiver<bool>) {
    refresh_paused(&state).await;
    if let Ok(last) = state.store.last_fires().await {
        let mut lt = state.last_task.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in last {
            if let Some(t) = v.task {
                lt.insert(k, t);
            }
        }
    }
    let now = ms_to_dt(state.clock.now_millis());
    // Misfires after downtime.
    match state.store.marks().await {
        Ok(marks) => {
            for (i, t) in state.triggers.iter().enumerate() {
                if let Some(&last) = marks.get(&t.id) {
                    let missed = missed_fires(&t.spec, t.misfire, ms_to_dt(last), now);
                    if missed.skipped > 0 {
                        metrics::counter!(MISFIRES, "trigger" => t.id.clone(), "action" => "skipped")
                            .increment(missed.skipped as u64);
                        tracing::info!(trigger = %t.id, skipped = missed.skipped, policy = %t.misfire,
                            "dropping missed fires as the misfire policy says");
                    }
                    if missed.fire.is_empty() {
                        continue;
                    }
                    tracing::info!(trigger = %t.id, fires = missed.fire.len(), policy = ?t.misfire, "making up missed fires");
                    let st = state.clone();
                    // In order: a claim only succeeds after the last claimed instant.
                    tokio::spawn(async move {
                        let fired = metrics::counter!(MISFIRES, "trigger" => st.triggers[i].id.clone(), "action" => "fired");
                        for at in missed.fire {
                            if let Fired::Fired(_) = fire(&st, i, at).await {
                                fired.increment(1);
                            }
                        }
                    });
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the last claims; missed fires are not made up")
        }
    }
    // Exact instants in the heap: the next fire is computed from the exact
    // instant, never from a truncated one (which could give the same one back).
    let mut heap: BinaryHeap<Reverse<(DateTime<Utc>, usize)>> = BinaryHeap::new();
    for (i, t) in state.triggers.iter().enumerate() {
        if let Some(next) = t.spec.next_after(now) {
            heap.push(Reverse((next, i)));
        }
    }
    let mut last_refresh = state.clock.now_millis();
    loop {
        if *stop.borrow() {
            return;
        }
        let now_ms = state.clock.now_millis();
        if now_ms - last_refresh >= 1000 {
            last_refresh = now_ms;
            let st = state.clone();
            tokio::spawn(async move {
                refresh_paused(&st).await;
                release_held(&st).await;
            });
        }
        // Fire everything due.
        while let Some(Reverse((at, i))) = heap.peek().copied() {
            if at.timestamp_millis() > now_ms {
                break;
            }
            heap.pop();
            let t = &state.triggers[i];
            let st = state.clone();
            tokio::spawn(async move { fire(&st, i, at).await });
            if let Some(next) = t.spec.next_after(at) {
                heap.push(Reverse((next, i)));
            }
        }
        let wait = heap.peek().map_or(1000, |Reverse((due, _))| {
            (due.timestamp_millis() - now_ms).clamp(0, 1000)
        });
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
            () = state.wake.notified() => {}
            r = stop.changed() => {
                if r.is_err() {
                    return; // the Scheduler was dropped
                }
            }
        }
    }
}

/// Fires held back by `overlap = "queue"` go once their previous run ended.
async fn release_held(state: &Arc<State>) {
    let held: Vec<(String, DateTime<Utc>)> = state
        .held
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for (id, at) in held {
        let prev = state
            .last_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned();
        let still = match &prev {
            Some(t) => state.launcher.running(t).await,
            None => false,
        };
        if !still {
            state
                .held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            if let Some(i) = state.triggers.iter().position(|t| t.id == id) {
                launch(state, i, at).await;
            }
        }
    }
}

async fn fire(state: &Arc<State>, i: usize, at: DateTime<Utc>) -> Fired {
    let t = &state.triggers[i];
    let outcome = fire_inner(state, i, at).await;
    let label = match &outcome {
        Fired::Fired(_) => "fired",
        Fired::Lost => "lost",
        Fired::SkippedOverlap(_) => "skipped_overlap",
        Fired::Queued => "queued",
        Fired::Paused => "paused",
        Fired::Error(_) => "error",
    };
    metrics::counter!(FIRES, "trigger" => t.id.clone(), "outcome" => label).increment(1);
    outcome
}

async fn fire_inner(state: &Arc<State>, i: usize, at: DateTime<Utc>) -> Fired {
    let t = &state.triggers[i];
    if state
        .paused
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&t.id)
    {
        return Fired::Paused;
    }
    match state.store.claim(&t.id, at.timestamp_millis()).await {
        Ok(true) => {}
        Ok(false) => return Fired::Lost,
        Err(e) => {
            tracing::warn!(trigger = %t.id, at = %at, error = %e, "could not claim a fire; it is not made");
            return Fired::Error(e.to_string());
        }
    }
    let late = state.clock.now_millis() - at.timestamp_millis();
    metrics::histogram!(LATENESS).record(late.max(0) as f64 / 1000.0);
    if t.overlap != Overlap::Allow {
        let prev = state
            .last_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&t.id)
            .cloned();
        if let Some(prev) = prev
            && state.launcher.running(&prev).await
        {
            if t.overlap == Overlap::Queue {
                state
                    .held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(t.id.clone(), at);
                return Fired::Queued;
            }
            let reason = format!("skipped: the previous run (task {prev}) is still going");
            tracing::info!(trigger = %t.id, at = %at, "{reason}");
            record(state, t, at, reason.clone(), Some(prev)).await;
            return Fired::SkippedOverlap(reason);
        }
    }
    launch(state, i, at).await
}

/// Records the outcome of `t`'s fire at `at` (best effort: a store that does not
/// answer only loses the record).
async fn record(
    state: &State,
    t: &TriggerDef,
    at: DateTime<Utc>,
    outcome: String,
    task: Option<String>,
) {
    let fire = LastFire {
        at: at.timestamp_millis(),
        outcome,
        task,
    };
    let _ = state.store.record(&t.id, &fire).await;
}

async fn launch(state: &Arc<State>, i: usize, at: DateTime<Utc>) -> Fired {
    let t = &state.triggers[i];
    match state.launcher.launch(t, at).await {
        Ok(task) => {
            state
                .last_task
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(t.id.clone(), task.clone());
            record(
                state,
                t,
                at,
                format!("fired task {task}"),
                Some(task.clone()),
            )
            .await;
            tracing::info!(trigger = %t.id, job = %t.job, at = %at, task = %task, "fired");
            Fired::Fired(task)
        }
        Err(e) => {
            tracing::warn!(trigger = %t.id, at = %at, error = %e, "claimed a fire but could not enqueue its run");
            record(state, t, at, format!("error: {e}"), None).await;
            Fired::Error(e.to_string())
        }
    }
}
