//! Presets: what one portal family needs of an upstream, set by one name.
//!
//! `preset = "data.go.kr"` on an `[[upstream]]` stands for what every client of
//! Korea's public data portal writes by hand (see `public-data-portal.md`):
//!
//! - the service key stored raw and percent-encoded exactly once (sluice always
//!   does this for `secret_query`);
//! - the result-code table ([`CodeRule`] per code): `00` success, `03` an empty
//!   result, `01 02 04 05 99` retried, `22` the daily quota spent (the local
//!   budget is then spent until the reset, and a batch load suspends until it),
//!   every other code a failure whose error names the code and what it means;
//! - the `ok_when` predicate derived from that table, over the envelope's
//!   `resultCode` and the gateway layer's `returnReasonCode`;
//! - the daily quota's reset at midnight in `Asia/Seoul`;
//! - successful bodies normalised ([`Preset::normalize`]): XML converted to
//!   JSON, `response.body.items` made a list whatever the portal sent (a list,
//!   `{"item": [...]}`, `{"item": {...}}` for a lone row, `""`, `{}` or nothing),
//!   and `numOfRows`, `pageNo`, `totalCount` made numbers, so that the gateway's
//!   clients and the batch readers see one shape;
//! - the paging of the `http_pages` reader: `pageNo`, `numOfRows`,
//!   `.response.body.items[]`, `.response.body.totalCount`.
//!
//! Each part can be overridden in the upstream's own config (`codes`,
//! `ok_when`, `normalize = false`, the reader's keys).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// What an upstream error code means for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeAction {
    /// A success.
    Ok,
    /// A success with no data (cached like any answer).
    Empty,
    /// A temporary failure: retried with backoff.
    Retry,
    /// The upstream's own daily quota is spent: no call until the reset.
    Quota,
    /// A failure that retrying does not mend (bad key, bad request).
    Fail,
}

impl CodeAction {
    /// Parses `ok`, `empty`, `retry`, `quota` or `fail`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ok" => Self::Ok,
            "empty" => Self::Empty,
            "retry" => Self::Retry,
            "quota" => Self::Quota,
            "fail" => Self::Fail,
            _ => return None,
        })
    }

    /// Whether the code is a success (`ok` or `empty`).
    pub fn is_success(self) -> bool {
        matches!(self, Self::Ok | Self::Empty)
    }
}

/// One row of a result-code table: what the code means and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRule {
    /// What to do on it.
    pub action: CodeAction,
    /// The portal's message for it and what it usually means, for errors.
    pub meaning: String,
}

/// A named set of upstream defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Preset {
    /// Korea's public data portal, `apis.data.go.kr`.
    DataGoKr,
}

/// The names [`Preset::parse`] knows, for errors.
pub const PRESET_NAMES: &[&str] = &["data.go.kr"];

/// data.go.kr's result codes: (code, action, meaning).
const DATA_GO_KR_CODES: &[(&str, CodeAction, &str)] = &[
    ("00", CodeAction::Ok, "NORMAL_SERVICE"),
    ("0", CodeAction::Ok, "NORMAL_SERVICE"),
    ("000", CodeAction::Ok, "NORMAL_SERVICE"),
    (
        "01",
        CodeAction::Retry,
        "APPLICATION_ERROR: a fault at the provider; retried",
    ),
    (
        "02",
        CodeAction::Retry,
        "DB_ERROR: the provider's database failed; retried",
    ),
    (
        "03",
        CodeAction::Empty,
        "NODATA_ERROR: no data for this request (an empty result)",
    ),
    (
        "04",
        CodeAction::Retry,
        "HTTP_ERROR at the provider; retried",
    ),
    (
        "05",
        CodeAction::Retry,
        "SERVICETIME_OUT: the provider timed out; retried",
    ),
    (
        "10",
        CodeAction::Fail,
        "INVALID_REQUEST_PARAMETER_ERROR: a request parameter is wrong",
    ),
    (
        "11",
        CodeAction::Fail,
        "NO_MANDATORY_REQUEST_PARAMETERS_ERROR: a required parameter is missing",
    ),
    (
        "12",
        CodeAction::Fail,
        "NO_OPENAPI_SERVICE_ERROR: unknown or retired service (check the path)",
    ),
    (
        "20",
        CodeAction::Fail,
        "SERVICE_ACCESS_DENIED_ERROR: the key is not approved for this service",
    ),
    (
        "21",
        CodeAction::Fail,
        "TEMPORARILY_DISABLE_THE_SERVICEKEY_ERROR: the key is suspended",
    ),
    (
        "22",
        CodeAction::Quota,
        "LIMITED_NUMBER_OF_SERVICE_REQUESTS_EXCEEDS_ERROR: the daily quota is spent until midnight KST",
    ),
    (
        "30",
        CodeAction::Fail,
        "SERVICE_KEY_IS_NOT_REGISTERED_ERROR: wrong key, or the key encoded twice (store the raw \"Decoding\" key)",
    ),
    (
        "31",
        CodeAction::Fail,
        "DEADLINE_HAS_EXPIRED_ERROR: the key's usage period ended",
    ),
    (
        "32",
        CodeAction::Fail,
        "UNREGISTERED_IP_ERROR: this server's IP is not registered for the key",
    ),
    (
        "33",
        CodeAction::Fail,
        "UNSIGNED_CALL_ERROR: the call is not signed",
    ),
    ("99", CodeAction::Retry, "UNKNOWN_ERROR; retried"),
];

