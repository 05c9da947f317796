//! Built-in processors, one folder per kind: [`JqProcessor`] (a jq expression over
//! each item). [`RawProcessor`] is the registry of kinds: a new kind is a folder
//! here with its config, plus its variant (one line in its
//! `registry!`); the kind's `config.rs` implements [`Kind`](crate::config::Kind).

mod jq;

use serde::Deserialize;

pub use jq::{JqProcessor, RawJqProcessor};

use crate::api::Processor;

registry! {
dyn Processor =>
/// `processor = { kind = "jq", expr = "…" }`: what happens to each item.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RawProcessor {
    /// `kind = "jq"`: a jq program; each output is an item, none filters it out.
    Jq(RawJqProcessor),
}
}
