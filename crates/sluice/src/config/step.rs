//! The tables of a `[[job.step]]`: `reader`, `processor`, `writer`, `tasklet`.
//!
//! Each is a `#[serde(tag = "kind")]` enum, one variant per kind. They are typed
//! when a job is built for a run (`crate::runtime::build`), after the run's
//! `{{params.NAME}}` are substituted into their strings; `sluice check` builds
//! every step once, so mistakes show before anything runs.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `reader = { kind = …, … }`: where a chunk step's items come from.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawReader {
    /// `kind = "csv"`: a CSV file, one item (a JSON object) per record.
    Csv {
        /// The file.
        path: String,
        /// Field delimiter, one ASCII character or `"\t"`. Default `,`.
        delimiter: Option<String>,
        /// `utf-8` (default), `euc-kr` / `cp949`, or any WHATWG label.
        encoding: Option<String>,
        /// Whether the first record is a header naming the fields. Default `true`.
        header: Option<bool>,
        /// Keys of the fields, in order (renames the header, or names the fields
        /// of a file without one).
        columns: Option<Vec<String>>,
    },
    /// `kind = "jsonl"`: JSON Lines, one item per line.
    Jsonl {
        /// The file.
        path: String,
    },
    /// `kind = "json"`: one JSON array (optionally inside an object, at
    /// `pointer`), one item per element.
    Json {
        /// The file.
        path: String,
        /// JSON pointer to the array, e.g. `/response/body/items`.
        pointer: Option<String>,
    },
    /// `kind = "http_pages"`: the pages of an upstream API, through its client
    /// (secrets, retries, rate limits).
    HttpPages {
        /// The `[[upstream]]` to call.
        upstream: String,
        /// Path under the upstream's base URL.
        path: String,
        /// Fixed query parameters of every page.
        #[serde(default)]
        query: BTreeMap<String, String>,
        /// Page-number pagination: the page parameter.
        page_param: Option<String>,
        /// Page-number pagination: the first page number. Default 1.
        start: Option<u64>,
        /// Offset pagination: the offset parameter.
        offset_param: Option<String>,
        /// Cursor pagination: the cursor parameter…
        cursor_param: Option<String>,
        /// …and the jq expression yielding the next cursor (null at the end).
        next: Option<String>,
        /// The page-size parameter (page and offset pagination).
        size_param: Option<String>,
        /// Items per page. Default 100.
        size: Option<u64>,
        /// jq: the items of a page (each output is one item).
        items: String,
        /// jq: the total number of items (for the progress bar).
        total: Option<String>,
    },
    /// `kind = "sql"`: the rows of a table or query, by keyset pagination.
    Sql {
        /// `sqlite://…`, `postgres://…` or `mysql://…`.
        url: String,
        /// The table (or give `query`).
        table: Option<String>,
        /// A `SELECT` (or give `table`).
        query: Option<String>,
        /// The unique, ordered column(s) pages are cut by.
        key: Vec<String>,
        /// The columns to read. Default: all.
        columns: Option<Vec<String>>,
        /// Rows per page. Default 1000.
        page: Option<usize>,
    },
}

/// `processor = { kind = "jq", expr = "…" }`: what happens to each item.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawProcessor {
    /// `kind = "jq"`: a jq program; each output is an item, none filters it out.
    Jq {
        /// The jq program.
        expr: String,
    },
}

/// `writer = { kind = …, … }`: where a chunk step's chunks go.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawWriter {
    /// `kind = "sql_upsert"`: multi-row upserts (insert or update on `key`).
    SqlUpsert {
        /// `sqlite://…`, `postgres://…` or `mysql://…`.
        url: String,
        /// The table.
        table: String,
        /// The column(s) of the unique key rows are matched on.
        key: Vec<String>,
        /// `"name TYPE [NOT NULL]"`, in order (for `create`, and typed binds).
        columns: Option<Vec<String>>,
        /// Create the table (and `indexes`) when missing. Default `false`.
        #[serde(default)]
        create: bool,
        /// Indexes created with the table, each a list of columns.
        #[serde(default)]
        indexes: Vec<Vec<String>>,
    },
    /// `kind = "sql_append"`: plain inserts (PostgreSQL: COPY).
    SqlAppend {
        /// `sqlite://…`, `postgres://…` or `mysql://…`.
        url: String,
        /// The table.
        table: String,
        /// `"name TYPE [NOT NULL]"`, in order (for `create`, and typed binds).
        columns: Option<Vec<String>>,
        /// Create the table (and `indexes`) when missing. Default `false`.
        #[serde(default)]
        create: bool,
        /// Indexes created with the table, each a list of columns.
        #[serde(default)]
        indexes: Vec<Vec<String>>,
    },
    /// `kind = "csv"`: a CSV file (written under a temp name, renamed when the
    /// step completes).
    Csv {
        /// The file.
        path: String,
        /// Field delimiter, one ASCII character or `"\t"`. Default `,`.
        delimiter: Option<String>,
        /// The item keys written, in order. Default: the first item's keys.
        columns: Option<Vec<String>>,
    },
    /// `kind = "jsonl"`: a JSON Lines file (written under a temp name, renamed
    /// when the step completes).
    Jsonl {
        /// The file.
        path: String,
    },
    /// `kind = "cache"`: entries in the gateway's store, under the key a client
    /// request for `path` would use.
    Cache {
        /// A request path with `{field}` placeholders filled from each item.
        path: String,
        /// Freshness of the entries written, e.g. `"1h"`.
        ttl: String,
    },
}

/// `tasklet = { kind = …, … }`: a step that does one thing, instead of
/// reader/processor/writer.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RawTasklet {
    /// `kind = "sql"`: one SQL statement.
    Sql {
        /// `sqlite://…`, `postgres://…` or `mysql://…`.
        url: String,
        /// The statement.
        sql: String,
        /// Run it again until it affects no row (batched deletes). Default `false`.
        #[serde(default)]
        repeat: bool,
    },
    /// `kind = "shell"`: a shell command (`sh -c`); a non-zero exit fails the step.
    Shell {
        /// The command.
        command: String,
        /// Environment variables added for it.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Longest run before it is killed. Default `1h`.
        timeout: Option<String>,
        /// Working directory. Default: sluice's.
        cwd: Option<String>,
    },
    /// `kind = "http"`: one GET through an upstream.
    Http {
        /// The `[[upstream]]` to call.
        upstream: String,
        /// Path under the upstream's base URL.
        path: String,
        /// Query parameters.
        #[serde(default)]
        query: BTreeMap<String, String>,
    },
}
