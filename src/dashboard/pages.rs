//! The dashboard's HTML. Every page is a fixed frame (header, actions) around a live part that
//! the server renders again when a watch reports a change and pushes to the browser; both are
//! made here by the same functions, so the first load and the live updates cannot differ.
//!
//! Everything from the cluster (names, images, messages, annotations) is interpolated through
//! maud, which escapes it; nothing here uses `PreEscaped` on cluster data.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use maud::{DOCTYPE, Markup, html};

use super::cache::{Cache, event_time};
use super::chart::{metric_chart, points, threshold, weight_bars};
use crate::api::constants::pod_template_hash;
use crate::api::rollout::Rollout;
use crate::cli::info::{RolloutView, RunView, short_duration, step_text};
use crate::cli::list::rows;

/// Filters of the overview.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Filter {
    /// Only this namespace (empty: every one watched).
    #[serde(default)]
    pub ns: String,
    /// Only rollouts whose namespace, name or images contain this text (any case).
    #[serde(default)]
    pub q: String,
}

/// Age of an object created at `t`, as `kubectl get` prints it.
fn age(t: Option<Timestamp>, now: Timestamp) -> String {
    t.map(|t| short_duration((now.as_second() - t.as_second()).max(0)))
        .unwrap_or_else(|| "-".into())
}

fn images(ro: &Rollout) -> Vec<String> {
    ro.spec
        .template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The canary weight a person should read: once an update is fully promoted, the canary is the
/// new stable and takes all traffic, whatever weight status last recorded (as `sluice list`).
fn actual_weight(actual: Option<i32>, update_in_progress: bool) -> Option<i32> {
    actual.map(|w| if update_in_progress { w } else { 100 })
}

/// The phase as a label with its word (never colour alone).
fn phase_badge(phase: &str) -> Markup {
    html! { span class={"badge phase-" (phase.to_lowercase())} { (phase) } }
}

/// The whole page around `live` (the part the server pushes again on changes).
pub fn page(
    title: &str,
    token: &str,
    live_url: &str,
    actions: Option<Markup>,
    live: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="sluice-token" content=(token);
                title { (title) " · Sluice" }
                link rel="stylesheet" href="/static/style.css";
                script src="/static/app.js" defer {}
            }
            body {
                header class="top" {
                    a href="/" class="brand" { "Sluice" }
                    span class="conn" id="conn" role="status" aria-live="polite" { "connecting…" }
                }
                @if let Some(a) = actions { (a) }
                main id="live" data-live=(live_url) aria-live="polite" { (live) }
            }
        }
    }
}

fn watch_errors(cache: &Cache) -> Markup {
    let errors = cache.errors();
    html! {
        @if !errors.is_empty() {
            div class="error" role="alert" {
                @for (resource, message) in &errors {
                    p { "Cannot watch " (resource) ": " (message) }
                }
            }
        }
    }
}

/// The overview's filter form (outside the live part: a push must not reset what is typed).
pub fn filter_form(cache: &Cache, filter: &Filter, namespaces_watched: Option<&str>) -> Markup {
    let mut namespaces: Vec<String> = cache
        .rollouts()
        .iter()
        .filter_map(|r| r.namespace())
        .collect();
    namespaces.dedup();
    html! {
        form class="filter" method="get" action="/" role="search" {
            @if let Some(ns) = namespaces_watched {
                span { "Namespace " b { (ns) } }
            } @else {
                label { "Namespace "
                    select name="ns" {
                        option value="" selected[filter.ns.is_empty()] { "all namespaces" }
                        @for ns in &namespaces {
                            option value=(ns) selected[filter.ns == *ns] { (ns) }
                        }
                    }
                }
            }
            label { "Filter "
                input type="search" name="q" value=(filter.q) placeholder="name or image";
            }
            button type="submit" { "Apply" }
        }
    }
}

