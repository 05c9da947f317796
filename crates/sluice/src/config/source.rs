//! The config file's text: parsing it section by section, and locating errors.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, IntoDeserializer};
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

use sluice_schedule::{RawTriggerKind, RawTriggerShared};

use super::{
    RawAlerts, RawConfig, RawEmail, RawJob, RawRoute, RawRule, RawStep, RawStore, RawTrigger,
    RawUpstream, RawWebhook, StoreKind,
};

/// The top-level keys, as serde would list them.
const SECTIONS: &str =
    "`server`, `store`, `cluster`, `upstream`, `route`, `repository`, `job`, `queue`, `alerts`";

/// A string field of a table value, e.g. the `name` of a broken upstream.
fn table_str(v: &Spanned<DeValue<'_>>, field: &str) -> Option<String> {
    match v.get_ref().get(field)?.get_ref() {
        DeValue::String(s) => Some(s.to_string()),
        _ => None,
    }
}

/// A configuration error with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub at: Option<(usize, usize)>,
    /// The key path, e.g. `route[0].upstream`.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((l, c)) = self.at {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": ")?;
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Errors found while resolving; all of them are reported, not just the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Source text and name, for locating errors.
#[derive(Debug, Clone)]
pub struct Source {
    /// File path as given.
    pub file: PathBuf,
    /// File contents.
    pub text: String,
}

