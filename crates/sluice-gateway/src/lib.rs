//! The sluice caching gateway.
//!
//! A [`Gateway`] maps request paths to [`RouteSpec`]s, each naming a
//! `sluice_upstream::Upstream` (the client, its retries and `ok_when` are that
//! crate's, shared with batch jobs). Requests are served from a [`sluice_cache::Store`] when fresh,
//! while revalidating when stale, and from one coalesced upstream call otherwise;
//! upstream failures fall back to stale entries. Answers are accepted only when the
//! upstream's `ok_when` predicate holds, because the APIs sluice fronts
//! report errors as HTTP 200.
//!
//! The request flow is laid out as phases in [`gateway`]; every error passes through
//! [`GatewayError`]'s single `IntoResponse` (upstream failures arrive as
//! `sluice_upstream::UpstreamError` and convert into it); every cache outcome is a
//! [`CacheOutcome`].

#![forbid(unsafe_code)]

pub mod access;
pub mod error;
pub mod gateway;
pub mod key;
pub mod metrics;
pub mod outcome;
pub mod route;

pub use access::{AccessLog, AccessLogFormat, AccessLogSpec, AccessLogTarget};
pub use error::{ErrorKind, GatewayError, Side};
pub use gateway::{BuildError, Gateway, GatewayBuilder, Purged};
pub use metrics::{RouteStats, TopKey};
pub use outcome::{CacheOutcome, CacheStatus, NoCacheReason, StaleReason};
pub use route::{RouteSpec, Ttl};
