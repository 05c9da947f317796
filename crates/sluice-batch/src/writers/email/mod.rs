//! The e-mail writer: one message per item, rendered from MiniJinja templates
//! and sent over SMTP, at most once per idempotency key.
//!
//! ```text
//! item ─▶ render key, to, from, subject, text[, html], headers (strict: a missing field is an item error)
//!      ─▶ send log: sent ─▶ done · failed ─▶ skip (the server's reply) · sending ─▶ on_uncertain
//!      ─▶ rate limit (shared GCRA) ─▶ MAIL FROM, RCPT TO, DATA (354)
//!      ─▶ log `sending` (committed) ─▶ message + final dot ─▶ 250 ─▶ log `sent`
//!                                                         └▶ 5xx ─▶ log `failed` (skipped with the reply)
//!                                                         └▶ 4xx ─▶ log row removed, chunk retried
//! ```
//!
//! **At most once.** The send log (table [`EMAIL_LOG_TABLE`], in the
//! repository's database unless `database` names another) holds one row per
//! job, instance, step and key. `sending` is committed after the server
//! accepted `DATA` and before the message and its final dot go out; `sent`
//! after the server's 250. A restart skips `sent` keys; a key left `sending`
//! (the process died between the two) may or may not have been delivered: it is
//! skipped with the reason [`UNCERTAIN`] (`on_uncertain = "skip"`, the default)
//! or sent again (`"resend"`). Messages go out one at a time, so a crash leaves
//! at most one key uncertain. The Message-ID is derived from the key, so a
//! resent message has the same one and receivers can drop the duplicate.
//!
//! A dry run (`dry_run = "DIR"`) writes each message to `DIR/<key>.eml`
//! (the same name for the same key, written atomically) and records nothing.

mod config;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::Address;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_core::{Quota, QuotaExceeded, Secret};
use sluice_sql::{ConnectSettings, Db, DbKind, ErrorClass, Journal, Statement, dialect};

pub use config::{EmailSecret, RawEmailWriter, RawTemplates, SecretTable};

use crate::api::{
    CheckpointKey, CheckpointStore, Chunk, Committed, SqlStatement, TargetCheckpoint, WriteError,
    Writer,
};
use crate::config::ConfigError;

/// The table of the send log, created when missing in the log's database.
///
/// ```text
/// sluice_email_log (job_name, job_instance_id, step_name, msg_key) primary key,
///                  state       sending | sent | failed
///                  recipient   the address
///                  message_id  the Message-ID sent
///                  reason      a failure's server reply
///                  updated_at  Unix ms
/// ```
pub const EMAIL_LOG_TABLE: &str = "sluice_email_log";

/// The skip reason of a key left `sending` (with `on_uncertain = "skip"`).
pub const UNCERTAIN: &str = "interrupted while sending; may have been delivered";

/// `dry_run = "DIR"` or `dry_run = true` (with `dry_run_dir`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DryRun {
    /// `true` / `false`.
    Flag(bool),
    /// The directory.
    Dir(String),
}

/// What to do with a key a crashed process left `sending`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUncertain {
    /// Skip it (it may have been delivered).
    #[default]
    Skip,
    /// Send it again, with the same Message-ID.
    Resend,
}

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// Plain text.
    Plain,
    /// Upgraded with STARTTLS.
    StartTls,
    /// TLS from the start.
    Implicit,
}

/// `smtp://host:port[?tls=starttls]` or `smtps://host:port` → (tls, host, port).
fn parse_smtp_url(url: &str) -> Result<(Security, String, u16), String> {
    let bad = |why: &str| format!("smtp {:?}: {why}", sluice_core::redact_url(url));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        bad("write smtp://HOST:PORT, smtp://HOST:PORT?tls=starttls or smtps://HOST:PORT")
    })?;
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.trim_end_matches('/');
    if authority.contains('@') {
        return Err(bad(
            "credentials go in username and password, not in the URL",
        ));
    }
    let mut tls = match scheme {
        "smtp" => Security::Plain,
        "smtps" => Security::Implicit,
        _ => return Err(bad("the scheme must be smtp or smtps")),
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair {
            "tls=starttls" if tls == Security::Plain => tls = Security::StartTls,
            "tls=none" if tls == Security::Plain => {}
            _ => return Err(bad(&format!("unknown option {pair:?}; use tls=starttls"))),
        }
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| bad(&format!("port {p:?} is not a number")))?,
        ),
        None => (authority, if tls == Security::Implicit { 465 } else { 587 }),
    };
    if host.is_empty() {
        return Err(bad("it has no host"));
    }
    Ok((tls, host.trim_matches(['[', ']']).to_owned(), port))
}

