//! The simulated public-data portal: a local, deterministic stand-in for the slow,
//! quota-limited upstream sluice is built around (the demo, benches and tests use it).
//!
//! sluice exists because the real upstream (Korea's data.go.kr portal) is slow, limited
//! to a daily quota per key, and reports most failures as HTTP 200 with an error code in
//! the body. None of that can be exercised against the real portal from tests or CI:
//! there is no network, a quota is spent once, and failures cannot be ordered on demand.
//! [`SimUpstream`] is a local, deterministic stand-in that reproduces the portal's
//! conventions closely enough that code passing against it should pass against the real
//! thing (see `shared/public-data-portal.md`):
//!
//! - the AirKorea operation [`AIR_OPERATION`] under `/B552584/ArpltnInforInqireSvc`,
//!   XML by default and JSON on `returnType=json`, all values strings, `"-"` for a
//!   missing reading, paging with `totalCount`, a lone `item` as an object and an empty
//!   page as `items: ""`;
//! - the service key checked after exactly one percent-decoding, so both a raw `+` and a
//!   double-encoded key fail, with the XML gateway error (code 30) even for JSON;
//! - a daily quota per key resetting at KST midnight (code 22, HTTP 200);
//! - service-layer errors in the envelope (codes 10, 11, 12, or any via [`Fault`]);
//! - latency with jitter, and injected faults: HTTP statuses, hangs, garbage and
//!   truncated bodies.
//!
//! Tests drive it through the [`SimUpstream`] handle; shell scripts and benchmarks,
//! which cannot, use its control endpoints (never counted as calls):
//!
//! | request | effect |
//! |---|---|
//! | `GET /__sim/stats` | `{"calls":n,"quota_used":n}` |
//! | `POST /__sim/reset` | zero the call counter, clear the request log |
//! | `POST /__sim/fault` `{"fault":"status","status":503,"count":2}` | inject a [`Fault`]: `none`, `hang`, `garbage`, `truncated`, `status` (+`status`), `result_code` (+`code`), `gateway_error` (+`code`); `count` optional |
//! | `POST /__sim/latency` `{"ms":300}` | set the base latency (optional `jitter_ms`) |

#![forbid(unsafe_code)]

mod conn;
mod data;
pub mod server;
mod sim;

pub use data::result_message;
pub use server::is_per_connection;
pub use sim::{AIR_OPERATION, Fault, ItemsShape, RecordedRequest, SimConfig, SimUpstream};

#[cfg(test)]
mod tests;
