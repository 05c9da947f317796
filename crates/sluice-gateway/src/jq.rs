//! jq filters (jaq), compiled once and run over JSON values: `ok_when` predicates
//! in the gateway, and `jq` processors and item/total extraction in batch jobs.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Ctx, Vars, data, unwrap_valr};
use jaq_json::Val;
use serde_json::Value;

type JqFilter = jaq_core::Filter<data::JustLut<Val>>;

/// A compiled jq filter.
pub struct Jq {
    source: String,
    filter: JqFilter,
}

impl std::fmt::Debug for Jq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Jq").field(&self.source).finish()
    }
}

impl Jq {
    /// Compiles `source`.
    ///
    /// # Errors
    ///
    /// `invalid jq expression: …` naming what was expected where, or the undefined
    /// names.
    pub fn compile(source: &str) -> Result<Self, String> {
        Ok(Self {
            source: source.to_owned(),
            filter: compile(source)?,
        })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first output for `input` (`None` when it produces nothing).
    pub fn first(&self, input: Val) -> Option<Result<Val, String>> {
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        self.filter
            .id
            .run((ctx, input))
            .map(unwrap_valr)
            .next()
            .map(|r| r.map_err(|e| e.to_string()))
    }

    /// Every output for `input`, as JSON values.
    ///
    /// # Errors
    ///
    /// The first error the filter raises.
    pub fn run_json(&self, input: &Value) -> Result<Vec<Value>, String> {
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut out = Vec::new();
        for r in self.filter.id.run((ctx, to_val(input)?)).map(unwrap_valr) {
            out.push(from_val(&r.map_err(|e| e.to_string())?)?);
        }
        Ok(out)
    }
}

/// A JSON value as a jq value.
///
/// # Errors
///
/// When the value cannot be represented (never for values from JSON text).
pub fn to_val(v: &Value) -> Result<Val, String> {
    serde_json::from_value::<Val>(v.clone()).map_err(|e| e.to_string())
}

/// A jq value as a JSON value.
///
/// # Errors
///
/// When the value has no JSON form (NaN or infinite numbers).
pub fn from_val(v: &Val) -> Result<Value, String> {
    serde_json::from_str(&v.to_string()).map_err(|e| format!("jq output {v} is not JSON: {e}"))
}

fn compile(source: &str) -> Result<JqFilter, String> {
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs());
    let arena = Arena::default();
    let modules = Loader::new(defs)
        .load(
            &arena,
            File {
                code: source,
                path: (),
            },
        )
        .map_err(|errs| {
            let mut parts = Vec::new();
            for (_, e) in errs {
                parts.push(match e {
                    jaq_core::load::Error::Io(v) => format!("{v:?}"),
                    jaq_core::load::Error::Lex(v) => {
                        expected(source, v.iter().map(|(e, r)| (e.as_str(), *r)))
                    }
                    jaq_core::load::Error::Parse(v) => {
                        expected(source, v.iter().map(|(e, r)| (e.as_str(), *r)))
                    }
                });
            }
            format!("invalid jq expression: {}", parts.join("; "))
        })?;
    jaq_core::Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errs| {
            let names: Vec<String> = errs
                .into_iter()
                .flat_map(|(_, es)| es)
                .map(|(name, undef)| format!("undefined {} {name}", undef.as_str()))
                .collect();
            format!("invalid jq expression: {}", names.join(", "))
        })
}

/// "expected X at offset N" for lexer and parser errors, whose second part is the
/// rest of the source where the error was found.
fn expected<'a>(source: &str, errs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    errs.map(|(what, rest)| format!("expected {what} at offset {}", source.len() - rest.len()))
        .collect::<Vec<_>>()
        .join("; ")
}
