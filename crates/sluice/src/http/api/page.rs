//! Cursor pagination: `?limit=N&cursor=C` on every list, answered as
//! `{"items": [...], "next_cursor": C | null}`. A cursor is opaque to clients
//! (base64url of the last item's sort key); a list is read again from the key
//! after it, so items added or removed meanwhile never shift a page.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::http::ApiError;

/// The most items a page holds.
pub const MAX_LIMIT: usize = 500;
/// Items a page holds without `limit`.
pub const DEFAULT_LIMIT: usize = 50;

/// `limit` and `cursor`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 500; default 50.
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Give it as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

impl PageQuery {
    /// The page size.
    ///
    /// # Errors
    ///
    /// `400 bad_limit` outside 1..=500.
    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT as i64).contains(&n) => Ok(n as usize),
            Some(n) => Err(ApiError::bad_request(
                "bad_limit",
                format!("limit {n}: give 1 to {MAX_LIMIT}"),
            )),
        }
    }

    /// The key the cursor stands for.
    ///
    /// # Errors
    ///
    /// `400 bad_cursor` for a cursor this API did not hand out.
    pub fn cursor_key(&self) -> Result<Option<String>, ApiError> {
        let Some(c) = self.cursor.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        B64.decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "bad_cursor",
                    "the cursor is not one this API handed out; start again without it",
                )
            })
    }

    /// The cursor as a number (lists ordered by a numeric id).
    ///
    /// # Errors
    ///
    /// `400 bad_cursor`.
    pub fn cursor_i64(&self) -> Result<Option<i64>, ApiError> {
        self.cursor_key()?
            .map(|k| {
                k.parse().map_err(|_| {
                    ApiError::bad_request("bad_cursor", "the cursor is not one this API handed out")
                })
            })
            .transpose()
    }

    /// The page of `items` (sorted by `key`, ascending) after the cursor.
    ///
    /// # Errors
    ///
    /// As [`PageQuery::limit`] and [`PageQuery::cursor_key`].
    pub fn page_sorted<T>(
        &self,
        items: Vec<T>,
        key: impl Fn(&T) -> String,
    ) -> Result<Page<T>, ApiError> {
        let limit = self.limit()?;
        let after = self.cursor_key()?;
        let rest: Vec<T> = items
            .into_iter()
            .filter(|i| after.as_ref().is_none_or(|a| key(i).as_str() > a.as_str()))
            .take(limit + 1)
            .collect();
        Ok(Page::by_key(rest, limit, key))
    }
}

impl PageQuery {
    /// The page of `items`, kept in their given order, after the cursor (a
    /// position in that order).
    ///
    /// # Errors
    ///
    /// As [`PageQuery::limit`] and [`PageQuery::cursor_i64`].
    pub fn page_in_order<T>(&self, items: Vec<T>) -> Result<Page<T>, ApiError> {
        let after = self.cursor_i64()?.unwrap_or(-1);
        let limit = self.limit()?;
        let rest: Vec<(usize, T)> = items
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i as i64 > after)
            .take(limit + 1)
            .collect();
        let page = Page::by_key(rest, limit, |(i, _)| i.to_string());
        Ok(Page {
            items: page.items.into_iter().map(|(_, t)| t).collect(),
            next_cursor: page.next_cursor,
        })
    }
}

impl<T> Page<T> {
    /// A page of the first `limit` of `items`, which holds one more when
    /// another page follows; the cursor is the last item's `key`.
    pub fn by_key(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Self {
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = more
            .then(|| items.last().map(|i| B64.encode(key(i))))
            .flatten();
        Self { items, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_one_another_and_bad_input_is_refused() {
        let q = |limit, cursor: Option<String>| PageQuery {
            limit: Some(limit),
            cursor,
        };
        let items: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
        let p1 = q(2, None).page_sorted(items.clone(), Clone::clone).unwrap();
        assert_eq!(p1.items, ["k0", "k1"]);
        let p2 = q(2, p1.next_cursor)
            .page_sorted(items.clone(), Clone::clone)
            .unwrap();
        assert_eq!(p2.items, ["k2", "k3"]);
        let p3 = q(2, p2.next_cursor)
            .page_sorted(items.clone(), Clone::clone)
            .unwrap();
        assert_eq!(
            (p3.items.as_slice(), p3.next_cursor),
            (&["k4".to_owned()][..], None)
        );
        assert_eq!(q(0, None).limit().unwrap_err().code, "bad_limit");
        assert_eq!(q(501, None).limit().unwrap_err().code, "bad_limit");
        assert_eq!(
            q(1, Some("***".into())).cursor_key().unwrap_err().code,
            "bad_cursor"
        );
    }
}
