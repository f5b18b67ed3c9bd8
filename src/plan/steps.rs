//! The canary steps: what each asks for (the weight in force, the canary size), when each is
//! done, and walking through the completed ones.

use std::time::Duration;

use super::analysis::{request_run, run_for};
use super::context::{Ctx, Journal, add, clear_pauses, hold};
use super::replica_sets::basic_params;
use super::replicas::{Counts, apply_min_pods, basic_canary_at_target, canary_replicas_for_weight};
use super::types::{AnalysisRunKind, AnalysisRunRequest, EventType, ObservedReplicaSet};
use crate::api::common::AnalysisPhase;
use crate::api::constants::reason;
use crate::api::rollout::{CanaryStep, PauseReason, RolloutAnalysis, RolloutPause, RolloutStatus};

/// Where walking the steps stopped.
pub(super) struct Walk {
    /// Index of the first unfinished step (the number of steps when all are done).
    pub index: i32,
    /// Why the update must abort, when a step's analysis says so.
    pub abort: Option<String>,
}

/// Advances through completed steps, from `idx`.
pub(super) fn walk(
    ctx: &Ctx,
    st: &mut RolloutStatus,
    journal: &mut Journal,
    requests: &mut Vec<AnalysisRunRequest>,
    mut idx: i32,
) -> Walk {
    let n = ctx.n_steps();
    while idx < n {
        let step = &ctx.steps[idx as usize];
        match step_state(ctx, st, journal, requests, idx, step) {
            StepState::Done => {}
            StepState::Waiting => break,
            StepState::Abort(why) => {
                return Walk {
                    index: idx,
                    abort: Some(why),
                };
            }
        }
        clear_pauses(st);
        journal.event(
            EventType::Normal,
            reason::ROLLOUT_STEP_COMPLETED,
            format!(
                "step {} of {n} completed ({})",
                idx + 1,
                describe_step(step)
            ),
        );
        idx += 1;
    }
    Walk {
        index: idx,
        abort: None,
    }
}

enum StepState {
    Done,
    Waiting,
    Abort(String),
}

impl From<bool> for StepState {
    fn from(done: bool) -> Self {
        if done {
            StepState::Done
        } else {
            StepState::Waiting
        }
    }
}

fn step_state(
    ctx: &Ctx,
    st: &mut RolloutStatus,
    journal: &mut Journal,
    requests: &mut Vec<AnalysisRunRequest>,
    idx: i32,
    step: &CanaryStep,
) -> StepState {
    if let Some(w) = step.set_weight {
        weight_reached(ctx, idx, w).into()
    } else if let Some(pause) = &step.pause {
        pause_over(ctx, st, journal, idx, pause).into()
    } else if step.set_canary_scale.is_some() {
        let weight = last_weight(ctx.steps, idx, ctx.max_weight);
        let want = desired_canary_replicas(ctx, idx, weight);
        ctx.replica_set(&ctx.current_hash)
            .is_some_and(|r| r.replicas == want && r.available >= want)
            .into()
    } else if let Some(analysis) = &step.analysis {
        analysis_state(ctx, st, journal, requests, idx, analysis)
    } else {
        // setHeaderRoute / setMirrorRoute: the plan that stops at this step carries its route
        // (see `traffic::managed_routes`), and the status that records the stop is written only
        // after that plan was applied, or before any plan that moves on. So the step is done
        // once an observed status records it as the current step: the status never reports a
        // later step while the routers still have the previous routes.
        let recorded = ctx
            .obs
            .rollout
            .status
            .as_ref()
            .and_then(|s| s.current_step_index);
        (recorded == Some(idx)).into()
    }
}

/// A `setWeight` step is done once the canary runs the pods for it and, with traffic routing,
/// the routers send it that weight through a canary Service on the current version.
fn weight_reached(ctx: &Ctx, idx: i32, w: i32) -> bool {
    let obs = ctx.obs;
    let canary_rs = ctx.replica_set(&ctx.current_hash);
    if ctx.routing {
        let want = desired_canary_replicas(ctx, idx, w);
        let ready = canary_rs.is_some_and(|r| r.available >= want && r.replicas >= want);
        let svc =
            obs.traffic.canary_service_hash.as_deref() == Some(ctx.current_hash.as_str()) || w == 0;
        return ready && svc && obs.traffic.canary_weight == Some(w);
    }
    // Basic canary: the replica split has reached its target (Argo's test, so a step is done
    // exactly when Argo would move on).
    let entry = |r: &ObservedReplicaSet| {
        (
            Counts {
                replicas: r.replicas,
                available: r.available,
            },
            r.actual,
        )
    };
    let others = obs
        .replica_sets
        .iter()
        .filter(|r| r.hash != ctx.stable_hash && r.hash != ctx.current_hash);
    basic_canary_at_target(
        &basic_params(ctx, w),
        canary_rs.map(entry),
        ctx.replica_set(&ctx.stable_hash).map(entry),
        others.clone().map(|r| r.replicas).sum(),
        others.map(|r| r.available).sum(),
    )
}