/// The overview's live part: every Rollout that passes the filter.
pub fn overview(cache: &Cache, filter: &Filter) -> Markup {
    let now = Timestamp::now();
    let all = cache.rollouts();
    let q = filter.q.to_lowercase();
    let shown: Vec<&Rollout> = all
        .iter()
        .filter(|r| filter.ns.is_empty() || r.namespace().as_deref() == Some(filter.ns.as_str()))
        .filter(|r| {
            q.is_empty()
                || r.name_any().to_lowercase().contains(&q)
                || r.namespace()
                    .unwrap_or_default()
                    .to_lowercase()
                    .contains(&q)
                || images(r).iter().any(|i| i.to_lowercase().contains(&q))
        })
        .collect();
    let table_rows = rows(&shown.iter().map(|r| (*r).clone()).collect::<Vec<_>>());
    html! {
        (watch_errors(cache))
        p class="count" { (shown.len()) " of " (all.len()) " rollouts" }
        @if shown.is_empty() {
            p { "No rollouts." }
        } @else {
            div class="scroll" {
            table class="rollouts" {
                thead { tr {
                    th scope="col" { "Namespace" } th scope="col" { "Name" } th scope="col" { "Phase" }
                    th scope="col" { "Strategy" } th scope="col" { "Step" } th scope="col" { "Weight (set / actual)" }
                    th scope="col" { "Images" } th scope="col" { "Pods" } th scope="col" { "Age" }
                } }
                tbody {
                    @for (row, ro) in table_rows.iter().zip(&shown) {
                        @let aborted = ro.status.as_ref().is_some_and(|s| s.abort);
                        tr data-rollout=(row.name) data-namespace=(row.namespace) {
                            td { (row.namespace) }
                            td { a href={"/rollouts/" (row.namespace) "/" (row.name)} { (row.name) } }
                            td {
                                (phase_badge(&row.phase))
                                @if aborted { " " span class="badge aborted" { "Aborted" } }
                            }
                            td { (row.strategy) }
                            td { (row.step) }
                            td class="weight" {
                                (row.set_weight) "% / "
                                (actual_weight(row.actual_weight, row.update_in_progress).map_or("-".to_string(), |w| format!("{w}%")))
                            }
                            td { @for i in images(ro) { div { code { (i) } } } }
                            td { (row.available) "/" (row.desired) " available" }
                            td { (age(ro.metadata.creation_timestamp.as_ref().map(|t| t.0), now)) }
                        }
                    }
                }
            }
            }
        }
    }
}

/// The actions of a rollout page: buttons and the confirmation dialog. Outside the live part,
/// so that a push does not close an open dialog.
pub fn actions(namespace: &str, name: &str) -> Markup {
    const ACTIONS: [(&str, &str, &str); 8] = [
        ("promote", "Promote", "go on to the next step"),
        (
            "promote-full",
            "Promote full",
            "skip every remaining step and analysis",
        ),
        (
            "abort",
            "Abort",
            "send all traffic back to the stable version",
        ),
        (
            "retry",
            "Retry",
            "start the aborted update again from its first step",
        ),
        ("pause", "Pause", "pause the rollout"),
        ("resume", "Resume", "resume the paused rollout"),
        ("restart", "Restart", "restart every pod"),
        ("undo", "Undo", "roll back to the previous revision"),
    ];
    html! {
        section class="actions" aria-label="Actions" data-namespace=(namespace) data-name=(name) {
            @for (id, label, what) in ACTIONS {
                button type="button" class={"action " (id)} data-action=(id) data-label=(label) data-what=(what) { (label) }
            }
            div id="result" role="status" aria-live="polite" {}
            dialog id="confirm" aria-labelledby="confirm-text" {
                form method="dialog" {
                    p id="confirm-text" {}
                    button value="cancel" id="confirm-cancel" { "Cancel" }
                    " "
                    button value="ok" id="confirm-ok" class="primary" { "Confirm" }
                }
            }
        }
    }
}

