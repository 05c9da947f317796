//! The value types every component's config shares: durations ([`Dur`]), byte
//! sizes ([`Size`]) and secrets ([`RawSecret`]), and [`Env`], where secrets and
//! time come from while a config is resolved.
//!
//! They live here, below every crate that has a config beside its
//! implementation (the stores in `sluice-cache`, the binary's own sections), so
//! that each writes `timeout = "250ms"` or `password = { env = … }` the same way
//! and there is one definition of each.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_spanned::Spanned;

use crate::{Clock, Secret, SystemClock};

/// A value that is not a duration or a size as written; the message names the
/// text and the form expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(String);

/// A duration written as text: `"200ms"`, `"5s"`, `"10m"`, `"6h"`, `"1d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

/// Parses `"5s"`-style durations.
///
/// # Errors
///
/// [`InvalidValue`] naming the bad text and the expected form.
pub fn parse_duration(s: &str) -> Result<Duration, InvalidValue> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        InvalidValue(format!("invalid duration {s:?} ({e}); write a number and a unit, like \"200ms\", \"5s\", \"10m\", \"6h\""))
    })
}

/// A byte size written as text: `"512KiB"`, `"256MiB"`, `"1GiB"`, `"1000"`, `"10MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            N(u64),
            S(String),
        }
        match Either::deserialize(d)? {
            Either::N(n) => Ok(Size(n)),
            Either::S(s) => parse_size(&s).map(Size).map_err(de::Error::custom),
        }
    }
}

/// Parses sizes: a number with an optional unit `B`, `KB`, `MB`, `GB` (powers of
/// 1000) or `KiB`, `MiB`, `GiB` (powers of 1024).
///
/// # Errors
///
/// [`InvalidValue`] naming the bad text.
pub fn parse_size(s: &str) -> Result<u64, InvalidValue> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        InvalidValue(format!(
            "invalid size {s:?}; write a number and a unit, like \"256MiB\""
        ))
    })?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(InvalidValue(format!(
                "invalid size unit {other:?} in {s:?}; use B, KB, MB, GB, KiB, MiB or GiB"
            )));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| InvalidValue(format!("size {s:?} is too large")))
}

/// Where secrets and time come from while a config is resolved.
pub struct Env<'a> {
    /// Reads an environment variable.
    pub var: &'a dyn Fn(&str) -> Option<String>,
    /// The clock for TTLs and quotas.
    pub clock: Arc<dyn Clock>,
    /// For commands that never call an upstream or take admin requests (`queue
    /// stats`, `job status`, `schedule list`, …): a secret whose variable or file
    /// is missing is not an error; it resolves to a placeholder that is never sent.
    pub secrets_optional: bool,
}

impl Env<'_> {
    /// The process environment and the system clock.
    pub fn process() -> Env<'static> {
        Env {
            var: &|n| std::env::var(n).ok(),
            clock: Arc::new(SystemClock),
            secrets_optional: false,
        }
    }

    /// The process environment for a command that only inspects state: missing
    /// secrets are not errors (see [`Env::secrets_optional`]).
    pub fn inspect() -> Env<'static> {
        Env {
            secrets_optional: true,
            ..Env::process()
        }
    }
}

/// A secret read at start-up: `{ env = "NAME" }` or `{ file = "/run/secrets/key" }`.
/// Never written inline, so config files can be committed; an inline value is an
/// error that never repeats the value.
#[derive(Debug, Clone)]
pub struct RawSecret {
    /// Name of the environment variable holding the secret.
    pub env: Option<Spanned<String>>,
    /// Path of a file holding the secret (surrounding whitespace trimmed).
    pub file: Option<Spanned<String>>,
}

/// The table form of [`RawSecret`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretTable {
    env: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
}

const INLINE_SECRET: &str = "a secret is never written inline (the value is not repeated here); \
     write { env = \"NAME\" } or { file = \"PATH\" }";

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RawSecret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{ env = \"NAME\" } or { file = \"PATH\" }")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawSecret, A::Error> {
                let t = RawSecretTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawSecret {
                    env: t.env,
                    file: t.file,
                })
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<RawSecret, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawSecret, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawSecret, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawSecret, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawSecret, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<RawSecret, A::Error> {
                Err(de::Error::custom(INLINE_SECRET))
            }
        }
        d.deserialize_any(V)
    }
}

/// A secret that cannot be read, with the place of what is wrong (the byte span of
/// the variable's name or the file's path, when the config kept it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct SecretError {
    /// Where in the config text the problem is written, when known.
    pub span: Option<Range<usize>>,
    /// What is wrong; never the secret's value.
    pub message: String,
}

impl RawSecret {
    /// Reads the secret. With [`Env::secrets_optional`], a missing variable or
    /// file is no error: the secret is a placeholder, never used by the commands
    /// that allow it (they call no upstream). A secret written wrongly is an error
    /// anyway.
    ///
    /// # Errors
    ///
    /// [`SecretError`]: the variable is not set or empty, the file cannot be read
    /// or is empty, or both or neither of `env` and `file` are given.
    pub fn read(&self, env: &Env<'_>) -> Result<Secret, SecretError> {
        match self.value(env) {
            Ok(v) => Ok(v),
            Err(_) if env.secrets_optional && self.env.is_some() != self.file.is_some() => {
                Ok(Secret::new("sluice-secret-not-loaded"))
            }
            Err((span, message)) => Err(SecretError { span, message }),
        }
    }

    /// The secret's value, or where it is written and what is wrong with it.
    fn value(&self, env: &Env<'_>) -> Result<Secret, (Option<Range<usize>>, String)> {
        Err(match (&self.env, &self.file) {
            (Some(name), None) => match (env.var)(name.get_ref()) {
                Some(v) if !v.is_empty() => return Ok(Secret::new(v)),
                Some(_) => (
                    Some(name.span()),
                    format!("environment variable {} is empty", name.get_ref()),
                ),
                None => (
                    Some(name.span()),
                    format!("environment variable {} is not set", name.get_ref()),
                ),
            },
            (None, Some(path)) => match std::fs::read_to_string(path.get_ref()) {
                Ok(v) if !v.trim().is_empty() => return Ok(Secret::new(v.trim().to_owned())),
                Ok(_) => (
                    Some(path.span()),
                    format!("secret file {} is empty", path.get_ref()),
                ),
                Err(e) => (
                    Some(path.span()),
                    format!("cannot read secret file {}: {e}", path.get_ref()),
                ),
            },
            _ => (
                None,
                "a secret is written { env = \"NAME\" } or { file = \"PATH\" }, exactly one of them"
                    .to_owned(),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("12XB").unwrap_err().to_string().contains("unit"));
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert!(
            parse_duration("5x")
                .unwrap_err()
                .to_string()
                .contains("\"5x\"")
        );
    }

    #[test]
    fn optional_secrets_are_placeholders_unless_written_wrongly() {
        let env = Env {
            var: &|_| None,
            clock: Arc::new(SystemClock),
            secrets_optional: true,
        };
        let named = RawSecret {
            env: Some(Spanned::new(3..7, "NOPE".to_owned())),
            file: None,
        };
        assert!(named.read(&env).is_ok());
        let neither = RawSecret {
            env: None,
            file: None,
        };
        assert!(
            neither
                .read(&env)
                .unwrap_err()
                .message
                .contains("exactly one")
        );
        let strict = Env {
            secrets_optional: false,
            ..env
        };
        let e = named.read(&strict).unwrap_err();
        assert_eq!(e.span, Some(3..7));
        assert_eq!(e.message, "environment variable NOPE is not set");
    }
}