/// The SMTP server and how to log in.
#[derive(Clone)]
struct SmtpSpec {
    tls: Security,
    host: String,
    port: u16,
    credentials: Option<(String, Secret)>,
    timeout: Duration,
}

impl std::fmt::Debug for SmtpSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSpec")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .finish()
    }
}

/// The shared rate limit.
#[derive(Debug, Clone)]
struct RateSpec {
    limiter: Arc<dyn Quota>,
}

/// An item field, or a template.
#[derive(Debug, Clone, Default)]
enum WhereFrom {
    #[default]
    None,
    Field(String),
    Template(String),
}

/// The compiled templates, and the top-level variables each uses.
struct Templates {
    env: minijinja::Environment<'static>,
    vars: BTreeMap<String, BTreeSet<String>>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("names", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `template NAME line N: what`.
fn template_error(e: &minijinja::Error) -> String {
    let what = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_owned);
    match (e.name(), e.line()) {
        (Some(n), Some(l)) => format!("template {n} line {l}: {what}"),
        (Some(n), None) => format!("template {n}: {what}"),
        _ => format!("template: {what}"),
    }
}

impl Templates {
    fn new() -> Self {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        // A body file's last line end is part of the body.
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        env.set_auto_escape_callback(|name| {
            if name == "html" || name.ends_with(".html") || name.ends_with(".htm") {
                minijinja::AutoEscape::Html
            } else {
                minijinja::AutoEscape::None
            }
        });
        Self {
            env,
            vars: BTreeMap::new(),
        }
    }

    /// Compiles `source` as template `name`.
    fn add(&mut self, name: &str, source: &str) -> Result<(), ConfigError> {
        self.env
            .add_template_owned(name.to_owned(), source.to_owned())
            .map_err(|e| ConfigError::Email(template_error(&e)))?;
        let vars = self
            .env
            .get_template(name)
            .map_err(|e| ConfigError::Email(template_error(&e)))?
            .undeclared_variables(false)
            .into_iter()
            .collect();
        self.vars.insert(name.to_owned(), vars);
        Ok(())
    }

