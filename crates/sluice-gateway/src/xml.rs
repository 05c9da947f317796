//! XML to JSON, the way portal clients read it.
//!
//! Elements become object keys; an element with only text becomes a string; a
//! repeated element becomes an array; an empty element becomes `""`. Attributes are
//! kept under `@name`. This is the shape most portal users already write jq paths
//! for (`.response.body.items.item`).

use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::{Map, Value};

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

/// Converts an XML document into JSON; `None` when it is not well-formed.
pub fn xml_to_json(xml: &[u8]) -> Option<Value> {
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Frame> = vec![Frame {
        name: String::new(),
        map: Map::new(),
        text: String::new(),
    }];
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf).ok()? {
            Event::Start(e) => stack.push(Frame {
                name: String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                map: attrs(&e),
                text: String::new(),
            }),
            Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                let m = attrs(&e);
                let v = if m.is_empty() {
                    Value::String(String::new())
                } else {
                    Value::Object(m)
                };
                insert(&mut stack.last_mut()?.map, name, v);
            }
            Event::Text(t) => {
                let s = t.unescape().ok()?;
                stack.last_mut()?.text.push_str(&s);
            }
            Event::CData(c) => {
                let s = String::from_utf8_lossy(&c.into_inner()).into_owned();
                stack.last_mut()?.text.push_str(&s);
            }
            Event::End(_) => {
                if stack.len() < 2 {
                    return None;
                }
                let (k, v) = finish(stack.pop()?);
                insert(&mut stack.last_mut()?.map, k, v);
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if stack.len() != 1 {
        return None; // unclosed elements: truncated document
    }
    let root = stack.pop()?.map;
    if root.is_empty() {
        return None;
    }
    Some(Value::Object(root))
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
        assert!(xml_to_json(b"<response><header><resultCode>00</resultCode>").is_none());
        assert!(xml_to_json(b"not xml at all").is_none());
    }
}
