//! The value types of the config file: durations, sizes and secrets.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_spanned::Spanned;
use sluice_core::Secret;

use super::{ConfigError, Env, Source, span};

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
/// A message naming the bad text and the expected form.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration {s:?} ({e}); write a number and a unit, like \"200ms\", \"5s\", \"10m\", \"6h\"")
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
/// A message naming the bad text.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}; write a number and a unit, like \"256MiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {s:?}; use B, KB, MB, GB, KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// `retries = { max = 2, backoff = "200ms", max_backoff = "5s" }`: how often
/// and how long to retry (the defaults are those of the table it is in).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Retries after the first attempt.
    pub max: Option<u32>,
    /// Base of the exponential backoff (full jitter): each wait is uniform in
    /// `[0, min(max_backoff, backoff × 2^attempt)]`.
    pub backoff: Option<Dur>,
    /// Longest single wait.
    pub max_backoff: Option<Dur>,
}

impl RawRetry {
    /// `(max, backoff, max_backoff)`, each given or from `default`.
    pub fn or(&self, default: (u32, Duration, Duration)) -> (u32, Duration, Duration) {
        (
            self.max.unwrap_or(default.0),
            self.backoff.map_or(default.1, |d| d.0),
            self.max_backoff.map_or(default.2, |d| d.0),
        )
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

impl RawSecret {
    /// The secret's value, or where it is written and what is wrong with it.
    fn value(&self, env: &Env<'_>) -> Result<Secret, (Option<Range<usize>>, String)> {
        Err(match (&self.env, &self.file) {
            (Some(name), None) => match (env.var)(name.get_ref()) {
                Some(v) if !v.is_empty() => return Ok(Secret::new(v)),
                Some(_) => (
                    span(name),
                    format!("environment variable {} is empty", name.get_ref()),
                ),
                None => (
                    span(name),
                    format!("environment variable {} is not set", name.get_ref()),
                ),
            },
            (None, Some(path)) => match std::fs::read_to_string(path.get_ref()) {
                Ok(v) if !v.trim().is_empty() => return Ok(Secret::new(v.trim().to_owned())),
                Ok(_) => (
                    span(path),
                    format!("secret file {} is empty", path.get_ref()),
                ),
                Err(e) => (
                    span(path),
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

/// Reads a secret; an error at `key` when it cannot be. With
/// [`Env::secrets_optional`], a missing variable or file is no error: the secret
/// is a placeholder, never used by the commands that allow it (they call no
/// upstream). A secret written wrongly is an error anyway.
pub(super) fn read_secret(
    s: &RawSecret,
    src: &Source,
    env: &Env<'_>,
    key: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Secret> {
    match s.value(env) {
        Ok(v) => Some(v),
        Err(_) if env.secrets_optional && s.env.is_some() != s.file.is_some() => {
            Some(Secret::new("sluice-secret-not-loaded"))
        }
        Err((at, problem)) => {
            errs.push(src.err(at, key, problem));
            None
        }
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
        assert!(parse_size("12XB").unwrap_err().contains("unit"));
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert!(parse_duration("5x").unwrap_err().contains("\"5x\""));
    }
}
