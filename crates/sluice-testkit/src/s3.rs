//! An S3-compatible server for tests: moto's (`moto[server]` from PyPI, command
//! `moto_server`), which `scripts/test` installs into `~/.cache/sluice-venv`.
//! Each [`S3Server`] is its own process on a free port, with its own empty
//! state, killed on drop. moto accepts any access key and secret.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// How long moto may take to answer (it is a Python program: imports take a while).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `moto_server`.
#[derive(Debug)]
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    port: u16,
    child: Child,
    log: PathBuf,
}

/// The `moto_server` program: `SLUICE_MOTO_SERVER`, else the one in
/// `~/.cache/sluice-venv/bin` (or `$SLUICE_VENV/bin`), else `moto_server` on `PATH`.
fn program() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_MOTO_SERVER") {
        return PathBuf::from(p);
    }
    let venv = std::env::var_os("SLUICE_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sluice-venv")));
    match venv.map(|v| v.join("bin/moto_server")) {
        Some(p) if p.is_file() => p,
        _ => PathBuf::from("moto_server"),
    }
}

impl S3Server {
    /// Starts moto on a free port and waits until it answers.
    ///
    /// # Panics
    ///
    /// When it cannot be started or does not answer in time (with the tail of
    /// its log, and how to install it).
    pub fn start() -> S3Server {
        let prog = program();
        let mut last = String::new();
        for _ in 0..4 {
            let port = free_port();
            let log = std::env::temp_dir().join(format!("sluice-moto-{port}.log"));
            let out = std::fs::File::create(&log).expect("create the moto log");
            let err = out.try_clone().expect("clone the moto log");
            let child = Command::new(&prog)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {} ({e}); run scripts/test (ensure_moto) or set SLUICE_MOTO_SERVER",
                        prog.display()
                    )
                });
            let mut s = S3Server {
                endpoint: format!("http://127.0.0.1:{port}"),
                port,
                child,
                log,
            };
            let start = Instant::now();
            while start.elapsed() < READY_TIMEOUT {
                if let Ok(Some(_)) = s.child.try_wait() {
                    break;
                }
                if matches!(s.request("GET", "/"), Ok(r) if r.contains("ListAllMyBucketsResult")) {
                    return s;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            last = std::fs::read_to_string(&s.log).unwrap_or_default();
            // Dropping it kills it; another port is tried.
        }
        panic!(
            "moto_server ({}) did not answer; its log ends:\n{}",
            prog.display(),
            tail(&last)
        );
    }

    /// Creates bucket `name`.
    ///
    /// # Panics
    ///
    /// When moto refuses.
    pub fn create_bucket(&self, name: &str) {
        let r = self
            .request("PUT", &format!("/{name}"))
            .expect("PUT bucket");
        assert!(r.starts_with("HTTP/1.1 200"), "creating bucket {name}: {r}");
    }

    /// The keys in bucket `name` (all of them, sorted).
    ///
    /// # Panics
    ///
    /// When moto does not answer.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let r = self
            .request("GET", &format!("/{bucket}?list-type=2"))
            .expect("list objects");
        let mut keys: Vec<String> = r
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }

    /// One plain HTTP/1.1 request (moto checks no signature), the whole answer.
    fn request(&self, method: &str, path: &str) -> io::Result<String> {
        let mut c = TcpStream::connect(("127.0.0.1", self.port))?;
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            c,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut out = String::new();
        c.read_to_string(&mut out)?;
        Ok(out)
    }
}

fn tail(s: &str) -> &str {
    let cut = s.len().saturating_sub(2000);
    s.get(cut..).unwrap_or(s)
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
