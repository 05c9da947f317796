//! `error_when` and `count_when` rules: comparisons of an item's fields,
//! joined by `or` or by `and` (not both; `and` binds tighter when mixed is
//! refused, to keep rules readable).
//!
//! ```text
//! status >= 500
//! status >= 500 or status == 429
//! cache == "hit"
//! route != "-" and latency_ms > 1000
//! ```
//!
//! A value is a number or a `"quoted"` string. A number compares with a
//! numeric field (or a numeric string); a string with a field's text. A missing
//! field never matches (`!=` included).

use serde_json::Value;

/// A checked rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    any: bool,
    tests: Vec<Test>,
}

#[derive(Debug, Clone, PartialEq)]
struct Test {
    field: String,
    op: Op,
    value: Lit,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Num(f64),
    Str(String),
}

impl Rule {
    /// Parses a rule.
    ///
    /// # Errors
    ///
    /// What is wrong with it, and the form it takes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let form = "write comparisons like `status >= 500` or `cache == \"hit\"`, joined by `or` (or by `and`)";
        let tokens = tokenize(text).map_err(|e| format!("rule {text:?}: {e}; {form}"))?;
        let mut tests = Vec::new();
        let mut joiner: Option<&str> = None;
        let mut i = 0;
        loop {
            let (Some(field), Some(op), Some(value)) =
                (tokens.get(i), tokens.get(i + 1), tokens.get(i + 2))
            else {
                return Err(format!("rule {text:?} is incomplete; {form}"));
            };
            let op = match op.as_str() {
                "==" | "=" => Op::Eq,
                "!=" => Op::Ne,
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                ">=" => Op::Ge,
                other => return Err(format!("rule {text:?}: unknown operator {other:?}; {form}")),
            };
            let value = if let Some(s) = value.strip_prefix('\u{0}') {
                Lit::Str(s.to_owned())
            } else {
                Lit::Num(value.parse().map_err(|_| {
                    format!("rule {text:?}: {value:?} is neither a number nor a \"quoted\" string")
                })?)
            };
            if field.starts_with('\u{0}') || field.is_empty() {
                return Err(format!(
                    "rule {text:?}: a comparison starts with a field name; {form}"
                ));
            }
            tests.push(Test {
                field: field.clone(),
                op,
                value,
            });
            i += 3;
            match tokens.get(i).map(String::as_str) {
                None => break,
                Some(j @ ("or" | "and")) => {
                    if joiner.is_some_and(|k| k != j) {
                        return Err(format!(
                            "rule {text:?} mixes `and` and `or`; use one (or several count_when rules)"
                        ));
                    }
                    joiner = Some(if j == "or" { "or" } else { "and" });
                    i += 1;
                }
                Some(other) => {
                    return Err(format!(
                        "rule {text:?}: expected `or` or `and`, found {other:?}"
                    ));
                }
            }
        }
        Ok(Rule {
            any: joiner != Some("and"),
            tests,
        })
    }

    /// The default `error_when`: `status >= 500`.
    pub fn server_errors() -> Self {
        Rule {
            any: true,
            tests: vec![Test {
                field: "status".into(),
                op: Op::Ge,
                value: Lit::Num(500.0),
            }],
        }
    }

    /// Whether `item` matches.
    pub fn matches(&self, item: &Value) -> bool {
        let mut results = self.tests.iter().map(|t| t.matches(item));
        if self.any {
            results.any(|r| r)
        } else {
            results.all(|r| r)
        }
    }
}

impl Test {
    fn matches(&self, item: &Value) -> bool {
        let Some(v) = item.get(&self.field).filter(|v| !v.is_null()) else {
            return false;
        };
        let ord = match &self.value {
            Lit::Num(n) => {
                let x = match v {
                    Value::Number(x) => x.as_f64(),
                    Value::String(s) => s.trim().parse().ok(),
                    Value::Bool(b) => Some(f64::from(u8::from(*b))),
                    _ => None,
                };
                let Some(x) = x else { return false };
                x.partial_cmp(n)
            }
            Lit::Str(s) => {
                let text = match v {
                    Value::String(t) => t.clone(),
                    other => other.to_string(),
                };
                Some(text.as_str().cmp(s.as_str()))
            }
        };
        let Some(ord) = ord else { return false };
        use std::cmp::Ordering::*;
        match self.op {
            Op::Eq => ord == Equal,
            Op::Ne => ord != Equal,
            Op::Lt => ord == Less,
            Op::Le => ord != Greater,
            Op::Gt => ord == Greater,
            Op::Ge => ord != Less,
        }
    }
}

/// Words, operators and quoted strings (marked with a leading NUL).
fn tokenize(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut s = String::from('\u{0}');
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => s.extend(chars.next()),
                    Some(c) => s.push(c),
                    None => return Err("unclosed quote".into()),
                }
            }
            out.push(s);
        } else if "=!<>".contains(c) {
            let mut op = String::new();
            while let Some(&c) = chars.peek().filter(|c| "=!<>".contains(**c)) {
                op.push(c);
                chars.next();
            }
            out.push(op);
        } else {
            let mut w = String::new();
            while let Some(&c) = chars
                .peek()
                .filter(|c| !c.is_whitespace() && !"=!<>\"".contains(**c))
            {
                w.push(c);
                chars.next();
            }
            out.push(w);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rules_compare_fields() {
        let r = Rule::parse("status >= 500 or status == 429").unwrap();
        assert!(r.matches(&json!({"status": 503})));
        assert!(r.matches(&json!({"status": "429"})));
        assert!(!r.matches(&json!({"status": 404})));
        assert!(!r.matches(&json!({})));
        let h = Rule::parse(r#"cache == "hit""#).unwrap();
        assert!(h.matches(&json!({"cache": "hit"})));
        assert!(!h.matches(&json!({"cache": null})));
        let a = Rule::parse(r#"route != "-" and latency_ms>1000"#).unwrap();
        assert!(a.matches(&json!({"route": "air", "latency_ms": 1200.5})));
        assert!(!a.matches(&json!({"route": "-", "latency_ms": 1200.5})));
        assert_eq!(Rule::parse("status >= 500").unwrap(), Rule::server_errors());
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (rule, says) in [
            ("status >=", "incomplete"),
            ("status ~ 5", "unknown operator"),
            ("status >= five", "neither a number"),
            ("a == 1 or b == 2 and c == 3", "mixes"),
            ("a == 1 b == 2", "expected `or`"),
            (r#"a == "x"#, "unclosed quote"),
        ] {
            let e = Rule::parse(rule).unwrap_err();
            assert!(e.contains(says), "{rule}: {e}");
        }
    }
}
