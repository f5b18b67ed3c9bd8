//! `sluice explain NAME`: why the rollout is where it is, in plain sentences.

use clap::Args;
use regex::Regex;
use serde::Serialize;

use super::info::{FailureView, RolloutView, fetch, round_value, short_duration, view};
use super::kube::connect;
use super::render::{clock, controller_reason, live_errors, structured};
use super::{KubeArgs, Output};

/// Options of `explain`.
#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// Rollout name.
    pub name: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// `explain -o json|yaml`. Field names are stable.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// Rollout name.
    pub name: String,
    /// Phase.
    pub phase: String,
    /// The sentences, in order.
    pub sentences: Vec<String>,
}

fn times(n: i32) -> String {
    match n {
        1 => "once".to_string(),
        2 => "twice".to_string(),
        3 => "three times".to_string(),
        n => format!("{n} times"),
    }
}

/// The comparison and the number of a simple condition such as `result[0] >= 0.95`
/// (`(">=", "0.95")`), also what the dashboard draws as a chart's threshold line. `None` when
/// the condition is not of that simple form.
pub fn threshold_parts(condition: &str) -> Option<(String, String)> {
    let re = Regex::new(
        r"^\s*(?:result(?:\[0\])?|default\(\s*result(?:\[0\])?\s*,\s*[^)]*\))\s*(>=|<=|>|<|==|!=)\s*([-+0-9.eE]+)\s*$",
    )
    .ok()?;
    let caps = re.captures(condition)?;
    Some((
        caps.get(1)?.as_str().to_string(),
        caps.get(2)?.as_str().to_string(),
    ))
}

/// How a measured value relates to the threshold of a simple condition such as
/// `result[0] >= 0.95`: "below 0.95". `None` when the condition is not of that simple form.
pub fn threshold_words(condition: &str, kind: &str) -> Option<String> {
    let (op, t) = threshold_parts(condition)?;
    let (op, t) = (op.as_str(), t.as_str());
    // A failed successCondition means the comparison was false; a met failureCondition means it
    // was true.
    let words = match (kind, op) {
        ("successCondition", ">=") => "below",
        ("successCondition", ">") => "at or below",
        ("successCondition", "<=") => "above",
        ("successCondition", "<") => "at or above",
        ("successCondition", "==") => "not equal to",
        ("successCondition", "!=") => "equal to",
        ("failureCondition", ">=") => "at or above",
        ("failureCondition", ">") => "above",
        ("failureCondition", "<=") => "at or below",
        ("failureCondition", "<") => "below",
        ("failureCondition", "==") => "equal to",
        ("failureCondition", "!=") => "not equal to",
        _ => return None,
    };
    Some(format!("{words} {t}"))
}

/// "metric success-rate measured 0.82, below 0.95, three times (limit 2) in AnalysisRun X".
fn failure_clause(f: &FailureView) -> String {
    let value = f
        .value
        .as_deref()
        .map(round_value)
        .unwrap_or_else(|| "no value".to_string());
    if f.condition_kind.as_deref() == Some("judge")
        && let Some(sentence) = &f.condition
        && f.phase != "Error"
    {
        return format!(
            "the judge of metric {} in AnalysisRun {} found {}",
            f.metric,
            f.analysis_run,
            sentence.trim_end_matches('.')
        );
    }
    match f.phase.as_str() {
        "Error" => format!(
            "metric {} could not be measured {} in a row (limit {}) in AnalysisRun {}: {}",
            f.metric,
            times(f.count),
            f.limit,
            f.analysis_run,
            value
        ),
        "Inconclusive" => format!(
            "metric {} measured {}, neither a success nor a failure, {} (limit {}) in AnalysisRun {}",
            f.metric,
            value,
            times(f.count),
            f.limit,
            f.analysis_run
        ),
        _ => {
            let how = match (&f.condition, &f.condition_kind) {
                (Some(c), Some(k)) => threshold_words(c, k).unwrap_or_else(|| {
                    if k == "failureCondition" {
                        format!("meeting failureCondition `{c}`")
                    } else {
                        format!("failing successCondition `{c}`")
                    }
                }),
                _ => "judged a failure".to_string(),
            };
            format!(
                "metric {} measured {}, {}, {} (limit {}) in AnalysisRun {}",
                f.metric,
                value,
                how,
                times(f.count),
                f.limit,
                f.analysis_run
            )
        }
    }
}

fn step_words(index: Option<i32>, n: usize) -> String {
    match index {
        Some(i) if n > 0 => format!("step {} of {n}", i + 1),
        _ => "the update".to_string(),
    }
}

