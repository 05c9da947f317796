//! Configuration in two stages. Pure: this module reads the file and the
//! environment and builds the gateway; it imports nothing of the runtime (queue,
//! jobs, scheduler), which is built from its [`Settings`] in [`crate::runtime`].
//!
//! 1. [`RawConfig`] mirrors the TOML file one to one: plain serde types (`Raw*`)
//!    with `deny_unknown_fields` and a doc comment on every field (the config
//!    reference in `docs/config.md` is generated from these comments).
//!    [`Source::parse`] parses each section and each element of an array of
//!    tables on its own, so every broken one is reported, not just the first.
//! 2. [`RawConfig::resolve`] turns it into [`Settings`] (checked types are
//!    `*Settings`; what a library takes is its `*Spec`): secrets read from the
//!    environment, jq predicates compiled, routes checked against upstreams, the
//!    gateway built. It reports the parse errors together with its own; every
//!    error points back into the file through the byte spans kept by
//!    `serde_spanned`, or the place of its key.
//!
//! Every error renders as `FILE:LINE:COLUMN: KEY: what is wrong`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_spanned::Spanned;
use sluice_core::Secret;
use sluice_gateway::Gateway;
use sluice_upstream::Upstream;

mod alerts;
mod job;
mod queue;
mod route;
mod server;
mod source;
mod step;
mod store;
mod upstream;
mod values;

pub use alerts::{
    AlertsSettings, Condition, RULE_KINDS, RawAlerts, RawEmail, RawRule, RawWebhook,
    ReceiverSettings, RuleSettings,
};
pub(crate) use job::none_or_list;
pub use job::{
    ChangeSettings, JobsSettings, RawJob, RawRepository, RawStep, TriggerSettings, WatchSettings,
    placeholders, substitute, substitute_str,
};
pub use queue::{JOBS_QUEUE, PARTITIONS_QUEUE, QueueSettings, RawQueue};
pub use route::{RawRoute, RawTtl};
pub use server::{ApiToken, ConnectionSettings, RawServer, RawToken, Role};
pub use sluice_cache::{RawCluster, RawStore, StoreKind};
pub use sluice_schedule::RawTrigger;
pub use source::{ConfigError, ConfigErrors, Source};
pub use step::{RawProcessor, RawReader, RawTasklet, RawWriter};
pub use upstream::{RawRateLimit, RawUpstream};
pub use values::{Dur, Env, RawRetry, RawSecret, Size, parse_duration, parse_size};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The HTTP server.
    #[serde(default)]
    pub server: RawServer,
    /// Where cache entries live.
    #[serde(default)]
    pub store: RawStore,
    /// What several nodes share through Redis.
    #[serde(default)]
    pub cluster: RawCluster,
    /// Upstream APIs (`[[upstream]]`).
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<RawUpstream>,
    /// Gateway routes (`[[route]]`).
    #[serde(default, rename = "route")]
    pub routes: Vec<RawRoute>,
    /// Where batch runs are recorded.
    #[serde(default)]
    pub repository: RawRepository,
    /// Batch jobs (`[[job]]`).
    #[serde(default, rename = "job")]
    pub jobs: Vec<RawJob>,
    /// The task queue.
    #[serde(default)]
    pub queue: RawQueue,
    /// Alert rules and their receivers.
    #[serde(default)]
    pub alerts: RawAlerts,
    /// What [`Source::parse`] could not parse, for [`RawConfig::resolve`].
    #[serde(skip)]
    partial: Partial,
}

/// The parts of a file that did not parse: their errors, and where the parts
/// that did parse are in the file (so keys keep their positions, `route[2]`
/// stays `route[2]` when `route[1]` is broken).
#[derive(Debug, Clone, Default)]
struct Partial {
    errors: Vec<ConfigError>,
    upstream_at: Vec<usize>,
    route_at: Vec<usize>,
    job_at: Vec<usize>,
    /// Names of upstreams that did not parse: their routes report nothing more.
    broken_upstreams: Vec<String>,
}

