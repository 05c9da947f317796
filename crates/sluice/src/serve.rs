//! `sluice serve`: the HTTP server around the router of [`crate::http`] (the
//! gateway, the admin and job APIs, `/metrics`, `/healthz`, `/readyz`), with
//! bounded client connections and graceful shutdown; and the process around it,
//! which builds one [`Runtime`] for its workers, scheduler and job API.
//!
//! # Reserved paths
//!
//! The first path segments `admin`, `api`, `metrics`, `healthz`, `readyz` and `ui`
//! ([`RESERVED_PATHS`](sluice_gateway::route::RESERVED_PATHS), which `check_route` also refuses as route paths) belong to
//! sluice, never to a gateway route: even a catch-all route `/{*rest}`
//! does not see them. Where the feature behind one is absent (no admin token, no
//! job API, no dashboard) it answers the gateway's JSON 404 and nothing is proxied.
//! The gateway refuses them after canonicalising the path, the way it matches its
//! routes, so `/%61dmin/x` is reserved too.
//!
//! # Connections
//!
//! The accept loop is our own, over hyper's HTTP/1 connection, because
//! `axum::serve` has no connection cap and no timeouts. Each connection runs in one
//! task with a watchdog beside it that knows, through a counting IO wrapper and a
//! guard in each response body, whether a request is in flight and when bytes last
//! moved. It enforces two limits, in the manner of nginx's `client_header_timeout`
//! and `keepalive_timeout`:
//!
//! - `header_read_timeout`: a request head must be complete this long after the
//!   connection was accepted (first request) or after its first byte arrived (later
//!   requests); trickling bytes do not extend it. hyper's own `header_read_timeout`
//!   is not used: it is re-armed whenever a keep-alive connection goes idle, so it
//!   would also cut idle keep-alive connections after `header_read_timeout` and make
//!   `idle_timeout` meaningless.
//! - `idle_timeout`: with no request in flight and no bytes moving for this long,
//!   the connection is shut down gracefully. A slow request in flight is never cut.
//!
//! `max_connections` is a semaphore taken before `accept`: at the cap, sluice stops
//! accepting and clients wait in the kernel's backlog, as nginx does at
//! `worker_connections`. Accept errors such as `EMFILE` back off (10 ms doubling to
//! 1 s) instead of spinning.
//!
//! # Shutdown
//!
//! Once shutdown begins, `/readyz` answers 503, the listener is closed, idle
//! connections close at once, and requests in flight get `shutdown_grace` to finish
//! (their connections then close); whatever is left after that is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::{ConnectionSettings, Settings};
use crate::http::{self, JobsApi, Readiness};
use crate::runtime::{Runtime, launcher};

