//! A chunk's values as one grid of cells, whether it came as JSON items or as
//! [`Rows`] of text, and the in-chunk deduplication of upsert keys.

use super::*;

/// One value of a chunk: a JSON value of an item, or a text field of [`Rows`]
/// (written as the JSON string it stands for would be).
#[derive(Debug, Clone, Copy)]
pub(super) enum Cell<'a> {
    Json(&'a Value),
    Text(&'a str),
}

impl<'a> Cell<'a> {
    /// The JSON value, when it is one.
    pub(super) fn json(self) -> Option<&'a Value> {
        match self {
            Cell::Json(v) => Some(v),
            Cell::Text(_) => None,
        }
    }

    /// The text of a string.
    pub(super) fn as_str(self) -> Option<&'a str> {
        match self {
            Cell::Json(v) => v.as_str(),
            Cell::Text(s) => Some(s),
        }
    }

    /// The value as JSON text (a string quoted).
    pub(super) fn json_text(self) -> String {
        match self {
            Cell::Json(v) => v.to_string(),
            Cell::Text(s) => Value::from(s).to_string(),
        }
    }

    /// An estimate of the bytes it takes in a MySQL statement.
    pub(super) fn text_len(self) -> usize {
        match self {
            Cell::Text(s) => s.len(),
            Cell::Json(Value::String(s)) => s.len(),
            Cell::Json(v @ (Value::Array(_) | Value::Object(_))) => v.to_string().len(),
            Cell::Json(_) => 8,
        }
    }
}

/// Where a chunk's values come from.
#[derive(Clone, Copy)]
pub(super) enum Src<'a> {
    /// Items (JSON objects).
    Items(&'a [&'a Map<String, Value>]),
    /// Rows of text.
    Rows(&'a Rows),
}

impl<'a> Src<'a> {
    /// The keys of the first item, sorted as in a JSON object (what the columns
    /// are taken from when none were declared).
    pub(super) fn first_keys(self) -> Vec<&'a String> {
        match self {
            Src::Items(rows) => rows.first().map(|r| r.keys().collect()).unwrap_or_default(),
            Src::Rows(rows) => {
                let mut names: Vec<&String> = rows.keys().iter().collect();
                names.sort();
                names
            }
        }
    }
}

/// The values of a chunk, row by row, one per column (`None`: null or missing).
pub(super) struct Cells<'a> {
    pub(super) ncols: usize,
    pub(super) cells: Vec<Option<Cell<'a>>>,
}

impl<'a> Cells<'a> {
    pub(super) fn new(plan: &Plan, src: Src<'a>) -> Self {
        let ncols = plan.cols.len();
        match src {
            Src::Items(rows) => {
                let mut cells = Vec::with_capacity(rows.len() * ncols);
                for row in rows {
                    cells.extend(
                        plan.cols
                            .iter()
                            .map(|c| row.get(&c.name).filter(|v| !v.is_null()).map(Cell::Json)),
                    );
                }
                Self { ncols, cells }
            }
            Src::Rows(rows) => {
                let at: Vec<Option<usize>> = plan
                    .cols
                    .iter()
                    .map(|c| rows.keys().iter().position(|k| *k == c.name))
                    .collect();
                let mut cells = Vec::with_capacity(rows.len() * ncols);
                for r in 0..rows.len() {
                    cells.extend(
                        at.iter()
                            .map(|i| i.and_then(|i| rows.get(r, i)).map(Cell::Text)),
                    );
                }
                Self { ncols, cells }
            }
        }
    }

    pub(super) fn rows(&self) -> usize {
        self.cells.len().checked_div(self.ncols).unwrap_or(0)
    }

    pub(super) fn row(&self, r: usize) -> &[Option<Cell<'a>>] {
        &self.cells[r * self.ncols..(r + 1) * self.ncols]
    }

    pub(super) fn column(&self, c: usize) -> impl Iterator<Item = Option<Cell<'a>>> + '_ {
        self.cells
            .iter()
            .skip(c)
            .step_by(self.ncols.max(1))
            .copied()
    }

