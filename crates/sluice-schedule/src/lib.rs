//! Triggers and the scheduler: cron (with seconds and time zones), fixed-rate and
//! fixed-delay intervals, one-off instants and events (files arriving, rows of a
//! PostgreSQL table changing, a polled query's result changing) fire jobs; every
//! fire is claimed once cluster-wide before its task is enqueued.
//!
//! Trigger kinds live in [`triggers`], one file each with its config type beside it.

#![forbid(unsafe_code)]

pub mod claim;
pub mod fire;
pub mod scheduler;
pub mod triggers;

pub use claim::{ClaimError, ClaimStore, LastFire, RedisClaims, SqlClaims};
pub use fire::{FIRE_DATE, FIRE_TIME, fire_params};
pub use scheduler::{
    Fired, LaunchError, Launcher, MISFIRE_COUNT_LIMIT, MissedFires, Scheduler, TriggerDef,
    misfires, missed_fires,
};
pub use triggers::{
    ChangeFire, ChangeLauncher, ChangeTrigger, ChangeWatchers, EveryMode, FileLauncher,
    FileTrigger, Misfire, Overlap, RawTrigger, RawTriggerKind, RawTriggerShared, SqlChangeTrigger,
    SqlChangeWatch, TriggerError, TriggerField, TriggerPlan, TriggerSpec, Watchers, watch,
};