    /// Renders template `name` for `item` (its fields are the variables).
    fn render(&self, name: &str, item: &Value, ctx: &minijinja::Value) -> Result<String, String> {
        if let Some(vars) = self.vars.get(name) {
            let fields = item.as_object();
            for v in vars {
                let known = fields.is_some_and(|f| f.contains_key(v))
                    || self.env.globals().any(|(g, _)| g == v.as_str());
                if !known {
                    return Err(format!(
                        "the item has no field {v:?} (template {name} uses it)"
                    ));
                }
            }
        }
        self.env
            .get_template(name)
            .and_then(|t| t.render(ctx.clone()))
            .map_err(|e| template_error(&e))
    }
}

/// `text` with CRLF line ends (SMTP refuses bare LFs).
fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

/// What a writer is built from (the checked config).
#[derive(Debug, Default)]
struct EmailSpec {
    templates: Templates,
    subject: Option<String>,
    text: Option<String>,
    html: Option<String>,
    to: WhereFrom,
    key: Option<WhereFrom>,
    reply_to: bool,
    headers: Vec<(String, String)>,
    unsubscribe_url: bool,
    unsubscribe_mailto: bool,
    on_uncertain: OnUncertain,
    dry_run: Option<PathBuf>,
    smtp: Option<SmtpSpec>,
    database: Option<String>,
    rate: Option<RateSpec>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// Whose keys: the job, instance and step (from the step's claim).
#[derive(Debug, Clone, Default)]
struct Scope {
    job: String,
    instance: i64,
    step: String,
}

/// A key's state in the send log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Logged {
    Sending,
    Sent,
    Failed(String),
}

/// The send log in its database.
#[derive(Debug)]
struct SendLog {
    db: Db,
}

/// A send-log error: transient when the database says so, else fatal.
fn log_error(e: &sqlx::Error) -> WriteError {
    let text = format!("{EMAIL_LOG_TABLE}: {}", sluice_sql::describe(e));
    if ErrorClass::of(e).is_transient() {
        WriteError::Transient(text)
    } else {
        WriteError::Fatal(text)
    }
}

/// The key as stored: itself when short, else its SHA-256.
fn stored_key(key: &str) -> String {
    if key.len() <= 200 {
        key.to_owned()
    } else {
        format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
    }
}

impl SendLog {
    async fn open(url: &str) -> Result<Self, WriteError> {
        let kind = DbKind::from_url(url);
        let settings = ConnectSettings::new()
            .acquire_timeout(Duration::from_secs(10))
            .quiet();
        let settings = match kind {
            // NORMAL: a commit survives the process dying (what the log is
            // for); only an OS crash or power loss may lose the last ones.
            Some(DbKind::Sqlite) => settings.create(Journal::WalWhenNew).synchronous_normal(),
            _ => settings.max_connections(2),
        };
        let db = Db::connect(url, &settings).await.map_err(|e| {
            WriteError::Fatal(format!(
                "{EMAIL_LOG_TABLE}: cannot open {}: {e}",
                sluice_core::redact_url(url)
            ))
        })?;
        let text = if db.kind() == DbKind::MySql {
            "MEDIUMTEXT"
        } else {
            "TEXT"
        };
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {EMAIL_LOG_TABLE} (\
             job_name VARCHAR(200) NOT NULL, \
             job_instance_id BIGINT NOT NULL, \
             step_name VARCHAR(200) NOT NULL, \
             msg_key VARCHAR(255) NOT NULL, \
             state VARCHAR(16) NOT NULL, \
             recipient {text} NOT NULL, \
             message_id VARCHAR(255) NOT NULL, \
             reason {text}, \
             updated_at BIGINT NOT NULL, \
             PRIMARY KEY (job_name, job_instance_id, step_name, msg_key))"
        );
        if let Err(e) = db.execute(&Statement::new(create)).await
            && !sluice_sql::is_already_exists(&e)
        {
            return Err(log_error(&e));
        }
        Ok(Self { db })
    }

    fn scoped(&self, scope: &Scope, sql: &str, key: &str) -> Statement<'static> {
        Statement::new(dialect(self.db.kind(), sql))
            .bind(scope.job.clone())
            .bind(scope.instance)
            .bind(scope.step.clone())
            .bind(stored_key(key))
    }

    async fn state(&self, scope: &Scope, key: &str) -> Result<Option<Logged>, WriteError> {
        let st = self.scoped(
            scope,
            &format!(
                "SELECT state, reason FROM {EMAIL_LOG_TABLE} WHERE job_name = ? AND \
                 job_instance_id = ? AND step_name = ? AND msg_key = ?"
            ),
            key,
        );
        let rows = self.db.fetch_all(&st).await.map_err(|e| log_error(&e))?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let state: String = row.get("state").map_err(|e| log_error(&e))?;
        let reason: Option<String> = row.get("reason").map_err(|e| log_error(&e))?;
        Ok(Some(match state.as_str() {
            "sent" => Logged::Sent,
            "failed" => Logged::Failed(reason.unwrap_or_default()),
            _ => Logged::Sending,
        }))
    }

    /// Records `state` for `key` (committed when it returns).
    async fn mark(
        &self,
        scope: &Scope,
        key: &str,
        state: &str,
        recipient: &str,
        message_id: &str,
        reason: Option<&str>,
    ) -> Result<(), WriteError> {
        let kind = self.db.kind();
        let upsert = sluice_sql::upsert_clause(
            kind,
            &["job_name", "job_instance_id", "step_name", "msg_key"],
            &["state", "recipient", "message_id", "reason", "updated_at"],
        );
        let mut st = self.scoped(
            scope,
            &format!(
                "INSERT INTO {EMAIL_LOG_TABLE} (job_name, job_instance_id, step_name, msg_key, \
                 state, recipient, message_id, reason, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?){upsert}"
            ),
            key,
        );
        st = st
            .bind(state)
            .bind(recipient)
            .bind(message_id)
            .bind(reason)
            .bind(chrono::Utc::now().timestamp_millis());
        self.db.execute(&st).await.map_err(|e| log_error(&e))?;
        Ok(())
    }

    /// Removes `key` (the server refused it for now: nothing was delivered).
    async fn forget(&self, scope: &Scope, key: &str) -> Result<(), WriteError> {
        let st = self.scoped(
            scope,
            &format!(
                "DELETE FROM {EMAIL_LOG_TABLE} WHERE job_name = ? AND job_instance_id = ? \
                 AND step_name = ? AND msg_key = ?"
            ),
            key,
        );
        self.db.execute(&st).await.map_err(|e| log_error(&e))?;
        Ok(())
    }
}

