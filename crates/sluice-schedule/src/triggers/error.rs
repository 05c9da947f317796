//! The error every trigger check returns: which field is wrong (so a config
//! loader can point at its key) and a message naming the value.

/// A parse/validation error: which field of a trigger is wrong, and a message
/// naming the field and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TriggerError {
    /// The field at fault.
    pub field: TriggerField,
    /// What is wrong, naming the value.
    pub message: String,
}

/// The field of a trigger an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TriggerField {
    /// The cron pattern.
    Cron,
    /// The IANA time zone.
    Timezone,
    /// The `every` period.
    Every,
    /// The `at` instant.
    At,
    /// The misfire policy (or its `catch_up_max`).
    Misfire,
    /// The overlap policy.
    Overlap,
    /// The `kind` of the trigger (missing or unknown).
    Kind,
    /// The name of the trigger.
    Name,
    /// The directory of a `watch` trigger.
    Watch,
    /// The settle time of a `watch` trigger.
    Settle,
    /// The parameter a `watch` or change trigger sets.
    Param,
    /// The table of a `pg_change` trigger.
    Table,
    /// The key column(s) of a `pg_change` trigger.
    Key,
    /// The changes (`ops`) a `pg_change` trigger fires on.
    Ops,
    /// The debounce time of a `pg_change` trigger.
    Debounce,
    /// The poll period of a `pg_change` trigger.
    Poll,
    /// The `max_keys` / `max_rows` bound of a change trigger.
    MaxKeys,
    /// The key format of a `pg_change` trigger.
    Format,
    /// The query of a `sql_change` trigger.
    Query,
    /// The database of a change trigger.
    Database,
}

impl TriggerField {
    /// The config key of the field (`cron`, `misfire`, …), for locating an error.
    pub fn key(&self) -> &'static str {
        match self {
            TriggerField::Cron => "cron",
            TriggerField::Timezone => "timezone",
            TriggerField::Every => "every",
            TriggerField::At => "at",
            TriggerField::Misfire => "misfire",
            TriggerField::Overlap => "overlap",
            TriggerField::Kind => "kind",
            TriggerField::Name => "name",
            TriggerField::Watch => "watch",
            TriggerField::Settle => "settle",
            TriggerField::Param => "param",
            TriggerField::Table => "table",
            TriggerField::Key => "key",
            TriggerField::Ops => "ops",
            TriggerField::Debounce => "debounce",
            TriggerField::Poll => "poll",
            TriggerField::MaxKeys => "max_keys",
            TriggerField::Format => "format",
            TriggerField::Query => "query",
            TriggerField::Database => "database",
        }
    }
}

impl TriggerError {
    pub(crate) fn new(field: TriggerField, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}
