//! XML to JSON, the way portal clients read it.
//!
//! Elements become object keys; an element with only text becomes a string; a
//! repeated element becomes an array; an empty element becomes `""`. Attributes are
//! kept under `@name`. This is the shape most portal users already write jq paths
//! for (`.response.body.items.item`).

use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::{Map, Value};

use crate::body::{BodyError, MAX_DEPTH};

struct Frame {
    name: String,
    map: Map<String, Value>,
    text: String,
}

fn insert(map: &mut Map<String, Value>, key: String, v: Value) {
    match map.get_mut(&key) {
        Some(Value::Array(a)) => a.push(v),
        Some(existing) => {
            let prev = existing.take();
            *existing = Value::Array(vec![prev, v]);
        }
        None => {
            map.insert(key, v);
        }
    }
}

fn finish(f: Frame) -> (String, Value) {
    let v = if f.map.is_empty() {
        Value::String(f.text)
    } else {
        let mut m = f.map;
        if !f.text.trim().is_empty() {
            m.insert("$text".into(), Value::String(f.text));
        }
        Value::Object(m)
    };
    (f.name, v)
}

fn attrs(e: &quick_xml::events::BytesStart<'_>) -> Map<String, Value> {
    let mut m = Map::new();
    for a in e.attributes().flatten() {
        let k = format!("@{}", String::from_utf8_lossy(a.key.as_ref()));
        let v = a
            .unescape_value()
            .map(|c| c.into_owned())
            .unwrap_or_default();
        m.insert(k, Value::String(v));
    }
    m
}

/// Converts an XML document into JSON.
///
/// The walk is iterative and refuses documents nested deeper than
/// [`MAX_DEPTH`] elements, so no document can exhaust the stack, here or in
/// whoever serializes, converts or drops the value afterwards.
///
/// # Errors
///
/// [`BodyError::TooDeep`] past the depth limit, [`BodyError::Xml`] for a document
/// that is not well-formed or is truncated (with the byte offset).
pub fn xml_to_json(xml: &[u8]) -> Result<Value, BodyError> {
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Frame> = vec![Frame {
        name: String::new(),
        map: Map::new(),
        text: String::new(),
    }];
    let mut buf = Vec::new();
    let bad = |reader: &Reader<&[u8]>, what: String| BodyError::Xml {
        at: reader.buffer_position(),
        reason: what,
    };
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| bad(&reader, e.to_string()))?;
        match ev {
            Event::Start(e) => {
                if stack.len() > MAX_DEPTH {
                    return Err(BodyError::TooDeep {
                        at: reader.buffer_position(),
                    });
                }
                stack.push(Frame {
                    name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                    map: attrs(&e),
                    text: String::new(),
                });
            }
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                let m = attrs(&e);
                let v = if m.is_empty() {
                    Value::String(String::new())
                } else {
                    Value::Object(m)
                };
                if let Some(top) = stack.last_mut() {
                    insert(&mut top.map, name, v);
                }
            }
            Event::Text(t) => {
                let s = t.unescape().map_err(|e| bad(&reader, e.to_string()))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                }
            }
            Event::CData(c) => {
                let s = String::from_utf8_lossy(&c.into_inner()).into_owned();
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                }
            }
            Event::End(_) => {
                if stack.len() < 2 {
                    return Err(bad(&reader, "a closing tag without an opening one".into()));
                }
                if let Some(f) = stack.pop() {
                    let (k, v) = finish(f);
                    if let Some(top) = stack.last_mut() {
                        insert(&mut top.map, k, v);
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if stack.len() != 1 {
        return Err(bad(
            &reader,
            format!(
                "{} element(s) not closed: the document is truncated",
                stack.len() - 1
            ),
        ));
    }
    let root = stack.pop().map(|f| f.map).unwrap_or_default();
    if root.is_empty() {
        return Err(bad(&reader, "no element".into()));
    }
    Ok(Value::Object(root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portal_shapes() {
        let v = xml_to_json(b"<response><body><items><item><a>1</a></item><item><a>2</a></item></items><totalCount>2</totalCount></body></response>").unwrap();
        assert_eq!(v["response"]["body"]["items"]["item"][1]["a"], "2");
        assert_eq!(v["response"]["body"]["totalCount"], "2");
        let one = xml_to_json(b"<r><items><item><a>&amp;1</a></item></items><e/></r>").unwrap();
        assert_eq!(one["r"]["items"]["item"]["a"], "&1");
        assert_eq!(one["r"]["e"], "");
    }

    #[test]
    fn truncated_xml_is_not_a_document() {
        let e = xml_to_json(b"<response><header><resultCode>00</resultCode>").unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        assert!(xml_to_json(b"not xml at all").is_err());
    }

    #[test]
    fn deep_documents_are_refused_not_overflowed() {
        for n in [MAX_DEPTH + 1, 8_000, 200_000] {
            let doc = format!("{}x{}", "<a>".repeat(n), "</a>".repeat(n));
            let e = xml_to_json(doc.as_bytes()).unwrap_err();
            assert!(matches!(e, BodyError::TooDeep { .. }), "{n}: {e}");
        }
        let ok = format!("{}x{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        let v = xml_to_json(ok.as_bytes()).unwrap();
        assert_eq!(v.to_string().len(), MAX_DEPTH * 6 + 3);
    }
}