/// Settings ready to serve.
#[derive(Clone)]
pub struct Settings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Admin bearer token; admin API disabled when `None`.
    pub admin_token: Option<Secret>,
    /// Every API token with its role, `admin_token` first (as `admin`); the
    /// REST API and the dashboard exist when there is at least one.
    pub tokens: Vec<ApiToken>,
    /// Lifetime of a dashboard session.
    pub session_ttl: Duration,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Client-connection limits: header and idle timeouts, connection cap,
    /// request head size.
    pub connections: ConnectionSettings,
    /// The gateway.
    pub gateway: Gateway,
    /// Batch jobs and their repository.
    pub jobs: JobsSettings,
    /// The task queue.
    pub queue: QueueSettings,
    /// Every configured upstream, by name (jobs may use ones no route uses).
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// Alert rules and receivers.
    pub alerts: AlertsSettings,
    /// The Redis that shares quotas and rate limits across nodes, when the
    /// store has one (the e-mail writer's `rate` uses it too).
    pub quota_redis: Option<Arc<sluice_core::Redis>>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("admin", &self.admin_token.is_some())
            .field("connections", &self.connections)
            .field("gateway", &self.gateway)
            .finish()
    }
}

fn span<T>(s: &Spanned<T>) -> Option<Range<usize>> {
    Some(s.span())
}

impl RawConfig {
    /// Resolves into [`Settings`], collecting every error: those found while
    /// parsing, then each section's own.
    ///
    /// # Errors
    ///
    /// All problems found, each with file, line, column and key.
    pub fn resolve(self, src: &Source, env: &Env<'_>) -> Result<Settings, ConfigErrors> {
        // Metric handles are registered while stores, upstreams and the gateway
        // are built: the recorder must exist first.
        let _ = crate::telemetry::prometheus();
        let mut errs = self.partial.errors.clone();
        let server = self.server.check(src, env, &mut errs);
        let built = store::build(&self.store, &self.cluster, src, env, &mut errs);
        let upstreams = upstream::check_upstreams(
            &self.upstreams,
            &self.partial.upstream_at,
            built.as_ref().and_then(|b| b.quota_redis.as_ref()),
            src,
            env,
            &mut errs,
        );
        let defined: Vec<&str> = self
            .upstreams
            .iter()
            .map(|u| u.name.get_ref().as_str())
            .chain(self.partial.broken_upstreams.iter().map(String::as_str))
            .collect();
        let mut routes = Vec::new();
        for (n, r) in self.routes.iter().enumerate() {
            let i = self.partial.route_at.get(n).copied().unwrap_or(n);
            routes.extend(r.check(i, &upstreams, &defined, src, &mut errs));
        }
        let jobs = job::check_jobs(
            &self.repository,
            &self.jobs,
            &self.partial.job_at,
            src,
            &mut errs,
        );
        let queue = queue::check_queue(&self.queue, &jobs.repository_url, src, &mut errs);
        let known = alerts::Known {
            jobs: self
                .jobs
                .iter()
                .map(|j| j.name.get_ref().as_str())
                .collect(),
            upstreams: defined.clone(),
        };
        let alerts = alerts::check_alerts(&self.alerts, &known, src, env, &mut errs);
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        let mut builder = Gateway::builder().clock(env.clock.clone());
        if let Some(a) = server.access_log.clone() {
            builder = builder.access_log(a);
        }
        if let Some(b) = &built {
            builder = builder.store(b.store.clone());
            if let Some(f) = &b.flights {
                builder = builder.shared_flights(f.clone());
            }
        }
        for spec in routes {
            builder = builder.route(spec);
        }
        let gateway = builder.build().map_err(|e| {
            let first = self.routes.first().map(|r| r.path.span());
            ConfigErrors(vec![src.err(first, "route", e.to_string())])
        })?;
        Ok(Settings {
            quota_redis: built.as_ref().and_then(|b| b.quota_redis.clone()),
            alerts,
            jobs,
            queue,
            upstreams,
            listen: server.listen,
            admin_token: server.admin_token,
            tokens: server.tokens,
            session_ttl: server.session_ttl,
            shutdown_grace: server.shutdown_grace,
            connections: server.connections,
            gateway,
        })
    }
}

/// Reads, parses and resolves a config file.
///
/// # Errors
///
/// Every problem found, located.
pub fn load(path: &Path, env: &Env<'_>) -> Result<Settings, ConfigErrors> {
    let src = Source::read(path)?;
    src.parse()?.resolve(&src, env)
}
