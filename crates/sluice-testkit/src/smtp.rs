//! A local SMTP sink: a tiny SMTP server on `127.0.0.1:0` that accepts every
//! message and records its envelope and data, for tests of e-mail delivery.
//!
//! It speaks the part of RFC 5321 a client needs to hand over a message
//! (`EHLO`/`HELO`, `MAIL FROM`, `RCPT TO`, `DATA`, `RSET`, `NOOP`, `QUIT`),
//! plain text only, no extensions; what it does not know it answers `502`.
//!
//! A test can make chosen recipients fail: [`SmtpSink::refuse`] answers their
//! `RCPT TO` with a permanent `550`, [`SmtpSink::defer`] with a temporary `451`
//! the first N times; and count what arrived by recipient or Message-ID.

use std::collections::{BTreeMap, HashMap};
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
    /// When the sink accepted it (after the final dot).
    pub received_at: Instant,
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

/// How the sink answers a recipient's `RCPT TO`.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// `550`, always.
    Refuse,
    /// `451`, this many more times, then `250`.
    Defer(u32),
}

/// What the sessions share.
#[derive(Debug, Default)]
struct Shared {
    messages: Mutex<Vec<SmtpMessage>>,
    rules: Mutex<HashMap<String, Rule>>,
}

impl Shared {
    /// The answer to `RCPT TO:<to>`.
    fn rcpt(&self, to: &str) -> &'static str {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        match rules.get_mut(&to.to_ascii_lowercase()) {
            Some(Rule::Refuse) => "550 5.1.1 mailbox unavailable",
            Some(Rule::Defer(n)) if *n > 0 => {
                *n -= 1;
                "451 4.3.0 try again later"
            }
            _ => "250 OK",
        }
    }
}

/// A running sink; it stops when dropped.
#[derive(Debug)]
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
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
        let shared = Arc::new(Shared::default());
        let sessions = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, sessions.clone()));
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// Answers `RCPT TO` for `recipient` with a permanent `550` from now on.
    pub fn refuse(&self, recipient: &str) {
        self.rule(recipient, Rule::Refuse);
    }

    /// Answers `RCPT TO` for `recipient` with a temporary `451` the next
    /// `times` times, then accepts it.
    pub fn defer(&self, recipient: &str, times: u32) {
        self.rule(recipient, Rule::Defer(times));
    }

    fn rule(&self, recipient: &str, rule: Rule) {
        self.shared
            .rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(recipient.to_ascii_lowercase(), rule);
    }

    /// How many messages were received for each envelope recipient.
    pub fn count_by_recipient(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for m in self.messages() {
            for to in m.to {
                *out.entry(to).or_insert(0) += 1;
            }
        }
        out
    }

    /// How many messages were received with each Message-ID (a message
    /// without one is counted under `""`).
    pub fn count_by_message_id(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for m in self.messages() {
            *out.entry(m.header("message-id").unwrap_or_default())
                .or_insert(0) += 1;
        }
        out
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// The messages received so far.
    pub fn messages(&self) -> Vec<SmtpMessage> {
        self.shared
            .messages
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

async fn session(stream: TcpStream, shared: Arc<Shared>) {
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
                let rcpt = path(cmd);
                let answer = shared.rcpt(&rcpt);
                if answer.starts_with('2') {
                    to.push(rcpt);
                }
                reply(&mut w, answer).await
            }
            "DATA" if to.is_empty() => reply(&mut w, "554 5.5.1 no valid recipients").await,
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
                shared
                    .messages
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(SmtpMessage {
                        from: std::mem::take(&mut from),
                        to: std::mem::take(&mut to),
                        data,
                        received_at: Instant::now(),
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
        assert_eq!(sink.count_by_recipient().get("b@y.org"), Some(&1));
    }

    #[tokio::test]
    async fn refuses_and_defers_chosen_recipients() {
        let sink = SmtpSink::start().await.unwrap();
        sink.refuse("no@y.org");
        sink.defer("later@y.org", 1);
        let s = TcpStream::connect(sink.addr).await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut l = String::new();
        r.read_line(&mut l).await.unwrap();
        let mut say = async |cmd: &str| {
            w.write_all(format!("{cmd}\r\n").as_bytes()).await.unwrap();
            l.clear();
            r.read_line(&mut l).await.unwrap();
            l.get(..3).unwrap_or_default().to_owned()
        };
        assert_eq!(say("EHLO x").await, "250");
        assert_eq!(say("MAIL FROM:<a@x.org>").await, "250");
        assert_eq!(say("RCPT TO:<no@y.org>").await, "550");
        assert_eq!(say("RCPT TO:<later@y.org>").await, "451");
        assert_eq!(say("RCPT TO:<later@y.org>").await, "250");
    }
}
