//! `[server]`: the listener, the admin token, the client-connection limits and
//! the gateway access log.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;
use sluice_core::Secret;
use sluice_gateway::{AccessLogFormat, AccessLogSpec, AccessLogTarget};

use super::values::{Dur, RawSecret, Size, read_secret};
use super::{ConfigError, Env, Source, span};

/// `[server]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: Option<Spanned<String>>,
    /// Bearer token for `/admin/*` and `/api/*`, at least 16 characters. Without
    /// it the admin API does not exist.
    pub admin_token: Option<RawSecret>,
    /// More API tokens, each with a name (who, in the audit log) and a role:
    /// `[[server.tokens]] name = "grafana", role = "viewer", token = { env =
    /// "SLUICE_VIEWER_TOKEN" }`. Roles: `viewer` reads everything, `operator`
    /// also runs, stops and restarts jobs, pauses triggers and queues, retries
    /// dead tasks and purges single keys, `admin` also deletes dead tasks and
    /// purges whole routes or prefixes. `admin_token` is an `admin` token named
    /// `admin`.
    #[serde(default)]
    pub tokens: Vec<RawToken>,
    /// How long a dashboard login lasts (the session cookie's lifetime).
    /// Default `12h`.
    pub session_ttl: Option<Spanned<Dur>>,
    /// On SIGINT/SIGTERM sluice stops accepting (`/readyz` answers 503 from then
    /// on), closes idle connections and waits this long for requests in flight.
    /// Default `30s`.
    pub shutdown_grace: Option<Dur>,
    /// Longest wait for a complete request header, counted from the connection's
    /// accept for its first request and from the first byte of each later one;
    /// bytes trickling in do not extend it. Then the connection is closed. Default
    /// `10s`.
    pub header_read_timeout: Option<Spanned<Dur>>,
    /// A keep-alive connection with no request in flight and no bytes moving for
    /// this long is closed. A slow request in flight is never cut by it (the
    /// upstream `timeout` bounds those). Default `60s`.
    pub idle_timeout: Option<Spanned<Dur>>,
    /// A client that takes none of a response's bytes for this long (it stopped
    /// reading) is cut off, as nginx's `send_timeout`. Default `60s`.
    pub send_timeout: Option<Spanned<Dur>>,
    /// Most client connections open at once. When reached, sluice stops accepting
    /// (new clients wait in the kernel's listen backlog) until one closes. Default
    /// `1024`.
    pub max_connections: Option<Spanned<u32>>,
    /// Largest request head (request line and headers); a larger one is answered
    /// 431 and the connection closed. At least `1KiB`. Default `64KiB`.
    pub max_header_bytes: Option<Spanned<Size>>,
    /// The gateway access log: one line per request the gateway answers (not
    /// sluice's own `/healthz`, `/metrics`, `/api`, `/admin`), `"json"` (one JSON
    /// object per line) or `"common"` (NCSA common log style with sluice's fields
    /// appended); fields and order in `docs/specs/access-log.md`. Lines hold the
    /// route and a hash of the cache key, never the path, query or a secret.
    /// Default `"off"`.
    pub access_log: Option<Spanned<String>>,
    /// Where the access log goes: `"-"` for standard output, or a file, appended
    /// to (created when missing) and reopened on SIGHUP after a log rotation; a
    /// relative path is relative to the working directory. Default `"-"`.
    pub access_log_path: Option<Spanned<String>>,
}

/// `[[server.tokens]]`: one API token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    /// Who holds it: shown in the audit log. Letters, digits, `-`, `_`, `.`.
    pub name: Spanned<String>,
    /// `viewer`, `operator` or `admin`.
    pub role: Spanned<String>,
    /// The token, `{ env = "NAME" }` or `{ file = "PATH" }`, at least 16
    /// characters.
    pub token: RawSecret,
}

/// What an API token may do; each role may do everything the one before it
/// may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also steers: runs, stops, pauses, retries, purges single keys.
    Operator,
    /// Also destroys: deletes dead tasks, purges routes and prefixes.
    Admin,
}

