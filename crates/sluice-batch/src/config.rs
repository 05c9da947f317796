//! What the component configs share: the [`BuildContext`] a config is built in,
//! the [`ConfigError`] its `build` returns, and the value rules more than one
//! kind uses (a one-byte delimiter, a duration, an upstream by name).
//!
//! Each reader, processor, writer and tasklet kind keeps its config (`Raw*`, as
//! written in the TOML file) beside its implementation, and each family has one
//! `#[serde(tag = "kind")]` enum, its registry: [`RawReader`](crate::readers::RawReader),
//! [`RawProcessor`](crate::processors::RawProcessor),
//! [`RawWriter`](crate::writers::RawWriter) and
//! [`RawTasklet`](crate::tasklets::RawTasklet). The binary substitutes a run's
//! parameters into the TOML value, deserializes it into the family's enum and
//! calls its `build`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use sluice_cache::CacheTarget;
use sluice_core::{LocalQuota, Quota, SystemClock};
use sluice_upstream::{JqError, Upstream};
use thiserror::Error;

use crate::api::WriteError;
use crate::writers::CacheWriterError;

/// What building a component needs from the process it runs in: the configured
/// upstreams and the gateway's cache.
pub trait BuildContext {
    /// The upstream named `name`, if one is configured.
    fn upstream(&self, name: &str) -> Option<Arc<Upstream>>;

    /// The names of every configured upstream (for the error about an unknown one).
    fn upstream_names(&self) -> Vec<String>;

    /// The cache the cache writer fills, if there is one.
    fn cache_target(&self) -> Option<Arc<dyn CacheTarget>>;

    /// The share (`(index, of)`) of a partitioned step's input a reader reads;
    /// `None` (the default) reads it all. [`Shared`] sets it.
    fn share(&self) -> Option<(usize, usize)> {
        None
    }

    /// The rate limit named `name` (`per_second`, and `per_day` counted per
    /// UTC day), for writers that send (the e-mail writer): every component
    /// asking for the same name shares it. The default keeps it in this
    /// process; the binary shares it across nodes through Redis when it has
    /// Redis.
    fn rate_limiter(
        &self,
        name: &str,
        per_second: Option<NonZeroU32>,
        per_day: Option<u64>,
    ) -> Arc<dyn Quota> {
        let _ = name;
        Arc::new(LocalQuota::new(
            per_second,
            per_day,
            chrono_tz::UTC,
            Arc::new(SystemClock),
        ))
    }

    /// The URL of sluice's own job repository (`[repository] url`), when known:
    /// what a backup of the repository copies, and where the e-mail writer
    /// keeps its send log unless told otherwise. `None` (the default) where
    /// there is none.
    fn repository_url(&self) -> Option<String> {
        None
    }
}

/// A context with a partition share: what `inner` gives, and `share`.
#[derive(Clone, Copy)]
pub struct Shared<'a> {
    /// Where upstreams and the cache come from.
    pub inner: &'a dyn BuildContext,
    /// The share of the input (`(index, of)`), or `None` for all of it.
    pub share: Option<(usize, usize)>,
}

impl BuildContext for Shared<'_> {
    fn upstream(&self, name: &str) -> Option<Arc<Upstream>> {
        self.inner.upstream(name)
    }

    fn upstream_names(&self) -> Vec<String> {
        self.inner.upstream_names()
    }

    fn cache_target(&self) -> Option<Arc<dyn CacheTarget>> {
        self.inner.cache_target()
    }

    fn share(&self) -> Option<(usize, usize)> {
        self.share
    }

    fn rate_limiter(
        &self,
        name: &str,
        per_second: Option<NonZeroU32>,
        per_day: Option<u64>,
    ) -> Arc<dyn Quota> {
        self.inner.rate_limiter(name, per_second, per_day)
    }

    fn repository_url(&self) -> Option<String> {
        self.inner.repository_url()
    }
}

