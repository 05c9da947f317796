//! The gateway's one error type and its one conversion into an HTTP response.
//!
//! Every failure records which side failed (client, upstream, internal), whether a
//! retry may help, and context. [`GatewayError::into_response`] is the only place
//! that decides what a client sees: a JSON body with a stable `error` code and a
//! message that never contains secrets or internal details. The full error is kept
//! in the response extensions for the logging layer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use sluice_upstream::error::write_error;
use sluice_upstream::{UpstreamError, UpstreamErrorKind};

/// Which side of the proxy is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's request is wrong.
    Client,
    /// The upstream failed or refused.
    Upstream,
    /// Sluice itself failed.
    Internal,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No route matches the path.
    NoRoute,
    /// The method is not served on this route.
    MethodNotAllowed,
    /// The request target is malformed or tries to leave the route's upstream.
    BadRequest,
    /// The upstream failed, refused or is out of budget (its codes, statuses and
    /// messages are the upstream client's).
    Upstream(UpstreamErrorKind),
    /// A bug or resource failure inside sluice.
    Internal,
}

/// A failed gateway request.
#[derive(Debug, Clone)]
pub struct GatewayError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Whether retrying the same upstream call may succeed.
    pub retryable: bool,
    /// The upstream involved, if any.
    pub upstream: Option<Arc<str>>,
    /// Human-readable context; never contains a secret.
    pub context: String,
}

impl GatewayError {
    /// A new error of `kind` with `context`.
    pub fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        let retryable = matches!(&kind, ErrorKind::Upstream(k) if k.transient());
        Self {
            kind,
            retryable,
            upstream: None,
            context: context.into(),
        }
    }

    /// Sets the upstream name.
    pub fn upstream(mut self, name: &Arc<str>) -> Self {
        self.upstream = Some(name.clone());
        self
    }

    /// Overrides the retryable flag.
    pub fn retryable(mut self, yes: bool) -> Self {
        self.retryable = yes;
        self
    }

    /// Replaces every form of a secret in the message parts (context, the
    /// upstream's code, message and reason) with `[redacted]`.
    pub fn scrub(mut self, scrubber: &sluice_core::Scrubber) -> Self {
        if scrubber.is_empty() {
            return self;
        }
        scrubber.scrub_string(&mut self.context);
        if let ErrorKind::Upstream(k) = &mut self.kind {
            k.scrub(scrubber);
        }
        self
    }

    /// When a client may try again, for `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.kind {
            ErrorKind::Upstream(k) => k.retry_after(),
            _ => None,
        }
    }

    /// Which side failed.
    pub fn side(&self) -> Side {
        match self.kind {
            ErrorKind::NoRoute | ErrorKind::MethodNotAllowed | ErrorKind::BadRequest => {
                Side::Client
            }
            ErrorKind::Internal => Side::Internal,
            _ => Side::Upstream,
        }
    }

    /// A stable snake_case code for the JSON body and the `error_type` label.
    pub fn code(&self) -> &'static str {
        match &self.kind {
            ErrorKind::NoRoute => "no_route",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Upstream(k) => k.code(),
            ErrorKind::Internal => "internal",
        }
    }

    /// The HTTP status a client receives.
    pub fn status(&self) -> StatusCode {
        match &self.kind {
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Upstream(UpstreamErrorKind::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Upstream(
                UpstreamErrorKind::QuotaExceeded { .. } | UpstreamErrorKind::Throttled { .. },
            ) => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The status reported as `fwd-status` in `Cache-Status`.
    pub fn fwd_status(&self) -> Option<u16> {
        match &self.kind {
            ErrorKind::Upstream(k) => k.fwd_status(),
            _ => None,
        }
    }

    /// The message a client sees.
    pub fn public_message(&self) -> String {
        match &self.kind {
            ErrorKind::NoRoute => "no route matches this path".into(),
            ErrorKind::Internal => "internal error; see the sluice log".into(),
            ErrorKind::Upstream(k) => k.public_message(
                self.upstream.as_deref().unwrap_or("upstream"),
                &self.context,
            ),
            _ => self.context.clone(),
        }
    }
}

impl From<UpstreamError> for GatewayError {
    fn from(e: UpstreamError) -> Self {
        let kind = match e.kind {
            UpstreamErrorKind::LeavesOrigin => ErrorKind::BadRequest,
            UpstreamErrorKind::Internal => ErrorKind::Internal,
            k => ErrorKind::Upstream(k),
        };
        Self {
            kind,
            retryable: e.retryable,
            upstream: e.upstream,
            context: e.context,
        }
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The quota message already embeds the context.
        let quota = matches!(
            self.kind,
            ErrorKind::Upstream(UpstreamErrorKind::QuotaExceeded { .. })
        );
        write_error(f, self.code(), &self.public_message(), &self.context, quota)
    }
}

impl std::error::Error for GatewayError {}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "error": self.code(),
            "message": self.public_message(),
        });
        if let Some(u) = &self.upstream {
            body["upstream"] = serde_json::Value::String(u.to_string());
        }
        if let ErrorKind::Upstream(UpstreamErrorKind::Rejected { code: Some(c), .. }) = &self.kind {
            body["upstream_code"] = serde_json::Value::String(c.clone());
        }
        if let ErrorKind::Upstream(UpstreamErrorKind::Status(s)) = self.kind {
            body["upstream_status"] = serde_json::Value::from(s);
        }
        let mut resp = Response::new(Body::from(body.to_string()));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(retry_after) = self.retry_after() {
            let secs = retry_after.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp.extensions_mut().insert(self);
        resp
    }
}
