//! Triggers and the scheduler: cron (with seconds and time zones), fixed-rate and
//! fixed-delay intervals, one-off instants and events fire jobs; every fire is
//! claimed once cluster-wide before its task is enqueued.

#![forbid(unsafe_code)]

pub mod claim;
pub mod scheduler;
pub mod trigger;
pub mod watch;

pub use claim::{ClaimError, ClaimStore, LastFire, RedisClaims, SqlClaims};
pub use scheduler::{Fired, LaunchError, Launcher, Scheduler, TriggerDef, misfires};
pub use trigger::{EveryMode, Misfire, Overlap, TriggerError, TriggerField, TriggerSpec};
pub use watch::{FileLauncher, FileTrigger, Watchers};
