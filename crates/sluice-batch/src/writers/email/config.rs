//! `writer = { kind = "email", … }`: the e-mail writer's config, as written in a
//! step's `writer` table. Its `template` table holds MiniJinja templates,
//! rendered once per item; the binary leaves them as written (no
//! `{{params.NAME}}` substitution inside `template`).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;
use sluice_core::config::{Env, RawSecret};

use super::{
    DryRun, EmailSpec, OnUncertain, RateSpec, SmtpSpec, Templates, WhereFrom, parse_smtp_url,
};
use crate::config::{BuildContext, ConfigError};

/// `kind = "email"`: one message per item, rendered from templates and sent
/// over SMTP (or written as `.eml` files in a dry run), each recorded under an
/// idempotency key so that a restart never sends a message twice.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmailWriter {
    /// The SMTP server: `smtp://host:port` (plain), `smtp://host:port?tls=starttls`
    /// (upgraded with STARTTLS) or `smtps://host:port` (TLS from the start).
    /// Not needed for a dry run.
    pub smtp: Option<String>,
    /// The SMTP user name (with `password`).
    pub username: Option<String>,
    /// The SMTP password: `{ env = "NAME" }` or `{ file = "PATH" }`, never inline.
    pub password: Option<EmailSecret>,
    /// How long one SMTP command may take (default `"30s"`).
    pub timeout: Option<String>,
    /// The item field that holds the recipient's address (or give `template.to`).
    pub to_field: Option<String>,
    /// The item field that holds the message's idempotency key (or give
    /// `template.key`); default: the recipient's address. Keys are scoped by job
    /// instance and step.
    pub key_field: Option<String>,
    /// The database of the send log (table `sluice_email_log`: one row per key,
    /// state `sending` → `sent`, or `failed` with the server's reply); default:
    /// the job repository's database.
    pub database: Option<String>,
    /// What to do with a key left `sending` by a process that died between
    /// handing the message over and recording the server's answer: `"skip"`
    /// (the default: a skip with the reason "interrupted while sending; may
    /// have been delivered") or `"resend"` (the same Message-ID, so receivers
    /// can drop the duplicate).
    pub on_uncertain: Option<OnUncertain>,
    /// The highest sending rate, `"N/s"`, shared by every writer with the same
    /// `rate_name` (across nodes when the process has Redis).
    pub rate: Option<String>,
    /// The most messages a day (UTC), shared as `rate` is.
    pub per_day: Option<u64>,
    /// The name of the shared rate limit; default: `email:HOST:PORT` of `smtp`.
    pub rate_name: Option<String>,
    /// Write each message as `DIR/KEY-HASH.eml` (the key's safe characters and
    /// a hash of it) instead of sending it: a directory,
    /// or `true` with `dry_run_dir`. Nothing is sent or recorded.
    pub dry_run: Option<DryRun>,
    /// The directory of a dry run with `dry_run = true`.
    pub dry_run_dir: Option<String>,
    /// The message's templates (MiniJinja, strict: a field the item lacks is
    /// an error naming it).
    pub template: RawTemplates,
}

/// `template = { … }`: MiniJinja templates rendered with the item's fields as
/// variables. Each of `subject`, `text` and `html` is written inline or read
/// from a file (`*_file`, relative to the working directory).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplates {
    /// The sender, like `"News <news@example.org>"`.
    pub from: String,
    /// The recipient (or give `to_field`), like `"{{ name }} <{{ email }}>"`.
    pub to: Option<String>,
    /// The Reply-To address.
    pub reply_to: Option<String>,
    /// The idempotency key (or give `key_field`).
    pub key: Option<String>,
    /// The subject line.
    pub subject: Option<String>,
    /// A file holding the subject template.
    pub subject_file: Option<String>,
    /// The plain-text body.
    pub text: Option<String>,
    /// A file holding the plain-text body template.
    pub text_file: Option<String>,
    /// The HTML body (optional; sent as multipart/alternative with the text).
    pub html: Option<String>,
    /// A file holding the HTML body template.
    pub html_file: Option<String>,
    /// Extra headers, name → template.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The one-click unsubscribe URL (`List-Unsubscribe: <URL>` and
    /// `List-Unsubscribe-Post: List-Unsubscribe=One-Click`).
    pub list_unsubscribe: Option<String>,
    /// The unsubscribe address (`List-Unsubscribe: <mailto:…>`).
    pub list_unsubscribe_mailto: Option<String>,
}

