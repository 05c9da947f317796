//! `sluice alerts …`: the alerts firing now (and those resolved lately), from
//! the alert state in the job repository, the same on every node.

use std::process::ExitCode;

use clap::Subcommand;

use crate::alerts::AlertRecord;
use crate::runtime::Runtime;

/// `sluice alerts …`
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Alerts firing now, oldest first: rule, severity, since when, labels and
    /// summary.
    List {
        /// One JSON document: `{"active": [...]}` (with `--all`, also
        /// `"resolved": [...]`); times are Unix ms.
        #[arg(long)]
        json: bool,
        /// Also the alerts resolved most recently.
        #[arg(long)]
        all: bool,
        /// How many resolved alerts `--all` shows.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// Runs an `alerts` command.
///
/// # Errors
///
/// When the repository cannot be read.
pub async fn run(cmd: AlertsCommand, rt: &Runtime) -> Result<ExitCode, String> {
    let AlertsCommand::List { json, all, limit } = cmd;
    let active = crate::alerts::active(rt).await?;
    let resolved = if all {
        Some(crate::alerts::recent(rt, limit).await?)
    } else {
        None
    };
    if json {
        let mut doc = serde_json::json!({ "active": active });
        if let Some(r) = &resolved {
            doc["resolved"] = serde_json::json!(r);
        }
        super::out::json(&doc);
        return Ok(ExitCode::SUCCESS);
    }
    if active.is_empty() {
        outln!("no alert is firing");
    }
    for a in &active {
        line(a);
    }
    if let Some(r) = resolved {
        outln!("");
        outln!("resolved lately:");
        if r.is_empty() {
            outln!("  none");
        }
        for a in &r {
            line(a);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One alert: `FIRING rule [severity] since … until … {labels} summary`.
fn line(a: &AlertRecord) {
    let labels: Vec<String> = a
        .labels
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "alertname" | "severity"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let until = match a.ends_at {
        Some(t) => format!("  until {}", super::job::time(Some(t))),
        None => String::new(),
    };
    outln!(
        "{} {} [{}] since {}{}  {{{}}}  {}",
        a.status.to_uppercase(),
        a.rule,
        a.severity,
        super::job::time(Some(a.starts_at)),
        until,
        labels.join(", "),
        a.annotations.get("summary").map_or("", String::as_str)
    );
}
