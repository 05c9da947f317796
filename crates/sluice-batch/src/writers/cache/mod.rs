//! Warming the gateway's cache: items become entries under the key of the request
//! a client would send for them.
//!
//! ```text
//! item {"sido": "서울", …}
//!   ─▶ path /air/getCtprvnRltmMesureDnsty?sidoName=%EC%84%9C%EC%9A%B8&returnType=json
//!   ─▶ key  gateway.key_for(path)            (route, canonical path and query)
//!   ─▶ store.put(key, 200 application/json, body = the item's JSON, fresh for ttl)
//! ```
//!
//! A client's `GET` of that path is then a hit (`Cache-Status: sluice; hit`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use sluice_cache::{CacheTarget, Entry, KeyErrorKind, PutOutcome, Store, StoreError};
use sluice_upstream::encode_component;
use thiserror::Error;

use crate::api::{Chunk, Committed, SqlStatement, WriteError, Writer};
use crate::model::Item;

mod config;

pub use config::RawCacheWriter;

/// A cache writer that cannot be built, or an item that has no path.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheWriterError {
    /// The key template is not a path template (no leading `/`, an unclosed
    /// `{`, an empty `{}`).
    #[error("{0}")]
    Template(String),
    /// The TTL is zero.
    #[error("the cache writer's TTL must be more than zero")]
    ZeroTtl,
    /// The item lacks (or has `null`) a field the template names.
    #[error("{0}")]
    MissingField(String),
}

/// One piece of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(String),
}

/// Writes items into a gateway's store as cache entries (any
/// [`CacheTarget`]; the gateway is one).
///
/// The key template is the path and query a client would request, with `{field}`
/// replaced by the item's field (percent-encoded; `{a.b}` reads a nested field;
/// numbers and booleans as written, objects and arrays as JSON text):
/// `/air/getCtprvnRltmMesureDnsty?sidoName={sido}&returnType=json`. The entry's
/// body is the item as JSON (`content-type: application/json`), status 200.
///
/// An item that lacks a field of the template (or has it `null`), or whose path
/// the gateway refuses, is a [`WriteError::Item`]; a template that matches no route
/// is [`WriteError::Fatal`]; a store that does not answer is
/// [`WriteError::Transient`]. Writing an entry again replaces it, so a retried
/// chunk does no harm.
#[derive(Debug)]
pub struct CacheWriter {
    gateway: Arc<dyn CacheTarget>,
    store: Arc<dyn Store>,
    template: Vec<Piece>,
    source: String,
    ttl: Duration,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
    content_type: Bytes,
}

impl CacheWriter {
    /// Writes into `gateway`'s store under the keys of `key_template`, fresh for
    /// `ttl`.
    ///
    /// # Errors
    ///
    /// When the template has an unclosed `{`, an empty `{}`, or does not start
    /// with `/`, or `ttl` is zero.
    pub fn new(
        gateway: impl CacheTarget,
        key_template: &str,
        ttl: Duration,
    ) -> Result<Self, CacheWriterError> {
        Self::for_target(Arc::new(gateway), key_template, ttl)
    }

    /// As [`new`](Self::new), into a shared target.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn for_target(
        gateway: Arc<dyn CacheTarget>,
        key_template: &str,
        ttl: Duration,
    ) -> Result<Self, CacheWriterError> {
        if !key_template.starts_with('/') {
            return Err(CacheWriterError::Template(format!(
                "the key template {key_template:?} must be a path starting with '/'"
            )));
        }
        if ttl.is_zero() {
            return Err(CacheWriterError::ZeroTtl);
        }
        Ok(Self {
            store: gateway.store().clone(),
            gateway,
            template: parse_template(key_template).map_err(CacheWriterError::Template)?,
            source: key_template.to_owned(),
            ttl,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            content_type: Bytes::from_static(b"application/json"),
        })
    }

    /// Writes into `store` instead of the gateway's own store (the keys still come
    /// from the gateway).
    #[must_use]
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = store;
        self
    }

    /// The stale windows of the entries (default none): served while revalidating
    /// for `stale_while_revalidate` after freshness ends, and in place of a failed
    /// upstream for `stale_if_error`.
    #[must_use]
    pub fn stale(mut self, stale_while_revalidate: Duration, stale_if_error: Duration) -> Self {
        self.stale_while_revalidate = stale_while_revalidate;
        self.stale_if_error = stale_if_error;
        self
    }

    /// The path and query the template gives for `item`.
    ///
    /// # Errors
    ///
    /// Naming the field the item lacks.
    pub fn path_for(&self, item: &Item) -> Result<String, CacheWriterError> {
        let mut out = String::with_capacity(self.source.len() + 16);
        for piece in &self.template {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => {
                    let v = field(item, f).ok_or_else(|| {
                        CacheWriterError::MissingField(format!(
                            "the item has no field {f:?} (key template {})",
                            self.source
                        ))
                    })?;
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    out.push_str(&encode_component(&text));
                }
            }
        }
        Ok(out)
    }
}

/// Splits a template into text and `{field}` pieces.
fn parse_template(t: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = t;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            pieces.push(Piece::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("the key template {t:?} has an unclosed '{{'"))?;
        let name = after[..close].trim();
        if name.is_empty() {
            return Err(format!("the key template {t:?} has an empty '{{}}'"));
        }
        pieces.push(Piece::Field(name.to_owned()));
        rest = &after[close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    Ok(pieces)
}

/// The non-null field `name` of `item`: a top-level field of that exact name, or
/// a dotted path.
fn field<'a>(item: &'a Value, name: &str) -> Option<&'a Value> {
    let v = item.get(name).or_else(|| {
        name.split('.').try_fold(item, |v, part| match v {
            Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => v.get(part),
        })
    })?;
    (!v.is_null()).then_some(v)
}

#[async_trait]
impl Writer for CacheWriter {
    async fn write(
        &mut self,
        chunk: Chunk<'_>,
        _: &[SqlStatement],
    ) -> Result<Committed, WriteError> {
        let now = self.gateway.now_millis();
        let items = chunk.items();
        let mut entries = Vec::with_capacity(items.len());
        for item in items.iter() {
            let path = self
                .path_for(item)
                .map_err(|e| WriteError::Item(e.to_string()))?;
            let key = self.gateway.key_for(&path).map_err(|e| {
                let msg = format!("no cache key for {path}: {e}");
                if e.kind == KeyErrorKind::NoRoute {
                    WriteError::Fatal(msg)
                } else {
                    WriteError::Item(msg)
                }
            })?;
            let body = serde_json::to_vec(item)
                .map_err(|e| WriteError::Item(format!("the item is not JSON: {e}")))?;
            let entry = Entry::new(
                200,
                vec![("content-type".to_owned(), self.content_type.clone())],
                Bytes::from(body),
                now,
                self.ttl,
                self.stale_while_revalidate,
                self.stale_if_error,
            );
            entries.push((key, Arc::new(entry)));
        }
        for (key, entry) in entries {
            match self.store.put(&key, entry).await {
                Ok(PutOutcome::Stored) => {}
                Ok(PutOutcome::TooLarge) => {
                    return Err(WriteError::Item(format!(
                        "the entry for {key} is larger than the {} store accepts ({} bytes)",
                        self.store.kind(),
                        self.store.max_entry_bytes()
                    )));
                }
                Err(e @ StoreError::Unavailable { .. }) => {
                    return Err(WriteError::Transient(e.to_string()));
                }
                Err(e) => return Err(WriteError::Fatal(e.to_string())),
            }
        }
        Ok(Committed::Separately)
    }
}
