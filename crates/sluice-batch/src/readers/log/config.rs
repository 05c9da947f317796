//! `reader = { kind = "log", … }`.

use serde::Deserialize;

use super::{LogFormat, LogReader};
use crate::config::ConfigError;

/// `kind = "log"`: a web server's access log (nginx, Apache, sluice's own, JSON
/// lines), followed across rotation; one item per line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogReader {
    /// The log file (the current one; rotated copies are found beside it).
    pub path: String,
    /// `combined` (default: nginx's and Apache's, with nginx's
    /// `$request_time $upstream_response_time` when they follow), `common`,
    /// `json` (one JSON object per line), `sluice` (the gateway's access log,
    /// `json` or `common`), or an nginx `log_format` string
    /// (`"$remote_addr [$time_local] \"$request\" $status $request_time"`).
    pub format: Option<String>,
    /// A regex with named groups for a custom format, instead of `format`
    /// (`'^(?P<time>\S+) (?P<status>\d{3}) (?P<path>\S+)$'`); groups named like
    /// the item's fields (`time`, `request`, `status`, `bytes`,
    /// `request_time`) are normalized.
    pub pattern: Option<String>,
    /// Where rotated copies go, besides `path.1`, `path.0`, `path-*` and
    /// `path.*`: a glob with `*` and `?` in its file name
    /// (`"/var/log/old/access-*.log"`). Compressed copies are not read.
    pub rotated: Option<String>,
}

kind!(RawLogReader => dyn crate::Reader, |c, _ctx| Self::build(c)?);

impl RawLogReader {
    /// The reader.
    ///
    /// # Errors
    ///
    /// Both `format` and `pattern`, an unknown format, a pattern that does not
    /// compile.
    pub fn build(self) -> Result<LogReader, ConfigError> {
        let format = match (&self.format, &self.pattern) {
            (Some(_), Some(_)) => return Err(ConfigError::OneOf(&["format", "pattern"])),
            (None, Some(p)) => LogFormat::pattern(p),
            (f, None) => LogFormat::named(f.as_deref().unwrap_or("combined")),
        }
        .map_err(ConfigError::Log)?;
        let mut r = LogReader::new(self.path, format);
        if let Some(g) = self.rotated {
            r = r.rotated(g);
        }
        Ok(r)
    }
}
