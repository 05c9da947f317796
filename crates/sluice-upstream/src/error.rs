//! The upstream client's one error type.
//!
//! [`UpstreamError`] records what went wrong on the way to and from an upstream,
//! whether retrying may help, and context that never contains a secret. It knows
//! the stable code and the public message of each kind, because the gateway shows
//! them to clients and batch jobs write them into exit messages: the gateway's
//! `GatewayError` wraps the kind and asks it, so there is one wording.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::Scrubber;

/// What went wrong calling an upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamErrorKind {
    /// The upstream did not answer in time.
    Timeout,
    /// The upstream could not be reached.
    Connect,
    /// The upstream answered with a server error status.
    Status(u16),
    /// The upstream answered 2xx with a body that fails `ok_when`.
    Rejected {
        /// The upstream's own error code, when one was found in the body.
        code: Option<String>,
        /// The upstream's own error message, when found.
        message: Option<String>,
        /// Why the body failed (`predicate was false`, `the body nests deeper …`).
        reason: String,
    },
    /// The upstream answered 429 Too Many Requests: its own rate limit, which
    /// sluice respects for `retry_after` (upstream calls wait that long).
    Throttled {
        /// The upstream's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The upstream's answer could not be read (truncated, too large, bad framing).
    Body,
    /// The upstream's call budget is spent.
    QuotaExceeded {
        /// When to try again.
        retry_after: Duration,
    },
    /// The request would leave the upstream's configured origin (the caller's
    /// path or query is at fault).
    LeavesOrigin,
    /// The client itself failed (TLS set-up, closed).
    Internal,
}

impl UpstreamErrorKind {
    /// Whether this kind is retryable unless said otherwise: timeouts, connection
    /// failures, unreadable bodies and 5xx statuses.
    pub fn transient(&self) -> bool {
        matches!(self, Self::Timeout | Self::Connect | Self::Body)
            || matches!(self, Self::Status(s) if *s >= 500)
    }

    /// A stable snake_case code for JSON bodies and the `error_type` label.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout => "upstream_timeout",
            Self::Connect => "upstream_unreachable",
            Self::Status(_) => "upstream_status",
            Self::Rejected { .. } => "upstream_rejected",
            Self::Throttled { .. } => "upstream_throttled",
            Self::Body => "upstream_bad_body",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::LeavesOrigin => "bad_request",
            Self::Internal => "internal",
        }
    }

    /// When a client may try again, for `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::QuotaExceeded { retry_after } => Some(*retry_after),
            Self::Throttled { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// The status reported as `fwd-status` in `Cache-Status`.
    pub fn fwd_status(&self) -> Option<u16> {
        match self {
            Self::Status(s) => Some(*s),
            Self::Rejected { .. } => Some(200),
            Self::Throttled { .. } => Some(429),
            Self::Timeout => Some(504),
            Self::Connect | Self::Body => Some(502),
            _ => None,
        }
    }

    /// The message a client sees, for upstream `up` with `context`.
    pub fn public_message(&self, up: &str, context: &str) -> String {
        match self {
            Self::Internal => "internal error; see the sluice log".into(),
            Self::Timeout => format!("upstream {up} did not answer in time"),
            Self::Connect => format!("upstream {up} could not be reached"),
            Self::Status(s) => format!("upstream {up} answered HTTP {s}"),
            Self::Rejected {
                code,
                message,
                reason,
            } => match (code, message) {
                (Some(c), Some(m)) => format!("upstream {up} answered with error code {c} ({m})"),
                (Some(c), None) => format!("upstream {up} answered with error code {c}"),
                _ => format!("upstream {up} answered with a body that fails ok_when: {reason}"),
            },
            Self::Throttled { retry_after } => match retry_after {
                Some(d) => format!(
                    "upstream {up} answered 429 Too Many Requests; retry in {}s",
                    d.as_secs().max(1)
                ),
                None => format!("upstream {up} answered 429 Too Many Requests"),
            },
            Self::QuotaExceeded { retry_after } => format!(
                "the call budget of upstream {up} is spent; retry in {}s ({context})",
                retry_after.as_secs().max(1),
            ),
            _ => context.to_owned(),
        }
    }

    /// Replaces every form of a secret in the upstream's own words (code,
    /// message, reason) with `[redacted]`.
    pub fn scrub(&mut self, scrubber: &Scrubber) {
        if let Self::Rejected {
            code,
            message,
            reason,
        } = self
        {
            for part in [code.as_mut(), message.as_mut(), Some(reason)]
                .into_iter()
                .flatten()
            {
                scrubber.scrub_string(part);
            }
        }
    }
}

/// Writes `{code}: {message}`, then ` ({context})` when the context adds
/// something: the one display format of gateway and upstream errors.
///
/// # Errors
///
/// When `f` fails.
pub fn write_error(
    f: &mut fmt::Formatter<'_>,
    code: &str,
    message: &str,
    context: &str,
    context_in_message: bool,
) -> fmt::Result {
    write!(f, "{code}: {message}")?;
    if !context_in_message && !context.is_empty() && message != context {
        write!(f, " ({context})")?;
    }
    Ok(())
}

/// A failed upstream call.
#[derive(Debug, Clone)]
pub struct UpstreamError {
    /// What went wrong.
    pub kind: UpstreamErrorKind,
    /// Whether retrying the same upstream call may succeed.
    pub retryable: bool,
    /// The upstream involved, if known.
    pub upstream: Option<Arc<str>>,
    /// Human-readable context; never contains a secret.
    pub context: String,
}

impl UpstreamError {
    /// A new error of `kind` with `context`, retryable when the kind is
    /// [transient](UpstreamErrorKind::transient).
    pub fn new(kind: UpstreamErrorKind, context: impl Into<String>) -> Self {
        Self {
            retryable: kind.transient(),
            kind,
            upstream: None,
            context: context.into(),
        }
    }

    /// Sets the upstream name.
    #[must_use]
    pub fn upstream(mut self, name: &Arc<str>) -> Self {
        self.upstream = Some(name.clone());
        self
    }

    /// Overrides the retryable flag.
    #[must_use]
    pub fn retryable(mut self, yes: bool) -> Self {
        self.retryable = yes;
        self
    }

    /// Replaces every form of a secret in the message parts (context, the
    /// upstream's code, message and reason) with `[redacted]`.
    #[must_use]
    pub fn scrub(mut self, scrubber: &Scrubber) -> Self {
        if scrubber.is_empty() {
            return self;
        }
        scrubber.scrub_string(&mut self.context);
        self.kind.scrub(scrubber);
        self
    }

    /// The message a client sees.
    pub fn public_message(&self) -> String {
        self.kind.public_message(
            self.upstream.as_deref().unwrap_or("upstream"),
            &self.context,
        )
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quota = matches!(self.kind, UpstreamErrorKind::QuotaExceeded { .. });
        write_error(
            f,
            self.kind.code(),
            &self.public_message(),
            &self.context,
            quota,
        )
    }
}

impl std::error::Error for UpstreamError {}