/// A `pause` step: held by a pause condition until its duration passed or the user promoted.
fn pause_over(
    ctx: &Ctx,
    st: &mut RolloutStatus,
    journal: &mut Journal,
    idx: i32,
    pause: &RolloutPause,
) -> bool {
    let duration = pause.duration.as_ref().and_then(|d| d.to_std().ok());
    let held = st
        .pause_conditions
        .iter()
        .find(|p| p.reason == PauseReason::CanaryPauseStep);
    match held {
        Some(cond) => {
            let Some(d) = duration else {
                return false;
            };
            let end = add(cond.start_time.0, d);
            if ctx.now >= end {
                return true;
            }
            journal.wake_at(end);
            false
        }
        // The user cleared the pause condition (promote) while the controller held it.
        None if st.controller_pause => true,
        None => {
            if duration == Some(Duration::ZERO) {
                return true;
            }
            let msg = match (&pause.duration, duration) {
                (Some(text), Some(d)) => {
                    journal.wake_at(add(ctx.now, d));
                    format!("paused at step {} for {text}", idx + 1)
                }
                _ => format!("paused at step {} until promoted", idx + 1),
            };
            hold(st, journal, ctx.now, PauseReason::CanaryPauseStep, msg);
            false
        }
    }
}

/// An `analysis` step: started if missing; done when Successful; Inconclusive pauses until the
/// user promotes; Failed and Error abort.
fn analysis_state(
    ctx: &Ctx,
    st: &mut RolloutStatus,
    journal: &mut Journal,
    requests: &mut Vec<AnalysisRunRequest>,
    idx: i32,
    analysis: &RolloutAnalysis,
) -> StepState {
    let kind = AnalysisRunKind::Step(idx);
    let Some(run) = run_for(ctx, kind) else {
        request_run(ctx, requests, kind, analysis);
        return StepState::Waiting;
    };
    match run.phase {
        AnalysisPhase::Successful => StepState::Done,
        AnalysisPhase::Failed | AnalysisPhase::Error => StepState::Abort(format!(
            "step analysis {} {}: {}",
            run.name,
            run.phase.as_str().to_lowercase(),
            run.message.clone().unwrap_or_default()
        )),
        AnalysisPhase::Inconclusive => {
            let paused = st
                .pause_conditions
                .iter()
                .any(|p| p.reason == PauseReason::InconclusiveAnalysisRun);
            if !paused && st.controller_pause {
                // The user promoted past the inconclusive analysis.
                return StepState::Done;
            }
            hold(
                st,
                journal,
                ctx.now,
                PauseReason::InconclusiveAnalysisRun,
                format!(
                    "analysis {} inconclusive at step {}: promote to continue or abort",
                    run.name,
                    idx + 1
                ),
            );
            StepState::Waiting
        }
        AnalysisPhase::Pending | AnalysisPhase::Running => StepState::Waiting,
    }
}

/// The weight in force at step `idx`: the last `setWeight` before it; `max` once all steps are
/// done; 0 before the first `setWeight`.
pub fn last_weight(steps: &[CanaryStep], idx: i32, max: i32) -> i32 {
    if idx < 0 {
        return 0;
    }
    if idx as usize >= steps.len() {
        return max;
    }
    steps[..=idx as usize]
        .iter()
        .rev()
        .find_map(|s| s.set_weight)
        .unwrap_or(0)
        .min(max)
}

/// Canary replicas wanted at step `idx` for `weight`, honouring `setCanaryScale` and
/// `minPodsPerReplicaSet`.
pub(super) fn desired_canary_replicas(ctx: &Ctx, idx: i32, weight: i32) -> i32 {
    let n = ctx.n_steps();
    let mut count = canary_replicas_for_weight(ctx.replicas, weight, ctx.max_weight);
    if idx < n || n == 0 {
        let upto = (idx.max(0) as usize + 1).min(ctx.steps.len());
        let scale = ctx.steps[..upto]
            .iter()
            .rev()
            .find_map(|s| s.set_canary_scale.as_ref());
        // `matchTrafficWeight` goes back to the count for the traffic weight.
        if let Some(scale) = scale.filter(|s| s.match_traffic_weight != Some(true)) {
            if let Some(r) = scale.replicas {
                count = r.clamp(0, ctx.replicas.max(r));
            } else if let Some(w) = scale.weight {
                count = canary_replicas_for_weight(ctx.replicas, w, 100);
            }
        }
    }
    apply_min_pods(count, ctx.canary.min_pods_per_replica_set, ctx.replicas)
}

/// A short description of a step for messages.
pub fn describe_step(step: &CanaryStep) -> String {
    if let Some(w) = step.set_weight {
        format!("setWeight {w}")
    } else if let Some(p) = &step.pause {
        match &p.duration {
            Some(d) => format!("pause {d}"),
            None => "pause until promoted".into(),
        }
    } else if let Some(s) = &step.set_canary_scale {
        match (s.replicas, s.weight) {
            (Some(r), _) => format!("setCanaryScale {r} replicas"),
            (_, Some(w)) => format!("setCanaryScale {w}%"),
            _ => "setCanaryScale matchTrafficWeight".into(),
        }
    } else if let Some(a) = &step.analysis {
        let names: Vec<_> = a
            .templates
            .iter()
            .map(|t| t.template_name.as_str())
            .collect();
        format!("analysis {}", names.join(", "))
    } else if let Some(h) = &step.set_header_route {
        format!("setHeaderRoute {}", h.name)
    } else if let Some(m) = &step.set_mirror_route {
        format!("setMirrorRoute {}", m.name)
    } else {
        "unsupported step".into()
    }
}
