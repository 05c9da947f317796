//! The overview (what `sluice top` and the dashboard's first page show) and
//! the sampler that records its numbers as chart series in the repository.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use sluice_batch::model::BatchStatus;
use sluice_batch::repository::ExecutionFilter;
use utoipa::ToSchema;

use super::gateway::{CacheView, UpstreamView, cache_view, upstream_views};
use super::queues::{QueueView, queue_views, worker_views};
use super::{ApiState, Problem, auth};
use crate::http::ApiError;

/// The rate of requests between the last two samples.
#[derive(Debug, Default)]
pub struct Rates {
    last: Mutex<Option<(Instant, u64, u64)>>,
    per_second: Mutex<(f64, f64)>,
}

impl Rates {
    /// Takes a sample of the running totals (requests, upstream calls); the
    /// rates since the previous sample.
    fn sample(&self, requests: u64, upstream_calls: u64) -> (f64, f64) {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let rates = match *last {
            Some((t, r, u)) => {
                let secs = now.duration_since(t).as_secs_f64().max(0.001);
                (
                    requests.saturating_sub(r) as f64 / secs,
                    upstream_calls.saturating_sub(u) as f64 / secs,
                )
            }
            None => (0.0, 0.0),
        };
        *last = Some((now, requests, upstream_calls));
        *self.per_second.lock().unwrap_or_else(|e| e.into_inner()) = rates;
        rates
    }

    fn current(&self) -> (f64, f64) {
        *self.per_second.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Executions by status over the last day.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct JobCounts {
    /// Configured jobs.
    pub configured: usize,
    /// Executions running now.
    pub running: usize,
    /// Executions that failed in the last 24 hours.
    pub failed_24h: usize,
    /// Executions that completed in the last 24 hours.
    pub completed_24h: usize,
}

/// Everything at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    /// Gateway requests a second (over the last sampling interval).
    pub requests_per_second: f64,
    /// Upstream calls a second made by the gateway's routes.
    pub upstream_calls_per_second: f64,
    /// The cache: store, size, hit ratio, calls saved.
    pub cache: CacheView,
    /// Every upstream with its quota and its burn-down.
    pub upstreams: Vec<UpstreamView>,
    /// Jobs and recent executions.
    pub jobs: JobCounts,
    /// Queue depths (empty on a node without jobs).
    pub queues: Vec<QueueView>,
    /// Live workers.
    pub workers: usize,
    /// Active alerts.
    pub alerts_firing: usize,
}

async fn job_counts(s: &ApiState) -> Result<JobCounts, ApiError> {
    let mut c = JobCounts {
        configured: s.rt.settings().jobs.jobs.len(),
        ..JobCounts::default()
    };
    if s.jobs.is_none() {
        return Ok(c);
    }
    let repo =
        s.rt.repository()
            .await
            .map_err(|e| ApiError::unavailable("repository_unavailable", e))?;
    let since = chrono::Utc::now().timestamp_millis() - 86_400_000;
    let count = |status: BatchStatus, since_ms: Option<i64>| {
        let repo = repo.clone();
        async move {
            let f = ExecutionFilter {
                status: Some(status),
                since_ms,
                ..ExecutionFilter::default()
            };
            repo.find_executions(&f, 10_000)
                .await
                .map(|v| v.len())
                .map_err(|e| ApiError::unavailable("repository_unavailable", e.to_string()))
        }
    };
    c.running = count(BatchStatus::Started, None).await?
        + count(BatchStatus::Starting, None).await?
        + count(BatchStatus::Stopping, None).await?;
    c.failed_24h = count(BatchStatus::Failed, Some(since)).await?;
    c.completed_24h = count(BatchStatus::Completed, Some(since)).await?;
    Ok(c)
}

/// The overview now.
///
/// # Errors
///
/// When the store, the repository or the broker does not answer.
pub async fn overview(s: &ApiState) -> Result<Overview, ApiError> {
    let (rps, ups) = s.rates.current();
    let (queues, workers) = if s.jobs.is_some() {
        (queue_views(s).await?, worker_views(s).await?.len())
    } else {
        (Vec::new(), 0)
    };
    Ok(Overview {
        requests_per_second: rps,
        upstream_calls_per_second: ups,
        cache: cache_view(s).await?,
        upstreams: upstream_views(s, None),
        jobs: job_counts(s).await?,
        queues,
        workers,
        alerts_firing: crate::alerts::active(&s.rt)
            .await
            .map_err(|e| ApiError::unavailable("repository_unavailable", e))?
            .len(),
    })
}

/// Everything at a glance: request rate, hit ratio, calls saved, quota left
/// per upstream, jobs running and failed, queue depths.
#[utoipa::path(get, path = "/overview", tag = "meta",
    responses((status = 200, body = Overview), (status = 401, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")))]
pub(super) async fn get_overview(
    _: auth::Viewer,
    State(s): State<ApiState>,
) -> Result<Json<Overview>, ApiError> {
    Ok(Json(overview(&s).await?))
}

/// The series one sample holds: `(name, value)`.
async fn sample(s: &ApiState) -> Vec<(String, f64)> {
    let routes = s.gateway.route_stats();
    let requests: u64 = routes.iter().map(|r| r.total).sum();
    let calls: u64 = routes.iter().map(|r| r.upstream_calls).sum();
    let cached: u64 = routes
        .iter()
        .map(|r| r.requests["hit"] + r.requests["stale"])
        .sum();
    let (rps, ups) = s.rates.sample(requests, calls);
    let mut out = vec![
        ("requests_per_second".to_owned(), rps),
        ("upstream_calls_per_second".to_owned(), ups),
        (
            "calls_saved_total".to_owned(),
            requests.saturating_sub(calls) as f64,
        ),
    ];
    if requests > 0 {
        out.push(("hit_ratio".to_owned(), cached as f64 / requests as f64));
    }
    for (name, u) in &s.rt.settings().upstreams {
        if let Some(r) = u.stats().quota.remaining {
            out.push((format!("quota_remaining:{name}"), r as f64));
        }
    }
    if s.jobs.is_some()
        && let Ok(queues) = queue_views(s).await
    {
        for q in queues {
            out.push((
                format!("queue_depth:{}", q.name),
                (q.ready + q.delayed + q.running) as f64,
            ));
            out.push((format!("queue_dead:{}", q.name), q.dead as f64));
        }
    }
    out
}

/// Samples the overview every `[repository] series_interval` into the
/// repository, keeping `series_retention` of history. Stops with the
/// process.
pub fn start_sampler(s: ApiState) -> tokio::task::JoinHandle<()> {
    let every = s.rt.settings().jobs.series_interval;
    let keep = s.rt.settings().jobs.series_retention;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned = false;
        loop {
            tick.tick().await;
            let samples = sample(&s).await;
            let now = chrono::Utc::now().timestamp_millis();
            let keep_since = now - keep.as_millis().min(i64::MAX as u128) as i64;
            let r = match s.rt.ops().await {
                Ok(ops) => ops.record_samples(now, &samples, keep_since).await,
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => warned = false,
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!(error = %e, "cannot record the dashboard's chart samples; retrying each interval");
                }
                Err(_) => {}
            }
        }
    })
}

/// The rates shared by the sampler and the overview.
pub fn rates() -> Arc<Rates> {
    Arc::new(Rates::default())
}
