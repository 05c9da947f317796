//! `reader = { kind = "csv", … }`.

use serde::Deserialize;

use super::CsvReader;
use crate::config::{ConfigError, delimiter};

/// `kind = "csv"`: a CSV file, one item (a JSON object) per record.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCsvReader {
    /// The file.
    pub path: String,
    /// Field delimiter, one ASCII character or `"\t"`. Default `,`.
    pub delimiter: Option<String>,
    /// `utf-8` (default), `euc-kr` / `cp949`, or any WHATWG label.
    pub encoding: Option<String>,
    /// Whether the first record is a header naming the fields. Default `true`;
    /// required with `columns`.
    pub header: Option<bool>,
    /// Keys of the fields, in order: they rename the header (`header = true`)
    /// or name the fields of a file without one (`header = false`).
    pub columns: Option<Vec<String>>,
}

kind!(RawCsvReader => dyn crate::Reader, |c, ctx| Self::build(c, ctx.share())?);

impl RawCsvReader {
    /// The reader, narrowed to partition `share` (`(index, of)`) when given.
    ///
    /// # Errors
    ///
    /// A delimiter longer than one byte, an unknown encoding, `columns` without
    /// `header`.
    pub fn build(self, share: Option<(usize, usize)>) -> Result<CsvReader, ConfigError> {
        if self.columns.is_some() && self.header.is_none() {
            return Err(ConfigError::ColumnsWithoutHeader);
        }
        let mut r = CsvReader::new(self.path);
        if let Some(d) = self.delimiter {
            r = r.delimiter(delimiter(&d)?);
        }
        if let Some(label) = self.encoding {
            r = r.encoding(encoding(&label)?);
        }
        if let Some(h) = self.header {
            r = r.has_header(h);
        }
        if let Some(c) = self.columns {
            r = r.columns(c);
        }
        if let Some((i, n)) = share {
            r = r.partition(i, n);
        }
        Ok(r)
    }
}

/// The encoding of a label: a WHATWG label, or `cp949` (what Windows calls
/// EUC-KR's superset; WHATWG's euc-kr is it).
fn encoding(label: &str) -> Result<&'static encoding_rs::Encoding, ConfigError> {
    let label = label.trim();
    if label.eq_ignore_ascii_case("cp949") {
        return Ok(encoding_rs::EUC_KR);
    }
    encoding_rs::Encoding::for_label(label.as_bytes())
        .ok_or_else(|| ConfigError::Encoding(label.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(header: Option<bool>, columns: Option<Vec<String>>) -> RawCsvReader {
        RawCsvReader {
            path: "in.csv".into(),
            delimiter: None,
            encoding: None,
            header,
            columns,
        }
    }

    #[test]
    fn columns_need_header_said_either_way() {
        let cols = || Some(vec!["a".to_owned(), "b".to_owned()]);
        let e = raw(None, cols()).build(None).unwrap_err();
        assert!(matches!(e, ConfigError::ColumnsWithoutHeader), "{e}");
        assert!(
            e.to_string().contains("header = true") && e.to_string().contains("header = false")
        );
        for ok in [
            raw(Some(true), cols()),
            raw(Some(false), cols()),
            raw(None, None),
            raw(Some(false), None),
        ] {
            ok.build(None).unwrap();
        }
    }

    #[test]
    fn encodings_by_label() {
        assert_eq!(encoding("CP949").ok(), Some(encoding_rs::EUC_KR));
        assert_eq!(encoding(" euc-kr ").ok(), Some(encoding_rs::EUC_KR));
        assert_eq!(encoding("utf-8").ok(), Some(encoding_rs::UTF_8));
        assert_eq!(
            encoding("klingon").unwrap_err().to_string(),
            "unknown encoding \"klingon\"; use utf-8, euc-kr (also cp949) or another WHATWG label"
        );
    }
}
