//! Calling a configured upstream API, as the gateway and batch jobs both do.
//!
//! An [`Upstream`] is built from an [`UpstreamSpec`] (base URL, injected secrets,
//! timeout, [`RetryPolicy`], concurrency, a [`sluice_core::Quota`], an [`OkWhen`]
//! predicate) and answers [`Upstream::fetch`] with an [`UpstreamResponse`] or an
//! [`UpstreamError`]. Around it sit what reading an upstream's answer needs: the
//! bounded JSON / XML parser ([`parse_json_or_xml`], XML → JSON in [`xml_to_json`]),
//! compiled [`Jq`] filters, and the one query encoding ([`encode_component`]).
//!
//! This is its own crate so that the batch engine uses the same client (the same
//! budget, retries and `ok_when`) without depending on the gateway.

#![forbid(unsafe_code)]

pub mod body;
mod client;
pub mod encode;
pub mod error;
pub mod jq;
pub mod metrics;
pub mod ok_when;
pub mod preset;
pub mod stats;
mod xml;

pub use body::{BodyError, MAX_DEPTH, parse_json_or_xml};
pub use client::{RetryPolicy, Upstream, UpstreamResponse, UpstreamSpec, init_tls};
pub use encode::encode_component;
pub use error::{UpstreamError, UpstreamErrorKind};
pub use jq::{Jq, JqError, JqErrorKind};
pub use ok_when::{OkWhen, Rejection};
pub use preset::{CodeAction, CodeRule, Preset};
pub use stats::{Caller, RecentStats, UpstreamStats};
pub use xml::xml_to_json;