/// A running server.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    handle: tokio::task::JoinHandle<io::Result<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    /// Asks the server to stop and waits for in-flight requests to finish (up to
    /// the shutdown grace period).
    ///
    /// # Errors
    ///
    /// When the server task failed.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.handle.await.map_err(io::Error::other)?
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, with the connection
/// limits `limits`; then marks `readiness` as draining, stops accepting, closes
/// idle connections and lets in-flight requests finish for up to `grace`.
///
/// # Errors
///
/// None today: accept errors are logged and retried with a backoff. The
/// `io::Result` leaves room for listener errors that end serving.
pub async fn serve_until(
    listener: TcpListener,
    app: Router,
    limits: ConnectionSettings,
    grace: Duration,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        // Our watchdog enforces the header timeout; hyper's would also cut idle
        // keep-alive connections (see the module docs). With a timer set hyper
        // defaults it to 30 s, so it is turned off explicitly.
        .header_read_timeout(None)
        .keep_alive(true)
        .max_header_size(limits.max_header_bytes)
        // Bounds each connection's read buffer; hyper refuses less than 8 KiB.
        .max_buf_size(limits.max_header_bytes.max(8 << 10));
    let http = Arc::new(http);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Warn again about saturation once a tenth of the slots are free.
    let rearm = (limits.max_connections / 10).max(1);
    let mut saturated = false;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut backoff = Duration::ZERO;
    tokio::pin!(shutdown);
    'serve: loop {
        if saturated && slots.available_permits() >= rearm {
            saturated = false;
            tracing::info!(
                open = limits.max_connections - slots.available_permits(),
                "client connections below max_connections again"
            );
        }
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !saturated {
                    saturated = true;
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "max_connections reached: not accepting new connections until one closes"
                    );
                }
                loop {
                    tokio::select! {
                        p = slots.clone().acquire_owned() => break p.map_err(io::Error::other)?,
                        () = &mut shutdown => break 'serve,
                        Some(done) = conns.join_next() => reap(done),
                    }
                }
            }
        };
        let (stream, peer) = loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok(accepted) => {
                        backoff = Duration::ZERO;
                        break accepted;
                    }
                    // The client gave up before we accepted: nothing to do.
                    Err(e) if is_connection_error(&e) => {
                        tracing::debug!(error = %e, "accept: connection aborted by the client");
                    }
                    Err(e) => {
                        backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                        tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                            "cannot accept connections (at the open-file limit? raise `ulimit -n` or lower server.max_connections)");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = &mut shutdown => break 'serve,
                        }
                    }
                },
                () = &mut shutdown => break 'serve,
                Some(done) = conns.join_next() => reap(done),
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        conns.spawn(serve_connection(
            stream,
            peer,
            app.clone(),
            http.clone(),
            limits,
            stop_rx.clone(),
            permit,
        ));
    }
    readiness.begin_draining();
    drop(listener);
    let _ = stop_tx.send(true);
    tracing::info!(
        open = conns.len(),
        grace_s = grace.as_secs(),
        "stopped accepting; draining client connections"
    );
    let drained = tokio::time::timeout(grace, async {
        while let Some(done) = conns.join_next().await {
            reap(done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = conns.len(),
            grace_s = grace.as_secs(),
            "in-flight requests did not finish within the grace period; closing their connections"
        );
        conns.shutdown().await;
    }
    Ok(())
}

/// Errors of one pending connection rather than of the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Logs a connection task that panicked.
fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "a client connection task panicked");
    }
}

/// Serves one client connection until it closes, the watchdog cuts it, or the
/// server's shutdown ends it. Holds its `max_connections` slot throughout.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    http: Arc<http1::Builder>,
    limits: ConnectionSettings,
    mut stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let watch = Arc::new(ConnWatch::new());
    let io = TokioIo::new(Metered {
        inner: stream,
        watch: watch.clone(),
    });
    let service = Tracked {
        inner: TowerToHyperService::new(app),
        watch: watch.clone(),
    };
    let conn = http.serve_connection(io, service);
    tokio::pin!(conn);
    let sleep = tokio::time::sleep_until(watch.deadline(&limits));
    tokio::pin!(sleep);
    let mut draining = false;
    let mut idle_closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            r = stop.wait_for(|s| *s), if !draining => {
                drop(r);
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut sleep => match watch.check(&limits) {
                Check::Wait(at) => sleep.as_mut().reset(at),
                Check::Idle if !idle_closing => {
                    tracing::trace!(%peer, "keep-alive connection idle for idle_timeout; closing");
                    idle_closing = true;
                    conn.as_mut().graceful_shutdown();
                    // hyper closes an idle connection at once; if it did not, drop it
                    // at the next check.
                    sleep.as_mut().reset(Instant::now() + limits.idle_timeout.min(Duration::from_secs(1)));
                }
                Check::Idle => return,
                Check::Cut(why) => {
                    tracing::debug!(%peer, why, "closing client connection");
                    return;
                }
            },
        }
    }
}

/// What one connection's watchdog knows, shared with its IO wrapper and its
/// response bodies (all on the connection's task, hence relaxed atomics).
/// Times are milliseconds since `born`.
struct ConnWatch {
    born: Instant,
    in_flight: AtomicUsize,
    last_activity: AtomicU64,
    /// When the first byte of a request head not yet parsed arrived, or
    /// [`NO_HEAD`]. Starts at 0: the first request is timed from the accept.
    head_since: AtomicU64,
    /// Since when a write to the client has been refused (its window is full:
    /// it is not reading), or [`NO_HEAD`].
    blocked_since: AtomicU64,
}

