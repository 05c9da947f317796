//! Test kit for sluice, a dev-dependency only: real server processes (redis-server,
//! memcached, clusters) on free ports, the hostile upstream, and the simulated portal
//! re-exported from `sluice-sim` so that tests find everything in one place.

/// Scratch PostgreSQL and MariaDB/MySQL databases, one per test.
pub mod db;
pub mod hostile;
pub mod s3;
/// Real `redis-server` and `memcached` processes for integration tests.
pub mod servers;
pub mod smtp;
pub mod webhook;

pub use hostile::{HostileRequest, HostileUpstream};
pub use s3::S3Server;
pub use sluice_sim::{
    AIR_OPERATION, Fault, ItemsShape, RecordedRequest, SimConfig, SimUpstream, result_message,
};
pub use smtp::{SmtpMessage, SmtpSink};
pub use webhook::{WebhookReceiver, WebhookRequest};

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close).
///
/// Another process may take it before the caller binds it; good enough for tests.
///
/// # Panics
///
/// If no loopback port can be bound at all.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_ports_are_real_ports() {
        assert_ne!(super::free_port(), 0);
    }
}
