//! Notifications as queue tasks: the `alert.notify` task on the `alerts` queue
//! and its handler, which POSTs the Alertmanager webhook format (version 4) or
//! sends an e-mail over SMTP.
//!
//! A delivery that may succeed later (a 5xx, 408 or 429 answer, a timeout, a
//! refused connection, an SMTP transient error) is retried by the queue with
//! exponential backoff, up to the receiver's `attempts`; one that will not (a
//! 4xx answer, a permanent SMTP error, a receiver no longer configured) is
//! dead-lettered at once with the reason, for `sluice queue dlq list -q alerts`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use sluice_queue::{NewTask, RetryPolicy, Task, TaskContext, TaskError};

use super::store::AlertRecord;
use super::{SmtpTls, smtp_target};
use crate::config::ReceiverSettings;
use crate::runtime::Runtime;

/// The task name of alert notifications.
pub const ALERT_NOTIFY: &str = "alert.notify";
/// The queue alert notifications go on.
pub const ALERTS_QUEUE: &str = "alerts";
/// The header carrying the HMAC-SHA256 of a webhook body: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Sluice-Signature";

/// The payload of an `alert.notify` task: the receiver and the message, in the
/// Alertmanager webhook format (the e-mail is written from the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyInput {
    /// The receiver's name.
    pub receiver: String,
    /// The Alertmanager webhook message (version 4).
    pub message: Value,
}

/// RFC 3339 of Unix ms, as Alertmanager writes times.
fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The Alertmanager webhook message (version 4) of one incident, in its current
/// status, for `receiver`.
pub fn message(a: &AlertRecord, receiver: &str, external_url: &str) -> Value {
    let group_labels: BTreeMap<&str, &str> = [("alertname", a.rule.as_str())].into();
    let group_key = format!("{{}}:{{alertname={:?}}}", a.rule);
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": a.status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": a.labels,
        "commonAnnotations": a.annotations,
        "externalURL": external_url,
        "alerts": [{
            "status": a.status,
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": rfc3339(a.starts_at),
            // Alertmanager's zero time for an alert still firing.
            "endsAt": a.ends_at.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), rfc3339),
            "generatorURL": format!("{external_url}/ui/alerts?rule={}", a.rule),
            "fingerprint": a.fingerprint,
        }],
    })
}

/// The `alert.notify` task of `input` for a receiver allowed `attempts`,
/// deduplicated on `key` (one per incident, status and receiver).
pub fn notify_task(input: &NotifyInput, attempts: u32, key: String) -> NewTask {
    NewTask::new(
        ALERT_NOTIFY,
        serde_json::to_value(input).unwrap_or(Value::Null),
    )
    .queue(ALERTS_QUEUE)
    .max_attempts(attempts)
    .idempotency_key(key)
}

/// `sha256=<hex>` of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The `alert.notify` handler.
pub struct NotifyTask {
    rt: Arc<Runtime>,
    http: reqwest::Client,
}

impl NotifyTask {
    /// A handler delivering to the receivers of `rt`'s settings.
    pub fn new(rt: Arc<Runtime>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self { rt, http }
    }

