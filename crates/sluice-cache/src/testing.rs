//! Entries for tests: in this crate's unit tests, and with the `testing`
//! feature in its integration tests (and any other crate's tests that want it).

use std::time::Duration;

use bytes::Bytes;
use sluice_core::UnixMillis;

use crate::entry::Entry;

/// A `200` JSON entry (`content-type: application/json`) whose body is `body`
/// bytes of `x`, stored at `now`, fresh for `ttl`, then stale while revalidating
/// for `swr` and usable if the upstream fails for `sie`.
pub fn json_entry(
    now: UnixMillis,
    body: usize,
    ttl: Duration,
    swr: Duration,
    sie: Duration,
) -> Entry {
    Entry::new(
        200,
        vec![(
            "content-type".into(),
            Bytes::from_static(b"application/json"),
        )],
        Bytes::from(vec![b'x'; body]),
        now,
        ttl,
        swr,
        sie,
    )
}