fn traffic(v: &RolloutView) -> String {
    if let Some(bg) = &v.blue_green {
        let revision =
            |r: Option<i64>| r.map_or_else(|| "no revision".into(), |r| format!("revision {r}"));
        let mut text = format!(
            "Production traffic (Service {}) goes to {}.",
            bg.active_service,
            revision(bg.active_revision)
        );
        if let Some(preview) = &bg.preview_service {
            text.push_str(&format!(
                " The preview Service {preview} selects {}.",
                revision(bg.preview_revision)
            ));
        }
        return text;
    }
    match v.actual_weight {
        Some(w) if !v.traffic_routes.is_empty() => format!(
            "Traffic to the canary is {w}% (weights applied to {}).",
            v.traffic_routes.join(", ")
        ),
        Some(w) => format!("Traffic to the canary is {w}%."),
        None if v.traffic_router.is_none() => {
            "There is no traffic router: traffic follows the ratio of canary to stable pods."
                .to_string()
        }
        None => "No traffic weight has been set yet.".to_string(),
    }
}

/// "success-rate last measured 0.9712 (2 of 5)", or why it could not be measured when the
/// latest measurement errored.
fn metric_words(m: &super::info::MetricView) -> String {
    let of = m
        .expected_count
        .map(|n| format!(" ({} of {n})", m.count))
        .unwrap_or_default();
    if let Some(e) = &m.latest_error {
        return format!(
            "{} could not be measured{of}: {}",
            m.name,
            e.trim_end_matches('.')
        );
    }
    match m.last_values.last() {
        Some(val) => format!("{} last measured {}{of}", m.name, round_value(val)),
        None => format!("{} not measured yet", m.name),
    }
}

/// A command to suggest, with the namespace: it must work when pasted, whatever namespace the
/// reader's kubeconfig defaults to.
fn suggest(verb: &str, v: &RolloutView) -> String {
    format!("`sluice {verb} {} -n {}`", v.name, v.namespace)
}

