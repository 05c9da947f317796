//! jq filters (jaq), compiled once and run over JSON values: `ok_when` predicates
//! in the gateway, and `jq` processors and item/total extraction in batch jobs.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Ctx, Vars, data, unwrap_valr};
use jaq_json::{Num, Val};
use serde_json::Value;

use thiserror::Error;

use crate::body::MAX_DEPTH;

/// What a jq error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JqErrorKind {
    /// The source does not compile (syntax, undefined names).
    Compile,
    /// The filter raised an error on its input.
    Run,
    /// A value has no form on the other side (too deep, NaN in JSON).
    Convert,
}

/// A jq filter that does not compile, fails, or yields a value JSON cannot hold.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{message}")]
pub struct JqError {
    /// What the error is about.
    pub kind: JqErrorKind,
    /// What went wrong, and where in the source for compile errors.
    pub message: String,
}

impl JqError {
    fn new(kind: JqErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

fn convert(message: String) -> JqError {
    JqError::new(JqErrorKind::Convert, message)
}

type JqFilter = jaq_core::Filter<data::JustLut<Val>>;

/// A compiled jq filter.
pub struct Jq {
    source: String,
    filter: JqFilter,
    /// The same filter run directly over JSON, when it is a plain object of
    /// fields (see [`Fields`]).
    fields: Option<Fields>,
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
    pub fn compile(source: &str) -> Result<Self, JqError> {
        Ok(Self {
            source: source.to_owned(),
            filter: compile(source).map_err(|m| JqError::new(JqErrorKind::Compile, m))?,
            fields: Fields::parse(source),
        })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The first output for `input` (`None` when it produces nothing).
    pub fn first(&self, input: Val) -> Option<Result<Val, JqError>> {
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        self.filter
            .id
            .run((ctx, input))
            .map(unwrap_valr)
            .next()
            .map(|r| r.map_err(|e| JqError::new(JqErrorKind::Run, e.to_string())))
    }

    /// Every output for `input`, as JSON values.
    ///
    /// # Errors
    ///
    /// The first error the filter raises.
    pub fn run_json(&self, input: &Value) -> Result<Vec<Value>, JqError> {
        if let Some(out) = self.fields.as_ref().and_then(|f| f.run(input)) {
            return Ok(vec![out]);
        }
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut out = Vec::new();
        for r in self.filter.id.run((ctx, to_val(input)?)).map(unwrap_valr) {
            out.push(from_val(
                &r.map_err(|e| JqError::new(JqErrorKind::Run, e.to_string()))?,
            )?);
        }
        Ok(out)
    }
}

/// A filter that is nothing but an object built of the input's fields, such as
/// `{id: (.id | tonumber), station, ts: .time}`: each entry is `key` (short for
/// `key: .key`), `key: .field`, `key: (.field)` or `key: (.field | tonumber)`,
/// keys distinct. Such a filter runs directly over a JSON object, without jaq
/// and without converting the item to jaq values and back: for the values whose
/// result is certain (an object input; fields that are null, booleans, numbers or
/// strings; `tonumber` of a number, or of a string that is one plain JSON number
/// with no whitespace that fits JSON). Anything else (another input, a nested
/// value, a string `tonumber` fails on or jaq reads otherwise) goes to jaq,
/// which gives the same outputs and the same errors.
#[derive(Debug)]
struct Fields(Vec<Field>);

#[derive(Debug)]
struct Field {
    key: String,
    from: String,
    tonumber: bool,
}

/// Names that are jq keywords, never taken as a field here.
const KEYWORDS: &[&str] = &[
    "and", "or", "not", "if", "then", "elif", "else", "end", "as", "def", "reduce", "foreach",
    "try", "catch", "label", "import", "include", "__loc__", "null", "true", "false",
];

impl Fields {
    /// The fields of `source`, when it is such an object (else `None`).
    fn parse(source: &str) -> Option<Self> {
        let mut p = Parser(source.as_bytes(), 0);
        p.eat(b'{')?;
        let mut fields: Vec<Field> = Vec::new();
        loop {
            let key = p.ident()?;
            let (from, tonumber) = if p.eat(b':').is_some() {
                if p.eat(b'(').is_some() {
                    let from = p.field()?;
                    let tonumber = if p.eat(b'|').is_some() {
                        (p.ident()? == "tonumber").then_some(())?;
                        true
                    } else {
                        false
                    };
                    p.eat(b')')?;
                    (from, tonumber)
                } else {
                    (p.field()?, false)
                }
            } else {
                (key.clone(), false)
            };
            if fields.iter().any(|f| f.key == key) {
                return None;
            }
            fields.push(Field {
                key,
                from,
                tonumber,
            });
            if p.eat(b',').is_none() {
                break;
            }
        }
        p.eat(b'}')?;
        p.ws();
        (p.1 == p.0.len()).then_some(Self(fields))
    }

    /// The output for `input`, when certain without jaq.
    fn run(&self, input: &Value) -> Option<Value> {
        let obj = input.as_object()?;
        let mut out = serde_json::Map::new();
        for f in &self.0 {
            let v = obj.get(&f.from).unwrap_or(&Value::Null);
            let v = match v {
                Value::Null | Value::Bool(_) if f.tonumber => return None,
                Value::String(s) if f.tonumber => plain_number(s)?,
                Value::Array(_) | Value::Object(_) => return None,
                v => v.clone(),
            };
            out.insert(f.key.clone(), v);
        }
        Some(Value::Object(out))
    }
}

/// What `tonumber` and the conversion back to JSON make of `s` when it is one
/// plain JSON number (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`): an
/// integer that fits 64 bits, or a decimal read as JSON reads it; else `None`.
fn plain_number(s: &str) -> Option<Value> {
    let b = s.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let int_start = i;
    let n = digits(&mut i);
    if n == 0 || (n > 1 && b[int_start] == b'0') {
        return None;
    }
    let mut int = true;
    if b.get(i) == Some(&b'.') {
        i += 1;
        (digits(&mut i) > 0).then_some(())?;
        int = false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        (digits(&mut i) > 0).then_some(())?;
        int = false;
    }
    if i != b.len() {
        return None;
    }
    if int {
        s.parse::<i64>().ok().map(Value::from)
    } else {
        serde_json::from_str::<serde_json::Number>(s)
            .ok()
            .map(Value::Number)
    }
}

/// A cursor over a filter's source, for [`Fields::parse`].
struct Parser<'a>(&'a [u8], usize);

impl Parser<'_> {
    fn ws(&mut self) {
        while self.0.get(self.1).is_some_and(u8::is_ascii_whitespace) {
            self.1 += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.0.get(self.1) == Some(&c)).then(|| self.1 += 1)
    }

    fn ident(&mut self) -> Option<String> {
        self.ws();
        let start = self.1;
        while self
            .0
            .get(self.1)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            self.1 += 1;
        }
        let id = std::str::from_utf8(&self.0[start..self.1]).ok()?;
        let ok = id
            .as_bytes()
            .first()
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
            && !KEYWORDS.contains(&id);
        ok.then(|| id.to_owned())
    }

