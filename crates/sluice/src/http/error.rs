//! [`ApiError`]: the one error type of every endpoint sluice serves itself (not
//! the proxied gateway routes, whose errors are the gateway's).
//!
//! Every error answers an RFC 9457 problem document (`application/problem+json`)
//! with its status, so clients and tests see one shape whatever endpoint
//! failed: `type` (`urn:sluice:problem:CODE`), `title` (the status's reason),
//! `status`, `detail`, and two extension members kept from the first API,
//! `error` (the stable CODE) and `message` (= `detail`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer of a non-proxied endpoint: status, machine-readable code and
/// a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable code, e.g. `bad_request`, `no_job`, `store_unavailable`.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// `400` with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// `404` with `code`.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// `401 unauthorized`: no or a bad credential.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// `403 forbidden`: the credential's role may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// `409` with `code`: the resource is in a state that does not allow it.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// `503` with `code`: a backend (store, queue, claims) is unreachable.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
}

impl From<sluice_cache::StoreError> for ApiError {
    /// An operation the store does not support is the client's `400
    /// unsupported`; any other store error is `503 store_unavailable`.
    fn from(e: sluice_cache::StoreError) -> Self {
        match e {
            e @ sluice_cache::StoreError::Unsupported { .. } => {
                Self::bad_request("unsupported", e.to_string())
            }
            e => Self::unavailable("store_unavailable", e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({
                "type": format!("urn:sluice:problem:{}", self.code),
                "title": self.status.canonical_reason().unwrap_or("Error"),
                "status": self.status.as_u16(),
                "detail": self.message,
                "error": self.code,
                "message": self.message,
            })),
        )
            .into_response();
        r.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_answer_one_problem_shape() {
        let r = ApiError::not_found("no_job", "no job named \"x\"").into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            r.headers()[axum::http::header::CONTENT_TYPE],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!({"type": "urn:sluice:problem:no_job", "title": "Not Found", "status": 404,
                "detail": "no job named \"x\"", "error": "no_job", "message": "no job named \"x\""})
        );
    }
}