impl Source {
    /// Reads a config file.
    ///
    /// # Errors
    ///
    /// When the file cannot be read.
    pub fn read(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                at: None,
                key: None,
                message: format!("cannot read the config file: {e}"),
            }])
        })?;
        Ok(Self {
            file: path.to_owned(),
            text,
        })
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(0)
            + 1;
        (line, col)
    }

    /// An error at `span`; without one, at the place of `key` in the file (the
    /// value of the longest prefix of `key` written there).
    pub fn err(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        msg: impl Into<String>,
    ) -> ConfigError {
        let key = key.into();
        let span = span.or_else(|| self.locate(&key));
        ConfigError {
            file: self.file.clone(),
            at: span.map(|s| self.line_col(s.start)),
            key: Some(key),
            message: msg.into(),
        }
    }

    /// A TOML parser or deserializer error, located, with the key on its line.
    fn toml_err(&self, e: &toml::de::Error, fallback: Option<Range<usize>>) -> ConfigError {
        let span = e.span().or(fallback);
        ConfigError {
            file: self.file.clone(),
            at: span.clone().map(|s| self.line_col(s.start)),
            key: span.and_then(|s| self.key_at(s.start)),
            message: e.message().trim().to_owned(),
        }
    }

    /// The span of the value at `key` (`upstream[0].rate_limit.per_day`), or of
    /// its longest prefix found in the file.
    fn locate(&self, key: &str) -> Option<Range<usize>> {
        let doc = DeTable::parse(&self.text).ok()?;
        let mut found = None;
        let mut table = doc.get_ref();
        'path: for seg in key.split('.') {
            let (name, indexes) = match seg.split_once('[') {
                Some((n, rest)) => (n, Some(rest)),
                None => (seg, None),
            };
            let Some((_, mut value)) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name)
            else {
                break;
            };
            found = Some(value.span());
            for ix in indexes.into_iter().flat_map(|r| r.split('[')) {
                let Some(v) = ix
                    .trim_end_matches(']')
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| value.get_ref().get(n))
                else {
                    break 'path;
                };
                value = v;
                found = Some(value.span());
            }
            match value.get_ref() {
                DeValue::Table(t) => table = t,
                _ => break,
            }
        }
        found
    }

    /// Parses the text into a [`RawConfig`], each section and each element of an
    /// array of tables (every `[[upstream]]`, `[[route]]`, `[[job]]`, and every
    /// `[[job.step]]` and `[[job.trigger]]`) on its own, so that every broken one
    /// is reported, not only the first. The ones that did not parse are left out
    /// and their errors kept in the result for [`RawConfig::resolve`], which
    /// reports them together with its own.
    ///
    /// # Errors
    ///
    /// Syntax errors (every one the parser recovers from), located, with the key
    /// on their line. A file that is not TOML is not checked further.
    pub fn parse(&self) -> Result<RawConfig, ConfigErrors> {
        let (doc, syntax) = DeTable::parse_recoverable(&self.text);
        if !syntax.is_empty() {
            return Err(ConfigErrors(
                syntax.iter().map(|e| self.toml_err(e, None)).collect(),
            ));
        }
        let mut raw = RawConfig::default();
        let p = &mut raw.partial;
        for (key, value) in doc.into_inner() {
            match key.get_ref().as_ref() {
                "server" => raw.server = self.de(value, &mut p.errors).unwrap_or_default(),
                "store" => raw.store = self.store(value, &mut p.errors).unwrap_or_default(),
                "cluster" => raw.cluster = self.de(value, &mut p.errors).unwrap_or_default(),
                "repository" => {
                    raw.repository = self.de(value, &mut p.errors).unwrap_or_default();
                }
                "queue" => raw.queue = self.de(value, &mut p.errors).unwrap_or_default(),
                "alerts" => raw.alerts = self.alerts(value, &mut p.errors),
                "upstream" => {
                    for (i, v) in self.elements::<RawUpstream>(value, &mut p.errors) {
                        let name = table_str(&v, "name");
                        match self.de::<RawUpstream>(v, &mut p.errors) {
                            Some(u) => {
                                raw.upstreams.push(u);
                                p.upstream_at.push(i);
                            }
                            None => p.broken_upstreams.extend(name),
                        }
                    }
                }
                "route" => {
                    for (i, v) in self.elements::<RawRoute>(value, &mut p.errors) {
                        if let Some(r) = self.de::<RawRoute>(v, &mut p.errors) {
                            raw.routes.push(r);
                            p.route_at.push(i);
                        }
                    }
                }
                "job" => {
                    for (i, v) in self.elements::<RawJob>(value, &mut p.errors) {
                        if let Some(j) = self.job(v, &mut p.errors) {
                            raw.jobs.push(j);
                            p.job_at.push(i);
                        }
                    }
                }
                other => p.errors.push(ConfigError {
                    file: self.file.clone(),
                    at: Some(self.line_col(key.span().start)),
                    key: self.key_at(key.span().start),
                    message: format!("unknown field `{other}`, expected one of {SECTIONS}"),
                }),
            }
        }
        Ok(raw)
    }

    /// Deserializes one section or element, recording its error.
    fn de<T: DeserializeOwned>(
        &self,
        value: Spanned<DeValue<'_>>,
        errs: &mut Vec<ConfigError>,
    ) -> Option<T> {
        let whole = value.span();
        T::deserialize(value.into_deserializer())
            .map_err(|e| errs.push(self.toml_err(&e, Some(whole))))
            .ok()
    }

    /// The elements of an array of tables, with their positions; a value that is
    /// not an array is reported as serde would.
    fn elements<'i, T: DeserializeOwned>(
        &self,
        value: Spanned<DeValue<'i>>,
        errs: &mut Vec<ConfigError>,
    ) -> Vec<(usize, Spanned<DeValue<'i>>)> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(a) => a.into_iter().enumerate().collect(),
            other => {
                self.de::<Vec<T>>(Spanned::new(span, other), errs);
                Vec::new()
            }
        }
    }

    /// Every element of an array of tables that parses (the others' errors
    /// recorded); none when the array is absent.
    fn each<T: DeserializeOwned>(
        &self,
        value: Option<Spanned<DeValue<'_>>>,
        errs: &mut Vec<ConfigError>,
    ) -> Vec<T> {
        let elements = match value {
            Some(v) => self.elements::<T>(v, errs),
            None => Vec::new(),
        };
        elements
            .into_iter()
            .filter_map(|(_, v)| self.de(v, errs))
            .collect()
    }

    /// A `[[job]]`, its steps and triggers parsed one by one; `None` (every
    /// error recorded) when any part is broken.
    fn job(&self, value: Spanned<DeValue<'_>>, errs: &mut Vec<ConfigError>) -> Option<RawJob> {
        let span = value.span();
        let t = match value.into_inner() {
            DeValue::Table(t) => t,
            other => return self.de(Spanned::new(span, other), errs),
        };
        let (mut steps, mut triggers) = (None, None);
        let mut rest = DeTable::new();
        for (k, v) in t {
            match k.get_ref().as_ref() {
                "step" => steps = Some(v),
                "trigger" => triggers = Some(v),
                _ => {
                    rest.insert(k, v);
                }
            }
        }
        let before = errs.len();
        let job = self.de::<RawJob>(Spanned::new(span, DeValue::Table(rest)), errs);
        let steps: Vec<RawStep> = self.each(steps, errs);
        let triggers: Vec<RawTrigger> = match triggers {
            Some(v) => self
                .elements::<RawTrigger>(v, errs)
                .into_iter()
                .filter_map(|(_, v)| self.trigger(v, errs))
                .collect(),
            None => Vec::new(),
        };
        if errs.len() > before {
            return None;
        }
        job.map(|j| RawJob {
            steps,
            triggers,
            ..j
        })
    }

    /// `[alerts]`: its own keys, then every `[[alerts.rule]]`, `[[alerts.webhook]]`
    /// and `[[alerts.email]]` on its own, so that every broken one is reported;
    /// the positions of those that parsed and the names of broken receivers are
    /// kept for [`RawConfig::resolve`].
    fn alerts(&self, value: Spanned<DeValue<'_>>, errs: &mut Vec<ConfigError>) -> RawAlerts {
        let span = value.span();
        let t = match value.into_inner() {
            DeValue::Table(t) => t,
            other => return self.de(Spanned::new(span, other), errs).unwrap_or_default(),
        };
        let (mut arrays, mut rest) = (Vec::new(), DeTable::new());
        for (k, v) in t {
            match k.get_ref().as_ref() {
                "rule" | "webhook" | "email" => arrays.push((k.get_ref().to_string(), v)),
                _ => {
                    rest.insert(k, v);
                }
            }
        }
        let mut raw: RawAlerts = self
            .de(Spanned::new(span, DeValue::Table(rest)), errs)
            .unwrap_or_default();
        let p = &mut raw.partial;
        for (key, v) in arrays {
            for (i, v) in self.elements::<toml::Value>(v, errs) {
                let name = table_str(&v, "name");
                match key.as_str() {
                    "rule" => {
                        if let Some(r) = self.de::<RawRule>(v, errs) {
                            raw.rule.push(r);
                            p.rule_at.push(i);
                        }
                    }
                    "webhook" => match self.de::<RawWebhook>(v, errs) {
                        Some(w) => {
                            raw.webhook.push(w);
                            p.webhook_at.push(i);
                        }
                        None => p.broken_receivers.extend(name),
                    },
                    _ => match self.de::<RawEmail>(v, errs) {
                        Some(e) => {
                            raw.email.push(e);
                            p.email_at.push(i);
                        }
                        None => p.broken_receivers.extend(name),
                    },
                }
            }
        }
        raw
    }

    /// `[store]`: its `kind` (default `memory`), then that kind's keys, each read
    /// straight from the TOML (not through serde's buffering of tagged enums,
    /// which would lose the position of every error): a key of another kind
    /// points at itself. `None` (the error recorded) when it is broken.
    fn store(&self, value: Spanned<DeValue<'_>>, errs: &mut Vec<ConfigError>) -> Option<RawStore> {
        let span = value.span();
        let t = match value.into_inner() {
            DeValue::Table(t) => t,
            other => return self.de(Spanned::new(span, other), errs),
        };
        let (mut kind, mut own) = (None, DeTable::new());
        for (k, v) in t {
            if k.get_ref() == "kind" {
                kind = Some(v);
            } else {
                own.insert(k, v);
            }
        }
        let kind: StoreKind = match kind {
            Some(k) => self.de(k, errs)?,
            None => StoreKind::default(),
        };
        let own = Spanned::new(span.clone(), DeValue::Table(own)).into_deserializer();
        RawStore::deserialize_kind(kind, own)
            .map_err(|e| errs.push(self.toml_err(&e, Some(span))))
            .ok()
    }

    /// A `[[job.trigger]]`: its `kind`, the keys every kind shares and the kind's
    /// own keys, each read straight from the TOML (not through serde's buffering
    /// of tagged enums, which would lose the position of every error); `None`
    /// (every error recorded) when any part is broken.
    fn trigger(
        &self,
        value: Spanned<DeValue<'_>>,
        errs: &mut Vec<ConfigError>,
    ) -> Option<RawTrigger> {
        let span = value.span();
        let t = match value.into_inner() {
            DeValue::Table(t) => t,
            other => return self.de(Spanned::new(span, other), errs),
        };
        let (mut kind, mut shared, mut own) = (None, DeTable::new(), DeTable::new());
        for (k, v) in t {
            match k.get_ref().as_ref() {
                "kind" => kind = Some(v),
                key if RawTriggerShared::KEYS.contains(&key) => {
                    shared.insert(k, v);
                }
                _ => {
                    own.insert(k, v);
                }
            }
        }
        let Some(kind) = kind else {
            let e = RawTriggerKind::missing(own.keys().map(|k| k.get_ref().as_ref()));
            errs.push(ConfigError {
                file: self.file.clone(),
                at: Some(self.line_col(span.start)),
                key: self.key_at(span.start).map(|k| format!("{k}.kind")),
                message: e.message,
            });
            return None;
        };
        let kind_span = kind.span();
        let kind: Option<String> = self.de(kind, errs);
        let shared: Option<RawTriggerShared> =
            self.de(Spanned::new(span.clone(), DeValue::Table(shared)), errs);
        let kind = kind.and_then(|k| {
            if !RawTriggerKind::KINDS.contains(&k.as_str()) {
                errs.push(
                    self.err(
                        Some(kind_span.clone()),
                        self.key_at(kind_span.start)
                            .unwrap_or_else(|| "kind".into()),
                        format!(
                            "unknown trigger kind {k:?}; kinds: {}",
                            RawTriggerKind::KINDS.join(", ")
                        ),
                    ),
                );
                return None;
            }
            let own = Spanned::new(span.clone(), DeValue::Table(own)).into_deserializer();
            RawTriggerKind::deserialize_kind(&k, own)
                .map_err(|e| errs.push(self.toml_err(&e, Some(span.clone()))))
                .ok()
        });
        Some(RawTrigger {
            shared: shared?,
            kind: kind?,
        })
    }

    /// The key written on the line of `offset`, with its table header
    /// (`route[1].ttl`); the table itself when the line is its header.
    pub fn key_at(&self, offset: usize) -> Option<String> {
        let offset = offset.min(self.text.len());
        let start = self.text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let line = self.text[start..].lines().next().unwrap_or("");
        let end = start + line.len();
        // The header this line is under (or is), with the index of every array of
        // tables on its path: the second step of the first job is `job[0].step[1]`.
        let mut table = None;
        let mut counts: std::collections::HashMap<String, usize> = Default::default();
        let mut current: std::collections::HashMap<String, usize> = Default::default();
        for l in self.text[..end].lines() {
            let t = l.trim();
            let (aot, name) =
                if let Some(n) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
                    (true, n)
                } else if let Some(n) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
                    (false, n)
                } else {
                    continue;
                };
            let segs: Vec<&str> = name.split('.').map(str::trim).collect();
            let mut rendered = String::new();
            let mut path = String::new();
            for (k, seg) in segs.iter().enumerate() {
                if k > 0 {
                    rendered.push('.');
                    path.push('.');
                }
                path.push_str(seg);
                if aot && k + 1 == segs.len() {
                    let n = counts.entry(format!("{rendered}{seg}")).or_insert(0);
                    rendered.push_str(&format!("{seg}[{n}]"));
                    current.insert(path.clone(), *n);
                    *n += 1;
                } else if let Some(n) = current.get(&path) {
                    rendered.push_str(&format!("{seg}[{n}]"));
                } else {
                    rendered.push_str(seg);
                }
            }
            table = Some(rendered);
        }
        let header = line.trim_start().starts_with('[');
        let key = line.split_once('=').map(|(k, _)| k.trim().to_owned());
        match (table, key) {
            (Some(t), Some(k)) if !header => Some(format!("{t}.{k}")),
            (Some(t), _) => Some(t),
            (None, Some(k)) => Some(k),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let s = Source {
            file: "f.toml".into(),
            text: "a = 1\nbb = 2\n".into(),
        };
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(8), (2, 3));
    }

    #[test]
    fn keys_of_nested_arrays_of_tables_carry_every_index() {
        let text = "[[job]]\nname = \"a\"\n[[job.step]]\nx = 1\n[[job]]\n[[job.step]]\n[[job.step]]\ny = 2\n";
        let s = Source {
            file: "f.toml".into(),
            text: text.into(),
        };
        assert_eq!(
            s.key_at(text.find("x =").unwrap()).as_deref(),
            Some("job[0].step[0].x")
        );
        assert_eq!(
            s.key_at(text.find("y =").unwrap()).as_deref(),
            Some("job[1].step[1].y")
        );
    }
}