    /// Keeps, for each key, only the last row with it (in the place of the
    /// first). Keys compare by their text form, as the database sees them (`1`
    /// and `"1"` are the same key); a row with a NULL key is its own.
    pub(super) fn dedupe_last(self, plan: &Plan) -> Self {
        let n = self.rows();
        let mut slots: Vec<usize> = Vec::with_capacity(n);
        let mut kept: Vec<usize> = Vec::with_capacity(n);
        let mut place = |slot: Option<usize>, r: usize, kept: &mut Vec<usize>| match slot {
            Some(s) => kept[s] = r,
            None => {
                slots.push(kept.len());
                kept.push(r);
            }
        };
        let int_key = match plan.upsert_key.as_slice() {
            [k] => self
                .column(*k)
                .all(|v| v.and_then(Cell::json).is_some_and(Value::is_i64))
                .then_some(*k),
            _ => None,
        };
        let text_key = match plan.upsert_key.as_slice() {
            [k] if int_key.is_none() => Some(*k),
            _ => None,
        };
        if let Some(k) = int_key {
            let mut seen: HashMap<i64, usize> = HashMap::with_capacity(n);
            for r in 0..n {
                let key = self.row(r)[k]
                    .and_then(Cell::json)
                    .and_then(Value::as_i64)
                    .unwrap_or_default();
                let slot = first_seen(&mut seen, Some(key), kept.len());
                place(slot, r, &mut kept);
            }
        } else if let Some(k) = text_key.filter(|&k| {
            !plan.cols[k].json
                && self
                    .column(k)
                    .all(|v| v.and_then(Cell::as_str).and_then(canonical_int).is_some())
        }) {
            // One key column of integers as text: distinct when increasing (the
            // usual case: no hashing), else compared as integers (equal integers in
            // canonical form have equal text).
            let keys: Vec<i64> = self
                .column(k)
                .map(|v| {
                    v.and_then(Cell::as_str)
                        .and_then(canonical_int)
                        .unwrap_or_default()
                })
                .collect();
            if keys.windows(2).all(|w| w[0] < w[1]) {
                return self;
            }
            let mut seen: HashMap<i64, usize> = HashMap::with_capacity(n);
            for (r, key) in keys.into_iter().enumerate() {
                let slot = first_seen(&mut seen, Some(key), kept.len());
                place(slot, r, &mut kept);
            }
        } else if let Some(k) = text_key {
            // One key column: no vector per row.
            let json = plan.cols[k].json;
            let mut seen: HashMap<Cow<'a, str>, usize> = HashMap::with_capacity(n);
            for r in 0..n {
                let slot = first_seen(&mut seen, pg_text(self.row(r)[k], json), kept.len());
                place(slot, r, &mut kept);
            }
        } else {
            let mut seen: HashMap<Vec<Cow<'a, str>>, usize> = HashMap::with_capacity(n);
            for r in 0..n {
                let row = self.row(r);
                let key: Option<Vec<Cow<'a, str>>> = plan
                    .upsert_key
                    .iter()
                    .map(|&i| pg_text(row[i], plan.cols[i].json))
                    .collect();
                let slot = first_seen(&mut seen, key, kept.len());
                place(slot, r, &mut kept);
            }
        }
        if kept.len() == n {
            return self;
        }
        let mut cells = Vec::with_capacity(kept.len() * self.ncols);
        for &r in &kept {
            cells.extend_from_slice(self.row(r));
        }
        Self {
            ncols: self.ncols,
            cells,
        }
    }
}

/// Where `key` (`None`: a NULL key, never a duplicate) was first kept, or `None`
/// after recording it at `next` when it is new.
fn first_seen<K: std::hash::Hash + Eq>(
    seen: &mut HashMap<K, usize>,
    key: Option<K>,
    next: usize,
) -> Option<usize> {
    let key = key?;
    if let Some(&s) = seen.get(&key) {
        return Some(s);
    }
    seen.insert(key, next);
    None
}
