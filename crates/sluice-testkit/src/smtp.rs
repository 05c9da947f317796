//! A local SMTP sink: a tiny SMTP server on `127.0.0.1:0` that accepts every
//! message and records its envelope and data, for tests of e-mail delivery.
//!
//! It speaks the part of RFC 5321 a client needs to hand over a message
//! (`EHLO`/`HELO`, `MAIL FROM`, `RCPT TO`, `DATA`, `RSET`, `NOOP`, `QUIT`),
//! plain text only, no extensions; what it does not know it answers `502`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One message the sink received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpMessage {
    /// The envelope sender (`MAIL FROM`), without the angle brackets.
    pub from: String,
    /// The envelope recipients (`RCPT TO`), without the angle brackets.
    pub to: Vec<String>,
    /// The message (headers and body) as sent, dot-stuffing undone.
    pub data: String,
}

impl SmtpMessage {
    /// The value of header `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut out: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = out.as_mut() {
                    v.push_str(line.trim_start());
                    continue;
                }
            } else if out.is_some() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case(name)
            {
                out = Some(v.trim().to_owned());
            }
        }
        out
    }
}

/// A running sink; it stops when dropped.
#[derive(Debug)]
pub struct SmtpSink {
    addr: SocketAddr,
    messages: Arc<Mutex<Vec<SmtpMessage>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    /// Starts a sink on a free loopback port.
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let shared = messages.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, shared.clone()));
            }
        });
        Ok(Self {
            addr,
            messages,
            task,
        })
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// The messages received so far.
    pub fn messages(&self) -> Vec<SmtpMessage> {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits up to `timeout` until at least `n` messages have arrived; all of
    /// them.
    ///
    /// # Panics
    ///
    /// When fewer have arrived by then.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<SmtpMessage> {
        let end = Instant::now() + timeout;
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            assert!(
                Instant::now() < end,
                "the SMTP sink received {} of {n} messages: {m:#?}",
                m.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The address inside `<…>` after a `MAIL FROM:` or `RCPT TO:` verb.
fn path(arg: &str) -> String {
    let a = arg.split_once(':').map_or(arg, |(_, r)| r).trim();
    let a = a.split_whitespace().next().unwrap_or("");
    a.trim_start_matches('<').trim_end_matches('>').to_owned()
}

/// Writes one reply line; false when the client has gone.
async fn reply(w: &mut tokio::net::tcp::OwnedWriteHalf, text: &str) -> bool {
    w.write_all(format!("{text}\r\n").as_bytes()).await.is_ok()
}

async fn session(stream: TcpStream, messages: Arc<Mutex<Vec<SmtpMessage>>>) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    if !reply(&mut w, "220 sluice-testkit SMTP sink").await {
        return;
    }
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end();
        let verb = cmd.get(..4).unwrap_or(cmd).to_ascii_uppercase();
        let ok = match verb.as_str() {
            "EHLO" | "HELO" => reply(&mut w, "250 sluice-testkit").await,
            "MAIL" => {
                from = path(cmd);
                to.clear();
                reply(&mut w, "250 OK").await
            }
            "RCPT" => {
                to.push(path(cmd));
                reply(&mut w, "250 OK").await
            }
            "DATA" => {
                if !reply(&mut w, "354 end with <CRLF>.<CRLF>").await {
                    return;
                }
                let mut data = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    let l = line.strip_prefix('.').unwrap_or(&line);
                    data.push_str(l);
                }
                messages
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(SmtpMessage {
                        from: std::mem::take(&mut from),
                        to: std::mem::take(&mut to),
                        data,
                    });
                reply(&mut w, "250 OK queued").await
            }
            "RSET" => {
                from.clear();
                to.clear();
                reply(&mut w, "250 OK").await
            }
            "NOOP" => reply(&mut w, "250 OK").await,
            "QUIT" => {
                let _ = reply(&mut w, "221 bye").await;
                return;
            }
            _ => reply(&mut w, "502 command not implemented").await,
        };
        if !ok {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_a_message() {
        let sink = SmtpSink::start().await.unwrap();
        let s = TcpStream::connect(sink.addr).await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut l = String::new();
        for cmd in [
            "EHLO x",
            "MAIL FROM:<a@x.org>",
            "RCPT TO:<b@y.org>",
            "DATA",
            "Subject: hi\r\n\r\n..dot\r\n.",
            "QUIT",
        ] {
            l.clear();
            r.read_line(&mut l).await.unwrap();
            w.write_all(format!("{cmd}\r\n").as_bytes()).await.unwrap();
        }
        let m = sink.wait_for(1, Duration::from_secs(5)).await;
        assert_eq!(m[0].from, "a@x.org");
        assert_eq!(m[0].to, ["b@y.org"]);
        assert_eq!(m[0].header("subject").as_deref(), Some("hi"));
        assert!(m[0].data.ends_with("\r\n.dot\r\n"), "{:?}", m[0].data);
    }
}