impl Role {
    /// `viewer`, `operator` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    /// Parses [`Role::as_str`]'s form.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Viewer, Self::Operator, Self::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// A checked API token.
#[derive(Debug, Clone)]
pub struct ApiToken {
    /// Its holder's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The token itself.
    pub secret: Secret,
}

/// `[server]`, checked.
pub(super) struct ServerSettings {
    pub(super) listen: SocketAddr,
    pub(super) admin_token: Option<Secret>,
    pub(super) tokens: Vec<ApiToken>,
    pub(super) session_ttl: Duration,
    pub(super) shutdown_grace: Duration,
    pub(super) connections: ConnectionSettings,
    pub(super) access_log: Option<AccessLogSpec>,
}

impl RawServer {
    /// Checks the listen address, the admin token and the connection limits.
    pub(super) fn check(
        &self,
        src: &Source,
        env: &Env<'_>,
        errs: &mut Vec<ConfigError>,
    ) -> ServerSettings {
        let listen = match &self.listen {
            Some(l) => l.get_ref().parse::<SocketAddr>().unwrap_or_else(|e| {
                errs.push(src.err(
                    span(l),
                    "server.listen",
                    format!(
                        "invalid address {:?}: {e}; write host:port like \"127.0.0.1:8080\"",
                        l.get_ref()
                    ),
                ));
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }),
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        };
        let admin_token = self
            .admin_token
            .as_ref()
            .and_then(|s| read_secret(s, src, env, "server.admin_token", errs));
        if admin_token.as_ref().is_some_and(|t| t.expose().len() < 16) {
            errs.push(src.err(
                None,
                "server.admin_token",
                "the admin token must be at least 16 characters",
            ));
        }
        let tokens = self.tokens(admin_token.as_ref(), src, env, errs);
        let session_ttl = match &self.session_ttl {
            Some(d) if d.get_ref().0 < Duration::from_secs(60) => {
                errs.push(src.err(
                    span(d),
                    "server.session_ttl",
                    "session_ttl must be at least 1m",
                ));
                Duration::from_secs(43_200)
            }
            Some(d) => d.get_ref().0,
            None => Duration::from_secs(43_200),
        };
        ServerSettings {
            listen,
            admin_token,
            tokens,
            session_ttl,
            shutdown_grace: self.shutdown_grace.map_or(Duration::from_secs(30), |d| d.0),
            connections: self.connections(src, errs),
            access_log: self.access_log(src, errs),
        }
    }

    /// Checks `access_log` (a known format) and `access_log_path` (not empty).
    fn access_log(&self, src: &Source, errs: &mut Vec<ConfigError>) -> Option<AccessLogSpec> {
        let target = match &self.access_log_path {
            Some(p) if p.get_ref().trim().is_empty() => {
                errs.push(src.err(
                    span(p),
                    "server.access_log_path",
                    "access_log_path is empty: write \"-\" for standard output or a file path",
                ));
                AccessLogTarget::Stdout
            }
            Some(p) => AccessLogTarget::parse(p.get_ref()),
            None => AccessLogTarget::Stdout,
        };
        let f = self.access_log.as_ref()?;
        if f.get_ref() == "off" {
            return None;
        }
        match f.get_ref().parse::<AccessLogFormat>() {
            Ok(format) => Some(AccessLogSpec { format, target }),
            Err(e) => {
                errs.push(src.err(span(f), "server.access_log", e));
                None
            }
        }
    }

