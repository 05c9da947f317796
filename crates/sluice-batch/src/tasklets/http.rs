//! [`HttpTasklet`]: one `GET` through an upstream; `tasklet = { kind = "http", … }`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use sluice_upstream::{Caller, Upstream, encode_component};

use crate::config::{BuildContext, ConfigError, upstream};
use crate::job::{Tasklet, TaskletError};

/// `kind = "http"`: one GET through an upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpTasklet {
    /// The `[[upstream]]` to call.
    pub upstream: String,
    /// Path under the upstream's base URL.
    pub path: String,
    /// Query parameters.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
}

kind!(RawHttpTasklet => dyn crate::job::Tasklet, |c, ctx| Self::build(c, ctx)?);

impl RawHttpTasklet {
    /// The tasklet, calling the upstream of `ctx` it names.
    ///
    /// # Errors
    ///
    /// An unknown upstream.
    pub fn build(self, ctx: &dyn BuildContext) -> Result<HttpTasklet, ConfigError> {
        let mut t = HttpTasklet::new(upstream(ctx, &self.upstream)?, self.path);
        for (k, v) in self.query {
            t = t.query(k, v);
        }
        Ok(t)
    }
}

/// One `GET` through an [`Upstream`].
///
/// The upstream injects its secrets, spends its quota, retries and applies
/// `ok_when`. Exit message: `HTTP 200, N bytes`.
#[derive(Debug, Clone)]
pub struct HttpTasklet {
    /// The upstream to call.
    pub upstream: Arc<Upstream>,
    /// Path appended to the upstream's base URL.
    pub path: String,
    /// Query parameters (raw values; encoded when sent).
    pub query: Vec<(String, String)>,
}

impl HttpTasklet {
    /// `GET path` on `upstream`, no query.
    pub fn new(upstream: Arc<Upstream>, path: impl Into<String>) -> Self {
        Self {
            upstream,
            path: path.into(),
            query: Vec::new(),
        }
    }

    /// Adds a query parameter.
    #[must_use]
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }
}

#[async_trait]
impl Tasklet for HttpTasklet {
    async fn execute(&mut self) -> Result<String, TaskletError> {
        let query = self
            .query
            .iter()
            .map(|(n, v)| format!("{}={}", encode_component(n), encode_component(v)))
            .collect::<Vec<_>>()
            .join("&");
        let resp = self
            .upstream
            .fetch(Caller::Job, &self.path, &query, &Default::default())
            .await?;
        if (200..300).contains(&resp.status) {
            Ok(format!("HTTP {}, {} bytes", resp.status, resp.body.len()))
        } else {
            Err(TaskletError::Status {
                upstream: self.upstream.name().to_string(),
                status: resp.status,
                bytes: resp.body.len(),
            })
        }
    }
}