fn pod_ready(p: &Pod) -> (usize, usize, i32) {
    let statuses = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    (
        statuses.iter().filter(|c| c.ready).count(),
        statuses.len(),
        statuses.iter().map(|c| c.restart_count).sum(),
    )
}

fn run_section(cache: &Cache, namespace: &str, run: &RunView) -> Markup {
    let object = cache.analysis_run(namespace, &run.name);
    html! {
        article class="run" data-run=(run.name) {
            h3 { "AnalysisRun " (run.name) " " (phase_badge(&run.phase)) }
            @if let Some(m) = &run.message { p { (m) } }
            @for m in &run.metrics {
                @let result = object.as_ref().and_then(|o| o.status.as_ref())
                    .and_then(|s| s.metric_results.iter().find(|r| r.name == m.name));
                @let pts = result.map(points).unwrap_or_default();
                section class="metric" {
                    h4 { "Metric " (m.name) " " (phase_badge(&m.phase)) }
                    p class="counts" {
                        (m.count) @if let Some(n) = m.expected_count { " of " (n) } " measured: "
                        (m.successful) " successful, " (m.failed) " failed, "
                        (m.inconclusive) " inconclusive, " (m.error) " errors"
                        @if let Some(c) = &m.condition {
                            " · " (m.condition_kind.as_deref().unwrap_or("condition")) " " code { (c) }
                        }
                    }
                    @if let Some(e) = &m.latest_error { p class="error" { "Could not be measured: " (e) } }
                    @if let Some(msg) = &m.message { p { (msg) } }
                    (metric_chart(&m.name, &pts, m.condition.as_deref().and_then(threshold)))
                }
            }
        }
    }
}

