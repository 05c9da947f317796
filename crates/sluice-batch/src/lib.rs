//! Batch jobs: load and maintain data in bulk, in the background, restartable.
//!
//! Modelled on what Spring Batch users rely on, in idiomatic Rust:
//!
//! - a [`Job`] is an ordered list of steps; a chunk step reads items
//!   ([`Reader`]), optionally transforms them ([`Processor`]: jq or a closure) and
//!   writes them in chunks ([`Writer`]); a tasklet step does one thing (SQL, shell,
//!   HTTP);
//! - every run is recorded in a [`Repository`](repository::Repository) (SQLite or
//!   PostgreSQL): instances, executions, step counts, checkpoints and skips;
//! - a failed or killed execution restarts from its last committed chunk; a process
//!   that died is recognised by its expired lease, with no manual clean-up.

#![forbid(unsafe_code)]

/// Builder methods that each set one field: `name(field: Type);` makes
/// `pub fn name(mut self, field: Type) -> Self` setting `self.field`, or
/// `self.config.field` after a leading `config =>`. Attributes (docs,
/// `#[must_use]`) are kept.
macro_rules! setters {
    (config => $($(#[$attr:meta])* $name:ident($field:ident: $ty:ty);)*) => {
        $(
            $(#[$attr])*
            pub fn $name(mut self, $field: $ty) -> Self {
                self.config.$field = $field;
                self
            }
        )*
    };
    ($($(#[$attr:meta])* $name:ident($field:ident: $ty:ty);)*) => {
        $(
            $(#[$attr])*
            pub fn $name(mut self, $field: $ty) -> Self {
                self.$field = $field;
                self
            }
        )*
    };
}

/// A family's registry: the enum of its kinds (as the config file names them,
/// `kind = "…"`) and its [`config::Kind`] impl, which asks the kind it holds.
/// Adding a kind is its folder (whose `config.rs` implements `Kind`) and one
/// line here.
macro_rules! registry {
    ($t:ty => $(#[$attr:meta])* pub enum $name:ident {
        $($(#[$vattr:meta])* $v:ident($c:ty),)*
    }) => {
        $(#[$attr])*
        pub enum $name {
            $($(#[$vattr])* $v($c),)*
        }

        impl $crate::config::Kind<$t> for $name {
            fn build(
                self,
                ctx: &dyn $crate::config::BuildContext,
            ) -> Result<Box<$t>, $crate::config::ConfigError> {
                match self {
                    $(Self::$v(c) => $crate::config::Kind::<$t>::build(c, ctx),)*
                }
            }
        }
    };
}

/// A kind's [`config::Kind`] impl in one line: `kind!(RawCsvReader => dyn Reader,
/// |c, ctx| c.build(ctx.share())?);` (the body makes the component, `?` allowed).
macro_rules! kind {
    ($raw:ty => $t:ty, |$c:ident, $ctx:ident| $body:expr) => {
        impl $crate::config::Kind<$t> for $raw {
            fn build(
                self,
                $ctx: &dyn $crate::config::BuildContext,
            ) -> Result<Box<$t>, $crate::config::ConfigError> {
                let $c = self;
                Ok(Box::new($body))
            }
        }
    };
}

pub mod api;
pub mod config;
pub mod job;
pub mod model;
pub mod partition;
pub mod processors;
pub mod readers;
pub mod repository;
pub mod step;
pub mod tasklets;
pub mod writers;

pub use api::{
    CheckpointKey, CheckpointStore, Chunk, ChunkForm, Committed, Extent, ExtentUnit, ProcessError,
    Processor, ReadError, ReadItem, Reader, Rows, SqlStatement, TargetCheckpoint, WriteError,
    Writer,
};
pub use job::{Job, JobRunner, RunOptions, RunReport, Step, Tasklet, TaskletError};
pub use model::{
    BatchStatus, Item, JobExecution, JobInstance, NonIdentifying, Params, SkipRecord, StepCounts,
    StepExecution,
};
pub use processors::JqProcessor;
pub use step::{ChunkStep, NoProgress, Progress, Retry};
