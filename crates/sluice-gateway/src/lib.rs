//! The sluice caching gateway.
//!
//! A [`Gateway`] maps request paths to [`RouteSpec`]s, each naming an
//! [`Upstream`]. Requests are served from a [`sluice_cache::Store`] when fresh,
//! while revalidating when stale, and from one coalesced upstream call otherwise;
//! upstream failures fall back to stale entries. Answers are accepted only when the
//! upstream's `ok_when` predicate ([`OkWhen`]) holds, because the APIs sluice fronts
//! report errors as HTTP 200.
//!
//! The request flow is laid out as phases in [`gateway`]; every error passes through
//! [`GatewayError`]'s single `IntoResponse`; every cache outcome is a
//! [`CacheOutcome`].

#![forbid(unsafe_code)]

pub mod body;
pub mod error;
pub mod gateway;
pub mod jq;
pub mod key;
pub mod metrics;
pub mod ok_when;
pub mod outcome;
pub mod route;
pub mod upstream;
mod xml;

pub use body::{BodyError, MAX_DEPTH, parse_json_or_xml};
pub use error::{ErrorKind, GatewayError, Side};
pub use gateway::{Gateway, GatewayBuilder, Purged};
pub use jq::Jq;
pub use ok_when::{OkWhen, Rejection};
pub use outcome::{CacheOutcome, CacheStatus, NoCacheReason, StaleReason};
pub use route::{RouteSpec, Ttl};
pub use sluice_core::{REDACTED, Scrubber, Secret};
pub use upstream::{RetryPolicy, Upstream, UpstreamResponse, UpstreamSpec};
pub use xml::xml_to_json;