/// One message, rendered.
#[derive(Debug)]
struct Rendered {
    key: String,
    recipient: String,
    message_id: String,
    from: Address,
    to: Address,
    bytes: Vec<u8>,
}

/// What sending one message came to.
enum Sent {
    Done,
    /// Refused for good: the reason, for the skip record.
    Refused(String),
}

/// Writes each item as an e-mail: templates rendered per item, sent over SMTP
/// at most once per key (a send log), or written as `.eml` files in a dry run.
pub struct EmailWriter {
    spec: EmailSpec,
    scope: Scope,
    log: Option<SendLog>,
    conn: Option<AsyncSmtpConnection>,
}

impl std::fmt::Debug for EmailWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailWriter")
            .field("spec", &self.spec)
            .field("scope", &self.scope)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

/// An SMTP error that may go away (a 4xx, the network) or not (a 5xx).
fn smtp_error(recipient: &str, stage: &str, e: &lettre::transport::smtp::Error) -> (bool, String) {
    let reply = e.to_string();
    (
        e.is_permanent(),
        format!("{recipient}: the server refused {stage}: {reply}"),
    )
}

impl EmailWriter {
    fn new(spec: EmailSpec) -> Self {
        Self {
            spec,
            scope: Scope::default(),
            log: None,
            conn: None,
        }
    }

    /// Where the send log is kept (`None` in a dry run).
    pub fn database(&self) -> Option<&str> {
        self.spec.database.as_deref()
    }