/// A component kind's config (`Raw*`, as written in the TOML file) that builds
/// a `T`: `dyn Reader`, `dyn Processor`, `dyn Writer` or `dyn Tasklet`. Every
/// kind implements it in its own `config.rs`; the family's registry enum (made
/// by `registry!`) implements it by asking the kind it holds.
pub trait Kind<T: ?Sized> {
    /// The component, in `ctx` (its upstreams, its cache, a reader's share).
    ///
    /// # Errors
    ///
    /// What the kind's config says is wrong.
    fn build(self, ctx: &dyn BuildContext) -> Result<Box<T>, ConfigError>;
}

/// Why a component config cannot be built. Its message is what the binary shows
/// after the job, step and table it is in.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A delimiter that is not one byte.
    #[error("delimiter {0:?} must be one ASCII character (or \"\\t\")")]
    Delimiter(String),
    /// An encoding label that names no encoding.
    #[error("unknown encoding {0:?}; use utf-8, euc-kr (also cp949) or another WHATWG label")]
    Encoding(String),
    /// Text that is not a duration (the message of the one duration parser,
    /// [`sluice_core::config::parse_duration`]).
    #[error(transparent)]
    Duration(#[from] sluice_core::config::InvalidValue),
    /// A jq program of a key that does not compile.
    #[error("{key}: {source}")]
    Jq {
        /// The key (`items`, `next`, `total`).
        key: &'static str,
        /// Why it does not compile.
        source: JqError,
    },
    /// A jq processor's program that does not compile.
    #[error(transparent)]
    Processor(JqError),
    /// A name of no configured upstream.
    #[error("unknown upstream {name:?}; upstreams: {}", none_or_list(known))]
    UnknownUpstream {
        /// The name.
        name: String,
        /// The configured upstreams.
        known: Vec<String>,
    },
    /// Keys of which exactly one must be given (none, or more than one, was).
    #[error("give exactly one of {}", or_list(.0))]
    OneOf(&'static [&'static str]),
    /// A kind (or mode) without a key it needs.
    #[error("{what} needs {needs}")]
    Needs {
        /// The kind or mode (`page pagination`, `sql_upsert`).
        what: &'static str,
        /// What it needs, as it is written.
        needs: &'static str,
    },
    /// A CSV reader with `columns` but no `header`: whether the first record is
    /// a header (renamed by `columns`) or data (named by them) must be said, or
    /// a data row is lost or a header read as data.
    #[error(
        "columns needs header = true (the first record is a header, renamed by columns) or header = false (every record is data)"
    )]
    ColumnsWithoutHeader,
    /// An empty `key` of the SQL reader.
    #[error("key must name the unique, ordered column(s)")]
    EmptyKey,
    /// A column spec that is not `"name TYPE [NOT NULL]"`.
    #[error("column {0:?} must be written \"name TYPE\", like \"pm10 DOUBLE PRECISION\"")]
    Column(String),
    /// A partition that does not exist (`index` not below `of`).
    #[error("partition {index} of {of} does not exist")]
    Partition {
        /// The 0-based index asked for.
        index: usize,
        /// How many partitions there are.
        of: usize,
    },
    /// No cache to write into (the process has no gateway).
    #[error("the cache writer needs the gateway's cache, and there is none here")]
    NoCache,
    /// A value that is out of range or does not fit with another.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key, as written.
        key: &'static str,
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// A SQL writer that cannot be built (its URL, its identifiers).
    #[error(transparent)]
    SqlWriter(WriteError),
    /// A cache writer that cannot be built.
    #[error(transparent)]
    CacheWriter(#[from] CacheWriterError),
    /// A log reader's or `log_stats` writer's setting that is not valid (a
    /// format, a pattern, a window, a rule).
    #[error("{0}")]
    Log(String),
    /// A backup step that cannot be built (its source, destination or level).
    #[error("{0}")]
    Backup(String),
    /// An e-mail writer that cannot be built (a template, the SMTP URL, a rate).
    #[error("{0}")]
    Email(String),
}

