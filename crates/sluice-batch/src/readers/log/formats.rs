//! Line formats: NCSA common and combined (nginx's and Apache's defaults, with
//! nginx's `$request_time $upstream_response_time` when they follow), an nginx
//! `log_format` string, a regex with named groups, JSON lines, and sluice's own
//! access log (`docs/specs/access-log.md`, `json` or `common`).
//!
//! Every format turns a line into one JSON object with normalized fields:
//!
//! | field | from |
//! |---|---|
//! | `time` | RFC 3339 in UTC with milliseconds (`2026-12-03T14:37:12.123Z`) |
//! | `time_ms` | the same instant, Unix milliseconds |
//! | `method`, `path`, `query`, `protocol` | the quoted request `"GET /a?b HTTP/1.1"` (`query`: after the `?`, or `null`) |
//! | `status`, `bytes` | numbers (`-` bytes: 0) |
//! | `referer`, `agent`, `remote_addr`, `remote_user` | strings, `-` as `null` |
//! | `request_time`, `upstream_time` | seconds, numbers (nginx), when present |
//!
//! A regex's other named groups (and a JSON line's other keys) are kept as they
//! are; sluice's own lines keep their own fields (`route`, `cache`, `key_hash`,
//! `latency_ms`, …) and gain `time_ms`.

use chrono::{DateTime, SecondsFormat, Utc};
use regex::Regex;
use serde_json::{Map, Value};

/// NCSA common: `host ident authuser [time] "request" status bytes`.
const COMMON: &str = r#"^(?P<remote_addr>\S+) (?P<ident>\S+) (?P<remote_user>\S+) \[(?P<time_local>[^\]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<bytes>\d+|-)"#;

/// Combined adds `"referer" "agent"`.
const COMBINED_TAIL: &str =
    r#" "(?P<http_referer>(?:[^"\\]|\\.)*)" "(?P<http_user_agent>(?:[^"\\]|\\.)*)""#;

/// What may follow a common or combined line: nginx timings.
const REST: &str = r"(?: (?P<rest>.*))?$";

/// How lines are parsed.
#[derive(Debug, Clone)]
pub enum LogFormat {
    /// A regex with named groups (common, combined, an nginx `log_format`, or
    /// the user's `pattern`); `rest` groups hold trailing timings.
    Regex(Regex),
    /// One JSON object per line.
    Json,
    /// sluice's gateway access log, `json` or `common` (told apart per line).
    Sluice(Regex),
}

/// Why a format cannot be built.
pub type FormatError = String;

impl LogFormat {
    /// The format named `name`: `combined`, `common`, `json`, `sluice`, or an
    /// nginx `log_format` string (anything holding a `$variable`).
    ///
    /// # Errors
    ///
    /// An unknown name, or a `log_format` with no variable that parses.
    pub fn named(name: &str) -> Result<Self, FormatError> {
        let re = |s: String| Regex::new(&s).map_err(|e| e.to_string());
        Ok(match name {
            "combined" => LogFormat::Regex(re(format!("{COMMON}{COMBINED_TAIL}{REST}"))?),
            "common" => LogFormat::Regex(re(format!("{COMMON}{REST}"))?),
            "json" => LogFormat::Json,
            "sluice" => LogFormat::Sluice(re(
                r#"^- - - \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<route>(?:[^"\\ ]|\\.)+) (?P<protocol>\S+)" (?P<status>\d{3}) (?P<bytes>\d+) (?P<cache>\S+) (?P<key_hash>[0-9a-f]{16}|-) (?P<latency_ms>\d+\.\d{3})$"#.to_owned(),
            )?),
            s if s.contains('$') => LogFormat::Regex(re(nginx_format(s)?)?),
            other => {
                return Err(format!(
                    "unknown log format {other:?}: use \"combined\", \"common\", \"json\", \"sluice\", \
                     an nginx log_format string (\"$remote_addr … $request_time\") or `pattern`"
                ));
            }
        })
    }