/// `{ env = "NAME" }` or `{ file = "PATH" }` (anything else is refused at
/// build time, without repeating it).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EmailSecret {
    /// The table form.
    Table(SecretTable),
    /// Anything else: an inline secret, refused.
    Inline(serde::de::IgnoredAny),
}

/// The table of [`EmailSecret`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretTable {
    /// The environment variable holding the secret.
    pub env: Option<String>,
    /// The file holding the secret.
    pub file: Option<String>,
}

impl EmailSecret {
    fn read(&self) -> Result<sluice_core::Secret, ConfigError> {
        let EmailSecret::Table(t) = self else {
            return Err(ConfigError::Email(
                "password: a secret is never written inline (the value is not repeated here); \
                 write { env = \"NAME\" } or { file = \"PATH\" }"
                    .into(),
            ));
        };
        RawSecret {
            env: t.env.clone().map(|v| Spanned::new(0..0, v)),
            file: t.file.clone().map(|v| Spanned::new(0..0, v)),
        }
        .read(&Env::process())
        .map_err(|e| ConfigError::Email(format!("password: {e}")))
    }
}

kind!(RawEmailWriter => dyn crate::Writer, |c, ctx| c.build(ctx)?);

/// Inline text, or the contents of `file`; exactly one (`required`) or at most one.
fn source(
    inline: Option<&String>,
    file: Option<&String>,
    keys: &'static [&'static str],
    required: bool,
) -> Result<Option<(String, String)>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::OneOf(keys)),
        (Some(s), None) => Ok(Some((
            keys[0].trim_start_matches("template.").into(),
            s.clone(),
        ))),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|s| Some((path.clone(), s)))
            .map_err(|e| ConfigError::Email(format!("{}: cannot read {path}: {e}", keys[1]))),
        (None, None) if required => Err(ConfigError::OneOf(keys)),
        (None, None) => Ok(None),
    }
}