/// The rollout page's live part.
pub fn rollout(cache: &Cache, v: &RolloutView, snapshot_pods: &[Pod], router: Markup) -> Markup {
    let now = Timestamp::now();
    let explanation = crate::cli::explain::explain(v);
    let current_runs: Vec<&RunView> = v
        .revisions
        .iter()
        .filter(|r| r.current)
        .flat_map(|r| r.analysis_runs.iter())
        .collect();
    let mut names: Vec<String> = vec![v.name.clone()];
    names.extend(v.revisions.iter().map(|r| r.replica_set.clone()));
    names.extend(current_runs.iter().map(|r| r.name.clone()));
    let events = cache.events_about(&v.namespace, &names);
    let pause_ends: Option<Timestamp> = v.pause_ends_at.as_deref().and_then(|t| t.parse().ok());
    html! {
        (watch_errors(cache))
        h1 { (v.name) " " small { "in " (v.namespace) } " " (phase_badge(&v.phase))
            @if v.aborted { " " span class="badge aborted" { "Aborted" } } }
        p class="summary" {
            (v.strategy)
            @if let Some(s) = step_text(v) { " · step " span id="step" { (s) } }
            @if !v.message.is_empty() { " · " (v.message) }
        }
        section aria-labelledby="h-explain" {
            h2 id="h-explain" { "Why it is there" }
            p id="explanation" { (explanation.join(" ")) }
        }
        div class="columns" {
        section aria-labelledby="h-steps" {
            h2 id="h-steps" { "Steps" }
            @if v.steps.is_empty() { p { "No steps: the update goes straight to 100%." } }
            ol class="ladder" {
                @for s in &v.steps {
                    li class={"step " (s.state)} data-state=(s.state) {
                        span class="state" { (s.state) } " " (s.description)
                        @if s.state == "current" {
                            @if let Some(end) = pause_ends {
                                " · " span class="pause-left" data-ends-at=(end.to_string()) {
                                    (short_duration(v.pause_seconds_left.unwrap_or(0).max(0))) " left"
                                }
                            } @else if v.pause_reasons.iter().any(|r| r == "CanaryPauseStep") {
                                " · paused until promoted"
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="h-weights" {
            h2 id="h-weights" { "Traffic" }
            p { "Canary weight: desired " span id="desired-weight" { (v.desired_weight) "%" }
                ", actual " span id="actual-weight" { (actual_weight(v.actual_weight, v.update_in_progress).map_or("-".to_string(), |w| format!("{w}%"))) }
                @if let Some(s) = v.stable_weight { ", stable " (s) "%" } }
            (weight_bars(v.desired_weight, actual_weight(v.actual_weight, v.update_in_progress)))
            (router)
        }
        }
        section aria-labelledby="h-revisions" {
            h2 id="h-revisions" { "Revisions" }
            div class="scroll" {
            table class="revisions" {
                thead { tr { th scope="col" { "Revision" } th scope="col" { "ReplicaSet" } th scope="col" { "Role" }
                    th scope="col" { "Images" } th scope="col" { "Ready" } th scope="col" { "Restarts" } th scope="col" { "Age" } } }
                tbody {
                    @for r in &v.revisions {
                        tr {
                            td { (r.revision.map_or("?".to_string(), |n| n.to_string())) @if r.current { " (current)" } }
                            td { (r.replica_set) }
                            td { (r.role) }
                            td { @for i in &r.images { div { code { (i) } } } }
                            td { (r.ready) "/" (r.desired) }
                            td { (r.restarts.map_or("?".to_string(), |n| n.to_string())) }
                            td { (r.age.clone().unwrap_or_else(|| "-".into())) }
                        }
                        @for p in snapshot_pods.iter().filter(|p| r.pod_template_hash.is_some() && pod_template_hash(p.labels()) == r.pod_template_hash.as_ref()) {
                            @let (ready, total, restarts) = pod_ready(p);
                            tr class="pod" {
                                td {} td colspan="2" { "pod " (p.name_any()) }
                                td { @for c in p.spec.iter().flat_map(|s| s.containers.iter()) { div { code { (c.image.clone().unwrap_or_default()) } } } }
                                td { (ready) "/" (total) }
                                td { (restarts) }
                                td { (age(p.metadata.creation_timestamp.as_ref().map(|t| t.0), now)) }
                            }
                        }
                    }
                }
            }
            }
        }
        section aria-labelledby="h-analysis" {
            h2 id="h-analysis" { "Analysis of the current revision" }
            @if current_runs.is_empty() { p { "No AnalysisRuns." } }
            @for run in &current_runs { (run_section(cache, &v.namespace, run)) }
        }
        section aria-labelledby="h-conditions" {
            h2 id="h-conditions" { "Conditions" }
            ul { @for c in &v.conditions { li { b { (c.type_) } " " (c.status) " " (c.reason) ": " (c.message) } } }
        }
        section aria-labelledby="h-events" {
            h2 id="h-events" { "Events" }
            @if events.is_empty() { p { "No events." } }
            div class="scroll" {
            table class="events" {
                tbody {
                    @for e in events.iter().take(30) {
                        tr {
                            td { (age(event_time(e), now)) " ago" }
                            td { (e.type_.clone().unwrap_or_default()) }
                            td { (e.reason.clone().unwrap_or_default()) }
                            td { (e.regarding.as_ref().and_then(|r| r.kind.clone()).unwrap_or_default()) " "
                                 (e.regarding.as_ref().and_then(|r| r.name.clone()).unwrap_or_default()) }
                            td { (e.note.clone().unwrap_or_default()) }
                        }
                    }
                }
            }
            }
        }
    }
}

/// A page for a rollout that is not (or no longer) there.
pub fn missing(cache: &Cache, namespace: &str, name: &str) -> Markup {
    html! {
        (watch_errors(cache))
        h1 { (name) " " small { "in " (namespace) } }
        p role="alert" { "Rollout " (namespace) "/" (name) " is not in the cluster (or not visible to you)." }
    }
}