    /// A regex with named groups (`(?P<status>\d+)`) for a custom format.
    ///
    /// # Errors
    ///
    /// A regex that does not compile, or one without a named group.
    pub fn pattern(pattern: &str) -> Result<Self, FormatError> {
        let re = Regex::new(pattern).map_err(|e| format!("pattern: {e}"))?;
        if re.capture_names().flatten().next().is_none() {
            return Err("pattern has no named group, like (?P<status>\\d{3})".into());
        }
        Ok(LogFormat::Regex(re))
    }

    /// Parses one line (without its line end) into an item.
    ///
    /// # Errors
    ///
    /// Why the line does not fit the format.
    pub fn parse(&self, line: &str) -> Result<Value, String> {
        let mut out = Map::new();
        match self {
            LogFormat::Regex(re) => {
                let caps = re
                    .captures(line)
                    .ok_or_else(|| "the line does not match the log format".to_owned())?;
                for name in re.capture_names().flatten() {
                    if let Some(m) = caps.name(name) {
                        put_field(&mut out, name, m.as_str())?;
                    }
                }
            }
            LogFormat::Json => {
                let v: Value =
                    serde_json::from_str(line).map_err(|e| format!("not a JSON line: {e}"))?;
                let Value::Object(map) = v else {
                    return Err("a JSON line must be an object".into());
                };
                for (k, v) in map {
                    match v {
                        Value::String(s) if is_known(&k) => put_field(&mut out, &k, &s)?,
                        v => {
                            out.insert(canonical(&k).to_owned(), v);
                        }
                    }
                }
            }
            LogFormat::Sluice(re) => {
                if line.starts_with('{') {
                    let v: Value = serde_json::from_str(line)
                        .map_err(|e| format!("not a sluice JSON access log line: {e}"))?;
                    let Value::Object(map) = v else {
                        return Err("a sluice JSON access log line must be an object".into());
                    };
                    out = map;
                } else {
                    let caps = re.captures(line).ok_or_else(|| {
                        "the line is not a sluice access log line (json or common)".to_owned()
                    })?;
                    for name in re.capture_names().flatten() {
                        let Some(m) = caps.name(name) else { continue };
                        let s = m.as_str();
                        let v = match name {
                            "status" | "bytes" => number(s)?,
                            "latency_ms" => number(s)?,
                            "route" => Value::String(unescape(s)),
                            _ if s == "-" => Value::Null,
                            _ => Value::String(s.to_owned()),
                        };
                        out.insert(name.to_owned(), v);
                    }
                }
                let Some(t) = out.get("time").and_then(Value::as_str) else {
                    return Err("a sluice access log line needs its time".into());
                };
                let t = parse_time(t)?;
                put_time(&mut out, t);
            }
        }
        Ok(Value::Object(out))
    }
}

/// A field name as the item spells it (`time_local` → `time`).
fn canonical(name: &str) -> &str {
    match name {
        "time_local" | "time_iso8601" | "timestamp" | "@timestamp" | "ts" => "time",
        "http_referer" | "referrer" => "referer",
        "http_user_agent" | "user_agent" => "agent",
        "body_bytes_sent" | "bytes_sent" | "size" => "bytes",
        "upstream_response_time" => "upstream_time",
        "remote_host" | "client" => "remote_addr",
        other => other,
    }
}

/// Whether a string value of this name is normalized (a time, a number, a
/// request to split).
fn is_known(name: &str) -> bool {
    matches!(
        canonical(name),
        "time" | "request" | "status" | "bytes" | "request_time" | "upstream_time"
    )
}