    /// The Message-ID of `key`: the same for the same job instance, step and key.
    fn message_id(&self, key: &str, from: &Address) -> String {
        let mut h = Sha256::new();
        for part in [
            self.scope.job.as_bytes(),
            &self.scope.instance.to_le_bytes(),
            self.scope.step.as_bytes(),
            key.as_bytes(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let digest = h.finalize();
        format!("<{}.sluice@{}>", hex::encode(&digest[..16]), from.domain())
    }

    fn field_or_template(
        &self,
        w: &WhereFrom,
        item: &Value,
        ctx: &minijinja::Value,
    ) -> Result<Option<String>, String> {
        match w {
            WhereFrom::None => Ok(None),
            WhereFrom::Field(f) => match item.get(f) {
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Null) | None => Err(format!("the item has no field {f:?}")),
                Some(v) => Ok(Some(v.to_string())),
            },
            WhereFrom::Template(t) => self.spec.templates.render(t, item, ctx).map(Some),
        }
    }

    /// Renders the message of `item`; an error is the item's.
    fn render(&self, item: &Value) -> Result<Rendered, String> {
        let ctx = minijinja::Value::from(minijinja::value::Serde(item));
        let t = &self.spec.templates;
        let r = |name: &str| t.render(name, item, &ctx);
        let to_text = self
            .field_or_template(&self.spec.to, item, &ctx)?
            .unwrap_or_default();
        let to: Mailbox = to_text
            .trim()
            .parse()
            .map_err(|e| format!("recipient {to_text:?} is not an e-mail address: {e}"))?;
        let from_text = r("from")?;
        let from: Mailbox = from_text
            .trim()
            .parse()
            .map_err(|e| format!("from {from_text:?} is not an e-mail address: {e}"))?;
        let recipient = to.email.to_string();
        let key = match &self.spec.key {
            Some(k) => self.field_or_template(k, item, &ctx)?.unwrap_or_default(),
            None => recipient.clone(),
        };
        if key.trim().is_empty() {
            return Err("the idempotency key is empty".into());
        }
        let message_id = self.message_id(&key, &from.email);
        let subject = match &self.spec.subject {
            Some(s) => r(s)?,
            None => String::new(),
        };
        let mut b = lettre::Message::builder()
            .from(from.clone())
            .to(to.clone())
            .subject(subject.trim())
            .message_id(Some(message_id.clone()));
        if self.spec.reply_to {
            let rt = r("reply_to")?;
            let mb: Mailbox = rt
                .trim()
                .parse()
                .map_err(|e| format!("reply_to {rt:?} is not an e-mail address: {e}"))?;
            b = b.reply_to(mb);
        }
        let mut unsub = Vec::new();
        if self.spec.unsubscribe_url {
            unsub.push(format!("<{}>", r("list_unsubscribe")?.trim()));
        }
        if self.spec.unsubscribe_mailto {
            let m = r("list_unsubscribe_mailto")?;
            let m = m.trim();
            let m = m.strip_prefix("mailto:").unwrap_or(m);
            unsub.push(format!("<mailto:{m}>"));
        }
        let raw = |name: &str, value: String| -> Result<HeaderValue, String> {
            let n = HeaderName::new_from_ascii(name.to_owned())
                .map_err(|_| format!("header name {name:?} is not valid"))?;
            if value.contains(['\r', '\n']) {
                return Err(format!("header {name}: the value has a line break"));
            }
            Ok(HeaderValue::new(n, value))
        };
        if !unsub.is_empty() {
            b = b.raw_header(raw("List-Unsubscribe", unsub.join(", "))?);
            if self.spec.unsubscribe_url {
                b = b.raw_header(raw(
                    "List-Unsubscribe-Post",
                    "List-Unsubscribe=One-Click".into(),
                )?);
            }
        }
        for (name, tpl) in &self.spec.headers {
            b = b.raw_header(raw(name, r(tpl)?.trim().to_owned())?);
        }
        let text = match &self.spec.text {
            Some(s) => crlf(&r(s)?),
            None => String::new(),
        };
        let message = match &self.spec.html {
            Some(h) => b.multipart(MultiPart::alternative_plain_html(text, crlf(&r(h)?))),
            None => b.header(ContentType::TEXT_PLAIN).body(text),
        }
        .map_err(|e| format!("building the message: {e}"))?;
        Ok(Rendered {
            key,
            recipient,
            message_id,
            from: from.email,
            to: to.email,
            bytes: message.formatted(),
        })
    }

    /// The dry run's file of `key`: its safe characters, and a hash.
    fn dry_run_path(dir: &std::path::Path, key: &str) -> PathBuf {
        let safe: String = key
            .chars()
            .take(80)
            .map(|c| {
                if c.is_ascii_alphanumeric() || "@._+-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let h = hex::encode(&Sha256::digest(key.as_bytes())[..4]);
        dir.join(format!("{safe}-{h}.eml"))
    }

    async fn write_dry(&self, dir: &std::path::Path, m: &Rendered) -> Result<(), WriteError> {
        let path = Self::dry_run_path(dir, &m.key);
        let tmp = path.with_extension("eml.tmp");
        let io = |e: std::io::Error| {
            WriteError::Fatal(format!("dry run: writing {}: {e}", path.display()))
        };
        tokio::fs::write(&tmp, &m.bytes).await.map_err(io)?;
        tokio::fs::rename(&tmp, &path).await.map_err(io)
    }

    /// Waits for the shared rate limit.
    async fn take_rate(&self) -> Result<(), WriteError> {
        let Some(rate) = &self.spec.rate else {
            return Ok(());
        };
        loop {
            match rate.limiter.acquire(Duration::from_secs(60)).await {
                Ok(()) => return Ok(()),
                Err(QuotaExceeded::PerSecond { retry_after, .. }) => {
                    tokio::time::sleep(retry_after.min(Duration::from_secs(5))).await;
                }
                Err(e) => {
                    return Err(WriteError::Fatal(format!(
                        "{e}; run the job again later (it resumes)"
                    )));
                }
            }
        }
    }

    async fn connect(&mut self) -> Result<&mut AsyncSmtpConnection, WriteError> {
        if self.conn.as_ref().is_some_and(|c| !c.has_broken()) {
            return Ok(self.conn.as_mut().expect("checked"));
        }
        self.conn = None;
        let s = self
            .spec
            .smtp
            .as_ref()
            .ok_or_else(|| WriteError::Fatal("no smtp server configured".into()))?;
        let where_ = format!("SMTP {}:{}", s.host, s.port);
        let tls_params = || {
            TlsParameters::new(s.host.clone())
                .map_err(|e| WriteError::Fatal(format!("{where_}: TLS: {e}")))
        };
        let hello = ClientId::default();
        let implicit = if s.tls == Security::Implicit {
            Some(tls_params()?)
        } else {
            None
        };
        let connecting = |e: String| WriteError::Transient(format!("{where_}: connecting: {e}"));
        let mut conn = match implicit {
            Some(tls) => AsyncSmtpConnection::connect_tokio1(
                (s.host.as_str(), s.port),
                Some(s.timeout),
                &hello,
                Some(tls),
                None,
            )
            .await
            .map_err(|e| connecting(e.to_string()))?,
            None => {
                // Our own socket, without Nagle's delay: the message and its
                // final dot are two writes before one read.
                let tcp = tokio::time::timeout(
                    s.timeout,
                    tokio::net::TcpStream::connect((s.host.as_str(), s.port)),
                )
                .await
                .map_err(|_| connecting(format!("timed out after {:?}", s.timeout)))?
                .map_err(|e| connecting(e.to_string()))?;
                let _ = tcp.set_nodelay(true);
                tokio::time::timeout(
                    s.timeout,
                    AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello),
                )
                .await
                .map_err(|_| connecting(format!("no greeting within {:?}", s.timeout)))?
                .map_err(|e| connecting(e.to_string()))?
            }
        };
        if s.tls == Security::StartTls {
            conn.starttls(tls_params()?, &hello)
                .await
                .map_err(|e| WriteError::Transient(format!("{where_}: STARTTLS: {e}")))?;
        }
        if let Some((user, pass)) = &s.credentials {
            let creds = Credentials::new(user.clone(), pass.expose().to_owned());
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds)
                .await
                .map_err(|e| {
                    let m = format!("{where_}: login as {user} refused: {e}");
                    if e.is_permanent() {
                        WriteError::Fatal(m)
                    } else {
                        WriteError::Transient(m)
                    }
                })?;
        }
        Ok(self.conn.insert(conn))
    }

    /// Drops the connection (after a network error or mid-DATA).
    async fn drop_conn(&mut self) {
        if let Some(mut c) = self.conn.take() {
            c.abort().await;
        }
    }

    /// Sends one message through the log's two records.
    async fn send(&mut self, m: &Rendered) -> Result<Sent, WriteError> {
        self.take_rate().await?;
        let timeout = self
            .spec
            .smtp
            .as_ref()
            .map_or(Duration::from_secs(30), |s| s.timeout);
        let conn = self.connect().await?;
        let mut opts = Vec::new();
        if !m.bytes.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
            opts.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        if (!m.from.to_string().is_ascii() || !m.to.to_string().is_ascii())
            && conn.server_info().supports_feature(Extension::SmtpUtfEight)
        {
            opts.push(MailParameter::SmtpUtfEight);
        }
        let envelope: [(&str, String); 3] = [
            (
                "MAIL FROM",
                Mail::new(Some(m.from.clone()), opts).to_string(),
            ),
            ("RCPT TO", Rcpt::new(m.to.clone(), vec![]).to_string()),
            ("DATA", Data.to_string()),
        ];
        for (stage, cmd) in envelope {
            let Ok(answer) = tokio::time::timeout(timeout, conn.command(cmd)).await else {
                self.drop_conn().await;
                return Err(WriteError::Transient(format!(
                    "{}: {stage}: no answer within {timeout:?}",
                    m.recipient
                )));
            };
            match answer {
                Ok(_) => {}
                Err(e) if e.is_permanent() || e.is_transient() => {
                    let (permanent, reason) = smtp_error(&m.recipient, stage, &e);
                    if conn.command(Rset).await.is_err() {
                        self.drop_conn().await;
                    }
                    if permanent {
                        return self.refused(m, reason).await;
                    }
                    return Err(WriteError::Transient(reason));
                }
                Err(e) => {
                    self.drop_conn().await;
                    return Err(WriteError::Transient(format!(
                        "{}: {stage}: {e}",
                        m.recipient
                    )));
                }
            }
        }
        let log = self.log.as_ref().expect("opened");
        if let Err(e) = log
            .mark(
                &self.scope,
                &m.key,
                "sending",
                &m.recipient,
                &m.message_id,
                None,
            )
            .await
        {
            // Without the record nothing may be handed over: abandon the DATA.
            self.drop_conn().await;
            return Err(e);
        }
        let conn = self.conn.as_mut().expect("connected");
        let Ok(answer) = tokio::time::timeout(timeout, conn.message(&m.bytes)).await else {
            // The answer never came: the key stays `sending` (uncertain).
            self.drop_conn().await;
            return Err(WriteError::Transient(format!(
                "{}: no answer to the message within {timeout:?}",
                m.recipient
            )));
        };
        match answer {
            Ok(_) => {
                let log = self.log.as_ref().expect("opened");
                log.mark(
                    &self.scope,
                    &m.key,
                    "sent",
                    &m.recipient,
                    &m.message_id,
                    None,
                )
                .await?;
                Ok(Sent::Done)
            }
            Err(e) if e.is_permanent() => {
                let (_, reason) = smtp_error(&m.recipient, "the message", &e);
                self.refused(m, reason).await
            }
            Err(e) if e.is_transient() => {
                // Refused for now: not delivered.
                let log = self.log.as_ref().expect("opened");
                log.forget(&self.scope, &m.key).await?;
                let (_, reason) = smtp_error(&m.recipient, "the message", &e);
                Err(WriteError::Transient(reason))
            }
            Err(e) => {
                // The answer was lost: the key stays `sending` (uncertain).
                self.drop_conn().await;
                Err(WriteError::Transient(format!(
                    "{}: sending the message: {e}",
                    m.recipient
                )))
            }
        }
    }

    async fn refused(&mut self, m: &Rendered, reason: String) -> Result<Sent, WriteError> {
        let log = self.log.as_ref().expect("opened");
        log.mark(
            &self.scope,
            &m.key,
            "failed",
            &m.recipient,
            &m.message_id,
            Some(&reason),
        )
        .await?;
        Ok(Sent::Refused(reason))
    }

    /// One item: rendered, looked up in the log, sent. `Ok(Some(reason))`: skip it.
    async fn write_item(&mut self, item: &Value) -> Result<Option<String>, WriteError> {
        let m = match self.render(item) {
            Ok(m) => m,
            Err(reason) => return Ok(Some(reason)),
        };
        if let Some(dir) = &self.spec.dry_run {
            self.write_dry(dir, &m).await?;
            return Ok(None);
        }
        let log = self
            .log
            .as_ref()
            .ok_or_else(|| WriteError::Fatal("the email writer was not opened".into()))?;
        match log.state(&self.scope, &m.key).await? {
            Some(Logged::Sent) => return Ok(None),
            Some(Logged::Failed(reason)) => return Ok(Some(reason)),
            Some(Logged::Sending) if self.spec.on_uncertain == OnUncertain::Skip => {
                return Ok(Some(format!("{}: {UNCERTAIN}", m.recipient)));
            }
            Some(Logged::Sending) | None => {}
        }
        match self.send(&m).await? {
            Sent::Done => Ok(None),
            Sent::Refused(reason) => Ok(Some(reason)),
        }
    }
}

#[async_trait]
impl Writer for EmailWriter {
    async fn open(&mut self, _: Option<&Value>) -> Result<(), WriteError> {
        if let Some(dir) = &self.spec.dry_run {
            tokio::fs::create_dir_all(dir).await.map_err(|e| {
                WriteError::Fatal(format!("dry run: creating {}: {e}", dir.display()))
            })?;
            return Ok(());
        }
        if self.log.is_none()
            && let Some(url) = &self.spec.database
        {
            self.log = Some(SendLog::open(url).await?);
        }
        Ok(())
    }

