//! `sluice status NAME [--timeout D] [--fail-on-pause]`: wait for a verdict, for CI and scripts.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use kube::api::{Api, ListParams};

use crate::api::analysis::AnalysisRun;
use crate::api::rollout::Rollout;

use super::info::{Snapshot, client_phase, get_rollout, view};
use super::kube::{Target, connect};
use super::render::{live_errors, structured};
use super::{KubeArgs, Output};

/// Options of `status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Rollout name.
    pub name: String,
    /// Give up after this long (Go duration, e.g. `10m`); exit 1. Default: wait forever.
    #[arg(short = 't', long)]
    pub timeout: Option<kube::core::Duration>,
    /// Exit 2 as soon as the rollout is paused (a pause step, an inconclusive analysis, or
    /// `spec.paused`).
    #[arg(long)]
    pub fail_on_pause: bool,
    /// Print the current status once and exit with its code, without waiting.
    #[arg(long)]
    pub no_wait: bool,
    /// Keep waiting, printing a line each time the status changes (the default; `--watch=false`
    /// is `--no-wait`, as in `kubectl argo rollouts status`).
    #[arg(short = 'w', long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub watch: bool,
    /// Output format of the final status.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Where a rollout stands for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Healthy: exit 0.
    Healthy,
    /// Degraded or aborted: exit 1.
    Degraded,
    /// Paused: exit 2 with `--fail-on-pause`, else keep waiting.
    Paused,
    /// Still moving: keep waiting.
    Progressing,
}

/// The final word of `status`. Field names are stable (`-o json|yaml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// Rollout name.
    pub name: String,
    /// Healthy, Progressing, Paused or Degraded.
    pub phase: String,
    /// Status message.
    pub message: String,
    /// Exit code.
    pub exit_code: i32,
    /// True when `--timeout` ran out.
    pub timed_out: bool,
}

/// Classifies a rollout, as a client sees it.
pub fn verdict(ro: &Rollout) -> (Verdict, String, String) {
    let (phase, message) = client_phase(ro);
    let aborted = ro.status.as_ref().is_some_and(|s| s.abort);
    let v = if aborted || phase == "Degraded" {
        Verdict::Degraded
    } else if phase == "Healthy" {
        Verdict::Healthy
    } else if phase == "Paused" {
        Verdict::Paused
    } else {
        Verdict::Progressing
    };
    if aborted {
        // Whatever else the status says (a pause, a spec not yet observed), the abort decided
        // the outcome; say why it aborted.
        let message = ro
            .status
            .as_ref()
            .and_then(|s| s.message.clone())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "the update was aborted".to_string());
        return (v, "Degraded".to_string(), message);
    }
    (v, phase, message)
}

/// The exit code for a verdict, or `None` to keep waiting.
pub fn exit_code(v: Verdict, fail_on_pause: bool) -> Option<i32> {
    match v {
        Verdict::Healthy => Some(0),
        Verdict::Degraded => Some(1),
        Verdict::Paused if fail_on_pause => Some(2),
        Verdict::Paused | Verdict::Progressing => None,
    }
}

/// Why a metric of the current revision cannot be measured right now, if one errors: shown
/// while the run goes on, not only once it fails. Unreadable runs (RBAC) just add nothing.
async fn live_reason(target: &Target, ro: &Rollout) -> Option<String> {
    let api: Api<AnalysisRun> = Api::namespaced(target.client.clone(), &target.namespace);
    let runs = api.list(&ListParams::default()).await.ok()?.items;
    let v = view(&Snapshot::from_objects(ro.clone(), Vec::new(), runs));
    let errors: Vec<String> = live_errors(&v)
        .into_iter()
        .map(|(run, metric, error)| format!("{metric} in AnalysisRun {run}: {error}"))
        .collect();
    (!errors.is_empty()).then(|| format!("erroring: {}", errors.join("; ")))
}

/// Runs `status`: prints a line each time phase, message or a live analysis error changes as
/// it waits, then the verdict (not repeated when it is the line already printed).
pub async fn run(args: StatusArgs) -> anyhow::Result<i32> {
    let target = connect(&args.kube).await?;
    let no_wait = args.no_wait || !args.watch;
    let deadline = args
        .timeout
        .map(|d| tokio::time::Instant::now() + Duration::from(d));
    let mut last_printed: Option<String> = None;
    loop {
        let ro = get_rollout(&target, &args.name).await?;
        let (v, phase, message) = verdict(&ro);
        let code = exit_code(v, args.fail_on_pause);
        let timed_out = code.is_none()
            && (no_wait || deadline.is_some_and(|d| tokio::time::Instant::now() >= d));
        let reason = if code == Some(0) {
            None
        } else {
            live_reason(&target, &ro).await
        };
        let text = match &reason {
            Some(r) => line(
                &phase,
                &format!("{message}{}{r}", if message.is_empty() { "" } else { "; " }),
            ),
            None => line(&phase, &message),
        };
        if code.is_some() || timed_out {
            let exit_code = code.unwrap_or(1);
            let report = StatusReport {
                name: args.name.clone(),
                phase: phase.clone(),
                message: message.clone(),
                exit_code: if no_wait {
                    code.unwrap_or(0)
                } else {
                    exit_code
                },
                timed_out: timed_out && !no_wait,
            };
            match args.output {
                Output::Text => {
                    if last_printed.as_deref() != Some(text.as_str()) {
                        println!("{text}");
                    }
                    if report.timed_out {
                        println!("timed out waiting for rollout \"{}\"", args.name);
                    }
                }
                other => print!("{}", structured(&report, other)?),
            }
            return Ok(report.exit_code);
        }
        if args.output == Output::Text && last_printed.as_deref() != Some(text.as_str()) {
            println!("{text}");
            last_printed = Some(text);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn line(phase: &str, message: &str) -> String {
    if message.is_empty() {
        phase.to_string()
    } else {
        format!("{phase} - {message}")
    }
}