/// Puts the field `name` (a group or JSON key) of text `s` into `out`,
/// normalized.
fn put_field(out: &mut Map<String, Value>, name: &str, s: &str) -> Result<(), String> {
    let name = canonical(name);
    match name {
        "time" => {
            let t = parse_time(s)?;
            put_time(out, t);
        }
        "request" => {
            let s = unescape(s);
            let mut parts = s.splitn(3, ' ');
            let method = parts.next().unwrap_or_default();
            match (parts.next(), parts.next()) {
                (Some(target), proto) => {
                    let (path, query) = match target.split_once('?') {
                        Some((p, q)) => (p, Value::from(q)),
                        None => (target, Value::Null),
                    };
                    out.insert("method".into(), method.into());
                    out.insert("path".into(), path.into());
                    out.insert("query".into(), query);
                    out.insert(
                        "protocol".into(),
                        proto.map_or(Value::Null, |p| p.trim().into()),
                    );
                }
                // A request line that is not "METHOD PATH …" (a probe, garbage).
                (None, _) => {
                    out.insert("method".into(), Value::Null);
                    out.insert("path".into(), Value::Null);
                    out.insert("request".into(), s.as_str().into());
                }
            }
        }
        "status" => {
            out.insert(name.into(), number(s)?);
        }
        "bytes" => {
            out.insert(name.into(), if s == "-" { 0.into() } else { number(s)? });
        }
        "request_time" | "upstream_time" => {
            out.insert(name.into(), timing(s));
        }
        "rest" => rest(out, s),
        _ if s == "-" => {
            out.insert(name.into(), Value::Null);
        }
        _ => {
            out.insert(name.into(), Value::String(unescape(s)));
        }
    }
    Ok(())
}

/// nginx timings after a common or combined line: up to two numbers
/// (`$request_time $upstream_response_time`), or `key=value` pairs
/// (`rt=0.120 urt="0.118"`, `request_time=…`, `upstream_response_time=…`);
/// anything else is kept as `extra`.
fn rest(out: &mut Map<String, Value>, s: &str) {
    let mut positional = 0;
    let mut extra = Vec::new();
    let tokens = tokens(s);
    for token in &tokens {
        let token = token.as_str();
        if let Some((k, v)) = token.split_once('=') {
            let key = match k {
                "rt" | "request_time" => "request_time",
                "urt" | "upstream_time" | "upstream_response_time" => "upstream_time",
                _ => {
                    extra.push(token);
                    continue;
                }
            };
            out.insert(key.into(), timing(v));
        } else if positional < 2 && (token == "-" || token.parse::<f64>().is_ok()) {
            let key = if positional == 0 {
                "request_time"
            } else {
                "upstream_time"
            };
            out.insert(key.into(), timing(token));
            positional += 1;
        } else {
            extra.push(token);
        }
    }
    if !extra.is_empty() {
        out.insert("extra".into(), extra.join(" ").into());
    }
}

/// Whitespace-separated tokens; a `"…"` part keeps its spaces (and loses its
/// quotes).
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A timing in seconds: a number, `-` as null; nginx's `0.004, 0.120` (several
/// upstreams tried) as their sum.
fn timing(s: &str) -> Value {
    let mut sum = 0.0;
    let mut any = false;
    for part in s.split([',', ':']) {
        if let Ok(v) = part.trim().parse::<f64>() {
            sum += v;
            any = true;
        }
    }
    if any {
        serde_json::Number::from_f64(sum).map_or(Value::Null, Value::Number)
    } else {
        Value::Null
    }
}

fn number(s: &str) -> Result<Value, String> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n.into());
    }
    s.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| format!("{s:?} is not a number"))
}

fn put_time(out: &mut Map<String, Value>, t: DateTime<Utc>) {
    out.insert(
        "time".into(),
        t.to_rfc3339_opts(SecondsFormat::Millis, true).into(),
    );
    out.insert("time_ms".into(), t.timestamp_millis().into());
}

/// A log time: `10/Oct/2000:13:55:36 -0700` (NCSA), RFC 3339
/// (`2026-12-03T14:37:12.123Z`, nginx's `$time_iso8601`), or Unix seconds
/// (`1733322456.123`, nginx's `$msec`).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_str(s, "%d/%b/%Y:%H:%M:%S %z") {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(secs) = s.parse::<f64>()
        && let Some(t) = DateTime::<Utc>::from_timestamp_millis((secs * 1000.0).round() as i64)
    {
        return Ok(t);
    }
    Err(format!(
        "time {s:?} is neither NCSA (10/Oct/2000:13:55:36 -0700), RFC 3339 nor Unix seconds"
    ))
}