impl RawEmailWriter {
    /// The writer (it connects to the log and the SMTP server when opened).
    ///
    /// # Errors
    ///
    /// A template that does not compile (naming it and its line), a bad SMTP
    /// URL or rate, a secret that cannot be read, missing keys.
    pub fn build(self, ctx: &dyn BuildContext) -> Result<super::EmailWriter, ConfigError> {
        let t = &self.template;
        let mut tpl = Templates::new();
        tpl.add("from", &t.from)?;
        let subject = source(
            t.subject.as_ref(),
            t.subject_file.as_ref(),
            &["template.subject", "template.subject_file"],
            true,
        )?;
        let text = source(
            t.text.as_ref(),
            t.text_file.as_ref(),
            &["template.text", "template.text_file"],
            true,
        )?;
        let html = source(
            t.html.as_ref(),
            t.html_file.as_ref(),
            &["template.html", "template.html_file"],
            false,
        )?;
        let mut spec = EmailSpec::default();
        for (slot, src) in [
            (&mut spec.subject, subject),
            (&mut spec.text, text),
            (&mut spec.html, html),
        ] {
            if let Some((name, body)) = src {
                tpl.add(&name, &body)?;
                *slot = Some(name);
            }
        }
        spec.to = match (&self.to_field, &t.to) {
            (Some(f), None) => WhereFrom::Field(f.clone()),
            (None, Some(s)) => {
                tpl.add("to", s)?;
                WhereFrom::Template("to".into())
            }
            _ => return Err(ConfigError::OneOf(&["to_field", "template.to"])),
        };
        spec.key = match (&self.key_field, &t.key) {
            (Some(f), None) => Some(WhereFrom::Field(f.clone())),
            (None, Some(s)) => {
                tpl.add("key", s)?;
                Some(WhereFrom::Template("key".into()))
            }
            (None, None) => None,
            _ => return Err(ConfigError::OneOf(&["key_field", "template.key"])),
        };
        if let Some(r) = &t.reply_to {
            tpl.add("reply_to", r)?;
            spec.reply_to = true;
        }
        for (name, value) in &t.headers {
            let n = format!("header {name}");
            tpl.add(&n, value)?;
            spec.headers.push((name.clone(), n));
        }
        if let Some(u) = &t.list_unsubscribe {
            tpl.add("list_unsubscribe", u)?;
            spec.unsubscribe_url = true;
        }
        if let Some(m) = &t.list_unsubscribe_mailto {
            tpl.add("list_unsubscribe_mailto", m)?;
            spec.unsubscribe_mailto = true;
        }
        spec.on_uncertain = self.on_uncertain.unwrap_or_default();
        spec.dry_run = match (&self.dry_run, &self.dry_run_dir) {
            (None | Some(DryRun::Flag(false)), None) => None,
            (Some(DryRun::Dir(d)), None) => Some(PathBuf::from(d)),
            (Some(DryRun::Flag(true)), Some(d)) => Some(PathBuf::from(d)),
            (Some(DryRun::Flag(true)), None) => {
                return Err(ConfigError::Needs {
                    what: "dry_run = true",
                    needs: "dry_run_dir",
                });
            }
            _ => {
                return Err(ConfigError::Email(
                    "dry_run_dir goes with dry_run = true (or write dry_run = \"DIR\")".into(),
                ));
            }
        };
        let timeout = match &self.timeout {
            Some(t) => crate::config::duration(t)?,
            None => Duration::from_secs(30),
        };
        spec.smtp = match &self.smtp {
            Some(url) => {
                let (tls, host, port) = parse_smtp_url(url).map_err(ConfigError::Email)?;
                let password = match &self.password {
                    Some(p) => Some(p.read()?),
                    None => None,
                };
                if password.is_some() != self.username.is_some() {
                    return Err(ConfigError::Email(
                        "username and password go together".into(),
                    ));
                }
                Some(SmtpSpec {
                    tls,
                    host,
                    port,
                    credentials: self.username.clone().zip(password),
                    timeout,
                })
            }
            None if spec.dry_run.is_some() => None,
            None => {
                return Err(ConfigError::Needs {
                    what: "the email writer",
                    needs: "smtp (or dry_run)",
                });
            }
        };
        if spec.dry_run.is_none() {
            spec.database = match self.database.clone().or_else(|| ctx.repository_url()) {
                Some(d) => Some(d),
                None => {
                    return Err(ConfigError::Needs {
                        what: "the email writer",
                        needs: "database (where the send log is kept)",
                    });
                }
            };
        }
        let per_second = match &self.rate {
            Some(r) => Some(parse_rate(r)?),
            None => None,
        };
        if per_second.is_some() || self.per_day.is_some() {
            let name = match (&self.rate_name, &spec.smtp) {
                (Some(n), _) => n.clone(),
                (None, Some(s)) => format!("email:{}:{}", s.host, s.port),
                (None, None) => "email:dry-run".into(),
            };
            spec.rate = Some(RateSpec {
                limiter: ctx.rate_limiter(&name, per_second, self.per_day),
            });
        }
        spec.templates = tpl;
        Ok(super::EmailWriter::new(spec))
    }
}

/// `"20/s"` → 20.
fn parse_rate(text: &str) -> Result<NonZeroU32, ConfigError> {
    text.trim()
        .strip_suffix("/s")
        .and_then(|n| n.trim().parse::<NonZeroU32>().ok())
        .ok_or_else(|| {
            ConfigError::Email(format!(
                "rate {text:?} must be messages a second, like \"20/s\""
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second() {
        assert_eq!(parse_rate("20/s").ok().map(NonZeroU32::get), Some(20));
        assert!(
            parse_rate("20/h")
                .unwrap_err()
                .to_string()
                .contains("like \"20/s\"")
        );
    }
}