const NO_HEAD: u64 = u64::MAX;

/// The watchdog's verdict.
enum Check {
    /// Look again at this instant.
    Wait(Instant),
    /// No request in flight and nothing moved for `idle_timeout`.
    Idle,
    /// Drop the connection now, for this reason.
    Cut(&'static str),
}

impl ConnWatch {
    fn new() -> Self {
        Self {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_activity: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            blocked_since: AtomicU64::new(NO_HEAD),
        }
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.born + Duration::from_millis(ms)
    }

    /// Bytes arrived from the client.
    fn on_read(&self) {
        let now = self.now_ms();
        self.last_activity.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == NO_HEAD
        {
            self.head_since.store(now, Ordering::Relaxed);
        }
    }

    /// Bytes went out to the client.
    fn on_write(&self) {
        self.last_activity.store(self.now_ms(), Ordering::Relaxed);
        self.blocked_since.store(NO_HEAD, Ordering::Relaxed);
    }

    /// What a write to the client returned: bytes went out, or it had to wait.
    fn on_poll_write(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) if *n > 0 => self.on_write(),
            Poll::Pending => self.on_write_blocked(),
            _ => {}
        }
    }

    /// The client's receive window is full: a write had to wait.
    fn on_write_blocked(&self) {
        if self.blocked_since.load(Ordering::Relaxed) == NO_HEAD {
            self.blocked_since.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// hyper parsed a request head and called the service.
    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NO_HEAD, Ordering::Relaxed);
    }

    /// A response body was sent in full or dropped.
    fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.last_activity.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The first instant worth looking at.
    fn deadline(&self, limits: &ConnectionSettings) -> Instant {
        match self.check(limits) {
            Check::Wait(at) => at,
            _ => Instant::now(),
        }
    }

    fn check(&self, limits: &ConnectionSettings) -> Check {
        let now = self.now_ms();
        let idle_ms = limits.idle_timeout.as_millis() as u64;
        // A client that stopped taking a response is cut after send_timeout, in
        // flight or not (hyper may hold the whole body in its buffer already).
        let send_ms = limits.send_timeout.as_millis() as u64;
        let blocked = self.blocked_since.load(Ordering::Relaxed);
        let send_at = if blocked == NO_HEAD {
            u64::MAX
        } else {
            let cut_at = blocked.saturating_add(send_ms);
            if now >= cut_at {
                return Check::Cut("the client took no response bytes for send_timeout");
            }
            cut_at
        };
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            // Requests in flight are bounded by the upstream timeouts, not here.
            let next = now.saturating_add(idle_ms.min(send_ms)).min(send_at);
            return Check::Wait(self.at(next));
        }
        if blocked != NO_HEAD {
            // Still writing the last response: not idle.
            return Check::Wait(self.at(send_at));
        }
        let idle_at = self
            .last_activity
            .load(Ordering::Relaxed)
            .saturating_add(idle_ms);
        let head = self.head_since.load(Ordering::Relaxed);
        if head != NO_HEAD {
            let head_at = head.saturating_add(limits.header_read_timeout.as_millis() as u64);
            if now >= head_at {
                return Check::Cut("request head not complete within header_read_timeout");
            }
            if now >= idle_at {
                return Check::Cut("request head stalled for idle_timeout");
            }
            return Check::Wait(self.at(head_at.min(idle_at)));
        }
        if now >= idle_at {
            Check::Idle
        } else {
            Check::Wait(self.at(idle_at))
        }
    }
}

