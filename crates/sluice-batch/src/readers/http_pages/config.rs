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
    /// jq: the items of a page (each output is one item). Required unless the
    /// upstream has a `preset` that gives it.
    pub items: Option<String>,
    /// jq: the total number of items (for the progress bar).
    pub total: Option<String>,
    /// Calls of the upstream's daily quota this reader leaves for others (the
    /// gateway's clients): when no more than this many are left today, the
    /// step commits what it read and suspends (STOPPED, "suspended: …"); a run
    /// on the queue resumes by itself after the quota's reset, from its
    /// checkpoint. A quota spent outright (the upstream's quota code) suspends
    /// it too. Default 0.
    pub quota_reserve: Option<u64>,
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
        let up = match upstream(ctx, &self.upstream) {
            Ok(up) => up,
            // Without the upstream there is no preset: its own keys' mistakes first.
            Err(e) => return Err(self.pagination().err().unwrap_or(e)),
        };
        let mut c = self;
        if let Some(p) = up.preset() {
            // The preset's paging, where the reader does not say otherwise.
            let (page, size, items, total) = p.paging();
            if c.page_param.is_none() && c.offset_param.is_none() && c.cursor_param.is_none() {
                c.page_param = Some(page.to_owned());
                c.size_param = c.size_param.or_else(|| Some(size.to_owned()));
            }
            c.items = c.items.or_else(|| Some(items.to_owned()));
            c.total = c.total.or_else(|| Some(total.to_owned()));
        }
        let pagination = c.pagination()?;
        let items = c.items.as_deref().ok_or(ConfigError::Needs {
            what: "an http_pages reader",
            needs: "items = \"<jq>\" (or an upstream with a preset)",
        })?;
        let mut r = HttpPagesReader::new(up, c.path, jq(items, "items")?, pagination)
            .quota_reserve(c.quota_reserve.unwrap_or(0));
        for (k, v) in c.query {
            r = r.query(k, v);
        }
        if let Some(t) = &c.total {
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
