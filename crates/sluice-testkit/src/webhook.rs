//! A webhook receiver: an HTTP server on `127.0.0.1:0` that records every
//! request (headers and body) and answers with the statuses it is told to,
//! then `200`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    /// Its path.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// The status it was answered with.
    pub answered: u16,
}

impl WebhookRequest {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The value of header `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<WebhookRequest>>,
    answers: Mutex<VecDeque<u16>>,
}

/// A running receiver; it stops when dropped.
#[derive(Debug)]
pub struct WebhookReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(s): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let answered = s
        .answers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop_front()
        .unwrap_or(200);
    s.requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(WebhookRequest {
            path: uri.path().to_owned(),
            headers,
            body,
            answered,
        });
    StatusCode::from_u16(answered).unwrap_or(StatusCode::OK)
}

impl WebhookReceiver {
    /// Starts a receiver answering `200` to everything.
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::answering(&[]).await
    }

    /// Starts a receiver that answers its first requests with `statuses`, in
    /// order, and `200` after them.
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub async fn answering(statuses: &[u16]) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            answers: Mutex::new(statuses.iter().copied().collect()),
            ..Shared::default()
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<WebhookRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits up to `timeout` until `done` holds for the requests received; them.
    ///
    /// # Panics
    ///
    /// When it does not hold by then.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[WebhookRequest]) -> bool,
    ) -> Vec<WebhookRequest> {
        let end = Instant::now() + timeout;
        loop {
            let r = self.requests();
            if done(&r) {
                return r;
            }
            assert!(
                Instant::now() < end,
                "the webhook receiver never got what was awaited; it got {} requests: {:#?}",
                r.len(),
                r.iter().map(WebhookRequest::json).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