    fn checkpoint_store(&mut self) -> Option<&mut dyn CheckpointStore> {
        Some(self)
    }

    async fn write(
        &mut self,
        chunk: Chunk<'_>,
        _commit: &[SqlStatement],
    ) -> Result<Committed, WriteError> {
        let mut refused: Option<String> = None;
        for i in 0..chunk.len() {
            let item = chunk.item(i);
            if let Some(reason) = self.write_item(&item).await? {
                refused.get_or_insert(reason);
            }
        }
        // The rest of the chunk is sent; the step finds the refused items by
        // writing the chunk again item by item (sent keys are skipped then).
        match refused {
            Some(reason) => Err(WriteError::Item(reason)),
            None => Ok(Committed::Separately),
        }
    }

    async fn complete(&mut self) -> Result<(), WriteError> {
        if let Some(mut c) = self.conn.take() {
            let _ = c.quit().await;
        }
        Ok(())
    }
}

/// The e-mail writer keeps no checkpoint of its own (its send log is keyed by
/// message); the claim tells it whose keys it records: the job, instance and
/// step.
#[async_trait]
impl CheckpointStore for EmailWriter {
    async fn claim(
        &mut self,
        key: &CheckpointKey,
        _fresh: bool,
    ) -> Result<Option<TargetCheckpoint>, WriteError> {
        self.scope = Scope {
            job: key.job.clone(),
            instance: key.instance_id,
            step: key.step.clone(),
        };
        Ok(None)
    }