/// The sentences for a rollout.
pub fn explain(v: &RolloutView) -> Vec<String> {
    let mut out = Vec::new();
    let n = v.step_count;
    let retry = suggest("retry", v);
    let promote = suggest("promote", v);
    let abort_cmd = suggest("abort", v);
    let resume = suggest("resume", v);
    let condition = |t: &str| v.conditions.iter().find(|c| c.type_ == t);
    // The new version: the canary, or blue-green's current revision while not yet stable.
    let canary = v.revisions.iter().find(|r| {
        r.role.contains("canary")
            || (v.blue_green.is_some() && r.current && !r.role.contains("stable"))
    });
    let stable = v.revisions.iter().find(|r| r.role.contains("stable"));

    if v.aborted {
        let abort = v.abort.as_ref();
        let at = v
            .aborted_at
            .as_deref()
            .map(|t| format!(" at {}", clock(t)))
            .unwrap_or_default();
        let step = abort.and_then(|a| a.step_index);
        match (&v.failure, abort.map(|a| a.cause.as_str())) {
            (Some(f), _) => out.push(format!(
                "Aborted at {}{at} because {}.",
                step_words(step.or(f.step_index), n),
                failure_clause(f)
            )),
            (None, Some("controller")) => {
                let why = abort
                    .and_then(controller_reason)
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                out.push(format!(
                    "Aborted by the controller{at}, at {}{why}.",
                    step_words(step, n)
                ));
            }
            (None, _) => {
                // No run of the current revision failed: someone set status.abort. Failures of
                // earlier revisions are history and are not the cause.
                let who = abort
                    .and_then(|a| a.manager.clone())
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default();
                let revision = canary
                    .and_then(|c| c.revision)
                    .map(|r| format!(" of revision {r}"))
                    .unwrap_or_default();
                out.push(format!(
                    "Aborted by a user{who}{at}, at {}{revision}; no analysis of this revision failed.",
                    step_words(step, n)
                ));
            }
        }
        out.push(traffic(v));
        if let Some(s) = stable {
            out.push(format!(
                "The stable revision {} ({}) serves the users; {}/{} of its pods are ready.",
                s.revision.map_or("?".into(), |r| r.to_string()),
                s.images.join(", "),
                s.ready,
                s.total
            ));
        }
        out.push(format!(
            "Run {retry} after a fix, or change the spec to roll forward."
        ));
        return out;
    }

    if let Some(c) = condition("InvalidSpec").filter(|c| c.status == "True") {
        out.push(format!(
            "The spec is invalid: {}. Nothing else changes until the spec is fixed.",
            c.message.trim_end_matches('.')
        ));
        return out;
    }

    match v.phase.as_str() {
        "Degraded" => {
            let why = v
                .conditions
                .iter()
                .find(|c| c.reason == "ProgressDeadlineExceeded")
                .map(|c| {
                    format!(
                        "the update made no progress before its deadline: {}",
                        c.message
                    )
                })
                .unwrap_or_else(|| v.message.clone());
            out.push(format!("Degraded: {}.", why.trim_end_matches('.')));
            if let Some(f) = &v.failure {
                out.push(format!("The last failed analysis: {}.", failure_clause(f)));
            }
            out.push(traffic(v));
        }
        "Paused" => {
            let step = v
                .current_step_index
                .and_then(|i| v.steps.get(usize::try_from(i).ok()?));
            if v.pause_reasons
                .iter()
                .any(|r| r == "InconclusiveAnalysisRun")
            {
                let because = v
                    .failure
                    .as_ref()
                    .map(|f| format!(" because {}", failure_clause(f)))
                    .unwrap_or_default();
                out.push(format!(
                    "Paused at {} because the analysis was inconclusive{because}.",
                    step_words(v.current_step_index, n)
                ));
                out.push(traffic(v));
                out.push(format!(
                    "Run {promote} to accept it and go on, or {abort_cmd} to go back to stable."
                ));
            } else if v.pause_reasons.iter().any(|r| r == "BlueGreenPause") {
                out.push(format!(
                    "Paused before switching production to revision {}.",
                    canary
                        .and_then(|c| c.revision)
                        .map_or("?".into(), |r| r.to_string())
                ));
                out.push(traffic(v));
                if let Some(left) = v.pause_seconds_left.filter(|l| *l > 0) {
                    out.push(format!(
                        "It promotes by itself in {}; {promote} switches now.",
                        short_duration(left)
                    ));
                } else {
                    out.push(format!("Run {promote} to switch the active Service."));
                }
            } else if v.pause_reasons.iter().any(|r| r == "CanaryPauseStep") {
                let desc = step.map(|s| s.description.clone()).unwrap_or_default();
                out.push(format!(
                    "Paused at {} ({desc}).",
                    step_words(v.current_step_index, n)
                ));
                out.push(traffic(v));
                if desc.ends_with("until promoted") {
                    out.push(format!("Run {promote} to go on."));
                } else if let Some(left) = v.pause_seconds_left.filter(|l| *l > 0) {
                    out.push(format!(
                        "It goes on by itself in {}; {promote} goes on now.",
                        short_duration(left)
                    ));
                } else {
                    out.push(format!(
                        "It goes on by itself when the pause ends; {promote} goes on now."
                    ));
                }
            } else if v.paused_by_user {
                out.push(format!(
                    "Paused by the user (spec.paused) at {}.",
                    step_words(v.current_step_index, n)
                ));
                out.push(traffic(v));
                out.push(format!("Run {resume} to go on."));
            } else {
                out.push(format!("Paused: {}.", v.message.trim_end_matches('.')));
            }
        }
        "Healthy" => {
            let s = stable.or(v.revisions.first());
            match s {
                Some(s) => out.push(format!(
                    "Healthy: revision {} ({}) is stable and takes all traffic, with {}/{} pods available.",
                    s.revision.map_or("?".into(), |r| r.to_string()),
                    s.images.join(", "),
                    s.available,
                    v.desired_replicas
                )),
                None => out.push("Healthy.".to_string()),
            }
        }
        _ => {
            match (canary, v.current_step_index) {
                (Some(c), Some(i)) if n > 0 && usize::try_from(i).is_ok_and(|i| i < n) => {
                    let desc = &v.steps[usize::try_from(i).unwrap_or(0)].description;
                    out.push(format!(
                        "Updating to revision {} ({}): at {} ({desc}).",
                        c.revision.map_or("?".into(), |r| r.to_string()),
                        c.images.join(", "),
                        step_words(Some(i), n)
                    ));
                    out.push(format!(
                        "{} The steps ask for {}%. {}/{} canary pods are ready.",
                        traffic(v),
                        v.desired_weight,
                        c.ready,
                        c.desired
                    ));
                }
                (Some(c), _) => out.push(format!(
                    "Updating to revision {} ({}): {}/{} new pods ready.",
                    c.revision.map_or("?".into(), |r| r.to_string()),
                    c.images.join(", "),
                    c.ready,
                    c.desired
                )),
                _ => out.push(format!(
                    "Progressing: {}.",
                    if v.message.is_empty() {
                        "waiting for the controller"
                    } else {
                        v.message.trim_end_matches('.')
                    }
                )),
            }
            for run in canary.map(|c| c.analysis_runs.as_slice()).unwrap_or(&[]) {
                if run.phase == "Running" || run.phase == "Pending" {
                    let metrics: Vec<String> = run.metrics.iter().map(metric_words).collect();
                    out.push(format!(
                        "AnalysisRun {} is {}{}.",
                        run.name,
                        run.phase,
                        if metrics.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", metrics.join("; "))
                        }
                    ));
                }
            }
        }
    }
    // A metric erroring while its run goes on: say why now, not when the run fails.
    if !matches!(v.phase.as_str(), "Progressing") {
        for (run, metric, error) in live_errors(v) {
            out.push(format!(
                "Metric {metric} of AnalysisRun {run} could not be measured: {}.",
                error.trim_end_matches('.')
            ));
        }
    }
    out
}

/// Runs `explain`.
pub async fn run(args: ExplainArgs) -> anyhow::Result<i32> {
    let target = connect(&args.kube).await?;
    let v = view(&fetch(&target, &args.name).await?);
    let sentences = explain(&v);
    match args.output {
        Output::Text => println!("{}", sentences.join(" ")),
        other => print!(
            "{}",
            structured(
                &Explanation {
                    name: v.name.clone(),
                    phase: v.phase.clone(),
                    sentences,
                },
                other
            )?
        ),
    }
    Ok(0)
}