    /// `.name`, no space after the dot.
    fn field(&mut self) -> Option<String> {
        self.eat(b'.')?;
        if self.0.get(self.1).is_none_or(u8::is_ascii_whitespace) {
            return None;
        }
        self.ident()
    }
}

/// A JSON value as a jq value, converted directly (no text round trip).
///
/// # Errors
///
/// When the value nests deeper than [`MAX_DEPTH`] (values parsed by
/// [`crate::body`] never do).
pub fn to_val(v: &Value) -> Result<Val, JqError> {
    to_val_direct(v, 0).map_err(convert)
}

fn too_deep() -> String {
    format!("the value nests deeper than {MAX_DEPTH} levels")
}

fn to_val_direct(v: &Value, depth: usize) -> Result<Val, String> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    Ok(match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Val::Num(Num::from_integral(i))
            } else if let Some(u) = n.as_u64() {
                Val::Num(Num::from_integral(u))
            } else {
                Val::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => Val::from(s.clone()),
        Value::Array(a) => a
            .iter()
            .map(|v| to_val_direct(v, depth + 1))
            .collect::<Result<Val, String>>()?,
        Value::Object(o) => Val::obj(
            o.iter()
                .map(|(k, v)| Ok((Val::from(k.clone()), to_val_direct(v, depth + 1)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// A jq value as a JSON value, converted directly.
///
/// # Errors
///
/// When the value has no JSON form (NaN or infinite numbers) or nests deeper
/// than [`MAX_DEPTH`] (a filter can build such a value from a small input).
pub fn from_val(v: &Val) -> Result<Value, JqError> {
    from_val_at(v, 0).map_err(convert)
}

fn from_val_at(v: &Val, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("jq output: {}", too_deep()));
    }
    Ok(match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(Num::Int(i)) => Value::from(*i as i64),
        Val::Num(Num::Float(f)) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("jq output {f} is not a JSON number"))?,
        Val::Num(n) => serde_json::from_str(&n.to_string())
            .map_err(|e| format!("jq output {n} is not a JSON number: {e}"))?,
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(a) => Value::Array(
            a.iter()
                .map(|v| from_val_at(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Val::Obj(o) => {
            let mut m = serde_json::Map::with_capacity(o.len());
            for (k, v) in o.iter() {
                let key = match k {
                    Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                    other => other.to_string(),
                };
                m.insert(key, from_val_at(v, depth + 1)?);
            }
            Value::Object(m)
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_convert_both_ways_exactly() {
        let v = json!({"a": 1, "b": -2.5, "c": "서울", "d": [true, null, {"e": 18446744073709551615u64}]});
        assert_eq!(from_val(&to_val(&v).unwrap()).unwrap(), v);
        let jq = Jq::compile("{id: (.id | tonumber), x: (.a + 1), s: (.c + \"!\")}").unwrap();
        let out = jq
            .run_json(&json!({"id": "42", "a": 1, "c": "서울"}))
            .unwrap();
        assert_eq!(out, vec![json!({"id": 42, "x": 2, "s": "서울!"})]);
        assert_eq!(
            Jq::compile("1.5").unwrap().run_json(&json!(null)).unwrap(),
            vec![json!(1.5)]
        );
    }

    /// The filter run by jaq alone.
    fn by_jaq(jq: &Jq, input: &Value) -> Result<Vec<Value>, JqError> {
        let slow = Jq {
            source: jq.source.clone(),
            filter: compile(&jq.source).unwrap(),
            fields: None,
        };
        slow.run_json(input)
    }

    #[test]
    fn objects_of_fields_run_without_jaq_as_jaq_runs_them() {
        let bench = "{id: (.id | tonumber), station, ts, pm10: (.pm10 | tonumber), pm25: (.pm25 | tonumber), note}";
        let sources = [
            bench,
            "{ a : .b , c: (.d), e:(.f|tonumber) }",
            "{x: (.x | tonumber)}",
        ];
        for source in sources {
            let jq = Jq::compile(source).unwrap();
            assert!(jq.fields.is_some(), "{source}");
            let inputs = [
                json!({"id": "42", "station": "중구", "ts": "2026-01-01 00:00", "pm10": "149", "pm25": "67.9", "note": "a, \"b\""}),
                json!({"id": "-0", "pm10": 7, "pm25": "1e3", "station": null, "note": 1.5}),
                json!({"id": "9223372036854775807", "pm10": "-9223372036854775808", "pm25": "0.1e-2"}),
                json!({"id": "9223372036854775808", "pm10": "1", "pm25": "1"}),
                json!({"id": " 42", "pm10": "1", "pm25": "1"}),
                json!({"id": "1 2", "pm10": "1", "pm25": "1"}),
                json!({"id": "x", "pm10": "1", "pm25": "1"}),
                json!({"id": "1.", "pm10": "01", "pm25": "+1"}),
                json!({"id": "1e400", "pm10": "1", "pm25": "1"}),
                json!({"id": null, "pm10": "1", "pm25": "1"}),
                json!({"id": true, "b": [1], "d": {"e": 1}, "x": "NaN"}),
                json!({"b": "서울", "d": false, "f": "18446744073709551615", "x": 3}),
                json!({}),
                json!([1]),
                json!("text"),
                json!(null),
            ];
            for input in &inputs {
                assert_eq!(
                    jq.run_json(input),
                    by_jaq(&jq, input),
                    "{source} on {input}"
                );
            }
        }
        assert_eq!(
            Jq::compile(bench)
                .unwrap()
                .run_json(&json!({"id": "42", "station": "s", "pm10": "7", "pm25": "6.5"}))
                .unwrap(),
            vec![
                json!({"id": 42, "station": "s", "ts": null, "pm10": 7, "pm25": 6.5, "note": null})
            ]
        );
        for other in [
            "{a: .b | tonumber}",
            "{a: .b.c}",
            "{a: 1}",
            "{a, a}",
            "{if: .x}",
            "{a: (.b | tostring)}",
            "{a} | .a",
            "{a: . b}",
            "{}",
            ".a",
        ] {
            assert!(Fields::parse(other).is_none(), "{other}");
        }
    }

    #[test]
    fn deep_outputs_are_errors_not_overflows() {
        let jq = Jq::compile("reduce range(1000) as $i (0; [.])").unwrap();
        let e = jq.run_json(&json!(null)).unwrap_err();
        assert!(e.to_string().contains("deeper than 128"), "{e}");
        let mut deep = json!(1);
        for _ in 0..200 {
            deep = json!([deep]);
        }
        assert!(
            to_val(&deep)
                .unwrap_err()
                .to_string()
                .contains("deeper than 128")
        );
    }
}