    async fn webhook(
        &self,
        receiver: &str,
        url: &str,
        secret: Option<&sluice_core::Secret>,
        timeout: Duration,
        message: &Value,
    ) -> Result<(), TaskError> {
        let body = serde_json::to_vec(message).map_err(|e| TaskError::Fatal(e.to_string()))?;
        let mut req = self
            .http
            .post(url)
            .timeout(timeout)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("sluice/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(s) = secret {
            req = req.header(SIGNATURE_HEADER, signature(s.expose().as_bytes(), &body));
        }
        // The URL is never shown: a webhook's path often is its secret.
        let resp = req.body(body).send().await.map_err(|e| {
            TaskError::Retryable(format!("webhook {receiver}: {}", e.without_url()))
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        let reason = format!("webhook {receiver} answered {status}: {}", text.trim());
        if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Err(TaskError::Retryable(reason))
        } else {
            Err(TaskError::Fatal(reason))
        }
    }

    async fn email(
        &self,
        receiver: &str,
        r: &ReceiverSettings,
        message: &Value,
    ) -> Result<(), TaskError> {
        let ReceiverSettings::Email {
            smtp,
            from,
            to,
            credentials,
            timeout,
            ..
        } = r
        else {
            return Err(TaskError::Fatal(format!(
                "{receiver} is not an e-mail receiver"
            )));
        };
        let fatal = |e: String| TaskError::Fatal(format!("e-mail {receiver}: {e}"));
        let target = smtp_target(smtp).map_err(fatal)?;
        let mut b = match target.tls {
            SmtpTls::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(target.host.as_str())
            }
            SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&target.host)
                .map_err(|e| fatal(e.to_string()))?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&target.host)
                .map_err(|e| fatal(e.to_string()))?,
        }
        .port(target.port)
        .timeout(Some(*timeout));
        if let Some((user, pass)) = credentials {
            b = b.credentials(Credentials::new(user.clone(), pass.expose().to_owned()));
        }
        let (subject, body) = email_text(message);
        let mut m = Message::builder()
            .from(
                from.parse()
                    .map_err(|e: lettre::address::AddressError| fatal(e.to_string()))?,
            )
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for t in to {
            m = m.to(t
                .parse()
                .map_err(|e: lettre::address::AddressError| fatal(e.to_string()))?);
        }
        let m = m.body(body).map_err(|e| fatal(e.to_string()))?;
        match b.build().send(m).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(fatal(e.to_string())),
            Err(e) => Err(TaskError::Retryable(format!("e-mail {receiver}: {e}"))),
        }
    }
}

/// The subject and plain-text body of the e-mail for `message`.
pub fn email_text(message: &Value) -> (String, String) {
    let alert = &message["alerts"][0];
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let status = s(&message["status"]).to_uppercase();
    let rule = s(&alert["labels"]["alertname"]);
    let summary = s(&alert["annotations"]["summary"]);
    let subject = format!("[{status}] {rule}: {summary}");
    let mut body = format!("{status}: {rule}\n\n{summary}\n");
    if let Some(d) = alert["annotations"]["description"].as_str() {
        body.push_str(&format!("\n{d}\n"));
    }
    body.push_str("\nLabels:\n");
    if let Some(labels) = alert["labels"].as_object() {
        for (k, v) in labels {
            body.push_str(&format!("  {k} = {}\n", v.as_str().unwrap_or("")));
        }
    }
    body.push_str(&format!("\nSince: {}\n", s(&alert["startsAt"])));
    if status == "RESOLVED" {
        body.push_str(&format!("Resolved: {}\n", s(&alert["endsAt"])));
    }
    body.push_str(&format!("\n{}\n", s(&alert["generatorURL"])));
    (subject, body)
}

#[async_trait::async_trait]
impl Task for NotifyTask {
    const NAME: &'static str = ALERT_NOTIFY;
    type Input = NotifyInput;
    type Output = ();

    async fn execute(&self, ctx: TaskContext, input: NotifyInput) -> Result<(), TaskError> {
        let name = input.receiver.as_str();
        let Some(r) = self.rt.settings().alerts.receivers.get(name) else {
            return Err(TaskError::Fatal(format!(
                "receiver {name:?} is not configured (any more)"
            )));
        };
        let result = match r {
            ReceiverSettings::Webhook {
                url,
                secret,
                timeout,
                ..
            } => {
                self.webhook(name, url, secret.as_ref(), *timeout, &input.message)
                    .await
            }
            ReceiverSettings::Email { .. } => self.email(name, r, &input.message).await,
        };
        let outcome = match &result {
            Ok(()) => "sent",
            Err(TaskError::Retryable(_)) if ctx.attempt < ctx.max_attempts => "retry",
            Err(_) => "failed",
        };
        super::count_notification(name, outcome);
        if let Err(e) = &result {
            tracing::warn!(receiver = name, attempt = ctx.attempt, error = %e, "alert notification not delivered");
        }
        result
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(300),
            jitter: true,
        }
    }

    fn timeout(&self) -> Option<Duration> {
        Some(Duration::from_secs(120))
    }

    fn queue(&self) -> &str {
        ALERTS_QUEUE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_in_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
