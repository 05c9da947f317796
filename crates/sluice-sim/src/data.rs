//! The simulated dataset and the portal's response bodies.
//!
//! Everything here is pure: the rows are a function of `(sidoName, row index)` so that a
//! test can predict any page without talking to the server, and two simulators (or two
//! runs) always agree. The renderers reproduce the portal's wire quirks byte for byte
//! where clients are known to trip: string-typed values, `"-"` for a missing reading, a
//! lone `item` that is an object instead of a list, an empty page whose `items` is `""`,
//! and gateway errors that are XML whatever format was asked for.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::sim::ItemsShape;

/// District-like station names; the row index is appended to keep names unique.
const STATIONS: [&str; 25] = [
    "종로구",
    "중구",
    "용산구",
    "성동구",
    "광진구",
    "동대문구",
    "중랑구",
    "성북구",
    "강북구",
    "도봉구",
    "노원구",
    "은평구",
    "서대문구",
    "마포구",
    "양천구",
    "강서구",
    "구로구",
    "금천구",
    "영등포구",
    "동작구",
    "관악구",
    "서초구",
    "강남구",
    "송파구",
    "강동구",
];

/// The fixed measurement time of every row.
pub(crate) const DATA_TIME: &str = "2024-05-01 14:00";

/// The portal's standard result message for a result / return-reason code.
///
/// Covers the table every data.go.kr service shares (`"00"` → `"NORMAL_SERVICE"`,
/// `"22"` → `"LIMITED_NUMBER_OF_SERVICE_REQUESTS_EXCEEDS_ERROR"`, `"30"` →
/// `"SERVICE_KEY_IS_NOT_REGISTERED_ERROR"`, …); any other code maps to `"UNKNOWN_ERROR"`.
pub fn result_message(code: &str) -> &'static str {
    match code {
        "00" => "NORMAL_SERVICE",
        "01" => "APPLICATION_ERROR",
        "02" => "DB_ERROR",
        "03" => "NODATA_ERROR",
        "04" => "HTTP_ERROR",
        "05" => "SERVICETIME_OUT",
        "10" => "INVALID_REQUEST_PARAMETER_ERROR",
        "11" => "NO_MANDATORY_REQUEST_PARAMETERS_ERROR",
        "12" => "NO_OPENAPI_SERVICE_ERROR",
        "20" => "SERVICE_ACCESS_DENIED_ERROR",
        "21" => "TEMPORARILY_DISABLE_THE_SERVICEKEY_ERROR",
        "22" => "LIMITED_NUMBER_OF_SERVICE_REQUESTS_EXCEEDS_ERROR",
        "30" => "SERVICE_KEY_IS_NOT_REGISTERED_ERROR",
        "31" => "DEADLINE_HAS_EXPIRED_ERROR",
        "32" => "UNREGISTERED_IP_ERROR",
        "33" => "UNSIGNED_CALL_ERROR",
        _ => "UNKNOWN_ERROR",
    }
}

/// The body format a request asked for (`returnType=json`, else XML).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Xml,
}

/// One row: ordered `(field, value)` pairs, all values strings as on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item(Vec<(&'static str, String)>);

