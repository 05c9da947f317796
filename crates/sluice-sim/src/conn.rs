//! A TCP listener whose accepted connections can all be cut at once.
//!
//! Why: stopping axum's accept loop does not close connections that are already open, so a
//! client with a pooled keep-alive connection would go on reaching a "stopped" simulator,
//! and a [`Fault::Hang`](crate::Fault::Hang) request would keep its socket forever. Tests
//! of "the upstream went away" need the upstream to really go away. Each accepted socket
//! is therefore duplicated (a safe `try_clone`) into a registry, and [`Conns::close_all`]
//! shuts every one down, which the peer sees at once as a closed connection.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The registry of open connections, shared by the listener and the handle.
#[derive(Default)]
pub(crate) struct Conns {
    next_id: AtomicU64,
    closed: AtomicBool,
    open: Mutex<HashMap<u64, std::net::TcpStream>>,
}

impl Conns {
    /// Shuts down every open connection, and any accepted from now on.
    pub(crate) fn close_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for (_, s) in self.open.lock().unwrap().drain() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn track(self: &Arc<Self>, stream: TcpStream) -> io::Result<Tracked> {
        let std = stream.into_std()?;
        let clone = std.try_clone()?;
        let inner = TcpStream::from_std(std)?;
        let _ = inner.set_nodelay(true);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open.lock().unwrap().insert(id, clone);
        if self.closed.load(Ordering::SeqCst) {
            self.close_all();
        }
        Ok(Tracked {
            inner,
            id,
            conns: Arc::clone(self),
        })
    }
}

/// The listener handed to `axum::serve`.
pub(crate) struct TrackedListener {
    pub(crate) listener: TcpListener,
    pub(crate) conns: Arc<Conns>,
}

impl axum::serve::Listener for TrackedListener {
    type Io = Tracked;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Tracked, SocketAddr) {
        loop {
            let (stream, addr) = crate::server::accept(&self.listener, "sim").await;
            match self.conns.track(stream) {
                Ok(io) => return (io, addr),
                Err(e) => tracing::debug!("sim: dropping connection from {addr}: {e}"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted connection; leaves the registry when dropped.
pub(crate) struct Tracked {
    inner: TcpStream,
    id: u64,
    conns: Arc<Conns>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.conns.open.lock().unwrap().remove(&self.id);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