    fn store_statements(&self, _: &CheckpointKey, _: &TargetCheckpoint) -> Vec<SqlStatement> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls() {
        assert_eq!(
            parse_smtp_url("smtp://mail.example.org:2525").unwrap(),
            (Security::Plain, "mail.example.org".into(), 2525)
        );
        assert_eq!(
            parse_smtp_url("smtp://mail.example.org:587?tls=starttls").unwrap(),
            (Security::StartTls, "mail.example.org".into(), 587)
        );
        assert_eq!(
            parse_smtp_url("smtps://mail.example.org").unwrap(),
            (Security::Implicit, "mail.example.org".into(), 465)
        );
        assert!(
            parse_smtp_url("smtp://u:secret@mail.example.org")
                .unwrap_err()
                .contains("username and password")
        );
        assert!(parse_smtp_url("http://x").is_err());
    }

    fn writer(toml: serde_json::Value) -> Result<EmailWriter, ConfigError> {
        let raw: RawEmailWriter = serde_json::from_value(toml).unwrap();
        raw.build(&crate::config::NoContext)
    }

    #[test]
    fn templates_are_strict_and_located() {
        let e = writer(serde_json::json!({
            "dry_run": "/tmp/x", "to_field": "email",
            "template": {"from": "a@x.org", "subject": "Hi", "text": "line\n{{ name }"}
        }))
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("template text line 2:"), "{e}");
        let w = writer(serde_json::json!({
            "dry_run": "/tmp/x", "to_field": "email",
            "template": {"from": "News <a@x.org>", "subject": "Hi {{ name }}", "text": "{{ greeting }}, {{ name }}",
                "list_unsubscribe": "https://x.org/u?e={{ email|urlencode }}",
                "list_unsubscribe_mailto": "unsub@x.org"}
        }))
        .unwrap();
        let item = serde_json::json!({"email": "b@y.org", "name": "Bo"});
        let e = w.render(&item).unwrap_err();
        assert_eq!(
            e,
            "the item has no field \"greeting\" (template text uses it)"
        );
        let item = serde_json::json!({"email": "b@y.org", "name": "Bo", "greeting": "Hello"});
        let m = w.render(&item).unwrap();
        let text = String::from_utf8(m.bytes).unwrap();
        assert!(text.contains("Subject: Hi Bo"), "{text}");
        assert!(text.contains("Hello, Bo"), "{text}");
        assert!(
            text.contains("List-Unsubscribe: <https://x.org/u?e=b%40y.org>, <mailto:unsub@x.org>"),
            "{text}"
        );
        assert!(text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
        assert_eq!(m.key, "b@y.org");
        assert_eq!(m.message_id, w.render(&item).unwrap().message_id);
    }
}
