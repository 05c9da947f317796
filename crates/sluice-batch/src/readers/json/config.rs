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

impl crate::config::Kind<dyn crate::Reader> for RawJsonReader {
    fn build(
        self,
        _ctx: &dyn crate::config::BuildContext,
    ) -> Result<Box<dyn crate::Reader>, crate::config::ConfigError> {
        Ok(Box::new(Self::build(self)))
    }
}

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