    /// Checks `[[server.tokens]]`: names unique and well formed, known roles,
    /// secrets readable, long enough and all different. `admin_token`, when
    /// set, comes first as `admin`.
    fn tokens(
        &self,
        admin: Option<&Secret>,
        src: &Source,
        env: &Env<'_>,
        errs: &mut Vec<ConfigError>,
    ) -> Vec<ApiToken> {
        let mut out: Vec<ApiToken> = admin
            .map(|s| ApiToken {
                name: "admin".into(),
                role: Role::Admin,
                secret: s.clone(),
            })
            .into_iter()
            .collect();
        for (i, t) in self.tokens.iter().enumerate() {
            let key = format!("server.tokens[{i}]");
            let name = t.name.get_ref();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                errs.push(src.err(
                    span(&t.name),
                    format!("{key}.name"),
                    format!("{name:?} is not a token name: use letters, digits, '-', '_' or '.'"),
                ));
            } else if out.iter().any(|o| &o.name == name) {
                errs.push(src.err(
                    span(&t.name),
                    format!("{key}.name"),
                    format!(
                        "a token named {name:?} is already defined (admin_token is named \"admin\")"
                    ),
                ));
            }
            let Some(role) = Role::parse(t.role.get_ref()) else {
                errs.push(src.err(
                    span(&t.role),
                    format!("{key}.role"),
                    format!(
                        "unknown role {:?}: use \"viewer\", \"operator\" or \"admin\"",
                        t.role.get_ref()
                    ),
                ));
                continue;
            };
            let Some(secret) = read_secret(&t.token, src, env, &format!("{key}.token"), errs)
            else {
                continue;
            };
            if secret.expose().len() < 16 {
                errs.push(src.err(
                    span(&t.name),
                    format!("{key}.token"),
                    "a token must be at least 16 characters",
                ));
            } else if !env.secrets_optional
                && out.iter().any(|o| o.secret.expose() == secret.expose())
            {
                errs.push(src.err(
                    span(&t.name),
                    format!("{key}.token"),
                    "two tokens have the same value: each holder needs their own",
                ));
            }
            out.push(ApiToken {
                name: name.clone(),
                role,
                secret,
            });
        }
        out
    }

    /// Checks the connection limits: every one must be greater than zero.
    fn connections(&self, src: &Source, errs: &mut Vec<ConfigError>) -> ConnectionSettings {
        let d = ConnectionSettings::default();
        let mut dur = |v: &Option<Spanned<Dur>>, key: &str, default: Duration| match v {
            Some(s) if s.get_ref().0.is_zero() => {
                errs.push(src.err(
                    span(s),
                    format!("server.{key}"),
                    format!("{key} must be greater than zero"),
                ));
                default
            }
            Some(s) => s.get_ref().0,
            None => default,
        };
        let header_read_timeout = dur(
            &self.header_read_timeout,
            "header_read_timeout",
            d.header_read_timeout,
        );
        let idle_timeout = dur(&self.idle_timeout, "idle_timeout", d.idle_timeout);
        let send_timeout = dur(&self.send_timeout, "send_timeout", d.send_timeout);
        let max_connections = match &self.max_connections {
            Some(n) if *n.get_ref() == 0 => {
                errs.push(src.err(
                    span(n),
                    "server.max_connections",
                    "max_connections must be at least 1",
                ));
                d.max_connections
            }
            Some(n) => *n.get_ref() as usize,
            None => d.max_connections,
        };
        let max_header_bytes = match &self.max_header_bytes {
            Some(n) if n.get_ref().0 < 1024 => {
                errs.push(src.err(
                    span(n),
                    "server.max_header_bytes",
                    format!(
                        "max_header_bytes must be at least 1KiB (got {} bytes): an ordinary browser request is larger",
                        n.get_ref().0
                    ),
                ));
                d.max_header_bytes
            }
            Some(n) => usize::try_from(n.get_ref().0).unwrap_or(usize::MAX),
            None => d.max_header_bytes,
        };
        ConnectionSettings {
            header_read_timeout,
            idle_timeout,
            send_timeout,
            max_connections,
            max_header_bytes,
        }
    }
}

/// The checked client-connection limits of `[server]`; see [`RawServer`] for what
/// each one means. [`Default`] gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Longest wait for a complete request head.
    pub header_read_timeout: Duration,
    /// Longest quiet time of a connection with no request in flight.
    pub idle_timeout: Duration,
    /// Longest a response may wait for a client that stopped reading.
    pub send_timeout: Duration,
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
}

impl Default for ConnectionSettings {
    /// `10s`, `60s`, `60s`, `1024` and `64KiB`.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_header_bytes: 64 << 10,
        }
    }
}