/// The client socket, reporting bytes moved to the connection's watchdog.
struct Metered {
    inner: TcpStream,
    watch: Arc<ConnWatch>,
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.on_read();
        }
        r
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch.on_poll_write(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch.on_poll_write(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router as a hyper service that counts requests in flight: from the call
/// until the response body is sent in full or dropped.
struct Tracked {
    inner: TowerToHyperService<Router>,
    watch: Arc<ConnWatch>,
}

type RouterFuture =
    <TowerToHyperService<Router> as hyper::service::Service<hyper::Request<Incoming>>>::Future;

impl hyper::service::Service<hyper::Request<Incoming>> for Tracked {
    type Response = hyper::Response<TrackedBody>;
    type Error = Infallible;
    type Future = TrackedFuture;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        self.watch.request_started();
        TrackedFuture {
            inner: hyper::service::Service::call(&self.inner, req),
            guard: Some(InFlight(self.watch.clone())),
        }
    }
}

/// Counts one request in flight until dropped.
struct InFlight(Arc<ConnWatch>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// The router's future, moving the in-flight guard into the response body.
struct TrackedFuture {
    inner: RouterFuture,
    guard: Option<InFlight>,
}

impl Future for TrackedFuture {
    type Output = Result<hyper::Response<TrackedBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let resp = match Pin::new(&mut this.inner).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(r)) => r,
            Poll::Ready(Err(e)) => match e {},
        };
        let guard = this.guard.take();
        Poll::Ready(Ok(resp.map(|inner| TrackedBody {
            inner,
            _guard: guard,
        })))
    }
}

/// A response body holding its request's in-flight guard.
struct TrackedBody {
    inner: Body,
    _guard: Option<InFlight>,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Binds a listener on `addr` (port 0 picks a free one).
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Starts the server in the background on `settings.listen` (port 0 picks one).
///
/// # Errors
///
/// When the address cannot be bound.
pub async fn start(settings: Settings) -> io::Result<Running> {
    open_access_log(&settings.gateway)?;
    let listener = bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    let readiness = Readiness::new();
    let app = http::app(
        settings.gateway,
        settings.admin_token,
        readiness.clone(),
        None,
        None,
        None,
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(serve_until(
        listener,
        app,
        settings.connections,
        settings.shutdown_grace,
        readiness,
        async move {
            let _ = stop_rx.await;
        },
    ));
    Ok(Running {
        addr,
        handle,
        stop: Some(stop_tx),
    })
}

/// Warns when `max_connections` does not fit under the process's soft limit of
/// open files (Linux), since accepts would then fail before the cap is reached.
fn check_open_files_limit(max_connections: usize) {
    #[cfg(target_os = "linux")]
    {
        let soft = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3))
                    .and_then(|n| n.parse::<usize>().ok())
            });
        // Room for the listener, upstream and store connections, logs, SQLite.
        const HEADROOM: usize = 64;
        if let Some(soft) = soft
            && max_connections.saturating_add(HEADROOM) > soft
        {
            tracing::warn!(
                max_connections,
                open_files_limit = soft,
                "server.max_connections plus room for upstream connections exceeds the open-file limit; raise it (`ulimit -n`, LimitNOFILE=) or lower max_connections"
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = max_connections;
}

/// Opens the gateway's access log, if it has one: a file that cannot be opened
/// fails the start, naming `server.access_log_path`.
fn open_access_log(gateway: &sluice_gateway::Gateway) -> io::Result<()> {
    gateway.open_access_log().map_err(|e| {
        let path = gateway
            .access_log()
            .map(|l| l.spec().target.to_string())
            .unwrap_or_default();
        io::Error::new(
            e.kind(),
            format!("server.access_log_path: cannot open the access log {path:?}: {e}"),
        )
    })
}

/// With an access log in a file, reopens it on each SIGHUP (after logrotate
/// moved it away). Without one, SIGHUP keeps its default action.
fn reopen_access_log_on_sighup(gateway: &sluice_gateway::Gateway) {
    #[cfg(unix)]
    if gateway
        .access_log()
        .is_some_and(|l| matches!(l.spec().target, sluice_gateway::AccessLogTarget::File(_)))
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                let gateway = gateway.clone();
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        if let Some(l) = gateway.access_log() {
                            l.reopen();
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP; the access log is not reopened on it")
            }
        }
    }
    #[cfg(not(unix))]
    let _ = gateway;
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received; draining in-flight requests");
}

