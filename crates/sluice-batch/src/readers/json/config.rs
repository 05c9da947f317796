//! `reader = { kind = "json", … }`.

use serde::Deserialize;

use super::JsonArrayReader;

/// `kind = "json"`: one JSON array (optionally inside an object, at
/// `pointer`), one item per element.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJsonReader {
    /// The file.
    pub path: String,
    /// JSON pointer to the array, e.g. `/response/body/items`.
    pub pointer: Option<String>,
}

kind!(RawJsonReader => dyn crate::Reader, |c, _ctx| Self::build(c));

impl RawJsonReader {
    /// The reader; a lone object where the array is expected is one item.
    pub fn build(self) -> JsonArrayReader {
        let r = JsonArrayReader::new(self.path).object_as_single_item(true);
        match self.pointer {
            Some(p) => r.pointer(p),
            None => r,
        }
    }
}