fn none_or_list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// `a, b or c`.
fn or_list(keys: &[&str]) -> String {
    match keys.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => keys.concat(),
    }
}

/// A delimiter as written (`","`, `"\t"`): one byte.
///
/// # Errors
///
/// [`ConfigError::Delimiter`] for anything longer.
pub fn delimiter(text: &str) -> Result<u8, ConfigError> {
    match text {
        d if d.len() == 1 => Ok(d.as_bytes()[0]),
        "\\t" => Ok(b'\t'),
        d => Err(ConfigError::Delimiter(d.to_owned())),
    }
}

/// A duration as written: `"200ms"`, `"5s"`, `"10m"`, `"6h"`, `"1d"`.
///
/// # Errors
///
/// [`ConfigError::Duration`] naming the text.
pub fn duration(text: &str) -> Result<Duration, ConfigError> {
    Ok(sluice_core::config::parse_duration(text)?)
}

/// The upstream named `name` in `ctx`.
///
/// # Errors
///
/// [`ConfigError::UnknownUpstream`], listing the configured ones.
pub fn upstream(ctx: &dyn BuildContext, name: &str) -> Result<Arc<Upstream>, ConfigError> {
    ctx.upstream(name)
        .ok_or_else(|| ConfigError::UnknownUpstream {
            name: name.to_owned(),
            known: ctx.upstream_names(),
        })
}

/// A context with no upstream and no cache (for configs that need neither, and
/// for tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoContext;

impl BuildContext for NoContext {
    fn upstream(&self, _: &str) -> Option<Arc<Upstream>> {
        None
    }

    fn upstream_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn cache_target(&self) -> Option<Arc<dyn CacheTarget>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_are_one_byte() {
        assert_eq!(delimiter(";").ok(), Some(b';'));
        assert_eq!(delimiter("\\t").ok(), Some(b'\t'));
        assert_eq!(
            delimiter("ab").unwrap_err().to_string(),
            "delimiter \"ab\" must be one ASCII character (or \"\\t\")"
        );
    }

    #[test]
    fn messages_keep_their_words() {
        assert_eq!(
            ConfigError::OneOf(&["page_param", "offset_param", "cursor_param"]).to_string(),
            "give exactly one of page_param, offset_param or cursor_param"
        );
        assert_eq!(
            ConfigError::OneOf(&["table", "query"]).to_string(),
            "give exactly one of table or query"
        );
        assert_eq!(
            upstream(&NoContext, "u").unwrap_err().to_string(),
            "unknown upstream \"u\"; upstreams: none"
        );
        assert!(
            duration("soon")
                .unwrap_err()
                .to_string()
                .starts_with("invalid duration \"soon\" (")
        );
        assert_eq!(duration("5s").ok(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn the_registries_refuse_unknown_kinds_and_keys() {
        use serde::Deserialize;
        use serde_json::json;

        let e = crate::readers::RawReader::deserialize(json!({
            "kind": "csv", "path": "a.csv", "delimeter": ";"
        }))
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("unknown field `delimeter`, expected one of `path`"),
            "{e}"
        );
        let e = crate::writers::RawWriter::deserialize(json!({"kind": "xml", "path": "a"}))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("unknown variant `xml`"), "{e}");
        let e = crate::tasklets::RawTasklet::deserialize(json!({"kind": "shell"}))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "missing field `command`");
        let p = crate::processors::RawProcessor::deserialize(json!({"kind": "jq", "expr": "."}));
        assert!(Kind::<dyn crate::Processor>::build(p.unwrap(), &NoContext).is_ok());
        let r = crate::readers::RawReader::deserialize(json!({
            "kind": "http_pages", "upstream": "u", "path": "/", "items": ".[]"
        }));
        let Err(e) = Kind::<dyn crate::Reader>::build(r.unwrap(), &NoContext) else {
            panic!("a reader without pagination was built");
        };
        assert_eq!(
            e.to_string(),
            "give exactly one of page_param, offset_param or cursor_param"
        );
    }
}