/// Runs the server in the foreground until SIGINT/SIGTERM.
///
/// # Errors
///
/// When the address cannot be bound or serving fails.
pub async fn run(settings: Settings) -> io::Result<()> {
    let listener = bind(settings.listen).await?;
    run_on(listener, settings, shutdown_signal()).await
}

/// Runs the whole node (gateway, API, workers, scheduler, chart sampler) on
/// `listener` until `shutdown` resolves, then drains and stops.
///
/// # Errors
///
/// When a backend cannot be reached at start or serving fails.
pub async fn run_on(
    listener: TcpListener,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    open_access_log(&settings.gateway)?;
    reopen_access_log_on_sighup(&settings.gateway);
    let addr = listener.local_addr()?;
    check_open_files_limit(settings.connections.max_connections);
    let grace = settings.shutdown_grace;
    let limits = settings.connections;
    let readiness = Readiness::new();
    let rt = Runtime::new(settings);
    let settings = rt.settings().clone();
    // A gateway-only config opens no database and starts no worker; with jobs,
    // whatever can fail at start fails here, before "listening".
    let has_jobs = !settings.jobs.jobs.is_empty();
    // Alert rules read the repository and the queue and deliver through it.
    let has_alerts = !settings.alerts.rules.is_empty();
    if has_jobs || has_alerts {
        rt.repository()
            .await
            .map_err(|e| io::Error::other(format!("cannot open the job repository: {e}")))?;
        rt.broker()
            .await
            .map_err(|e| io::Error::other(format!("cannot reach the queue: {e}")))?;
    }
    let jobs_api = if !settings.tokens.is_empty() && has_jobs {
        let api = JobsApi::new(rt.clone())
            .await
            .map_err(|e| io::Error::other(format!("cannot start the job API: {e}")))?;
        Some(Arc::new(api))
    } else {
        None
    };
    // The REST API and its chart sampler, with any API token.
    let api = (!settings.tokens.is_empty())
        .then(|| http::api::ApiState::new(settings.gateway.clone(), rt.clone(), jobs_api.clone()));
    let sampler = api.clone().map(http::api::overview::start_sampler);
    let app = http::app(
        settings.gateway.clone(),
        settings.admin_token.clone(),
        readiness.clone(),
        jobs_api,
        has_jobs.then(|| rt.clone()),
        api,
    );
    let workers = if settings.queue.workers && (has_jobs || has_alerts) {
        match rt.start_workers(None).await {
            Ok(w) => Some(w),
            Err(e) => {
                return Err(io::Error::other(format!(
                    "cannot start workers: {e} (set [queue] workers = false to serve without them)"
                )));
            }
        }
    } else {
        None
    };
    let scheduler = match launcher::start(&rt).await {
        Ok(s) => s,
        Err(e) => {
            return Err(io::Error::other(format!("cannot start the scheduler: {e}")));
        }
    };
    if has_alerts {
        rt.alert_store()
            .await
            .map_err(|e| io::Error::other(format!("cannot open the alert state: {e}")))?;
    }
    let alerts = crate::alerts::start(&rt);
    tracing::info!(%addr, routes = ?settings.gateway.route_names(), store = settings.gateway.store().kind(),
        admin = settings.admin_token.is_some(), max_connections = settings.connections.max_connections,
        jobs = settings.jobs.jobs.len(), workers = workers.is_some(),
        "sluice gateway listening");
    serve_until(listener, app, limits, grace, readiness, shutdown).await?;
    if let Some(a) = alerts {
        a.abort();
    }
    if let Some(s) = sampler {
        s.abort();
    }
    if let Some(s) = scheduler {
        s.shutdown().await;
    }
    if let Some(w) = workers {
        tracing::info!(in_flight = w.in_flight(), "stopping workers");
        w.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}
