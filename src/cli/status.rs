//! `sluice status NAME [--timeout D] [--fail-on-pause]`: wait for a verdict, for CI and scripts.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::api::rollout::Rollout;

use super::info::{client_phase, get_rollout};
use super::kube::connect;
use super::render::structured;
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

/// Runs `status`: prints each change of phase/message as it waits, then the verdict.
pub async fn run(args: StatusArgs) -> anyhow::Result<i32> {
    let target = connect(&args.kube).await?;
    let deadline = args
        .timeout
        .map(|d| tokio::time::Instant::now() + Duration::from(d));
    let mut last = (String::new(), String::new());
    loop {
        let ro = get_rollout(&target, &args.name).await?;
        let (v, phase, message) = verdict(&ro);
        let code = exit_code(v, args.fail_on_pause);
        let timed_out = code.is_none()
            && (args.no_wait || deadline.is_some_and(|d| tokio::time::Instant::now() >= d));
        if code.is_some() || timed_out {
            let exit_code = code.unwrap_or(1);
            let report = StatusReport {
                name: args.name.clone(),
                phase: phase.clone(),
                message: message.clone(),
                exit_code: if args.no_wait {
                    code.unwrap_or(0)
                } else {
                    exit_code
                },
                timed_out: timed_out && !args.no_wait,
            };
            match args.output {
                Output::Text => {
                    let line = line(&phase, &message);
                    if report.timed_out {
                        println!("{line}\ntimed out waiting for rollout \"{}\"", args.name);
                    } else {
                        println!("{line}");
                    }
                }
                other => print!("{}", structured(&report, other)?),
            }
            return Ok(report.exit_code);
        }
        if args.output == Output::Text && (phase.clone(), message.clone()) != last {
            println!("{}", line(&phase, &message));
        }
        last = (phase, message);
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