impl Serialize for Item {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Row `index` (0-based) of the dataset for `sido`. Every 7th row (index 6, 13, …) has
/// a missing PM2.5 reading: `pm25Value` `"-"` and `pm25Flag` `"통신장애"`.
pub(crate) fn item(sido: &str, index: usize) -> Item {
    // FNV-1a over the sido name, mixed with the index through splitmix64.
    let mut h = sido.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h ^= (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;

    let missing = (index + 1).is_multiple_of(7);
    let mut fields = vec![
        (
            "stationName",
            format!("{}{}", STATIONS[index % STATIONS.len()], index + 1),
        ),
        ("sidoName", sido.to_owned()),
        ("dataTime", DATA_TIME.to_owned()),
        ("pm10Value", (10 + h % 140).to_string()),
        (
            "pm25Value",
            if missing {
                "-".to_owned()
            } else {
                (3 + (h >> 16) % 70).to_string()
            },
        ),
        ("o3Value", format!("0.{:03}", 5 + (h >> 32) % 80)),
    ];
    if missing {
        fields.push(("pm25Flag", "통신장애".to_owned()));
    }
    Item(fields)
}

/// The rows of 1-based page `page_no` of `num_of_rows` rows, out of `total` rows;
/// empty past the end.
pub(crate) fn page(sido: &str, total: usize, page_no: u64, num_of_rows: u64) -> Vec<Item> {
    let start = page_no.saturating_sub(1).saturating_mul(num_of_rows);
    let start = usize::try_from(start).unwrap_or(usize::MAX).min(total);
    let end = start
        .saturating_add(usize::try_from(num_of_rows).unwrap_or(usize::MAX))
        .min(total);
    (start..end).map(|i| item(sido, i)).collect()
}

/// A success page in the paging fields and item list of `body`.
pub(crate) struct Page<'a> {
    pub(crate) items: &'a [Item],
    pub(crate) num_of_rows: u64,
    pub(crate) page_no: u64,
    pub(crate) total_count: u64,
}

/// The `"00"` envelope around `page`.
pub(crate) fn success_body(format: Format, shape: ItemsShape, page: &Page<'_>) -> String {
    match format {
        Format::Json => envelope_json("00", Some(page), shape),
        Format::Xml => envelope_xml("00", Some(page)),
    }
}

/// A service-layer error: the normal envelope with `code`, its standard message, no body.
pub(crate) fn envelope_error(format: Format, code: &str) -> String {
    match format {
        Format::Json => envelope_json(code, None, ItemsShape::Item),
        Format::Xml => envelope_xml(code, None),
    }
}

/// A gateway-layer error: always this XML, whatever format was asked for.
pub(crate) fn gateway_error_xml(code: &str) -> String {
    format!(
        "<OpenAPI_ServiceResponse><cmmMsgHeader><errMsg>SERVICE ERROR</errMsg>\
         <returnAuthMsg>{}</returnAuthMsg><returnReasonCode>{}</returnReasonCode>\
         </cmmMsgHeader></OpenAPI_ServiceResponse>",
        result_message(code),
        xml_escape(code)
    )
}

#[derive(Serialize)]
struct Envelope<'a> {
    response: EnvelopeResponse<'a>,
}

#[derive(Serialize)]
struct EnvelopeResponse<'a> {
    header: Header<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Body<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Header<'a> {
    result_code: &'a str,
    result_msg: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    items: Items<'a>,
    num_of_rows: u64,
    page_no: u64,
    total_count: u64,
}

/// `items` with the portal's quirks: `""` when empty; for [`ItemsShape::Item`], an
/// `item` key holding a list, or a lone object when the page has exactly one row.
struct Items<'a>(&'a [Item], ItemsShape);

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self.0, self.1) {
            ([], _) => s.serialize_str(""),
            (items, ItemsShape::Flat) => items.serialize(s),
            ([one], ItemsShape::Item) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("item", one)?;
                map.end()
            }
            (items, ItemsShape::Item) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("item", items)?;
                map.end()
            }
        }
    }
}

fn envelope_json(code: &str, page: Option<&Page<'_>>, shape: ItemsShape) -> String {
    let envelope = Envelope {
        response: EnvelopeResponse {
            header: Header {
                result_code: code,
                result_msg: result_message(code),
            },
            body: page.map(|p| Body {
                items: Items(p.items, shape),
                num_of_rows: p.num_of_rows,
                page_no: p.page_no,
                total_count: p.total_count,
            }),
        },
    };
    serde_json::to_string(&envelope).expect("envelope serializes")
}

fn envelope_xml(code: &str, page: Option<&Page<'_>>) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\
         <response><header><resultCode>{}</resultCode><resultMsg>{}</resultMsg></header>",
        xml_escape(code),
        result_message(code)
    );
    if let Some(p) = page {
        out.push_str("<body><items>");
        for item in p.items {
            out.push_str("<item>");
            for (k, v) in &item.0 {
                out.push_str(&format!("<{k}>{}</{k}>", xml_escape(v)));
            }
            out.push_str("</item>");
        }
        out.push_str(&format!(
            "</items><numOfRows>{}</numOfRows><pageNo>{}</pageNo><totalCount>{}</totalCount></body>",
            p.num_of_rows, p.page_no, p.total_count
        ));
    }
    out.push_str("</response>");
    out
}

/// Escapes XML text and attribute content.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
