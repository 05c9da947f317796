//! `reader = { kind = "http_pages", … }`.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_upstream::Jq;

use super::{HttpPagesReader, Pagination};
use crate::config::{BuildContext, ConfigError, upstream};

/// `kind = "http_pages"`: the pages of an upstream API, through its client
/// (secrets, retries, rate limits).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpPagesReader {
    /// The `[[upstream]]` to call.
    pub upstream: String,
    /// Path under the upstream's base URL.
    pub path: String,
    /// Fixed query parameters of every page.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Page-number pagination: the page parameter.
    pub page_param: Option<String>,
    /// Page-number pagination: the first page number. Default 1.
    pub start: Option<u64>,
    /// Offset pagination: the offset parameter.
    pub offset_param: Option<String>,
    /// Cursor pagination: the cursor parameter…
    pub cursor_param: Option<String>,
    /// …and the jq expression yielding the next cursor (null at the end).
    pub next: Option<String>,
    /// The page-size parameter (page and offset pagination).
    pub size_param: Option<String>,
    /// Items per page. Default 100.
    pub size: Option<u64>,
    /// jq: the items of a page (each output is one item).
    pub items: String,
    /// jq: the total number of items (for the progress bar).
    pub total: Option<String>,
}

fn jq(source: &str, key: &'static str) -> Result<Jq, ConfigError> {
    Jq::compile(source).map_err(|source| ConfigError::Jq { key, source })
}

kind!(RawHttpPagesReader => dyn crate::Reader, |c, ctx| Self::build(c, ctx)?);

impl RawHttpPagesReader {
    /// The reader, calling the upstream of `ctx` it names.
    ///
    /// # Errors
    ///
    /// An unknown upstream, a jq program that does not compile, pagination keys
    /// that do not make one pagination.
    pub fn build(self, ctx: &dyn BuildContext) -> Result<HttpPagesReader, ConfigError> {
        let pagination = self.pagination()?;
        let mut r = HttpPagesReader::new(
            upstream(ctx, &self.upstream)?,
            self.path,
            jq(&self.items, "items")?,
            pagination,
        );
        for (k, v) in self.query {
            r = r.query(k, v);
        }
        if let Some(t) = &self.total {
            r = r.total_count(jq(t, "total")?);
        }
        Ok(r)
    }

    /// Exactly one of page, offset or cursor pagination.
    fn pagination(&self) -> Result<Pagination, ConfigError> {
        let sized = |what: &'static str| -> Result<(String, u64), ConfigError> {
            let param = self.size_param.clone().ok_or(ConfigError::Needs {
                what,
                needs: "size_param",
            })?;
            Ok((param, self.size.unwrap_or(100).max(1)))
        };
        Ok(
            match (&self.page_param, &self.offset_param, &self.cursor_param) {
                (Some(param), None, None) => {
                    let (size_param, size) = sized("page pagination")?;
                    Pagination::Page {
                        param: param.clone(),
                        start: self.start.unwrap_or(1),
                        size_param,
                        size,
                    }
                }
                (None, Some(param), None) => {
                    let (size_param, size) = sized("offset pagination")?;
                    Pagination::Offset {
                        param: param.clone(),
                        size_param,
                        size,
                    }
                }
                (None, None, Some(param)) => Pagination::Cursor {
                    param: param.clone(),
                    next: jq(
                        self.next.as_deref().ok_or(ConfigError::Needs {
                            what: "cursor pagination",
                            needs: "next = \"<jq>\"",
                        })?,
                        "next",
                    )?,
                },
                _ => {
                    return Err(ConfigError::OneOf(&[
                        "page_param",
                        "offset_param",
                        "cursor_param",
                    ]));
                }
            },
        )
    }
}