impl Preset {
    /// The preset called `name` (`data.go.kr`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "data.go.kr" => Some(Self::DataGoKr),
            _ => None,
        }
    }

    /// The preset's name, as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            Self::DataGoKr => "data.go.kr",
        }
    }

    /// The zone whose midnight resets the daily quota.
    pub fn timezone(self) -> &'static str {
        match self {
            Self::DataGoKr => "Asia/Seoul",
        }
    }

    /// The result-code table.
    pub fn codes(self) -> BTreeMap<String, CodeRule> {
        match self {
            Self::DataGoKr => DATA_GO_KR_CODES
                .iter()
                .map(|(c, action, meaning)| {
                    (
                        (*c).to_owned(),
                        CodeRule {
                            action: *action,
                            meaning: (*meaning).to_owned(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// The `ok_when` predicate accepting the success codes of `codes`: the
    /// envelope's `resultCode` (under `response.header`, or at the top level),
    /// else the gateway layer's `returnReasonCode` (always an error).
    pub fn ok_when(self, codes: &BTreeMap<String, CodeRule>) -> String {
        match self {
            Self::DataGoKr => {
                let ok: Vec<String> = codes
                    .iter()
                    .filter(|(_, r)| r.action.is_success())
                    .map(|(c, _)| format!("$c == {}", Value::String(c.clone())))
                    .collect();
                let test = if ok.is_empty() {
                    "false".to_owned()
                } else {
                    ok.join(" or ")
                };
                format!(
                    "((.response.header.resultCode // .resultCode // \
                     .OpenAPI_ServiceResponse.cmmMsgHeader.returnReasonCode // \"\") | tostring) \
                     as $c | {test}"
                )
            }
        }
    }

    /// The `http_pages` reader's defaults: (page parameter, size parameter,
    /// items filter, total filter).
    pub fn paging(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Self::DataGoKr => (
                "pageNo",
                "numOfRows",
                ".response.body.items[]",
                ".response.body.totalCount",
            ),
        }
    }

    /// Normalises a successful body (already JSON) in place; see the module doc.
    pub fn normalize(self, v: &mut Value) {
        match self {
            Self::DataGoKr => {
                let Some(body) = v
                    .get_mut("response")
                    .and_then(|r| r.get_mut("body"))
                    .and_then(Value::as_object_mut)
                else {
                    return;
                };
                let items = body.remove("items").unwrap_or(Value::Null);
                body.insert("items".to_owned(), Value::Array(item_list(items)));
                for k in ["numOfRows", "pageNo", "totalCount"] {
                    if let Some(n) = body
                        .get(k)
                        .and_then(Value::as_str)
                        .and_then(|s| s.trim().parse::<u64>().ok())
                    {
                        body.insert(k.to_owned(), Value::from(n));
                    }
                }
            }
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The rows of an `items` value, whatever shape the portal gave it.
fn item_list(items: Value) -> Vec<Value> {
    match items {
        Value::Array(a) => a,
        Value::Object(mut o) if o.len() == 1 && o.contains_key("item") => {
            item_list(o.remove("item").unwrap_or(Value::Null))
        }
        Value::Object(o) if o.is_empty() => Vec::new(),
        Value::Null => Vec::new(),
        Value::String(s) if s.trim().is_empty() => Vec::new(),
        other => vec![other],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OkWhen;
    use serde_json::json;

    fn normalized(v: Value) -> Value {
        let mut v = v;
        Preset::DataGoKr.normalize(&mut v);
        v["response"]["body"].clone()
    }

    #[test]
    fn items_become_a_list_whatever_the_portal_sent() {
        let row = json!({"stationName": "종로구"});
        for (items, want) in [
            (json!({"item": [row.clone(), row.clone()]}), 2),
            (json!({"item": row.clone()}), 1),
            (json!([row.clone()]), 1),
            (json!(""), 0),
            (json!({}), 0),
            (json!({"item": ""}), 0),
            (Value::Null, 0),
        ] {
            let b = normalized(
                json!({"response": {"body": {"items": items.clone(), "totalCount": "7"}}}),
            );
            assert_eq!(b["items"].as_array().map(Vec::len), Some(want), "{items}");
            assert_eq!(b["totalCount"], json!(7));
        }
        // No `items` key at all: an empty list.
        let b = normalized(json!({"response": {"body": {"numOfRows": "10", "pageNo": "2"}}}));
        assert_eq!(b, json!({"items": [], "numOfRows": 10, "pageNo": 2}));
    }

    #[test]
    fn the_derived_ok_when_follows_the_code_table() {
        let p = Preset::DataGoKr;
        let mut codes = p.codes();
        let ok = OkWhen::compile(&p.ok_when(&codes)).unwrap();
        let body = |c: &str| format!(r#"{{"response":{{"header":{{"resultCode":"{c}"}}}}}}"#);
        assert!(ok.check(body("00").as_bytes()).is_ok());
        assert!(ok.check(body("03").as_bytes()).is_ok());
        let rej = ok.check(body("22").as_bytes()).unwrap_err();
        assert_eq!(rej.code.as_deref(), Some("22"));
        assert!(ok.check(br#"{"resultCode":"0"}"#).is_ok());
        let gw = b"<OpenAPI_ServiceResponse><cmmMsgHeader><returnReasonCode>30</returnReasonCode></cmmMsgHeader></OpenAPI_ServiceResponse>";
        assert_eq!(ok.check(gw).unwrap_err().code.as_deref(), Some("30"));
        // An override: "03" is a failure for this upstream.
        codes.get_mut("03").unwrap().action = CodeAction::Fail;
        let ok = OkWhen::compile(&p.ok_when(&codes)).unwrap();
        assert!(ok.check(body("03").as_bytes()).is_err());
    }
}
