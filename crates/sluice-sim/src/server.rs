//! Pieces that both local test servers are made of: this crate's simulator and the
//! test kit's hostile upstream.
//!
//! Why here: the two servers differ in what they answer (the portal's conventions
//! against deliberately broken HTTP) but not in how they keep their request log,
//! look up a header, take the next connection or show their handle; the test kit
//! depends on this crate, so the shared part lives here, once.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// The first value of header `name` (case-insensitive) in `headers`, as a recorded
/// request holds them (names lowercase, in received order).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A server's count of calls and its log of the latest requests (the oldest drop
/// out beyond the capacity).
#[derive(Debug)]
pub struct RequestLog<T> {
    cap: usize,
    calls: AtomicU64,
    log: Mutex<VecDeque<T>>,
}

impl<T: Clone> RequestLog<T> {
    /// An empty log keeping the last `cap` requests.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            calls: AtomicU64::new(0),
            log: Mutex::new(VecDeque::new()),
        }
    }

    /// Logs `req` and counts one call.
    pub fn record(&self, req: T) {
        let mut log = self.log.lock().unwrap();
        if log.len() == self.cap {
            log.pop_front();
        }
        log.push_back(req);
        self.calls.fetch_add(1, Ordering::SeqCst);
    }

    /// Calls counted since the start or the last [`reset`](Self::reset).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The logged requests, oldest first.
    pub fn requests(&self) -> Vec<T> {
        self.log.lock().unwrap().iter().cloned().collect()
    }

    /// The most recent request, if any.
    pub fn last(&self) -> Option<T> {
        self.log.lock().unwrap().back().cloned()
    }

    /// Zeroes the count and clears the log.
    pub fn reset(&self) {
        let mut log = self.log.lock().unwrap();
        log.clear();
        self.calls.store(0, Ordering::SeqCst);
    }
}

/// Whether an `accept` error concerns only the connection being accepted (the
/// next accept may succeed at once), as opposed to the listener or the process
/// (`EMFILE`), where a server should back off.
pub fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// The next connection of `listener`. Per-connection errors are passed over (the
/// next one is tried at once); anything else (EMFILE, …) is logged with `server`'s
/// name and backed off from briefly instead of spinning.
pub async fn accept(listener: &TcpListener, server: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(conn) => return conn,
            Err(e) if is_per_connection(&e) => {}
            Err(e) => {
                tracing::warn!("{server}: accept error: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// `Debug` of a server handle: its type `name`, address and calls so far.
pub fn fmt_handle(
    f: &mut std::fmt::Formatter<'_>,
    name: &str,
    addr: SocketAddr,
    calls: u64,
) -> std::fmt::Result {
    f.debug_struct(name)
        .field("addr", &addr)
        .field("calls", &calls)
        .finish_non_exhaustive()
}