/// Undoes `\"`, `\\` and `\xNN` escapes (nginx, Apache, sluice).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                match u8::from_str_radix(&hex, 16) {
                    Ok(b) if b.is_ascii() => out.push(b as char),
                    _ => {
                        out.push_str("\\x");
                        out.push_str(&hex);
                    }
                }
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// An nginx `log_format` string as a regex: each `$variable` a named group,
/// everything else literal.
fn nginx_format(format: &str) -> Result<String, FormatError> {
    let mut re = String::from("^");
    let mut rest = format;
    let mut groups = 0;
    let mut seen = std::collections::HashSet::new();
    while let Some(i) = rest.find('$') {
        re.push_str(&regex::escape(&rest[..i]));
        let after = &rest[i + 1..];
        let (name, tail) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("log format: unclosed ${{ in {format:?}"))?;
                (&braced[..end], &braced[end + 1..])
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        if name.is_empty() {
            re.push_str(r"\$");
            rest = after;
            continue;
        }
        let quoted = re.ends_with('"');
        let body = match name {
            "time_local" => r"[^\]]+",
            "status" => r"\d{3}",
            _ if quoted => r#"(?:[^"\\]|\\.)*"#,
            _ => r"\S+",
        };
        if seen.insert(name.to_owned()) {
            re.push_str(&format!("(?P<{name}>{body})"));
        } else {
            re.push_str(&format!("(?:{body})"));
        }
        groups += 1;
        rest = tail;
    }
    re.push_str(&regex::escape(rest));
    re.push('$');
    if groups == 0 {
        return Err(format!("log format {format:?} has no $variable"));
    }
    Ok(re)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NGINX: &str = r#"203.0.113.9 - alice [04/Dec/2026:10:15:32 +0100] "GET /air?station=12 HTTP/1.1" 200 5120 "https://example.org/" "Mozilla/5.0 (X11; Linux x86_64)" 0.120 0.118"#;

    #[test]
    fn nginx_combined_with_timings() {
        let v = LogFormat::named("combined").unwrap().parse(NGINX).unwrap();
        assert_eq!(v["time"], "2026-12-04T09:15:32.000Z");
        assert_eq!(v["time_ms"], 1_796_375_732_000_i64);
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/air");
        assert_eq!(v["query"], "station=12");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 5120);
        assert_eq!(v["referer"], "https://example.org/");
        assert_eq!(v["agent"], "Mozilla/5.0 (X11; Linux x86_64)");
        assert_eq!(v["remote_addr"], "203.0.113.9");
        assert_eq!(v["remote_user"], "alice");
        assert_eq!(v["request_time"], 0.12);
        assert_eq!(v["upstream_time"], 0.118);
    }

    #[test]
    fn apache_combined_and_common() {
        let line = r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#;
        let v = LogFormat::named("combined").unwrap().parse(line).unwrap();
        assert_eq!(v["time"], "2000-10-10T20:55:36.000Z");
        assert_eq!(v["path"], "/apache_pb.gif");
        assert_eq!(v["agent"], "Mozilla/4.08 [en] (Win98; I ;Nav)");
        assert!(v.get("request_time").is_none());
        let common =
            r#"127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 404 -"#;
        let v = LogFormat::named("common").unwrap().parse(common).unwrap();
        assert_eq!(v["status"], 404);
        assert_eq!(v["bytes"], 0);
        assert_eq!(v["remote_user"], Value::Null);
        assert!(LogFormat::named("combined").unwrap().parse(common).is_err());
    }

    #[test]
    fn escaped_quotes_and_key_value_timings() {
        let line = r#"::1 - - [04/Dec/2026:10:15:32 +0000] "GET /q?\"x\" HTTP/1.1" 502 0 "-" "curl/8" rt=1.500 uct="0.000" urt="0.700, 0.800""#;
        let v = LogFormat::named("combined").unwrap().parse(line).unwrap();
        assert_eq!(v["path"], "/q");
        assert_eq!(v["query"], "\"x\"");
        assert_eq!(v["referer"], Value::Null);
        assert_eq!(v["request_time"], 1.5);
        assert_eq!(v["upstream_time"], 1.5);
        assert_eq!(v["extra"], "uct=0.000");
    }

    #[test]
    fn an_nginx_log_format_string() {
        let f = LogFormat::named(
            r#"$remote_addr [$time_iso8601] "$request" $status $body_bytes_sent $request_time "$upstream_addr""#,
        )
        .unwrap();
        let v = f
            .parse(r#"10.0.0.1 [2026-12-04T10:00:00+00:00] "POST /x HTTP/2.0" 201 12 0.005 "10.1.1.1:80""#)
            .unwrap();
        assert_eq!(v["method"], "POST");
        assert_eq!(v["status"], 201);
        assert_eq!(v["bytes"], 12);
        assert_eq!(v["request_time"], 0.005);
        assert_eq!(v["upstream_addr"], "10.1.1.1:80");
        assert_eq!(v["time_ms"], 1_796_378_400_000_i64);
        assert!(LogFormat::named("$").is_err());
    }

    #[test]
    fn a_pattern_with_named_groups() {
        let f = LogFormat::pattern(r"^(?P<time>\S+) (?P<status>\d+) (?P<route>\w+) (?P<ms>\d+)$")
            .unwrap();
        let v = f.parse("2026-12-04T10:00:00Z 500 air 31").unwrap();
        assert_eq!(
            v,
            json!({"time": "2026-12-04T10:00:00.000Z", "time_ms": 1_796_378_400_000_i64,
                   "status": 500, "route": "air", "ms": "31"})
        );
        assert!(LogFormat::pattern(r"\d+").is_err());
        assert!(LogFormat::pattern(r"(?P<a>").is_err());
    }

    #[test]
    fn json_lines() {
        let f = LogFormat::named("json").unwrap();
        let v = f
            .parse(r#"{"@timestamp":"2026-12-04T10:00:00.250+01:00","request":"GET /a HTTP/1.1","status":"404","request_time":"0.010","upstream":"x"}"#)
            .unwrap();
        assert_eq!(v["time"], "2026-12-04T09:00:00.250Z");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["status"], 404);
        assert_eq!(v["request_time"], 0.01);
        assert_eq!(v["upstream"], "x");
        assert!(f.parse("[1]").is_err());
        assert!(f.parse(r#"{"time":"yesterday"}"#).is_err());
    }

    #[test]
    fn sluice_access_log_json_and_common() {
        // The lines of docs/specs/access-log.md.
        let f = LogFormat::named("sluice").unwrap();
        let v = f
            .parse(r#"{"time":"2026-12-03T14:37:12.123Z","method":"GET","route":"air","protocol":"HTTP/1.1","status":200,"bytes":1234,"cache":"miss","key_hash":"9f2c1e5b7d8a0643","latency_ms":812.407}"#)
            .unwrap();
        assert_eq!(v["route"], "air");
        assert_eq!(v["cache"], "miss");
        assert_eq!(v["latency_ms"], 812.407);
        assert_eq!(v["time_ms"], 1_796_308_632_123_i64);
        let c = f
            .parse(r#"- - - [2026-12-03T14:37:12.123Z] "GET air HTTP/1.1" 200 1234 miss 9f2c1e5b7d8a0643 812.407"#)
            .unwrap();
        assert_eq!(c, v);
        let none = f
            .parse(r#"- - - [2026-12-03T14:37:13.020Z] "GET - HTTP/1.1" 404 96 - - 0.051"#)
            .unwrap();
        assert_eq!(none["route"], "-");
        assert_eq!(none["cache"], Value::Null);
        assert_eq!(none["key_hash"], Value::Null);
        assert!(f.parse("garbage").is_err());
    }

    #[test]
    fn unknown_format_names_the_choices() {
        let e = LogFormat::named("apache2").unwrap_err();
        assert!(e.contains("\"combined\""), "{e}");
    }
}
