//! Built-in processors, one file per kind: [`JqProcessor`] (a jq expression over
//! each item).

mod jq;

pub use jq::JqProcessor;
